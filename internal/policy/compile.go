package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"

	"go.yaml.in/yaml/v3"

	"github.com/interlock-dev/interlock/internal/catalog"
)

// Limits that keep a policy cheap to compile and to evaluate.
const (
	maxExprLen = 10_000 // characters in one expression
	// maxChunkText bounds the text of one combined rule program, well
	// under CEL's own limit on expression size.
	maxChunkText = 60_000
	maxChunkSize = 256 // rules in one combined program
	// maxToolCache bounds the per-policy cache of resolved tool overrides,
	// so that calls to made-up tool names cannot grow it without end.
	maxToolCache = 4096
)

// Policy is a compiled policy file. It is immutable and safe for
// concurrent use.
type Policy struct {
	name             string
	hash             string
	defaultEffect    string
	defaultApprovers []string
	defaultReason    string
	shadow           bool

	tools   []*toolOverride
	rules   []*rule
	budgets []*budget
	lookups []*lookup

	prov *provider
	// index picks the rules that can match a call (index.go).
	index ruleIndex

	// toolCache maps tools to their resolved overrides; copied on write,
	// so that reads take no lock.
	toolCache   atomic.Pointer[map[toolKey]*resolvedTool]
	toolCacheMu sync.Mutex
	states      sync.Pool
}

// toolOverride is one entry of tools:.
type toolOverride struct {
	index           int
	line            int
	match           string
	class           string
	action          string
	risk            string
	amountSrc       str
	amount          cel.Program
	amountAST       *cel.Ast
	approvalMessage string
}

// rule is one compiled rule.
type rule struct {
	index      int
	id         string
	line       int
	when       str
	ast        *cel.Ast
	prog       cel.Program
	effect     string
	reason     string
	reasonText string // "id: reason"
	shadow     bool
	req        Requirement
	// constraints set by the rule; zero values mean unset.
	lifetime  time.Duration
	uses      int
	maxAmount *float64
	// guards are top-level conditions on plain attributes, checked in Go
	// before the rule runs (index.go).
	guards []guard
	// secondary are the guards other than the one the index uses.
	secondary []guard
	// rest are the other top-level conjuncts; residual evaluates them
	// (nil: nothing is left, the guards decide).
	rest     []celast.Expr
	residual cel.Program
}

// budget is one compiled budget.
type budget struct {
	index     int
	id        string
	ruleID    string // "budget:<id>"
	line      int
	per       string
	window    time.Duration
	limit     float64
	exceeded  string
	reason    string
	req       Requirement
	whenSrc   str
	when      cel.Program
	whenAST   *cel.Ast
	sumSrc    str
	sum       cel.Program
	sumAST    *cel.Ast
	keyPrefix string // id+"/"+per+"/"
}

// lookup is one compiled lookup.
type lookup struct {
	index        int
	id           string
	line         int
	upstream     string
	tool         string
	ttl          time.Duration
	argsSrc      str
	args         cel.Program
	argsAST      *cel.Ast
	resultSrc    str
	result       cel.Program
	resultAST    *cel.Ast
	upstreamLine int
}

// Hash returns the hex SHA-256 of the policy file's bytes: the policy
// version recorded with every decision.
func (p *Policy) Hash() string { return p.hash }

// Name returns the file name the policy was loaded from.
func (p *Policy) Name() string { return p.name }

// Default returns the effect that applies when no rule matches.
func (p *Policy) Default() string { return p.defaultEffect }

// Shadow reports whether the whole policy runs in shadow mode.
// MaxBudgetWindow is the longest window of any budget (0 without
// budgets): budget entries older than that count for nothing and can go.
func (p *Policy) MaxBudgetWindow() time.Duration {
	var w time.Duration
	for _, b := range p.budgets {
		w = max(w, b.window)
	}
	return w
}

func (p *Policy) Shadow() bool { return p.shadow }

// RuleIDs returns the rule ids in file order.
func (p *Policy) RuleIDs() []string {
	ids := make([]string, len(p.rules))
	for i, r := range p.rules {
		ids[i] = r.id
	}
	return ids
}

