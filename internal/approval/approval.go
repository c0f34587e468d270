// Package approval asks humans to approve agent tool calls that the policy
// marks "approve": it opens an approval request (or joins the pending one
// for the same action), works out who may approve it, tells them, records
// their votes under the rule's quorum and separation of duties, and wakes
// whoever waits for the outcome. Every transition is an audit event.
//
// The store keeps the state machine atomic (votes, quorum, expiry), so
// several gateway replicas can share one database: a waiter re-reads the
// store every PollInterval, and is woken at once when the decision is
// taken in its own process.
//
// It must not decide what needs approval (the policy does) nor how an
// approver proves presence (the console checks the passkey assertion and
// passes the method and evidence in).
package approval

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/store"
)

// Defaults.
const (
	DefaultTTL          = 10 * time.Minute
	DefaultPollInterval = 250 * time.Millisecond
	maxTTL              = 24 * time.Hour
)

// Store is the part of the store the service uses.
type Store interface {
	CreateApproval(ctx context.Context, a store.Approval) error
	GetApproval(ctx context.Context, id string) (store.Approval, error)
	ListApprovals(ctx context.Context, f store.ApprovalFilter) ([]store.Approval, error)
	FindPendingApproval(ctx context.Context, agentID, upstream, tool, argsDigest string, now time.Time) (store.Approval, error)
	VoteApproval(ctx context.Context, id string, v store.ApprovalVote) (store.Approval, error)
	FinishApproval(ctx context.Context, id string, state store.ApprovalState, reason string, at time.Time) (store.Approval, error)
	ExpireApprovals(ctx context.Context, now time.Time) ([]store.Approval, error)
	GetUser(ctx context.Context, id string) (store.User, error)
	GetUserByEmail(ctx context.Context, email string) (store.User, error)
	ListUsers(ctx context.Context) ([]store.User, error)
	GetAgent(ctx context.Context, id string) (store.Agent, error)
}

// Auditor appends to the audit log.
type Auditor interface {
	Append(ctx context.Context, ev audit.Event) (int64, error)
}

// Notifier tells the people who may approve a new request about it (link
// is the request's page in the console). It must not block for long.
type Notifier interface {
	Notify(a store.Approval, approvers []store.User, link string)
}

// Options configure a Service. Store and Audit are required.
type Options struct {
	Store    Store
	Audit    Auditor
	Notifier Notifier
	// ConsoleURL is the console's base URL; a request's page is
	// ConsoleURL + "/approvals/" + id.
	ConsoleURL string
	// DefaultTTL is how long a request stays pending when the caller does
	// not say (default 10 minutes).
	DefaultTTL time.Duration
	// PollInterval is how often a waiter re-reads the store, to see a
	// decision taken on another replica (default 250 ms).
	PollInterval time.Duration
	Now          func() time.Time
	Logger       *slog.Logger
}

// Errors of Vote (besides the store's ErrNotFound, ErrNotPending and
// ErrAlreadyExists for a second vote by the same person).
var (
	// ErrNotEligible: the voter is not among the required approvers.
	ErrNotEligible = errors.New("approval: not an approver of this request")
	// ErrSeparationOfDuties: the rule forbids the agent's owner to approve.
	ErrSeparationOfDuties = errors.New("approval: separation of duties: the agent's owner may not approve this request")
	// ErrInactive: the voter's account is deactivated.
	ErrInactive = errors.New("approval: the approver's account is not active")
	// ErrNoApprover: nobody can approve the request (no active user
	// matches the rule's approvers).
	ErrNoApprover = errors.New("approval: nobody can approve this request")
)

// Service is the approval engine. It is safe for concurrent use.
type Service struct {
	o   Options
	log *slog.Logger

	mu      sync.Mutex
	waiters map[string][]chan struct{}
	subs    map[chan store.Approval]struct{}
}

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Audit == nil {
		return nil, errors.New("approval: Options.Store and Options.Audit are required")
	}
	if o.DefaultTTL <= 0 {
		o.DefaultTTL = DefaultTTL
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.ConsoleURL = strings.TrimRight(o.ConsoleURL, "/")
	return &Service{o: o, log: o.Logger, waiters: map[string][]chan struct{}{}, subs: map[chan store.Approval]struct{}{}}, nil
}

// Link returns the console page of approval id.
func (s *Service) Link(id string) string { return s.o.ConsoleURL + "/approvals/" + id }

