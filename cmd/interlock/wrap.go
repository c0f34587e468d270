package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/gate"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/relay"
)

var nonName = regexp.MustCompile(`[^a-zA-Z0-9_-]+`)

func (c *cli) wrapCmd() *cobra.Command {
	var agentID, token, name string
	cmd := &cobra.Command{
		Use:   "wrap --config FILE --agent ID [--token TOKEN] -- CMD [ARGS...]",
		Short: "Put interlock between a local MCP client and a stdio MCP server",
		Long: `wrap is a stdio MCP server for local clients (Claude Desktop, Cursor, IDEs). It spawns
the real stdio server CMD and relays every message through interlock's gate. Replace
"npx some-server" by "interlock wrap --config F --agent ID -- npx some-server" in the
client's configuration. Only protocol messages are written to stdout; logs go to stderr.
The token may come from INTERLOCK_AGENT_TOKEN instead of --token.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if token == "" {
				token = os.Getenv("INTERLOCK_AGENT_TOKEN")
			}
			if token == "" {
				return errors.New("an agent token is required: --token or INTERLOCK_AGENT_TOKEN")
			}
			if cmd.ArgsLenAtDash() != 0 {
				return errors.New("put the server command after --, e.g. interlock wrap --agent a -- npx some-server")
			}
			explicitName := name != ""
			if name == "" {
				name = nonName.ReplaceAllString(strings.TrimSuffix(filepath.Base(args[0]), filepath.Ext(args[0])), "_")
				if (name == "npx" || name == "uvx" || name == "node" || name == "python" || name == "python3") && len(args) > 1 {
					last := args[len(args)-1]
					for _, a := range args[1:] {
						if !strings.HasPrefix(a, "-") {
							last = a
							break
						}
					}
					name = nonName.ReplaceAllString(filepath.Base(last), "_")
				}
				if len(name) > 32 {
					name = name[:32]
				}
			}
			cfg, err := c.loadConfig()
			if err != nil {
				return err
			}
			log := c.logger(cfg)
			ctx := cmd.Context()
			st, err := app.OpenStore(ctx, cfg.Storage, log)
			if err != nil {
				return err
			}
			defer st.Close()
			reg := registry.New(registry.Options{Store: st, Logger: log})
			defer reg.Close()
			p, err := reg.Authenticate(ctx, token)
			if err != nil {
				return fmt.Errorf("agent token: %w", err)
			}
			if p.Agent.ID != agentID {
				return fmt.Errorf("the token does not belong to agent %q", agentID)
			}
			if why := gate.Inactive(&p); why != "" {
				return fmt.Errorf("interlock refuses to start: %s", why)
			}
			key := make([]byte, 32)
			rand.Read(key)
			up := relay.Upstream{Name: name, Command: args}
			for _, u := range cfg.Upstreams {
				if len(u.Command) > 0 && strings.Join(u.Command, "\x00") == strings.Join(args, "\x00") {
					up = app.RelayUpstream(u) // configured: take its env, dir and name
					if explicitName {
						up.Name = name
					}
				}
			}
			// The same decision path as the HTTP gateway: policy, catalog,
			// audit log and gate. The catalog knows the wrapped server and
			// the configured HTTP upstreams (for lookups); it does not start
			// the other configured stdio servers (a desktop client may run
			// many wraps), so a lookup on one of those fails closed.
			catCfg := *cfg
			catCfg.Upstreams = nil
			for _, u := range cfg.Upstreams {
				if u.URL != "" && u.Name != up.Name {
					catCfg.Upstreams = append(catCfg.Upstreams, u)
				}
			}
			dp, err := app.NewDecisionPath(ctx, app.DecisionOptions{Config: cfg, Store: st,
				Catalog: app.NewCatalog(&catCfg, log, time.Now, up), Logger: log, Now: time.Now})
			if err != nil {
				return err
			}
			defer dp.Close()
			go dp.Policy.Watch(ctx, time.Duration(cfg.Policy.WatchInterval), nil)
			r, err := relay.New(relay.Options{Upstreams: []relay.Upstream{up}, Auth: reg,
				Gate: dp.Gate, SessionKey: key, Logger: log, MaxMessageBytes: cfg.Relay.MaxMessageBytes,
				OnListChanged: func(upstream, method string) { dp.Catalog.NotifyListChanged(upstream) }})
			if err != nil {
				return err
			}
			defer r.Close()
			log.Info("wrapping stdio MCP server", "agent", agentID, "upstream", up.Name, "command", args[0])
			return r.ServeStdio(ctx, os.Stdin, os.Stdout, token, up.Name)
		},
	}
	cmd.Flags().StringVar(&agentID, "agent", "", "the agent's id (required)")
	cmd.Flags().StringVar(&token, "token", "", "the agent's token (or env INTERLOCK_AGENT_TOKEN)")
	cmd.Flags().StringVar(&name, "name", "", "upstream name used in decisions and logs (default: from CMD)")
	cmd.MarkFlagRequired("agent")
	c.addConfigFlag(cmd)
	return cmd
}