// ApprovalMessage is what an approval_message template is rendered with.
type ApprovalMessage struct {
	Agent    string         // the agent's name (its id when it has none)
	AgentID  string         // the agent's id
	Owner    string         // the owner's email
	Upstream string         // the upstream's name
	Tool     string         // the tool's name
	Args     map[string]any // the call's arguments (as approvers may see them)
	Amount   string         // the call's amount, formatted (1,200 or 12.50); "" without one
}

// ParseApprovalMessage parses an approval_message: Go text/template syntax
// over ApprovalMessage ({{.Agent}}, {{.Args.item}}, {{.Amount}}, ...);
// plain text is a template too.
func ParseApprovalMessage(src string) (*template.Template, error) {
	t, err := template.New("approval_message").Option("missingkey=zero").Parse(src)
	if err != nil {
		return nil, fmt.Errorf("not a valid template: %w", err)
	}
	return t, nil
}

// RenderApprovalMessage renders src with m.
func RenderApprovalMessage(src string, m ApprovalMessage) (string, error) {
	t, err := ParseApprovalMessage(src)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, m); err != nil {
		return "", fmt.Errorf("approval_message: %w", err)
	}
	// A missing argument renders as nothing, not as "<no value>".
	return strings.TrimSpace(strings.ReplaceAll(b.String(), "<no value>", "")), nil
}

// ApprovalMessage returns the approval_message the tool overrides give the
// tool (the last matching override that sets one), or "".
func (p *Policy) ApprovalMessage(t catalog.Tool) string {
	return p.resolveTool(t.Upstream, t.Name).approvalMessage
}

// Load reads and compiles the policy file at path.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return Parse(data, path)
}

// Parse compiles a policy file's content; name is used in problems. Every
// problem found is reported at once in a *LoadError. Parse never panics.
func Parse(data []byte, name string) (p *Policy, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, &LoadError{File: name, Problems: []Problem{{File: name, Message: fmt.Sprintf("internal error while compiling: %v", r)}}}
		}
	}()
	d := &decoder{file: name}
	root, ok := d.parse(data)
	if !ok {
		return nil, &LoadError{File: name, Problems: d.problems}
	}
	spec := d.decodeFile(root)
	c := &compiler{file: name, problems: d.problems}
	pol := c.compile(spec)
	if len(c.problems) > 0 {
		sortProblems(c.problems)
		return nil, &LoadError{File: name, Problems: c.problems}
	}
	sum := sha256.Sum256(data)
	pol.hash = hex.EncodeToString(sum[:])
	pol.name = name
	return pol, nil
}

func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		switch {
		case a.Line == b.Line:
			return a.Column - b.Column
		case a.Line == 0:
			return 1
		case b.Line == 0:
			return -1
		}
		return a.Line - b.Line
	})
}

// compiler turns a fileSpec into a Policy, collecting problems.
type compiler struct {
	file     string
	problems []Problem

	env       *cel.Env // rules, budgets
	amountEnv *cel.Env // tools[].amount: args, tool
	argsEnv   *cel.Env // lookups[].arguments: everything but lookup
	resultEnv *cel.Env // lookups[].result: argsEnv plus result
	budgetIDs map[string]bool
}

func (c *compiler) add(line, col int, where, format string, args ...any) {
	c.problems = append(c.problems, Problem{File: c.file, Line: line, Column: col, Where: where, Message: fmt.Sprintf(format, args...)})
}

func (c *compiler) addAt(s str, where, format string, args ...any) {
	c.add(s.Line, s.Col, where, format, args...)
}

// isIdent reports whether s can be a lookup id: a CEL identifier that is
// not a reserved word, so that rules can write lookup.<id>.
func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	switch s {
	case "as", "break", "const", "continue", "else", "false", "for", "function", "if",
		"import", "in", "let", "loop", "package", "namespace", "null", "return", "true", "var", "void", "while":
		return false
	}
	return true
}