// Request is what Open needs to ask for an approval.
type Request struct {
	Principal  store.Principal
	DecisionID string
	Upstream   string
	Tool       string
	// Arguments are shown to approvers (already redacted by the caller).
	Arguments  map[string]any
	ArgsDigest string
	Rule       string
	Approvers  []string // "owner", "role:R", "user:EMAIL"
	Quorum     int      // default 1
	// SeparationOfDuties: the agent's owner may not approve.
	SeparationOfDuties bool
	// Message is the binding message; empty: Message() builds one.
	Message   string
	RiskScore int
	Amount    *float64
	Source    string // "mcp" or "ciba"
	// TTL is how long the request stays pending (default Options.DefaultTTL).
	TTL        time.Duration
	ClientData []byte
}

// Open opens an approval request for r, or joins the pending one for the
// same agent, tool and arguments (a retried call). It fails with
// ErrNoApprover when no active user can approve it.
func (s *Service) Open(ctx context.Context, r Request) (a store.Approval, joined bool, err error) {
	now := s.o.Now()
	a, err = s.o.Store.FindPendingApproval(ctx, r.Principal.Agent.ID, r.Upstream, r.Tool, r.ArgsDigest, now)
	if err == nil {
		return a, true, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return store.Approval{}, false, fmt.Errorf("approval: looking for a pending request: %w", err)
	}
	if r.Quorum < 1 {
		r.Quorum = 1
	}
	ttl := r.TTL
	if ttl <= 0 {
		ttl = s.o.DefaultTTL
	}
	ttl = min(ttl, maxTTL)
	args, err := json.Marshal(r.Arguments)
	if err != nil {
		return store.Approval{}, false, fmt.Errorf("approval: arguments: %w", err)
	}
	msg := r.Message
	if msg == "" {
		msg = Message(r)
	}
	a = store.Approval{
		ID: newID(), AgentID: r.Principal.Agent.ID, OwnerID: r.Principal.Owner.ID, DecisionID: r.DecisionID,
		Upstream: r.Upstream, Tool: r.Tool, ArgsDigest: r.ArgsDigest, Arguments: args, Rule: r.Rule,
		Approvers: r.Approvers, Quorum: r.Quorum, SeparationOfDuties: r.SeparationOfDuties,
		BindingMessage: msg, RiskScore: r.RiskScore, Source: r.Source, ClientData: r.ClientData,
		State: store.ApprovalPending, CreatedAt: store.NormalizeTime(now), ExpiresAt: store.NormalizeTime(now.Add(ttl)),
	}
	approvers, err := s.Eligible(ctx, a)
	if err != nil {
		return store.Approval{}, false, err
	}
	if len(approvers) < a.Quorum {
		return store.Approval{}, false, fmt.Errorf("%w: the rule needs %d approval(s) from %s, and %d active user(s) qualify",
			ErrNoApprover, a.Quorum, ApproversText(a.Approvers), len(approvers))
	}
	if err := s.o.Store.CreateApproval(ctx, a); err != nil {
		return store.Approval{}, false, fmt.Errorf("approval: create: %w", err)
	}
	emails := make([]string, len(approvers))
	for i, u := range approvers {
		emails[i] = u.Email
	}
	if err := s.audit(ctx, a, "approval_requested", map[string]any{
		"approvers": a.Approvers, "quorum": a.Quorum, "separation_of_duties": a.SeparationOfDuties,
		"notified": emails, "binding_message": a.BindingMessage, "expires_at": a.ExpiresAt, "source": a.Source,
	}); err != nil {
		// Fail closed: an approval without its audit record is cancelled.
		s.o.Store.FinishApproval(context.WithoutCancel(ctx), a.ID, store.ApprovalCancelled, "could not be recorded in the audit log", s.o.Now())
		return store.Approval{}, false, err
	}
	if s.o.Notifier != nil {
		s.o.Notifier.Notify(a, approvers, s.Link(a.ID))
	}
	s.publish(a)
	return a, false, nil
}

// Wait returns approval id once it is no longer pending, or its pending
// state when ctx ends first (with ctx's error).
func (s *Service) Wait(ctx context.Context, id string) (store.Approval, error) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.waiters[id] = append(s.waiters[id], ch)
	s.mu.Unlock()
	defer s.unwait(id, ch)
	t := time.NewTicker(s.o.PollInterval)
	defer t.Stop()
	for {
		a, err := s.o.Store.GetApproval(context.WithoutCancel(ctx), id)
		if err != nil {
			return store.Approval{}, fmt.Errorf("approval: %w", err)
		}
		if a.State != store.ApprovalPending {
			return a, nil
		}
		if !s.o.Now().Before(a.ExpiresAt) {
			if a, err := s.expire(context.WithoutCancel(ctx), id); err == nil {
				return a, nil
			}
		}
		select {
		case <-ctx.Done():
			return a, ctx.Err()
		case <-ch:
		case <-t.C:
		}
	}
}

