package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
)

// The owner and agent lifecycle commands and the emergency stop. They
// change the local store (--config), or call a running gateway's admin API
// with --server (remote.go), which applies the change itself and closes
// the agents' open sessions at once. On the local store, a running gateway
// sees the change on its next call (the registry's cache follows the
// store's generation), and refuses the agents from then on; the gateway's
// open MCP sessions of those agents are not closed from here (the CLI is
// another process): they stay open, but every tool call in them is
// refused. Changes made through the gateway (SCIM, --server) close the
// sessions at once.

// withLifecycle opens the configured store, a registry, the audit log and
// the lifecycle operations over them.
func (c *cli) withLifecycle(ctx context.Context, fn func(*registry.Lifecycle, *registry.Registry) error) error {
	cfg, st, err := c.openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	log := c.logger(cfg)
	reg := registry.New(registry.Options{Store: st, Logger: log})
	defer reg.Close()
	al, err := audit.New(ctx, audit.Options{Store: st, Logger: log})
	if err != nil {
		return fmt.Errorf("opening the audit log: %w", err)
	}
	err = fn(registry.NewLifecycle(reg, registry.LifecycleOptions{Audit: al, Notifier: registry.LogNotifier(log)}), reg)
	if cerr := al.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing the audit log: %w", cerr)
	}
	return err
}

// remoteOr runs remote against the server the command names (--server),
// or else local.
func remoteOr[T any](c *cli, cmd *cobra.Command, remote func(context.Context, *adminClient) (T, error), local func(context.Context) (T, error)) (T, error) {
	rc, err := c.remoteClient(cmd)
	if err != nil {
		var zero T
		return zero, err
	}
	if rc != nil {
		return remote(cmd.Context(), rc)
	}
	return local(cmd.Context())
}

// localOrRemote is remoteOr with local run on the lifecycle over the
// configured store.
func localOrRemote[T any](c *cli, cmd *cobra.Command, remote func(context.Context, *adminClient) (T, error), local func(context.Context, *registry.Lifecycle) (T, error)) (T, error) {
	return remoteOr(c, cmd, remote, func(ctx context.Context) (T, error) {
		var out T
		err := c.withLifecycle(ctx, func(lc *registry.Lifecycle, _ *registry.Registry) error {
			var err error
			out, err = local(ctx, lc)
			return err
		})
		return out, err
	})
}

// storeOrRemote is remoteOr with local run on the configured store.
func storeOrRemote[T any](c *cli, cmd *cobra.Command, remote func(context.Context, *adminClient) (T, error), local func(context.Context, store.Store) (T, error)) (T, error) {
	return remoteOr(c, cmd, remote, func(ctx context.Context) (T, error) {
		_, st, err := c.openStore(ctx)
		if err != nil {
			var zero T
			return zero, err
		}
		defer st.Close()
		return local(ctx, st)
	})
}

func tsText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// printReport says what a cascade did.
func (c *cli) printReport(what string, rep registry.Report, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(c.stdout).Encode(rep)
	}
	fmt.Fprintf(c.stdout, "%s: %d agent(s) changed%s\n", what, len(rep.Agents), listText(rep.Agents))
	fmt.Fprintf(c.stdout, "  approvals cancelled: %d, credentials revoked: %d", len(rep.ApprovalsCancelled), len(rep.CredentialsRevoked))
	if len(rep.TokensRevoked) > 0 {
		fmt.Fprintf(c.stdout, ", agent tokens revoked: %d", len(rep.TokensRevoked))
	}
	fmt.Fprintf(c.stdout, "\n  audit story %s\n", rep.Story)
	keys := make([]string, 0, len(rep.Skipped))
	for k := range rep.Skipped {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(c.stdout, "  skipped %s: %s\n", k, rep.Skipped[k])
	}
	switch {
	case len(rep.Agents) > 0 && c.remote:
		fmt.Fprintf(c.stdout, "  the gateway refuses these agents from now on; it closed %d open session(s)\n", rep.SessionsClosed)
	case len(rep.Agents) > 0:
		fmt.Fprintln(c.stdout, "  a running gateway refuses these agents from its next call; their open sessions there stay open but every tool call is refused")
	}
	return nil
}

func listText(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	if len(ids) > 10 {
		return " (" + strings.Join(ids[:10], ", ") + ", ...)"
	}
	return " (" + strings.Join(ids, ", ") + ")"
}

