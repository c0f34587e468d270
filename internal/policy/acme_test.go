package policy

import "testing"

// TestAcmeCases runs the demo policy's cases (examples/acme).
func TestAcmeCases(t *testing.T) {
	p, err := Load("../../examples/acme/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases, err := LoadCases("../../examples/acme/policy_cases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("no cases")
	}
	covered := map[string]bool{}
	for _, r := range RunCases(p, cases) {
		covered[r.Decision.Rule] = true
		if !r.Pass {
			t.Errorf("%s: got %s, want %s\n%s", r.Name, r.Got, r.Want, r.Decision.Explain())
		}
	}
	for _, id := range p.RuleIDs() {
		if !covered[id] && id != "weekend-orders-watch" {
			t.Errorf("rule %s decides no case", id)
		}
	}
}
