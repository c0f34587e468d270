package gate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/canon"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/catalog"
	"github.com/interlock-dev/interlock/internal/policy"
	"github.com/interlock-dev/interlock/internal/relay"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
)

const testPolicy = `
version: 1
default: deny
tools:
  - match: "shop.buy"
    action: spend
    risk: high
    amount: "args.qty * args.price"
rules:
  - id: small-buys
    when: 'call.action == "spend" && call.amount < 400'
    effect: allow
  - id: big-buys
    when: 'call.action == "spend" && call.amount >= 400'
    effect: approve
    approvers: [owner]
  - id: records-with-ticket
    when: 'tool.name == "record" && lookup.ticket'
    effect: allow
  - id: no-secrets
    when: 'tool.name == "login"'
    effect: allow
  - id: intent-says-delete
    when: 'context.intent.contains("delete")'
    effect: deny
    reason: "the agent says it means to delete something"
budgets:
  - id: daily
    per: agent
    window: 24h
    sum: call.amount
    when: 'call.action == "spend"'
    limit: 2000
    exceeded: deny
lookups:
  - id: ticket
    upstream: shop
    tool: tickets
    arguments: '{"customer": args.customer}'
    result: 'size(result.tickets) > 0'
    ttl: 1m
`

// shopCatalog is the gate's Catalog for the tests: two known tools and a
// lookup tool whose answers and calls are counted.
type shopCatalog struct {
	calls   atomic.Int64
	tickets map[string]int // customer -> open tickets
	fail    bool
}

func (c *shopCatalog) Lookup(upstream, name string) (catalog.Tool, bool) {
	if upstream == "shop" && (name == "buy" || name == "record" || name == "login") {
		return catalog.Tool{Upstream: upstream, Name: name}, true
	}
	return catalog.Tool{}, false
}

func (c *shopCatalog) CallTool(ctx context.Context, upstream, name string, args, _ map[string]any) (map[string]any, bool, error) {
	c.calls.Add(1)
	if c.fail {
		return nil, false, errors.New("upstream down")
	}
	n := c.tickets[args["customer"].(string)]
	tickets := make([]any, n)
	return map[string]any{"tickets": tickets}, false, nil
}

type env struct {
	g   *Gate
	st  store.Store
	log *audit.Log
	cat *shopCatalog
	p   store.Principal
}

func newEnv(t *testing.T, mutate ...func(*Options)) *env {
	t.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "g.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	al, err := audit.New(ctx, audit.Options{Store: st, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close(); st.Close() })
	pol, err := policy.Parse([]byte(testPolicy), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cat := &shopCatalog{tickets: map[string]int{"C1": 2}}
	opts := Options{Policy: func() *policy.Policy { return pol }, Catalog: cat, Audit: al, Budgets: st,
		Redact: []string{"password"}, Logger: quiet}
	for _, m := range mutate {
		m(&opts)
	}
	g, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	return &env{g: g, st: st, log: al, cat: cat, p: store.Principal{
		Agent: store.Agent{ID: "bot", OwnerID: "u1", State: store.AgentActive},
		Owner: store.User{ID: "u1", Email: "o@example.com", Active: true, CreatedAt: now},
	}}
}

func (e *env) check(t *testing.T, tool string, args any) *relay.Verdict {
	t.Helper()
	params, _ := json.Marshal(map[string]any{"name": tool, "arguments": args})
	v, err := e.g.Check(context.Background(), &relay.Call{Principal: &e.p, Upstream: "shop", Method: "tools/call", Name: tool, Params: params})
	if err != nil {
		t.Fatalf("Check(%s): %v", tool, err)
	}
	return v
}

// decisions returns the recorded decision events' data, in order.
func (e *env) events(t *testing.T, typ string) []map[string]any {
	t.Helper()
	evs, err := e.st.ListAudit(context.Background(), store.AuditFilter{Types: []string{typ}})
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, ev := range evs {
		var m map[string]any
		if err := json.Unmarshal(ev.Data, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func reason(v *relay.Verdict) string {
	if v == nil || v.Deny == nil {
		return ""
	}
	return v.Deny.Reason
}

func TestDecisions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tool    string
		args    any
		effect  string
		rule    string
		allowed bool
		says    string
	}{
		{"small buy", "buy", map[string]any{"qty": 2, "price": 100}, "allow", "small-buys", true, ""},
		{"big buy needs approval", "buy", map[string]any{"qty": 5, "price": 100}, "approve", "big-buys", false, "needs approval by owner"},
		{"record with an open ticket", "record", map[string]any{"customer": "C1"}, "allow", "records-with-ticket", true, ""},
		{"record without a ticket", "record", map[string]any{"customer": "C2"}, "deny", "default", false, "refused"},
		{"unknown tool", "wipe", map[string]any{}, "deny", "default", false, `rule "default"`},
		{"arguments not an object", "buy", []int{1, 2}, "deny", "bad-arguments", false, "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			v := e.check(t, tc.tool, tc.args)
			if allowed := v != nil && v.Deny == nil; allowed != tc.allowed {
				t.Fatalf("allowed=%v, want %v (%s)", allowed, tc.allowed, reason(v))
			}
			if !tc.allowed && !strings.Contains(reason(v), tc.says) {
				t.Errorf("reason %q does not say %q", reason(v), tc.says)
			}
			ds := e.events(t, "decision")
			if len(ds) != 1 {
				t.Fatalf("%d decision events, want 1", len(ds))
			}
			if ds[0]["effect"] != tc.effect || ds[0]["rule"] != tc.rule {
				t.Errorf("recorded %v/%v, want %s/%s", ds[0]["effect"], ds[0]["rule"], tc.effect, tc.rule)
			}
			if !tc.allowed {
				if !strings.Contains(reason(v), ds[0]["decision_id"].(string)) {
					t.Errorf("the refusal does not name the decision %v", ds[0]["decision_id"])
				}
				if v.Deny.Meta["io.interlock/decision"] == nil {
					t.Error("no decision in the refusal's _meta")
				}
			}
		})
	}
}

func TestKillSwitchComesFirst(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*store.Principal)
		says   string
	}{
		{"suspended agent", func(p *store.Principal) { p.Agent.State = store.AgentSuspended }, "suspended"},
		{"orphaned agent", func(p *store.Principal) { p.Agent.State = store.AgentOrphaned }, "orphaned"},
		{"deactivated owner", func(p *store.Principal) { p.Owner.Active = false }, "deactivated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.change(&e.p)
			v := e.check(t, "buy", map[string]any{"qty": 1, "price": 1}) // the policy would allow it
			if !strings.Contains(reason(v), tc.says) {
				t.Fatalf("reason %q, want it to say %q", reason(v), tc.says)
			}
			if ds := e.events(t, "decision"); len(ds) != 1 || ds[0]["rule"] != "kill-switch" {
				t.Fatalf("recorded %v", ds)
			}
		})
	}
}

