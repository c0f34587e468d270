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
			return c.withRegistry(cmd.Context(), func(reg *registry.Registry, _ store.Store) error {
				u, err := reg.CreateUser(cmd.Context(), registry.UserSpec{Email: email, Name: name, Roles: roles})
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

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withRegistry(cmd.Context(), func(reg *registry.Registry, _ store.Store) error {
				users, err := reg.ListUsers(cmd.Context())
				if err != nil {
					return err
				}
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
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.addConfigFlag(list)
	cmd.AddCommand(create, list)
	cmd.AddCommand(c.userLifecycleCmds()...)
	return cmd
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
			return c.withRegistry(cmd.Context(), func(reg *registry.Registry, _ store.Store) error {
				a, token, err := reg.CreateAgent(cmd.Context(), spec)
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(c.stdout).Encode(map[string]string{"id": a.ID, "owner": spec.OwnerEmail, "token": token})
				}
				fmt.Fprintf(c.stdout, "created agent %s (owner %s)\ntoken (shown once, store it now): %s\n", a.ID, spec.OwnerEmail, token)
				return nil
			})
		},
	}
	create.Flags().StringVar(&spec.ID, "id", "", "agent id (required)")
	create.Flags().StringVar(&spec.OwnerEmail, "owner", "", "owner's email; the owner must exist and be active (required)")
	create.Flags().StringVar(&spec.Name, "name", "", "display name")
	create.Flags().StringVar(&spec.Department, "department", "", "department")
	create.Flags().StringVar(&spec.Purpose, "purpose", "", "what the agent is for")
	create.Flags().BoolVar(&asJSON, "json", false, "print a JSON object with id and token")
	create.MarkFlagRequired("id")
	create.MarkFlagRequired("owner")
	c.addConfigFlag(create)

	var listJSON, orphaned bool
	var state string
	list := &cobra.Command{
		Use:   "list",
		Short: "List agents (--orphaned: those whose owner was deactivated)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withRegistry(cmd.Context(), func(reg *registry.Registry, st store.Store) error {
				all, err := reg.ListAgents(cmd.Context())
				if err != nil {
					return err
				}
				if orphaned {
					state = string(store.AgentOrphaned)
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
				if listJSON {
					out := make([]map[string]any, 0, len(agents))
					for _, a := range agents {
						out = append(out, map[string]any{"id": a.ID, "name": a.Name, "owner": owners[a.OwnerID],
							"department": a.Department, "purpose": a.Purpose, "state": a.State,
							"state_changed_at": tsText(a.StateChangedAt), "state_reason": a.StateReason,
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
			})
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")
	list.Flags().BoolVar(&orphaned, "orphaned", false, "only orphaned agents (their owner was deactivated)")
	list.Flags().StringVar(&state, "state", "", "only agents in this state (active, suspended, orphaned, decommissioned)")
	c.addConfigFlag(list)
	cmd.AddCommand(create, list, c.tokensCmd())
	cmd.AddCommand(c.agentLifecycleCmds()...)
	return cmd
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
			return c.withRegistry(cmd.Context(), func(reg *registry.Registry, _ store.Store) error {
				t, token, err := reg.CreateToken(cmd.Context(), args[0], ttl)
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

	var listJSON bool
	list := &cobra.Command{
		Use:   "list AGENT",
		Short: "List an agent's tokens (never the tokens themselves)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withRegistry(cmd.Context(), func(reg *registry.Registry, _ store.Store) error {
				tokens, err := reg.ListTokens(cmd.Context(), args[0])
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

	revoke := &cobra.Command{
		Use:   "revoke TOKEN-ID",
		Short: "Revoke a token: calls made with it are refused from then on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withRegistry(cmd.Context(), func(reg *registry.Registry, _ store.Store) error {
				if err := reg.RevokeToken(cmd.Context(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "revoked token %s\n", args[0])
				return nil
			})
		},
	}
	c.addConfigFlag(revoke)
	cmd.AddCommand(create, list, revoke)
	return cmd
}
