package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A leg is one connection to one upstream within a message-level session.
// Messages from the upstream are handed to the sink given at start, with the
// id of the client request they relate to when the transport tells (an HTTP
// upstream's per-request stream), or "" when it does not.
type leg interface {
	send(m message) error
	close()
}

type sink interface {
	// fromUpstream receives one message from the upstream.
	fromUpstream(l leg, m message, related string)
	// legFailed reports that the upstream is gone; err says why.
	legFailed(l leg, err error)
}

// ---- stdio ----

// stdioLeg runs an MCP server as a child process speaking newline-delimited
// JSON-RPC on stdin/stdout. Its stderr goes to the log.
type stdioLeg struct {
	up   *Upstream
	log  *slog.Logger
	cmd  *exec.Cmd
	sink sink

	wmu    sync.Mutex
	stdin  io.WriteCloser
	done   chan struct{} // closed when the child has been reaped
	err    error         // why it ended, set before done closes
	closed sync.Once
}

const maxStdioLine = 64 << 20

func startStdioLeg(up *Upstream, log *slog.Logger, s sink) (*stdioLeg, error) {
	cmd := exec.Command(up.Command[0], up.Command[1:]...)
	cmd.Env = ChildEnv(os.Environ(), up.Env)
	cmd.Dir = up.Dir
	// Own process group, so that closing kills grandchildren (npx → node).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting upstream %q (%s): %w", up.Name, up.Command[0], err)
	}
	l := &stdioLeg{up: up, log: log.With("upstream", up.Name, "pid", cmd.Process.Pid), cmd: cmd, sink: s, stdin: stdin, done: make(chan struct{})}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 0, 4096), 1<<20)
		for sc.Scan() {
			l.log.Debug("upstream stderr", "line", sc.Text())
		}
	}()
	go func() {
		defer readers.Done()
		rd := bufio.NewReaderSize(stdout, 64<<10)
		for {
			line, err := readLine(rd, maxStdioLine)
			if len(bytes.TrimSpace(line)) > 0 {
				m, perr := parseMessage(line)
				if perr != nil {
					l.log.Warn("upstream wrote a line that is not JSON-RPC; dropped", "err", perr)
				} else {
					s.fromUpstream(l, m, "")
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					l.log.Warn("reading upstream stdout", "err", err)
				}
				return
			}
		}
	}()
	go func() {
		readers.Wait()
		werr := cmd.Wait()
		if werr == nil {
			werr = errors.New("exited")
		}
		l.err = fmt.Errorf("upstream %q process %s", up.Name, strings.TrimPrefix(werr.Error(), "exit status "))
		if ee, ok := werr.(*exec.ExitError); ok {
			l.err = fmt.Errorf("upstream %q process exited (%s)", up.Name, ee.ProcessState.String())
		}
		close(l.done)
		s.legFailed(l, l.err)
	}()
	return l, nil
}

// inheritedEnv are the variables of interlock's own environment a stdio
// upstream inherits: what programs need to run (paths, locale, temp dirs,
// proxies, CA certificates), never interlock's secrets or another
// upstream's. Anything else a server needs goes in its config `env`.
var inheritedEnv = map[string]bool{
	"PATH": true, "HOME": true, "USER": true, "LOGNAME": true, "SHELL": true, "LANG": true,
	"LANGUAGE": true, "TZ": true, "TMPDIR": true, "TEMP": true, "TMP": true, "TERM": true,
	"HTTP_PROXY": true, "HTTPS_PROXY": true, "NO_PROXY": true, "http_proxy": true, "https_proxy": true, "no_proxy": true,
	"SSL_CERT_FILE": true, "SSL_CERT_DIR": true, "NODE_EXTRA_CA_CERTS": true,
}

