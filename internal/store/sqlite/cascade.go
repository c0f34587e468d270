package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

var _ store.OwnerCascade = (*Store)(nil)

// ownedLiveAgents selects the ids of the agents the user (the first
// placeholder) owns that are not decommissioned.
const ownedLiveAgents = `SELECT id FROM agents WHERE owner_id = ? AND state <> 'decommissioned'`

// DeactivateOwner implements store.OwnerCascade in one write transaction.
func (s *Store) DeactivateOwner(ctx context.Context, userID string, deleted bool, at time.Time, by, reason string) (store.OwnerCascadeResult, error) {
	switch {
	case userID == "":
		return store.OwnerCascadeResult{}, fmt.Errorf("sqlite: deactivate owner: %w", invalid("user id is empty"))
	case at.IsZero():
		return store.OwnerCascadeResult{}, fmt.Errorf("sqlite: deactivate owner %q: %w", userID, invalid("time is zero"))
	}
	at = store.NormalizeTime(at)
	us := at.UnixMicro()
	var out store.OwnerCascadeResult
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		out = store.OwnerCascadeResult{}
		u, err := scanUser(tx.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, userID))
		if err != nil {
			return notFound(err, "user")
		}
		if u.Active || (deleted && u.DeletedAt.IsZero()) {
			u.Active, u.UpdatedAt = false, at
			if deleted && u.DeletedAt.IsZero() {
				u.DeletedAt = at
			}
			if _, err := tx.ExecContext(ctx, `UPDATE users SET active = 0, updated_at = ?, deleted_at = ? WHERE id = ?`,
				us, micros(u.DeletedAt), userID); err != nil {
				return mapErr(err)
			}
			out.UserChanged = true
		}
		out.User = u

		// The writer's transaction holds the store: the states read here
		// are the ones the UPDATE changes.
		from := map[string]store.AgentState{}
		rows, err := tx.QueryContext(ctx, `SELECT id, state FROM agents WHERE owner_id = ? AND state IN ('active', 'suspended')`, userID)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id, state string
			if err := rows.Scan(&id, &state); err != nil {
				rows.Close()
				return err
			}
			from[id] = store.AgentState(state)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.QueryContext(ctx, `UPDATE agents SET state = 'orphaned', updated_at = ?, state_changed_at = ?,
			state_changed_by = ?, state_reason = ? WHERE owner_id = ? AND state IN ('active', 'suspended')
			RETURNING `+agentCols, us, us, by, reason, userID)
		if err != nil {
			return mapErr(err)
		}
		for rows.Next() {
			a, err := scanAgent(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out.Agents = append(out.Agents, a)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return mapErr(err)
		}
		slices.SortFunc(out.Agents, func(a, b store.Agent) int { return strings.Compare(a.ID, b.ID) })
		if len(out.Agents) > 0 {
			out.AgentsFrom = make(map[string]store.AgentState, len(out.Agents))
			for _, a := range out.Agents {
				out.AgentsFrom[a.ID] = from[a.ID]
			}
		}

		rows, err = tx.QueryContext(ctx, `UPDATE approvals SET state = 'cancelled', reason = ?, decided_at = ?
			WHERE state = 'pending' AND agent_id IN (`+ownedLiveAgents+`) RETURNING id`, reason, us, userID)
		if err != nil {
			return mapErr(err)
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
			return mapErr(err)
		}
		if len(ids) > 0 {
			list, err := json.Marshal(ids)
			if err != nil {
				return err
			}
			if out.Approvals, err = queryApprovals(ctx, tx, `id IN (SELECT value FROM json_each(?))`,
				[]any{string(list)}, 0); err != nil {
				return err
			}
		}

		rows, err = tx.QueryContext(ctx, `UPDATE credentials SET revoked_at = ?, revoke_reason = ?
			WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) AND agent_id IN (`+ownedLiveAgents+`)
			RETURNING `+credCols, us, reason, us, userID)
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
		return store.OwnerCascadeResult{}, fmt.Errorf("sqlite: deactivate owner %q: %w", userID, err)
	}
	return out, nil
}
