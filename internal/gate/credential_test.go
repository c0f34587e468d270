package gate

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/credential"
	"github.com/interlock-dev/interlock/internal/policy"
	"github.com/interlock-dev/interlock/internal/relay"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
)

const credIssuer = "https://gw.example"

// credPolicy is testPolicy's shape with a rule whose credentials allow two
// uses (login).
const credPolicy = `
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
  - id: records-with-ticket
    when: 'tool.name == "record" && lookup.ticket'
    effect: allow
  - id: twice
    when: 'tool.name == "login"'
    effect: allow
    constraints: {uses: 2}
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

// denyAll is a policy that refuses everything: a call it lets through was
// not decided by it.
const denyAll = `
version: 1
default: deny
`

func mustPolicy(t *testing.T, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(src), "cred.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newIssuer(t *testing.T) (*credential.Issuer, *sqlite.Store) {
	t.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "x.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newIssuerOn(t, st), st
}

// newIssuerOn returns an issuer on store st.
func newIssuerOn(t *testing.T, st *sqlite.Store) *credential.Issuer {
	t.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	kek := make([]byte, credential.KEKSize)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	iss, err := credential.New(ctx, credential.Options{Store: st, KEK: kek, Issuer: credIssuer, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// credEnv is the gate's test env with a real issuer on the env's store (as
// in interlock: the credential of a forwarded call is recorded with its
// decision, in the audit log's store), a policy that can be swapped and a
// clock that can be moved.
type credEnv struct {
	*env
	iss    *credential.Issuer
	cst    *sqlite.Store
	pol    atomic.Pointer[policy.Policy]
	offset atomic.Int64 // added to time.Now by the gate's clock
}

func newCredEnv(t *testing.T, mutate ...func(*Options)) *credEnv {
	t.Helper()
	ce := &credEnv{}
	ce.pol.Store(mustPolicy(t, credPolicy))
	ce.env = newEnv(t, append([]func(*Options){func(o *Options) {
		ce.cst = o.Budgets.(*sqlite.Store) // the env's store
		ce.iss = newIssuerOn(t, ce.cst)
		o.Credentials = ce.iss
		o.Policy = func() *policy.Policy { return ce.pol.Load() }
		o.Now = func() time.Time { return time.Now().Add(time.Duration(ce.offset.Load())) }
	}}, mutate...)...)
	return ce
}

// present asks the gate about a call to upstream.tool with args that
// presents cred (any JSON value) in params._meta.
func (ce *credEnv) present(t *testing.T, upstream, tool string, args any, cred any) *relay.Verdict {
	t.Helper()
	params, _ := json.Marshal(map[string]any{"name": tool, "arguments": args,
		"_meta": map[string]any{relay.MetaCredential: cred, "progressToken": "p"}})
	v, err := ce.g.Check(context.Background(), &relay.Call{Principal: &ce.p, Upstream: upstream, Method: "tools/call", Name: tool, Params: params})
	if err != nil {
		t.Fatalf("Check(%s.%s): %v", upstream, tool, err)
	}
	return v
}

func (ce *credEnv) used(t *testing.T, id string) int {
	t.Helper()
	c, err := ce.cst.GetCredential(context.Background(), id)
	if err != nil {
		t.Fatalf("GetCredential(%s): %v", id, err)
	}
	return c.Used
}

func (ce *credEnv) lastDecision(t *testing.T) map[string]any {
	t.Helper()
	ds := ce.events(t, "decision")
	if len(ds) == 0 {
		t.Fatal("no decision recorded")
	}
	return ds[len(ds)-1]
}

func allowed(v *relay.Verdict) bool { return v != nil && v.Deny == nil }

// checkReceipt asserts an allowed verdict's receipt names cred and the
// decision.
func checkReceipt(t *testing.T, v *relay.Verdict, decisionID, credID string) {
	t.Helper()
	if v.Receipt[relay.MetaCredential] != v.Credential {
		t.Errorf("receipt credential %v, want the verdict's credential", v.Receipt[relay.MetaCredential])
	}
	d, _ := v.Receipt["io.interlock/decision"].(map[string]any)
	if d == nil || d["id"] != decisionID || d["effect"] != "allow" || d["credential_id"] != credID {
		t.Errorf("receipt decision %v, want id %s credential %s", v.Receipt["io.interlock/decision"], decisionID, credID)
	}
}

// An allowed call gets a credential that verifies, names exactly the call
// and is recorded as used once; presenting it again is a replay.
func TestAllowedCallGetsCredential(t *testing.T) {
	ctx := context.Background()
	ce := newCredEnv(t)
	args := map[string]any{"qty": 2, "price": 100}
	v := ce.check(t, "buy", args)
	if !allowed(v) || v.Credential == "" {
		t.Fatalf("verdict %+v (%s)", v, reason(v))
	}
	cl, err := ce.iss.Verify(ctx, v.Credential, time.Now())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	d := ce.lastDecision(t)
	decisionID, _ := d["decision_id"].(string)
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"agent", cl.AgentID, "bot"},
		{"owner", cl.OwnerEmail, "o@example.com"},
		{"upstream", cl.Upstream, "shop"},
		{"tool", cl.Tool, "buy"},
		{"arguments digest", cl.ArgumentsDigest, digest(args)},
		{"authorization", cl.AuthorizedBy, []credential.Authorization{{Kind: "policy", Rule: "small-buys"}}},
		{"decision", cl.DecisionID, decisionID},
		{"uses", cl.Uses, 1},
		{"issuer", cl.Issuer, credIssuer},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("credential %s = %v, want %v", c.what, c.got, c.want)
		}
	}
	rec, err := ce.cst.GetCredential(ctx, cl.ID)
	if err != nil || rec.Used != 1 || rec.Uses != 1 || rec.ConsumedAt.IsZero() {
		t.Errorf("store record %+v (%v): want used 1 of 1", rec, err)
	}
	if c, _ := d["credential"].(map[string]any); c == nil || c["id"] != cl.ID {
		t.Errorf("decision event credential %v, want id %s", d["credential"], cl.ID)
	}
	checkReceipt(t, v, decisionID, cl.ID)
	deadline := time.Now().Add(10 * time.Second)
	for {
		fs := ce.events(t, "forwarded")
		if len(fs) == 1 && fs[0]["credential_id"] == cl.ID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("forwarded events %v, want one naming credential %s", fs, cl.ID)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The same credential presented again: a replay.
	v2 := ce.present(t, "shop", "buy", args, v.Credential)
	if allowed(v2) || !strings.Contains(reason(v2), "no use left") || v2.Credential != "" {
		t.Fatalf("replay: %+v (%s)", v2, reason(v2))
	}
	if d := ce.lastDecision(t); d["rule"] != "credential" || d["effect"] != "deny" {
		t.Errorf("replay recorded as %v/%v", d["effect"], d["rule"])
	}
	if n := ce.used(t, cl.ID); n != 1 {
		t.Errorf("used %d after the replay, want 1", n)
	}
}

// A credential with two uses (policy constraint) is used once by the call
// it was issued for and once more when presented, without the policy
// (which by then refuses everything); a third time is refused.
func TestPresentedCredentialSkipsPolicy(t *testing.T) {
	ctx := context.Background()
	ce := newCredEnv(t)
	args := map[string]any{"user": "a"}
	v := ce.check(t, "login", args)
	if !allowed(v) || v.Credential == "" {
		t.Fatalf("login: %+v (%s)", v, reason(v))
	}
	cl, err := ce.iss.Verify(ctx, v.Credential, time.Now())
	if err != nil || cl.Uses != 2 {
		t.Fatalf("credential %+v (%v): want 2 uses", cl, err)
	}
	if n := ce.used(t, cl.ID); n != 1 {
		t.Fatalf("used %d at issuance, want 1", n)
	}
	ce.pol.Store(mustPolicy(t, denyAll))
	if v := ce.check(t, "login", args); allowed(v) {
		t.Fatal("the deny-all policy allowed login")
	}

	v2 := ce.present(t, "shop", "login", args, v.Credential)
	if !allowed(v2) {
		t.Fatalf("second use refused: %s", reason(v2))
	}
	if v2.Credential != v.Credential {
		t.Error("the call is not forwarded with the credential it presented")
	}
	d := ce.lastDecision(t)
	if d["rule"] != "credential:twice" || d["effect"] != "allow" {
		t.Errorf("recorded %v/%v, want allow/credential:twice", d["effect"], d["rule"])
	}
	if c, _ := d["credential"].(map[string]any); c == nil || c["id"] != cl.ID || c["presented"] != true {
		t.Errorf("decision event credential %v", d["credential"])
	}
	checkReceipt(t, v2, d["decision_id"].(string), cl.ID)
	if n := ce.used(t, cl.ID); n != 2 {
		t.Errorf("used %d after the second use, want 2", n)
	}

	v3 := ce.present(t, "shop", "login", args, v.Credential)
	if allowed(v3) || !strings.Contains(reason(v3), "no use left") {
		t.Fatalf("third use: %+v (%s)", v3, reason(v3))
	}
}

// The same with a credential issued directly (uses 2, first use taken).
func TestPresentedIssuedCredential(t *testing.T) {
	ctx := context.Background()
	ce := newCredEnv(t)
	ce.pol.Store(mustPolicy(t, denyAll))
	args := map[string]any{"qty": 1, "price": 1}
	tok, rec, err := ce.iss.Issue(ctx, credential.Action{AgentID: "bot", OwnerEmail: "o@example.com", Upstream: "shop", Tool: "buy",
		Arguments: args, Uses: 2, ConsumeNow: true, AuthorizedBy: []credential.Authorization{{Kind: "policy", Rule: "direct"}}})
	if err != nil {
		t.Fatal(err)
	}
	if v := ce.present(t, "shop", "buy", args, tok); !allowed(v) || v.Credential != tok {
		t.Fatalf("first presentation: %+v (%s)", v, reason(v))
	}
	if d := ce.lastDecision(t); d["rule"] != "credential:direct" {
		t.Errorf("rule %v", d["rule"])
	}
	if n := ce.used(t, rec.ID); n != 2 {
		t.Errorf("used %d, want 2", n)
	}
	if v := ce.present(t, "shop", "buy", args, tok); allowed(v) || !strings.Contains(reason(v), "no use left") {
		t.Fatalf("second presentation: %+v (%s)", v, reason(v))
	}
}

// The arguments digest is canonical (RFC 8785): the same arguments written
// another way (key order, number spelling) match the credential.
func TestPresentedCredentialCanonicalArguments(t *testing.T) {
	ctx := context.Background()
	ce := newCredEnv(t)
	v := ce.check(t, "login", map[string]any{"n": 100, "user": "é", "list": []any{1, 2.5}})
	if !allowed(v) {
		t.Fatalf("login: %s", reason(v))
	}
	ce.pol.Store(mustPolicy(t, denyAll))
	tok, _ := json.Marshal(v.Credential)
	params := json.RawMessage(`{"name":"login","arguments":{"list":[1.0,25e-1],"user":"\u00e9","n":1E2},"_meta":{"io.interlock/credential":` + string(tok) + `}}`)
	v2, err := ce.g.Check(ctx, &relay.Call{Principal: &ce.p, Upstream: "shop", Method: "tools/call", Name: "login", Params: params})
	if err != nil {
		t.Fatal(err)
	}
	if !allowed(v2) {
		t.Fatalf("the same arguments written otherwise were refused: %s", reason(v2))
	}
}

// Presented credentials that do not fit the call, or are not credentials,
// are refused with the precise reason, and are not consumed.
func TestPresentedCredentialRefusals(t *testing.T) {
	ctx := context.Background()
	args := map[string]any{"qty": 1, "price": 1}
	issue := func(t *testing.T, ce *credEnv, mod func(*credential.Action)) (string, string) {
		t.Helper()
		a := credential.Action{AgentID: "bot", OwnerEmail: "o@example.com", Upstream: "shop", Tool: "buy", Arguments: args, Uses: 3,
			AuthorizedBy: []credential.Authorization{{Kind: "policy", Rule: "small-buys"}}}
		if mod != nil {
			mod(&a)
		}
		tok, rec, err := ce.iss.Issue(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		return tok, rec.ID
	}
	for _, tc := range []struct {
		name     string
		mod      func(*credential.Action) // how the credential is issued
		token    func(tok string) any     // what is presented (default: the token)
		before   func(t *testing.T, ce *credEnv, id string)
		upstream string // default shop
		tool     string // default buy
		args     any    // default args
		rule     string // recorded rule
		says     string // in the reason
	}{
		{name: "other arguments", args: map[string]any{"qty": 1, "price": 2}, rule: "credential", says: "is for other arguments"},
		{name: "other argument types", args: map[string]any{"qty": "1", "price": 1}, rule: "credential", says: "is for other arguments"},
		{name: "other tool", tool: "record", rule: "credential", says: "is for shop.buy, not for shop.record"},
		{name: "other upstream", upstream: "bank", rule: "credential", says: "is for shop.buy, not for bank.buy"},
		{name: "other agent", mod: func(a *credential.Action) { a.AgentID = "bot2" }, rule: "credential", says: `was issued to agent "bot2", not to "bot"`},
		{name: "revoked", before: func(t *testing.T, ce *credEnv, id string) {
			if _, err := ce.iss.Revoke(ctx, id, "test"); err != nil {
				t.Fatal(err)
			}
		}, rule: "credential", says: "is not valid: credential: revoked"},
		{name: "expired", mod: func(a *credential.Action) { a.Lifetime = time.Minute }, before: func(t *testing.T, ce *credEnv, id string) {
			ce.offset.Store(int64(10 * time.Minute))
		}, rule: "credential", says: "is not valid: credential: expired"},
		{name: "used up", mod: func(a *credential.Action) { a.Uses = 1; a.ConsumeNow = true }, rule: "credential", says: "no use left"},
		{name: "tampered signature", token: func(tok string) any {
			b := []byte(tok)
			i := strings.LastIndexByte(tok, '.') + 2
			if b[i] == 'A' {
				b[i] = 'B'
			} else {
				b[i] = 'A'
			}
			return string(b)
		}, rule: "credential", says: "is not valid: credential: bad signature"},
		{name: "garbage string", token: func(string) any { return "not-a-credential" }, rule: "credential", says: "is not valid: credential: malformed token"},
		{name: "number", token: func(string) any { return 42 }, rule: "credential", says: "is not a string"},
		{name: "empty string", token: func(string) any { return "" }, rule: "credential", says: "is not a string"},
		{name: "object", token: func(tok string) any { return map[string]any{"jws": tok} }, rule: "credential", says: "is not a string"},
		{name: "array", token: func(tok string) any { return []string{tok} }, rule: "credential", says: "is not a string"},
		{name: "suspended agent", before: func(t *testing.T, ce *credEnv, id string) { ce.p.Agent.State = store.AgentSuspended },
			rule: "kill-switch", says: "suspended"},
		{name: "deactivated owner", before: func(t *testing.T, ce *credEnv, id string) { ce.p.Owner.Active = false },
			rule: "kill-switch", says: "deactivated"},
		{name: "arguments not an object", args: []int{1}, rule: "bad-arguments", says: "not a JSON object"},
		// JSON null is no credential: the (deny-all) policy decides.
		{name: "null", token: func(string) any { return nil }, rule: "default", says: `rule "default"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ce := newCredEnv(t)
			ce.pol.Store(mustPolicy(t, denyAll))
			tok, id := issue(t, ce, tc.mod)
			usedBefore := ce.used(t, id)
			if tc.before != nil {
				tc.before(t, ce, id)
			}
			var presented any = tok
			if tc.token != nil {
				presented = tc.token(tok)
			}
			upstream, tool, a := "shop", "buy", any(args)
			if tc.upstream != "" {
				upstream = tc.upstream
			}
			if tc.tool != "" {
				tool = tc.tool
			}
			if tc.args != nil {
				a = tc.args
			}
			v := ce.present(t, upstream, tool, a, presented)
			if allowed(v) {
				d := ce.lastDecision(t)
				t.Fatalf("allowed (rule %v, credential forwarded: %v)", d["rule"], v.Credential != "")
			}
			if !strings.Contains(reason(v), tc.says) {
				t.Errorf("reason %q does not say %q", reason(v), tc.says)
			}
			if v.Credential != "" || v.Receipt != nil {
				t.Errorf("a refusal carries a credential or receipt: %+v", v)
			}
			if v.Deny.Meta[relay.MetaCredential] != nil {
				t.Errorf("the refusal's _meta holds a credential: %v", v.Deny.Meta)
			}
			d := ce.lastDecision(t)
			if d["rule"] != tc.rule || d["effect"] != "deny" {
				t.Errorf("recorded %v/%v, want deny/%s", d["effect"], d["rule"], tc.rule)
			}
			if n := ce.used(t, id); n != usedBefore {
				t.Errorf("the refused credential went from %d to %d uses", usedBefore, n)
			}
		})
	}
}

