// Package store defines the one storage interface interlock uses, its record
// types and its sentinel errors. Backends live in sub-packages (sqlite, and
// later postgres); every backend must pass the conformance suite in
// storetest.
//
// The package must not leak SQL or any backend detail upward: callers see
// records, sentinel errors and the Store interface only. Time is never read
// here: callers put timestamps into the records they pass in.
package store

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// Sentinel errors. Backends wrap them with %w so callers test with errors.Is.
var (
	// ErrNotFound: the record does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrAlreadyExists: a record with the same unique key exists.
	ErrAlreadyExists = errors.New("store: already exists")
	// ErrInvalid: the record breaks a constraint the store enforces (for
	// example an agent whose owner does not exist).
	ErrInvalid = errors.New("store: invalid record")
)

// TokenHashSize is the length of AgentToken.Hash: a SHA-256 digest.
const TokenHashSize = 32

// NormalizeEmail returns email in the form stores keep and compare it in
// (lower-case). Backends apply it on every write and lookup.
func NormalizeEmail(email string) string { return strings.ToLower(email) }

// NormalizeRoles returns roles sorted and without duplicates, or nil when
// there are none, which is the form stores keep and return. It does not
// modify its argument.
func NormalizeRoles(roles []string) []string {
	if len(roles) == 0 {
		return nil
	}
	out := slices.Clone(roles)
	slices.Sort(out)
	return slices.Compact(out)
}

// NormalizeTime returns t as stores return it: truncated to the microsecond,
// in UTC, without a monotonic clock reading. The zero time stays zero.
func NormalizeTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMicro(t.UnixMicro()).UTC()
}

// User is a human: an agent owner or an approver. It comes from the identity
// provider (SCIM) or is created locally.
type User struct {
	ID        string // opaque, unique
	Email     string // unique, compared case-insensitively (stored lower-case)
	Name      string
	Roles     []string // sorted, unique; e.g. "finance-manager", "admin"
	Active    bool
	Source    string // "local" or "scim"
	CreatedAt time.Time
	UpdatedAt time.Time
	// ExternalID is the identity provider's id for the user (SCIM
	// externalId); "" when none.
	ExternalID string
	// DeletedAt is when the identity provider deleted the user (SCIM
	// DELETE); zero while not deleted. A deleted user is inactive and
	// stays stored so that the agents it owned and the audit history keep
	// naming it.
	DeletedAt time.Time
}

// AgentState is the lifecycle state of an agent.
type AgentState string

// Agent states.
const (
	AgentActive         AgentState = "active"
	AgentSuspended      AgentState = "suspended"
	AgentOrphaned       AgentState = "orphaned"
	AgentDecommissioned AgentState = "decommissioned"
)

// Valid reports whether s is one of the four states.
func (s AgentState) Valid() bool {
	switch s {
	case AgentActive, AgentSuspended, AgentOrphaned, AgentDecommissioned:
		return true
	}
	return false
}

// Agent is a registered non-human caller, always tied to a human owner.
type Agent struct {
	ID         string // chosen by the operator, unique: [a-zA-Z0-9._-]{1,64}
	Name       string
	OwnerID    string // User.ID; must exist
	Department string
	Purpose    string
	State      AgentState
	// AllowedUpstreams names the upstreams the agent may call; empty
	// means every upstream. Names are kept as given (the registry sorts
	// and deduplicates them); none may be empty.
	AllowedUpstreams []string
	// CreatedBy says who registered the agent (e.g. "cli:alice",
	// "api:ops-token"); "" when unknown.
	CreatedBy string
	CreatedAt time.Time
	UpdatedAt time.Time
	// StateChangedAt, StateChangedBy and StateReason say when the agent
	// last moved to its State, who moved it (e.g. "cli:alice", "scim") and
	// why; zero and "" for an agent that has kept the state it was
	// created in. The whole history is in the audit log.
	StateChangedAt time.Time
	StateChangedBy string
	StateReason    string
}

