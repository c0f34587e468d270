package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/internal/relay"
	"github.com/interlock-dev/interlock/internal/server"
)

// The test binary also serves as a stdio upstream whose tools show what
// _meta they received (RELAY_TEST_UPSTREAM=stdio-meta). It runs from init,
// before TestMain, so relay_test.go's TestMain needs no change.
func init() {
	if os.Getenv("RELAY_TEST_UPSTREAM") == "stdio-meta" {
		if err := newMetaServer().Run(context.Background(), &mcp.StdioTransport{}); err != nil {
			fmt.Fprintln(os.Stderr, "stdio-meta upstream:", err)
		}
		os.Exit(0)
	}
}

// Keys an upstream puts into its own result _meta; they must reach the
// agent next to the receipt.
const (
	upstreamOwnKey = "upstream.example/own"
	upstreamNumKey = "upstream.example/n"
	decisionKey    = "io.interlock/decision"
	intentKey      = "io.interlock/intent"
	agentKey       = "agent.example/custom"
)

// metaSeen is what the "meta" tools of this process were called with
// (their text argument), for "seen".
var metaSeen struct {
	mu    sync.Mutex
	texts []string
}

// newMetaServer is a go-sdk MCP server whose tools report the _meta of the
// request they were called with (as their text content) and return _meta
// of their own.
func newMetaServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "metaup", Version: "1"}, nil)
	received := func(req *mcp.CallToolRequest, in echoIn) []mcp.Content {
		metaSeen.mu.Lock()
		metaSeen.texts = append(metaSeen.texts, in.Text)
		metaSeen.mu.Unlock()
		b, _ := json.Marshal(req.Params.Meta)
		return []mcp.Content{&mcp.TextContent{Text: string(b)}}
	}
	mcp.AddTool(s, &mcp.Tool{Name: "meta", Description: "reports the request's _meta"}, func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: received(req, in), Meta: mcp.Meta{upstreamOwnKey: "kept", upstreamNumKey: 7}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "fail", Description: "a tool error (isError)"}, func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: received(req, in), IsError: true, Meta: mcp.Meta{upstreamOwnKey: "kept"}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "forge", Description: "tries to set interlock's receipt itself"}, func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: received(req, in), Meta: mcp.Meta{
			relay.MetaCredential: "forged-by-the-upstream", decisionKey: "forged-by-the-upstream", upstreamOwnKey: "kept"}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "rpcerr", Description: "answers with a JSON-RPC error"}, func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		received(req, in)
		return nil, nil, &jsonrpc.Error{Code: -32042, Message: "upstream refuses in JSON-RPC"}
	})
	mcp.AddTool(s, &mcp.Tool{Name: "seen", Description: "the texts meta was called with"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		metaSeen.mu.Lock()
		defer metaSeen.mu.Unlock()
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strings.Join(metaSeen.texts, "\n")}}}, nil, nil
	})
	return s
}

// credFor is the credential the test gate issues for a call: distinct per
// upstream, tool and text argument, shaped like a compact JWS.
func credFor(upstream, tool, text string) string {
	return "eyJhbGciOiJFZERTQSIsInR5cCI6InZjK2p3dCJ9." +
		base64.RawURLEncoding.EncodeToString([]byte(upstream+"/"+tool+"/"+text)) + ".c2lnbmF0dXJl"
}

func decisionFor(upstream, tool, text string) string {
	return "dec-" + upstream + "-" + tool + "-" + text
}

// credGate allows every call with a known credential and receipt, except
// calls whose text argument starts with "deny-me".
type credGate struct {
	mu      sync.Mutex
	allowed []string // credentials issued
}

func (g *credGate) Check(ctx context.Context, c *relay.Call) (*relay.Verdict, error) {
	var p struct {
		Arguments struct {
			Text string `json:"text"`
		} `json:"arguments"`
	}
	json.Unmarshal(c.Params, &p)
	text := p.Arguments.Text
	if strings.HasPrefix(text, "deny-me") {
		return &relay.Verdict{Deny: &relay.Denial{Reason: "the test gate refuses " + text,
			Meta: map[string]any{decisionKey: map[string]any{"id": decisionFor(c.Upstream, c.Name, text), "effect": "deny"}}}}, nil
	}
	if strings.HasPrefix(text, "hold-me") && c.Progress != nil {
		// As the gate does while it holds a call for approval.
		c.Progress("waiting for approval by the test")
		c.Progress("still waiting")
	}
	cred := credFor(c.Upstream, c.Name, text)
	g.mu.Lock()
	g.allowed = append(g.allowed, cred)
	g.mu.Unlock()
	return &relay.Verdict{Credential: cred, Receipt: map[string]any{
		relay.MetaCredential: cred,
		decisionKey:          map[string]any{"id": decisionFor(c.Upstream, c.Name, text), "effect": "allow", "rule": "test"},
	}}, nil
}

