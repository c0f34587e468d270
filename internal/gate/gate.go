// Package gate decides whether one gated call may go on, at the moment it
// is made: the ghost-agent check (an agent that is not active, or whose
// owner is not, is refused whatever the policy says), then classification
// and the policy's decision (with budgets charged atomically in the store
// and lookups run through the catalog, cached and failing closed), and
// every decision is committed to the audit log before the call goes on.
// When the relay reports how a forwarded call ended, the gate records that
// too.
//
// It must not decide by itself (the policy decides, the gate enforces) and
// knows of the MCP wire format only the params of the call it is handed
// (arguments and the agent's stated intent).
package gate

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/interlock-dev/interlock/canon"
	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/catalog"
	"github.com/interlock-dev/interlock/internal/credential"
	"github.com/interlock-dev/interlock/internal/policy"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/relay"
	"github.com/interlock-dev/interlock/internal/store"
)

// Catalog is what the gate needs of the tool catalog.
type Catalog interface {
	Lookup(upstream, name string) (catalog.Tool, bool)
	CallTool(ctx context.Context, upstream, name string, args, meta map[string]any) (map[string]any, bool, error)
}

// Auditor appends to the audit log. Append returns once the event is
// committed; Defer queues an event to be committed with the next
// transaction (soon, but nothing waits for it).
type Auditor interface {
	Append(ctx context.Context, ev audit.Event) (int64, error)
	Defer(ev audit.Event) error
}

// Budgets is the budget part of the store.
type Budgets interface {
	ChargeBudget(ctx context.Context, e store.BudgetEntry, since time.Time, limit float64) (float64, bool, error)
	BudgetTotals(ctx context.Context, keys []string, since time.Time) (map[string]float64, error)
}

// Credentials issues and checks action credentials (credential.Issuer).
// The gate records the credential of a call it forwards right away with
// the call's decision (Prepare, then the record rides on the decision's
// audit event, then Sign), so the issuer's store must be the audit log's.
type Credentials interface {
	Issue(ctx context.Context, a credential.Action) (string, store.Credential, error)
	Prepare(ctx context.Context, a credential.Action) (*credential.Prepared, error)
	Verify(ctx context.Context, token string, now time.Time) (*credential.Claims, error)
	Consume(ctx context.Context, id string) (store.Credential, error)
}

// Approvals is the approval engine (approval.Service).
type Approvals interface {
	Open(ctx context.Context, r approval.Request) (store.Approval, bool, error)
	Wait(ctx context.Context, id string) (store.Approval, error)
	Cancel(ctx context.Context, id, reason string) (store.Approval, error)
	Approved(ctx context.Context, agentID, upstream, tool, argsDigest string) ([]store.Approval, error)
	Link(id string) string
}

// DefaultHold is how long a call waits for approval by default.
const DefaultHold = 120 * time.Second

// progressEvery is how often a held call tells the agent it still waits.
const progressEvery = 10 * time.Second

// Options configure a Gate. Policy, Audit and Budgets are required;
// Catalog may be nil (every tool is then unknown and lookups fail closed).
type Options struct {
	Policy  func() *policy.Policy // the policy in force (hot reload swaps it)
	Catalog Catalog
	Audit   Auditor
	Budgets Budgets
	// Credentials, when set, issues a credential for every allowed call
	// (the relay forwards the call with it and hands it back as a receipt)
	// and accepts calls that present one instead of asking the policy.
	// Without it calls go on without credentials (tests of the gate alone).
	Credentials Credentials
	// Approvals, when set (with Credentials), makes an "approve" decision
	// hold the call while the required humans are asked, and forward it
	// with a credential naming them once they approve. Without it such
	// calls are refused.
	Approvals Approvals
	// Users looks up approvers named by a CIBA login hint (Authorize);
	// nil: only "owner" and "user:" terms can match a hint.
	Users interface {
		GetUserByEmail(ctx context.Context, email string) (store.User, error)
	}
	// Hold is the longest a call is held waiting for approval (default
	// DefaultHold); past it the agent is told the approval is still
	// pending and that calling again with the same arguments joins it.
	Hold time.Duration
	// Redact names arguments whose values are replaced in audit events.
	Redact []string
	Logger *slog.Logger
	Now    func() time.Time
}

// Gate implements relay.Gate.
type Gate struct {
	opts   Options
	log    *slog.Logger
	redact map[string]bool

	lmu     sync.Mutex
	lookups map[string]lookupEntry // lookup cache
}

type lookupEntry struct {
	result  any
	expires time.Time
}

const maxLookupEntries = 10_000

