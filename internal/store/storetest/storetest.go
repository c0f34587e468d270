// Package storetest provides the conformance suite every store.Store backend
// must pass: Run exercises each method of the interface, its sentinel errors,
// the Generation counter, Meta, the audit chain's continuity checks and
// filters, checkpoints, budget counters, signing keys and credential
// records, approvals and their votes, passkeys and enrollments, and the
// concurrency guarantees the rest of interlock relies on (contiguous
// concurrent appends, budgets that concurrent charges never overrun,
// credentials that concurrent consumers never overuse, approvals that
// concurrent voters decide once without losing a vote, enrollments used
// once).
//
// It must not depend on any one backend's behaviour (it will run against
// SQLite and PostgreSQL alike), must not sleep or assert on timing, and must
// not import a backend.
package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// Run runs the conformance suite. open must return a fresh, empty store for
// each call and arrange for it to be closed (t.Cleanup); every subtest gets
// its own.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		run  func(t *testing.T, s store.Store)
	}{
		{"CreateUser", testCreateUser},
		{"GetUser", testGetUser},
		{"ListUsers", testListUsers},
		{"UpdateUser", testUpdateUser},
		{"CreateAgent", testCreateAgent},
		{"ListAgents", testListAgents},
		{"UpdateAgent", testUpdateAgent},
		{"CreateAgentToken", testCreateAgentToken},
		{"ListAgentTokens", testListAgentTokens},
		{"RevokeAgentToken", testRevokeAgentToken},
		{"TouchAgentToken", testTouchAgentToken},
		{"LookupPrincipal", testLookupPrincipal},
		{"Generation", testGeneration},
		{"Meta", testMeta},
		{"ConcurrentPutMetaIfAbsent", testConcurrentPutMeta},
		{"ConcurrentUpdateAgent", testConcurrentUpdateAgent},
		{"ConcurrentCreateUser", testConcurrentCreateUser},
		{"Timestamps", testTimestamps},
		{"Ping", testPing},
		{"LifecycleFields", testLifecycleFields},
		{"AuditHeadEmpty", testAuditHeadEmpty},
		{"AppendAudit", testAppendAudit},
		{"ConcurrentAppendAudit", testConcurrentAppendAudit},
		{"AppendAuditCredentials", testAppendAuditCredentials},
		{"ConcurrentAppendAuditCredentials", testConcurrentAppendAuditCredentials},
		{"ListAudit", testListAudit},
		{"Checkpoints", testCheckpoints},
		{"ChargeBudget", testChargeBudget},
		{"ConcurrentChargeBudget", testConcurrentChargeBudget},
		{"BudgetTotals", testBudgetTotals},
		{"PruneBudget", testPruneBudget},
		{"SigningKeys", testSigningKeys},
		{"CreateCredential", testCreateCredential},
		{"ListCredentials", testListCredentials},
		{"ConsumeCredential", testConsumeCredential},
		{"ConcurrentConsumeCredential", testConcurrentConsume},
		{"RevokeCredential", testRevokeCredential},
		{"StatusIndexes", testStatusIndexes},
		{"CreateApproval", testCreateApproval},
		{"ListApprovals", testListApprovals},
		{"FindPendingApproval", testFindPendingApproval},
		{"VoteApproval", testVoteApproval},
		{"ConcurrentVoteApproval", testConcurrentVotes},
		{"FinishApproval", testFinishApproval},
		{"ExpireApprovals", testExpireApprovals},
		{"ConcurrentExpireApprovals", testConcurrentExpire},
		{"CancelAgentApprovals", testCancelAgentApprovals},
		{"OwnerCascade", testOwnerCascade},
		{"Passkeys", testPasskeys},
		{"PushSubscriptions", testPushSubscriptions},
		{"Enrollments", testEnrollments},
		{"ConcurrentUseEnrollment", testConcurrentUseEnrollment},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			if s == nil {
				t.Fatal("open returned a nil store")
			}
			tc.run(t, s)
		})
	}
}

// t0 is a fixed time with microsecond precision in UTC: it round-trips
// unchanged.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC)

func newUser(id, email string, roles ...string) store.User {
	return store.User{
		ID: id, Email: email, Name: "Name of " + id, Roles: roles,
		Active: true, Source: "local", CreatedAt: t0, UpdatedAt: t0,
	}
}

func newAgent(id, ownerID string) store.Agent {
	return store.Agent{
		ID: id, Name: "Agent " + id, OwnerID: ownerID, Department: "finance",
		Purpose: "pays invoices", State: store.AgentActive, CreatedAt: t0, UpdatedAt: t0,
	}
}

func hashOf(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func newToken(id, agentID string) store.AgentToken {
	return store.AgentToken{ID: id, AgentID: agentID, Hash: hashOf("token " + id), CreatedAt: t0}
}

// seed creates a user "u1" (a@example.com), its agent "agent-1" and the
// agent's token "tok-1".
func seed(t *testing.T, s store.Store) (store.User, store.Agent, store.AgentToken) {
	t.Helper()
	ctx := t.Context()
	u := newUser("u1", "a@example.com", "admin")
	a := newAgent("agent-1", u.ID)
	tok := newToken("tok-1", a.ID)
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatalf("seed: CreateUser: %v", err)
	}
	if err := s.CreateAgent(ctx, a); err != nil {
		t.Fatalf("seed: CreateAgent: %v", err)
	}
	if err := s.CreateAgentToken(ctx, tok); err != nil {
		t.Fatalf("seed: CreateAgentToken: %v", err)
	}
	return u, a, tok
}

// wantErr checks err against want: nil means no error expected, otherwise
// errors.Is(err, want) must hold.
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
	case want != nil && !errors.Is(err, want):
		t.Errorf("%s: error %v, want one wrapping %v", what, err, want)
	}
}

func checkTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	want = store.NormalizeTime(want)
	if !got.Equal(want) || got.IsZero() != want.IsZero() {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
	if got.Location() != time.UTC {
		t.Errorf("%s location = %v, want UTC", what, got.Location())
	}
}

