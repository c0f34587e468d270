package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/internal/testenv"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// testNow is the fake clock's only reading.
var testNow = time.Date(2026, 11, 24, 9, 30, 0, 0, time.UTC)

// waitFor is how long a poll waits before failing.
const waitFor = 20 * time.Second

// syncBuffer is a log sink tests can read while the catalog writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newCatalog returns a started catalog with short retries, closed when the
// test ends; its log is printed if the test failed.
func newCatalog(t *testing.T, ups ...UpstreamSpec) (*Catalog, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	c := New(Options{
		Upstreams: ups,
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:       func() time.Time { return testNow },
	})
	c.retryMin, c.retryMax = 10*time.Millisecond, 100*time.Millisecond
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("catalog log:\n%s", logs.String())
		}
	})
	c.Start(t.Context())
	return c, logs
}

// serveHTTP serves server over Streamable HTTP at /mcp on a test server;
// check, if not nil, sees every request first.
func serveHTTP(t *testing.T, server *mcp.Server, check func(*http.Request)) string {
	t.Helper()
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if check != nil {
			check(r)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

func waitDiscovered(t *testing.T, c *Catalog) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	if err := c.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

// poll calls cond until it is true or the deadline passes.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var acmeToolNames = []string{"echo", "get_customer_record", "issue_refund", "list_open_tickets", "place_order", "provision_servers", "search_docs"}

func names(tools []Tool) []string {
	var out []string
	for _, t := range tools {
		out = append(out, t.FullName())
	}
	return out
}

func prefixed(upstream string, tools []string) []string {
	var out []string
	for _, t := range tools {
		out = append(out, upstream+"."+t)
	}
	return out
}

func TestDiscoveryHTTP(t *testing.T) {
	var mu sync.Mutex
	var auth []string
	url := serveHTTP(t, acme.NewServer(acme.Options{}), func(r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
	})
	c, _ := newCatalog(t, UpstreamSpec{Name: "acme", URL: url, Headers: http.Header{"Authorization": {"Bearer s3cret"}}})
	waitDiscovered(t, c)

	if got, want := names(c.Tools()), prefixed("acme", acmeToolNames); !reflect.DeepEqual(got, want) {
		t.Fatalf("Tools() = %v, want %v", got, want)
	}
	for name, action := range map[string]string{
		"place_order": ActionSpend, "issue_refund": ActionSpend, "provision_servers": ActionInfrastructure,
		"get_customer_record": ActionPersonalData, "list_open_tickets": ActionRead, "search_docs": ActionRead, "echo": ActionRead,
	} {
		tool, ok := c.Lookup("acme", name)
		if !ok {
			t.Fatalf("Lookup(acme, %s) found nothing", name)
		}
		if tool.Hint.Action != action {
			t.Errorf("%s: action %s, want %s (%v)", name, tool.Hint.Action, action, tool.Hint.Source)
		}
		if len(tool.InputSchema) == 0 || tool.Description == "" {
			t.Errorf("%s: schema or description missing: %+v", name, tool)
		}
	}
	if _, ok := c.Lookup("acme", "no_such_tool"); ok {
		t.Error("Lookup found an unknown tool")
	}
	if _, ok := c.Lookup("nobody", "echo"); ok {
		t.Error("Lookup found a tool of an unknown upstream")
	}

	st := c.Status()
	want := []UpstreamStatus{{Name: "acme", Transport: "http", Tools: 7, Connected: true, LastRefresh: testNow}}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("Status() = %+v, want %+v", st, want)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(auth) == 0 {
		t.Fatal("the upstream saw no request")
	}
	for i, a := range auth {
		if a != "Bearer s3cret" {
			t.Errorf("request %d: Authorization %q", i, a)
		}
	}
}

func TestCallTool(t *testing.T) {
	c, _ := newCatalog(t, UpstreamSpec{Name: "acme", URL: serveHTTP(t, acme.NewServer(acme.Options{}), nil)})
	ctx := t.Context()

	res, isErr, err := c.CallTool(ctx, "acme", "list_open_tickets", map[string]any{"customer_id": "CUST-001"}, nil)
	if err != nil || isErr {
		t.Fatalf("list_open_tickets: %v, isError %v, %v", err, isErr, res)
	}
	tickets, ok := res["tickets"].([]any)
	if !ok || len(tickets) != 2 {
		t.Fatalf("tickets = %#v, want two", res["tickets"])
	}
	var ids []string
	for _, tk := range tickets {
		ids = append(ids, fmt.Sprint(tk.(map[string]any)["ticket_id"]))
	}
	if !reflect.DeepEqual(ids, []string{"TCK-101", "TCK-107"}) {
		t.Errorf("open tickets %v, want TCK-101 TCK-107", ids)
	}

	for _, tc := range []struct {
		name    string
		args    map[string]any
		want    map[string]any
		isError bool
	}{
		{"echo", map[string]any{"text": "hello"}, map[string]any{"text": "hello"}, false},
		{"echo", map[string]any{"text": `{"open": 2, "ok": true}`}, map[string]any{"open": 2.0, "ok": true}, false},
		{"echo", map[string]any{"text": `[1, 2]`}, map[string]any{"text": "[1, 2]"}, false},
		{"list_open_tickets", map[string]any{"customer_id": "CUST-999"}, map[string]any{"text": `no customer with id "CUST-999"`}, true},
	} {
		got, isErr, err := c.CallTool(ctx, "acme", tc.name, tc.args, nil)
		if err != nil || isErr != tc.isError || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s(%v) = %#v, isError %v, %v; want %#v, isError %v", tc.name, tc.args, got, isErr, err, tc.want, tc.isError)
		}
	}

	if _, _, err := c.CallTool(ctx, "acme", "no_such_tool", nil, nil); err == nil {
		t.Error("calling an unknown tool: no error")
	}
	if _, _, err := c.CallTool(ctx, "nobody", "echo", nil, nil); !errors.Is(err, ErrUnknownUpstream) {
		t.Errorf("unknown upstream: %v, want ErrUnknownUpstream", err)
	}
}

func TestResultObject(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  mcp.CallToolResult
		want map[string]any
	}{
		{"structured", mcp.CallToolResult{StructuredContent: map[string]any{"n": 1}, Content: []mcp.Content{&mcp.TextContent{Text: `{"n": 2}`}}}, map[string]any{"n": 1.0}},
		{"structured non-object", mcp.CallToolResult{StructuredContent: []any{1}, Content: []mcp.Content{&mcp.TextContent{Text: "x"}}}, map[string]any{"text": "x"}},
		{"first text is JSON", mcp.CallToolResult{Content: []mcp.Content{&mcp.ImageContent{MIMEType: "image/png"}, &mcp.TextContent{Text: `{"a": "b"}`}, &mcp.TextContent{Text: "later"}}}, map[string]any{"a": "b"}},
		{"first text is not JSON", mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "plain"}, &mcp.TextContent{Text: `{"a": 1}`}}}, map[string]any{"text": "plain"}},
		{"null text", mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "null"}}}, map[string]any{"text": "null"}},
		{"nothing", mcp.CallToolResult{}, map[string]any{}},
	} {
		if got := resultObject(&tc.res); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %#v, want %#v", tc.name, got, tc.want)
		}
	}
}

