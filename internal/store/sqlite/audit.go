package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// hashSize is the length of AuditEvent.Hash and PrevHash: a SHA-256 digest.
const hashSize = store.AuditHashSize

// zeroHash is the PrevHash of event 1 and the Hash of an empty chain's head.
var zeroHash = make([]byte, hashSize)

const auditCols = `seq, at, type, call_id, agent_id, data, prev_hash, hash`

// insertAuditBatch is how many events one INSERT statement carries at most.
// A multi-row INSERT saves most of the per-statement cost of the driver,
// which dominates a single small row; statements for 1, 2, 4, ... 32 rows
// are prepared, and a batch takes the largest that fit, so that k events
// take at most about log2(k) statements.
const insertAuditBatch = 1 << (len(Store{}.insAudit) - 1)

// auditInsertSQL returns an INSERT of n audit rows.
func auditInsertSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO audit_events (` + auditCols + `) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?, ?, ?, ?, ?, ?, ?, ?)`)
	}
	return b.String()
}

const (
	// pickCredSQL inserts a credential at an index that may be taken: it
	// then inserts nothing (and another index is tried), while a taken id
	// is still an error.
	pickCredSQL  = insCredSQL + ` ON CONFLICT (status_list, status_index) DO NOTHING`
	headSQL      = `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`
	budgetSumSQL = `SELECT COALESCE(SUM(amount), 0) FROM budget_entries WHERE key = ? AND at > ?`
	budgetAddSQL = `INSERT INTO budget_entries (key, at, amount, call_id) VALUES (?, ?, ?, ?)`
)

// prepareAudit prepares the statements of the hot audit and budget paths.
// Those on the writer are bound to its one connection, so a transaction
// reuses them (tx.StmtContext) without SQLite parsing them again, which
// otherwise costs as much as the rest of a small transaction.
func (s *Store) prepareAudit(ctx context.Context) error {
	for _, p := range []struct {
		dst **sql.Stmt
		db  *sql.DB
		sql string
	}{
		{&s.headW, s.w, headSQL},
		{&s.headR, s.r, headSQL},
		{&s.budgetSum, s.w, budgetSumSQL},
		{&s.budgetAdd, s.w, budgetAddSQL},
		{&s.pickCred, s.w, pickCredSQL},
	} {
		st, err := p.db.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("sqlite: prepare: %w", err)
		}
		*p.dst = st
	}
	for i := range s.insAudit {
		st, err := s.w.PrepareContext(ctx, auditInsertSQL(1<<i))
		if err != nil {
			return fmt.Errorf("sqlite: prepare: %w", err)
		}
		s.insAudit[i] = st
	}
	return nil
}

func readHead(ctx context.Context, stmt *sql.Stmt) (store.AuditHead, error) {
	var h store.AuditHead
	err := stmt.QueryRowContext(ctx).Scan(&h.Seq, &h.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return store.AuditHead{Seq: 0, Hash: bytes.Clone(zeroHash)}, nil
	}
	if err != nil {
		return store.AuditHead{}, fmt.Errorf("read audit head: %w", err)
	}
	return h, nil
}

func auditArgs(args []any, e store.AuditEvent) []any {
	data := e.Data
	if data == nil {
		data = []byte{}
	}
	return append(args, e.Seq, micros(e.Time), e.Type, e.CallID, e.AgentID, data, e.PrevHash, e.Hash)
}

// AppendAudit implements store.Store.
func (s *Store) AppendAudit(ctx context.Context, build func(head store.AuditHead) ([]store.AuditEvent, error)) error {
	for {
		cached := s.head.Swap(nil) // taken: only a committed append puts one back
		err := s.appendAudit(ctx, build, cached)
		if cached != nil && errors.Is(err, errStaleHead) {
			continue // another process appended: read the head and build again
		}
		return err
	}
}

// errStaleHead: the head AppendAudit remembered is no longer the head.
var errStaleHead = errors.New("the audit head moved")

// appendAudit is one attempt of AppendAudit, from the remembered head
// (cached) or, when it is nil, the head read in the transaction.
func (s *Store) appendAudit(ctx context.Context, build func(head store.AuditHead) ([]store.AuditEvent, error), cached *store.AuditHead) error {
	var (
		buildErr error
		creds    []*store.Credential
		picked   []int
		newHead  store.AuditHead
	)
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var head store.AuditHead
		if cached != nil {
			head = *cached
		} else {
			var err error
			if head, err = readHead(ctx, tx.StmtContext(ctx, s.headW)); err != nil {
				return err
			}
		}
		evs, err := build(head)
		if err != nil {
			buildErr = err
			return err
		}
		if err := store.CheckChain(head, evs); err != nil {
			return err
		}
		if creds, err = store.AuditCredentials(evs); err != nil {
			return err
		}
		if len(evs) > 0 {
			last := evs[len(evs)-1]
			newHead = store.AuditHead{Seq: last.Seq, Hash: last.Hash}
		} else {
			newHead = head
		}
		first := true
		stale := func(err error) error {
			// The first sequence number after a remembered head is taken:
			// somebody else appended.
			if first && cached != nil && errors.Is(err, store.ErrAlreadyExists) {
				return errStaleHead
			}
			return err
		}
		args := make([]any, 0, 8*insertAuditBatch)
		for len(evs) > 0 {
			i := min(bits.Len(uint(len(evs))), len(s.insAudit)) - 1 // the largest statement that fits
			n := 1 << i
			args = args[:0]
			for _, e := range evs[:n] {
				args = auditArgs(args, e)
			}
			if _, err := tx.StmtContext(ctx, s.insAudit[i]).ExecContext(ctx, args...); err != nil {
				return stale(fmt.Errorf("insert audit events from %d: %w", evs[0].Seq, mapErr(err)))
			}
			first = false
			evs = evs[n:]
		}
		if len(creds) > 0 {
			if picked, err = s.insertCredentials(ctx, tx, creds); err != nil {
				return err
			}
		}
		return nil
	})
	if buildErr != nil {
		return buildErr
	}
	if errors.Is(err, errStaleHead) {
		return err
	}
	if err != nil {
		return fmt.Errorf("sqlite: append audit: %w", err)
	}
	s.head.Store(&newHead)
	// Only now that they are committed: the indexes chosen.
	for i, c := range creds {
		if c.StatusIndex < 0 {
			c.StatusIndex = picked[i]
		}
	}
	return nil
}

// insertCredentials inserts creds in tx and returns the index each one got
// (picked at random for those with StatusIndex -1, which are not changed).
func (s *Store) insertCredentials(ctx context.Context, tx *sql.Tx, creds []*store.Credential) ([]int, error) {
	picked := make([]int, len(creds))
	var ins, pick *sql.Stmt
	for i, c := range creds {
		if c.StatusIndex >= 0 {
			if ins == nil {
				ins = tx.StmtContext(ctx, s.insCred)
			}
			if _, err := ins.ExecContext(ctx, credArgs(*c, c.StatusIndex)...); err != nil {
				return nil, fmt.Errorf("insert credential %q: %w", c.ID, mapErr(err))
			}
			picked[i] = c.StatusIndex
			continue
		}
		if pick == nil {
			pick = tx.StmtContext(ctx, s.pickCred)
		}
		done := false
		for range store.MaxIndexTries {
			idx, err := store.RandomIndex(c.IndexRange)
			if err != nil {
				return nil, err
			}
			res, err := pick.ExecContext(ctx, credArgs(*c, idx)...)
			if err != nil {
				return nil, fmt.Errorf("insert credential %q: %w", c.ID, mapErr(err))
			}
			n, err := res.RowsAffected()
			if err != nil {
				return nil, fmt.Errorf("insert credential %q: %w", c.ID, err)
			}
			if n == 1 {
				picked[i], done = idx, true
				break
			}
		}
		if !done {
			return nil, fmt.Errorf("credential %q: %w: no free index in status list %q after %d tries",
				c.ID, store.ErrAlreadyExists, c.StatusList, store.MaxIndexTries)
		}
	}
	return picked, nil
}

// AuditHead implements store.Store.
func (s *Store) AuditHead(ctx context.Context) (store.AuditHead, error) {
	h, err := readHead(ctx, s.headR)
	if err != nil {
		return store.AuditHead{}, fmt.Errorf("sqlite: %w", err)
	}
	return h, nil
}

// ListAudit implements store.Store.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	var (
		q    strings.Builder
		args []any
	)
	q.WriteString(`SELECT ` + auditCols + ` FROM audit_events WHERE seq > ?`)
	args = append(args, f.AfterSeq)
	if !f.Since.IsZero() {
		q.WriteString(` AND at >= ?`)
		args = append(args, f.Since.UnixMicro())
	}
	if f.AgentID != "" {
		q.WriteString(` AND agent_id = ?`)
		args = append(args, f.AgentID)
	}
	if len(f.Types) > 0 {
		q.WriteString(` AND type IN (?` + strings.Repeat(`, ?`, len(f.Types)-1) + `)`)
		for _, t := range f.Types {
			args = append(args, t)
		}
	}
	q.WriteString(` ORDER BY seq`)
	if f.Limit > 0 {
		q.WriteString(` LIMIT ?`)
		args = append(args, f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list audit: %w", err)
	}
	defer rows.Close()
	var out []store.AuditEvent
	if f.Limit > 0 {
		out = make([]store.AuditEvent, 0, min(f.Limit, 16384))
	}
	// The byte columns are scanned without database/sql's copy and packed
	// into shared slabs: verification and export read millions of events,
	// and a copy and an allocation per column per event showed. (An event
	// kept from the result keeps its slab alive: at most slabSize.)
	const slabSize = 64 << 10
	var (
		slab                  []byte
		at                    sql.NullInt64
		data, prevHash, hashB sql.RawBytes
	)
	keep := func(b []byte) []byte {
		if cap(slab)-len(slab) < len(b) {
			slab = make([]byte, 0, max(slabSize, len(b)))
		}
		start := len(slab)
		slab = append(slab, b...)
		return slab[start:len(slab):len(slab)]
	}
	for rows.Next() {
		var e store.AuditEvent
		if err := rows.Scan(&e.Seq, &at, &e.Type, &e.CallID, &e.AgentID, &data, &prevHash, &hashB); err != nil {
			return nil, fmt.Errorf("sqlite: list audit: %w", err)
		}
		e.Time = fromMicros(at)
		e.Data, e.PrevHash, e.Hash = keep(data), keep(prevHash), keep(hashB)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list audit: %w", err)
	}
	return out, nil
}

// PutCheckpoint implements store.Store.
func (s *Store) PutCheckpoint(ctx context.Context, c store.Checkpoint) error {
	switch {
	case c.Seq < 1:
		return fmt.Errorf("sqlite: put checkpoint: %w", invalid("seq %d", c.Seq))
	case len(c.Hash) != hashSize:
		return fmt.Errorf("sqlite: put checkpoint %d: %w", c.Seq, invalid("hash is %d bytes, want %d", len(c.Hash), hashSize))
	case c.KeyID == "":
		return fmt.Errorf("sqlite: put checkpoint %d: %w", c.Seq, invalid("key id is empty"))
	case len(c.Signature) == 0:
		return fmt.Errorf("sqlite: put checkpoint %d: %w", c.Seq, invalid("signature is empty"))
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO checkpoints (seq, hash, at, key_id, signature) VALUES (?, ?, ?, ?, ?)`,
			c.Seq, c.Hash, micros(c.Time), c.KeyID, c.Signature)
		return mapErr(err)
	})
	if err != nil {
		return fmt.Errorf("sqlite: put checkpoint %d: %w", c.Seq, err)
	}
	return nil
}

