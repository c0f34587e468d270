package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// migration is one numbered schema step. Its statements run in one
// transaction together with the row that records it in schema_migrations.
//
// The migrations are the SQLite backend's, number for number, spelled for
// PostgreSQL as that backend's schema comment lays out: TEXT ids, BIGINT
// unix microseconds (UTC) for timestamps with NULL for the zero time,
// INTEGER 0/1 for booleans, roles as a JSON text array, BYTEA where SQLite
// has BLOB, DOUBLE PRECISION where it has REAL, and BIGINT where its
// INTEGER holds a 64-bit value (seq, status indexes and use counts). Text
// keys that the store orders by are COLLATE "C", so that they sort by
// bytes as SQLite's BINARY collation does, whatever the database's locale.
type migration struct {
	stmts []string
}

// migrations are applied in order; migration i is recorded as number i+1.
// Never edit or reorder an applied migration: append a new one, and the
// same one to the SQLite backend.
var migrations = []migration{
	{stmts: []string{
		`CREATE TABLE users (
			id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
			email      TEXT COLLATE "C" NOT NULL UNIQUE,
			name       TEXT    NOT NULL,
			roles      TEXT    NOT NULL,
			active     INTEGER NOT NULL CHECK (active IN (0, 1)),
			source     TEXT    NOT NULL,
			created_at BIGINT,
			updated_at BIGINT
		)`,
		`CREATE TABLE agents (
			id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
			name       TEXT NOT NULL,
			owner_id   TEXT COLLATE "C" NOT NULL REFERENCES users (id),
			department TEXT NOT NULL,
			purpose    TEXT NOT NULL,
			state      TEXT NOT NULL CHECK (state IN ('active', 'suspended', 'orphaned', 'decommissioned')),
			created_at BIGINT,
			updated_at BIGINT
		)`,
		`CREATE INDEX agents_owner_id ON agents (owner_id)`,
		`CREATE TABLE agent_tokens (
			id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
			agent_id     TEXT COLLATE "C" NOT NULL REFERENCES agents (id),
			hash         BYTEA NOT NULL UNIQUE,
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
			key   TEXT  COLLATE "C" NOT NULL PRIMARY KEY,
			value BYTEA NOT NULL
		)`,
	}},
	// 2: the audit chain, its checkpoints and budget counters.
	{stmts: []string{
		`CREATE TABLE audit_events (
			seq       BIGINT NOT NULL PRIMARY KEY,
			at        BIGINT,
			type      TEXT   NOT NULL,
			call_id   TEXT   NOT NULL,
			agent_id  TEXT   NOT NULL,
			data      BYTEA  NOT NULL,
			prev_hash BYTEA  NOT NULL,
			hash      BYTEA  NOT NULL
		)`,
		`CREATE INDEX audit_events_at ON audit_events (at)`,
		`CREATE INDEX audit_events_agent_id ON audit_events (agent_id, seq)`,
		`CREATE TABLE checkpoints (
			seq       BIGINT NOT NULL PRIMARY KEY,
			hash      BYTEA  NOT NULL,
			at        BIGINT,
			key_id    TEXT   NOT NULL,
			signature BYTEA  NOT NULL
		)`,
		`CREATE TABLE budget_entries (
			key     TEXT             NOT NULL,
			at      BIGINT           NOT NULL,
			amount  DOUBLE PRECISION NOT NULL,
			call_id TEXT             NOT NULL
		)`,
		`CREATE INDEX budget_entries_key_at ON budget_entries (key, at)`,
	}},
	// 3: audit_events keeps no secondary index (see the SQLite backend).
	{stmts: []string{
		`DROP INDEX IF EXISTS audit_events_at`,
		`DROP INDEX IF EXISTS audit_events_agent_id`,
	}},
	// 4: credential signing keys and the records of issued action
	// credentials; (status_list, status_index) is unique.
	{stmts: []string{
		`CREATE TABLE signing_keys (
			id            TEXT  COLLATE "C" NOT NULL PRIMARY KEY,
			alg           TEXT  NOT NULL,
			public_jwk    BYTEA NOT NULL,
			sealed        BYTEA NOT NULL,
			created_at    BIGINT,
			retired_at    BIGINT,
			publish_until BIGINT
		)`,
		`CREATE TABLE credentials (
			id            TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
			agent_id      TEXT   NOT NULL,
			decision_id   TEXT   NOT NULL,
			upstream      TEXT   NOT NULL,
			tool          TEXT   NOT NULL,
			args_digest   TEXT   NOT NULL,
			key_id        TEXT   NOT NULL,
			status_list   TEXT   NOT NULL,
			status_index  BIGINT NOT NULL CHECK (status_index >= 0),
			issued_at     BIGINT,
			expires_at    BIGINT,
			uses          BIGINT NOT NULL CHECK (uses >= 1),
			used          BIGINT NOT NULL CHECK (used >= 0),
			consumed_at   BIGINT,
			revoked_at    BIGINT,
			revoke_reason TEXT   NOT NULL,
			UNIQUE (status_list, status_index)
		)`,
	}},
	// 5: human approvals and their votes, approvers' passkeys and their
	// one-time enrollments (see the SQLite backend). A vote is cast in a
	// transaction that holds the approval's row lock.
	{stmts: []string{
		`CREATE TABLE approvals (
			id                   TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
			agent_id             TEXT    COLLATE "C" NOT NULL REFERENCES agents (id),
			owner_id             TEXT    NOT NULL,
			decision_id          TEXT    NOT NULL,
			upstream             TEXT    NOT NULL,
			tool                 TEXT    NOT NULL,
			args_digest          TEXT    NOT NULL,
			arguments            BYTEA,
			rule                 TEXT    NOT NULL,
			approvers            TEXT    NOT NULL,
			quorum               BIGINT  NOT NULL CHECK (quorum >= 1),
			separation_of_duties INTEGER NOT NULL CHECK (separation_of_duties IN (0, 1)),
			binding_message      TEXT    NOT NULL,
			risk_score           BIGINT  NOT NULL,
			source               TEXT    NOT NULL,
			client_data          BYTEA,
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
			approval_id TEXT    COLLATE "C" NOT NULL REFERENCES approvals (id),
			seq         INTEGER NOT NULL CHECK (seq >= 1),
			user_id     TEXT    COLLATE "C" NOT NULL,
			email       TEXT    NOT NULL,
			approve     INTEGER NOT NULL CHECK (approve IN (0, 1)),
			reason      TEXT    NOT NULL,
			method      TEXT    NOT NULL,
			evidence    BYTEA,
			at          BIGINT  NOT NULL,
			PRIMARY KEY (approval_id, seq),
			UNIQUE (approval_id, user_id)
		)`,
		`CREATE TABLE passkeys (
			id           BYTEA   NOT NULL PRIMARY KEY,
			user_id      TEXT    COLLATE "C" NOT NULL REFERENCES users (id),
			public_key   BYTEA   NOT NULL,
			sign_count   BIGINT  NOT NULL CHECK (sign_count BETWEEN 0 AND 4294967295),
			aaguid       BYTEA,
			transports   TEXT    NOT NULL,
			flags        INTEGER NOT NULL CHECK (flags BETWEEN 0 AND 255),
			name         TEXT    NOT NULL,
			created_at   BIGINT,
			last_used_at BIGINT
		)`,
		`CREATE INDEX passkeys_user_id ON passkeys (user_id, created_at, id)`,
		`CREATE TABLE enrollments (
			token_hash BYTEA  NOT NULL PRIMARY KEY,
			user_id    TEXT   COLLATE "C" NOT NULL REFERENCES users (id),
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
	// 7: approvers' web push subscriptions (see the SQLite backend).
	{stmts: []string{
		`CREATE TABLE push_subscriptions (
			endpoint   TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
			id         TEXT   COLLATE "C" NOT NULL UNIQUE,
			user_id    TEXT   COLLATE "C" NOT NULL REFERENCES users (id),
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

// lockMigrations takes the transaction-level advisory lock that serialises
// the migrations of every store on this schema (replicas starting at once).
func (s *Store) lockMigrations(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, s.migrateLock); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	return nil
}

// migrate brings the schema up to date, one migration per transaction, and
// returns how many it applied. Each transaction takes the migration lock
// before it reads the schema's migration number, so of several replicas
// starting together one applies each migration and the others find it
// done. A database that has more migrations than this binary knows is
// refused: it was written by a newer version.
func (s *Store) migrate(ctx context.Context) (int, error) {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := s.lockMigrations(ctx, tx); err != nil {
			return err
		}
		// Look before creating: CREATE SCHEMA IF NOT EXISTS needs the
		// CREATE privilege on the database even when the schema exists.
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`,
			s.schema).Scan(&exists); err != nil {
			return fmt.Errorf("look for schema %q: %w", s.schema, err)
		}
		if !exists {
			if _, err := tx.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{s.schema}.Sanitize()); err != nil {
				return fmt.Errorf("create schema %q: %w", s.schema, err)
			}
			s.log.Info("created store schema", "schema", s.schema)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+pgx.Identifier{s.schema, "schema_migrations"}.Sanitize()+` (
			num        INTEGER NOT NULL PRIMARY KEY,
			applied_at BIGINT  NOT NULL
		)`); err != nil {
			return fmt.Errorf("create schema_migrations table: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: migrate %s schema %q: %w", s.host, s.schema, err)
	}
	applied := 0
	for {
		done, num := false, 0
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			if err := s.lockMigrations(ctx, tx); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(num), 0) FROM schema_migrations`).Scan(&n); err != nil {
				return fmt.Errorf("read migration number: %w", err)
			}
			if n > len(migrations) {
				return fmt.Errorf("database is at migration %d but this binary knows only %d: it was written by a newer version", n, len(migrations))
			}
			if n == len(migrations) {
				done = true
				return nil
			}
			for i, stmt := range migrations[n].stmts {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("migration %d statement %d: %w", n+1, i+1, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (num, applied_at) VALUES ($1, $2)`,
				n+1, s.now().UnixMicro()); err != nil {
				return fmt.Errorf("record migration %d: %w", n+1, err)
			}
			num = n + 1
			return nil
		})
		if err != nil {
			return applied, fmt.Errorf("postgres: migrate %s schema %q: %w", s.host, s.schema, err)
		}
		if done {
			return applied, nil
		}
		s.log.Info("applied store migration", "num", num, "schema", s.schema)
		applied++
	}
}
