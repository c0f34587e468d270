package policy

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/catalog"
)

// Effects a rule, a budget or the default can have.
const (
	EffectAllow   = "allow"
	EffectDeny    = "deny"
	EffectApprove = "approve"
)

// Modes of the policy and of a rule.
const (
	ModeEnforce = "enforce"
	ModeShadow  = "shadow"
)

// Deciding-rule names that are not rule ids.
const (
	// RuleDefault decides when no enforced rule or budget matched.
	RuleDefault = "default"
	// RuleShadowMode decides every call of a policy in shadow mode: the
	// call is allowed and the decision it would have had is in
	// Decision.ShadowEffect and Decision.ShadowRule.
	RuleShadowMode = "mode:shadow"
	// RuleClassify decides when the call could not be classified (its
	// amount expression failed).
	RuleClassify = "classify"
	// RuleInput decides when the Input itself is unusable (nil).
	RuleInput = "input"
	// RuleInternal decides when evaluation failed unexpectedly.
	RuleInternal = "internal"
	// BudgetRulePrefix prefixes a budget's id where a budget acts as a rule.
	BudgetRulePrefix = "budget:"
)

// Budget scopes.
const (
	PerAgent      = "agent"
	PerOwner      = "owner"
	PerDepartment = "department"
	PerGlobal     = "global"
)

// Default credential constraints.
const (
	DefaultLifetime = 5 * time.Minute
	DefaultUses     = 1
)

// Agent is the calling agent as the registry knows it.
type Agent struct {
	ID         string `yaml:"id" json:"id"`
	Name       string `yaml:"name" json:"name"`
	Department string `yaml:"department" json:"department"`
	Purpose    string `yaml:"purpose" json:"purpose"`
	State      string `yaml:"state" json:"state"`
	// Owner is the owner's email.
	Owner string `yaml:"owner" json:"owner"`
}

// Owner is the human who owns the agent.
type Owner struct {
	Email  string   `yaml:"email" json:"email"`
	Name   string   `yaml:"name" json:"name"`
	Roles  []string `yaml:"roles" json:"roles"`
	Active bool     `yaml:"active" json:"active"`
}

// Context is what surrounds the call. The CEL variable context.weekday and
// context.hour are derived from Time in UTC.
type Context struct {
	Time     time.Time `yaml:"time" json:"time"`
	ClientIP string    `yaml:"client_ip" json:"client_ip"`
	Session  string    `yaml:"session" json:"session"`
	// Intent is what the agent says it is trying to do
	// (params._meta["io.interlock/intent"]); untrusted, offered to rules
	// as context.intent.
	Intent string `yaml:"intent" json:"intent"`
}

// LookupCall is one just-in-time attribute request: call Tool on Upstream
// with Arguments. The caller may cache results for TTL.
type LookupCall struct {
	ID        string
	Upstream  string
	Tool      string
	Arguments map[string]any
	TTL       time.Duration
}

// LookupFunc runs a lookup and returns its result (for an MCP tool, the
// structured content, or the parsed JSON text). Any error denies the call.
type LookupFunc func(ctx context.Context, l LookupCall) (result any, err error)

// Input is everything Decide knows about one call.
type Input struct {
	Agent Agent
	Owner Owner
	Tool  catalog.Tool
	// ToolKnown is false when the catalog has never seen this tool.
	ToolKnown bool
	// Args are the call's arguments as encoding/json decodes them (numbers
	// are float64).
	Args    map[string]any
	Context Context
	// Budgets holds the current totals by BudgetRef.Key; missing means 0.
	Budgets map[string]float64
	// Lookup runs lookups; nil makes every rule that touches a lookup deny.
	Lookup LookupFunc
	// Ctx is passed to Lookup; nil means context.Background().
	Ctx context.Context

	// lookupOutcomes fakes lookup outcomes by id (RunCases): a bool is the
	// outcome itself, an error fails the lookup, anything else is the
	// lookup's raw result.
	lookupOutcomes map[string]any
}

