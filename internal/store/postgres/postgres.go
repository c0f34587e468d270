// Package postgres provides the shared store backend: store.Store on a
// PostgreSQL database through pgx and its connection pool, for several
// interlock replicas that share one database. The schema is the SQLite
// backend's, spelled in PostgreSQL's dialect, created and upgraded by the
// same numbered migrations, each in its own transaction under an advisory
// lock so that replicas starting together apply each one once.
//
// Transactions run at READ COMMITTED. Where SQLite serialises every writer,
// this backend serialises only what must be: read-modify-write updates lock
// their row (SELECT ... FOR UPDATE), the audit chain's appenders take a
// transaction-level advisory lock on the chain before they read its head,
// budget charges take one on their key, and a credential is consumed by one
// conditional UPDATE. A transaction that PostgreSQL aborts as a deadlock
// victim is retried; that is why updaters may be called more than once.
//
// It must not leak SQL or driver types to its callers: they use it through
// store.Store, its records and its sentinel errors. It must not read the
// clock for record timestamps (callers set them); Options.Now only stamps
// applied migrations.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/interlock-dev/interlock/internal/store"
)

// Options configures Open.
type Options struct {
	// DSN is the database URL or key=value connection string, for example
	// "postgres://interlock@db.internal:5432/interlock?sslmode=verify-full".
	DSN string
	// Schema, when set, is the schema the store keeps its tables in: Open
	// creates it if missing and puts only it on every connection's
	// search_path (tests give each store its own). It must be a plain
	// identifier ([A-Za-z_][A-Za-z0-9_]*, at most 63 bytes). Empty means the
	// connection's search_path as the DSN or the server sets it (usually
	// "public").
	Schema string
	// MaxConns caps the pool's connections. 0 means pgxpool's default (the
	// larger of 4 and the number of CPUs), or pool_max_conns from the DSN.
	MaxConns int32
	// ConnectTimeout bounds each connection attempt and Open's first
	// contact with the server, so that an unreachable database is an error
	// naming the host rather than a hang. 0 means connect_timeout from the
	// DSN, else 5 seconds.
	ConnectTimeout time.Duration
	// Logger receives migration and lifecycle messages. nil means
	// slog.Default().
	Logger *slog.Logger
	// Now stamps applied migrations. nil means time.Now.
	Now func() time.Time
}

// defaultConnectTimeout is Options.ConnectTimeout's default.
const defaultConnectTimeout = 5 * time.Second

// maxTxAttempts is how many times a transaction that PostgreSQL aborted as
// a deadlock victim or a serialisation failure is tried in all.
const maxTxAttempts = 5

// schemaName is what Options.Schema may be: a plain identifier that needs
// no quoting rules beyond pgx.Identifier's.
var schemaName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// Store is store.Store on PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	log    *slog.Logger
	now    func() time.Time
	host   string // host:port, for messages
	schema string // the schema the tables are in

	// Advisory lock keys, derived from the schema so that stores in
	// different schemas of one database do not wait for each other.
	migrateLock int64
	auditLock   int64

	changes changes // LISTEN/NOTIFY (changes.go)
}

var _ store.Store = (*Store)(nil)

