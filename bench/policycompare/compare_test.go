package policycompare

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/interlock-dev/interlock/internal/catalog"
	"github.com/interlock-dev/interlock/internal/policy"
)

var update = flag.Bool("update", false, "rewrite the generated policy files")

// generated maps each generated file to its content.
func generated() map[string]string {
	rules := Rules()
	cel := CEL(rules)
	return map[string]string{
		"testdata/policy.yaml":                         cel,
		"testdata/policy.rego":                         Rego(rules),
		"testdata/policy.cedar":                        Cedar(rules),
		"../../internal/policy/testdata/bench100.yaml": cel,
	}
}

// TestGenerate checks that the policy files match Rules (-update rewrites
// them).
func TestGenerate(t *testing.T) {
	for path, want := range generated() {
		if *update {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s is stale: run go test -run TestGenerate -update", path)
		}
	}
}

// engines holds the three compiled policies and, for each of Calls, the
// input each engine takes.
type engines struct {
	calls []Call

	interlock *policy.Policy
	inputs    []*policy.Input

	opa       rego.PreparedEvalQuery
	opaInput  []map[string]any
	opaParsed []ast.Value

	cedar     *cedar.PolicySet
	cedarReq  []cedar.Request
	cedarTier map[cedar.PolicyID]string
	cedarID   map[cedar.PolicyID]string
}

func setup(tb testing.TB) *engines {
	tb.Helper()
	rules := Rules()
	e := &engines{calls: Calls(), cedarTier: map[cedar.PolicyID]string{}, cedarID: map[cedar.PolicyID]string{}}
	var err error
	e.interlock, err = policy.Parse([]byte(CEL(rules)), "policy.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	e.opa, err = rego.New(rego.Query("data.interlock.decision"), rego.Module("policy.rego", Rego(rules))).PrepareForEval(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	e.cedar, err = cedar.NewPolicySetFromBytes("policy.cedar", []byte(Cedar(rules)))
	if err != nil {
		tb.Fatal(err)
	}
	for id, p := range e.cedar.All() {
		a := p.Annotations()
		e.cedarTier[id] = string(a["tier"])
		e.cedarID[id] = string(a["id"])
	}
	now := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	for _, c := range e.calls {
		in := &policy.Input{
			Agent:     policy.Agent{ID: "agent-" + c.Name, Department: c.Department, State: "active", Owner: "owner@example.com"},
			Owner:     policy.Owner{Email: "owner@example.com", Roles: c.Roles, Active: true},
			Tool:      catalog.Tool{Upstream: "bench", Name: c.Tool},
			ToolKnown: true,
			Args:      c.Args,
			Context:   policy.Context{Time: now},
		}
		e.inputs = append(e.inputs, in)
		// The other engines get the classification interlock computes.
		call, err := e.interlock.Classify(in.Tool, true, c.Args)
		if err != nil {
			tb.Fatal(err)
		}
		roles := make([]any, len(c.Roles))
		for i, r := range c.Roles {
			roles[i] = r
		}
		input := map[string]any{
			"call":  map[string]any{"class": call.Class, "action": call.Action, "risk": call.Risk, "amount": call.Amount},
			"tool":  map[string]any{"upstream": "bench", "name": c.Tool},
			"agent": map[string]any{"department": c.Department},
			"owner": map[string]any{"roles": roles},
			"args":  c.Args,
		}
		e.opaInput = append(e.opaInput, input)
		v, err := ast.InterfaceToValue(input)
		if err != nil {
			tb.Fatal(err)
		}
		e.opaParsed = append(e.opaParsed, v)

		args := cedar.RecordMap{}
		for k, v := range c.Args {
			switch v := v.(type) {
			case string:
				args[cedar.String(k)] = cedar.String(v)
			case float64:
				args[cedar.String(k)] = cedar.Long(int64(v))
			}
		}
		cedarRoles := make([]cedar.Value, len(c.Roles))
		for i, r := range c.Roles {
			cedarRoles[i] = cedar.String(r)
		}
		e.cedarReq = append(e.cedarReq, cedar.Request{
			Principal: cedar.NewEntityUID("Agent", cedar.String(in.Agent.ID)),
			Action:    cedar.NewEntityUID("Action", "call"),
			Resource:  cedar.NewEntityUID("Tool", cedar.String("bench."+c.Tool)),
			Context: cedar.NewRecord(cedar.RecordMap{
				"call": cedar.NewRecord(cedar.RecordMap{
					"class": cedar.String(call.Class), "action": cedar.String(call.Action), "risk": cedar.String(call.Risk),
					"amount_cents": cedar.Long(int64(call.Amount * 100)),
				}),
				"tool":  cedar.NewRecord(cedar.RecordMap{"upstream": cedar.String("bench"), "name": cedar.String(c.Tool)}),
				"agent": cedar.NewRecord(cedar.RecordMap{"department": cedar.String(c.Department)}),
				"owner": cedar.NewRecord(cedar.RecordMap{"roles": cedar.NewSet(cedarRoles...)}),
				"args":  cedar.NewRecord(args),
			}),
		})
	}
	return e
}

// outcome is an effect and the rules of the deciding tier.
type outcome struct {
	Effect string
	Rules  []string
}

func (e *engines) decideInterlock(i int) outcome {
	d := e.interlock.Decide(e.inputs[i])
	o := outcome{Effect: d.Effect}
	for _, m := range d.Matched {
		if m.Effect == d.Effect {
			o.Rules = append(o.Rules, m.ID)
		}
	}
	return o
}

func (e *engines) decideOPA(i int, parsed bool) outcome {
	opt := rego.EvalInput(e.opaInput[i])
	if parsed {
		opt = rego.EvalParsedInput(e.opaParsed[i])
	}
	rs, err := e.opa.Eval(context.Background(), opt)
	if err != nil || len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return outcome{Effect: fmt.Sprintf("error: %v", err)}
	}
	m, _ := rs[0].Expressions[0].Value.(map[string]any)
	o := outcome{}
	o.Effect, _ = m["effect"].(string)
	rules, _ := m["rules"].([]any)
	for _, r := range rules {
		o.Rules = append(o.Rules, fmt.Sprint(r))
	}
	return o
}

