package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// Message-level sessions serve agents whose upstream needs one: a stdio
// upstream (a child process per session) and the aggregated endpoint /mcp
// (one leg per upstream). interlock mints the session id, binds it to the
// agent, and routes every message by id: responses to the stream of their
// request, progress by token, and the rest to the stream they relate to or
// the standalone GET stream.

type session struct {
	r          *Relay
	id         string
	agentID    string
	aggregated bool
	legs       []*legState
	created    time.Time

	last atomic.Int64 // unix nanoseconds of the last request

	mu        sync.Mutex
	streams   map[string]*stream // downstream request id -> stream waiting for its response
	reqLeg    map[string]int     // downstream request id -> leg index it went to
	progress  map[string]*stream // progress token -> stream
	get       *stream            // standalone stream, if open
	recent    *stream            // last opened POST stream (fallback for unrelated messages)
	waiters   map[string]chan message
	trackers  map[string]*tracker           // forwarded gated requests by downstream id
	held      map[string]context.CancelFunc // gated requests being decided, by downstream id
	serverReq map[string]serverReq          // rewritten id -> origin (aggregated)
	seq       int64
	closed    bool
	closeMsg  string
}

type legState struct {
	idx  int
	up   *Upstream
	conn leg
	dead error
	// aggregated routing tables, filled from list results
	tools, prompts map[string]string // exposed name -> upstream name
	uris           []string          // resource URIs and template prefixes
}

type serverReq struct {
	leg int
	id  json.RawMessage
}

// stream is one downstream response stream (a POST's, or the GET stream).
type stream struct {
	ch      chan []byte
	pending int // requests on this stream not yet answered
	done    chan struct{}
	once    sync.Once
	json    bool // the client takes application/json only: collect, don't stream
}

func newStream(jsonOnly bool) *stream {
	return &stream{ch: make(chan []byte, 64), done: make(chan struct{}), json: jsonOnly}
}

func (st *stream) finish() { st.once.Do(func() { close(st.done) }) }

// push hands a message to the stream without blocking the caller for long.
func (st *stream) push(b []byte) bool {
	select {
	case <-st.done:
		return false
	default:
	}
	select {
	case st.ch <- b:
		return true
	case <-st.done:
		return false
	case <-time.After(10 * time.Second):
		return false // the agent stopped reading
	}
}

func newSessionID() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *session) lastUsed() time.Time { return time.Unix(0, s.last.Load()) }

