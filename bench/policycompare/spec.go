// Package policycompare measures interlock's policy engine against OPA
// (Rego) and cedar-go on the same 100-rule policy. It is a separate module
// so that the product never depends on the other two engines.
//
// The policy is written once, as data (Rules), and rendered into the three
// languages (testdata/policy.yaml, policy.rego, policy.cedar) by
// `go test -run TestGenerate -update`; the same file is the input of
// BenchmarkDecide100 in internal/policy (testdata/bench100.yaml).
package policycompare

import (
	"fmt"
	"strconv"
	"strings"
)

// Cond is one comparison in a rule's condition.
type Cond struct {
	// Op is eq, ne, lt, ge, gt, in, role or norole.
	Op string
	// Field is call.action, call.amount, call.risk, tool.name,
	// agent.department, args.environment, args.count (role and norole:
	// the role name goes in Str).
	Field string
	Str   string
	Num   float64
	List  []string
}

// Rule is one rule: every condition must hold.
type Rule struct {
	ID     string
	Effect string // allow, approve, deny
	Conds  []Cond
}

func eq(f, s string) Cond                 { return Cond{Op: "eq", Field: f, Str: s} }
func ne(f, s string) Cond                 { return Cond{Op: "ne", Field: f, Str: s} }
func lt(f string, n float64) Cond         { return Cond{Op: "lt", Field: f, Num: n} }
func ge(f string, n float64) Cond         { return Cond{Op: "ge", Field: f, Num: n} }
func gt(f string, n float64) Cond         { return Cond{Op: "gt", Field: f, Num: n} }
func in(f string, l ...string) Cond       { return Cond{Op: "in", Field: f, List: l} }
func role(r string) Cond                  { return Cond{Op: "role", Str: r} }
func norole(r string) Cond                { return Cond{Op: "norole", Str: r} }
func rule(id, eff string, c ...Cond) Rule { return Rule{ID: id, Effect: eff, Conds: c} }

// Rules returns the 100 rules: spending tiers per department, argument
// checks per tool, role checks, personal data and infrastructure, writes.
// Conditions on the tool come first, as a Cedar author would write them
// (Cedar evaluates left to right and an error skips the policy).
func Rules() []Rule {
	var rs []Rule
	n := 0
	id := func() string { n++; return fmt.Sprintf("r%03d", n-1) }
	// A: spending tiers per department (30).
	for k := range 10 {
		d := fmt.Sprintf("dept-%d", k)
		lo, hi := float64(100*(k+1)), float64(1000*(k+1))
		rs = append(rs,
			rule(id(), "allow", eq("call.action", "spend"), eq("agent.department", d), lt("call.amount", lo)),
			rule(id(), "approve", eq("call.action", "spend"), eq("agent.department", d), ge("call.amount", lo), lt("call.amount", hi)),
			rule(id(), "approve", eq("call.action", "spend"), eq("agent.department", d), ge("call.amount", hi)),
		)
	}
	// B: arguments of generic tools (20).
	for j := range 10 {
		t := fmt.Sprintf("tool_%d", j)
		rs = append(rs,
			rule(id(), "approve", eq("tool.name", t), eq("args.environment", "production")),
			rule(id(), "deny", eq("tool.name", t), gt("args.count", float64(10*(j+1)))),
		)
	}
	// C: roles (20).
	for j := range 10 {
		rs = append(rs,
			rule(id(), "allow", eq("call.action", "read"), role(fmt.Sprintf("reader-%d", j)), in("call.risk", "low", "medium")),
			rule(id(), "deny", eq("call.action", "admin"), eq("tool.name", fmt.Sprintf("admin_%d", j)), norole(fmt.Sprintf("admin-%d", j))),
		)
	}
	// D: personal data and infrastructure (20).
	for k := range 10 {
		rs = append(rs,
			rule(id(), "deny", eq("call.action", "personal-data"), eq("agent.department", fmt.Sprintf("dept-%d", k)), norole("privacy")),
			rule(id(), "approve", eq("call.action", "infrastructure"), eq("tool.name", fmt.Sprintf("infra_%d", k)), eq("args.environment", "production")),
		)
	}
	// E: writes (10).
	for k := range 10 {
		rs = append(rs, rule(id(), "allow", eq("call.action", "write"), eq("tool.name", fmt.Sprintf("w_%d", k)), ne("call.risk", "critical")))
	}
	return rs
}