// AgentToken is one bearer credential of an agent. Only the SHA-256 hash of
// the token is stored; the token itself is shown once at creation.
type AgentToken struct {
	ID         string // opaque, unique
	AgentID    string // Agent.ID; must exist
	Hash       []byte // sha256(token), 32 bytes, unique
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: never expires
	RevokedAt  time.Time // zero: not revoked
	LastUsedAt time.Time // zero: never used
}

// Principal is what one authenticated agent token resolves to: the token, its
// agent and the agent's owner, read together in one round trip.
type Principal struct {
	Token AgentToken
	Agent Agent
	Owner User
}

// Store is the one storage interface. Implementations are safe for concurrent
// use. Update methods take an updater function that runs inside a
// transaction on the current record; the updater changes fields on the value
// it receives and returns it (or an error, which aborts the update and is
// returned unchanged). Identity fields (ID, CreatedAt) cannot be changed by
// an updater: whatever it sets there is ignored. The updater may be called
// more than once (a backend may retry a conflicting transaction), so it must
// depend only on the value it receives.
//
// Contract shared by all backends (checked by storetest.Run):
//   - Times are stored to the microsecond and returned in UTC (see
//     NormalizeTime); a zero time round-trips as zero.
//   - Emails are stored lower-case and looked up case-insensitively (see
//     NormalizeEmail); roles are returned sorted and unique, nil when empty
//     (see NormalizeRoles).
//   - Create and Update return ErrAlreadyExists for a duplicate ID, user
//     email or token hash, and ErrInvalid for a record with an empty ID or
//     email, an agent whose owner does not exist or whose State is not
//     Valid, a token whose agent does not exist or whose Hash is not
//     TokenHashSize bytes long.
//   - RevokeAgentToken and TouchAgentToken with a zero time, and
//     PutMetaIfAbsent with an empty key, return ErrInvalid.
//   - Get, Update, Revoke, Touch, LookupPrincipal and GetMeta return
//     ErrNotFound for a record that does not exist. ListAgentTokens of an
//     unknown agent returns an empty list.
//   - Returned errors wrap the sentinels (errors.Is), except that an
//     updater's own error is returned as it is.
type Store interface {
	// Users.
	CreateUser(ctx context.Context, u User) error
	GetUser(ctx context.Context, id string) (User, error)
	GetUserByEmail(ctx context.Context, email string) (User, error)
	ListUsers(ctx context.Context) ([]User, error) // ordered by email
	UpdateUser(ctx context.Context, id string, update func(User) (User, error)) (User, error)

	// Agents.
	CreateAgent(ctx context.Context, a Agent) error
	GetAgent(ctx context.Context, id string) (Agent, error)
	ListAgents(ctx context.Context) ([]Agent, error) // ordered by id
	UpdateAgent(ctx context.Context, id string, update func(Agent) (Agent, error)) (Agent, error)

	// Agent tokens.
	CreateAgentToken(ctx context.Context, t AgentToken) error
	ListAgentTokens(ctx context.Context, agentID string) ([]AgentToken, error) // ordered by creation
	// RevokeAgentToken sets RevokedAt (once; revoking twice keeps the first time).
	RevokeAgentToken(ctx context.Context, id string, at time.Time) error
	// TouchAgentToken records a use; it never moves LastUsedAt backwards.
	TouchAgentToken(ctx context.Context, id string, at time.Time) error
	// LookupPrincipal resolves a token hash to its token, agent and owner in
	// one round trip. ErrNotFound when no token has that hash. Revoked or
	// expired tokens are returned as they are: the caller judges them.
	LookupPrincipal(ctx context.Context, tokenHash []byte) (Principal, error)

	// Generation is a counter that grows whenever a user, agent or agent
	// token changes (in the same transaction as the change). Caches of
	// principals compare it to know when they are stale. Every successful
	// CreateUser, UpdateUser, CreateAgent, UpdateAgent, CreateAgentToken and
	// RevokeAgentToken makes it grow; reads do not. TouchAgentToken and the
	// Meta methods do not either: LastUsedAt is bookkeeping that no cache
	// decision depends on, and bumping on every (coalesced) touch would
	// empty every principal cache in every replica all the time. Nor do
	// the ApprovalStore and PasskeyStore methods: approvals, votes,
	// passkeys and enrollments are not part of any principal.
	Generation(ctx context.Context) (int64, error)

	// Meta is a small key-value area for installation-wide values such as the
	// relay's session key. PutMetaIfAbsent stores value under key unless the
	// key exists, and returns the value that is stored afterwards, so that
	// concurrent callers (and replicas) agree on one value. A nil value is
	// stored as an empty one; an empty key is ErrInvalid; GetMeta of a
	// missing key is ErrNotFound.
	GetMeta(ctx context.Context, key string) ([]byte, error)
	PutMetaIfAbsent(ctx context.Context, key string, value []byte) ([]byte, error)

	AuditStore
	CredentialStore
	ApprovalStore
	PasskeyStore
	PushStore

	// Ping checks that the store answers (readiness).
	Ping(ctx context.Context) error
	Close() error
}

