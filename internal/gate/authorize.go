package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/credential"
	"github.com/interlock-dev/interlock/internal/relay"
	"github.com/interlock-dev/interlock/internal/store"
)

// Grant is the gate's answer to an action an agent asks for ahead of the
// call (a CIBA backchannel request).
type Grant struct {
	Effect     string // "allow", "deny" or "approve"
	Rule       string
	Reason     string // why, for "deny"
	DecisionID string
	// Credential, for "allow": the action credential, not yet used (the
	// agent presents it with the call, which consumes it).
	Credential   string
	CredentialID string
	ExpiresAt    time.Time
	// Approval, for "approve": the request opened (or joined) for it.
	Approval store.Approval
}

// AuthorizeOptions are the extras of a request made ahead of the call.
type AuthorizeOptions struct {
	// BindingMessage is shown to the approver (empty: the default).
	BindingMessage string
	// LoginHint names the approver the agent wants (an email); it must be
	// one the rule allows.
	LoginHint  string
	ClientData []byte
	ClientIP   string
	Transport  string // default "ciba"
}

// ErrUnknownApprover: the login hint names nobody who may approve.
var ErrUnknownApprover = errors.New("gate: the login hint names no one who may approve this action")

// Authorize decides an action (a tools/call of tool on upstream with
// arguments) that agent p asks for ahead of making the call, exactly as
// Check decides the call, and records the decision. "allow" comes with a
// credential the agent presents with the call; "approve" opens an approval
// request (or joins the pending one) without waiting for it; "deny" says
// why.
func (g *Gate) Authorize(ctx context.Context, p *store.Principal, upstream, tool string, arguments json.RawMessage, o AuthorizeOptions) (Grant, error) {
	if p == nil {
		return Grant{}, errors.New("gate: no principal")
	}
	if len(arguments) == 0 {
		arguments = json.RawMessage("{}")
	}
	params, err := json.Marshal(map[string]any{"name": tool, "arguments": arguments})
	if err != nil {
		return Grant{}, fmt.Errorf("gate: arguments: %w", err)
	}
	if o.Transport == "" {
		o.Transport = "ciba"
	}
	c := &relay.Call{Principal: p, Upstream: upstream, Method: "tools/call", Name: tool, Params: params,
		Transport: o.Transport, ClientIP: o.ClientIP}
	dc, err := g.begin(ctx, c, false)
	if err != nil {
		return Grant{}, err
	}
	gr := Grant{Effect: dc.d.Effect, Rule: dc.d.Rule, DecisionID: dc.rec.DecisionID}
	switch dc.d.Effect {
	case "allow":
		if dc.rec.Credential == nil {
			return Grant{}, errors.New("gate: credentials are not enabled")
		}
		gr.Credential, gr.CredentialID, gr.ExpiresAt = dc.token, dc.rec.Credential.ID, dc.rec.Credential.ExpiresAt
		return gr, nil
	case "approve":
		if g.opts.Approvals == nil || g.opts.Credentials == nil {
			gr.Effect, gr.Reason = "deny", "this action needs approval, and approvals are not enabled"
			return gr, nil
		}
		approvers := dc.d.Approvers
		if o.LoginHint != "" {
			// The agent asks for one approver in particular: only if the
			// rule would accept them.
			approvers = []string{"user:" + strings.ToLower(o.LoginHint)}
		}
		var amount *float64
		if dc.d.Call.HasAmount {
			amt := dc.d.Call.Amount
			amount = &amt
		}
		shown, _ := g.redactValue(dc.args).(map[string]any)
		req := approval.Request{
			Principal: *p, DecisionID: dc.rec.DecisionID, Upstream: upstream, Tool: tool,
			Arguments: shown, ArgsDigest: dc.rec.ArgsDigest, Rule: dc.d.Rule,
			Approvers: approvers, Quorum: dc.d.Quorum, SeparationOfDuties: dc.d.SeparationOfDuties,
			Message: o.BindingMessage, RiskScore: dc.d.Call.RiskScore, Amount: amount, Source: "ciba", ClientData: o.ClientData,
		}
		if req.Message == "" {
			req.Message = g.bindingMessage(p, upstream, tool, shown, amount)
		}
		if o.LoginHint != "" {
			ok, err := g.hintAllowed(ctx, p, dc.d.Approvers, o.LoginHint, dc.d.SeparationOfDuties)
			if err != nil {
				return Grant{}, err
			}
			if !ok {
				return Grant{}, fmt.Errorf("%w: %s is not among %s", ErrUnknownApprover, o.LoginHint, approval.ApproversText(dc.d.Approvers))
			}
		}
		a, _, err := g.opts.Approvals.Open(ctx, req)
		if errors.Is(err, approval.ErrNoApprover) {
			gr.Effect, gr.Reason = "deny", err.Error()
			return gr, nil
		}
		if err != nil {
			return Grant{}, err
		}
		gr.Approval = a
		return gr, nil
	default:
		gr.Reason = reasonText(dc.d)
		return gr, nil
	}
}