func (r *Relay) serveSession(w http.ResponseWriter, req *http.Request, up *Upstream, p *store.Principal) {
	sid := req.Header.Get(headerSessionID)
	var s *session
	if sid != "" {
		r.mu.Lock()
		s = r.sessions[sid]
		r.mu.Unlock()
		if s == nil || s.agentID != p.Agent.ID || (up == nil) != s.aggregated || (up != nil && s.legs[0].up != up) {
			writeHTTPError(w, http.StatusNotFound, "session not found")
			return
		}
		s.last.Store(r.opts.Now().UnixNano())
	}
	switch req.Method {
	case http.MethodDelete:
		if s == nil {
			writeHTTPError(w, http.StatusBadRequest, "Mcp-Session-Id header required")
			return
		}
		r.mu.Lock()
		delete(r.sessions, s.id)
		r.mu.Unlock()
		s.close("session deleted by the client")
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodGet:
		if s == nil {
			writeHTTPError(w, http.StatusBadRequest, "Mcp-Session-Id header required")
			return
		}
		s.serveGet(w, req)
		return
	}

	// Messages outlive this handler (they sit in queues): a buffer of their
	// own, not the pool's.
	msgs, batch, ok := r.readMessages(w, req, new(bytes.Buffer))
	if !ok {
		return
	}
	var err error
	if s == nil {
		if len(msgs) != 1 || msgs[0].Method != "initialize" || !msgs[0].isRequest() {
			writeHTTPError(w, http.StatusBadRequest, "Mcp-Session-Id header required (start with initialize)")
			return
		}
		s, err = r.newSession(p, up)
		if err != nil {
			r.log.Error("starting session", "err", err)
			w.Header().Set("Content-Type", "application/json")
			w.Write(errorResponse(msgs[0].ID, codeUpstreamError, err.Error()))
			return
		}
		w.Header().Set(headerSessionID, s.id)
	}

	jsonOnly := !acceptsSSE(req)
	st := newStream(jsonOnly)
	var direct [][]byte // answers made here (denials, local answers)
	hasRequests := false
	for i := range msgs {
		m := msgs[i]
		if m.isRequest() && isGated(m.Method) {
			name, err := gatedName(&m)
			if err != nil {
				direct = append(direct, errorResponse(m.ID, codeInvalidParams, err.Error()))
				continue
			}
			upName, upTool := "", name
			if s.aggregated {
				ls, orig, ok := s.routeName(m.Method, name)
				if !ok {
					direct = append(direct, unknownNameResponse(&m, name))
					continue
				}
				upName, upTool = ls.up.Name, orig
			} else {
				upName = s.legs[0].up.Name
			}
			// Decided on its own goroutine while this POST's stream is
			// open: the gate may hold the call for approval and send
			// progress on the stream meanwhile.
			call := &Call{Principal: p, Upstream: upName, Method: m.Method,
				Name: upTool, Params: m.Params, Session: s.id, Transport: "http", ClientIP: clientIP(req)}
			if tok := progressToken(m.Params); tok != "" && !jsonOnly {
				n := 0
				var pmu sync.Mutex
				call.Progress = func(msg string) {
					pmu.Lock()
					n++
					b := progressNotification(json.RawMessage(tok), n, msg)
					pmu.Unlock()
					st.push(b)
				}
			}
			k := idKey(m.ID)
			cctx, cancel := context.WithCancel(req.Context())
			hasRequests = true
			s.mu.Lock()
			st.pending++
			s.streams[k] = st
			s.held[k] = cancel
			s.mu.Unlock()
			go func(m message) {
				defer cancel()
				d, tr := r.check(cctx, call)
				s.mu.Lock()
				delete(s.held, k)
				s.mu.Unlock()
				if cctx.Err() != nil {
					tr.failed("cancelled by the agent")
					s.answer(m.ID, denialResponse(&m, &Denial{Reason: "cancelled"}))
					return
				}
				if d != nil {
					s.answer(m.ID, denialResponse(&m, d))
					return
				}
				if err := tr.attach(&m); err != nil {
					tr.failed(err.Error())
					s.answer(m.ID, errorResponse(m.ID, codeInvalidParams, err.Error()))
					return
				}
				if tr != nil {
					s.mu.Lock()
					s.trackers[k] = tr
					s.mu.Unlock()
				}
				if ans := s.dispatch(m, st); ans != nil {
					s.answer(m.ID, ans)
				}
			}(m)
			continue
		}
		if m.Method == "notifications/cancelled" {
			if id := cancelledID(m.Params); id != nil {
				s.mu.Lock()
				cancelHeld := s.held[idKey(id)]
				s.mu.Unlock()
				if cancelHeld != nil {
					cancelHeld() // still being decided: the gate gives up
				}
			}
		}
		if m.isRequest() {
			hasRequests = true
			s.mu.Lock()
			st.pending++
			s.streams[idKey(m.ID)] = st
			s.mu.Unlock()
		}
		if ans := s.dispatch(m, st); ans != nil {
			direct = append(direct, ans)
		}
	}
	s.mu.Lock()
	if !jsonOnly {
		s.recent = st
	}
	s.mu.Unlock()
	if !hasRequests && len(direct) == 0 {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	s.writeStream(w, req, st, direct, batch)
}

func acceptsSSE(req *http.Request) bool {
	for _, v := range req.Header.Values("Accept") {
		if strings.Contains(v, "text/event-stream") || strings.Contains(v, "*/*") {
			return true
		}
	}
	return false
}

func unknownNameResponse(m *message, name string) []byte {
	if m.Method == "tools/call" {
		return resultResponse(m.ID, toolErrorResult(fmt.Sprintf("unknown tool %q", name), nil))
	}
	return errorResponse(m.ID, codeInvalidParams, fmt.Sprintf("unknown name %q", name))
}

// writeStream answers a POST: as an SSE stream, or as JSON when the client
// does not take SSE. Direct answers are written first.
func (s *session) writeStream(w http.ResponseWriter, req *http.Request, st *stream, direct [][]byte, batch bool) {
	defer s.dropStream(st)
	answered := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return st.pending == 0
	}
	if st.json {
		out := direct
		for !answered() || len(st.ch) > 0 {
			select {
			case b := <-st.ch:
				out = append(out, b)
			case <-st.done:
				if len(st.ch) == 0 {
					goto write
				}
			case <-req.Context().Done():
				return
			}
		}
	write:
		writeJSONMessages(w, out, batch || len(out) > 1)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	sw := newSSEWriter(w)
	sw.flush() // the agent learns at once that its request is in
	for _, b := range direct {
		if sw.writeMessage("", b) != nil {
			return
		}
	}
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	for {
		if answered() && len(st.ch) == 0 {
			return
		}
		select {
		case b := <-st.ch:
			if sw.writeMessage("", b) != nil {
				return
			}
		case <-st.done:
			for len(st.ch) > 0 {
				sw.writeMessage("", <-st.ch)
			}
			return
		case <-keepAlive.C:
			if sw.writeRaw([]byte(": keep-alive\n\n")) != nil {
				return
			}
		case <-req.Context().Done():
			return
		}
	}
}

func (s *session) serveGet(w http.ResponseWriter, req *http.Request) {
	if !acceptsSSE(req) {
		writeHTTPError(w, http.StatusNotAcceptable, "GET needs Accept: text/event-stream")
		return
	}
	st := newStream(false)
	s.mu.Lock()
	if s.get != nil {
		s.mu.Unlock()
		writeHTTPError(w, http.StatusConflict, "a standalone stream is already open for this session")
		return
	}
	s.get = st
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.get == st {
			s.get = nil
		}
		s.mu.Unlock()
		st.finish()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	sw := newSSEWriter(w)
	sw.flush()
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	for {
		select {
		case b := <-st.ch:
			if sw.writeMessage("", b) != nil {
				return
			}
		case <-keepAlive.C:
			if sw.writeRaw([]byte(": keep-alive\n\n")) != nil {
				return
			}
		case <-st.done:
			return
		case <-req.Context().Done():
			return
		}
	}
}

// dropStream forgets a finished stream: answers that arrive later for its
// requests are dropped (a disconnect is not a cancellation, but nobody is
// left to read them).
func (s *session) dropStream(st *stream) {
	st.finish()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.streams {
		if v == st {
			delete(s.streams, k)
			if t := s.trackers[k]; t != nil {
				delete(s.trackers, k)
				go t.failed("the agent went away before the answer")
			}
		}
	}
	for k, v := range s.progress {
		if v == st {
			delete(s.progress, k)
		}
	}
	if s.recent == st {
		s.recent = nil
	}
}

func (r *Relay) newSession(p *store.Principal, up *Upstream) (*session, error) {
	s := &session{
		r: r, id: newSessionID(), agentID: p.Agent.ID, aggregated: up == nil, created: r.opts.Now(),
		streams: map[string]*stream{}, reqLeg: map[string]int{}, progress: map[string]*stream{},
		waiters: map[string]chan message{}, serverReq: map[string]serverReq{}, trackers: map[string]*tracker{},
		held: map[string]context.CancelFunc{},
	}
	s.last.Store(r.opts.Now().UnixNano())
	ups := r.ordered
	if up != nil {
		ups = []*Upstream{up}
	}
	if len(ups) == 0 {
		return nil, errors.New("no upstreams are configured")
	}
	for i, u := range ups {
		ls := &legState{idx: i, up: u}
		s.legs = append(s.legs, ls)
		var err error
		switch {
		case u.URL != "":
			ls.conn = newHTTPLeg(u, r.client, r.log, &legSink{s: s, ls: ls})
		case u.Shared:
			var sc *sharedConn
			if sc, err = r.sharedConnFor(u, p.Agent.ID, &legSink{s: s, ls: ls}); err == nil {
				ls.conn = sc
			}
		default:
			ls.conn, err = startStdioLeg(u, r.log, &legSink{s: s, ls: ls})
		}
		if err != nil {
			s.close("start failed")
			return nil, err
		}
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		s.close("relay shutting down")
		return nil, errors.New("relay is shutting down")
	}
	r.sessions[s.id] = s
	r.mu.Unlock()
	return s, nil
}

func (s *session) close(why string) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed, s.closeMsg = true, why
	for k, t := range s.trackers {
		delete(s.trackers, k)
		go t.failed("session closed: " + why)
	}
	streams := map[*stream]bool{}
	for _, st := range s.streams {
		streams[st] = true
	}
	if s.get != nil {
		streams[s.get] = true
	}
	s.mu.Unlock()
	for st := range streams {
		st.finish()
	}
	var wg sync.WaitGroup
	for _, ls := range s.legs {
		if ls.conn != nil {
			wg.Add(1)
			go func() { defer wg.Done(); ls.conn.close() }()
		}
	}
	wg.Wait()
}

