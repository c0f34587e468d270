package policy

import (
	"strings"
	"testing"
)

func TestParseCases(t *testing.T) {
	src := `cases:
  - name: defaults
    owner: {email: a@x.org}
    tool: acme.echo
    args: {n: 3, nested: {list: [1, 2]}}
    expect: {effect: allow}
  - name: explicit
    agent: {id: b1, owner: b@x.org, state: suspended}
    owner: {email: a@x.org, active: false}
    tool: acme.echo
    tool_known: false
    expect: {effect: deny, rule: default}
`
	cases, err := ParseCases([]byte(src), "cases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) != 2 {
		t.Fatalf("%d cases", len(cases))
	}
	d := cases[0]
	if !d.ToolKnown || !d.Owner.Active || d.Agent.State != "active" || d.Agent.Owner != "a@x.org" || d.Line != 2 {
		t.Errorf("defaults not applied: %+v", d)
	}
	if n, ok := d.Args["n"].(float64); !ok || n != 3 {
		t.Errorf("args.n = %#v, want float64 3", d.Args["n"])
	}
	if l, ok := d.Args["nested"].(map[string]any)["list"].([]any); !ok || l[1] != 2.0 {
		t.Errorf("nested args not normalised: %#v", d.Args["nested"])
	}
	e := cases[1]
	if e.ToolKnown || e.Owner.Active || e.Agent.State != "suspended" || e.Agent.Owner != "b@x.org" {
		t.Errorf("explicit values overridden: %+v", e)
	}
}

func TestParseCasesErrors(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"unknown field", "cases:\n  - name: x\n    tool: a.b\n    expct: {effect: allow}\n", "line 4: field expct not found"},
		{"bad effect", "cases:\n  - name: x\n    tool: a.b\n    expect: {effect: permit}\n", "line 2: x: expect.effect must be allow, deny or approve"},
		{"bad tool", "cases:\n  - name: x\n    tool: ab\n    expect: {effect: allow}\n", `line 2: x: tool must be "upstream.tool"`},
		{"bad yaml", "cases: [\n", "cases.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCases([]byte(tt.src), "cases.yaml")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestRunCases(t *testing.T) {
	p := mustParse(t, lookups)
	cases, err := ParseCases([]byte(`cases:
  - name: pass by outcome
    tool: acme.get_customer_record
    args: {customer_id: C-1}
    lookups: {open_ticket: true}
    expect: {effect: allow, rule: with-ticket}
  - name: pass by raw result
    tool: acme.get_customer_record
    args: {customer_id: C-1}
    lookups: {open_ticket: {tickets: []}}
    expect: {effect: deny, rule: without-ticket}
  - name: lookup missing from the case
    tool: acme.get_customer_record
    args: {customer_id: C-1}
    expect: {effect: deny, rule: with-ticket}
  - name: wrong rule
    tool: acme.get_customer_record
    args: {customer_id: C-1}
    lookups: {open_ticket: false}
    expect: {effect: deny, rule: with-ticket}
  - name: wrong shadow
    tool: acme.echo
    expect: {effect: deny, shadow_effect: allow}
`), "cases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		pass      bool
		got, want string
	}{
		{true, "allow by with-ticket", "allow by with-ticket"},
		{true, "deny by without-ticket", "deny by without-ticket"},
		{true, "deny by with-ticket", "deny by with-ticket"},
		{false, "deny by without-ticket", "deny by with-ticket"},
		{false, "deny by default, shadow -", "deny, shadow allow"},
	}
	results := RunCases(p, cases)
	for i, r := range results {
		if r.Pass != want[i].pass || r.Got != want[i].got || r.Want != want[i].want {
			t.Errorf("%s: pass %v got %q want %q; expected %+v", r.Name, r.Pass, r.Got, r.Want, want[i])
		}
	}
	if !strings.Contains(strings.Join(results[2].Decision.Errors, ""), "the case gives no outcome") {
		t.Errorf("errors %v", results[2].Decision.Errors)
	}
}
