package registry_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
)

// clock is an injectable Now that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// counting wraps the real store and counts the calls the cache is meant to
// save; touchGate, when set, holds every TouchAgentToken until it is
// closed, and genGate does the same for Generation.
type counting struct {
	store.Store
	generations, lookups, touches atomic.Int64
	touchGate                     chan struct{}
	genGate                       atomic.Pointer[chan struct{}]
}

// DeactivateOwner passes the one-transaction owner cascade through, so that
// the lifecycle tests run the path the gateway runs.
func (c *counting) DeactivateOwner(ctx context.Context, userID string, deleted bool, at time.Time, by, reason string) (store.OwnerCascadeResult, error) {
	return c.Store.(store.OwnerCascade).DeactivateOwner(ctx, userID, deleted, at, by, reason)
}

func (c *counting) Generation(ctx context.Context) (int64, error) {
	c.generations.Add(1)
	if g := c.genGate.Load(); g != nil {
		<-*g
	}
	return c.Store.Generation(ctx)
}

func (c *counting) LookupPrincipal(ctx context.Context, h []byte) (store.Principal, error) {
	c.lookups.Add(1)
	return c.Store.LookupPrincipal(ctx, h)
}

func (c *counting) TouchAgentToken(ctx context.Context, id string, at time.Time) error {
	if c.touchGate != nil {
		<-c.touchGate
	}
	c.touches.Add(1)
	return c.Store.TouchAgentToken(ctx, id, at)
}

// syncBuffer is a bytes.Buffer safe for the registry's goroutine to log into.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	dir   string
	store *counting
	clock *clock
	logs  *syncBuffer
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	s, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(dir, "interlock.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return &env{dir: dir, store: &counting{Store: s}, clock: newClock(), logs: &syncBuffer{}}
}