// A gate without credentials cannot check a presented one: refused.
func TestPresentedWithoutCredentials(t *testing.T) {
	e := newEnv(t)
	params, _ := json.Marshal(map[string]any{"name": "buy", "arguments": map[string]any{"qty": 1, "price": 1},
		"_meta": map[string]any{relay.MetaCredential: "a.b.c"}})
	v, err := e.g.Check(context.Background(), &relay.Call{Principal: &e.p, Upstream: "shop", Method: "tools/call", Name: "buy", Params: params})
	if err != nil {
		t.Fatal(err)
	}
	if allowed(v) || !strings.Contains(reason(v), "credentials are not enabled") {
		t.Fatalf("verdict %+v (%s)", v, reason(v))
	}
	// And an allowed call goes on without one.
	if v := e.check(t, "buy", map[string]any{"qty": 1, "price": 1}); !allowed(v) || v.Credential != "" || v.Receipt != nil {
		t.Fatalf("without credentials: %+v", v)
	}
}

// failingCredentials is an issuer whose Issue and Prepare fail.
type failingCredentials struct{ *credential.Issuer }

func (failingCredentials) Issue(context.Context, credential.Action) (string, store.Credential, error) {
	return "", store.Credential{}, errors.New("the signing key is on fire")
}

func (failingCredentials) Prepare(context.Context, credential.Action) (*credential.Prepared, error) {
	return nil, errors.New("the signing key is on fire")
}

