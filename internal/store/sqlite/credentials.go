package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// ---- signing keys ----

const keyCols = `id, alg, public_jwk, sealed, created_at, retired_at, publish_until`

func scanKey(sc scanner) (store.SigningKey, error) {
	var (
		k                         store.SigningKey
		created, retired, publish sql.NullInt64
	)
	if err := sc.Scan(&k.ID, &k.Alg, &k.PublicJWK, &k.Sealed, &created, &retired, &publish); err != nil {
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
		return fmt.Errorf("sqlite: put signing key: %w", invalid("key id is empty"))
	case k.Alg == "":
		return fmt.Errorf("sqlite: put signing key %q: %w", k.ID, invalid("alg is empty"))
	case len(k.PublicJWK) == 0 || len(k.Sealed) == 0:
		return fmt.Errorf("sqlite: put signing key %q: %w", k.ID, invalid("public or sealed key is empty"))
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO signing_keys (`+keyCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			k.ID, k.Alg, k.PublicJWK, k.Sealed, micros(k.CreatedAt), micros(k.RetiredAt), micros(k.PublishUntil))
		return mapErr(err)
	})
	if err != nil {
		return fmt.Errorf("sqlite: put signing key %q: %w", k.ID, err)
	}
	return nil
}

// ListSigningKeys implements store.Store: newest (CreatedAt) first.
func (s *Store) ListSigningKeys(ctx context.Context) ([]store.SigningKey, error) {
	rows, err := s.r.QueryContext(ctx,
		`SELECT `+keyCols+` FROM signing_keys ORDER BY created_at DESC NULLS LAST, id DESC`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list signing keys: %w", err)
	}
	defer rows.Close()
	var out []store.SigningKey
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list signing keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list signing keys: %w", err)
	}
	return out, nil
}

// RetireSigningKey implements store.Store. A zero at is ErrInvalid.
func (s *Store) RetireSigningKey(ctx context.Context, id string, at, publishUntil time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("sqlite: retire signing key %q: %w", id, invalid("retirement time is zero"))
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE signing_keys SET retired_at = ?, publish_until = ? WHERE id = ?`,
			micros(at), micros(publishUntil), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("%w: signing key", store.ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: retire signing key %q: %w", id, err)
	}
	return nil
}

// ---- credentials ----

const credCols = `id, agent_id, decision_id, upstream, tool, args_digest, key_id, status_list, status_index,
	issued_at, expires_at, uses, used, consumed_at, revoked_at, revoke_reason`

const (
	insCredSQL = `INSERT INTO credentials (` + credCols + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	consCredSQL = `UPDATE credentials SET used = used + 1, consumed_at = ?
		WHERE id = ? AND revoked_at IS NULL AND used < uses AND (expires_at IS NULL OR expires_at > ?)
		RETURNING ` + credCols
	getCredSQL = `SELECT ` + credCols + ` FROM credentials WHERE id = ?`
)

// prepareCredentials prepares the statements of the per-call credential
// paths (see prepareAudit for why the writer's are bound to it).
func (s *Store) prepareCredentials(ctx context.Context) error {
	for _, p := range []struct {
		dst **sql.Stmt
		db  *sql.DB
		sql string
	}{
		{&s.insCred, s.w, insCredSQL},
		{&s.consCred, s.w, consCredSQL},
		{&s.getCred, s.r, getCredSQL},
	} {
		st, err := p.db.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("sqlite: prepare: %w", err)
		}
		*p.dst = st
	}
	return nil
}

func scanCred(sc scanner) (store.Credential, error) {
	var (
		c                                  store.Credential
		issued, expires, consumed, revoked sql.NullInt64
	)
	if err := sc.Scan(&c.ID, &c.AgentID, &c.DecisionID, &c.Upstream, &c.Tool, &c.ArgsDigest, &c.KeyID,
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
	return []any{c.ID, c.AgentID, c.DecisionID, c.Upstream, c.Tool, c.ArgsDigest, c.KeyID, c.StatusList, index,
		micros(c.IssuedAt), micros(c.ExpiresAt), c.Uses, c.Used, micros(c.ConsumedAt), micros(c.RevokedAt),
		c.RevokeReason}
}

// CreateCredential implements store.Store. A credential with an empty ID or
// StatusList, a negative StatusIndex, Uses below 1 or Used outside
// [0, Uses] is ErrInvalid.
func (s *Store) CreateCredential(ctx context.Context, c store.Credential) error {
	if err := store.CheckCredential(c); err != nil {
		return fmt.Errorf("sqlite: create credential: %w", err)
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.StmtContext(ctx, s.insCred).ExecContext(ctx, credArgs(c, c.StatusIndex)...)
		return mapErr(err)
	})
	if err != nil {
		return fmt.Errorf("sqlite: create credential %q: %w", c.ID, err)
	}
	return nil
}

// GetCredential implements store.Store.
func (s *Store) GetCredential(ctx context.Context, id string) (store.Credential, error) {
	c, err := scanCred(s.getCred.QueryRowContext(ctx, id))
	if err != nil {
		return store.Credential{}, fmt.Errorf("sqlite: get credential %q: %w", id, notFound(err, "credential"))
	}
	return c, nil
}

// ListCredentials implements store.Store: newest (IssuedAt) first.
func (s *Store) ListCredentials(ctx context.Context, f store.CredentialFilter) ([]store.Credential, error) {
	var (
		where []string
		args  []any
	)
	if f.AgentID != "" {
		where = append(where, `agent_id = ?`)
		args = append(args, f.AgentID)
	}
	if f.Live {
		where = append(where, `revoked_at IS NULL AND used < uses AND (expires_at IS NULL OR expires_at > ?)`)
		args = append(args, f.Now.UnixMicro())
	}
	if f.Unexpired {
		where = append(where, `revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)`)
		args = append(args, f.Now.UnixMicro())
	}
	q := `SELECT ` + credCols + ` FROM credentials`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	q += ` ORDER BY issued_at DESC NULLS LAST, id DESC`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list credentials: %w", err)
	}
	defer rows.Close()
	var out []store.Credential
	for rows.Next() {
		c, err := scanCred(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list credentials: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list credentials: %w", err)
	}
	return out, nil
}

// credExists reports ErrNotFound unless a credential with id exists, inside
// tx.
func credExists(ctx context.Context, tx *sql.Tx, id string) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM credentials WHERE id = ?`, id).Scan(&one)
	return notFound(err, "credential")
}

// ConsumeCredential implements store.Store: one conditional UPDATE in the
// writer's transaction, so two consumers can never both take the last use.
// A credential whose ExpiresAt is at or before `at` is expired; a zero
// ExpiresAt never expires. A zero at is ErrInvalid.
func (s *Store) ConsumeCredential(ctx context.Context, id string, at time.Time) (store.Credential, error) {
	if at.IsZero() {
		return store.Credential{}, fmt.Errorf("sqlite: consume credential %q: %w", id, invalid("use time is zero"))
	}
	us := at.UnixMicro()
	var out store.Credential
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		c, err := scanCred(tx.StmtContext(ctx, s.consCred).QueryRowContext(ctx, us, id, us))
		if errors.Is(err, sql.ErrNoRows) {
			if err := credExists(ctx, tx, id); err != nil {
				return err
			}
			return store.ErrSpent
		}
		if err != nil {
			return err
		}
		out = c
		return nil
	})
	if err != nil {
		return store.Credential{}, fmt.Errorf("sqlite: consume credential %q: %w", id, err)
	}
	return out, nil
}

// RevokeCredential implements store.Store. A zero at is ErrInvalid.
func (s *Store) RevokeCredential(ctx context.Context, id string, at time.Time, reason string) (store.Credential, error) {
	if at.IsZero() {
		return store.Credential{}, fmt.Errorf("sqlite: revoke credential %q: %w", id, invalid("revocation time is zero"))
	}
	var out store.Credential
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`UPDATE credentials SET revoked_at = ?, revoke_reason = ? WHERE id = ? AND revoked_at IS NULL`,
			at.UnixMicro(), reason, id); err != nil {
			return err
		}
		c, err := scanCred(tx.QueryRowContext(ctx, getCredSQL, id))
		if err != nil {
			return notFound(err, "credential")
		}
		out = c
		return nil
	})
	if err != nil {
		return store.Credential{}, fmt.Errorf("sqlite: revoke credential %q: %w", id, err)
	}
	return out, nil
}

// CountStatusIndexes implements store.Store.
func (s *Store) CountStatusIndexes(ctx context.Context, list string) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM credentials WHERE status_list = ?`, list).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: count status indexes of %q: %w", list, err)
	}
	return n, nil
}

// RevokedStatusIndexes implements store.Store, in ascending order.
func (s *Store) RevokedStatusIndexes(ctx context.Context, list string) ([]int, error) {
	rows, err := s.r.QueryContext(ctx,
		`SELECT status_index FROM credentials WHERE status_list = ? AND revoked_at IS NOT NULL ORDER BY status_index`, list)
	if err != nil {
		return nil, fmt.Errorf("sqlite: revoked status indexes of %q: %w", list, err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var i int
		if err := rows.Scan(&i); err != nil {
			return nil, fmt.Errorf("sqlite: revoked status indexes of %q: %w", list, err)
		}
		out = append(out, i)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: revoked status indexes of %q: %w", list, err)
	}
	return out, nil
}
