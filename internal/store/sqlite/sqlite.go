// Package sqlite provides the embedded store backend: store.Store on one
// SQLite database file through the pure-Go driver modernc.org/sqlite (no
// cgo). The database runs in WAL mode with one writer connection, so writes
// serialise in the process instead of fighting over the lock, and a pool of
// read-only connections that read concurrently with the writer. The schema
// is created and upgraded by numbered migrations, each in its own
// transaction.
//
// It must not leak SQL or driver types to its callers: they use it through
// store.Store, its records and its sentinel errors. It must not read the
// clock for record timestamps (callers set them); Options.Now only stamps
// applied migrations.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/interlock-dev/interlock/internal/store"
)

// Options configures Open.
type Options struct {
	// Path is the database file, created if missing. The special value
	// ":memory:" opens a private in-memory database on one connection shared
	// by readers and the writer (for tests and throwaway runs; it is lost on
	// Close).
	Path string
	// Logger receives migration and lifecycle messages. nil means
	// slog.Default().
	Logger *slog.Logger
	// Now stamps applied migrations. nil means time.Now.
	Now func() time.Time
}

// busyTimeout is how long a connection waits for another process's write
// lock before giving up with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// Store is store.Store on SQLite. It is safe for concurrent use.
type Store struct {
	w   *sql.DB // the single writer connection
	r   *sql.DB // read-only connections (the writer itself for ":memory:")
	log *slog.Logger
	now func() time.Time

	lookupStmt *sql.Stmt    // LookupPrincipal, the hot path
	genStmt    *sql.Stmt    // Generation, read by every principal cache
	insAudit   [6]*sql.Stmt // AppendAudit: 1, 2, 4, ... 32 rows, on the writer
	headW      *sql.Stmt    // the audit head, on the writer (inside AppendAudit)
	headR      *sql.Stmt    // the audit head, on the readers
	budgetSum  *sql.Stmt    // ChargeBudget's check, on the writer
	budgetAdd  *sql.Stmt    // ChargeBudget's charge, on the writer
	insCred    *sql.Stmt    // CreateCredential, on the writer (one per gated call)
	pickCred   *sql.Stmt    // AppendAudit: a credential at a random index, on the writer
	consCred   *sql.Stmt    // ConsumeCredential, on the writer (one per forwarded call)
	getCred    *sql.Stmt    // GetCredential, on the readers (credential verification)

	// head is the audit chain's head as this store's last append left it
	// (nil: unknown, read it), so that an append need not read it first.
	// Another process appending to the same file is noticed by the insert
	// of the next sequence number failing (sequence numbers are dense);
	// the head is then read again.
	head atomic.Pointer[store.AuditHead]
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at opts.Path, brings its
// schema up to date and returns the store. The caller must Close it.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Path == "" {
		return nil, errors.New("sqlite: Options.Path is empty")
	}
	s := &Store{log: opts.Logger, now: opts.Now}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.open(ctx, opts.Path); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) open(ctx context.Context, path string) error {
	memory := path == ":memory:"
	var name string
	if memory {
		name = path
	} else {
		abs, err := filepath.Abs(path)
		if err != nil {
			return fmt.Errorf("sqlite: resolve %q: %w", path, err)
		}
		// A "file:" URI so that any character in the path is taken
		// literally once escaped; the driver splits the DSN at the first
		// '?'.
		name = "file:" + strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23").Replace(abs)
	}

	w, err := sql.Open("sqlite", dsn(name, true, memory))
	if err != nil {
		return fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	s.w = w
	// One writer: database/sql queues writers in the process, and the
	// connection is never recycled (for ":memory:" that would lose the
	// database).
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	if !memory {
		var mode string
		if err := w.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
			return fmt.Errorf("sqlite: read journal mode of %q: %w", path, err)
		}
		if !strings.EqualFold(mode, "wal") {
			return fmt.Errorf("sqlite: %q: journal mode is %q, want wal (is the file system local?)", path, mode)
		}
	}
	if _, err := s.migrate(ctx); err != nil {
		return err
	}

	if memory {
		s.r = w
	} else {
		r, err := sql.Open("sqlite", dsn(name, false, false))
		if err != nil {
			return fmt.Errorf("sqlite: open readers of %q: %w", path, err)
		}
		s.r = r
		n := max(4, runtime.GOMAXPROCS(0))
		r.SetMaxOpenConns(n)
		r.SetMaxIdleConns(n)
		r.SetConnMaxLifetime(0)
		if err := r.PingContext(ctx); err != nil {
			return fmt.Errorf("sqlite: open readers of %q: %w", path, err)
		}
	}

	if s.lookupStmt, err = s.r.PrepareContext(ctx, lookupPrincipalQuery); err != nil {
		return fmt.Errorf("sqlite: prepare: %w", err)
	}
	if s.genStmt, err = s.r.PrepareContext(ctx, `SELECT value FROM generation WHERE id = 1`); err != nil {
		return fmt.Errorf("sqlite: prepare: %w", err)
	}
	if err := s.prepareAudit(ctx); err != nil {
		return err
	}
	if err := s.prepareCredentials(ctx); err != nil {
		return err
	}
	s.log.Debug("store opened", "path", path)
	return nil
}

