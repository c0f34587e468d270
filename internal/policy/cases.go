package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/interlock-dev/interlock/internal/catalog"
)

// defaultCaseTime returns the time of a case that gives none: Monday
// 2026-01-05 12:00 UTC.
func defaultCaseTime() time.Time { return time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC) }

// Case is one expected decision (policy test file, docs/policy.md):
//
//	cases:
//	  - name: small order is automatic
//	    agent: {id: buyer-1, department: procurement}
//	    owner: {email: alice@acme.example, roles: [buyer]}
//	    tool: acme.place_order
//	    args: {item: laptop, quantity: 1, unit_price_usd: 300}
//	    budgets: {daily-spend: 150}
//	    lookups: {open_ticket: true}
//	    context: {time: 2026-11-20T10:00:00Z}
//	    expect: {effect: allow, rule: small-orders}
type Case struct {
	Name  string `yaml:"name"`
	Agent Agent  `yaml:"agent"`
	// Owner.Active defaults to true and Agent.State to "active";
	// Agent.Owner defaults to Owner.Email.
	Owner Owner `yaml:"owner"`
	// Tool is "upstream.tool".
	Tool string `yaml:"tool"`
	// ToolKnown defaults to true: the catalog has seen the tool.
	ToolKnown   bool           `yaml:"tool_known"`
	Hint        CaseHint       `yaml:"hint"`
	Annotations map[string]any `yaml:"annotations"`
	Args        map[string]any `yaml:"args"`
	// Budgets are current totals by budget id; the key is derived.
	Budgets map[string]float64 `yaml:"budgets"`
	// Lookups fake lookup outcomes by id: true or false is the outcome,
	// "error" makes the lookup fail, anything else is the lookup's raw
	// result, which the lookup's result expression then judges.
	Lookups map[string]any `yaml:"lookups"`
	Context Context        `yaml:"context"`
	Expect  Expect         `yaml:"expect"`
	// Line is where the case starts in its file.
	Line int `yaml:"-"`
}

// CaseHint is the catalog's classification hint for a case's tool.
type CaseHint struct {
	Class  string `yaml:"class"`
	Action string `yaml:"action"`
	Risk   string `yaml:"risk"`
}

// Expect is what a case expects. Rule and ShadowEffect are checked only
// when given.
type Expect struct {
	Effect       string `yaml:"effect"`
	Rule         string `yaml:"rule"`
	ShadowEffect string `yaml:"shadow_effect"`
}

// CaseResult is the outcome of one case.
type CaseResult struct {
	Name string
	Pass bool
	// Got and Want read "effect by rule".
	Got, Want string
	Decision  Decision
}

// LoadCases reads a policy test file. Unknown fields are errors.
func LoadCases(path string) ([]Case, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy cases: %w", err)
	}
	return ParseCases(data, path)
}

