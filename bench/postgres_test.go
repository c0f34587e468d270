package bench

// PostgreSQL and several replicas (issue 7): audit appends from two
// "replicas" on one chain, the allow path on PostgreSQL against SQLite in
// the same run, and the time from an approval recorded on one replica to
// the upstream call from another. Each needs PostgreSQL (testenv: skipped
// when it is unreachable, failed when INTERLOCK_TEST_STRICT=1); each uses a
// fresh schema of the test database and drops it afterwards.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/postgres"
	"github.com/interlock-dev/interlock/internal/testenv"
)

// pgSchema returns a fresh schema name and drops the schema when tb ends.
func pgSchema(tb testing.TB, dsn string) string {
	tb.Helper()
	var r [8]byte
	rand.Read(r[:])
	schema := "interlock_bench_" + hex.EncodeToString(r[:])
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// BenchmarkAuditTwoReplicas appends to one audit chain from two audit.Log
// instances, each on its own PostgreSQL store (its own pool) on the same
// schema, as two replicas do, with many goroutines appending through each.
// It reports events/s, then checks that the whole chain verifies.
func BenchmarkAuditTwoReplicas(b *testing.B) {
	dsn := testenv.PostgresDSN(b)
	for _, perReplica := range []int{16, 32, 64} {
		b.Run(fmt.Sprintf("appenders=2x%d", perReplica), func(b *testing.B) {
			schema := pgSchema(b, dsn)
			ctx := context.Background()
			var logs []*audit.Log
			var stores []store.Store
			for range 2 {
				st, err := postgres.Open(ctx, postgres.Options{DSN: dsn, Schema: schema, Logger: quietLog()})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { st.Close() })
				l, err := audit.New(ctx, audit.Options{Store: st, Logger: quietLog()})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { l.Close() })
				logs, stores = append(logs, l), append(stores, st)
			}
			data := map[string]any{"effect": "allow", "rule": "docs-and-echo", "tool": map[string]any{"upstream": "acme", "name": "echo"},
				"args_digest": strings.Repeat("ab", 32), "latency_us": 120}
			n := int64(b.N)
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, 2*perReplica)
			b.ResetTimer()
			start := time.Now()
			for r, l := range logs {
				for g := range perReplica {
					wg.Add(1)
					go func() {
						defer wg.Done()
						agent := fmt.Sprintf("agent-%d-%d", r, g)
						for next.Add(1) <= n {
							if _, err := l.Append(ctx, audit.Event{Type: "decision", AgentID: agent, Data: data}); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
			head, err := stores[0].AuditHead(ctx)
			if err != nil {
				b.Fatal(err)
			}
			rep, err := audit.Verify(ctx, stores[1], nil)
			if err != nil {
				b.Fatal(err)
			}
			if !rep.OK() || rep.Events != head.Seq || head.Seq < n {
				b.Fatalf("after %d appends from two logs: head %d, verify %+v", n, head.Seq, rep)
			}
		})
	}
}

// benchKEK is the key-encryption key every bench gateway shares.
func benchKEK(tb testing.TB) func(string) (string, bool) {
	k := make([]byte, 32)
	rand.Read(k)
	s := base64.StdEncoding.EncodeToString(k)
	return func(name string) (string, bool) {
		if name == "INTERLOCK_KEK" {
			return s, true
		}
		return os.LookupEnv(name)
	}
}

// newBenchApp builds a gateway in process on storage (a YAML flow map)
// with policy, in front of upstream.
func newBenchApp(tb testing.TB, storage, policy, extra, upstream string, getenv func(string) (string, bool)) *app.App {
	tb.Helper()
	dir := tb.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, []byte(policy), 0o600); err != nil {
		tb.Fatal(err)
	}
	cfg, err := config.Parse([]byte(fmt.Sprintf("storage: %s\npolicy: {file: %s}\n%supstreams:\n  - name: acme\n    url: %s\n",
		storage, pol, extra, upstream)), filepath.Join(dir, "interlock.yaml"), config.LoadOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, app.Options{Logger: quietLog(), Getenv: getenv})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close() })
	return a
}

// BenchmarkAllowPathStores is BenchmarkEcho's interlock target (the full
// allow path: policy, credential, decision record committed before the
// call is forwarded) on SQLite and on PostgreSQL side by side in one run:
// compare their ns/op.
func BenchmarkAllowPathStores(b *testing.B) {
	dsn := testenv.PostgresDSN(b)
	schema := pgSchema(b, dsn) // dropped last, after the gateways close
	srv := acme.NewServer(acme.Options{})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	b.Cleanup(up.Close) // after the gateways close: they hold connections to it
	const policy = "version: 1\ndefault: deny\nrules:\n  - id: echo\n    when: 'tool.name == \"echo\"'\n    effect: allow\n"
	getenv := benchKEK(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	type target struct {
		name string
		t    *benchTarget
	}
	var targets []target
	for _, d := range []struct{ name, storage string }{
		{"sqlite", fmt.Sprintf("{dsn: %q}", filepath.Join(b.TempDir(), "i.db"))},
		{"postgres", fmt.Sprintf("{driver: postgres, dsn: %q, schema: %s}", dsn, schema)},
	} {
		a := newBenchApp(b, d.storage, policy, "", up.URL, getenv)
		ctx := context.Background()
		if _, err := a.Registry.CreateUser(ctx, registry.UserSpec{Email: "b@example.com"}); err != nil {
			b.Fatal(err)
		}
		_, token, err := a.Registry.CreateAgent(ctx, registry.AgentSpec{ID: "bench", OwnerEmail: "b@example.com"})
		if err != nil {
			b.Fatal(err)
		}
		gw := httptest.NewServer(a.Handler)
		b.Cleanup(gw.Close)
		targets = append(targets, target{d.name, &benchTarget{url: gw.URL + "/mcp/acme", token: token, client: client}})
	}
	for _, tc := range targets {
		b.Run(tc.name, func(b *testing.B) {
			if tc.t.sid == "" {
				tc.t.init(b)
			}
			b.ReportAllocs()
			for b.Loop() {
				tc.t.echo(b)
			}
		})
	}
	for _, tc := range targets {
		b.Run(tc.name+"/32clients", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(16) // 16 × GOMAXPROCS(2) = 32 clients
			b.RunParallel(func(pb *testing.PB) {
				t := &benchTarget{url: tc.t.url, token: tc.t.token, client: client}
				t.init(b)
				for pb.Next() {
					t.echo(b)
				}
			})
		})
	}
}