// dsn builds the driver's data source name. The writer begins every
// transaction with BEGIN IMMEDIATE, so a read-modify-write transaction holds
// the write lock from its start and another process's writer waits
// (busy_timeout) instead of failing on a stale snapshot.
func dsn(name string, writer, memory bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	if writer {
		if !memory {
			q.Add("_pragma", "journal_mode(WAL)")
		}
		q.Set("_txlock", "immediate")
	} else {
		q.Add("_pragma", "query_only(1)")
	}
	return name + "?" + q.Encode()
}

// Close closes the database. It is safe to call more than once.
func (s *Store) Close() error {
	var errs []error
	for _, st := range append(s.insAudit[:], s.lookupStmt, s.genStmt, s.headW, s.headR, s.budgetSum, s.budgetAdd, s.insCred, s.pickCred, s.consCred, s.getCred) {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	if s.r != nil && s.r != s.w {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

// Ping checks that both the writer and the readers answer.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping writer: %w", err)
	}
	var n int64
	if err := s.genStmt.QueryRowContext(ctx).Scan(&n); err != nil {
		return fmt.Errorf("sqlite: ping readers: %w", err)
	}
	return nil
}

// writeTx runs fn in one write transaction on the writer connection and
// commits it if fn returns nil. fn's error is returned as it is.
func (s *Store) writeTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// Also on panic: a transaction left open would hold the only writer.
	defer func() { _ = tx.Rollback() }() // ErrTxDone after Commit
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// bump advances the generation counter inside the mutation's transaction.
func bump(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `UPDATE generation SET value = value + 1 WHERE id = 1`); err != nil {
		return fmt.Errorf("bump generation: %w", err)
	}
	return nil
}

// mapErr turns constraint violations into the store's sentinel errors,
// keeping the driver's error in the chain for its message.
func mapErr(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%w: %w", store.ErrAlreadyExists, err)
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY, sqlite3.SQLITE_CONSTRAINT_CHECK,
			sqlite3.SQLITE_CONSTRAINT_NOTNULL:
			return fmt.Errorf("%w: %w", store.ErrInvalid, err)
		}
	}
	return err
}

// notFound maps sql.ErrNoRows to store.ErrNotFound.
func notFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %s", store.ErrNotFound, what)
	}
	return err
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", store.ErrInvalid, fmt.Sprintf(format, args...))
}

// Timestamps are unix microseconds in UTC; NULL is the zero time.

func micros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func fromMicros(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.UnixMicro(n.Int64).UTC()
}

// Roles are a JSON array of strings, "[]" when empty.

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// scanner is *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// ---- users ----

const userCols = `id, email, name, roles, active, source, created_at, updated_at, external_id, deleted_at`

// userScan holds the raw columns of a user row.
type userScan struct {
	u                store.User
	roles            string
	active           int64
	created, updated sql.NullInt64
	deleted          sql.NullInt64
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

func scanUser(sc scanner) (store.User, error) {
	var x userScan
	if err := sc.Scan(x.dest()...); err != nil {
		return store.User{}, err
	}
	return x.user()
}

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	u = store.NormalizeUser(u)
	if err := store.CheckUser(u); err != nil {
		return fmt.Errorf("sqlite: create user: %w", err)
	}
	roles, err := store.EncodeList(u.Roles)
	if err != nil {
		return fmt.Errorf("sqlite: create user %q: %w", u.ID, err)
	}
	err = s.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (`+userCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			u.ID, u.Email, u.Name, roles, boolInt(u.Active), u.Source, micros(u.CreatedAt), micros(u.UpdatedAt),
			u.ExternalID, micros(u.DeletedAt)); err != nil {
			return mapErr(err)
		}
		return bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("sqlite: create user %q: %w", u.ID, err)
	}
	return nil
}

// GetUser implements store.Store.
func (s *Store) GetUser(ctx context.Context, id string) (store.User, error) {
	u, err := scanUser(s.r.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
	if err != nil {
		return store.User{}, fmt.Errorf("sqlite: get user %q: %w", id, notFound(err, "user"))
	}
	return u, nil
}

// GetUserByEmail implements store.Store.
func (s *Store) GetUserByEmail(ctx context.Context, email string) (store.User, error) {
	u, err := scanUser(s.r.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE email = ?`,
		store.NormalizeEmail(email)))
	if err != nil {
		return store.User{}, fmt.Errorf("sqlite: get user by email: %w", notFound(err, "user"))
	}
	return u, nil
}

