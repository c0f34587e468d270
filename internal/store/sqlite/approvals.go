package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// ---- approvals ----

const approvalCols = `id, agent_id, owner_id, decision_id, upstream, tool, args_digest, arguments, rule, approvers,
	quorum, separation_of_duties, binding_message, risk_score, source, client_data, state,
	created_at, expires_at, decided_at, reason`

// approvalColsA is approvalCols qualified with the alias a.
var approvalColsA = qualify("a", approvalCols)

// qualify prefixes each column of the comma-separated list cols with
// alias.
func qualify(alias, cols string) string {
	parts := strings.Split(cols, ",")
	for i, p := range parts {
		parts[i] = alias + "." + strings.TrimSpace(p)
	}
	return strings.Join(parts, ", ")
}

// approvalOrder is the order every listing of approvals comes in: newest
// first.
const approvalOrder = `created_at DESC NULLS LAST, id DESC`

// queryer is *sql.DB or *sql.Tx.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// approvalScan holds the raw columns of an approval row.
type approvalScan struct {
	a                         store.Approval
	approvers, state          string
	sod                       int64
	created, expires, decided sql.NullInt64
}

func (x *approvalScan) dest() []any {
	a := &x.a
	return []any{&a.ID, &a.AgentID, &a.OwnerID, &a.DecisionID, &a.Upstream, &a.Tool, &a.ArgsDigest, &a.Arguments,
		&a.Rule, &x.approvers, &a.Quorum, &x.sod, &a.BindingMessage, &a.RiskScore, &a.Source, &a.ClientData,
		&x.state, &x.created, &x.expires, &x.decided, &a.Reason}
}

func (x *approvalScan) approval() (store.Approval, error) {
	a := x.a
	approvers, err := store.DecodeList(x.approvers)
	if err != nil {
		return store.Approval{}, fmt.Errorf("approval %q approvers: %w", a.ID, err)
	}
	a.Approvers = approvers
	a.SeparationOfDuties = x.sod != 0
	a.State = store.ApprovalState(x.state)
	a.CreatedAt = fromMicros(x.created)
	a.ExpiresAt = fromMicros(x.expires)
	a.DecidedAt = fromMicros(x.decided)
	return a, nil
}

// voteScan holds the columns of a vote as the LEFT JOIN returns them: all
// NULL for an approval without votes.
type voteScan struct {
	userID, email, reason, method sql.NullString
	approve, at                   sql.NullInt64
	evidence                      []byte
}

func (x *voteScan) dest() []any {
	return []any{&x.userID, &x.email, &x.approve, &x.reason, &x.method, &x.evidence, &x.at}
}