// When the credential cannot be issued the call is refused (fail closed)
// and the budget it was charged is refunded.
func TestIssueFailureFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*credEnv)
	}{
		{"issuer fails", func(ce *credEnv) { ce.g.opts.Credentials = failingCredentials{ce.iss} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ce := newCredEnv(t)
			tc.setup(ce)
			v := ce.check(t, "buy", map[string]any{"qty": 1, "price": 100})
			if allowed(v) || !strings.Contains(reason(v), "could not issue") {
				t.Fatalf("verdict %+v (%s)", v, reason(v))
			}
			if v.Credential != "" || v.Receipt != nil {
				t.Errorf("a refusal carries a credential: %+v", v)
			}
			d := ce.lastDecision(t)
			if d["rule"] != "error" || d["effect"] != "deny" || d["credential"] != nil {
				t.Errorf("recorded %v/%v credential %v", d["effect"], d["rule"], d["credential"])
			}
			totals, err := ce.st.BudgetTotals(context.Background(), []string{"daily/agent/bot"}, time.Now().Add(-24*time.Hour))
			if err != nil || totals["daily/agent/bot"] != 0 {
				t.Errorf("budget %v (%v) after a refused call, want 0 (refunded)", totals, err)
			}
			time.Sleep(50 * time.Millisecond)
			if fs := ce.events(t, "forwarded"); len(fs) != 0 {
				t.Errorf("a refused call was recorded as forwarded: %v", fs)
			}
		})
	}
}