// ---- audit chain ----

// AuditEvent is one record of the tamper-evident audit chain. Seq numbers
// are contiguous from 1; each event carries the hash of the one before it
// (PrevHash; 32 zero bytes for Seq 1) and its own Hash, both computed by the
// audit package over a canonical encoding. The store keeps them as given.
type AuditEvent struct {
	Seq      int64
	Time     time.Time
	Type     string // "decision", "forwarded", "result", ...
	CallID   string // groups the events of one call ("" when none)
	AgentID  string // "" when none
	Data     []byte // canonical JSON object (the event body)
	PrevHash []byte
	Hash     []byte
	// Credential, when set, is a credential record inserted in the same
	// transaction as the event (so an issued credential and the decision
	// that names it are committed together, or neither is). It is not part
	// of the hashed event (the event's Data names it) and is not read back
	// by ListAudit. Its StatusIndex may be -1: the backend then picks a
	// random free index in [0, IndexRange) of its StatusList within the
	// transaction (retrying, up to MaxIndexTries times, an index that is
	// taken) and, once the transaction is committed, writes the chosen
	// index into the record. A credential the store refuses (ErrInvalid as
	// CreateCredential would; ErrAlreadyExists for a taken ID or, with a
	// fixed StatusIndex, a taken index) fails the whole append: nothing is
	// written.
	Credential *Credential
}

// MaxIndexTries is how many random status indexes AppendAudit tries for a
// credential with StatusIndex -1 before it gives up (ErrAlreadyExists).
const MaxIndexTries = 64

// AuditHead is the end of the chain: the last Seq and its Hash (0 and 32
// zero bytes for an empty chain).
type AuditHead struct {
	Seq  int64
	Hash []byte
}

// AuditFilter selects audit events for reading. Zero fields select all.
type AuditFilter struct {
	AfterSeq int64     // events with Seq > AfterSeq
	Since    time.Time // events with Time >= Since
	AgentID  string
	Types    []string
	Limit    int // at most this many (0: no limit), in Seq order
}

// Checkpoint is a signed statement of the chain head at Seq.
type Checkpoint struct {
	Seq       int64
	Hash      []byte // the Hash of event Seq
	Time      time.Time
	KeyID     string
	Signature []byte
}

// BudgetEntry is one amount charged to a budget key at a time.
type BudgetEntry struct {
	Key    string // budget id and scope, e.g. "daily-spend/agent/procurement-bot"
	Time   time.Time
	Amount float64
	CallID string
}

