package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/interlock-dev/interlock/internal/store"
)

// The pass-through path: one agent HTTP request becomes one upstream HTTP
// request to a Streamable HTTP upstream, and the upstream's answer (JSON or
// an SSE stream, with its event ids, retry fields and session id) comes back
// unchanged. Only gated requests are inspected, and only the upstream session
// id is rewritten (bound to the agent).

const (
	headerSessionID       = "Mcp-Session-Id"
	headerProtocolVersion = "Mcp-Protocol-Version"
	headerMethod          = "Mcp-Method"
	headerName            = "Mcp-Name"
	codeHeaderMismatch    = -32020
)

// forwardedRequestHeaders are the agent's headers the upstream may see.
// Everything else (Authorization, Cookie, Origin, ...) stays here: the agent's
// token is never passed upstream.
var forwardedRequestHeaders = []string{
	"Accept", "Content-Type", headerProtocolVersion, "Last-Event-Id",
	headerMethod, headerName, "Traceparent", "Tracestate", "User-Agent",
}

// droppedResponseHeaders are upstream headers the agent must not see.
var droppedResponseHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true, "Transfer-Encoding": true,
	"Upgrade": true, "Set-Cookie": true, "Www-Authenticate": true, "Content-Length": true,
	headerSessionID: true,
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readMessages reads a POST body into buf (up to MaxMessageBytes) and parses
// it. On failure it answers the agent (413, or 400 with a JSON-RPC parse
// error) and returns false. The messages point into buf.
func (r *Relay) readMessages(w http.ResponseWriter, req *http.Request, buf *bytes.Buffer) ([]message, bool, bool) {
	buf.Reset()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, req.Body, r.opts.MaxMessageBytes)); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeHTTPError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("message larger than %d bytes", r.opts.MaxMessageBytes))
			return nil, false, false
		}
		writeHTTPError(w, http.StatusBadRequest, "could not read the request body")
		return nil, false, false
	}
	msgs, batch, err := parseBody(buf.Bytes())
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		w.Write(errorResponse(nil, codeParseError, err.Error()))
		return nil, false, false
	}
	return msgs, batch, true
}