// isID reports whether s can be a rule or budget id: letters, digits, '_',
// '-' and '.', starting with a letter or digit.
func isID(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case (r == '_' || r == '-' || r == '.') && i > 0:
		default:
			return false
		}
	}
	return true
}

// isReservedRuleID reports whether id names something other than a rule.
func isReservedRuleID(id string) bool {
	switch id {
	case RuleDefault, RuleShadowMode, RuleClassify, RuleInput, RuleInternal:
		return true
	}
	return strings.HasPrefix(id, BudgetRulePrefix)
}

func (c *compiler) compile(f *fileSpec) *Policy {
	p := &Policy{}
	if !f.Version.Set {
		c.add(1, 0, "version", "missing: the policy file must start with version: 1")
	} else if f.Version.V != 1 {
		c.add(f.Version.Line, f.Version.Col, "version", "unsupported version %v (want 1)", f.Version.V)
	}
	p.defaultEffect = EffectDeny
	if f.Default.Set {
		switch f.Default.V {
		case EffectDeny, EffectApprove:
			p.defaultEffect = f.Default.V
		default:
			c.addAt(f.Default, "default", "want deny or approve, got %q", f.Default.V)
		}
	}
	if len(f.DefaultApprovers) > 0 {
		p.defaultApprovers = c.approvers(f.DefaultApprovers, "default_approvers")
	} else if p.defaultEffect == EffectApprove {
		p.defaultApprovers = []string{"owner"}
	}
	p.defaultReason = "no rule matched: default " + p.defaultEffect
	switch f.Mode.V {
	case "", ModeEnforce:
	case ModeShadow:
		p.shadow = true
	default:
		c.addAt(f.Mode, "mode", "want enforce or shadow, got %q", f.Mode.V)
	}

	// Lookups first: their ids are fields of the lookup variable.
	var lookupIDs []string
	seenLookup := map[string]bool{}
	for i, ls := range f.Lookups {
		where := fmt.Sprintf("lookups[%d]", i)
		l := &lookup{index: len(p.lookups), id: ls.ID.V, line: ls.Line, upstream: ls.Upstream.V, tool: ls.Tool.V,
			argsSrc: ls.Arguments, resultSrc: ls.Result, upstreamLine: ls.Upstream.Line}
		switch {
		case !ls.ID.Set || ls.ID.V == "":
			c.add(ls.Line, 0, where, "missing id")
		case !isIdent(ls.ID.V):
			c.addAt(ls.ID, where+".id", "%q is not a valid lookup id (letters, digits and _, not starting with a digit, so that rules can write lookup.%s)", ls.ID.V, ls.ID.V)
		case seenLookup[ls.ID.V]:
			c.addAt(ls.ID, where+".id", "duplicate lookup id %q", ls.ID.V)
		}
		seenLookup[ls.ID.V] = true
		if ls.ID.V != "" {
			where = fmt.Sprintf("lookup %q", ls.ID.V)
		}
		if ls.Upstream.V == "" {
			c.add(ls.Line, 0, where, "missing upstream")
		}
		if ls.Tool.V == "" {
			c.add(ls.Line, 0, where, "missing tool")
		}
		if !ls.Arguments.Set {
			c.add(ls.Line, 0, where, "missing arguments (a CEL map, e.g. '{\"id\": args.id}')")
		}
		if !ls.Result.Set {
			c.add(ls.Line, 0, where, "missing result (a CEL bool over result)")
		}
		if ls.TTL.Set {
			d, err := parseDuration(ls.TTL.V)
			if err != nil || d < 0 {
				c.addAt(ls.TTL, where+" ttl", "%v", errOr(err, "must not be negative"))
			}
			l.ttl = d
		}
		p.lookups = append(p.lookups, l)
		lookupIDs = append(lookupIDs, l.id)
	}

	if err := c.newEnvs(p, lookupIDs); err != nil {
		c.add(0, 0, "", "%v", err)
		return p
	}

	for i, ts := range f.Tools {
		p.tools = append(p.tools, c.tool(ts, i))
	}
	c.budgetIDs = map[string]bool{}
	for _, bs := range f.Budgets {
		if bs.ID.V != "" {
			c.budgetIDs[bs.ID.V] = true
		}
	}
	seenRule := map[string]bool{}
	for i, rs := range f.Rules {
		r := c.rule(rs, i, seenRule)
		r.index = len(p.rules)
		p.rules = append(p.rules, r)
	}
	seenBudget := map[string]bool{}
	for i, bs := range f.Budgets {
		b := c.budget(bs, i, seenBudget)
		b.index = len(p.budgets)
		p.budgets = append(p.budgets, b)
	}
	for _, l := range p.lookups {
		where := fmt.Sprintf("lookup %q", l.id)
		if l.argsSrc.Set {
			l.argsAST, l.args = c.expr(c.argsEnv, l.argsSrc, where+" arguments", wantMap)
		}
		if l.resultSrc.Set {
			l.resultAST, l.result = c.expr(c.resultEnv, l.resultSrc, where+" result", wantBool)
		}
	}
	if len(c.problems) > 0 {
		return p
	}
	c.buildIndex(p)
	p.states.New = func() any { return newEvalState(p) }
	return p
}

