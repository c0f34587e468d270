package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/store"
)

// The lifecycle of owners and agents, and the ghost-agent kill switch.
//
// Deactivating or deleting an owner, on a store that implements
// store.OwnerCascade (SQLite and PostgreSQL), changes the store in one
// transaction: the user, their agents, their agents' approvals and
// credentials change together or not at all; closing sessions, notifying
// security and the audit story follow it.
//
// Every other cascade, and the owner's on a store without OwnerCascade,
// runs in a fixed order that fails closed: the record that makes the gate
// refuse is written first (the user marked inactive, the agent suspended or
// decommissioned), and everything after it (orphaning the owner's agents,
// cancelling their approvals, revoking their credentials, closing their
// sessions) only adds to that. If a later step fails, the gate already
// refuses the agents, the error is returned, and running the same command
// again completes the cascade: every step is idempotent.

// Auditor appends to the audit chain (*audit.Log).
type Auditor interface {
	Append(ctx context.Context, ev audit.Event) (int64, error)
	AppendBatch(ctx context.Context, evs []audit.Event) (int64, error)
}

// CredentialRevoker revokes an issued action credential and so sets its
// status-list bit (*credential.Issuer). Nil in Lifecycle: revoked in the
// store directly, which every status list reads at once.
type CredentialRevoker interface {
	Revoke(ctx context.Context, id, reason string) (store.Credential, error)
}

// ApprovalCanceller cancels a pending approval, waking whoever waits on it
// in this process and auditing it (*approval.Service). Nil in Lifecycle:
// the approvals are cancelled in the store and audited here; the waiters
// (in any process) see it at their next poll of the store.
type ApprovalCanceller interface {
	Cancel(ctx context.Context, id, reason string) (store.Approval, error)
}

// SessionCloser ends the open MCP sessions and the requests in flight of
// the given agents (*relay.Relay). Nil in Lifecycle (the CLI): nothing is
// closed here, and the gateway refuses the agents' next calls.
type SessionCloser interface {
	CloseAgents(agentIDs []string, why string) (sessions, requests int)
}

// Notice tells security about a lifecycle event that stopped agents.
type Notice struct {
	// Kind is "user_deactivated", "user_deleted", "agent_suspended",
	// "agent_decommissioned" or "emergency_stop".
	Kind   string
	At     time.Time
	By     string
	Reason string
	// User is the owner concerned (for the user kinds).
	User *store.User
	// Report is what the cascade did.
	Report Report
}

// Notifier tells security admins (a webhook, the console) that agents were
// stopped. Notify must not block for long; its failures are its own to log.
type Notifier interface {
	Notify(ctx context.Context, n Notice)
}

// NotifierFunc adapts a function to Notifier.
type NotifierFunc func(ctx context.Context, n Notice)

// Notify calls f.
func (f NotifierFunc) Notify(ctx context.Context, n Notice) { f(ctx, n) }

// LogNotifier returns a Notifier that logs each notice as a warning.
func LogNotifier(log *slog.Logger) Notifier {
	return NotifierFunc(func(_ context.Context, n Notice) {
		attrs := []any{"kind", n.Kind, "by", n.By, "reason", n.Reason, "agents", n.Report.Agents,
			"credentials_revoked", len(n.Report.CredentialsRevoked), "approvals_cancelled", len(n.Report.ApprovalsCancelled)}
		if n.User != nil {
			attrs = append(attrs, "user", n.User.Email)
		}
		log.Warn("security notice: agents stopped", attrs...)
	})
}

// LifecycleOptions configure NewLifecycle. Audit is required.
type LifecycleOptions struct {
	Audit       Auditor
	Credentials CredentialRevoker
	Approvals   ApprovalCanceller
	Sessions    SessionCloser
	Notifier    Notifier
	// Workers bounds the concurrent store writes of one cascade (default 8).
	Workers int
}

// Lifecycle changes the state of users and agents on a Registry, with the
// kill-switch cascade and one audit story per change. It is safe for
// concurrent use.
type Lifecycle struct {
	r *Registry
	o LifecycleOptions
}

// NewLifecycle returns the lifecycle operations over r.
func NewLifecycle(r *Registry, o LifecycleOptions) *Lifecycle {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	return &Lifecycle{r: r, o: o}
}

// Report is what one lifecycle operation did.
type Report struct {
	// Story groups the operation's audit events (their CallID).
	Story string `json:"story"`
	// Agents whose state this operation changed.
	Agents []string `json:"agents"`
	// CredentialsRevoked and ApprovalsCancelled are ids.
	CredentialsRevoked []string `json:"credentials_revoked"`
	ApprovalsCancelled []string `json:"approvals_cancelled"`
	TokensRevoked      []string `json:"tokens_revoked,omitempty"`
	// SessionsClosed and RequestsClosed are counted by the SessionCloser
	// (0 without one).
	SessionsClosed int `json:"sessions_closed"`
	RequestsClosed int `json:"requests_closed"`
	// Skipped lists agents a bulk operation left as they were, with why.
	Skipped map[string]string `json:"skipped,omitempty"`
}

