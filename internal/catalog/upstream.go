package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/internal/relay"
)

// terminateAfter is how long closing a stdio child waits after closing its
// stdin before SIGTERM (and as long again before SIGKILL).
const terminateAfter = 2 * time.Second

// upstream is one upstream's connection and tools.
type upstream struct {
	c    *Catalog
	spec UpstreamSpec
	log  *slog.Logger
	http *http.Client // with the spec's headers; nil for stdio

	kick      chan struct{}      // refresh soon (cap 1)
	died      chan time.Duration // the session ended by itself, after living this long (cap 1)
	firstDone chan struct{}      // closed after the first background discovery
	firstOnce sync.Once

	connMu    sync.Mutex // one connect at a time
	refreshMu sync.Mutex // one tools/list walk at a time

	mu          sync.Mutex
	closed      bool
	sess        *session
	tools       map[string]Tool
	lastRefresh time.Time
	lastErr     error
	lastErrAt   time.Time
	firstErr    error
}

func newUpstream(c *Catalog, spec UpstreamSpec) *upstream {
	u := &upstream{
		c:         c,
		spec:      spec,
		log:       c.log.With("upstream", spec.Name),
		kick:      make(chan struct{}, 1),
		died:      make(chan time.Duration, 1),
		firstDone: make(chan struct{}),
	}
	if spec.URL != "" {
		hc := *c.http
		base := hc.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		origin := ""
		if pu, err := url.Parse(spec.URL); err == nil {
			origin = strings.ToLower(pu.Scheme + "://" + pu.Host)
		}
		hc.Transport = &headerTransport{base: base, origin: origin, headers: spec.Headers}
		u.http = &hc
	}
	return u
}

func (u *upstream) transportName() string {
	if u.spec.URL != "" {
		return "http"
	}
	return "stdio"
}

// run is the background discovery loop of one upstream.
func (u *upstream) run(ctx context.Context) {
	var failures, deaths int
	for {
		lctx, cancel := context.WithTimeout(ctx, listTimeout)
		err := u.refreshTools(lctx)
		cancel()
		u.firstOnce.Do(func() {
			u.mu.Lock()
			u.firstErr = err
			u.mu.Unlock()
			close(u.firstDone)
		})
		if ctx.Err() != nil {
			return
		}
		delay := u.c.refresh
		var notBefore time.Time // earliest next attempt, whatever asks for it
		if err != nil {
			failures++
			delay = u.c.backoff(failures)
			notBefore = time.Now().Add(delay)
			u.log.Warn("catalog: discovering tools failed; will retry", "err", err, "retry_in", delay, "failures", failures)
		} else {
			failures = 0
		}

		timer := time.NewTimer(delay)
		var wait time.Duration
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		case <-u.kick:
			timer.Stop()
			wait = max(debounce, time.Until(notBefore))
		case lived := <-u.died:
			timer.Stop()
			if lived > u.c.retryMax {
				deaths = 0 // it had been healthy: not a crash loop
			}
			deaths++
			wait = max(u.c.backoff(deaths), time.Until(notBefore))
		}
		if wait > 0 && !sleep(ctx, wait) {
			return
		}
		// Everything asked for until now is covered by the next refresh.
		select {
		case <-u.kick:
		default:
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// notify asks the loop to refresh soon; it never blocks.
func (u *upstream) notify() {
	select {
	case u.kick <- struct{}{}:
	default:
	}
}

func (u *upstream) firstError() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.firstErr
}

// refreshTools lists every page of tools and replaces the upstream's set.
func (u *upstream) refreshTools(ctx context.Context) error {
	u.refreshMu.Lock()
	defer u.refreshMu.Unlock()
	var tools []*mcp.Tool
	err := u.withSession(ctx, func(cs *mcp.ClientSession) error {
		tools = tools[:0]
		seen := make(map[string]bool)
		cursor := ""
		for page := 1; ; page++ {
			if page > maxPages {
				return fmt.Errorf("tools/list: more than %d pages", maxPages)
			}
			res, err := cs.ListTools(ctx, &mcp.ListToolsParams{Cursor: cursor})
			if err != nil {
				return fmt.Errorf("tools/list: %w", err)
			}
			tools = append(tools, res.Tools...)
			if res.NextCursor == "" {
				return nil
			}
			if seen[res.NextCursor] {
				return fmt.Errorf("tools/list: cursor %q repeated", res.NextCursor)
			}
			seen[res.NextCursor] = true
			cursor = res.NextCursor
		}
	})
	if err != nil {
		err = fmt.Errorf("catalog: upstream %q: %w", u.spec.Name, err)
		u.mu.Lock()
		u.lastErr, u.lastErrAt = err, u.c.now()
		u.mu.Unlock()
		return err
	}
	u.setTools(tools)
	return nil
}

func (u *upstream) setTools(list []*mcp.Tool) {
	tools := make(map[string]Tool, len(list))
	for _, t := range list {
		if t == nil {
			continue
		}
		if _, dup := tools[t.Name]; dup {
			u.log.Warn("catalog: upstream lists a tool name twice; keeping the first", "tool", t.Name)
			continue
		}
		tools[t.Name] = FromMCP(u.spec.Name, t)
	}
	u.mu.Lock()
	before := len(u.tools)
	u.tools = tools
	u.lastRefresh = u.c.now()
	u.lastErr, u.lastErrAt = nil, time.Time{}
	u.mu.Unlock()
	u.log.Debug("catalog: tools listed", "tools", len(tools), "before", before)
}

func (u *upstream) snapshot() []Tool {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]Tool, 0, len(u.tools))
	for _, t := range u.tools {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (u *upstream) lookup(name string) (Tool, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	t, ok := u.tools[name]
	return t, ok
}

func (u *upstream) status() UpstreamStatus {
	u.mu.Lock()
	defer u.mu.Unlock()
	st := UpstreamStatus{
		Name:        u.spec.Name,
		Transport:   u.transportName(),
		Tools:       len(u.tools),
		Connected:   u.sess != nil,
		LastRefresh: u.lastRefresh,
		LastErrorAt: u.lastErrAt,
	}
	if u.lastErr != nil {
		st.LastError = u.lastErr.Error()
	}
	return st
}

// callTool calls one tool for a lookup; see Catalog.CallTool.
func (u *upstream) callTool(ctx context.Context, name string, args, meta map[string]any) (map[string]any, bool, error) {
	if args == nil {
		args = map[string]any{} // a nil map would be sent as null
	}
	var res *mcp.CallToolResult
	err := u.withSession(ctx, func(cs *mcp.ClientSession) error {
		r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args, Meta: meta})
		res = r
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("catalog: calling %s.%s: %w", u.spec.Name, name, err)
	}
	return resultObject(res), res.IsError, nil
}