// Open connects to the database, brings its schema up to date and returns
// the store. The caller must Close it.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.DSN == "" {
		return nil, errors.New("postgres: Options.DSN is empty")
	}
	if opts.Schema != "" && !schemaName.MatchString(opts.Schema) {
		return nil, fmt.Errorf("postgres: Options.Schema %q is not a plain identifier", opts.Schema)
	}
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		// pgx redacts any password from the message.
		return nil, fmt.Errorf("postgres: parse DSN: %w", err)
	}
	s := &Store{log: opts.Logger, now: opts.Now, schema: opts.Schema}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.host = net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))

	timeout := opts.ConnectTimeout
	if timeout <= 0 {
		timeout = cfg.ConnConfig.ConnectTimeout
	}
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	cfg.ConnConfig.ConnectTimeout = timeout // fallback hosts share it
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.Schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{opts.Schema}.Sanitize()
	}

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open pool for %s: %w", s.host, err)
	}
	s.pool = pool
	if err := s.open(ctx, timeout); err != nil {
		s.pool.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) open(ctx context.Context, timeout time.Duration) error {
	// The first contact is bounded: a server that is down, or a host that
	// swallows packets, fails Open instead of hanging it.
	pctx, cancel := context.WithTimeout(ctx, timeout)
	err := s.pool.Ping(pctx)
	timedOut := errors.Is(pctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	if err != nil {
		if timedOut {
			return fmt.Errorf("postgres: connect to %s: no answer within %v: %w", s.host, timeout, err)
		}
		return fmt.Errorf("postgres: connect to %s: %w", s.host, err)
	}
	if s.schema == "" {
		var cur *string
		if err := s.pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&cur); err != nil {
			return fmt.Errorf("postgres: %s: read current schema: %w", s.host, err)
		}
		if cur == nil {
			return fmt.Errorf("postgres: %s: no schema on the search_path exists: create one or set Options.Schema", s.host)
		}
		s.schema = *cur
	}
	s.migrateLock = lockKey(s.schema, "migrate")
	s.auditLock = lockKey(s.schema, "audit")
	if _, err := s.migrate(ctx); err != nil {
		return err
	}
	s.log.Debug("store opened", "host", s.host, "schema", s.schema)
	return nil
}

// lockKey is the advisory lock key of what in schema: a 64-bit FNV-1a hash
// (a collision only makes two unrelated things wait for each other).
func lockKey(schema, what string) int64 {
	h := fnv.New64a()
	h.Write([]byte("interlock\x00"))
	h.Write([]byte(schema))
	h.Write([]byte{0})
	h.Write([]byte(what))
	return int64(h.Sum64())
}

// Close closes the pool. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeChanges()
	if s.pool != nil {
		s.pool.Close()
	}
	return nil
}

// Ping checks that the database answers and the schema is readable.
func (s *Store) Ping(ctx context.Context) error {
	var n int64
	if err := s.pool.QueryRow(ctx, genSQL).Scan(&n); err != nil {
		return fmt.Errorf("postgres: ping %s: %w", s.host, err)
	}
	return nil
}

// inTx runs fn in one transaction and commits it if fn returns nil. fn's
// error is returned as it is. A transaction PostgreSQL aborted as a
// deadlock victim or for a serialisation failure is run again (fn too).
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.tryTx(ctx, fn)
		if err == nil || attempt == maxTxAttempts || !retryable(err) {
			return err
		}
		s.log.Debug("retrying store transaction", "attempt", attempt, "err", err)
	}
}

func (s *Store) tryTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// Also on panic. After Commit it is a no-op (pgx.ErrTxClosed).
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// SQLSTATE codes the store acts on.
const (
	codeUniqueViolation      = "23505"
	codeForeignKeyViolation  = "23503"
	codeCheckViolation       = "23514"
	codeNotNullViolation     = "23502"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
	codeNumericOutOfRange    = "22003"
	codeCharNotInRepertoire  = "22021" // e.g. a NUL or invalid UTF-8 in text
	codeUntranslatableChar   = "22P05"
)

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func retryable(err error) bool {
	switch pgCode(err) {
	case codeSerializationFailure, codeDeadlockDetected:
		return true
	}
	return false
}

// mapErr turns constraint violations into the store's sentinel errors,
// keeping the driver's error in the chain for its message. Values
// PostgreSQL cannot keep (text with a NUL byte or invalid UTF-8, a number
// out of its column's range) are ErrInvalid too.
func mapErr(err error) error {
	switch pgCode(err) {
	case codeUniqueViolation:
		return fmt.Errorf("%w: %w", store.ErrAlreadyExists, err)
	case codeForeignKeyViolation, codeCheckViolation, codeNotNullViolation,
		codeNumericOutOfRange, codeCharNotInRepertoire, codeUntranslatableChar:
		return fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	return err
}

// notFound maps pgx.ErrNoRows to store.ErrNotFound. A key PostgreSQL
// refuses as text (a NUL byte or invalid UTF-8) cannot name a stored
// record either, so it is ErrNotFound too, as on SQLite; other errors go
// through mapErr.
func notFound(err error, what string) error {
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%w: %s", store.ErrNotFound, what)
	case pgCode(err) == codeCharNotInRepertoire || pgCode(err) == codeUntranslatableChar:
		return fmt.Errorf("%w: %s: %w", store.ErrNotFound, what, err)
	}
	return mapErr(err)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", store.ErrInvalid, fmt.Sprintf(format, args...))
}

