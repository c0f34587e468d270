package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHostAndOriginChecks(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) })
	s := New(Options{
		AllowedHosts: []string{"localhost", "127.0.0.1", "[::1]", "gw.example.com:8443"},
		MCP:          ok,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	for _, tc := range []struct {
		name, host, origin string
		want               int
	}{
		{"loopback any port", "127.0.0.1:9999", "", 299},
		{"localhost", "localhost:8470", "http://localhost:3000", 299},
		{"ipv6 loopback", "[::1]:8470", "", 299},
		{"exact host and port", "gw.example.com:8443", "https://gw.example.com:8443", 299},
		{"allowed host, other port", "gw.example.com:9999", "", 403},
		{"rebinding host", "evil.example.com", "", 403},
		{"rebinding origin", "localhost:8470", "http://evil.example.com", 403},
		{"null origin", "localhost:8470", "null", 403},
		{"origin with path", "localhost:8470", "http://localhost/x", 403},
		{"empty host", "", "", 403},
		{"trailing dot", "localhost.:8470", "", 299},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/mcp", nil)
			req.Host = tc.host
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d (body %s)", rec.Code, tc.want, rec.Body)
			}
		})
	}
}

func TestHealthAndReadiness(t *testing.T) {
	var readyErr error
	s := New(Options{AllowedHosts: []string{"localhost"}, Ready: func(context.Context) error { return readyErr },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	get := func(path string) int {
		req := httptest.NewRequest("GET", path, nil)
		req.Host = "localhost"
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec.Code
	}
	if c := get("/healthz"); c != 200 {
		t.Errorf("healthz %d", c)
	}
	if c := get("/readyz"); c != 200 {
		t.Errorf("readyz %d", c)
	}
	readyErr = errors.New("database is down")
	if c := get("/readyz"); c != 503 {
		t.Errorf("readyz with the store down: %d, want 503", c)
	}
	if c := get("/healthz"); c != 200 {
		t.Errorf("healthz does not depend on the store: %d", c)
	}
}