// mutatingAuditor changes the events the gate appends before the log
// commits them.
type mutatingAuditor struct {
	*audit.Log
	mutate func(*audit.Event)
}

func (a mutatingAuditor) Append(ctx context.Context, ev audit.Event) (int64, error) {
	a.mutate(&ev)
	return a.Log.Append(ctx, ev)
}

// An allowed call's credential is recorded with its decision, in one
// transaction: when the store refuses the credential, the decision is not
// recorded either, Check fails (nothing is forwarded) and the budget is
// refunded.
func TestCredentialRecordedWithDecision(t *testing.T) {
	ctx := context.Background()
	ce := newCredEnv(t)
	_, taken, err := ce.iss.Issue(ctx, credential.Action{AgentID: "bot", Upstream: "shop", Tool: "buy"})
	if err != nil {
		t.Fatal(err)
	}
	ce.g.opts.Audit = mutatingAuditor{ce.log, func(ev *audit.Event) {
		if ev.Credential != nil {
			ev.Credential.ID = taken.ID // the store refuses a taken id
		}
	}}
	params, _ := json.Marshal(map[string]any{"name": "buy", "arguments": map[string]any{"qty": 1, "price": 100}})
	v, err := ce.g.Check(ctx, &relay.Call{Principal: &ce.p, Upstream: "shop", Method: "tools/call", Name: "buy", Params: params})
	if err == nil || !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("Check = %+v, %v; want the decision's append to fail", v, err)
	}
	if ds := ce.events(t, "decision"); len(ds) != 0 {
		t.Errorf("a decision was recorded: %v", ds)
	}
	if n, err := ce.cst.CountStatusIndexes(ctx, taken.StatusList); err != nil || n != 1 {
		t.Errorf("%d credentials (%v), want only the one issued before", n, err)
	}
	totals, err := ce.st.BudgetTotals(ctx, []string{"daily/agent/bot"}, time.Now().Add(-24*time.Hour))
	if err != nil || totals["daily/agent/bot"] != 0 {
		t.Errorf("budget %v (%v) after a failed call, want 0 (refunded)", totals, err)
	}
	time.Sleep(50 * time.Millisecond)
	if fs := ce.events(t, "forwarded"); len(fs) != 0 {
		t.Errorf("a call that failed was recorded as forwarded: %v", fs)
	}
}

