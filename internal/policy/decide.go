package policy

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"reflect"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"

	"github.com/interlock-dev/interlock/internal/catalog"
)

// Rule outcomes within one decision.
const (
	outNone uint8 = iota // not evaluated
	outFalse
	outMatch
	outError
)

// evalState is one decision in progress; it is also the CEL activation.
// States are pooled per policy.
type evalState struct {
	p     *Policy
	in    *Input
	args  map[string]any
	call  Call
	views [numKinds]objVal
	cache [numSlots]ref.Val
	// cacheSet has a bit for every slot of cache in use.
	cacheSet uint32
	// attrs are the guardable attributes' values (index.go).
	attrs [numAttrs]string

	budgetVar any // lazily built value of the budget variable

	lookupDone []bool
	lookupVal  []ref.Val
	lookupErr  []error

	result any // the result variable while a lookup's result runs

	// ruleOut and ruleErr are the outcomes of the rules evaluated, whose
	// indexes are in touched.
	ruleOut []uint8
	ruleErr []error
	touched []int

	items []item
}

func newEvalState(p *Policy) *evalState {
	s := &evalState{
		p:          p,
		lookupDone: make([]bool, len(p.lookups)),
		lookupVal:  make([]ref.Val, len(p.lookups)),
		lookupErr:  make([]error, len(p.lookups)),
		ruleOut:    make([]uint8, len(p.rules)),
		ruleErr:    make([]error, len(p.rules)),
	}
	for k := range s.views {
		s.views[k] = objVal{kind: objKind(k), st: s}
	}
	return s
}

func (p *Policy) getState(in *Input) *evalState {
	s := p.states.Get().(*evalState)
	s.in = in
	s.args = in.Args
	return s
}

func (p *Policy) putState(s *evalState) {
	s.in, s.args, s.budgetVar, s.result = nil, nil, nil, nil
	s.call = Call{}
	for set := s.cacheSet; set != 0; set &= set - 1 {
		s.cache[bits.TrailingZeros32(set)] = nil
	}
	s.cacheSet = 0
	if len(s.lookupDone) > 0 {
		clear(s.lookupDone)
		clear(s.lookupVal)
		clear(s.lookupErr)
	}
	for _, ri := range s.touched {
		s.ruleOut[ri], s.ruleErr[ri] = outNone, nil
	}
	s.touched = s.touched[:0]
	s.items = s.items[:0]
	p.states.Put(s)
}

// setRule records a rule's outcome.
func (s *evalState) setRule(ri int, out uint8, err error) {
	if s.ruleOut[ri] == outNone {
		s.touched = append(s.touched, ri)
	}
	s.ruleOut[ri], s.ruleErr[ri] = out, err
}