// ListCheckpoints implements store.Store.
func (s *Store) ListCheckpoints(ctx context.Context) ([]store.Checkpoint, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT seq, hash, at, key_id, signature FROM checkpoints ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list checkpoints: %w", err)
	}
	defer rows.Close()
	var out []store.Checkpoint
	for rows.Next() {
		var (
			c  store.Checkpoint
			at sql.NullInt64
		)
		if err := rows.Scan(&c.Seq, &c.Hash, &at, &c.KeyID, &c.Signature); err != nil {
			return nil, fmt.Errorf("sqlite: list checkpoints: %w", err)
		}
		c.Time = fromMicros(at)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list checkpoints: %w", err)
	}
	return out, nil
}

// ---- budgets ----

// ChargeBudget implements store.Store.
func (s *Store) ChargeBudget(ctx context.Context, e store.BudgetEntry, since time.Time, limit float64) (float64, bool, error) {
	if err := store.CheckBudget(e, limit); err != nil {
		return 0, false, fmt.Errorf("sqlite: charge budget: %w", err)
	}
	var (
		total   float64
		charged bool
	)
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if err := tx.StmtContext(ctx, s.budgetSum).QueryRowContext(ctx, e.Key, since.UnixMicro()).Scan(&total); err != nil {
			return fmt.Errorf("sum: %w", err)
		}
		if total+e.Amount > limit {
			return nil
		}
		if _, err := tx.StmtContext(ctx, s.budgetAdd).ExecContext(ctx, e.Key, e.Time.UnixMicro(), e.Amount, e.CallID); err != nil {
			return mapErr(err)
		}
		total += e.Amount
		charged = true
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("sqlite: charge budget %q: %w", e.Key, err)
	}
	return total, charged, nil
}

// BudgetTotals implements store.Store.
func (s *Store) BudgetTotals(ctx context.Context, keys []string, since time.Time) (map[string]float64, error) {
	out := make(map[string]float64, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	args := make([]any, 0, len(keys)+1)
	args = append(args, since.UnixMicro())
	for _, k := range keys {
		out[k] = 0
		args = append(args, k)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT key, SUM(amount) FROM budget_entries WHERE at > ? AND key IN (?`+
		strings.Repeat(`, ?`, len(keys)-1)+`) GROUP BY key`, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: budget totals: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			k   string
			sum float64
		)
		if err := rows.Scan(&k, &sum); err != nil {
			return nil, fmt.Errorf("sqlite: budget totals: %w", err)
		}
		out[k] = sum
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: budget totals: %w", err)
	}
	return out, nil
}

// PruneBudget implements store.Store.
func (s *Store) PruneBudget(ctx context.Context, before time.Time) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM budget_entries WHERE at <= ?`, before.UnixMicro())
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: prune budget: %w", err)
	}
	return nil
}
