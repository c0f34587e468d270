package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/storetest"
	"github.com/interlock-dev/interlock/internal/testenv"
)

// quiet drops the store's log lines (migrations) from test output.
func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newSchema returns a fresh random schema name on the test database and
// drops the schema, with everything in it, when the test ends (after the
// stores opened on it are closed: cleanups run last-in first-out).
func newSchema(t testing.TB, dsn string) string {
	t.Helper()
	var b [8]byte
	rand.Read(b[:])
	schema := "interlock_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// openSchema opens a store on schema and closes it when the test ends.
func openSchema(t testing.TB, dsn, schema string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{DSN: dsn, Schema: schema, Logger: quiet()})
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

// openTemp opens a store on a fresh schema of the test database.
func openTemp(t testing.TB) *Store {
	t.Helper()
	dsn := testenv.PostgresDSN(t)
	return openSchema(t, dsn, newSchema(t, dsn))
}

func TestConformance(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	storetest.Run(t, func(t *testing.T) store.Store { return openSchema(t, dsn, newSchema(t, dsn)) })
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// silentServer accepts connections and never answers, as a host whose
// firewall swallows packets or a hung server would.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestOpenUnreachable: Open against a server that is down or does not
// answer fails soon, with an error naming the host.
func TestOpenUnreachable(t *testing.T) {
	tests := []struct {
		name    string
		addr    func(t *testing.T) string
		timeout time.Duration
		within  time.Duration
	}{
		{"closed port", closedPort, 0, 5 * time.Second},
		{"silent server", silentServer, 300 * time.Millisecond, 5 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.addr(t)
			dsn := "postgres://postgres@" + addr + "/test?sslmode=disable"
			start := time.Now()
			s, err := Open(t.Context(), Options{DSN: dsn, Logger: quiet(), ConnectTimeout: tc.timeout})
			elapsed := time.Since(start)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%s) succeeded", addr)
			}
			if !strings.Contains(err.Error(), addr) {
				t.Errorf("Open error %q does not name %s", err, addr)
			}
			if elapsed > tc.within {
				t.Errorf("Open took %v to fail, want under %v", elapsed, tc.within)
			}
			t.Logf("after %v: %v", elapsed.Round(time.Millisecond), err)
		})
	}
}

func TestOpenOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"empty DSN", Options{}},
		{"bad DSN", Options{DSN: "postgres://%zz"}},
		{"schema needing quotes", Options{DSN: "postgres://127.0.0.1/x", Schema: `a"; DROP TABLE x; --`}},
		{"schema too long", Options{DSN: "postgres://127.0.0.1/x", Schema: strings.Repeat("s", 64)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Logger = quiet()
			if s, err := Open(t.Context(), tc.opts); err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
		})
	}
}

