package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
)

// approvalRig is a gateway in process whose policy sends every echo call
// to the agent's owner for approval, with a signed webhook as the
// notification channel, and an upstream that notes when calls arrive.
type approvalRig struct {
	a        *app.App
	gw       *httptest.Server
	token    string
	owner    store.User
	mu       sync.Mutex
	notified map[string]time.Time // approval id -> webhook arrival
	arrived  map[string]time.Time // echo text -> upstream arrival
	hookCh   chan string
}

func newApprovalRig(tb testing.TB) *approvalRig {
	r := &approvalRig{notified: map[string]time.Time{}, arrived: map[string]time.Time{}, hookCh: make(chan string, 4096)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := acme.NewServer(acme.Options{})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if i := strings.Index(string(body), `"text":"held-`); i >= 0 {
			text := string(body[i+8:])
			text = text[:strings.IndexByte(text, '"')]
			r.mu.Lock()
			r.arrived[text] = time.Now()
			r.mu.Unlock()
		}
		req.Body = io.NopCloser(strings.NewReader(string(body)))
		h.ServeHTTP(w, req)
	}))
	tb.Cleanup(up.Close)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var m struct {
			ApprovalID string `json:"approval_id"`
		}
		json.NewDecoder(req.Body).Decode(&m)
		r.mu.Lock()
		if _, ok := r.notified[m.ApprovalID]; !ok {
			r.notified[m.ApprovalID] = time.Now()
		}
		r.mu.Unlock()
		select {
		case r.hookCh <- m.ApprovalID:
		default:
		}
	}))
	tb.Cleanup(hook.Close)
	dir := tb.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, []byte("version: 1\ndefault: deny\nrules:\n  - id: echo-needs-owner\n    when: 'tool.name == \"echo\"'\n    effect: approve\n    approvers: [owner]\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	cfg, err := config.Parse([]byte(fmt.Sprintf(`storage: {dsn: %s}
policy: {file: %s}
approvals: {hold: 5m, timeout: 10m}
notifications:
  webhooks: [{url: %q, secret: "bench-webhook-secret-0123456789"}]
upstreams:
  - name: acme
    url: %s
`, filepath.Join(dir, "i.db"), pol, hook.URL, up.URL)), filepath.Join(dir, "interlock.yaml"), config.LoadOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	r.a, err = app.New(ctx, cfg, app.Options{Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.a.Close() })
	if r.owner, err = r.a.Registry.CreateUser(ctx, registry.UserSpec{Email: "owner@example.com"}); err != nil {
		tb.Fatal(err)
	}
	if _, r.token, err = r.a.Registry.CreateAgent(ctx, registry.AgentSpec{ID: "bench", OwnerEmail: "owner@example.com"}); err != nil {
		tb.Fatal(err)
	}
	r.gw = httptest.NewServer(r.a.Handler)
	tb.Cleanup(r.gw.Close)
	return r
}

// call makes one held echo call and returns when it is answered.
func (r *approvalRig) call(client *http.Client, text string) error {
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + text + `"}}}`
	req, _ := http.NewRequest("POST", r.gw.URL+"/mcp/acme", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+r.token)
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	a := answer(resp)
	if !strings.Contains(string(a), text) || strings.Contains(string(a), `"isError":true`) {
		return fmt.Errorf("unexpected answer %s", a)
	}
	return nil
}

func pct(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	i := int(float64(len(d)-1) * p)
	return d[i]
}

// BenchmarkApprovalLatency measures, per held call: from the call's
// arrival to the webhook reaching the approver's receiver (interception
// to first notification), and from the approver's vote to the upstream
// receiving the call. It reports p50 and p99 of each (ms).
func BenchmarkApprovalLatency(b *testing.B) {
	r := newApprovalRig(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	ctx := context.Background()
	var toNotify, toUpstream []time.Duration
	for i := 0; b.Loop(); i++ {
		text := "held-" + strconv.Itoa(i)
		start := time.Now()
		errc := make(chan error, 1)
		go func() { errc <- r.call(client, text) }()
		id := <-r.hookCh
		r.mu.Lock()
		toNotify = append(toNotify, r.notified[id].Sub(start))
		r.mu.Unlock()
		voted := time.Now()
		if _, err := r.a.Approvals.Vote(ctx, id, r.owner, approval.Vote{Approve: true, Method: "bench"}); err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		r.mu.Lock()
		toUpstream = append(toUpstream, r.arrived[text].Sub(voted))
		r.mu.Unlock()
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(pct(toNotify, 0.5)), "notify-p50-ms")
	b.ReportMetric(ms(pct(toNotify, 0.99)), "notify-p99-ms")
	b.ReportMetric(ms(pct(toUpstream, 0.5)), "approve-to-upstream-p50-ms")
	b.ReportMetric(ms(pct(toUpstream, 0.99)), "approve-to-upstream-p99-ms")
}

// BenchmarkHeldCalls holds 1,000 calls at once (each waiting for its own
// approval), reports the memory each held call takes (heap growth divided
// by the calls held), then approves them all and checks every call
// completes.
func BenchmarkHeldCalls(b *testing.B) {
	const n = 1000
	for b.Loop() {
		r := newApprovalRig(b)
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 0}}
		ctx := context.Background()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := r.call(client, "held-"+strconv.Itoa(i)); err != nil {
					errs <- err
				}
			}()
		}
		deadline := time.Now().Add(2 * time.Minute)
		var pending []store.Approval
		for time.Now().Before(deadline) {
			var err error
			pending, err = r.a.Store.ListApprovals(ctx, store.ApprovalFilter{State: store.ApprovalPending})
			if err != nil {
				b.Fatal(err)
			}
			if len(pending) == n {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(pending) != n {
			b.Fatalf("%d calls held, want %d", len(pending), n)
		}
		runtime.GC()
		var during runtime.MemStats
		runtime.ReadMemStats(&during)
		b.ReportMetric(float64(during.HeapInuse-before.HeapInuse)/n/1024, "KiB/held-call")
		b.ReportMetric(float64(runtime.NumGoroutine())/n, "goroutines/held-call")
		for _, a := range pending {
			if _, err := r.a.Approvals.Vote(ctx, a.ID, r.owner, approval.Vote{Approve: true, Method: "bench"}); err != nil {
				b.Fatal(err)
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
}