// upCall is one POST an HTTP upstream received, and its answer.
type upCall struct {
	body   []byte
	method string // "" for a batch
	text   string // params.arguments.text of a tools/call
	hdr    http.Header
	ct     string // the answer's Content-Type
	resp   []byte
	done   bool
}

// upLog records the POSTs an HTTP upstream receives (an http middleware in
// front of the go-sdk handler).
type upLog struct {
	mu    sync.Mutex
	calls []*upCall
}

type captureWriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (c *captureWriter) Write(b []byte) (int, error) {
	c.buf.Write(b)
	return c.ResponseWriter.Write(b)
}

func (c *captureWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *captureWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func (l *upLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			h.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		c := &upCall{body: body, hdr: r.Header.Clone()}
		var m struct {
			Method string `json:"method"`
			Params struct {
				Arguments struct {
					Text string `json:"text"`
				} `json:"arguments"`
			} `json:"params"`
		}
		if json.Unmarshal(body, &m) == nil {
			c.method, c.text = m.Method, m.Params.Arguments.Text
		}
		l.mu.Lock()
		l.calls = append(l.calls, c)
		l.mu.Unlock()
		cw := &captureWriter{ResponseWriter: w}
		h.ServeHTTP(cw, r)
		l.mu.Lock()
		c.ct, c.resp, c.done = cw.Header().Get("Content-Type"), cw.buf.Bytes(), true
		l.mu.Unlock()
	})
}

// call returns the tools/call the upstream received with text (nil if none).
func (l *upLog) call(text string) *upCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.calls {
		if c.method == "tools/call" && c.text == text {
			cp := *c
			cp.hdr = c.hdr.Clone()
			return &cp
		}
	}
	return nil
}