// TestListChanged adds a tool to a live server: the go-sdk server sends
// notifications/tools/list_changed and the catalog lists again.
func TestListChanged(t *testing.T) {
	server := acme.NewServer(acme.Options{})
	c, _ := newCatalog(t, UpstreamSpec{Name: "acme", URL: serveHTTP(t, server, nil)})
	waitDiscovered(t, c)
	if _, ok := c.Lookup("acme", "delete_customer"); ok {
		t.Fatal("delete_customer exists before it was added")
	}

	server.AddTool(&mcp.Tool{
		Name:        "delete_customer",
		Description: "Deletes a customer and all their data.",
		InputSchema: map[string]any{"type": "object"},
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}, // a lie
	}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{}, nil
	})
	poll(t, "the new tool", func() bool { _, ok := c.Lookup("acme", "delete_customer"); return ok })
	tool, _ := c.Lookup("acme", "delete_customer")
	if h := tool.Hint; h.Class != ClassTransactional || h.Action != ActionPersonalData || h.Risk != "high" {
		t.Errorf("delete_customer hint %+v", h)
	}
	if got := len(c.Tools()); got != 8 {
		t.Errorf("%d tools after the addition, want 8", got)
	}

	server.RemoveTools("delete_customer")
	poll(t, "the tool to go", func() bool { _, ok := c.Lookup("acme", "delete_customer"); return !ok })
}