// Selector picks the agents of an emergency stop or resume: all of them,
// one agent, or every agent of one owner. Exactly one must be set.
type Selector struct {
	All   bool
	Agent string
	Owner string // email or user id
}

func (s Selector) valid() error {
	n := 0
	if s.All {
		n++
	}
	if s.Agent != "" {
		n++
	}
	if s.Owner != "" {
		n++
	}
	if n != 1 {
		return fmt.Errorf("registry: choose exactly one of all, an agent or an owner: %w", store.ErrInvalid)
	}
	return nil
}

// LifecycleEventTypes are the audit event types of agents' lifecycles (the
// agent state history).
var LifecycleEventTypes = []string{
	"agent_created", "agent_orphaned", "agent_suspended", "agent_resumed", "agent_reassigned",
	"agent_decommissioned", "credentials_revoked", "approvals_cancelled", "agent_tokens_revoked",
	"agent_upstreams_set",
}

// ---- users ----

// GetUser returns the user with id, or an error wrapping store.ErrNotFound.
func (r *Registry) GetUser(ctx context.Context, id string) (store.User, error) {
	u, err := r.store.GetUser(ctx, id)
	if err != nil {
		return store.User{}, fmt.Errorf("registry: get user %s: %w", id, err)
	}
	return u, nil
}

// ResolveUser finds a user by email (anything with an @) or id.
func (r *Registry) ResolveUser(ctx context.Context, ref string) (store.User, error) {
	ref = strings.TrimSpace(ref)
	if strings.Contains(ref, "@") {
		return r.GetUserByEmail(ctx, ref)
	}
	return r.GetUser(ctx, ref)
}

// UpdateUser changes the user with id through the store's updater and
// invalidates the principal cache.
func (r *Registry) UpdateUser(ctx context.Context, id string, fn func(store.User) (store.User, error)) (store.User, error) {
	u, err := r.store.UpdateUser(ctx, id, fn)
	r.invalidate()
	return u, err
}

// UpdateAgent changes the agent with id through the store's updater and
// invalidates the principal cache.
func (r *Registry) UpdateAgent(ctx context.Context, id string, fn func(store.Agent) (store.Agent, error)) (store.Agent, error) {
	a, err := r.store.UpdateAgent(ctx, id, fn)
	r.invalidate()
	return a, err
}

// Store returns the registry's store.
func (r *Registry) Store() store.Store { return r.store }

// errUnchanged aborts an updater that finds nothing to change.
var errUnchanged = errors.New("unchanged")

// DeactivateUser is the kill switch: the user (email or id) becomes
// inactive, every agent they own that is active or suspended becomes
// orphaned, the pending approvals of their agents are cancelled and every
// live credential issued to them is revoked, in one store transaction when
// the store implements store.OwnerCascade (otherwise step by step, the
// user first, so that the gate refuses their agents at once); then their
// open sessions are closed, security is notified and the audit story is
// written. Deactivating an inactive user runs the rest of the cascade
// again (completing one that failed half-way) without a second
// user_deactivated event.
func (l *Lifecycle) DeactivateUser(ctx context.Context, ref, by, reason string) (store.User, Report, error) {
	return l.deactivate(ctx, ref, by, reason, false)
}

// DeleteUser is DeactivateUser for a user the identity provider deleted:
// the user is also marked deleted (it stays stored, with its agents
// orphaned and its audit history intact, but SCIM no longer finds it).
func (l *Lifecycle) DeleteUser(ctx context.Context, ref, by, reason string) (store.User, Report, error) {
	return l.deactivate(ctx, ref, by, reason, true)
}

