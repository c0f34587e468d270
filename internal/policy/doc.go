// Package policy compiles policy files and decides tool calls: a pure
// function of its input; must not do I/O (lookups go through a function the
// caller supplies).
//
// A policy file (docs/policy.md) is YAML: operator overrides of the tools'
// classification, rules whose conditions are CEL expressions, budgets and
// lookups. Parse and Load decode it strictly, compile every expression in a
// checked CEL environment and report every problem at once as a *LoadError.
//
// Classify gives a call its three dimensions (request class, data-source
// risk, action scope), its amount and its risk score. Decide evaluates every
// rule and budget against an Input and returns a Decision: the most
// restrictive matching enforced rule wins (deny > approve > allow), the
// policy's default applies when none matches, and any evaluation error
// denies. Decide never panics and never touches the network, the disk or
// the clock: the current budget totals come in the Input, and lookups run
// through Input.Lookup.
//
// Lint checks a compiled policy against the tools the catalog discovered,
// and LoadCases and RunCases run a file of expected decisions against it.
package policy
