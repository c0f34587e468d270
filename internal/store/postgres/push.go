package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/interlock-dev/interlock/internal/store"
)

// ---- web push subscriptions ----

const pushCols = `endpoint, id, user_id, p256dh, auth, user_agent, created_at`

func scanPush(row pgx.Row) (store.PushSubscription, error) {
	var (
		p       store.PushSubscription
		created *int64
	)
	if err := row.Scan(&p.Endpoint, &p.ID, &p.UserID, &p.P256dh, &p.Auth, &p.UserAgent, &created); err != nil {
		return store.PushSubscription{}, err
	}
	p.CreatedAt = fromMicros(created)
	return p, nil
}

// SavePushSubscription implements store.Store: one upsert on the endpoint.
func (s *Store) SavePushSubscription(ctx context.Context, p store.PushSubscription) error {
	if err := store.CheckPushSubscription(p); err != nil {
		return fmt.Errorf("postgres: save push subscription: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO push_subscriptions (`+pushCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (endpoint) DO UPDATE SET id = excluded.id, user_id = excluded.user_id,
			p256dh = excluded.p256dh, auth = excluded.auth, user_agent = excluded.user_agent,
			created_at = excluded.created_at`,
		p.Endpoint, p.ID, p.UserID, p.P256dh, p.Auth, p.UserAgent, micros(p.CreatedAt)); err != nil {
		return fmt.Errorf("postgres: save push subscription of %q: %w", p.UserID, mapErr(err))
	}
	return nil
}

// ListPushSubscriptions implements store.Store.
func (s *Store) ListPushSubscriptions(ctx context.Context, userID string) ([]store.PushSubscription, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+pushCols+` FROM push_subscriptions WHERE user_id = $1 ORDER BY created_at NULLS FIRST, id`, userID)
	if isCharError(err) {
		return nil, nil // a user id PostgreSQL refuses as text names no user
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: list push subscriptions of %q: %w", userID, mapErr(err))
	}
	defer rows.Close()
	var out []store.PushSubscription
	for rows.Next() {
		p, err := scanPush(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list push subscriptions of %q: %w", userID, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		if isCharError(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("postgres: list push subscriptions of %q: %w", userID, mapErr(err))
	}
	return out, nil
}

// DeletePushSubscription implements store.Store.
func (s *Store) DeletePushSubscription(ctx context.Context, endpoint string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM push_subscriptions WHERE endpoint = $1`, endpoint)
	if err != nil {
		if isCharError(err) {
			return fmt.Errorf("postgres: delete push subscription: %w: push subscription", store.ErrNotFound)
		}
		return fmt.Errorf("postgres: delete push subscription: %w", mapErr(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: delete push subscription: %w: push subscription", store.ErrNotFound)
	}
	return nil
}

// isCharError reports an argument PostgreSQL refuses as text (a NUL byte or
// invalid UTF-8): it cannot name a stored row.
func isCharError(err error) bool {
	c := pgCode(err)
	return c == codeCharNotInRepertoire || c == codeUntranslatableChar
}
