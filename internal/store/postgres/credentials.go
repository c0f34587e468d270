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

// ---- signing keys ----

const keyCols = `id, alg, public_jwk, sealed, created_at, retired_at, publish_until`

func scanKey(row pgx.Row) (store.SigningKey, error) {
	var (
		k                         store.SigningKey
		created, retired, publish *int64
	)
	if err := row.Scan(&k.ID, &k.Alg, &k.PublicJWK, &k.Sealed, &created, &retired, &publish); err != nil {
		return store.SigningKey{}, err
	}
	k.CreatedAt = fromMicros(created)
	k.RetiredAt = fromMicros(retired)
	k.PublishUntil = fromMicros(publish)
	return k, nil
}

// PutSigningKey implements store.Store. A key with an empty ID, Alg,
// PublicJWK or Sealed is ErrInvalid.
func (s *Store) PutSigningKey(ctx context.Context, k store.SigningKey) error {
	switch {
	case k.ID == "":
		return fmt.Errorf("postgres: put signing key: %w", invalid("key id is empty"))
	case k.Alg == "":
		return fmt.Errorf("postgres: put signing key %q: %w", k.ID, invalid("alg is empty"))
	case len(k.PublicJWK) == 0 || len(k.Sealed) == 0:
		return fmt.Errorf("postgres: put signing key %q: %w", k.ID, invalid("public or sealed key is empty"))
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO signing_keys (`+keyCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		k.ID, k.Alg, k.PublicJWK, k.Sealed, micros(k.CreatedAt), micros(k.RetiredAt), micros(k.PublishUntil)); err != nil {
		return fmt.Errorf("postgres: put signing key %q: %w", k.ID, mapErr(err))
	}
	return nil
}

// ListSigningKeys implements store.Store: newest (CreatedAt) first.
func (s *Store) ListSigningKeys(ctx context.Context) ([]store.SigningKey, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+keyCols+` FROM signing_keys ORDER BY created_at DESC NULLS LAST, id DESC`)
	if err != nil {
		return nil, fmt.Errorf("postgres: list signing keys: %w", err)
	}
	defer rows.Close()
	var out []store.SigningKey
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list signing keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list signing keys: %w", err)
	}
	return out, nil
}

// RetireSigningKey implements store.Store. A zero at is ErrInvalid.
func (s *Store) RetireSigningKey(ctx context.Context, id string, at, publishUntil time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("postgres: retire signing key %q: %w", id, invalid("retirement time is zero"))
	}
	tag, err := s.pool.Exec(ctx, `UPDATE signing_keys SET retired_at = $1, publish_until = $2 WHERE id = $3`,
		micros(at), micros(publishUntil), id)
	if err != nil {
		return fmt.Errorf("postgres: retire signing key %q: %w", id, notFound(err, "signing key"))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: retire signing key %q: %w: signing key", id, store.ErrNotFound)
	}
	return nil
}

// ---- credentials ----

const credCols = `id, agent_id, decision_id, upstream, tool, args_digest, key_id, status_list, status_index,
	issued_at, expires_at, uses, used, consumed_at, revoked_at, revoke_reason`

const (
	insCredSQL = `INSERT INTO credentials (` + credCols + `)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`
	// consCredSQL is ConsumeCredential's one statement. At READ COMMITTED
	// a second consumer of the same row waits for the first to commit and
	// then evaluates the WHERE clause again on the row the first left, so
	// two consumers never both take the last use.
	consCredSQL = `UPDATE credentials SET used = used + 1, consumed_at = $1
		WHERE id = $2 AND revoked_at IS NULL AND used < uses AND (expires_at IS NULL OR expires_at > $1)
		RETURNING ` + credCols
	getCredSQL = `SELECT ` + credCols + ` FROM credentials WHERE id = $1`
)

func scanCred(row pgx.Row) (store.Credential, error) {
	var (
		c                                  store.Credential
		issued, expires, consumed, revoked *int64
	)
	if err := row.Scan(&c.ID, &c.AgentID, &c.DecisionID, &c.Upstream, &c.Tool, &c.ArgsDigest, &c.KeyID,
		&c.StatusList, &c.StatusIndex, &issued, &expires, &c.Uses, &c.Used, &consumed, &revoked,
		&c.RevokeReason); err != nil {
		return store.Credential{}, err
	}
	c.IssuedAt = fromMicros(issued)
	c.ExpiresAt = fromMicros(expires)
	c.ConsumedAt = fromMicros(consumed)
	c.RevokedAt = fromMicros(revoked)
	return c, nil
}

// credArgs are the arguments of insCredSQL for c at status index index.
func credArgs(c store.Credential, index int) []any {
	return []any{c.ID, c.AgentID, c.DecisionID, c.Upstream, c.Tool, c.ArgsDigest, c.KeyID, c.StatusList, int64(index),
		micros(c.IssuedAt), micros(c.ExpiresAt), int64(c.Uses), int64(c.Used), micros(c.ConsumedAt), micros(c.RevokedAt),
		c.RevokeReason}
}

// CreateCredential implements store.Store. A credential with an empty ID or
// StatusList, a negative StatusIndex, Uses below 1 or Used outside
// [0, Uses] is ErrInvalid.
func (s *Store) CreateCredential(ctx context.Context, c store.Credential) error {
	if err := store.CheckCredential(c); err != nil {
		return fmt.Errorf("postgres: create credential: %w", err)
	}
	if _, err := s.pool.Exec(ctx, insCredSQL, credArgs(c, c.StatusIndex)...); err != nil {
		return fmt.Errorf("postgres: create credential %q: %w", c.ID, mapErr(err))
	}
	return nil
}

// GetCredential implements store.Store.
func (s *Store) GetCredential(ctx context.Context, id string) (store.Credential, error) {
	c, err := scanCred(s.pool.QueryRow(ctx, getCredSQL, id))
	if err != nil {
		return store.Credential{}, fmt.Errorf("postgres: get credential %q: %w", id, notFound(err, "credential"))
	}
	return c, nil
}

// ListCredentials implements store.Store: newest (IssuedAt) first.
func (s *Store) ListCredentials(ctx context.Context, f store.CredentialFilter) ([]store.Credential, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.AgentID != "" {
		where = append(where, `agent_id = `+arg(f.AgentID))
	}
	if f.Live {
		now := arg(f.Now.UnixMicro())
		where = append(where, `revoked_at IS NULL AND used < uses AND (expires_at IS NULL OR expires_at > `+now+`)`)
	}
	if f.Unexpired {
		now := arg(f.Now.UnixMicro())
		where = append(where, `revoked_at IS NULL AND (expires_at IS NULL OR expires_at > `+now+`)`)
	}
	q := `SELECT ` + credCols + ` FROM credentials`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	q += ` ORDER BY issued_at DESC NULLS LAST, id DESC`
	if f.Limit > 0 {
		q += ` LIMIT ` + arg(int64(f.Limit))
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list credentials: %w", err)
	}
	defer rows.Close()
	var out []store.Credential
	for rows.Next() {
		c, err := scanCred(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list credentials: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list credentials: %w", mapErr(err))
	}
	return out, nil
}

// credExists returns ErrNotFound unless a credential with id exists.
func credExists(ctx context.Context, q querier, id string) error {
	var one int32
	err := q.QueryRow(ctx, `SELECT 1 FROM credentials WHERE id = $1`, id).Scan(&one)
	return notFound(err, "credential")
}

// ConsumeCredential implements store.Store: one conditional UPDATE, so two
// consumers (in any replicas) can never both take the last use. Only when
// it matches nothing does a second statement tell an unknown id
// (ErrNotFound) from a spent credential (credentials are never deleted).
// A credential whose ExpiresAt is at or before `at` is expired; a zero
// ExpiresAt never expires. A zero at is ErrInvalid.
func (s *Store) ConsumeCredential(ctx context.Context, id string, at time.Time) (store.Credential, error) {
	if at.IsZero() {
		return store.Credential{}, fmt.Errorf("postgres: consume credential %q: %w", id, invalid("use time is zero"))
	}
	c, err := scanCred(s.pool.QueryRow(ctx, consCredSQL, at.UnixMicro(), id))
	if errors.Is(err, pgx.ErrNoRows) {
		if err = credExists(ctx, s.pool, id); err == nil {
			err = store.ErrSpent
		}
	}
	if err != nil {
		return store.Credential{}, fmt.Errorf("postgres: consume credential %q: %w", id, notFound(err, "credential"))
	}
	return c, nil
}

// RevokeCredential implements store.Store. A zero at is ErrInvalid. The
// conditional UPDATE and the read are separate statements in one
// transaction: the read's fresh snapshot shows the first revocation's time
// and reason even when a concurrent one won the race.
func (s *Store) RevokeCredential(ctx context.Context, id string, at time.Time, reason string) (store.Credential, error) {
	if at.IsZero() {
		return store.Credential{}, fmt.Errorf("postgres: revoke credential %q: %w", id, invalid("revocation time is zero"))
	}
	var out store.Credential
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx,
			`UPDATE credentials SET revoked_at = $1, revoke_reason = $2 WHERE id = $3 AND revoked_at IS NULL`,
			at.UnixMicro(), reason, id); err != nil {
			return notFound(err, "credential")
		}
		c, err := scanCred(tx.QueryRow(ctx, getCredSQL, id))
		if err != nil {
			return notFound(err, "credential")
		}
		out = c
		return nil
	})
	if err != nil {
		return store.Credential{}, fmt.Errorf("postgres: revoke credential %q: %w", id, err)
	}
	return out, nil
}

// CountStatusIndexes implements store.Store.
func (s *Store) CountStatusIndexes(ctx context.Context, list string) (int, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM credentials WHERE status_list = $1`, list).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: count status indexes of %q: %w", list, mapErr(err))
	}
	return int(n), nil
}

// RevokedStatusIndexes implements store.Store, in ascending order.
func (s *Store) RevokedStatusIndexes(ctx context.Context, list string) ([]int, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT status_index FROM credentials WHERE status_list = $1 AND revoked_at IS NOT NULL ORDER BY status_index`, list)
	if err != nil {
		return nil, fmt.Errorf("postgres: revoked status indexes of %q: %w", list, err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var i int64
		if err := rows.Scan(&i); err != nil {
			return nil, fmt.Errorf("postgres: revoked status indexes of %q: %w", list, err)
		}
		out = append(out, int(i))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: revoked status indexes of %q: %w", list, mapErr(err))
	}
	return out, nil
}
