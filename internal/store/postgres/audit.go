package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/interlock-dev/interlock/internal/store"
)

// hashSize is the length of AuditEvent.Hash and PrevHash: a SHA-256 digest.
const hashSize = store.AuditHashSize

// zeroHash is the PrevHash of event 1 and the Hash of an empty chain's head.
var zeroHash = make([]byte, hashSize)

const auditCols = `seq, at, type, call_id, agent_id, data, prev_hash, hash`

const (
	headSQL = `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`
	// insAudit1SQL inserts one event, the common case (one per call).
	insAudit1SQL = `INSERT INTO audit_events (` + auditCols + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	// insAuditNSQL inserts a batch of any size in one statement, one array
	// per column.
	insAuditNSQL = `INSERT INTO audit_events (` + auditCols + `)
		SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
			$6::bytea[], $7::bytea[], $8::bytea[])`
	lockSQL = `SELECT pg_advisory_xact_lock($1)`
	// pickCredSQL inserts a credential at an index that may be taken: it
	// then inserts nothing (and another index is tried) without aborting
	// the transaction, while a taken id is still an error.
	pickCredSQL = insCredSQL + ` ON CONFLICT (status_list, status_index) DO NOTHING RETURNING status_index`
)

// readHead reads the head of the chain.
func readHead(row pgx.Row) (store.AuditHead, error) {
	var h store.AuditHead
	err := row.Scan(&h.Seq, &h.Hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.AuditHead{Seq: 0, Hash: bytes.Clone(zeroHash)}, nil
	}
	if err != nil {
		return store.AuditHead{}, fmt.Errorf("read audit head: %w", err)
	}
	return h, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// queueInsert queues the INSERT of evs (already checked) as one statement.
func queueInsert(b *pgx.Batch, evs []store.AuditEvent) {
	if len(evs) == 1 {
		e := evs[0]
		b.Queue(insAudit1SQL, e.Seq, micros(e.Time), e.Type, e.CallID, e.AgentID, nonNil(e.Data), e.PrevHash, e.Hash)
		return
	}
	var (
		seq                  = make([]int64, len(evs))
		at                   = make([]*int64, len(evs))
		typ, callID, agentID = make([]string, len(evs)), make([]string, len(evs)), make([]string, len(evs))
		data, prev, hash     = make([][]byte, len(evs)), make([][]byte, len(evs)), make([][]byte, len(evs))
	)
	for i, e := range evs {
		seq[i], at[i] = e.Seq, micros(e.Time)
		typ[i], callID[i], agentID[i] = e.Type, e.CallID, e.AgentID
		data[i], prev[i], hash[i] = nonNil(e.Data), e.PrevHash, e.Hash
	}
	b.Queue(insAuditNSQL, seq, at, typ, callID, agentID, data, prev, hash)
}

// queueCredentials queues the INSERT of each credential creds[i] with
// picked[i] < 0 (the others are in): at its fixed index, or at a new random
// one (an insert that may do nothing if that index is taken). It returns
// how many it queued.
func queueCredentials(b *pgx.Batch, creds []*store.Credential, picked []int) (int, error) {
	n := 0
	for i, c := range creds {
		if picked[i] >= 0 {
			continue
		}
		n++
		if c.StatusIndex >= 0 {
			b.Queue(insCredSQL, credArgs(*c, c.StatusIndex)...)
			continue
		}
		idx, err := store.RandomIndex(c.IndexRange)
		if err != nil {
			return 0, err
		}
		b.Queue(pickCredSQL, credArgs(*c, idx)...)
	}
	return n, nil
}

// readCredentials reads the results queueCredentials queued, in order,
// into picked: the index each credential got, or -1 for one whose random
// index was taken (to be tried again).
func readCredentials(br pgx.BatchResults, creds []*store.Credential, picked []int) error {
	for i, c := range creds {
		if picked[i] >= 0 {
			continue
		}
		if c.StatusIndex >= 0 {
			if _, err := br.Exec(); err != nil {
				return fmt.Errorf("insert credential %q: %w", c.ID, mapErr(err))
			}
			picked[i] = c.StatusIndex
			continue
		}
		var idx int64
		switch err := br.QueryRow().Scan(&idx); {
		case errors.Is(err, pgx.ErrNoRows):
			picked[i] = -1
		case err != nil:
			return fmt.Errorf("insert credential %q: %w", c.ID, mapErr(err))
		default:
			picked[i] = int(idx)
		}
	}
	return nil
}

// AppendAudit implements store.Store. The transaction first takes the
// chain's advisory lock (held until it ends) and only then, in a separate
// statement and so with a fresh READ COMMITTED snapshot, reads the head:
// every appender in every replica sees the events of the one before it,
// and the chain stays one.
//
// Appends are the store's hottest write, and the lock is held from the
// head's read to the commit, so the transaction is two pipelined round
// trips instead of four: BEGIN, the lock and the head's read go together,
// and so do the INSERT and the COMMIT. Credentials the events carry are
// inserted with the events; one at a random index (StatusIndex -1) needs
// its outcome read before the COMMIT (another index is tried if it was
// taken), which costs one more round trip.
func (s *Store) AppendAudit(ctx context.Context, build func(head store.AuditHead) ([]store.AuditEvent, error)) error {
	for attempt := 1; ; attempt++ {
		var out appended
		buildErr, err := s.appendAudit(ctx, build, &out)
		if buildErr != nil {
			return buildErr
		}
		if err == nil {
			// Only now that they are committed: the indexes chosen.
			for i, c := range out.creds {
				if c.StatusIndex < 0 {
					c.StatusIndex = out.picked[i]
				}
			}
			return nil
		}
		if attempt == maxTxAttempts || !retryable(err) {
			return fmt.Errorf("postgres: append audit: %w", err)
		}
		s.log.Debug("retrying audit append", "attempt", attempt, "err", err)
	}
}

// appended is what one attempt of AppendAudit inserted besides the events:
// the credentials they carried, with the index each one got.
type appended struct {
	creds  []*store.Credential
	picked []int
}

// appendAudit is one attempt of AppendAudit. It returns build's error, if
// any, apart from its own.
func (s *Store) appendAudit(ctx context.Context, build func(head store.AuditHead) ([]store.AuditEvent, error), out *appended) (buildErr, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire a connection: %w", err)
	}
	// A connection returned inside a transaction (the ROLLBACK below
	// failed, or was not reached) is closed by the pool, never reused.
	defer conn.Release()
	committed := false
	defer func() {
		if !committed {
			_, _ = conn.Exec(context.WithoutCancel(ctx), `ROLLBACK`)
		}
	}()

	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(lockSQL, s.auditLock)
	b.Queue(headSQL)
	br := conn.SendBatch(ctx, b)
	_, err = br.Exec()
	if err == nil {
		if _, err = br.Exec(); err != nil {
			err = fmt.Errorf("take the audit lock: %w", err)
		}
	}
	var head store.AuditHead
	if err == nil {
		head, err = readHead(br.QueryRow())
	}
	if cerr := br.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("begin: %w", cerr)
	}
	if err != nil {
		return nil, err
	}

	evs, err := build(head)
	if err != nil {
		return err, nil
	}
	if err := store.CheckChain(head, evs); err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, nil // rolled back: nothing to write
	}
	creds, err := store.AuditCredentials(evs)
	if err != nil {
		return nil, err
	}
	picked := make([]int, len(creds))
	random := false // a credential at a random index: its outcome is read before the COMMIT
	for i, c := range creds {
		picked[i] = -1
		random = random || c.StatusIndex < 0
	}
	out.creds, out.picked = creds, picked

	b = &pgx.Batch{}
	queueInsert(b, evs)
	if _, err := queueCredentials(b, creds, picked); err != nil {
		return nil, err
	}
	if random {
		br = conn.SendBatch(ctx, b)
		_, err = br.Exec()
		if err != nil {
			err = fmt.Errorf("insert audit events %d to %d: %w", evs[0].Seq, evs[len(evs)-1].Seq, mapErr(err))
		} else {
			err = readCredentials(br, creds, picked)
		}
		if cerr := br.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("insert audit events: %w", cerr)
		}
		if err != nil {
			return nil, err
		}
		// Indexes that were taken: try others until each has one.
		for try := 1; slices.Contains(picked, -1); try++ {
			if try == store.MaxIndexTries {
				i := slices.Index(picked, -1)
				return nil, fmt.Errorf("credential %q: %w: no free index in status list %q after %d tries",
					creds[i].ID, store.ErrAlreadyExists, creds[i].StatusList, store.MaxIndexTries)
			}
			b = &pgx.Batch{}
			if _, err := queueCredentials(b, creds, picked); err != nil {
				return nil, err
			}
			br = conn.SendBatch(ctx, b)
			err = readCredentials(br, creds, picked)
			if cerr := br.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("insert credentials: %w", cerr)
			}
			if err != nil {
				return nil, err
			}
		}
		b = &pgx.Batch{}
	}
	b.Queue(`COMMIT`)
	br = conn.SendBatch(ctx, b)
	if !random {
		_, err = br.Exec()
		if err != nil {
			err = fmt.Errorf("insert audit events %d to %d: %w", evs[0].Seq, evs[len(evs)-1].Seq, mapErr(err))
		} else {
			err = readCredentials(br, creds, picked)
		}
	}
	if err == nil {
		var tag pgconn.CommandTag
		if tag, err = br.Exec(); err != nil {
			err = fmt.Errorf("commit: %w", err)
		} else if tag.String() != "COMMIT" {
			err = fmt.Errorf("commit: the server answered %q", tag.String())
		}
	}
	if cerr := br.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("commit: %w", cerr)
	}
	if err != nil {
		return nil, err
	}
	committed = true
	return nil, nil
}