// ChildEnv builds a stdio upstream's environment from interlock's (only
// inheritedEnv, LC_* and XDG_*) and the upstream's configured variables.
func ChildEnv(parent, extra []string) []string {
	env := make([]string, 0, len(extra)+16)
	for _, kv := range parent {
		k, _, _ := strings.Cut(kv, "=")
		if inheritedEnv[k] || strings.HasPrefix(k, "LC_") || strings.HasPrefix(k, "XDG_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// readLine reads one '\n'-terminated line (without the newline), up to max bytes.
func readLine(rd *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := rd.ReadSlice('\n')
		if len(buf)+len(chunk) > max {
			// Skip the rest of the oversized line.
			for err == bufio.ErrBufferFull {
				_, err = rd.ReadSlice('\n')
			}
			return nil, fmt.Errorf("line longer than %d bytes", max)
		}
		if err == bufio.ErrBufferFull {
			buf = append(buf, chunk...)
			continue
		}
		if buf == nil {
			buf = append([]byte(nil), chunk...)
		} else {
			buf = append(buf, chunk...)
		}
		return bytes.TrimRight(buf, "\r\n"), err
	}
}

func (l *stdioLeg) send(m message) error {
	select {
	case <-l.done:
		return l.err
	default:
	}
	line := m.Raw
	if bytes.IndexByte(line, '\n') >= 0 {
		var b bytes.Buffer
		if err := json.Compact(&b, line); err != nil {
			return err
		}
		line = b.Bytes()
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if _, err := l.stdin.Write(append(line[:len(line):len(line)], '\n')); err != nil {
		return fmt.Errorf("writing to upstream %q: %w", l.up.Name, err)
	}
	return nil
}

// close ends the child as the MCP stdio transport says: close stdin, wait,
// then SIGTERM, then SIGKILL (to the whole process group).
func (l *stdioLeg) close() {
	l.closed.Do(func() {
		l.wmu.Lock()
		l.stdin.Close()
		l.wmu.Unlock()
		select {
		case <-l.done:
			return
		case <-time.After(2 * time.Second):
		}
		syscall.Kill(-l.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-l.done:
			return
		case <-time.After(3 * time.Second):
		}
		syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
		<-l.done
	})
}

// ---- Streamable HTTP ----

// httpLeg is a Streamable HTTP client for one upstream within one session.
type httpLeg struct {
	up     *Upstream
	client *http.Client
	log    *slog.Logger
	sink   sink
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	sessionID string
	version   string
	initID    string // id of the initialize request in flight
	getOpen   bool
	wg        sync.WaitGroup
}

func newHTTPLeg(up *Upstream, client *http.Client, log *slog.Logger, s sink) *httpLeg {
	ctx, cancel := context.WithCancel(context.Background())
	return &httpLeg{up: up, client: client, log: log.With("upstream", up.Name), sink: s, ctx: ctx, cancel: cancel}
}

func (l *httpLeg) newRequest(ctx context.Context, method string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, l.up.URL, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	l.mu.Lock()
	if l.sessionID != "" {
		req.Header.Set(headerSessionID, l.sessionID)
	}
	if l.version != "" {
		req.Header.Set(headerProtocolVersion, l.version)
	}
	l.mu.Unlock()
	for k, v := range l.up.Headers {
		req.Header[k] = v
	}
	return req, nil
}

func (l *httpLeg) send(m message) error {
	if l.ctx.Err() != nil {
		return fmt.Errorf("upstream %q connection closed", l.up.Name)
	}
	if m.Method == "initialize" && m.isRequest() {
		l.mu.Lock()
		l.initID = idKey(m.ID)
		l.mu.Unlock()
	}
	if !m.isRequest() {
		req, err := l.newRequest(l.ctx, http.MethodPost, m.Raw)
		if err != nil {
			return err
		}
		resp, err := l.client.Do(req)
		if err != nil {
			return fmt.Errorf("upstream %q: %w", l.up.Name, err)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("upstream %q answered HTTP %d", l.up.Name, resp.StatusCode)
		}
		if m.Method == "notifications/initialized" {
			l.openStandalone()
		}
		return nil
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		ctx, cancel := context.WithTimeout(l.ctx, l.up.Timeout)
		defer cancel()
		if err := l.roundTrip(ctx, m); err != nil && l.ctx.Err() == nil {
			l.log.Warn("upstream request failed", "method", m.Method, "err", err)
			l.sink.fromUpstream(l, message{Raw: errorResponse(m.ID, codeUpstreamError,
				fmt.Sprintf("upstream %q failed: %v", l.up.Name, err)), ID: m.ID, HasError: true}, idKey(m.ID))
		}
	}()
	return nil
}

// roundTrip posts one request and delivers what comes back.
func (l *httpLeg) roundTrip(ctx context.Context, m message) error {
	req, err := l.newRequest(ctx, http.MethodPost, m.Raw)
	if err != nil {
		return err
	}
	if m.credential != "" {
		setCredentialHeaders(req.Header, l.up, m.credential)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if sid := resp.Header.Get(headerSessionID); sid != "" {
		l.mu.Lock()
		if l.sessionID == "" {
			l.sessionID = sid
		}
		l.mu.Unlock()
	}
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if m2, err := parseMessage(b); err == nil && m2.isResponse() {
			l.deliver(m2, idKey(m.ID))
			return nil
		}
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	related := idKey(m.ID)
	ct := resp.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "text/event-stream") {
		return l.readStream(ctx, resp.Body, related, m.ID)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxStdioLine))
	if err != nil {
		return err
	}
	msgs, _, err := parseBody(b)
	if err != nil {
		return err
	}
	for _, m2 := range msgs {
		l.deliver(m2, related)
	}
	return nil
}

// readStream delivers the events of one SSE stream. When the stream ends
// before the response (SSE polling), it resumes with GET and Last-Event-ID.
func (l *httpLeg) readStream(ctx context.Context, body io.ReadCloser, related string, want json.RawMessage) error {
	lastID := ""
	for attempt := 0; ; attempt++ {
		got, id, retry, err := l.readEvents(body, related, want)
		body.Close()
		if id != "" {
			lastID = id
		}
		if got || want == nil {
			return err
		}
		if err != nil && lastID == "" {
			return err
		}
		if lastID == "" || attempt > 100 {
			return errors.New("stream ended before the response")
		}
		if retry <= 0 {
			retry = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retry):
		}
		req, err := l.newRequest(ctx, http.MethodGet, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Last-Event-Id", lastID)
		resp, err := l.client.Do(req)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return fmt.Errorf("resuming stream: HTTP %d", resp.StatusCode)
		}
		body = resp.Body
	}
}

func (l *httpLeg) readEvents(body io.Reader, related string, want json.RawMessage) (gotResponse bool, lastID string, retry time.Duration, err error) {
	rd := newSSEReader(body, maxStdioLine)
	defer rd.release()
	for {
		ev, err := rd.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return gotResponse, lastID, retry, err
		}
		if len(ev.ID) > 0 {
			lastID = string(ev.ID)
		}
		if r := retryField(ev.Raw); r > 0 {
			retry = r
		}
		if len(ev.Data) == 0 {
			continue
		}
		m, err := parseMessage(append([]byte(nil), ev.Data...))
		if err != nil {
			l.log.Warn("upstream sent an event that is not JSON-RPC; dropped", "err", err)
			continue
		}
		if m.isResponse() && want != nil && idKey(m.ID) == idKey(want) {
			gotResponse = true
		}
		l.deliver(m, related)
	}
}