// userLifecycleCmds are "users show|deactivate|activate".
func (c *cli) userLifecycleCmds() []*cobra.Command {
	var asJSON bool
	show := &cobra.Command{
		Use:   "show EMAIL|ID",
		Short: "Show a user and the agents they own",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if rc, err := c.remoteClient(cmd); err != nil || rc != nil {
				if err != nil {
					return err
				}
				u, owned, err := rc.showUser(ctx, args[0])
				if err != nil {
					return err
				}
				return c.printUser(u, owned, asJSON)
			}
			return c.withRegistry(ctx, func(reg *registry.Registry, st store.Store) error {
				u, err := reg.ResolveUser(ctx, args[0])
				if err != nil {
					return err
				}
				agents, err := reg.ListAgents(ctx)
				if err != nil {
					return err
				}
				var owned []store.Agent
				for _, a := range agents {
					if a.OwnerID == u.ID {
						owned = append(owned, a)
					}
				}
				return c.printUser(u, owned, asJSON)
			})
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.addConfigFlag(show)
	c.addServerFlags(show)
	return c.userChangeCmds(show)
}

// printUser prints a user and the agents they own.
func (c *cli) printUser(u store.User, owned []store.Agent, asJSON bool) error {
	if asJSON {
		out := map[string]any{"id": u.ID, "email": u.Email, "name": u.Name, "roles": u.Roles, "active": u.Active,
			"source": u.Source, "external_id": u.ExternalID, "created_at": tsText(u.CreatedAt), "updated_at": tsText(u.UpdatedAt),
			"deleted_at": tsText(u.DeletedAt)}
		as := []map[string]any{}
		for _, a := range owned {
			as = append(as, map[string]any{"id": a.ID, "state": a.State})
		}
		out["agents"] = as
		return json.NewEncoder(c.stdout).Encode(out)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id\t%s\nemail\t%s\nname\t%s\nroles\t%s\nactive\t%v\nsource\t%s\n", u.ID, u.Email, u.Name, strings.Join(u.Roles, ","), u.Active, u.Source)
	if u.ExternalID != "" {
		fmt.Fprintf(tw, "external id\t%s\n", u.ExternalID)
	}
	fmt.Fprintf(tw, "created\t%s\nupdated\t%s\n", tsText(u.CreatedAt), tsText(u.UpdatedAt))
	if !u.DeletedAt.IsZero() {
		fmt.Fprintf(tw, "deleted\t%s\n", tsText(u.DeletedAt))
	}
	for _, a := range owned {
		fmt.Fprintf(tw, "agent\t%s (%s)\n", a.ID, a.State)
	}
	return tw.Flush()
}

// userChangeCmds are "users deactivate|activate", after show.
func (c *cli) userChangeCmds(show *cobra.Command) []*cobra.Command {
	var reason string
	var deactJSON bool
	deactivate := &cobra.Command{
		Use:   "deactivate EMAIL|ID",
		Short: "Deactivate a user: the kill switch for every agent they own",
		Long: `Deactivate a user. Every agent they own becomes orphaned, the pending
approvals of those agents are cancelled and every live credential issued
to them is revoked, all audited as one story. The agents stay orphaned
until reassigned (agents reassign) or decommissioned.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			type deactivated struct {
				u   store.User
				rep registry.Report
			}
			d, err := localOrRemote(c, cmd, func(ctx context.Context, rc *adminClient) (deactivated, error) {
				u, rep, err := rc.deactivateUser(ctx, args[0], reason)
				if u.ID == "" && rep.Story != "" { // the cascade failed half-way
					u.ID, u.Email = args[0], args[0]
				}
				return deactivated{u, rep}, err
			}, func(ctx context.Context, lc *registry.Lifecycle) (deactivated, error) {
				u, rep, err := lc.DeactivateUser(ctx, args[0], operator(), reason)
				return deactivated{u, rep}, err
			})
			if d.u.ID != "" {
				if perr := c.printReport("deactivated "+d.u.Email, d.rep, deactJSON); perr != nil {
					return perr
				}
			}
			return err
		},
	}
	deactivate.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log and shown to the agents)")
	deactivate.Flags().BoolVar(&deactJSON, "json", false, "print the report as JSON")
	c.addConfigFlag(deactivate)
	c.addServerFlags(deactivate)

	var actReason string
	activate := &cobra.Command{
		Use:   "activate EMAIL|ID",
		Short: "Activate a user again (their orphaned agents stay orphaned until reassigned)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := localOrRemote(c, cmd, func(ctx context.Context, rc *adminClient) (store.User, error) {
				return rc.activateUser(ctx, args[0], actReason)
			}, func(ctx context.Context, lc *registry.Lifecycle) (store.User, error) {
				return lc.ActivateUser(ctx, args[0], operator(), actReason)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "activated %s; agents orphaned meanwhile stay orphaned until reassigned\n", u.Email)
			return nil
		},
	}
	activate.Flags().StringVar(&actReason, "reason", "", "why (recorded in the audit log)")
	c.addConfigFlag(activate)
	c.addServerFlags(activate)
	return []*cobra.Command{show, deactivate, activate}
}

// agentLifecycleCmds are "agents show|suspend|resume|reassign|decommission".
func (c *cli) agentLifecycleCmds() []*cobra.Command {
	var asJSON bool
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show an agent, its owner, its tokens and its state history",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if rc, err := c.remoteClient(cmd); err != nil || rc != nil {
				if err != nil {
					return err
				}
				a, owner, toks, hist, err := rc.showAgent(ctx, args[0])
				if err != nil {
					return err
				}
				return c.printAgent(a, owner, toks, hist, asJSON)
			}
			return c.withLifecycle(ctx, func(lc *registry.Lifecycle, reg *registry.Registry) error {
				a, err := reg.GetAgent(ctx, args[0])
				if err != nil {
					return err
				}
				owner, _ := reg.GetUser(ctx, a.OwnerID)
				toks, err := reg.ListTokens(ctx, a.ID)
				if err != nil {
					return err
				}
				hist, err := lc.History(ctx, a.ID)
				if err != nil {
					return err
				}
				return c.printAgent(a, owner, toks, hist, asJSON)
			})
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.addConfigFlag(show)
	c.addServerFlags(show)
	return c.agentChangeCmds(show)
}

// printAgent prints an agent, its owner, its tokens and its history.
func (c *cli) printAgent(a store.Agent, owner store.User, toks []store.AgentToken, hist []store.AuditEvent, asJSON bool) error {
	if asJSON {
		h := []map[string]any{}
		for _, ev := range hist {
			var data any
			_ = json.Unmarshal(ev.Data, &data)
			h = append(h, map[string]any{"seq": ev.Seq, "time": tsText(ev.Time), "type": ev.Type, "data": data})
		}
		return json.NewEncoder(c.stdout).Encode(map[string]any{
			"id": a.ID, "name": a.Name, "owner": owner.Email, "owner_active": owner.Active, "department": a.Department,
			"purpose": a.Purpose, "state": a.State, "state_changed_at": tsText(a.StateChangedAt),
			"state_changed_by": a.StateChangedBy, "state_reason": a.StateReason, "created_at": tsText(a.CreatedAt),
			"allowed_upstreams": orNone(a.AllowedUpstreams), "created_by": a.CreatedBy,
			"last_used_at": tsText(registry.LastUsed(toks)), "tokens": len(toks), "history": h,
		})
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id\t%s\nname\t%s\nowner\t%s (active: %v)\ndepartment\t%s\npurpose\t%s\nstate\t%s\n",
		a.ID, a.Name, owner.Email, owner.Active, a.Department, a.Purpose, a.State)
	if !a.StateChangedAt.IsZero() {
		fmt.Fprintf(tw, "since\t%s by %s\n", tsText(a.StateChangedAt), a.StateChangedBy)
	}
	if a.StateReason != "" {
		fmt.Fprintf(tw, "reason\t%s\n", a.StateReason)
	}
	live := 0
	for _, t := range toks {
		if t.RevokedAt.IsZero() && (t.ExpiresAt.IsZero() || time.Now().Before(t.ExpiresAt)) {
			live++
		}
	}
	fmt.Fprintf(tw, "allowed upstreams\t%s\n", upstreamsText(a.AllowedUpstreams))
	createdBy := a.CreatedBy
	if createdBy == "" {
		createdBy = "unknown"
	}
	lastUsed := tsText(registry.LastUsed(toks))
	if lastUsed == "" {
		lastUsed = "never"
	}
	fmt.Fprintf(tw, "created\t%s\ncreated by\t%s\nlast used\t%s\ntokens\t%d (%d usable)\n", tsText(a.CreatedAt), createdBy, lastUsed, len(toks), live)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, "history:")
	for _, ev := range hist {
		var d map[string]any
		_ = json.Unmarshal(ev.Data, &d)
		line := fmt.Sprintf("  %s  #%d %s", tsText(ev.Time), ev.Seq, ev.Type)
		for _, k := range []string{"from", "to", "to_owner", "upstreams", "count", "by", "reason"} {
			if v, ok := d[k]; ok && v != "" {
				line += fmt.Sprintf(" %s=%v", k, v)
			}
		}
		fmt.Fprintln(c.stdout, line)
	}
	return nil
}

// agentChangeCmds are "agents suspend|resume|reassign|decommission",
// after show.
func (c *cli) agentChangeCmds(show *cobra.Command) []*cobra.Command {
	// mk makes a command that runs on the local lifecycle (lc set) or
	// against the server (rc set).
	mk := func(use, short string, run func(cmd *cobra.Command, id, reason string, asJSON bool) error) *cobra.Command {
		var reason string
		var asJSON bool
		cmd := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return run(cmd, args[0], reason, asJSON)
			},
		}
		cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log and shown to the agent)")
		cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
		c.addConfigFlag(cmd)
		c.addServerFlags(cmd)
		return cmd
	}
	// cascade runs a lifecycle operation that reports what it did.
	cascade := func(what string, local func(lc *registry.Lifecycle, ctx context.Context, id, by, reason string) (registry.Report, error)) func(cmd *cobra.Command, id, reason string, asJSON bool) error {
		return func(cmd *cobra.Command, id, reason string, asJSON bool) error {
			remote := false
			rep, err := localOrRemote(c, cmd, func(ctx context.Context, rc *adminClient) (registry.Report, error) {
				remote = true
				return rc.agentReport(ctx, id, what, reason)
			}, func(ctx context.Context, lc *registry.Lifecycle) (registry.Report, error) {
				return local(lc, ctx, id, operator(), reason)
			})
			if err != nil && remote && rep.Story == "" {
				return err // the server did nothing
			}
			if perr := c.printReport(what+"ed", rep, asJSON); perr != nil {
				return perr
			}
			return err
		}
	}
	suspend := mk("suspend ID", "Suspend an agent: its calls are refused, its approvals cancelled, its live credentials revoked",
		cascade("suspend", (*registry.Lifecycle).SuspendAgent))
	resume := mk("resume ID", "Resume a suspended agent (its owner must be active)",
		func(cmd *cobra.Command, id, reason string, _ bool) error {
			a, err := localOrRemote(c, cmd, func(ctx context.Context, rc *adminClient) (store.Agent, error) {
				return rc.resumeAgent(ctx, id, reason)
			}, func(ctx context.Context, lc *registry.Lifecycle) (store.Agent, error) {
				return lc.ResumeAgent(ctx, id, operator(), reason)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "agent %s is %s\n", a.ID, a.State)
			return nil
		})
	decommission := mk("decommission ID", "Retire an agent for good: its tokens and live credentials are revoked",
		cascade("decommission", (*registry.Lifecycle).DecommissionAgent))

	var to, reason string
	reassign := &cobra.Command{
		Use:   "reassign ID --to EMAIL",
		Short: "Give an agent a new, active owner (an orphaned agent becomes active again)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := localOrRemote(c, cmd, func(ctx context.Context, rc *adminClient) (store.Agent, error) {
				return rc.reassignAgent(ctx, args[0], to, reason)
			}, func(ctx context.Context, lc *registry.Lifecycle) (store.Agent, error) {
				return lc.ReassignAgent(ctx, args[0], to, operator(), reason)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "agent %s now belongs to %s and is %s\n", a.ID, to, a.State)
			return nil
		},
	}
	reassign.Flags().StringVar(&to, "to", "", "the new owner's email (required; must be active)")
	reassign.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	reassign.MarkFlagRequired("to")
	c.addConfigFlag(reassign)
	c.addServerFlags(reassign)
	return []*cobra.Command{show, suspend, resume, reassign, decommission}
}

// stopCmd is the emergency stop; resumeCmd undoes it.
func (c *cli) stopCmd() *cobra.Command   { return c.stopResumeCmd(true) }
func (c *cli) resumeCmd() *cobra.Command { return c.stopResumeCmd(false) }

func (c *cli) stopResumeCmd(stop bool) *cobra.Command {
	var sel registry.Selector
	var reason string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stop --all|--agent ID|--owner EMAIL --reason R",
		Short: "Emergency stop: suspend agents at once (calls refused, approvals cancelled, live credentials revoked)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if stop && strings.TrimSpace(reason) == "" {
				return fmt.Errorf("--reason is required")
			}
			rc, err := c.remoteClient(cmd)
			if err != nil {
				return err
			}
			if rc != nil {
				what := "resumed"
				if stop {
					what = "stopped"
				}
				rep, err := rc.stopResume(ctx, stop, sel, reason)
				if err != nil && rep.Story == "" {
					return err
				}
				if perr := c.printReport(what, rep, asJSON); perr != nil {
					return perr
				}
				return err
			}
			return c.withLifecycle(ctx, func(lc *registry.Lifecycle, _ *registry.Registry) error {
				if stop {
					rep, err := lc.Stop(ctx, sel, operator(), reason)
					if perr := c.printReport("stopped", rep, asJSON); perr != nil {
						return perr
					}
					return err
				}
				rep, err := lc.Resume(ctx, sel, operator(), reason)
				if perr := c.printReport("resumed", rep, asJSON); perr != nil {
					return perr
				}
				return err
			})
		},
	}
	if !stop {
		cmd.Use = "resume --all|--agent ID|--owner EMAIL"
		cmd.Short = "Undo an emergency stop: resume suspended agents whose owner is active"
	}
	cmd.Flags().BoolVar(&sel.All, "all", false, "every agent")
	cmd.Flags().StringVar(&sel.Agent, "agent", "", "one agent")
	cmd.Flags().StringVar(&sel.Owner, "owner", "", "every agent of this owner (email)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log and shown to the agents)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	c.addConfigFlag(cmd)
	c.addServerFlags(cmd)
	return cmd
}
