package policy

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/catalog"
)

// mustParse compiles a policy or fails the test.
func mustParse(t testing.TB, src string) *Policy {
	t.Helper()
	p, err := Parse([]byte(src), "test.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

// input is a call to acme.<tool> by an active agent of Alice's.
func input(tool string, args map[string]any) *Input {
	return &Input{
		Agent:     Agent{ID: "agent-1", Name: "buyer", Department: "procurement", Purpose: "buys things", State: "active", Owner: "alice@example.com"},
		Owner:     Owner{Email: "alice@example.com", Name: "Alice", Roles: []string{"buyer"}, Active: true},
		Tool:      catalog.Tool{Upstream: "acme", Name: tool, Annotations: map[string]any{"readOnlyHint": false}},
		ToolKnown: true,
		Args:      args,
		Context:   Context{Time: time.Date(2026, 11, 20, 10, 30, 0, 0, time.UTC), ClientIP: "10.0.0.7", Session: "s-1", Intent: "restock"},
		Budgets:   map[string]float64{},
	}
}

const orders = `version: 1
default: deny
tools:
  - match: "acme.*"
    risk: medium
  - match: "acme.place_order"
    action: spend
    class: transactional
    risk: high
    amount: "args.quantity * args.unit_price_usd"
rules:
  - id: small
    when: 'call.action == "spend" && call.amount < 400'
    effect: allow
    reason: small orders are automatic
  - id: mid
    when: 'call.action == "spend" && call.amount >= 400 && call.amount < 5000'
    effect: approve
    approvers: [owner]
  - id: large
    when: 'call.action == "spend" && call.amount >= 5000'
    effect: approve
    approvers: ["role:finance-manager"]
    separation_of_duties: true
  - id: no-prod-deletes
    when: 'tool.name.startsWith("delete") && args.environment == "production"'
    effect: deny
    reason: production deletes are never automated
`

func order(qty, price float64) map[string]any {
	return map[string]any{"item": "laptop", "quantity": qty, "unit_price_usd": price}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name       string
		policy     string
		in         *Input
		effect     string
		rule       string
		shadow     string // ShadowEffect
		errContain string // in Errors
		check      func(t *testing.T, d Decision)
	}{
		{name: "allow", policy: orders, in: input("place_order", order(1, 300)), effect: EffectAllow, rule: "small",
			check: func(t *testing.T, d Decision) {
				if d.Constraints.Lifetime != DefaultLifetime || d.Constraints.Uses != 1 || d.Constraints.MaxAmount != nil {
					t.Errorf("constraints %+v, want defaults", d.Constraints)
				}
				if len(d.Reasons) != 1 || d.Reasons[0] != "small: small orders are automatic" {
					t.Errorf("reasons %q", d.Reasons)
				}
				if d.Tool != "acme.place_order" || !d.Call.HasAmount || d.Call.Amount != 300 {
					t.Errorf("tool %q call %+v", d.Tool, d.Call)
				}
			}},
		{name: "approve by owner", policy: orders, in: input("place_order", order(2, 600)), effect: EffectApprove, rule: "mid",
			check: func(t *testing.T, d Decision) {
				if strings.Join(d.Approvers, ",") != "owner" || d.Quorum != 1 || d.SeparationOfDuties {
					t.Errorf("approvers %v quorum %d sod %v", d.Approvers, d.Quorum, d.SeparationOfDuties)
				}
				if len(d.Reasons) != 1 || d.Reasons[0] != "mid: condition matched" {
					t.Errorf("reasons %q", d.Reasons)
				}
			}},
		{name: "approve with separation of duties", policy: orders, in: input("place_order", order(10, 600)), effect: EffectApprove, rule: "large",
			check: func(t *testing.T, d Decision) {
				if strings.Join(d.Approvers, ",") != "role:finance-manager" || !d.SeparationOfDuties {
					t.Errorf("approvers %v sod %v", d.Approvers, d.SeparationOfDuties)
				}
			}},
		{name: "deny wins and guards absorb missing args", policy: orders,
			in:     input("delete_server", map[string]any{"environment": "production"}),
			effect: EffectDeny, rule: "no-prod-deletes"},
		{name: "default deny", policy: orders, in: input("delete_server", map[string]any{"environment": "staging"}),
			effect: EffectDeny, rule: RuleDefault,
			check: func(t *testing.T, d Decision) {
				if len(d.Matched) != 0 || len(d.Errors) != 0 || d.Reasons[0] != "no rule matched: default deny" {
					t.Errorf("matched %v errors %v reasons %v", d.Matched, d.Errors, d.Reasons)
				}
			}},
		{name: "missing argument denies", policy: orders, in: input("delete_server", map[string]any{}),
			effect: EffectDeny, rule: "no-prod-deletes", errContain: "no such key: environment"},
		{name: "amount expression failure denies", policy: orders, in: input("place_order", map[string]any{"quantity": 1.0}),
			effect: EffectDeny, rule: RuleClassify, errContain: "no such key: unit_price_usd"},
		{name: "negative amount denies", policy: orders, in: input("place_order", order(-1, 10)),
			effect: EffectDeny, rule: RuleClassify, errContain: "not below 0"},
		{name: "wrongly typed argument denies", policy: orders, in: input("place_order", map[string]any{"quantity": "3", "unit_price_usd": 2.0}),
			effect: EffectDeny, rule: RuleClassify, errContain: "no such overload"},
		{name: "default approve", policy: "version: 1\ndefault: approve\n", in: input("anything", nil),
			effect: EffectApprove, rule: RuleDefault,
			check: func(t *testing.T, d Decision) {
				if strings.Join(d.Approvers, ",") != "owner" || len(d.Requirements) != 1 || d.Requirements[0].Rule != RuleDefault {
					t.Errorf("approvers %v requirements %+v", d.Approvers, d.Requirements)
				}
			}},
		{name: "default approvers", policy: "version: 1\ndefault: approve\ndefault_approvers: [\"role:sre\", \"user:bob@example.com\"]\n",
			in: input("anything", nil), effect: EffectApprove, rule: RuleDefault,
			check: func(t *testing.T, d Decision) {
				if strings.Join(d.Approvers, ",") != "role:sre,user:bob@example.com" {
					t.Errorf("approvers %v", d.Approvers)
				}
			}},
		{name: "equal effects: first in file order decides", policy: `version: 1
rules:
  - {id: a, when: 'true', effect: deny, reason: first}
  - {id: b, when: 'true', effect: deny, reason: second}
  - {id: c, when: 'true', effect: allow}
`, in: input("x", nil), effect: EffectDeny, rule: "a",
			check: func(t *testing.T, d Decision) {
				if len(d.Matched) != 3 || strings.Join(d.Reasons, "|") != "a: first|b: second" {
					t.Errorf("matched %v reasons %q", d.Matched, d.Reasons)
				}
			}},
		{name: "shadow rule records a stricter outcome", policy: `version: 1
rules:
  - {id: ok, when: 'true', effect: allow}
  - {id: trial, when: 'tool.name == "x"', effect: deny, mode: shadow}
`, in: input("x", nil), effect: EffectAllow, rule: "ok", shadow: EffectDeny,
			check: func(t *testing.T, d Decision) {
				if d.ShadowRule != "trial" || len(d.Matched) != 2 || !d.Matched[1].Shadow {
					t.Errorf("shadow rule %q matched %+v", d.ShadowRule, d.Matched)
				}
			}},
		{name: "shadow rule error does not deny", policy: `version: 1
rules:
  - {id: ok, when: 'true', effect: allow}
  - {id: trial, when: 'args.missing == 1', effect: allow, mode: shadow}
`, in: input("x", map[string]any{}), effect: EffectAllow, rule: "ok", shadow: EffectDeny, errContain: "shadow rule trial"},
		{name: "shadow mode allows and records", policy: `version: 1
mode: shadow
rules:
  - {id: no, when: 'true', effect: deny}
`, in: input("x", nil), effect: EffectAllow, rule: RuleShadowMode, shadow: EffectDeny,
			check: func(t *testing.T, d Decision) {
				if d.ShadowRule != "no" || d.Reasons[0] != "policy in shadow mode: would deny by no" {
					t.Errorf("shadow rule %q reasons %q", d.ShadowRule, d.Reasons)
				}
			}},
		{name: "shadow mode default", policy: "version: 1\nmode: shadow\n", in: input("x", nil),
			effect: EffectAllow, rule: RuleShadowMode, shadow: EffectDeny},
		{name: "non-bool condition denies", policy: `version: 1
rules:
  - {id: dyn, when: 'args.flag', effect: allow}
`, in: input("x", map[string]any{"flag": "yes"}), effect: EffectDeny, rule: "dyn", errContain: "want bool"},
		{name: "amount absent is an error", policy: `version: 1
rules:
  - {id: cheap, when: 'call.amount < 10', effect: allow}
`, in: input("x", nil), effect: EffectDeny, rule: "cheap", errContain: "has no amount"},
		{name: "has(call.amount) tests presence", policy: `version: 1
rules:
  - {id: cheap, when: '!has(call.amount) || call.amount < 10', effect: allow}
`, in: input("x", nil), effect: EffectAllow, rule: "cheap"},
		{name: "every variable", policy: `version: 1
rules:
  - id: all
    when: >-
      agent.id == "agent-1" && agent.name == "buyer" && agent.department == "procurement" &&
      agent.purpose == "buys things" && agent.state == "active" && agent.owner == "alice@example.com" &&
      owner.email == "alice@example.com" && owner.name == "Alice" && "buyer" in owner.roles && owner.active &&
      tool.upstream == "acme" && tool.name == "x" && tool.annotations.readOnlyHint == false &&
      call.class == "transactional" && call.action == "write" && call.risk == "high" && call.risk_score == 75 &&
      context.weekday == "Friday" && context.hour == 10 && context.client_ip == "10.0.0.7" &&
      context.session == "s-1" && context.intent == "restock" &&
      context.time > timestamp("2026-11-20T10:00:00Z") && context.time < timestamp("2026-11-20T11:00:00Z") &&
      args.n == 3 && args.list[1] == "b" && args.obj.k == true && size(args) == 3
    effect: allow
`, in: input("x", map[string]any{"n": 3.0, "list": []any{"a", "b"}, "obj": map[string]any{"k": true}}), effect: EffectAllow, rule: "all"},
		{name: "unknown tool is unclassified", policy: `version: 1
rules:
  - {id: w, when: 'call.class == "transactional" && call.action == "write" && call.risk == "high"', effect: deny}
`, in: func() *Input {
			in := input("mystery", nil)
			in.ToolKnown = false
			in.Tool.Hint = catalog.Classification{Class: "informational", Action: "read", Risk: "low"}
			return in
		}(),
			effect: EffectDeny, rule: "w",
			check: func(t *testing.T, d Decision) {
				for _, f := range []string{"class", "action", "risk"} {
					if d.Call.Source[f] != sourceUnclassified {
						t.Errorf("source %s = %q", f, d.Call.Source[f])
					}
				}
			}},
		{name: "constraints: tightest of the deciding rules", policy: `version: 1
rules:
  - {id: a, when: 'true', effect: allow, constraints: {lifetime: 10m, uses: 3, max_amount: 100}}
  - {id: b, when: 'true', effect: allow, constraints: {lifetime: 90s, max_amount: 50.5}}
  - {id: c, when: 'true', effect: allow}
`, in: input("x", nil), effect: EffectAllow, rule: "a",
			check: func(t *testing.T, d Decision) {
				c := d.Constraints
				if c.Lifetime != 90*time.Second || c.Uses != 3 || c.MaxAmount == nil || *c.MaxAmount != 50.5 {
					t.Errorf("constraints %+v", c)
				}
			}},
		{name: "requirements of every approve rule", policy: `version: 1
rules:
  - {id: a, when: 'true', effect: approve, approvers: [owner]}
  - {id: b, when: 'true', effect: approve, approvers: ["role:finance-manager", owner], quorum: 2, separation_of_duties: true}
  - {id: s, when: 'true', effect: approve, approvers: ["role:ciso"], mode: shadow}
`, in: input("x", nil), effect: EffectApprove, rule: "a",
			check: func(t *testing.T, d Decision) {
				if strings.Join(d.Approvers, ",") != "owner,role:finance-manager" || d.Quorum != 2 || !d.SeparationOfDuties || len(d.Requirements) != 2 {
					t.Errorf("approvers %v quorum %d sod %v requirements %+v", d.Approvers, d.Quorum, d.SeparationOfDuties, d.Requirements)
				}
			}},
		{name: "in-list guard", policy: `version: 1
rules:
  - {id: r, when: 'call.action in ["read", "write"] && tool.name != "y"', effect: allow}
`, in: input("x", nil), effect: EffectAllow, rule: "r"},
		{name: "negated guard", policy: `version: 1
rules:
  - {id: r, when: 'tool.name != "x" && args.never > 1', effect: allow}
`, in: input("x", nil), effect: EffectDeny, rule: RuleDefault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, tt.policy)
			d := p.Decide(tt.in)
			if d.Effect != tt.effect || d.Rule != tt.rule || d.ShadowEffect != tt.shadow {
				t.Fatalf("got %s by %s (shadow %q), want %s by %s (shadow %q)\n%s", d.Effect, d.Rule, d.ShadowEffect, tt.effect, tt.rule, tt.shadow, d.Explain())
			}
			if d.PolicyHash != p.Hash() || len(p.Hash()) != 64 {
				t.Errorf("policy hash %q, want %q", d.PolicyHash, p.Hash())
			}
			errs := strings.Join(d.Errors, "\n")
			if tt.errContain == "" && errs != "" {
				t.Errorf("unexpected errors: %s", errs)
			}
			if tt.errContain != "" && !strings.Contains(errs, tt.errContain) {
				t.Errorf("errors %q do not mention %q", errs, tt.errContain)
			}
			if tt.check != nil {
				tt.check(t, d)
			}
		})
	}
}

