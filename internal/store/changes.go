package store

import "context"

// Changes is an optional part of a store that several processes share
// (PostgreSQL's LISTEN/NOTIFY): one process tells the others that a record
// changed, so that they need not poll for it. Delivery is best effort; a
// subscriber still reads the store to learn the state.
type Changes interface {
	// Notify tells every subscriber of topic, in every process on the
	// store, about id.
	Notify(ctx context.Context, topic, id string) error
	// Subscribe calls fn with the id of every notification on topic until
	// ctx ends. It keeps listening across connection failures; after one,
	// it calls fn with "" (something may have been missed). fn must not
	// block.
	Subscribe(ctx context.Context, topic string, fn func(id string))
}

// Change topics.
const (
	// TopicApprovals: an approval request was opened or changed state (id:
	// the approval id).
	TopicApprovals = "approvals"
	// TopicPrincipals: a user, agent or agent token changed (id: the agent
	// id, or "" for any); caches of principals must be dropped.
	TopicPrincipals = "principals"
)