func checkUser(t *testing.T, got, want store.User) {
	t.Helper()
	if got.ID != want.ID || got.Email != store.NormalizeEmail(want.Email) || got.Name != want.Name ||
		!slices.Equal(got.Roles, store.NormalizeRoles(want.Roles)) || got.Active != want.Active ||
		got.Source != want.Source || got.ExternalID != want.ExternalID {
		t.Errorf("user:\n got %+v\nwant %+v", got, want)
	}
	checkTime(t, "user "+want.ID+" CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, "user "+want.ID+" UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	checkTime(t, "user "+want.ID+" DeletedAt", got.DeletedAt, want.DeletedAt)
}

func checkAgent(t *testing.T, got, want store.Agent) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || got.OwnerID != want.OwnerID ||
		got.Department != want.Department || got.Purpose != want.Purpose || got.State != want.State ||
		got.StateChangedBy != want.StateChangedBy || got.StateReason != want.StateReason ||
		!slices.Equal(got.AllowedUpstreams, want.AllowedUpstreams) || got.CreatedBy != want.CreatedBy {
		t.Errorf("agent:\n got %+v\nwant %+v", got, want)
	}
	checkTime(t, "agent "+want.ID+" CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, "agent "+want.ID+" UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	checkTime(t, "agent "+want.ID+" StateChangedAt", got.StateChangedAt, want.StateChangedAt)
}

func checkToken(t *testing.T, got, want store.AgentToken) {
	t.Helper()
	if got.ID != want.ID || got.AgentID != want.AgentID || !slices.Equal(got.Hash, want.Hash) {
		t.Errorf("token:\n got %+v\nwant %+v", got, want)
	}
	checkTime(t, "token "+want.ID+" CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, "token "+want.ID+" ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	checkTime(t, "token "+want.ID+" RevokedAt", got.RevokedAt, want.RevokedAt)
	checkTime(t, "token "+want.ID+" LastUsedAt", got.LastUsedAt, want.LastUsedAt)
}

func ids[T any](xs []T, id func(T) string) []string {
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		out = append(out, id(x))
	}
	return out
}

// ---- users ----

func testCreateUser(t *testing.T, s store.Store) {
	ctx := t.Context()
	if err := s.CreateUser(ctx, newUser("u1", "Alice@Example.COM", "b", "a", "b")); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	tests := []struct {
		name string
		user store.User
		want error
	}{
		{"second user", newUser("u2", "bob@example.com"), nil},
		{"duplicate id", newUser("u1", "other@example.com"), store.ErrAlreadyExists},
		{"duplicate email", newUser("u3", "alice@example.com"), store.ErrAlreadyExists},
		{"duplicate email other case", newUser("u4", "ALICE@example.com"), store.ErrAlreadyExists},
		{"empty id", newUser("", "carol@example.com"), store.ErrInvalid},
		{"empty email", newUser("u5", ""), store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, "CreateUser", s.CreateUser(ctx, tc.user), tc.want)
		})
	}
	// Failed creations left nothing behind.
	users, err := s.ListUsers(ctx)
	if err != nil {
		t.Fatalf("ListUsers: %v", err)
	}
	if got, want := ids(users, func(u store.User) string { return u.ID }), []string{"u1", "u2"}; !slices.Equal(got, want) {
		t.Errorf("users after failed creations = %v, want %v", got, want)
	}
	got, err := s.GetUser(ctx, "u1")
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	if got.Email != "alice@example.com" {
		t.Errorf("Email = %q, want it stored lower-case", got.Email)
	}
	if want := []string{"a", "b"}; !slices.Equal(got.Roles, want) {
		t.Errorf("Roles = %q, want sorted and unique %q", got.Roles, want)
	}
}

func testGetUser(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser("u1", "alice@example.com", "finance-manager", "admin")
	u.Active = false
	u.Source = "scim"
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	noRoles := newUser("u2", "bob@example.com")
	if err := s.CreateUser(ctx, noRoles); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	tests := []struct {
		name string
		get  func() (store.User, error)
		want store.User
		err  error
	}{
		{"by id", func() (store.User, error) { return s.GetUser(ctx, "u1") }, u, nil},
		{"by id without roles", func() (store.User, error) { return s.GetUser(ctx, "u2") }, noRoles, nil},
		{"by email", func() (store.User, error) { return s.GetUserByEmail(ctx, "alice@example.com") }, u, nil},
		{"by email other case", func() (store.User, error) { return s.GetUserByEmail(ctx, "ALICE@Example.Com") }, u, nil},
		{"unknown id", func() (store.User, error) { return s.GetUser(ctx, "nope") }, store.User{}, store.ErrNotFound},
		{"id is not an email", func() (store.User, error) { return s.GetUserByEmail(ctx, "u1") }, store.User{}, store.ErrNotFound},
		{"unknown email", func() (store.User, error) { return s.GetUserByEmail(ctx, "x@example.com") }, store.User{}, store.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.get()
			wantErr(t, "get", err, tc.err)
			if tc.err == nil && err == nil {
				checkUser(t, got, tc.want)
			}
		})
	}
}

func testListUsers(t *testing.T, s store.Store) {
	ctx := t.Context()
	users, err := s.ListUsers(ctx)
	if err != nil {
		t.Fatalf("ListUsers on empty store: %v", err)
	}
	if len(users) != 0 {
		t.Fatalf("ListUsers on empty store = %d users", len(users))
	}
	for _, u := range []store.User{
		newUser("1", "carol@example.com"),
		newUser("2", "Alice@example.com"),
		newUser("3", "bob@example.com", "x"),
	} {
		if err := s.CreateUser(ctx, u); err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
	}
	users, err = s.ListUsers(ctx)
	if err != nil {
		t.Fatalf("ListUsers: %v", err)
	}
	got := ids(users, func(u store.User) string { return u.Email })
	if want := []string{"alice@example.com", "bob@example.com", "carol@example.com"}; !slices.Equal(got, want) {
		t.Errorf("ListUsers emails = %q, want %q (ordered by email)", got, want)
	}
	if len(users) == 3 {
		checkUser(t, users[1], newUser("3", "bob@example.com", "x"))
	}
}

var errBoom = errors.New("updater refuses")