// ResolveName implements interpreter.Activation.
func (s *evalState) ResolveName(name string) (any, bool) {
	switch name {
	case "args":
		if s.args == nil {
			return map[string]any{}, true
		}
		return s.args, true
	case "call":
		return &s.views[kindCall], true
	case "tool":
		return &s.views[kindTool], true
	case "owner":
		return &s.views[kindOwner], true
	case "agent":
		return &s.views[kindAgent], true
	case "context":
		return &s.views[kindContext], true
	case "lookup":
		return &s.views[kindLookups], true
	case "budget":
		if s.budgetVar == nil {
			s.budgetVar = s.budgetMap()
		}
		return s.budgetVar, true
	case "result":
		return s.result, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (s *evalState) Parent() interpreter.Activation { return nil }

// budgetMap is the value of the budget variable: every budget by id with
// the current total of its counter for this input.
func (s *evalState) budgetMap() map[string]any {
	m := make(map[string]any, len(s.p.budgets))
	typ := s.p.prov.structs[typeBudget].typ
	for _, b := range s.p.budgets {
		key, _ := b.key(s.in)
		m[b.id] = &budgetVal{total: s.in.Budgets[key], limit: b.limit, typ: typ}
	}
	return m
}

// key is the budget's counter key for an input; ok is false when the input
// lacks the scope value (no department, no owner email, no agent id).
func (b *budget) key(in *Input) (key string, ok bool) {
	var v string
	switch b.per {
	case PerAgent:
		v = in.Agent.ID
	case PerOwner:
		v = in.Owner.Email
		if v == "" {
			v = in.Agent.Owner
		}
	case PerDepartment:
		v = in.Agent.Department
	case PerGlobal:
		return b.keyPrefix, true
	}
	return b.keyPrefix + v, v != ""
}

// BudgetRefs returns the budgets whose scope applies to the input (those
// per department are left out when the agent has none, and so on), with
// the store key of each. Their current totals go in Input.Budgets.
func (p *Policy) BudgetRefs(in *Input) []BudgetRef {
	if in == nil {
		return nil
	}
	refs := make([]BudgetRef, 0, len(p.budgets))
	for _, b := range p.budgets {
		key, ok := b.key(in)
		if !ok {
			continue
		}
		refs = append(refs, BudgetRef{ID: b.id, Per: b.per, Key: key, Window: b.window, Limit: b.limit})
	}
	return refs
}

// lookup runs lookup i once per decision.
func (s *evalState) lookup(i int) (ref.Val, error) {
	if s.lookupDone[i] {
		return s.lookupVal[i], s.lookupErr[i]
	}
	s.lookupDone[i] = true
	v, err := s.runLookup(s.p.lookups[i])
	s.lookupVal[i], s.lookupErr[i] = v, err
	return v, err
}

func (s *evalState) runLookup(l *lookup) (ref.Val, error) {
	var raw any
	faked := false
	if s.in.lookupOutcomes != nil {
		v, ok := s.in.lookupOutcomes[l.id]
		if !ok {
			return nil, fmt.Errorf("lookup %s: the case gives no outcome for it", l.id)
		}
		switch v := v.(type) {
		case bool:
			return types.Bool(v), nil
		case error:
			return nil, fmt.Errorf("lookup %s: %w", l.id, v)
		}
		raw, faked = v, true
	}
	if !faked {
		if s.in.Lookup == nil {
			return nil, fmt.Errorf("lookup %s: no lookup function available", l.id)
		}
		out, _, err := l.args.Eval(s)
		if err != nil {
			return nil, fmt.Errorf("lookup %s: arguments: %w", l.id, err)
		}
		native, err := out.ConvertToNative(reflect.TypeFor[map[string]any]())
		if err != nil {
			return nil, fmt.Errorf("lookup %s: arguments: %w", l.id, err)
		}
		args, _ := native.(map[string]any)
		raw, err = s.in.Lookup(background(s.in.Ctx), LookupCall{ID: l.id, Upstream: l.upstream, Tool: l.tool, Arguments: args, TTL: l.ttl})
		if err != nil {
			return nil, fmt.Errorf("lookup %s: %w", l.id, err)
		}
	}
	prev := s.result
	s.result = raw
	out, _, err := l.result.Eval(s)
	s.result = prev
	if err != nil {
		return nil, fmt.Errorf("lookup %s: result: %w", l.id, err)
	}
	b, ok := out.(types.Bool)
	if !ok {
		return nil, fmt.Errorf("lookup %s: result gave %s, want bool", l.id, out.Type().TypeName())
	}
	return b, nil
}

// Classify gives a call its classification: for a tool the catalog never
// saw (known false), class transactional, action write and risk high;
// otherwise the catalog's hint; then the policy's tool overrides, field by
// field. The amount comes from the last matching override with an amount
// expression, evaluated over args. An error means the amount could not be
// computed; the Call still has the three dimensions.
func (p *Policy) Classify(t catalog.Tool, known bool, args map[string]any) (call Call, err error) {
	in := &Input{Tool: t, ToolKnown: known, Args: args}
	s := p.getState(in)
	defer p.putState(s)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("policy: classify %s: internal error: %v", t.FullName(), r)
		}
	}()
	return p.classify(s)
}

