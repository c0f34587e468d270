package gate

import (
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/internal/policy"
	"github.com/interlock-dev/interlock/internal/store"
)

// allowAll is a policy that allows every call: the agent's allowed
// upstreams must hold without anyone writing a rule.
const allowAll = "version: 1\ndefault: deny\nrules:\n  - id: all\n    when: 'true'\n    effect: allow\n"

func TestAllowedUpstreams(t *testing.T) {
	pol, err := policy.Parse([]byte(allowAll), "allow-all.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		change  func(*store.Principal)
		args    any
		allowed bool
		rule    string
		says    []string
	}{
		{"no list: every upstream", func(*store.Principal) {}, map[string]any{}, true, "all", nil},
		{"listed upstream", func(p *store.Principal) { p.Agent.AllowedUpstreams = []string{"github", "shop"} },
			map[string]any{}, true, "all", nil},
		{"other upstream", func(p *store.Principal) { p.Agent.AllowedUpstreams = []string{"github", "jira"} },
			map[string]any{}, false, RuleUpstreamNotAllowed,
			[]string{`agent "bot" may not use upstream "shop"`, `"github", "jira"`, "set-upstreams bot"}},
		{"before the arguments", func(p *store.Principal) { p.Agent.AllowedUpstreams = []string{"github"} },
			[]int{1}, false, RuleUpstreamNotAllowed, []string{`may use only "github"`}},
		{"after the kill switch", func(p *store.Principal) {
			p.Agent.AllowedUpstreams = []string{"github"}
			p.Agent.State = store.AgentSuspended
		}, map[string]any{}, false, "kill-switch", []string{"suspended"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.Policy = func() *policy.Policy { return pol } })
			tc.change(&e.p)
			v := e.check(t, "buy", tc.args)
			if allowed := v != nil && v.Deny == nil; allowed != tc.allowed {
				t.Fatalf("allowed=%v, want %v (%s)", allowed, tc.allowed, reason(v))
			}
			for _, s := range tc.says {
				if !strings.Contains(reason(v), s) {
					t.Errorf("reason %q does not say %q", reason(v), s)
				}
			}
			ds := e.events(t, "decision")
			if len(ds) != 1 || ds[0]["rule"] != tc.rule {
				t.Fatalf("recorded %v, want one decision by rule %q", ds, tc.rule)
			}
		})
	}
}