func (r *Relay) proxy(w http.ResponseWriter, req *http.Request, up *Upstream, p *store.Principal) {
	var upstreamSession string
	if sid := req.Header.Get(headerSessionID); sid != "" {
		id, ok := r.unwrapSessionID(p.Agent.ID, up.Name, sid)
		if !ok {
			writeHTTPError(w, http.StatusNotFound, "session not found")
			return
		}
		upstreamSession = id
	}

	var (
		trackers map[string]*tracker // forwarded gated requests, by id
		endWhy   = "no answer came back on this request's stream (the agent may resume it)"
		body     []byte
		denials  [][]byte
		pending  map[string]bool // ids of requests forwarded, awaiting a response
		batch    bool
		requests int
		// rewritten: a request now carries a credential; credential is
		// the last one, sent as a header when it is the only one.
		rewritten   bool
		credentials int
		credential  string
		// streaming: the answer is already an event stream (progress
		// was sent while the gate held the request).
		streaming bool
	)
	if req.Method == http.MethodPost {
		buf := bufPool.Get().(*bytes.Buffer)
		defer bufPool.Put(buf)
		msgs, isBatch, ok := r.readMessages(w, req, buf)
		if !ok {
			return
		}
		body = buf.Bytes()
		batch = isBatch
		keep := msgs[:0]
		for i := range msgs {
			m := &msgs[i]
			if m.isRequest() && isGated(m.Method) {
				name, err := gatedName(m)
				if err != nil {
					denials = append(denials, errorResponse(m.ID, codeInvalidParams, err.Error()))
					continue
				}
				if !batch && !headersMatch(req, m.Method, name) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusBadRequest)
					w.Write(errorResponse(m.ID, codeHeaderMismatch, "Mcp-Method/Mcp-Name headers do not match the request body"))
					return
				}
				call := &Call{Principal: p, Upstream: up.Name, Method: m.Method,
					Name: name, Params: m.Params, Session: req.Header.Get(headerSessionID), Transport: "http", ClientIP: clientIP(req)}
				var held *heldStream
				if !batch && acceptsSSE(req) {
					// A held call keeps the agent's stream alive: progress
					// notifications (or comments, without a progress token).
					held = &heldStream{w: w}
					if tok := progressToken(m.Params); tok != "" {
						held.token = json.RawMessage(tok)
					}
					call.Progress = held.progress
				}
				d, tr := r.check(req.Context(), call)
				streaming = held.stop() || streaming
				if d != nil {
					denials = append(denials, denialResponse(m, d))
					continue
				}
				if err := tr.attach(m); err != nil {
					tr.failed(err.Error())
					denials = append(denials, errorResponse(m.ID, codeInvalidParams, err.Error()))
					continue
				}
				if m.credential != "" {
					rewritten = true
					credentials++
					credential = m.credential
				}
				if tr != nil {
					if trackers == nil {
						trackers = map[string]*tracker{}
					}
					trackers[idKey(m.ID)] = tr
				}
			}
			if m.isRequest() {
				requests++
				if pending == nil {
					pending = make(map[string]bool, 1)
				}
				pending[idKey(m.ID)] = true
			}
			keep = append(keep, *m)
		}
		if len(denials) > 0 && len(keep) == 0 {
			if streaming {
				sw := newSSEWriter(w)
				for _, d := range denials {
					sw.writeMessage("", d)
				}
				return
			}
			writeJSONMessages(w, denials, batch)
			return
		}
		switch {
		case len(denials) > 0 || (rewritten && batch):
			body = joinBatch(keep)
		case rewritten:
			body = keep[0].Raw
		}
	}

	defer func() {
		for _, t := range trackers {
			t.failed(endWhy)
		}
	}()
	hdr := make(http.Header, len(forwardedRequestHeaders)+len(up.Headers)+1)
	for _, k := range forwardedRequestHeaders {
		if v, ok := req.Header[k]; ok {
			hdr[k] = v
		}
	}
	for k, v := range req.Header {
		if strings.HasPrefix(k, "Mcp-Param-") {
			hdr[k] = v
		}
	}
	if upstreamSession != "" {
		hdr.Set(headerSessionID, upstreamSession)
	}
	for k, v := range up.Headers {
		hdr[k] = v
	}
	if credentials == 1 {
		setCredentialHeaders(hdr, up, credential)
	}
	var (
		resp *http.Response
		// ended reports whether the upstream's answer has been read but
		// for its end, which is already here (nil: never known).
		ended func() bool
	)
	if pool := r.poolFor(up); req.Method == http.MethodPost && pool != nil {
		ur, err := pool.post(req.Context(), hdr, body, up.Timeout)
		if err != nil {
			endWhy = "upstream unavailable: " + err.Error()
			if req.Context().Err() != nil {
				endWhy = "the agent went away before the upstream answered"
				return // nothing to answer
			}
			if streaming {
				r.heldFailed(w, up, pending, err.Error())
				return
			}
			r.upstreamFailed(w, req, up, pending, denials, err)
			return
		}
		defer ur.Close()
		resp = ur.Response
		body := &eofReader{r: resp.Body}
		resp.Body = body
		ended = func() bool { return body.eof || ur.endReceived() }
	} else {
		var rdr io.Reader
		if body != nil {
			rdr = bytes.NewReader(body)
		}
		out, err := http.NewRequestWithContext(req.Context(), req.Method, up.URL, rdr)
		if err != nil {
			r.upstreamFailed(w, req, up, pending, denials, fmt.Errorf("building request: %w", err))
			return
		}
		out.Header = hdr
		resp, err = r.client.Do(out)
		if err != nil {
			endWhy = "upstream unavailable: " + err.Error()
			if req.Context().Err() != nil {
				endWhy = "the agent went away before the upstream answered"
				return
			}
			if streaming {
				r.heldFailed(w, up, pending, err.Error())
				return
			}
			r.upstreamFailed(w, req, up, pending, denials, err)
			return
		}
		defer resp.Body.Close()
	}
	if streaming {
		endWhy = r.finishHeld(w, req, resp, up, pending, trackers)
		return
	}

	if resp.StatusCode == http.StatusUnauthorized {
		r.obs.UpstreamError(up.Name, "unauthorized")
		r.log.Warn("upstream refused interlock's credentials", "upstream", up.Name)
		writeHTTPError(w, http.StatusBadGateway, fmt.Sprintf("upstream %q refused interlock's credentials (HTTP 401); ask the operator to check its headers", up.Name))
		endWhy = "upstream refused interlock's credentials (HTTP 401)"
		return
	}
	h := w.Header()
	for k, v := range resp.Header {
		if !droppedResponseHeaders[k] {
			h[k] = v
		}
	}
	if sid := resp.Header.Get(headerSessionID); sid != "" {
		h.Set(headerSessionID, r.wrapSessionID(p.Agent.ID, up.Name, sid))
	}
	if resp.StatusCode >= 500 {
		r.obs.UpstreamError(up.Name, "status")
	}

	ct := resp.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "text/event-stream"):
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(resp.StatusCode)
		endWhy = r.relayStream(w, req, resp.Body, ended, up, pending, denials, trackers)
	case (len(denials) > 0 || len(trackers) > 0) && strings.HasPrefix(ct, "application/json"):
		limit := r.opts.MaxMessageBytes * 4
		var upBody bytes.Buffer
		n, err := upBody.ReadFrom(io.LimitReader(resp.Body, limit+1))
		if err != nil {
			r.upstreamFailed(w, req, up, pending, denials, err)
			return
		}
		if n > limit {
			// Too large to inspect or merge: pass it on whole and unchanged.
			endWhy = fmt.Sprintf("the answer was larger than %d bytes, too large to inspect", limit)
			if len(denials) > 0 {
				r.log.Warn("a batch answer was too large to add refusals to; the refused requests get no answer", "upstream", up.Name, "refused", len(denials))
			}
			w.WriteHeader(resp.StatusCode)
			w.Write(upBody.Bytes())
			io.Copy(w, resp.Body)
			return
		}
		out := observeJSON(upBody.Bytes(), trackers)
		if len(denials) > 0 {
			out = mergeJSONResponses(out, denials)
		} else {
			h.Set("Content-Length", fmt.Sprint(len(out)))
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(out)
	case len(denials) > 0 && resp.StatusCode == http.StatusAccepted:
		// The forwarded part held no requests; the refusals still need answers.
		for k := range h {
			delete(h, k)
		}
		writeJSONMessages(w, denials, batch)
	default:
		if resp.StatusCode >= 400 {
			endWhy = fmt.Sprintf("the upstream answered HTTP %d", resp.StatusCode)
		}
		if resp.ContentLength >= 0 {
			h.Set("Content-Length", fmt.Sprint(resp.ContentLength))
		}
		w.WriteHeader(resp.StatusCode)
		if _, err := io.Copy(w, resp.Body); err != nil && req.Context().Err() == nil {
			r.obs.UpstreamError(up.Name, "read")
			r.log.Warn("upstream response cut short", "upstream", up.Name, "err", err)
		}
	}
}

