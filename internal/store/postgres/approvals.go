package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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
// first (ids compare by bytes: the column is COLLATE "C").
const approvalOrder = `created_at DESC NULLS LAST, id DESC`

// rowsQuerier is a pgx.Tx or the pool.
type rowsQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// approvalScan holds the raw columns of an approval row.
type approvalScan struct {
	a                         store.Approval
	approvers, state          string
	quorum, risk              int64
	sod                       int32
	created, expires, decided *int64
}

func (x *approvalScan) dest() []any {
	a := &x.a
	return []any{&a.ID, &a.AgentID, &a.OwnerID, &a.DecisionID, &a.Upstream, &a.Tool, &a.ArgsDigest, &a.Arguments,
		&a.Rule, &x.approvers, &x.quorum, &x.sod, &a.BindingMessage, &x.risk, &a.Source, &a.ClientData,
		&x.state, &x.created, &x.expires, &x.decided, &a.Reason}
}

func (x *approvalScan) approval() (store.Approval, error) {
	a := x.a
	approvers, err := store.DecodeList(x.approvers)
	if err != nil {
		return store.Approval{}, fmt.Errorf("approval %q approvers: %w", a.ID, err)
	}
	a.Approvers = approvers
	a.Quorum, a.RiskScore = int(x.quorum), int(x.risk)
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
	userID, email, reason, method *string
	approve                       *int32
	at                            *int64
	evidence                      []byte
}

func (x *voteScan) dest() []any {
	return []any{&x.userID, &x.email, &x.approve, &x.reason, &x.method, &x.evidence, &x.at}
}

