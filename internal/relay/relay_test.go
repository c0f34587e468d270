package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/relay"
	"github.com/interlock-dev/interlock/internal/server"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
	"github.com/interlock-dev/interlock/internal/testenv"
)

// The test binary doubles as a stdio MCP upstream (see runStdioUpstream).
func TestMain(m *testing.M) {
	if os.Getenv("RELAY_TEST_UPSTREAM") == "stdio" {
		runStdioUpstream()
		return
	}
	testenv.Main(m)
}

// upstreamSignals lets tests see what happened inside an upstream.
type upstreamSignals struct {
	slowStarted   chan struct{}
	slowCancelled chan struct{}
	markerDir     string // stdio upstreams write marker files here
}

type echoIn struct {
	Text string `json:"text"`
}

// newTestServer is a real go-sdk MCP server with the tools the tests need.
func newTestServer(sig *upstreamSignals) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "testup", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "echo text"}, func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "slow", Description: "waits until cancelled"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		if sig.slowStarted != nil {
			sig.slowStarted <- struct{}{}
		}
		mark(sig, "slow-started")
		// Tell a caller that asked for progress that the tool runs: it then
		// knows its request's stream is open (cancelling earlier races the
		// client's own request).
		if tok := req.Params.GetProgressToken(); tok != nil {
			req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: 1, Message: "started"})
		}
		select {
		case <-ctx.Done():
			if sig.slowCancelled != nil {
				close(sig.slowCancelled)
			}
			mark(sig, "slow-cancelled")
			return nil, nil, ctx.Err()
		case <-time.After(time.Minute):
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "not cancelled"}}}, nil, nil
		}
	})
	mcp.AddTool(s, &mcp.Tool{Name: "progress", Description: "reports progress three times"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		tok := req.Params.GetProgressToken()
		for i := 1; i <= 3 && tok != nil; i++ {
			req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Total: 3})
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "roots", Description: "asks the client for its roots"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.ListRoots(ctx, nil)
		if err != nil {
			return nil, nil, err
		}
		var uris []string
		for _, r := range res.Roots {
			uris = append(uris, r.URI)
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strings.Join(uris, ",")}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "pid", Description: "the server's process id"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprint(os.Getpid())}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "getenv", Description: "a variable of the server's environment"}, func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "[" + os.Getenv(in.Text) + "]"}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "crash", Description: "the process exits"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		os.Exit(3)
		return nil, nil, nil
	})
	return s
}

func mark(sig *upstreamSignals, name string) {
	if sig.markerDir != "" {
		os.WriteFile(filepath.Join(sig.markerDir, name), nil, 0o600)
	}
}

func runStdioUpstream() {
	sig := &upstreamSignals{markerDir: os.Getenv("RELAY_TEST_MARKER")}
	if err := newTestServer(sig).Run(context.Background(), &mcp.StdioTransport{}); err != nil {
		fmt.Fprintln(os.Stderr, "stdio upstream:", err)
	}
}

// headerLog records every header set an upstream received.
type headerLog struct {
	mu  sync.Mutex
	all []http.Header
}

func (h *headerLog) add(x http.Header) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.all = append(h.all, x.Clone())
}

func (h *headerLog) snapshot() []http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]http.Header(nil), h.all...)
}

// killSwitch is the gate's first check (agent and owner active) alone: the
// relay's tests need no policy or audit log.
type killSwitch struct{}

func (killSwitch) Check(ctx context.Context, c *relay.Call) (*relay.Verdict, error) {
	if err := registry.CheckActive(*c.Principal); err != nil {
		return &relay.Verdict{Deny: &relay.Denial{Reason: err.Error()}}, nil
	}
	return nil, nil
}

// denyNamed refuses tools by name, then asks the real gate; it records how
// every forwarded call ended.
type denyNamed struct {
	names    map[string]bool
	next     relay.Gate
	outcomes *outcomeLog
}

type outcomeLog struct {
	mu  sync.Mutex
	all map[string][]relay.Outcome // by tool name
}

func (o *outcomeLog) get(name string) []relay.Outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]relay.Outcome(nil), o.all[name]...)
}

