package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/internal/testenv"
)

// tcpRelay forwards a local port to PostgreSQL, and can cut every
// connection (the database "goes down") and come back on the same port.
type tcpRelay struct {
	t      *testing.T
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
}

func newTCPRelay(t *testing.T, target string) *tcpRelay {
	r := &tcpRelay{t: t, target: target, conns: map[net.Conn]bool{}}
	r.listen("127.0.0.1:0")
	t.Cleanup(r.cut)
	return r
}

func (r *tcpRelay) listen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.ln, r.addr = ln, ln.Addr().String()
	r.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", r.target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns[c], r.conns[up] = true, true
			r.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

// cut closes the listener and every connection through it.
func (r *tcpRelay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
	for c := range r.conns {
		c.Close()
	}
	clear(r.conns)
}

// When PostgreSQL goes away under a running gateway, every gated call is
// refused (fail closed) and nothing reaches the upstream; when it comes
// back, calls go through again.
func TestPostgresDownFailsClosed(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5432")
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "interlock_pgdown_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, dsn); err == nil {
			conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
			conn.Close(ctx)
		}
	})
	relay := newTCPRelay(t, target)
	viaRelay := *u
	viaRelay.Host = relay.addr

	var reached atomic.Int64
	srv := acme.NewServer(acme.Options{})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), `"tools/call"`) {
			reached.Add(1)
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(up.Close)

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte("version: 1\ndefault: deny\nrules:\n  - id: all\n    when: 'true'\n    effect: allow\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`listen: %s
storage: {driver: postgres, dsn: %q, schema: %s}
policy: {file: policy.yaml}
upstreams:
  - name: acme
    url: %s
`, addr, viaRelay.String(), schema, up.URL))
	token := agent(t, cfg, "pg-bot", "owner@example.com")
	serveInProcess(t, cfg)
	cs := connectHTTP(t, "http://"+addr+"/mcp/acme", token)
	echo := func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "up?"}})
		if err != nil {
			return false, err.Error()
		}
		var parts []string
		for _, c := range res.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				parts = append(parts, tc.Text)
			}
		}
		return !res.IsError, strings.Join(parts, " ")
	}
	if ok, text := echo(); !ok {
		t.Fatalf("with the database up: %s", text)
	}
	before := reached.Load()

	relay.cut()
	for i := range 3 {
		if ok, text := echo(); ok {
			t.Fatalf("call %d went through with the database down: %s", i, text)
		} else if i == 0 {
			t.Logf("refused with the database down: %s", text)
		}
	}
	if n := reached.Load(); n != before {
		t.Errorf("%d calls reached the upstream while the database was down", n-before)
	}

	// The database comes back (same address): calls go through again.
	relay.listen(relay.addr)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ok, _ := echo(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("calls were still refused 30 s after the database came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