// queryApprovals returns the approvals that match where (with args),
// newest first and at most limit of them (0: all), each with its votes,
// in one statement (so one snapshot).
func queryApprovals(ctx context.Context, q queryer, where string, args []any, limit int) ([]store.Approval, error) {
	sub := `SELECT ` + approvalCols + ` FROM approvals`
	if where != "" {
		sub += ` WHERE ` + where
	}
	sub += ` ORDER BY ` + approvalOrder
	if limit > 0 {
		sub += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := q.QueryContext(ctx, `SELECT `+approvalColsA+`,
		v.user_id, v.email, v.approve, v.reason, v.method, v.evidence, v.at
		FROM (`+sub+`) a LEFT JOIN approval_votes v ON v.approval_id = a.id
		ORDER BY a.created_at DESC NULLS LAST, a.id DESC, v.seq`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Approval
	for rows.Next() {
		var (
			x approvalScan
			v voteScan
		)
		if err := rows.Scan(append(x.dest(), v.dest()...)...); err != nil {
			return nil, err
		}
		if n := len(out); n == 0 || out[n-1].ID != x.a.ID {
			a, err := x.approval()
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
		if v.userID.Valid {
			last := &out[len(out)-1]
			last.Votes = append(last.Votes, store.ApprovalVote{
				UserID: v.userID.String, Email: v.email.String, Approve: v.approve.Int64 != 0,
				Reason: v.reason.String, Method: v.method.String, Evidence: v.evidence, At: fromMicros(v.at),
			})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// getApproval returns approval id with its votes, or ErrNotFound.
func getApproval(ctx context.Context, q queryer, id string) (store.Approval, error) {
	as, err := queryApprovals(ctx, q, `id = ?`, []any{id}, 0)
	if err != nil {
		return store.Approval{}, err
	}
	if len(as) == 0 {
		return store.Approval{}, fmt.Errorf("%w: approval", store.ErrNotFound)
	}
	return as[0], nil
}

// Lists (approvers, transports) are a JSON array of strings, "[]" when
// empty, and come back in the order given (nil when empty).

// CreateApproval implements store.Store.
func (s *Store) CreateApproval(ctx context.Context, a store.Approval) error {
	if err := store.CheckNewApproval(a); err != nil {
		return fmt.Errorf("sqlite: create approval: %w", err)
	}
	approvers, err := store.EncodeList(a.Approvers)
	if err != nil {
		return fmt.Errorf("sqlite: create approval %q: %w", a.ID, err)
	}
	err = s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO approvals (`+approvalCols+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			a.ID, a.AgentID, a.OwnerID, a.DecisionID, a.Upstream, a.Tool, a.ArgsDigest, a.Arguments, a.Rule,
			approvers, a.Quorum, boolInt(a.SeparationOfDuties), a.BindingMessage, a.RiskScore, a.Source,
			a.ClientData, string(a.State), micros(a.CreatedAt), micros(a.ExpiresAt), micros(a.DecidedAt), a.Reason)
		return mapErr(err)
	})
	if err != nil {
		return fmt.Errorf("sqlite: create approval %q: %w", a.ID, err)
	}
	return nil
}

// GetApproval implements store.Store.
func (s *Store) GetApproval(ctx context.Context, id string) (store.Approval, error) {
	a, err := getApproval(ctx, s.r, id)
	if err != nil {
		return store.Approval{}, fmt.Errorf("sqlite: get approval %q: %w", id, err)
	}
	return a, nil
}

// ListApprovals implements store.Store.
func (s *Store) ListApprovals(ctx context.Context, f store.ApprovalFilter) ([]store.Approval, error) {
	var (
		where []string
		args  []any
	)
	if f.State != "" {
		where = append(where, `state = ?`)
		args = append(args, string(f.State))
	}
	if f.AgentID != "" {
		where = append(where, `agent_id = ?`)
		args = append(args, f.AgentID)
	}
	out, err := queryApprovals(ctx, s.r, strings.Join(where, ` AND `), args, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list approvals: %w", err)
	}
	return out, nil
}

// FindPendingApproval implements store.Store.
func (s *Store) FindPendingApproval(ctx context.Context, agentID, upstream, tool, argsDigest string, now time.Time) (store.Approval, error) {
	as, err := queryApprovals(ctx, s.r,
		`state = 'pending' AND agent_id = ? AND upstream = ? AND tool = ? AND args_digest = ? AND expires_at > ?`,
		[]any{agentID, upstream, tool, argsDigest, now.UnixMicro()}, 1)
	if err == nil && len(as) == 0 {
		err = fmt.Errorf("%w: pending approval", store.ErrNotFound)
	}
	if err != nil {
		return store.Approval{}, fmt.Errorf("sqlite: find pending approval of %q: %w", agentID, err)
	}
	return as[0], nil
}

// VoteApproval implements store.Store. The writer's transaction holds the
// approval from the read of its state to the vote and the change of state.
func (s *Store) VoteApproval(ctx context.Context, id string, v store.ApprovalVote) (store.Approval, error) {
	switch {
	case v.UserID == "":
		return store.Approval{}, fmt.Errorf("sqlite: vote on approval %q: %w", id, invalid("voter's user id is empty"))
	case v.At.IsZero():
		return store.Approval{}, fmt.Errorf("sqlite: vote on approval %q: %w", id, invalid("vote time is zero"))
	}
	us := v.At.UnixMicro()
	var out store.Approval
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var (
			state   string
			expires int64
			quorum  int
		)
		err := tx.QueryRowContext(ctx, `SELECT state, expires_at, quorum FROM approvals WHERE id = ?`, id).
			Scan(&state, &expires, &quorum)
		if err != nil {
			return notFound(err, "approval")
		}
		if state != string(store.ApprovalPending) || expires <= us {
			a, err := getApproval(ctx, tx, id)
			if err != nil {
				return err
			}
			out = a
			return store.NotPending(a, v.At)
		}
		var one int
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM approval_votes WHERE approval_id = ? AND user_id = ?`,
			id, v.UserID).Scan(&one)
		switch {
		case err == nil:
			return fmt.Errorf("%w: user %q has voted on it already", store.ErrAlreadyExists, v.UserID)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO approval_votes
			(approval_id, seq, user_id, email, approve, reason, method, evidence, at)
			VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM approval_votes WHERE approval_id = ?), ?, ?, ?, ?, ?, ?, ?)`,
			id, id, v.UserID, store.NormalizeEmail(v.Email), boolInt(v.Approve), v.Reason, v.Method, v.Evidence,
			us); err != nil {
			return mapErr(err)
		}
		if !v.Approve {
			if _, err := tx.ExecContext(ctx, `UPDATE approvals SET state = 'denied', reason = ?, decided_at = ? WHERE id = ?`,
				v.Reason, us, id); err != nil {
				return err
			}
		} else {
			var approvals int
			if err := tx.QueryRowContext(ctx,
				`SELECT COUNT(*) FROM approval_votes WHERE approval_id = ? AND approve = 1`, id).Scan(&approvals); err != nil {
				return err
			}
			if approvals >= quorum {
				if _, err := tx.ExecContext(ctx, `UPDATE approvals SET state = 'approved', decided_at = ? WHERE id = ?`,
					us, id); err != nil {
					return err
				}
			}
		}
		a, err := getApproval(ctx, tx, id)
		if err != nil {
			return err
		}
		out = a
		return nil
	})
	if err != nil {
		if errors.Is(err, store.ErrNotPending) {
			return out, fmt.Errorf("sqlite: vote on approval %q: %w", id, err)
		}
		return store.Approval{}, fmt.Errorf("sqlite: vote on approval %q: %w", id, err)
	}
	return out, nil
}

// FinishApproval implements store.Store.
func (s *Store) FinishApproval(ctx context.Context, id string, state store.ApprovalState, reason string, at time.Time) (store.Approval, error) {
	switch {
	case state != store.ApprovalExpired && state != store.ApprovalCancelled:
		return store.Approval{}, fmt.Errorf("sqlite: finish approval %q: %w", id,
			invalid("state %q, want %q or %q", state, store.ApprovalExpired, store.ApprovalCancelled))
	case at.IsZero():
		return store.Approval{}, fmt.Errorf("sqlite: finish approval %q: %w", id, invalid("time is zero"))
	}
	var out store.Approval
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE approvals SET state = ?, reason = ?, decided_at = ? WHERE id = ? AND state = 'pending'`,
			string(state), reason, at.UnixMicro(), id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		a, err := getApproval(ctx, tx, id)
		if err != nil {
			return err
		}
		out = a
		if n == 0 {
			return fmt.Errorf("%w: it is %s", store.ErrNotPending, a.State)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, store.ErrNotPending) {
			return out, fmt.Errorf("sqlite: finish approval %q: %w", id, err)
		}
		return store.Approval{}, fmt.Errorf("sqlite: finish approval %q: %w", id, err)
	}
	return out, nil
}

// finishWhere moves the pending approvals that match where (with args) to
// state with reason at `at`, in one write transaction, and returns them.
func (s *Store) finishWhere(ctx context.Context, where string, args []any, state store.ApprovalState, reason string, at time.Time) ([]store.Approval, error) {
	var out []store.Approval
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `UPDATE approvals SET state = ?, reason = ?, decided_at = ?
			WHERE state = 'pending' AND `+where+` RETURNING id`,
			append([]any{string(state), reason, at.UnixMicro()}, args...)...)
		if err != nil {
			return err
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		list, err := json.Marshal(ids)
		if err != nil {
			return err
		}
		out, err = queryApprovals(ctx, tx, `id IN (SELECT value FROM json_each(?))`, []any{string(list)}, 0)
		return err
	})
	return out, err
}

// ExpireApprovals implements store.Store.
func (s *Store) ExpireApprovals(ctx context.Context, now time.Time) ([]store.Approval, error) {
	if now.IsZero() {
		return nil, fmt.Errorf("sqlite: expire approvals: %w", invalid("time is zero"))
	}
	out, err := s.finishWhere(ctx, `expires_at <= ?`, []any{now.UnixMicro()},
		store.ApprovalExpired, store.ApprovalTimeoutReason, now)
	if err != nil {
		return nil, fmt.Errorf("sqlite: expire approvals: %w", err)
	}
	return out, nil
}

// CancelAgentApprovals implements store.Store.
func (s *Store) CancelAgentApprovals(ctx context.Context, agentIDs []string, reason string, at time.Time) ([]store.Approval, error) {
	if at.IsZero() {
		return nil, fmt.Errorf("sqlite: cancel agent approvals: %w", invalid("time is zero"))
	}
	if len(agentIDs) == 0 {
		return nil, nil
	}
	list, err := json.Marshal(agentIDs)
	if err != nil {
		return nil, fmt.Errorf("sqlite: cancel agent approvals: %w", err)
	}
	out, err := s.finishWhere(ctx, `agent_id IN (SELECT value FROM json_each(?))`, []any{string(list)},
		store.ApprovalCancelled, reason, at)
	if err != nil {
		return nil, fmt.Errorf("sqlite: cancel agent approvals: %w", err)
	}
	return out, nil
}

// ---- passkeys ----

const passkeyCols = `id, user_id, public_key, sign_count, aaguid, transports, flags, name, created_at, last_used_at`

func scanPasskey(sc scanner) (store.Passkey, error) {
	var (
		p                store.Passkey
		count            int64
		flags            int64
		transports       string
		created, lastUse sql.NullInt64
	)
	if err := sc.Scan(&p.ID, &p.UserID, &p.PublicKey, &count, &p.AAGUID, &transports, &flags, &p.Name,
		&created, &lastUse); err != nil {
		return store.Passkey{}, err
	}
	ts, err := store.DecodeList(transports)
	if err != nil {
		return store.Passkey{}, fmt.Errorf("passkey transports: %w", err)
	}
	p.SignCount, p.Flags, p.Transports = uint32(count), uint8(flags), ts
	p.CreatedAt = fromMicros(created)
	p.LastUsedAt = fromMicros(lastUse)
	return p, nil
}

// CreatePasskey implements store.Store.
func (s *Store) CreatePasskey(ctx context.Context, p store.Passkey) error {
	switch {
	case len(p.ID) == 0:
		return fmt.Errorf("sqlite: create passkey: %w", invalid("credential id is empty"))
	case p.UserID == "":
		return fmt.Errorf("sqlite: create passkey: %w", invalid("user id is empty"))
	case len(p.PublicKey) == 0:
		return fmt.Errorf("sqlite: create passkey of %q: %w", p.UserID, invalid("public key is empty"))
	}
	transports, err := store.EncodeList(p.Transports)
	if err != nil {
		return fmt.Errorf("sqlite: create passkey of %q: %w", p.UserID, err)
	}
	err = s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO passkeys (`+passkeyCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			p.ID, p.UserID, p.PublicKey, int64(p.SignCount), p.AAGUID, transports, int64(p.Flags), p.Name,
			micros(p.CreatedAt), micros(p.LastUsedAt))
		return mapErr(err)
	})
	if err != nil {
		return fmt.Errorf("sqlite: create passkey of %q: %w", p.UserID, err)
	}
	return nil
}

// ListPasskeys implements store.Store.
func (s *Store) ListPasskeys(ctx context.Context, userID string) ([]store.Passkey, error) {
	rows, err := s.r.QueryContext(ctx,
		`SELECT `+passkeyCols+` FROM passkeys WHERE user_id = ? ORDER BY created_at NULLS FIRST, id`, userID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list passkeys of %q: %w", userID, err)
	}
	defer rows.Close()
	var out []store.Passkey
	for rows.Next() {
		p, err := scanPasskey(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list passkeys of %q: %w", userID, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list passkeys of %q: %w", userID, err)
	}
	return out, nil
}

// GetPasskey implements store.Store.
func (s *Store) GetPasskey(ctx context.Context, id []byte) (store.Passkey, error) {
	p, err := scanPasskey(s.r.QueryRowContext(ctx, `SELECT `+passkeyCols+` FROM passkeys WHERE id = ?`, id))
	if err != nil {
		return store.Passkey{}, fmt.Errorf("sqlite: get passkey: %w", notFound(err, "passkey"))
	}
	return p, nil
}

// UpdatePasskeyUse implements store.Store: one conditional UPDATE in the
// writer's transaction.
func (s *Store) UpdatePasskeyUse(ctx context.Context, id []byte, signCount uint32, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("sqlite: update passkey use: %w", invalid("use time is zero"))
	}
	n := int64(signCount)
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE passkeys SET sign_count = ?, last_used_at = ?
			WHERE id = ? AND (sign_count < ? OR (sign_count = 0 AND ? = 0))`, n, at.UnixMicro(), id, n, n)
		if err != nil {
			return err
		}
		if k, err := res.RowsAffected(); err != nil || k > 0 {
			return err
		}
		var stored int64
		if err := tx.QueryRowContext(ctx, `SELECT sign_count FROM passkeys WHERE id = ?`, id).Scan(&stored); err != nil {
			return notFound(err, "passkey")
		}
		return invalid("sign count %d is not above the stored %d: the authenticator may be cloned", signCount, stored)
	})
	if err != nil {
		return fmt.Errorf("sqlite: update passkey use: %w", err)
	}
	return nil
}