func (l *Lifecycle) deactivate(ctx context.Context, ref, by, reason string, del bool) (store.User, Report, error) {
	r := l.r
	u, err := r.ResolveUser(ctx, ref)
	if err != nil {
		return store.User{}, Report{}, err
	}
	now := store.NormalizeTime(r.now())
	story, err := r.newID("lc_")
	if err != nil {
		return store.User{}, Report{}, err
	}
	rep := Report{Story: story}
	if oc, ok := r.store.(store.OwnerCascade); ok {
		return l.deactivateTx(ctx, oc, u, ref, by, reason, del, now, rep)
	}
	wasActive, wasDeleted := false, false
	id := u.ID
	u, err = r.UpdateUser(ctx, id, func(x store.User) (store.User, error) {
		wasActive, wasDeleted = x.Active, !x.DeletedAt.IsZero()
		if !x.Active && (!del || wasDeleted) {
			return x, errUnchanged
		}
		x.Active, x.UpdatedAt = false, now
		if del && x.DeletedAt.IsZero() {
			x.DeletedAt = now
		}
		return x, nil
	})
	if errors.Is(err, errUnchanged) {
		u, err = r.GetUser(ctx, id)
	}
	if err != nil {
		return store.User{}, rep, fmt.Errorf("registry: deactivate user %s: %w", ref, err)
	}
	kind := "user_deactivated"
	if del {
		kind = "user_deleted"
	}
	var errs []error
	agents, err := l.ownedAgents(ctx, u.ID)
	if err != nil {
		errs = append(errs, err)
	}
	owned := make([]string, 0, len(agents))
	for _, a := range agents {
		owned = append(owned, a.ID)
	}
	if wasActive || (del && !wasDeleted) {
		// The user's record comes first in the story: it is what made the
		// gate refuse.
		if _, err := l.o.Audit.Append(ctx, audit.Event{Type: kind, CallID: story, Time: now, Data: map[string]any{
			"user_id": u.ID, "email": u.Email, "external_id": u.ExternalID, "source": u.Source,
			"by": by, "reason": reason, "agents": owned,
		}}); err != nil {
			errs = append(errs, err)
		}
	}
	why := ownerWhy(u.Email, reason, del)
	var evs []audit.Event
	var stop []string
	for _, a := range agents {
		if a.State == store.AgentDecommissioned {
			continue
		}
		stop = append(stop, a.ID)
		if a.State == store.AgentOrphaned {
			continue
		}
		from := a.State
		_, err := r.UpdateAgent(ctx, a.ID, func(x store.Agent) (store.Agent, error) {
			if x.OwnerID != u.ID || (x.State != store.AgentActive && x.State != store.AgentSuspended) {
				return x, errUnchanged // reassigned or changed meanwhile
			}
			from = x.State
			x.State, x.StateChangedAt, x.StateChangedBy, x.StateReason, x.UpdatedAt = store.AgentOrphaned, now, by, why, now
			return x, nil
		})
		switch {
		case errors.Is(err, errUnchanged):
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("registry: orphan agent %s: %w", a.ID, err))
			continue
		}
		rep.Agents = append(rep.Agents, a.ID)
		evs = append(evs, audit.Event{Type: "agent_orphaned", CallID: story, AgentID: a.ID, Time: now, Data: map[string]any{
			"owner_id": u.ID, "owner": u.Email, "from": from, "to": store.AgentOrphaned, "by": by, "reason": why,
		}})
	}
	errs = append(errs, l.stopAgents(ctx, stop, why, story, now, &rep, &evs))
	if _, err := l.o.Audit.AppendBatch(ctx, evs); err != nil {
		errs = append(errs, err)
	}
	if l.o.Notifier != nil {
		l.o.Notifier.Notify(context.WithoutCancel(ctx), Notice{Kind: kind, At: now, By: by, Reason: reason, User: &u, Report: rep})
	}
	return u, rep, errors.Join(errs...)
}

// ownerWhy is the reason recorded on an owner's agents, approvals and
// credentials when the owner is deactivated or deleted.
func ownerWhy(email, reason string, del bool) string {
	why := fmt.Sprintf("owner %s was deactivated", email)
	if del {
		why = fmt.Sprintf("owner %s was deleted", email)
	}
	if reason != "" {
		why += ": " + reason
	}
	return why
}

