package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/internal/adminapi"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
)

// openStore loads the configuration and opens its store; the caller closes
// the store.
func (c *cli) openStore(ctx context.Context) (*config.Config, store.Store, error) {
	cfg, err := c.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	st, err := app.OpenStore(ctx, cfg.Storage, c.logger(cfg))
	if err != nil {
		return nil, nil, err
	}
	return cfg, st, nil
}

// withRegistryOr runs fn with no registry when rc is set (the command
// calls the server), and on the local store otherwise.
func (c *cli) withRegistryOr(ctx context.Context, rc *adminClient, fn func(*registry.Registry, store.Store) error) error {
	if rc != nil {
		return fn(nil, nil)
	}
	return c.withRegistry(ctx, fn)
}

// withRegistry opens the configured store and a registry over it.
func (c *cli) withRegistry(ctx context.Context, fn func(*registry.Registry, store.Store) error) error {
	cfg, st, err := c.openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	reg := registry.New(registry.Options{Store: st, Logger: c.logger(cfg)})
	defer reg.Close()
	return fn(reg, st)
}

func (c *cli) usersCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "users", Short: "Manage humans: agent owners and approvers"}
	var email, name string
	var roles []string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a local user",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := c.remoteClient(cmd)
			if err != nil {
				return err
			}
			spec := registry.UserSpec{Email: email, Name: name, Roles: roles}
			return c.withRegistryOr(cmd.Context(), rc, func(reg *registry.Registry, st store.Store) error {
				var u store.User
				var err error
				if rc != nil {
					u, err = rc.createUser(cmd.Context(), spec)
				} else {
					if u, err = reg.CreateUser(cmd.Context(), spec); err == nil {
						err = c.appendAudit(cmd.Context(), nil, st, audit.Event{Type: "user_created", Data: map[string]any{
							"user_id": u.ID, "email": u.Email, "roles": u.Roles, "source": u.Source, "by": operator()}})
					}
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "created user %s (%s)\n", u.Email, u.ID)
				return nil
			})
		},
	}
	create.Flags().StringVar(&email, "email", "", "email address (required)")
	create.Flags().StringVar(&name, "name", "", "display name")
	create.Flags().StringArrayVar(&roles, "role", nil, "role, e.g. finance-manager (repeatable)")
	create.MarkFlagRequired("email")
	c.addConfigFlag(create)
	c.addServerFlags(create)

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rc, err := c.remoteClient(cmd); err != nil || rc != nil {
				if err != nil {
					return err
				}
				users, err := rc.listUsers(cmd.Context())
				if err != nil {
					return err
				}
				return c.printUsers(users, asJSON)
			}
			return c.withRegistry(cmd.Context(), func(reg *registry.Registry, _ store.Store) error {
				users, err := reg.ListUsers(cmd.Context())
				if err != nil {
					return err
				}
				return c.printUsers(users, asJSON)
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.addConfigFlag(list)
	c.addServerFlags(list)
	cmd.AddCommand(create, list)
	cmd.AddCommand(c.userLifecycleCmds()...)
	return cmd
}

// printUsers prints users as a table or JSON.
func (c *cli) printUsers(users []store.User, asJSON bool) error {
	if asJSON {
		out := make([]map[string]any, 0, len(users))
		for _, u := range users {
			out = append(out, map[string]any{"id": u.ID, "email": u.Email, "name": u.Name,
				"roles": u.Roles, "active": u.Active, "source": u.Source, "created_at": u.CreatedAt.UTC().Format(time.RFC3339)})
		}
		return json.NewEncoder(c.stdout).Encode(out)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EMAIL\tNAME\tROLES\tACTIVE\tSOURCE")
	for _, u := range users {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", u.Email, u.Name, strings.Join(u.Roles, ","), u.Active, u.Source)
	}
	return tw.Flush()
}

func (c *cli) agentsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "agents", Short: "Manage agents and their tokens"}
	var spec registry.AgentSpec
	var asJSON bool
	create := &cobra.Command{
		Use:   "create",
		Short: "Register an agent and print its token (shown once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := c.remoteClient(cmd)
			if err != nil {
				return err
			}
			return c.withRegistryOr(cmd.Context(), rc, func(reg *registry.Registry, st store.Store) error {
				var a store.Agent
				var token string
				var err error
				if rc != nil {
					a, token, err = rc.createAgent(cmd.Context(), spec)
				} else {
					spec.CreatedBy = operator()
					if a, token, err = reg.CreateAgent(cmd.Context(), spec); err == nil {
						err = c.appendAudit(cmd.Context(), nil, st, audit.Event{Type: "agent_created", AgentID: a.ID, Data: map[string]any{
							"owner": spec.OwnerEmail, "owner_id": a.OwnerID, "name": a.Name, "department": a.Department, "purpose": a.Purpose,
							"allowed_upstreams": a.AllowedUpstreams, "to": a.State, "by": operator()}})
					}
				}
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(c.stdout).Encode(map[string]string{"id": a.ID, "owner": spec.OwnerEmail, "token": token})
				}
				fmt.Fprintf(c.stdout, "created agent %s (owner %s, upstreams: %s)\ntoken (shown once, store it now): %s\n",
					a.ID, spec.OwnerEmail, upstreamsText(a.AllowedUpstreams), token)
				return nil
			})
		},
	}
	create.Flags().StringVar(&spec.ID, "id", "", "agent id (required)")
	create.Flags().StringVar(&spec.OwnerEmail, "owner", "", "owner's email; the owner must exist and be active (required)")
	create.Flags().StringVar(&spec.Name, "name", "", "display name")
	create.Flags().StringVar(&spec.Department, "department", "", "department")
	create.Flags().StringVar(&spec.Purpose, "purpose", "", "what the agent is for")
	create.Flags().StringArrayVar(&spec.AllowedUpstreams, "upstream", nil, "an upstream the agent may call (repeatable; none: every upstream)")
	create.Flags().BoolVar(&asJSON, "json", false, "print a JSON object with id and token")
	create.MarkFlagRequired("id")
	create.MarkFlagRequired("owner")
	c.addConfigFlag(create)
	c.addServerFlags(create)

	var listJSON, orphaned bool
	var state string
	list := &cobra.Command{
		Use:   "list",
		Short: "List agents (--orphaned: those whose owner was deactivated)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if orphaned {
				state = string(store.AgentOrphaned)
			}
			if rc, err := c.remoteClient(cmd); err != nil || rc != nil {
				if err != nil {
					return err
				}
				agents, owners, err := rc.listAgents(cmd.Context(), state)
				if err != nil {
					return err
				}
				return c.printAgents(agents, owners, listJSON)
			}
			return c.withRegistry(cmd.Context(), func(reg *registry.Registry, st store.Store) error {
				all, err := reg.ListAgents(cmd.Context())
				if err != nil {
					return err
				}
				agents := all[:0]
				for _, a := range all {
					if state == "" || string(a.State) == state {
						agents = append(agents, a)
					}
				}
				owners := map[string]string{}
				for _, a := range agents {
					if _, ok := owners[a.OwnerID]; !ok {
						if u, err := st.GetUser(cmd.Context(), a.OwnerID); err == nil {
							owners[a.OwnerID] = u.Email
						}
					}
				}
				return c.printAgents(agents, owners, listJSON)
			})
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")
	list.Flags().BoolVar(&orphaned, "orphaned", false, "only orphaned agents (their owner was deactivated)")
	list.Flags().StringVar(&state, "state", "", "only agents in this state (active, suspended, orphaned, decommissioned)")
	c.addConfigFlag(list)
	c.addServerFlags(list)
	cmd.AddCommand(create, list, c.tokensCmd(), c.setUpstreamsCmd())
	cmd.AddCommand(c.agentLifecycleCmds()...)
	return cmd
}