// Call is one benchmark call.
type Call struct {
	Name       string
	Tool       string // tool name; the upstream is "bench"
	Department string
	Roles      []string
	Args       map[string]any
	// Want is the effect every engine must decide.
	Want string
}

// Calls are the benchmark's calls, one per kind of outcome.
func Calls() []Call {
	return []Call{
		{Name: "small-spend", Tool: "buy", Department: "dept-3", Roles: []string{"buyer"},
			Args: map[string]any{"item": "laptop", "quantity": 1.0, "unit_price": 250.0}, Want: "allow"},
		{Name: "large-spend", Tool: "buy", Department: "dept-7", Roles: []string{"buyer"},
			Args: map[string]any{"item": "laptop", "quantity": 5.0, "unit_price": 1000.0}, Want: "approve"},
		{Name: "read", Tool: "read_docs", Department: "dept-2", Roles: []string{"reader-2"},
			Args: map[string]any{"query": "refunds"}, Want: "allow"},
		{Name: "production", Tool: "tool_4", Department: "dept-1", Roles: []string{"dev"},
			Args: map[string]any{"environment": "production", "count": 3.0}, Want: "approve"},
		{Name: "too-many", Tool: "tool_5", Department: "dept-1", Roles: []string{"dev"},
			Args: map[string]any{"environment": "staging", "count": 100.0}, Want: "deny"},
		{Name: "personal-data", Tool: "customer_record", Department: "dept-1", Roles: []string{"support"},
			Args: map[string]any{"customer_id": "C-1"}, Want: "deny"},
		{Name: "admin", Tool: "admin_3", Department: "dept-4", Roles: []string{"dev"},
			Args: map[string]any{"user": "u-1"}, Want: "deny"},
		{Name: "write", Tool: "w_3", Department: "dept-5", Roles: []string{"dev"},
			Args: map[string]any{"text": "hello"}, Want: "allow"},
	}
}

// toolOverrides classify the benchmark's tools (interlock only; the other
// engines get the classification in their input).
const toolOverrides = `tools:
  - match: "bench.*"
    class: transactional
    action: write
    risk: medium
  - match: "bench.buy"
    action: spend
    risk: high
    amount: "args.quantity * args.unit_price"
  - match: "bench.read_docs"
    class: informational
    action: read
    risk: low
  - match: "bench.customer_record"
    class: informational
    action: personal-data
    risk: high
  - match: "bench.infra_*"
    action: infrastructure
    risk: high
  - match: "bench.admin_*"
    action: admin
    risk: critical
`