// Timestamps are unix microseconds in UTC; NULL is the zero time.

func micros(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	us := t.UnixMicro()
	return &us
}

func fromMicros(p *int64) time.Time {
	if p == nil {
		return time.Time{}
	}
	return time.UnixMicro(*p).UTC()
}

// Roles are a JSON array of strings, "[]" when empty.

func boolInt(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

// bump advances the generation counter inside the mutation's transaction.
// It is each mutation's last statement, so the row lock it takes is held
// only until the commit that follows and never waited on by a transaction
// that holds it.
func bump(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `UPDATE generation SET value = value + 1 WHERE id = 1`); err != nil {
		return fmt.Errorf("bump generation: %w", err)
	}
	// Delivered at commit, with the change: every replica's principal
	// cache hears at once (store.TopicPrincipals; channel as in changes.go).
	if _, err := tx.Exec(ctx, `SELECT pg_notify('interlock_`+store.TopicPrincipals+`_' || left(md5(current_schema()), 8), '')`); err != nil {
		return fmt.Errorf("notify principals: %w", err)
	}
	return nil
}

// ---- users ----

const userCols = `id, email, name, roles, active, source, created_at, updated_at, external_id, deleted_at`

// userScan holds the raw columns of a user row.
type userScan struct {
	u                store.User
	roles            string
	active           int32
	created, updated *int64
	deleted          *int64
}

func (x *userScan) dest() []any {
	return []any{&x.u.ID, &x.u.Email, &x.u.Name, &x.roles, &x.active, &x.u.Source, &x.created, &x.updated,
		&x.u.ExternalID, &x.deleted}
}

func (x *userScan) user() (store.User, error) {
	u := x.u
	roles, err := store.DecodeRoles(x.roles)
	if err != nil {
		return store.User{}, fmt.Errorf("user %q: %w", u.ID, err)
	}
	u.Roles = roles
	u.Active = x.active != 0
	u.CreatedAt = fromMicros(x.created)
	u.UpdatedAt = fromMicros(x.updated)
	u.DeletedAt = fromMicros(x.deleted)
	return u, nil
}

func scanUser(row pgx.Row) (store.User, error) {
	var x userScan
	if err := row.Scan(x.dest()...); err != nil {
		return store.User{}, err
	}
	return x.user()
}

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	u = store.NormalizeUser(u)
	if err := store.CheckUser(u); err != nil {
		return fmt.Errorf("postgres: create user: %w", err)
	}
	roles, err := store.EncodeList(u.Roles)
	if err != nil {
		return fmt.Errorf("postgres: create user %q: %w", u.ID, err)
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO users (`+userCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			u.ID, u.Email, u.Name, roles, boolInt(u.Active), u.Source, micros(u.CreatedAt), micros(u.UpdatedAt),
			u.ExternalID, micros(u.DeletedAt)); err != nil {
			return mapErr(err)
		}
		return bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("postgres: create user %q: %w", u.ID, err)
	}
	return nil
}

// GetUser implements store.Store.
func (s *Store) GetUser(ctx context.Context, id string) (store.User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE id = $1`, id))
	if err != nil {
		return store.User{}, fmt.Errorf("postgres: get user %q: %w", id, notFound(err, "user"))
	}
	return u, nil
}