func errOr(err error, msg string) any {
	if err != nil {
		return err
	}
	return msg
}

// newEnvs declares the CEL variables.
func (c *compiler) newEnvs(p *Policy, lookupIDs []string) error {
	prov, err := newProvider(lookupIDs)
	if err != nil {
		return err
	}
	p.prov = prov
	obj := func(name string) *cel.Type { return prov.structs[name].typ }
	base, err := cel.NewEnv(
		cel.CustomTypeProvider(prov),
		cel.CrossTypeNumericComparisons(true),
		cel.DefaultUTCTimeZone(true),
		cel.Variable("args", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("tool", obj(typeTool)),
	)
	if err != nil {
		return fmt.Errorf("policy: CEL environment: %w", err)
	}
	c.amountEnv = base
	c.argsEnv, err = base.Extend(
		cel.Variable("agent", obj(typeAgent)),
		cel.Variable("owner", obj(typeOwner)),
		cel.Variable("call", obj(typeCall)),
		cel.Variable("context", obj(typeContext)),
		cel.Variable("budget", cel.MapType(cel.StringType, obj(typeBudget))),
	)
	if err != nil {
		return fmt.Errorf("policy: CEL environment: %w", err)
	}
	c.resultEnv, err = c.argsEnv.Extend(cel.Variable("result", cel.DynType))
	if err != nil {
		return fmt.Errorf("policy: CEL environment: %w", err)
	}
	c.env, err = c.argsEnv.Extend(cel.Variable("lookup", obj(typeLookups)))
	if err != nil {
		return fmt.Errorf("policy: CEL environment: %w", err)
	}
	return nil
}

// exprWant is the kind of value an expression must produce.
type exprWant int

const (
	wantBool exprWant = iota
	wantNumber
	wantMap
)

func (w exprWant) String() string {
	switch w {
	case wantBool:
		return "a bool"
	case wantNumber:
		return "a number"
	}
	return "a map"
}

// expr compiles one expression, reporting problems at its position in the
// file.
func (c *compiler) expr(env *cel.Env, s str, where string, want exprWant) (*cel.Ast, cel.Program) {
	if strings.TrimSpace(s.V) == "" {
		c.addAt(s, where, "empty expression")
		return nil, nil
	}
	if len(s.V) > maxExprLen {
		c.addAt(s, where, "expression longer than %d characters", maxExprLen)
		return nil, nil
	}
	a, iss := env.Compile(s.V)
	if iss != nil && iss.Err() != nil {
		for _, e := range iss.Errors() {
			if e.Location == nil || e.Location.Line() < 1 {
				c.addAt(s, where, "%s", e.Message)
				continue
			}
			line, col := exprPos(s, e.Location)
			c.add(line, col, where, "%s (expression line %d, column %d)", e.Message, e.Location.Line(), e.Location.Column()+1)
		}
		return nil, nil
	}
	out := a.OutputType()
	ok := out.IsExactType(types.DynType)
	switch want {
	case wantBool:
		ok = ok || out.IsExactType(types.BoolType)
	case wantNumber:
		ok = ok || out.IsExactType(types.DoubleType) || out.IsExactType(types.IntType) || out.IsExactType(types.UintType)
	case wantMap:
		ok = ok || out.Kind() == types.MapKind
	}
	if !ok {
		c.addAt(s, where, "the expression gives %s, want %s", out, want)
		return nil, nil
	}
	c.checkBudgetRefs(a, s, where)
	prg, err := env.Program(a, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		c.addAt(s, where, "%v", err)
		return nil, nil
	}
	return a, prg
}

// exprPos maps a position inside an expression to the file: exact for
// one-line plain and quoted scalars, the line for block scalars.
func exprPos(s str, loc common.Location) (line, col int) {
	if loc == nil || loc.Line() < 1 {
		return s.Line, s.Col
	}
	switch s.Style &^ (yaml.TaggedStyle | yaml.FlowStyle) {
	case 0, yaml.SingleQuotedStyle, yaml.DoubleQuotedStyle:
		if loc.Line() == 1 {
			off := 0
			if s.Style != 0 {
				off = 1
			}
			return s.Line, s.Col + off + loc.Column()
		}
		return s.Line + loc.Line() - 1, 0
	case yaml.LiteralStyle, yaml.FoldedStyle:
		return s.Line + loc.Line(), 0
	}
	return s.Line, s.Col
}

// checkBudgetRefs reports budget["x"] where x is no budget's id.
func (c *compiler) checkBudgetRefs(a *cel.Ast, s str, where string) {
	native := a.NativeRep()
	refs := native.ReferenceMap()
	celast.PreOrderVisit(native.Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() != celast.CallKind || e.AsCall().FunctionName() != "_[_]" {
			return
		}
		args := e.AsCall().Args()
		if len(args) != 2 || !isGlobalIdent(args[0], "budget", refs) || args[1].Kind() != celast.LiteralKind {
			return
		}
		key, ok := args[1].AsLiteral().Value().(string)
		if ok && !c.budgetIDs[key] {
			line, col := exprPos(s, native.SourceInfo().GetStartLocation(args[1].ID()))
			c.add(line, col, where, "no budget has id %q", key)
		}
	}))
}