// TestMigrations: migrations are recorded, reopening applies none, and a
// schema written by a newer version is refused.
func TestMigrations(t *testing.T) {
	ctx := t.Context()
	dsn := testenv.PostgresDSN(t)
	schema := newSchema(t, dsn)
	migrated := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	s, err := Open(ctx, Options{DSN: dsn, Schema: schema, Logger: quiet(), Now: func() time.Time { return migrated }})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if err := s.CreateUser(ctx, store.User{ID: "u1", Email: "a@example.com", Active: true}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	var count int
	var appliedAt int64
	if err := s.pool.QueryRow(ctx, `SELECT COUNT(*), MIN(applied_at) FROM schema_migrations`).Scan(&count, &appliedAt); err != nil {
		t.Fatal(err)
	}
	if count != len(migrations) || appliedAt != migrated.UnixMicro() {
		t.Errorf("schema_migrations has %d rows applied at %d; want %d at %d", count, appliedAt, len(migrations), migrated.UnixMicro())
	}
	if n, err := s.migrate(ctx); err != nil || n != 0 {
		t.Errorf("migrate on an up-to-date schema applied %d, %v; want 0", n, err)
	}
	var indexes int
	if err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM pg_indexes WHERE schemaname = $1 AND tablename = 'audit_events'`,
		schema).Scan(&indexes); err != nil || indexes != 1 {
		t.Errorf("audit_events has %d indexes, %v; want 1 (its primary key)", indexes, err)
	}

	s2 := openSchema(t, dsn, schema)
	if _, err := s2.GetUser(ctx, "u1"); err != nil {
		t.Errorf("GetUser through a second store: %v", err)
	}

	if _, err := s.pool.Exec(ctx, `INSERT INTO schema_migrations (num, applied_at) VALUES ($1, 0)`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	if s3, err := Open(ctx, Options{DSN: dsn, Schema: schema, Logger: quiet()}); err == nil {
		s3.Close()
		t.Fatal("Open of a schema from a newer version succeeded")
	} else if !strings.Contains(err.Error(), "newer version") {
		t.Errorf("Open of a newer schema: %v", err)
	}
}

// appendChained appends n events to s, each hashing its predecessor's hash
// and its own body as the audit package does (a made-up encoding here).
func appendChained(ctx context.Context, s store.Store, tag string, n int) error {
	return s.AppendAudit(ctx, func(h store.AuditHead) ([]store.AuditEvent, error) {
		evs := make([]store.AuditEvent, 0, n)
		prev := h.Hash
		for i := range n {
			seq := h.Seq + int64(i) + 1
			data := []byte(fmt.Sprintf(`{"by":%q,"seq":%d}`, tag, seq))
			sum := sha256.Sum256(append(append(bytes.Clone(prev), strconv.FormatInt(seq, 10)...), data...))
			evs = append(evs, store.AuditEvent{Seq: seq, Time: time.Now(), Type: "decision", CallID: tag,
				AgentID: "agent-1", Data: data, PrevHash: prev, Hash: sum[:]})
			prev = sum[:]
		}
		return evs, nil
	})
}

// TestTwoReplicasOneChain: two stores with their own pools on one schema,
// as two replicas of interlock, opened at the same moment (their
// migrations race) and appending concurrently, build one valid chain.
func TestTwoReplicasOneChain(t *testing.T) {
	ctx := t.Context()
	dsn := testenv.PostgresDSN(t)
	schema := newSchema(t, dsn)
	var replicas [2]*Store
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() {
			s, err := Open(ctx, Options{DSN: dsn, Schema: schema, Logger: quiet(), MaxConns: 4})
			if err != nil {
				t.Errorf("Open replica %d: %v", i, err)
				return
			}
			t.Cleanup(func() { s.Close() })
			replicas[i] = s
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	const writers, each = 4, 30 // per replica
	var (
		mu       sync.Mutex
		appended int
		errs     []error
	)
	start := make(chan struct{})
	for r, s := range replicas {
		for w := range writers {
			wg.Go(func() {
				<-start
				tag := fmt.Sprintf("r%d-w%d", r, w)
				for i := range each {
					n := 1 + (w+i)%3
					err := appendChained(ctx, s, tag, n)
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					} else {
						appended += n
					}
					mu.Unlock()
				}
			})
		}
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Errorf("AppendAudit: %v", err)
	}

	evs, err := replicas[1].ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(evs) != appended {
		t.Fatalf("chain has %d events, %d were appended", len(evs), appended)
	}
	prev := make([]byte, 32)
	by := map[string]int{}
	for i, e := range evs {
		if e.Seq != int64(i)+1 {
			t.Fatalf("event %d has seq %d: the chain is not contiguous", i+1, e.Seq)
		}
		if !bytes.Equal(e.PrevHash, prev) {
			t.Fatalf("event %d: prev_hash %x is not event %d's hash %x", e.Seq, e.PrevHash, e.Seq-1, prev)
		}
		sum := sha256.Sum256(append(append(bytes.Clone(prev), strconv.FormatInt(e.Seq, 10)...), e.Data...))
		if !bytes.Equal(e.Hash, sum[:]) {
			t.Fatalf("event %d: hash does not cover its predecessor and body", e.Seq)
		}
		prev = e.Hash
		by[e.CallID[:2]]++
	}
	if by["r0"] == 0 || by["r1"] == 0 {
		t.Errorf("events by replica = %v, want both to have appended", by)
	}
	for _, s := range replicas {
		h, err := s.AuditHead(ctx)
		if err != nil || h.Seq != int64(appended) || !bytes.Equal(h.Hash, prev) {
			t.Errorf("AuditHead = %d, %x, %v; want %d, %x", h.Seq, h.Hash, err, appended, prev)
		}
	}
}

// TestTwoReplicasBudgetAndCredential: the budget limit and a credential's
// uses hold across two pools too.
func TestTwoReplicasBudgetAndCredential(t *testing.T) {
	ctx := t.Context()
	dsn := testenv.PostgresDSN(t)
	schema := newSchema(t, dsn)
	replicas := [2]*Store{openSchema(t, dsn, schema), openSchema(t, dsn, schema)}
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	c := store.Credential{ID: "multi", AgentID: "agent-1", StatusList: "1", StatusIndex: 1, IssuedAt: t0, Uses: 5}
	if err := replicas[0].CreateCredential(ctx, c); err != nil {
		t.Fatal(err)
	}
	const each = 20
	var (
		wg                sync.WaitGroup
		mu                sync.Mutex
		charged, consumed int
	)
	for r, s := range replicas {
		for g := range 4 {
			wg.Go(func() {
				for i := range each {
					_, ok, err := s.ChargeBudget(ctx, store.BudgetEntry{Key: "k", Time: t0, Amount: 3,
						CallID: fmt.Sprintf("%d-%d-%d", r, g, i)}, t0.Add(-time.Hour), 100)
					if err != nil {
						t.Error(err)
						return
					}
					_, cerr := s.ConsumeCredential(ctx, "multi", t0)
					if cerr != nil && !errors.Is(cerr, store.ErrSpent) {
						t.Error(cerr)
						return
					}
					mu.Lock()
					if ok {
						charged++
					}
					if cerr == nil {
						consumed++
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if charged != 33 {
		t.Errorf("%d charges of 3 within 100 succeeded, want 33", charged)
	}
	if consumed != 5 {
		t.Errorf("%d consumes of a 5-use credential succeeded, want 5", consumed)
	}
}

func TestConstraintErrorsWrapDriverError(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	err := s.CreateAgent(ctx, store.Agent{ID: "a", OwnerID: "missing", State: store.AgentActive})
	if !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("CreateAgent with missing owner = %v, want ErrInvalid", err)
	}
	if errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrNotFound) {
		t.Errorf("error %v matches more than one sentinel", err)
	}
	if pgCode(err) != codeForeignKeyViolation {
		t.Errorf("error %v does not wrap the driver's foreign key violation", err)
	}
	// Text PostgreSQL cannot keep is refused as invalid, and cannot name
	// a record.
	err = s.CreateUser(ctx, store.User{ID: "u\x00", Email: "a@example.com"})
	if !errors.Is(err, store.ErrInvalid) {
		t.Errorf("CreateUser with a NUL in its id = %v, want ErrInvalid", err)
	}
	if _, err := s.GetUser(ctx, "u\x00"); !errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
		t.Errorf("GetUser with a NUL in its id = %v, want ErrNotFound", err)
	}
	if err := s.TouchAgentToken(ctx, "t\x00", time.Now()); !errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
		t.Errorf("TouchAgentToken with a NUL in its id = %v, want ErrNotFound", err)
	}
	if _, err := s.ConsumeCredential(ctx, "c\x00", time.Now()); !errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
		t.Errorf("ConsumeCredential with a NUL in its id = %v, want ErrNotFound", err)
	}
}

// BenchmarkAppendAudit appends one event of realistic size (about 600
// bytes of canonical JSON, as the gate writes one decision per call) per
// transaction: from one caller at a time ("serial"), and from about 64
// concurrent callers (RunParallel with 64/GOMAXPROCS goroutines per CPU),
// each waiting for its own commit ("parallel"; the audit package batches
// such callers into fewer transactions, so this is the store's floor, not
// the log's rate).
func BenchmarkAppendAudit(b *testing.B) {
	b.Run("serial", func(b *testing.B) { benchAppendAudit(b, openTemp(b), false) })
	b.Run("parallel", func(b *testing.B) {
		dsn := testenv.PostgresDSN(b)
		s, err := Open(context.Background(), Options{DSN: dsn, Schema: newSchema(b, dsn), Logger: quiet(), MaxConns: 64})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		benchAppendAudit(b, s, true)
	})
}

// benchData is the body of BenchmarkAppendAudit's events.
var benchData = []byte(`{"action":"spend","amount":389.97,"args":{"customer_id":"c-42","note":"rush","quantity":3,` +
	`"sku":"A-100","unit_price_usd":129.99},"args_digest":"9f2c1b7e4a0d3c5b6e8f7a9d1c2b3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d",` +
	`"class":"transactional","effect":"allow","latency_us":12,"matched":["small-orders"],"owner":"alice@example.com",` +
	`"policy_version":"sha256:4b1c9e2f","reasons":["call.action == \"spend\" && call.amount < 400"],"risk":"high",` +
	`"risk_score":72,"rule":"small-orders","tool":"place_order","upstream":"acme"}`)

func benchAppendAudit(b *testing.B, s store.Store, parallel bool) {
	appendOne := func(i int) error {
		return s.AppendAudit(context.Background(), func(h store.AuditHead) ([]store.AuditEvent, error) {
			sum := sha256.Sum256(append(bytes.Clone(h.Hash), benchData...))
			return []store.AuditEvent{{Seq: h.Seq + 1, Time: time.Now(), Type: "decision",
				CallID: fmt.Sprintf("01JD%022d", i), AgentID: "procurement-bot", Data: benchData,
				PrevHash: h.Hash, Hash: sum[:]}}, nil
		})
	}
	b.ReportAllocs()
	if !parallel {
		i := 0
		for b.Loop() {
			if err := appendOne(i); err != nil {
				b.Fatal(err)
			}
			i++
		}
	} else {
		b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if err := appendOne(i); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
		b.StopTimer()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
