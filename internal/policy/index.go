package policy

import (
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
)

// Rule selection. Most rules start with conditions on plain attributes
// (call.action == "spend", tool.name == "place_order", agent.department in
// [...]). Such a top-level conjunct is a guard: when it is false the whole
// rule is false whatever else it says, because CEL's && gives false next to
// any false operand, errors included. Decide checks guards in Go, on
// strings, and runs only the rules whose guards hold. Rules are found
// through an index on one of their equality guards; rules without one run
// every time, together, as one program returning a list of bools.

// Guardable attributes.
const (
	attrToolName = iota
	attrAgentID
	attrOwnerEmail
	attrAgentDepartment
	attrToolUpstream
	attrCallAction
	attrCallRisk
	attrCallClass
	attrAgentState
	numAttrs
)

// attrOf maps variable.field to a guardable attribute; the order of the
// constants above is the order of preference for the index (most selective
// first).
func attrOf(variable, field string) (int, bool) {
	switch variable + "." + field {
	case "tool.name":
		return attrToolName, true
	case "agent.id":
		return attrAgentID, true
	case "owner.email":
		return attrOwnerEmail, true
	case "agent.department":
		return attrAgentDepartment, true
	case "tool.upstream":
		return attrToolUpstream, true
	case "call.action":
		return attrCallAction, true
	case "call.risk":
		return attrCallRisk, true
	case "call.class":
		return attrCallClass, true
	case "agent.state":
		return attrAgentState, true
	}
	return 0, false
}

// attrValue is an attribute's value for the decision in progress.
func (s *evalState) attrValue(a int) string {
	switch a {
	case attrToolName:
		return s.in.Tool.Name
	case attrAgentID:
		return s.in.Agent.ID
	case attrOwnerEmail:
		return s.in.Owner.Email
	case attrAgentDepartment:
		return s.in.Agent.Department
	case attrToolUpstream:
		return s.in.Tool.Upstream
	case attrCallAction:
		return s.call.Action
	case attrCallRisk:
		return s.call.Risk
	case attrCallClass:
		return s.call.Class
	case attrAgentState:
		return s.in.Agent.State
	}
	return ""
}

// guard is one top-level conjunct: attr == value (one value), attr in
// values, or attr != value (negate).
type guard struct {
	attr   int
	values []string
	negate bool
}

func (g guard) holds(v string) bool {
	return slices.Contains(g.values, v) != g.negate
}

// ruleGuards splits a rule's condition into guards and the other
// top-level conjuncts.
func ruleGuards(a *cel.Ast) (guards []guard, rest []celast.Expr) {
	native := a.NativeRep()
	refs := native.ReferenceMap()
	var conj []celast.Expr
	var flatten func(e celast.Expr)
	flatten = func(e celast.Expr) {
		if e.Kind() == celast.CallKind && e.AsCall().FunctionName() == "_&&_" {
			for _, arg := range e.AsCall().Args() {
				flatten(arg)
			}
			return
		}
		conj = append(conj, e)
	}
	flatten(native.Expr())
	attr := func(e celast.Expr) (int, bool) {
		if e.Kind() != celast.SelectKind || e.AsSelect().IsTestOnly() {
			return 0, false
		}
		sel := e.AsSelect()
		op := sel.Operand()
		if op.Kind() != celast.IdentKind || !isGlobalIdent(op, op.AsIdent(), refs) {
			return 0, false
		}
		return attrOf(op.AsIdent(), sel.FieldName())
	}
	strLit := func(e celast.Expr) (string, bool) {
		if e.Kind() != celast.LiteralKind {
			return "", false
		}
		s, ok := e.AsLiteral().(types.String)
		return string(s), ok
	}
	for _, e := range conj {
		if g, ok := asGuard(e, attr, strLit); ok {
			guards = append(guards, g)
		} else {
			rest = append(rest, e)
		}
	}
	return guards, rest
}

func asGuard(e celast.Expr, attr func(celast.Expr) (int, bool), strLit func(celast.Expr) (string, bool)) (guard, bool) {
	if e.Kind() != celast.CallKind {
		return guard{}, false
	}
	call := e.AsCall()
	args := call.Args()
	if len(args) != 2 {
		return guard{}, false
	}
	switch fn := call.FunctionName(); fn {
	case "_==_", "_!=_":
		l, r := args[0], args[1]
		if _, ok := attr(l); !ok {
			l, r = r, l
		}
		at, ok := attr(l)
		lit, isStr := strLit(r)
		if !ok || !isStr {
			return guard{}, false
		}
		return guard{attr: at, values: []string{lit}, negate: fn == "_!=_"}, true
	case "@in":
		at, ok := attr(args[0])
		if !ok || args[1].Kind() != celast.ListKind {
			return guard{}, false
		}
		var vals []string
		for _, el := range args[1].AsList().Elements() {
			lit, isStr := strLit(el)
			if !isStr {
				return guard{}, false
			}
			vals = append(vals, lit)
		}
		return guard{attr: at, values: vals}, true
	}
	return guard{}, false
}

// ruleIndex finds the rules that can match a call.
type ruleIndex struct {
	// always are the rules without an equality guard, in combined
	// programs.
	always []ruleChunk
	// by holds, per attribute, the rules indexed on it by value.
	by [numAttrs]map[string][]int
	// attrs lists the attributes that have an index.
	attrs []int
}

