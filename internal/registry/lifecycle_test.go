package registry_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/gate"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
)

// closer records CloseAgents calls.
type closer struct {
	mu    sync.Mutex
	calls [][]string
}

func (c *closer) CloseAgents(ids []string, why string) (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, slices.Clone(ids))
	return len(ids), 0
}

// notices records notices.
type notices struct {
	mu   sync.Mutex
	list []registry.Notice
}

func (n *notices) Notify(_ context.Context, x registry.Notice) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.list = append(n.list, x)
}

type lcEnv struct {
	*env
	reg      *registry.Registry
	lc       *registry.Lifecycle
	audit    *audit.Log
	sessions *closer
	notices  *notices
}

func newLC(t testing.TB) *lcEnv {
	t.Helper()
	e := newEnv(t)
	reg := e.registry(t, time.Hour) // only local invalidation counts
	al, err := audit.New(context.Background(), audit.Options{Store: e.store, Now: e.clock.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	le := &lcEnv{env: e, reg: reg, audit: al, sessions: &closer{}, notices: &notices{}}
	le.lc = registry.NewLifecycle(reg, registry.LifecycleOptions{Audit: al, Sessions: le.sessions, Notifier: le.notices})
	return le
}

func (e *lcEnv) user(t testing.TB, email string) store.User {
	t.Helper()
	u, err := e.reg.CreateUser(context.Background(), registry.UserSpec{Email: email, Name: email})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (e *lcEnv) agent(t testing.TB, id, owner string) string {
	t.Helper()
	_, tok, err := e.reg.CreateAgent(context.Background(), registry.AgentSpec{ID: id, OwnerEmail: owner})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

var credSeq int

// credential records a credential of agent expiring in ttl.
func (e *lcEnv) credential(t testing.TB, agent string, ttl time.Duration) string {
	t.Helper()
	credSeq++
	now := e.clock.Now()
	c := store.Credential{ID: fmt.Sprintf("urn:uuid:cred-%d", credSeq), AgentID: agent, DecisionID: "d", Upstream: "acme", Tool: "t",
		ArgsDigest: "00", KeyID: "k", StatusList: "1", StatusIndex: credSeq, IssuedAt: now, ExpiresAt: now.Add(ttl), Uses: 1}
	if err := e.store.CreateCredential(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c.ID
}

func (e *lcEnv) approval(t testing.TB, agent string) string {
	t.Helper()
	credSeq++
	now := e.clock.Now()
	a := store.Approval{ID: fmt.Sprintf("apr-%d", credSeq), AgentID: agent, DecisionID: fmt.Sprintf("dec-%d", credSeq), Upstream: "acme", Tool: "pay",
		ArgsDigest: "00", Rule: "r", Approvers: []string{"owner"}, Quorum: 1, Source: "mcp", State: store.ApprovalPending,
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := e.store.CreateApproval(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	return a.ID
}

func (e *lcEnv) auditTypes(t testing.TB) []string {
	t.Helper()
	evs, err := e.store.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

func (e *lcEnv) refused(t testing.TB, r *registry.Registry, token string) string {
	t.Helper()
	p, err := r.Authenticate(context.Background(), token)
	if err != nil {
		return err.Error()
	}
	return gate.Inactive(&p)
}

func TestDeactivateUserCascade(t *testing.T) {
	e := newLC(t)
	ctx := context.Background()
	alice := e.user(t, "alice@example.com")
	e.user(t, "bob@example.com")
	tokA := e.agent(t, "a1", "alice@example.com")
	e.agent(t, "a2", "alice@example.com")
	tokB := e.agent(t, "b1", "bob@example.com")
	if _, err := e.lc.SuspendAgent(ctx, "a2", "cli:root", "investigating"); err != nil {
		t.Fatal(err)
	}
	// (A suspended agent's call may be in flight, or an approval may
	// have been opened just before.)
	liveA1 := e.credential(t, "a1", time.Hour)
	liveA2 := e.credential(t, "a2", time.Hour)
	expired := e.credential(t, "a1", -time.Minute)
	liveB := e.credential(t, "b1", time.Hour)
	aprA := e.approval(t, "a2")
	aprB := e.approval(t, "b1")

	// Another replica: its cache is warm with the active principal.
	other := registry.New(registry.Options{Store: e.store, Now: e.clock.Now, GenerationMaxAge: 100 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	defer other.Close()
	if why := e.refused(t, other, tokA); why != "" {
		t.Fatalf("before: other replica refuses: %s", why)
	}
	if why := e.refused(t, e.reg, tokA); why != "" {
		t.Fatalf("before: refused: %s", why)
	}

	e.clock.Advance(time.Second)
	when := e.clock.Now()
	u, rep, err := e.lc.DeactivateUser(ctx, "Alice@Example.com", "scim", "left the company")
	if err != nil {
		t.Fatalf("DeactivateUser: %v", err)
	}
	if u.Active || u.ID != alice.ID {
		t.Errorf("user = %+v; want alice, inactive", u)
	}
	if !slices.Equal(rep.Agents, []string{"a1", "a2"}) {
		t.Errorf("report agents = %v", rep.Agents)
	}
	if slices.Sort(rep.CredentialsRevoked); !slices.Equal(rep.CredentialsRevoked, []string{liveA1, liveA2}) {
		t.Errorf("revoked = %v, want %v", rep.CredentialsRevoked, []string{liveA1, liveA2})
	}
	if !slices.Equal(rep.ApprovalsCancelled, []string{aprA}) {
		t.Errorf("cancelled = %v", rep.ApprovalsCancelled)
	}

	// The very next call, on this replica: refused, saying why and when.
	why := e.refused(t, e.reg, tokA)
	for _, want := range []string{`agent "a1" is orphaned`, when.UTC().Format(time.RFC3339), "alice@example.com was deactivated", "left the company", "reassign", "decommission"} {
		if !strings.Contains(why, want) {
			t.Errorf("refusal %q lacks %q", why, want)
		}
	}
	// On the other replica within its GenerationMaxAge.
	e.clock.Advance(100 * time.Millisecond)
	if why := e.refused(t, other, tokA); !strings.Contains(why, "orphaned") {
		t.Errorf("other replica after max age: %q; want orphaned", why)
	}
	if why := e.refused(t, e.reg, tokB); why != "" {
		t.Errorf("bob's agent refused: %s", why)
	}

	for _, id := range []string{"a1", "a2"} {
		a, _ := e.reg.GetAgent(ctx, id)
		if a.State != store.AgentOrphaned || a.StateChangedBy != "scim" || !a.StateChangedAt.Equal(when) || !strings.Contains(a.StateReason, "left the company") {
			t.Errorf("agent %s = %+v", id, a)
		}
	}
	for id, revoked := range map[string]bool{liveA1: true, liveA2: true, expired: false, liveB: false} {
		c, _ := e.store.GetCredential(ctx, id)
		if c.RevokedAt.IsZero() == revoked {
			t.Errorf("credential %s revoked at %v, want revoked %v", id, c.RevokedAt, revoked)
		}
	}
	for id, want := range map[string]store.ApprovalState{aprA: store.ApprovalCancelled, aprB: store.ApprovalPending} {
		a, _ := e.store.GetApproval(ctx, id)
		if a.State != want {
			t.Errorf("approval %s = %s, want %s", id, a.State, want)
		}
	}
	if len(e.sessions.calls) != 2 || !slices.Equal(e.sessions.calls[1], []string{"a1", "a2"}) {
		t.Errorf("CloseAgents calls = %v", e.sessions.calls)
	}
	if n := len(e.notices.list); n != 2 || e.notices.list[1].Kind != "user_deactivated" {
		t.Errorf("notices = %+v", e.notices.list)
	}
	types := e.auditTypes(t)
	i := slices.Index(types, "user_deactivated")
	want := []string{"user_deactivated", "approval_cancelled", "agent_orphaned", "agent_orphaned", "approvals_cancelled", "credentials_revoked", "credentials_revoked"}
	if i < 0 || !slices.Equal(types[i:], want) {
		t.Errorf("audit types = %v; want ... %v", types, want)
	}
	hist, err := e.lc.History(ctx, "a2")
	if err != nil {
		t.Fatal(err)
	}
	var ht []string
	for _, h := range hist {
		ht = append(ht, h.Type)
	}
	if !slices.Equal(ht, []string{"agent_suspended", "agent_orphaned", "approvals_cancelled", "credentials_revoked"}) {
		t.Errorf("history of a2 = %v", ht)
	}
	if vr, err := audit.Verify(ctx, e.store, nil); err != nil || !vr.OK() {
		t.Errorf("audit verify: %+v, %v", vr, err)
	}

	// Again: nothing more to do, and no second story.
	n := len(types)
	if _, rep2, err := e.lc.DeactivateUser(ctx, alice.ID, "scim", "again"); err != nil || len(rep2.Agents)+len(rep2.CredentialsRevoked)+len(rep2.ApprovalsCancelled) != 0 {
		t.Errorf("second DeactivateUser = %+v, %v", rep2, err)
	}
	if got := e.auditTypes(t); len(got) != n {
		t.Errorf("second DeactivateUser appended %v", got[n:])
	}

	// Activating the owner does not bring the agents back; reassigning does.
	if _, err := e.lc.ActivateUser(ctx, "alice@example.com", "cli:root", "came back"); err != nil {
		t.Fatal(err)
	}
	if why := e.refused(t, e.reg, tokA); !strings.Contains(why, "orphaned") {
		t.Errorf("after activate: %q; want still orphaned", why)
	}
	if _, err := e.lc.ReassignAgent(ctx, "a1", "carol@example.com", "cli:root", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("reassign to nobody: %v", err)
	}
	a, err := e.lc.ReassignAgent(ctx, "a1", "bob@example.com", "cli:root", "bob takes over")
	if err != nil || a.State != store.AgentActive {
		t.Fatalf("reassign = %+v, %v", a, err)
	}
	if why := e.refused(t, e.reg, tokA); why != "" {
		t.Errorf("after reassign: refused: %s", why)
	}
}

// failing fails UpdateAgent while fail is set.
type failing struct {
	store.Store
	mu   sync.Mutex
	fail bool
}

func (f *failing) UpdateAgent(ctx context.Context, id string, fn func(store.Agent) (store.Agent, error)) (store.Agent, error) {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return store.Agent{}, errors.New("disk on fire")
	}
	return f.Store.UpdateAgent(ctx, id, fn)
}

// TestDeactivateFailsClosed: when orphaning fails, the user is inactive
// already, so the gate refuses; running it again completes the cascade.
func TestDeactivateFailsClosed(t *testing.T) {
	e := newEnv(t)
	fs := &failing{Store: e.store}
	reg := registry.New(registry.Options{Store: fs, Now: e.clock.Now, Logger: slog.New(slog.DiscardHandler)})
	defer reg.Close()
	al, err := audit.New(context.Background(), audit.Options{Store: fs, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer al.Close()
	lc := registry.NewLifecycle(reg, registry.LifecycleOptions{Audit: al})
	ctx := context.Background()
	if _, err := reg.CreateUser(ctx, registry.UserSpec{Email: "a@example.com"}); err != nil {
		t.Fatal(err)
	}
	_, tok, err := reg.CreateAgent(ctx, registry.AgentSpec{ID: "x", OwnerEmail: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	fs.fail = true
	if _, _, err := lc.DeactivateUser(ctx, "a@example.com", "cli:root", "test"); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("DeactivateUser = %v; want the failure", err)
	}
	p, err := reg.Authenticate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if why := gate.Inactive(&p); !strings.Contains(why, "deactivated") {
		t.Errorf("refusal = %q; want the owner deactivated", why)
	}
	fs.fail = false
	_, rep, err := lc.DeactivateUser(ctx, "a@example.com", "cli:root", "test")
	if err != nil || !slices.Equal(rep.Agents, []string{"x"}) {
		t.Errorf("second DeactivateUser = %+v, %v", rep, err)
	}
	if a, _ := reg.GetAgent(ctx, "x"); a.State != store.AgentOrphaned {
		t.Errorf("agent = %s, want orphaned", a.State)
	}
}

func TestSuspendResumeDecommission(t *testing.T) {
	e := newLC(t)
	ctx := context.Background()
	e.user(t, "alice@example.com")
	e.user(t, "bob@example.com")
	tok := e.agent(t, "a1", "alice@example.com")
	e.agent(t, "a2", "alice@example.com")
	e.agent(t, "b1", "bob@example.com")
	cred := e.credential(t, "a1", time.Hour)
	apr := e.approval(t, "a1")

	rep, err := e.lc.SuspendAgent(ctx, "a1", "cli:root", "odd behaviour")
	if err != nil || !slices.Equal(rep.Agents, []string{"a1"}) || !slices.Equal(rep.CredentialsRevoked, []string{cred}) ||
		!slices.Equal(rep.ApprovalsCancelled, []string{apr}) {
		t.Fatalf("suspend = %+v, %v", rep, err)
	}
	if why := e.refused(t, e.reg, tok); !strings.Contains(why, "suspended since") || !strings.Contains(why, "odd behaviour") {
		t.Errorf("refusal = %q", why)
	}
	if rep, err := e.lc.SuspendAgent(ctx, "a1", "cli:root", "again"); err != nil || len(rep.Agents) != 0 || rep.Skipped["a1"] == "" {
		t.Errorf("suspend again = %+v, %v", rep, err)
	}
	if _, err := e.lc.ResumeAgent(ctx, "a1", "cli:root", "fine"); err != nil {
		t.Fatal(err)
	}
	if why := e.refused(t, e.reg, tok); why != "" {
		t.Errorf("after resume: %s", why)
	}

	// Emergency stop of an owner's agents, then of all; resume.
	rep, err = e.lc.Stop(ctx, registry.Selector{Owner: "alice@example.com"}, "cli:root", "incident 42")
	if err != nil || !slices.Equal(rep.Agents, []string{"a1", "a2"}) {
		t.Fatalf("stop --owner = %+v, %v", rep, err)
	}
	rep, err = e.lc.Stop(ctx, registry.Selector{All: true}, "cli:root", "incident 42")
	if err != nil || !slices.Equal(rep.Agents, []string{"b1"}) {
		t.Fatalf("stop --all = %+v, %v", rep, err)
	}
	if _, err := e.lc.Stop(ctx, registry.Selector{All: true, Agent: "a1"}, "cli:root", ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("two selectors: %v", err)
	}
	if _, _, err := e.lc.DeactivateUser(ctx, "bob@example.com", "cli:root", "left"); err != nil {
		t.Fatal(err)
	}
	rep, err = e.lc.Resume(ctx, registry.Selector{All: true}, "cli:root", "over")
	if err != nil || !slices.Equal(rep.Agents, []string{"a1", "a2"}) || rep.Skipped["b1"] == "" {
		t.Fatalf("resume --all = %+v, %v", rep, err)
	}
	if _, err := e.lc.ResumeAgent(ctx, "b1", "cli:root", ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("resume an orphaned agent: %v", err)
	}

	// Decommission: terminal, tokens revoked.
	rep, err = e.lc.DecommissionAgent(ctx, "a1", "cli:root", "retired")
	if err != nil || len(rep.TokensRevoked) != 1 {
		t.Fatalf("decommission = %+v, %v", rep, err)
	}
	if _, err := e.reg.Authenticate(ctx, tok); !errors.Is(err, registry.ErrUnauthenticated) {
		t.Errorf("token after decommission: %v", err)
	}
	if _, err := e.lc.ReassignAgent(ctx, "a1", "alice@example.com", "cli:root", ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("reassign decommissioned: %v", err)
	}
	if _, err := e.lc.ResumeAgent(ctx, "a1", "cli:root", ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("resume decommissioned: %v", err)
	}
	if r, err := audit.Verify(ctx, e.store, nil); err != nil || !r.OK() {
		t.Errorf("audit verify: %+v, %v", r, err)
	}
}
