package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// The store keeps approvals, votes, passkeys and enrollments as given: these
// tests use made-up arguments, assertions and keys (the approval and
// webauthn code builds and checks the real ones).

// newApproval returns a pending approval of agentID created at created,
// expiring ten minutes later, that needs one approve vote.
func newApproval(id, agentID string, created time.Time) store.Approval {
	return store.Approval{
		ID: id, AgentID: agentID, OwnerID: "u1", DecisionID: "dec-" + id,
		Upstream: "acme", Tool: "pay_invoice", ArgsDigest: fmt.Sprintf("%x", hashOf("args "+id)),
		Arguments: []byte(`{"amount":12000,"to":"ACME Corp"}`), Rule: "large-payments",
		Approvers: []string{"user:cfo@example.com", "owner", "role:finance-manager"}, Quorum: 1,
		BindingMessage: "Pay ACME Corp 12000", RiskScore: 70, Source: "mcp",
		ClientData: []byte(`{"mode":"poll"}`), State: store.ApprovalPending,
		CreatedAt: created, ExpiresAt: created.Add(10 * time.Minute),
	}
}

func newVote(user string, approve bool, at time.Time) store.ApprovalVote {
	return store.ApprovalVote{
		UserID: user, Email: user + "@example.com", Approve: approve, Method: "webauthn-uv",
		Evidence: []byte(`{"assertion":"` + user + `"}`), At: at,
	}
}

// approvalSeed creates user u1 with agents agent-1, agent-2 and agent-3.
func approvalSeed(t *testing.T, s store.Store) {
	t.Helper()
	seed(t, s)
	for _, id := range []string{"agent-2", "agent-3"} {
		if err := s.CreateAgent(t.Context(), newAgent(id, "u1")); err != nil {
			t.Fatalf("seed: CreateAgent(%s): %v", id, err)
		}
	}
}

func createApprovals(t *testing.T, s store.Store, as ...store.Approval) {
	t.Helper()
	for _, a := range as {
		if err := s.CreateApproval(t.Context(), a); err != nil {
			t.Fatalf("CreateApproval(%s): %v", a.ID, err)
		}
	}
}

func checkVote(t *testing.T, what string, got, want store.ApprovalVote) {
	t.Helper()
	if got.UserID != want.UserID || got.Email != store.NormalizeEmail(want.Email) || got.Approve != want.Approve ||
		got.Reason != want.Reason || got.Method != want.Method || !bytes.Equal(got.Evidence, want.Evidence) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
	checkTime(t, what+" At", got.At, want.At)
}

