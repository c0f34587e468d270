package policy

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"sort"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"

	"github.com/interlock-dev/interlock/internal/catalog"
)

// Lint checks the policy against the tools the catalog discovered: an
// argument (args.X) that a rule or expression reads and no tool's
// inputSchema has (for a tool override's amount: none of the tools it
// matches), a tool glob that matches no tool, a lookup naming an unknown
// upstream or tool, and lookup arguments the lookup's tool does not take.
// Problems are in file order.
func (p *Policy) Lint(tools []catalog.Tool) []Problem {
	l := linter{p: p, props: map[string]map[string]bool{}}
	l.allProps = map[string]bool{}
	for _, t := range tools {
		props, ok := schemaProperties(t.InputSchema)
		if !ok {
			l.anyArgs = true
		}
		l.props[t.FullName()] = props
		for k := range props {
			l.allProps[k] = true
		}
	}
	names := make([]string, 0, len(tools))
	for _, t := range tools {
		names = append(names, t.FullName())
	}
	sort.Strings(names)

	for _, t := range p.tools {
		where := fmt.Sprintf("tools[%d] (%s)", t.index, t.match)
		var matched []string
		for _, n := range names {
			if ok, _ := path.Match(t.match, n); ok {
				matched = append(matched, n)
			}
		}
		if len(matched) == 0 {
			l.add(t.line, 0, where, fmt.Sprintf("the glob %q matches no discovered tool", t.match))
			continue
		}
		if t.amountAST != nil {
			l.checkArgs(t.amountAST, t.amountSrc, where+" amount", matched)
		}
	}
	for _, r := range p.rules {
		l.checkArgs(r.ast, r.when, fmt.Sprintf("rule %q when", r.id), nil)
	}
	for _, b := range p.budgets {
		where := fmt.Sprintf("budget %q", b.id)
		if b.whenAST != nil {
			l.checkArgs(b.whenAST, b.whenSrc, where+" when", nil)
		}
		l.checkArgs(b.sumAST, b.sumSrc, where+" sum", nil)
	}
	for _, lk := range p.lookups {
		where := fmt.Sprintf("lookup %q", lk.id)
		l.checkArgs(lk.argsAST, lk.argsSrc, where+" arguments", nil)
		l.checkArgs(lk.resultAST, lk.resultSrc, where+" result", nil)
		full := lk.upstream + "." + lk.tool
		if _, ok := l.props[full]; !ok {
			known := false
			for _, t := range tools {
				if t.Upstream == lk.upstream {
					known = true
					break
				}
			}
			if !known {
				l.add(lk.upstreamLine, 0, where, fmt.Sprintf("no discovered tool comes from upstream %q", lk.upstream))
			} else {
				l.add(lk.line, 0, where, fmt.Sprintf("upstream %q has no tool %q", lk.upstream, lk.tool))
			}
			continue
		}
		l.checkLookupArgs(lk, full)
	}
	sortProblems(l.problems)
	return l.problems
}

type linter struct {
	p        *Policy
	props    map[string]map[string]bool // by tool full name
	allProps map[string]bool
	anyArgs  bool // some tool's schema could not be read: it may take anything
	problems []Problem
}

func (l *linter) add(line, col int, where, msg string) {
	l.problems = append(l.problems, Problem{File: l.p.name, Line: line, Column: col, Where: where, Message: msg})
}

// schemaProperties returns the property names of a JSON Schema object; ok
// is false when the schema cannot be read.
func schemaProperties(raw json.RawMessage) (map[string]bool, bool) {
	props := map[string]bool{}
	if len(raw) == 0 {
		return props, true
	}
	var s struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, false
	}
	for k := range s.Properties {
		props[k] = true
	}
	return props, true
}

// argRef is one args.X (or args["X"]) in an expression.
type argRef struct {
	name string
	id   int64
}

func argRefs(a *cel.Ast) []argRef {
	if a == nil {
		return nil
	}
	native := a.NativeRep()
	refs := native.ReferenceMap()
	var out []argRef
	celast.PreOrderVisit(native.Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		switch e.Kind() {
		case celast.SelectKind:
			sel := e.AsSelect()
			if isGlobalIdent(sel.Operand(), "args", refs) {
				out = append(out, argRef{name: sel.FieldName(), id: sel.Operand().ID()})
			}
		case celast.CallKind:
			call := e.AsCall()
			args := call.Args()
			if call.FunctionName() == "_[_]" && len(args) == 2 && isGlobalIdent(args[0], "args", refs) && args[1].Kind() == celast.LiteralKind {
				if s, ok := args[1].AsLiteral().Value().(string); ok {
					out = append(out, argRef{name: s, id: args[0].ID()})
				}
			}
		}
	}))
	return out
}

// checkArgs reports arguments no tool has; tools restricts the check to
// those tools (nil: any discovered tool).
func (l *linter) checkArgs(a *cel.Ast, s str, where string, tools []string) {
	if a == nil || (l.anyArgs && tools == nil) {
		return
	}
	seen := map[string]bool{}
	for _, r := range argRefs(a) {
		if seen[r.name] {
			continue
		}
		seen[r.name] = true
		known := false
		if tools == nil {
			known = l.allProps[r.name]
		} else {
			for _, t := range tools {
				props := l.props[t]
				if props == nil || props[r.name] {
					known = true
					break
				}
			}
		}
		if known {
			continue
		}
		line, col := exprPos(s, a.NativeRep().SourceInfo().GetStartLocation(r.id))
		msg := fmt.Sprintf("reads args.%s, which no discovered tool takes", r.name)
		if tools != nil {
			msg = fmt.Sprintf("reads args.%s, which none of %s takes", r.name, listNames(tools))
		}
		l.add(line, col, where, msg)
	}
}

func listNames(names []string) string {
	if len(names) > 3 {
		return fmt.Sprintf("%s, %s, %s and %d more", names[0], names[1], names[2], len(names)-3)
	}
	out := ""
	for i, n := range names {
		switch {
		case i == 0:
		case i == len(names)-1:
			out += " or "
		default:
			out += ", "
		}
		out += n
	}
	return out
}

// checkLookupArgs reports keys of a map-literal arguments expression that
// the lookup's tool does not take.
func (l *linter) checkLookupArgs(lk *lookup, full string) {
	props := l.props[full]
	if props == nil || lk.argsAST == nil {
		return
	}
	native := lk.argsAST.NativeRep()
	e := native.Expr()
	if e.Kind() != celast.MapKind {
		return
	}
	var bad []string
	for _, ent := range e.AsMap().Entries() {
		if ent.Kind() != celast.MapEntryKind {
			continue
		}
		k := ent.AsMapEntry().Key()
		if k.Kind() != celast.LiteralKind {
			continue
		}
		if s, ok := k.AsLiteral().Value().(string); ok && !props[s] {
			bad = append(bad, s)
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		l.add(lk.argsSrc.Line, lk.argsSrc.Col, fmt.Sprintf("lookup %q arguments", lk.id),
			fmt.Sprintf("%s does not take %v", full, bad))
	}
}