func isGlobalIdent(e celast.Expr, name string, refs map[int64]*celast.ReferenceInfo) bool {
	if e.Kind() != celast.IdentKind || e.AsIdent() != name {
		return false
	}
	if r, ok := refs[e.ID()]; ok {
		return r.Name == name
	}
	return true
}

func (c *compiler) tool(ts toolSpec, i int) *toolOverride {
	where := fmt.Sprintf("tools[%d]", i)
	t := &toolOverride{index: i, line: ts.Line, match: ts.Match.V, class: ts.Class.V, action: ts.Action.V, risk: ts.Risk.V,
		amountSrc: ts.Amount, approvalMessage: ts.ApprovalMessage.V}
	if !ts.Match.Set || ts.Match.V == "" {
		c.add(ts.Line, 0, where, "missing match (a glob on \"upstream.tool\", e.g. \"acme.*\")")
	} else if _, err := path.Match(ts.Match.V, ""); err != nil {
		c.addAt(ts.Match, where+".match", "bad glob %q: %v", ts.Match.V, err)
	}
	if ts.Match.V != "" {
		where = fmt.Sprintf("tools[%d] (%s)", i, ts.Match.V)
	}
	if ts.Class.Set && ts.Class.V != catalog.ClassInformational && ts.Class.V != catalog.ClassTransactional {
		c.addAt(ts.Class, where+" class", "want informational or transactional, got %q", ts.Class.V)
	}
	if ts.Action.Set && !slices.Contains(catalog.Actions, ts.Action.V) {
		c.addAt(ts.Action, where+" action", "want one of %s, got %q", strings.Join(catalog.Actions, ", "), ts.Action.V)
	}
	if ts.Risk.Set && !slices.Contains(catalog.Risks, ts.Risk.V) {
		c.addAt(ts.Risk, where+" risk", "want one of %s, got %q", strings.Join(catalog.Risks, ", "), ts.Risk.V)
	}
	if ts.Amount.Set {
		t.amountAST, t.amount = c.expr(c.amountEnv, ts.Amount, where+" amount", wantNumber)
	}
	if ts.ApprovalMessage.Set {
		if _, err := ParseApprovalMessage(ts.ApprovalMessage.V); err != nil {
			c.addAt(ts.ApprovalMessage, where+" approval_message", "%v", err)
		}
	}
	if !ts.Class.Set && !ts.Action.Set && !ts.Risk.Set && !ts.Amount.Set && !ts.ApprovalMessage.Set {
		c.add(ts.Line, 0, where, "sets nothing: give at least one of class, action, risk, amount, approval_message")
	}
	return t
}