func retryField(raw []byte) time.Duration {
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if v, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r"), []byte("retry:")); ok {
			var ms int
			if _, err := fmt.Sscan(strings.TrimSpace(string(v)), &ms); err == nil {
				return time.Duration(ms) * time.Millisecond
			}
		}
	}
	return 0
}

func (l *httpLeg) deliver(m message, related string) {
	if m.isResponse() && m.HasResult {
		l.mu.Lock()
		isInit := l.initID != "" && idKey(m.ID) == l.initID
		l.mu.Unlock()
		if isInit {
			var r struct {
				Result struct {
					ProtocolVersion string `json:"protocolVersion"`
				} `json:"result"`
			}
			if json.Unmarshal(m.Raw, &r) == nil {
				l.mu.Lock()
				l.version, l.initID = r.Result.ProtocolVersion, ""
				l.mu.Unlock()
			}
		}
	}
	l.sink.fromUpstream(l, m, related)
}

// openStandalone opens the GET stream for server-initiated messages.
func (l *httpLeg) openStandalone() {
	l.mu.Lock()
	if l.getOpen {
		l.mu.Unlock()
		return
	}
	l.getOpen = true
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		lastID := ""
		for failures := 0; failures < 5 && l.ctx.Err() == nil; {
			req, err := l.newRequest(l.ctx, http.MethodGet, nil)
			if err != nil {
				return
			}
			req.Header.Set("Accept", "text/event-stream")
			if lastID != "" {
				req.Header.Set("Last-Event-Id", lastID)
			}
			resp, err := l.client.Do(req)
			if err != nil {
				failures++
				continue
			}
			if resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				return // 405: the upstream offers no standalone stream
			}
			_, id, retry, _ := l.readEvents(resp.Body, "", nil)
			resp.Body.Close()
			if id != "" {
				lastID = id
				failures = 0
			} else {
				failures++
			}
			if retry <= 0 {
				retry = time.Second
			}
			select {
			case <-l.ctx.Done():
				return
			case <-time.After(retry):
			}
		}
	}()
}

func (l *httpLeg) close() {
	l.mu.Lock()
	sid := l.sessionID
	l.mu.Unlock()
	if sid != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if req, err := l.newRequest(ctx, http.MethodDelete, nil); err == nil {
			if resp, err := l.client.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		cancel()
	}
	l.cancel()
	l.wg.Wait()
}

func decodeBase64Any(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}
