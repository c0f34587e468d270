// Package catalog knows the tools of every upstream: it learns them from
// tools/list (refreshing when an upstream says its list changed), keeps their
// schemas and annotations, and derives default classification hints from
// MCP annotations and from names and descriptions. It can also call a tool
// on an upstream for policy lookups.
//
// It must not decide: hints are defaults that the policy's operator
// overrides always win over, and annotations are treated as untrusted hints.
package catalog

import "encoding/json"

// Request classes.
const (
	ClassInformational = "informational"
	ClassTransactional = "transactional"
)

// Data-source risks, lowest first.
var Risks = []string{"low", "medium", "high", "critical"}

// Action scopes.
const (
	ActionRead           = "read"
	ActionWrite          = "write"
	ActionSpend          = "spend"
	ActionInfrastructure = "infrastructure"
	ActionPersonalData   = "personal-data"
	ActionAdmin          = "admin"
)

// Actions lists every action scope.
var Actions = []string{ActionRead, ActionWrite, ActionSpend, ActionInfrastructure, ActionPersonalData, ActionAdmin}

// Classification is a tool's three dimensions. Source says where each value
// came from, per field ("class", "risk", "action"), e.g.
// "annotation:readOnlyHint", "heuristic:name", "policy:acme.place_order",
// "upstream:acme", "default:unclassified".
type Classification struct {
	Class  string            `json:"class"`
	Risk   string            `json:"risk"`
	Action string            `json:"action"`
	Source map[string]string `json:"source"`
}

// Tool is one tool of one upstream as discovered.
type Tool struct {
	Upstream    string          `json:"upstream"`
	Name        string          `json:"name"`
	Title       string          `json:"title,omitempty"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"inputSchema,omitempty"`
	// Annotations as the upstream sent them (readOnlyHint, destructiveHint,
	// idempotentHint, openWorldHint, title, ...). Untrusted.
	Annotations map[string]any `json:"annotations,omitempty"`
	// Hint is the default classification from annotations and heuristics.
	Hint Classification `json:"hint"`
}

// FullName is "upstream.tool", the name policies match on.
func (t Tool) FullName() string { return t.Upstream + "." + t.Name }
