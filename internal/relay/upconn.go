package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// upstreamPool is a small HTTP/1.1 client for the relay's hot path: a POST
// to one upstream, written and read in the calling goroutine on a pooled
// keep-alive connection. net/http's Transport hands every request to a
// write goroutine and every response to a read goroutine; on a two-core
// VM those handoffs cost more than the rest of the relay together (see
// docs/performance.md). Upstreams reached through an HTTP proxy (from the
// environment), long-lived GET streams and DELETE still use
// net/http's Transport.
//
// Like net/http, a request on a reused connection that fails before any
// byte of the answer arrived (the upstream closed the idle connection) is
// retried once on a new connection.
type upstreamPool struct {
	u        *url.URL
	addr     string // host:port
	hostHdr  string
	tls      *tls.Config
	idle     chan *upConn
	dialer   net.Dialer
	idleTime time.Duration
}

type upConn struct {
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	lastUsed time.Time
	reused   bool
}

const poolSize = 256

func newUpstreamPool(raw string) (*upstreamPool, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	p := &upstreamPool{u: u, hostHdr: u.Host, idle: make(chan *upConn, poolSize),
		dialer: net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}, idleTime: 60 * time.Second}
	port := u.Port()
	switch u.Scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
		p.tls = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	default:
		return nil, fmt.Errorf("unsupported scheme %q", u.Scheme)
	}
	p.addr = net.JoinHostPort(u.Hostname(), port)
	return p, nil
}

func (p *upstreamPool) get(ctx context.Context) (*upConn, error) {
	for {
		select {
		case c := <-p.idle:
			if time.Since(c.lastUsed) > p.idleTime {
				c.c.Close()
				continue
			}
			c.reused = true
			return c, nil
		default:
		}
		nc, err := p.dialer.DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return nil, err
		}
		if p.tls != nil {
			tc := tls.Client(nc, p.tls)
			if err := tc.HandshakeContext(ctx); err != nil {
				nc.Close()
				return nil, err
			}
			nc = tc
		}
		return &upConn{c: nc, br: bufio.NewReaderSize(nc, 16<<10), bw: bufio.NewWriterSize(nc, 8<<10)}, nil
	}
}

func (p *upstreamPool) put(c *upConn) {
	c.c.SetDeadline(time.Time{})
	c.lastUsed = time.Now()
	select {
	case p.idle <- c:
	default:
		c.c.Close()
	}
}

func (p *upstreamPool) closeIdle() {
	for {
		select {
		case c := <-p.idle:
			c.c.Close()
		default:
			return
		}
	}
}

// upResponse is an upstream answer whose body is read in the caller's
// goroutine. Close returns the connection to the pool when the body was
// read to its end and the upstream allows keep-alive.
type upResponse struct {
	*http.Response
	pool *upstreamPool
	conn *upConn
	stop func() bool // undoes the context watch
}

func (r *upResponse) Close() error {
	r.stop()
	// Finish a short remainder so the connection can be reused.
	_, err := io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
	eof := err == nil && r.drained()
	r.Body.Close()
	if eof && !r.Response.Close {
		r.pool.put(r.conn)
	} else {
		r.conn.c.Close()
	}
	return nil
}

// endReceived reports whether all that is left of a chunked body is its
// end (the last chunk, with the CRLF of the one before), already received:
// reading to the end will not wait.
func (r *upResponse) endReceived() bool {
	if len(r.TransferEncoding) != 1 || r.TransferEncoding[0] != "chunked" {
		return false
	}
	n := r.conn.br.Buffered()
	if n != 5 && n != 7 {
		return false
	}
	b, _ := r.conn.br.Peek(n)
	return string(b) == "0\r\n\r\n" || string(b) == "\r\n0\r\n\r\n"
}

func (r *upResponse) drained() bool {
	var b [1]byte
	n, err := r.Body.Read(b[:])
	return n == 0 && errors.Is(err, io.EOF)
}

// post sends one POST with header h and body, and returns the response with
// its body unread. ctx cancels the exchange (the connection is then closed).
func (p *upstreamPool) post(ctx context.Context, h http.Header, body []byte, timeout time.Duration) (*upResponse, error) {
	for attempt := 0; ; attempt++ {
		c, err := p.get(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := p.exchange(ctx, c, h, body, timeout)
		if err == nil {
			return resp, nil
		}
		c.c.Close()
		if attempt == 0 && c.reused && isStaleConnError(err) && ctx.Err() == nil {
			continue
		}
		return nil, err
	}
}

// staleError marks a failure before any byte of the answer arrived.
type staleError struct{ err error }

func (e staleError) Error() string { return e.err.Error() }
func (e staleError) Unwrap() error { return e.err }

func isStaleConnError(err error) bool {
	var s staleError
	return errors.As(err, &s)
}

func (p *upstreamPool) exchange(ctx context.Context, c *upConn, h http.Header, body []byte, timeout time.Duration) (*upResponse, error) {
	if timeout > 0 {
		c.c.SetDeadline(time.Now().Add(timeout))
	}
	stop := context.AfterFunc(ctx, func() { c.c.SetDeadline(time.Unix(1, 0)) })
	bw := c.bw
	bw.WriteString("POST ")
	bw.WriteString(p.u.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(p.hostHdr)
	bw.WriteString("\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(body)))
	bw.WriteString("\r\n")
	if err := h.Write(bw); err != nil {
		stop()
		return nil, err
	}
	bw.WriteString("\r\n")
	bw.Write(body)
	if err := bw.Flush(); err != nil {
		stop()
		if c.reused {
			return nil, staleError{err}
		}
		return nil, err
	}
	if _, err := c.br.Peek(1); err != nil {
		stop()
		if c.reused && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			return nil, staleError{err}
		}
		return nil, err
	}
	resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodPost})
	if err != nil {
		stop()
		return nil, err
	}
	return &upResponse{Response: resp, pool: p, conn: c, stop: stop}, nil
}

// poolFor returns the pool of an HTTP upstream, or nil when the caller gave
// its own HTTPClient (which is then used for everything) or the
// environment routes the upstream through a proxy (which net/http's
// Transport knows how to use).
func (r *Relay) poolFor(up *Upstream) *upstreamPool {
	if r.opts.HTTPClient != nil {
		return nil
	}
	r.poolMu.Lock()
	defer r.poolMu.Unlock()
	p, seen := r.pools[up.Name]
	if !seen {
		p = nil
		if req, err := http.NewRequest(http.MethodPost, up.URL, nil); err == nil {
			if proxy, err := http.ProxyFromEnvironment(req); err == nil && proxy == nil {
				p, _ = newUpstreamPool(up.URL)
			}
		}
		r.pools[up.Name] = p // nil: use the Transport
	}
	return p
}