// TestNotifyListChanged checks that a burst of notifications coalesces.
func TestNotifyListChanged(t *testing.T) {
	server := acme.NewServer(acme.Options{})
	var lists atomic.Int64
	server.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "tools/list" {
				lists.Add(1)
			}
			return next(ctx, method, req)
		}
	})
	c, _ := newCatalog(t, UpstreamSpec{Name: "acme", URL: serveHTTP(t, server, nil)})
	waitDiscovered(t, c)

	before := lists.Load()
	const burst = 50
	for range burst {
		c.NotifyListChanged("acme")
	}
	c.NotifyListChanged("nobody") // ignored
	poll(t, "a refresh", func() bool { return lists.Load() > before })
	if err := c.Refresh(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
	// At most one refresh in progress and one pending come of a burst,
	// plus the explicit Refresh.
	if n := lists.Load() - before; n > 3 {
		t.Errorf("%d notifications caused %d extra tools/list calls", burst, n)
	}
}

// TestPagination lists a server that returns two tools per page.
func TestPagination(t *testing.T) {
	server := mcp.NewServer(&mcp.Implementation{Name: "paged"}, &mcp.ServerOptions{PageSize: 2})
	for i := range 5 {
		server.AddTool(&mcp.Tool{Name: fmt.Sprintf("get_item_%d", i), InputSchema: map[string]any{"type": "object"}},
			func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				return &mcp.CallToolResult{}, nil
			})
	}
	c, _ := newCatalog(t, UpstreamSpec{Name: "paged", URL: serveHTTP(t, server, nil)})
	waitDiscovered(t, c)
	want := prefixed("paged", []string{"get_item_0", "get_item_1", "get_item_2", "get_item_3", "get_item_4"})
	if got := names(c.Tools()); !reflect.DeepEqual(got, want) {
		t.Errorf("Tools() = %v, want %v", got, want)
	}
}

// freeURL returns an http URL nothing listens on.
func freeURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/mcp"
}