// AuditStore is the audit and budget part of the store (Store embeds it).
type AuditStore interface {
	// AppendAudit appends to the chain atomically: within one write
	// transaction that serialises every appender (one writer on SQLite, a
	// row lock on the head in PostgreSQL), it reads the head, calls build
	// with it, checks that the events build returns continue the chain
	// (Seq = head.Seq+1, +2, ... and the first PrevHash = head.Hash), and
	// inserts them, with the credential records they carry
	// (AuditEvent.Credential). An error from build aborts and is returned
	// as is.
	// Events that do not continue the chain are ErrInvalid and nothing is
	// written: a Seq out of line, a first PrevHash other than head.Hash, a
	// PrevHash other than the Hash of the event before it in the batch, a
	// Hash that is not 32 bytes, or an empty Type. An empty batch writes
	// nothing and is not an error. build may be called more than once (a
	// backend may retry), so it must depend only on the head it receives.
	AppendAudit(ctx context.Context, build func(head AuditHead) ([]AuditEvent, error)) error
	AuditHead(ctx context.Context) (AuditHead, error)
	// ListAudit returns events in Seq order.
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)
	// PutCheckpoint stores c as it is: ErrAlreadyExists if a checkpoint at
	// c.Seq exists; ErrInvalid for a Seq below 1, a Hash that is not 32
	// bytes, an empty KeyID or an empty Signature. It does not check c
	// against the chain (the audit package's Verify does).
	PutCheckpoint(ctx context.Context, c Checkpoint) error
	// ListCheckpoints returns checkpoints in Seq order.
	ListCheckpoints(ctx context.Context) ([]Checkpoint, error)

	// ChargeBudget adds e.Amount to key e.Key if the sum of the key's
	// entries with Time > since, plus e.Amount, stays within limit; it
	// returns that sum (with e.Amount when charged) and whether it charged.
	// Check and charge are one atomic step, so concurrent callers (and
	// replicas) can never overrun the limit together. A negative Amount is
	// a refund (the gate takes back a charge for a call that did not go
	// ahead, under an infinite limit). An entry with an empty Key, a zero
	// Time, or an Amount that is NaN or infinite, and a NaN limit, are
	// ErrInvalid.
	ChargeBudget(ctx context.Context, e BudgetEntry, since time.Time, limit float64) (total float64, charged bool, err error)
	// BudgetTotals returns, for each key, the sum of its entries with
	// Time > since (0 for keys without entries).
	BudgetTotals(ctx context.Context, keys []string, since time.Time) (map[string]float64, error)
	// PruneBudget deletes entries with Time <= before.
	PruneBudget(ctx context.Context, before time.Time) error
}

// ---- credentials (keys, issued action credentials, status lists) ----

// ErrSpent: a credential was already used up, revoked or expired when
// someone tried to consume it.
var ErrSpent = errors.New("store: credential already used, revoked or expired")

// SigningKey is one credential-signing key. The private key is stored
// sealed (encrypted by the credential package with the key-encryption
// key); the store keeps the bytes as given.
type SigningKey struct {
	ID        string // the JWS kid; unique
	Alg       string // "EdDSA" or "ES256"
	PublicJWK []byte // the public key as a JWK (JSON)
	Sealed    []byte // the private key, encrypted
	CreatedAt time.Time
	// RetiredAt is when a newer key took over (zero while current).
	// PublishUntil is when the public key may stop being published: every
	// credential it signed has expired by then (zero while current).
	RetiredAt    time.Time
	PublishUntil time.Time
}

// Credential is the record of one issued action credential (not the JWT).
type Credential struct {
	ID           string // the VC id and JWT jti; unique
	AgentID      string
	DecisionID   string
	Upstream     string
	Tool         string
	ArgsDigest   string // hex SHA-256 of the RFC 8785 canonical arguments
	KeyID        string
	StatusList   string // status list id
	StatusIndex  int    // index in that list; (StatusList, StatusIndex) is unique
	IssuedAt     time.Time
	ExpiresAt    time.Time
	Uses         int       // uses allowed (1: single use)
	Used         int       // uses consumed
	ConsumedAt   time.Time // last use (zero: never used)
	RevokedAt    time.Time // zero: not revoked
	RevokeReason string
	// IndexRange is read only when StatusIndex is -1 on a credential
	// appended with an audit event (AuditEvent.Credential): the backend
	// then picks the index in [0, IndexRange) (the size of the status
	// list). It is not stored: records read back have 0.
	IndexRange int
}

