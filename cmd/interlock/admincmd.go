package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/internal/adminapi"
	"github.com/interlock-dev/interlock/internal/config"
)

// adminCmd is "interlock admin": the admin API's tokens.
func (c *cli) adminCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "admin", Short: "Admin API tokens (the API at /api/v1 that the CLI uses with --server)"}
	var name string
	var roles []string
	var asJSON bool
	token := &cobra.Command{
		Use:   "token --name NAME --role ROLE",
		Short: "Make an admin token: prints it once, and the line to add under admin.tokens",
		Long: `Make a new admin token (256 random bits, prefix ila_). It is printed once;
only its SHA-256 goes into the configuration, under admin.tokens, where the
gateway reads it at start-up. Roles: viewer (reads), security (also
suspends and resumes agents, deactivates and activates users, stops and
resumes, revokes tokens and credentials), admin (everything).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" || len(name) > 64 || strings.ContainsFunc(name, func(r rune) bool {
				return !(r == '.' || r == '_' || r == '-' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
			}) {
				return fmt.Errorf("--name %q: want 1-64 characters from a-z, A-Z, 0-9, \".\", \"_\" and \"-\"", name)
			}
			if len(roles) == 0 {
				return fmt.Errorf("--role is required: %s", strings.Join(config.AdminRoles, ", "))
			}
			for _, r := range roles {
				if !slices.Contains(config.AdminRoles, r) {
					return fmt.Errorf("--role %q: want %s", r, strings.Join(config.AdminRoles, ", "))
				}
			}
			slices.Sort(roles)
			roles = slices.Compact(roles)
			tok, err := adminapi.NewToken()
			if err != nil {
				return err
			}
			hash := adminapi.HashHex(tok)
			line := fmt.Sprintf("- {name: %s, sha256: %s, roles: [%s]}", name, hash, strings.Join(roles, ", "))
			if asJSON {
				return json.NewEncoder(c.stdout).Encode(map[string]any{"name": name, "token": tok, "sha256": hash, "roles": roles, "yaml": line})
			}
			fmt.Fprintf(c.stdout, "admin token %q (shown once, store it now): %s\n\n", name, tok)
			fmt.Fprintf(c.stdout, "add it to the configuration under admin.tokens, then restart the gateway:\n\nadmin:\n  tokens:\n    %s\n\n", line)
			fmt.Fprintf(c.stdout, "use it: interlock agents list --server URL --admin-token TOKEN (or INTERLOCK_SERVER, INTERLOCK_ADMIN_TOKEN)\n")
			return nil
		},
	}
	token.Flags().StringVar(&name, "name", "", "the token's name, as the audit log shows it (admin:NAME) (required)")
	token.Flags().StringArrayVar(&roles, "role", nil, "viewer, security or admin (repeatable)")
	token.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(token)
	return cmd
}