// BudgetRef names the counter a budget uses for one input.
type BudgetRef struct {
	ID  string
	Per string
	// Key is ID+"/"+Per+"/"+scope value (agent id, owner email, agent
	// department, or "" for global): the store's counter key.
	Key    string
	Window time.Duration
	Limit  float64
}

// Call is a call's classification: its three dimensions, amount and risk
// score.
type Call struct {
	Class     string  `json:"class"`
	Action    string  `json:"action"`
	Risk      string  `json:"risk"`
	RiskScore int     `json:"risk_score"`
	Amount    float64 `json:"amount,omitempty"`
	HasAmount bool    `json:"has_amount,omitempty"`
	// Source says where each value came from, by field ("class", "risk",
	// "action", "amount"), e.g. "annotation:readOnlyHint",
	// "policy:acme.place_order", "default:unclassified". Shared between
	// decisions: read, never modify.
	Source map[string]string `json:"source,omitempty"`
}

// Match is one rule or budget whose condition held.
type Match struct {
	ID     string `json:"id"`
	Effect string `json:"effect"`
	// Shadow: the rule is recorded, not enforced.
	Shadow bool   `json:"shadow,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Requirement is one approval requirement of a matching approve rule or
// budget. An approve decision needs every one of them satisfied.
type Requirement struct {
	Rule               string   `json:"rule"`
	Approvers          []string `json:"approvers"`
	Quorum             int      `json:"quorum"`
	SeparationOfDuties bool     `json:"separation_of_duties,omitempty"`
}

// Constraints bound the credential issued for an allowed or approved call.
type Constraints struct {
	Lifetime  time.Duration
	Uses      int
	MaxAmount *float64
}

// Charge is what an applicable budget adds to its counter if the call goes
// ahead.
type Charge struct {
	BudgetID string `json:"budget"`
	Key      string `json:"key"`
	// Amount is the budget's sum for this call; Total the counter before
	// it.
	Amount float64       `json:"amount"`
	Total  float64       `json:"total"`
	Limit  float64       `json:"limit"`
	Window time.Duration `json:"window_ns"`
	// Exceeded: Total+Amount > Limit, so the budget acted as a rule.
	Exceeded bool `json:"exceeded,omitempty"`
}

// Decision is the outcome of Decide.
type Decision struct {
	// Effect is what is enforced: "allow", "deny" or "approve".
	Effect string
	// ShadowEffect is what shadow rules or shadow mode would have enforced;
	// "" when that is the same as Effect.
	ShadowEffect string
	// ShadowRule is the rule that would have decided ShadowEffect.
	ShadowRule string
	// Rule is the deciding rule id; RuleDefault when nothing matched;
	// "budget:<id>" for a budget; the failing rule's id (or RuleClassify,
	// RuleInput, RuleInternal) when evaluation failed.
	Rule string
	// Tool is the call's "upstream.tool".
	Tool    string
	Matched []Match
	Reasons []string
	Errors  []string
	Call    Call
	// Approvers, Quorum and SeparationOfDuties summarise Requirements
	// (union of approvers, largest quorum, any separation of duties) for an
	// approve decision.
	Approvers          []string
	Quorum             int
	SeparationOfDuties bool
	Requirements       []Requirement
	Constraints        Constraints
	Charges            []Charge
	PolicyHash         string
}

// Problem is one thing wrong with a policy file or with a policy against
// the discovered tools.
type Problem struct {
	File string
	// Line and Column are 1-based; 0 when unknown.
	Line, Column int
	// Where names the part of the file, e.g. `rule "small-orders" when`.
	Where   string
	Message string
}

// String formats the problem as "file:line:col: where: message".
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteByte(':')
	}
	if p.Line > 0 {
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteByte(':')
		if p.Column > 0 {
			b.WriteString(strconv.Itoa(p.Column))
			b.WriteByte(':')
		}
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	if p.Where != "" {
		b.WriteString(p.Where)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// LoadError lists every problem that kept a policy file from compiling.
type LoadError struct {
	File     string
	Problems []Problem
}

// Error prints one problem per line.
func (e *LoadError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.String())
	}
	return b.String()
}
