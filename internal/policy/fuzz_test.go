package policy

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzParse checks that the loader never panics and that whatever it
// accepts can decide a call.
func FuzzParse(f *testing.F) {
	demo, err := os.ReadFile("../../examples/acme/policy.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{string(demo), orders, budgets, lookups, indexPolicy,
		"version: 1\n", "", "version: 1\nrules: [{id: a, when: 'args.x[0] > 1', effect: allow}]\n",
		"a: &a [*a]\n", "version: 1\nrules:\n  - {id: x, when: '" + strings.Repeat("(", 300) + "', effect: deny}\n"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data, "fuzz.yaml")
		if err != nil {
			var le *LoadError
			if !errors.As(err, &le) || len(le.Problems) == 0 {
				t.Fatalf("error %T without problems: %v", err, err)
			}
			return
		}
		d := p.Decide(input("place_order", map[string]any{"quantity": 2.0, "unit_price_usd": 10.0}))
		if d.Effect != EffectAllow && d.Effect != EffectDeny && d.Effect != EffectApprove {
			t.Fatalf("effect %q", d.Effect)
		}
		_ = d.Explain()
		_ = p.Lint(acmeTools())
	})
}

// FuzzDecide feeds random arguments to the demo policy: no panic, and any
// error in an enforced rule denies.
func FuzzDecide(f *testing.F) {
	demo, err := os.ReadFile("../../examples/acme/policy.yaml")
	if err != nil {
		f.Fatal(err)
	}
	p, err := Parse(demo, "policy.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []struct{ tool, args string }{
		{"place_order", `{"item":"laptop","quantity":3,"unit_price_usd":100}`},
		{"place_order", `{"quantity":1e308,"unit_price_usd":1e308}`},
		{"place_order", `{"quantity":-1,"unit_price_usd":5}`},
		{"place_order", `{"quantity":"3","unit_price_usd":null}`},
		{"provision_servers", `{"count":15,"environment":"production"}`},
		{"provision_servers", `{"count":[1],"environment":{}}`},
		{"get_customer_record", `{"customer_id":"CUST-001"}`},
		{"get_customer_record", `{"customer_id":7}`},
		{"issue_refund", `{"amount_usd":900}`},
		{"echo", `{}`},
		{"unknown", `{"a":{"b":[1,2,{"c":null}]}}`},
	} {
		f.Add(seed.tool, seed.args)
	}
	f.Fuzz(func(t *testing.T, tool, argsJSON string) {
		var args map[string]any
		if err := json.Unmarshal([]byte(argsJSON), &args); err != nil {
			return
		}
		in := input(tool, args)
		in.Lookup = func(_ context.Context, l LookupCall) (any, error) {
			switch l.Arguments["customer_id"] {
			case "CUST-001":
				return map[string]any{"tickets": []any{map[string]any{"id": "T"}}}, nil
			case "CUST-002":
				return map[string]any{"tickets": "not a list"}, nil
			}
			return nil, errors.New("no such customer")
		}
		d := p.Decide(in)
		switch d.Effect {
		case EffectAllow, EffectApprove, EffectDeny:
		default:
			t.Fatalf("effect %q", d.Effect)
		}
		for _, e := range d.Errors {
			if !strings.HasPrefix(e, "shadow ") && d.Effect != EffectDeny {
				t.Fatalf("error %q but effect %s", e, d.Effect)
			}
		}
		if d.Effect == EffectApprove && (len(d.Approvers) == 0 || d.Quorum < 1) {
			t.Fatalf("approve without approvers: %+v", d)
		}
		_ = d.Explain()
	})
}