func (p *Policy) classify(s *evalState) (Call, error) {
	t := &s.in.Tool
	rt := p.resolveTool(t.Upstream, t.Name)
	var c Call
	if rt.fixed {
		c.Class, c.Action, c.Risk, c.Source = rt.class, rt.action, rt.risk, rt.sources
	} else {
		src := make(map[string]string, 4)
		hint := t.Hint
		if !s.in.ToolKnown {
			hint = catalog.Classification{}
		}
		pick := func(field, override, hinted string, valid bool, fallback string) string {
			switch {
			case override != "":
				src[field] = rt.sources[field]
				return override
			case hinted != "" && valid:
				if hs := hint.Source[field]; hs != "" {
					src[field] = hs
				} else {
					src[field] = "hint"
				}
				return hinted
			}
			src[field] = sourceUnclassified
			return fallback
		}
		c.Class = pick("class", rt.class, hint.Class, hint.Class == catalog.ClassInformational || hint.Class == catalog.ClassTransactional, catalog.ClassTransactional)
		c.Action = pick("action", rt.action, hint.Action, slices.Contains(catalog.Actions, hint.Action), catalog.ActionWrite)
		c.Risk = pick("risk", rt.risk, hint.Risk, slices.Contains(catalog.Risks, hint.Risk), "high")
		if rt.amount != nil {
			src["amount"] = rt.amountSource
		}
		c.Source = src
	}
	var err error
	if rt.amount != nil {
		c.Amount, err = evalNumber(rt.amount, s)
		if err != nil {
			err = fmt.Errorf("amount of %s (%s): %w", rt.fullName, rt.amountSource, err)
		} else {
			c.HasAmount = true
		}
	}
	c.RiskScore = RiskScore(c.Class, c.Action, c.Risk, c.Amount, c.HasAmount)
	return c, err
}

// evalNumber evaluates a number expression: finite and not negative.
func evalNumber(prg cel.Program, s *evalState) (float64, error) {
	out, _, err := prg.Eval(s)
	if err != nil {
		return 0, err
	}
	var v float64
	switch n := out.(type) {
	case types.Double:
		v = float64(n)
	case types.Int:
		v = float64(n)
	case types.Uint:
		v = float64(n)
	default:
		return 0, fmt.Errorf("gave %s, want a number", out.Type().TypeName())
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("gave %v, want a finite number", v)
	}
	if v < 0 {
		return 0, fmt.Errorf("gave %v, want a number not below 0", v)
	}
	return v, nil
}

func evalBool(prg cel.Program, s *evalState) (bool, error) {
	out, _, err := prg.Eval(s)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("gave %s, want bool", out.Type().TypeName())
	}
	return bool(b), nil
}

// RiskScore is the risk score 0–100 of a classification (docs/policy.md):
// a base by data-source risk (low 10, medium 30, high 60, critical 85),
// plus the action scope (read 0, write 10, spend 15, personal-data 15,
// infrastructure 15, admin 20), plus 5 for a transactional call, plus
// floor(2·log10(1+amount)) up to 10 when there is an amount; capped at 100.
// Unknown values count as high risk and admin action.
func RiskScore(class, action, risk string, amount float64, hasAmount bool) int {
	score := 0
	switch risk {
	case "low":
		score = 10
	case "medium":
		score = 30
	case "critical":
		score = 85
	default:
		score = 60
	}
	switch action {
	case catalog.ActionRead:
	case catalog.ActionWrite:
		score += 10
	case catalog.ActionSpend, catalog.ActionPersonalData, catalog.ActionInfrastructure:
		score += 15
	default:
		score += 20
	}
	if class != catalog.ClassInformational {
		score += 5
	}
	if hasAmount && amount > 0 {
		score += min(10, int(math.Floor(2*math.Log10(1+amount))))
	}
	return min(score, 100)
}

// item is a rule or budget that took part in a decision.
type item struct {
	id     string
	effect string
	shadow bool
	out    uint8
	err    error
	rule   *rule   // nil for a budget
	budget *budget // nil for a rule
	reason string
}

// outcome is the decision over a set of items.
type outcome struct {
	effect string
	rule   string
	at     int // index of the deciding item; -1 for the default
	errors bool
}

func restrictiveness(effect string) int {
	switch effect {
	case EffectDeny:
		return 3
	case EffectApprove:
		return 2
	case EffectAllow:
		return 1
	}
	return 0
}

// decide computes the outcome over items, including shadow items or not.
func (p *Policy) decide(items []item, withShadow bool) outcome {
	o := outcome{at: -1}
	for i := range items {
		it := &items[i]
		if it.shadow && !withShadow || it.out != outError {
			continue
		}
		return outcome{effect: EffectDeny, rule: it.id, at: i, errors: true}
	}
	best := 0
	for i := range items {
		it := &items[i]
		if it.shadow && !withShadow || it.out != outMatch {
			continue
		}
		if r := restrictiveness(it.effect); r > best {
			best, o.effect, o.rule, o.at = r, it.effect, it.id, i
		}
	}
	if o.at < 0 {
		o.effect, o.rule = p.defaultEffect, RuleDefault
	}
	return o
}