// When the credential recorded with the decision cannot be signed (here:
// it did not reach the store, so it has no status index), the call is
// refused after all (fail closed), an event says why, and the budget is
// refunded.
func TestSignFailureFailsClosed(t *testing.T) {
	ctx := context.Background()
	ce := newCredEnv(t)
	ce.g.opts.Audit = mutatingAuditor{ce.log, func(ev *audit.Event) { ev.Credential = nil }}
	v := ce.check(t, "buy", map[string]any{"qty": 1, "price": 100})
	if allowed(v) || !strings.Contains(reason(v), "could not sign") {
		t.Fatalf("verdict %+v (%s)", v, reason(v))
	}
	if v.Credential != "" || v.Receipt != nil {
		t.Errorf("a refusal carries a credential: %+v", v)
	}
	d := ce.lastDecision(t)
	cred, _ := d["credential"].(map[string]any)
	if cred == nil {
		t.Fatalf("the decision %v names no credential", d)
	}
	totals, err := ce.st.BudgetTotals(ctx, []string{"daily/agent/bot"}, time.Now().Add(-24*time.Hour))
	if err != nil || totals["daily/agent/bot"] != 0 {
		t.Errorf("budget %v (%v) after a refused call, want 0 (refunded)", totals, err)
	}
	time.Sleep(50 * time.Millisecond)
	fails := ce.events(t, "credential_failed")
	if len(fails) != 1 || fails[0]["decision_id"] != d["decision_id"] || fails[0]["credential_id"] != cred["id"] {
		t.Errorf("credential_failed events %v, want one for decision %v", fails, d["decision_id"])
	}
	if fs := ce.events(t, "forwarded"); len(fs) != 0 {
		t.Errorf("a refused call was recorded as forwarded: %v", fs)
	}
}