// New returns a Gate.
func New(opts Options) (*Gate, error) {
	if opts.Policy == nil || opts.Audit == nil || opts.Budgets == nil {
		return nil, errors.New("gate: Policy, Audit and Budgets are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Hold <= 0 {
		opts.Hold = DefaultHold
	}
	g := &Gate{opts: opts, log: opts.Logger, redact: map[string]bool{}, lookups: map[string]lookupEntry{}}
	for _, r := range opts.Redact {
		g.redact[strings.ToLower(r)] = true
	}
	return g, nil
}

// Check decides one call and records the decision before answering.
func (g *Gate) Check(ctx context.Context, c *relay.Call) (*relay.Verdict, error) {
	if c == nil || c.Principal == nil {
		return nil, errors.New("gate: call without a principal")
	}
	dc, err := g.begin(ctx, c, true)
	if err != nil {
		return nil, err
	}
	p, callID, args, d, token := c.Principal, dc.rec.DecisionID, dc.args, dc.d, dc.token
	rec := &dc.rec
	decision := map[string]any{"id": callID, "effect": d.Effect, "rule": d.Rule}
	meta := map[string]any{"io.interlock/decision": decision}
	switch d.Effect {
	case "allow":
		fwd := map[string]any{"decision_id": callID, "upstream": c.Upstream, "tool": c.Name}
		v := &relay.Verdict{Done: func(o relay.Outcome) { g.recordOutcome(callID, p.Agent.ID, o) }}
		if rec.Credential != nil {
			fwd["credential_id"] = rec.Credential.ID
			decision["credential_id"] = rec.Credential.ID
			v.Credential, v.Receipt = token, meta
			meta[relay.MetaCredential] = token
		}
		g.appendAsync(audit.Event{Type: "forwarded", CallID: callID, AgentID: p.Agent.ID, Data: fwd})
		return v, nil
	case "approve":
		if g.opts.Approvals != nil && g.opts.Credentials != nil {
			return g.hold(ctx, c, p, args, d, rec, meta)
		}
		return &relay.Verdict{Deny: &relay.Denial{Meta: meta, Reason: fmt.Sprintf(
			"interlock refused this call: it needs approval by %s (rule %q: %s). Interlock cannot ask for approvals yet, so the call was not made. Decision id %s.",
			approversText(d), d.Rule, reasonText(d), callID)}}, nil
	default:
		return &relay.Verdict{Deny: &relay.Denial{Meta: meta, Reason: fmt.Sprintf(
			"interlock refused this call (rule %q): %s. Decision id %s.", d.Rule, reasonText(d), callID)}}, nil
	}
}

// decided is a decision taken and recorded.
type decided struct {
	rec   decisionRecord
	d     policy.Decision
	token string // the credential of an allowed call
	args  map[string]any
}

// begin decides call c and commits the decision record: the kill switch,
// the arguments, a presented credential or the policy (with budgets), and
// for an allowed call its credential (recorded as used once when
// consumeNow: the call is forwarded right away).
func (g *Gate) begin(ctx context.Context, c *relay.Call, consumeNow bool) (*decided, error) {
	start := g.opts.Now()
	p := c.Principal
	callID := newID()
	args, canonArgs, intent, presented, argsErr := arguments(c.Params)

	rec := decisionRecord{
		DecisionID: callID,
		Agent:      agentInfo(p),
		Owner:      ownerInfo(p),
		Tool:       toolRef{Upstream: c.Upstream, Name: c.Name, Method: c.Method},
		Transport:  c.Transport,
		Session:    c.Session,
		ClientIP:   c.ClientIP,
		Intent:     intent,
		Time:       start.UTC().Truncate(time.Microsecond),
	}
	if argsErr == nil {
		sum := sha256.Sum256(canonArgs)
		rec.ArgsDigest = hex.EncodeToString(sum[:])
		rec.Args = g.redactValue(args)
	}

	var (
		d        policy.Decision
		token    string               // the credential the call goes with
		prepared *credential.Prepared // its record, committed with the decision, then signed
	)
	switch inactive := Inactive(p); {
	case inactive != "":
		d = policy.Decision{Effect: "deny", Rule: "kill-switch", Reasons: []string{inactive}}
	case !registry.AllowsUpstream(p.Agent, c.Upstream):
		d = policy.Decision{Effect: "deny", Rule: RuleUpstreamNotAllowed, Reasons: []string{UpstreamNotAllowed(&p.Agent, c.Upstream)}}
	case argsErr != nil:
		d = policy.Decision{Effect: "deny", Rule: "bad-arguments", Reasons: []string{"the call's arguments are not a JSON object: " + argsErr.Error()}}
	case presented != nil:
		d, token = g.presented(ctx, c, p, presented, &rec)
	default:
		var err error
		d, err = g.decide(ctx, c, p, args, start, &rec)
		if err != nil {
			d = policy.Decision{Effect: "deny", Rule: "error", Reasons: []string{"interlock could not decide this call: " + err.Error()}, Errors: []string{err.Error()}}
		}
		if d.Effect == "allow" && g.opts.Credentials != nil {
			if token, prepared, err = g.issue(ctx, c, p, args, d, &rec, consumeNow); err != nil {
				g.refund(rec.charged, start, callID)
				rec.charged = nil
				d = policy.Decision{Effect: "deny", Rule: "error", Reasons: []string{"interlock could not issue the call's credential"}, Errors: []string{err.Error()}}
			}
		}
	}
	rec.fill(d)
	rec.LatencyMicros = g.opts.Now().Sub(start).Microseconds()
	ev := audit.Event{Type: "decision", CallID: callID, AgentID: p.Agent.ID, Time: start, Data: rec}
	if prepared != nil {
		// The credential's record is committed with the decision, in its
		// transaction (one store write for both).
		ev.Credential = prepared.Record()
	}
	if _, err := g.opts.Audit.Append(ctx, ev); err != nil {
		// No committed decision record, no call (fail closed), and no charge.
		// A credential issued for it never leaves interlock.
		g.refund(rec.charged, start, callID)
		return nil, fmt.Errorf("recording the decision: %w", err)
	}
	if prepared != nil {
		var err error
		if token, _, err = prepared.Sign(); err != nil {
			// The decision and its credential are recorded, but the call
			// cannot go with a credential: it does not go (fail closed).
			g.refund(rec.charged, start, callID)
			g.appendAsync(audit.Event{Type: "credential_failed", CallID: callID, AgentID: p.Agent.ID, Data: map[string]any{
				"decision_id": callID, "credential_id": prepared.Record().ID, "error": err.Error(),
				"outcome": "the call was refused and not forwarded: its credential could not be signed",
			}})
			d = policy.Decision{Effect: "deny", Rule: "error", Reasons: []string{"interlock could not sign the call's credential"}, Errors: []string{err.Error()}}
			return &decided{rec: rec, d: d, args: args}, nil
		}
	}
	return &decided{rec: rec, d: d, token: token, args: args}, nil

}

// decide classifies and asks the policy, reading and charging budgets.
func (g *Gate) decide(ctx context.Context, c *relay.Call, p *store.Principal, args map[string]any, now time.Time, rec *decisionRecord) (policy.Decision, error) {
	pol := g.opts.Policy()
	if pol == nil {
		return policy.Decision{}, errors.New("no policy is loaded")
	}
	var tool catalog.Tool
	known := false
	if g.opts.Catalog != nil {
		tool, known = g.opts.Catalog.Lookup(c.Upstream, c.Name)
	}
	if !known {
		tool = catalog.Tool{Upstream: c.Upstream, Name: c.Name}
	}
	rec.Tool.Known = known
	in := &policy.Input{
		Agent:     policy.Agent{ID: p.Agent.ID, Name: p.Agent.Name, Department: p.Agent.Department, Purpose: p.Agent.Purpose, State: string(p.Agent.State), Owner: p.Owner.Email},
		Owner:     policy.Owner{Email: p.Owner.Email, Name: p.Owner.Name, Roles: p.Owner.Roles, Active: p.Owner.Active},
		Tool:      tool,
		ToolKnown: known,
		Args:      args,
		Context:   policy.Context{Time: now, ClientIP: c.ClientIP, Session: c.Session, Intent: rec.Intent},
		Budgets:   map[string]float64{},
		Lookup:    g.lookup(rec, p),
		Ctx:       ctx,
	}
	refs := pol.BudgetRefs(in)
	if len(refs) > 0 {
		if err := g.readBudgets(ctx, refs, now, in.Budgets); err != nil {
			return policy.Decision{}, err
		}
	}
	d := Decide(pol, in)
	// The record keeps the totals the decision was taken on (before this
	// call's own charge), so that replaying it decides the same way.
	rec.Budgets = maps.Clone(in.Budgets)
	if d.Effect != "allow" || len(d.Charges) == 0 {
		return d, nil
	}
	// Charge atomically; if a concurrent call got there first and a budget
	// no longer has room, undo this call's other charges and decide again on
	// the fresh totals.
	for attempt := 0; attempt < 3; attempt++ {
		var charged []policy.Charge
		ok := true
		for _, ch := range d.Charges {
			total, done, err := g.opts.Budgets.ChargeBudget(ctx, store.BudgetEntry{Key: ch.Key, Time: now, Amount: ch.Amount, CallID: rec.DecisionID},
				now.Add(-ch.Window), ch.Limit)
			if err != nil {
				g.refund(charged, now, rec.DecisionID)
				return policy.Decision{}, fmt.Errorf("charging budget %s: %w", ch.BudgetID, err)
			}
			if !done {
				in.Budgets[ch.Key] = total
				ok = false
				break
			}
			charged = append(charged, ch)
			in.Budgets[ch.Key] = total - ch.Amount
		}
		if ok {
			rec.charged = charged
			return d, nil
		}
		g.refund(charged, now, rec.DecisionID)
		rec.Budgets = maps.Clone(in.Budgets)
		if d = Decide(pol, in); d.Effect != "allow" {
			return d, nil
		}
	}
	return policy.Decision{}, errors.New("budgets kept changing under concurrent calls")
}

// hold asks for approval (or joins the pending request for the same
// action, or uses an approval that arrived after an earlier attempt gave
// up waiting) and holds the call until the approvers decide, the hold
// ends, or the agent goes away.
func (g *Gate) hold(ctx context.Context, c *relay.Call, p *store.Principal, args map[string]any, d policy.Decision, rec *decisionRecord, meta map[string]any) (*relay.Verdict, error) {
	callID := rec.DecisionID
	deny := func(reason string, extra map[string]any) (*relay.Verdict, error) {
		for k, v := range extra {
			meta[k] = v
		}
		return &relay.Verdict{Deny: &relay.Denial{Meta: meta, Reason: reason}}, nil
	}
	// An approval that came after an earlier attempt stopped waiting.
	approved, err := g.opts.Approvals.Approved(ctx, p.Agent.ID, c.Upstream, c.Name, rec.ArgsDigest)
	if err != nil {
		return nil, err
	}
	for _, a := range approved {
		v, err := g.approvedCall(ctx, c, p, args, rec, meta, a, d)
		if errors.Is(err, store.ErrAlreadyExists) {
			continue // that approval already let a call through
		}
		return v, err
	}

	var amount *float64
	if d.Call.HasAmount {
		amt := d.Call.Amount
		amount = &amt
	}
	shown, _ := g.redactValue(args).(map[string]any)
	a, joined, err := g.opts.Approvals.Open(ctx, approval.Request{
		Principal: *p, DecisionID: callID, Upstream: c.Upstream, Tool: c.Name,
		Arguments: shown, ArgsDigest: rec.ArgsDigest, Rule: d.Rule,
		Approvers: d.Approvers, Quorum: d.Quorum, SeparationOfDuties: d.SeparationOfDuties,
		RiskScore: d.Call.RiskScore, Amount: amount, Source: "mcp",
		Message: g.bindingMessage(p, c.Upstream, c.Name, shown, amount),
	})
	if errors.Is(err, approval.ErrNoApprover) {
		return deny(fmt.Sprintf("interlock refused this call: it needs approval (rule %q), but %v. Decision id %s.", d.Rule, err, callID), nil)
	}
	if err != nil {
		return nil, err
	}
	info := map[string]any{"id": a.ID, "url": g.opts.Approvals.Link(a.ID), "joined": joined}
	meta["io.interlock/approval"] = info

	hctx, cancel := context.WithTimeout(ctx, g.opts.Hold)
	defer cancel()
	if c.Progress != nil {
		msg := fmt.Sprintf("waiting for approval by %s: %s (approval %s)", approval.ApproversText(a.Approvers), a.BindingMessage, a.ID)
		c.Progress(msg)
		go func() {
			t := time.NewTicker(progressEvery)
			defer t.Stop()
			for {
				select {
				case <-hctx.Done():
					return
				case <-t.C:
					c.Progress(msg)
				}
			}
		}()
	}
	a, err = g.opts.Approvals.Wait(hctx, a.ID)
	switch {
	case err != nil && ctx.Err() != nil:
		// The agent cancelled or went away: so does its request (unless
		// another call joined it, which keeps waiting).
		if !joined {
			if _, cerr := g.opts.Approvals.Cancel(context.WithoutCancel(ctx), a.ID, "the agent cancelled the call"); cerr != nil {
				g.log.Warn("could not cancel an approval", "approval", a.ID, "err", cerr)
			}
		}
		return deny("the call was cancelled while waiting for approval", nil)
	case err != nil && hctx.Err() != nil:
		return deny(fmt.Sprintf("interlock is holding this call for approval by %s (rule %q: %s; approval %s, %s), and nobody has answered yet. Call again with the same arguments once it is approved: the retry joins this request. Decision id %s.",
			approval.ApproversText(a.Approvers), d.Rule, reasonText(d), a.ID, g.opts.Approvals.Link(a.ID), callID), map[string]any{"io.interlock/approval": mergeMap(info, map[string]any{"state": "pending"})})
	case err != nil:
		return nil, err
	}
	info["state"] = string(a.State)
	switch a.State {
	case store.ApprovalApproved:
		v, err := g.approvedCall(ctx, c, p, args, rec, meta, a, d)
		if errors.Is(err, store.ErrAlreadyExists) {
			return deny(fmt.Sprintf("approval %s was given, but another call with the same arguments already used it; call again to ask anew. Decision id %s.", a.ID, callID), nil)
		}
		return v, err
	case store.ApprovalDenied:
		who, why := "an approver", a.Reason
		if v, ok := approval.Denier(a); ok {
			who = v.Email
		}
		return deny(fmt.Sprintf("%s denied this call (approval %s): %s. Decision id %s.", who, a.ID, why, callID), nil)
	case store.ApprovalExpired:
		return deny(fmt.Sprintf("nobody approved this call in time (approval %s expired). Decision id %s.", a.ID, callID), nil)
	default:
		return deny(fmt.Sprintf("the approval request was cancelled (approval %s): %s. Decision id %s.", a.ID, a.Reason, callID), nil)
	}
}

// bindingMessage renders the tool's approval_message (policy), or returns
// "" for the default message.
func (g *Gate) bindingMessage(p *store.Principal, upstream, tool string, args map[string]any, amount *float64) string {
	pol := g.opts.Policy()
	if pol == nil {
		return ""
	}
	src := pol.ApprovalMessage(catalog.Tool{Upstream: upstream, Name: tool})
	if src == "" {
		return ""
	}
	m := policy.ApprovalMessage{Agent: p.Agent.Name, AgentID: p.Agent.ID, Owner: p.Owner.Email, Upstream: upstream, Tool: tool, Args: args}
	if m.Agent == "" {
		m.Agent = p.Agent.ID
	}
	if amount != nil {
		m.Amount = approval.FormatAmount(*amount)
	}
	msg, err := policy.RenderApprovalMessage(src, m)
	if err != nil || msg == "" {
		g.log.Warn("approval_message did not render; the default message is used", "tool", upstream+"."+tool, "err", err)
		return ""
	}
	return msg
}

// approvedCall issues the credential of a call an approval let through,
// naming every approver, and lets the call go on. store.ErrAlreadyExists
// means the approval already let a call through.
func (g *Gate) approvedCall(ctx context.Context, c *relay.Call, p *store.Principal, args map[string]any, rec *decisionRecord, meta map[string]any, a store.Approval, d policy.Decision) (*relay.Verdict, error) {
	var auth []credential.Authorization
	for _, v := range approval.Approvers(a) {
		auth = append(auth, credential.Authorization{Kind: "approval", Approver: v.Email, Method: v.Method, ApprovalID: a.ID})
	}
	tok, cred, err := g.opts.Credentials.Issue(ctx, credential.Action{
		ID:      credential.DerivedID(a.ID),
		AgentID: p.Agent.ID, OwnerEmail: p.Owner.Email, DecisionID: rec.DecisionID,
		Upstream: c.Upstream, Tool: c.Name, Arguments: args,
		AuthorizedBy: auth, RiskScore: a.RiskScore, ClientIP: c.ClientIP, PolicyVersion: rec.PolicyHash,
		// The deciding rule's constraints bind the approved call too.
		Lifetime: d.Constraints.Lifetime, Uses: d.Constraints.Uses, MaxAmount: d.Constraints.MaxAmount,
		ConsumeNow: true,
	})
	if err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return nil, err
		}
		return nil, fmt.Errorf("issuing the approved call's credential: %w", err)
	}
	// An approved call spends like an allowed one: its amount counts
	// against the budgets that apply (recorded, whatever their limit: a
	// human has approved going past it).
	for _, ch := range d.Charges {
		if _, _, err := g.opts.Budgets.ChargeBudget(ctx, store.BudgetEntry{Key: ch.Key, Time: g.opts.Now(), Amount: ch.Amount, CallID: rec.DecisionID},
			g.opts.Now().Add(-ch.Window), math.Inf(1)); err != nil {
			g.log.Error("budget: could not record an approved call's spend", "budget", ch.BudgetID, "key", ch.Key, "amount", ch.Amount, "err", err)
		}
	}
	decision, _ := meta["io.interlock/decision"].(map[string]any)
	if decision != nil {
		decision["credential_id"] = cred.ID
		decision["approval_id"] = a.ID
	}
	meta[relay.MetaCredential] = tok
	g.appendAsync(audit.Event{Type: "forwarded", CallID: rec.DecisionID, AgentID: p.Agent.ID,
		Data: map[string]any{"decision_id": rec.DecisionID, "upstream": c.Upstream, "tool": c.Name,
			"credential_id": cred.ID, "approval_id": a.ID, "approved_by": approverEmails(a)}})
	callID, agentID := rec.DecisionID, p.Agent.ID
	return &relay.Verdict{Credential: tok, Receipt: meta, Done: func(o relay.Outcome) { g.recordOutcome(callID, agentID, o) }}, nil
}

