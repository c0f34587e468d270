package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	_ "modernc.org/sqlite"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/internal/testenv"
)

// policyEnv runs interlock in process with the demo policy in front of the
// acme server (HTTP) and a second upstream no policy rule mentions (acme
// again, over stdio, named "other").
type policyEnv struct {
	cfg, token, addr string
}

func newPolicyEnv(t *testing.T) *policyEnv {
	t.Helper()
	srv := acme.NewServer(acme.Options{})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(up.Close)
	acmeBin := testenv.GoBinary(t, "./examples/acme/cmd/acme")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), acme.DemoPolicy, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`listen: %s
storage: {dsn: interlock.db}
policy: {file: policy.yaml}
audit: {redact: [customer_id]}
approvals: {hold: 1s}
upstreams:
  - name: acme
    url: %s
  - name: other
    command: [%q]
`, addr, up.URL, acmeBin))
	token := agent(t, cfg, "procurement-bot", "owner@example.com")
	if _, _, err := run(t, "users", "create", "--config", cfg, "--email", "finance@example.com", "--role", "finance-manager"); err != nil {
		t.Fatal(err)
	}
	serveInProcess(t, cfg)
	return &policyEnv{cfg: cfg, token: token, addr: addr}
}

type callResult struct {
	text    string
	isError bool
	meta    map[string]any
}

func callFull(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) callResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return callResult{text: strings.Join(parts, "\n"), isError: res.IsError, meta: res.Meta}
}

func TestPolicyDecidesEveryCall(t *testing.T) {
	e := newPolicyEnv(t)
	cs := connectHTTP(t, "http://"+e.addr+"/mcp/acme", e.token)
	order := func(qty int, price float64) callResult {
		return callFull(t, cs, "place_order", map[string]any{"item": "cables", "quantity": qty, "unit_price_usd": price})
	}

	// A small order goes through.
	if r := order(3, 40); r.isError || !strings.Contains(r.text, "ORD-") {
		t.Fatalf("small order: %+v", r)
	}
	// A large order needs the owner's approval: the call is held, and
	// when nobody answers within the hold the agent is told the request
	// is pending, by whom it must be approved, and that a retry joins it.
	r := order(10, 120)
	if !r.isError || !strings.Contains(r.text, "holding this call for approval by the agent's owner") || !strings.Contains(r.text, "apr_") || !strings.Contains(r.text, "dec_") {
		t.Fatalf("large order: %+v", r)
	}
	apr, _ := r.meta["io.interlock/approval"].(map[string]any)
	if r.meta["io.interlock/decision"] == nil || apr == nil || apr["state"] != "pending" || apr["joined"] != false {
		t.Errorf("refusal _meta: %+v", r.meta)
	}
	if r2 := order(10, 120); !r2.isError || r2.meta["io.interlock/approval"].(map[string]any)["id"] != apr["id"] ||
		r2.meta["io.interlock/approval"].(map[string]any)["joined"] != true {
		t.Errorf("a retry did not join the pending request: %+v", r2.meta)
	}
	// Customer records only with an open support ticket (a lookup).
	if r := callFull(t, cs, "get_customer_record", map[string]any{"customer_id": "CUST-001"}); r.isError {
		t.Fatalf("customer with an open ticket: %+v", r)
	}
	if r := callFull(t, cs, "get_customer_record", map[string]any{"customer_id": "CUST-004"}); !r.isError {
		t.Fatalf("customer without an open ticket: %+v", r)
	}
	// The daily budget ($2,000): orders under $400 each go through until the
	// total would pass it; then the budget asks for a finance manager.
	var exhausted callResult
	for i := 0; i < 10; i++ {
		r := order(1, 390)
		if r.isError {
			exhausted = r
			break
		}
	}
	if !exhausted.isError || !strings.Contains(exhausted.text, "budget") || !strings.Contains(exhausted.text, "finance-manager") {
		t.Fatalf("budget exhaustion: %+v", exhausted)
	}

	// A tool nobody classified (the catalog never saw it) is a high-risk
	// write: default deny, without reaching the upstream.
	other := connectHTTP(t, "http://"+e.addr+"/mcp/other", e.token)
	if r := callFull(t, other, "frobnicate", map[string]any{"level": 11}); !r.isError || !strings.Contains(r.text, `"default"`) {
		t.Fatalf("unclassified tool: %+v", r)
	}
	// On an upstream the policy never names, a spend tool has no amount:
	// the rules that need one fail, and a failed rule denies (fail closed).
	if r := callFull(t, other, "place_order", map[string]any{"item": "x", "quantity": 1, "unit_price_usd": 1}); !r.isError || !strings.Contains(r.text, "no amount") {
		t.Fatalf("spend tool without an amount: %+v", r)
	}

	// Everything is in the audit log, verifiable, with redaction applied.
	out, _, err := run(t, "audit", "verify", "--config", e.cfg)
	if err != nil || !strings.Contains(out, "ok:") {
		t.Fatalf("audit verify: %q %v", out, err)
	}
	out, _, err = run(t, "audit", "export", "--config", e.cfg, "--format", "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	type ev struct {
		Seq    int64          `json:"seq"`
		Type   string         `json:"type"`
		CallID string         `json:"call_id"`
		Data   map[string]any `json:"data"`
	}
	var evs []ev
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var x ev
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		evs = append(evs, x)
	}
	decisions := map[string]int64{}
	effects := map[string]int{}
	for _, x := range evs {
		switch x.Type {
		case "decision":
			decisions[x.CallID] = x.Seq
			effects[fmt.Sprint(x.Data["effect"])]++
			if args, ok := x.Data["args"].(map[string]any); ok && args["customer_id"] != nil && args["customer_id"] != "[redacted]" {
				t.Errorf("customer_id not redacted in the audit log: %v", args)
			}
		case "forwarded", "result":
			d, ok := decisions[x.CallID]
			if !ok || d > x.Seq {
				t.Errorf("%s event %d for call %s comes without an earlier decision", x.Type, x.Seq, x.CallID)
			}
		}
	}
	if effects["allow"] < 3 || effects["deny"] < 2 || effects["approve"] < 2 {
		t.Errorf("effects recorded: %v", effects)
	}
	// Replaying the whole story with the policy that decided it changes
	// nothing: budgets were recorded as the decisions saw them. The customer
	// record calls were decided on customer_id, which this config redacts:
	// replay says it cannot be sure of those rather than call them changed.
	if out, _, err := run(t, "policy", "replay", "--config", e.cfg, "--policy", filepath.Join(filepath.Dir(e.cfg), "policy.yaml")); err != nil ||
		!strings.Contains(out, " 0 would change") || !strings.Contains(out, "UNSURE") {
		t.Fatalf("replay with the same policy:\n%s (%v)", out, err)
	}
	out, _, err = run(t, "audit", "export", "--config", e.cfg, "--effect", "approve")
	if err != nil || strings.Count(strings.TrimSpace(out), "\n")+1 != effects["approve"] {
		t.Errorf("export --effect approve: %d lines, want %d (%v)", strings.Count(strings.TrimSpace(out), "\n")+1, effects["approve"], err)
	}
}