// resultObject turns a tool result into one JSON object: structuredContent,
// else the first text content parsed as an object, else {"text": ...}.
func resultObject(res *mcp.CallToolResult) map[string]any {
	if res.StructuredContent != nil {
		if m, ok := asObject(res.StructuredContent); ok {
			return m
		}
	}
	for _, c := range res.Content {
		tc, ok := c.(*mcp.TextContent)
		if !ok {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(tc.Text), &m); err == nil && m != nil {
			return m
		}
		return map[string]any{"text": tc.Text}
	}
	return map[string]any{}
}

// asObject returns v as a JSON object with JSON's value types.
func asObject(v any) (map[string]any, bool) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, false
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, false
	}
	return m, true
}

// withSession runs fn on the upstream's session, connecting first if
// needed. If fn fails because the session failed (not with a JSON-RPC error
// from the server), the session is dropped and fn runs once more on a new
// one.
func (u *upstream) withSession(ctx context.Context, fn func(*mcp.ClientSession) error) error {
	s, err := u.session(ctx)
	if err != nil {
		return err
	}
	err = fn(s.cs)
	if err == nil || ctx.Err() != nil || !sessionFailed(err) {
		return err
	}
	u.log.Info("catalog: session failed; reconnecting once", "err", err)
	u.drop(s)
	s, rerr := u.session(ctx)
	if rerr != nil {
		return fmt.Errorf("%w (reconnecting: %w)", err, rerr)
	}
	return fn(s.cs)
}

// sessionFailed reports whether err is the session's or transport's
// failure rather than the server's JSON-RPC answer.
func sessionFailed(err error) bool {
	if errors.Is(err, mcp.ErrConnectionClosed) || errors.Is(err, mcp.ErrSessionMissing) {
		return true
	}
	var we *jsonrpc.Error
	if errors.As(err, &we) {
		switch we.Code {
		case -32003, -32004, -32005: // client closing, server closing, rejected by transport
			return true
		}
		return false
	}
	return true
}

// session returns the live session, connecting if there is none.
func (u *upstream) session(ctx context.Context) (*session, error) {
	u.connMu.Lock()
	defer u.connMu.Unlock()
	u.mu.Lock()
	s, closed := u.sess, u.closed
	u.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if s != nil {
		return s, nil
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	s, err := u.connect(cctx)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		s.close()
		return nil, ErrClosed
	}
	u.sess = s
	u.mu.Unlock()
	go u.watch(s)
	var version string
	if ir := s.cs.InitializeResult(); ir != nil {
		version = ir.ProtocolVersion
	}
	u.log.Debug("catalog: connected", "transport", u.transportName(), "protocol", version)
	return s, nil
}