func TestForwardedAndResultAreRecorded(t *testing.T) {
	e := newEnv(t)
	v := e.check(t, "buy", map[string]any{"qty": 1, "price": 10})
	if v == nil || v.Done == nil {
		t.Fatal("an allowed call must ask to hear its outcome")
	}
	v.Done(relay.Outcome{Forwarded: time.Now(), Duration: 3 * time.Millisecond, Answered: true, IsError: true})
	deadline := time.Now().Add(10 * time.Second)
	for len(e.events(t, "result")) == 0 || len(e.events(t, "forwarded")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("forwarded/result events never recorded")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := e.events(t, "result")[0]
	if r["status"] != "error" || r["duration_us"].(float64) != 3000 {
		t.Errorf("result event %v", r)
	}
	d := e.events(t, "decision")[0]
	if r["decision_id"] != d["decision_id"] {
		t.Errorf("result %v does not name decision %v", r["decision_id"], d["decision_id"])
	}
}

func TestRedactionKeepsTheDigest(t *testing.T) {
	e := newEnv(t)
	args := map[string]any{"user": "a", "password": "hunter2", "nested": map[string]any{"Password": "x"}}
	e.check(t, "login", args)
	d := e.events(t, "decision")[0]
	raw, _ := json.Marshal(d["args"])
	if strings.Contains(string(raw), "hunter2") || strings.Contains(string(raw), `"x"`) {
		t.Fatalf("secret in the audit log: %s", raw)
	}
	if d["args_digest"] != digest(args) {
		t.Errorf("digest %v is not the digest of the real arguments", d["args_digest"])
	}
}

// Budgets are charged atomically: concurrent calls never overrun the limit.
func TestBudgetUnderConcurrentCalls(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	var allowed atomic.Int64
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v := e.check(t, "buy", map[string]any{"qty": 1, "price": 150}); v != nil && v.Deny == nil {
				allowed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := allowed.Load(); n != 13 { // 13 × 150 = 1950 ≤ 2000 < 14 × 150
		t.Fatalf("%d calls of $150 allowed under a $2,000 budget, want 13", n)
	}
	totals, err := e.st.BudgetTotals(context.Background(), []string{"daily/agent/bot"}, time.Now().Add(-24*time.Hour))
	if err != nil || totals["daily/agent/bot"] != 1950 {
		t.Fatalf("charged %v (%v), want 1950", totals, err)
	}
}

func TestLookupsAreCachedAndFailClosed(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 3; i++ {
		if v := e.check(t, "record", map[string]any{"customer": "C1"}); v != nil && v.Deny != nil {
			t.Fatalf("call %d refused: %s", i, reason(v))
		}
	}
	if n := e.cat.calls.Load(); n != 1 {
		t.Errorf("lookup ran %d times within its ttl, want 1", n)
	}
	e.cat.fail = true
	if v := e.check(t, "record", map[string]any{"customer": "C9"}); v == nil || v.Deny == nil {
		t.Fatal("a failed lookup let the call through")
	}
}

func TestFailClosed(t *testing.T) {
	t.Run("no policy", func(t *testing.T) {
		e := newEnv(t, func(o *Options) { o.Policy = func() *policy.Policy { return nil } })
		if v := e.check(t, "buy", map[string]any{"qty": 1, "price": 1}); v == nil || v.Deny == nil || !strings.Contains(reason(v), "no policy") {
			t.Fatalf("verdict %+v", v)
		}
	})
	t.Run("audit log cannot record", func(t *testing.T) {
		e := newEnv(t)
		e.st.Close()
		params, _ := json.Marshal(map[string]any{"name": "buy", "arguments": map[string]any{"qty": 1, "price": 1}})
		v, err := e.g.Check(context.Background(), &relay.Call{Principal: &e.p, Upstream: "shop", Method: "tools/call", Name: "buy", Params: params})
		if err == nil {
			t.Fatalf("Check answered %+v without a committed decision record", v)
		}
	})
}

// The agent's stated intent is recorded and offered to the policy, which
// may use it to be stricter.
func TestIntentIsRecordedAndOffered(t *testing.T) {
	e := newEnv(t)
	params, _ := json.Marshal(map[string]any{"name": "buy", "arguments": map[string]any{"qty": 1, "price": 5},
		"_meta": map[string]any{"io.interlock/intent": "buy cables, then delete the old order"}})
	v, err := e.g.Check(context.Background(), &relay.Call{Principal: &e.p, Upstream: "shop", Method: "tools/call", Name: "buy", Params: params})
	if err != nil {
		t.Fatal(err)
	}
	if v == nil || v.Deny == nil || !strings.Contains(v.Deny.Reason, "delete") {
		t.Fatalf("the intent did not make the decision stricter: %+v", v)
	}
	if d := e.events(t, "decision")[0]; d["intent"] != "buy cables, then delete the old order" {
		t.Errorf("intent recorded as %v", d["intent"])
	}
}

// A call that one budget lets through and another refuses (a race between
// concurrent calls) leaves no charge behind on either.
func TestRacingBudgetsAreRefunded(t *testing.T) {
	pol, err := policy.Parse([]byte(`
version: 1
default: deny
tools:
  - {match: "shop.buy", action: spend, risk: high, amount: "args.qty * args.price"}
rules:
  - {id: buys, when: 'call.action == "spend"', effect: allow}
budgets:
  - {id: daily, per: agent, window: 24h, sum: call.amount, when: 'call.action == "spend"', limit: 100000, exceeded: deny}
  - {id: tiny, per: agent, window: 24h, sum: call.amount, when: 'call.action == "spend"', limit: 100, exceeded: deny}
`), "two-budgets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(o *Options) { o.Policy = func() *policy.Policy { return pol } })
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.check(t, "buy", map[string]any{"qty": 1, "price": 60})
		}()
	}
	wg.Wait()
	since := time.Now().Add(-24 * time.Hour)
	totals, err := e.st.BudgetTotals(context.Background(), []string{"daily/agent/bot", "tiny/agent/bot"}, since)
	if err != nil {
		t.Fatal(err)
	}
	if totals["tiny/agent/bot"] != 60 || totals["daily/agent/bot"] != 60 {
		t.Fatalf("totals %v: want exactly one call of 60 charged to both budgets", totals)
	}
}

// Arguments with a key that appears twice are refused: the tool's parser
// might take another value than the one the policy judged.
func TestDuplicateArgumentKeysAreRefused(t *testing.T) {
	e := newEnv(t)
	params := json.RawMessage(`{"name":"buy","arguments":{"qty":1,"price":1,"price":100000}}`)
	v, err := e.g.Check(context.Background(), &relay.Call{Principal: &e.p, Upstream: "shop", Method: "tools/call", Name: "buy", Params: params})
	if err != nil {
		t.Fatal(err)
	}
	if v == nil || v.Deny == nil || !strings.Contains(v.Deny.Reason, "twice") {
		t.Fatalf("verdict %+v", v)
	}
}

// What an agent says it intends can make a decision stricter, never looser.
func TestIntentCannotLoosen(t *testing.T) {
	pol, err := policy.Parse([]byte(`
version: 1
default: deny
rules:
  - id: trust-the-agent
    when: 'context.intent == "routine maintenance"'
    effect: allow
`), "loose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(o *Options) { o.Policy = func() *policy.Policy { return pol } })
	params, _ := json.Marshal(map[string]any{"name": "wipe", "arguments": map[string]any{},
		"_meta": map[string]any{"io.interlock/intent": "routine maintenance"}})
	v, err := e.g.Check(context.Background(), &relay.Call{Principal: &e.p, Upstream: "shop", Method: "tools/call", Name: "wipe", Params: params})
	if err != nil {
		t.Fatal(err)
	}
	if v == nil || v.Deny == nil {
		t.Fatal("a stated intent turned a deny into an allow")
	}
}

// digest is the hex SHA-256 of the RFC 8785 canonical form of v.
func digest(v any) string {
	b, err := canon.Marshal(v)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
