package policy

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

const indexPolicy = `version: 1
tools:
  - {match: "u1.spend*", action: spend, amount: 'args.x'}
  - {match: "u1.read*", action: read, class: informational, risk: low}
rules:
  - {id: r0, when: 'call.action == "spend" && call.amount < 4.0', effect: allow}
  - {id: r1, when: 'tool.name in ["a", "spend_b"] && args.x > 1', effect: deny}
  - {id: r2, when: 'tool.name != "a" && args.y == "z"', effect: approve, approvers: [owner]}
  - {id: r3, when: 'agent.department == "d1" && "r1" in owner.roles', effect: allow}
  - {id: r4, when: 'call.risk == "high" && args.items.exists(i, i > 2)', effect: deny}
  - {id: r5, when: 'tool.upstream == "u1" && has(args.x) && args.x == 1', effect: allow}
  - {id: r6, when: 'owner.email == "a@x.org" || args.x == 1', effect: allow}
  - {id: r7, when: 'args.x == 1', effect: deny}
  - {id: r8, when: 'call.class == "informational" && agent.state == "active" && agent.id == "ag1"', effect: allow}
  - {id: r9, when: 'true', effect: allow}
  - {id: r10, when: 'tool.name == "a" && tool.name == "b"', effect: deny}
  - {id: r11, when: '"a" == tool.name && context.hour > 3 && args.y.startsWith("q")', effect: approve, approvers: [owner]}
  - {id: r12, when: 'agent.department in ["d1", "d2"] && agent.department != "d2" && size(args) > 1', effect: deny}
  - {id: r13, when: 'call.action == "read"', effect: allow}
  - {id: r14, when: 'call.action == "spend" && (args.x > 3 && tool.name == "spend_b")', effect: approve, approvers: [owner]}
`

// TestIndexAgreesWithFullEvaluation checks that the guard index and the
// residual programs decide every rule as its full condition does.
func TestIndexAgreesWithFullEvaluation(t *testing.T) {
	p := mustParse(t, indexPolicy)
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(vals ...any) any { return vals[rng.IntN(len(vals))] }
	for n := range 3000 {
		args := map[string]any{}
		for _, k := range []string{"x", "y", "items"} {
			if v := pick(nil, 1.0, 5.0, "z", "q1", []any{1.0, 3.0}, []any{}); v != nil {
				args[k] = v
			}
		}
		in := input(pick("a", "spend_b", "read_c", "d").(string), args)
		in.Tool.Upstream = pick("u1", "u2").(string)
		in.Agent.Department = pick("d1", "d2", "").(string)
		in.Agent.ID = pick("ag1", "ag2").(string)
		in.Owner.Email = pick("a@x.org", "b@x.org").(string)
		in.Owner.Roles = pick([]string{"r1"}, []string(nil)).([]string)

		s := p.getState(in)
		call, err := p.classify(s)
		if err != nil {
			p.putState(s)
			continue
		}
		s.call = call
		p.evalRules(s)
		for ri, r := range p.rules {
			want, werr := evalBool(r.prog, s)
			got := s.ruleOut[ri]
			var ok bool
			switch {
			case werr != nil:
				ok = got == outError
			case want:
				ok = got == outMatch
			default:
				ok = got == outFalse || got == outNone
			}
			if !ok {
				t.Fatalf("input %d (%s.%s args %v dept %q): rule %s: index says %d (%v), full condition says %v, %v",
					n, in.Tool.Upstream, in.Tool.Name, args, in.Agent.Department, r.id, got, s.ruleErr[ri], want, werr)
			}
		}
		p.putState(s)
	}
}

func TestRuleGuards(t *testing.T) {
	p := mustParse(t, indexPolicy)
	want := map[string]string{
		"r0":  "[{5 [spend] false}] rest 1",
		"r1":  "[{0 [a spend_b] false}] rest 1",
		"r2":  "[{0 [a] true}] rest 1",
		"r5":  "[{4 [u1] false}] rest 2",
		"r6":  "[] rest 1",
		"r8":  "[{7 [informational] false} {8 [active] false} {1 [ag1] false}] rest 0",
		"r11": "[{0 [a] false}] rest 2",
		"r14": "[{5 [spend] false} {0 [spend_b] false}] rest 1",
	}
	for _, r := range p.rules {
		w, ok := want[r.id]
		if !ok {
			continue
		}
		g := fmt.Sprint(r.guards)
		if g == "[]" {
			g = "[]"
		}
		if got := fmt.Sprintf("%s rest %d", strings.ReplaceAll(g, "<nil>", ""), len(r.rest)); got != w {
			t.Errorf("%s: %s, want %s", r.id, got, w)
		}
	}
}
