package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/postgres"
	"github.com/interlock-dev/interlock/internal/testenv"
	"github.com/interlock-dev/interlock/verify"
)

// pgSchema returns a fresh schema name on the test database and drops it,
// with everything in it, when the test ends. Register it before anything
// that uses the schema: cleanups run last-in first-out.
func pgSchema(t *testing.T, dsn string) string {
	t.Helper()
	var b [8]byte
	rand.Read(b[:])
	schema := "interlock_e2e_" + hex.EncodeToString(b[:])
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

// loadBalancer is the test's load balancer: round robin over the replicas,
// no session affinity, and a request whose replica refuses the connection
// (one being restarted) goes to the next one.
type loadBalancer struct {
	backends []*url.URL
	next     atomic.Uint64
	hits     []atomic.Int64
	srv      *http.Server
	url      string // http://localhost:PORT: every replica's public_url
}

func newLoadBalancer(t *testing.T) *loadBalancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	lb := &loadBalancer{url: fmt.Sprintf("http://localhost:%d", port)}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "replica" // chosen in RoundTrip
			pr.Out.Host = pr.In.Host
		},
		Transport:     lb,
		FlushInterval: -1, // event streams pass at once
	}
	lb.srv = &http.Server{Handler: rp}
	go lb.srv.Serve(ln)
	t.Cleanup(func() { lb.srv.Close() })
	return lb
}

func (lb *loadBalancer) setBackends(addrs ...string) {
	lb.hits = make([]atomic.Int64, len(addrs))
	for _, a := range addrs {
		lb.backends = append(lb.backends, &url.URL{Scheme: "http", Host: a})
	}
}

// RoundTrip sends the request to the next replica in turn, and to the one
// after it when the connection is refused.
func (lb *loadBalancer) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
	}
	start := lb.next.Add(1)
	var lastErr error
	for k := range uint64(len(lb.backends)) {
		i := (start + k) % uint64(len(lb.backends))
		out := req.Clone(req.Context())
		out.URL.Scheme, out.URL.Host = lb.backends[i].Scheme, lb.backends[i].Host
		if body != nil {
			out.Body = io.NopCloser(bytes.NewReader(body))
		}
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err == nil {
			lb.hits[i].Add(1)
			return resp, nil
		}
		lastErr = err
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, err
		}
	}
	return nil, lastErr
}

// replica is one "interlock serve" process.
type replica struct {
	name, cfg, addr, logPath string
	env                      []string
	cmd                      *exec.Cmd
	exited                   chan struct{}
}

func (r *replica) start(t *testing.T, bin string) {
	t.Helper()
	f, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", r.cfg)
	cmd.Env = r.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start replica %s: %v", r.name, err)
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(r.exited) }()
}

// waitReady waits for /readyz to answer 200.
func (r *replica) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-r.exited:
			t.Fatalf("replica %s exited during start-up:\n%s", r.name, r.logTail())
		default:
		}
		resp, err := http.Get("http://" + r.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("replica %s not ready after 60 s:\n%s", r.name, r.logTail())
}

// stop sends SIGTERM (a graceful shutdown) and waits; SIGKILL after 20 s.
func (r *replica) stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	select {
	case <-r.exited:
		return
	default:
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(20 * time.Second):
		r.cmd.Process.Kill()
		<-r.exited
	}
}

