package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/credential"
	"github.com/interlock-dev/interlock/internal/store"
)

// withIssuer opens the configured store and the credential issuer over it.
func (c *cli) withIssuer(ctx context.Context, fn func(*config.Config, store.Store, *credential.Issuer) error) error {
	cfg, st, err := c.openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	iss, err := app.OpenIssuer(ctx, cfg, st, c.logger(cfg), time.Now, nil)
	if err != nil {
		return err
	}
	return fn(cfg, st, iss)
}

// appendAudit records one operator event in the audit log.
func (c *cli) appendAudit(ctx context.Context, cfg *config.Config, st store.Store, ev audit.Event) error {
	al, err := audit.New(ctx, audit.Options{Store: st, Logger: c.logger(cfg)})
	if err != nil {
		return fmt.Errorf("opening the audit log: %w", err)
	}
	_, err = al.Append(ctx, ev)
	if cerr := al.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("recording the %s event: %w", ev.Type, err)
	}
	return nil
}

// operator names who runs a CLI command, for the audit log.
func operator() string {
	if u := os.Getenv("USER"); u != "" {
		return "cli:" + u
	}
	return "cli"
}

func (c *cli) keysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Manage the keys that sign action credentials"}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Add a new signing key; the old ones stay published until what they signed has expired",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return c.withIssuer(ctx, func(cfg *config.Config, st store.Store, iss *credential.Issuer) error {
				k, err := iss.Rotate(ctx)
				if err != nil {
					return err
				}
				var retired []string
				for _, r := range iss.Keys() {
					if r.ID != k.ID && r.RetiredAt.Equal(k.CreatedAt) {
						retired = append(retired, r.ID)
					}
				}
				if err := c.appendAudit(ctx, cfg, st, audit.Event{Type: "key_rotated",
					Data: map[string]any{"kid": k.ID, "alg": k.Alg, "retired": retired, "by": operator()}}); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "new signing key %s (%s); running gateways pick it up within 5 seconds\n", k.ID, k.Alg)
				return nil
			})
		},
	}
	c.addConfigFlag(rotate)
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the signing keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			_, st, err := c.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			keys, err := st.ListSigningKeys(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				out := make([]map[string]any, 0, len(keys))
				for _, k := range keys {
					m := map[string]any{"kid": k.ID, "alg": k.Alg, "created_at": k.CreatedAt}
					if !k.RetiredAt.IsZero() {
						m["retired_at"], m["published_until"] = k.RetiredAt, k.PublishUntil
					}
					out = append(out, m)
				}
				return json.NewEncoder(c.stdout).Encode(out)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KID\tALG\tCREATED\tSTATE")
			for _, k := range keys {
				state := "current"
				switch {
				case !k.RetiredAt.IsZero() && time.Now().After(k.PublishUntil):
					state = "retired, no longer published"
				case !k.RetiredAt.IsZero():
					state = "retired, published until " + k.PublishUntil.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.ID, k.Alg, k.CreatedAt.Format(time.RFC3339), state)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.addConfigFlag(list)
	cmd.AddCommand(rotate, list)
	return cmd
}

func (c *cli) credentialsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "credentials", Short: "List, verify and revoke action credentials"}

	var agent string
	var live, asJSON bool
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List issued credentials, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now()
			f := store.CredentialFilter{AgentID: agent, Live: live, Now: now, Limit: limit}
			creds, err := storeOrRemote(c, cmd, func(ctx context.Context, rc *adminClient) ([]store.Credential, error) {
				return rc.listCredentials(ctx, f)
			}, func(ctx context.Context, st store.Store) ([]store.Credential, error) {
				return st.ListCredentials(ctx, f)
			})
			if err != nil {
				return err
			}
			if asJSON {
				out := make([]map[string]any, 0, len(creds))
				for _, cr := range creds {
					out = append(out, credentialJSON(cr, now))
				}
				return json.NewEncoder(c.stdout).Encode(out)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tAGENT\tTOOL\tISSUED\tUSES\tSTATE")
			for _, cr := range creds {
				fmt.Fprintf(tw, "%s\t%s\t%s.%s\t%s\t%d/%d\t%s\n", cr.ID, cr.AgentID, cr.Upstream, cr.Tool,
					cr.IssuedAt.Format(time.RFC3339), cr.Used, cr.Uses, credentialState(cr, now))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&agent, "agent", "", "only this agent's credentials")
	list.Flags().BoolVar(&live, "live", false, "only credentials that can still be used")
	list.Flags().IntVar(&limit, "limit", 100, "at most this many (0: all)")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.addConfigFlag(list)
	c.addServerFlags(list)

	var file, callJSON string
	var verifyJSON bool
	verify := &cobra.Command{
		Use:   "verify [TOKEN]",
		Short: "Verify a credential (signature, validity, issuer, revocation) and optionally that it matches a call",
		Long: `Verify a credential interlock issued: its signature, type, validity window,
issuer, and that it is not revoked. With --call it also checks that the
credential is for exactly that call: --call '{"upstream":"acme","tool":"place_order","arguments":{...}}'.
The token is the argument, or read from --file (- for stdin).
Exit status 0: valid; 1: not valid (the reason is printed).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			token, err := readToken(args, file)
			if err != nil {
				return err
			}
			var call *callSpec
			if callJSON != "" {
				call = &callSpec{}
				dec := json.NewDecoder(strings.NewReader(callJSON))
				dec.DisallowUnknownFields()
				if err := dec.Decode(call); err != nil {
					return fmt.Errorf("--call: %w (want {\"upstream\":..., \"tool\":..., \"arguments\":{...}})", err)
				}
			}
			ctx := cmd.Context()
			return c.withIssuer(ctx, func(_ *config.Config, _ store.Store, iss *credential.Issuer) error {
				cl, err := iss.Verify(ctx, token, time.Now())
				if err != nil {
					return fmt.Errorf("NOT VALID: %w", err)
				}
				if call != nil {
					if err := matchCall(cl, call); err != nil {
						return fmt.Errorf("NOT VALID for this call: %w", err)
					}
				}
				if verifyJSON {
					return json.NewEncoder(c.stdout).Encode(map[string]any{
						"valid": true, "credential": credentialJSON(cl.Record, time.Now()), "owner": cl.OwnerEmail,
						"authorized_by": cl.AuthorizedBy, "risk_score": cl.RiskScore, "policy_version": cl.PolicyVersion,
					})
				}
				fmt.Fprintf(c.stdout, "VALID credential %s\n", cl.ID)
				fmt.Fprintf(c.stdout, "  signed by   %s (key %s, %s)\n", cl.Issuer, cl.KeyID, cl.Alg)
				fmt.Fprintf(c.stdout, "  agent       %s (owner %s)\n", cl.AgentID, cl.OwnerEmail)
				fmt.Fprintf(c.stdout, "  action      %s.%s, arguments sha-256 %s\n", cl.Upstream, cl.Tool, cl.ArgumentsDigest)
				for _, a := range cl.AuthorizedBy {
					fmt.Fprintf(c.stdout, "  authorised  %s\n", authorizationText(a))
				}
				fmt.Fprintf(c.stdout, "  valid       %s to %s\n", cl.ValidFrom.Format(time.RFC3339), cl.ValidUntil.Format(time.RFC3339))
				fmt.Fprintf(c.stdout, "  uses        %d of %d used\n", cl.Record.Used, cl.Record.Uses)
				fmt.Fprintf(c.stdout, "  decision    %s\n", cl.DecisionID)
				if call != nil {
					fmt.Fprintln(c.stdout, "  matches the call given with --call")
				}
				return nil
			})
		},
	}
	verify.Flags().StringVar(&file, "file", "", "read the token from this file (- for stdin)")
	verify.Flags().StringVar(&callJSON, "call", "", `also check it is for this call: {"upstream":..,"tool":..,"arguments":{..}}`)
	verify.Flags().BoolVar(&verifyJSON, "json", false, "print JSON")
	c.addConfigFlag(verify)

	var reason string
	revoke := &cobra.Command{
		Use:   "revoke ID --reason R",
		Short: "Revoke a credential: its status-list bit flips and interlock refuses it from now on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return errors.New("--reason is required: say why, it goes into the audit log")
			}
			ctx := cmd.Context()
			rc, err := c.remoteClient(cmd)
			if err != nil {
				return err
			}
			if rc != nil {
				// The gateway revokes it and records the audit event.
				cr, err := rc.revokeCredential(ctx, args[0], reason)
				if err != nil {
					return err
				}
				if cr.RevokeReason != reason {
					fmt.Fprintf(c.stdout, "credential %s was already revoked at %s (%s)\n", cr.ID, cr.RevokedAt.Format(time.RFC3339), cr.RevokeReason)
					return nil
				}
				fmt.Fprintf(c.stdout, "revoked credential %s (agent %s, %s.%s); status list %s bit %d is set\n",
					cr.ID, cr.AgentID, cr.Upstream, cr.Tool, cr.StatusList, cr.StatusIndex)
				return nil
			}
			return c.withIssuer(ctx, func(cfg *config.Config, st store.Store, iss *credential.Issuer) error {
				before, err := st.GetCredential(ctx, args[0])
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no credential %q was issued by this interlock (see: interlock credentials list)", args[0])
				}
				if err != nil {
					return err
				}
				cr, err := iss.Revoke(ctx, args[0], reason)
				if err != nil {
					return err
				}
				first := before.RevokedAt.IsZero()
				if err := c.appendAudit(ctx, cfg, st, audit.Event{Type: "credential_revoked", CallID: cr.DecisionID, AgentID: cr.AgentID,
					Data: map[string]any{"credential_id": cr.ID, "decision_id": cr.DecisionID, "reason": reason, "by": operator(),
						"revoked_at": cr.RevokedAt, "already_revoked": !first,
						"status_list": iss.StatusListURL(cr.StatusList), "status_index": cr.StatusIndex}}); err != nil {
					return err
				}
				if !first {
					fmt.Fprintf(c.stdout, "credential %s was already revoked at %s (%s)\n", cr.ID, cr.RevokedAt.Format(time.RFC3339), cr.RevokeReason)
					return nil
				}
				fmt.Fprintf(c.stdout, "revoked credential %s (agent %s, %s.%s); status list %s bit %d is set\n",
					cr.ID, cr.AgentID, cr.Upstream, cr.Tool, iss.StatusListURL(cr.StatusList), cr.StatusIndex)
				return nil
			})
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why (required; recorded in the audit log)")
	c.addConfigFlag(revoke)
	c.addServerFlags(revoke)

	cmd.AddCommand(list, verify, revoke)
	return cmd
}

// callSpec is the call "credentials verify --call" checks a credential for.
type callSpec struct {
	Upstream  string         `json:"upstream"`
	Tool      string         `json:"tool"`
	Arguments map[string]any `json:"arguments"`
}

func matchCall(cl *credential.Claims, call *callSpec) error {
	if cl.Upstream != call.Upstream || cl.Tool != call.Tool {
		return fmt.Errorf("it is for %s.%s, not %s.%s", cl.Upstream, cl.Tool, call.Upstream, call.Tool)
	}
	digest, err := credential.ArgumentsDigest(call.Arguments)
	if err != nil {
		return err
	}
	if digest != cl.ArgumentsDigest {
		return fmt.Errorf("it is for other arguments (sha-256 %s, the call's is %s)", cl.ArgumentsDigest, digest)
	}
	return nil
}

func readToken(args []string, file string) (string, error) {
	switch {
	case len(args) == 1 && file != "":
		return "", errors.New("give the token as an argument or with --file, not both")
	case len(args) == 1:
		return strings.TrimSpace(args[0]), nil
	case file == "-":
		b, err := io.ReadAll(io.LimitReader(os.Stdin, credential.MaxTokenSize+1))
		return strings.TrimSpace(string(b)), err
	case file != "":
		b, err := os.ReadFile(file)
		return strings.TrimSpace(string(b)), err
	}
	return "", errors.New("give the token as an argument or with --file")
}

func credentialState(cr store.Credential, now time.Time) string {
	switch {
	case !cr.RevokedAt.IsZero():
		return "revoked (" + cr.RevokeReason + ")"
	case !now.Before(cr.ExpiresAt):
		return "expired"
	case cr.Used >= cr.Uses:
		return "used"
	}
	return "live until " + cr.ExpiresAt.Format(time.RFC3339)
}

func credentialJSON(cr store.Credential, now time.Time) map[string]any {
	m := map[string]any{"id": cr.ID, "agent": cr.AgentID, "decision_id": cr.DecisionID, "upstream": cr.Upstream, "tool": cr.Tool,
		"args_digest": cr.ArgsDigest, "kid": cr.KeyID, "status_list": cr.StatusList, "status_index": cr.StatusIndex,
		"issued_at": cr.IssuedAt, "expires_at": cr.ExpiresAt, "uses": cr.Uses, "used": cr.Used,
		"state": strings.SplitN(credentialState(cr, now), " ", 2)[0]}
	if !cr.RevokedAt.IsZero() {
		m["revoked_at"], m["revoke_reason"] = cr.RevokedAt, cr.RevokeReason
	}
	return m
}

func authorizationText(a credential.Authorization) string {
	switch {
	case a.Kind == "policy":
		return "by policy rule " + a.Rule
	case a.Approver != "":
		s := "by " + a.Approver
		if a.Method != "" {
			s += " with " + a.Method
		}
		if a.ApprovalID != "" {
			s += " (approval " + a.ApprovalID + ")"
		}
		return s
	}
	return a.Kind
}