func (s *Service) unwait(id string, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.waiters[id]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.waiters, id)
	} else {
		s.waiters[id] = list
	}
}

// publish tells this process's waiters and subscribers that a changed,
// and the other processes on the store when it can tell them.
func (s *Service) publish(a store.Approval) {
	if ch, ok := s.o.Store.(store.Changes); ok {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := ch.Notify(ctx, store.TopicApprovals, a.ID); err != nil {
				s.log.Warn("could not tell other replicas about an approval", "approval", a.ID, "err", err)
			}
		}()
	}
	s.publishLocal(a)
}

// publishLocal wakes this process's waiters and subscribers.
func (s *Service) publishLocal(a store.Approval) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.waiters[a.ID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	for ch := range s.subs {
		select {
		case ch <- a:
		default: // a slow subscriber misses an update; it re-reads on the next
		}
	}
}

// Subscribe returns a channel of approvals as they open and change in this
// process (for live pages), and a function to stop.
func (s *Service) Subscribe() (<-chan store.Approval, func()) {
	ch := make(chan store.Approval, 16)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}
}

// Vote is one approver's decision.
type Vote struct {
	Approve bool
	Reason  string // required for a denial
	// Method is how the approver proved presence, e.g. "webauthn-uv".
	Method   string
	Evidence []byte // JSON kept as evidence in the store and the audit log
}

// Vote records voter's vote on approval id after checking that they may
// cast it.
func (s *Service) Vote(ctx context.Context, id string, voter store.User, v Vote) (store.Approval, error) {
	a, err := s.o.Store.GetApproval(ctx, id)
	if err != nil {
		return store.Approval{}, fmt.Errorf("approval: %w", err)
	}
	if err := s.CanVote(ctx, a, voter); err != nil {
		return a, err
	}
	if !v.Approve && strings.TrimSpace(v.Reason) == "" {
		v.Reason = "denied without a reason"
	}
	now := s.o.Now()
	after, err := s.o.Store.VoteApproval(ctx, id, store.ApprovalVote{UserID: voter.ID, Email: voter.Email, Approve: v.Approve,
		Reason: v.Reason, Method: v.Method, Evidence: v.Evidence, At: now})
	if err != nil {
		return a, fmt.Errorf("approval: vote: %w", err)
	}
	data := map[string]any{"voter": voter.Email, "approve": v.Approve, "reason": v.Reason, "method": v.Method,
		"state": after.State, "approvals": approveCount(after), "quorum": after.Quorum}
	if len(v.Evidence) > 0 && json.Valid(v.Evidence) {
		data["evidence"] = json.RawMessage(v.Evidence)
	}
	if err := s.audit(ctx, after, "approval_vote", data); err != nil {
		s.log.Error("audit: could not record a vote", "approval", id, "err", err)
	}
	if after.State != store.ApprovalPending {
		s.auditDecided(ctx, after)
	}
	s.publish(after)
	return after, nil
}

// Cancel cancels a pending approval (the agent gave up, or the kill switch).
func (s *Service) Cancel(ctx context.Context, id, reason string) (store.Approval, error) {
	a, err := s.o.Store.FinishApproval(ctx, id, store.ApprovalCancelled, reason, s.o.Now())
	if err != nil {
		return a, fmt.Errorf("approval: cancel: %w", err)
	}
	s.auditDecided(ctx, a)
	s.publish(a)
	return a, nil
}

func (s *Service) expire(ctx context.Context, id string) (store.Approval, error) {
	a, err := s.o.Store.FinishApproval(ctx, id, store.ApprovalExpired, store.ApprovalTimeoutReason, s.o.Now())
	if err != nil {
		return a, err
	}
	s.auditDecided(ctx, a)
	s.publish(a)
	return a, nil
}

// remoteChange handles a notification from another process: id changed
// ("" : anything may have).
func (s *Service) remoteChange(ctx context.Context, id string) {
	var ids []string
	if id != "" {
		ids = []string{id}
	} else {
		s.mu.Lock()
		for k := range s.waiters {
			ids = append(ids, k)
		}
		s.mu.Unlock()
	}
	for _, id := range ids {
		a, err := s.o.Store.GetApproval(ctx, id)
		if err != nil {
			continue
		}
		s.publishLocal(a)
	}
}