func testUpdateUser(t *testing.T, s store.Store) {
	ctx := t.Context()
	u1 := newUser("u1", "alice@example.com", "admin")
	if err := s.CreateUser(ctx, u1); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if err := s.CreateUser(ctx, newUser("u2", "bob@example.com")); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	t1 := t0.Add(time.Hour)
	tests := []struct {
		name   string
		id     string
		update func(store.User) (store.User, error)
		err    error
		want   store.User // the stored record afterwards (for id)
	}{
		{
			name: "change fields",
			id:   "u1",
			update: func(u store.User) (store.User, error) {
				u.Name, u.Roles, u.Active, u.Source, u.UpdatedAt = "Alice", []string{"z", "finance-manager", "z"}, false, "scim", t1
				return u, nil
			},
			want: store.User{ID: "u1", Email: "alice@example.com", Name: "Alice", Roles: []string{"finance-manager", "z"},
				Active: false, Source: "scim", CreatedAt: t0, UpdatedAt: t1},
		},
		{
			name: "email lower-cased",
			id:   "u1",
			update: func(u store.User) (store.User, error) {
				u.Email = "Alice.New@Example.com"
				return u, nil
			},
			want: store.User{ID: "u1", Email: "alice.new@example.com", Name: "Alice", Roles: []string{"finance-manager", "z"},
				Active: false, Source: "scim", CreatedAt: t0, UpdatedAt: t1},
		},
		{
			name: "identity fields ignored",
			id:   "u1",
			update: func(u store.User) (store.User, error) {
				u.ID, u.CreatedAt, u.Name = "u9", t1, "Alice Again"
				return u, nil
			},
			want: store.User{ID: "u1", Email: "alice.new@example.com", Name: "Alice Again", Roles: []string{"finance-manager", "z"},
				Active: false, Source: "scim", CreatedAt: t0, UpdatedAt: t1},
		},
		{
			name: "updater error aborts",
			id:   "u1",
			update: func(u store.User) (store.User, error) {
				u.Name = "changed"
				return u, fmt.Errorf("wrapped: %w", errBoom)
			},
			err: errBoom,
			want: store.User{ID: "u1", Email: "alice.new@example.com", Name: "Alice Again", Roles: []string{"finance-manager", "z"},
				Active: false, Source: "scim", CreatedAt: t0, UpdatedAt: t1},
		},
		{
			name: "duplicate email",
			id:   "u1",
			update: func(u store.User) (store.User, error) {
				u.Email, u.Name = "BOB@example.com", "changed"
				return u, nil
			},
			err: store.ErrAlreadyExists,
			want: store.User{ID: "u1", Email: "alice.new@example.com", Name: "Alice Again", Roles: []string{"finance-manager", "z"},
				Active: false, Source: "scim", CreatedAt: t0, UpdatedAt: t1},
		},
		{
			name: "empty email",
			id:   "u1",
			update: func(u store.User) (store.User, error) {
				u.Email = ""
				return u, nil
			},
			err: store.ErrInvalid,
			want: store.User{ID: "u1", Email: "alice.new@example.com", Name: "Alice Again", Roles: []string{"finance-manager", "z"},
				Active: false, Source: "scim", CreatedAt: t0, UpdatedAt: t1},
		},
		{
			name:   "unknown id",
			id:     "nope",
			update: func(u store.User) (store.User, error) { return u, nil },
			err:    store.ErrNotFound,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.UpdateUser(ctx, tc.id, tc.update)
			wantErr(t, "UpdateUser", err, tc.err)
			if tc.err == nil && err == nil {
				checkUser(t, got, tc.want)
			}
			if tc.want.ID == "" {
				return
			}
			stored, err := s.GetUser(ctx, tc.want.ID)
			if err != nil {
				t.Fatalf("GetUser: %v", err)
			}
			checkUser(t, stored, tc.want)
		})
	}
	if _, err := s.GetUser(ctx, "u9"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUser(u9) after an updater set ID = %v, want ErrNotFound", err)
	}
	if _, err := s.GetUserByEmail(ctx, "alice@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old email still resolves after change: %v", err)
	}
	// The other user is untouched.
	bob, err := s.GetUser(ctx, "u2")
	if err != nil {
		t.Fatalf("GetUser(u2): %v", err)
	}
	checkUser(t, bob, newUser("u2", "bob@example.com"))
}

// ---- agents ----

func testCreateAgent(t *testing.T, s store.Store) {
	ctx := t.Context()
	if err := s.CreateUser(ctx, newUser("u1", "a@example.com")); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	suspended := newAgent("agent-2", "u1")
	suspended.State = store.AgentSuspended
	bad := newAgent("agent-3", "u1")
	bad.State = "sleepy"
	limited := newAgent("agent-6", "u1")
	limited.AllowedUpstreams, limited.CreatedBy = []string{"github", "jira"}, "cli:alice"
	emptyUpstream := newAgent("agent-7", "u1")
	emptyUpstream.AllowedUpstreams = []string{"github", ""}
	tests := []struct {
		name  string
		agent store.Agent
		want  error
	}{
		{"ok", newAgent("agent-1", "u1"), nil},
		{"suspended", suspended, nil},
		{"duplicate id", newAgent("agent-1", "u1"), store.ErrAlreadyExists},
		{"owner does not exist", newAgent("agent-4", "nobody"), store.ErrInvalid},
		{"empty owner", newAgent("agent-5", ""), store.ErrInvalid},
		{"invalid state", bad, store.ErrInvalid},
		{"empty id", newAgent("", "u1"), store.ErrInvalid},
		{"allowed upstreams and creator", limited, nil},
		{"empty allowed upstream", emptyUpstream, store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, "CreateAgent", s.CreateAgent(ctx, tc.agent), tc.want)
			if tc.want != nil {
				return
			}
			got, err := s.GetAgent(ctx, tc.agent.ID)
			if err != nil {
				t.Fatalf("GetAgent: %v", err)
			}
			checkAgent(t, got, tc.agent)
		})
	}
	agents, err := s.ListAgents(ctx)
	if err != nil {
		t.Fatalf("ListAgents: %v", err)
	}
	if got, want := ids(agents, func(a store.Agent) string { return a.ID }), []string{"agent-1", "agent-2", "agent-6"}; !slices.Equal(got, want) {
		t.Errorf("agents after failed creations = %v, want %v", got, want)
	}
	if _, err := s.GetAgent(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAgent(unknown) = %v, want ErrNotFound", err)
	}
}

