package acme

import _ "embed"

// DemoPolicy is the demo's policy (policy.yaml): automatic small orders,
// owner approval up to $5,000 and a finance manager's above, approval for
// production servers, customer records only with an open ticket, and a
// daily spend budget. `interlock demo` runs with it; docs/policy.md walks
// through it.
//
//go:embed policy.yaml
var DemoPolicy []byte

// DemoPolicyCases are the test cases for DemoPolicy (policy_cases.yaml),
// runnable with `interlock policy test`.
//
//go:embed policy_cases.yaml
var DemoPolicyCases []byte