func (c *compiler) rule(rs ruleSpec, i int, seen map[string]bool) *rule {
	where := fmt.Sprintf("rules[%d]", i)
	r := &rule{id: rs.ID.V, line: rs.Line, when: rs.When, effect: rs.Effect.V, reason: rs.Reason.V}
	switch {
	case !rs.ID.Set || rs.ID.V == "":
		c.add(rs.Line, 0, where, "missing id")
	case !isID(rs.ID.V) || isReservedRuleID(rs.ID.V):
		c.addAt(rs.ID, where+".id", "%q is not a valid rule id (letters, digits, '_', '-', '.'; not default, classify, input, internal or budget:…)", rs.ID.V)
	case seen[rs.ID.V]:
		c.addAt(rs.ID, where+".id", "duplicate rule id %q", rs.ID.V)
	}
	seen[rs.ID.V] = true
	if rs.ID.V != "" {
		where = fmt.Sprintf("rule %q", rs.ID.V)
	}
	switch rs.Effect.V {
	case EffectAllow, EffectDeny, EffectApprove:
	case "":
		c.add(rs.Line, 0, where, "missing effect (allow, deny or approve)")
	default:
		c.addAt(rs.Effect, where+" effect", "want allow, deny or approve, got %q", rs.Effect.V)
	}
	switch rs.Mode.V {
	case "", ModeEnforce:
	case ModeShadow:
		r.shadow = true
	default:
		c.addAt(rs.Mode, where+" mode", "want enforce or shadow, got %q", rs.Mode.V)
	}
	if !rs.When.Set {
		c.add(rs.Line, 0, where, "missing when (a CEL condition)")
	} else {
		r.ast, r.prog = c.expr(c.env, rs.When, where+" when", wantBool)
		if r.ast != nil {
			r.guards, r.rest = ruleGuards(r.ast)
		}
	}
	r.req = c.requirement(rs.approvalSpec, rs.Effect.V, rs.Line, where)
	r.req.Rule = r.id
	if r.reason != "" {
		r.reasonText = r.id + ": " + r.reason
	} else {
		r.reasonText = r.id + ": condition matched"
	}
	cs := rs.Constraints
	if cs.Lifetime.Set || cs.Uses.Set || cs.MaxAmount.Set {
		if r.effect == EffectDeny {
			c.add(cs.Line, 0, where+" constraints", "a deny rule has no credential to constrain")
		}
	}
	if cs.Lifetime.Set {
		d, err := parseDuration(cs.Lifetime.V)
		if err != nil || d <= 0 {
			c.addAt(cs.Lifetime, where+" constraints.lifetime", "%v", errOr(err, "must be more than 0"))
		}
		r.lifetime = d
	}
	if cs.Uses.Set {
		if cs.Uses.V < 1 || cs.Uses.V > math.MaxInt32 {
			c.add(cs.Uses.Line, cs.Uses.Col, where+" constraints.uses", "must be at least 1")
		}
		r.uses = int(cs.Uses.V)
	}
	if cs.MaxAmount.Set {
		if cs.MaxAmount.V < 0 {
			c.add(cs.MaxAmount.Line, cs.MaxAmount.Col, where+" constraints.max_amount", "must not be negative")
		}
		v := cs.MaxAmount.V
		r.maxAmount = &v
	}
	return r
}