func testListAgents(t *testing.T, s store.Store) {
	ctx := t.Context()
	agents, err := s.ListAgents(ctx)
	if err != nil || len(agents) != 0 {
		t.Fatalf("ListAgents on empty store = %v, %v; want none", agents, err)
	}
	if err := s.CreateUser(ctx, newUser("u1", "a@example.com")); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	for _, id := range []string{"bravo", "delta", "alpha", "charlie"} {
		if err := s.CreateAgent(ctx, newAgent(id, "u1")); err != nil {
			t.Fatalf("CreateAgent(%s): %v", id, err)
		}
	}
	agents, err = s.ListAgents(ctx)
	if err != nil {
		t.Fatalf("ListAgents: %v", err)
	}
	// Lower-case letters only, so that the order does not depend on a
	// collation.
	got := ids(agents, func(a store.Agent) string { return a.ID })
	if want := []string{"alpha", "bravo", "charlie", "delta"}; !slices.Equal(got, want) {
		t.Errorf("ListAgents = %q, want %q (ordered by id)", got, want)
	}
	if len(agents) == 4 {
		checkAgent(t, agents[1], newAgent("bravo", "u1"))
	}
}

func testUpdateAgent(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, u := range []store.User{newUser("u1", "a@example.com"), newUser("u2", "b@example.com")} {
		if err := s.CreateUser(ctx, u); err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
	}
	if err := s.CreateAgent(ctx, newAgent("agent-1", "u1")); err != nil {
		t.Fatalf("CreateAgent: %v", err)
	}
	t1 := t0.Add(time.Minute)
	changed := store.Agent{ID: "agent-1", Name: "renamed", OwnerID: "u2", Department: "ops", Purpose: "restarts pods",
		State: store.AgentSuspended, AllowedUpstreams: []string{"jira"}, CreatedBy: "api:ops", CreatedAt: t0, UpdatedAt: t1}
	unlimited := changed
	unlimited.AllowedUpstreams = nil
	tests := []struct {
		name   string
		id     string
		update func(store.Agent) (store.Agent, error)
		err    error
		want   store.Agent
	}{
		{
			name: "change fields",
			id:   "agent-1",
			update: func(a store.Agent) (store.Agent, error) {
				a.Name, a.OwnerID, a.Department, a.Purpose, a.State, a.UpdatedAt =
					"renamed", "u2", "ops", "restarts pods", store.AgentSuspended, t1
				a.AllowedUpstreams, a.CreatedBy = []string{"jira"}, "api:ops"
				return a, nil
			},
			want: changed,
		},
		{
			name: "empty allowed upstream",
			id:   "agent-1",
			update: func(a store.Agent) (store.Agent, error) {
				a.AllowedUpstreams = []string{""}
				return a, nil
			},
			err:  store.ErrInvalid,
			want: changed,
		},
		{
			name: "identity fields ignored",
			id:   "agent-1",
			update: func(a store.Agent) (store.Agent, error) {
				a.ID, a.CreatedAt = "agent-9", t1
				return a, nil
			},
			want: changed,
		},
		{
			name: "updater error aborts",
			id:   "agent-1",
			update: func(a store.Agent) (store.Agent, error) {
				a.State = store.AgentDecommissioned
				return a, errBoom
			},
			err:  errBoom,
			want: changed,
		},
		{
			name: "owner does not exist",
			id:   "agent-1",
			update: func(a store.Agent) (store.Agent, error) {
				a.OwnerID, a.Name = "nobody", "changed"
				return a, nil
			},
			err:  store.ErrInvalid,
			want: changed,
		},
		{
			name: "invalid state",
			id:   "agent-1",
			update: func(a store.Agent) (store.Agent, error) {
				a.State, a.Name = "", "changed"
				return a, nil
			},
			err:  store.ErrInvalid,
			want: changed,
		},
		{
			name: "clear allowed upstreams",
			id:   "agent-1",
			update: func(a store.Agent) (store.Agent, error) {
				a.AllowedUpstreams = []string{}
				return a, nil
			},
			want: unlimited,
		},
		{
			name:   "unknown id",
			id:     "nope",
			update: func(a store.Agent) (store.Agent, error) { return a, nil },
			err:    store.ErrNotFound,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.UpdateAgent(ctx, tc.id, tc.update)
			wantErr(t, "UpdateAgent", err, tc.err)
			if tc.err == nil && err == nil {
				checkAgent(t, got, tc.want)
			}
			if tc.want.ID == "" {
				return
			}
			stored, err := s.GetAgent(ctx, tc.want.ID)
			if err != nil {
				t.Fatalf("GetAgent: %v", err)
			}
			checkAgent(t, stored, tc.want)
		})
	}
	if _, err := s.GetAgent(ctx, "agent-9"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAgent(agent-9) after an updater set ID = %v, want ErrNotFound", err)
	}
}

// ---- agent tokens ----

func testCreateAgentToken(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, _, tok := seed(t, s)
	short := newToken("tok-short", "agent-1")
	short.Hash = short.Hash[:16]
	sameHash := newToken("tok-2", "agent-1")
	sameHash.Hash = tok.Hash
	expiring := newToken("tok-3", "agent-1")
	expiring.ExpiresAt = t0.Add(24 * time.Hour)
	tests := []struct {
		name  string
		token store.AgentToken
		want  error
	}{
		{"expiring", expiring, nil},
		{"duplicate id", newToken("tok-1", "agent-1"), store.ErrAlreadyExists},
		{"duplicate hash", sameHash, store.ErrAlreadyExists},
		{"agent does not exist", newToken("tok-4", "nobody"), store.ErrInvalid},
		{"hash not 32 bytes", short, store.ErrInvalid},
		{"empty id", newToken("", "agent-1"), store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, "CreateAgentToken", s.CreateAgentToken(ctx, tc.token), tc.want)
		})
	}
	toks, err := s.ListAgentTokens(ctx, "agent-1")
	if err != nil {
		t.Fatalf("ListAgentTokens: %v", err)
	}
	if len(toks) != 2 {
		t.Fatalf("ListAgentTokens = %d tokens, want 2 (failed creations leave nothing)", len(toks))
	}
	checkToken(t, toks[0], tok)
	checkToken(t, toks[1], expiring)
}

func testListAgentTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	if err := s.CreateAgent(ctx, newAgent("agent-2", "u1")); err != nil {
		t.Fatalf("CreateAgent: %v", err)
	}
	// Creation order differs from id order.
	for i, tc := range []struct {
		id, agent string
		at        time.Time
	}{
		{"tok-a", "agent-2", t0.Add(2 * time.Second)},
		{"tok-b", "agent-2", t0},
		{"tok-c", "agent-2", t0.Add(time.Second)},
	} {
		tok := newToken(tc.id, tc.agent)
		tok.CreatedAt = tc.at
		if err := s.CreateAgentToken(ctx, tok); err != nil {
			t.Fatalf("CreateAgentToken #%d: %v", i, err)
		}
	}
	tests := []struct {
		agent string
		want  []string
	}{
		{"agent-1", []string{"tok-1"}},
		{"agent-2", []string{"tok-b", "tok-c", "tok-a"}},
		{"unknown", []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.agent, func(t *testing.T) {
			toks, err := s.ListAgentTokens(ctx, tc.agent)
			if err != nil {
				t.Fatalf("ListAgentTokens: %v", err)
			}
			if got := ids(toks, func(x store.AgentToken) string { return x.ID }); !slices.Equal(got, tc.want) {
				t.Errorf("ListAgentTokens(%s) = %q, want %q (ordered by creation)", tc.agent, got, tc.want)
			}
		})
	}
}