// deactivateTx is deactivate on a store with store.OwnerCascade: the store
// changes in one transaction, then the sessions are closed, security is
// notified and the audit story (the same events as the step-by-step
// cascade's, in the same order) is appended in one batch.
func (l *Lifecycle) deactivateTx(ctx context.Context, oc store.OwnerCascade, u store.User, ref, by, reason string, del bool, now time.Time, rep Report) (store.User, Report, error) {
	r, story := l.r, rep.Story
	why := ownerWhy(u.Email, reason, del)
	res, err := oc.DeactivateOwner(ctx, u.ID, del, now, by, why)
	r.invalidate()
	if err != nil {
		return store.User{}, rep, fmt.Errorf("registry: deactivate user %s: %w", ref, err)
	}
	u = res.User
	kind := "user_deactivated"
	if del {
		kind = "user_deleted"
	}
	var errs []error
	agents, err := l.ownedAgents(ctx, u.ID)
	if err != nil {
		errs = append(errs, err)
	}
	owned := make([]string, 0, len(agents))
	var stop []string
	for _, a := range agents {
		owned = append(owned, a.ID)
		if a.State != store.AgentDecommissioned {
			stop = append(stop, a.ID)
		}
	}
	// Agents the cascade changed that the listing missed (reassigned
	// meanwhile) are stopped and reported too.
	seen := make(map[string]bool, len(stop))
	for _, id := range stop {
		seen[id] = true
	}
	add := func(id string) {
		if !seen[id] {
			seen[id] = true
			stop = append(stop, id)
		}
	}
	for _, a := range res.Agents {
		add(a.ID)
	}
	for _, a := range res.Approvals {
		add(a.AgentID)
	}
	for _, c := range res.Credentials {
		add(c.AgentID)
	}
	var evs []audit.Event
	if res.UserChanged {
		// The user's record comes first in the story: it is what made the
		// gate refuse.
		evs = append(evs, audit.Event{Type: kind, CallID: story, Time: now, Data: map[string]any{
			"user_id": u.ID, "email": u.Email, "external_id": u.ExternalID, "source": u.Source,
			"by": by, "reason": reason, "agents": owned,
		}})
	}
	// What approval.Service.Cancel records for each approval.
	for _, a := range res.Approvals {
		evs = append(evs, audit.Event{Type: "approval_cancelled", CallID: a.DecisionID, AgentID: a.AgentID, Time: now, Data: map[string]any{
			"state": a.State, "reason": a.Reason, "decided_at": a.DecidedAt,
			"approval_id": a.ID, "decision_id": a.DecisionID, "tool": a.Upstream + "." + a.Tool,
		}})
	}
	for _, a := range res.Agents {
		rep.Agents = append(rep.Agents, a.ID)
		evs = append(evs, audit.Event{Type: "agent_orphaned", CallID: story, AgentID: a.ID, Time: now, Data: map[string]any{
			"owner_id": u.ID, "owner": u.Email, "from": res.AgentsFrom[a.ID], "to": store.AgentOrphaned, "by": by, "reason": why,
		}})
	}
	byAgent := map[string][]string{}
	for _, a := range res.Approvals {
		byAgent[a.AgentID] = append(byAgent[a.AgentID], a.ID)
		rep.ApprovalsCancelled = append(rep.ApprovalsCancelled, a.ID)
	}
	for _, id := range stop {
		if got := byAgent[id]; len(got) > 0 {
			evs = append(evs, audit.Event{Type: "approvals_cancelled", CallID: story, AgentID: id, Time: now, Data: map[string]any{
				"count": len(got), "ids": got, "reason": why,
			}})
		}
	}
	byAgent = map[string][]string{}
	for _, c := range res.Credentials {
		byAgent[c.AgentID] = append(byAgent[c.AgentID], c.ID)
		rep.CredentialsRevoked = append(rep.CredentialsRevoked, c.ID)
	}
	for _, id := range stop {
		if got := byAgent[id]; len(got) > 0 {
			evs = append(evs, audit.Event{Type: "credentials_revoked", CallID: story, AgentID: id, Time: now, Data: map[string]any{
				"count": len(got), "ids": got, "reason": why,
			}})
		}
	}
	// The status lists are built from the store at each request (the
	// issuer's cache is keyed by the revoked indexes), so the revocations
	// show at once without the issuer.
	if l.o.Sessions != nil && len(stop) > 0 {
		s, q := l.o.Sessions.CloseAgents(stop, why)
		rep.SessionsClosed += s
		rep.RequestsClosed += q
	}
	if _, err := l.o.Audit.AppendBatch(ctx, evs); err != nil {
		errs = append(errs, err)
	}
	if l.o.Notifier != nil {
		l.o.Notifier.Notify(context.WithoutCancel(ctx), Notice{Kind: kind, At: now, By: by, Reason: reason, User: &u, Report: rep})
	}
	return u, rep, errors.Join(errs...)
}

// ActivateUser makes the user (email or id) active again (and not
// deleted). It does not reactivate the agents orphaned when the user was
// deactivated: that is ReassignAgent's, one agent at a time.
func (l *Lifecycle) ActivateUser(ctx context.Context, ref, by, reason string) (store.User, error) {
	r := l.r
	u, err := r.ResolveUser(ctx, ref)
	if err != nil {
		return store.User{}, err
	}
	now := store.NormalizeTime(r.now())
	id := u.ID
	u, err = r.UpdateUser(ctx, id, func(x store.User) (store.User, error) {
		if x.Active && x.DeletedAt.IsZero() {
			return x, errUnchanged
		}
		x.Active, x.DeletedAt, x.UpdatedAt = true, time.Time{}, now
		return x, nil
	})
	if errors.Is(err, errUnchanged) {
		return r.GetUser(ctx, id)
	}
	if err != nil {
		return store.User{}, fmt.Errorf("registry: activate user %s: %w", ref, err)
	}
	_, err = l.o.Audit.Append(ctx, audit.Event{Type: "user_activated", Time: now, Data: map[string]any{
		"user_id": u.ID, "email": u.Email, "by": by, "reason": reason,
	}})
	return u, err
}

// ---- agents ----

// SuspendAgent stops an active agent: it becomes suspended (the gate
// refuses it at once), its pending approvals are cancelled, its live
// credentials revoked and its sessions closed. Suspending an agent that is
// not active changes nothing and is not an error (the report lists it as
// skipped).
func (l *Lifecycle) SuspendAgent(ctx context.Context, id, by, reason string) (Report, error) {
	return l.Stop(ctx, Selector{Agent: id}, by, reason)
}

