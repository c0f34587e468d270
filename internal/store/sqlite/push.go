package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/interlock-dev/interlock/internal/store"
)

// ---- web push subscriptions ----

const pushCols = `endpoint, id, user_id, p256dh, auth, user_agent, created_at`

func scanPush(sc scanner) (store.PushSubscription, error) {
	var (
		p       store.PushSubscription
		created sql.NullInt64
	)
	if err := sc.Scan(&p.Endpoint, &p.ID, &p.UserID, &p.P256dh, &p.Auth, &p.UserAgent, &created); err != nil {
		return store.PushSubscription{}, err
	}
	p.CreatedAt = fromMicros(created)
	return p, nil
}

// SavePushSubscription implements store.Store: an upsert on the endpoint.
func (s *Store) SavePushSubscription(ctx context.Context, p store.PushSubscription) error {
	if err := store.CheckPushSubscription(p); err != nil {
		return fmt.Errorf("sqlite: save push subscription: %w", err)
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO push_subscriptions (`+pushCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (endpoint) DO UPDATE SET id = excluded.id, user_id = excluded.user_id,
				p256dh = excluded.p256dh, auth = excluded.auth, user_agent = excluded.user_agent,
				created_at = excluded.created_at`,
			p.Endpoint, p.ID, p.UserID, p.P256dh, p.Auth, p.UserAgent, micros(p.CreatedAt))
		return mapErr(err)
	})
	if err != nil {
		return fmt.Errorf("sqlite: save push subscription of %q: %w", p.UserID, err)
	}
	return nil
}

// ListPushSubscriptions implements store.Store.
func (s *Store) ListPushSubscriptions(ctx context.Context, userID string) ([]store.PushSubscription, error) {
	rows, err := s.r.QueryContext(ctx,
		`SELECT `+pushCols+` FROM push_subscriptions WHERE user_id = ? ORDER BY created_at NULLS FIRST, id`, userID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list push subscriptions of %q: %w", userID, err)
	}
	defer rows.Close()
	var out []store.PushSubscription
	for rows.Next() {
		p, err := scanPush(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list push subscriptions of %q: %w", userID, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list push subscriptions of %q: %w", userID, err)
	}
	return out, nil
}

// DeletePushSubscription implements store.Store.
func (s *Store) DeletePushSubscription(ctx context.Context, endpoint string) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM push_subscriptions WHERE endpoint = ?`, endpoint)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("%w: push subscription", store.ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: delete push subscription: %w", err)
	}
	return nil
}
