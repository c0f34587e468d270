package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/verify"
)

const (
	demoOwner   = "owner@demo.example"
	demoFinance = "finance@demo.example"
	demoAgent   = "procurement-bot"
)

func (c *cli) demoCmd() *cobra.Command {
	var dataDir, listen string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run interlock with a built-in demo MCP server, owner and agent (no setup needed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.demo(cmd.Context(), dataDir, listen, nil)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "", "keep the demo's store and config in this directory (default: a temporary one, removed on exit)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8470", "address to serve on")
	return cmd
}

// demo runs the demo until ctx ends. ready, if set, gets the agent token and
// the address once everything is up (for tests).
func (c *cli) demo(ctx context.Context, dataDir, listen string, ready func(addr, token string)) error {
	if dataDir == "" {
		tmp, err := os.MkdirTemp("", "interlock-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dataDir = tmp
	} else if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listening on %s (is another interlock running? try --listen 127.0.0.1:0): %w", listen, err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	// The public URL names localhost, not the address: passkeys (the
	// approvers' console) are bound to a name.
	public := "http://localhost:" + addr[strings.LastIndexByte(addr, ':')+1:]

	// The demo upstream, in process, on a loopback port of its own. It
	// checks every call's credential itself with the verify package, as a
	// tool owner would: defence in depth.
	acmeLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	verifier, err := verify.New(verify.Options{Issuer: public})
	if err != nil {
		return err
	}
	acmeSrv := acme.NewServer(acme.Options{Verifier: verifier, Logger: slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("component", "acme")})
	acmeHTTP := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return acmeSrv }, nil),
		ReadHeaderTimeout: 10 * time.Second}
	go acmeHTTP.Serve(acmeLn)
	defer acmeHTTP.Close()

	cfgPath := filepath.Join(dataDir, "interlock.yaml")
	if err := os.WriteFile(filepath.Join(dataDir, "policy.yaml"), acme.DemoPolicy, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dataDir, "policy_cases.yaml"), acme.DemoPolicyCases, 0o600); err != nil {
		return err
	}
	scimToken := make([]byte, 24)
	if _, err := rand.Read(scimToken); err != nil {
		return err
	}
	cfgText := fmt.Sprintf(`# Written by "interlock demo"; rewritten at every demo start.
listen: %s
public_url: %s
storage:
  driver: sqlite
  dsn: interlock.db
policy:
  file: policy.yaml
upstreams:
  - name: acme
    url: http://%s/mcp
scim:
  token: %s
`, addr, public, acmeLn.Addr(), hex.EncodeToString(scimToken))
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath, config.LoadOptions{})
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	log := c.logger(cfg)
	a, err := app.New(ctx, cfg, app.Options{Logger: log})
	if err != nil {
		return err
	}
	defer a.Close()
	token, err := seedDemo(ctx, a.Registry)
	if err != nil {
		return err
	}
	// A demo owner deprovisioned in an earlier run comes back, with the
	// demo agent.
	lc := a.Lifecycle()
	if _, err := lc.ActivateUser(ctx, demoOwner, "demo", "demo start"); err != nil {
		return err
	}
	if ag, err := a.Registry.GetAgent(ctx, demoAgent); err == nil && ag.State != store.AgentActive {
		if _, err := lc.ReassignAgent(ctx, demoAgent, demoOwner, "demo", "demo start"); err != nil {
			return err
		}
		if ag.State == store.AgentSuspended {
			if _, err := lc.ResumeAgent(ctx, demoAgent, "demo", "demo start"); err != nil {
				return err
			}
		}
	}
	owner, err := a.Registry.GetUserByEmail(ctx, demoOwner)
	if err != nil {
		return err
	}
	var links []string
	for _, email := range []string{demoOwner, demoFinance} {
		u, err := a.Registry.GetUserByEmail(ctx, email)
		if err != nil {
			return err
		}
		link, err := a.Enroll(ctx, u.ID, "demo", 24*time.Hour)
		if err != nil {
			return err
		}
		links = append(links, link)
	}
	c.printDemo(public, token, cfgPath, links)
	fmt.Fprintf(c.stdout, `The ghost-agent kill switch: deprovision the demo owner as Entra ID would (SCIM), and the
agent's next call is refused as orphaned (its credentials revoked, its approvals cancelled):
  curl -s -X PATCH -H 'Authorization: Bearer %[1]s' -H 'Content-Type: application/scim+json' -d '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}' %[2]s/scim/v2/Users/%[3]s
then bring the agent back:
  %[4]s agents reassign %[5]s --to %[6]s --config %[7]s

`, hex.EncodeToString(scimToken), public, owner.ID, selfCommand(), demoAgent, demoFinance, cfgPath)
	if ready != nil {
		ready(addr, token)
	}
	return a.Serve(ctx, ln, nil)
}