func approverEmails(a store.Approval) []string {
	var out []string
	for _, v := range approval.Approvers(a) {
		out = append(out, v.Email)
	}
	return out
}

func mergeMap(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// issue makes the credential of an allowed call. With consumeNow (the
// relay forwards the call with it right away) it is only prepared, already
// used once: its record is committed with the decision, and it is signed
// after that (begin). Otherwise (CIBA Authorize) it is issued (recorded on
// its own and signed) and returned.
func (g *Gate) issue(ctx context.Context, c *relay.Call, p *store.Principal, args map[string]any, d policy.Decision, rec *decisionRecord, consumeNow bool) (string, *credential.Prepared, error) {
	a := credential.Action{
		AgentID: p.Agent.ID, OwnerEmail: p.Owner.Email, DecisionID: rec.DecisionID,
		Upstream: c.Upstream, Tool: c.Name, Arguments: args,
		AuthorizedBy:  []credential.Authorization{{Kind: "policy", Rule: d.Rule}},
		RiskScore:     d.Call.RiskScore,
		ClientIP:      c.ClientIP,
		PolicyVersion: d.PolicyHash,
		Lifetime:      d.Constraints.Lifetime,
		Uses:          d.Constraints.Uses,
		MaxAmount:     d.Constraints.MaxAmount,
		ConsumeNow:    consumeNow,
	}
	if consumeNow {
		pr, err := g.opts.Credentials.Prepare(ctx, a)
		if err != nil {
			return "", nil, fmt.Errorf("issuing the credential: %w", err)
		}
		cred := pr.Record()
		rec.Credential = &credentialRecord{ID: cred.ID, ExpiresAt: cred.ExpiresAt, Uses: cred.Uses}
		return "", pr, nil
	}
	tok, cred, err := g.opts.Credentials.Issue(ctx, a)
	if err != nil {
		return "", nil, fmt.Errorf("issuing the credential: %w", err)
	}
	rec.Credential = &credentialRecord{ID: cred.ID, ExpiresAt: cred.ExpiresAt, Uses: cred.Uses}
	return tok, nil, nil
}

// presented decides a call that comes with a credential the agent already
// holds (from an approval, or a multi-use credential): the policy is not
// asked again. The credential must verify (signature, validity, issued
// here, not revoked), be for this agent, upstream, tool and exactly these
// arguments, and have a use left, which is taken atomically in the store.
func (g *Gate) presented(ctx context.Context, c *relay.Call, p *store.Principal, tok json.RawMessage, rec *decisionRecord) (policy.Decision, string) {
	deny := func(why string) (policy.Decision, string) {
		return policy.Decision{Effect: "deny", Rule: ruleCredential, Reasons: []string{"the presented credential " + why}}, ""
	}
	if g.opts.Credentials == nil {
		return deny("cannot be checked: credentials are not enabled on this gateway")
	}
	var token string
	if err := json.Unmarshal(tok, &token); err != nil || token == "" {
		return deny(fmt.Sprintf("is not a string: _meta[%q] must hold a compact JWS", relay.MetaCredential))
	}
	cl, err := g.opts.Credentials.Verify(ctx, token, g.opts.Now())
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || credentialRefusal(err) {
			return deny("is not valid: " + err.Error())
		}
		return policy.Decision{Effect: "deny", Rule: "error", Reasons: []string{"interlock could not check the presented credential"}, Errors: []string{err.Error()}}, ""
	}
	rec.Credential = &credentialRecord{ID: cl.ID, ExpiresAt: cl.ExpiresAt, Uses: cl.Uses, Presented: true}
	switch {
	case cl.AgentID != p.Agent.ID:
		return deny(fmt.Sprintf("was issued to agent %q, not to %q", cl.AgentID, p.Agent.ID))
	case cl.Upstream != c.Upstream || cl.Tool != c.Name:
		return deny(fmt.Sprintf("is for %s.%s, not for %s.%s", cl.Upstream, cl.Tool, c.Upstream, c.Name))
	case cl.ArgumentsDigest != rec.ArgsDigest:
		return deny("is for other arguments (their SHA-256 digest differs)")
	}
	if _, err := g.opts.Credentials.Consume(ctx, cl.ID); err != nil {
		if errors.Is(err, store.ErrSpent) {
			return deny("has no use left (already used, revoked or expired): a replay is refused")
		}
		return policy.Decision{Effect: "deny", Rule: "error", Reasons: []string{"interlock could not consume the presented credential"}, Errors: []string{err.Error()}}, ""
	}
	rule := ruleCredential
	for _, a := range cl.AuthorizedBy {
		if a.Kind == "policy" && a.Rule != "" {
			rule = ruleCredential + ":" + a.Rule
		}
	}
	d := policy.Decision{Effect: "allow", Rule: rule, Reasons: []string{"the call presented a valid credential for exactly this action"}, PolicyHash: cl.PolicyVersion}
	d.Constraints = policy.Constraints{Lifetime: cl.ExpiresAt.Sub(cl.IssuedAt), Uses: cl.Uses, MaxAmount: cl.MaxAmount}
	return d, token
}