// queryApprovals returns the approvals that match where (with args, whose
// placeholders it numbers on from), newest first and at most limit of them
// (0: all), each with its votes, in one statement (so one snapshot).
func queryApprovals(ctx context.Context, q rowsQuerier, where string, args []any, limit int) ([]store.Approval, error) {
	sub := `SELECT ` + approvalCols + ` FROM approvals`
	if where != "" {
		sub += ` WHERE ` + where
	}
	sub += ` ORDER BY ` + approvalOrder
	if limit > 0 {
		args = append(args, int64(limit))
		sub += ` LIMIT $` + strconv.Itoa(len(args))
	}
	rows, err := q.Query(ctx, `SELECT `+approvalColsA+`,
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
		if v.userID != nil {
			last := &out[len(out)-1]
			vote := store.ApprovalVote{UserID: *v.userID, Evidence: v.evidence, At: fromMicros(v.at)}
			if v.email != nil {
				vote.Email = *v.email
			}
			if v.reason != nil {
				vote.Reason = *v.reason
			}
			if v.method != nil {
				vote.Method = *v.method
			}
			vote.Approve = v.approve != nil && *v.approve != 0
			last.Votes = append(last.Votes, vote)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// getApproval returns approval id with its votes, or ErrNotFound.
func getApproval(ctx context.Context, q rowsQuerier, id string) (store.Approval, error) {
	as, err := queryApprovals(ctx, q, `id = $1`, []any{id}, 0)
	if err != nil {
		return store.Approval{}, notFound(err, "approval")
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
		return fmt.Errorf("postgres: create approval: %w", err)
	}
	approvers, err := store.EncodeList(a.Approvers)
	if err != nil {
		return fmt.Errorf("postgres: create approval %q: %w", a.ID, err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO approvals (`+approvalCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)`,
		a.ID, a.AgentID, a.OwnerID, a.DecisionID, a.Upstream, a.Tool, a.ArgsDigest, a.Arguments, a.Rule,
		approvers, int64(a.Quorum), boolInt(a.SeparationOfDuties), a.BindingMessage, int64(a.RiskScore), a.Source,
		a.ClientData, string(a.State), micros(a.CreatedAt), micros(a.ExpiresAt), micros(a.DecidedAt),
		a.Reason); err != nil {
		return fmt.Errorf("postgres: create approval %q: %w", a.ID, mapErr(err))
	}
	return nil
}

// GetApproval implements store.Store.
func (s *Store) GetApproval(ctx context.Context, id string) (store.Approval, error) {
	a, err := getApproval(ctx, s.pool, id)
	if err != nil {
		return store.Approval{}, fmt.Errorf("postgres: get approval %q: %w", id, err)
	}
	return a, nil
}

// ListApprovals implements store.Store.
func (s *Store) ListApprovals(ctx context.Context, f store.ApprovalFilter) ([]store.Approval, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.State != "" {
		where = append(where, `state = `+arg(string(f.State)))
	}
	if f.AgentID != "" {
		where = append(where, `agent_id = `+arg(f.AgentID))
	}
	out, err := queryApprovals(ctx, s.pool, strings.Join(where, ` AND `), args, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: list approvals: %w", mapErr(err))
	}
	return out, nil
}

// FindPendingApproval implements store.Store.
func (s *Store) FindPendingApproval(ctx context.Context, agentID, upstream, tool, argsDigest string, now time.Time) (store.Approval, error) {
	as, err := queryApprovals(ctx, s.pool,
		`state = 'pending' AND agent_id = $1 AND upstream = $2 AND tool = $3 AND args_digest = $4 AND expires_at > $5`,
		[]any{agentID, upstream, tool, argsDigest, now.UnixMicro()}, 1)
	switch {
	case err != nil:
		err = notFound(err, "pending approval")
	case len(as) == 0:
		err = fmt.Errorf("%w: pending approval", store.ErrNotFound)
	}
	if err != nil {
		return store.Approval{}, fmt.Errorf("postgres: find pending approval of %q: %w", agentID, err)
	}
	return as[0], nil
}

// VoteApproval implements store.Store. The transaction locks the
// approval's row (SELECT ... FOR UPDATE) before it reads its state, so
// concurrent voters, in any replicas, take turns: each sees the votes and
// the state the one before it left.
func (s *Store) VoteApproval(ctx context.Context, id string, v store.ApprovalVote) (store.Approval, error) {
	switch {
	case v.UserID == "":
		return store.Approval{}, fmt.Errorf("postgres: vote on approval %q: %w", id, invalid("voter's user id is empty"))
	case v.At.IsZero():
		return store.Approval{}, fmt.Errorf("postgres: vote on approval %q: %w", id, invalid("vote time is zero"))
	}
	us := v.At.UnixMicro()
	var out store.Approval
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		out = store.Approval{}
		var (
			state           string
			expires, quorum int64
		)
		err := tx.QueryRow(ctx, `SELECT state, expires_at, quorum FROM approvals WHERE id = $1 FOR UPDATE`, id).
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
		var one int32
		err = tx.QueryRow(ctx, `SELECT 1 FROM approval_votes WHERE approval_id = $1 AND user_id = $2`,
			id, v.UserID).Scan(&one)
		switch {
		case err == nil:
			return fmt.Errorf("%w: user %q has voted on it already", store.ErrAlreadyExists, v.UserID)
		case !errors.Is(err, pgx.ErrNoRows):
			return mapErr(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO approval_votes
			(approval_id, seq, user_id, email, approve, reason, method, evidence, at)
			VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM approval_votes WHERE approval_id = $1),
				$2, $3, $4, $5, $6, $7, $8)`,
			id, v.UserID, store.NormalizeEmail(v.Email), boolInt(v.Approve), v.Reason, v.Method, v.Evidence,
			us); err != nil {
			return mapErr(err)
		}
		if !v.Approve {
			if _, err := tx.Exec(ctx, `UPDATE approvals SET state = 'denied', reason = $1, decided_at = $2 WHERE id = $3`,
				v.Reason, us, id); err != nil {
				return mapErr(err)
			}
		} else {
			var approvals int64
			if err := tx.QueryRow(ctx,
				`SELECT COUNT(*) FROM approval_votes WHERE approval_id = $1 AND approve = 1`, id).Scan(&approvals); err != nil {
				return err
			}
			if approvals >= quorum {
				if _, err := tx.Exec(ctx, `UPDATE approvals SET state = 'approved', decided_at = $1 WHERE id = $2`,
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
			return out, fmt.Errorf("postgres: vote on approval %q: %w", id, err)
		}
		return store.Approval{}, fmt.Errorf("postgres: vote on approval %q: %w", id, err)
	}
	return out, nil
}

// FinishApproval implements store.Store: one conditional UPDATE, then a
// read of the approval in the same transaction.
func (s *Store) FinishApproval(ctx context.Context, id string, state store.ApprovalState, reason string, at time.Time) (store.Approval, error) {
	switch {
	case state != store.ApprovalExpired && state != store.ApprovalCancelled:
		return store.Approval{}, fmt.Errorf("postgres: finish approval %q: %w", id,
			invalid("state %q, want %q or %q", state, store.ApprovalExpired, store.ApprovalCancelled))
	case at.IsZero():
		return store.Approval{}, fmt.Errorf("postgres: finish approval %q: %w", id, invalid("time is zero"))
	}
	var out store.Approval
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		out = store.Approval{}
		tag, err := tx.Exec(ctx,
			`UPDATE approvals SET state = $1, reason = $2, decided_at = $3 WHERE id = $4 AND state = 'pending'`,
			string(state), reason, at.UnixMicro(), id)
		if err != nil {
			return notFound(err, "approval")
		}
		a, err := getApproval(ctx, tx, id)
		if err != nil {
			return err
		}
		out = a
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: it is %s", store.ErrNotPending, a.State)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, store.ErrNotPending) {
			return out, fmt.Errorf("postgres: finish approval %q: %w", id, err)
		}
		return store.Approval{}, fmt.Errorf("postgres: finish approval %q: %w", id, err)
	}
	return out, nil
}