// legSink connects a leg to its session.
type legSink struct {
	s  *session
	ls *legState
}

func (k *legSink) fromUpstream(_ leg, m message, related string) { k.s.fromUpstream(k.ls, m, related) }
func (k *legSink) legFailed(_ leg, err error)                    { k.s.legFailed(k.ls, err) }

// dispatch sends one client message on its way. It returns an answer to
// write directly, or nil.
func (s *session) dispatch(m message, st *stream) []byte {
	if tok := progressToken(m.Params); tok != "" && m.isRequest() {
		s.mu.Lock()
		s.progress[tok] = st
		s.mu.Unlock()
	}
	if !s.aggregated {
		return s.sendTo(s.legs[0], m)
	}
	return s.dispatchAggregated(m, st)
}

// sendTo forwards a message to one leg, remembering where requests went.
func (s *session) sendTo(ls *legState, m message) []byte {
	if m.isRequest() {
		s.mu.Lock()
		s.reqLeg[idKey(m.ID)] = ls.idx
		dead := ls.dead
		s.mu.Unlock()
		if dead != nil {
			s.answer(m.ID, errorResponse(m.ID, codeUpstreamError, dead.Error()))
			return nil
		}
	}
	if m.Method == "notifications/cancelled" {
		s.cancelled(m.Params)
	}
	if err := ls.conn.send(m); err != nil {
		if m.isRequest() {
			s.answer(m.ID, errorResponse(m.ID, codeUpstreamError, err.Error()))
		} else {
			s.r.log.Warn("forwarding to upstream failed", "upstream", ls.up.Name, "method", m.Method, "err", err)
		}
	}
	return nil
}

