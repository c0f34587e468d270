package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/store"
)

func (c *cli) approvalsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "approvals", Short: "See approval requests (approvers decide in the console, /console)"}

	var state, agent string
	var limit int
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List approval requests, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if state != "" && !store.ApprovalState(state).Valid() {
				return fmt.Errorf("--state %q: want pending, approved, denied, expired or cancelled", state)
			}
			f := store.ApprovalFilter{State: store.ApprovalState(state), AgentID: agent, Limit: limit}
			list, err := storeOrRemote(c, cmd, func(ctx context.Context, rc *adminClient) ([]store.Approval, error) {
				return rc.listApprovals(ctx, f)
			}, func(ctx context.Context, st store.Store) ([]store.Approval, error) {
				return st.ListApprovals(ctx, f)
			})
			if err != nil {
				return err
			}
			if asJSON {
				out := make([]map[string]any, 0, len(list))
				for _, a := range list {
					out = append(out, approvalJSON(a))
				}
				return json.NewEncoder(c.stdout).Encode(out)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tAGENT\tTOOL\tCREATED\tAPPROVERS\tMESSAGE")
			for _, a := range list {
				msg := a.BindingMessage
				if len(msg) > 60 {
					msg = msg[:57] + "..."
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s.%s\t%s\t%s\t%s\n", a.ID, a.State, a.AgentID, a.Upstream, a.Tool,
					a.CreatedAt.Format(time.RFC3339), approval.ApproversText(a.Approvers), msg)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&state, "state", "", "only this state: pending, approved, denied, expired, cancelled")
	list.Flags().StringVar(&agent, "agent", "", "only this agent's requests")
	list.Flags().IntVar(&limit, "limit", 50, "at most this many (0: all)")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.addConfigFlag(list)
	c.addServerFlags(list)

	var showJSON bool
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one approval request with its votes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := storeOrRemote(c, cmd, func(ctx context.Context, rc *adminClient) (store.Approval, error) {
				return rc.getApproval(ctx, args[0])
			}, func(ctx context.Context, st store.Store) (store.Approval, error) {
				return st.GetApproval(ctx, args[0])
			})
			if err != nil {
				return fmt.Errorf("approval %q: %w", args[0], err)
			}
			if showJSON {
				return json.NewEncoder(c.stdout).Encode(approvalJSON(a))
			}
			w := c.stdout
			fmt.Fprintf(w, "approval %s: %s\n", a.ID, strings.ToUpper(string(a.State)))
			fmt.Fprintf(w, "  %s\n", a.BindingMessage)
			fmt.Fprintf(w, "  agent       %s\n", a.AgentID)
			fmt.Fprintf(w, "  tool        %s.%s (risk score %d)\n", a.Upstream, a.Tool, a.RiskScore)
			fmt.Fprintf(w, "  rule        %s (via %s, decision %s)\n", a.Rule, a.Source, a.DecisionID)
			fmt.Fprintf(w, "  approvers   %s; %d needed", approval.ApproversText(a.Approvers), a.Quorum)
			if a.SeparationOfDuties {
				fmt.Fprint(w, "; not the agent's owner")
			}
			fmt.Fprintln(w)
			fmt.Fprintf(w, "  asked       %s, expires %s\n", a.CreatedAt.Format(time.RFC3339), a.ExpiresAt.Format(time.RFC3339))
			if !a.DecidedAt.IsZero() {
				fmt.Fprintf(w, "  decided     %s", a.DecidedAt.Format(time.RFC3339))
				if a.Reason != "" {
					fmt.Fprintf(w, ": %s", a.Reason)
				}
				fmt.Fprintln(w)
			}
			for _, v := range a.Votes {
				verb := "approved"
				if !v.Approve {
					verb = "denied"
				}
				fmt.Fprintf(w, "  vote        %s %s at %s with %s", v.Email, verb, v.At.Format(time.RFC3339), v.Method)
				if v.Reason != "" {
					fmt.Fprintf(w, ": %s", v.Reason)
				}
				fmt.Fprintln(w)
			}
			var pretty strings.Builder
			var m any
			if json.Unmarshal(a.Arguments, &m) == nil {
				b, _ := json.MarshalIndent(m, "  ", "  ")
				pretty.Write(b)
			}
			fmt.Fprintf(w, "  arguments   %s\n", pretty.String())
			return nil
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print JSON")
	c.addConfigFlag(show)
	c.addServerFlags(show)
	cmd.AddCommand(list, show)
	return cmd
}

func approvalJSON(a store.Approval) map[string]any {
	votes := make([]map[string]any, 0, len(a.Votes))
	for _, v := range a.Votes {
		votes = append(votes, map[string]any{"email": v.Email, "approve": v.Approve, "reason": v.Reason, "method": v.Method, "at": v.At})
	}
	m := map[string]any{"id": a.ID, "state": a.State, "agent": a.AgentID, "upstream": a.Upstream, "tool": a.Tool,
		"args_digest": a.ArgsDigest, "arguments": json.RawMessage(a.Arguments), "rule": a.Rule, "approvers": a.Approvers,
		"quorum": a.Quorum, "separation_of_duties": a.SeparationOfDuties, "binding_message": a.BindingMessage,
		"risk_score": a.RiskScore, "source": a.Source, "decision_id": a.DecisionID, "created_at": a.CreatedAt,
		"expires_at": a.ExpiresAt, "votes": votes}
	if len(a.Arguments) == 0 {
		m["arguments"] = map[string]any{}
	}
	if !a.DecidedAt.IsZero() {
		m["decided_at"], m["reason"] = a.DecidedAt, a.Reason
	}
	return m
}

// enrollCmd is "interlock users enroll": a one-time link through which a
// user registers a passkey for the approvers' console.
func (c *cli) enrollCmd() *cobra.Command {
	var email string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "enroll --email E",
		Short: "Make a one-time link for a user to register a passkey in the console (to approve calls)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cfg, st, err := c.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			u, err := st.GetUserByEmail(ctx, email)
			if err != nil {
				return fmt.Errorf("user %q: %w", email, err)
			}
			if !u.Active {
				return fmt.Errorf("user %s is deactivated", email)
			}
			log := c.logger(cfg)
			al, err := audit.New(ctx, audit.Options{Store: st, Logger: log})
			if err != nil {
				return err
			}
			defer al.Close()
			apr, err := approval.New(approval.Options{Store: st, Audit: al, Logger: log})
			if err != nil {
				return err
			}
			con, err := app.NewConsole(ctx, cfg, st, apr, log, time.Now)
			if err != nil {
				return err
			}
			link, err := con.CreateEnrollment(ctx, u.ID, operator(), ttl)
			if err != nil {
				return err
			}
			if _, err := al.Append(ctx, audit.Event{Type: "enrollment_created", Data: map[string]any{
				"user": u.Email, "by": operator(), "expires_in_s": ttl.Seconds()}}); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "one-time passkey enrolment link for %s (valid %s):\n%s\n", u.Email, ttl, link)
			return nil
		},
	}
	cmd.Flags().StringVar(&email, "email", "", "the user's email (required)")
	cmd.Flags().DurationVar(&ttl, "ttl", 72*time.Hour, "how long the link is valid")
	cmd.MarkFlagRequired("email")
	c.addConfigFlag(cmd)
	return cmd
}