func celValue(c Cond) string {
	switch c.Op {
	case "in":
		q := make([]string, len(c.List))
		for i, s := range c.List {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	case "lt", "ge", "gt":
		return strconv.FormatFloat(c.Num, 'f', -1, 64)
	}
	return strconv.Quote(c.Str)
}

var ops = map[string]string{"eq": "==", "ne": "!=", "lt": "<", "ge": ">=", "gt": ">", "in": "in"}

// CEL renders the policy file for interlock.
func CEL(rules []Rule) string {
	var b strings.Builder
	b.WriteString("# Generated by bench/policycompare (go test -run TestGenerate -update). Do not edit.\n")
	b.WriteString("# 100 rules for BenchmarkDecide100 and the engine comparison.\nversion: 1\ndefault: deny\n")
	b.WriteString(toolOverrides)
	b.WriteString("rules:\n")
	for _, r := range rules {
		var parts []string
		for _, c := range r.Conds {
			switch c.Op {
			case "role":
				parts = append(parts, fmt.Sprintf("%q in owner.roles", c.Str))
			case "norole":
				parts = append(parts, fmt.Sprintf("!(%q in owner.roles)", c.Str))
			default:
				parts = append(parts, c.Field+" "+ops[c.Op]+" "+celValue(c))
			}
		}
		fmt.Fprintf(&b, "  - id: %s\n    when: '%s'\n    effect: %s\n", r.ID, strings.Join(parts, " && "), r.Effect)
		if r.Effect == "approve" {
			b.WriteString("    approvers: [owner]\n")
		}
	}
	return b.String()
}

// Rego renders the policy for OPA: three partial sets of rule ids and a
// decision that picks the most restrictive non-empty one.
func Rego(rules []Rule) string {
	var b strings.Builder
	b.WriteString("# Generated by bench/policycompare (go test -run TestGenerate -update). Do not edit.\n")
	b.WriteString("package interlock\n\n")
	for _, r := range rules {
		fmt.Fprintf(&b, "%s contains %q if {\n", r.Effect, r.ID)
		for _, c := range r.Conds {
			b.WriteString("\t")
			switch c.Op {
			case "role":
				fmt.Fprintf(&b, "%q in input.owner.roles", c.Str)
			case "norole":
				fmt.Fprintf(&b, "not %q in input.owner.roles", c.Str)
			case "in":
				q := make([]string, len(c.List))
				for i, s := range c.List {
					q[i] = strconv.Quote(s)
				}
				fmt.Fprintf(&b, "input.%s in {%s}", c.Field, strings.Join(q, ", "))
			default:
				fmt.Fprintf(&b, "input.%s %s %s", c.Field, ops[c.Op], celValue(c))
			}
			b.WriteString("\n")
		}
		b.WriteString("}\n\n")
	}
	b.WriteString(`default decision := {"effect": "deny", "rules": set()}

decision := {"effect": "deny", "rules": deny} if count(deny) > 0

decision := {"effect": "approve", "rules": approve} if {
	count(deny) == 0
	count(approve) > 0
}

decision := {"effect": "allow", "rules": allow} if {
	count(deny) == 0
	count(approve) == 0
	count(allow) > 0
}
`)
	return b.String()
}

// Cedar renders the policy for cedar-go. Cedar has permit and forbid only:
// allow rules are permits; approve and deny rules are forbids tagged with
// @tier, so one Authorize call reports every matching restrictive rule.
// Amounts are whole cents (Cedar has no floating point).
func Cedar(rules []Rule) string {
	var b strings.Builder
	b.WriteString("// Generated by bench/policycompare (go test -run TestGenerate -update). Do not edit.\n")
	for _, r := range rules {
		kind := "forbid"
		if r.Effect == "allow" {
			kind = "permit"
		}
		fmt.Fprintf(&b, "@id(%q)\n@tier(%q)\n%s (principal, action, resource)\nwhen {\n", r.ID, r.Effect, kind)
		var parts []string
		for _, c := range r.Conds {
			switch c.Op {
			case "role":
				parts = append(parts, fmt.Sprintf("context.owner.roles.contains(%q)", c.Str))
			case "norole":
				parts = append(parts, fmt.Sprintf("!context.owner.roles.contains(%q)", c.Str))
			case "in":
				q := make([]string, len(c.List))
				for i, s := range c.List {
					q[i] = strconv.Quote(s)
				}
				parts = append(parts, fmt.Sprintf("[%s].contains(context.%s)", strings.Join(q, ", "), c.Field))
			case "lt", "ge", "gt":
				field, n := "context."+c.Field, c.Num
				if c.Field == "call.amount" {
					field, n = "context.call.amount_cents", c.Num*100
				}
				parts = append(parts, fmt.Sprintf("%s %s %d", field, ops[c.Op], int64(n)))
			default:
				parts = append(parts, fmt.Sprintf("context.%s %s %q", c.Field, ops[c.Op], c.Str))
			}
		}
		b.WriteString("\t" + strings.Join(parts, " &&\n\t") + "\n};\n\n")
	}
	return b.String()
}