// ruleChunk is a few rules evaluated by one program giving a list of bools
// (prog nil: one by one).
type ruleChunk struct {
	rules []int
	prog  cel.Program
}

// buildIndex indexes every rule on its most selective equality guard.
func (c *compiler) buildIndex(p *Policy) {
	var always []int
	for _, r := range p.rules {
		best := -1
		for gi, g := range r.guards {
			if !g.negate && (best < 0 || g.attr < r.guards[best].attr) {
				best = gi
			}
		}
		if best < 0 {
			always = append(always, r.index)
			continue
		}
		r.residual = c.residual(r)
		g := r.guards[best]
		r.secondary = slices.Delete(slices.Clone(r.guards), best, best+1)
		m := p.index.by[g.attr]
		if m == nil {
			m = map[string][]int{}
			p.index.by[g.attr] = m
			p.index.attrs = append(p.index.attrs, g.attr)
		}
		for _, v := range g.values {
			if !slices.Contains(m[v], r.index) {
				m[v] = append(m[v], r.index)
			}
		}
	}
	slices.Sort(p.index.attrs)
	for len(always) > 0 {
		n, size := 0, 2
		for n < len(always) && n < maxChunkSize && size+len(p.rules[always[n]].when.V)+8 < maxChunkText {
			size += len(p.rules[always[n]].when.V) + 8
			n++
		}
		n = max(n, 1)
		p.index.always = append(p.index.always, c.chunk(p, always[:n]))
		always = always[n:]
	}
}

// residual compiles what is left of a rule once its guards hold; the
// rule's own program when that cannot be done.
func (c *compiler) residual(r *rule) cel.Program {
	if len(r.rest) == 0 {
		return nil
	}
	info := r.ast.NativeRep().SourceInfo()
	parts := make([]string, 0, len(r.rest))
	for _, e := range r.rest {
		txt, err := cel.ExprToString(e, info)
		if err != nil {
			return r.prog
		}
		parts = append(parts, "("+txt+")")
	}
	a, iss := c.env.Compile(strings.Join(parts, " && "))
	if iss != nil && iss.Err() != nil {
		return r.prog
	}
	prg, err := c.env.Program(a, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return r.prog
	}
	return prg
}

// chunk compiles rules into one program returning a list of bools; when
// that fails the chunk has no program and its rules run one by one.
func (c *compiler) chunk(p *Policy, idx []int) ruleChunk {
	ch := ruleChunk{rules: slices.Clone(idx)}
	if len(idx) == 1 {
		return ch
	}
	var b strings.Builder
	b.WriteString("[")
	for i, ri := range idx {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("(\n")
		b.WriteString(p.rules[ri].when.V)
		b.WriteString("\n)")
	}
	b.WriteString("]")
	a, iss := c.env.Compile(b.String())
	if iss != nil && iss.Err() != nil {
		return ch
	}
	prg, err := c.env.Program(a, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return ch
	}
	ch.prog = prg
	return ch
}

// evalRules fills s.ruleOut and s.ruleErr for the rules whose guards hold;
// the others stay outNone.
func (p *Policy) evalRules(s *evalState) {
	for a := range s.attrs {
		s.attrs[a] = s.attrValue(a)
	}
	for _, ch := range p.index.always {
		if ch.prog != nil {
			if out, _, err := ch.prog.Eval(s); err == nil && p.readChunk(s, ch, out) {
				continue
			}
		}
		// A rule failed (or the chunk has no program): find out which.
		for _, ri := range ch.rules {
			if s.ruleOut[ri] == outNone && p.rules[ri].guardsHold(s) {
				p.evalRule(s, ri, p.rules[ri].prog)
			}
		}
	}
	for _, a := range p.index.attrs {
		for _, ri := range p.index.by[a][s.attrs[a]] {
			if r := p.rules[ri]; s.ruleOut[ri] == outNone && holds(r.secondary, s) {
				p.evalRule(s, ri, r.residual)
			}
		}
	}
}

func (p *Policy) evalRule(s *evalState, ri int, prg cel.Program) {
	if prg == nil {
		s.setRule(ri, outMatch, nil)
		return
	}
	ok, err := evalBool(prg, s)
	switch {
	case err != nil:
		s.setRule(ri, outError, err)
	case ok:
		s.setRule(ri, outMatch, nil)
	default:
		s.setRule(ri, outFalse, nil)
	}
}

func (r *rule) guardsHold(s *evalState) bool { return holds(r.guards, s) }

func holds(guards []guard, s *evalState) bool {
	for _, g := range guards {
		if !g.holds(s.attrs[g.attr]) {
			return false
		}
	}
	return true
}

// readChunk records the list of bools a chunk gave; false when the list is
// not what it should be.
func (p *Policy) readChunk(s *evalState, ch ruleChunk, out ref.Val) bool {
	elems, ok := out.Value().([]ref.Val)
	if !ok || len(elems) != len(ch.rules) {
		return false
	}
	for i, v := range elems {
		b, ok := v.(types.Bool)
		if !ok {
			return false
		}
		if b {
			s.setRule(ch.rules[i], outMatch, nil)
		} else {
			s.setRule(ch.rules[i], outFalse, nil)
		}
	}
	return true
}
