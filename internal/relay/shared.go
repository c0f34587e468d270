package relay

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
)

// A shared stdio upstream is one child process serving every session of
// one agent (agents never share a process: what one agent's session sees,
// such as log notifications or the server's requests, must not reach
// another agent). Each session talks to it through a sharedConn, which
// rewrites the ids of its requests (and its progress tokens) so that
// sessions cannot collide, and answers initialize from the first session's
// handshake.

type sharedLeg struct {
	up  *Upstream
	r   *Relay
	key string // in Relay.shared
	mu  sync.Mutex
	leg *stdioLeg
	// conns by ordinal; requests by rewritten id
	conns   map[int]*sharedConn
	reqs    map[string]sharedReq
	tokens  map[string]sharedReq // rewritten progress token -> origin
	serverQ map[string]int       // upstream request id -> conn that got it
	next    int
	seq     int64
	init    json.RawMessage // result of the first initialize, once known
	initing bool
	inited  bool        // notifications/initialized was sent
	waiting []sharedReq // initialize requests waiting for that result
	last    *sharedConn // conn with the most recent request
}

type sharedReq struct {
	conn *sharedConn
	id   json.RawMessage
}

type sharedConn struct {
	s    *sharedLeg
	ord  int
	sink sink
}

// sharedConnFor attaches a session (its sink) to the shared process of up
// for one agent, starting the process if needed. Attaching happens under the
// relay's lock, so a process whose last session just left cannot be stopped
// under a new one.
func (r *Relay) sharedConnFor(up *Upstream, agentID string, k sink) (*sharedConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sl, err := r.sharedFor(up, agentID)
	if err != nil {
		return nil, err
	}
	return sl.attach(k), nil
}

// sharedFor returns the shared leg of up for one agent, starting its
// process if needed. r.mu must be held.
func (r *Relay) sharedFor(up *Upstream, agentID string) (*sharedLeg, error) {
	if r.closed {
		return nil, fmt.Errorf("relay is shutting down")
	}
	key := up.Name + "\x00" + agentID
	if sl, ok := r.shared[key]; ok && sl.alive() {
		return sl, nil
	}
	sl := &sharedLeg{up: up, r: r, key: key, conns: map[int]*sharedConn{}, reqs: map[string]sharedReq{},
		tokens: map[string]sharedReq{}, serverQ: map[string]int{}}
	l, err := startStdioLeg(up, r.log, sl)
	if err != nil {
		return nil, err
	}
	sl.leg = l
	r.shared[key] = sl
	return sl, nil
}

func (s *sharedLeg) alive() bool {
	select {
	case <-s.leg.done:
		return false
	default:
		return true
	}
}

func (s *sharedLeg) close() { s.leg.close() }

func (s *sharedLeg) attach(k sink) *sharedConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	c := &sharedConn{s: s, ord: s.next, sink: k}
	s.conns[c.ord] = c
	return c
}

func (c *sharedConn) close() {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c.ord)
	for k, r := range s.reqs {
		if r.conn == c {
			delete(s.reqs, k)
		}
	}
	for k, r := range s.tokens {
		if r.conn == c {
			delete(s.tokens, k)
		}
	}
	if s.last == c {
		s.last = nil
	}
	if len(s.conns) == 0 {
		// The agent's last session ended: stop its process.
		go s.r.dropShared(s)
	}
}

// dropShared stops a shared process that no session uses any more.
func (r *Relay) dropShared(s *sharedLeg) {
	r.mu.Lock()
	if r.shared[s.key] == s {
		s.mu.Lock()
		idle := len(s.conns) == 0
		s.mu.Unlock()
		if !idle {
			r.mu.Unlock()
			return
		}
		delete(r.shared, s.key)
	}
	r.mu.Unlock()
	s.close()
}