// cancelled forgets a request the client cancelled: no answer will come, and
// its stream must not wait for one.
func (s *session) cancelled(params json.RawMessage) {
	var p struct {
		RequestID json.RawMessage `json:"requestId"`
	}
	if json.Unmarshal(params, &p) != nil || p.RequestID == nil {
		return
	}
	s.mu.Lock()
	st := s.streams[idKey(p.RequestID)]
	delete(s.streams, idKey(p.RequestID))
	delete(s.reqLeg, idKey(p.RequestID))
	if t := s.trackers[idKey(p.RequestID)]; t != nil {
		delete(s.trackers, idKey(p.RequestID))
		defer t.failed("cancelled by the agent")
	}
	if st != nil {
		st.pending--
		if st.pending <= 0 {
			defer st.finish()
		}
	}
	s.mu.Unlock()
}

// answer delivers a response to the stream waiting for it.
func (s *session) answer(id json.RawMessage, b []byte) {
	k := idKey(id)
	s.mu.Lock()
	st := s.streams[k]
	delete(s.streams, k)
	delete(s.reqLeg, k)
	t := s.trackers[k]
	delete(s.trackers, k)
	s.mu.Unlock()
	b = t.answered(b)
	if st == nil {
		return
	}
	st.push(b)
	s.mu.Lock()
	st.pending--
	last := st.pending <= 0
	s.mu.Unlock()
	if last {
		st.finish()
	}
}

func (s *session) fromUpstream(ls *legState, m message, related string) {
	switch {
	case m.isResponse():
		s.mu.Lock()
		w := s.waiters[waiterKey(ls.idx, m.ID)]
		delete(s.waiters, waiterKey(ls.idx, m.ID))
		s.mu.Unlock()
		if w != nil {
			w <- m
			return
		}
		s.answer(m.ID, m.Raw)
	case m.isRequest():
		if s.aggregated {
			nid := quoteID(fmt.Sprintf("%d~%s", ls.idx, m.ID))
			s.mu.Lock()
			s.serverReq[idKey(nid)] = serverReq{leg: ls.idx, id: m.ID}
			s.mu.Unlock()
			if m2, err := withID(m, nid); err == nil {
				m = m2
			}
		}
		if !s.route(m, related) {
			ls.conn.send(message{Raw: errorResponse(m.ID, codeInternalError, "the client has no open stream to receive this request")})
		}
	default: // notification
		s.r.listChanged(ls.up.Name, &m)
		if s.aggregated {
			s.rewriteNotification(ls, &m)
		}
		s.route(m, related)
	}
}