// printAgents prints agents, with their owners' emails by user id, as a
// table or JSON.
func (c *cli) printAgents(agents []store.Agent, owners map[string]string, listJSON bool) error {
	if listJSON {
		out := make([]map[string]any, 0, len(agents))
		for _, a := range agents {
			out = append(out, map[string]any{"id": a.ID, "name": a.Name, "owner": owners[a.OwnerID],
				"department": a.Department, "purpose": a.Purpose, "state": a.State,
				"state_changed_at": tsText(a.StateChangedAt), "state_reason": a.StateReason,
				"allowed_upstreams": orNone(a.AllowedUpstreams), "created_by": a.CreatedBy,
				"created_at": a.CreatedAt.UTC().Format(time.RFC3339)})
		}
		return json.NewEncoder(c.stdout).Encode(out)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tOWNER\tSTATE\tDEPARTMENT\tNAME")
	for _, a := range agents {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.ID, owners[a.OwnerID], a.State, a.Department, a.Name)
	}
	return tw.Flush()
}

func (c *cli) tokensCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Short: "Manage an agent's tokens (several per agent; each revocable)"}
	var ttl time.Duration
	var asJSON bool
	create := &cobra.Command{
		Use:   "create AGENT",
		Short: "Issue another token for an agent (shown once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := c.remoteClient(cmd)
			if err != nil {
				return err
			}
			return c.withRegistryOr(cmd.Context(), rc, func(reg *registry.Registry, st store.Store) error {
				var t store.AgentToken
				var token string
				var err error
				if rc != nil {
					t, token, err = rc.createToken(cmd.Context(), args[0], ttl)
				} else {
					if t, token, err = reg.CreateToken(cmd.Context(), args[0], ttl); err == nil {
						err = c.appendAudit(cmd.Context(), nil, st, audit.Event{Type: "agent_token_created", AgentID: args[0], Data: map[string]any{
							"token_id": t.ID, "expires_at": t.ExpiresAt, "by": operator()}})
					}
				}
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(c.stdout).Encode(map[string]string{"id": t.ID, "agent": args[0], "token": token})
				}
				fmt.Fprintf(c.stdout, "token %s for agent %s (shown once, store it now): %s\n", t.ID, args[0], token)
				return nil
			})
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", 0, "expire after this long (default: never)")
	create.Flags().BoolVar(&asJSON, "json", false, "print a JSON object with id and token")
	c.addConfigFlag(create)
	c.addServerFlags(create)

	var listJSON bool
	list := &cobra.Command{
		Use:   "list AGENT",
		Short: "List an agent's tokens (never the tokens themselves)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := c.remoteClient(cmd)
			if err != nil {
				return err
			}
			return c.withRegistryOr(cmd.Context(), rc, func(reg *registry.Registry, _ store.Store) error {
				var tokens []store.AgentToken
				var err error
				if rc != nil {
					tokens, err = rc.listTokens(cmd.Context(), args[0])
				} else {
					tokens, err = reg.ListTokens(cmd.Context(), args[0])
				}
				if err != nil {
					return err
				}
				ts := func(t time.Time) string {
					if t.IsZero() {
						return ""
					}
					return t.UTC().Format(time.RFC3339)
				}
				if listJSON {
					out := make([]map[string]string, 0, len(tokens))
					for _, t := range tokens {
						out = append(out, map[string]string{"id": t.ID, "created_at": ts(t.CreatedAt), "expires_at": ts(t.ExpiresAt),
							"revoked_at": ts(t.RevokedAt), "last_used_at": ts(t.LastUsedAt)})
					}
					return json.NewEncoder(c.stdout).Encode(out)
				}
				tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tCREATED\tEXPIRES\tREVOKED\tLAST USED")
				for _, t := range tokens {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, ts(t.CreatedAt), ts(t.ExpiresAt), ts(t.RevokedAt), ts(t.LastUsedAt))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")
	c.addConfigFlag(list)
	c.addServerFlags(list)

	var revokeAgent string
	revoke := &cobra.Command{
		Use:   "revoke TOKEN-ID [--agent ID]",
		Short: "Revoke a token: calls made with it are refused from then on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := c.remoteClient(cmd)
			if err != nil {
				return err
			}
			if rc != nil && revokeAgent == "" {
				return fmt.Errorf("--agent is required with --server: the agent whose token %s is (see: interlock agents tokens list AGENT)", args[0])
			}
			return c.withRegistryOr(cmd.Context(), rc, func(reg *registry.Registry, st store.Store) error {
				if rc != nil {
					if err := rc.revokeToken(cmd.Context(), revokeAgent, args[0]); err != nil {
						return err
					}
					fmt.Fprintf(c.stdout, "revoked token %s\n", args[0])
					return nil
				}
				if revokeAgent != "" {
					toks, err := reg.ListTokens(cmd.Context(), revokeAgent)
					if err != nil {
						return err
					}
					if !slices.ContainsFunc(toks, func(t store.AgentToken) bool { return t.ID == args[0] }) {
						return fmt.Errorf("agent %s has no token %q", revokeAgent, args[0])
					}
				}
				if err := reg.RevokeToken(cmd.Context(), args[0]); err != nil {
					return err
				}
				if err := c.appendAudit(cmd.Context(), nil, st, audit.Event{Type: "agent_tokens_revoked", AgentID: revokeAgent, Data: map[string]any{
					"count": 1, "ids": []string{args[0]}, "by": operator()}}); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "revoked token %s\n", args[0])
				return nil
			})
		},
	}
	revoke.Flags().StringVar(&revokeAgent, "agent", "", "the agent the token belongs to (required with --server)")
	c.addConfigFlag(revoke)
	c.addServerFlags(revoke)

	var rotateAgent string
	var rotateTTL time.Duration
	var rotateJSON bool
	rotate := &cobra.Command{
		Use:   "rotate TOKEN-ID --agent ID [--ttl D]",
		Short: "Replace a token: a new one is issued (shown once) and the old one revoked",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rc, err := c.remoteClient(cmd)
			if err != nil {
				return err
			}
			return c.withRegistryOr(ctx, rc, func(reg *registry.Registry, st store.Store) error {
				var toks []store.AgentToken
				if rc != nil {
					toks, err = rc.listTokens(ctx, rotateAgent)
				} else {
					toks, err = reg.ListTokens(ctx, rotateAgent)
				}
				if err != nil {
					return err
				}
				i := slices.IndexFunc(toks, func(t store.AgentToken) bool { return t.ID == args[0] })
				switch {
				case i < 0:
					return fmt.Errorf("agent %s has no token %q (see: interlock agents tokens list %s)", rotateAgent, args[0], rotateAgent)
				case !toks[i].RevokedAt.IsZero():
					return fmt.Errorf("token %s is already revoked: create a new one with interlock agents tokens create %s", args[0], rotateAgent)
				}
				// The new token first: the agent is never left without one.
				var t store.AgentToken
				var token string
				if rc != nil {
					if t, token, err = rc.createToken(ctx, rotateAgent, rotateTTL); err == nil {
						err = rc.revokeToken(ctx, rotateAgent, args[0])
					}
				} else if t, token, err = reg.CreateToken(ctx, rotateAgent, rotateTTL); err == nil {
					if err = reg.RevokeToken(ctx, args[0]); err == nil {
						err = c.appendAudit(ctx, nil, st, audit.Event{Type: "agent_token_rotated", AgentID: rotateAgent, Data: map[string]any{
							"old_token_id": args[0], "token_id": t.ID, "expires_at": t.ExpiresAt, "by": operator()}})
					}
				}
				if err != nil {
					return err
				}
				if rotateJSON {
					return json.NewEncoder(c.stdout).Encode(map[string]string{"id": t.ID, "agent": rotateAgent, "token": token, "revoked": args[0]})
				}
				fmt.Fprintf(c.stdout, "token %s revoked; the new token of %s (shown once): %s\n", args[0], rotateAgent, token)
				return nil
			})
		},
	}
	rotate.Flags().StringVar(&rotateAgent, "agent", "", "the agent the token belongs to (required)")
	rotate.Flags().DurationVar(&rotateTTL, "ttl", 0, "the new token expires after this long (default: never)")
	rotate.Flags().BoolVar(&rotateJSON, "json", false, "print JSON")
	rotate.MarkFlagRequired("agent")
	c.addConfigFlag(rotate)
	c.addServerFlags(rotate)
	cmd.AddCommand(create, list, revoke, rotate)
	return cmd
}

