// Package relay is interlock's MCP data path: a JSON-RPC relay between agents
// (Streamable HTTP at /mcp and /mcp/{upstream}, or stdio through ServeStdio)
// and the MCP servers interlock fronts (Streamable HTTP or stdio).
//
// The relay is faithful by design: it parses only the envelope of each
// message and forwards the bytes it received, so fields, _meta, unknown
// methods, progress, cancellation, server-to-client requests, SSE event ids
// and session ids pass through unchanged. Gated requests (tools/call now;
// resources/read and prompts/get can join) are handed to a Gate before
// anything is forwarded, and any error on that path refuses the call.
//
// The package must not know policy details: it asks the Gate and obeys.
package relay

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// Authenticator resolves an agent's bearer token. A token that is unknown,
// malformed, revoked or expired is an error with a BadToken() bool method
// that reports true somewhere in its chain (401); any other error means
// tokens cannot be checked now (503).
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (store.Principal, error)
}

// isBadToken reports whether an Authenticator error is about the token.
func isBadToken(err error) bool {
	var bt interface{ BadToken() bool }
	return errors.As(err, &bt) && bt.BadToken()
}

// Gate decides gated requests. It is asked before a gated request is
// forwarded; a Verdict with a Denial refuses the request, and so does an
// error (fail closed).
type Gate interface {
	Check(ctx context.Context, c *Call) (*Verdict, error)
}

// Verdict is the gate's answer to one gated request. A nil Verdict, or one
// without Deny, lets the request go on.
type Verdict struct {
	Deny *Denial
	// Done, if set, is called exactly once when a forwarded request ends:
	// answered, failed, cancelled, or left to a resumed stream.
	Done func(Outcome)
	// Credential, if set, is the action credential (a compact JWS) the
	// request is forwarded with: in params._meta["io.interlock/credential"]
	// on every transport, and in the Interlock-Credential header (and, for
	// upstreams that ask for it, as the bearer token) over HTTP.
	Credential string
	// Receipt, if set, is merged into the _meta of the request's result on
	// its way back to the agent (its receipt: the credential and the
	// decision id).
	Receipt map[string]any
}

// Where a credential travels.
const (
	// HeaderCredential carries the action credential to HTTP upstreams.
	HeaderCredential = "Interlock-Credential"
	// MetaCredential is the params._meta (and result _meta) key of the
	// action credential.
	MetaCredential = "io.interlock/credential"
)

// Outcome is how a forwarded gated request ended.
type Outcome struct {
	Forwarded time.Time     // when the relay sent it upstream
	Duration  time.Duration // from forwarding to the end
	Answered  bool          // a response came back through the relay
	IsError   bool          // that response was a JSON-RPC error or a tool result with isError
	Err       string        // why it ended without a response seen
}

// Call is one gated request as the gate sees it.
type Call struct {
	Principal *store.Principal
	Upstream  string          // upstream name
	Method    string          // "tools/call", ...
	Name      string          // tool or prompt name (as the upstream knows it), or resource URI
	Params    json.RawMessage // the request's params, unchanged
	Session   string          // the session id the agent uses, "" when none yet
	Transport string          // "http" or "stdio"
	ClientIP  string          // the agent's address as this server saw it ("" on stdio)
	// Progress, when not nil, sends the agent a notifications/progress
	// for the request (it gave a progress token) with message: the gate
	// uses it while it holds a call for approval. Safe to call from any
	// goroutine until Check returns.
	Progress func(message string)
}

// Denial says why a gated request is refused. Reason is shown to the agent.
type Denial struct {
	Reason string
	Meta   map[string]any // added to the refusal's _meta (e.g. a decision id)
}

// Observer receives measurements. All methods must be cheap and safe for
// concurrent use.
type Observer interface {
	// Request is called once per agent HTTP request with the upstream ("" for
	// the aggregated endpoint), HTTP method, status and duration.
	Request(upstream, method string, status int, d time.Duration)
	// UpstreamError counts a failure talking to an upstream.
	UpstreamError(upstream, kind string)
	// Gated counts a gated request and its outcome ("forwarded", "denied", "error").
	Gated(upstream, method, outcome string)
}