func checkApproval(t *testing.T, got, want store.Approval) {
	t.Helper()
	if got.ID != want.ID || got.AgentID != want.AgentID || got.OwnerID != want.OwnerID ||
		got.DecisionID != want.DecisionID || got.Upstream != want.Upstream || got.Tool != want.Tool ||
		got.ArgsDigest != want.ArgsDigest || !bytes.Equal(got.Arguments, want.Arguments) || got.Rule != want.Rule ||
		!slices.Equal(got.Approvers, want.Approvers) || (got.Approvers == nil) != (len(want.Approvers) == 0) ||
		got.Quorum != want.Quorum || got.SeparationOfDuties != want.SeparationOfDuties ||
		got.BindingMessage != want.BindingMessage || got.RiskScore != want.RiskScore || got.Source != want.Source ||
		!bytes.Equal(got.ClientData, want.ClientData) || got.State != want.State || got.Reason != want.Reason {
		t.Errorf("approval:\n got %+v\nwant %+v", got, want)
	}
	checkTime(t, want.ID+" CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, want.ID+" ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	checkTime(t, want.ID+" DecidedAt", got.DecidedAt, want.DecidedAt)
	if len(got.Votes) != len(want.Votes) {
		t.Errorf("approval %s has %d votes %+v, want %d %+v", want.ID, len(got.Votes), got.Votes, len(want.Votes), want.Votes)
		return
	}
	for i := range want.Votes {
		checkVote(t, fmt.Sprintf("approval %s vote %d", want.ID, i), got.Votes[i], want.Votes[i])
	}
}

// checkStored checks that GetApproval returns want.
func checkStored(t *testing.T, s store.Store, want store.Approval) {
	t.Helper()
	got, err := s.GetApproval(t.Context(), want.ID)
	if err != nil {
		t.Fatalf("GetApproval(%s): %v", want.ID, err)
	}
	checkApproval(t, got, want)
}

func approvalIDs(as []store.Approval) []string {
	return ids(as, func(a store.Approval) string { return a.ID })
}

func sameIDs(got, want []string) bool {
	return slices.Equal(got, want) || len(got) == 0 && len(want) == 0
}

func testCreateApproval(t *testing.T, s store.Store) {
	ctx := t.Context()
	approvalSeed(t, s)
	// Times off the microsecond and outside UTC come back normalised.
	zone := time.FixedZone("UTC+2", 2*60*60)
	a1 := newApproval("a1", "agent-1", t0.In(zone).Add(789*time.Nanosecond))
	a1.SeparationOfDuties = true
	a1.Quorum = 2
	a1.Reason = "kept as given"
	a2 := newApproval("a2", "agent-2", t0)
	a2.Approvers, a2.ClientData, a2.Arguments = nil, nil, []byte(`{}`)
	a2.Source, a2.RiskScore = "ciba", -3
	createApprovals(t, s, a1, a2)

	mod := func(id, agent string, edit func(*store.Approval)) store.Approval {
		a := newApproval(id, agent, t0)
		edit(&a)
		return a
	}
	for _, tc := range []struct {
		name string
		a    store.Approval
		want error
	}{
		{"duplicate id", newApproval("a1", "agent-2", t0.Add(time.Hour)), store.ErrAlreadyExists},
		{"empty id", newApproval("", "agent-1", t0), store.ErrInvalid},
		{"empty agent", newApproval("x1", "", t0), store.ErrInvalid},
		{"unknown agent", newApproval("x2", "nope", t0), store.ErrInvalid},
		{"quorum 0", mod("x3", "agent-1", func(a *store.Approval) { a.Quorum = 0 }), store.ErrInvalid},
		{"quorum negative", mod("x4", "agent-1", func(a *store.Approval) { a.Quorum = -1 }), store.ErrInvalid},
		{"approved", mod("x5", "agent-1", func(a *store.Approval) { a.State = store.ApprovalApproved }), store.ErrInvalid},
		{"empty state", mod("x6", "agent-1", func(a *store.Approval) { a.State = "" }), store.ErrInvalid},
		{"unknown state", mod("x7", "agent-1", func(a *store.Approval) { a.State = "maybe" }), store.ErrInvalid},
		{"no expiry", mod("x8", "agent-1", func(a *store.Approval) { a.ExpiresAt = time.Time{} }), store.ErrInvalid},
		{"decided", mod("x9", "agent-1", func(a *store.Approval) { a.DecidedAt = t0 }), store.ErrInvalid},
		{"with votes", mod("x10", "agent-1", func(a *store.Approval) {
			a.Votes = []store.ApprovalVote{newVote("u2", true, t0)}
		}), store.ErrInvalid},
	} {
		wantErr(t, "CreateApproval "+tc.name, s.CreateApproval(ctx, tc.a), tc.want)
	}

	checkStored(t, s, a1)
	checkStored(t, s, a2)
	got, err := s.GetApproval(ctx, "a1")
	if err != nil {
		t.Fatalf("GetApproval: %v", err)
	}
	if got.Votes != nil || !got.DecidedAt.IsZero() {
		t.Errorf("new approval has votes %v, DecidedAt %v; want none and zero", got.Votes, got.DecidedAt)
	}
	if got.Approvers[0] != "user:cfo@example.com" {
		t.Errorf("Approvers = %v, want the order given", got.Approvers)
	}
	for _, id := range []string{"nope", "x1", "x2", "x3", "x10"} {
		_, err := s.GetApproval(ctx, id)
		wantErr(t, "GetApproval("+id+")", err, store.ErrNotFound)
	}
}

func testListApprovals(t *testing.T, s store.Store) {
	ctx := t.Context()
	approvalSeed(t, s)
	got, err := s.ListApprovals(ctx, store.ApprovalFilter{})
	if err != nil || len(got) != 0 {
		t.Fatalf("ListApprovals of an empty store = %d, %v", len(got), err)
	}
	// Created out of order; p2 is denied, p4 cancelled.
	p1 := newApproval("p1", "agent-1", t0.Add(1*time.Minute))
	p2 := newApproval("p2", "agent-2", t0.Add(2*time.Minute))
	p3 := newApproval("p3", "agent-1", t0.Add(3*time.Minute))
	p4 := newApproval("p4", "agent-1", t0.Add(4*time.Minute))
	p3.Quorum = 2
	createApprovals(t, s, p3, p1, p4, p2)
	if _, err := s.VoteApproval(ctx, "p2", newVote("u2", false, t0.Add(5*time.Minute))); err != nil {
		t.Fatalf("VoteApproval: %v", err)
	}
	if _, err := s.VoteApproval(ctx, "p3", newVote("u2", true, t0.Add(5*time.Minute))); err != nil {
		t.Fatalf("VoteApproval: %v", err)
	}
	if _, err := s.VoteApproval(ctx, "p3", newVote("u3", true, t0.Add(6*time.Minute))); err != nil {
		t.Fatalf("VoteApproval: %v", err)
	}
	if _, err := s.FinishApproval(ctx, "p4", store.ApprovalCancelled, "test", t0.Add(5*time.Minute)); err != nil {
		t.Fatalf("FinishApproval: %v", err)
	}
	for _, tc := range []struct {
		name string
		f    store.ApprovalFilter
		want []string
	}{
		{"all, newest first", store.ApprovalFilter{}, []string{"p4", "p3", "p2", "p1"}},
		{"pending", store.ApprovalFilter{State: store.ApprovalPending}, []string{"p1"}},
		{"approved", store.ApprovalFilter{State: store.ApprovalApproved}, []string{"p3"}},
		{"denied", store.ApprovalFilter{State: store.ApprovalDenied}, []string{"p2"}},
		{"cancelled", store.ApprovalFilter{State: store.ApprovalCancelled}, []string{"p4"}},
		{"expired", store.ApprovalFilter{State: store.ApprovalExpired}, nil},
		{"agent", store.ApprovalFilter{AgentID: "agent-1"}, []string{"p4", "p3", "p1"}},
		{"agent and state", store.ApprovalFilter{AgentID: "agent-1", State: store.ApprovalPending}, []string{"p1"}},
		{"unknown agent", store.ApprovalFilter{AgentID: "nope"}, nil},
		{"limit", store.ApprovalFilter{Limit: 2}, []string{"p4", "p3"}},
		{"limit with votes", store.ApprovalFilter{Limit: 1, State: store.ApprovalApproved}, []string{"p3"}},
		{"agent limit", store.ApprovalFilter{AgentID: "agent-1", Limit: 2}, []string{"p4", "p3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ListApprovals(ctx, tc.f)
			if err != nil {
				t.Fatalf("ListApprovals: %v", err)
			}
			if ids := approvalIDs(got); !sameIDs(ids, tc.want) {
				t.Errorf("ListApprovals(%+v) = %v, want %v", tc.f, ids, tc.want)
			}
		})
	}
	// Records come back whole, with their votes.
	got, err = s.ListApprovals(ctx, store.ApprovalFilter{})
	if err != nil || len(got) != 4 {
		t.Fatalf("ListApprovals = %d, %v", len(got), err)
	}
	for _, a := range got {
		one, err := s.GetApproval(ctx, a.ID)
		if err != nil {
			t.Fatalf("GetApproval: %v", err)
		}
		checkApproval(t, a, one)
	}
	if len(got[1].Votes) != 2 || got[1].Votes[0].UserID != "u2" || got[1].Votes[1].UserID != "u3" {
		t.Errorf("p3 votes = %+v, want u2 then u3", got[1].Votes)
	}
}

func testFindPendingApproval(t *testing.T, s store.Store) {
	ctx := t.Context()
	approvalSeed(t, s)
	digest := fmt.Sprintf("%x", hashOf("the arguments"))
	mk := func(id, agent, tool, digest string, created time.Time) store.Approval {
		a := newApproval(id, agent, created)
		a.Tool, a.ArgsDigest = tool, digest
		return a
	}
	x1 := mk("x1", "agent-1", "pay_invoice", digest, t0)
	x2 := mk("x2", "agent-1", "pay_invoice", digest, t0.Add(time.Minute))
	x3 := mk("x3", "agent-1", "pay_invoice", digest, t0.Add(2*time.Minute)) // decided below
	y := mk("y", "agent-1", "pay_invoice", "other-digest", t0)
	z := mk("z", "agent-1", "refund", digest, t0)
	w := mk("w", "agent-2", "pay_invoice", digest, t0)
	createApprovals(t, s, x1, x3, x2, y, z, w)
	if _, err := s.VoteApproval(ctx, "x3", newVote("u2", true, t0.Add(3*time.Minute))); err != nil {
		t.Fatalf("VoteApproval: %v", err)
	}
	now := t0.Add(5 * time.Minute)
	for _, tc := range []struct {
		name                          string
		agent, upstream, tool, digest string
		now                           time.Time
		want                          string // "" for ErrNotFound
	}{
		{"newest pending", "agent-1", "acme", "pay_invoice", digest, now, "x2"},
		{"other digest", "agent-1", "acme", "pay_invoice", "other-digest", now, "y"},
		{"other tool", "agent-1", "acme", "refund", digest, now, "z"},
		{"other agent", "agent-2", "acme", "pay_invoice", digest, now, "w"},
		{"other upstream", "agent-1", "globex", "pay_invoice", digest, now, ""},
		{"unknown agent", "nope", "acme", "pay_invoice", digest, now, ""},
		{"digest prefix", "agent-1", "acme", "pay_invoice", digest[:10], now, ""},
		{"x1 expired at its ExpiresAt", "agent-1", "acme", "pay_invoice", digest, x2.ExpiresAt.Add(-time.Microsecond), "x2"},
		{"all expired", "agent-1", "acme", "pay_invoice", digest, x2.ExpiresAt, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.FindPendingApproval(ctx, tc.agent, tc.upstream, tc.tool, tc.digest, tc.now)
			if tc.want == "" {
				wantErr(t, "FindPendingApproval", err, store.ErrNotFound)
				return
			}
			if err != nil {
				t.Fatalf("FindPendingApproval: %v", err)
			}
			if got.ID != tc.want {
				t.Errorf("FindPendingApproval = %s, want %s", got.ID, tc.want)
			}
		})
	}
	// Once x2 is denied, x1 is the one a retry joins.
	if _, err := s.VoteApproval(ctx, "x2", newVote("u2", false, now)); err != nil {
		t.Fatalf("VoteApproval: %v", err)
	}
	got, err := s.FindPendingApproval(ctx, "agent-1", "acme", "pay_invoice", digest, now)
	if err != nil || got.ID != "x1" {
		t.Fatalf("FindPendingApproval after x2 is denied = %s, %v; want x1", got.ID, err)
	}
	checkApproval(t, got, x1)
	_, err = s.FindPendingApproval(ctx, "agent-1", "acme", "pay_invoice", digest, x1.ExpiresAt)
	wantErr(t, "FindPendingApproval when x1 expired", err, store.ErrNotFound)
}