// hintAllowed reports whether the user named by hint may approve under the
// rule's approver terms.
func (g *Gate) hintAllowed(ctx context.Context, p *store.Principal, terms []string, hint string, sod bool) (bool, error) {
	if len(terms) == 0 {
		terms = []string{"owner"}
	}
	hint = strings.ToLower(hint)
	if sod && strings.EqualFold(hint, p.Owner.Email) {
		return false, nil
	}
	for _, t := range terms {
		switch {
		case t == "owner" && strings.EqualFold(hint, p.Owner.Email):
			return true, nil
		case strings.HasPrefix(t, "user:") && strings.EqualFold(strings.TrimPrefix(t, "user:"), hint):
			return true, nil
		case strings.HasPrefix(t, "role:"):
			if g.opts.Users == nil {
				continue
			}
			u, err := g.opts.Users.GetUserByEmail(ctx, hint)
			if errors.Is(err, store.ErrNotFound) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			for _, r := range u.Roles {
				if r == strings.TrimPrefix(t, "role:") {
					return u.Active, nil
				}
			}
		}
	}
	return false, nil
}

// Redeem issues the credential of approval request id once it is
// approved (the CIBA token request): not yet used, so the agent presents
// it with the call. store.ErrNotPending while it is pending, or when it
// was denied, expired or cancelled (the approval says which);
// store.ErrAlreadyExists when its credential was issued already.
func (g *Gate) Redeem(ctx context.Context, p *store.Principal, a store.Approval) (string, store.Credential, error) {
	if g.opts.Credentials == nil {
		return "", store.Credential{}, errors.New("gate: credentials are not enabled")
	}
	if a.AgentID != p.Agent.ID {
		return "", store.Credential{}, fmt.Errorf("gate: approval %s is not agent %s's: %w", a.ID, p.Agent.ID, store.ErrNotFound)
	}
	if why := Inactive(p); why != "" {
		return "", store.Credential{}, fmt.Errorf("gate: %s", why)
	}
	if a.State != store.ApprovalApproved {
		return "", store.Credential{}, fmt.Errorf("gate: approval %s is %s: %w", a.ID, a.State, store.ErrNotPending)
	}
	var args map[string]any
	if err := json.Unmarshal(a.Arguments, &args); err != nil || args == nil {
		args = map[string]any{}
	}
	var auth []credential.Authorization
	for _, v := range approval.Approvers(a) {
		auth = append(auth, credential.Authorization{Kind: "approval", Approver: v.Email, Method: v.Method, ApprovalID: a.ID})
	}
	// The approval keeps the arguments as shown (maybe redacted): the
	// credential binds the digest recorded with the request instead.
	tok, cred, err := g.opts.Credentials.Issue(ctx, credential.Action{
		ID: credential.DerivedID(a.ID), AgentID: p.Agent.ID, OwnerEmail: p.Owner.Email, DecisionID: a.DecisionID,
		Upstream: a.Upstream, Tool: a.Tool, Arguments: args, ArgsDigest: a.ArgsDigest,
		AuthorizedBy: auth, RiskScore: a.RiskScore,
	})
	if err != nil {
		return "", store.Credential{}, err
	}
	if _, err := g.opts.Audit.Append(ctx, audit.Event{Type: "credential_issued", CallID: a.DecisionID, AgentID: p.Agent.ID,
		Data: map[string]any{"credential_id": cred.ID, "approval_id": a.ID, "decision_id": a.DecisionID,
			"tool": a.Upstream + "." + a.Tool, "approved_by": approverEmails(a), "expires_at": cred.ExpiresAt}}); err != nil {
		return "", store.Credential{}, fmt.Errorf("recording the credential: %w", err)
	}
	return tok, cred, nil
}
