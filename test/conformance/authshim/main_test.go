package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type seen struct {
	host, origin, auth, path, query, body string
	forwarded                             bool
}

func backend(t *testing.T, got chan<- seen) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- seen{
			host: r.Host, origin: r.Header.Get("Origin"), auth: r.Header.Get("Authorization"),
			path: r.URL.Path, query: r.URL.RawQuery, body: string(body),
			forwarded: r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("Forwarded") != "",
		}
		w.Header().Set("Mcp-Session-Id", "abc")
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHeaders(t *testing.T) {
	got := make(chan seen, 1)
	be := backend(t, got)
	for _, tc := range []struct {
		target, reqPath, wantPath string
	}{
		{be.URL + "/mcp/everything", "/mcp", "/mcp/everything"},
		{be.URL + "/mcp/everything", "/anything/else", "/mcp/everything"},
		{be.URL, "/mcp/acme", "/mcp/acme"},
	} {
		target, _ := url.Parse(tc.target)
		shim := httptest.NewServer(newProxy(target, "tok-123", slog.New(slog.DiscardHandler)))
		req, _ := http.NewRequest("POST", shim.URL+tc.reqPath+"?x=1", strings.NewReader(`{"jsonrpc":"2.0"}`))
		req.Host = "evil.example.com"
		req.Header.Set("Origin", "http://evil.example.com")
		req.Header.Set("Authorization", "Bearer from-client") // replaced, never passed on
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		shim.Close()
		s := <-got
		want := seen{host: "evil.example.com", origin: "http://evil.example.com", auth: "Bearer tok-123",
			path: tc.wantPath, query: "x=1", body: `{"jsonrpc":"2.0"}`}
		if s != want {
			t.Errorf("target %s, path %s: upstream saw %+v, want %+v", tc.target, tc.reqPath, s, want)
		}
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Mcp-Session-Id") != "abc" {
			t.Errorf("response %d %v: status and headers must pass back", resp.StatusCode, resp.Header)
		}
	}
}

// An SSE event reaches the client while the upstream still holds the stream.
func TestStreamsWithoutBuffering(t *testing.T) {
	release := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: 1\ndata: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		fmt.Fprint(w, "data: second\n\n")
	}))
	defer be.Close()
	defer close(release)
	target, _ := url.Parse(be.URL)
	shim := httptest.NewServer(newProxy(target, "t", slog.New(slog.DiscardHandler)))
	defer shim.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", shim.URL+"/mcp", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "id: 1\n" {
		t.Fatalf("first line %q, %v: the shim held the event back", line, err)
	}
}

func TestUpstreamDown(t *testing.T) {
	target, _ := url.Parse("http://127.0.0.1:1/mcp")
	shim := httptest.NewServer(newProxy(target, "t", slog.New(slog.DiscardHandler)))
	defer shim.Close()
	resp, err := http.Post(shim.URL, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
}

func TestRun(t *testing.T) {
	got := make(chan seen, 1)
	be := backend(t, got)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok-xyz\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-target", be.URL + "/mcp/x", "-token-file", tokenFile}, &logs, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	resp, err := http.Post("http://"+addr+"/mcp", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s := <-got; s.auth != "Bearer tok-xyz" || s.path != "/mcp/x" || s.host != addr {
		t.Errorf("upstream saw %+v", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run after cancel: %v", err)
	}

	for _, args := range [][]string{
		{"-target", be.URL}, // no token file
		{"-target", "not a url", "-token-file", tokenFile}, // bad target
		{"-target", be.URL, "-token-file", filepath.Join(t.TempDir(), "missing")},
	} {
		if err := run(t.Context(), args, io.Discard, nil); err == nil {
			t.Errorf("run(%v) succeeded", args)
		}
	}
}
