package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// migration is one numbered schema step. Its statements run in one
// transaction together with the row that records it in the migrations table.
//
// The schema is kept portable to PostgreSQL: TEXT ids, BIGINT unix
// microseconds (UTC) for timestamps with NULL for the zero time, INTEGER 0/1
// for booleans, roles as a JSON text array, and BLOB for hashes and meta
// values (BYTEA in PostgreSQL, the only spelling that differs).
type migration struct {
	stmts []string
}

// migrations are applied in order; migration i is recorded as number i+1.
// Never edit or reorder an applied migration: append a new one.
var migrations = []migration{
	{stmts: []string{
		`CREATE TABLE users (
			id         TEXT    NOT NULL PRIMARY KEY,
			email      TEXT    NOT NULL UNIQUE,
			name       TEXT    NOT NULL,
			roles      TEXT    NOT NULL,
			active     INTEGER NOT NULL CHECK (active IN (0, 1)),
			source     TEXT    NOT NULL,
			created_at BIGINT,
			updated_at BIGINT
		)`,
		`CREATE TABLE agents (
			id         TEXT NOT NULL PRIMARY KEY,
			name       TEXT NOT NULL,
			owner_id   TEXT NOT NULL REFERENCES users (id),
			department TEXT NOT NULL,
			purpose    TEXT NOT NULL,
			state      TEXT NOT NULL CHECK (state IN ('active', 'suspended', 'orphaned', 'decommissioned')),
			created_at BIGINT,
			updated_at BIGINT
		)`,
		`CREATE INDEX agents_owner_id ON agents (owner_id)`,
		`CREATE TABLE agent_tokens (
			id           TEXT NOT NULL PRIMARY KEY,
			agent_id     TEXT NOT NULL REFERENCES agents (id),
			hash         BLOB NOT NULL UNIQUE,
			created_at   BIGINT,
			expires_at   BIGINT,
			revoked_at   BIGINT,
			last_used_at BIGINT
		)`,
		`CREATE INDEX agent_tokens_agent_id ON agent_tokens (agent_id, created_at, id)`,
		`CREATE TABLE generation (
			id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
			value BIGINT  NOT NULL
		)`,
		`INSERT INTO generation (id, value) VALUES (1, 0)`,
		`CREATE TABLE meta (
			key   TEXT NOT NULL PRIMARY KEY,
			value BLOB NOT NULL
		)`,
	}},
	// 2: the audit chain, its checkpoints and budget counters.
	//
	// seq is spelled INTEGER PRIMARY KEY so that SQLite makes it the rowid
	// (a 64-bit integer, and no second B-tree): in PostgreSQL it is BIGINT
	// PRIMARY KEY. amount is REAL here and DOUBLE PRECISION there. Nothing
	// else differs. budget_entries has no key of its own: it is only ever
	// summed and pruned.
	{stmts: []string{
		`CREATE TABLE audit_events (
			seq       INTEGER NOT NULL PRIMARY KEY,
			at        BIGINT,
			type      TEXT    NOT NULL,
			call_id   TEXT    NOT NULL,
			agent_id  TEXT    NOT NULL,
			data      BLOB    NOT NULL,
			prev_hash BLOB    NOT NULL,
			hash      BLOB    NOT NULL
		)`,
		`CREATE INDEX audit_events_at ON audit_events (at)`,
		`CREATE INDEX audit_events_agent_id ON audit_events (agent_id, seq)`,
		`CREATE TABLE checkpoints (
			seq       INTEGER NOT NULL PRIMARY KEY,
			hash      BLOB    NOT NULL,
			at        BIGINT,
			key_id    TEXT    NOT NULL,
			signature BLOB    NOT NULL
		)`,
		`CREATE TABLE budget_entries (
			key     TEXT   NOT NULL,
			at      BIGINT NOT NULL,
			amount  REAL   NOT NULL,
			call_id TEXT   NOT NULL
		)`,
		`CREATE INDEX budget_entries_key_at ON budget_entries (key, at)`,
	}},
	// 3: audit_events keeps no secondary index. Every append paid for the
	// two that migration 2 made, while the chain's readers (verify, export,
	// tail, replay) walk it in seq order anyway and filter as they go; an
	// append now touches one B-tree.
	{stmts: []string{
		`DROP INDEX IF EXISTS audit_events_at`,
		`DROP INDEX IF EXISTS audit_events_agent_id`,
	}},
	// 4: credential signing keys (private keys sealed by the credential
	// package) and the records of issued action credentials. A credential's
	// place in a status list, (status_list, status_index), is unique; uses
	// and used make ConsumeCredential one conditional UPDATE.
	//
	// One credential is written per gated call, so credentials is keyed by
	// its id WITHOUT ROWID (in PostgreSQL: TEXT PRIMARY KEY) and has no
	// secondary index: an insert touches two B-trees. ListCredentials (an
	// administrator's listing) scans.
	{stmts: []string{
		`CREATE TABLE signing_keys (
			id            TEXT NOT NULL PRIMARY KEY,
			alg           TEXT NOT NULL,
			public_jwk    BLOB NOT NULL,
			sealed        BLOB NOT NULL,
			created_at    BIGINT,
			retired_at    BIGINT,
			publish_until BIGINT
		)`,
		`CREATE TABLE credentials (
			id            TEXT    NOT NULL PRIMARY KEY,
			agent_id      TEXT    NOT NULL,
			decision_id   TEXT    NOT NULL,
			upstream      TEXT    NOT NULL,
			tool          TEXT    NOT NULL,
			args_digest   TEXT    NOT NULL,
			key_id        TEXT    NOT NULL,
			status_list   TEXT    NOT NULL,
			status_index  INTEGER NOT NULL CHECK (status_index >= 0),
			issued_at     BIGINT,
			expires_at    BIGINT,
			uses          INTEGER NOT NULL CHECK (uses >= 1),
			used          INTEGER NOT NULL CHECK (used >= 0),
			consumed_at   BIGINT,
			revoked_at    BIGINT,
			revoke_reason TEXT    NOT NULL,
			UNIQUE (status_list, status_index)
		) WITHOUT ROWID`,
	}},
	// 5: human approvals and their votes, approvers' passkeys and their
	// one-time enrollments.
	//
	// An approval's votes are rows of approval_votes numbered in the order
	// cast (seq), one per user (UNIQUE); a vote is cast in a transaction
	// that holds the approval (the writer here, a row lock in PostgreSQL).
	// approvers and transports are JSON text arrays like roles. The two
	// partial indexes serve FindPendingApproval and ExpireApprovals, which
	// only look at pending approvals; approvals_created serves listings,
	// newest first. Passkeys are keyed by their WebAuthn credential id (a
	// BLOB), enrollments by the SHA-256 hash of their token.
	{stmts: []string{
		`CREATE TABLE approvals (
			id                   TEXT    NOT NULL PRIMARY KEY,
			agent_id             TEXT    NOT NULL REFERENCES agents (id),
			owner_id             TEXT    NOT NULL,
			decision_id          TEXT    NOT NULL,
			upstream             TEXT    NOT NULL,
			tool                 TEXT    NOT NULL,
			args_digest          TEXT    NOT NULL,
			arguments            BLOB,
			rule                 TEXT    NOT NULL,
			approvers            TEXT    NOT NULL,
			quorum               INTEGER NOT NULL CHECK (quorum >= 1),
			separation_of_duties INTEGER NOT NULL CHECK (separation_of_duties IN (0, 1)),
			binding_message      TEXT    NOT NULL,
			risk_score           INTEGER NOT NULL,
			source               TEXT    NOT NULL,
			client_data          BLOB,
			state                TEXT    NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
			created_at           BIGINT,
			expires_at           BIGINT  NOT NULL,
			decided_at           BIGINT,
			reason               TEXT    NOT NULL
		)`,
		`CREATE INDEX approvals_created ON approvals (created_at, id)`,
		`CREATE INDEX approvals_agent ON approvals (agent_id, created_at)`,
		`CREATE INDEX approvals_pending_call ON approvals (agent_id, upstream, tool, args_digest, created_at)
			WHERE state = 'pending'`,
		`CREATE INDEX approvals_pending_expiry ON approvals (expires_at) WHERE state = 'pending'`,
		`CREATE TABLE approval_votes (
			approval_id TEXT    NOT NULL REFERENCES approvals (id),
			seq         INTEGER NOT NULL CHECK (seq >= 1),
			user_id     TEXT    NOT NULL,
			email       TEXT    NOT NULL,
			approve     INTEGER NOT NULL CHECK (approve IN (0, 1)),
			reason      TEXT    NOT NULL,
			method      TEXT    NOT NULL,
			evidence    BLOB,
			at          BIGINT  NOT NULL,
			PRIMARY KEY (approval_id, seq),
			UNIQUE (approval_id, user_id)
		)`,
		`CREATE TABLE passkeys (
			id           BLOB    NOT NULL PRIMARY KEY,
			user_id      TEXT    NOT NULL REFERENCES users (id),
			public_key   BLOB    NOT NULL,
			sign_count   INTEGER NOT NULL CHECK (sign_count BETWEEN 0 AND 4294967295),
			aaguid       BLOB,
			transports   TEXT    NOT NULL,
			flags        INTEGER NOT NULL CHECK (flags BETWEEN 0 AND 255),
			name         TEXT    NOT NULL,
			created_at   BIGINT,
			last_used_at BIGINT
		)`,
		`CREATE INDEX passkeys_user_id ON passkeys (user_id, created_at, id)`,
		`CREATE TABLE enrollments (
			token_hash BLOB   NOT NULL PRIMARY KEY,
			user_id    TEXT   NOT NULL REFERENCES users (id),
			created_by TEXT   NOT NULL,
			created_at BIGINT,
			expires_at BIGINT NOT NULL,
			used_at    BIGINT
		)`,
	}},
	// 6: the owner lifecycle. A user keeps the identity provider's id
	// (external_id, SCIM externalId) and, once deleted over SCIM, when
	// (deleted_at: the row stays so that the audit history and the agents'
	// ownership keep resolving). An agent keeps when its state last
	// changed, by whom and why (the full history is in the audit log).
	{stmts: []string{
		`ALTER TABLE users ADD COLUMN external_id TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE users ADD COLUMN deleted_at BIGINT`,
		`ALTER TABLE agents ADD COLUMN state_changed_at BIGINT`,
		`ALTER TABLE agents ADD COLUMN state_changed_by TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE agents ADD COLUMN state_reason TEXT NOT NULL DEFAULT ''`,
	}},
	// 7: approvers' web push subscriptions, made in the console. The
	// endpoint (a capability URL) is the key: a browser that subscribes
	// again replaces its row (an upsert). Listings are per user, in
	// creation order.
	{stmts: []string{
		`CREATE TABLE push_subscriptions (
			endpoint   TEXT   NOT NULL PRIMARY KEY,
			id         TEXT   NOT NULL UNIQUE,
			user_id    TEXT   NOT NULL REFERENCES users (id),
			p256dh     TEXT   NOT NULL,
			auth       TEXT   NOT NULL,
			user_agent TEXT   NOT NULL,
			created_at BIGINT
		)`,
		`CREATE INDEX push_subscriptions_user_id ON push_subscriptions (user_id, created_at, id)`,
	}},
	// 8: an agent's allowed upstreams (a JSON text array like roles, "[]"
	// for every upstream) and who registered it.
	{stmts: []string{
		`ALTER TABLE agents ADD COLUMN allowed_upstreams TEXT NOT NULL DEFAULT '[]'`,
		`ALTER TABLE agents ADD COLUMN created_by TEXT NOT NULL DEFAULT ''`,
	}},
}