// relayStream copies an SSE stream event by event, flushing each. If the
// upstream stream breaks (not a clean end: a clean end with requests still
// open is SSE polling, and the agent resumes with Last-Event-ID), every
// request still waiting gets a JSON-RPC error so the agent does not hang.
// It returns why tracked requests left unanswered ended.
//
// The answer to the last open request is written without a flush when the
// upstream's stream end has already arrived behind it (ended): the agent
// then gets the answer and the end of its stream in one write when the
// handler returns, instead of two. Whenever reading on could wait, what
// was written is flushed first.
func (r *Relay) relayStream(w http.ResponseWriter, req *http.Request, body io.Reader, ended func() bool, up *Upstream, pending map[string]bool, denials [][]byte, trackers map[string]*tracker) string {
	sw := newSSEWriter(w)
	for _, d := range denials {
		if sw.writeMessage("", d) != nil {
			return "the agent went away"
		}
	}
	rd := newSSEReader(body, int(r.opts.MaxMessageBytes*4))
	defer rd.release()
	for {
		if sw.unflushed && (ended == nil || rd.r.Buffered() > 0 || !ended()) {
			if sw.flush() != nil {
				return "the agent went away"
			}
		}
		ev, err := rd.next()
		if err != nil {
			if req.Context().Err() != nil {
				return "the agent went away before the upstream answered"
			}
			if err == io.EOF {
				return "the upstream ended the stream before answering (the agent may resume it)"
			}
			r.obs.UpstreamError(up.Name, "stream")
			r.log.Warn("upstream stream broke", "upstream", up.Name, "open_requests", len(pending), "err", err)
			for id := range pending {
				if sw.writeMessage("", errorResponse(json.RawMessage(id), codeUpstreamError,
					fmt.Sprintf("upstream %q failed before answering: %v", up.Name, err))) != nil {
					break
				}
			}
			return "the upstream failed before answering: " + err.Error()
		}
		if r.opts.OnListChanged != nil && bytes.Contains(ev.Data, []byte("list_changed")) {
			if m, err := parseMessage(ev.Data); err == nil {
				r.listChanged(up.Name, &m)
			}
		}
		if len(pending) > 0 && len(ev.Data) > 0 {
			if id := responseID(ev.Data); id != nil {
				k := idKey(id)
				delete(pending, k)
				sw.later = len(pending) == 0 && ended != nil // the last answer: see above
				if t := trackers[k]; t != nil {
					if out := t.answered(ev.Data); !bytes.Equal(out, ev.Data) {
						if sw.writeMessage(string(ev.ID), out) != nil {
							return "the agent went away"
						}
						sw.later = false
						continue
					}
				}
			}
		}
		if sw.writeRaw(ev.Raw) != nil {
			return "the agent went away"
		}
		sw.later = false
	}
}