// GetUserByEmail implements store.Store.
func (s *Store) GetUserByEmail(ctx context.Context, email string) (store.User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE email = $1`,
		store.NormalizeEmail(email)))
	if err != nil {
		return store.User{}, fmt.Errorf("postgres: get user by email: %w", notFound(err, "user"))
	}
	return u, nil
}

// ListUsers implements store.Store.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userCols+` FROM users ORDER BY email`)
	if err != nil {
		return nil, fmt.Errorf("postgres: list users: %w", err)
	}
	defer rows.Close()
	var out []store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list users: %w", err)
	}
	return out, nil
}

// UpdateUser implements store.Store. The row stays locked from the read
// the updater sees to the write, so concurrent updates never lose one
// another.
func (s *Store) UpdateUser(ctx context.Context, id string, update func(store.User) (store.User, error)) (store.User, error) {
	var out store.User
	var updErr error
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		updErr = nil
		old, err := scanUser(tx.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return notFound(err, "user")
		}
		u, err := update(old)
		if err != nil {
			updErr = err
			return err
		}
		u.ID, u.CreatedAt = old.ID, old.CreatedAt
		u = store.NormalizeUser(u)
		if err := store.CheckUser(u); err != nil {
			return err
		}
		roles, err := store.EncodeList(u.Roles)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx,
			`UPDATE users SET email = $1, name = $2, roles = $3, active = $4, source = $5, updated_at = $6, external_id = $7, deleted_at = $8 WHERE id = $9`,
			u.Email, u.Name, roles, boolInt(u.Active), u.Source, micros(u.UpdatedAt), u.ExternalID, micros(u.DeletedAt), id); err != nil {
			return mapErr(err)
		}
		out = u
		return bump(ctx, tx)
	})
	if updErr != nil {
		return store.User{}, updErr
	}
	if err != nil {
		return store.User{}, fmt.Errorf("postgres: update user %q: %w", id, err)
	}
	return out, nil
}

// ---- agents ----

const agentCols = `id, name, owner_id, department, purpose, state, created_at, updated_at, state_changed_at, state_changed_by, state_reason, allowed_upstreams, created_by`

type agentScan struct {
	a                store.Agent
	state            string
	upstreams        string
	created, updated *int64
	changed          *int64
}

func (x *agentScan) dest() []any {
	return []any{&x.a.ID, &x.a.Name, &x.a.OwnerID, &x.a.Department, &x.a.Purpose, &x.state, &x.created, &x.updated,
		&x.changed, &x.a.StateChangedBy, &x.a.StateReason, &x.upstreams, &x.a.CreatedBy}
}

func (x *agentScan) agent() (store.Agent, error) {
	a := x.a
	a.State = store.AgentState(x.state)
	a.CreatedAt = fromMicros(x.created)
	a.UpdatedAt = fromMicros(x.updated)
	a.StateChangedAt = fromMicros(x.changed)
	ups, err := store.DecodeList(x.upstreams)
	if err != nil {
		return store.Agent{}, err
	}
	a.AllowedUpstreams = ups
	return a, nil
}

// An agent's allowed upstreams are a JSON array of strings, "[]" when
// empty (every upstream).

func scanAgent(row pgx.Row) (store.Agent, error) {
	var x agentScan
	if err := row.Scan(x.dest()...); err != nil {
		return store.Agent{}, err
	}
	return x.agent()
}

// CreateAgent implements store.Store.
func (s *Store) CreateAgent(ctx context.Context, a store.Agent) error {
	a = store.NormalizeAgent(a)
	if err := store.CheckAgent(a); err != nil {
		return fmt.Errorf("postgres: create agent: %w", err)
	}
	ups, err := store.EncodeList(a.AllowedUpstreams)
	if err != nil {
		return fmt.Errorf("postgres: create agent: %w", err)
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO agents (`+agentCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			a.ID, a.Name, a.OwnerID, a.Department, a.Purpose, string(a.State), micros(a.CreatedAt), micros(a.UpdatedAt),
			micros(a.StateChangedAt), a.StateChangedBy, a.StateReason, ups, a.CreatedBy); err != nil {
			return mapErr(err)
		}
		return bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("postgres: create agent %q: %w", a.ID, err)
	}
	return nil
}

// GetAgent implements store.Store.
func (s *Store) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	a, err := scanAgent(s.pool.QueryRow(ctx, `SELECT `+agentCols+` FROM agents WHERE id = $1`, id))
	if err != nil {
		return store.Agent{}, fmt.Errorf("postgres: get agent %q: %w", id, notFound(err, "agent"))
	}
	return a, nil
}