// CredentialFilter selects credentials. Zero fields select all.
type CredentialFilter struct {
	AgentID string
	Live    bool // only not revoked, not used up and not expired at Now
	// Unexpired: only not revoked and not expired at Now, used up or not
	// (a used credential can still be shown to a tool: the kill switch
	// revokes these).
	Unexpired bool
	Now       time.Time // for Live and Unexpired
	Limit     int
}

// CredentialStore is the credential part of the store (Store embeds it).
type CredentialStore interface {
	PutSigningKey(ctx context.Context, k SigningKey) error
	// ListSigningKeys returns every key, newest first.
	ListSigningKeys(ctx context.Context) ([]SigningKey, error)
	// RetireSigningKey sets RetiredAt and PublishUntil of key id.
	RetireSigningKey(ctx context.Context, id string, at, publishUntil time.Time) error

	// CreateCredential records an issued credential. ErrAlreadyExists when
	// its ID, or its (StatusList, StatusIndex), is taken (the caller picks
	// another random index and tries again).
	CreateCredential(ctx context.Context, c Credential) error
	GetCredential(ctx context.Context, id string) (Credential, error)
	// ListCredentials returns credentials newest first.
	ListCredentials(ctx context.Context, f CredentialFilter) ([]Credential, error)
	// ConsumeCredential uses the credential once, atomically: ErrSpent if it
	// is revoked, expired at `at`, or has no use left (so a replay is
	// refused even by another replica); ErrNotFound if unknown. It returns
	// the record after the use.
	ConsumeCredential(ctx context.Context, id string, at time.Time) (Credential, error)
	// RevokeCredential marks it revoked (once; revoking again keeps the
	// first time and reason) and returns the record.
	RevokeCredential(ctx context.Context, id string, at time.Time, reason string) (Credential, error)
	// CountStatusIndexes is how many indexes of list are allocated.
	CountStatusIndexes(ctx context.Context, list string) (int, error)
	// RevokedStatusIndexes lists the indexes of revoked credentials in list.
	RevokedStatusIndexes(ctx context.Context, list string) ([]int, error)
}

// ---- human approvals ----

// ErrNotPending: an approval was asked to change (a vote, an expiry, a
// cancellation) when it is no longer pending: it was decided, expired or
// cancelled, or its ExpiresAt has passed. The error's message names the
// state it is in.
var ErrNotPending = errors.New("store: approval is not pending")

// ApprovalState is the lifecycle state of an approval. It starts pending
// and moves once to one of the other four, which are final.
type ApprovalState string

// Approval states.
const (
	ApprovalPending   ApprovalState = "pending"
	ApprovalApproved  ApprovalState = "approved"
	ApprovalDenied    ApprovalState = "denied"
	ApprovalExpired   ApprovalState = "expired"
	ApprovalCancelled ApprovalState = "cancelled"
)

// Valid reports whether s is one of the five states.
func (s ApprovalState) Valid() bool {
	switch s {
	case ApprovalPending, ApprovalApproved, ApprovalDenied, ApprovalExpired, ApprovalCancelled:
		return true
	}
	return false
}

// ApprovalTimeoutReason is the Reason ExpireApprovals gives the approvals
// it expires.
const ApprovalTimeoutReason = "nobody answered in time"