// seedDemo creates the demo owner and agent if missing, and returns a fresh
// token for the agent.
func seedDemo(ctx context.Context, reg *registry.Registry) (string, error) {
	if _, err := reg.GetUserByEmail(ctx, demoOwner); errors.Is(err, store.ErrNotFound) {
		if _, err := reg.CreateUser(ctx, registry.UserSpec{Email: demoOwner, Name: "Dana Owner"}); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	if _, err := reg.GetUserByEmail(ctx, demoFinance); errors.Is(err, store.ErrNotFound) {
		if _, err := reg.CreateUser(ctx, registry.UserSpec{Email: demoFinance, Name: "Frank Finance", Roles: []string{"finance-manager"}}); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	if _, err := reg.GetAgent(ctx, demoAgent); errors.Is(err, store.ErrNotFound) {
		_, token, err := reg.CreateAgent(ctx, registry.AgentSpec{ID: demoAgent, OwnerEmail: demoOwner,
			Name: "Procurement agent", Department: "operations", Purpose: "buys supplies and handles refunds"})
		return token, err
	} else if err != nil {
		return "", err
	}
	_, token, err := reg.CreateToken(ctx, demoAgent, 0)
	return token, err
}

// selfCommand is how the user runs this binary again: "go run ./cmd/interlock"
// when started with go run, else the executable's path.
func selfCommand() string {
	exe, err := os.Executable()
	if err != nil || strings.Contains(exe, "go-build") {
		return "go run ./cmd/interlock"
	}
	return exe
}

func (c *cli) printDemo(base, token, cfgPath string, links []string) {
	self := selfCommand()
	fmt.Fprintf(c.stdout, `
interlock demo is running (Ctrl-C stops it).

  MCP endpoint, acme only:     %[1]s/mcp/acme
  MCP endpoint, aggregated:    %[1]s/mcp   (tools named acme_<tool>)
  agent:                       %[2]s (owner %[3]s)
  agent token (shown once):    %[4]s

Paste into an MCP client (Streamable HTTP):
  {"mcpServers":{"acme-via-interlock":{"type":"http","url":"%[1]s/mcp/acme","headers":{"Authorization":"Bearer %[4]s"}}}}

Every tool call is decided by the demo policy (%[7]s):
orders under $400 go through, up to $5,000 need the owner's approval and above that a
finance manager's; production servers need approval; customer records only with an open
support ticket; a daily spend budget of $2,000 per agent. Every call interlock lets
through carries a short-lived signed credential for exactly that action, and acme
refuses any call without one. Try three calls:

  allowed (a $125 order); its credential comes back as the receipt and is saved:
  %[5]s call --url %[1]s/mcp/acme --token %[4]s --credential-out %[8]s place_order '{"item":"USB-C cables","quantity":10,"unit_price_usd":12.5}'

  then check that credential (signature, validity, revocation, and the call it is for):
  %[5]s credentials verify --config %[6]s --file %[8]s --call '{"upstream":"acme","tool":"place_order","arguments":{"item":"USB-C cables","quantity":10,"unit_price_usd":12.5}}'

  denied (CUST-004 has no open support ticket):
  %[5]s call --url %[1]s/mcp/acme --token %[4]s get_customer_record '{"customer_id":"CUST-004"}'

  needs approval (a $1,200 order): the call waits while the owner is asked. First open the
  owner's one-time link in a browser and register a passkey (the browser's own passkey
  manager or a phone will do):
    owner (%[3]s):           %[9]s
    finance manager (%[10]s): %[11]s
  then make the call, and approve it in the console (%[1]s/console) while it waits:
  %[5]s call --url %[1]s/mcp/acme --token %[4]s place_order '{"item":"laptop batteries","quantity":10,"unit_price_usd":120}'
  it goes through with a credential that names the owner; orders above $5,000 need the finance
  manager, and the owner may not approve those (separation of duties).

Every decision is in the tamper-evident audit log:
  %[5]s audit tail --config %[6]s
  %[5]s audit verify --config %[6]s

Why a call is decided as it is, without making it:
  %[5]s policy explain --config %[6]s --agent %[2]s --tool acme.place_order --args '{"item":"x","quantity":10,"unit_price_usd":120}'

Other commands against this demo's store take --config %[6]s
  (for example: %[5]s tools list --config %[6]s)

`, base, demoAgent, demoOwner, token, self, cfgPath, filepath.Join(filepath.Dir(cfgPath), "policy.yaml"),
		filepath.Join(filepath.Dir(cfgPath), "receipt.jwt"), links[0], demoFinance, links[1])
}