// ListAgents implements store.Store.
func (s *Store) ListAgents(ctx context.Context) ([]store.Agent, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+agentCols+` FROM agents ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("postgres: list agents: %w", err)
	}
	defer rows.Close()
	var out []store.Agent
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list agents: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list agents: %w", err)
	}
	return out, nil
}

// UpdateAgent implements store.Store (see UpdateUser for the locking).
func (s *Store) UpdateAgent(ctx context.Context, id string, update func(store.Agent) (store.Agent, error)) (store.Agent, error) {
	var out store.Agent
	var updErr error
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		updErr = nil
		old, err := scanAgent(tx.QueryRow(ctx, `SELECT `+agentCols+` FROM agents WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return notFound(err, "agent")
		}
		a, err := update(old)
		if err != nil {
			updErr = err
			return err
		}
		a.ID, a.CreatedAt = old.ID, old.CreatedAt
		a = store.NormalizeAgent(a)
		if err := store.CheckAgent(a); err != nil {
			return err
		}
		ups, err := store.EncodeList(a.AllowedUpstreams)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx,
			`UPDATE agents SET name = $1, owner_id = $2, department = $3, purpose = $4, state = $5, updated_at = $6, state_changed_at = $7, state_changed_by = $8, state_reason = $9, allowed_upstreams = $10, created_by = $11 WHERE id = $12`,
			a.Name, a.OwnerID, a.Department, a.Purpose, string(a.State), micros(a.UpdatedAt),
			micros(a.StateChangedAt), a.StateChangedBy, a.StateReason, ups, a.CreatedBy, id); err != nil {
			return mapErr(err)
		}
		out = a
		return bump(ctx, tx)
	})
	if updErr != nil {
		return store.Agent{}, updErr
	}
	if err != nil {
		return store.Agent{}, fmt.Errorf("postgres: update agent %q: %w", id, err)
	}
	return out, nil
}

// ---- agent tokens ----

const tokenCols = `id, agent_id, hash, created_at, expires_at, revoked_at, last_used_at`

type tokenScan struct {
	t                                  store.AgentToken
	created, expires, revoked, lastUse *int64
}

func (x *tokenScan) dest() []any {
	return []any{&x.t.ID, &x.t.AgentID, &x.t.Hash, &x.created, &x.expires, &x.revoked, &x.lastUse}
}

func (x *tokenScan) token() store.AgentToken {
	t := x.t
	t.CreatedAt = fromMicros(x.created)
	t.ExpiresAt = fromMicros(x.expires)
	t.RevokedAt = fromMicros(x.revoked)
	t.LastUsedAt = fromMicros(x.lastUse)
	return t
}

