package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/internal/adminapi"
)

// The CLI against a running gateway (--server, --admin-token): the same
// commands and output as on the local store, with the change made by the
// gateway itself, so the very next MCP call is refused (no waiting for a
// cache), audited as admin:<token name>, and a viewer token gets a clear
// 403.
func TestRemoteCLIAgainstARunningGateway(t *testing.T) {
	opsTok, err := adminapi.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	viewTok, _ := adminapi.NewToken()
	e := newCredentialEnvWith(t, fmt.Sprintf(`admin:
  tokens:
    - {name: ops, sha256: %s, roles: [admin]}
    - {name: auditors, sha256: %s, roles: [viewer]}
`, adminapi.HashHex(opsTok), adminapi.HashHex(viewTok)))
	srv := "http://" + e.addr
	remote := func(args ...string) (string, error) {
		t.Helper()
		out, _, err := run(t, append(args, "--server", srv, "--admin-token", opsTok)...)
		return out, err
	}
	small := map[string]any{"item": "USB-C cables", "quantity": 10, "unit_price_usd": 12.5}
	// call opens a new MCP session (the gateway closes a stopped agent's
	// sessions) and makes one call.
	call := func() callResult {
		t.Helper()
		return callFull(t, connectHTTP(t, srv+"/mcp/acme", e.token), "place_order", small)
	}

	// sameAsLocal checks that each command prints over --server what it
	// prints on the local store.
	sameAsLocal := func(cmds ...[]string) {
		t.Helper()
		for _, args := range cmds {
			local, _, err := run(t, append(args, "--config", e.cfg)...)
			if err != nil {
				t.Fatalf("%v: %v", args, err)
			}
			rem, err := remote(args...)
			if err != nil {
				t.Fatalf("%v --server: %v", args, err)
			}
			if rem != local {
				t.Errorf("%v: --server prints\n%s\nthe local store\n%s", args, rem, local)
			}
		}
	}
	// The same output as the local store's, in JSON and as a table.
	sameAsLocal(
		[]string{"agents", "list", "--json"}, []string{"agents", "list"}, []string{"users", "list", "--json"}, []string{"users", "list"},
		[]string{"users", "show", "owner@example.com", "--json"}, []string{"users", "show", "owner@example.com"},
		[]string{"agents", "show", "procurement-bot", "--json"}, []string{"agents", "tokens", "list", "procurement-bot", "--json"},
	)
	var listed []struct{ ID, Owner, State string }
	out, err := remote("agents", "list", "--json")
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 1 || listed[0].ID != "procurement-bot" ||
		listed[0].Owner != "owner@example.com" || listed[0].State != "active" {
		t.Fatalf("agents list --server --json: %v\n%s", err, out)
	}

	if r := call(); r.isError {
		t.Fatalf("first call: %s", r.text)
	}
	// Credentials and approvals read over --server print what the local
	// store prints.
	sameAsLocal(
		[]string{"credentials", "list", "--json"}, []string{"credentials", "list"},
		[]string{"credentials", "list", "--live", "--agent", "procurement-bot", "--json"},
		[]string{"approvals", "list", "--json"}, []string{"approvals", "list", "--state", "pending"},
	)
	var creds []struct{ ID, State string }
	out, err = remote("credentials", "list", "--json")
	if err != nil || json.Unmarshal([]byte(out), &creds) != nil || len(creds) != 1 {
		t.Fatalf("credentials list --server --json: %v\n%s", err, out)
	}
	if out, err := remote("credentials", "revoke", creds[0].ID, "--reason", "drill"); err != nil || !strings.Contains(out, "revoked credential "+creds[0].ID) {
		t.Errorf("credentials revoke --server: %v\n%s", err, out)
	}
	if out, err := remote("credentials", "revoke", creds[0].ID, "--reason", "again"); err != nil || !strings.Contains(out, "was already revoked") || !strings.Contains(out, "drill") {
		t.Errorf("credentials revoke --server, twice: %v\n%s", err, out)
	}
	if out, err := remote("credentials", "list", "--json"); err != nil || !strings.Contains(out, `"state":"revoked"`) {
		t.Errorf("credentials list --server after revoke: %v\n%s", err, out)
	}
	if _, err := remote("approvals", "show", "no-such-approval"); err == nil || !strings.Contains(err.Error(), "no approval") {
		t.Errorf("approvals show --server of an unknown id: %v", err)
	}
	out, err = remote("agents", "suspend", "procurement-bot", "--reason", "incident 9")
	if err != nil || !strings.Contains(out, "suspended: 1 agent(s) changed") || !strings.Contains(out, "the gateway refuses these agents from now on") {
		t.Fatalf("agents suspend --server: %v\n%s", err, out)
	}
	// The very next call is refused by the kill switch, without waiting.
	if r := call(); !r.isError || !strings.Contains(r.text, "suspended") || !strings.Contains(r.text, "incident 9") {
		t.Errorf("call after a remote suspend: %+v", r)
	}
	out, err = remote("agents", "show", "procurement-bot")
	if err != nil || !strings.Contains(out, "by admin:ops") || !strings.Contains(out, "agent_suspended") {
		t.Errorf("agents show --server: %v\n%s", err, out)
	}

	// A viewer may read but not resume: a clear 403.
	if _, _, err := run(t, "agents", "list", "--server", srv, "--admin-token", viewTok); err != nil {
		t.Errorf("viewer agents list: %v", err)
	}
	_, _, err = run(t, "agents", "resume", "procurement-bot", "--server", srv, "--admin-token", viewTok)
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), `admin token "auditors"`) ||
		!strings.Contains(err.Error(), "may not resume agents") || !strings.Contains(err.Error(), "security or admin") {
		t.Errorf("viewer resume: %v", err)
	}
	_, _, err = run(t, "agents", "list", "--server", srv, "--admin-token", adminapi.TokenPrefix+"wrong")
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "--admin-token") {
		t.Errorf("bad admin token: %v", err)
	}
	if _, _, err := run(t, "agents", "list", "--server", srv); err == nil || !strings.Contains(err.Error(), "admin token") {
		t.Errorf("--server without a token: %v", err)
	}
	if out, err := remote("agents", "resume", "procurement-bot"); err != nil || !strings.Contains(out, "is active") {
		t.Fatalf("agents resume --server: %v\n%s", err, out)
	}
	if r := call(); r.isError {
		t.Errorf("call after resume: %s", r.text)
	}

	// Deactivating the owner orphans the agent.
	if _, err := remote("users", "create", "--email", "next@example.com", "--name", "Next"); err != nil {
		t.Fatal(err)
	}
	out, err = remote("users", "deactivate", "owner@example.com", "--reason", "left the company")
	if err != nil || !strings.Contains(out, "deactivated owner@example.com: 1 agent(s) changed (procurement-bot)") {
		t.Fatalf("users deactivate --server: %v\n%s", err, out)
	}
	if r := call(); !r.isError || !strings.Contains(r.text, "orphaned") {
		t.Errorf("call after a remote deactivate: %+v", r)
	}
	out, err = remote("agents", "list", "--orphaned", "--json")
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 1 || listed[0].State != "orphaned" {
		t.Errorf("agents list --orphaned --server: %v\n%s", err, out)
	}
	if out, err := remote("agents", "reassign", "procurement-bot", "--to", "next@example.com"); err != nil || !strings.Contains(out, "now belongs to next@example.com and is active") {
		t.Fatalf("agents reassign --server: %v\n%s", err, out)
	}
	if r := call(); r.isError {
		t.Errorf("call after reassign: %s", r.text)
	}
	if out, err := remote("users", "activate", "owner@example.com"); err != nil || !strings.Contains(out, "activated owner@example.com") {
		t.Errorf("users activate --server: %v\n%s", err, out)
	}
	if out, err := remote("agents", "set-upstreams", "procurement-bot", "--upstream", "nowhere"); err != nil || !strings.Contains(out, "may call: nowhere") {
		t.Errorf("agents set-upstreams --server: %v\n%s", err, out)
	}
	if r := call(); !r.isError {
		t.Errorf("a call to acme after set-upstreams --upstream nowhere went through: %s", r.text)
	}
	if out, err := remote("agents", "set-upstreams", "procurement-bot", "--all"); err != nil || !strings.Contains(out, "may call: all") {
		t.Errorf("agents set-upstreams --all --server: %v\n%s", err, out)
	}
	if r := call(); r.isError {
		t.Errorf("call after set-upstreams --all: %s", r.text)
	}

	// Tokens.
	out, err = remote("agents", "tokens", "create", "procurement-bot", "--ttl", "1h", "--json")
	var tok struct{ ID, Token string }
	if err != nil || json.Unmarshal([]byte(out), &tok) != nil || !strings.HasPrefix(tok.Token, "ilk_") {
		t.Fatalf("tokens create --server: %v\n%s", err, out)
	}
	if _, err := remote("agents", "tokens", "revoke", tok.ID); err == nil || !strings.Contains(err.Error(), "--agent") {
		t.Errorf("tokens revoke --server without --agent: %v", err)
	}
	if out, err := remote("agents", "tokens", "revoke", tok.ID, "--agent", "procurement-bot"); err != nil || !strings.Contains(out, "revoked token "+tok.ID) {
		t.Errorf("tokens revoke --server: %v\n%s", err, out)
	}
	if out, err := remote("agents", "tokens", "list", "procurement-bot"); err != nil || strings.Count(out, "tok_") != 2 {
		t.Errorf("tokens list --server: %v\n%s", err, out)
	}

	// The emergency stop.
	if out, err := remote("stop", "--all", "--reason", "drill"); err != nil || !strings.Contains(out, "stopped: 1 agent(s) changed") {
		t.Errorf("stop --server: %v\n%s", err, out)
	}
	if r := call(); !r.isError || !strings.Contains(r.text, "drill") {
		t.Errorf("call after a remote stop: %+v", r)
	}
	if out, err := remote("resume", "--all", "--json"); err != nil || !strings.Contains(out, `"agents":["procurement-bot"]`) {
		t.Errorf("resume --server: %v\n%s", err, out)
	}

	// The environment variables work as the flags do.
	t.Setenv("INTERLOCK_SERVER", srv)
	t.Setenv("INTERLOCK_ADMIN_TOKEN", viewTok)
	if out, _, err := run(t, "users", "list"); err != nil || !strings.Contains(out, "next@example.com") {
		t.Errorf("users list with INTERLOCK_SERVER: %v\n%s", err, out)
	}

	// Every change is audited with the token's name, and the chain holds.
	out, _, err = run(t, "audit", "export", "--config", e.cfg)
	for _, typ := range []string{"agent_suspended", "agent_resumed", "user_deactivated", "agent_reassigned", "user_created", "agent_tokens_revoked", "emergency_stop"} {
		if err != nil || !strings.Contains(out, `"`+typ+`"`) {
			t.Errorf("audit export lacks %s (%v)", typ, err)
		}
	}
	if !strings.Contains(out, `"by":"admin:ops"`) {
		t.Error(`no audit event says "by":"admin:ops"`)
	}
	if _, _, err := run(t, "audit", "verify", "--config", e.cfg); err != nil {
		t.Errorf("audit verify: %v", err)
	}
}