func testVoteApproval(t *testing.T, s store.Store) {
	ctx := t.Context()
	approvalSeed(t, s)
	q := newApproval("q", "agent-1", t0) // quorum 2
	q.Quorum = 2
	d := newApproval("d", "agent-1", t0) // quorum 2, denied by its second vote
	d.Quorum = 2
	one := newApproval("one", "agent-1", t0) // quorum 1, denied by its first vote
	e := newApproval("e", "agent-1", t0)     // quorum 1, votes around its expiry
	createApprovals(t, s, q, d, one, e)

	at := t0.Add(time.Minute)
	v1 := newVote("u1", true, at)
	v1.Email = "U1@Example.COM"
	v1.Reason = "looks right"
	v2 := newVote("u2", true, at.Add(time.Second))
	v2.Evidence = nil

	// Quorum 2 needs two distinct users.
	got, err := s.VoteApproval(ctx, "q", v1)
	if err != nil {
		t.Fatalf("VoteApproval first: %v", err)
	}
	want := q
	want.Votes = []store.ApprovalVote{v1}
	checkApproval(t, got, want)
	checkStored(t, s, want)
	got, err = s.VoteApproval(ctx, "q", newVote("u1", true, at.Add(time.Second)))
	wantErr(t, "VoteApproval same user again", err, store.ErrAlreadyExists)
	got, err = s.VoteApproval(ctx, "q", newVote("u1", false, at.Add(time.Second)))
	wantErr(t, "VoteApproval same user again, denying", err, store.ErrAlreadyExists)
	checkStored(t, s, want)
	got, err = s.VoteApproval(ctx, "q", v2)
	if err != nil {
		t.Fatalf("VoteApproval second: %v", err)
	}
	want.Votes = append(want.Votes, v2)
	want.State, want.DecidedAt = store.ApprovalApproved, v2.At
	checkApproval(t, got, want)
	checkStored(t, s, want)
	got, err = s.VoteApproval(ctx, "q", newVote("u3", true, at.Add(2*time.Second)))
	wantErr(t, "VoteApproval after approval", err, store.ErrNotPending)
	if err != nil && !strings.Contains(err.Error(), string(store.ApprovalApproved)) {
		t.Errorf("VoteApproval after approval: error %q does not name the state %q", err, store.ApprovalApproved)
	}
	if got.ID == "q" {
		checkApproval(t, got, want) // returned as it is, if returned
	}
	checkStored(t, s, want)

	// A deny vote ends it, whatever the approve votes so far.
	if _, err := s.VoteApproval(ctx, "d", newVote("u1", true, at)); err != nil {
		t.Fatalf("VoteApproval: %v", err)
	}
	deny := newVote("u2", false, at.Add(time.Second))
	deny.Reason = "not this vendor"
	got, err = s.VoteApproval(ctx, "d", deny)
	if err != nil {
		t.Fatalf("VoteApproval deny: %v", err)
	}
	wantD := d
	wantD.Votes = []store.ApprovalVote{newVote("u1", true, at), deny}
	wantD.State, wantD.DecidedAt, wantD.Reason = store.ApprovalDenied, deny.At, "not this vendor"
	checkApproval(t, got, wantD)
	checkStored(t, s, wantD)
	_, err = s.VoteApproval(ctx, "d", newVote("u3", true, at.Add(2*time.Second)))
	wantErr(t, "VoteApproval after denial", err, store.ErrNotPending)
	if err != nil && !strings.Contains(err.Error(), string(store.ApprovalDenied)) {
		t.Errorf("VoteApproval after denial: error %q does not name the state %q", err, store.ApprovalDenied)
	}
	got, err = s.VoteApproval(ctx, "one", deny)
	if err != nil || got.State != store.ApprovalDenied || len(got.Votes) != 1 {
		t.Errorf("VoteApproval deny as first vote = %s with %d votes, %v; want denied with 1", got.State, len(got.Votes), err)
	}

	// Votes at or after ExpiresAt are refused and change nothing.
	_, err = s.VoteApproval(ctx, "e", newVote("u1", true, e.ExpiresAt))
	wantErr(t, "VoteApproval at ExpiresAt", err, store.ErrNotPending)
	_, err = s.VoteApproval(ctx, "e", newVote("u1", false, e.ExpiresAt.Add(time.Hour)))
	wantErr(t, "VoteApproval after ExpiresAt", err, store.ErrNotPending)
	checkStored(t, s, e)
	got, err = s.VoteApproval(ctx, "e", newVote("u1", true, e.ExpiresAt.Add(-time.Microsecond)))
	if err != nil || got.State != store.ApprovalApproved {
		t.Errorf("VoteApproval just before ExpiresAt = %s, %v; want approved", got.State, err)
	}

	for _, tc := range []struct {
		name string
		id   string
		v    store.ApprovalVote
		want error
	}{
		{"unknown approval", "nope", newVote("u1", true, at), store.ErrNotFound},
		{"empty user", "q", newVote("", true, at), store.ErrInvalid},
		{"zero time", "q", newVote("u9", true, time.Time{}), store.ErrInvalid},
	} {
		_, err := s.VoteApproval(ctx, tc.id, tc.v)
		wantErr(t, "VoteApproval "+tc.name, err, tc.want)
	}
}