func TestUpstreamDown(t *testing.T) {
	// "flaky" answers 503 until up is set, then serves acme.
	var up atomic.Bool
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return acme.NewServer(acme.Options{}) }, nil)
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(flaky.Close)

	c, logs := newCatalog(t,
		UpstreamSpec{Name: "down", URL: freeURL(t)},
		UpstreamSpec{Name: "acme", URL: serveHTTP(t, acme.NewServer(acme.Options{}), nil)},
		UpstreamSpec{Name: "missing", Command: []string{"/nonexistent/mcp-server"}},
		UpstreamSpec{Name: "flaky", URL: flaky.URL + "/mcp"},
	)
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	err := c.Wait(ctx)
	for _, name := range []string{`"down"`, `"missing"`, `"flaky"`} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Wait error %v does not name %s", err, name)
		}
	}
	if err != nil && strings.Contains(err.Error(), `"acme"`) {
		t.Errorf("Wait error %v names acme", err)
	}

	if got, want := names(c.Tools()), prefixed("acme", acmeToolNames); !reflect.DeepEqual(got, want) {
		t.Errorf("Tools() = %v, want acme's", got)
	}
	if _, isErr, err := c.CallTool(t.Context(), "acme", "echo", map[string]any{"text": "x"}, nil); err != nil || isErr {
		t.Errorf("acme echo with others down: %v %v", err, isErr)
	}
	if _, _, err := c.CallTool(t.Context(), "down", "echo", nil, nil); err == nil {
		t.Error("calling a tool of a down upstream: no error")
	}
	for _, st := range c.Status() {
		switch st.Name {
		case "acme":
			if st.LastError != "" || st.Tools != 7 || !st.Connected {
				t.Errorf("acme status %+v", st)
			}
		default:
			if st.LastError == "" || st.Tools != 0 || st.Connected || !st.LastRefresh.IsZero() || !st.LastErrorAt.Equal(testNow) {
				t.Errorf("%s status %+v, want an error and no tools", st.Name, st)
			}
		}
	}
	if !strings.Contains(logs.String(), "upstream=down") {
		t.Errorf("the log does not name the failed upstream:\n%s", logs)
	}

	// A retry picks the upstream up once it answers.
	up.Store(true)
	poll(t, "flaky's tools", func() bool { _, ok := c.Lookup("flaky", "echo"); return ok })
	for _, st := range c.Status() {
		if st.Name == "flaky" && (st.LastError != "" || st.Tools != 7) {
			t.Errorf("flaky status after recovery %+v", st)
		}
	}
}

// TestReconnect replaces the server behind a URL: the old session is
// unknown to the new one, and CallTool reconnects once.
func TestReconnect(t *testing.T) {
	newHandler := func() http.Handler {
		return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return acme.NewServer(acme.Options{}) }, nil)
	}
	var current atomic.Pointer[http.Handler]
	h := newHandler()
	current.Store(&h)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*current.Load()).ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	c, _ := newCatalog(t, UpstreamSpec{Name: "acme", URL: srv.URL + "/mcp"})
	waitDiscovered(t, c)

	h2 := newHandler()
	current.Store(&h2)
	res, isErr, err := c.CallTool(t.Context(), "acme", "echo", map[string]any{"text": "again"}, nil)
	if err != nil || isErr || res["text"] != "again" {
		t.Fatalf("echo after the server restarted: %v, %v, %v", res, isErr, err)
	}
	if err := c.Refresh(t.Context(), "acme"); err != nil {
		t.Errorf("Refresh after reconnecting: %v", err)
	}
}

// alive reports whether pid is a process not yet reaped (a zombie counts).
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func childPID(t *testing.T, c *Catalog, upstream string) int {
	t.Helper()
	u := c.ups[upstream]
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.sess == nil || u.sess.cmd == nil {
		return 0
	}
	return u.sess.cmd.Process.Pid
}