// Decide decides one call. It is pure (lookups go through in.Lookup),
// never panics, and denies on any evaluation error or missing attribute,
// with the error in Reasons and Errors.
func (p *Policy) Decide(in *Input) (d Decision) {
	d.PolicyHash = p.hash
	if in == nil {
		return denyWith(d, RuleInput, errors.New("no input"))
	}
	s := p.getState(in)
	d.Tool = p.resolveTool(in.Tool.Upstream, in.Tool.Name).fullName
	defer func() {
		if r := recover(); r != nil {
			d = denyWith(Decision{PolicyHash: p.hash, Tool: d.Tool, Call: d.Call}, RuleInternal, fmt.Errorf("internal error: %v", r))
		}
		p.putState(s)
	}()
	call, err := p.classify(s)
	d.Call = call
	if err != nil {
		return denyWith(d, RuleClassify, err)
	}
	s.call = call
	p.evalRules(s)

	// Items: matching or failing rules in file order, then budgets.
	slices.Sort(s.touched)
	items := s.items[:0]
	for _, i := range s.touched {
		if out := s.ruleOut[i]; out == outMatch || out == outError {
			r := p.rules[i]
			items = append(items, item{id: r.id, effect: r.effect, shadow: r.shadow, out: out, err: s.ruleErr[i], rule: r, reason: r.reasonText})
		}
	}
	if len(p.budgets) > 0 {
		items = p.evalBudgets(s, &d, items)
	}
	s.items = items

	enforced := p.decide(items, false)
	all := p.decide(items, true)

	nMatched := 0
	for i := range items {
		if items[i].out == outMatch {
			nMatched++
		}
	}
	if nMatched > 0 {
		d.Matched = make([]Match, 0, nMatched)
		for i := range items {
			it := &items[i]
			if it.out == outMatch {
				d.Matched = append(d.Matched, Match{ID: it.id, Effect: it.effect, Shadow: it.shadow, Reason: it.reason})
			}
		}
	}
	for i := range items {
		it := &items[i]
		if it.out == outError {
			prefix := "rule "
			if it.budget != nil {
				prefix = ""
			}
			if it.shadow {
				prefix = "shadow " + prefix
			}
			d.Errors = append(d.Errors, prefix+it.id+": "+it.err.Error())
		}
	}

	decider := enforced
	if p.shadow {
		d.Effect, d.Rule = EffectAllow, RuleShadowMode
		if all.effect != EffectAllow {
			d.ShadowEffect, d.ShadowRule = all.effect, all.rule
		}
		d.Reasons = append(d.Reasons, "policy in shadow mode: would "+all.effect+" by "+all.rule)
		p.reasons(&d, items, all, true)
		decider = outcome{effect: EffectAllow, at: -1}
	} else {
		d.Effect, d.Rule = enforced.effect, enforced.rule
		if all.effect != enforced.effect {
			d.ShadowEffect, d.ShadowRule = all.effect, all.rule
		}
		p.reasons(&d, items, enforced, false)
		if d.ShadowEffect != "" {
			d.Reasons = append(d.Reasons, "shadow: would "+all.effect+" by "+all.rule)
		}
	}
	p.requirements(&d, items, decider)
	return d
}

// reasons explains an outcome.
func (p *Policy) reasons(d *Decision, items []item, o outcome, withShadow bool) {
	switch {
	case o.errors:
		for i := range items {
			it := &items[i]
			if it.out == outError && (withShadow || !it.shadow) {
				d.Reasons = append(d.Reasons, it.id+": evaluation failed, so the call is denied: "+it.err.Error())
			}
		}
	case o.at < 0:
		d.Reasons = append(d.Reasons, p.defaultReason)
	default:
		for i := range items {
			it := &items[i]
			if it.out == outMatch && it.effect == o.effect && (withShadow || !it.shadow) {
				d.Reasons = append(d.Reasons, it.reason)
			}
		}
	}
}

