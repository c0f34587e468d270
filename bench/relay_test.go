// Package bench holds interlock's benchmarks. relay_test.go measures the
// relay in process (CPU and allocations per relayed call, for profiling);
// relaybench/ is the side-by-side load generator with separate processes,
// whose numbers docs/performance.md records.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/registry"
)

type benchTarget struct {
	url, token string
	client     *http.Client
	sid, ver   string
	id         int
}

func (t *benchTarget) post(body string) (*http.Response, error) {
	req, _ := http.NewRequest("POST", t.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if t.token != "" {
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	if t.sid != "" {
		req.Header.Set("Mcp-Session-Id", t.sid)
		req.Header.Set("Mcp-Protocol-Version", t.ver)
	}
	return t.client.Do(req)
}

func answer(resp *http.Response) []byte {
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	sc := bufio.NewScanner(resp.Body)
	var out []byte
	for sc.Scan() {
		if d, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: ")); ok && out == nil && bytes.Contains(d, []byte(`"id"`)) {
			out = append([]byte(nil), d...)
		}
	}
	return out
}

func (t *benchTarget) init(tb testing.TB) {
	resp, err := t.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"b","version":"1"}}}`)
	if err != nil {
		tb.Fatal(err)
	}
	t.sid = resp.Header.Get("Mcp-Session-Id")
	var r struct {
		Result struct{ ProtocolVersion string } `json:"result"`
	}
	json.Unmarshal(answer(resp), &r)
	t.ver = r.Result.ProtocolVersion
	resp, err = t.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	if err != nil {
		tb.Fatal(err)
	}
	answer(resp)
}

func (t *benchTarget) echo(tb testing.TB) {
	t.id++
	resp, err := t.post(`{"jsonrpc":"2.0","id":` + strconv.Itoa(t.id) + `,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ping"}}}`)
	if err != nil {
		tb.Fatal(err)
	}
	if a := answer(resp); !bytes.Contains(a, []byte(`"ping"`)) {
		tb.Fatalf("unexpected answer %s", a)
	}
}

// BenchmarkEcho calls acme's echo tool directly and through interlock, all in
// one process. Compare ns/op and B/op of the two sub-benchmarks: the
// difference is the relay's cost.
func BenchmarkEcho(b *testing.B) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := acme.NewServer(acme.Options{})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	defer up.Close()
	dir := b.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, []byte("version: 1\ndefault: deny\nrules:\n  - id: echo\n    when: 'tool.name == \"echo\"'\n    effect: allow\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Parse([]byte(fmt.Sprintf("storage: {dsn: %s}\npolicy: {file: %s}\nupstreams:\n  - name: acme\n    url: %s\n",
		filepath.Join(dir, "i.db"), pol, up.URL)), filepath.Join(dir, "interlock.yaml"), config.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	a, err := app.New(ctx, cfg, app.Options{Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	a.Registry.CreateUser(ctx, registry.UserSpec{Email: "b@example.com"})
	_, token, err := a.Registry.CreateAgent(ctx, registry.AgentSpec{ID: "bench", OwnerEmail: "b@example.com"})
	if err != nil {
		b.Fatal(err)
	}
	gw := httptest.NewServer(a.Handler)
	defer gw.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for _, tc := range []struct {
		name string
		t    *benchTarget
	}{
		{"direct", &benchTarget{url: up.URL, client: client}},
		{"interlock", &benchTarget{url: gw.URL + "/mcp/acme", token: token, client: client}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tc.t.init(b)
			b.ReportAllocs()
			for b.Loop() {
				tc.t.echo(b)
			}
		})
		// 32 clients at once, each with its own session: throughput under
		// load, where group commit shares transactions between calls.
		b.Run(tc.name+"/32clients", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(16) // 16 × GOMAXPROCS(2) = 32 clients
			b.RunParallel(func(pb *testing.PB) {
				t := &benchTarget{url: tc.t.url, token: tc.t.token, client: client}
				t.init(b)
				for pb.Next() {
					t.echo(b)
				}
			})
		})
	}
}