func TestStdio(t *testing.T) {
	bin := testenv.GoBinary(t, "./examples/acme/cmd/acme")
	dir := t.TempDir()
	c, logs := newCatalog(t, UpstreamSpec{Name: "acme", Command: []string{bin, "-log-level", "debug"}, Dir: dir, Env: []string{"ACME_TEST=1"}})
	waitDiscovered(t, c)

	if got, want := names(c.Tools()), prefixed("acme", acmeToolNames); !reflect.DeepEqual(got, want) {
		t.Fatalf("Tools() = %v, want %v", got, want)
	}
	tool, _ := c.Lookup("acme", "place_order")
	if tool.Hint.Action != ActionSpend {
		t.Errorf("place_order hint %+v", tool.Hint)
	}
	res, isErr, err := c.CallTool(t.Context(), "acme", "list_open_tickets", map[string]any{"customer_id": "CUST-002"}, nil)
	if err != nil || isErr {
		t.Fatalf("list_open_tickets: %v %v", err, isErr)
	}
	if tickets, _ := res["tickets"].([]any); len(tickets) != 1 {
		t.Errorf("CUST-002 tickets %v", res)
	}
	if st := c.Status(); len(st) != 1 || st[0].Transport != "stdio" || !st[0].Connected || st[0].Tools != 7 {
		t.Errorf("Status() = %+v", st)
	}
	pid := childPID(t, c, "acme")
	if pid == 0 || !alive(pid) {
		t.Fatalf("no live child (pid %d)", pid)
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err == nil && cwd != dir {
		t.Errorf("child runs in %s, want %s", cwd, dir)
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err == nil && !bytes.Contains(env, []byte("ACME_TEST=1\x00")) {
		t.Error("child's environment lacks ACME_TEST=1")
	}
	poll(t, "the child's stderr in the log", func() bool { return strings.Contains(logs.String(), "serving MCP on stdio") })

	// The child dies: it is reaped and replaced, and the tools stay.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, "the killed child to be reaped", func() bool { return !alive(pid) })
	poll(t, "a new child", func() bool { p := childPID(t, c, "acme"); return p != 0 && p != pid })
	if got := len(c.Tools()); got != 7 {
		t.Errorf("%d tools after the restart, want 7", got)
	}
	if _, isErr, err := c.CallTool(t.Context(), "acme", "echo", map[string]any{"text": "x"}, nil); err != nil || isErr {
		t.Errorf("echo on the new child: %v %v", err, isErr)
	}

	// Close reaps the child.
	pid = childPID(t, c, "acme")
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if alive(pid) {
		t.Errorf("child %d still exists after Close", pid)
	}
	if _, _, err := c.CallTool(t.Context(), "acme", "echo", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("CallTool after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestWaitBeforeStart(t *testing.T) {
	c := New(Options{Upstreams: []UpstreamSpec{{Name: "x", URL: freeURL(t)}}})
	defer c.Close()
	if err := c.Wait(t.Context()); err == nil {
		t.Error("Wait before Start: no error")
	}
	if err := c.Refresh(t.Context(), "nobody"); !errors.Is(err, ErrUnknownUpstream) {
		t.Errorf("Refresh(nobody): %v", err)
	}
}

// captureRT records the requests it is given.
type captureRT struct{ got []*http.Request }

func (c *captureRT) RoundTrip(r *http.Request) (*http.Response, error) {
	c.got = append(c.got, r)
	return &http.Response{StatusCode: 204, Body: http.NoBody, Request: r}, nil
}

func TestHeaderTransport(t *testing.T) {
	base := &captureRT{}
	ht := &headerTransport{base: base, origin: "https://api.example.com", headers: http.Header{"Authorization": {"Bearer k"}, "X-Tenant": {"a", "b"}}}
	for _, u := range []string{"https://API.example.com/mcp", "https://evil.example.net/steal", "http://api.example.com/mcp"} {
		req, _ := http.NewRequest("POST", u, nil)
		req.Header.Set("Authorization", "Bearer agent")
		if _, err := ht.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		if req.Header.Get("Authorization") != "Bearer agent" {
			t.Errorf("%s: the caller's request was modified", u)
		}
	}
	if got := base.got[0].Header; got.Get("Authorization") != "Bearer k" || !reflect.DeepEqual(got.Values("X-Tenant"), []string{"a", "b"}) {
		t.Errorf("same origin: headers %v", got)
	}
	for _, r := range base.got[1:] {
		if r.Header.Get("Authorization") != "Bearer agent" || r.Header.Get("X-Tenant") != "" {
			t.Errorf("%s: headers %v leaked to another origin", r.URL, r.Header)
		}
	}
}

func TestBackoff(t *testing.T) {
	c := New(Options{})
	var got []time.Duration
	for n := 1; n <= 9; n++ {
		got = append(got, c.backoff(n))
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second, 30 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("backoff = %v, want %v", got, want)
	}
}