// beginSelected starts an operation on the agents sel picks: the agents,
// the time, and a report with a new story id.
func (l *Lifecycle) beginSelected(ctx context.Context, sel Selector) ([]store.Agent, time.Time, Report, error) {
	if err := sel.valid(); err != nil {
		return nil, time.Time{}, Report{}, err
	}
	agents, err := l.selectAgents(ctx, sel)
	if err != nil {
		return nil, time.Time{}, Report{}, err
	}
	story, err := l.r.newID("lc_")
	if err != nil {
		return nil, time.Time{}, Report{}, err
	}
	return agents, store.NormalizeTime(l.r.now()), Report{Story: story, Skipped: map[string]string{}}, nil
}

// Stop is the emergency stop: it suspends every active agent the selector
// picks, then runs the cascade for them all at once.
func (l *Lifecycle) Stop(ctx context.Context, sel Selector, by, reason string) (Report, error) {
	r := l.r
	agents, now, rep, err := l.beginSelected(ctx, sel)
	if err != nil {
		return Report{}, err
	}
	why := "suspended"
	if reason != "" {
		why += ": " + reason
	}
	var errs []error
	var evs []audit.Event
	var stop []string
	for _, a := range agents {
		_, err := r.UpdateAgent(ctx, a.ID, func(x store.Agent) (store.Agent, error) {
			if x.State != store.AgentActive {
				return x, fmt.Errorf("%w: it is %s", errUnchanged, x.State)
			}
			x.State, x.StateChangedAt, x.StateChangedBy, x.StateReason, x.UpdatedAt = store.AgentSuspended, now, by, reason, now
			return x, nil
		})
		switch {
		case errors.Is(err, errUnchanged):
			rep.Skipped[a.ID] = strings.TrimPrefix(err.Error(), "unchanged: ")
			if a.State == store.AgentSuspended {
				// Stopping it again completes a cascade that failed.
				stop = append(stop, a.ID)
			}
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("registry: suspend agent %s: %w", a.ID, err))
			continue
		}
		rep.Agents = append(rep.Agents, a.ID)
		stop = append(stop, a.ID)
		evs = append(evs, audit.Event{Type: "agent_suspended", CallID: rep.Story, AgentID: a.ID, Time: now, Data: map[string]any{
			"from": store.AgentActive, "to": store.AgentSuspended, "by": by, "reason": reason,
		}})
	}
	errs = append(errs, l.stopAgents(ctx, stop, why, rep.Story, now, &rep, &evs))
	if sel.Agent == "" {
		evs = append([]audit.Event{{Type: "emergency_stop", CallID: rep.Story, Time: now, Data: map[string]any{
			"all": sel.All, "owner": sel.Owner, "agents": rep.Agents, "by": by, "reason": reason,
		}}}, evs...)
	}
	if _, err := l.o.Audit.AppendBatch(ctx, evs); err != nil {
		errs = append(errs, err)
	}
	if l.o.Notifier != nil && len(rep.Agents) > 0 {
		kind := "agent_suspended"
		if sel.Agent == "" {
			kind = "emergency_stop"
		}
		l.o.Notifier.Notify(context.WithoutCancel(ctx), Notice{Kind: kind, At: now, By: by, Reason: reason, Report: rep})
	}
	return rep, errors.Join(errs...)
}

// ResumeAgent makes a suspended agent active again. Its owner must be
// active: an agent whose owner is not is refused (reassign it instead).
func (l *Lifecycle) ResumeAgent(ctx context.Context, id, by, reason string) (store.Agent, error) {
	rep, err := l.Resume(ctx, Selector{Agent: id}, by, reason)
	if err != nil {
		return store.Agent{}, err
	}
	if why, ok := rep.Skipped[id]; ok {
		return store.Agent{}, fmt.Errorf("registry: resume agent %s: %s: %w", id, why, store.ErrInvalid)
	}
	return l.r.GetAgent(ctx, id)
}