// migrate brings the schema up to date, one migration per transaction, and
// returns how many it applied. A database that has more migrations than this
// binary knows is refused: it was written by a newer version.
func (s *Store) migrate(ctx context.Context) (int, error) {
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS migrations (
		num        INTEGER NOT NULL PRIMARY KEY,
		applied_at BIGINT  NOT NULL
	)`); err != nil {
		return 0, fmt.Errorf("sqlite: create migrations table: %w", err)
	}
	applied := 0
	for {
		done, num := false, 0
		err := s.writeTx(ctx, func(tx *sql.Tx) error {
			var last sql.NullInt64
			if err := tx.QueryRowContext(ctx, `SELECT MAX(num) FROM migrations`).Scan(&last); err != nil {
				return fmt.Errorf("read migration number: %w", err)
			}
			n := int(last.Int64)
			if n > len(migrations) {
				return fmt.Errorf("database is at migration %d but this binary knows only %d: it was written by a newer version", n, len(migrations))
			}
			if n == len(migrations) {
				done = true
				return nil
			}
			for i, stmt := range migrations[n].stmts {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migration %d statement %d: %w", n+1, i+1, err)
				}
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO migrations (num, applied_at) VALUES (?, ?)`,
				n+1, s.now().UnixMicro()); err != nil {
				return fmt.Errorf("record migration %d: %w", n+1, err)
			}
			num = n + 1
			return nil
		})
		if err != nil {
			return applied, fmt.Errorf("sqlite: migrate: %w", err)
		}
		if done {
			return applied, nil
		}
		s.log.Info("applied store migration", "num", num)
		applied++
	}
}