// observeJSON reports the answers in a JSON body (one message or a batch)
// to their trackers and returns the body as the agent gets it (with
// receipts added).
func observeJSON(body []byte, trackers map[string]*tracker) []byte {
	if len(trackers) == 0 {
		return body
	}
	msgs, batch, err := parseBody(body)
	if err != nil {
		return body
	}
	changed := false
	for i := range msgs {
		m := &msgs[i]
		if m.isResponse() {
			if t := trackers[idKey(m.ID)]; t != nil {
				if out := t.answered(m.Raw); !bytes.Equal(out, m.Raw) {
					m.Raw, changed = out, true
				}
			}
		}
	}
	switch {
	case !changed:
		return body
	case batch:
		return joinBatch(msgs)
	default:
		return msgs[0].Raw
	}
}

// eofReader notes when its reader has reported the end.
type eofReader struct {
	r   io.ReadCloser
	eof bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.eof = true
	}
	return n, err
}

func (e *eofReader) Close() error { return e.r.Close() }

// setCredentialHeaders puts the action credential into the headers of a
// request to an HTTP upstream: Interlock-Credential always, and the bearer
// token when the upstream asks for it and no brokered Authorization header
// is configured (which always wins).
func setCredentialHeaders(h http.Header, up *Upstream, credential string) {
	h.Set(HeaderCredential, credential)
	if up.CredentialAsBearer && h.Get("Authorization") == "" {
		h.Set("Authorization", "Bearer "+credential)
	}
}

// upstreamFailed answers when the upstream could not be reached or failed
// before answering: each forwarded request gets a JSON-RPC error, so the
// agent sees an MCP error rather than a hang or a bare transport failure.
func (r *Relay) upstreamFailed(w http.ResponseWriter, req *http.Request, up *Upstream, pending map[string]bool, denials [][]byte, err error) {
	r.obs.UpstreamError(up.Name, "connect")
	r.log.Warn("upstream request failed", "upstream", up.Name, "err", err)
	if len(pending) == 0 && len(denials) == 0 {
		writeHTTPError(w, http.StatusBadGateway, fmt.Sprintf("upstream %q is unavailable", up.Name))
		return
	}
	msgs := denials
	for id := range pending {
		msgs = append(msgs, errorResponse(json.RawMessage(id), codeUpstreamError, fmt.Sprintf("upstream %q is unavailable", up.Name)))
	}
	writeJSONMessages(w, msgs, len(msgs) > 1)
}