// AuditHead implements store.Store.
func (s *Store) AuditHead(ctx context.Context) (store.AuditHead, error) {
	h, err := readHead(s.pool.QueryRow(ctx, headSQL))
	if err != nil {
		return store.AuditHead{}, fmt.Errorf("postgres: %w", err)
	}
	return h, nil
}

// ListAudit implements store.Store.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	var (
		q    strings.Builder
		args []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	q.WriteString(`SELECT ` + auditCols + ` FROM audit_events WHERE seq > ` + arg(f.AfterSeq))
	if !f.Since.IsZero() {
		q.WriteString(` AND at >= ` + arg(f.Since.UnixMicro()))
	}
	if f.AgentID != "" {
		q.WriteString(` AND agent_id = ` + arg(f.AgentID))
	}
	if len(f.Types) > 0 {
		q.WriteString(` AND type = ANY(` + arg(f.Types) + `::text[])`)
	}
	q.WriteString(` ORDER BY seq`)
	if f.Limit > 0 {
		q.WriteString(` LIMIT ` + arg(int64(f.Limit)))
	}
	rows, err := s.pool.Query(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list audit: %w", err)
	}
	defer rows.Close()
	var out []store.AuditEvent
	if f.Limit > 0 {
		out = make([]store.AuditEvent, 0, min(f.Limit, 16384))
	}
	var at *int64
	for rows.Next() {
		var e store.AuditEvent
		if err := rows.Scan(&e.Seq, &at, &e.Type, &e.CallID, &e.AgentID, &e.Data, &e.PrevHash, &e.Hash); err != nil {
			return nil, fmt.Errorf("postgres: list audit: %w", err)
		}
		e.Time = fromMicros(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list audit: %w", err)
	}
	return out, nil
}