// recordingCatalog records the _meta lookups are sent with.
type recordingCatalog struct {
	*shopCatalog
	mu    sync.Mutex
	metas []map[string]any
}

func (c *recordingCatalog) CallTool(ctx context.Context, upstream, name string, args, meta map[string]any) (map[string]any, bool, error) {
	c.mu.Lock()
	c.metas = append(c.metas, meta)
	c.mu.Unlock()
	return c.shopCatalog.CallTool(ctx, upstream, name, args, meta)
}

// A policy lookup goes with its own credential, authorised by
// "lookup:<id>" for the agent the call is for.
func TestLookupCredential(t *testing.T) {
	ctx := context.Background()
	t.Run("direct", func(t *testing.T) {
		iss, st := newIssuer(t)
		largs := map[string]any{"customer": "C1"}
		meta, err := LookupCredential(ctx, iss, "bot", "o@example.com", "dec-9", policy.LookupCall{ID: "ticket", Upstream: "shop", Tool: "tickets", Arguments: largs})
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := meta[relay.MetaCredential].(string)
		cl, err := iss.Verify(ctx, tok, time.Now())
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if !reflect.DeepEqual(cl.AuthorizedBy, []credential.Authorization{{Kind: "policy", Rule: "lookup:ticket"}}) {
			t.Errorf("authorization %v", cl.AuthorizedBy)
		}
		if cl.AgentID != "bot" || cl.OwnerEmail != "o@example.com" || cl.DecisionID != "dec-9" || cl.Upstream != "shop" || cl.Tool != "tickets" || cl.ArgumentsDigest != digest(largs) {
			t.Errorf("claims %+v", cl)
		}
		if rec, err := st.GetCredential(ctx, cl.ID); err != nil || rec.Used != 1 || rec.Uses != 1 {
			t.Errorf("record %+v (%v): want used 1 of 1", rec, err)
		}
		if m, err := LookupCredential(ctx, nil, "bot", "o@example.com", "d", policy.LookupCall{ID: "x", Upstream: "shop", Tool: "t"}); m != nil || err != nil {
			t.Errorf("without credentials: %v %v", m, err)
		}
		if _, err := LookupCredential(ctx, failingCredentials{iss}, "bot", "o@example.com", "d", policy.LookupCall{ID: "x", Upstream: "shop", Tool: "t"}); err == nil {
			t.Error("a failed issue was not reported")
		}
	})
	t.Run("through the gate", func(t *testing.T) {
		var rc *recordingCatalog
		ce := newCredEnv(t, func(o *Options) {
			rc = &recordingCatalog{shopCatalog: o.Catalog.(*shopCatalog)}
			o.Catalog = rc
		})
		v := ce.check(t, "record", map[string]any{"customer": "C1"})
		if !allowed(v) {
			t.Fatalf("record: %s", reason(v))
		}
		rc.mu.Lock()
		metas := append([]map[string]any(nil), rc.metas...)
		rc.mu.Unlock()
		if len(metas) != 1 {
			t.Fatalf("%d lookups, want 1", len(metas))
		}
		tok, _ := metas[0][relay.MetaCredential].(string)
		cl, err := ce.iss.Verify(ctx, tok, time.Now())
		if err != nil {
			t.Fatalf("the lookup's credential: %v", err)
		}
		d := ce.lastDecision(t)
		if len(cl.AuthorizedBy) != 1 || cl.AuthorizedBy[0].Rule != "lookup:ticket" || cl.AgentID != "bot" || cl.Tool != "tickets" ||
			cl.DecisionID != d["decision_id"] || cl.ArgumentsDigest != digest(map[string]any{"customer": "C1"}) {
			t.Errorf("lookup credential %+v (decision %v)", cl, d["decision_id"])
		}
		// The call's own credential is another one.
		if call, err := ce.iss.Verify(ctx, v.Credential, time.Now()); err != nil || call.ID == cl.ID || call.Tool != "record" {
			t.Errorf("the call's credential %+v (%v)", call, err)
		}
		// A lookup whose credential cannot be issued fails, and so denies.
		ce.g.opts.Credentials = failingCredentials{ce.iss}
		if v := ce.check(t, "record", map[string]any{"customer": "C7"}); allowed(v) {
			t.Fatal("a lookup without its credential let the call through")
		}
	})
}