func TestPolicyTooling(t *testing.T) {
	e := newPolicyEnv(t)
	dir := filepath.Dir(e.cfg)
	// tools list shows every tool with its classification and sources.
	out, _, err := run(t, "tools", "list", "--config", e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"acme.place_order", "spend", "other.place_order"} {
		if !strings.Contains(out, want) {
			t.Errorf("tools list lacks %q:\n%s", want, out)
		}
	}
	// policy test runs the demo's cases.
	cases := filepath.Join(dir, "cases.yaml")
	os.WriteFile(cases, acme.DemoPolicyCases, 0o600)
	if out, _, err := run(t, "policy", "test", filepath.Join(dir, "policy.yaml"), cases); err != nil {
		t.Fatalf("policy test: %v\n%s", err, out)
	}
	// A case that expects the wrong thing fails with a non-zero exit.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("- name: wrong on purpose\n  tool: acme.place_order\n  args: {item: x, quantity: 1, unit_price_usd: 10}\n  expect: {effect: deny}\n"), 0o600)
	if _, _, err := run(t, "policy", "test", filepath.Join(dir, "policy.yaml"), bad); err == nil {
		t.Fatal("policy test passed a case with the wrong expectation")
	}
	// explain says what would happen, and why.
	out, _, err = run(t, "policy", "explain", "--config", e.cfg, "--agent", "procurement-bot", "--tool", "acme.place_order",
		"--args", `{"item":"x","quantity":10,"unit_price_usd":120}`)
	if err != nil || !strings.Contains(out, "approve") {
		t.Fatalf("policy explain: %v\n%s", err, out)
	}
	// check compiles and lints against the discovered tools.
	if out, _, err := run(t, "policy", "check", "--config", e.cfg, filepath.Join(dir, "policy.yaml")); err != nil {
		t.Fatalf("policy check on the demo policy: %v\n%s", err, out)
	}
	lint := filepath.Join(dir, "lint.yaml")
	os.WriteFile(lint, []byte("version: 1\ndefault: deny\nrules:\n  - id: typo\n    when: 'args.quantiti > 5'\n    effect: deny\n"), 0o600)
	if out, _, err := run(t, "policy", "check", "--config", e.cfg, lint); err == nil || !strings.Contains(out, "quantiti") {
		t.Fatalf("policy check should report args.quantiti: %v\n%s", err, out)
	}

	// replay: make some calls, then replay them under a stricter policy.
	cs := connectHTTP(t, "http://"+e.addr+"/mcp/acme", e.token)
	callFull(t, cs, "place_order", map[string]any{"item": "cables", "quantity": 1, "unit_price_usd": 10})
	callFull(t, cs, "search_docs", map[string]any{"query": "refund"})
	// Replayed with the policy that decided them, no decision changes (the
	// record holds everything the decision was taken on).
	out, _, err = run(t, "policy", "replay", "--config", e.cfg, "--policy", filepath.Join(dir, "policy.yaml"))
	if err != nil || !strings.Contains(out, " 0 would change") {
		t.Fatalf("replay with the same policy:\n%s (%v)", out, err)
	}
	strict := filepath.Join(dir, "strict.yaml")
	os.WriteFile(strict, []byte("version: 1\ndefault: deny\nrules:\n  - id: docs-only\n    when: 'tool.name == \"search_docs\"'\n    effect: allow\n"), 0o600)
	out, _, err = run(t, "policy", "replay", "--config", e.cfg, "--policy", strict)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "CHANGED") || !strings.Contains(out, "acme.place_order") || !strings.Contains(out, "allow -> deny: 1") {
		t.Fatalf("replay output:\n%s", out)
	}
}