// PutCheckpoint implements store.Store.
func (s *Store) PutCheckpoint(ctx context.Context, c store.Checkpoint) error {
	switch {
	case c.Seq < 1:
		return fmt.Errorf("postgres: put checkpoint: %w", invalid("seq %d", c.Seq))
	case len(c.Hash) != hashSize:
		return fmt.Errorf("postgres: put checkpoint %d: %w", c.Seq, invalid("hash is %d bytes, want %d", len(c.Hash), hashSize))
	case c.KeyID == "":
		return fmt.Errorf("postgres: put checkpoint %d: %w", c.Seq, invalid("key id is empty"))
	case len(c.Signature) == 0:
		return fmt.Errorf("postgres: put checkpoint %d: %w", c.Seq, invalid("signature is empty"))
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO checkpoints (seq, hash, at, key_id, signature) VALUES ($1, $2, $3, $4, $5)`,
		c.Seq, c.Hash, micros(c.Time), c.KeyID, c.Signature); err != nil {
		return fmt.Errorf("postgres: put checkpoint %d: %w", c.Seq, mapErr(err))
	}
	return nil
}

// ListCheckpoints implements store.Store.
func (s *Store) ListCheckpoints(ctx context.Context) ([]store.Checkpoint, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, hash, at, key_id, signature FROM checkpoints ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("postgres: list checkpoints: %w", err)
	}
	defer rows.Close()
	var out []store.Checkpoint
	for rows.Next() {
		var (
			c  store.Checkpoint
			at *int64
		)
		if err := rows.Scan(&c.Seq, &c.Hash, &at, &c.KeyID, &c.Signature); err != nil {
			return nil, fmt.Errorf("postgres: list checkpoints: %w", err)
		}
		c.Time = fromMicros(at)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list checkpoints: %w", err)
	}
	return out, nil
}

// ---- budgets ----

const (
	budgetSumSQL = `SELECT COALESCE(SUM(amount), 0) FROM budget_entries WHERE key = $1 AND at > $2`
	budgetAddSQL = `INSERT INTO budget_entries (key, at, amount, call_id) VALUES ($1, $2, $3, $4)`
)

// ChargeBudget implements store.Store. The transaction takes an advisory
// lock on the key (held until it ends) and then, in a separate statement
// with a fresh snapshot, sums the window: charges to one key from every
// replica check and charge one after another, so together they never
// overrun the limit. The limit is compared in Go, as the SQLite backend
// does, so that the same float arithmetic decides.
func (s *Store) ChargeBudget(ctx context.Context, e store.BudgetEntry, since time.Time, limit float64) (float64, bool, error) {
	if err := store.CheckBudget(e, limit); err != nil {
		return 0, false, fmt.Errorf("postgres: charge budget: %w", err)
	}
	var (
		total   float64
		charged bool
	)
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		total, charged = 0, false
		b := &pgx.Batch{}
		b.Queue(lockSQL, lockKey(s.schema, "budget\x00"+e.Key))
		b.Queue(budgetSumSQL, e.Key, since.UnixMicro())
		br := tx.SendBatch(ctx, b)
		_, err := br.Exec()
		if err == nil {
			err = br.QueryRow().Scan(&total)
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sum: %w", mapErr(err))
		}
		if total+e.Amount > limit {
			return nil
		}
		if _, err := tx.Exec(ctx, budgetAddSQL, e.Key, e.Time.UnixMicro(), e.Amount, e.CallID); err != nil {
			return mapErr(err)
		}
		total += e.Amount
		charged = true
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("postgres: charge budget %q: %w", e.Key, err)
	}
	return total, charged, nil
}

// BudgetTotals implements store.Store.
func (s *Store) BudgetTotals(ctx context.Context, keys []string, since time.Time) (map[string]float64, error) {
	out := make(map[string]float64, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	for _, k := range keys {
		out[k] = 0
	}
	rows, err := s.pool.Query(ctx,
		`SELECT key, SUM(amount) FROM budget_entries WHERE at > $1 AND key = ANY($2::text[]) GROUP BY key`,
		since.UnixMicro(), keys)
	if err != nil {
		return nil, fmt.Errorf("postgres: budget totals: %w", mapErr(err))
	}
	defer rows.Close()
	for rows.Next() {
		var (
			k   string
			sum float64
		)
		if err := rows.Scan(&k, &sum); err != nil {
			return nil, fmt.Errorf("postgres: budget totals: %w", err)
		}
		out[k] = sum
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: budget totals: %w", mapErr(err))
	}
	return out, nil
}

// PruneBudget implements store.Store.
func (s *Store) PruneBudget(ctx context.Context, before time.Time) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM budget_entries WHERE at <= $1`, before.UnixMicro()); err != nil {
		return fmt.Errorf("postgres: prune budget: %w", err)
	}
	return nil
}