// finishWhere moves the pending approvals that match where (whose
// placeholders start at $4, with args) to state with reason at `at`, in one
// transaction, and returns them. At READ COMMITTED an UPDATE that waits
// for a row another transaction (a vote, another sweep) holds evaluates
// its WHERE again on the row that one left, so each approval leaves
// pending once.
func (s *Store) finishWhere(ctx context.Context, where string, args []any, state store.ApprovalState, reason string, at time.Time) ([]store.Approval, error) {
	var out []store.Approval
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		out = nil
		rows, err := tx.Query(ctx, `UPDATE approvals SET state = $1, reason = $2, decided_at = $3
			WHERE state = 'pending' AND `+where+` RETURNING id`,
			append([]any{string(state), reason, at.UnixMicro()}, args...)...)
		if err != nil {
			return mapErr(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return mapErr(err)
		}
		if len(ids) == 0 {
			return nil
		}
		out, err = queryApprovals(ctx, tx, `id = ANY($1::text[])`, []any{ids}, 0)
		return err
	})
	return out, err
}

// ExpireApprovals implements store.Store.
func (s *Store) ExpireApprovals(ctx context.Context, now time.Time) ([]store.Approval, error) {
	if now.IsZero() {
		return nil, fmt.Errorf("postgres: expire approvals: %w", invalid("time is zero"))
	}
	out, err := s.finishWhere(ctx, `expires_at <= $4`, []any{now.UnixMicro()},
		store.ApprovalExpired, store.ApprovalTimeoutReason, now)
	if err != nil {
		return nil, fmt.Errorf("postgres: expire approvals: %w", err)
	}
	return out, nil
}

// CancelAgentApprovals implements store.Store.
func (s *Store) CancelAgentApprovals(ctx context.Context, agentIDs []string, reason string, at time.Time) ([]store.Approval, error) {
	if at.IsZero() {
		return nil, fmt.Errorf("postgres: cancel agent approvals: %w", invalid("time is zero"))
	}
	if len(agentIDs) == 0 {
		return nil, nil
	}
	out, err := s.finishWhere(ctx, `agent_id = ANY($4::text[])`, []any{agentIDs},
		store.ApprovalCancelled, reason, at)
	if err != nil {
		return nil, fmt.Errorf("postgres: cancel agent approvals: %w", err)
	}
	return out, nil
}

// ---- passkeys ----

const passkeyCols = `id, user_id, public_key, sign_count, aaguid, transports, flags, name, created_at, last_used_at`