// ruleCredential is the rule of decisions taken on a presented credential.
const ruleCredential = "credential"

// credentialRefusal reports whether err says the credential itself is bad
// (as opposed to the store failing).
func credentialRefusal(err error) bool {
	for _, e := range []error{credential.ErrMalformed, credential.ErrAlgorithm, credential.ErrType, credential.ErrUnknownKey,
		credential.ErrSignature, credential.ErrClaims, credential.ErrExpired, credential.ErrNotYet, credential.ErrRevoked, credential.ErrUnknown} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// refund takes back charges made for a call that will not go ahead (an
// entry of the opposite amount, which always fits).
func (g *Gate) refund(charged []policy.Charge, now time.Time, callID string) {
	for _, ch := range charged {
		if _, _, err := g.opts.Budgets.ChargeBudget(context.Background(), store.BudgetEntry{Key: ch.Key, Time: now, Amount: -ch.Amount, CallID: callID + ":refund"},
			now.Add(-ch.Window), math.Inf(1)); err != nil {
			g.log.Error("budget: could not refund a charge; the budget is overcounted", "budget", ch.BudgetID, "key", ch.Key, "amount", ch.Amount, "err", err)
		}
	}
}

// Decide is how the gate asks the policy (explain and replay ask the same
// way): when the agent stated an intent, it decides again without it and
// keeps the stricter decision, so that what an agent says about itself can
// make a decision stricter, never looser.
func Decide(pol *policy.Policy, in *policy.Input) policy.Decision {
	d := pol.Decide(in)
	if in.Context.Intent == "" || d.Effect == "deny" {
		return d
	}
	without := *in
	without.Context.Intent = ""
	if d2 := pol.Decide(&without); strictness(d2.Effect) > strictness(d.Effect) {
		return d2
	}
	return d
}

func strictness(effect string) int {
	switch effect {
	case "allow":
		return 0
	case "approve":
		return 1
	}
	return 2
}

func (g *Gate) readBudgets(ctx context.Context, refs []policy.BudgetRef, now time.Time, into map[string]float64) error {
	byWindow := map[time.Duration][]string{}
	for _, r := range refs {
		byWindow[r.Window] = append(byWindow[r.Window], r.Key)
	}
	for w, keys := range byWindow {
		totals, err := g.opts.Budgets.BudgetTotals(ctx, keys, now.Add(-w))
		if err != nil {
			return fmt.Errorf("reading budgets: %w", err)
		}
		for k, v := range totals {
			into[k] = v
		}
	}
	return nil
}

// lookup returns the policy's lookup function: cached by lookup id, tool
// and canonical arguments for the lookup's ttl; any failure is an error
// (the policy then denies).
func (g *Gate) lookup(rec *decisionRecord, p *store.Principal) func(ctx context.Context, l policy.LookupCall) (any, error) {
	return func(ctx context.Context, l policy.LookupCall) (any, error) {
		if g.opts.Catalog == nil {
			return nil, errors.New("no catalog to run lookups with")
		}
		argKey, err := canon.Marshal(l.Arguments)
		if err != nil {
			return nil, fmt.Errorf("lookup %s arguments: %w", l.ID, err)
		}
		key := l.ID + "\x00" + l.Upstream + "\x00" + l.Tool + "\x00" + string(argKey)
		now := g.opts.Now()
		g.lmu.Lock()
		e, ok := g.lookups[key]
		g.lmu.Unlock()
		if ok && now.Before(e.expires) {
			rec.Lookups = append(rec.Lookups, lookupRecord{ID: l.ID, Cached: true})
			return e.result, nil
		}
		meta, err := LookupCredential(ctx, g.opts.Credentials, p.Agent.ID, p.Owner.Email, rec.DecisionID, l)
		if err != nil {
			rec.Lookups = append(rec.Lookups, lookupRecord{ID: l.ID, Error: err.Error()})
			return nil, fmt.Errorf("lookup %s: %w", l.ID, err)
		}
		res, isErr, err := g.opts.Catalog.CallTool(ctx, l.Upstream, l.Tool, l.Arguments, meta)
		if err == nil && isErr {
			err = fmt.Errorf("the tool %s.%s answered with an error", l.Upstream, l.Tool)
		}
		if err != nil {
			rec.Lookups = append(rec.Lookups, lookupRecord{ID: l.ID, Error: err.Error()})
			return nil, fmt.Errorf("lookup %s: %w", l.ID, err)
		}
		rec.Lookups = append(rec.Lookups, lookupRecord{ID: l.ID})
		if l.TTL > 0 {
			g.lmu.Lock()
			if len(g.lookups) >= maxLookupEntries {
				clear(g.lookups)
			}
			g.lookups[key] = lookupEntry{result: res, expires: now.Add(l.TTL)}
			g.lmu.Unlock()
		}
		return res, nil
	}
}

// LookupCredential issues the credential a policy lookup (a call interlock
// makes to decide another call, on behalf of the same agent) is sent with,
// and returns it as the lookup's _meta; nil when creds is nil. Tool servers
// that check credentials see who the lookup was for and which rule asked.
func LookupCredential(ctx context.Context, creds Credentials, agentID, ownerEmail, decisionID string, l policy.LookupCall) (map[string]any, error) {
	if creds == nil {
		return nil, nil
	}
	tok, _, err := creds.Issue(ctx, credential.Action{
		AgentID: agentID, OwnerEmail: ownerEmail, DecisionID: decisionID,
		Upstream: l.Upstream, Tool: l.Tool, Arguments: l.Arguments,
		AuthorizedBy: []credential.Authorization{{Kind: "policy", Rule: "lookup:" + l.ID}},
		ConsumeNow:   true,
	})
	if err != nil {
		return nil, fmt.Errorf("issuing the lookup's credential: %w", err)
	}
	return map[string]any{relay.MetaCredential: tok}, nil
}

func (g *Gate) recordOutcome(callID, agentID string, o relay.Outcome) {
	data := map[string]any{"decision_id": callID, "duration_us": o.Duration.Microseconds(), "answered": o.Answered}
	switch {
	case o.Answered && o.IsError:
		data["status"] = "error"
	case o.Answered:
		data["status"] = "success"
	default:
		data["status"] = "no-answer"
		data["error"] = o.Err
	}
	g.appendAsync(audit.Event{Type: "result", CallID: callID, AgentID: agentID, Data: data})
}

// appendAsync records an event without holding up the call (the decision
// itself was committed before the call went on); it rides along with the
// next commit.
func (g *Gate) appendAsync(ev audit.Event) {
	ev.Time = g.opts.Now()
	if err := g.opts.Audit.Defer(ev); err != nil {
		g.log.Error("audit: could not record an event", "type", ev.Type, "call", ev.CallID, "err", err)
	}
}

// RuleUpstreamNotAllowed is the rule of a call refused because the agent
// may not use the upstream (its registry entry's allowed upstreams). It
// does not depend on the policy.
const RuleUpstreamNotAllowed = "upstream-not-allowed"

// UpstreamNotAllowed says why agent a may not call upstream: the upstreams
// it may use, and how to change them.
func UpstreamNotAllowed(a *store.Agent, upstream string) string {
	quoted := make([]string, len(a.AllowedUpstreams))
	for i, u := range a.AllowedUpstreams {
		quoted[i] = strconv.Quote(u)
	}
	return fmt.Sprintf("agent %q may not use upstream %q: it may use only %s; an administrator can change that (interlock agents set-upstreams %s --upstream NAME)",
		a.ID, upstream, strings.Join(quoted, ", "), a.ID)
}

// Inactive returns why the principal may not act, or "" when it may. The
// test is the registry's (CheckActive); this only says it for the agent:
// what happened, when, and what to do about it.
func Inactive(p *store.Principal) string {
	err := registry.CheckActive(*p)
	if err == nil {
		return ""
	}
	a, o := &p.Agent, &p.Owner
	since, why := "", ""
	if !a.StateChangedAt.IsZero() {
		since = " since " + a.StateChangedAt.UTC().Format(time.RFC3339)
	}
	if a.StateReason != "" {
		why = " (" + a.StateReason + ")"
	}
	switch a.State {
	case store.AgentActive:
	case store.AgentSuspended:
		return fmt.Sprintf("agent %q is suspended%s%s; ask its owner (%s) or the security team to resume it (interlock agents resume %s)", a.ID, since, why, o.Email, a.ID)
	case store.AgentOrphaned:
		if a.StateReason == "" {
			why = fmt.Sprintf(" (its owner %s is no longer active)", o.Email)
		}
		return fmt.Sprintf("agent %q is orphaned%s%s: its owner was deactivated, so it may not act; an administrator must reassign it to an active owner (interlock agents reassign %s --to EMAIL) or decommission it (interlock agents decommission %s)", a.ID, since, why, a.ID, a.ID)
	case store.AgentDecommissioned:
		return fmt.Sprintf("agent %q is decommissioned%s%s and can no longer act", a.ID, since, why)
	default:
		return fmt.Sprintf("agent %q is in unknown state %q", a.ID, a.State)
	}
	if !o.Active {
		return fmt.Sprintf("the owner of agent %q (%s) was deactivated at %s; an administrator must reassign the agent to an active owner (interlock agents reassign %s --to EMAIL) or decommission it (interlock agents decommission %s)", a.ID, o.Email, o.UpdatedAt.UTC().Format(time.RFC3339), a.ID, a.ID)
	}
	return err.Error()
}

// ---- the decision record ----

type decisionRecord struct {
	DecisionID    string               `json:"decision_id"`
	Time          time.Time            `json:"time"`
	Agent         map[string]any       `json:"agent"`
	Owner         map[string]any       `json:"owner"`
	Tool          toolRef              `json:"tool"`
	ArgsDigest    string               `json:"args_digest,omitempty"`
	Args          any                  `json:"args,omitempty"`
	Call          *policy.Call         `json:"classification,omitempty"`
	Effect        string               `json:"effect"`
	ShadowEffect  string               `json:"shadow_effect,omitempty"`
	Rule          string               `json:"rule"`
	Matched       []policy.Match       `json:"matched,omitempty"`
	Reasons       []string             `json:"reasons,omitempty"`
	Errors        []string             `json:"errors,omitempty"`
	ShadowRule    string               `json:"shadow_rule,omitempty"`
	Approvers     []string             `json:"approvers,omitempty"`
	Quorum        int                  `json:"quorum,omitempty"`
	SoD           bool                 `json:"separation_of_duties,omitempty"`
	Requirements  []policy.Requirement `json:"requirements,omitempty"`
	Charges       []policy.Charge      `json:"charges,omitempty"`
	Credential    *credentialRecord    `json:"credential,omitempty"`
	charged       []policy.Charge      // charges made in the store, to refund if the record fails
	Constraints   *constraintsRecord   `json:"constraints,omitempty"`
	Budgets       map[string]float64   `json:"budgets,omitempty"`
	Lookups       []lookupRecord       `json:"lookups,omitempty"`
	PolicyHash    string               `json:"policy_version,omitempty"`
	Transport     string               `json:"transport,omitempty"`
	Session       string               `json:"session,omitempty"`
	ClientIP      string               `json:"client_ip,omitempty"`
	Intent        string               `json:"intent,omitempty"`
	LatencyMicros int64                `json:"latency_us"`
}

type toolRef struct {
	Upstream string `json:"upstream"`
	Name     string `json:"name"`
	Method   string `json:"method"`
	Known    bool   `json:"known"`
}

type constraintsRecord struct {
	LifetimeSeconds float64  `json:"lifetime_s"`
	Uses            int      `json:"uses"`
	MaxAmount       *float64 `json:"max_amount,omitempty"`
}

// credentialRecord is the credential a decision issued, or the one the
// call presented.
type credentialRecord struct {
	ID        string    `json:"id"`
	ExpiresAt time.Time `json:"expires_at"`
	Uses      int       `json:"uses"`
	Presented bool      `json:"presented,omitempty"`
}

type lookupRecord struct {
	ID     string `json:"id"`
	Cached bool   `json:"cached,omitempty"`
	Error  string `json:"error,omitempty"`
}

func (r *decisionRecord) fill(d policy.Decision) {
	r.Effect, r.ShadowEffect, r.ShadowRule, r.Rule = d.Effect, d.ShadowEffect, d.ShadowRule, d.Rule
	r.Requirements, r.Charges = d.Requirements, d.Charges
	r.Matched, r.Reasons, r.Errors = d.Matched, d.Reasons, d.Errors
	r.Approvers, r.Quorum, r.SoD = d.Approvers, d.Quorum, d.SeparationOfDuties
	r.PolicyHash = d.PolicyHash
	if d.Call.Action != "" {
		c := d.Call
		r.Call = &c
	}
	if d.Effect != "deny" {
		r.Constraints = &constraintsRecord{LifetimeSeconds: d.Constraints.Lifetime.Seconds(), Uses: d.Constraints.Uses, MaxAmount: d.Constraints.MaxAmount}
	}
}

func agentInfo(p *store.Principal) map[string]any {
	return map[string]any{"id": p.Agent.ID, "name": p.Agent.Name, "department": p.Agent.Department,
		"purpose": p.Agent.Purpose, "state": string(p.Agent.State), "owner": p.Owner.Email}
}

func ownerInfo(p *store.Principal) map[string]any {
	roles := p.Owner.Roles
	if roles == nil {
		roles = []string{}
	}
	return map[string]any{"email": p.Owner.Email, "name": p.Owner.Name, "roles": roles, "active": p.Owner.Active}
}

func reasonText(d policy.Decision) string {
	if len(d.Reasons) > 0 {
		return strings.Join(d.Reasons, "; ")
	}
	switch d.Rule {
	case "default":
		return "no rule allows it (the policy's default)"
	}
	return "the policy says so"
}

func approversText(d policy.Decision) string {
	if len(d.Approvers) == 0 {
		return "a human approver"
	}
	s := strings.Join(d.Approvers, " or ")
	if d.Quorum > 1 {
		s = fmt.Sprintf("%d of %s", d.Quorum, s)
	}
	return s
}

// maxIntent bounds the stated intent kept from one call.
const maxIntent = 1000

// arguments decodes tools/call params.arguments (absent: an empty object),
// returns them also in their RFC 8785 canonical form (what the argument
// digest covers), the agent's stated intent,
// params._meta["io.interlock/intent"] (a string; anything else is
// ignored), and the credential the call presents,
// params._meta["io.interlock/credential"] (raw; nil when absent or null).
// The intent is recorded and offered to the policy as context.intent; a
// policy can use it to be stricter.
func arguments(params json.RawMessage) (map[string]any, []byte, string, json.RawMessage, error) {
	var p struct {
		Arguments json.RawMessage `json:"arguments"`
		Meta      struct {
			Intent     json.RawMessage `json:"io.interlock/intent"`
			Credential json.RawMessage `json:"io.interlock/credential"`
		} `json:"_meta"`
	}
	if len(params) > 0 {
		if err := json.Unmarshal(params, &p); err != nil {
			return nil, nil, "", nil, err
		}
	}
	presented := p.Meta.Credential
	if string(presented) == "null" {
		presented = nil
	}
	var intent string
	if json.Unmarshal(p.Meta.Intent, &intent) == nil && len(intent) > maxIntent {
		intent = strings.ToValidUTF8(intent[:maxIntent], "") + "…"
	}
	if len(p.Arguments) == 0 || string(p.Arguments) == "null" {
		return map[string]any{}, []byte("{}"), intent, presented, nil
	}
	// The upstream reads the arguments with its own parser. If a key
	// appeared twice, parsers disagree on which value counts, and the
	// policy might judge one value while the tool acts on the other.
	canonArgs, err := canon.Canonicalize(p.Arguments)
	if err != nil && strings.Contains(err.Error(), "duplicate member name") {
		return nil, nil, intent, presented, fmt.Errorf("%w (a key that appears twice is refused: the tool might read another value than the policy)", err)
	}
	if err != nil {
		return nil, nil, intent, presented, err
	}
	var args map[string]any
	if err := json.Unmarshal(p.Arguments, &args); err != nil {
		return nil, nil, intent, presented, err
	}
	if args == nil {
		return nil, nil, intent, presented, errors.New("arguments must be a JSON object")
	}
	return args, canonArgs, intent, presented, nil
}

// redactValue copies v with the values of redacted keys replaced.
func (g *Gate) redactValue(v any) any {
	if len(g.redact) == 0 {
		return v
	}
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			if g.redact[strings.ToLower(k)] {
				out[k] = "[redacted]"
			} else {
				out[k] = g.redactValue(val)
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = g.redactValue(val)
		}
		return out
	default:
		return v
	}
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return "dec_" + hex.EncodeToString(b)
}
