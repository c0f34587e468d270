package credential

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// Defaults and bounds.
const (
	// DefaultStatusListSize is the number of entries in a status list: the
	// minimum Bitstring Status List v1.0 allows (16 KiB of bits).
	DefaultStatusListSize = 131072
	// DefaultLifetime is how long a credential is valid when the action
	// does not say.
	DefaultLifetime = 5 * time.Minute
	// MaxLifetime is the longest lifetime Issue accepts.
	MaxLifetime = 24 * time.Hour
	// StatusListCacheTTL is how long a built status list credential is
	// served from memory (and the max-age StatusListCredential returns).
	StatusListCacheTTL = 30 * time.Second
	// keyRefresh is how often keys are re-read from the store, to pick up a
	// rotation (or a first key) made by another replica: every replica
	// publishes the same key set and signs with the same current key
	// within this long. One small query.
	keyRefresh = 5 * time.Second
	// unknownKidRefresh bounds re-reads caused by unknown kids in Verify.
	unknownKidRefresh = time.Second
	// indexTries is how many random indexes Issue tries before giving up
	// (the list is at most half full, so each try succeeds with p >= 1/2).
	indexTries = 32
)

// Options configures New.
type Options struct {
	Store store.Store
	// KEK is the 32-byte key-encryption key (LoadKEK).
	KEK []byte
	// Issuer is interlock's public URL (public_url): the VC issuer, the JWT
	// iss, and the base of status list and context URLs.
	Issuer string
	// Alg is the signature algorithm of new keys: "EdDSA" (default) or
	// "ES256".
	Alg string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand is the random source (must be safe for concurrent use); nil
	// means crypto/rand.Reader.
	Rand io.Reader
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// StatusListSize is the number of entries per status list: a multiple
	// of 8, at least DefaultStatusListSize (the default).
	StatusListSize int
}

// Issuer issues, verifies, consumes and revokes action credentials and
// publishes keys and status lists. It is safe for concurrent use.
type Issuer struct {
	st     store.Store
	aead   cipher.AEAD
	issuer string // without a trailing slash
	ctxURL string
	did    string
	alg    string
	now    func() time.Time
	rand   io.Reader
	log    *slog.Logger
	size   int

	mu         sync.RWMutex
	current    *signingKey
	keys       map[string]*signingKey
	loadedAt   time.Time
	reloading  atomic.Bool
	lastForced time.Time

	listMu    sync.Mutex
	list      int // current status list number (1, 2, ...)
	listCount int // indexes allocated in it, as last known
	rollover  int // a list this full is closed: size/2 (tests lower it)

	cacheMu sync.Mutex
	cache   map[string]cachedList
}

type cachedList struct {
	token   []byte
	built   time.Time
	revoked []int // sorted: the indexes the list was built with
}

// New returns an Issuer: it loads the signing keys from the store (every
// one must open with Options.KEK) and creates the first key if there is
// none.
func New(ctx context.Context, o Options) (*Issuer, error) {
	if o.Store == nil {
		return nil, errors.New("credential: Options.Store is nil")
	}
	aead, err := newAEAD(o.KEK)
	if err != nil {
		return nil, err
	}
	iss, err := normalizeIssuer(o.Issuer)
	if err != nil {
		return nil, err
	}
	did, err := didWeb(iss)
	if err != nil {
		return nil, err
	}
	i := &Issuer{
		st: o.Store, aead: aead, issuer: iss, ctxURL: iss + contextPath, did: did,
		alg: o.Alg, now: o.Now, rand: o.Rand, log: o.Logger, size: o.StatusListSize,
		keys: map[string]*signingKey{}, cache: map[string]cachedList{},
	}
	if i.alg == "" {
		i.alg = AlgEdDSA
	}
	if _, err := jwaAlg(i.alg); err != nil {
		return nil, fmt.Errorf("credential: Options.Alg: %w", err)
	}
	if i.now == nil {
		i.now = time.Now
	}
	if i.rand == nil {
		i.rand = rand.Reader
	}
	if i.log == nil {
		i.log = slog.Default()
	}
	if i.size == 0 {
		i.size = DefaultStatusListSize
	}
	if i.size < DefaultStatusListSize || i.size%8 != 0 || i.size > math.MaxInt32 {
		return nil, fmt.Errorf("credential: Options.StatusListSize %d: want a multiple of 8, at least %d", i.size, DefaultStatusListSize)
	}
	i.rollover = i.size / 2

	if err := i.loadKeys(ctx); err != nil {
		return nil, err
	}
	i.mu.RLock()
	cur := i.current
	i.mu.RUnlock()
	if cur == nil {
		if err := i.firstKey(ctx); err != nil {
			return nil, err
		}
	} else if cur.rec.Alg != i.alg {
		i.log.Warn("the current credential signing key uses another algorithm than configured; rotate the keys to switch",
			"kid", cur.rec.ID, "key_alg", cur.rec.Alg, "configured_alg", i.alg)
	}
	if err := i.findList(ctx); err != nil {
		return nil, err
	}
	return i, nil
}

