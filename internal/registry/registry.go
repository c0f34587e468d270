// Package registry provides interlock's users, agents and agent tokens:
// creating and listing them, issuing and revoking agent tokens, and
// authenticating an agent token to its principal (token, agent and owner)
// through an in-memory cache that the store's Generation keeps honest.
// CheckActive is the gate's kill-switch test on a principal.
//
// It must not serve HTTP, must not decide policy, and must never keep, log
// or put into an error a raw agent token: only SHA-256 hashes of tokens are
// stored, cached and compared.
package registry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// ErrUnauthenticated is returned (wrapped, with the reason) by Authenticate
// for a token that is malformed, unknown, revoked or expired.
var ErrUnauthenticated error = authError("registry: unauthenticated")

// authError is the type of ErrUnauthenticated. Its BadToken method lets
// callers that must not import this package (the relay) tell a bad token
// (401) from a store that cannot answer (503).
type authError string

func (e authError) Error() string { return string(e) }

// BadToken reports that the error is about the token itself.
func (authError) BadToken() bool { return true }

const (
	// TokenPrefix starts every agent token.
	TokenPrefix = "ilk_"
	// tokenBytes is the token's entropy; the token is TokenPrefix followed
	// by the bytes in unpadded base64url.
	tokenBytes = 32
	tokenLen   = len(TokenPrefix) + (tokenBytes*8+5)/6

	// touchInterval coalesces the recording of token use: at most one
	// TouchAgentToken per token per interval.
	touchInterval = time.Minute
	// touchQueue bounds the touches waiting for the background writer;
	// beyond it a touch is dropped and retried on the token's next use.
	touchQueue = 1024
	// touchTimeout bounds one TouchAgentToken call.
	touchTimeout = 5 * time.Second
	// maxCacheEntries bounds the principal cache; when it is full it is
	// emptied and refills from the store.
	maxCacheEntries = 100_000

	defaultGenerationMaxAge = 100 * time.Millisecond
)