// Upstream is one MCP server the relay fronts.
type Upstream struct {
	Name    string
	URL     string      // Streamable HTTP endpoint, or ""
	Headers http.Header // added to every request to URL (brokered secrets)
	Command []string    // stdio argv, or nil
	Env     []string    // added to the stdio environment ("K=V")
	Dir     string
	Shared  bool   // one stdio process for every session
	Prefix  string // name prefix on the aggregated endpoint
	Timeout time.Duration
	// CredentialAsBearer also sends the action credential as
	// "Authorization: Bearer" (HTTP upstreams), unless Headers already
	// hold an Authorization header (a brokered secret always wins).
	CredentialAsBearer bool
}

// Options configure a Relay. Zero values mean defaults.
type Options struct {
	Upstreams []Upstream
	Auth      Authenticator // required
	Gate      Gate          // required
	// SessionKey authenticates the session ids handed to agents (binding each
	// session to its agent); at least 32 bytes, shared by every replica.
	SessionKey         []byte
	MaxMessageBytes    int64         // default 4 MiB
	SessionIdleTimeout time.Duration // default 30m
	HTTPClient         *http.Client  // for HTTP upstreams; default: a tuned transport
	Observer           Observer
	// OnListChanged, if set, is called (without blocking the relay for
	// long) when an upstream sends notifications/tools/list_changed (or the
	// prompts/resources ones) through the relay.
	OnListChanged func(upstream, method string)
	Logger        *slog.Logger
	Now           func() time.Time
}

// Relay is the MCP relay. Create it with New, serve Handler, and Close it.
type Relay struct {
	opts      Options
	log       *slog.Logger
	upstreams map[string]*Upstream
	ordered   []*Upstream
	client    *http.Client
	obs       Observer

	poolMu sync.Mutex
	pools  map[string]*upstreamPool // fast POST path per HTTP upstream

	mu       sync.Mutex
	sessions map[string]*session                      // message-level sessions by downstream id
	active   map[string]map[uint64]context.CancelFunc // requests in flight, by agent
	nextReq  uint64
	shared   map[string]*sharedLeg
	closed   bool
	done     chan struct{}
	wg       sync.WaitGroup
}

// New checks opts and returns a Relay.
func New(opts Options) (*Relay, error) {
	if opts.Auth == nil || opts.Gate == nil {
		return nil, errors.New("relay: Auth and Gate are required")
	}
	if len(opts.SessionKey) < 32 {
		return nil, errors.New("relay: SessionKey must be at least 32 bytes")
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 4 << 20
	}
	if opts.SessionIdleTimeout <= 0 {
		opts.SessionIdleTimeout = 30 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	r := &Relay{
		opts:      opts,
		log:       opts.Logger,
		upstreams: map[string]*Upstream{},
		client:    opts.HTTPClient,
		obs:       opts.Observer,
		sessions:  map[string]*session{},
		shared:    map[string]*sharedLeg{},
		pools:     map[string]*upstreamPool{},
		done:      make(chan struct{}),
	}
	if r.client == nil {
		r.client = &http.Client{Transport: newTransport()}
	}
	for i := range opts.Upstreams {
		u := opts.Upstreams[i]
		if u.Name == "" || (u.URL == "") == (len(u.Command) == 0) {
			return nil, fmt.Errorf("relay: upstream %q needs exactly one of URL and Command", u.Name)
		}
		if _, dup := r.upstreams[u.Name]; dup {
			return nil, fmt.Errorf("relay: duplicate upstream %q", u.Name)
		}
		if u.Timeout <= 0 {
			u.Timeout = 5 * time.Minute
		}
		r.upstreams[u.Name] = &u
		r.ordered = append(r.ordered, &u)
	}
	r.wg.Add(1)
	go r.reapIdle()
	return r, nil
}

func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	t.IdleConnTimeout = 90 * time.Second
	t.ForceAttemptHTTP2 = false
	return t
}

// Close ends every session, stops stdio children and waits for them.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	sessions := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		sessions = append(sessions, s)
	}
	r.sessions = map[string]*session{}
	shared := r.shared
	r.shared = map[string]*sharedLeg{}
	r.mu.Unlock()
	close(r.done)
	for _, s := range sessions {
		s.close("relay shutting down")
	}
	for _, l := range shared {
		l.close()
	}
	r.wg.Wait()
	if t, ok := r.client.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
	r.poolMu.Lock()
	for _, p := range r.pools {
		if p != nil {
			p.closeIdle()
		}
	}
	r.poolMu.Unlock()
	return nil
}