// Run expires overdue approvals every interval until ctx ends, and (on a
// store shared by several processes) listens for changes made by the
// others, so that their waiters and live pages hear at once.
func (s *Service) Run(ctx context.Context, interval time.Duration) {
	if ch, ok := s.o.Store.(store.Changes); ok {
		changed := make(chan string, 256)
		ch.Subscribe(ctx, store.TopicApprovals, func(id string) {
			select {
			case changed <- id:
			default: // the waiters' own polling catches up
			}
		})
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case id := <-changed:
					s.remoteChange(ctx, id)
				}
			}
		}()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		expired, err := s.o.Store.ExpireApprovals(ctx, s.o.Now())
		if err != nil {
			s.log.Warn("expiring approvals", "err", err)
			continue
		}
		for _, a := range expired {
			s.auditDecided(ctx, a)
			s.publish(a)
		}
	}
}

func (s *Service) auditDecided(ctx context.Context, a store.Approval) {
	data := map[string]any{"state": a.State, "reason": a.Reason, "decided_at": a.DecidedAt}
	var by []string
	for _, v := range a.Votes {
		if v.Approve == (a.State == store.ApprovalApproved) {
			by = append(by, v.Email)
		}
	}
	if len(by) > 0 {
		data["by"] = by
	}
	if err := s.audit(context.WithoutCancel(ctx), a, "approval_"+string(a.State), data); err != nil {
		s.log.Error("audit: could not record an approval's outcome", "approval", a.ID, "state", a.State, "err", err)
	}
}

func (s *Service) audit(ctx context.Context, a store.Approval, typ string, data map[string]any) error {
	data["approval_id"] = a.ID
	data["decision_id"] = a.DecisionID
	data["tool"] = a.Upstream + "." + a.Tool
	_, err := s.o.Audit.Append(ctx, audit.Event{Type: typ, CallID: a.DecisionID, AgentID: a.AgentID, Data: data})
	if err != nil {
		return fmt.Errorf("approval: audit %s: %w", typ, err)
	}
	return nil
}

// CanVote reports whether u may vote on a: u is active, matches one of
// the approvers, is not the agent's owner when separation of duties
// applies, and has not voted yet.
func (s *Service) CanVote(ctx context.Context, a store.Approval, u store.User) error {
	if !u.Active {
		return ErrInactive
	}
	if a.SeparationOfDuties && u.ID == a.OwnerID {
		return ErrSeparationOfDuties
	}
	for _, v := range a.Votes {
		if v.UserID == u.ID {
			return fmt.Errorf("approval: %s already voted: %w", u.Email, store.ErrAlreadyExists)
		}
	}
	owner, err := s.owner(ctx, a)
	if err != nil {
		return err
	}
	if !matches(a.Approvers, owner, u) {
		return fmt.Errorf("%w: it needs %s", ErrNotEligible, ApproversText(a.Approvers))
	}
	return nil
}

// owner returns the agent's current owner (the one a reassignment made),
// falling back to the owner at creation.
func (s *Service) owner(ctx context.Context, a store.Approval) (store.User, error) {
	id := a.OwnerID
	if ag, err := s.o.Store.GetAgent(ctx, a.AgentID); err == nil {
		id = ag.OwnerID
	}
	u, err := s.o.Store.GetUser(ctx, id)
	if err != nil {
		return store.User{}, fmt.Errorf("approval: the agent's owner: %w", err)
	}
	return u, nil
}

func matches(terms []string, owner, u store.User) bool {
	if len(terms) == 0 {
		terms = []string{"owner"}
	}
	for _, t := range terms {
		switch {
		case t == "owner":
			if u.ID == owner.ID {
				return true
			}
		case strings.HasPrefix(t, "role:"):
			for _, r := range u.Roles {
				if r == strings.TrimPrefix(t, "role:") {
					return true
				}
			}
		case strings.HasPrefix(t, "user:"):
			if strings.EqualFold(u.Email, strings.TrimPrefix(t, "user:")) {
				return true
			}
		}
	}
	return false
}

// Eligible returns the active users who may approve a (ordered by email).
func (s *Service) Eligible(ctx context.Context, a store.Approval) ([]store.User, error) {
	users, err := s.o.Store.ListUsers(ctx)
	if err != nil {
		return nil, fmt.Errorf("approval: listing users: %w", err)
	}
	owner, err := s.owner(ctx, a)
	if err != nil {
		return nil, err
	}
	var out []store.User
	for _, u := range users {
		if !u.Active || (a.SeparationOfDuties && u.ID == a.OwnerID) {
			continue
		}
		if matches(a.Approvers, owner, u) {
			out = append(out, u)
		}
	}
	return out, nil
}