// finished waits until the upstream has answered the tools/call with text.
func (l *upLog) finished(t *testing.T, text string) *upCall {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c := l.call(text); c != nil && c.done {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream never finished the call %q", text)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *upLog) all() []upCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]upCall, len(l.calls))
	for i, c := range l.calls {
		out[i] = *c
		out[i].hdr = c.hdr.Clone()
	}
	return out
}

// credEnv is a relay with the credential gate in front of three HTTP
// upstreams (JSON answers with the credential as bearer; SSE answers;
// a brokered Authorization header with bearer asked for) and a stdio one.
type credEnv struct {
	*env
	gate  *credGate
	logs  map[string]*upLog // by upstream name (HTTP ones)
	relay *relay.Relay
}

const brokeredAuth = "Bearer brokered-upstream-secret"

func newCredEnv(t *testing.T) *credEnv {
	t.Helper()
	base := newEnv(t) // registry, agents and tokens; its own relay is not used
	e := *base
	ce := &credEnv{env: &e, gate: &credGate{}, logs: map[string]*upLog{}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := newMetaServer()
	newUp := func(name string, jsonAnswers bool) string {
		l := &upLog{}
		ce.logs[name] = l
		h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{JSONResponse: jsonAnswers})
		s := httptest.NewServer(l.wrap(h))
		t.Cleanup(s.Close)
		return s.URL
	}
	ups := []relay.Upstream{
		{Name: "acme", URL: newUp("acme", true), Headers: http.Header{"X-Api-Key": {upstreamSecret}}, Prefix: "acme_", CredentialAsBearer: true},
		{Name: "sse", URL: newUp("sse", false), Headers: http.Header{"X-Api-Key": {upstreamSecret}}, Prefix: "sse_"},
		{Name: "broker", URL: newUp("broker", false), Headers: http.Header{"Authorization": {brokeredAuth}}, Prefix: "broker_", CredentialAsBearer: true},
		{Name: "local", Command: []string{os.Args[0]}, Env: []string{"RELAY_TEST_UPSTREAM=stdio-meta"}, Prefix: "local_"},
	}
	r, err := relay.New(relay.Options{Upstreams: ups, Auth: e.reg, Gate: ce.gate, SessionKey: bytes.Repeat([]byte("c"), 32), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ce.relay = r
	hs := httptest.NewServer(server.New(server.Options{AllowedHosts: []string{"127.0.0.1", "localhost"}, MCP: r.Handler(), Logger: log}))
	t.Cleanup(func() { hs.Close(); r.Close() })
	e.url = hs.URL
	return ce
}

// wantAuthorization is the Authorization header each HTTP upstream must
// get on a gated call carrying credential cred.
func wantAuthorization(upstream, cred string) string {
	switch upstream {
	case "acme":
		return "Bearer " + cred // asked for, nothing brokered
	case "broker":
		return brokeredAuth // a brokered header always wins
	}
	return "" // not asked for
}

// wantContentType is how each HTTP upstream answers a POST.
var wantContentType = map[string]string{"acme": "application/json", "sse": "text/event-stream", "broker": "text/event-stream"}

// metaOf decodes the _meta the upstream tool reported in its text content.
func metaOf(t *testing.T, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(text(t, res)), &m); err != nil {
		t.Fatalf("the tool's content is not its _meta: %q: %v", text(t, res), err)
	}
	return m
}

func metaCall(t *testing.T, cs *mcp.ClientSession, tool, text string, extra mcp.Meta) (*mcp.CallToolResult, error) {
	t.Helper()
	p := &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": text},
		Meta: mcp.Meta{intentKey: "testing credentials", agentKey: map[string]any{"a": 1.0}}}
	for k, v := range extra {
		p.Meta[k] = v
	}
	p.SetProgressToken("pt-" + text)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cs.CallTool(ctx, p)
}

// checkReceipt asserts the agent's result _meta holds the gate's receipt
// for (upstream, tool, text) and the upstream's own keys.
func checkReceipt(t *testing.T, res *mcp.CallToolResult, upstream, tool, text string, upstreamKeys map[string]any) {
	t.Helper()
	cred := credFor(upstream, tool, text)
	if got := res.Meta[relay.MetaCredential]; got != cred {
		t.Errorf("%s: result _meta credential %v, want %q", text, got, cred)
	}
	dec, _ := res.Meta[decisionKey].(map[string]any)
	if dec == nil || dec["id"] != decisionFor(upstream, tool, text) || dec["effect"] != "allow" {
		t.Errorf("%s: result _meta decision %v", text, res.Meta[decisionKey])
	}
	for k, v := range upstreamKeys {
		if !reflect.DeepEqual(res.Meta[k], v) {
			t.Errorf("%s: the upstream's result _meta[%q] = %v, want %v (all: %v)", text, k, res.Meta[k], v, res.Meta)
		}
	}
}

// checkForwarded asserts the upstream received the credential in
// params._meta and the agent's other _meta keys unchanged.
func checkForwarded(t *testing.T, got map[string]any, upstream, tool, text string) {
	t.Helper()
	if got[relay.MetaCredential] != credFor(upstream, tool, text) {
		t.Errorf("%s: the upstream got _meta credential %v, want %q", text, got[relay.MetaCredential], credFor(upstream, tool, text))
	}
	if got["progressToken"] != "pt-"+text {
		t.Errorf("%s: progressToken %v did not survive (meta %v)", text, got["progressToken"], got)
	}
	if got[intentKey] != "testing credentials" {
		t.Errorf("%s: intent %v did not survive", text, got[intentKey])
	}
	if !reflect.DeepEqual(got[agentKey], map[string]any{"a": 1.0}) {
		t.Errorf("%s: the agent's %s = %v did not survive", text, agentKey, got[agentKey])
	}
}

// checkHeaders asserts the HTTP upstream got the credential header (and
// the bearer only when asked for, never replacing a brokered one).
func (ce *credEnv) checkHeaders(t *testing.T, upstream, text string) {
	t.Helper()
	l := ce.logs[upstream]
	if l == nil {
		return // stdio
	}
	c := l.call(text)
	if c == nil {
		t.Fatalf("%s: the upstream %s never got the call", text, upstream)
	}
	cred := credFor(upstream, toolOf(c), text)
	if got := c.hdr.Get(relay.HeaderCredential); got != cred {
		t.Errorf("%s: %s header %q, want %q", text, relay.HeaderCredential, got, cred)
	}
	if got, want := c.hdr.Get("Authorization"), wantAuthorization(upstream, cred); got != want {
		t.Errorf("%s: Authorization header %q, want %q", text, got, want)
	}
	if n := len(c.hdr.Values("Authorization")); n > 1 {
		t.Errorf("%s: %d Authorization headers", text, n)
	}
	if upstream != "broker" && c.hdr.Get("X-Api-Key") != upstreamSecret {
		t.Errorf("%s: the brokered X-Api-Key was lost", text)
	}
	for k, vs := range c.hdr {
		for _, v := range vs {
			if strings.Contains(v, ce.token) {
				t.Errorf("%s: the agent token reached the upstream in %s", text, k)
			}
		}
	}
}

func toolOf(c *upCall) string {
	var m struct {
		Params struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	json.Unmarshal(c.body, &m)
	return m.Params.Name
}

// checkSession runs the credential checks through one client session.
// prefix is the tool name prefix on the endpoint, upstream the upstream
// the calls reach, tag makes the calls' texts unique.
func (ce *credEnv) checkSession(t *testing.T, cs *mcp.ClientSession, prefix, upstream, tag string) {
	// An allowed call: the credential travels up in _meta (and headers),
	// the receipt comes back in the result's _meta.
	txt := "ok-" + tag
	res, err := metaCall(t, cs, prefix+"meta", txt, nil)
	if err != nil || res.IsError {
		t.Fatalf("meta: res=%+v err=%v", res, err)
	}
	checkForwarded(t, metaOf(t, res), upstream, "meta", txt)
	checkReceipt(t, res, upstream, "meta", txt, map[string]any{upstreamOwnKey: "kept", upstreamNumKey: 7.0})
	ce.checkHeaders(t, upstream, txt)
	if l := ce.logs[upstream]; l != nil {
		if c := l.finished(t, txt); !strings.HasPrefix(c.ct, wantContentType[upstream]) {
			t.Errorf("the upstream %s answered %q, want %s (the path under test)", upstream, c.ct, wantContentType[upstream])
		}
	}

	// A credential the agent put into _meta itself is replaced by the one
	// the gate issued.
	txt = "agent-cred-" + tag
	res, err = metaCall(t, cs, prefix+"meta", txt, mcp.Meta{relay.MetaCredential: "agent-supplied"})
	if err != nil || res.IsError {
		t.Fatalf("meta with an agent credential: res=%+v err=%v", res, err)
	}
	checkForwarded(t, metaOf(t, res), upstream, "meta", txt)
	ce.checkHeaders(t, upstream, txt)

	// A tool error (isError) still carries the receipt, next to the
	// upstream's own _meta.
	txt = "fail-" + tag
	res, err = metaCall(t, cs, prefix+"fail", txt, nil)
	if err != nil || !res.IsError {
		t.Fatalf("fail: want an isError result, got res=%+v err=%v", res, err)
	}
	checkForwarded(t, metaOf(t, res), upstream, "fail", txt)
	checkReceipt(t, res, upstream, "fail", txt, map[string]any{upstreamOwnKey: "kept"})
	ce.checkHeaders(t, upstream, txt)

	// An upstream cannot forge the receipt: interlock's keys win.
	txt = "forge-" + tag
	res, err = metaCall(t, cs, prefix+"forge", txt, nil)
	if err != nil || res.IsError {
		t.Fatalf("forge: res=%+v err=%v", res, err)
	}
	checkReceipt(t, res, upstream, "forge", txt, map[string]any{upstreamOwnKey: "kept"})

	// A JSON-RPC error passes as an error (no receipt can go anywhere).
	txt = "rpcerr-" + tag
	if _, err := metaCall(t, cs, prefix+"rpcerr", txt, nil); err == nil || !strings.Contains(err.Error(), "upstream refuses in JSON-RPC") {
		t.Errorf("rpcerr: want the upstream's JSON-RPC error, got %v", err)
	}

	// A denied call never reaches the upstream, and carries no credential.
	txt = "deny-me-" + tag
	res, err = metaCall(t, cs, prefix+"meta", txt, nil)
	if err != nil || !res.IsError || !strings.Contains(text(t, res), "the test gate refuses") {
		t.Fatalf("denied call: res=%+v err=%v", res, err)
	}
	if res.Meta[relay.MetaCredential] != nil {
		t.Errorf("a refusal carries a credential: %v", res.Meta)
	}
	seen, err := call(t, cs, prefix+"seen", map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text(t, seen), txt) {
		t.Errorf("the denied call reached the upstream (seen: %q)", text(t, seen))
	}
	if !strings.Contains(text(t, seen), "ok-"+tag) {
		t.Errorf("the upstream's seen list lacks the allowed call: %q", text(t, seen))
	}
	for name, l := range ce.logs {
		if l.call(txt) != nil {
			t.Errorf("the denied call reached the upstream %s", name)
		}
	}
	// Ungated requests carry no credential header.
	for name, l := range ce.logs {
		for _, c := range l.all() {
			if c.method != "tools/call" && c.hdr.Get(relay.HeaderCredential) != "" {
				t.Errorf("upstream %s got %s on %q", name, relay.HeaderCredential, c.method)
			}
			if c.method != "tools/call" && name == "acme" && c.hdr.Get("Authorization") != "" {
				t.Errorf("upstream %s got Authorization on %q", name, c.method)
			}
		}
	}
}

func TestCredentialTravelsOnEveryPath(t *testing.T) {
	ce := newCredEnv(t)
	for _, tc := range []struct {
		name, path, prefix, upstream string
	}{
		{"pass-through json", "/mcp/acme", "", "acme"},
		{"pass-through sse", "/mcp/sse", "", "sse"},
		{"pass-through brokered authorization", "/mcp/broker", "", "broker"},
		{"aggregated http json", "/mcp", "acme_", "acme"},
		{"aggregated http sse", "/mcp", "sse_", "sse"},
		{"aggregated brokered authorization", "/mcp", "broker_", "broker"},
		{"session stdio", "/mcp/local", "", "local"},
		{"aggregated stdio", "/mcp", "local_", "local"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := ce.connect(tc.path, ce.token, nil)
			ce.checkSession(t, cs, tc.prefix, tc.upstream, strings.ReplaceAll(tc.name, " ", "-"))
		})
	}
	t.Run("ServeStdio", func(t *testing.T) {
		cr, sw := io.Pipe()
		sr, cw := io.Pipe()
		done := make(chan error, 1)
		go func() { done <- ce.relay.ServeStdio(context.Background(), sr, sw, ce.token, "local"); sw.Close() }()
		c := mcp.NewClient(&mcp.Implementation{Name: "desktop", Version: "1"}, nil)
		cs, err := c.Connect(context.Background(), &mcp.IOTransport{Reader: cr, Writer: cw}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ce.checkSession(t, cs, "", "local", "servestdio")
		cs.Close()
		cw.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("ServeStdio: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("ServeStdio did not return")
		}
	})
}

// rawSession initializes a pass-through session with raw JSON-RPC.
func (ce *credEnv) rawSession(t *testing.T, path, version string) (string, map[string]string) {
	t.Helper()
	status, h, _ := ce.post(path, ce.token, "", fmt.Sprintf(initBody, version), nil)
	sid := h.Get("Mcp-Session-Id")
	if status != 200 || sid == "" {
		t.Fatalf("initialize: %d %q", status, sid)
	}
	ver := map[string]string{"Mcp-Protocol-Version": version}
	ce.post(path, ce.token, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, ver)
	return sid, ver
}

// messagesOf decodes the JSON-RPC messages of an HTTP body (JSON or SSE).
func messagesOf(t *testing.T, ct string, body []byte) []map[string]any {
	t.Helper()
	var msgs []map[string]any
	if strings.HasPrefix(ct, "text/event-stream") {
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok && d != "" {
				var m map[string]any
				if err := json.Unmarshal([]byte(d), &m); err != nil {
					t.Fatalf("event data %q: %v", d, err)
				}
				msgs = append(msgs, m)
			}
		}
		return msgs
	}
	b := bytes.TrimSpace(body)
	if len(b) > 0 && b[0] == '[' {
		if err := json.Unmarshal(b, &msgs); err != nil {
			t.Fatal(err)
		}
		return msgs
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	return []map[string]any{m}
}

// A JSON-RPC error response from the upstream reaches the agent exactly
// as the upstream sent it, on the pass-through path, JSON and SSE.
func TestCredentialJSONRPCErrorPassesUnchanged(t *testing.T) {
	ce := newCredEnv(t)
	for _, upstream := range []string{"acme", "sse"} {
		t.Run(upstream, func(t *testing.T) {
			path := "/mcp/" + upstream
			sid, ver := ce.rawSession(t, path, "2025-11-25")
			txt := "raw-rpcerr-" + upstream
			body := fmt.Sprintf(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"rpcerr","arguments":{"text":%q},"_meta":{"progressToken":"p7"}}}`, txt)
			status, _, msgs := ce.post(path, ce.token, sid, body, ver)
			if status != 200 {
				t.Fatalf("status %d", status)
			}
			var got map[string]any
			for _, m := range msgs {
				if m["id"] == 7.0 {
					got = m
				}
			}
			if got == nil || got["error"] == nil || got["result"] != nil {
				t.Fatalf("want the upstream's error response, got %v", msgs)
			}
			c := ce.logs[upstream].finished(t, txt)
			if c.hdr.Get(relay.HeaderCredential) != credFor(upstream, "rpcerr", txt) {
				t.Errorf("credential header %q", c.hdr.Get(relay.HeaderCredential))
			}
			var want map[string]any
			for _, m := range messagesOf(t, c.ct, c.resp) {
				if m["id"] == 7.0 {
					want = m
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("the error response changed on its way:\n upstream %v\n agent    %v", want, got)
			}
		})
	}
}

// A raw request's result gets the receipt merged into its _meta with every
// other result field unchanged; a batch of two gated calls forwards each
// with its own credential in _meta (no single header fits both) and gives
// each result its own receipt.
func TestCredentialRawPassThrough(t *testing.T) {
	ce := newCredEnv(t)
	for _, upstream := range []string{"acme", "sse"} {
		t.Run("single "+upstream, func(t *testing.T) {
			path := "/mcp/" + upstream
			sid, ver := ce.rawSession(t, path, "2025-11-25")
			txt := "raw-" + upstream
			body := fmt.Sprintf(`{"jsonrpc":"2.0","id":"r1","method":"tools/call","params":{"name":"meta","arguments":{"text":%q},"_meta":{"progressToken":"p1","io.interlock/intent":"raw","x":[1,2]},"extra":{"kept":true}}}`, txt)
			status, _, msgs := ce.post(path, ce.token, sid, body, ver)
			if status != 200 || len(msgs) != 1 {
				t.Fatalf("status %d msgs %v", status, msgs)
			}
			c := ce.logs[upstream].finished(t, txt)
			// What the upstream received: params kept, credential added.
			var sent struct {
				Params map[string]any `json:"params"`
			}
			if err := json.Unmarshal(c.body, &sent); err != nil {
				t.Fatal(err)
			}
			wantMeta := map[string]any{"progressToken": "p1", intentKey: "raw", "x": []any{1.0, 2.0}, relay.MetaCredential: credFor(upstream, "meta", txt)}
			if !reflect.DeepEqual(sent.Params["_meta"], wantMeta) {
				t.Errorf("forwarded _meta %v, want %v", sent.Params["_meta"], wantMeta)
			}
			if !reflect.DeepEqual(sent.Params["extra"], map[string]any{"kept": true}) || sent.Params["name"] != "meta" {
				t.Errorf("forwarded params lost fields: %v", sent.Params)
			}
			// What the agent got: the upstream's response with the receipt
			// in result._meta, nothing else changed.
			var up map[string]any
			for _, m := range messagesOf(t, c.ct, c.resp) {
				if m["id"] == "r1" {
					up = m
				}
			}
			if up == nil {
				t.Fatalf("no response in the upstream's answer %q", c.resp)
			}
			got := msgs[0]
			upRes, _ := up["result"].(map[string]any)
			gotRes, _ := got["result"].(map[string]any)
			if upRes == nil || gotRes == nil {
				t.Fatalf("results: upstream %v agent %v", up, got)
			}
			gotMeta, _ := gotRes["_meta"].(map[string]any)
			upMeta, _ := upRes["_meta"].(map[string]any)
			for k, v := range upMeta {
				if !reflect.DeepEqual(gotMeta[k], v) {
					t.Errorf("upstream _meta[%q] %v became %v", k, v, gotMeta[k])
				}
			}
			if gotMeta[relay.MetaCredential] != credFor(upstream, "meta", txt) {
				t.Errorf("receipt credential %v", gotMeta[relay.MetaCredential])
			}
			if d, _ := gotMeta[decisionKey].(map[string]any); d == nil || d["id"] != decisionFor(upstream, "meta", txt) {
				t.Errorf("receipt decision %v", gotMeta[decisionKey])
			}
			delete(gotRes, "_meta")
			delete(upRes, "_meta")
			delete(got, "result")
			delete(up, "result")
			if !reflect.DeepEqual(gotRes, upRes) || !reflect.DeepEqual(got, up) {
				t.Errorf("the response changed beyond result._meta:\n upstream %v %v\n agent    %v %v", up, upRes, got, gotRes)
			}
		})
	}
	t.Run("batch", func(t *testing.T) {
		sid, ver := ce.rawSession(t, "/mcp/acme", "2025-03-26")
		batch := `[{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"meta","arguments":{"text":"batch-a"}}},
		           {"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"meta","arguments":{"text":"batch-b"}}},
		           {"jsonrpc":"2.0","id":"c","method":"tools/call","params":{"name":"meta","arguments":{"text":"deny-me-batch"}}}]`
		status, _, msgs := ce.post("/mcp/acme", ce.token, sid, batch, ver)
		if status != 200 || len(msgs) != 3 {
			t.Fatalf("status %d msgs %v", status, msgs)
		}
		for _, m := range msgs {
			id, _ := m["id"].(string)
			res, _ := m["result"].(map[string]any)
			meta, _ := res["_meta"].(map[string]any)
			if id == "c" {
				if res == nil || res["isError"] != true || meta[relay.MetaCredential] != nil {
					t.Errorf("refused batch element: %v", m)
				}
				continue
			}
			txt := "batch-" + id
			if meta[relay.MetaCredential] != credFor("acme", "meta", txt) || meta[upstreamOwnKey] != "kept" {
				t.Errorf("%s: result _meta %v", id, meta)
			}
		}
		var batchCall *upCall
		for _, c := range ce.logs["acme"].all() {
			if bytes.Contains(c.body, []byte("batch-a")) {
				batchCall = &c
			}
		}
		if batchCall == nil {
			t.Fatal("the upstream never got the batch")
		}
		if bytes.Contains(batchCall.body, []byte("deny-me-batch")) {
			t.Error("the refused element was forwarded")
		}
		var sent []struct {
			Params struct {
				Meta map[string]any `json:"_meta"`
			} `json:"params"`
		}
		if err := json.Unmarshal(batchCall.body, &sent); err != nil || len(sent) != 2 {
			t.Fatalf("forwarded batch %s: %v", batchCall.body, err)
		}
		for i, id := range []string{"a", "b"} {
			if sent[i].Params.Meta[relay.MetaCredential] != credFor("acme", "meta", "batch-"+id) {
				t.Errorf("batch element %s forwarded with _meta %v", id, sent[i].Params.Meta)
			}
		}
		if h := batchCall.hdr.Get(relay.HeaderCredential); h != "" {
			t.Errorf("a batch of two credentials was sent with the header %q (which one?)", h)
		}
		if h := batchCall.hdr.Get("Authorization"); h != "" {
			t.Errorf("a batch of two credentials was sent with Authorization %q", h)
		}
	})
}

// Through the relay: a call whose tool name or arguments are spelled twice
// (in two cases, or twice alike) is answered with an error naming the
// member, and the upstream never sees it.
func TestAmbiguousCallNotForwarded(t *testing.T) {
	ce := newCredEnv(t)
	sid, ver := ce.rawSession(t, "/mcp/acme", "2025-11-25")
	for i, params := range []string{
		`{"name":"meta","Name":"other","arguments":{"text":"ambiguous-0"}}`,
		`{"name":"meta","arguments":{"text":"ambiguous-1"},"Arguments":{"text":"x"}}`,
		`{"name":"meta","name":"meta","arguments":{"text":"ambiguous-2"}}`,
	} {
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":%s}`, 40+i, params)
		status, _, msgs := ce.post("/mcp/acme", ce.token, sid, body, ver)
		if status != http.StatusOK || len(msgs) != 1 {
			t.Fatalf("case %d: HTTP %d, %d messages", i, status, len(msgs))
		}
		e, _ := msgs[0]["error"].(map[string]any)
		if msg, _ := e["message"].(string); !strings.Contains(msg, "parsers disagree") {
			t.Errorf("case %d: answer %v, want an error about the ambiguous member", i, msgs[0])
		}
		if c := ce.logs["acme"].call(fmt.Sprintf("ambiguous-%d", i)); c != nil {
			t.Errorf("case %d: the upstream received the call", i)
		}
	}
}