func TestAdminTokenCommand(t *testing.T) {
	out, _, err := run(t, "admin", "token", "--name", "ops-team", "--role", "security", "--role", "viewer", "--json")
	var got struct{ Token, SHA256, YAML string }
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || !strings.HasPrefix(got.Token, "ila_") || adminapi.HashHex(got.Token) != got.SHA256 ||
		got.YAML != "- {name: ops-team, sha256: "+got.SHA256+", roles: [security, viewer]}" {
		t.Fatalf("admin token --json: %v\n%s", err, out)
	}
	out, _, err = run(t, "admin", "token", "--name", "ops", "--role", "admin")
	if err != nil || !strings.Contains(out, "ila_") || !strings.Contains(out, "admin:\n  tokens:\n    - {name: ops, sha256: ") {
		t.Errorf("admin token: %v\n%s", err, out)
	}
	// The line printed is a valid configuration.
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "storage: {dsn: interlock.db}\nadmin:\n  tokens:\n    "+got.YAML+"\n")
	if _, _, err := run(t, "users", "list", "--config", cfg); err != nil {
		t.Errorf("config with the printed line: %v", err)
	}
	for _, args := range [][]string{{"--name", "ops"}, {"--name", "ops", "--role", "root"}, {"--name", "a b", "--role", "admin"}} {
		if _, _, err := run(t, append([]string{"admin", "token"}, args...)...); err == nil {
			t.Errorf("admin token %v was accepted", args)
		}
	}
}