// Handler serves /mcp (aggregated) and /mcp/{upstream}. Host and Origin are
// checked by the server in front of it.
func (r *Relay) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", func(w http.ResponseWriter, req *http.Request) {
		r.serveMCP(w, req, "")
	})
	mux.HandleFunc("/mcp/{upstream}", func(w http.ResponseWriter, req *http.Request) {
		r.serveMCP(w, req, req.PathValue("upstream"))
	})
	return mux
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (r *Relay) serveMCP(w http.ResponseWriter, req *http.Request, name string) {
	start := r.opts.Now()
	rec := &statusRecorder{ResponseWriter: w}
	defer func() { r.obs.Request(name, req.Method, rec.status, r.opts.Now().Sub(start)) }()
	w = rec

	p, ok := r.authenticate(w, req)
	if !ok {
		return
	}
	var up *Upstream
	if name != "" {
		up = r.upstreams[name]
		if up == nil {
			writeHTTPError(w, http.StatusNotFound, fmt.Sprintf("no upstream named %q", name))
			return
		}
	}
	switch req.Method {
	case http.MethodPost, http.MethodGet, http.MethodDelete:
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		writeHTTPError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	// Every request of the agent can be ended at once (CloseAgents).
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	id := r.track(p.Agent.ID, cancel)
	defer r.untrack(p.Agent.ID, id)
	req = req.WithContext(ctx)
	if up != nil && up.URL != "" {
		r.proxy(w, req, up, &p)
		return
	}
	r.serveSession(w, req, up, &p)
}

func (r *Relay) track(agentID string, cancel context.CancelFunc) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextReq++
	if r.active == nil {
		r.active = map[string]map[uint64]context.CancelFunc{}
	}
	m := r.active[agentID]
	if m == nil {
		m = map[uint64]context.CancelFunc{}
		r.active[agentID] = m
	}
	m[r.nextReq] = cancel
	return r.nextReq
}

func (r *Relay) untrack(agentID string, id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m := r.active[agentID]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(r.active, agentID)
		}
	}
}

// CloseAgents ends everything the agents have open in this relay: their
// message-level sessions (and the upstream processes and connections they
// hold), and every request in flight, held streams included (the kill
// switch). It returns how many sessions and requests it ended. Their next
// request meets the gate, which refuses it.
func (r *Relay) CloseAgents(agentIDs []string, why string) (sessions, requests int) {
	ids := make(map[string]bool, len(agentIDs))
	for _, id := range agentIDs {
		ids[id] = true
	}
	r.mu.Lock()
	var closing []*session
	for sid, s := range r.sessions {
		if ids[s.agentID] {
			closing = append(closing, s)
			delete(r.sessions, sid)
		}
	}
	var cancels []context.CancelFunc
	for id := range ids {
		for _, c := range r.active[id] {
			cancels = append(cancels, c)
		}
	}
	r.mu.Unlock()
	for _, s := range closing {
		s.close(why)
	}
	for _, c := range cancels {
		c()
	}
	if len(closing)+len(cancels) > 0 {
		r.log.Info("closed agents' sessions and requests", "agents", agentIDs, "sessions", len(closing), "requests", len(cancels), "why", why)
	}
	return len(closing), len(cancels)
}

// authenticate reads the bearer token. It writes a 401 and returns false when
// the token is missing or bad. The token never leaves this function.
func (r *Relay) authenticate(w http.ResponseWriter, req *http.Request) (store.Principal, bool) {
	h := req.Header.Get("Authorization")
	scheme, token, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		r.challenge(w, "", "an agent token is required (Authorization: Bearer <token>)")
		return store.Principal{}, false
	}
	p, err := r.opts.Auth.Authenticate(req.Context(), strings.TrimSpace(token))
	if err != nil && isBadToken(err) {
		r.log.Info("agent authentication failed", "remote", req.RemoteAddr, "err", err)
		r.challenge(w, "invalid_token", "the agent token is not valid")
		return store.Principal{}, false
	}
	if err != nil {
		// Not the token's fault: the store is down or slow. Fail closed,
		// but say what is wrong.
		r.log.Error("cannot authenticate agents", "err", err)
		w.Header().Set("Retry-After", "5")
		writeHTTPError(w, http.StatusServiceUnavailable, "interlock cannot check agent tokens right now; try again shortly")
		return store.Principal{}, false
	}
	return p, true
}