// upstreamsText says which upstreams an agent may call.
func upstreamsText(ups []string) string {
	if len(ups) == 0 {
		return "all"
	}
	return strings.Join(ups, ", ")
}

// orNone is ups, never nil (a JSON array).
func orNone(ups []string) []string {
	if ups == nil {
		return []string{}
	}
	return ups
}

// setUpstreamsCmd is "agents set-upstreams ID --upstream A --upstream B |
// --all".
func (c *cli) setUpstreamsCmd() *cobra.Command {
	var ups []string
	var all bool
	cmd := &cobra.Command{
		Use:   "set-upstreams ID --upstream NAME... | --all",
		Short: "Choose the upstreams an agent may call (--all: every upstream)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(ups) > 0) {
				return fmt.Errorf("give either --upstream (one or more) or --all")
			}
			a, err := localOrRemote(c, cmd, func(ctx context.Context, rc *adminClient) (store.Agent, error) {
				return rc.setUpstreams(ctx, args[0], ups)
			}, func(ctx context.Context, lc *registry.Lifecycle) (store.Agent, error) {
				return lc.SetAllowedUpstreams(ctx, args[0], ups, operator())
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "agent %s may call: %s\n", a.ID, upstreamsText(a.AllowedUpstreams))
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&ups, "upstream", nil, "an upstream the agent may call (repeatable)")
	cmd.Flags().BoolVar(&all, "all", false, "let the agent call every upstream")
	c.addConfigFlag(cmd)
	c.addServerFlags(cmd)
	return cmd
}

// setUpstreams replaces an agent's allowed upstreams on the server.
func (a *adminClient) setUpstreams(ctx context.Context, id string, ups []string) (store.Agent, error) {
	var ag adminapi.Agent
	err := a.do(ctx, "POST", "/agents/"+esc(id)+"/upstreams", nil, map[string][]string{"allowed_upstreams": orNone(ups)}, &ag)
	return ag.Store(), err
}