// registry returns a Registry on the env's store and clock, closed at the
// end of the test (before the store).
func (e *env) registry(t testing.TB, maxAge time.Duration) *registry.Registry {
	t.Helper()
	r := registry.New(registry.Options{
		Store:            e.store,
		Now:              e.clock.Now,
		GenerationMaxAge: maxAge,
		Logger:           slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	t.Cleanup(func() { r.Close() })
	return r
}

// agent creates owner@example.com (once) and an agent with id, and returns
// the agent's token.
func agent(t testing.TB, r *registry.Registry, id string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := r.GetUserByEmail(ctx, "owner@example.com"); errors.Is(err, store.ErrNotFound) {
		if _, err := r.CreateUser(ctx, registry.UserSpec{Email: "owner@example.com", Name: "Owner", Roles: []string{"admin"}}); err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
	}
	_, token, err := r.CreateAgent(ctx, registry.AgentSpec{ID: id, OwnerEmail: "owner@example.com", Name: id,
		Department: "finance", Purpose: "pays invoices"})
	if err != nil {
		t.Fatalf("CreateAgent: %v", err)
	}
	return token
}

func TestCreateUser(t *testing.T) {
	e := newEnv(t)
	r := e.registry(t, time.Hour)
	ctx := t.Context()
	tests := []struct {
		name      string
		spec      registry.UserSpec
		err       error
		wantEmail string
		wantRoles []string
	}{
		{"ok", registry.UserSpec{Email: "Alice@Example.com", Name: " Alice ", Roles: []string{"finance-manager", "admin", "admin"}},
			nil, "alice@example.com", []string{"admin", "finance-manager"}},
		{"no roles", registry.UserSpec{Email: "bob@example.com"}, nil, "bob@example.com", nil},
		{"role with colon and underscore", registry.UserSpec{Email: "carol@example.com", Roles: []string{"approver:finance_eu"}},
			nil, "carol@example.com", []string{"approver:finance_eu"}},
		{"surrounding space", registry.UserSpec{Email: "  dave@example.com "}, nil, "dave@example.com", nil},
		{"duplicate email other case", registry.UserSpec{Email: "ALICE@example.com"}, store.ErrAlreadyExists, "", nil},
		{"empty email", registry.UserSpec{Email: ""}, store.ErrInvalid, "", nil},
		{"not an email", registry.UserSpec{Email: "alice"}, store.ErrInvalid, "", nil},
		{"display name", registry.UserSpec{Email: "Eve <eve@example.com>"}, store.ErrInvalid, "", nil},
		{"two addresses", registry.UserSpec{Email: "a@example.com, b@example.com"}, store.ErrInvalid, "", nil},
		{"upper-case role", registry.UserSpec{Email: "f@example.com", Roles: []string{"Admin"}}, store.ErrInvalid, "", nil},
		{"role with space", registry.UserSpec{Email: "g@example.com", Roles: []string{"finance manager"}}, store.ErrInvalid, "", nil},
		{"empty role", registry.UserSpec{Email: "h@example.com", Roles: []string{""}}, store.ErrInvalid, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := r.CreateUser(ctx, tc.spec)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("CreateUser = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("CreateUser: %v", err)
			}
			if u.Email != tc.wantEmail || !equal(u.Roles, tc.wantRoles) || !u.Active || u.Source != "local" ||
				u.ID == "" || !u.CreatedAt.Equal(e.clock.Now()) {
				t.Errorf("CreateUser = %+v, want email %s, roles %q, active, local, an id, created now", u, tc.wantEmail, tc.wantRoles)
			}
			got, err := r.GetUserByEmail(ctx, strings.ToUpper(tc.wantEmail))
			if err != nil {
				t.Fatalf("GetUserByEmail: %v", err)
			}
			if got.ID != u.ID || got.Name != strings.TrimSpace(tc.spec.Name) || !equal(got.Roles, tc.wantRoles) {
				t.Errorf("stored %+v, returned %+v", got, u)
			}
		})
	}
	users, err := r.ListUsers(ctx)
	if err != nil {
		t.Fatalf("ListUsers: %v", err)
	}
	if len(users) != 4 {
		t.Errorf("ListUsers = %d users, want 4", len(users))
	}
	seen := map[string]bool{}
	for _, u := range users {
		if seen[u.ID] {
			t.Errorf("duplicate random id %s", u.ID)
		}
		seen[u.ID] = true
	}
	if _, err := r.GetUserByEmail(ctx, "nobody@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUserByEmail(unknown) = %v, want ErrNotFound", err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCreateAgent(t *testing.T) {
	e := newEnv(t)
	r := e.registry(t, time.Hour)
	ctx := t.Context()
	if _, err := r.CreateUser(ctx, registry.UserSpec{Email: "owner@example.com"}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	gone, err := r.CreateUser(ctx, registry.UserSpec{Email: "gone@example.com"})
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if _, err := e.store.UpdateUser(ctx, gone.ID, func(u store.User) (store.User, error) { u.Active = false; return u, nil }); err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	long := strings.Repeat("a", 64)
	tests := []struct {
		name  string
		id    string
		owner string
		err   error
	}{
		{"ok", "invoice-bot", "owner@example.com", nil},
		{"dots and underscores", "A1.b_c-d", "OWNER@example.com", nil},
		{"64 characters", long, "owner@example.com", nil},
		{"65 characters", long + "a", "owner@example.com", store.ErrInvalid},
		{"empty id", "", "owner@example.com", store.ErrInvalid},
		{"leading dash", "-bot", "owner@example.com", store.ErrInvalid},
		{"leading dot", ".bot", "owner@example.com", store.ErrInvalid},
		{"slash", "a/b", "owner@example.com", store.ErrInvalid},
		{"space", "a b", "owner@example.com", store.ErrInvalid},
		{"duplicate id", "invoice-bot", "owner@example.com", store.ErrAlreadyExists},
		{"unknown owner", "bot-2", "nobody@example.com", store.ErrInvalid},
		{"deactivated owner", "bot-3", "gone@example.com", store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, token, err := r.CreateAgent(ctx, registry.AgentSpec{ID: tc.id, OwnerEmail: tc.owner, Name: "n",
				Department: "d", Purpose: "p"})
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("CreateAgent = %v, want %v", err, tc.err)
				}
				if token != "" {
					t.Errorf("a token was returned with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("CreateAgent: %v", err)
			}
			if a.ID != tc.id || a.State != store.AgentActive || a.OwnerID == "" || !a.CreatedAt.Equal(e.clock.Now()) {
				t.Errorf("CreateAgent = %+v", a)
			}
			p, err := r.Authenticate(ctx, token)
			if err != nil {
				t.Fatalf("Authenticate with the first token: %v", err)
			}
			if p.Agent.ID != tc.id || p.Owner.Email != "owner@example.com" || !p.Token.ExpiresAt.IsZero() {
				t.Errorf("principal = %+v", p)
			}
			got, err := r.GetAgent(ctx, tc.id)
			if err != nil || got.Purpose != "p" {
				t.Errorf("GetAgent = %+v, %v", got, err)
			}
		})
	}
	agents, err := r.ListAgents(ctx)
	if err != nil || len(agents) != 3 {
		t.Errorf("ListAgents = %d agents, %v; want 3", len(agents), err)
	}
	if _, err := r.GetAgent(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAgent(unknown) = %v, want ErrNotFound", err)
	}
}

func TestCreateToken(t *testing.T) {
	e := newEnv(t)
	r := e.registry(t, time.Hour)
	ctx := t.Context()
	agent(t, r, "bot")
	agent(t, r, "retired")
	if _, err := e.store.UpdateAgent(ctx, "retired", func(a store.Agent) (store.Agent, error) {
		a.State = store.AgentDecommissioned
		return a, nil
	}); err != nil {
		t.Fatalf("UpdateAgent: %v", err)
	}
	tests := []struct {
		name    string
		agent   string
		ttl     time.Duration
		err     error
		expires bool
	}{
		{"no expiry", "bot", 0, nil, false},
		{"one hour", "bot", time.Hour, nil, true},
		{"negative ttl", "bot", -time.Second, store.ErrInvalid, false},
		{"unknown agent", "nope", 0, store.ErrNotFound, false},
		{"decommissioned agent", "retired", 0, store.ErrInvalid, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, token, err := r.CreateToken(ctx, tc.agent, tc.ttl)
			if tc.err != nil {
				if !errors.Is(err, tc.err) || token != "" {
					t.Fatalf("CreateToken = %q, %v; want no token and %v", token, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("CreateToken: %v", err)
			}
			if tok.ExpiresAt.IsZero() == tc.expires || (tc.expires && !tok.ExpiresAt.Equal(e.clock.Now().Add(tc.ttl))) {
				t.Errorf("ExpiresAt = %v, want now+%v", tok.ExpiresAt, tc.ttl)
			}
			p, err := r.Authenticate(ctx, token)
			if err != nil || p.Token.ID != tok.ID {
				t.Errorf("Authenticate = %+v, %v", p.Token, err)
			}
		})
	}
	toks, err := r.ListTokens(ctx, "bot")
	if err != nil || len(toks) != 3 {
		t.Errorf("ListTokens = %d, %v; want 3", len(toks), err)
	}
}

// TestTokenShownOnceStoredHashed checks the token's form, that only its
// SHA-256 is stored, and that neither the token nor its random bytes reach
// the database files, an error or a log line.
func TestTokenShownOnceStoredHashed(t *testing.T) {
	e := newEnv(t)
	r := e.registry(t, time.Hour)
	ctx := t.Context()
	token := agent(t, r, "bot")
	if !strings.HasPrefix(token, "ilk_") {
		t.Fatalf("token does not start with ilk_")
	}
	secret, err := base64.RawURLEncoding.Strict().DecodeString(strings.TrimPrefix(token, "ilk_"))
	if err != nil || len(secret) != 32 {
		t.Fatalf("token body is not 32 bytes of base64url: %d bytes, %v", len(secret), err)
	}
	toks, err := r.ListTokens(ctx, "bot")
	if err != nil || len(toks) != 1 {
		t.Fatalf("ListTokens = %d, %v", len(toks), err)
	}
	if want := sha256.Sum256([]byte(token)); !bytes.Equal(toks[0].Hash, want[:]) {
		t.Errorf("stored hash is not sha256(token)")
	}
	// Use, revoke and fail with it, so every path has had the chance to
	// write or log it.
	if _, err := r.Authenticate(ctx, token); err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	if err := r.RevokeToken(ctx, toks[0].ID); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	_, errRevoked := r.Authenticate(ctx, token)
	_, errMalformed := r.Authenticate(ctx, token+"x")
	_, errUnknown := r.Authenticate(ctx, "ilk_"+token[5:]+"A")
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, err := range []error{errRevoked, errMalformed, errUnknown} {
		if !errors.Is(err, registry.ErrUnauthenticated) {
			t.Errorf("Authenticate = %v, want ErrUnauthenticated", err)
			continue
		}
		if strings.Contains(err.Error(), token[4:20]) {
			t.Errorf("error %q contains the token", err)
		}
	}
	if logs := e.logs.String(); strings.Contains(logs, token[4:20]) {
		t.Errorf("logs contain the token: %s", logs)
	}

	files, err := filepath.Glob(filepath.Join(e.dir, "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no database files: %v", err)
	}
	for _, f := range files { // the database, its WAL and shared-memory files
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		for what, needle := range map[string][]byte{
			"token": []byte(token), "token body": []byte(token[4:]), "token random bytes": secret,
		} {
			if bytes.Contains(b, needle) {
				t.Errorf("%s appears in %s", what, filepath.Base(f))
			}
		}
	}
	// The check above can find what is there: the hash is in the files.
	found := false
	for _, f := range files {
		b, _ := os.ReadFile(f)
		found = found || bytes.Contains(b, toks[0].Hash)
	}
	if !found {
		t.Errorf("the token hash is in no database file, so the search proves nothing")
	}
}

func TestAuthenticate(t *testing.T) {
	e := newEnv(t)
	r := e.registry(t, time.Hour)
	ctx := t.Context()
	good := agent(t, r, "bot")
	revoked, err := func() (string, error) {
		tok, token, err := r.CreateToken(ctx, "bot", 0)
		if err == nil {
			err = r.RevokeToken(ctx, tok.ID)
		}
		return token, err
	}()
	if err != nil {
		t.Fatalf("revoked token: %v", err)
	}
	_, expiring, err := r.CreateToken(ctx, "bot", time.Hour)
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	unknown := "ilk_" + strings.Repeat("A", 43)

	tests := []struct {
		name    string
		advance time.Duration // clock moved before the call
		token   string
		reason  string // "" means success
	}{
		{"good", 0, good, ""},
		{"good again (cached)", 0, good, ""},
		{"empty", 0, "", "malformed"},
		{"no prefix", 0, strings.TrimPrefix(good, "ilk_"), "malformed"},
		{"other prefix", 0, "xyz_" + good[4:], "malformed"},
		{"too long", 0, good + "A", "malformed"},
		{"too short", 0, good[:len(good)-1], "malformed"},
		{"bad character", 0, good[:10] + "+" + good[11:], "malformed"},
		{"unknown", 0, unknown, "unknown"},
		{"revoked", 0, revoked, "revoked"},
		{"expiring, not yet", 59 * time.Minute, expiring, ""},
		{"expired at the instant", time.Minute, expiring, "expired"},
		{"expired", time.Minute, expiring, "expired"},
		{"never-expiring still good", 0, good, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.clock.Advance(tc.advance)
			p, err := r.Authenticate(ctx, tc.token)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
				if p.Agent.ID != "bot" || p.Owner.Email != "owner@example.com" || !equal(p.Owner.Roles, []string{"admin"}) {
					t.Errorf("principal = %+v", p)
				}
				return
			}
			if !errors.Is(err, registry.ErrUnauthenticated) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("Authenticate = %v, want ErrUnauthenticated (%s)", err, tc.reason)
			}
			if p.Agent.ID != "" {
				t.Errorf("a principal came with an error: %+v", p)
			}
		})
	}

	t.Run("returned principal is a copy", func(t *testing.T) {
		p, err := r.Authenticate(ctx, good)
		if err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
		p.Owner.Roles[0] = "mutated"
		p.Token.Hash[0] ^= 0xff
		p, err = r.Authenticate(ctx, good)
		if err != nil || p.Owner.Roles[0] != "admin" {
			t.Errorf("cache was changed through a returned principal: %+v, %v", p.Owner.Roles, err)
		}
	})
}

// TestCacheUsesGenerationAtMostOncePerMaxAge pins the cost of a cached
// Authenticate: no store call while the generation snapshot is fresh, one
// Generation read per GenerationMaxAge however many callers, and an
// immediate re-read after a local mutation.
func TestCacheUsesGenerationAtMostOncePerMaxAge(t *testing.T) {
	e := newEnv(t)
	const maxAge = time.Second
	r := e.registry(t, maxAge)
	ctx := t.Context()
	token := agent(t, r, "bot")
	calls := func() (int64, int64) { return e.store.generations.Load(), e.store.lookups.Load() }

	if _, err := r.Authenticate(ctx, token); err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	g0, l0 := calls()
	authenticateMany := func(n int) {
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				if _, err := r.Authenticate(ctx, token); err != nil {
					t.Errorf("Authenticate: %v", err)
				}
			})
		}
		wg.Wait()
	}

	authenticateMany(50)
	if g, l := calls(); g != g0 || l != l0 {
		t.Errorf("fresh snapshot: %d Generation and %d Lookup calls for 50 cached authentications, want 0 and 0", g-g0, l-l0)
	}

	e.clock.Advance(maxAge)
	authenticateMany(50)
	if g, l := calls(); g != g0+1 || l != l0 {
		t.Errorf("stale snapshot: %d Generation and %d Lookup calls for 50 concurrent authentications, want 1 and 0", g-g0, l-l0)
	}

	// A mutation through this Registry: the next caller re-reads the
	// generation and looks the principal up again, without waiting for
	// GenerationMaxAge; the callers after it are served from the cache.
	if _, _, err := r.CreateToken(ctx, "bot", 0); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	authenticateMany(1)
	if g, l := calls(); g != g0+2 || l != l0+1 {
		t.Errorf("after a local mutation: %d Generation and %d Lookup calls, want 2 and 1", g-g0, l-l0)
	}
	authenticateMany(50)
	if g, l := calls(); g != g0+2 || l != l0+1 {
		t.Errorf("after re-reading: %d Generation and %d Lookup calls, want 2 and 1", g-g0, l-l0)
	}

	// Another local mutation, and 50 callers arrive while the one reader
	// is still waiting for the store: they wait for its value and do not
	// read again. (The pause only gives them time to queue up; the count
	// is right however the goroutines are scheduled.)
	if _, _, err := r.CreateToken(ctx, "bot", 0); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	gate := make(chan struct{})
	e.store.genGate.Store(&gate)
	var wg sync.WaitGroup
	wg.Go(func() { authenticateMany(50) })
	for deadline := time.Now().Add(10 * time.Second); e.store.generations.Load() == g0+2; {
		if time.Now().After(deadline) {
			t.Fatal("no caller read the generation")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	e.store.genGate.Store(nil)
	close(gate)
	wg.Wait()
	if g := e.store.generations.Load(); g != g0+3 {
		t.Errorf("50 callers after a local mutation made %d Generation calls, want 1", g-g0-2)
	}

	// A merely old snapshot: while the one reader waits for the store, the
	// other callers go on with the last value instead of queueing behind it.
	e.clock.Advance(maxAge)
	gate = make(chan struct{})
	e.store.genGate.Store(&gate)
	wg.Go(func() { authenticateMany(1) })
	for deadline := time.Now().Add(10 * time.Second); e.store.generations.Load() == g0+3; {
		if time.Now().After(deadline) {
			t.Fatal("no caller read the generation")
		}
		time.Sleep(time.Millisecond)
	}
	others := make(chan struct{})
	go func() { authenticateMany(50); close(others) }()
	select {
	case <-others:
	case <-time.After(10 * time.Second):
		t.Error("callers waited for the generation reader instead of using the last value")
	}
	e.store.genGate.Store(nil)
	close(gate)
	wg.Wait()
	<-others
	if g := e.store.generations.Load(); g != g0+4 {
		t.Errorf("51 callers with an old snapshot made %d Generation calls, want 1", g-g0-3)
	}
}

// TestCacheInvalidation checks that a change reaches a Registry's cache: at
// once when made through it, within GenerationMaxAge when made through
// another Registry or directly in the store (another process).
func TestCacheInvalidation(t *testing.T) {
	const maxAge = 10 * time.Second
	tests := []struct {
		name string
		// change makes token (of agent "bot") unusable through other (a
		// second Registry on the same store) or the store directly.
		change func(t *testing.T, e *env, other *registry.Registry, tokenID string)
		// check tells whether the principal is refused after the change.
		check func(p store.Principal, err error) bool
	}{
		{
			name: "token revoked through another Registry",
			change: func(t *testing.T, e *env, other *registry.Registry, tokenID string) {
				if err := other.RevokeToken(t.Context(), tokenID); err != nil {
					t.Fatalf("RevokeToken: %v", err)
				}
			},
			check: func(_ store.Principal, err error) bool { return errors.Is(err, registry.ErrUnauthenticated) },
		},
		{
			name: "agent suspended in the store",
			change: func(t *testing.T, e *env, _ *registry.Registry, _ string) {
				if _, err := e.store.UpdateAgent(t.Context(), "bot", func(a store.Agent) (store.Agent, error) {
					a.State = store.AgentSuspended
					return a, nil
				}); err != nil {
					t.Fatalf("UpdateAgent: %v", err)
				}
			},
			check: func(p store.Principal, err error) bool {
				return err == nil && registry.CheckActive(p) != nil
			},
		},
		{
			name: "owner deactivated in the store",
			change: func(t *testing.T, e *env, _ *registry.Registry, _ string) {
				u, err := e.store.GetUserByEmail(t.Context(), "owner@example.com")
				if err != nil {
					t.Fatalf("GetUserByEmail: %v", err)
				}
				if _, err := e.store.UpdateUser(t.Context(), u.ID, func(u store.User) (store.User, error) {
					u.Active = false
					return u, nil
				}); err != nil {
					t.Fatalf("UpdateUser: %v", err)
				}
			},
			check: func(p store.Principal, err error) bool {
				var ie *registry.InactiveError
				return err == nil && errors.As(registry.CheckActive(p), &ie) && strings.Contains(ie.Reason, "deactivated")
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			a := e.registry(t, maxAge)
			b := e.registry(t, maxAge)
			ctx := t.Context()
			token := agent(t, b, "bot")
			p, err := a.Authenticate(ctx, token)
			if err != nil || registry.CheckActive(p) != nil {
				t.Fatalf("before the change: %v, %v", err, registry.CheckActive(p))
			}
			tc.change(t, e, b, p.Token.ID)

			// The clock has not moved: a trusts its generation snapshot and
			// still serves the cached principal.
			if tc.check(a.Authenticate(ctx, token)) {
				t.Errorf("the change reached the cache before GenerationMaxAge: no cache in use")
			}
			e.clock.Advance(maxAge / 2)
			if tc.check(a.Authenticate(ctx, token)) {
				t.Errorf("the change reached the cache at GenerationMaxAge/2")
			}
			e.clock.Advance(maxAge / 2)
			if !tc.check(a.Authenticate(ctx, token)) {
				t.Errorf("the change did not reach the cache after GenerationMaxAge")
			}
			// b made or saw the change itself.
			e.clock.Advance(maxAge)
			if !tc.check(b.Authenticate(ctx, token)) {
				t.Errorf("the other Registry does not see the change")
			}
		})
	}
}

// TestLocalMutationInvalidatesAtOnce: a revocation through a Registry is
// refused by that Registry without waiting for GenerationMaxAge.
func TestLocalMutationInvalidatesAtOnce(t *testing.T) {
	e := newEnv(t)
	r := e.registry(t, time.Hour)
	ctx := t.Context()
	token := agent(t, r, "bot")
	p, err := r.Authenticate(ctx, token)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	if err := r.RevokeToken(ctx, p.Token.ID); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	if _, err := r.Authenticate(ctx, token); !errors.Is(err, registry.ErrUnauthenticated) {
		t.Errorf("Authenticate after local revocation = %v, want ErrUnauthenticated", err)
	}
}

// TestCacheInvalidationRealClock uses the real clock and a small
// GenerationMaxAge: the revocation must show within a generous deadline.
func TestCacheInvalidationRealClock(t *testing.T) {
	e := newEnv(t)
	mk := func() *registry.Registry {
		r := registry.New(registry.Options{Store: e.store, GenerationMaxAge: 5 * time.Millisecond})
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b := mk(), mk()
	ctx := t.Context()
	token := agent(t, b, "bot")
	p, err := a.Authenticate(ctx, token)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	if err := b.RevokeToken(ctx, p.Token.ID); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := a.Authenticate(ctx, token)
		if errors.Is(err, registry.ErrUnauthenticated) {
			break
		}
		if err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("revocation through another Registry never reached the cache")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTouchCoalesced: uses are recorded at most once a minute per token,
// off the caller's path, and Close flushes them.
func TestTouchCoalesced(t *testing.T) {
	e := newEnv(t)
	e.store.touchGate = make(chan struct{})
	r := e.registry(t, time.Hour)
	ctx := t.Context()
	token := agent(t, r, "bot")
	t0 := e.clock.Now()

	// Touches are blocked in the store, yet Authenticate returns: the
	// touch is not on the caller's path.
	steps := []struct {
		at time.Duration
		n  int
	}{{0, 10}, {30 * time.Second, 5}, {59 * time.Second, 5}, {61 * time.Second, 5}, {90 * time.Second, 5}}
	for _, st := range steps {
		e.clock.Advance(t0.Add(st.at).Sub(e.clock.Now()))
		for range st.n {
			if _, err := r.Authenticate(ctx, token); err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
		}
	}
	if n := e.store.touches.Load(); n != 0 {
		t.Fatalf("%d touches recorded while the store was held", n)
	}
	close(e.store.touchGate)
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := e.store.touches.Load(); n != 2 {
		t.Errorf("%d touches for 30 uses over 90s, want 2 (at 0s and 61s)", n)
	}
	toks, err := e.store.ListAgentTokens(ctx, "bot")
	if err != nil || len(toks) != 1 {
		t.Fatalf("ListAgentTokens = %d, %v", len(toks), err)
	}
	if want := t0.Add(61 * time.Second); !toks[0].LastUsedAt.Equal(want) {
		t.Errorf("LastUsedAt = %v, want %v", toks[0].LastUsedAt, want)
	}
	// After Close, authentication still works and records nothing.
	if _, err := r.Authenticate(ctx, token); err != nil {
		t.Errorf("Authenticate after Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestRandUsed(t *testing.T) {
	e := newEnv(t)
	r := registry.New(registry.Options{Store: e.store, Rand: bytes.NewReader(nil)})
	defer r.Close()
	if _, err := r.CreateUser(t.Context(), registry.UserSpec{Email: "a@example.com"}); err == nil {
		t.Error("CreateUser with an exhausted Rand succeeded")
	}
	users, err := r.ListUsers(t.Context())
	if err != nil || len(users) != 0 {
		t.Errorf("ListUsers = %d, %v; want none created", len(users), err)
	}
}

func TestCheckActive(t *testing.T) {
	owner := store.User{ID: "u1", Email: "a@b", Active: true}
	agent := store.Agent{ID: "X", OwnerID: "u1", State: store.AgentActive}
	with := func(f func(*store.Principal)) store.Principal {
		p := store.Principal{Agent: agent, Owner: owner}
		f(&p)
		return p
	}
	tests := []struct {
		name string
		p    store.Principal
		want string // "" means nil
	}{
		{"active", with(func(*store.Principal) {}), ""},
		{"suspended", with(func(p *store.Principal) { p.Agent.State = store.AgentSuspended }), "agent X is suspended"},
		{"orphaned", with(func(p *store.Principal) { p.Agent.State = store.AgentOrphaned }), "agent X is orphaned"},
		{"decommissioned", with(func(p *store.Principal) { p.Agent.State = store.AgentDecommissioned }), "agent X is decommissioned"},
		{"unknown state", with(func(p *store.Principal) { p.Agent.State = "" }), `agent X is in unknown state ""`},
		{"owner deactivated", with(func(p *store.Principal) { p.Owner.Active = false }), "owner a@b of agent X is deactivated"},
		{"owner mismatch", with(func(p *store.Principal) { p.Owner.ID = "u2" }), "owner of agent X is unknown"},
		{"suspended and owner deactivated", with(func(p *store.Principal) {
			p.Agent.State = store.AgentSuspended
			p.Owner.Active = false
		}), "agent X is suspended"},
		{"empty principal", store.Principal{}, "no agent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := registry.CheckActive(tc.p)
			if tc.want == "" {
				if err != nil {
					t.Errorf("CheckActive = %v, want nil", err)
				}
				return
			}
			var ie *registry.InactiveError
			if !errors.As(err, &ie) {
				t.Fatalf("CheckActive = %v, want an *InactiveError", err)
			}
			if err.Error() != tc.want || ie.AgentID != tc.p.Agent.ID {
				t.Errorf("CheckActive = %q (agent %q), want %q (agent %q)", err, ie.AgentID, tc.want, tc.p.Agent.ID)
			}
		})
	}
}

func BenchmarkAuthenticateCached(b *testing.B) {
	e := newEnv(b)
	r := registry.New(registry.Options{Store: e.store}) // real clock, default GenerationMaxAge
	b.Cleanup(func() { r.Close() })
	token := agent(b, r, "bot")
	ctx := context.Background()
	if _, err := r.Authenticate(ctx, token); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Authenticate(ctx, token); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := r.Authenticate(ctx, token); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