func tokenByID(t *testing.T, s store.Store, agentID, id string) store.AgentToken {
	t.Helper()
	toks, err := s.ListAgentTokens(t.Context(), agentID)
	if err != nil {
		t.Fatalf("ListAgentTokens: %v", err)
	}
	for _, x := range toks {
		if x.ID == id {
			return x
		}
	}
	t.Fatalf("token %s of %s not found", id, agentID)
	return store.AgentToken{}
}

func testRevokeAgentToken(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	if err := s.CreateAgentToken(ctx, newToken("tok-2", "agent-1")); err != nil {
		t.Fatalf("CreateAgentToken: %v", err)
	}
	t1, t2 := t0.Add(time.Hour), t0.Add(2*time.Hour)
	tests := []struct {
		name string
		id   string
		at   time.Time
		err  error
		want time.Time // RevokedAt of id afterwards
	}{
		{"first revocation", "tok-1", t1, nil, t1},
		{"second keeps the first time", "tok-1", t2, nil, t1},
		{"earlier time keeps the first time", "tok-1", t0, nil, t1},
		{"zero time", "tok-2", time.Time{}, store.ErrInvalid, time.Time{}},
		{"unknown", "nope", t1, store.ErrNotFound, time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, "RevokeAgentToken", s.RevokeAgentToken(ctx, tc.id, tc.at), tc.err)
			if tc.id == "nope" {
				return
			}
			checkTime(t, "RevokedAt", tokenByID(t, s, "agent-1", tc.id).RevokedAt, tc.want)
		})
	}
	// The other token is not revoked.
	checkTime(t, "tok-2 RevokedAt", tokenByID(t, s, "agent-1", "tok-2").RevokedAt, time.Time{})
}

func testTouchAgentToken(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	t1, t2 := t0.Add(time.Hour), t0.Add(2*time.Hour)
	tests := []struct {
		name string
		id   string
		at   time.Time
		err  error
		want time.Time // LastUsedAt of tok-1 afterwards
	}{
		{"first use", "tok-1", t1, nil, t1},
		{"later use moves forward", "tok-1", t2, nil, t2},
		{"earlier use never moves backwards", "tok-1", t1, nil, t2},
		{"same time", "tok-1", t2, nil, t2},
		{"zero time", "tok-1", time.Time{}, store.ErrInvalid, t2},
		{"unknown", "nope", t1, store.ErrNotFound, t2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, "TouchAgentToken", s.TouchAgentToken(ctx, tc.id, tc.at), tc.err)
			checkTime(t, "LastUsedAt", tokenByID(t, s, "agent-1", "tok-1").LastUsedAt, tc.want)
		})
	}
}

func testLookupPrincipal(t *testing.T, s store.Store) {
	ctx := t.Context()
	u, a, tok := seed(t, s)
	// A second, unrelated principal, so a join on the wrong key shows.
	u2 := newUser("u2", "b@example.com", "sre")
	a2 := newAgent("agent-2", "u2")
	a2.AllowedUpstreams, a2.CreatedBy = []string{"github"}, "scim"
	tok2 := newToken("tok-2", "agent-2")
	tok2.ExpiresAt = t0.Add(time.Hour)
	for _, err := range []error{s.CreateUser(ctx, u2), s.CreateAgent(ctx, a2), s.CreateAgentToken(ctx, tok2)} {
		if err != nil {
			t.Fatalf("create second principal: %v", err)
		}
	}

	check := func(t *testing.T, hash []byte, want store.Principal) {
		t.Helper()
		p, err := s.LookupPrincipal(ctx, hash)
		if err != nil {
			t.Fatalf("LookupPrincipal: %v", err)
		}
		checkToken(t, p.Token, want.Token)
		checkAgent(t, p.Agent, want.Agent)
		checkUser(t, p.Owner, want.Owner)
	}
	t.Run("first", func(t *testing.T) { check(t, tok.Hash, store.Principal{Token: tok, Agent: a, Owner: u}) })
	t.Run("second", func(t *testing.T) { check(t, tok2.Hash, store.Principal{Token: tok2, Agent: a2, Owner: u2}) })

	t.Run("reflects changes", func(t *testing.T) {
		t1 := t0.Add(time.Hour)
		a, err := s.UpdateAgent(ctx, "agent-1", func(a store.Agent) (store.Agent, error) {
			a.State = store.AgentSuspended
			return a, nil
		})
		if err != nil {
			t.Fatalf("UpdateAgent: %v", err)
		}
		u, err := s.UpdateUser(ctx, "u1", func(u store.User) (store.User, error) {
			u.Active = false
			return u, nil
		})
		if err != nil {
			t.Fatalf("UpdateUser: %v", err)
		}
		if err := s.RevokeAgentToken(ctx, "tok-1", t1); err != nil {
			t.Fatalf("RevokeAgentToken: %v", err)
		}
		if err := s.TouchAgentToken(ctx, "tok-1", t1); err != nil {
			t.Fatalf("TouchAgentToken: %v", err)
		}
		tok := tok
		tok.RevokedAt, tok.LastUsedAt = t1, t1
		// Revoked tokens are returned as they are.
		check(t, tok.Hash, store.Principal{Token: tok, Agent: a, Owner: u})
	})

	t.Run("owner changes", func(t *testing.T) {
		a, err := s.UpdateAgent(ctx, "agent-2", func(a store.Agent) (store.Agent, error) {
			a.OwnerID = "u1"
			return a, nil
		})
		if err != nil {
			t.Fatalf("UpdateAgent: %v", err)
		}
		owner, err := s.GetUser(ctx, "u1")
		if err != nil {
			t.Fatalf("GetUser: %v", err)
		}
		check(t, tok2.Hash, store.Principal{Token: tok2, Agent: a, Owner: owner})
	})

	for _, tc := range []struct {
		name string
		hash []byte
	}{
		{"unknown hash", hashOf("nope")},
		{"short hash", tok.Hash[:8]},
		{"empty hash", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.LookupPrincipal(ctx, tc.hash); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("LookupPrincipal = %v, want ErrNotFound", err)
			}
		})
	}
}