// Approval is one request for human approval of one agent tool call (a call
// the policy marks "approve"). The store keeps it as given, with the votes
// cast on it; it does not judge who may vote (the approval package checks
// a voter against Approvers and SeparationOfDuties before VoteApproval).
type Approval struct {
	ID         string // opaque, unique
	AgentID    string // Agent.ID; must exist
	OwnerID    string // the agent's owner's User.ID when the approval was created
	DecisionID string // the gate's decision that asked for it
	Upstream   string
	Tool       string
	ArgsDigest string // hex SHA-256 of the canonical arguments
	// Arguments is the JSON object the approver is shown (the caller may
	// have redacted it). Kept as given.
	Arguments []byte
	Rule      string // the policy rule that asked for approval
	// Approvers are the requirement terms ("owner", "role:R",
	// "user:EMAIL"), kept in the order given; nil when empty.
	Approvers          []string
	Quorum             int // approve votes needed; at least 1
	SeparationOfDuties bool
	BindingMessage     string
	RiskScore          int
	Source             string // "mcp" or "ciba"
	// ClientData is opaque JSON the creator keeps with the approval (for
	// example a CIBA delivery mode and notification endpoint). May be nil.
	ClientData []byte
	State      ApprovalState
	CreatedAt  time.Time
	ExpiresAt  time.Time // required: a pending approval always expires
	DecidedAt  time.Time // when it left pending; zero while pending
	// Reason is why it was denied (the approver's reason), expired or
	// cancelled; empty otherwise.
	Reason string
	Votes  []ApprovalVote // in the order cast; nil when none
}

// ApprovalVote is one approver's vote on an approval.
type ApprovalVote struct {
	UserID   string // the voter's User.ID; one vote per user and approval
	Email    string // stored lower-case (NormalizeEmail)
	Approve  bool   // false: deny
	Reason   string
	Method   string // how the voter proved presence, e.g. "webauthn-uv"
	Evidence []byte // JSON kept as evidence (the WebAuthn assertion); may be nil
	At       time.Time
}

// ApprovalFilter selects approvals. Zero fields select all.
type ApprovalFilter struct {
	State   ApprovalState
	AgentID string
	Limit   int // at most this many (0: no limit), newest first
}

// ApprovalStore is the human-approval part of the store (Store embeds it).
// None of its methods bumps the Generation. Every method that returns
// several approvals returns them newest (CreatedAt, then ID) first, each
// with its votes. A zero time passed to VoteApproval, FinishApproval,
// ExpireApprovals or CancelAgentApprovals is ErrInvalid.
type ApprovalStore interface {
	// CreateApproval stores a new pending approval. ErrAlreadyExists for a
	// duplicate ID; ErrInvalid for an empty ID or AgentID, an agent that
	// does not exist, a Quorum below 1, a State other than pending, a zero
	// ExpiresAt, a non-zero DecidedAt or any Votes.
	CreateApproval(ctx context.Context, a Approval) error
	// GetApproval returns the approval with its votes; ErrNotFound if none.
	GetApproval(ctx context.Context, id string) (Approval, error)
	ListApprovals(ctx context.Context, f ApprovalFilter) ([]Approval, error)
	// FindPendingApproval returns the pending approval, not yet expired at
	// now (ExpiresAt > now), for exactly this agent, upstream, tool and
	// arguments digest (the newest if several), so that a retried call
	// joins it; ErrNotFound if there is none.
	FindPendingApproval(ctx context.Context, agentID, upstream, tool, argsDigest string, now time.Time) (Approval, error)
	// VoteApproval records v on approval id atomically (one transaction;
	// concurrent voters, in any replicas, are serialised on the approval)
	// and returns the approval after the vote. A deny vote moves it to
	// denied (Reason = v.Reason, DecidedAt = v.At); an approve vote that
	// brings the approve votes to Quorum moves it to approved (DecidedAt =
	// v.At). ErrNotFound for an unknown id; ErrNotPending when it is not
	// pending or its ExpiresAt <= v.At, with the approval as it is and
	// unchanged; ErrAlreadyExists when v.UserID has voted on it already;
	// ErrInvalid for an empty v.UserID.
	VoteApproval(ctx context.Context, id string, v ApprovalVote) (Approval, error)
	// FinishApproval moves a pending approval to state, which must be
	// expired or cancelled (else ErrInvalid), with reason, at `at`, and
	// returns it. ErrNotFound for an unknown id; ErrNotPending when it is
	// not pending, with the approval as it is and unchanged. It does not
	// look at ExpiresAt.
	FinishApproval(ctx context.Context, id string, state ApprovalState, reason string, at time.Time) (Approval, error)
	// ExpireApprovals moves every pending approval whose ExpiresAt <= now
	// to expired (Reason ApprovalTimeoutReason, DecidedAt now) and returns
	// them. Of concurrent callers each approval is returned by one.
	ExpireApprovals(ctx context.Context, now time.Time) ([]Approval, error)
	// CancelAgentApprovals moves every pending approval of the given
	// agents to cancelled (Reason reason, DecidedAt at), expired or not
	// (the kill switch), and returns them. No agents is no change.
	CancelAgentApprovals(ctx context.Context, agentIDs []string, reason string, at time.Time) ([]Approval, error)
}