func writeJSONMessages(w http.ResponseWriter, msgs [][]byte, batch bool) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if !batch && len(msgs) == 1 {
		w.Write(msgs[0])
		return
	}
	w.Write(joinRaw(msgs))
}

func joinRaw(msgs [][]byte) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, m := range msgs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(m)
	}
	b.WriteByte(']')
	return b.Bytes()
}

func joinBatch(msgs []message) []byte {
	raws := make([][]byte, len(msgs))
	for i := range msgs {
		raws[i] = msgs[i].Raw
	}
	return joinRaw(raws)
}

// mergeJSONResponses adds refusals to an upstream JSON answer (one message
// or a batch), making a batch answer.
func mergeJSONResponses(upstream []byte, extra [][]byte) []byte {
	t := bytes.TrimSpace(upstream)
	var all [][]byte
	if len(t) > 0 && t[0] == '[' {
		var raws []json.RawMessage
		if json.Unmarshal(t, &raws) == nil {
			for _, r := range raws {
				all = append(all, r)
			}
		}
	} else if len(t) > 0 {
		all = append(all, t)
	}
	return joinRaw(append(all, extra...))
}

// headersMatch enforces, for 2026-07-28 clients that send them, that the
// Mcp-Method and Mcp-Name headers say what the body says: the decision is
// taken on the body, and the upstream must not be shown different headers.
func headersMatch(req *http.Request, method, name string) bool {
	if v := req.Header.Get(headerMethod); v != "" && v != method {
		return false
	}
	if v := req.Header.Get(headerName); v != "" && decodeHeaderValue(v) != name {
		return false
	}
	return true
}

// decodeHeaderValue undoes the 2026-07-28 "=?base64?...?=" form.
func decodeHeaderValue(v string) string {
	if strings.HasPrefix(v, "=?base64?") && strings.HasSuffix(v, "?=") {
		if b, err := decodeBase64Any(v[len("=?base64?") : len(v)-2]); err == nil {
			return string(b)
		}
	}
	return v
}

// finishHeld writes the upstream's answer to a request whose answer is
// already an event stream (see heldStream): events are relayed as they
// are, a JSON answer becomes one event, and a failure answers every open
// request with a JSON-RPC error. It returns why tracked requests left
// unanswered ended.
func (r *Relay) finishHeld(w http.ResponseWriter, req *http.Request, resp *http.Response, up *Upstream, pending map[string]bool, trackers map[string]*tracker) string {
	ct := resp.Header.Get("Content-Type")
	switch {
	case resp.StatusCode < 300 && strings.HasPrefix(ct, "text/event-stream"):
		return r.relayStream(w, req, resp.Body, nil, up, pending, nil, trackers)
	case resp.StatusCode < 300 && strings.HasPrefix(ct, "application/json"):
		body, err := io.ReadAll(io.LimitReader(resp.Body, r.opts.MaxMessageBytes*4))
		if err != nil {
			r.heldFailed(w, up, pending, err.Error())
			return "the upstream failed before answering: " + err.Error()
		}
		msgs, _, err := parseBody(observeJSON(body, trackers))
		if err != nil {
			r.heldFailed(w, up, pending, "unreadable answer: "+err.Error())
			return "the upstream's answer was unreadable"
		}
		sw := newSSEWriter(w)
		for _, m := range msgs {
			sw.writeMessage("", m.Raw)
		}
		return "no answer came back"
	}
	why := fmt.Sprintf("the upstream answered HTTP %d", resp.StatusCode)
	if resp.StatusCode == http.StatusUnauthorized {
		r.obs.UpstreamError(up.Name, "unauthorized")
		why = "the upstream refused interlock's credentials (HTTP 401); ask the operator to check its headers"
	}
	r.heldFailed(w, up, pending, why)
	return why
}

// heldFailed answers every open request of a streaming answer with a
// JSON-RPC error.
func (r *Relay) heldFailed(w http.ResponseWriter, up *Upstream, pending map[string]bool, why string) {
	r.obs.UpstreamError(up.Name, "connect")
	sw := newSSEWriter(w)
	for id := range pending {
		sw.writeMessage("", errorResponse(json.RawMessage(id), codeUpstreamError, fmt.Sprintf("upstream %q failed: %s", up.Name, why)))
	}
}
