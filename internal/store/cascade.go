package store

import (
	"context"
	"time"
)

// OwnerCascade is implemented by stores that can deactivate an owner and
// everything that hangs off them in one transaction.
type OwnerCascade interface {
	// DeactivateOwner, in one transaction: sets the user inactive (and
	// DeletedAt when deleted is true and it is not set yet) with
	// UpdatedAt=at; moves every agent the user owns that is active or
	// suspended to orphaned (StateChangedAt=at, StateChangedBy=by,
	// StateReason=reason, UpdatedAt=at); cancels every pending approval of
	// the agents the user owns that are not decommissioned (Reason=reason,
	// DecidedAt=at); revokes every unexpired credential of those agents
	// that is not revoked yet, used up or not (CredentialFilter.Unexpired
	// at `at`; RevokedAt=at, RevokeReason=reason); and, when it changed
	// anything, bumps the Generation (and on PostgreSQL notifies
	// principals, as every mutation of a principal does, and approvals,
	// one notification per approval cancelled). It returns the user after,
	// the agents orphaned (by id, with the state each was in), the approvals cancelled (newest first,
	// as ListApprovals) and the credentials revoked (by id).
	// ErrNotFound for an unknown user; ErrInvalid for a zero at or an
	// empty userID. Idempotent: a second call changes nothing more and
	// returns empty lists (and UserChanged false).
	DeactivateOwner(ctx context.Context, userID string, deleted bool, at time.Time, by, reason string) (OwnerCascadeResult, error)
}

// OwnerCascadeResult is what DeactivateOwner did.
type OwnerCascadeResult struct {
	// User is the user after the change.
	User User
	// UserChanged: this call made the user inactive, or deleted (when
	// asked to), so it was not already.
	UserChanged bool
	// Agents are the agents orphaned, after the change, and AgentsFrom
	// the state each of them was orphaned from (by agent id).
	Agents      []Agent
	AgentsFrom  map[string]AgentState
	Approvals   []Approval
	Credentials []Credential
}
