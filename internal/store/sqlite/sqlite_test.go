package sqlite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/storetest"
)

// quiet drops the store's log lines (migrations) from test output.
func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func openTemp(t testing.TB, name string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{Logger: quiet(), Path: filepath.Join(t.TempDir(), name)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t, "interlock.db") })
}

func TestConformanceMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(t.Context(), Options{Logger: quiet(), Path: ":memory:"})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestOpen(t *testing.T) {
	tests := []struct {
		name string
		path func(t *testing.T) string
		ok   bool
	}{
		{"plain file", func(t *testing.T) string { return filepath.Join(t.TempDir(), "a.db") }, true},
		{"odd characters", func(t *testing.T) string { return filepath.Join(t.TempDir(), "we?ird #name%20.db") }, true},
		{"empty path", func(*testing.T) string { return "" }, false},
		{"missing directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "no", "such", "dir.db") }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path(t)
			s, err := Open(t.Context(), Options{Logger: quiet(), Path: path})
			if !tc.ok {
				if err == nil {
					s.Close()
					t.Fatalf("Open(%q) succeeded, want an error", path)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%q): %v", path, err)
			}
			defer s.Close()
			var mode string
			if err := s.w.QueryRowContext(t.Context(), `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
				t.Errorf("journal_mode = %q, %v; want wal", mode, err)
			}
			for _, db := range []struct {
				name string
				pool interface {
					QueryRowContext(context.Context, string, ...any) *sql.Row
				}
			}{{"writer", s.w}, {"readers", s.r}} {
				for pragma, want := range map[string]int{"foreign_keys": 1, "busy_timeout": 10000, "synchronous": 1} {
					var got int
					if err := db.pool.QueryRowContext(t.Context(), "PRAGMA "+pragma).Scan(&got); err != nil || got != want {
						t.Errorf("%s: %s = %d, %v; want %d", db.name, pragma, got, err, want)
					}
				}
			}
			if _, err := s.r.ExecContext(t.Context(), `INSERT INTO meta (key, value) VALUES ('x', 'y')`); err == nil {
				t.Errorf("a reader connection accepted a write")
			}
		})
	}
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "interlock.db")
	migrated := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	s, err := Open(ctx, Options{Logger: quiet(), Path: path, Now: func() time.Time { return migrated }})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.CreateUser(ctx, store.User{ID: "u1", Email: "a@example.com", Active: true}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	gen, err := s.Generation(ctx)
	if err != nil {
		t.Fatalf("Generation: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = Open(ctx, Options{Logger: quiet(), Path: path})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	var appliedAt int64
	if err := s.r.QueryRowContext(ctx, `SELECT applied_at FROM migrations WHERE num = 1`).Scan(&appliedAt); err != nil ||
		appliedAt != migrated.UnixMicro() {
		t.Errorf("migration 1 applied_at = %d, %v; want %d from Options.Now", appliedAt, err, migrated.UnixMicro())
	}
	defer s.Close()
	if _, err := s.GetUser(ctx, "u1"); err != nil {
		t.Errorf("GetUser after reopen: %v", err)
	}
	if g, err := s.Generation(ctx); err != nil || g != gen {
		t.Errorf("Generation after reopen = %d, %v; want %d", g, err, gen)
	}
	if n, err := s.migrate(ctx); err != nil || n != 0 {
		t.Errorf("migrate on an up-to-date database applied %d, %v; want 0", n, err)
	}
	var count int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM migrations`).Scan(&count); err != nil || count != len(migrations) {
		t.Errorf("migrations table has %d rows, %v; want %d", count, err, len(migrations))
	}
}

func TestRefusesNewerDatabase(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "interlock.db")
	s, err := Open(ctx, Options{Logger: quiet(), Path: path})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO migrations (num, applied_at) VALUES (?, 0)`, len(migrations)+1); err != nil {
		t.Fatalf("insert: %v", err)
	}
	s.Close()
	if s, err := Open(ctx, Options{Logger: quiet(), Path: path}); err == nil {
		s.Close()
		t.Fatal("Open of a database from a newer version succeeded")
	}
}

// TestTwoStoresOneFile stands for two processes on one database file: their
// writers are separate connections, so serialisation rests on BEGIN
// IMMEDIATE and busy_timeout, not on the in-process single writer.
// twoStores opens two stores on one new file, as two processes would.
func twoStores(t *testing.T) [2]*Store {
	path := filepath.Join(t.TempDir(), "interlock.db")
	var stores [2]*Store
	for i := range stores {
		s, err := Open(t.Context(), Options{Logger: quiet(), Path: path})
		if err != nil {
			t.Fatalf("Open #%d: %v", i, err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	return stores
}

func TestTwoStoresOneFile(t *testing.T) {
	ctx := t.Context()
	stores := twoStores(t)
	if err := stores[0].CreateUser(ctx, store.User{ID: "u1", Email: "a@example.com", Active: true}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if err := stores[0].CreateAgent(ctx, store.Agent{ID: "counter", OwnerID: "u1", State: store.AgentActive, Purpose: "0"}); err != nil {
		t.Fatalf("CreateAgent: %v", err)
	}
	const each = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	for _, s := range stores {
		wg.Go(func() {
			for range each {
				_, err := s.UpdateAgent(ctx, "counter", func(a store.Agent) (store.Agent, error) {
					n, err := strconv.Atoi(a.Purpose)
					a.Purpose = strconv.Itoa(n + 1)
					return a, err
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("UpdateAgent: %v", err)
	}
	a, err := stores[1].GetAgent(ctx, "counter")
	if err != nil {
		t.Fatalf("GetAgent: %v", err)
	}
	if a.Purpose != strconv.Itoa(2*each) {
		t.Errorf("counter = %s, want %d", a.Purpose, 2*each)
	}
	// A change through one is visible to the other's readers at once.
	g0, err := stores[0].Generation(ctx)
	if err != nil {
		t.Fatalf("Generation: %v", err)
	}
	if g1, err := stores[1].Generation(ctx); err != nil || g1 != g0 {
		t.Errorf("Generation seen by the other store = %d, %v; want %d", g1, err, g0)
	}
}

func TestConstraintErrorsWrapDriverError(t *testing.T) {
	s := openTemp(t, "interlock.db")
	ctx := t.Context()
	err := s.CreateAgent(ctx, store.Agent{ID: "a", OwnerID: "missing", State: store.AgentActive})
	if !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("CreateAgent with missing owner = %v, want ErrInvalid", err)
	}
	if errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrNotFound) {
		t.Errorf("error %v matches more than one sentinel", err)
	}
}

// BenchmarkLookupPrincipal resolves random token hashes among 10,000 agents
// (one token each, 100 owners).
func BenchmarkLookupPrincipal(b *testing.B) {
	ctx := context.Background()
	s := openTemp(b, "bench.db")
	const owners, agents = 100, 10_000
	now := time.Now()
	for i := range owners {
		if err := s.CreateUser(ctx, store.User{ID: fmt.Sprintf("u%03d", i), Email: fmt.Sprintf("owner%03d@example.com", i),
			Roles: []string{"agent-owner", "finance-manager"}, Active: true, Source: "local", CreatedAt: now, UpdatedAt: now}); err != nil {
			b.Fatal(err)
		}
	}
	hashes := make([][]byte, agents)
	for i := range agents {
		id := fmt.Sprintf("agent-%05d", i)
		if err := s.CreateAgent(ctx, store.Agent{ID: id, OwnerID: fmt.Sprintf("u%03d", i%owners), Name: id,
			Department: "finance", Purpose: "benchmark", State: store.AgentActive, CreatedAt: now, UpdatedAt: now}); err != nil {
			b.Fatal(err)
		}
		h := sha256.Sum256([]byte("token-" + id))
		hashes[i] = h[:]
		if err := s.CreateAgentToken(ctx, store.AgentToken{ID: "tok-" + id, AgentID: id, Hash: hashes[i], CreatedAt: now}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p, err := s.LookupPrincipal(ctx, hashes[(i*7919)%agents])
		if err != nil || p.Owner.ID == "" {
			b.Fatalf("LookupPrincipal: %v", err)
		}
		i++
	}
}

// TestAuditIndexesDropped: a database created with migration 2's audit
// indexes loses them on upgrade (migration 3), and a new one has none.
func TestAuditIndexesDropped(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "interlock.db")
	auditIndexes := func(s *Store) int {
		t.Helper()
		var n int
		if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_events'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	s, err := Open(ctx, Options{Logger: quiet(), Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if n := auditIndexes(s); n != 0 {
		t.Errorf("new database has %d audit_events indexes, want 0", n)
	}
	// Wind it back to migration 2 as it was first released.
	for _, q := range []string{
		`CREATE INDEX audit_events_at ON audit_events (at)`,
		`CREATE INDEX audit_events_agent_id ON audit_events (agent_id, seq)`,
		`ALTER TABLE agents DROP COLUMN allowed_upstreams`, // migration 8
		`ALTER TABLE agents DROP COLUMN created_by`,
		`DROP TABLE push_subscriptions`,             // migration 7
		`ALTER TABLE users DROP COLUMN external_id`, // migration 6
		`ALTER TABLE users DROP COLUMN deleted_at`,
		`ALTER TABLE agents DROP COLUMN state_changed_at`,
		`ALTER TABLE agents DROP COLUMN state_changed_by`,
		`ALTER TABLE agents DROP COLUMN state_reason`,
		`DROP TABLE signing_keys`, // migration 4
		`DROP TABLE credentials`,
		`DROP TABLE approval_votes`, // migration 5
		`DROP TABLE approvals`,
		`DROP TABLE passkeys`,
		`DROP TABLE enrollments`,
		`DELETE FROM migrations WHERE num >= 3`,
	} {
		if _, err := s.w.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if n := auditIndexes(s); n != 2 {
		t.Fatalf("set-up: %d indexes, want 2", n)
	}
	s.Close()
	s, err = Open(ctx, Options{Logger: quiet(), Path: path})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if n := auditIndexes(s); n != 0 {
		t.Errorf("after the upgrade %d audit_events indexes are left, want 0", n)
	}
}

// Two stores on one file (the server and a CLI command, say) append to one
// chain: each remembers the head its last append left, and notices when
// the other moved it. The chain stays one: dense sequence numbers, each
// event linked to the one before.
func TestTwoStoresOneChain(t *testing.T) {
	ctx := t.Context()
	stores := twoStores(t)
	appendOne := func(s *Store, tag string) error {
		return s.AppendAudit(ctx, func(h store.AuditHead) ([]store.AuditEvent, error) {
			sum := sha256.Sum256(append(append([]byte(tag), h.Hash...), byte(h.Seq)))
			return []store.AuditEvent{{Seq: h.Seq + 1, Time: time.Now(), Type: "test", Data: []byte(`{}`), PrevHash: h.Hash, Hash: sum[:]}}, nil
		})
	}
	// Alternating: every append after the first finds its remembered head
	// stale.
	for i := range 6 {
		if err := appendOne(stores[i%2], fmt.Sprint(i)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	// Concurrently.
	const each = 30
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	for i, s := range stores {
		wg.Go(func() {
			for j := range each {
				if err := appendOne(s, fmt.Sprint(i, j)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("append: %v", err)
	}
	evs, err := stores[0].ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(evs) != 6+2*each {
		t.Fatalf("%d events, want %d", len(evs), 6+2*each)
	}
	for i, e := range evs {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d has sequence number %d", i, e.Seq)
		}
		if i > 0 && !bytes.Equal(e.PrevHash, evs[i-1].Hash) {
			t.Fatalf("event %d is not linked to event %d", e.Seq, evs[i-1].Seq)
		}
	}
}