// ---- generation ----

func testGeneration(t *testing.T, s store.Store) {
	ctx := t.Context()
	keep := func(u store.User) (store.User, error) { return u, nil }
	steps := []struct {
		name  string
		bumps bool
		do    func() error
	}{
		{"CreateUser", true, func() error { return s.CreateUser(ctx, newUser("u1", "a@example.com")) }},
		{"GetUser", false, func() error { _, err := s.GetUser(ctx, "u1"); return err }},
		{"GetUserByEmail", false, func() error { _, err := s.GetUserByEmail(ctx, "a@example.com"); return err }},
		{"ListUsers", false, func() error { _, err := s.ListUsers(ctx); return err }},
		{"UpdateUser", true, func() error {
			_, err := s.UpdateUser(ctx, "u1", func(u store.User) (store.User, error) { u.Name = "x"; return u, nil })
			return err
		}},
		{"UpdateUser without change", true, func() error { _, err := s.UpdateUser(ctx, "u1", keep); return err }},
		{"CreateAgent", true, func() error { return s.CreateAgent(ctx, newAgent("agent-1", "u1")) }},
		{"GetAgent", false, func() error { _, err := s.GetAgent(ctx, "agent-1"); return err }},
		{"ListAgents", false, func() error { _, err := s.ListAgents(ctx); return err }},
		{"UpdateAgent", true, func() error {
			_, err := s.UpdateAgent(ctx, "agent-1", func(a store.Agent) (store.Agent, error) {
				a.State = store.AgentSuspended
				return a, nil
			})
			return err
		}},
		{"CreateAgentToken", true, func() error { return s.CreateAgentToken(ctx, newToken("tok-1", "agent-1")) }},
		{"ListAgentTokens", false, func() error { _, err := s.ListAgentTokens(ctx, "agent-1"); return err }},
		{"LookupPrincipal", false, func() error { _, err := s.LookupPrincipal(ctx, newToken("tok-1", "").Hash); return err }},
		{"TouchAgentToken", false, func() error { return s.TouchAgentToken(ctx, "tok-1", t0.Add(time.Hour)) }},
		{"RevokeAgentToken", true, func() error { return s.RevokeAgentToken(ctx, "tok-1", t0.Add(time.Hour)) }},
		{"CreateApproval", false, func() error { return s.CreateApproval(ctx, newApproval("ap-1", "agent-1", t0)) }},
		{"CreateApproval 2", false, func() error { return s.CreateApproval(ctx, newApproval("ap-2", "agent-1", t0)) }},
		{"GetApproval", false, func() error { _, err := s.GetApproval(ctx, "ap-1"); return err }},
		{"ListApprovals", false, func() error { _, err := s.ListApprovals(ctx, store.ApprovalFilter{}); return err }},
		{"FindPendingApproval", false, func() error {
			a := newApproval("ap-1", "agent-1", t0)
			_, err := s.FindPendingApproval(ctx, a.AgentID, a.Upstream, a.Tool, a.ArgsDigest, t0)
			return err
		}},
		{"VoteApproval", false, func() error { _, err := s.VoteApproval(ctx, "ap-1", newVote("u1", true, t0)); return err }},
		{"FinishApproval", false, func() error {
			_, err := s.FinishApproval(ctx, "ap-2", store.ApprovalCancelled, "test", t0)
			return err
		}},
		{"ExpireApprovals", false, func() error { _, err := s.ExpireApprovals(ctx, t0.Add(time.Hour)); return err }},
		{"CancelAgentApprovals", false, func() error {
			_, err := s.CancelAgentApprovals(ctx, []string{"agent-1"}, "test", t0)
			return err
		}},
		{"CreatePasskey", false, func() error { return s.CreatePasskey(ctx, newPasskey("1", "u1", t0)) }},
		{"GetPasskey", false, func() error { _, err := s.GetPasskey(ctx, newPasskey("1", "", t0).ID); return err }},
		{"ListPasskeys", false, func() error { _, err := s.ListPasskeys(ctx, "u1"); return err }},
		{"UpdatePasskeyUse", false, func() error { return s.UpdatePasskeyUse(ctx, newPasskey("1", "", t0).ID, 9, t0) }},
		{"DeletePasskey", false, func() error { return s.DeletePasskey(ctx, newPasskey("1", "", t0).ID) }},
		{"CreateEnrollment", false, func() error { return s.CreateEnrollment(ctx, newEnrollment("1", "u1", t0)) }},
		{"UseEnrollment", false, func() error {
			_, err := s.UseEnrollment(ctx, newEnrollment("1", "", t0).TokenHash, t0)
			return err
		}},
		{"PutMetaIfAbsent", false, func() error { _, err := s.PutMetaIfAbsent(ctx, "k", []byte("v")); return err }},
		{"GetMeta", false, func() error { _, err := s.GetMeta(ctx, "k"); return err }},
		{"Ping", false, func() error { return s.Ping(ctx) }},
		{"Generation", false, func() error { _, err := s.Generation(ctx); return err }},
	}
	prev, err := s.Generation(ctx)
	if err != nil {
		t.Fatalf("Generation: %v", err)
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		g, err := s.Generation(ctx)
		if err != nil {
			t.Fatalf("Generation after %s: %v", st.name, err)
		}
		switch {
		case st.bumps && g <= prev:
			t.Errorf("Generation after %s = %d, want > %d", st.name, g, prev)
		case !st.bumps && g != prev:
			t.Errorf("Generation after %s = %d, want unchanged %d", st.name, g, prev)
		}
		prev = g
	}
}

// ---- meta ----