// ListUsers implements store.Store.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+userCols+` FROM users ORDER BY email`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list users: %w", err)
	}
	defer rows.Close()
	var out []store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list users: %w", err)
	}
	return out, nil
}

// UpdateUser implements store.Store.
func (s *Store) UpdateUser(ctx context.Context, id string, update func(store.User) (store.User, error)) (store.User, error) {
	var out store.User
	var updErr error
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		old, err := scanUser(tx.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
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
		if _, err := tx.ExecContext(ctx,
			`UPDATE users SET email = ?, name = ?, roles = ?, active = ?, source = ?, updated_at = ?, external_id = ?, deleted_at = ? WHERE id = ?`,
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
		return store.User{}, fmt.Errorf("sqlite: update user %q: %w", id, err)
	}
	return out, nil
}

// ---- agents ----

const agentCols = `id, name, owner_id, department, purpose, state, created_at, updated_at, state_changed_at, state_changed_by, state_reason, allowed_upstreams, created_by`

type agentScan struct {
	a                store.Agent
	state            string
	upstreams        string
	created, updated sql.NullInt64
	changed          sql.NullInt64
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

func scanAgent(sc scanner) (store.Agent, error) {
	var x agentScan
	if err := sc.Scan(x.dest()...); err != nil {
		return store.Agent{}, err
	}
	return x.agent()
}

// CreateAgent implements store.Store.
func (s *Store) CreateAgent(ctx context.Context, a store.Agent) error {
	a = store.NormalizeAgent(a)
	if err := store.CheckAgent(a); err != nil {
		return fmt.Errorf("sqlite: create agent: %w", err)
	}
	ups, err := store.EncodeList(a.AllowedUpstreams)
	if err != nil {
		return fmt.Errorf("sqlite: create agent: %w", err)
	}
	err = s.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO agents (`+agentCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			a.ID, a.Name, a.OwnerID, a.Department, a.Purpose, string(a.State), micros(a.CreatedAt), micros(a.UpdatedAt),
			micros(a.StateChangedAt), a.StateChangedBy, a.StateReason, ups, a.CreatedBy); err != nil {
			return mapErr(err)
		}
		return bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("sqlite: create agent %q: %w", a.ID, err)
	}
	return nil
}

// GetAgent implements store.Store.
func (s *Store) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	a, err := scanAgent(s.r.QueryRowContext(ctx, `SELECT `+agentCols+` FROM agents WHERE id = ?`, id))
	if err != nil {
		return store.Agent{}, fmt.Errorf("sqlite: get agent %q: %w", id, notFound(err, "agent"))
	}
	return a, nil
}

// ListAgents implements store.Store.
func (s *Store) ListAgents(ctx context.Context) ([]store.Agent, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+agentCols+` FROM agents ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list agents: %w", err)
	}
	defer rows.Close()
	var out []store.Agent
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list agents: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list agents: %w", err)
	}
	return out, nil
}

// UpdateAgent implements store.Store.
func (s *Store) UpdateAgent(ctx context.Context, id string, update func(store.Agent) (store.Agent, error)) (store.Agent, error) {
	var out store.Agent
	var updErr error
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		old, err := scanAgent(tx.QueryRowContext(ctx, `SELECT `+agentCols+` FROM agents WHERE id = ?`, id))
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
		if _, err := tx.ExecContext(ctx,
			`UPDATE agents SET name = ?, owner_id = ?, department = ?, purpose = ?, state = ?, updated_at = ?, state_changed_at = ?, state_changed_by = ?, state_reason = ?, allowed_upstreams = ?, created_by = ? WHERE id = ?`,
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
		return store.Agent{}, fmt.Errorf("sqlite: update agent %q: %w", id, err)
	}
	return out, nil
}

// ---- agent tokens ----

const tokenCols = `id, agent_id, hash, created_at, expires_at, revoked_at, last_used_at`

type tokenScan struct {
	t                                  store.AgentToken
	created, expires, revoked, lastUse sql.NullInt64
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
		return fmt.Errorf("sqlite: create agent token: %w", err)
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO agent_tokens (`+tokenCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			t.ID, t.AgentID, t.Hash, micros(t.CreatedAt), micros(t.ExpiresAt), micros(t.RevokedAt), micros(t.LastUsedAt)); err != nil {
			return mapErr(err)
		}
		return bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("sqlite: create agent token %q: %w", t.ID, err)
	}
	return nil
}

// ListAgentTokens implements store.Store.
func (s *Store) ListAgentTokens(ctx context.Context, agentID string) ([]store.AgentToken, error) {
	rows, err := s.r.QueryContext(ctx,
		`SELECT `+tokenCols+` FROM agent_tokens WHERE agent_id = ? ORDER BY created_at NULLS FIRST, id`, agentID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list agent tokens of %q: %w", agentID, err)
	}
	defer rows.Close()
	var out []store.AgentToken
	for rows.Next() {
		var x tokenScan
		if err := rows.Scan(x.dest()...); err != nil {
			return nil, fmt.Errorf("sqlite: list agent tokens of %q: %w", agentID, err)
		}
		out = append(out, x.token())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list agent tokens of %q: %w", agentID, err)
	}
	return out, nil
}

// tokenExists reports whether a token with id exists, inside tx.
func tokenExists(ctx context.Context, tx *sql.Tx, id string) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM agent_tokens WHERE id = ?`, id).Scan(&one)
	return notFound(err, "agent token")
}

// RevokeAgentToken implements store.Store.
func (s *Store) RevokeAgentToken(ctx context.Context, id string, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("sqlite: revoke agent token %q: %w", id, invalid("revocation time is zero"))
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE agent_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`, at.UnixMicro(), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			if err := tokenExists(ctx, tx, id); err != nil {
				return err
			}
		}
		return bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("sqlite: revoke agent token %q: %w", id, err)
	}
	return nil
}

// TouchAgentToken implements store.Store. It does not bump the generation.
func (s *Store) TouchAgentToken(ctx context.Context, id string, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("sqlite: touch agent token %q: %w", id, invalid("use time is zero"))
	}
	us := at.UnixMicro()
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE agent_tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`,
			us, id, us)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return tokenExists(ctx, tx, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: touch agent token %q: %w", id, err)
	}
	return nil
}