// Resume makes every suspended agent the selector picks active again,
// where its owner is active; the others are reported as skipped.
func (l *Lifecycle) Resume(ctx context.Context, sel Selector, by, reason string) (Report, error) {
	r := l.r
	agents, now, rep, err := l.beginSelected(ctx, sel)
	if err != nil {
		return Report{}, err
	}
	owners := map[string]store.User{}
	var errs []error
	var evs []audit.Event
	for _, a := range agents {
		o, ok := owners[a.OwnerID]
		if !ok {
			if o, err = r.store.GetUser(ctx, a.OwnerID); err != nil {
				errs = append(errs, fmt.Errorf("registry: resume agent %s: owner: %w", a.ID, err))
				continue
			}
			owners[a.OwnerID] = o
		}
		_, err := r.UpdateAgent(ctx, a.ID, func(x store.Agent) (store.Agent, error) {
			switch {
			case x.State != store.AgentSuspended:
				return x, fmt.Errorf("%w: it is %s, not suspended", errUnchanged, x.State)
			case x.OwnerID != o.ID:
				return x, fmt.Errorf("%w: its owner changed meanwhile", errUnchanged)
			case !o.Active:
				return x, fmt.Errorf("%w: its owner %s is deactivated; reassign it to an active owner", errUnchanged, o.Email)
			}
			x.State, x.StateChangedAt, x.StateChangedBy, x.StateReason, x.UpdatedAt = store.AgentActive, now, by, reason, now
			return x, nil
		})
		switch {
		case errors.Is(err, errUnchanged):
			rep.Skipped[a.ID] = strings.TrimPrefix(err.Error(), "unchanged: ")
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("registry: resume agent %s: %w", a.ID, err))
			continue
		}
		rep.Agents = append(rep.Agents, a.ID)
		evs = append(evs, audit.Event{Type: "agent_resumed", CallID: rep.Story, AgentID: a.ID, Time: now, Data: map[string]any{
			"from": store.AgentSuspended, "to": store.AgentActive, "by": by, "reason": reason,
		}})
	}
	if _, err := l.o.Audit.AppendBatch(ctx, evs); err != nil {
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}

// ReassignAgent gives the agent a new owner, who must exist and be active.
// An orphaned (or active) agent becomes active; a suspended one stays
// suspended under its new owner; a decommissioned one cannot be
// reassigned.
func (l *Lifecycle) ReassignAgent(ctx context.Context, id, toRef, by, reason string) (store.Agent, error) {
	r := l.r
	to, err := r.ResolveUser(ctx, toRef)
	if err != nil {
		return store.Agent{}, fmt.Errorf("registry: reassign agent %s: new owner: %w", id, err)
	}
	if !to.Active {
		return store.Agent{}, fmt.Errorf("registry: reassign agent %s: new owner %s is deactivated: %w", id, to.Email, store.ErrInvalid)
	}
	now := store.NormalizeTime(r.now())
	var old store.Agent
	a, err := r.UpdateAgent(ctx, id, func(x store.Agent) (store.Agent, error) {
		old = x
		if x.State == store.AgentDecommissioned {
			return x, fmt.Errorf("registry: reassign agent %s: it is decommissioned: %w", id, store.ErrInvalid)
		}
		x.OwnerID, x.UpdatedAt = to.ID, now
		if x.State == store.AgentOrphaned || x.State == store.AgentActive {
			x.State = store.AgentActive
		}
		x.StateChangedAt, x.StateChangedBy = now, by
		x.StateReason = "reassigned to " + to.Email
		if reason != "" {
			x.StateReason += ": " + reason
		}
		return x, nil
	})
	if err != nil {
		return store.Agent{}, fmt.Errorf("registry: reassign agent %s: %w", id, err)
	}
	from := ""
	if o, err := r.store.GetUser(ctx, old.OwnerID); err == nil {
		from = o.Email
	}
	_, err = l.o.Audit.Append(ctx, audit.Event{Type: "agent_reassigned", AgentID: id, Time: now, Data: map[string]any{
		"from_owner": from, "from_owner_id": old.OwnerID, "to_owner": to.Email, "to_owner_id": to.ID,
		"from": old.State, "to": a.State, "by": by, "reason": reason,
	}})
	return a, err
}

// SetAllowedUpstreams replaces the upstreams the agent may call (empty:
// every upstream; see Registry.SetAllowedUpstreams) and audits the change
// (agent_upstreams_set, with the old and new lists and who made it). The
// gate applies it from the agent's next call.
func (l *Lifecycle) SetAllowedUpstreams(ctx context.Context, id string, upstreams []string, by string) (store.Agent, error) {
	old, a, err := l.r.SetAllowedUpstreams(ctx, id, upstreams)
	if err != nil {
		return store.Agent{}, err
	}
	_, err = l.o.Audit.Append(ctx, audit.Event{Type: "agent_upstreams_set", AgentID: id, Time: a.UpdatedAt, Data: map[string]any{
		"from_upstreams": upstreamsData(old.AllowedUpstreams), "upstreams": upstreamsData(a.AllowedUpstreams), "by": by,
	}})
	return a, err
}

// upstreamsData is an allowed-upstreams list for an audit event: never
// null.
func upstreamsData(ups []string) []string {
	if ups == nil {
		return []string{}
	}
	return ups
}