func (d denyNamed) Check(ctx context.Context, c *relay.Call) (*relay.Verdict, error) {
	if d.names[c.Name] {
		return &relay.Verdict{Deny: &relay.Denial{Reason: "test policy refuses " + c.Name}}, nil
	}
	v, err := d.next.Check(ctx, c)
	if err != nil || (v != nil && v.Deny != nil) || d.outcomes == nil {
		return v, err
	}
	name := c.Name
	return &relay.Verdict{Done: func(o relay.Outcome) {
		d.outcomes.mu.Lock()
		defer d.outcomes.mu.Unlock()
		if d.outcomes.all == nil {
			d.outcomes.all = map[string][]relay.Outcome{}
		}
		d.outcomes.all[name] = append(d.outcomes.all[name], o)
	}}, nil
}

// waitOutcome waits until n outcomes are recorded for name.
func waitOutcome(t *testing.T, o *outcomeLog, name string, n int) []relay.Outcome {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := o.get(name)
		if len(got) >= n {
			if len(got) > n {
				t.Fatalf("%s: %d outcomes, want %d (Done called more than once?)", name, len(got), n)
			}
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d outcomes after waiting, want %d", name, len(got), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type env struct {
	t         *testing.T
	st        store.Store
	reg       *registry.Registry
	token     string // agent "bot", owner a@example.com
	token2    string // agent "bot2", same owner
	url       string // interlock base URL
	headers   *headerLog
	sig       *upstreamSignals
	markerDir string
	outcomes  *outcomeLog
	upServer  *mcp.Server // the HTTP upstream "acme"
	changed   chan string // upstream names from OnListChanged
}

const upstreamSecret = "upstream-secret-value"

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "i.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := registry.New(registry.Options{Store: st, Logger: log, GenerationMaxAge: time.Nanosecond})
	t.Cleanup(func() { reg.Close() })
	if _, err := reg.CreateUser(ctx, registry.UserSpec{Email: "a@example.com", Name: "A"}); err != nil {
		t.Fatal(err)
	}
	_, tok, err := reg.CreateAgent(ctx, registry.AgentSpec{ID: "bot", OwnerEmail: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	_, tok2, err := reg.CreateAgent(ctx, registry.AgentSpec{ID: "bot2", OwnerEmail: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, reg: reg, token: tok, token2: tok2, headers: &headerLog{},
		sig: &upstreamSignals{slowStarted: make(chan struct{}, 4), slowCancelled: make(chan struct{})}, markerDir: t.TempDir(),
		outcomes: &outcomeLog{}}

	// HTTP upstream: a real go-sdk server; requests whose body calls the tool
	// "die" get their connection cut after the first event.
	up := newTestServer(e.sig)
	e.upServer = up
	e.changed = make(chan string, 16)
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return up }, nil)
	upSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.headers.add(r.Header)
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			if bytes.Contains(body, []byte(`"name":"die"`)) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(200)
				io.WriteString(w, "id: 1\ndata: \n\n")
				w.(http.Flusher).Flush()
				conn, _, _ := http.NewResponseController(w).Hijack()
				conn.Close()
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		sdk.ServeHTTP(w, r)
	}))
	t.Cleanup(upSrv.Close)

	r, err := relay.New(relay.Options{
		Upstreams: []relay.Upstream{
			{Name: "acme", URL: upSrv.URL, Headers: http.Header{"X-Api-Key": {upstreamSecret}}, Prefix: "acme_"},
			{Name: "local", Command: []string{os.Args[0]}, Env: []string{"RELAY_TEST_UPSTREAM=stdio", "RELAY_TEST_MARKER=" + e.markerDir}, Prefix: "local_"},
			{Name: "pool", Command: []string{os.Args[0]}, Env: []string{"RELAY_TEST_UPSTREAM=stdio"}, Shared: true, Prefix: "pool_"},
		},
		Auth:       reg,
		Gate:       denyNamed{names: map[string]bool{"forbidden": true}, next: killSwitch{}, outcomes: e.outcomes},
		SessionKey: bytes.Repeat([]byte("k"), 32),
		Logger:     log,
		OnListChanged: func(upstream, method string) {
			if method == "notifications/tools/list_changed" {
				select {
				case e.changed <- upstream:
				default:
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(server.Options{AllowedHosts: []string{"127.0.0.1", "localhost"}, MCP: r.Handler(), Logger: log}))
	t.Cleanup(func() { srv.Close(); r.Close() })
	e.url = srv.URL
	return e
}

type bearerRT struct{ token string }

func (b bearerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.token != "" {
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// connect opens a real go-sdk client session through interlock.
func (e *env) connect(path, token string, opts *mcp.ClientOptions) *mcp.ClientSession {
	e.t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "test-agent", Version: "1"}, opts)
	c.AddRoots(&mcp.Root{URI: "file:///work/project"})
	cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: e.url + path,
		HTTPClient: &http.Client{Transport: bearerRT{token}}}, nil)
	if err != nil {
		e.t.Fatalf("connect %s: %v", path, err)
	}
	e.t.Cleanup(func() { cs.Close() })
	return cs
}

func text(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

func call(t *testing.T, cs *mcp.ClientSession, name string, args any) (*mcp.CallToolResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
}

func toolNames(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	return names
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestRelayEndpoints(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		path, echoTool string
		tools          []string
	}{
		{"/mcp/acme", "echo", []string{"echo", "slow", "roots", "progress"}},
		{"/mcp/local", "echo", []string{"echo", "slow", "roots", "progress"}},
		{"/mcp", "local_echo", []string{"acme_echo", "acme_slow", "local_echo", "local_roots", "local_crash"}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			var progress []float64
			var pmu sync.Mutex
			cs := e.connect(tc.path, e.token, &mcp.ClientOptions{
				ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
					pmu.Lock()
					progress = append(progress, r.Params.Progress)
					pmu.Unlock()
				},
			})
			names := toolNames(t, cs)
			for _, want := range tc.tools {
				if !contains(names, want) {
					t.Errorf("tools/list: %q missing from %v", want, names)
				}
			}
			res, err := call(t, cs, tc.echoTool, map[string]any{"text": "hello"})
			if err != nil || res.IsError || text(t, res) != "hello" {
				t.Fatalf("echo: res=%+v err=%v", res, err)
			}
			// A gated call refused by the gate is a tool error naming the reason.
			prefix := strings.TrimSuffix(tc.echoTool, "echo")
			res, err = call(t, cs, prefix+"forbidden", map[string]any{})
			if err != nil || !res.IsError {
				t.Fatalf("forbidden: want an isError result, got res=%+v err=%v", res, err)
			}
			// Server-to-client requests come back through the relay (ids rewritten on /mcp).
			res, err = call(t, cs, prefix+"roots", map[string]any{})
			if err != nil || res.IsError || text(t, res) != "file:///work/project" {
				t.Fatalf("roots: res=%+v err=%v", res, err)
			}
			// Progress notifications reach the caller.
			params := &mcp.CallToolParams{Name: prefix + "progress", Arguments: map[string]any{}}
			params.SetProgressToken("p1")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if res, err := cs.CallTool(ctx, params); err != nil || res.IsError {
				t.Fatalf("progress: res=%+v err=%v", res, err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				pmu.Lock()
				n := len(progress)
				pmu.Unlock()
				if n == 3 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("got %d progress notifications, want 3", n)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestAgentTokenNeverReachesUpstream(t *testing.T) {
	e := newEnv(t)
	cs := e.connect("/mcp/acme", e.token, nil)
	if _, err := call(t, cs, "echo", map[string]any{"text": "x"}); err != nil {
		t.Fatal(err)
	}
	hs := e.headers.snapshot()
	if len(hs) == 0 {
		t.Fatal("the upstream saw no requests")
	}
	for _, h := range hs {
		if h.Get("X-Api-Key") != upstreamSecret {
			t.Errorf("upstream request without the brokered secret: %v", h)
		}
		for k, vs := range h {
			for _, v := range vs {
				if strings.Contains(v, e.token) {
					t.Errorf("agent token passed upstream in header %s", k)
				}
			}
		}
		if h.Get("Authorization") != "" {
			t.Errorf("Authorization header passed upstream: %q", h.Get("Authorization"))
		}
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, path, auth string
		status           int
		challenge        string
	}{
		{"no token", "/mcp/acme", "", 401, `Bearer realm="interlock"`},
		{"wrong scheme", "/mcp/acme", "Basic Ym90OnNlY3JldA==", 401, `Bearer realm="interlock"`},
		{"unknown token", "/mcp/acme", "Bearer ilk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 401, `error="invalid_token"`},
		{"garbage token", "/mcp", "Bearer not-a-token", 401, `error="invalid_token"`},
		{"unknown upstream", "/mcp/nope", "Bearer " + e.token, 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.url+tc.path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, tc.challenge) {
				t.Errorf("WWW-Authenticate %q, want it to contain %q", got, tc.challenge)
			}
		})
	}
}

// post sends raw JSON-RPC and returns the status, headers and the JSON-RPC
// messages in the answer (from JSON or SSE).
func (e *env) post(path, token, session, body string, extra map[string]string) (int, http.Header, []map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	for k, v := range extra {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var msgs []map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok && d != "" {
				var m map[string]any
				if json.Unmarshal([]byte(d), &m) == nil {
					msgs = append(msgs, m)
				}
			}
		}
	} else {
		b, _ := io.ReadAll(resp.Body)
		b = bytes.TrimSpace(b)
		if len(b) > 0 && b[0] == '[' {
			json.Unmarshal(b, &msgs)
		} else if len(b) > 0 {
			var m map[string]any
			json.Unmarshal(b, &m)
			msgs = append(msgs, m)
		}
	}
	return resp.StatusCode, resp.Header, msgs
}

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"%s","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

func TestSessionIsBoundToAgent(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/mcp/acme", "/mcp/local", "/mcp"} {
		t.Run(path, func(t *testing.T) {
			status, h, _ := e.post(path, e.token, "", fmt.Sprintf(initBody, "2025-11-25"), nil)
			sid := h.Get("Mcp-Session-Id")
			if status != 200 || sid == "" {
				t.Fatalf("initialize: status %d, session %q", status, sid)
			}
			list := `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
			ver := map[string]string{"Mcp-Protocol-Version": "2025-11-25"}
			if status, _, _ := e.post(path, e.token2, sid, list, ver); status != http.StatusNotFound {
				t.Errorf("another agent riding the session: status %d, want 404", status)
			}
			if status, _, _ := e.post(path, e.token, sid+"x", list, ver); status != http.StatusNotFound {
				t.Errorf("forged session id: status %d, want 404", status)
			}
			if status, _, msgs := e.post(path, e.token, sid, list, ver); status != 200 || len(msgs) != 1 || msgs[0]["result"] == nil {
				t.Errorf("owner of the session: status %d, msgs %v", status, msgs)
			}
		})
	}
}

func TestGateRefusesInactiveAgentsAndOwners(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cs := e.connect("/mcp/acme", e.token, nil)
	if res, err := call(t, cs, "echo", map[string]any{"text": "ok"}); err != nil || res.IsError {
		t.Fatalf("active agent refused: %v %v", res, err)
	}
	if _, err := e.st.UpdateAgent(ctx, "bot", func(a store.Agent) (store.Agent, error) {
		a.State = store.AgentSuspended
		return a, nil
	}); err != nil {
		t.Fatal(err)
	}
	res, err := call(t, cs, "echo", map[string]any{"text": "ok"})
	if err != nil || !res.IsError || !strings.Contains(text(t, res), "suspended") {
		t.Fatalf("suspended agent: res=%v err=%v", res, err)
	}
	// Ungated requests still pass: only calls that act are refused.
	if names := toolNames(t, cs); !contains(names, "echo") {
		t.Fatalf("tools/list refused for a suspended agent: %v", names)
	}
	if _, err := e.st.UpdateAgent(ctx, "bot", func(a store.Agent) (store.Agent, error) {
		a.State = store.AgentActive
		return a, nil
	}); err != nil {
		t.Fatal(err)
	}
	u, _ := e.st.GetUserByEmail(ctx, "a@example.com")
	if _, err := e.st.UpdateUser(ctx, u.ID, func(u store.User) (store.User, error) {
		u.Active = false
		return u, nil
	}); err != nil {
		t.Fatal(err)
	}
	res, err = call(t, cs, "echo", map[string]any{"text": "ok"})
	if err != nil || !res.IsError || !strings.Contains(text(t, res), "deactivated") {
		t.Fatalf("agent of a deactivated owner: res=%v err=%v", res, err)
	}
}

func TestUpstreamDiesMidCall(t *testing.T) {
	e := newEnv(t)
	t.Run("http", func(t *testing.T) {
		cs := e.connect("/mcp/acme", e.token, nil)
		_, err := call(t, cs, "die", map[string]any{})
		if err == nil || !strings.Contains(err.Error(), "failed before answering") {
			t.Fatalf("want an MCP error saying the upstream failed, got %v", err)
		}
		// The session still works afterwards.
		if res, err := call(t, cs, "echo", map[string]any{"text": "again"}); err != nil || text(t, res) != "again" {
			t.Fatalf("after the failure: %v %v", res, err)
		}
	})
	t.Run("stdio", func(t *testing.T) {
		cs := e.connect("/mcp/local", e.token, nil)
		_, err := call(t, cs, "crash", map[string]any{})
		if err == nil || !strings.Contains(err.Error(), "exited") {
			t.Fatalf("want an MCP error saying the upstream exited, got %v", err)
		}
		_, err = call(t, cs, "echo", map[string]any{"text": "x"})
		if err == nil || !strings.Contains(err.Error(), "exited") {
			t.Fatalf("a call after the crash: want an error, got %v", err)
		}
	})
}

func TestClientCancellationReachesUpstream(t *testing.T) {
	e := newEnv(t)
	t.Run("http", func(t *testing.T) {
		started := make(chan struct{}, 1)
		cs := e.connect("/mcp/acme", e.token, &mcp.ClientOptions{ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
			select {
			case started <- struct{}{}:
			default:
			}
		}})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			p := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{}}
			p.SetProgressToken("slow-http")
			_, err := cs.CallTool(ctx, p)
			errc <- err
		}()
		// Cancel once the tool runs and the call's stream is open (the
		// tool's first progress notification says both).
		select {
		case <-started:
		case <-time.After(30 * time.Second):
			t.Fatal("the slow tool never started")
		}
		cancel()
		select {
		case <-e.sig.slowCancelled:
		case <-time.After(30 * time.Second):
			t.Fatal("the upstream never saw the cancellation")
		}
		if err := <-errc; err == nil {
			t.Fatal("the cancelled call returned no error")
		}
	})
	for _, path := range []string{"/mcp/local", "/mcp"} {
		t.Run("stdio "+path, func(t *testing.T) {
			os.Remove(filepath.Join(e.markerDir, "slow-started"))
			os.Remove(filepath.Join(e.markerDir, "slow-cancelled"))
			started := make(chan struct{}, 1)
			cs := e.connect(path, e.token, &mcp.ClientOptions{ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
				select {
				case started <- struct{}{}:
				default:
				}
			}})
			name := "slow"
			if path == "/mcp" {
				name = "local_slow"
			}
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				p := &mcp.CallToolParams{Name: name, Arguments: map[string]any{}}
				p.SetProgressToken("slow-stdio")
				_, err := cs.CallTool(ctx, p)
				errc <- err
			}()
			waitFile(t, filepath.Join(e.markerDir, "slow-started"))
			<-started // the call's stream is open on the client's side too
			cancel()
			waitFile(t, filepath.Join(e.markerDir, "slow-cancelled"))
			<-errc
			// The session is still usable after a cancellation.
			echo := strings.TrimSuffix(name, "slow") + "echo"
			if res, err := call(t, cs, echo, map[string]any{"text": "after"}); err != nil || text(t, res) != "after" {
				t.Fatalf("after cancel: %v %v", res, err)
			}
		})
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", filepath.Base(path))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBatchWithRefusedCall(t *testing.T) {
	e := newEnv(t)
	status, h, _ := e.post("/mcp/acme", e.token, "", fmt.Sprintf(initBody, "2025-03-26"), nil)
	sid := h.Get("Mcp-Session-Id")
	if status != 200 || sid == "" {
		t.Fatalf("initialize: %d %q", status, sid)
	}
	ver := map[string]string{"Mcp-Protocol-Version": "2025-03-26"}
	e.post("/mcp/acme", e.token, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, ver)
	batch := `[{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"echo","arguments":{"text":"one"}}},
	           {"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"forbidden","arguments":{}}}]`
	status, _, msgs := e.post("/mcp/acme", e.token, sid, batch, ver)
	if status != 200 {
		t.Fatalf("batch: status %d", status)
	}
	byID := map[string]map[string]any{}
	for _, m := range msgs {
		if id, ok := m["id"].(string); ok {
			byID[id] = m
		}
	}
	if len(byID) != 2 {
		t.Fatalf("want answers for a and b, got %v", msgs)
	}
	if r, _ := byID["b"]["result"].(map[string]any); r == nil || r["isError"] != true {
		t.Errorf("b should be refused with isError: %v", byID["b"])
	}
	if r, _ := byID["a"]["result"].(map[string]any); r == nil || r["isError"] == true {
		t.Errorf("a should be answered by the upstream: %v", byID["a"])
	}
}

func TestHeaderBodyMismatchRefused(t *testing.T) {
	e := newEnv(t)
	body := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"forbidden","arguments":{}}}`
	status, _, msgs := e.post("/mcp/acme", e.token, "", body, map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "echo"})
	if status != 400 || len(msgs) != 1 {
		t.Fatalf("status %d msgs %v", status, msgs)
	}
	if code := msgs[0]["error"].(map[string]any)["code"].(float64); code != -32020 {
		t.Errorf("error code %v, want -32020", code)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ name, body string }{
		{"not json", `{"jsonrpc":`},
		{"wrong version", `{"jsonrpc":"1.0","id":1,"method":"ping"}`},
		{"null id", `{"jsonrpc":"2.0","id":null,"method":"ping"}`},
		{"empty batch", `[]`},
		{"object id", `{"jsonrpc":"2.0","id":{},"method":"ping"}`},
	} {
		for _, path := range []string{"/mcp/acme", "/mcp"} {
			t.Run(tc.name+" "+path, func(t *testing.T) {
				status, _, msgs := e.post(path, e.token, "", tc.body, nil)
				if status != 400 || len(msgs) != 1 || msgs[0]["error"] == nil {
					t.Fatalf("status %d msgs %v", status, msgs)
				}
			})
		}
	}
	// Too large: refused before anything is parsed or forwarded.
	big := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + strings.Repeat("x", 5<<20) + `"}}}`
	if status, _, _ := e.post("/mcp/acme", e.token, "", big, nil); status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized message: status %d, want 413", status)
	}
}

func TestWrapStdio(t *testing.T) {
	e := newEnv(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := relay.New(relay.Options{
		Upstreams:  []relay.Upstream{{Name: "local", Command: []string{os.Args[0]}, Env: []string{"RELAY_TEST_UPSTREAM=stdio", "RELAY_TEST_MARKER=" + e.markerDir}}},
		Auth:       e.reg,
		Gate:       denyNamed{names: map[string]bool{"forbidden": true}, next: killSwitch{}, outcomes: e.outcomes},
		SessionKey: bytes.Repeat([]byte("k"), 32),
		Logger:     log,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// A real MCP client on one end of two pipes, ServeStdio on the other.
	cr, sw := io.Pipe()
	sr, cw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- r.ServeStdio(context.Background(), sr, sw, e.token, "local"); sw.Close() }()
	c := mcp.NewClient(&mcp.Implementation{Name: "desktop", Version: "1"}, nil)
	cs, err := c.Connect(context.Background(), &mcp.IOTransport{Reader: cr, Writer: cw}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call(t, cs, "echo", map[string]any{"text": "via wrap"}); err != nil || text(t, res) != "via wrap" {
		t.Fatalf("echo through wrap: %v %v", res, err)
	}
	if res, err := call(t, cs, "forbidden", map[string]any{}); err != nil || !res.IsError {
		t.Fatalf("gated call through wrap: %v %v", res, err)
	}
	if o := waitOutcome(t, e.outcomes, "echo", 1)[0]; !o.Answered || o.IsError {
		t.Errorf("outcome through wrap: %+v", o)
	}
	cs.Close()
	cw.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeStdio: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ServeStdio did not return after the client closed")
	}
	// Bad token: refused before the upstream starts.
	if err := r.ServeStdio(context.Background(), strings.NewReader(""), io.Discard, "ilk_bad", "local"); err == nil {
		t.Fatal("ServeStdio accepted a bad token")
	}
}

func TestSharedStdioUpstream(t *testing.T) {
	e := newEnv(t)
	pids := map[string]map[string]bool{"/mcp/pool": {}, "/mcp/local": {}}
	bySession := map[string]string{}
	for path := range pids {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i, tok := range []string{e.token, e.token2, e.token} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var got []float64
				var pmu sync.Mutex
				cs := e.connect(path, tok, &mcp.ClientOptions{ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
					pmu.Lock()
					got = append(got, r.Params.Progress)
					pmu.Unlock()
				}})
				res, err := call(t, cs, "pid", map[string]any{})
				if err != nil {
					t.Errorf("pid: %v", err)
					return
				}
				mu.Lock()
				pids[path][text(t, res)] = true
				bySession[path+fmt.Sprint(i)] = text(t, res)
				mu.Unlock()
				want := fmt.Sprintf("session %d", i)
				if res, err := call(t, cs, "echo", map[string]any{"text": want}); err != nil || text(t, res) != want {
					t.Errorf("echo in %s: %v %v", path, res, err)
				}
				params := &mcp.CallToolParams{Name: "progress", Arguments: map[string]any{}}
				params.SetProgressToken("same-token-in-every-session")
				if _, err := cs.CallTool(context.Background(), params); err != nil {
					t.Errorf("progress: %v", err)
				}
				deadline := time.Now().Add(10 * time.Second)
				for {
					pmu.Lock()
					n := len(got)
					pmu.Unlock()
					if n == 3 {
						break
					}
					if n > 3 || time.Now().After(deadline) {
						t.Errorf("session %d got %d progress notifications, want its own 3", i, n)
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
			}()
		}
		wg.Wait()
	}
	// Sessions 0 and 2 are one agent's, session 1 another's: agents never
	// share a process.
	if n := len(pids["/mcp/pool"]); n != 2 {
		t.Errorf("shared upstream ran in %d processes for 2 agents, want 2", n)
	}
	if bySession["/mcp/pool0"] != bySession["/mcp/pool2"] || bySession["/mcp/pool0"] == bySession["/mcp/pool1"] {
		t.Errorf("shared processes by session: %v", bySession)
	}
	if n := len(pids["/mcp/local"]); n != 3 {
		t.Errorf("per-session upstream ran in %d processes for 3 sessions, want 3", n)
	}
}

// A 2026-07-28 (stateless) client and server talk through interlock: no
// initialize handshake, no session, Mcp-Method/Mcp-Name headers checked by
// the upstream against the body.
func TestStatelessEraPassesThrough(t *testing.T) {
	e := newEnv(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	up := newTestServer(&upstreamSignals{})
	var sawMethodHeader bool
	var mu sync.Mutex
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return up }, &mcp.StreamableHTTPOptions{Stateless: true})
	upSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if r.Header.Get("Mcp-Method") == "tools/call" && r.Header.Get("Mcp-Name") == "echo" {
			sawMethodHeader = true
		}
		mu.Unlock()
		sdk.ServeHTTP(w, r)
	}))
	defer upSrv.Close()
	r, err := relay.New(relay.Options{
		Upstreams:  []relay.Upstream{{Name: "modern", URL: upSrv.URL}},
		Auth:       e.reg,
		Gate:       denyNamed{names: map[string]bool{"forbidden": true}, next: killSwitch{}},
		SessionKey: bytes.Repeat([]byte("k"), 32),
		Logger:     log,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	srv := httptest.NewServer(server.New(server.Options{AllowedHosts: []string{"127.0.0.1"}, MCP: r.Handler(), Logger: log}))
	defer srv.Close()
	c := mcp.NewClient(&mcp.Implementation{Name: "modern-agent", Version: "1"}, nil)
	cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: srv.URL + "/mcp/modern",
		HTTPClient: &http.Client{Transport: bearerRT{e.token}}}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if v := cs.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Fatalf("negotiated %q through interlock, want 2026-07-28", v)
	}
	if res, err := call(t, cs, "echo", map[string]any{"text": "modern"}); err != nil || text(t, res) != "modern" {
		t.Fatalf("echo: %v %v", res, err)
	}
	if res, err := call(t, cs, "forbidden", map[string]any{}); err != nil || !res.IsError {
		t.Fatalf("gated call: %v %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !sawMethodHeader {
		t.Error("the upstream never saw the Mcp-Method/Mcp-Name headers")
	}
}

// The gate hears how every forwarded call ended, on every path.
func TestOutcomesReachTheGate(t *testing.T) {
	for _, tc := range []struct{ path, prefix string }{
		{"/mcp/acme", ""}, {"/mcp/local", ""}, {"/mcp", "local_"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			e := newEnv(t)
			cs := e.connect(tc.path, e.token, nil)
			if _, err := call(t, cs, tc.prefix+"echo", map[string]any{"text": "x"}); err != nil {
				t.Fatal(err)
			}
			o := waitOutcome(t, e.outcomes, "echo", 1)[0]
			if !o.Answered || o.IsError || o.Duration < 0 || o.Forwarded.IsZero() {
				t.Errorf("echo outcome %+v", o)
			}
			call(t, cs, tc.prefix+"forbidden", map[string]any{})
			if got := e.outcomes.get("forbidden"); len(got) != 0 {
				t.Errorf("a refused call was reported as forwarded: %+v", got)
			}
			// A tool error result is an answer with IsError.
			if _, err := call(t, cs, tc.prefix+"echo", map[string]any{"text": 5}); err != nil {
				t.Logf("bad arguments: %v", err)
			}
			if o := waitOutcome(t, e.outcomes, "echo", 2)[1]; !o.Answered || !o.IsError {
				t.Errorf("tool error outcome %+v", o)
			}
			// Cancelled by the agent, once the tool has started and said so
			// on the call's own stream.
			ctx, cancel := context.WithCancel(context.Background())
			started := make(chan struct{}, 1)
			cs2 := e.connect(tc.path, e.token, &mcp.ClientOptions{ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
				select {
				case started <- struct{}{}:
				default:
				}
			}})
			go func() {
				<-started
				cancel()
			}()
			slow := &mcp.CallToolParams{Name: tc.prefix + "slow", Arguments: map[string]any{}}
			slow.SetProgressToken("slow-1")
			cs2.CallTool(ctx, slow)
			if o := waitOutcome(t, e.outcomes, "slow", 1)[0]; o.Answered && !o.IsError {
				t.Errorf("cancelled call outcome %+v", o)
			}
		})
	}
}

// A stdio upstream sees only the environment it needs, never interlock's
// own secrets (the agent token of "interlock wrap", other upstreams' keys).
func TestStdioUpstreamEnvironment(t *testing.T) {
	t.Setenv("INTERLOCK_AGENT_TOKEN", "must-not-leak")
	t.Setenv("OTHER_UPSTREAM_API_KEY", "must-not-leak")
	e := newEnv(t)
	cs := e.connect("/mcp/local", e.token, nil)
	for name, want := range map[string]string{
		"INTERLOCK_AGENT_TOKEN":  "[]",
		"OTHER_UPSTREAM_API_KEY": "[]",
		"RELAY_TEST_MARKER":      "[" + e.markerDir + "]", // configured for this upstream
		"PATH":                   "[" + os.Getenv("PATH") + "]",
	} {
		res, err := call(t, cs, "getenv", map[string]any{"text": name})
		if err != nil || text(t, res) != want {
			t.Errorf("%s in the upstream: %v %v, want %s", name, res, err, want)
		}
	}
}

// A store that cannot answer is not the agent's fault: 503, not 401.
func TestAuthStoreDownIs503(t *testing.T) {
	e := newEnv(t)
	e.st.Close()
	status, _, _ := e.post("/mcp/acme", "ilk_"+strings.Repeat("A", 43), "", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("status %d with the store down, want 503", status)
	}
}

// An upstream's tools/list_changed, passing through to the agent, is also
// told to the relay's hook (the catalog refreshes on it).
func TestListChangedReachesTheHook(t *testing.T) {
	e := newEnv(t)
	got := make(chan struct{}, 1)
	cs := e.connect("/mcp/acme", e.token, &mcp.ClientOptions{ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
		select {
		case got <- struct{}{}:
		default:
		}
	}})
	toolNames(t, cs) // the session is up, with its standalone stream
	deadline := time.After(30 * time.Second)
	for i := 0; ; i++ {
		// Tools added until the notification arrives (the GET stream may
		// open a moment after initialization).
		mcp.AddTool(e.upServer, &mcp.Tool{Name: fmt.Sprintf("added%d", i)}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{}, nil, nil
		})
		select {
		case up := <-e.changed:
			if up != "acme" {
				t.Fatalf("hook told upstream %q", up)
			}
			select {
			case <-got:
			case <-deadline:
				t.Fatal("the agent never got the notification")
			}
			return
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("the hook was never told")
		}
	}
}