// normalizeIssuer checks the public URL and drops a trailing slash.
func normalizeIssuer(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("credential: Options.Issuer: %w", err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("credential: Options.Issuer %q: want an http(s) URL without user, query or fragment", s)
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"), nil
}

// Issuer returns the issuer URL (iss, and the VC issuer).
func (i *Issuer) Issuer() string { return i.issuer }

// ContextURL returns interlock's JSON-LD context URL, the second
// @context entry of every action credential.
func (i *Issuer) ContextURL() string { return i.ctxURL }

// StatusListURL returns the URL of status list list.
func (i *Issuer) StatusListURL(list string) string { return i.issuer + statusPath + list }

// ---- keys ----

func (i *Issuer) sealer(kid string, plain []byte) ([]byte, error) {
	return seal(i.aead, i.rand, kid, plain)
}

func (i *Issuer) unsealer(kid string, sealed []byte) ([]byte, error) {
	return unseal(i.aead, kid, sealed)
}

// loadKeys reads every key from the store, opening the ones not yet held.
// The current key is the newest one not retired.
func (i *Issuer) loadKeys(ctx context.Context) error {
	recs, err := i.st.ListSigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("credential: load signing keys: %w", err)
	}
	i.mu.RLock()
	held := i.keys
	i.mu.RUnlock()
	keys := make(map[string]*signingKey, len(recs))
	var cur *signingKey
	for _, rec := range recs {
		k := held[rec.ID]
		if k == nil {
			if k, err = openKey(rec, i.unsealer); err != nil {
				return err
			}
		} else {
			k = &signingKey{rec: rec, priv: k.priv, pub: k.pub, jwaAlg: k.jwaAlg, hdr: k.hdr}
		}
		keys[rec.ID] = k
		if cur == nil && rec.RetiredAt.IsZero() {
			cur = k // ListSigningKeys is newest first
		}
	}
	i.mu.Lock()
	i.keys, i.current, i.loadedAt = keys, cur, i.now()
	i.mu.Unlock()
	return nil
}

// refreshKeys re-reads the keys when they are older than keyRefresh, or
// (force) at most once per unknownKidRefresh. One caller reloads at a time;
// the others go on with the keys they have.
func (i *Issuer) refreshKeys(ctx context.Context, force bool) {
	now := i.now()
	i.mu.RLock()
	stale := now.Sub(i.loadedAt) >= keyRefresh || (force && now.Sub(i.lastForced) >= unknownKidRefresh)
	i.mu.RUnlock()
	if !stale || !i.reloading.CompareAndSwap(false, true) {
		return
	}
	defer i.reloading.Store(false)
	if force {
		i.mu.Lock()
		i.lastForced = now
		i.mu.Unlock()
	}
	if err := i.loadKeys(ctx); err != nil {
		i.log.Error("reload credential signing keys", "err", err)
	}
}

// firstKeyClaim is the meta key that decides which replica creates the
// first signing key when several start together on an empty store.
const firstKeyClaim = "credential.first_key"