// DecommissionAgent retires the agent for good: it becomes decommissioned
// (terminal), every token it has is revoked, its pending approvals are
// cancelled, its live credentials revoked and its sessions closed.
// Decommissioning it again completes a cascade that failed half-way.
func (l *Lifecycle) DecommissionAgent(ctx context.Context, id, by, reason string) (Report, error) {
	r := l.r
	now := store.NormalizeTime(r.now())
	story, err := r.newID("lc_")
	if err != nil {
		return Report{}, err
	}
	rep := Report{Story: story}
	var from store.AgentState
	_, err = r.UpdateAgent(ctx, id, func(x store.Agent) (store.Agent, error) {
		from = x.State
		if x.State == store.AgentDecommissioned {
			return x, errUnchanged
		}
		x.State, x.StateChangedAt, x.StateChangedBy, x.StateReason, x.UpdatedAt = store.AgentDecommissioned, now, by, reason, now
		return x, nil
	})
	if err != nil && !errors.Is(err, errUnchanged) {
		return rep, fmt.Errorf("registry: decommission agent %s: %w", id, err)
	}
	var evs []audit.Event
	var errs []error
	if err == nil {
		rep.Agents = []string{id}
		evs = append(evs, audit.Event{Type: "agent_decommissioned", CallID: story, AgentID: id, Time: now, Data: map[string]any{
			"from": from, "to": store.AgentDecommissioned, "by": by, "reason": reason,
		}})
	}
	toks, err := r.store.ListAgentTokens(ctx, id)
	if err != nil {
		errs = append(errs, err)
	}
	for _, t := range toks {
		if !t.RevokedAt.IsZero() {
			continue
		}
		if err := r.store.RevokeAgentToken(ctx, t.ID, now); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.TokensRevoked = append(rep.TokensRevoked, t.ID)
	}
	r.invalidate()
	if len(rep.TokensRevoked) > 0 {
		evs = append(evs, audit.Event{Type: "agent_tokens_revoked", CallID: story, AgentID: id, Time: now, Data: map[string]any{
			"count": len(rep.TokensRevoked), "ids": rep.TokensRevoked, "by": by, "reason": "agent decommissioned",
		}})
	}
	why := "decommissioned"
	if reason != "" {
		why += ": " + reason
	}
	errs = append(errs, l.stopAgents(ctx, []string{id}, why, story, now, &rep, &evs))
	if _, err := l.o.Audit.AppendBatch(ctx, evs); err != nil {
		errs = append(errs, err)
	}
	if l.o.Notifier != nil && len(rep.Agents) > 0 {
		l.o.Notifier.Notify(context.WithoutCancel(ctx), Notice{Kind: "agent_decommissioned", At: now, By: by, Reason: reason, Report: rep})
	}
	return rep, errors.Join(errs...)
}

// History returns the agent's lifecycle audit events (its state history),
// oldest first.
func (l *Lifecycle) History(ctx context.Context, agentID string) ([]store.AuditEvent, error) {
	evs, err := l.r.store.ListAudit(ctx, store.AuditFilter{AgentID: agentID, Types: LifecycleEventTypes})
	if err != nil {
		return nil, fmt.Errorf("registry: history of agent %s: %w", agentID, err)
	}
	return evs, nil
}

// ---- the cascade ----

// stopAgents cancels the pending approvals of the agents, revokes their
// live credentials and closes their sessions, adding to rep and to evs
// the per-agent approvals_cancelled and credentials_revoked events.
func (l *Lifecycle) stopAgents(ctx context.Context, ids []string, why, story string, now time.Time, rep *Report, evs *[]audit.Event) error {
	if len(ids) == 0 {
		return nil
	}
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	var errs []error
	// Approvals first: a held call must not go ahead on an approval that
	// arrives now.
	cancelled, err := l.cancelApprovals(ctx, ids, set, why, now)
	if err != nil {
		errs = append(errs, err)
	}
	byAgent := map[string][]string{}
	for _, a := range cancelled {
		byAgent[a.AgentID] = append(byAgent[a.AgentID], a.ID)
		rep.ApprovalsCancelled = append(rep.ApprovalsCancelled, a.ID)
	}
	for _, id := range ids {
		if got := byAgent[id]; len(got) > 0 {
			*evs = append(*evs, audit.Event{Type: "approvals_cancelled", CallID: story, AgentID: id, Time: now, Data: map[string]any{
				"count": len(got), "ids": got, "reason": why,
			}})
		}
	}

	revoked, err := l.revokeCredentials(ctx, set, why, now)
	if err != nil {
		errs = append(errs, err)
	}
	byAgent = map[string][]string{}
	for _, c := range revoked {
		byAgent[c.AgentID] = append(byAgent[c.AgentID], c.ID)
		rep.CredentialsRevoked = append(rep.CredentialsRevoked, c.ID)
	}
	for _, id := range ids {
		if got := byAgent[id]; len(got) > 0 {
			*evs = append(*evs, audit.Event{Type: "credentials_revoked", CallID: story, AgentID: id, Time: now, Data: map[string]any{
				"count": len(got), "ids": got, "reason": why,
			}})
		}
	}

	if l.o.Sessions != nil {
		s, q := l.o.Sessions.CloseAgents(ids, why)
		rep.SessionsClosed += s
		rep.RequestsClosed += q
	}
	return errors.Join(errs...)
}