// testConcurrentVotes: distinct users voting approve at once on a quorum-3
// approval: exactly three votes count, the approval is approved once, every
// other vote is refused as not pending, and no vote is lost. The same user
// voting at once counts once.
func testConcurrentVotes(t *testing.T, s store.Store) {
	ctx := t.Context()
	approvalSeed(t, s)
	const voters, quorum = 10, 3
	a := newApproval("race", "agent-1", t0)
	a.Quorum = quorum
	same := newApproval("same-user", "agent-1", t0)
	same.Quorum = 2
	createApprovals(t, s, a, same)

	var (
		wg                     sync.WaitGroup
		mu                     sync.Mutex
		okUsers                []string
		voteCounts             = map[int]bool{}
		approvedSeen, notPend  int
		errs                   []error
		sameOK, sameDuplicates int
	)
	start := make(chan struct{})
	for i := range voters {
		wg.Go(func() {
			<-start
			user := "voter-" + strconv.Itoa(i)
			got, err := s.VoteApproval(ctx, "race", newVote(user, true, t0.Add(time.Duration(i+1)*time.Second)))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				okUsers = append(okUsers, user)
				if voteCounts[len(got.Votes)] {
					errs = append(errs, fmt.Errorf("two voters saw %d votes", len(got.Votes)))
				}
				voteCounts[len(got.Votes)] = true
				if got.State == store.ApprovalApproved {
					approvedSeen++
				} else if got.State != store.ApprovalPending {
					errs = append(errs, fmt.Errorf("vote returned state %s", got.State))
				}
				if !slices.ContainsFunc(got.Votes, func(v store.ApprovalVote) bool { return v.UserID == user }) {
					errs = append(errs, fmt.Errorf("%s's vote is missing from the approval it returned", user))
				}
			case errors.Is(err, store.ErrNotPending):
				notPend++
			default:
				errs = append(errs, err)
			}
		})
		wg.Go(func() {
			<-start
			_, err := s.VoteApproval(ctx, "same-user", newVote("u2", true, t0.Add(time.Duration(i+1)*time.Second)))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				sameOK++
			case errors.Is(err, store.ErrAlreadyExists):
				sameDuplicates++
			default:
				errs = append(errs, fmt.Errorf("same user: %w", err))
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(okUsers) != quorum || notPend != voters-quorum {
		t.Errorf("%d votes counted and %d refused as not pending, want %d and %d", len(okUsers), notPend, quorum, voters-quorum)
	}
	if approvedSeen != 1 {
		t.Errorf("%d votes returned the approval approved, want exactly 1", approvedSeen)
	}
	got, err := s.GetApproval(ctx, "race")
	if err != nil {
		t.Fatalf("GetApproval: %v", err)
	}
	voted := ids(got.Votes, func(v store.ApprovalVote) string { return v.UserID })
	slices.Sort(voted)
	slices.Sort(okUsers)
	if got.State != store.ApprovalApproved || !slices.Equal(voted, okUsers) {
		t.Errorf("after the race: %s with votes of %v, want approved with votes of %v", got.State, voted, okUsers)
	}
	if len(got.Votes) == quorum && !got.DecidedAt.Equal(got.Votes[quorum-1].At) {
		t.Errorf("DecidedAt = %v, want the deciding vote's time %v", got.DecidedAt, got.Votes[quorum-1].At)
	}
	if sameOK != 1 || sameDuplicates != voters-1 {
		t.Errorf("same user: %d votes counted and %d refused as duplicates, want 1 and %d", sameOK, sameDuplicates, voters-1)
	}
	got, err = s.GetApproval(ctx, "same-user")
	if err != nil || got.State != store.ApprovalPending || len(got.Votes) != 1 {
		t.Errorf("same-user after the race = %s with %d votes, %v; want pending with 1", got.State, len(got.Votes), err)
	}
}

func testFinishApproval(t *testing.T, s store.Store) {
	ctx := t.Context()
	approvalSeed(t, s)
	f1 := newApproval("f1", "agent-1", t0)
	f1.Quorum = 2
	f2 := newApproval("f2", "agent-1", t0)
	f3 := newApproval("f3", "agent-1", t0)
	createApprovals(t, s, f1, f2, f3)
	vote := newVote("u2", true, t0.Add(time.Second))
	if _, err := s.VoteApproval(ctx, "f1", vote); err != nil {
		t.Fatalf("VoteApproval: %v", err)
	}
	at := t0.Add(time.Minute)

	// Cancel: the votes so far are kept.
	got, err := s.FinishApproval(ctx, "f1", store.ApprovalCancelled, "agent suspended", at)
	if err != nil {
		t.Fatalf("FinishApproval: %v", err)
	}
	want1 := f1
	want1.State, want1.Reason, want1.DecidedAt, want1.Votes = store.ApprovalCancelled, "agent suspended", at, []store.ApprovalVote{vote}
	checkApproval(t, got, want1)
	checkStored(t, s, want1)

	// Expire, ahead of its ExpiresAt (the caller decides).
	got, err = s.FinishApproval(ctx, "f2", store.ApprovalExpired, "caller went away", at)
	if err != nil {
		t.Fatalf("FinishApproval: %v", err)
	}
	want2 := f2
	want2.State, want2.Reason, want2.DecidedAt = store.ApprovalExpired, "caller went away", at
	checkApproval(t, got, want2)
	checkStored(t, s, want2)

	// Finishing again is refused, changes nothing and names the state.
	got, err = s.FinishApproval(ctx, "f1", store.ApprovalExpired, "again", at.Add(time.Minute))
	wantErr(t, "FinishApproval of a cancelled approval", err, store.ErrNotPending)
	if err != nil && !strings.Contains(err.Error(), string(store.ApprovalCancelled)) {
		t.Errorf("FinishApproval again: error %q does not name the state %q", err, store.ApprovalCancelled)
	}
	if got.ID == "f1" {
		checkApproval(t, got, want1)
	}
	checkStored(t, s, want1)
	_, err = s.VoteApproval(ctx, "f1", newVote("u3", true, at))
	wantErr(t, "VoteApproval of a cancelled approval", err, store.ErrNotPending)
	_, err = s.VoteApproval(ctx, "f2", newVote("u3", true, at))
	wantErr(t, "VoteApproval of an expired approval", err, store.ErrNotPending)

	for _, tc := range []struct {
		name  string
		id    string
		state store.ApprovalState
		at    time.Time
		want  error
	}{
		{"to approved", "f3", store.ApprovalApproved, at, store.ErrInvalid},
		{"to denied", "f3", store.ApprovalDenied, at, store.ErrInvalid},
		{"to pending", "f3", store.ApprovalPending, at, store.ErrInvalid},
		{"to empty state", "f3", "", at, store.ErrInvalid},
		{"zero time", "f3", store.ApprovalCancelled, time.Time{}, store.ErrInvalid},
		{"unknown", "nope", store.ApprovalCancelled, at, store.ErrNotFound},
		{"expired one to cancelled", "f2", store.ApprovalCancelled, at, store.ErrNotPending},
	} {
		_, err := s.FinishApproval(ctx, tc.id, tc.state, "x", tc.at)
		wantErr(t, "FinishApproval "+tc.name, err, tc.want)
	}
	checkStored(t, s, f3)
	checkStored(t, s, want2)
}

func testExpireApprovals(t *testing.T, s store.Store) {
	ctx := t.Context()
	approvalSeed(t, s)
	mk := func(id string, created time.Time, ttl time.Duration) store.Approval {
		a := newApproval(id, "agent-1", created)
		a.ExpiresAt = created.Add(ttl)
		return a
	}
	e1 := mk("e1", t0, 5*time.Minute) // expires t0+5m, has a vote
	e1.Quorum = 2
	e2 := mk("e2", t0.Add(time.Minute), 9*time.Minute)    // expires t0+10m
	e3 := mk("e3", t0.Add(2*time.Minute), 3*time.Minute)  // expires t0+5m, approved first
	e4 := mk("e4", t0.Add(3*time.Minute), 17*time.Minute) // expires t0+20m
	e5 := mk("e5", t0.Add(4*time.Minute), time.Minute)    // expires t0+5m, agent-2
	e5.AgentID = "agent-2"
	createApprovals(t, s, e1, e2, e3, e4, e5)
	vote := newVote("u2", true, t0.Add(time.Minute))
	if _, err := s.VoteApproval(ctx, "e1", vote); err != nil {
		t.Fatalf("VoteApproval: %v", err)
	}
	if _, err := s.VoteApproval(ctx, "e3", vote); err != nil {
		t.Fatalf("VoteApproval: %v", err)
	}

	got, err := s.ExpireApprovals(ctx, t0.Add(5*time.Minute-time.Microsecond))
	if err != nil || len(got) != 0 {
		t.Fatalf("ExpireApprovals before anything expired = %v, %v; want none", approvalIDs(got), err)
	}
	now := t0.Add(10 * time.Minute)
	got, err = s.ExpireApprovals(ctx, now)
	if err != nil {
		t.Fatalf("ExpireApprovals: %v", err)
	}
	if ids := approvalIDs(got); !slices.Equal(ids, []string{"e5", "e2", "e1"}) {
		t.Fatalf("ExpireApprovals = %v, want [e5 e2 e1] (newest first)", ids)
	}
	expired := func(a store.Approval, votes ...store.ApprovalVote) store.Approval {
		a.State, a.Reason, a.DecidedAt, a.Votes = store.ApprovalExpired, store.ApprovalTimeoutReason, now, votes
		return a
	}
	for i, want := range []store.Approval{expired(e5), expired(e2), expired(e1, vote)} {
		checkApproval(t, got[i], want)
		checkStored(t, s, want)
	}
	got, err = s.ExpireApprovals(ctx, now.Add(time.Minute))
	if err != nil || len(got) != 0 {
		t.Errorf("ExpireApprovals again = %v, %v; want none", approvalIDs(got), err)
	}
	e3.State, e3.DecidedAt, e3.Votes = store.ApprovalApproved, vote.At, []store.ApprovalVote{vote}
	checkStored(t, s, e3)
	checkStored(t, s, e4)
	_, err = s.ExpireApprovals(ctx, time.Time{})
	wantErr(t, "ExpireApprovals at a zero time", err, store.ErrInvalid)
}

// testConcurrentExpire: sweepers racing each other (and voters) return each
// approval they expire once.
func testConcurrentExpire(t *testing.T, s store.Store) {
	ctx := t.Context()
	approvalSeed(t, s)
	const n, sweepers = 12, 6
	for i := range n {
		createApprovals(t, s, newApproval("c"+strconv.Itoa(i), "agent-1", t0.Add(time.Duration(i)*time.Second)))
	}
	now := t0.Add(time.Hour)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		returned = map[string]int{}
		voted    = map[string]bool{}
	)
	start := make(chan struct{})
	for range sweepers {
		wg.Go(func() {
			<-start
			got, err := s.ExpireApprovals(ctx, now)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("ExpireApprovals: %v", err)
			}
			for _, a := range got {
				returned[a.ID]++
			}
		})
	}
	for i := range n {
		wg.Go(func() {
			<-start
			id := "c" + strconv.Itoa(i)
			// At a time before ExpiresAt: the vote wins if it comes first.
			_, err := s.VoteApproval(ctx, id, newVote("u2", true, t0.Add(time.Minute)))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				voted[id] = true
			case !errors.Is(err, store.ErrNotPending):
				t.Errorf("VoteApproval(%s): %v", id, err)
			}
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		id := "c" + strconv.Itoa(i)
		a, err := s.GetApproval(ctx, id)
		if err != nil {
			t.Fatalf("GetApproval: %v", err)
		}
		switch {
		case voted[id] && (returned[id] != 0 || a.State != store.ApprovalApproved):
			t.Errorf("%s: voted, then expired %d times; state %s", id, returned[id], a.State)
		case !voted[id] && (returned[id] != 1 || a.State != store.ApprovalExpired):
			t.Errorf("%s: not voted, expired %d times (want 1); state %s", id, returned[id], a.State)
		}
	}
}

func testCancelAgentApprovals(t *testing.T, s store.Store) {
	ctx := t.Context()
	approvalSeed(t, s)
	c1 := newApproval("c1", "agent-1", t0)
	c1.Quorum = 2
	c2 := newApproval("c2", "agent-1", t0.Add(time.Minute)) // pending but past ExpiresAt at `at`
	c2.ExpiresAt = t0.Add(2 * time.Minute)
	c3 := newApproval("c3", "agent-1", t0.Add(2*time.Minute)) // denied first
	c4 := newApproval("c4", "agent-2", t0.Add(3*time.Minute))
	c5 := newApproval("c5", "agent-3", t0.Add(4*time.Minute))
	createApprovals(t, s, c1, c2, c3, c4, c5)
	vote := newVote("u2", true, t0.Add(time.Minute))
	if _, err := s.VoteApproval(ctx, "c1", vote); err != nil {
		t.Fatalf("VoteApproval: %v", err)
	}
	deny := newVote("u2", false, t0.Add(3*time.Minute))
	if _, err := s.VoteApproval(ctx, "c3", deny); err != nil {
		t.Fatalf("VoteApproval: %v", err)
	}

	got, err := s.CancelAgentApprovals(ctx, nil, "kill switch", t0.Add(5*time.Minute))
	if err != nil || len(got) != 0 {
		t.Errorf("CancelAgentApprovals of no agents = %v, %v; want none", approvalIDs(got), err)
	}
	_, err = s.CancelAgentApprovals(ctx, []string{"agent-1"}, "kill switch", time.Time{})
	wantErr(t, "CancelAgentApprovals at a zero time", err, store.ErrInvalid)

	at := t0.Add(5 * time.Minute)
	got, err = s.CancelAgentApprovals(ctx, []string{"agent-1", "agent-3", "nope"}, "kill switch", at)
	if err != nil {
		t.Fatalf("CancelAgentApprovals: %v", err)
	}
	if ids := approvalIDs(got); !slices.Equal(ids, []string{"c5", "c2", "c1"}) {
		t.Fatalf("CancelAgentApprovals = %v, want [c5 c2 c1] (newest first)", ids)
	}
	cancelled := func(a store.Approval, votes ...store.ApprovalVote) store.Approval {
		a.State, a.Reason, a.DecidedAt, a.Votes = store.ApprovalCancelled, "kill switch", at, votes
		return a
	}
	for i, want := range []store.Approval{cancelled(c5), cancelled(c2), cancelled(c1, vote)} {
		checkApproval(t, got[i], want)
		checkStored(t, s, want)
	}
	c3.State, c3.Reason, c3.DecidedAt, c3.Votes = store.ApprovalDenied, "", deny.At, []store.ApprovalVote{deny}
	checkStored(t, s, c3)
	checkStored(t, s, c4)
	got, err = s.CancelAgentApprovals(ctx, []string{"agent-1", "agent-3"}, "again", at.Add(time.Minute))
	if err != nil || len(got) != 0 {
		t.Errorf("CancelAgentApprovals again = %v, %v; want none", approvalIDs(got), err)
	}
	got, err = s.ListApprovals(ctx, store.ApprovalFilter{State: store.ApprovalPending})
	if ids := approvalIDs(got); err != nil || !slices.Equal(ids, []string{"c4"}) {
		t.Errorf("pending after the kill switch = %v, %v; want [c4]", ids, err)
	}
}

// ---- passkeys and enrollments ----

func newPasskey(id, userID string, created time.Time) store.Passkey {
	return store.Passkey{
		ID: []byte("cred\x00\xff" + id), UserID: userID, PublicKey: []byte("cose key of " + id),
		SignCount: 5, AAGUID: hashOf("aaguid")[:16], Transports: []string{"usb", "internal", "hybrid"},
		Flags: 0x1d, Name: "YubiKey " + id, CreatedAt: created,
	}
}

func checkPasskey(t *testing.T, got, want store.Passkey) {
	t.Helper()
	if !bytes.Equal(got.ID, want.ID) || got.UserID != want.UserID || !bytes.Equal(got.PublicKey, want.PublicKey) ||
		got.SignCount != want.SignCount || !bytes.Equal(got.AAGUID, want.AAGUID) ||
		!slices.Equal(got.Transports, want.Transports) || (got.Transports == nil) != (len(want.Transports) == 0) ||
		got.Flags != want.Flags || got.Name != want.Name {
		t.Errorf("passkey:\n got %+v\nwant %+v", got, want)
	}
	checkTime(t, want.Name+" CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, want.Name+" LastUsedAt", got.LastUsedAt, want.LastUsedAt)
}

func checkStoredPasskey(t *testing.T, s store.Store, want store.Passkey) {
	t.Helper()
	got, err := s.GetPasskey(t.Context(), want.ID)
	if err != nil {
		t.Fatalf("GetPasskey(%s): %v", want.Name, err)
	}
	checkPasskey(t, got, want)
}

func testPasskeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	if err := s.CreateUser(ctx, newUser("u2", "b@example.com")); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	pk1 := newPasskey("1", "u1", t0.Add(time.Minute))
	pk2 := newPasskey("2", "u1", t0)
	pk2.Transports, pk2.AAGUID, pk2.SignCount, pk2.Flags = nil, nil, 0, 0
	pk3 := newPasskey("3", "u2", t0)
	pk3.SignCount, pk3.Flags = 1<<32-1, 0xff
	for _, p := range []store.Passkey{pk1, pk2, pk3} {
		if err := s.CreatePasskey(ctx, p); err != nil {
			t.Fatalf("CreatePasskey(%s): %v", p.Name, err)
		}
	}
	mod := func(id, user string, edit func(*store.Passkey)) store.Passkey {
		p := newPasskey(id, user, t0)
		edit(&p)
		return p
	}
	for _, tc := range []struct {
		name string
		p    store.Passkey
		want error
	}{
		{"duplicate id", newPasskey("1", "u2", t0), store.ErrAlreadyExists},
		{"unknown user", newPasskey("4", "nope", t0), store.ErrInvalid},
		{"empty user", newPasskey("5", "", t0), store.ErrInvalid},
		{"empty id", mod("6", "u1", func(p *store.Passkey) { p.ID = nil }), store.ErrInvalid},
		{"empty public key", mod("7", "u1", func(p *store.Passkey) { p.PublicKey = nil }), store.ErrInvalid},
	} {
		wantErr(t, "CreatePasskey "+tc.name, s.CreatePasskey(ctx, tc.p), tc.want)
	}
	for _, p := range []store.Passkey{pk1, pk2, pk3} {
		checkStoredPasskey(t, s, p)
	}
	for _, id := range [][]byte{[]byte("nope"), newPasskey("4", "", t0).ID, nil} {
		_, err := s.GetPasskey(ctx, id)
		wantErr(t, fmt.Sprintf("GetPasskey(%q)", id), err, store.ErrNotFound)
	}

	list := func(user string) []string {
		t.Helper()
		ps, err := s.ListPasskeys(ctx, user)
		if err != nil {
			t.Fatalf("ListPasskeys(%s): %v", user, err)
		}
		return ids(ps, func(p store.Passkey) string { return p.Name })
	}
	if got, want := list("u1"), []string{pk2.Name, pk1.Name}; !slices.Equal(got, want) {
		t.Errorf("ListPasskeys(u1) = %v, want %v (creation order)", got, want)
	}
	if got := list("nope"); len(got) != 0 {
		t.Errorf("ListPasskeys(unknown user) = %v, want none", got)
	}
	ps, err := s.ListPasskeys(ctx, "u2")
	if err != nil || len(ps) != 1 {
		t.Fatalf("ListPasskeys(u2) = %d, %v", len(ps), err)
	}
	checkPasskey(t, ps[0], pk3)

	// The sign count must grow, unless the authenticator keeps none (0).
	for i, tc := range []struct {
		name  string
		p     *store.Passkey
		count uint32
		want  error
	}{
		{"grows", &pk1, 6, nil},
		{"same", &pk1, 6, store.ErrInvalid},
		{"lower", &pk1, 3, store.ErrInvalid},
		{"zero after a count", &pk1, 0, store.ErrInvalid},
		{"jumps", &pk1, 1000, nil},
		{"zero and zero", &pk2, 0, nil},
		{"zero and zero again", &pk2, 0, nil},
		{"counter starts", &pk2, 1, nil},
		{"back to zero", &pk2, 0, store.ErrInvalid},
		{"at the maximum", &pk3, 1<<32 - 1, store.ErrInvalid},
		{"wrapped", &pk3, 0, store.ErrInvalid},
	} {
		at := t0.Add(time.Duration(i+1) * time.Hour)
		err := s.UpdatePasskeyUse(ctx, tc.p.ID, tc.count, at)
		wantErr(t, "UpdatePasskeyUse "+tc.name, err, tc.want)
		if tc.want == nil && err == nil {
			tc.p.SignCount, tc.p.LastUsedAt = tc.count, at
		}
		checkStoredPasskey(t, s, *tc.p)
	}
	wantErr(t, "UpdatePasskeyUse unknown", s.UpdatePasskeyUse(ctx, []byte("nope"), 7, t0), store.ErrNotFound)
	wantErr(t, "UpdatePasskeyUse at a zero time", s.UpdatePasskeyUse(ctx, pk1.ID, 5000, time.Time{}), store.ErrInvalid)
	checkStoredPasskey(t, s, pk1)

	if err := s.DeletePasskey(ctx, pk1.ID); err != nil {
		t.Fatalf("DeletePasskey: %v", err)
	}
	_, err = s.GetPasskey(ctx, pk1.ID)
	wantErr(t, "GetPasskey of a deleted passkey", err, store.ErrNotFound)
	wantErr(t, "DeletePasskey again", s.DeletePasskey(ctx, pk1.ID), store.ErrNotFound)
	wantErr(t, "UpdatePasskeyUse of a deleted passkey", s.UpdatePasskeyUse(ctx, pk1.ID, 5000, t0), store.ErrNotFound)
	if got, want := list("u1"), []string{pk2.Name}; !slices.Equal(got, want) {
		t.Errorf("ListPasskeys(u1) after delete = %v, want %v", got, want)
	}
	// Its id can be registered again.
	if err := s.CreatePasskey(ctx, newPasskey("1", "u2", t0)); err != nil {
		t.Errorf("CreatePasskey with a deleted passkey's id: %v", err)
	}
}

func newEnrollment(token, userID string, created time.Time) store.Enrollment {
	return store.Enrollment{
		TokenHash: hashOf("enrollment " + token), UserID: userID, CreatedBy: "admin-1",
		CreatedAt: created, ExpiresAt: created.Add(time.Hour),
	}
}

func checkEnrollment(t *testing.T, got, want store.Enrollment) {
	t.Helper()
	if !bytes.Equal(got.TokenHash, want.TokenHash) || got.UserID != want.UserID || got.CreatedBy != want.CreatedBy {
		t.Errorf("enrollment:\n got %+v\nwant %+v", got, want)
	}
	checkTime(t, "enrollment CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, "enrollment ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	checkTime(t, "enrollment UsedAt", got.UsedAt, want.UsedAt)
}

func testEnrollments(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	e1 := newEnrollment("1", "u1", t0)
	e2 := newEnrollment("2", "u1", t0)
	for _, e := range []store.Enrollment{e1, e2} {
		if err := s.CreateEnrollment(ctx, e); err != nil {
			t.Fatalf("CreateEnrollment: %v", err)
		}
	}
	mod := func(token string, edit func(*store.Enrollment)) store.Enrollment {
		e := newEnrollment(token, "u1", t0)
		edit(&e)
		return e
	}
	for _, tc := range []struct {
		name string
		e    store.Enrollment
		want error
	}{
		{"duplicate hash", newEnrollment("1", "u1", t0.Add(time.Minute)), store.ErrAlreadyExists},
		{"unknown user", newEnrollment("3", "nope", t0), store.ErrInvalid},
		{"empty user", newEnrollment("4", "", t0), store.ErrInvalid},
		{"short hash", mod("5", func(e *store.Enrollment) { e.TokenHash = e.TokenHash[:16] }), store.ErrInvalid},
		{"no hash", mod("6", func(e *store.Enrollment) { e.TokenHash = nil }), store.ErrInvalid},
		{"no expiry", mod("7", func(e *store.Enrollment) { e.ExpiresAt = time.Time{} }), store.ErrInvalid},
	} {
		wantErr(t, "CreateEnrollment "+tc.name, s.CreateEnrollment(ctx, tc.e), tc.want)
	}

	at := t0.Add(time.Minute)
	got, err := s.UseEnrollment(ctx, e1.TokenHash, at)
	if err != nil {
		t.Fatalf("UseEnrollment: %v", err)
	}
	want := e1
	want.UsedAt = at
	checkEnrollment(t, got, want)
	for _, tc := range []struct {
		name string
		hash []byte
		at   time.Time
		want error
	}{
		{"again", e1.TokenHash, at.Add(time.Second), store.ErrEnrollmentUsed},
		{"unknown", hashOf("nope"), at, store.ErrNotFound},
		{"refused one", newEnrollment("3", "", t0).TokenHash, at, store.ErrNotFound},
		{"zero time", e2.TokenHash, time.Time{}, store.ErrInvalid},
		{"at its ExpiresAt", e2.TokenHash, e2.ExpiresAt, store.ErrEnrollmentUsed},
		{"after its ExpiresAt", e2.TokenHash, e2.ExpiresAt.Add(time.Hour), store.ErrEnrollmentUsed},
	} {
		_, err := s.UseEnrollment(ctx, tc.hash, tc.at)
		wantErr(t, "UseEnrollment "+tc.name, err, tc.want)
	}
	// Refusals changed nothing: e2 is still usable just before it expires.
	got, err = s.UseEnrollment(ctx, e2.TokenHash, e2.ExpiresAt.Add(-time.Microsecond))
	if err != nil {
		t.Fatalf("UseEnrollment just before ExpiresAt: %v", err)
	}
	want = e2
	want.UsedAt = e2.ExpiresAt.Add(-time.Microsecond)
	checkEnrollment(t, got, want)
}

// testConcurrentUseEnrollment: of concurrent uses of one enrollment exactly
// one succeeds.
func testConcurrentUseEnrollment(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	e := newEnrollment("race", "u1", t0)
	if err := s.CreateEnrollment(ctx, e); err != nil {
		t.Fatalf("CreateEnrollment: %v", err)
	}
	const n = 10
	var errs [n]error
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = s.UseEnrollment(ctx, e.TokenHash, t0.Add(time.Duration(i+1)*time.Second))
		})
	}
	close(start)
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrEnrollmentUsed):
			t.Errorf("goroutine %d: UseEnrollment = %v, want nil or ErrEnrollmentUsed", i, err)
		}
	}
	if ok != 1 {
		t.Errorf("%d concurrent uses of one enrollment succeeded, want exactly 1", ok)
	}
}
