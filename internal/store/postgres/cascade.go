package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/interlock-dev/interlock/internal/store"
)

var _ store.OwnerCascade = (*Store)(nil)

// DeactivateOwner implements store.OwnerCascade in one transaction (run
// again whole when PostgreSQL aborts it as a deadlock victim or for a
// serialisation failure). The user's row is locked first, so two cascades
// of one owner run one after the other; at READ COMMITTED each UPDATE that
// waits for a row another transaction holds evaluates its WHERE again on
// the row that one left, so every agent, approval and credential changes
// once.
func (s *Store) DeactivateOwner(ctx context.Context, userID string, deleted bool, at time.Time, by, reason string) (store.OwnerCascadeResult, error) {
	switch {
	case userID == "":
		return store.OwnerCascadeResult{}, fmt.Errorf("postgres: deactivate owner: %w", invalid("user id is empty"))
	case at.IsZero():
		return store.OwnerCascadeResult{}, fmt.Errorf("postgres: deactivate owner %q: %w", userID, invalid("time is zero"))
	}
	at = store.NormalizeTime(at)
	us := at.UnixMicro()
	var out store.OwnerCascadeResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		out = store.OwnerCascadeResult{}
		u, err := scanUser(tx.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE id = $1 FOR UPDATE`, userID))
		if err != nil {
			return notFound(err, "user")
		}
		if u.Active || (deleted && u.DeletedAt.IsZero()) {
			u.Active, u.UpdatedAt = false, at
			if deleted && u.DeletedAt.IsZero() {
				u.DeletedAt = at
			}
			if _, err := tx.Exec(ctx, `UPDATE users SET active = 0, updated_at = $1, deleted_at = $2 WHERE id = $3`,
				us, micros(u.DeletedAt), userID); err != nil {
				return mapErr(err)
			}
			out.UserChanged = true
		}
		out.User = u

		// The subquery locks the agents it picks (FOR UPDATE evaluates its
		// WHERE again on a row it waited for), so old.state is the state
		// each agent leaves.
		rows, err := tx.Query(ctx, `UPDATE agents SET state = 'orphaned', updated_at = $1, state_changed_at = $1,
			state_changed_by = $2, state_reason = $3
			FROM (SELECT id, state FROM agents WHERE owner_id = $4 AND state IN ('active', 'suspended') FOR UPDATE) old
			WHERE agents.id = old.id
			RETURNING old.state, `+qualify("agents", agentCols), us, by, reason, userID)
		if err != nil {
			return mapErr(err)
		}
		for rows.Next() {
			var (
				x    agentScan
				from string
			)
			if err := rows.Scan(append([]any{&from}, x.dest()...)...); err != nil {
				rows.Close()
				return err
			}
			a, err := x.agent()
			if err != nil {
				rows.Close()
				return err
			}
			out.Agents = append(out.Agents, a)
			if out.AgentsFrom == nil {
				out.AgentsFrom = map[string]store.AgentState{}
			}
			out.AgentsFrom[a.ID] = store.AgentState(from)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return mapErr(err)
		}
		slices.SortFunc(out.Agents, func(a, b store.Agent) int { return strings.Compare(a.ID, b.ID) })

		rows, err = tx.Query(ctx, `UPDATE approvals SET state = 'cancelled', reason = $1, decided_at = $2
			WHERE state = 'pending' AND agent_id IN (SELECT id FROM agents WHERE owner_id = $3 AND state <> 'decommissioned')
			RETURNING id`, reason, us, userID)
		if err != nil {
			return mapErr(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return mapErr(err)
		}
		if len(ids) > 0 {
			if out.Approvals, err = queryApprovals(ctx, tx, `id = ANY($1::text[])`, []any{ids}, 0); err != nil {
				return err
			}
			// Delivered at commit: waiters in every process wake at once.
			if _, err := tx.Exec(ctx, `SELECT pg_notify('interlock_`+store.TopicApprovals+`_' || left(md5(current_schema()), 8), id)
				FROM unnest($1::text[]) AS id`, ids); err != nil {
				return fmt.Errorf("notify approvals: %w", err)
			}
		}

		rows, err = tx.Query(ctx, `UPDATE credentials SET revoked_at = $1, revoke_reason = $2
			WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)
			AND agent_id IN (SELECT id FROM agents WHERE owner_id = $3 AND state <> 'decommissioned')
			RETURNING `+credCols, us, reason, userID)
		if err != nil {
			return mapErr(err)
		}
		for rows.Next() {
			c, err := scanCred(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out.Credentials = append(out.Credentials, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return mapErr(err)
		}
		slices.SortFunc(out.Credentials, func(a, b store.Credential) int { return strings.Compare(a.ID, b.ID) })

		if !out.UserChanged && len(out.Agents) == 0 && len(out.Approvals) == 0 && len(out.Credentials) == 0 {
			return nil
		}
		return bump(ctx, tx)
	})
	if err != nil {
		return store.OwnerCascadeResult{}, fmt.Errorf("postgres: deactivate owner %q: %w", userID, err)
	}
	return out, nil
}