// ---- approver passkeys and their enrollment ----

// ErrEnrollmentUsed: an enrollment was already used or has expired when
// someone tried to use it.
var ErrEnrollmentUsed = errors.New("store: enrollment already used or expired")

// Passkey is one WebAuthn credential of a user (an approver).
type Passkey struct {
	ID         []byte // the WebAuthn credential id; unique
	UserID     string // User.ID; must exist
	PublicKey  []byte // COSE key
	SignCount  uint32
	AAGUID     []byte
	Transports []string // kept in the order given; nil when empty
	Flags      uint8    // authenticator flags as go-webauthn keeps them (opaque here)
	Name       string
	CreatedAt  time.Time
	LastUsedAt time.Time // zero: never used
}

// Enrollment is a one-time invitation for a user to register a passkey.
// Only the SHA-256 hash of its token is stored.
type Enrollment struct {
	TokenHash []byte // sha256(token), TokenHashSize bytes, unique
	UserID    string // User.ID; must exist
	CreatedBy string // who made it (a user id, or a system name)
	CreatedAt time.Time
	ExpiresAt time.Time // required
	UsedAt    time.Time // zero: not used
}

// PasskeyStore is the approver-passkey part of the store (Store embeds
// it). None of its methods bumps the Generation.
type PasskeyStore interface {
	// CreatePasskey stores p. ErrAlreadyExists for a duplicate ID;
	// ErrInvalid for an empty ID, UserID or PublicKey, or a user that does
	// not exist.
	CreatePasskey(ctx context.Context, p Passkey) error
	// ListPasskeys returns the user's passkeys in CreatedAt (then ID)
	// order; empty for an unknown user.
	ListPasskeys(ctx context.Context, userID string) ([]Passkey, error)
	// GetPasskey returns the passkey with credential id id; ErrNotFound if
	// none.
	GetPasskey(ctx context.Context, id []byte) (Passkey, error)
	// UpdatePasskeyUse records a use: it sets SignCount and LastUsedAt in
	// one conditional statement, but only when signCount is above the
	// stored count or both are 0 (an authenticator without a counter);
	// otherwise the passkey may be cloned and it is ErrInvalid, with
	// nothing changed. ErrNotFound for an unknown id; ErrInvalid for a zero
	// at.
	UpdatePasskeyUse(ctx context.Context, id []byte, signCount uint32, at time.Time) error
	// DeletePasskey removes it; ErrNotFound if none.
	DeletePasskey(ctx context.Context, id []byte) error

	// CreateEnrollment stores e. ErrAlreadyExists for a duplicate
	// TokenHash; ErrInvalid for a TokenHash that is not TokenHashSize bytes,
	// an empty UserID or one that does not exist, or a zero ExpiresAt.
	CreateEnrollment(ctx context.Context, e Enrollment) error
	// UseEnrollment marks the enrollment with tokenHash used at `at`
	// atomically (of concurrent users, in any replicas, one succeeds) and
	// returns it after the use. ErrNotFound if none has that hash;
	// ErrEnrollmentUsed if it was used already or is expired at `at`
	// (ExpiresAt <= at); ErrInvalid for a zero at.
	UseEnrollment(ctx context.Context, tokenHash []byte, at time.Time) (Enrollment, error)
}