// firstKey creates the first signing key, or, when another replica
// claimed that first, waits for its key: replicas that start together
// agree on one key instead of each making (and publishing) its own.
func (i *Issuer) firstKey(ctx context.Context) error {
	k, err := generateKey(i.alg, i.rand, i.sealer, i.now())
	if err != nil {
		return err
	}
	winner, err := i.st.PutMetaIfAbsent(ctx, firstKeyClaim, []byte(k.rec.ID))
	if err != nil {
		return fmt.Errorf("credential: claim the first signing key: %w", err)
	}
	if string(winner) == k.rec.ID {
		if err := i.storeKey(ctx, k); err != nil {
			return err
		}
		i.log.Info("created the first credential signing key", "kid", k.rec.ID, "alg", k.rec.Alg)
		return nil
	}
	// Another replica claimed it (or a store whose first key was later
	// lost): its key is stored right after its claim.
	for range 100 {
		if err := i.loadKeys(ctx); err != nil {
			return err
		}
		i.mu.RLock()
		cur := i.current
		i.mu.RUnlock()
		if cur != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	i.log.Warn("another replica claimed the first signing key but none appeared; creating one here", "claimed_kid", string(winner))
	if err := i.storeKey(ctx, k); err != nil {
		return err
	}
	i.log.Info("created the first credential signing key", "kid", k.rec.ID, "alg", k.rec.Alg)
	return nil
}

// addKey creates a key with the configured algorithm, stores it and makes
// it current.
func (i *Issuer) addKey(ctx context.Context) (*signingKey, error) {
	k, err := generateKey(i.alg, i.rand, i.sealer, i.now())
	if err != nil {
		return nil, err
	}
	if err := i.storeKey(ctx, k); err != nil {
		return nil, err
	}
	return k, nil
}

// storeKey stores k and makes it current.
func (i *Issuer) storeKey(ctx context.Context, k *signingKey) error {
	if err := i.st.PutSigningKey(ctx, k.rec); err != nil {
		return fmt.Errorf("credential: store signing key: %w", err)
	}
	i.mu.Lock()
	keys := make(map[string]*signingKey, len(i.keys)+1)
	for id, old := range i.keys {
		keys[id] = old
	}
	keys[k.rec.ID] = k
	i.keys, i.current = keys, k
	i.mu.Unlock()
	return nil
}

// Rotate creates a new signing key and makes it current. Every key that was
// current is retired now and stays published for MaxLifetime, the longest
// any credential it signed can stay valid.
func (i *Issuer) Rotate(ctx context.Context) (store.SigningKey, error) {
	if err := i.loadKeys(ctx); err != nil {
		return store.SigningKey{}, err
	}
	i.mu.RLock()
	var old []string
	for id, k := range i.keys {
		if k.rec.RetiredAt.IsZero() {
			old = append(old, id)
		}
	}
	i.mu.RUnlock()
	k, err := i.addKey(ctx)
	if err != nil {
		return store.SigningKey{}, err
	}
	// The longest lifetime this process issued would not do: another
	// process (the gateway, when the CLI rotates) may have issued longer
	// ones. Retired public keys sign nothing, so keeping them published
	// for the longest lifetime any credential can have costs nothing.
	now := store.NormalizeTime(i.now())
	until := now.Add(MaxLifetime)
	for _, id := range old {
		if err := i.st.RetireSigningKey(ctx, id, now, until); err != nil {
			return store.SigningKey{}, fmt.Errorf("credential: retire signing key %s: %w", id, err)
		}
	}
	if err := i.loadKeys(ctx); err != nil {
		return store.SigningKey{}, err
	}
	i.log.Info("rotated the credential signing key", "kid", k.rec.ID, "alg", k.rec.Alg,
		"retired", old, "published_until", until)
	return k.rec, nil
}

// Keys returns the signing key records held, newest first, without their
// sealed private halves.
func (i *Issuer) Keys() []store.SigningKey {
	i.mu.RLock()
	out := make([]store.SigningKey, 0, len(i.keys))
	for _, k := range i.keys {
		r := k.rec
		r.Sealed = nil
		out = append(out, r)
	}
	i.mu.RUnlock()
	slices.SortFunc(out, func(a, b store.SigningKey) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	return out
}

// ---- status list allocation ----

// findList finds the first status list that is less than half full.
func (i *Issuer) findList(ctx context.Context) error {
	i.listMu.Lock()
	defer i.listMu.Unlock()
	n := max(i.list, 1)
	for {
		c, err := i.st.CountStatusIndexes(ctx, strconv.Itoa(n))
		if err != nil {
			return fmt.Errorf("credential: status list %d: %w", n, err)
		}
		if c < i.rollover {
			i.list, i.listCount = n, c
			return nil
		}
		n++
	}
}

// currentList returns the list new credentials go to.
func (i *Issuer) currentList(ctx context.Context) (string, error) {
	i.listMu.Lock()
	full := i.listCount >= i.rollover
	list := i.list
	i.listMu.Unlock()
	if full {
		if err := i.findList(ctx); err != nil {
			return "", err
		}
		i.listMu.Lock()
		list = i.list
		i.listMu.Unlock()
	}
	return strconv.Itoa(list), nil
}

func (i *Issuer) allocated(list string) {
	i.listMu.Lock()
	if strconv.Itoa(i.list) == list {
		i.listCount++
	}
	i.listMu.Unlock()
}

// ---- issuing ----

// Authorization says who or what authorised an action.
type Authorization struct {
	Kind       string `json:"kind"`                  // "policy" or "approval"
	Rule       string `json:"rule,omitempty"`        // the policy rule id
	Approver   string `json:"approver,omitempty"`    // the approver's identity (e-mail)
	Method     string `json:"method,omitempty"`      // how they approved, e.g. "passkey"
	ApprovalID string `json:"approval_id,omitempty"` // the approval request
}

// Action is what one credential authorises.
type Action struct {
	AgentID, OwnerEmail, DecisionID, Upstream, Tool string
	// Arguments are the call's arguments; the credential carries their
	// ArgumentsDigest, not the arguments.
	Arguments map[string]any
	// ArgsDigest, when set, is the digest to bind instead of computing it
	// from Arguments (the caller kept only the digest of the real
	// arguments): 64 lower-case hex digits.
	ArgsDigest    string
	AuthorizedBy  []Authorization
	RiskScore     int
	ClientIP      string
	PolicyVersion string
	// Lifetime is how long the credential is valid (DefaultLifetime when
	// zero; at most MaxLifetime).
	Lifetime time.Duration
	// Uses is how many times it may be consumed (1 when zero).
	Uses int
	// MaxAmount, when set, is the decision's ceiling on the call's amount.
	MaxAmount *float64
	// ID, when set, is the credential's id (a URN) instead of a random
	// one: Issue then fails with store.ErrAlreadyExists if a credential
	// with that id exists, so one approval yields one credential however
	// many callers race for it.
	ID string
	// ConsumeNow records the credential with its first use already taken
	// (at issuance): for the caller that forwards the call right away, it
	// saves Consume's separate store write. A single-use credential issued
	// so is refused by any later Consume (a replay), while Verify still
	// accepts it until it expires or is revoked.
	ConsumeNow bool
}

func (a *Action) check() error {
	switch {
	case a.AgentID == "":
		return errors.New("agent id is empty")
	case a.Upstream == "" || a.Tool == "":
		return errors.New("upstream or tool is empty")
	case a.Lifetime < 0 || a.Lifetime > MaxLifetime:
		return fmt.Errorf("lifetime %v: want up to %v", a.Lifetime, MaxLifetime)
	case a.Uses < 0:
		return fmt.Errorf("uses %d", a.Uses)
	case a.MaxAmount != nil && (math.IsNaN(*a.MaxAmount) || math.IsInf(*a.MaxAmount, 0)):
		return errors.New("max amount is not finite")
	}
	for _, au := range a.AuthorizedBy {
		if au.Kind != authorizationPolicy && au.Kind != authorizationHuman {
			return fmt.Errorf("authorization kind %q: want %q or %q", au.Kind, authorizationPolicy, authorizationHuman)
		}
	}
	return nil
}

// ErrInvalidAction: Issue was given an action it cannot sign.
var ErrInvalidAction = errors.New("credential: invalid action")

// Prepared is a credential built but neither recorded nor signed (Prepare):
// its record goes into the store with the event that decides the call
// (audit.Event.Credential), which picks its status index, and Sign then
// signs it. It is not safe for concurrent use.
type Prepared struct {
	i       *Issuer
	key     *signingKey
	a       Action
	rec     store.Credential
	counted bool // allocated was told of the index
}

// Prepare builds the credential of action a without writing anything: its
// record has an id (a random one, or a.ID), its times, the arguments
// digest, its uses (the first taken with a.ConsumeNow), the current key and
// status list, and StatusIndex -1 with IndexRange the list's size, for the
// store to pick a free index in the transaction that records it
// (store.AuditEvent.Credential). Sign it once that transaction is
// committed.
func (i *Issuer) Prepare(ctx context.Context, a Action) (*Prepared, error) {
	if err := a.check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidAction, err)
	}
	if a.Lifetime == 0 {
		a.Lifetime = DefaultLifetime
	}
	if a.Uses == 0 {
		a.Uses = 1
	}
	digest := a.ArgsDigest
	if digest == "" {
		var err error
		if digest, err = ArgumentsDigest(a.Arguments); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidAction, err)
		}
	} else if len(digest) != 64 || strings.Trim(digest, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("%w: arguments digest %q is not 64 lower-case hex digits", ErrInvalidAction, digest)
	}
	i.refreshKeys(ctx, false)
	i.mu.RLock()
	key := i.current
	i.mu.RUnlock()
	if key == nil {
		return nil, errors.New("credential: no current signing key")
	}

	// JWT times are whole seconds; the record keeps the same instants.
	now := i.now()
	iat := now.Truncate(time.Second).UTC()
	exp := iat.Add(a.Lifetime.Round(time.Second))
	if !exp.After(iat) {
		exp = iat.Add(time.Second)
	}
	p := &Prepared{i: i, key: key, a: a, rec: store.Credential{
		AgentID: a.AgentID, DecisionID: a.DecisionID, Upstream: a.Upstream, Tool: a.Tool,
		ArgsDigest: digest, KeyID: key.rec.ID, IssuedAt: iat, ExpiresAt: exp, Uses: a.Uses,
		StatusIndex: -1, IndexRange: i.size,
	}}
	if a.ConsumeNow {
		p.rec.Used, p.rec.ConsumedAt = 1, store.NormalizeTime(now)
	}
	if err := p.assign(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// assign gives p's record its id (a.ID, or a new random one) and the
// current status list, with StatusIndex -1.
func (p *Prepared) assign(ctx context.Context) error {
	list, err := p.i.currentList(ctx)
	if err != nil {
		return err
	}
	p.rec.ID = p.a.ID
	if p.rec.ID == "" {
		var b [16]byte
		if _, err := io.ReadFull(p.i.rand, b[:]); err != nil {
			return fmt.Errorf("credential: random: %w", err)
		}
		p.rec.ID = uuidURN(b[:])
	}
	p.rec.StatusList, p.rec.StatusIndex = list, -1
	return nil
}

// Record is the credential's record, to be inserted with the event that
// decides the call (audit.Event.Credential). The store writes the status
// index it picks into it; leave it alone otherwise.
func (p *Prepared) Record() *store.Credential { return &p.rec }

// ErrNotRecorded: Sign was called on a prepared credential whose record
// has no status index yet (it was not committed).
var ErrNotRecorded = errors.New("credential: the prepared credential was not recorded")

// Sign signs the prepared credential once its record is committed with its
// status index, and returns the compact JWS and the record (as stored).
func (p *Prepared) Sign() (string, store.Credential, error) {
	if p.rec.StatusIndex < 0 || p.rec.StatusIndex >= p.i.size {
		return "", store.Credential{}, fmt.Errorf("%w: credential %s has status index %d", ErrNotRecorded, p.rec.ID, p.rec.StatusIndex)
	}
	if !p.counted {
		p.counted = true
		p.i.allocated(p.rec.StatusList)
	}
	tok, err := p.i.signAction(p.key, &p.rec, &p.a)
	if err != nil {
		return "", store.Credential{}, err
	}
	rec := p.rec
	rec.IndexRange = 0
	return tok, rec, nil
}

// Issue signs a credential for action a, records it in the store (on its
// own) and returns the compact JWS and the record.
func (i *Issuer) Issue(ctx context.Context, a Action) (string, store.Credential, error) {
	p, err := i.Prepare(ctx, a)
	if err != nil {
		return "", store.Credential{}, err
	}
	if err := i.record(ctx, p); err != nil {
		return "", store.Credential{}, err
	}
	return p.Sign()
}

// record stores p's record at a free random index in its status list
// (retrying a taken index with another, and a new id unless a.ID is set).
// (Signing while the store writes was tried: on two busy cores it did not
// pay.)
func (i *Issuer) record(ctx context.Context, p *Prepared) error {
	var lastErr error
	for try := range indexTries {
		if try > 0 {
			if err := p.assign(ctx); err != nil {
				return err
			}
		}
		var b [8]byte
		if _, err := io.ReadFull(i.rand, b[:]); err != nil {
			return fmt.Errorf("credential: random: %w", err)
		}
		rec := p.rec
		rec.StatusIndex = int(binary.BigEndian.Uint64(b[:]) % uint64(i.size))
		rec.IndexRange = 0
		err := i.st.CreateCredential(ctx, rec)
		if err == nil {
			p.rec.StatusIndex = rec.StatusIndex
			return nil
		}
		if !errors.Is(err, store.ErrAlreadyExists) {
			return fmt.Errorf("credential: record: %w", err)
		}
		if p.a.ID != "" {
			// The id, or only the status index, was taken.
			if _, gerr := i.st.GetCredential(ctx, p.a.ID); gerr == nil {
				return fmt.Errorf("credential %s: %w", p.a.ID, store.ErrAlreadyExists)
			}
		}
		lastErr = err
	}
	return fmt.Errorf("credential: no free status index after %d tries: %w", indexTries, lastErr)
}

// signAction builds the credential of a, recorded as rec, and signs it
// with key.
func (i *Issuer) signAction(key *signingKey, rec *store.Credential, a *Action) (string, error) {
	auth := a.AuthorizedBy
	if auth == nil {
		auth = []Authorization{}
	}
	listURL := i.StatusListURL(rec.StatusList)
	index := strconv.Itoa(rec.StatusIndex)
	p := vcPayload{
		Context:    []string{ContextV2, i.ctxURL},
		ID:         rec.ID,
		Type:       []string{TypeVC, TypeAction},
		Issuer:     i.issuer,
		ValidFrom:  rec.IssuedAt.Format(time.RFC3339),
		ValidUntil: rec.ExpiresAt.Format(time.RFC3339),
		CredentialSubject: vcSubject{
			ID:    i.issuer + agentPath + url.PathEscape(a.AgentID),
			Agent: vcAgent{ID: a.AgentID, Owner: a.OwnerEmail},
			Action: vcAction{
				Upstream: a.Upstream, Tool: a.Tool, ArgumentsDigest: rec.ArgsDigest,
				Constraints: vcConstraints{MaxAmount: a.MaxAmount, Uses: rec.Uses},
			},
			Authorization: auth,
			Context: vcContext{
				RiskScore: a.RiskScore, ClientIP: a.ClientIP, DecisionID: a.DecisionID, PolicyVersion: a.PolicyVersion,
			},
		},
		CredentialStatus: &statusEntry{
			ID:                   listURL + "#" + index,
			Type:                 TypeStatusEntry,
			StatusPurpose:        PurposeRevocation,
			StatusListIndex:      index,
			StatusListCredential: listURL,
		},
		Iss: i.issuer, Jti: rec.ID, Iat: rec.IssuedAt.Unix(), Nbf: rec.IssuedAt.Unix(), Exp: rec.ExpiresAt.Unix(),
	}
	payload, err := json.Marshal(&p)
	if err != nil {
		return "", fmt.Errorf("credential: encode credential %s: %w", rec.ID, err)
	}
	tok, err := key.sign(payload, i.rand)
	if err != nil {
		return "", fmt.Errorf("credential %s: %w", rec.ID, err)
	}
	return tok, nil
}

// uuidURN formats 16 random bytes as a version 4 UUID URN.
func uuidURN(b []byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:16])
	return "urn:uuid:" + string(s[:])
}