func TestDecideNilInput(t *testing.T) {
	p := mustParse(t, orders)
	d := p.Decide(nil)
	if d.Effect != EffectDeny || d.Rule != RuleInput || len(d.Errors) == 0 {
		t.Fatalf("got %+v", d)
	}
}

func TestClassify(t *testing.T) {
	p := mustParse(t, `version: 1
tools:
  - {match: "acme.*", risk: medium}
  - {match: "acme.place_*", action: spend, amount: 'args.n * 2.0'}
  - {match: "acme.place_order", risk: critical}
`)
	hint := catalog.Classification{Class: "informational", Action: "read", Risk: "low",
		Source: map[string]string{"class": "annotation:readOnlyHint", "action": "heuristic:name:get"}}
	tests := []struct {
		name    string
		tool    string
		known   bool
		hint    catalog.Classification
		args    map[string]any
		want    Call
		wantErr string
	}{
		{name: "overrides field by field, later wins", tool: "place_order", known: true, hint: hint, args: map[string]any{"n": 5.0},
			want: Call{Class: "informational", Action: "spend", Risk: "critical", Amount: 10, HasAmount: true, RiskScore: 100,
				Source: map[string]string{"class": "annotation:readOnlyHint", "action": "policy:acme.place_*", "risk": "policy:acme.place_order", "amount": "policy:acme.place_*"}}},
		{name: "hint without a source", tool: "get_thing", known: true, hint: hint,
			want: Call{Class: "informational", Action: "read", Risk: "medium", RiskScore: 30,
				Source: map[string]string{"class": "annotation:readOnlyHint", "action": "heuristic:name:get", "risk": "policy:acme.*"}}},
		{name: "unknown tool ignores the hint", tool: "get_thing", known: false, hint: hint,
			want: Call{Class: "transactional", Action: "write", Risk: "medium", RiskScore: 45,
				Source: map[string]string{"class": sourceUnclassified, "action": sourceUnclassified, "risk": "policy:acme.*"}}},
		{name: "invalid hint values are unclassified", tool: "x", known: true, hint: catalog.Classification{Class: "weird", Action: "fly", Risk: "extreme"},
			want: Call{Class: "transactional", Action: "write", Risk: "medium", RiskScore: 45,
				Source: map[string]string{"class": sourceUnclassified, "action": sourceUnclassified, "risk": "policy:acme.*"}}},
		{name: "amount error", tool: "place_order", known: true, args: map[string]any{},
			want: Call{Class: "transactional", Action: "spend", Risk: "critical", RiskScore: 100,
				Source: map[string]string{"class": sourceUnclassified, "action": "policy:acme.place_*", "risk": "policy:acme.place_order", "amount": "policy:acme.place_*"}},
			wantErr: "no such key: n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.Classify(catalog.Tool{Upstream: "acme", Name: tt.tool, Hint: tt.hint}, tt.known, tt.args)
			if (err != nil) != (tt.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if got.Class != tt.want.Class || got.Action != tt.want.Action || got.Risk != tt.want.Risk ||
				got.Amount != tt.want.Amount || got.HasAmount != tt.want.HasAmount || got.RiskScore != tt.want.RiskScore {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if len(got.Source) != len(tt.want.Source) {
				t.Errorf("source %v, want %v", got.Source, tt.want.Source)
			}
			for k, v := range tt.want.Source {
				if got.Source[k] != v {
					t.Errorf("source[%s] = %q, want %q", k, got.Source[k], v)
				}
			}
		})
	}
}

func TestRiskScore(t *testing.T) {
	tests := []struct {
		class, action, risk string
		amount              float64
		hasAmount           bool
		want                int
	}{
		{"informational", "read", "low", 0, false, 10},
		{"informational", "read", "medium", 0, false, 30},
		{"transactional", "write", "high", 0, false, 75},
		{"transactional", "spend", "high", 0, true, 80},
		{"transactional", "spend", "high", 9, true, 82},    // 2·log10(10) = 2
		{"transactional", "spend", "high", 99, true, 84},   // 4
		{"transactional", "spend", "high", 999, true, 86},  // 6
		{"transactional", "spend", "high", 1e6, true, 90},  // 12, capped at +10
		{"transactional", "spend", "high", 1e6, false, 80}, // no amount, no bonus
		{"informational", "personal-data", "high", 0, false, 75},
		{"transactional", "infrastructure", "critical", 0, false, 100},
		{"transactional", "admin", "critical", 1e9, true, 100}, // capped
		{"informational", "admin", "low", 0, false, 30},
		{"", "", "", 0, false, 85}, // unknown: high, admin, transactional
	}
	for _, tt := range tests {
		if got := RiskScore(tt.class, tt.action, tt.risk, tt.amount, tt.hasAmount); got != tt.want {
			t.Errorf("RiskScore(%s, %s, %s, %v, %v) = %d, want %d", tt.class, tt.action, tt.risk, tt.amount, tt.hasAmount, got, tt.want)
		}
	}
}

const budgets = `version: 1
default: deny
tools:
  - {match: "acme.place_order", action: spend, amount: "args.usd"}
rules:
  - {id: spend, when: 'call.action == "spend"', effect: allow}
  - {id: remaining, when: 'tool.name == "check" && budget["daily"].remaining >= 100.0 && budget["daily"].limit == 1000.0', effect: allow}
budgets:
  - id: daily
    per: agent
    window: 24h
    when: 'call.action == "spend"'
    sum: call.amount
    limit: 1000
    exceeded: approve
    approvers: ["role:finance-manager"]
  - id: by-owner
    per: owner
    window: 7d
    when: 'call.action == "spend"'
    sum: 1
    limit: 3
  - id: by-department
    per: department
    window: 1h
    when: 'call.action == "spend"'
    sum: call.amount
    limit: 1e6
  - id: everyone
    per: global
    window: 30m
    sum: 1
    limit: 100000
`

func TestBudgets(t *testing.T) {
	p := mustParse(t, budgets)
	tests := []struct {
		name    string
		usd     float64
		tool    string
		totals  map[string]float64 // by budget id
		dept    string
		effect  string
		rule    string
		charges []string // budget ids charged
	}{
		{name: "within every limit", usd: 100, tool: "place_order", dept: "ops", effect: EffectAllow, rule: "spend",
			charges: []string{"daily", "by-owner", "by-department", "everyone"}},
		{name: "exactly at the limit is fine", usd: 100, tool: "place_order", dept: "ops", totals: map[string]float64{"daily": 900},
			effect: EffectAllow, rule: "spend", charges: []string{"daily", "by-owner", "by-department", "everyone"}},
		{name: "over the limit needs approval", usd: 100.01, tool: "place_order", dept: "ops", totals: map[string]float64{"daily": 900},
			effect: EffectApprove, rule: "budget:daily", charges: []string{"daily", "by-owner", "by-department", "everyone"}},
		{name: "exceeded deny beats approve", usd: 5000, tool: "place_order", dept: "ops", totals: map[string]float64{"by-owner": 3},
			effect: EffectDeny, rule: "budget:by-owner", charges: []string{"daily", "by-owner", "by-department", "everyone"}},
		{name: "when false: no charge", tool: "check", dept: "ops", effect: EffectAllow, rule: "remaining", charges: []string{"everyone"}},
		{name: "budget variable", tool: "check", dept: "ops", totals: map[string]float64{"daily": 950}, effect: EffectDeny, rule: RuleDefault,
			charges: []string{"everyone"}},
		{name: "no department to count against", usd: 1, tool: "place_order", dept: "", effect: EffectDeny, rule: "budget:by-department",
			charges: []string{"daily", "by-owner", "everyone"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := input(tt.tool, map[string]any{"usd": tt.usd})
			in.Agent.Department = tt.dept
			refs := p.BudgetRefs(in)
			for _, r := range refs {
				in.Budgets[r.Key] = tt.totals[r.ID]
			}
			d := p.Decide(in)
			if d.Effect != tt.effect || d.Rule != tt.rule {
				t.Fatalf("got %s by %s, want %s by %s\n%s", d.Effect, d.Rule, tt.effect, tt.rule, d.Explain())
			}
			var ids []string
			for _, c := range d.Charges {
				ids = append(ids, c.BudgetID)
			}
			if strings.Join(ids, ",") != strings.Join(tt.charges, ",") {
				t.Errorf("charges %v, want %v", ids, tt.charges)
			}
		})
	}
}

func TestBudgetRefs(t *testing.T) {
	p := mustParse(t, budgets)
	in := input("place_order", nil)
	got := p.BudgetRefs(in)
	want := []BudgetRef{
		{ID: "daily", Per: "agent", Key: "daily/agent/agent-1", Window: 24 * time.Hour, Limit: 1000},
		{ID: "by-owner", Per: "owner", Key: "by-owner/owner/alice@example.com", Window: 7 * 24 * time.Hour, Limit: 3},
		{ID: "by-department", Per: "department", Key: "by-department/department/procurement", Window: time.Hour, Limit: 1e6},
		{ID: "everyone", Per: "global", Key: "everyone/global/", Window: 30 * time.Minute, Limit: 100000},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ref %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	in.Agent.Department = ""
	in.Owner.Email = ""
	if got := p.BudgetRefs(in); len(got) != 3 || got[1].Key != "by-owner/owner/alice@example.com" {
		t.Errorf("without department and owner email: %+v", got)
	}
	if p.BudgetRefs(nil) != nil {
		t.Error("BudgetRefs(nil) is not nil")
	}
}

const lookups = `version: 1
rules:
  - id: with-ticket
    when: 'tool.name == "get_customer_record" && lookup.open_ticket'
    effect: allow
  - id: without-ticket
    when: 'tool.name == "get_customer_record" && !lookup.open_ticket'
    effect: deny
lookups:
  - id: open_ticket
    upstream: acme
    tool: list_open_tickets
    arguments: '{"customer_id": args.customer_id, "limit": 5}'
    result: 'size(result.tickets) > 0'
    ttl: 30s
`

func TestLookups(t *testing.T) {
	p := mustParse(t, lookups)
	tests := []struct {
		name       string
		tool       string
		args       map[string]any
		result     any
		err        error
		nilLookup  bool
		effect     string
		rule       string
		calls      int
		errContain string
	}{
		{name: "open ticket", tool: "get_customer_record", args: map[string]any{"customer_id": "C-1"},
			result: map[string]any{"tickets": []any{map[string]any{"id": "T-1"}}}, effect: EffectAllow, rule: "with-ticket", calls: 1},
		{name: "no ticket", tool: "get_customer_record", args: map[string]any{"customer_id": "C-2"},
			result: map[string]any{"tickets": []any{}}, effect: EffectDeny, rule: "without-ticket", calls: 1},
		{name: "not needed, not run", tool: "echo", args: map[string]any{}, effect: EffectDeny, rule: RuleDefault, calls: 0},
		{name: "lookup fails", tool: "get_customer_record", args: map[string]any{"customer_id": "C-1"},
			err: errors.New("upstream down"), effect: EffectDeny, rule: "with-ticket", calls: 1, errContain: "lookup open_ticket: upstream down"},
		{name: "no lookup function", tool: "get_customer_record", args: map[string]any{"customer_id": "C-1"},
			nilLookup: true, effect: EffectDeny, rule: "with-ticket", errContain: "no lookup function"},
		{name: "arguments fail", tool: "get_customer_record", args: map[string]any{},
			effect: EffectDeny, rule: "with-ticket", errContain: "arguments: no such key: customer_id"},
		{name: "result not as expected", tool: "get_customer_record", args: map[string]any{"customer_id": "C-1"},
			result: "nope", effect: EffectDeny, rule: "with-ticket", calls: 1, errContain: "result"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := input(tt.tool, tt.args)
			var calls atomic.Int32
			type ctxKey struct{}
			in.Ctx = context.WithValue(context.Background(), ctxKey{}, "marker")
			if !tt.nilLookup {
				in.Lookup = func(ctx context.Context, l LookupCall) (any, error) {
					calls.Add(1)
					if ctx.Value(ctxKey{}) != "marker" {
						t.Error("lookup did not get the input's context")
					}
					if l.ID != "open_ticket" || l.Upstream != "acme" || l.Tool != "list_open_tickets" || l.TTL != 30*time.Second ||
						l.Arguments["customer_id"] != tt.args["customer_id"] || l.Arguments["limit"] != int64(5) {
						t.Errorf("lookup call %+v", l)
					}
					return tt.result, tt.err
				}
			}
			d := p.Decide(in)
			if d.Effect != tt.effect || d.Rule != tt.rule {
				t.Fatalf("got %s by %s, want %s by %s\n%s", d.Effect, d.Rule, tt.effect, tt.rule, d.Explain())
			}
			if int(calls.Load()) != tt.calls {
				t.Errorf("lookup ran %d times, want %d (once per decision at most)", calls.Load(), tt.calls)
			}
			if errs := strings.Join(d.Errors, "\n"); !strings.Contains(errs, tt.errContain) {
				t.Errorf("errors %q do not mention %q", errs, tt.errContain)
			}
		})
	}
}

func TestApprovalMessage(t *testing.T) {
	p := mustParse(t, `version: 1
tools:
  - {match: "acme.*", approval_message: "generic"}
  - {match: "acme.place_order", approval_message: "Order for a supplier"}
`)
	if got := p.ApprovalMessage(catalog.Tool{Upstream: "acme", Name: "place_order"}); got != "Order for a supplier" {
		t.Errorf("got %q", got)
	}
	if got := p.ApprovalMessage(catalog.Tool{Upstream: "other", Name: "x"}); got != "" {
		t.Errorf("got %q", got)
	}
}

// TestConcurrentDecide runs decisions from several goroutines (go test
// -race finds shared state).
func TestConcurrentDecide(t *testing.T) {
	p := mustParse(t, orders+`  - id: with-ticket
    when: 'tool.name == "get_customer_record" && lookup.open_ticket'
    effect: allow
budgets:
  - {id: daily, per: agent, window: 24h, sum: 1, limit: 1000000}
lookups:
  - id: open_ticket
    upstream: acme
    tool: list_open_tickets
    arguments: '{"customer_id": args.customer_id}'
    result: 'size(result.tickets) > 0'
`)
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 200 {
				in := input("place_order", order(float64(i%7+g), 100))
				if i%3 == 0 {
					in = input("get_customer_record", map[string]any{"customer_id": "C-1"})
					in.Lookup = func(context.Context, LookupCall) (any, error) {
						return map[string]any{"tickets": []any{"t"}}, nil
					}
				}
				if i%5 == 0 {
					in = input("new_tool_"+string(rune('a'+i%26)), nil)
				}
				d := p.Decide(in)
				if d.Effect == "" || len(d.Errors) > 0 {
					t.Errorf("decision %+v", d)
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

// approval_message is a template over the call: checked at load, rendered
// with the call's details.
func TestApprovalMessageTemplate(t *testing.T) {
	bad := "version: 1\ndefault: deny\ntools:\n  - match: \"acme.place_order\"\n    approval_message: \"{{.Args.item\"\n"
	if _, err := Parse([]byte(bad), "p.yaml"); err == nil || !strings.Contains(err.Error(), "approval_message") || !strings.Contains(err.Error(), "p.yaml:5") {
		t.Errorf("a broken template: %v", err)
	}
	got, err := RenderApprovalMessage("Your {{.Agent}} wants a ${{.Amount}} order for {{.Args.quantity}} x {{.Args.item}}{{.Args.missing}}.",
		ApprovalMessage{Agent: "procurement agent", Amount: "1,200", Args: map[string]any{"item": "batteries", "quantity": 10}})
	if want := "Your procurement agent wants a $1,200 order for 10 x batteries."; err != nil || got != want {
		t.Errorf("rendered %q, %v; want %q", got, err, want)
	}
}