// requirement validates approvers, quorum and separation of duties for a
// rule or budget with the given effect.
func (c *compiler) requirement(a approvalSpec, effect string, line int, where string) Requirement {
	req := Requirement{Quorum: 1, SeparationOfDuties: a.SeparationOfDuties}
	if effect != EffectApprove {
		if len(a.Approvers) > 0 {
			c.add(a.ApproversLine, 0, where+" approvers", "approvers only apply to effect approve")
		}
		if a.Quorum.Set {
			c.add(a.Quorum.Line, a.Quorum.Col, where+" quorum", "quorum only applies to effect approve")
		}
		if a.SeparationOfDuties {
			c.add(a.SoDLine, 0, where+" separation_of_duties", "separation_of_duties only applies to effect approve")
		}
		return req
	}
	if len(a.Approvers) == 0 {
		c.add(line, 0, where, "effect approve needs approvers (owner, role:NAME or user:EMAIL)")
		return req
	}
	req.Approvers = c.approvers(a.Approvers, where+" approvers")
	if a.Quorum.Set {
		if a.Quorum.V < 1 || a.Quorum.V > 100 {
			c.add(a.Quorum.Line, a.Quorum.Col, where+" quorum", "must be from 1 to 100")
		} else {
			req.Quorum = int(a.Quorum.V)
		}
	}
	// Without roles the approvers are a fixed set of people.
	people, roles := 0, 0
	for _, ap := range req.Approvers {
		switch {
		case strings.HasPrefix(ap, "role:"):
			roles++
		case ap == "owner" && a.SeparationOfDuties:
		default:
			people++
		}
	}
	if a.SeparationOfDuties && len(req.Approvers) == 1 && req.Approvers[0] == "owner" {
		c.add(a.SoDLine, 0, where+" separation_of_duties", "the owner is the only approver, so separation of duties leaves nobody to approve")
	} else if roles == 0 && req.Quorum > people && people > 0 {
		c.add(a.Quorum.Line, a.Quorum.Col, where+" quorum", "quorum %d is more than the %d people who may approve", req.Quorum, people)
	}
	return req
}

func (c *compiler) approvers(list []str, where string) []string {
	var out []string
	for _, a := range list {
		v := a.V
		switch {
		case v == "owner":
		case strings.HasPrefix(v, "role:") && len(v) > len("role:") && !strings.ContainsAny(v, " \t"):
		case strings.HasPrefix(v, "user:") && strings.Contains(v[len("user:"):], "@") && !strings.ContainsAny(v, " \t"):
		default:
			c.addAt(a, where, "bad approver %q (want owner, role:NAME or user:EMAIL)", v)
			continue
		}
		if slices.Contains(out, v) {
			c.addAt(a, where, "approver %q listed twice", v)
			continue
		}
		out = append(out, v)
	}
	return out
}