func (c *sharedConn) send(m message) error {
	s := c.s
	switch {
	case m.isRequest():
		s.mu.Lock()
		s.last = c
		if m.Method == "initialize" {
			if s.init != nil {
				res := s.init
				s.mu.Unlock()
				c.sink.fromUpstream(c, message{Raw: resultResponse(m.ID, res), ID: m.ID, HasResult: true}, "")
				return nil
			}
			if s.initing {
				s.waiting = append(s.waiting, sharedReq{c, m.ID})
				s.mu.Unlock()
				return nil
			}
			s.initing = true
		}
		s.seq++
		nid := quoteID(fmt.Sprintf("s%d-%d", c.ord, s.seq))
		s.reqs[idKey(nid)] = sharedReq{c, m.ID}
		if tok := progressToken(m.Params); tok != "" {
			ntok := fmt.Sprintf("s%d-%s", c.ord, strings.Trim(tok, `"`))
			s.tokens[string(quoteID(ntok))] = sharedReq{c, json.RawMessage(tok)}
			if meta, err := rewriteProgressToken(m.Params, ntok); err == nil {
				m, _ = withParams(m, meta)
			}
		}
		s.mu.Unlock()
		m2, err := withID(m, nid)
		if err != nil {
			return err
		}
		return s.leg.send(m2)
	case m.isResponse():
		// The client answers a request the upstream sent: ids from the
		// upstream are unique in its own numbering, so pass as is.
		return s.leg.send(m)
	default:
		switch m.Method {
		case "notifications/initialized":
			s.mu.Lock()
			sent := s.inited
			s.inited = true
			s.mu.Unlock()
			if sent {
				return nil // the process was initialized once, by the first session
			}
		case "notifications/cancelled":
			var p map[string]json.RawMessage
			if json.Unmarshal(m.Params, &p) == nil {
				s.mu.Lock()
				for k, r := range s.reqs {
					if r.conn == c && idKey(r.id) == idKey(p["requestId"]) {
						p["requestId"] = json.RawMessage(k)
						delete(s.reqs, k)
					}
				}
				s.mu.Unlock()
				raw, _ := json.Marshal(p)
				m, _ = withParams(m, raw)
			}
		}
		return s.leg.send(m)
	}
}

func rewriteProgressToken(params json.RawMessage, tok string) (json.RawMessage, error) {
	var p map[string]json.RawMessage
	if err := json.Unmarshal(params, &p); err != nil {
		return nil, err
	}
	meta, err := setParam(p["_meta"], "progressToken", tok)
	if err != nil {
		return nil, err
	}
	p["_meta"] = meta
	return json.Marshal(p)
}

// fromUpstream routes a message of the shared process to its session.
func (s *sharedLeg) fromUpstream(_ leg, m message, _ string) {
	s.mu.Lock()
	switch {
	case m.isResponse():
		r, ok := s.reqs[idKey(m.ID)]
		delete(s.reqs, idKey(m.ID))
		if !ok {
			s.mu.Unlock()
			return
		}
		var waiting []sharedReq
		if s.initing && s.init == nil && m.HasResult {
			var res struct {
				Result json.RawMessage `json:"result"`
			}
			if json.Unmarshal(m.Raw, &res) == nil && res.Result != nil {
				s.init, s.initing, waiting = res.Result, false, s.waiting
				s.waiting = nil
			}
		}
		s.mu.Unlock()
		if m2, err := withID(m, r.id); err == nil {
			r.conn.sink.fromUpstream(r.conn, m2, idKey(r.id))
		}
		for _, w := range waiting {
			w.conn.sink.fromUpstream(w.conn, message{Raw: resultResponse(w.id, s.init), ID: w.id, HasResult: true}, "")
		}
		return
	case m.isRequest():
		c := s.last
		s.mu.Unlock()
		if c == nil {
			s.leg.send(message{Raw: errorResponse(m.ID, codeInternalError, "no client session to ask")})
			return
		}
		c.sink.fromUpstream(c, m, "")
		return
	}
	// Notifications: progress goes to the session whose token it is; the
	// rest to every session.
	if m.Method == "notifications/progress" {
		var p map[string]json.RawMessage
		if json.Unmarshal(m.Params, &p) == nil {
			if r, ok := s.tokens[string(p["progressToken"])]; ok {
				s.mu.Unlock()
				p["progressToken"] = r.id
				raw, _ := json.Marshal(p)
				if m2, err := withParams(m, raw); err == nil {
					r.conn.sink.fromUpstream(r.conn, m2, "")
				}
				return
			}
		}
	}
	conns := make([]*sharedConn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.sink.fromUpstream(c, m, "")
	}
}

func (s *sharedLeg) legFailed(_ leg, err error) {
	s.mu.Lock()
	conns := make([]*sharedConn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.sink.legFailed(c, err)
	}
}