// route picks the stream for a server-initiated message: by progress token,
// then the request it relates to, then the standalone stream, then the most
// recent request stream.
func (s *session) route(m message, related string) bool {
	s.mu.Lock()
	var st *stream
	if m.Method == "notifications/progress" {
		if tok := progressTokenOf(m.Params); tok != "" {
			st = s.progress[tok]
		}
	}
	if st == nil && related != "" {
		if cand := s.streams[related]; cand != nil && !cand.json {
			st = cand
		}
	}
	if st == nil {
		st = s.get
	}
	if st == nil {
		st = s.recent
	}
	s.mu.Unlock()
	if st == nil {
		return false
	}
	return st.push(m.Raw)
}

func (s *session) legFailed(ls *legState, err error) {
	s.mu.Lock()
	ls.dead = err
	var ids []string
	for k, idx := range s.reqLeg {
		if idx == ls.idx {
			ids = append(ids, k)
		}
	}
	var waiters []chan message
	for k, w := range s.waiters {
		if strings.HasPrefix(k, fmt.Sprintf("%d/", ls.idx)) {
			waiters = append(waiters, w)
			delete(s.waiters, k)
		}
	}
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		s.r.obs.UpstreamError(ls.up.Name, "exited")
		s.r.log.Warn("upstream gone", "upstream", ls.up.Name, "session", s.id, "open_requests", len(ids), "err", err)
	}
	for _, k := range ids {
		id := json.RawMessage(k)
		s.answer(id, errorResponse(id, codeUpstreamError, fmt.Sprintf("%v before answering", err)))
	}
	for _, w := range waiters {
		w <- message{HasError: true, Raw: errorResponse(nil, codeUpstreamError, err.Error())}
	}
}

func progressToken(params json.RawMessage) string {
	if len(params) == 0 || !bytes.Contains(params, []byte("progressToken")) {
		return ""
	}
	var p struct {
		Meta struct {
			Token json.RawMessage `json:"progressToken"`
		} `json:"_meta"`
	}
	if json.Unmarshal(params, &p) != nil {
		return ""
	}
	return string(p.Meta.Token)
}

func progressTokenOf(params json.RawMessage) string {
	var p struct {
		Token json.RawMessage `json:"progressToken"`
	}
	if json.Unmarshal(params, &p) != nil {
		return ""
	}
	return string(p.Token)
}

func waiterKey(leg int, id json.RawMessage) string { return fmt.Sprintf("%d/%s", leg, id) }

// call sends a request of the relay's own to one leg and waits for the answer.
func (s *session) call(ctx context.Context, ls *legState, method string, params any) (message, error) {
	s.mu.Lock()
	s.seq++
	id := quoteID(fmt.Sprintf("interlock-%d", s.seq))
	w := make(chan message, 1)
	s.waiters[waiterKey(ls.idx, id)] = w
	dead := ls.dead
	s.mu.Unlock()
	if dead != nil {
		return message{}, dead
	}
	p, err := json.Marshal(params)
	if err != nil {
		return message{}, err
	}
	raw, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Method  string          `json:"method"`
		Params  json.RawMessage `json:"params"`
	}{"2.0", id, method, p})
	if err := ls.conn.send(message{Raw: raw, ID: id, Method: method, Params: p}); err != nil {
		return message{}, err
	}
	select {
	case m := <-w:
		return m, nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.waiters, waiterKey(ls.idx, id))
		s.mu.Unlock()
		return message{}, ctx.Err()
	}
}

// cancelledID returns the requestId of a notifications/cancelled.
func cancelledID(params json.RawMessage) json.RawMessage {
	var p struct {
		RequestID json.RawMessage `json:"requestId"`
	}
	if json.Unmarshal(params, &p) != nil {
		return nil
	}
	return p.RequestID
}