// DeletePasskey implements store.Store.
func (s *Store) DeletePasskey(ctx context.Context, id []byte) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM passkeys WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("%w: passkey", store.ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: delete passkey: %w", err)
	}
	return nil
}

// ---- enrollments ----

const enrollmentCols = `token_hash, user_id, created_by, created_at, expires_at, used_at`

func scanEnrollment(sc scanner) (store.Enrollment, error) {
	var (
		e                      store.Enrollment
		created, expires, used sql.NullInt64
	)
	if err := sc.Scan(&e.TokenHash, &e.UserID, &e.CreatedBy, &created, &expires, &used); err != nil {
		return store.Enrollment{}, err
	}
	e.CreatedAt = fromMicros(created)
	e.ExpiresAt = fromMicros(expires)
	e.UsedAt = fromMicros(used)
	return e, nil
}

// CreateEnrollment implements store.Store.
func (s *Store) CreateEnrollment(ctx context.Context, e store.Enrollment) error {
	switch {
	case len(e.TokenHash) != store.TokenHashSize:
		return fmt.Errorf("sqlite: create enrollment: %w",
			invalid("token hash is %d bytes, want %d", len(e.TokenHash), store.TokenHashSize))
	case e.UserID == "":
		return fmt.Errorf("sqlite: create enrollment: %w", invalid("user id is empty"))
	case e.ExpiresAt.IsZero():
		return fmt.Errorf("sqlite: create enrollment for %q: %w", e.UserID, invalid("no expiry"))
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO enrollments (`+enrollmentCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
			e.TokenHash, e.UserID, e.CreatedBy, micros(e.CreatedAt), micros(e.ExpiresAt), micros(e.UsedAt))
		return mapErr(err)
	})
	if err != nil {
		return fmt.Errorf("sqlite: create enrollment for %q: %w", e.UserID, err)
	}
	return nil
}

// UseEnrollment implements store.Store: one conditional UPDATE in the
// writer's transaction.
func (s *Store) UseEnrollment(ctx context.Context, tokenHash []byte, at time.Time) (store.Enrollment, error) {
	if at.IsZero() {
		return store.Enrollment{}, fmt.Errorf("sqlite: use enrollment: %w", invalid("use time is zero"))
	}
	us := at.UnixMicro()
	var out store.Enrollment
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		e, err := scanEnrollment(tx.QueryRowContext(ctx, `UPDATE enrollments SET used_at = ?
			WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? RETURNING `+enrollmentCols, us, tokenHash, us))
		if errors.Is(err, sql.ErrNoRows) {
			e, err := scanEnrollment(tx.QueryRowContext(ctx,
				`SELECT `+enrollmentCols+` FROM enrollments WHERE token_hash = ?`, tokenHash))
			if err != nil {
				return notFound(err, "enrollment")
			}
			return store.EnrollmentSpent(e)
		}
		if err != nil {
			return err
		}
		out = e
		return nil
	})
	if err != nil {
		return store.Enrollment{}, fmt.Errorf("sqlite: use enrollment: %w", err)
	}
	return out, nil
}