func (r *Relay) challenge(w http.ResponseWriter, code, msg string) {
	v := `Bearer realm="interlock"`
	if code != "" {
		v += fmt.Sprintf(`, error=%q, error_description=%q`, code, msg)
	}
	w.Header().Set("WWW-Authenticate", v)
	writeHTTPError(w, http.StatusUnauthorized, msg)
}

// writeHTTPError answers with a JSON-RPC error without id, the form the MCP
// transports allow for HTTP-level refusals.
func writeHTTPError(w http.ResponseWriter, status int, msg string) {
	code := codeInvalidRequest
	if status >= 500 {
		code = codeInternalError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(errorResponse(nil, code, msg))
}

// Session ids handed to agents for a passed-through upstream session are
// "<upstream id>.<mac>", where mac binds the id to the agent and upstream, so
// one agent cannot ride another's session and replicas need no shared table.

const sessionMACLen = 16

func (r *Relay) sessionMAC(agentID, upstream, id string) string {
	h := hmac.New(sha256.New, r.opts.SessionKey)
	h.Write([]byte(agentID))
	h.Write([]byte{0})
	h.Write([]byte(upstream))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:sessionMACLen])
}

func (r *Relay) wrapSessionID(agentID, upstream, id string) string {
	return id + "." + r.sessionMAC(agentID, upstream, id)
}

// unwrapSessionID returns the upstream session id, or false when the id was
// not issued to this agent for this upstream.
func (r *Relay) unwrapSessionID(agentID, upstream, wrapped string) (string, bool) {
	i := strings.LastIndexByte(wrapped, '.')
	if i < 0 {
		return "", false
	}
	id, mac := wrapped[:i], wrapped[i+1:]
	want := r.sessionMAC(agentID, upstream, id)
	if !hmac.Equal([]byte(mac), []byte(want)) {
		return "", false
	}
	return id, true
}

// check runs the gate for one gated request; any gate error is a denial.
// When the request may go on, it returns the tracker to finish once the
// request ends (nil when the gate does not ask to be told).
func (r *Relay) check(ctx context.Context, c *Call) (*Denial, *tracker) {
	v, err := r.opts.Gate.Check(ctx, c)
	if err != nil {
		r.log.Error("gate failed; refusing the call", "agent", c.Principal.Agent.ID, "upstream", c.Upstream, "method", c.Method, "err", err)
		r.obs.Gated(c.Upstream, c.Method, "error")
		return &Denial{Reason: "interlock could not decide this call and refused it (fail closed); the operator can find the cause in interlock's log"}, nil
	}
	if v != nil && v.Deny != nil {
		r.obs.Gated(c.Upstream, c.Method, "denied")
		return v.Deny, nil
	}
	r.obs.Gated(c.Upstream, c.Method, "forwarded")
	if v == nil || (v.Done == nil && v.Credential == "" && len(v.Receipt) == 0) {
		return nil, nil
	}
	t := &tracker{done: v.Done, start: r.opts.Now(), now: r.opts.Now, credential: v.Credential, log: r.log}
	if len(v.Receipt) > 0 {
		t.receipt = make(map[string]json.RawMessage, len(v.Receipt))
		for k, val := range v.Receipt {
			b, err := encodeValue(val)
			if err != nil {
				r.log.Error("gate receipt does not encode; the result goes back without it", "key", k, "err", err)
				continue
			}
			t.receipt[k] = b
		}
	}
	return nil, t
}

// tracker follows one forwarded gated request: it carries the credential
// the request goes with and the receipt its result gets, and reports the
// request's end to the gate, once.
type tracker struct {
	done       func(Outcome)
	start      time.Time
	now        func() time.Time
	once       sync.Once
	credential string
	receipt    map[string]json.RawMessage
	log        *slog.Logger
}

// attach puts the tracker's credential into the request m on its way
// upstream (params._meta); the HTTP legs add the header from m.credential.
func (t *tracker) attach(m *message) error {
	if t == nil || t.credential == "" {
		return nil
	}
	v, err := encodeValue(t.credential)
	if err != nil {
		return fmt.Errorf("attaching the credential: %w", err)
	}
	// One splice of the whole message where it can be done (then params
	// is found again in the result), else params first, then the message.
	if raw, err := spliceSet(m.Raw, []string{"params", "_meta"}, []member{{MetaCredential, v}}); err == nil {
		if open, err := wholeObject(raw); err == nil {
			if sp, err := findMembers(raw, open, []string{"params"}); err == nil && sp[0].found {
				m.Raw, m.Params, m.credential = raw, raw[sp[0].vs:sp[0].ve], t.credential
				return nil
			}
		}
	}
	params, err := setMeta(m.Params, MetaCredential, t.credential)
	if err != nil {
		return fmt.Errorf("attaching the credential: %w", err)
	}
	nm, err := withParams(*m, params)
	if err != nil {
		return fmt.Errorf("attaching the credential: %w", err)
	}
	nm.credential = t.credential
	*m = nm
	return nil
}