// ParseCases is LoadCases on a file's content.
func ParseCases(data []byte, name string) (cases []Case, err error) {
	defer func() {
		if r := recover(); r != nil {
			cases, err = nil, fmt.Errorf("policy cases: %s: invalid YAML", name)
		}
	}()
	var file struct {
		Cases []Case `yaml:"cases"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("policy cases: %s: %w", name, err)
	}
	// Defaults need to know which fields were written.
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("policy cases: %s: %w", name, err)
	}
	items := caseNodes(&doc)
	var problems []string
	for i := range file.Cases {
		c := &file.Cases[i]
		var n *yaml.Node
		if i < len(items) {
			n = items[i]
			c.Line = n.Line
		}
		if !hasKey(n, "tool_known") {
			c.ToolKnown = true
		}
		if !hasKey(child(n, "owner"), "active") {
			c.Owner.Active = true
		}
		if c.Agent.State == "" {
			c.Agent.State = "active"
		}
		if c.Agent.Owner == "" {
			c.Agent.Owner = c.Owner.Email
		}
		if c.Name == "" {
			c.Name = fmt.Sprintf("case %d (line %d)", i+1, c.Line)
		}
		switch c.Expect.Effect {
		case EffectAllow, EffectDeny, EffectApprove:
		default:
			problems = append(problems, fmt.Sprintf("line %d: %s: expect.effect must be allow, deny or approve", c.Line, c.Name))
		}
		if up, tool, ok := strings.Cut(c.Tool, "."); !ok || up == "" || tool == "" {
			problems = append(problems, fmt.Sprintf("line %d: %s: tool must be \"upstream.tool\"", c.Line, c.Name))
		}
		c.Args = normalize(c.Args).(map[string]any)
		c.Annotations = normalize(c.Annotations).(map[string]any)
		for id, v := range c.Lookups {
			c.Lookups[id] = normalize(v)
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("policy cases: %s:\n%s", name, strings.Join(problems, "\n"))
	}
	return file.Cases, nil
}

func caseNodes(doc *yaml.Node) []*yaml.Node {
	root := doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	list := child(root, "cases")
	if list == nil || list.Kind != yaml.SequenceNode {
		return nil
	}
	return list.Content
}

func child(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func hasKey(n *yaml.Node, key string) bool { return child(n, key) != nil }

// normalize makes YAML values look like encoding/json's: numbers become
// float64, maps map[string]any. Nil maps become empty maps.
func normalize(v any) any {
	switch v := v.(type) {
	case nil:
		return map[string]any{}
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = normalizeValue(x)
		}
		return out
	}
	return normalizeValue(v)
}

func normalizeValue(v any) any {
	switch v := v.(type) {
	case int:
		return float64(v)
	case int64:
		return float64(v)
	case uint64:
		return float64(v)
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	case map[string]any:
		return normalize(v)
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[fmt.Sprint(k)] = normalizeValue(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = normalizeValue(x)
		}
		return out
	}
	return v
}

// Input builds the Input a case describes, against p for the budget keys.
func (c Case) Input(p *Policy) *Input {
	up, name, _ := strings.Cut(c.Tool, ".")
	in := &Input{
		Agent: c.Agent,
		Owner: c.Owner,
		Tool: catalog.Tool{Upstream: up, Name: name, Annotations: c.Annotations,
			Hint: catalog.Classification{Class: c.Hint.Class, Action: c.Hint.Action, Risk: c.Hint.Risk,
				Source: map[string]string{"class": "case:hint", "action": "case:hint", "risk": "case:hint"}}},
		ToolKnown: c.ToolKnown,
		Args:      c.Args,
		Context:   c.Context,
		Budgets:   map[string]float64{},
	}
	if in.Context.Time.IsZero() {
		in.Context.Time = defaultCaseTime()
	}
	for _, ref := range p.BudgetRefs(in) {
		if v, ok := c.Budgets[ref.ID]; ok {
			in.Budgets[ref.Key] = v
		}
	}
	in.lookupOutcomes = map[string]any{}
	for id, v := range c.Lookups {
		if s, ok := v.(string); ok && s == "error" {
			in.lookupOutcomes[id] = errors.New("failed (the case says so)")
			continue
		}
		in.lookupOutcomes[id] = v
	}
	return in
}

// RunCases decides every case and compares the outcome with what the case
// expects.
func RunCases(p *Policy, cases []Case) []CaseResult {
	out := make([]CaseResult, 0, len(cases))
	for _, c := range cases {
		d := p.Decide(c.Input(p))
		r := CaseResult{Name: c.Name, Decision: d}
		r.Got = d.Effect + " by " + d.Rule
		r.Want = c.Expect.Effect
		if c.Expect.Rule != "" {
			r.Want += " by " + c.Expect.Rule
		}
		r.Pass = d.Effect == c.Expect.Effect && (c.Expect.Rule == "" || d.Rule == c.Expect.Rule)
		if c.Expect.ShadowEffect != "" {
			r.Got += ", shadow " + orDash(d.ShadowEffect)
			r.Want += ", shadow " + c.Expect.ShadowEffect
			r.Pass = r.Pass && d.ShadowEffect == c.Expect.ShadowEffect
		}
		out = append(out, r)
	}
	return out
}
