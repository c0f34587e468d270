package approval

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type notified struct {
	mu    sync.Mutex
	calls []string // "approval id: emails"
}

func (n *notified) Notify(a store.Approval, approvers []store.User, link string) {
	var emails []string
	for _, u := range approvers {
		emails = append(emails, u.Email)
	}
	n.mu.Lock()
	n.calls = append(n.calls, a.ID+": "+strings.Join(emails, ",")+" "+link)
	n.mu.Unlock()
}

type env struct {
	st                    store.Store
	svc                   *Service
	clk                   *clock
	log                   *audit.Log
	note                  *notified
	owner, finance, other store.User
	agent                 store.Agent
	principal             store.Principal
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "a.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	al, err := audit.New(ctx, audit.Options{Store: st, Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	e := &env{st: st, clk: clk, log: al, note: &notified{}}
	mk := func(id, email string, roles ...string) store.User {
		u := store.User{ID: id, Email: email, Name: id, Roles: store.NormalizeRoles(roles), Active: true, Source: "local", CreatedAt: clk.Now(), UpdatedAt: clk.Now()}
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	e.owner = mk("u-owner", "owner@example.com")
	e.finance = mk("u-fin", "fin@example.com", "finance-manager")
	e.other = mk("u-other", "other@example.com")
	e.agent = store.Agent{ID: "bot", Name: "Procurement bot", OwnerID: e.owner.ID, State: store.AgentActive, CreatedAt: clk.Now(), UpdatedAt: clk.Now()}
	if err := st.CreateAgent(ctx, e.agent); err != nil {
		t.Fatal(err)
	}
	e.principal = store.Principal{Agent: e.agent, Owner: e.owner}
	e.svc, err = New(Options{Store: st, Audit: al, Notifier: e.note, ConsoleURL: "https://gw.example/console/", Now: clk.Now,
		PollInterval: 5 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) request(approvers []string, quorum int, sod bool) Request {
	amount := 1200.0
	return Request{Principal: e.principal, DecisionID: "dec_1", Upstream: "acme", Tool: "place_order",
		Arguments: map[string]any{"item": "laptop batteries", "quantity": 10, "unit_price_usd": 120}, ArgsDigest: strings.Repeat("ab", 32),
		Rule: "owner-approves-mid", Approvers: approvers, Quorum: quorum, SeparationOfDuties: sod, RiskScore: 60, Amount: &amount, Source: "mcp"}
}

func auditTypes(t *testing.T, st store.Store) []string {
	t.Helper()
	evs, err := st.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

func TestOpenVoteApprove(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a, joined, err := e.svc.Open(ctx, e.request([]string{"owner"}, 1, false))
	if err != nil || joined {
		t.Fatalf("Open = %v, joined %v", err, joined)
	}
	want := `Your agent "Procurement bot" wants to run acme.place_order for $1,200 (item: "laptop batteries", quantity: 10, unit_price_usd: 120). Approve or deny?`
	if a.BindingMessage != want {
		t.Errorf("binding message = %q\nwant %q", a.BindingMessage, want)
	}
	if len(e.note.calls) != 1 || e.note.calls[0] != a.ID+": owner@example.com https://gw.example/console/approvals/"+a.ID {
		t.Errorf("notified %v", e.note.calls)
	}
	// A retry of the same call joins the request.
	b, joined, err := e.svc.Open(ctx, e.request([]string{"owner"}, 1, false))
	if err != nil || !joined || b.ID != a.ID {
		t.Fatalf("second Open = %s, joined %v, %v; want to join %s", b.ID, joined, err, a.ID)
	}
	// Someone who is not an approver cannot vote.
	if _, err := e.svc.Vote(ctx, a.ID, e.other, Vote{Approve: true, Method: "webauthn-uv"}); !errors.Is(err, ErrNotEligible) {
		t.Errorf("vote by a non-approver = %v", err)
	}
	done := make(chan store.Approval, 1)
	go func() {
		got, err := e.svc.Wait(ctx, a.ID)
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		done <- got
	}()
	got, err := e.svc.Vote(ctx, a.ID, e.owner, Vote{Approve: true, Method: "webauthn-uv", Evidence: []byte(`{"sig":"x"}`)})
	if err != nil || got.State != store.ApprovalApproved {
		t.Fatalf("Vote = %v, %v", got.State, err)
	}
	if w := <-done; w.State != store.ApprovalApproved || len(Approvers(w)) != 1 || Approvers(w)[0].Email != "owner@example.com" || Approvers(w)[0].Method != "webauthn-uv" {
		t.Errorf("waiter saw %+v", w)
	}
	if _, err := e.svc.Vote(ctx, a.ID, e.owner, Vote{Approve: true}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("second vote = %v", err)
	}
	if got := strings.Join(auditTypes(t, e.st), ","); got != "approval_requested,approval_vote,approval_approved" {
		t.Errorf("audit events = %s", got)
	}
	// The approved request is found for a retry of the same call.
	ok, err := e.svc.Approved(ctx, "bot", "acme", "place_order", strings.Repeat("ab", 32))
	if err != nil || len(ok) != 1 || ok[0].ID != a.ID {
		t.Errorf("Approved = %v, %v", ok, err)
	}
}

func TestQuorumSoDAndRoles(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	// A second finance manager, so that a quorum of 2 is reachable.
	fin2 := store.User{ID: "u-fin2", Email: "fin2@example.com", Roles: []string{"finance-manager"}, Active: true, Source: "local", CreatedAt: e.clk.Now(), UpdatedAt: e.clk.Now()}
	if err := e.st.CreateUser(ctx, fin2); err != nil {
		t.Fatal(err)
	}
	// The owner is also a finance manager here: separation of duties must
	// still keep them out.
	if _, err := e.st.UpdateUser(ctx, e.owner.ID, func(u store.User) (store.User, error) {
		u.Roles = []string{"finance-manager"}
		return u, nil
	}); err != nil {
		t.Fatal(err)
	}
	e.owner.Roles = []string{"finance-manager"}
	a, _, err := e.svc.Open(ctx, e.request([]string{"role:finance-manager"}, 2, true))
	if err != nil {
		t.Fatal(err)
	}
	eligible, err := e.svc.Eligible(ctx, a)
	if err != nil || len(eligible) != 2 || eligible[0].Email != "fin2@example.com" || eligible[1].Email != "fin@example.com" {
		t.Fatalf("Eligible = %v, %v", eligible, err)
	}
	if _, err := e.svc.Vote(ctx, a.ID, e.owner, Vote{Approve: true}); !errors.Is(err, ErrSeparationOfDuties) {
		t.Errorf("owner's vote = %v, want separation of duties", err)
	}
	got, err := e.svc.Vote(ctx, a.ID, e.finance, Vote{Approve: true, Method: "webauthn-uv"})
	if err != nil || got.State != store.ApprovalPending {
		t.Fatalf("first of two = %v, %v", got.State, err)
	}
	got, err = e.svc.Vote(ctx, a.ID, fin2, Vote{Approve: true, Method: "webauthn-uv"})
	if err != nil || got.State != store.ApprovalApproved || len(Approvers(got)) != 2 {
		t.Fatalf("second of two = %v, %v", got.State, err)
	}
	// An inactive approver cannot vote; and with nobody to approve, Open fails.
	if _, err := e.st.UpdateUser(ctx, e.finance.ID, func(u store.User) (store.User, error) { u.Active = false; return u, nil }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.Open(ctx, Request{Principal: e.principal, DecisionID: "dec_2", Upstream: "acme", Tool: "issue_refund",
		ArgsDigest: strings.Repeat("cd", 32), Approvers: []string{"role:finance-manager"}, Quorum: 2, SeparationOfDuties: true}); !errors.Is(err, ErrNoApprover) {
		t.Errorf("Open with too few approvers = %v", err)
	}
}

func TestDenyExpireCancel(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a, _, err := e.svc.Open(ctx, e.request([]string{"owner", "user:other@example.com"}, 1, false))
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.Vote(ctx, a.ID, e.other, Vote{Approve: false, Reason: "we have enough batteries", Method: "webauthn-uv"})
	if err != nil || got.State != store.ApprovalDenied || got.Reason != "we have enough batteries" {
		t.Fatalf("deny = %+v, %v", got, err)
	}
	if v, ok := Denier(got); !ok || v.Email != "other@example.com" {
		t.Errorf("Denier = %+v", v)
	}
	if _, err := e.svc.Vote(ctx, a.ID, e.owner, Vote{Approve: true}); !errors.Is(err, store.ErrNotPending) {
		t.Errorf("vote after denial = %v", err)
	}

	// Expiry: a waiter sees the request expire.
	r := e.request([]string{"owner"}, 1, false)
	r.ArgsDigest, r.TTL = strings.Repeat("ef", 32), time.Minute
	b, _, err := e.svc.Open(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Add(2 * time.Minute)
	got, err = e.svc.Wait(ctx, b.ID)
	if err != nil || got.State != store.ApprovalExpired {
		t.Fatalf("Wait past expiry = %v, %v", got.State, err)
	}

	// Cancel, and a waiter whose context ends gets the pending state back.
	r.ArgsDigest = strings.Repeat("01", 32)
	c, _, err := e.svc.Open(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	cancel()
	if got, err := e.svc.Wait(wctx, c.ID); !errors.Is(err, context.Canceled) || got.State != store.ApprovalPending {
		t.Errorf("Wait with a done context = %v, %v", got.State, err)
	}
	if got, err := e.svc.Cancel(ctx, c.ID, "the agent cancelled the call"); err != nil || got.State != store.ApprovalCancelled {
		t.Errorf("Cancel = %v, %v", got.State, err)
	}
	types := strings.Join(auditTypes(t, e.st), ",")
	for _, want := range []string{"approval_denied", "approval_expired", "approval_cancelled"} {
		if !strings.Contains(types, want) {
			t.Errorf("audit has no %s: %s", want, types)
		}
	}
}

// Waiters on another "replica" (a second Service on the same store) see a
// vote cast through the first, by polling the store.
func TestWaitSeesOtherReplica(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	other, err := New(Options{Store: e.st, Audit: e.log, Now: e.clk.Now, PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := e.svc.Open(ctx, e.request([]string{"owner"}, 1, false))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan store.Approval, 1)
	go func() {
		got, _ := other.Wait(ctx, a.ID)
		done <- got
	}()
	if _, err := e.svc.Vote(ctx, a.ID, e.owner, Vote{Approve: true, Method: "webauthn-uv"}); err != nil {
		t.Fatal(err)
	}
	if got := <-done; got.State != store.ApprovalApproved {
		t.Errorf("the other replica's waiter saw %v", got.State)
	}
}

func TestMoney(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{{0, "0"}, {5, "5"}, {1200, "1,200"}, {1234567.5, "1,234,567.50"}, {0.1, "0.10"}, {-42.25, "-42.25"}} {
		if got := money(tc.in); got != tc.want {
			t.Errorf("money(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