// Options configures New. Zero values mean defaults.
type Options struct {
	// Store holds users, agents and tokens. Required.
	Store store.Store
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand is the source of ids and tokens. Default crypto/rand.Reader.
	Rand io.Reader
	// GenerationMaxAge is how long Authenticate trusts the last store
	// Generation it read, and so how long a change made by another process
	// may take to reach this Registry's cache. Default 100ms.
	GenerationMaxAge time.Duration
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// UserSpec describes a local user to create.
type UserSpec struct {
	Email string
	Name  string
	Roles []string
}

// AgentSpec describes an agent to create.
type AgentSpec struct {
	ID         string
	OwnerEmail string
	Name       string
	Department string
	Purpose    string
	// AllowedUpstreams names the upstreams the agent may call; empty means
	// every upstream. Names are 1 to 32 characters from [a-zA-Z0-9_-], as
	// in the configuration; they are stored sorted and unique.
	AllowedUpstreams []string
	// CreatedBy says who registers the agent (e.g. "cli:alice",
	// "admin:ops").
	CreatedBy string
}

// Registry manages users, agents and tokens on a store and authenticates
// agent tokens. It is safe for concurrent use. Close stops its background
// goroutine.
type Registry struct {
	store  store.Store
	now    func() time.Time
	maxAge time.Duration
	log    *slog.Logger

	randMu sync.Mutex // an injected Rand need not be safe for concurrent use
	rand   io.Reader

	// epoch grows after every mutation made through this Registry; cache
	// entries and generation snapshots from an older epoch are not used.
	epoch atomic.Uint64
	// gen is the last store Generation read; genMu is held by the one
	// caller reading a new one.
	gen   atomic.Pointer[genSnapshot]
	genMu sync.Mutex

	cacheMu sync.RWMutex
	cache   map[[sha256.Size]byte]cacheEntry

	// lastTouch maps token id to the time (time.Time) its last touch was
	// queued.
	lastTouch sync.Map
	touches   chan touch
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

type genSnapshot struct {
	value  int64
	readAt time.Time
	epoch  uint64
}

type cacheEntry struct {
	p     store.Principal
	gen   int64
	epoch uint64
}

type touch struct {
	tokenID string
	at      time.Time
}

// New returns a Registry on opts.Store and starts its background writer of
// token uses. The caller must Close it.
func New(opts Options) *Registry {
	r := &Registry{
		store:   opts.Store,
		now:     opts.Now,
		rand:    opts.Rand,
		maxAge:  opts.GenerationMaxAge,
		log:     opts.Logger,
		cache:   make(map[[sha256.Size]byte]cacheEntry),
		touches: make(chan touch, touchQueue),
		done:    make(chan struct{}),
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.rand == nil {
		r.rand = rand.Reader
	}
	if r.maxAge <= 0 {
		r.maxAge = defaultGenerationMaxAge
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	r.wg.Add(1)
	go r.touchLoop()
	if ch, ok := r.store.(store.Changes); ok {
		// Another replica changed a user, agent or token (the kill
		// switch): drop the cache at once, not at the next generation read.
		ctx, cancel := context.WithCancel(context.Background())
		ch.Subscribe(ctx, store.TopicPrincipals, func(string) { r.invalidate() })
		go func() { <-r.done; cancel() }()
	}
	return r
}

// Close records the token uses still queued and stops the background
// goroutine. It returns the errors of that last flush. Authenticate keeps
// working after Close but no longer records uses. Close is safe to call
// more than once.
func (r *Registry) Close() error {
	r.closeOnce.Do(func() {
		close(r.done)
		r.wg.Wait()
	})
	return r.closeErr
}

// ---- users ----

// CreateUser creates an active local user with a random id. The email must
// be a bare address (no display name) and is stored lower-case; roles must
// match [a-z0-9:_-]+ and are stored sorted and unique. A taken email is
// store.ErrAlreadyExists; an invalid spec is store.ErrInvalid.
func (r *Registry) CreateUser(ctx context.Context, spec UserSpec) (store.User, error) {
	email, err := parseEmail(spec.Email)
	if err != nil {
		return store.User{}, fmt.Errorf("registry: create user: %w", err)
	}
	for _, role := range spec.Roles {
		if !validRole(role) {
			return store.User{}, fmt.Errorf("registry: create user %s: role %q must match [a-z0-9:_-]{1,64}: %w",
				email, role, store.ErrInvalid)
		}
	}
	id, err := r.newID("usr_")
	if err != nil {
		return store.User{}, fmt.Errorf("registry: create user %s: %w", email, err)
	}
	now := store.NormalizeTime(r.now())
	u := store.User{
		ID: id, Email: email, Name: strings.TrimSpace(spec.Name), Roles: store.NormalizeRoles(spec.Roles),
		Active: true, Source: "local", CreatedAt: now, UpdatedAt: now,
	}
	err = r.store.CreateUser(ctx, u)
	r.invalidate()
	if err != nil {
		return store.User{}, fmt.Errorf("registry: create user %s: %w", email, err)
	}
	return u, nil
}

// ListUsers returns every user, ordered by email.
func (r *Registry) ListUsers(ctx context.Context) ([]store.User, error) {
	users, err := r.store.ListUsers(ctx)
	if err != nil {
		return nil, fmt.Errorf("registry: list users: %w", err)
	}
	return users, nil
}

// GetUserByEmail returns the user with email (case-insensitive), or an
// error wrapping store.ErrNotFound.
func (r *Registry) GetUserByEmail(ctx context.Context, email string) (store.User, error) {
	u, err := r.store.GetUserByEmail(ctx, strings.TrimSpace(email))
	if err != nil {
		return store.User{}, fmt.Errorf("registry: get user %s: %w", email, err)
	}
	return u, nil
}

// ---- agents ----

// CreateAgent creates an active agent owned by the active user with
// spec.OwnerEmail and issues its first token (which does not expire). The
// token is returned here and never again. An id that is taken is
// store.ErrAlreadyExists; an invalid id or a missing or inactive owner is
// store.ErrInvalid. The agent and its token are created one after the
// other: if issuing the token fails, the agent exists without one and
// CreateToken can be retried.
func (r *Registry) CreateAgent(ctx context.Context, spec AgentSpec) (store.Agent, string, error) {
	if !validAgentID(spec.ID) {
		return store.Agent{}, "", fmt.Errorf("registry: create agent: id %q must match [a-zA-Z0-9][a-zA-Z0-9._-]{0,63}: %w",
			spec.ID, store.ErrInvalid)
	}
	owner, err := r.store.GetUserByEmail(ctx, strings.TrimSpace(spec.OwnerEmail))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Agent{}, "", fmt.Errorf("registry: create agent %s: owner %q does not exist: %w",
			spec.ID, spec.OwnerEmail, store.ErrInvalid)
	case err != nil:
		return store.Agent{}, "", fmt.Errorf("registry: create agent %s: %w", spec.ID, err)
	case !owner.Active:
		return store.Agent{}, "", fmt.Errorf("registry: create agent %s: owner %s is deactivated: %w",
			spec.ID, owner.Email, store.ErrInvalid)
	}
	ups, err := NormalizeUpstreams(spec.AllowedUpstreams)
	if err != nil {
		return store.Agent{}, "", fmt.Errorf("registry: create agent %s: %w", spec.ID, err)
	}
	now := store.NormalizeTime(r.now())
	a := store.Agent{
		ID: spec.ID, Name: strings.TrimSpace(spec.Name), OwnerID: owner.ID,
		Department: strings.TrimSpace(spec.Department), Purpose: strings.TrimSpace(spec.Purpose),
		State: store.AgentActive, AllowedUpstreams: ups, CreatedBy: strings.TrimSpace(spec.CreatedBy),
		CreatedAt: now, UpdatedAt: now,
	}
	err = r.store.CreateAgent(ctx, a)
	r.invalidate()
	if err != nil {
		return store.Agent{}, "", fmt.Errorf("registry: create agent %s: %w", spec.ID, err)
	}
	_, token, err := r.createToken(ctx, a.ID, 0)
	if err != nil {
		return a, "", fmt.Errorf("registry: create agent %s: first token: %w", spec.ID, err)
	}
	return a, token, nil
}

// ListAgents returns every agent, ordered by id.
func (r *Registry) ListAgents(ctx context.Context) ([]store.Agent, error) {
	agents, err := r.store.ListAgents(ctx)
	if err != nil {
		return nil, fmt.Errorf("registry: list agents: %w", err)
	}
	return agents, nil
}

// GetAgent returns the agent with id, or an error wrapping
// store.ErrNotFound.
func (r *Registry) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	a, err := r.store.GetAgent(ctx, id)
	if err != nil {
		return store.Agent{}, fmt.Errorf("registry: get agent %s: %w", id, err)
	}
	return a, nil
}

// SetAllowedUpstreams replaces the upstreams the agent may call (empty:
// every upstream) and returns the agent as it was and as it is now. The
// names are checked as in AgentSpec.AllowedUpstreams and stored sorted and
// unique. An unknown agent is store.ErrNotFound; a decommissioned agent or
// an invalid name is store.ErrInvalid. It is not audited here:
// Lifecycle.SetAllowedUpstreams is the audited form.
func (r *Registry) SetAllowedUpstreams(ctx context.Context, id string, upstreams []string) (old, agent store.Agent, err error) {
	ups, err := NormalizeUpstreams(upstreams)
	if err != nil {
		return store.Agent{}, store.Agent{}, fmt.Errorf("registry: set allowed upstreams of agent %s: %w", id, err)
	}
	now := store.NormalizeTime(r.now())
	a, err := r.UpdateAgent(ctx, id, func(x store.Agent) (store.Agent, error) {
		old = x
		if x.State == store.AgentDecommissioned {
			return x, fmt.Errorf("it is decommissioned: %w", store.ErrInvalid)
		}
		x.AllowedUpstreams, x.UpdatedAt = ups, now
		return x, nil
	})
	if err != nil {
		return store.Agent{}, store.Agent{}, fmt.Errorf("registry: set allowed upstreams of agent %s: %w", id, err)
	}
	return old, a, nil
}

// NormalizeUpstreams checks a list of upstream names (1 to 32 characters
// from [a-zA-Z0-9_-], as in the configuration) and returns it trimmed,
// sorted and unique; nil for an empty list (every upstream). A bad name is
// store.ErrInvalid.
func NormalizeUpstreams(names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		n = strings.TrimSpace(n)
		if !validUpstream(n) {
			return nil, fmt.Errorf("upstream name %q must match [a-zA-Z0-9_-]{1,32}: %w", n, store.ErrInvalid)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func validUpstream(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// AllowsUpstream reports whether agent a may call upstream: its
// AllowedUpstreams is empty (every upstream) or names it.
func AllowsUpstream(a store.Agent, upstream string) bool {
	return len(a.AllowedUpstreams) == 0 || slices.Contains(a.AllowedUpstreams, upstream)
}

// LastUsed returns the latest LastUsedAt of toks (zero when none was
// used): when the agent last called through the gateway, as far as the
// coalesced token touches say.
func LastUsed(toks []store.AgentToken) time.Time {
	var last time.Time
	for _, t := range toks {
		if t.LastUsedAt.After(last) {
			last = t.LastUsedAt
		}
	}
	return last
}

// ---- tokens ----

// CreateToken issues a new token for the agent, valid for ttl (0: no
// expiry). The token is returned here and never again; only its SHA-256
// hash is stored. An unknown agent is store.ErrNotFound; a decommissioned
// agent or a negative ttl is store.ErrInvalid.
func (r *Registry) CreateToken(ctx context.Context, agentID string, ttl time.Duration) (store.AgentToken, string, error) {
	t, token, err := r.createToken(ctx, agentID, ttl)
	if err != nil {
		return store.AgentToken{}, "", fmt.Errorf("registry: %w", err)
	}
	return t, token, nil
}

func (r *Registry) createToken(ctx context.Context, agentID string, ttl time.Duration) (store.AgentToken, string, error) {
	if ttl < 0 {
		return store.AgentToken{}, "", fmt.Errorf("create token for agent %s: negative ttl %v: %w", agentID, ttl, store.ErrInvalid)
	}
	a, err := r.store.GetAgent(ctx, agentID)
	if err != nil {
		return store.AgentToken{}, "", fmt.Errorf("create token for agent %s: %w", agentID, err)
	}
	if a.State == store.AgentDecommissioned {
		return store.AgentToken{}, "", fmt.Errorf("create token for agent %s: agent is decommissioned: %w", agentID, store.ErrInvalid)
	}
	var secret [tokenBytes]byte
	if err := r.readRand(secret[:]); err != nil {
		return store.AgentToken{}, "", fmt.Errorf("create token for agent %s: %w", agentID, err)
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(secret[:])
	clear(secret[:])
	hash := sha256.Sum256([]byte(token))
	id, err := r.newID("tok_")
	if err != nil {
		return store.AgentToken{}, "", fmt.Errorf("create token for agent %s: %w", agentID, err)
	}
	now := store.NormalizeTime(r.now())
	t := store.AgentToken{ID: id, AgentID: agentID, Hash: hash[:], CreatedAt: now}
	if ttl > 0 {
		t.ExpiresAt = store.NormalizeTime(now.Add(ttl))
	}
	err = r.store.CreateAgentToken(ctx, t)
	r.invalidate()
	if err != nil {
		return store.AgentToken{}, "", fmt.Errorf("create token for agent %s: %w", agentID, err)
	}
	return t, token, nil
}

// ListTokens returns the agent's tokens (hashes only), oldest first.
func (r *Registry) ListTokens(ctx context.Context, agentID string) ([]store.AgentToken, error) {
	toks, err := r.store.ListAgentTokens(ctx, agentID)
	if err != nil {
		return nil, fmt.Errorf("registry: list tokens of agent %s: %w", agentID, err)
	}
	return toks, nil
}

// RevokeToken revokes the token with tokenID now. Revoking a revoked token
// keeps its first revocation time. It takes effect at once for this
// Registry and within GenerationMaxAge for every other one.
func (r *Registry) RevokeToken(ctx context.Context, tokenID string) error {
	err := r.store.RevokeAgentToken(ctx, tokenID, r.now())
	r.invalidate()
	if err != nil {
		return fmt.Errorf("registry: revoke token %s: %w", tokenID, err)
	}
	return nil
}

// ---- authentication ----

// Authenticate resolves an agent token to its principal. A malformed,
// unknown, revoked or expired token is an error wrapping
// ErrUnauthenticated; any other error is a failure to check the token, and
// the caller must refuse the request as well. It does not judge the agent's
// or the owner's state: that is CheckActive.
//
// Principals are cached by token hash and a cache entry is used only while
// the store's Generation is the one it was read at. The Generation is read
// at most once per GenerationMaxAge (one caller reads, concurrent callers use
// the last value), except right after a mutation through this Registry,
// which invalidates the cache at once. The token's use is recorded in the
// background, at most once a minute per token.
func (r *Registry) Authenticate(ctx context.Context, token string) (store.Principal, error) {
	if !wellFormed(token) {
		return store.Principal{}, fmt.Errorf("%w: malformed token", ErrUnauthenticated)
	}
	hash := sha256.Sum256([]byte(token))
	now := r.now()
	gen, epoch, err := r.generation(ctx, now)
	if err != nil {
		return store.Principal{}, fmt.Errorf("registry: authenticate: %w", err)
	}
	r.cacheMu.RLock()
	e, ok := r.cache[hash]
	r.cacheMu.RUnlock()
	p := e.p
	if !ok || e.gen != gen || e.epoch != epoch {
		p, err = r.store.LookupPrincipal(ctx, hash[:])
		if errors.Is(err, store.ErrNotFound) {
			return store.Principal{}, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
		}
		if err != nil {
			return store.Principal{}, fmt.Errorf("registry: authenticate: %w", err)
		}
		if subtle.ConstantTimeCompare(p.Token.Hash, hash[:]) != 1 {
			return store.Principal{}, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
		}
		// Tagged with the generation read before the lookup: if the data
		// changed in between, the entry is already stale, never the reverse.
		r.cacheMu.Lock()
		if len(r.cache) >= maxCacheEntries {
			clear(r.cache)
		}
		r.cache[hash] = cacheEntry{p: p, gen: gen, epoch: epoch}
		r.cacheMu.Unlock()
	}
	switch {
	case !p.Token.RevokedAt.IsZero():
		return store.Principal{}, fmt.Errorf("%w: token %s of agent %s is revoked", ErrUnauthenticated, p.Token.ID, p.Agent.ID)
	case !p.Token.ExpiresAt.IsZero() && !now.Before(p.Token.ExpiresAt):
		return store.Principal{}, fmt.Errorf("%w: token %s of agent %s expired at %s", ErrUnauthenticated,
			p.Token.ID, p.Agent.ID, p.Token.ExpiresAt.Format(time.RFC3339))
	}
	r.noteUse(p.Token.ID, now)
	// The cached principal is shared: hand out copies of its slices.
	p.Token.Hash = slices.Clone(p.Token.Hash)
	p.Owner.Roles = slices.Clone(p.Owner.Roles)
	return p, nil
}

// wellFormed reports whether token looks like an agent token: the prefix
// and 43 base64url characters. It does not decode: the token is hashed as
// it is, so a look-alike can only miss.
func wellFormed(token string) bool {
	if len(token) != tokenLen || !strings.HasPrefix(token, TokenPrefix) {
		return false
	}
	for i := len(TokenPrefix); i < len(token); i++ {
		c := token[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// generation returns the store Generation to compare cache entries with, and
// the local epoch it belongs to. now is the caller's clock reading.
func (r *Registry) generation(ctx context.Context, now time.Time) (int64, uint64, error) {
	epoch := r.epoch.Load()
	snap := r.gen.Load()
	if snap != nil && snap.epoch == epoch {
		if r.fresh(snap, now) {
			return snap.value, epoch, nil
		}
		// Merely old: one caller reads, the others go on with the last value.
		if !r.genMu.TryLock() {
			return snap.value, epoch, nil
		}
	} else {
		// Never read, or invalidated by a local mutation: the last value
		// must not be used, so wait for the one reader.
		r.genMu.Lock()
	}
	defer r.genMu.Unlock()
	epoch = r.epoch.Load()
	readAt := r.now()
	if snap := r.gen.Load(); snap != nil && snap.epoch == epoch && r.fresh(snap, readAt) {
		return snap.value, epoch, nil
	}
	g, err := r.store.Generation(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("read store generation: %w", err)
	}
	r.gen.Store(&genSnapshot{value: g, readAt: readAt, epoch: epoch})
	return g, epoch, nil
}

func (r *Registry) fresh(s *genSnapshot, now time.Time) bool {
	age := now.Sub(s.readAt)
	return age >= 0 && age < r.maxAge
}

// invalidate makes every cache entry and the generation snapshot stale. It
// runs after each mutation through this Registry, once the store call has
// returned.
func (r *Registry) invalidate() { r.epoch.Add(1) }

// ---- recording token use ----

// noteUse queues a TouchAgentToken for the token unless one was queued less
// than touchInterval ago. It never blocks: when the queue is full the touch
// is dropped and the next use retries.
func (r *Registry) noteUse(tokenID string, now time.Time) {
	select {
	case <-r.done:
		return
	default:
	}
	prev, ok := r.lastTouch.Load(tokenID)
	if ok {
		if age := now.Sub(prev.(time.Time)); age >= 0 && age < touchInterval {
			return
		}
		if !r.lastTouch.CompareAndSwap(tokenID, prev, now) {
			return // another caller queued it
		}
	} else if _, loaded := r.lastTouch.LoadOrStore(tokenID, now); loaded {
		return
	}
	select {
	case r.touches <- touch{tokenID: tokenID, at: now}:
	default:
		r.lastTouch.CompareAndDelete(tokenID, now)
		r.log.Warn("agent token use not recorded: queue full", "token_id", tokenID)
	}
}

// touchLoop writes queued touches until Close, then flushes the queue.
func (r *Registry) touchLoop() {
	defer r.wg.Done()
	prune := time.NewTicker(touchInterval)
	defer prune.Stop()
	for {
		select {
		case t := <-r.touches:
			r.touch(t)
		case <-prune.C:
			r.pruneTouches()
		case <-r.done:
			var errs []error
			for {
				select {
				case t := <-r.touches:
					errs = append(errs, r.touch(t))
				default:
					if err := errors.Join(errs...); err != nil {
						r.closeErr = fmt.Errorf("registry: close: %w", err)
					}
					return
				}
			}
		}
	}
}

func (r *Registry) touch(t touch) error {
	ctx, cancel := context.WithTimeout(context.Background(), touchTimeout)
	defer cancel()
	err := r.store.TouchAgentToken(ctx, t.tokenID, t.at)
	if err != nil {
		r.log.Warn("recording agent token use failed", "token_id", t.tokenID, "err", err)
		return fmt.Errorf("record use of token %s: %w", t.tokenID, err)
	}
	return nil
}

// pruneTouches forgets tokens not queued for a while, so the map does not
// grow with every token ever seen.
func (r *Registry) pruneTouches() {
	now := r.now()
	r.lastTouch.Range(func(k, v any) bool {
		if now.Sub(v.(time.Time)) >= 2*touchInterval {
			r.lastTouch.CompareAndDelete(k, v)
		}
		return true
	})
}

// ---- the gate's check ----

// InactiveError says why a principal may not act: its agent is not active
// or its owner is deactivated (the kill switch).
type InactiveError struct {
	AgentID string
	// Reason is the whole human-readable explanation, e.g. "agent X is
	// suspended" or "owner a@b of agent X is deactivated".
	Reason string
}

func (e *InactiveError) Error() string {
	if e.Reason == "" {
		return "agent " + e.AgentID + " is not active"
	}
	return e.Reason
}

// CheckActive returns an *InactiveError when the principal's agent is not
// active or its owner is not active, and nil when both are.
func CheckActive(p store.Principal) error {
	id := p.Agent.ID
	switch {
	case id == "":
		return &InactiveError{Reason: "no agent"}
	case p.Agent.State != store.AgentActive && p.Agent.State.Valid():
		return &InactiveError{AgentID: id, Reason: fmt.Sprintf("agent %s is %s", id, p.Agent.State)}
	case p.Agent.State != store.AgentActive:
		return &InactiveError{AgentID: id, Reason: fmt.Sprintf("agent %s is in unknown state %q", id, p.Agent.State)}
	case p.Owner.ID == "" || p.Owner.ID != p.Agent.OwnerID:
		return &InactiveError{AgentID: id, Reason: fmt.Sprintf("owner of agent %s is unknown", id)}
	case !p.Owner.Active:
		return &InactiveError{AgentID: id, Reason: fmt.Sprintf("owner %s of agent %s is deactivated", p.Owner.Email, id)}
	}
	return nil
}

// ---- validation and randomness ----

func parseEmail(s string) (string, error) {
	s = strings.TrimSpace(s)
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Name != "" || addr.Address != s || len(s) > 254 {
		return "", fmt.Errorf("email %q is not a bare address: %w", s, store.ErrInvalid)
	}
	return store.NormalizeEmail(addr.Address), nil
}

func validRole(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == ':' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validAgentID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

func (r *Registry) readRand(b []byte) error {
	r.randMu.Lock()
	defer r.randMu.Unlock()
	if _, err := io.ReadFull(r.rand, b); err != nil {
		return fmt.Errorf("read random bytes: %w", err)
	}
	return nil
}

// newID returns prefix and 16 random bytes in hex.
func (r *Registry) newID(prefix string) (string, error) {
	var b [16]byte
	if err := r.readRand(b[:]); err != nil {
		return "", err
	}
	return prefix + hex.EncodeToString(b[:]), nil
}