// watch notices a session that ends without being closed by us (a stdio
// child exited, an HTTP server went away), reaps it and tells the loop.
func (u *upstream) watch(s *session) {
	_ = s.cs.Wait()
	if s.closing.Load() {
		return
	}
	lived := time.Since(s.started)
	u.mu.Lock()
	if u.sess == s {
		u.sess = nil
	}
	closed := u.closed
	u.mu.Unlock()
	s.close()
	if closed {
		return
	}
	u.log.Warn("catalog: upstream session ended; reconnecting", "lived", lived.Round(time.Millisecond))
	select {
	case u.died <- lived:
	default:
	}
}

// drop forgets and closes s if it is the current session.
func (u *upstream) drop(s *session) {
	u.mu.Lock()
	if u.sess == s {
		u.sess = nil
	}
	u.mu.Unlock()
	s.close()
}

// close ends the session for good.
func (u *upstream) close() error {
	u.connMu.Lock() // no connect in progress
	defer u.connMu.Unlock()
	u.mu.Lock()
	u.closed = true
	s := u.sess
	u.sess = nil
	u.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.close()
}

// session is one MCP client session with an upstream.
type session struct {
	cs      *mcp.ClientSession
	cmd     *exec.Cmd // stdio only
	started time.Time // for how long it lived; real time, not Options.Now
	log     *slog.Logger
	closing atomic.Bool
	once    sync.Once
	err     error
}

// close ends the session; for stdio it reaps the child (stdin closed,
// then SIGTERM, then SIGKILL) and kills what is left of its process group.
func (s *session) close() error {
	s.once.Do(func() {
		s.closing.Store(true)
		err := s.cs.Close()
		if s.cmd != nil && s.cmd.Process != nil {
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL) // grandchildren (npx → node)
		}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			s.log.Debug("catalog: stdio upstream exited", "status", exit.ProcessState.String())
			err = nil
		}
		if err != nil {
			s.err = fmt.Errorf("catalog: closing upstream session: %w", err)
		}
	})
	return s.err
}

// connect starts one session.
func (u *upstream) connect(ctx context.Context) (*session, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "interlock-catalog", Version: "1"}, &mcp.ClientOptions{
		Logger:       u.log,
		Capabilities: &mcp.ClientCapabilities{}, // no roots, sampling or elicitation
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			u.log.Debug("catalog: upstream says its tools changed")
			u.notify()
		},
	})
	s := &session{log: u.log, started: time.Now()}
	if u.spec.URL != "" {
		cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: u.spec.URL, HTTPClient: u.http}, nil)
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", u.spec.URL, err)
		}
		s.cs = cs
		return s, nil
	}
	if len(u.spec.Command) == 0 {
		return nil, errors.New("neither a URL nor a command")
	}
	cmd := exec.Command(u.spec.Command[0], u.spec.Command[1:]...)
	cmd.Env = relay.ChildEnv(os.Environ(), u.spec.Env)
	cmd.Dir = u.spec.Dir
	cmd.Stderr = &lineLogger{log: u.log}
	cmd.WaitDelay = terminateAfter                        // a grandchild holding stderr open cannot stall the reaping
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // own group, so closing sweeps grandchildren
	tr := &trackedTransport{inner: &mcp.CommandTransport{Command: cmd, TerminateDuration: terminateAfter}}
	cs, err := client.Connect(ctx, tr, nil)
	if err != nil {
		// The go-sdk closes the connection on most failures, not all; closing
		// it here (once) reaps the child in every case.
		if tr.conn != nil {
			_ = tr.conn.Close()
		}
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		return nil, fmt.Errorf("starting %s: %w", u.spec.Command[0], err)
	}
	s.cs, s.cmd = cs, cmd
	return s, nil
}

// trackedTransport remembers the connection it made so that it can be
// closed even when the MCP handshake failed.
type trackedTransport struct {
	inner mcp.Transport
	conn  *onceConn
}

func (t *trackedTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	c, err := t.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	t.conn = &onceConn{Connection: c}
	return t.conn, nil
}

// onceConn closes its connection once (the stdio pipe's Close reaps the
// child and must not run twice).
type onceConn struct {
	mcp.Connection
	once sync.Once
	err  error
}

func (c *onceConn) Close() error {
	c.once.Do(func() { c.err = c.Connection.Close() })
	return c.err
}

// lineLogger logs a child's stderr, one record per line.
type lineLogger struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

const maxStderrLine = 4096

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) > maxStderrLine {
				l.emit(l.buf[:maxStderrLine])
				l.buf = l.buf[:0]
			}
			return len(p), nil
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

func (l *lineLogger) emit(line []byte) {
	line = bytes.TrimRight(line, "\r")
	if len(line) > maxStderrLine {
		line = line[:maxStderrLine]
	}
	if len(line) > 0 {
		l.log.Debug("catalog: upstream stderr", "line", string(line))
	}
}