// answered reports the response raw and returns it as the agent gets it:
// with the receipt merged into its result's _meta.
func (t *tracker) answered(raw []byte) []byte {
	if t == nil {
		return raw
	}
	t.once.Do(func() {
		if t.done != nil {
			t.done(Outcome{Forwarded: t.start, Duration: t.now().Sub(t.start), Answered: true, IsError: isErrorAnswer(raw)})
		}
	})
	if len(t.receipt) == 0 {
		return raw
	}
	out, err := withResultMeta(raw, t.receipt)
	if err != nil {
		// The upstream's answer is passed on as it came; only the receipt is lost.
		t.log.Warn("could not add the receipt to a result", "err", err)
		return raw
	}
	return out
}

func (t *tracker) failed(why string) {
	if t == nil {
		return
	}
	t.once.Do(func() {
		if t.done != nil {
			t.done(Outcome{Forwarded: t.start, Duration: t.now().Sub(t.start), Err: why})
		}
	})
}

// isErrorAnswer reports whether a response is a JSON-RPC error or a tool
// result with isError set.
func isErrorAnswer(raw []byte) bool {
	if open, err := wholeObject(raw); err == nil {
		if sp, err := findExact(raw, open, "error", "result"); err == nil {
			if sp[0].found {
				return true
			}
			res := sp[1]
			if !res.found || isJSONNull(raw[res.vs:res.ve]) {
				return false
			}
			if raw[res.vs] != '{' {
				return true // a decoder fails on it: an error
			}
			if in, err := findExact(raw, res.vs, "isError"); err == nil {
				if !in[0].found {
					return false
				}
				switch string(raw[in[0].vs:in[0].ve]) {
				case "false", "null":
					return false
				default:
					return true // true, or not a boolean (a decoder fails)
				}
			}
		}
	}
	return decodedIsErrorAnswer(raw)
}

// decodedIsErrorAnswer is isErrorAnswer by decoding: for keys in other
// cases, duplicates and malformed input, read as encoding/json reads them.
func decodedIsErrorAnswer(raw []byte) bool {
	var r struct {
		Error  json.RawMessage `json:"error"`
		Result struct {
			IsError bool `json:"isError"`
		} `json:"result"`
	}
	if json.Unmarshal(raw, &r) != nil {
		return true
	}
	return r.Error != nil || r.Result.IsError
}

// clientIP is the agent's address as seen by this server (no port).
func clientIP(req *http.Request) string {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		return req.RemoteAddr
	}
	return host
}

// isGated says which methods go through the gate.
func isGated(method string) bool {
	return method == "tools/call"
}

// denialResponse is the reply to a refused gated request: a tool error result
// for tools/call, a JSON-RPC error otherwise.
func denialResponse(m *message, d *Denial) []byte {
	if m.Method == "tools/call" {
		return resultResponse(m.ID, toolErrorResult(d.Reason, d.Meta))
	}
	return errorResponse(m.ID, codeInvalidRequest, d.Reason)
}

func (r *Relay) reapIdle() {
	defer r.wg.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		}
		now := r.opts.Now()
		var idle []*session
		r.mu.Lock()
		for id, s := range r.sessions {
			if now.Sub(s.lastUsed()) > r.opts.SessionIdleTimeout {
				idle = append(idle, s)
				delete(r.sessions, id)
			}
		}
		r.mu.Unlock()
		for _, s := range idle {
			s.close("idle timeout")
		}
	}
}

// listChanged passes a list_changed notification from upstream to the hook.
func (r *Relay) listChanged(upstream string, m *message) {
	if r.opts.OnListChanged != nil && strings.HasSuffix(m.Method, "/list_changed") && strings.HasPrefix(m.Method, "notifications/") {
		r.opts.OnListChanged(upstream, m.Method)
	}
}

type nopObserver struct{}

func (nopObserver) Request(string, string, int, time.Duration) {}
func (nopObserver) UpstreamError(string, string)               {}
func (nopObserver) Gated(string, string, string)               {}