// Pending returns the pending approvals u may vote on, newest first.
func (s *Service) Pending(ctx context.Context, u store.User) ([]store.Approval, error) {
	all, err := s.o.Store.ListApprovals(ctx, store.ApprovalFilter{State: store.ApprovalPending, Limit: 500})
	if err != nil {
		return nil, fmt.Errorf("approval: %w", err)
	}
	var out []store.Approval
	for _, a := range all {
		if s.CanVote(ctx, a, u) == nil {
			out = append(out, a)
		}
	}
	return out, nil
}

// Get returns approval id.
func (s *Service) Get(ctx context.Context, id string) (store.Approval, error) {
	a, err := s.o.Store.GetApproval(ctx, id)
	if err != nil {
		return a, fmt.Errorf("approval: %w", err)
	}
	return a, nil
}

// List returns approvals (newest first).
func (s *Service) List(ctx context.Context, f store.ApprovalFilter) ([]store.Approval, error) {
	return s.o.Store.ListApprovals(ctx, f)
}

func approveCount(a store.Approval) int {
	n := 0
	for _, v := range a.Votes {
		if v.Approve {
			n++
		}
	}
	return n
}

// Approvers returns who approved a, in vote order.
func Approvers(a store.Approval) []store.ApprovalVote {
	var out []store.ApprovalVote
	for _, v := range a.Votes {
		if v.Approve {
			out = append(out, v)
		}
	}
	return out
}

// Denier returns the vote that denied a, if any.
func Denier(a store.Approval) (store.ApprovalVote, bool) {
	for _, v := range a.Votes {
		if !v.Approve {
			return v, true
		}
	}
	return store.ApprovalVote{}, false
}

// ApproversText describes approver terms for people: "the agent's owner
// or a finance-manager".
func ApproversText(terms []string) string {
	if len(terms) == 0 {
		terms = []string{"owner"}
	}
	parts := make([]string, 0, len(terms))
	for _, t := range terms {
		switch {
		case t == "owner":
			parts = append(parts, "the agent's owner")
		case strings.HasPrefix(t, "role:"):
			parts = append(parts, "a "+strings.TrimPrefix(t, "role:"))
		case strings.HasPrefix(t, "user:"):
			parts = append(parts, strings.TrimPrefix(t, "user:"))
		default:
			parts = append(parts, t)
		}
	}
	return strings.Join(parts, " or ")
}

// Message builds the default binding message: who wants to do what, for
// how much, with the arguments a human needs to judge it in a second.
func Message(r Request) string {
	who := r.Principal.Agent.Name
	if who == "" {
		who = r.Principal.Agent.ID
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Your agent %q wants to run %s.%s", who, r.Upstream, r.Tool)
	if r.Amount != nil {
		fmt.Fprintf(&b, " for $%s", money(*r.Amount))
	}
	if len(r.Arguments) > 0 {
		keys := make([]string, 0, len(r.Arguments))
		for k := range r.Arguments {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var kv []string
		for _, k := range keys {
			v, _ := json.Marshal(r.Arguments[k])
			s := string(v)
			if len(s) > 60 {
				s = s[:57] + "..."
			}
			kv = append(kv, k+": "+s)
			if len(kv) == 6 {
				kv = append(kv, "...")
				break
			}
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(kv, ", "))
	}
	b.WriteString(". Approve or deny?")
	return b.String()
}

// FormatAmount formats an amount as binding messages show it: thousands
// separators, and cents only when there are some (1,200 or 12.50).
func FormatAmount(f float64) string { return money(f) }

// money formats an amount with thousands separators and cents when needed.
func money(f float64) string {
	neg := f < 0
	if neg {
		f = -f
	}
	cents := int64(f*100 + 0.5)
	whole, frac := cents/100, cents%100
	s := strconv.FormatInt(whole, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if frac != 0 {
		s += fmt.Sprintf(".%02d", frac)
	}
	if neg {
		s = "-" + s
	}
	return s
}

func newID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "apr_" + hex.EncodeToString(b)
}

// Approved returns the approved requests for exactly this agent, tool and
// arguments that are still within their time (ExpiresAt), newest first: a
// call retried after its approval arrived goes through with one of them
// (the caller makes sure each yields one call).
func (s *Service) Approved(ctx context.Context, agentID, upstream, tool, argsDigest string) ([]store.Approval, error) {
	list, err := s.o.Store.ListApprovals(ctx, store.ApprovalFilter{State: store.ApprovalApproved, AgentID: agentID, Limit: 100})
	if err != nil {
		return nil, fmt.Errorf("approval: %w", err)
	}
	now := s.o.Now()
	var out []store.Approval
	for _, a := range list {
		if a.Upstream == upstream && a.Tool == tool && a.ArgsDigest == argsDigest && now.Before(a.ExpiresAt) {
			out = append(out, a)
		}
	}
	return out, nil
}