func (l *Lifecycle) cancelApprovals(ctx context.Context, ids []string, set map[string]bool, why string, now time.Time) ([]store.Approval, error) {
	st := l.r.store
	if l.o.Approvals == nil {
		cancelled, err := st.CancelAgentApprovals(ctx, ids, why, now)
		if err != nil {
			return nil, fmt.Errorf("registry: cancel approvals: %w", err)
		}
		// What approval.Service.Cancel records for each.
		evs := make([]audit.Event, 0, len(cancelled))
		for _, a := range cancelled {
			evs = append(evs, audit.Event{Type: "approval_cancelled", CallID: a.DecisionID, AgentID: a.AgentID, Time: now, Data: map[string]any{
				"state": a.State, "reason": a.Reason, "decided_at": a.DecidedAt,
				"approval_id": a.ID, "decision_id": a.DecisionID, "tool": a.Upstream + "." + a.Tool,
			}})
		}
		if _, err := l.o.Audit.AppendBatch(ctx, evs); err != nil {
			return cancelled, err
		}
		return cancelled, nil
	}
	pending, err := st.ListApprovals(ctx, store.ApprovalFilter{State: store.ApprovalPending})
	if err != nil {
		return nil, fmt.Errorf("registry: cancel approvals: %w", err)
	}
	var out []store.Approval
	var errs []error
	for _, a := range pending {
		if !set[a.AgentID] {
			continue
		}
		c, err := l.o.Approvals.Cancel(ctx, a.ID, why)
		switch {
		case errors.Is(err, store.ErrNotPending):
			continue // decided meanwhile
		case err != nil:
			errs = append(errs, err)
			continue
		}
		out = append(out, c)
	}
	// Anything that became pending meanwhile, or that ListApprovals'
	// snapshot missed, is cancelled in the store.
	rest, err := st.CancelAgentApprovals(ctx, ids, why, now)
	if err != nil {
		errs = append(errs, err)
	}
	out = append(out, rest...)
	return out, errors.Join(errs...)
}

// revokeCredentials revokes every live credential of the agents in set. It
// reads the live credentials once (not once per agent: the listing scans)
// and revokes them with Workers concurrent writers.
func (l *Lifecycle) revokeCredentials(ctx context.Context, set map[string]bool, why string, now time.Time) ([]store.Credential, error) {
	st := l.r.store
	f := store.CredentialFilter{Unexpired: true, Now: now}
	if len(set) == 1 {
		for id := range set {
			f.AgentID = id
		}
	}
	live, err := st.ListCredentials(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("registry: revoke credentials: list: %w", err)
	}
	var todo []store.Credential
	for _, c := range live {
		if set[c.AgentID] {
			todo = append(todo, c)
		}
	}
	if len(todo) == 0 {
		return nil, nil
	}
	var (
		mu   sync.Mutex
		out  = make([]store.Credential, 0, len(todo))
		errs []error
		wg   sync.WaitGroup
		next = make(chan store.Credential)
	)
	for range min(l.o.Workers, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				var err error
				if l.o.Credentials != nil {
					c, err = l.o.Credentials.Revoke(ctx, c.ID, why)
				} else {
					c, err = st.RevokeCredential(ctx, c.ID, now, why)
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("registry: revoke credential %s: %w", c.ID, err))
				} else {
					out = append(out, c)
				}
				mu.Unlock()
			}
		}()
	}
	for _, c := range todo {
		next <- c
	}
	close(next)
	wg.Wait()
	slices.SortFunc(out, func(a, b store.Credential) int { return strings.Compare(a.ID, b.ID) })
	return out, errors.Join(errs...)
}

// ownedAgents lists the agents owned by userID.
func (l *Lifecycle) ownedAgents(ctx context.Context, userID string) ([]store.Agent, error) {
	all, err := l.r.store.ListAgents(ctx)
	if err != nil {
		return nil, fmt.Errorf("registry: list agents: %w", err)
	}
	var out []store.Agent
	for _, a := range all {
		if a.OwnerID == userID {
			out = append(out, a)
		}
	}
	return out, nil
}

func (l *Lifecycle) selectAgents(ctx context.Context, sel Selector) ([]store.Agent, error) {
	switch {
	case sel.Agent != "":
		a, err := l.r.GetAgent(ctx, sel.Agent)
		if err != nil {
			return nil, err
		}
		return []store.Agent{a}, nil
	case sel.Owner != "":
		u, err := l.r.ResolveUser(ctx, sel.Owner)
		if err != nil {
			return nil, err
		}
		return l.ownedAgents(ctx, u.ID)
	}
	return l.r.ListAgents(ctx)
}