func (c *compiler) budget(bs budgetSpec, i int, seen map[string]bool) *budget {
	where := fmt.Sprintf("budgets[%d]", i)
	b := &budget{id: bs.ID.V, ruleID: BudgetRulePrefix + bs.ID.V, line: bs.Line, per: bs.Per.V, reason: bs.Reason.V,
		whenSrc: bs.When, sumSrc: bs.Sum}
	switch {
	case !bs.ID.Set || bs.ID.V == "":
		c.add(bs.Line, 0, where, "missing id")
	case !isID(bs.ID.V):
		c.addAt(bs.ID, where+".id", "%q is not a valid budget id (letters, digits, '_', '-', '.')", bs.ID.V)
	case seen[bs.ID.V]:
		c.addAt(bs.ID, where+".id", "duplicate budget id %q", bs.ID.V)
	}
	seen[bs.ID.V] = true
	if bs.ID.V != "" {
		where = fmt.Sprintf("budget %q", bs.ID.V)
	}
	switch bs.Per.V {
	case PerAgent, PerOwner, PerDepartment, PerGlobal:
	case "":
		c.add(bs.Line, 0, where, "missing per (agent, owner, department or global)")
	default:
		c.addAt(bs.Per, where+" per", "want agent, owner, department or global, got %q", bs.Per.V)
	}
	b.keyPrefix = b.id + "/" + b.per + "/"
	if !bs.Window.Set {
		c.add(bs.Line, 0, where, "missing window (e.g. 24h)")
	} else {
		d, err := parseDuration(bs.Window.V)
		if err != nil || d <= 0 {
			c.addAt(bs.Window, where+" window", "%v", errOr(err, "must be more than 0"))
		}
		b.window = d
	}
	if !bs.Limit.Set {
		c.add(bs.Line, 0, where, "missing limit")
	} else if bs.Limit.V < 0 {
		c.add(bs.Limit.Line, bs.Limit.Col, where+" limit", "must not be negative")
	}
	b.limit = bs.Limit.V
	b.exceeded = EffectDeny
	switch bs.Exceeded.V {
	case "", EffectDeny:
	case EffectApprove:
		b.exceeded = EffectApprove
	default:
		c.addAt(bs.Exceeded, where+" exceeded", "want deny or approve, got %q", bs.Exceeded.V)
	}
	b.req = c.requirement(bs.approvalSpec, b.exceeded, bs.Line, where)
	b.req.Rule = b.ruleID
	if !bs.Sum.Set {
		c.add(bs.Line, 0, where, "missing sum (a CEL number, e.g. call.amount)")
	} else {
		b.sumAST, b.sum = c.expr(c.env, bs.Sum, where+" sum", wantNumber)
	}
	if bs.When.Set {
		b.whenAST, b.when = c.expr(c.env, bs.When, where+" when", wantBool)
	}
	return b
}

// resolvedTool is the merged effect of the tool overrides on one tool.
type resolvedTool struct {
	fullName            string
	class, action, risk string
	// sources of the set fields: "policy:<match>"
	sources         map[string]string
	amount          cel.Program
	amountSource    string
	approvalMessage string
	// fixed: class, action and risk are all set, so sources is the Call's
	// Source as is.
	fixed bool
}

const sourceUnclassified = "default:unclassified"

// toolKey identifies a tool without building its full name.
type toolKey struct{ upstream, name string }

// resolveTool merges the overrides whose glob matches upstream.name, later
// entries winning field by field.
func (p *Policy) resolveTool(upstream, name string) *resolvedTool {
	key := toolKey{upstream, name}
	if m := p.toolCache.Load(); m != nil {
		if rt, ok := (*m)[key]; ok {
			return rt
		}
	}
	full := upstream + "." + name
	rt := &resolvedTool{fullName: full, sources: map[string]string{}}
	for _, t := range p.tools {
		if ok, _ := path.Match(t.match, full); !ok {
			continue
		}
		src := "policy:" + t.match
		if t.class != "" {
			rt.class, rt.sources["class"] = t.class, src
		}
		if t.action != "" {
			rt.action, rt.sources["action"] = t.action, src
		}
		if t.risk != "" {
			rt.risk, rt.sources["risk"] = t.risk, src
		}
		if t.amount != nil {
			rt.amount, rt.amountSource = t.amount, src
		}
		if t.approvalMessage != "" {
			rt.approvalMessage = t.approvalMessage
		}
	}
	if rt.amount != nil {
		rt.sources["amount"] = rt.amountSource
	}
	rt.fixed = rt.class != "" && rt.action != "" && rt.risk != ""
	p.toolCacheMu.Lock()
	defer p.toolCacheMu.Unlock()
	var old map[toolKey]*resolvedTool
	if m := p.toolCache.Load(); m != nil {
		old = *m
	}
	if len(old) < maxToolCache {
		m := make(map[toolKey]*resolvedTool, len(old)+1)
		for k, v := range old {
			m[k] = v
		}
		m[key] = rt
		p.toolCache.Store(&m)
	}
	return rt
}

// background is the context lookups get when the Input has none.
func background(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}