func (r *replica) logTail() string {
	b, _ := os.ReadFile(r.logPath)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// pgSide is what another replica (or the console behind the load
// balancer) does with the shared database: its own store, audit log and
// approval service on the same schema, in the test's process.
type pgSide struct {
	st  store.Store
	svc *approval.Service
}

func newPGSide(t *testing.T, dsn, schema string) *pgSide {
	t.Helper()
	ctx := context.Background()
	st, err := postgres.Open(ctx, postgres.Options{DSN: dsn, Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	al, err := audit.New(ctx, audit.Options{Store: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	svc, err := approval.New(approval.Options{Store: st, Audit: al, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctxRun, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go svc.Run(ctxRun, time.Second)
	return &pgSide{st: st, svc: svc}
}

// pending waits for agent's pending approval request for tool.
func (s *pgSide) pending(t *testing.T, agentID, tool string) store.Approval {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		list, err := s.st.ListApprovals(context.Background(), store.ApprovalFilter{State: store.ApprovalPending, AgentID: agentID})
		if err != nil {
			t.Fatal(err)
		}
		for _, ap := range list {
			if ap.Tool == tool {
				return ap
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no pending approval of %s for %s appeared", agentID, tool)
	return store.Approval{}
}

func (s *pgSide) vote(t *testing.T, id, email string) store.Approval {
	t.Helper()
	u, err := s.st.GetUserByEmail(context.Background(), email)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.svc.Vote(context.Background(), id, u, approval.Vote{Approve: true, Method: "test-vote"})
	if err != nil {
		t.Fatalf("vote by %s: %v", email, err)
	}
	return got
}

// replicaPair is two "interlock serve" processes on one fresh PostgreSQL
// schema behind a load balancer, in front of acme in verification mode (it
// checks every credential through the load balancer's JWKS).
type replicaPair struct {
	dsn, schema, bin string
	lb               *loadBalancer
	a, b             *replica
	headers          *headerLog
}

// newReplicaPair starts both replicas: together (at the same moment, on the
// empty schema) or one after the other (A ready before B starts).
func newReplicaPair(t *testing.T, together bool) *replicaPair {
	t.Helper()
	dsn := testenv.PostgresDSN(t)
	schema := pgSchema(t, dsn)
	bin := testenv.GoBinary(t, "./cmd/interlock")

	kekBytes := make([]byte, 32)
	rand.Read(kekBytes)
	kek := base64.StdEncoding.EncodeToString(kekBytes)
	// The CLI commands the tests run in process (agents suspend revokes
	// credentials) read the same key.
	t.Setenv("INTERLOCK_KEK", kek)

	lb := newLoadBalancer(t)
	v, err := verify.New(verify.Options{Issuer: lb.url})
	if err != nil {
		t.Fatal(err)
	}
	srv := acme.NewServer(acme.Options{Verifier: v})
	hl := &headerLog{}
	up := httptest.NewServer(hl.wrap(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)))
	t.Cleanup(up.Close)

	mk := func(name string) *replica {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), acme.DemoPolicy, 0o600); err != nil {
			t.Fatal(err)
		}
		addr := freeAddr(t)
		cfg := writeConfig(t, dir, fmt.Sprintf(`listen: %s
public_url: %s
storage: {driver: postgres, dsn: %q, schema: %s, max_conns: 8}
policy: {file: policy.yaml}
approvals: {hold: 3s}
upstreams:
  - name: acme
    url: %s
`, addr, lb.url, dsn, schema, up.URL))
		return &replica{name: name, cfg: cfg, addr: addr, logPath: filepath.Join(dir, "serve.log"),
			env: append(os.Environ(), "INTERLOCK_KEK="+kek)}
	}
	a, b := mk("A"), mk("B")
	lb.setBackends(a.addr, b.addr)
	t.Cleanup(func() {
		a.stop()
		b.stop()
		if t.Failed() {
			t.Logf("replica A log:\n%s", a.logTail())
			t.Logf("replica B log:\n%s", b.logTail())
		}
	})
	a.start(t, bin)
	if !together {
		a.waitReady(t)
	}
	b.start(t, bin)
	a.waitReady(t)
	b.waitReady(t)
	return &replicaPair{dsn: dsn, schema: schema, bin: bin, lb: lb, a: a, b: b, headers: hl}
}

func getJWKS(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// Replicas started at the same moment on an empty database (a fresh
// deployment with several replicas) must soon agree on the credential
// signing keys: a credential signed by one verifies through the key set
// the other publishes, since a load balancer sends the verifier to either.
// (Each may make a "first" key; they converge when they reload the keys,
// every 5 s. With a reload every minute, as before commit 821027b, this
// failed about half the time.)
func TestTwoReplicasStartTogether(t *testing.T) {
	p := newReplicaPair(t, true)
	token := agent(t, p.a.cfg, "start-bot", "owner@example.com")
	args := map[string]any{"text": "who signed me"}
	argsJSON, _ := json.Marshal(args)
	deadline := time.Now().Add(5 * time.Second)
	var ka, kb string
	for {
		if ka, kb = getJWKS(t, p.a.addr), getJWKS(t, p.b.addr); ka == kb || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ka != kb {
		t.Errorf("5 s after a start together the replicas still publish different key sets:\nA: %s\nB: %s", ka, kb)
	}
	for _, tc := range []struct{ signer, other *replica }{{p.a, p.b}, {p.b, p.a}} {
		cs := connectHTTP(t, "http://"+tc.signer.addr+"/mcp/acme", token)
		// acme checks the credential through the load balancer: either
		// replica's key set.
		r := callFull(t, cs, "echo", args)
		if r.isError {
			t.Errorf("echo through %s (acme verifies through the load balancer): %s", tc.signer.name, r.text)
			continue
		}
		tok, _ := receipt(t, r.meta)
		v, err := verify.New(verify.Options{Issuer: p.lb.url, JWKS: []byte(getJWKS(t, tc.other.addr)), SkipStatus: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(context.Background(), tok, &verify.Call{Upstream: "acme", Tool: "echo", Arguments: argsJSON}); err != nil {
			t.Errorf("a credential issued by %s does not verify with the key set %s publishes: %v", tc.signer.name, tc.other.name, err)
		}
	}
}

// Two "interlock serve" processes on one PostgreSQL schema behind a load
// balancer, driven by real MCP clients: an approval recorded through one
// replica releases the call held on the other; a credential consumed on
// one is refused on the other; a budget stays exact under concurrent calls
// on both; the kill switch thrown on one stops the agent on the other; the
// audit log stays one chain; pending approvals, keys and status lists
// survive a restart.
func TestTwoReplicas(t *testing.T) {
	// A first, then B: replicas started together on an empty database each
	// make a first signing key and agree only after their next key reload
	// (TestTwoReplicasStartTogether).
	p := newReplicaPair(t, false)
	dsn, schema, bin, lb, a, b, hl := p.dsn, p.schema, p.bin, p.lb, p.a, p.b, p.headers
	if ka, kb := getJWKS(t, a.addr), getJWKS(t, b.addr); ka != kb || !strings.Contains(ka, `"kid"`) {
		t.Fatalf("the replicas publish different key sets:\nA: %s\nB: %s", ka, kb)
	}

	if _, _, err := run(t, "users", "create", "--config", b.cfg, "--email", "fin@example.com", "--name", "Fin", "--role", "finance-manager"); err != nil {
		t.Fatal(err)
	}
	side := newPGSide(t, dsn, schema) // B's side of the database
	ctx := context.Background()

	t.Run("cross-replica approval", func(t *testing.T) {
		token := agent(t, a.cfg, "approval-bot", "owner@example.com")
		csA := connectHTTP(t, "http://"+a.addr+"/mcp/acme", token)
		args := map[string]any{"item": "laptop batteries", "quantity": 10, "unit_price_usd": 120}
		type result struct {
			r  callResult
			at time.Time
		}
		done := make(chan result, 1)
		go func() {
			r := callFull(t, csA, "place_order", args)
			done <- result{r, time.Now()}
		}()
		ap := side.pending(t, "approval-bot", "place_order")
		if ap.Rule != "owner-approves-mid-orders" {
			t.Errorf("held by rule %q", ap.Rule)
		}
		voted := time.Now()
		side.vote(t, ap.ID, "owner@example.com")
		var res result
		select {
		case res = <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("the held call on A did not complete after the vote through B")
		}
		took := res.at.Sub(voted)
		t.Logf("vote recorded through B -> held call on A answered: %s", took.Round(time.Microsecond))
		if res.r.isError {
			t.Fatalf("approved call: %s", res.r.text)
		}
		tok, decision := receipt(t, res.r.meta)
		if decision["approval_id"] != ap.ID || res.r.meta[acme_verified] != decision["credential_id"] {
			t.Errorf("receipt %v, acme verified %v", decision, res.r.meta[acme_verified])
		}
		subj := payload(t, tok)["credentialSubject"].(map[string]any)
		auth, _ := subj["authorization"].([]any)
		if len(auth) != 1 || auth[0].(map[string]any)["approver"] != "owner@example.com" || auth[0].(map[string]any)["approval_id"] != ap.ID {
			t.Errorf("credential authorization = %v", subj["authorization"])
		}
		if iss := payload(t, tok)["iss"]; iss != lb.url {
			t.Errorf("credential iss = %v, want the load balancer's URL %s", iss, lb.url)
		}
		if took > 3*time.Second {
			t.Errorf("the approval took %s to reach the held call on the other replica (the hold is 3 s: it was not the notification)", took)
		}

		t.Run("replay on the other replica", func(t *testing.T) {
			small := map[string]any{"item": "USB-C cables", "quantity": 10, "unit_price_usd": 12.5}
			first := callFull(t, csA, "place_order", small)
			if first.isError {
				t.Fatalf("small order on A: %s", first.text)
			}
			consumed, _ := receipt(t, first.meta)
			csB := connectHTTP(t, "http://"+b.addr+"/mcp/acme", token)
			hl.mu.Lock()
			before := len(hl.seen)
			hl.mu.Unlock()
			for _, c := range []struct {
				token string
				args  map[string]any
			}{{consumed, small}, {tok, args}} {
				r := callWithMeta(t, csB, "place_order", c.args, mcp.Meta{"io.interlock/credential": c.token})
				if !r.isError || !strings.Contains(r.text, "no use left") {
					t.Errorf("a credential consumed on A, presented to B: %+v", r)
				}
			}
			hl.mu.Lock()
			after := len(hl.seen)
			hl.mu.Unlock()
			if after != before {
				t.Error("a replayed call reached the upstream")
			}
		})
	})

	t.Run("budget under concurrent load on both", func(t *testing.T) {
		token := agent(t, a.cfg, "budget-bot", "owner@example.com")
		sessions := []*mcp.ClientSession{
			connectHTTP(t, "http://"+a.addr+"/mcp/acme", token),
			connectHTTP(t, "http://"+b.addr+"/mcp/acme", token),
		}
		const n = 40
		var wg sync.WaitGroup
		results := make([]callResult, n)
		start := time.Now()
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Different items: each held call opens its own request.
				results[i] = callFull(t, sessions[i%2], "place_order", map[string]any{"item": fmt.Sprintf("chair-%02d", i), "quantity": 1, "unit_price_usd": 100})
			}()
		}
		wg.Wait()
		t.Logf("40 concurrent $100 orders over A and B answered in %s", time.Since(start).Round(time.Millisecond))
		allowed, held := [2]int{}, 0
		for i, r := range results {
			switch {
			case !r.isError:
				allowed[i%2]++
			case strings.Contains(r.text, "holding this call for approval") && strings.Contains(r.text, "daily-spend"):
				held++
			default:
				t.Errorf("call %d: neither allowed nor held for the budget: %s", i, r.text)
			}
		}
		t.Logf("allowed: %d on A, %d on B; held for approval: %d", allowed[0], allowed[1], held)
		if allowed[0]+allowed[1] != 20 || held != 20 {
			t.Errorf("allowed %d, held %d: want exactly 20 and 20 (a $2,000 budget of $100 orders)", allowed[0]+allowed[1], held)
		}
		totals, err := side.st.BudgetTotals(ctx, []string{"daily-spend/agent/budget-bot"}, time.Now().Add(-24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if got := totals["daily-spend/agent/budget-bot"]; got != 2000 {
			t.Errorf("charged total in the store = %v, want 2000 exactly", got)
		}
	})

	t.Run("kill switch thrown through B stops the agent on A", func(t *testing.T) {
		token := agent(t, a.cfg, "kill-bot", "owner@example.com")
		csA := connectHTTP(t, "http://"+a.addr+"/mcp/acme", token)
		echo := map[string]any{"text": "still here"}
		if r := callFull(t, csA, "echo", echo); r.isError {
			t.Fatalf("echo before the stop: %s", r.text)
		}
		if _, _, err := run(t, "agents", "suspend", "kill-bot", "--config", b.cfg, "--reason", "replica test"); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		deadline := stopped.Add(time.Second)
		calls := 0
		for {
			calls++
			r := callFull(t, csA, "echo", echo)
			if r.isError && strings.Contains(r.text, `"kill-switch"`) && strings.Contains(r.text, "replica test") {
				t.Logf("the suspension through B stopped the agent on A after %s (%d call(s))", time.Since(stopped).Round(time.Microsecond), calls)
				break
			}
			if r.isError {
				t.Fatalf("refused, but not by the kill switch: %s", r.text)
			}
			if time.Now().After(deadline) {
				t.Fatalf("A still lets the suspended agent through 1 s after the suspension (%d calls)", calls)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	t.Run("sessions", func(t *testing.T) {
		token := agent(t, a.cfg, "session-bot", "owner@example.com")
		// Pass-through (/mcp/{http upstream}) needs no affinity: one
		// session, round robin over both replicas.
		before0, before1 := lb.hits[0].Load(), lb.hits[1].Load()
		cs := connectHTTP(t, lb.url+"/mcp/acme", token)
		for i := range 6 {
			if r := callFull(t, cs, "echo", map[string]any{"text": fmt.Sprint("rr-", i)}); r.isError {
				t.Fatalf("echo %d through the load balancer: %s", i, r.text)
			}
		}
		if lb.hits[0].Load() == before0 || lb.hits[1].Load() == before1 {
			t.Errorf("the session did not use both replicas (A %d, B %d requests)", lb.hits[0].Load()-before0, lb.hits[1].Load()-before1)
		}
		// A message-level session (the aggregated /mcp) lives in the memory
		// of the replica that made it: the other does not know it.
		post := func(addr, sid, body string) *http.Response {
			req, _ := http.NewRequest("POST", "http://"+addr+"/mcp", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			if sid != "" {
				req.Header.Set("Mcp-Session-Id", sid)
				req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp
		}
		resp := post(a.addr, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`)
		sid := resp.Header.Get("Mcp-Session-Id")
		if resp.StatusCode != http.StatusOK || sid == "" {
			t.Fatalf("initialize on A's /mcp: %d, session %q", resp.StatusCode, sid)
		}
		ping := `{"jsonrpc":"2.0","id":2,"method":"ping"}`
		if resp := post(a.addr, sid, ping); resp.StatusCode != http.StatusOK {
			t.Errorf("ping in the session on A: %d", resp.StatusCode)
		}
		if resp := post(b.addr, sid, ping); resp.StatusCode != http.StatusNotFound {
			t.Errorf("A's aggregated session on B: %d, want 404 (route a session to the replica that holds it)", resp.StatusCode)
		}
	})

	t.Run("restart keeps keys, status lists and pending approvals", func(t *testing.T) {
		token := agent(t, a.cfg, "restart-bot", "owner@example.com")
		small := map[string]any{"item": "HDMI cables", "quantity": 4, "unit_price_usd": 9}
		csA := connectHTTP(t, "http://"+a.addr+"/mcp/acme", token)
		r := callFull(t, csA, "place_order", small)
		if r.isError {
			t.Fatalf("small order: %s", r.text)
		}
		before, _ := receipt(t, r.meta)
		big := map[string]any{"item": "standing desks", "quantity": 2, "unit_price_usd": 600}
		r = callFull(t, csA, "place_order", big) // held 3 s, nobody answers
		if !r.isError || !strings.Contains(r.text, "holding this call for approval") {
			t.Fatalf("the $1,200 order was not held: %+v", r)
		}
		ap := side.pending(t, "restart-bot", "place_order")
		csA.Close()

		a.stop()
		a.start(t, bin)
		a.waitReady(t)

		out, _, err := run(t, "approvals", "list", "--config", a.cfg, "--state", "pending", "--agent", "restart-bot", "--json")
		var list []map[string]any
		if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0]["id"] != ap.ID {
			t.Fatalf("approvals list after the restart: %v\n%s", err, out)
		}
		// A credential issued before the restart verifies through the load
		// balancer's JWKS and status list (whichever replica answers).
		argsJSON, _ := json.Marshal(small)
		for i := range 2 {
			fresh, err := verify.New(verify.Options{Issuer: lb.url})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fresh.Verify(ctx, before, &verify.Call{Upstream: "acme", Tool: "place_order", Arguments: argsJSON}); err != nil {
				t.Errorf("verify #%d after the restart: %v", i+1, err)
			}
		}
		// The request still works: approved through B, the agent's retry on
		// the restarted A goes through.
		side.vote(t, ap.ID, "owner@example.com")
		csA = connectHTTP(t, "http://"+a.addr+"/mcp/acme", token)
		r = callFull(t, csA, "place_order", big)
		if r.isError {
			t.Fatalf("retry after the approval: %s", r.text)
		}
		if _, decision := receipt(t, r.meta); decision["approval_id"] != ap.ID {
			t.Errorf("retry's receipt %v, want approval %s", decision, ap.ID)
		}
	})

	// Everything above, from two processes (and the CLI): one chain.
	out, _, err := run(t, "audit", "verify", "--config", a.cfg)
	if err != nil || !strings.HasPrefix(out, "ok: ") {
		t.Errorf("audit verify: %v\n%s", err, out)
	}
	t.Logf("audit verify: %s", strings.TrimSpace(out))
	if out2, _, err := run(t, "audit", "verify", "--config", b.cfg); err != nil {
		t.Errorf("audit verify with B's config: %v\n%s", err, out2)
	}
}