// A policy file change is picked up while serving; a broken one is not.
func TestPolicyHotReload(t *testing.T) {
	e := newPolicyEnv(t)
	cs := connectHTTP(t, "http://"+e.addr+"/mcp/acme", e.token)
	if r := callFull(t, cs, "echo", map[string]any{"text": "x"}); r.isError {
		t.Fatalf("echo under the demo policy: %+v", r)
	}
	pol := filepath.Join(filepath.Dir(e.cfg), "policy.yaml")
	// A broken file: the old policy stays in force.
	os.WriteFile(pol, []byte("version: 1\nrules: [\n"), 0o600)
	time.Sleep(3 * time.Second) // longer than the watch interval: the reload must have been tried
	if r := callFull(t, cs, "echo", map[string]any{"text": "x"}); r.isError {
		t.Fatalf("a broken policy file replaced the working one: %+v", r)
	}
	// A good file that denies everything takes over.
	os.WriteFile(pol, []byte("version: 1\ndefault: deny\n"), 0o600)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := callFull(t, cs, "echo", map[string]any{"text": "x"})
		if r.isError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new policy was never loaded")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// audit verify fails, naming the event, when the database is changed behind
// interlock's back (the audit package tests every kind of tampering; this
// checks the command's exit status and words).
func TestAuditVerifyCommandCatchesTampering(t *testing.T) {
	e := newPolicyEnv(t)
	cs := connectHTTP(t, "http://"+e.addr+"/mcp/acme", e.token)
	for i := 0; i < 3; i++ {
		callFull(t, cs, "echo", map[string]any{"text": fmt.Sprint(i)})
	}
	if out, _, err := run(t, "audit", "verify", "--config", e.cfg); err != nil || !strings.Contains(out, "ok:") {
		t.Fatalf("verify before tampering: %v %s", err, out)
	}
	// The running gateway may hold the write lock for a moment (deferred
	// events, checkpoints): wait for it rather than fail.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(filepath.Dir(e.cfg), "interlock.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The first decision (events before it record the users and agents
	// the CLI created).
	var seq int64
	if err := db.QueryRow(`SELECT MIN(seq) FROM audit_events WHERE type = 'decision'`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE audit_events SET data = replace(data, '"echo"', '"place_order"') WHERE seq = ?`, seq); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, "audit", "verify", "--config", e.cfg)
	if want := fmt.Sprintf("event %d", seq); err == nil || !strings.Contains(out, "TAMPERED") || !strings.Contains(out, want) {
		t.Fatalf("verify after changing %s: %v %s", want, err, out)
	}
}
