package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// ServeStdio relays between a stdio MCP client (in/out, newline-delimited
// JSON-RPC) and the stdio upstream named upstream, which it starts. The agent
// token is checked before the upstream starts and again (cached) for every
// gated request, which goes through the same gate as HTTP, so a suspension
// takes effect mid-session. Only protocol messages are written to out. It
// returns when the client closes its input, the upstream exits, or ctx ends;
// the child is stopped and reaped before it returns.
func (r *Relay) ServeStdio(ctx context.Context, in io.Reader, out io.Writer, token, upstream string) error {
	if _, err := r.opts.Auth.Authenticate(ctx, token); err != nil {
		return fmt.Errorf("agent token: %w", err)
	}
	up := r.upstreams[upstream]
	if up == nil {
		return fmt.Errorf("no upstream named %q", upstream)
	}
	if len(up.Command) == 0 {
		return fmt.Errorf("upstream %q is not a stdio server", upstream)
	}
	w := &lineWriter{w: out}
	sk := &stdioSink{w: w, pending: map[string]bool{}, trackers: map[string]*tracker{}, held: map[string]context.CancelFunc{}, died: make(chan error, 1),
		listChanged: func(m *message) { r.listChanged(up.Name, m) }}
	l, err := startStdioLeg(up, r.log, sk)
	if err != nil {
		return err
	}
	defer l.close()
	defer sk.wg.Wait() // before the child goes: nothing decided is sent after we return
	ctx, stop := context.WithCancel(ctx)
	defer stop() // first: calls still being decided give up

	lines := make(chan []byte)
	readErr := make(chan error, 1)
	go func() {
		rd := bufio.NewReaderSize(in, 64<<10)
		for {
			line, err := readLine(rd, int(r.opts.MaxMessageBytes))
			if len(bytes.TrimSpace(line)) > 0 {
				select {
				case lines <- line:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-sk.died:
			return err
		case err := <-readErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case line := <-lines:
			r.stdioMessage(ctx, line, w, sk, l, token, up)
		}
	}
}

func (r *Relay) stdioMessage(ctx context.Context, line []byte, w *lineWriter, sk *stdioSink, l *stdioLeg, token string, up *Upstream) {
	msgs, batch, err := parseBody(line)
	if err != nil {
		w.write(errorResponse(nil, codeParseError, err.Error()))
		return
	}
	if batch {
		w.write(errorResponse(nil, codeInvalidRequest, "batches are not part of the stdio transport"))
		return
	}
	m := msgs[0]
	if m.isRequest() && isGated(m.Method) {
		// Decided on its own goroutine: the gate may hold it (approval)
		// while the client's other messages, a cancellation among them,
		// go on.
		cctx, cancel := context.WithCancel(ctx)
		k := idKey(m.ID)
		sk.mu.Lock()
		sk.held[k] = cancel
		sk.mu.Unlock()
		sk.wg.Add(1)
		go func() {
			defer sk.wg.Done()
			defer func() {
				sk.mu.Lock()
				delete(sk.held, k)
				sk.mu.Unlock()
				cancel()
			}()
			r.stdioGated(ctx, cctx, m, w, sk, l, token, up)
		}()
		return
	}
	if m.isRequest() {
		sk.track(m.ID, true)
	}
	if m.Method == "notifications/cancelled" {
		var c struct {
			RequestID json.RawMessage `json:"requestId"`
		}
		if json.Unmarshal(m.Params, &c) == nil {
			sk.mu.Lock()
			cancelHeld := sk.held[idKey(c.RequestID)]
			sk.mu.Unlock()
			if cancelHeld != nil {
				cancelHeld() // still being decided: the gate gives up (and cancels its approval request)
			}
			sk.track(c.RequestID, false)
			sk.finish(c.RequestID, nil, "cancelled by the agent")
		}
	}
	r.stdioSend(m, w, sk, l)
}

// stdioGated decides one gated request (with cctx, which the agent's
// cancellation ends) and forwards it or answers the refusal.
func (r *Relay) stdioGated(ctx, cctx context.Context, m message, w *lineWriter, sk *stdioSink, l *stdioLeg, token string, up *Upstream) {
	name, err := gatedName(&m)
	if err != nil {
		w.write(errorResponse(m.ID, codeInvalidParams, err.Error()))
		return
	}
	p, err := r.opts.Auth.Authenticate(ctx, token)
	if err != nil {
		r.log.Info("agent token no longer valid", "err", err)
		w.write(denialResponse(&m, &Denial{Reason: "interlock refused this call: the agent token is no longer valid"}))
		return
	}
	call := &Call{Principal: &p, Upstream: up.Name, Method: m.Method, Name: name, Params: m.Params, Transport: "stdio"}
	if tok := progressToken(m.Params); tok != "" {
		var mu sync.Mutex
		n, done := 0, false
		call.Progress = func(msg string) {
			mu.Lock()
			defer mu.Unlock()
			if !done {
				n++
				w.write(progressNotification(json.RawMessage(tok), n, msg))
			}
		}
		defer func() { mu.Lock(); done = true; mu.Unlock() }()
	}
	d, tr := r.check(cctx, call)
	if cctx.Err() != nil && ctx.Err() == nil {
		// Cancelled by the agent: no answer is due (and none forwarded).
		tr.failed("cancelled by the agent")
		return
	}
	if d != nil {
		w.write(denialResponse(&m, d))
		return
	}
	if err := tr.attach(&m); err != nil {
		tr.failed(err.Error())
		w.write(errorResponse(m.ID, codeInvalidParams, err.Error()))
		return
	}
	if tr != nil {
		sk.mu.Lock()
		sk.trackers[idKey(m.ID)] = tr
		sk.mu.Unlock()
	}
	sk.track(m.ID, true)
	r.stdioSend(m, w, sk, l)
}

func (r *Relay) stdioSend(m message, w *lineWriter, sk *stdioSink, l *stdioLeg) {
	if err := l.send(m); err != nil && m.isRequest() {
		sk.track(m.ID, false)
		sk.finish(m.ID, nil, err.Error())
		w.write(errorResponse(m.ID, codeUpstreamError, err.Error()))
	}
}

// lineWriter writes one message per line, never interleaving two.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lineWriter) write(b []byte) error {
	if bytes.IndexByte(b, '\n') >= 0 {
		var c bytes.Buffer
		if err := json.Compact(&c, b); err != nil {
			return err
		}
		b = c.Bytes()
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	_, err := lw.w.Write(append(b[:len(b):len(b)], '\n'))
	return err
}

// stdioSink writes upstream messages to the client and remembers which
// client requests are open, to answer them if the upstream dies.
type stdioSink struct {
	w           *lineWriter
	mu          sync.Mutex
	pending     map[string]bool
	trackers    map[string]*tracker
	held        map[string]context.CancelFunc // gated requests being decided, by id
	wg          sync.WaitGroup                // their goroutines
	died        chan error
	listChanged func(*message)
}

// finish ends the tracker of a request: answered with raw (returned as the
// client gets it, with its receipt), or failed with why.
func (s *stdioSink) finish(id json.RawMessage, raw []byte, why string) []byte {
	s.mu.Lock()
	t := s.trackers[idKey(id)]
	delete(s.trackers, idKey(id))
	s.mu.Unlock()
	if raw != nil {
		return t.answered(raw)
	}
	t.failed(why)
	return nil
}

func (s *stdioSink) track(id json.RawMessage, open bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if open {
		s.pending[idKey(id)] = true
	} else {
		delete(s.pending, idKey(id))
	}
}

func (s *stdioSink) fromUpstream(_ leg, m message, _ string) {
	raw := m.Raw
	if m.isResponse() {
		s.track(m.ID, false)
		raw = s.finish(m.ID, m.Raw, "")
	} else if m.isNotification() {
		s.listChanged(&m)
	}
	s.w.write(raw)
}

func (s *stdioSink) legFailed(_ leg, err error) {
	s.mu.Lock()
	ids := make([]string, 0, len(s.pending))
	for k := range s.pending {
		ids = append(ids, k)
	}
	s.pending = map[string]bool{}
	s.mu.Unlock()
	for _, k := range ids {
		s.finish(json.RawMessage(k), nil, fmt.Sprintf("%v before answering", err))
		s.w.write(errorResponse(json.RawMessage(k), codeUpstreamError, fmt.Sprintf("%v before answering", err)))
	}
	s.died <- err
}