func testMeta(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.GetMeta(ctx, "session-key"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetMeta(missing) = %v, want ErrNotFound", err)
	}
	tests := []struct {
		name  string
		key   string
		value []byte
		want  []byte // returned and stored afterwards
		err   error
	}{
		{"first put stores", "session-key", []byte("first\x00\xff"), []byte("first\x00\xff"), nil},
		{"second put keeps the first", "session-key", []byte("second"), []byte("first\x00\xff"), nil},
		{"other key", "other", []byte("x"), []byte("x"), nil},
		{"nil value is empty", "empty", nil, []byte{}, nil},
		{"empty key", "", []byte("x"), nil, store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.PutMetaIfAbsent(ctx, tc.key, tc.value)
			wantErr(t, "PutMetaIfAbsent", err, tc.err)
			if tc.err != nil {
				return
			}
			if string(got) != string(tc.want) {
				t.Errorf("PutMetaIfAbsent = %q, want %q", got, tc.want)
			}
			stored, err := s.GetMeta(ctx, tc.key)
			if err != nil {
				t.Fatalf("GetMeta: %v", err)
			}
			if string(stored) != string(tc.want) {
				t.Errorf("GetMeta = %q, want %q", stored, tc.want)
			}
		})
	}
}

func testConcurrentPutMeta(t *testing.T, s store.Store) {
	ctx := t.Context()
	const n = 8
	var (
		wg      sync.WaitGroup
		results [n][]byte
		errs    [n]error
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = s.PutMetaIfAbsent(ctx, "relay-session-key", []byte("value-"+strconv.Itoa(i)))
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("goroutine %d: PutMetaIfAbsent: %v", i, err)
		}
	}
	stored, err := s.GetMeta(ctx, "relay-session-key")
	if err != nil {
		t.Fatalf("GetMeta: %v", err)
	}
	for i, r := range results {
		if string(r) != string(stored) {
			t.Errorf("goroutine %d got %q, stored value is %q", i, r, stored)
		}
	}
	valid := false
	for i := range n {
		valid = valid || string(stored) == "value-"+strconv.Itoa(i)
	}
	if !valid {
		t.Errorf("stored value %q is none of the values put", stored)
	}
}

func testConcurrentUpdateAgent(t *testing.T, s store.Store) {
	ctx := t.Context()
	if err := s.CreateUser(ctx, newUser("u1", "a@example.com")); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	a := newAgent("counter", "u1")
	a.Purpose = "0"
	if err := s.CreateAgent(ctx, a); err != nil {
		t.Fatalf("CreateAgent: %v", err)
	}
	const goroutines, each = 8, 25
	increment := func(a store.Agent) (store.Agent, error) {
		n, err := strconv.Atoi(a.Purpose)
		if err != nil {
			return a, err
		}
		a.Purpose = strconv.Itoa(n + 1)
		return a, nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	start := make(chan struct{})
	for range goroutines {
		wg.Go(func() {
			<-start
			for range each {
				if _, err := s.UpdateAgent(ctx, "counter", increment); err != nil {
					errs <- err
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("UpdateAgent: %v", err)
	}
	got, err := s.GetAgent(ctx, "counter")
	if err != nil {
		t.Fatalf("GetAgent: %v", err)
	}
	if want := strconv.Itoa(goroutines * each); got.Purpose != want {
		t.Errorf("counter = %s, want %s: concurrent updates were lost", got.Purpose, want)
	}
}

func testConcurrentCreateUser(t *testing.T, s store.Store) {
	ctx := t.Context()
	const n = 8
	var wg sync.WaitGroup
	var errs [n]error
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			// Same email in different case, different ids.
			email := "Race@Example.com"
			if i%2 == 1 {
				email = "race@example.COM"
			}
			errs[i] = s.CreateUser(ctx, newUser("u"+strconv.Itoa(i), email))
		})
	}
	close(start)
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrAlreadyExists):
			t.Errorf("goroutine %d: CreateUser = %v, want nil or ErrAlreadyExists", i, err)
		}
	}
	if ok != 1 {
		t.Errorf("%d concurrent creations of one email succeeded, want exactly 1", ok)
	}
	users, err := s.ListUsers(ctx)
	if err != nil {
		t.Fatalf("ListUsers: %v", err)
	}
	if len(users) != 1 {
		t.Errorf("ListUsers = %d users, want 1", len(users))
	}
}

// ---- timestamps ----