// requirements fills approvers and constraints for the enforced outcome.
func (p *Policy) requirements(d *Decision, items []item, o outcome) {
	switch o.effect {
	case EffectApprove:
		if o.at < 0 {
			req := Requirement{Rule: RuleDefault, Approvers: p.defaultApprovers, Quorum: 1}
			d.Requirements = []Requirement{req}
		} else {
			for i := range items {
				it := &items[i]
				if it.out != outMatch || it.shadow || it.effect != EffectApprove {
					continue
				}
				if it.rule != nil {
					d.Requirements = append(d.Requirements, it.rule.req)
				} else {
					d.Requirements = append(d.Requirements, it.budget.req)
				}
			}
		}
		for _, r := range d.Requirements {
			if d.Approvers == nil {
				d.Approvers = r.Approvers
			} else {
				for _, a := range r.Approvers {
					if !slices.Contains(d.Approvers, a) {
						d.Approvers = append(slices.Clip(d.Approvers), a)
					}
				}
			}
			d.Quorum = max(d.Quorum, r.Quorum)
			d.SeparationOfDuties = d.SeparationOfDuties || r.SeparationOfDuties
		}
		fallthrough
	case EffectAllow:
		// The tightest constraint any deciding rule sets; defaults for the
		// rest.
		var c Constraints
		for i := range items {
			it := &items[i]
			if it.out != outMatch || it.shadow || it.rule == nil || it.effect != o.effect {
				continue
			}
			r := it.rule
			if r.lifetime > 0 && (c.Lifetime == 0 || r.lifetime < c.Lifetime) {
				c.Lifetime = r.lifetime
			}
			if r.uses > 0 && (c.Uses == 0 || r.uses < c.Uses) {
				c.Uses = r.uses
			}
			if r.maxAmount != nil && (c.MaxAmount == nil || *r.maxAmount < *c.MaxAmount) {
				c.MaxAmount = r.maxAmount
			}
		}
		if c.Lifetime == 0 {
			c.Lifetime = DefaultLifetime
		}
		if c.Uses == 0 {
			c.Uses = DefaultUses
		}
		d.Constraints = c
	}
}

// evalBudgets evaluates every budget: those whose when holds are charged,
// and act as matching rules when the charge would exceed the limit.
func (p *Policy) evalBudgets(s *evalState, d *Decision, items []item) []item {
	for _, b := range p.budgets {
		it := item{id: b.ruleID, effect: b.exceeded, budget: b}
		fail := func(err error) {
			it.out, it.err = outError, err
			items = append(items, it)
		}
		if b.when != nil {
			ok, err := evalBool(b.when, s)
			if err != nil {
				fail(fmt.Errorf("when: %w", err))
				continue
			}
			if !ok {
				continue
			}
		}
		key, ok := b.key(s.in)
		if !ok {
			fail(fmt.Errorf("the call has no %s to count it against", b.per))
			continue
		}
		amount, err := evalNumber(b.sum, s)
		if err != nil {
			fail(fmt.Errorf("sum: %w", err))
			continue
		}
		total := s.in.Budgets[key]
		ch := Charge{BudgetID: b.id, Key: key, Amount: amount, Total: total, Limit: b.limit, Window: b.window, Exceeded: total+amount > b.limit}
		d.Charges = append(d.Charges, ch)
		if ch.Exceeded {
			it.out = outMatch
			it.reason = budgetReason(b, ch)
			items = append(items, it)
		}
	}
	return items
}

func budgetReason(b *budget, ch Charge) string {
	var sb strings.Builder
	sb.WriteString(b.ruleID)
	sb.WriteString(": ")
	if b.reason != "" {
		sb.WriteString(b.reason)
		sb.WriteString(" (")
	}
	fmt.Fprintf(&sb, "%s + %s would exceed the limit of %s per %s", fmtAmount(ch.Total), fmtAmount(ch.Amount), fmtAmount(ch.Limit), fmtWindow(b.window))
	if b.reason != "" {
		sb.WriteString(")")
	}
	return sb.String()
}

// denyWith turns d into a denial caused by err.
func denyWith(d Decision, rule string, err error) Decision {
	d.Effect = EffectDeny
	d.Rule = rule
	d.Errors = append(d.Errors, rule+": "+err.Error())
	d.Reasons = append(d.Reasons, rule+": evaluation failed, so the call is denied: "+err.Error())
	return d
}