// ---- consuming and revoking ----

// ErrSpent: the credential was already used up, revoked or expired (it is
// store.ErrSpent).
var ErrSpent = store.ErrSpent

// Consume uses credential id once, atomically in the store: ErrSpent when
// it has no use left, is revoked or expired; store.ErrNotFound when unknown.
func (i *Issuer) Consume(ctx context.Context, id string) (store.Credential, error) {
	c, err := i.st.ConsumeCredential(ctx, id, i.now())
	if err != nil {
		return store.Credential{}, fmt.Errorf("credential: consume %s: %w", id, err)
	}
	return c, nil
}

// Revoke marks credential id revoked (the first time and reason stay) and
// so sets its bit in its status list; the cached list is dropped.
func (i *Issuer) Revoke(ctx context.Context, id, reason string) (store.Credential, error) {
	c, err := i.st.RevokeCredential(ctx, id, i.now(), reason)
	if err != nil {
		return store.Credential{}, fmt.Errorf("credential: revoke %s: %w", id, err)
	}
	i.cacheMu.Lock()
	delete(i.cache, c.StatusList)
	i.cacheMu.Unlock()
	i.log.Info("revoked a credential", "id", id, "agent", c.AgentID, "reason", reason)
	return c, nil
}

// DerivedID returns the credential id that stands for name (for example an
// approval id): a UUID URN made from name's SHA-256, the same every time,
// for Action.ID.
func DerivedID(name string) string {
	sum := sha256.Sum256([]byte("interlock credential for " + name))
	return uuidURN(sum[:16])
}