const lookupPrincipalQuery = `SELECT
	t.id, t.agent_id, t.hash, t.created_at, t.expires_at, t.revoked_at, t.last_used_at,
	a.id, a.name, a.owner_id, a.department, a.purpose, a.state, a.created_at, a.updated_at,
	a.state_changed_at, a.state_changed_by, a.state_reason, a.allowed_upstreams, a.created_by,
	u.id, u.email, u.name, u.roles, u.active, u.source, u.created_at, u.updated_at,
	u.external_id, u.deleted_at
FROM agent_tokens t
JOIN agents a ON a.id = t.agent_id
JOIN users u ON u.id = a.owner_id
WHERE t.hash = ?`

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
	if err := s.lookupStmt.QueryRowContext(ctx, tokenHash).Scan(dest...); err != nil {
		return store.Principal{}, fmt.Errorf("sqlite: lookup principal: %w", notFound(err, "agent token"))
	}
	owner, err := us.user()
	if err != nil {
		return store.Principal{}, fmt.Errorf("sqlite: lookup principal: %w", err)
	}
	agent, err := as.agent()
	if err != nil {
		return store.Principal{}, fmt.Errorf("sqlite: lookup principal: %w", err)
	}
	return store.Principal{Token: ts.token(), Agent: agent, Owner: owner}, nil
}

// ---- generation and meta ----

// Generation implements store.Store.
func (s *Store) Generation(ctx context.Context) (int64, error) {
	var n int64
	if err := s.genStmt.QueryRowContext(ctx).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: read generation: %w", err)
	}
	return n, nil
}

// GetMeta implements store.Store.
func (s *Store) GetMeta(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	if err := s.r.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v); err != nil {
		return nil, fmt.Errorf("sqlite: get meta %q: %w", key, notFound(err, "meta key"))
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// PutMetaIfAbsent implements store.Store.
func (s *Store) PutMetaIfAbsent(ctx context.Context, key string, value []byte) ([]byte, error) {
	if key == "" {
		return nil, fmt.Errorf("sqlite: put meta: %w", invalid("key is empty"))
	}
	if value == nil {
		value = []byte{}
	}
	var out []byte
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, key, value); err != nil {
			return mapErr(err)
		}
		return tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&out)
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: put meta %q: %w", key, err)
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}