func (e *engines) decideCedar(i int) outcome {
	dec, diag := cedar.Authorize(e.cedar, nil, e.cedarReq[i])
	o := outcome{Effect: "deny"}
	if dec == cedar.Allow {
		o.Effect = "allow"
		for _, r := range diag.Reasons {
			o.Rules = append(o.Rules, e.cedarID[r.PolicyID])
		}
		return o
	}
	var deny, approve []string
	for _, r := range diag.Reasons {
		if e.cedarTier[r.PolicyID] == "deny" {
			deny = append(deny, e.cedarID[r.PolicyID])
		} else {
			approve = append(approve, e.cedarID[r.PolicyID])
		}
	}
	switch {
	case len(deny) > 0:
		o.Rules = deny
	case len(approve) > 0:
		o.Effect, o.Rules = "approve", approve
	}
	return o
}

// TestSameDecisions checks that the three engines decide every call the
// same way, with the same deciding rules.
func TestSameDecisions(t *testing.T) {
	e := setup(t)
	for i, c := range e.calls {
		got := map[string]outcome{
			"interlock":  e.decideInterlock(i),
			"opa":        e.decideOPA(i, false),
			"opa-parsed": e.decideOPA(i, true),
			"cedar":      e.decideCedar(i),
		}
		for name, o := range got {
			sort.Strings(o.Rules)
			got[name] = o
			if o.Effect != c.Want {
				t.Errorf("%s: %s decided %s, want %s", c.Name, name, o.Effect, c.Want)
			}
		}
		for name, o := range got {
			if !slices.Equal(o.Rules, got["interlock"].Rules) {
				t.Errorf("%s: %s rules %v, interlock %v", c.Name, name, o.Rules, got["interlock"].Rules)
			}
		}
	}
}

// measure runs f b.N times, timing each call, and reports p50 and p99 (the
// clock reads, ~20-40 ns, are included).
func measure(b *testing.B, f func(i int)) {
	samples := make([]time.Duration, 0, min(b.N, 1<<20))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		f(i)
		d := time.Since(t0)
		if len(samples) < cap(samples) {
			samples = append(samples, d)
		}
	}
	b.StopTimer()
	slices.Sort(samples)
	if len(samples) > 0 {
		b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds()), "p99-ns")
	}
}

// BenchmarkEngines decides the same calls with the same 100 rules in each
// engine, cycling through Calls.
func BenchmarkEngines(b *testing.B) {
	e := setup(b)
	n := len(e.calls)
	b.Run("interlock", func(b *testing.B) {
		measure(b, func(i int) { e.decideInterlock(i % n) })
	})
	b.Run("cedar-go", func(b *testing.B) {
		measure(b, func(i int) { e.decideCedar(i % n) })
	})
	b.Run("opa-parsed-input", func(b *testing.B) {
		measure(b, func(i int) { e.decideOPA(i%n, true) })
	})
	b.Run("opa", func(b *testing.B) {
		measure(b, func(i int) { e.decideOPA(i%n, false) })
	})
}