func testTimestamps(t *testing.T, s store.Store) {
	ctx := t.Context()
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	times := []struct {
		name string
		at   time.Time
	}{
		{"sub-microsecond in a zone", time.Date(2026, 7, 1, 23, 59, 59, 999_999_999, zone)},
		{"before 1970", time.Date(1969, 12, 31, 23, 59, 59, 500_001_000, time.UTC)},
		{"far future", time.Date(2999, 1, 2, 3, 4, 5, 6_000, zone)},
		{"with monotonic reading", time.Now()},
	}
	for i, tc := range times {
		t.Run(tc.name, func(t *testing.T) {
			at := tc.at
			later := at.Add(90*time.Minute + 1)
			sfx := strconv.Itoa(i)
			u := newUser("u"+sfx, "u"+sfx+"@example.com")
			u.CreatedAt, u.UpdatedAt = at, later
			a := newAgent("agent-"+sfx, u.ID)
			a.CreatedAt, a.UpdatedAt = at, later
			tok := newToken("tok-"+sfx, a.ID)
			tok.CreatedAt, tok.ExpiresAt = at, later
			for _, err := range []error{s.CreateUser(ctx, u), s.CreateAgent(ctx, a), s.CreateAgentToken(ctx, tok)} {
				if err != nil {
					t.Fatalf("create: %v", err)
				}
			}
			if err := s.RevokeAgentToken(ctx, tok.ID, later); err != nil {
				t.Fatalf("RevokeAgentToken: %v", err)
			}
			if err := s.TouchAgentToken(ctx, tok.ID, at); err != nil {
				t.Fatalf("TouchAgentToken: %v", err)
			}
			tok.RevokedAt, tok.LastUsedAt = later, at

			gu, err := s.GetUser(ctx, u.ID)
			if err != nil {
				t.Fatalf("GetUser: %v", err)
			}
			checkUser(t, gu, u)
			ga, err := s.GetAgent(ctx, a.ID)
			if err != nil {
				t.Fatalf("GetAgent: %v", err)
			}
			checkAgent(t, ga, a)
			p, err := s.LookupPrincipal(ctx, tok.Hash)
			if err != nil {
				t.Fatalf("LookupPrincipal: %v", err)
			}
			checkToken(t, p.Token, tok)
			checkAgent(t, p.Agent, a)
			checkUser(t, p.Owner, u)

			// Through an updater too.
			even := at.Add(time.Second)
			nu, err := s.UpdateUser(ctx, u.ID, func(u store.User) (store.User, error) { u.UpdatedAt = even; return u, nil })
			if err != nil {
				t.Fatalf("UpdateUser: %v", err)
			}
			checkTime(t, "UpdateUser result UpdatedAt", nu.UpdatedAt, even)
			checkTime(t, "UpdateUser result CreatedAt", nu.CreatedAt, at)
			na, err := s.UpdateAgent(ctx, a.ID, func(a store.Agent) (store.Agent, error) { a.UpdatedAt = even; return a, nil })
			if err != nil {
				t.Fatalf("UpdateAgent: %v", err)
			}
			checkTime(t, "UpdateAgent result UpdatedAt", na.UpdatedAt, even)
			ga, err = s.GetAgent(ctx, a.ID)
			if err != nil {
				t.Fatalf("GetAgent: %v", err)
			}
			checkTime(t, "stored agent UpdatedAt", ga.UpdatedAt, even)
		})
	}
	t.Run("zero times stay zero", func(t *testing.T) {
		u := newUser("uz", "z@example.com")
		u.CreatedAt, u.UpdatedAt = time.Time{}, time.Time{}
		if err := s.CreateUser(ctx, u); err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
		got, err := s.GetUser(ctx, "uz")
		if err != nil {
			t.Fatalf("GetUser: %v", err)
		}
		if !got.CreatedAt.IsZero() || !got.UpdatedAt.IsZero() {
			t.Errorf("zero times read back as %v, %v", got.CreatedAt, got.UpdatedAt)
		}
	})
}

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(context.WithoutCancel(t.Context())); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// testLifecycleFields: a user's ExternalID and DeletedAt and an agent's
// StateChangedAt, StateChangedBy and StateReason round-trip through
// Create, Update, Get, List and LookupPrincipal, and zero values stay zero.
func testLifecycleFields(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := newUser("u1", "a@example.com")
	u.Source, u.ExternalID = "scim", "00u1abc"
	a := newAgent("agent-1", u.ID)
	a.StateChangedAt, a.StateChangedBy, a.StateReason = t0, "cli:root", "created for the pilot"
	tok := newToken("tok-1", a.ID)
	for _, err := range []error{s.CreateUser(ctx, u), s.CreateAgent(ctx, a), s.CreateAgentToken(ctx, tok)} {
		if err != nil {
			t.Fatalf("create: %v", err)
		}
	}
	plain := newUser("u2", "b@example.com")
	plainAgent := newAgent("agent-2", plain.ID)
	for _, err := range []error{s.CreateUser(ctx, plain), s.CreateAgent(ctx, plainAgent)} {
		if err != nil {
			t.Fatalf("create: %v", err)
		}
	}
	check := func(t *testing.T, u store.User, a store.Agent) {
		t.Helper()
		got, err := s.GetUser(ctx, u.ID)
		if err != nil {
			t.Fatalf("GetUser: %v", err)
		}
		checkUser(t, got, u)
		if got, err = s.GetUserByEmail(ctx, u.Email); err != nil {
			t.Fatalf("GetUserByEmail: %v", err)
		}
		checkUser(t, got, u)
		ga, err := s.GetAgent(ctx, a.ID)
		if err != nil {
			t.Fatalf("GetAgent: %v", err)
		}
		checkAgent(t, ga, a)
		users, err := s.ListUsers(ctx)
		if err != nil || len(users) != 2 {
			t.Fatalf("ListUsers = %d users, %v", len(users), err)
		}
		checkUser(t, users[0], u)
		agents, err := s.ListAgents(ctx)
		if err != nil || len(agents) != 2 {
			t.Fatalf("ListAgents = %d agents, %v", len(agents), err)
		}
		checkAgent(t, agents[0], a)
		p, err := s.LookupPrincipal(ctx, tok.Hash)
		if err != nil {
			t.Fatalf("LookupPrincipal: %v", err)
		}
		checkAgent(t, p.Agent, a)
		checkUser(t, p.Owner, u)
	}
	t.Run("created", func(t *testing.T) { check(t, u, a) })
	t.Run("zero values", func(t *testing.T) {
		got, err := s.GetUser(ctx, plain.ID)
		if err != nil {
			t.Fatal(err)
		}
		checkUser(t, got, plain)
		ga, err := s.GetAgent(ctx, plainAgent.ID)
		if err != nil {
			t.Fatal(err)
		}
		checkAgent(t, ga, plainAgent)
	})
	t.Run("updated", func(t *testing.T) {
		t1 := t0.Add(time.Hour)
		gu, err := s.UpdateUser(ctx, u.ID, func(x store.User) (store.User, error) {
			x.Active, x.DeletedAt, x.ExternalID, x.UpdatedAt = false, t1, "00u1xyz", t1
			return x, nil
		})
		if err != nil {
			t.Fatalf("UpdateUser: %v", err)
		}
		wu := u
		wu.Active, wu.DeletedAt, wu.ExternalID, wu.UpdatedAt = false, t1, "00u1xyz", t1
		checkUser(t, gu, wu)
		ga, err := s.UpdateAgent(ctx, a.ID, func(x store.Agent) (store.Agent, error) {
			x.State, x.StateChangedAt, x.StateChangedBy, x.StateReason, x.UpdatedAt =
				store.AgentOrphaned, t1, "scim", "owner a@example.com was deactivated", t1
			return x, nil
		})
		if err != nil {
			t.Fatalf("UpdateAgent: %v", err)
		}
		wa := a
		wa.State, wa.StateChangedAt, wa.StateChangedBy, wa.StateReason, wa.UpdatedAt =
			store.AgentOrphaned, t1, "scim", "owner a@example.com was deactivated", t1
		checkAgent(t, ga, wa)
		check(t, wu, wa)
	})
	t.Run("cleared", func(t *testing.T) {
		gu, err := s.UpdateUser(ctx, u.ID, func(x store.User) (store.User, error) {
			x.DeletedAt, x.ExternalID = time.Time{}, ""
			return x, nil
		})
		if err != nil {
			t.Fatalf("UpdateUser: %v", err)
		}
		if !gu.DeletedAt.IsZero() || gu.ExternalID != "" {
			t.Errorf("UpdateUser returned %+v; want DeletedAt and ExternalID cleared", gu)
		}
		got, err := s.GetUser(ctx, u.ID)
		if err != nil || !got.DeletedAt.IsZero() || got.ExternalID != "" {
			t.Errorf("GetUser = %+v, %v; want DeletedAt and ExternalID cleared", got, err)
		}
	})
}