func scanPasskey(row pgx.Row) (store.Passkey, error) {
	var (
		p                store.Passkey
		count            int64
		flags            int32
		transports       string
		created, lastUse *int64
	)
	if err := row.Scan(&p.ID, &p.UserID, &p.PublicKey, &count, &p.AAGUID, &transports, &flags, &p.Name,
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
		return fmt.Errorf("postgres: create passkey: %w", invalid("credential id is empty"))
	case p.UserID == "":
		return fmt.Errorf("postgres: create passkey: %w", invalid("user id is empty"))
	case len(p.PublicKey) == 0:
		return fmt.Errorf("postgres: create passkey of %q: %w", p.UserID, invalid("public key is empty"))
	}
	transports, err := store.EncodeList(p.Transports)
	if err != nil {
		return fmt.Errorf("postgres: create passkey of %q: %w", p.UserID, err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO passkeys (`+passkeyCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		p.ID, p.UserID, p.PublicKey, int64(p.SignCount), p.AAGUID, transports, int32(p.Flags), p.Name,
		micros(p.CreatedAt), micros(p.LastUsedAt)); err != nil {
		return fmt.Errorf("postgres: create passkey of %q: %w", p.UserID, mapErr(err))
	}
	return nil
}

// ListPasskeys implements store.Store.
func (s *Store) ListPasskeys(ctx context.Context, userID string) ([]store.Passkey, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+passkeyCols+` FROM passkeys WHERE user_id = $1 ORDER BY created_at NULLS FIRST, id`, userID)
	if err != nil {
		return nil, fmt.Errorf("postgres: list passkeys of %q: %w", userID, err)
	}
	defer rows.Close()
	var out []store.Passkey
	for rows.Next() {
		p, err := scanPasskey(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list passkeys of %q: %w", userID, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list passkeys of %q: %w", userID, mapErr(err))
	}
	return out, nil
}

// GetPasskey implements store.Store.
func (s *Store) GetPasskey(ctx context.Context, id []byte) (store.Passkey, error) {
	p, err := scanPasskey(s.pool.QueryRow(ctx, `SELECT `+passkeyCols+` FROM passkeys WHERE id = $1`, id))
	if err != nil {
		return store.Passkey{}, fmt.Errorf("postgres: get passkey: %w", notFound(err, "passkey"))
	}
	return p, nil
}

// UpdatePasskeyUse implements store.Store: one conditional UPDATE, so of
// two uses with the same count (a replayed or cloned authenticator) at
// most one is recorded. Only when it matches nothing does a second
// statement tell an unknown id from a count that did not grow.
func (s *Store) UpdatePasskeyUse(ctx context.Context, id []byte, signCount uint32, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("postgres: update passkey use: %w", invalid("use time is zero"))
	}
	n := int64(signCount)
	tag, err := s.pool.Exec(ctx, `UPDATE passkeys SET sign_count = $1, last_used_at = $2
		WHERE id = $3 AND (sign_count < $1 OR (sign_count = 0 AND $1 = 0))`, n, at.UnixMicro(), id)
	if err != nil {
		return fmt.Errorf("postgres: update passkey use: %w", mapErr(err))
	}
	if tag.RowsAffected() > 0 {
		return nil
	}
	var stored int64
	if err := s.pool.QueryRow(ctx, `SELECT sign_count FROM passkeys WHERE id = $1`, id).Scan(&stored); err != nil {
		return fmt.Errorf("postgres: update passkey use: %w", notFound(err, "passkey"))
	}
	return fmt.Errorf("postgres: update passkey use: %w",
		invalid("sign count %d is not above the stored %d: the authenticator may be cloned", signCount, stored))
}

// DeletePasskey implements store.Store.
func (s *Store) DeletePasskey(ctx context.Context, id []byte) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM passkeys WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("postgres: delete passkey: %w", mapErr(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: delete passkey: %w: passkey", store.ErrNotFound)
	}
	return nil
}

// ---- enrollments ----

const enrollmentCols = `token_hash, user_id, created_by, created_at, expires_at, used_at`

func scanEnrollment(row pgx.Row) (store.Enrollment, error) {
	var (
		e                      store.Enrollment
		created, expires, used *int64
	)
	if err := row.Scan(&e.TokenHash, &e.UserID, &e.CreatedBy, &created, &expires, &used); err != nil {
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
		return fmt.Errorf("postgres: create enrollment: %w",
			invalid("token hash is %d bytes, want %d", len(e.TokenHash), store.TokenHashSize))
	case e.UserID == "":
		return fmt.Errorf("postgres: create enrollment: %w", invalid("user id is empty"))
	case e.ExpiresAt.IsZero():
		return fmt.Errorf("postgres: create enrollment for %q: %w", e.UserID, invalid("no expiry"))
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO enrollments (`+enrollmentCols+`) VALUES ($1, $2, $3, $4, $5, $6)`,
		e.TokenHash, e.UserID, e.CreatedBy, micros(e.CreatedAt), micros(e.ExpiresAt), micros(e.UsedAt)); err != nil {
		return fmt.Errorf("postgres: create enrollment for %q: %w", e.UserID, mapErr(err))
	}
	return nil
}

// UseEnrollment implements store.Store: one conditional UPDATE (at READ
// COMMITTED a second user of the row waits for the first and then finds
// it used), and only when it matches nothing a read that tells an unknown
// hash from a used or expired enrollment.
func (s *Store) UseEnrollment(ctx context.Context, tokenHash []byte, at time.Time) (store.Enrollment, error) {
	if at.IsZero() {
		return store.Enrollment{}, fmt.Errorf("postgres: use enrollment: %w", invalid("use time is zero"))
	}
	us := at.UnixMicro()
	e, err := scanEnrollment(s.pool.QueryRow(ctx, `UPDATE enrollments SET used_at = $1
		WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING `+enrollmentCols, us, tokenHash))
	if errors.Is(err, pgx.ErrNoRows) {
		old, err := scanEnrollment(s.pool.QueryRow(ctx,
			`SELECT `+enrollmentCols+` FROM enrollments WHERE token_hash = $1`, tokenHash))
		if err != nil {
			return store.Enrollment{}, fmt.Errorf("postgres: use enrollment: %w", notFound(err, "enrollment"))
		}
		return store.Enrollment{}, fmt.Errorf("postgres: use enrollment: %w", store.EnrollmentSpent(old))
	}
	if err != nil {
		return store.Enrollment{}, fmt.Errorf("postgres: use enrollment: %w", mapErr(err))
	}
	return e, nil
}