// CreateAgentToken implements store.Store.
func (s *Store) CreateAgentToken(ctx context.Context, t store.AgentToken) error {
	if err := store.CheckToken(t); err != nil {
		return fmt.Errorf("postgres: create agent token: %w", err)
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO agent_tokens (`+tokenCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			t.ID, t.AgentID, t.Hash, micros(t.CreatedAt), micros(t.ExpiresAt), micros(t.RevokedAt), micros(t.LastUsedAt)); err != nil {
			return mapErr(err)
		}
		return bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("postgres: create agent token %q: %w", t.ID, err)
	}
	return nil
}

// ListAgentTokens implements store.Store.
func (s *Store) ListAgentTokens(ctx context.Context, agentID string) ([]store.AgentToken, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+tokenCols+` FROM agent_tokens WHERE agent_id = $1 ORDER BY created_at NULLS FIRST, id`, agentID)
	if err != nil {
		return nil, fmt.Errorf("postgres: list agent tokens of %q: %w", agentID, err)
	}
	defer rows.Close()
	var out []store.AgentToken
	for rows.Next() {
		var x tokenScan
		if err := rows.Scan(x.dest()...); err != nil {
			return nil, fmt.Errorf("postgres: list agent tokens of %q: %w", agentID, err)
		}
		out = append(out, x.token())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list agent tokens of %q: %w", agentID, mapErr(err))
	}
	return out, nil
}

// querier is a pgx.Tx or the pool.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// tokenExists returns ErrNotFound unless a token with id exists.
func tokenExists(ctx context.Context, q querier, id string) error {
	var one int32
	err := q.QueryRow(ctx, `SELECT 1 FROM agent_tokens WHERE id = $1`, id).Scan(&one)
	return notFound(err, "agent token")
}

// RevokeAgentToken implements store.Store.
func (s *Store) RevokeAgentToken(ctx context.Context, id string, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("postgres: revoke agent token %q: %w", id, invalid("revocation time is zero"))
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx,
			`UPDATE agent_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL`, at.UnixMicro(), id)
		if err != nil {
			return notFound(err, "agent token")
		}
		if tag.RowsAffected() == 0 {
			if err := tokenExists(ctx, tx, id); err != nil {
				return err
			}
		}
		return bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("postgres: revoke agent token %q: %w", id, err)
	}
	return nil
}

// TouchAgentToken implements store.Store. It does not bump the generation.
// It is one statement (tokens are never deleted, so the existence check
// that tells an unknown id from a later use already recorded needs no
// transaction).
func (s *Store) TouchAgentToken(ctx context.Context, id string, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("postgres: touch agent token %q: %w", id, invalid("use time is zero"))
	}
	us := at.UnixMicro()
	tag, err := s.pool.Exec(ctx,
		`UPDATE agent_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)`,
		us, id)
	if err != nil {
		err = notFound(err, "agent token")
	} else if tag.RowsAffected() == 0 {
		err = tokenExists(ctx, s.pool, id)
	}
	if err != nil {
		return fmt.Errorf("postgres: touch agent token %q: %w", id, err)
	}
	return nil
}

const lookupPrincipalSQL = `SELECT
	t.id, t.agent_id, t.hash, t.created_at, t.expires_at, t.revoked_at, t.last_used_at,
	a.id, a.name, a.owner_id, a.department, a.purpose, a.state, a.created_at, a.updated_at,
	a.state_changed_at, a.state_changed_by, a.state_reason, a.allowed_upstreams, a.created_by,
	u.id, u.email, u.name, u.roles, u.active, u.source, u.created_at, u.updated_at,
	u.external_id, u.deleted_at
FROM agent_tokens t
JOIN agents a ON a.id = t.agent_id
JOIN users u ON u.id = a.owner_id
WHERE t.hash = $1`

// LookupPrincipal implements store.Store.
func (s *Store) LookupPrincipal(ctx context.Context, tokenHash []byte) (store.Principal, error) {
	var (
		ts tokenScan
		as agentScan
		us userScan
	)
	dest := make([]any, 0, 30)
	dest = append(dest, ts.dest()...)
	dest = append(dest, as.dest()...)
	dest = append(dest, us.dest()...)
	if err := s.pool.QueryRow(ctx, lookupPrincipalSQL, tokenHash).Scan(dest...); err != nil {
		return store.Principal{}, fmt.Errorf("postgres: lookup principal: %w", notFound(err, "agent token"))
	}
	owner, err := us.user()
	if err != nil {
		return store.Principal{}, fmt.Errorf("postgres: lookup principal: %w", err)
	}
	agent, err := as.agent()
	if err != nil {
		return store.Principal{}, fmt.Errorf("postgres: lookup principal: %w", err)
	}
	return store.Principal{Token: ts.token(), Agent: agent, Owner: owner}, nil
}

// ---- generation and meta ----

const genSQL = `SELECT value FROM generation WHERE id = 1`

// Generation implements store.Store.
func (s *Store) Generation(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, genSQL).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: read generation: %w", err)
	}
	return n, nil
}

// GetMeta implements store.Store.
func (s *Store) GetMeta(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	if err := s.pool.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, key).Scan(&v); err != nil {
		return nil, fmt.Errorf("postgres: get meta %q: %w", key, notFound(err, "meta key"))
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// PutMetaIfAbsent implements store.Store. The insert and the read are two
// statements: at READ COMMITTED the read takes a new snapshot, so it sees
// the value of a concurrent caller whose insert this one's waited for.
func (s *Store) PutMetaIfAbsent(ctx context.Context, key string, value []byte) ([]byte, error) {
	if key == "" {
		return nil, fmt.Errorf("postgres: put meta: %w", invalid("key is empty"))
	}
	if value == nil {
		value = []byte{}
	}
	var out []byte
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx,
			`INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, key, value); err != nil {
			return mapErr(err)
		}
		return tx.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, key).Scan(&out)
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: put meta %q: %w", key, err)
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}