// BenchmarkApprovalAcrossReplicas: two gateways in one process on one
// PostgreSQL schema (each with its own store and pool, as two replicas).
// Every echo call is held for the owner's approval on A; the owner's vote
// is recorded through B (B.Approvals.Vote, what B's console does); the
// time measured is from the vote to the upstream receiving the call from
// A (and to the agent's answer). It reports p50 and p99 in ms.
func BenchmarkApprovalAcrossReplicas(b *testing.B) {
	dsn := testenv.PostgresDSN(b)
	schema := pgSchema(b, dsn)
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	srv := acme.NewServer(acme.Options{})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if i := strings.Index(string(body), `"text":"held-`); i >= 0 {
			text := string(body[i+8:])
			text = text[:strings.IndexByte(text, '"')]
			mu.Lock()
			arrived[text] = time.Now()
			mu.Unlock()
		}
		req.Body = io.NopCloser(strings.NewReader(string(body)))
		h.ServeHTTP(w, req)
	}))
	b.Cleanup(up.Close) // after the gateways close: they hold connections to it
	const policy = "version: 1\ndefault: deny\nrules:\n  - id: echo-needs-owner\n    when: 'tool.name == \"echo\"'\n    effect: approve\n    approvers: [owner]\n"
	storage := fmt.Sprintf("{driver: postgres, dsn: %q, schema: %s}", dsn, schema)
	getenv := benchKEK(b)
	extra := "approvals: {hold: 5m, timeout: 10m}\n"
	a := newBenchApp(b, storage, policy, extra, up.URL, getenv)
	rb := newBenchApp(b, storage, policy, extra, up.URL, getenv)
	ctx := context.Background()
	owner, err := a.Registry.CreateUser(ctx, registry.UserSpec{Email: "owner@example.com"})
	if err != nil {
		b.Fatal(err)
	}
	_, token, err := a.Registry.CreateAgent(ctx, registry.AgentSpec{ID: "bench", OwnerEmail: "owner@example.com"})
	if err != nil {
		b.Fatal(err)
	}
	gwA := httptest.NewServer(a.Handler)
	b.Cleanup(gwA.Close)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	call := func(text string) error {
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + text + `"}}}`
		req, _ := http.NewRequest("POST", gwA.URL+"/mcp/acme", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		ans := answer(resp)
		if !strings.Contains(string(ans), text) || strings.Contains(string(ans), `"isError":true`) {
			return fmt.Errorf("unexpected answer %s", ans)
		}
		return nil
	}
	// pending finds the request A opened, reading B's store.
	pending := func() (string, error) {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			list, err := rb.Store.ListApprovals(ctx, store.ApprovalFilter{State: store.ApprovalPending, AgentID: "bench"})
			if err != nil {
				return "", err
			}
			if len(list) > 0 {
				return list[0].ID, nil
			}
			time.Sleep(time.Millisecond)
		}
		return "", fmt.Errorf("no pending approval appeared")
	}
	var toUpstream, toAnswer []time.Duration
	for i := 0; b.Loop(); i++ {
		text := "held-" + strconv.Itoa(i)
		type res struct {
			err error
			at  time.Time
		}
		done := make(chan res, 1)
		go func() {
			err := call(text)
			done <- res{err, time.Now()}
		}()
		id, err := pending()
		if err != nil {
			b.Fatal(err)
		}
		voted := time.Now()
		if _, err := rb.Approvals.Vote(ctx, id, owner, approval.Vote{Approve: true, Method: "bench"}); err != nil {
			b.Fatal(err)
		}
		r := <-done
		if r.err != nil {
			b.Fatal(r.err)
		}
		mu.Lock()
		toUpstream = append(toUpstream, arrived[text].Sub(voted))
		mu.Unlock()
		toAnswer = append(toAnswer, r.at.Sub(voted))
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(pct(toUpstream, 0.5)), "vote-B-to-upstream-A-p50-ms")
	b.ReportMetric(ms(pct(toUpstream, 0.99)), "vote-B-to-upstream-A-p99-ms")
	b.ReportMetric(ms(pct(toAnswer, 0.5)), "vote-B-to-answer-A-p50-ms")
	b.ReportMetric(ms(pct(toAnswer, 0.99)), "vote-B-to-answer-A-p99-ms")
}
