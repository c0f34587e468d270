package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/examples/acme"
)

// An agent limited to one upstream is refused on another, under a policy
// that allows everything: the registry's allowed upstreams do not depend on
// anyone writing a rule. "agents show" says what it may use; set-upstreams
// changes it, and the running gateway follows.
func TestAgentAllowedUpstreams(t *testing.T) {
	srv := acme.NewServer(acme.Options{})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(up.Close)
	dir := t.TempDir()
	addr := freeAddr(t)
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte("version: 1\ndefault: deny\nrules:\n  - id: all\n    when: 'true'\n    effect: allow\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, fmt.Sprintf(`listen: %s
storage: {dsn: interlock.db}
policy: {file: policy.yaml}
upstreams:
  - name: acme
    url: %s
  - name: billing
    url: %s
`, addr, up.URL, up.URL))
	if _, _, err := run(t, "users", "create", "--config", cfg, "--email", "owner@example.com"); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, "agents", "create", "--config", cfg, "--id", "acme-only", "--owner", "owner@example.com", "--upstream", "acme", "--json")
	if err != nil {
		t.Fatalf("agents create: %v", err)
	}
	token := out[strings.Index(out, "ilk_"):]
	token = token[:strings.IndexByte(token, '"')]
	serveInProcess(t, cfg)
	args := map[string]any{"query": "refund"}

	if r := callFull(t, connectHTTP(t, "http://"+addr+"/mcp/acme", token), "search_docs", args); r.isError {
		t.Fatalf("call on its upstream refused: %s", r.text)
	}
	billing := connectHTTP(t, "http://"+addr+"/mcp/billing", token)
	r := callFull(t, billing, "search_docs", args)
	if !r.isError || !strings.Contains(r.text, "upstream-not-allowed") ||
		!strings.Contains(r.text, `may not use upstream "billing"`) || !strings.Contains(r.text, `may use only "acme"`) {
		t.Fatalf("call on another upstream: %+v", r)
	}

	// The token's use is recorded in the background: wait for it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, _, err = run(t, "agents", "show", "acme-only", "--config", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "last used          never") || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{"allowed upstreams  acme\n", "created by         cli", "last used          20"} {
		if !strings.Contains(out, want) {
			t.Errorf("agents show does not say %q:\n%s", want, out)
		}
	}

	// --all lifts the limit; the gateway follows from the next call.
	if _, _, err := run(t, "agents", "set-upstreams", "acme-only", "--config", cfg, "--upstream", "acme", "--all"); err == nil {
		t.Error("set-upstreams with both --upstream and --all succeeded")
	}
	if out, _, err := run(t, "agents", "set-upstreams", "acme-only", "--config", cfg, "--all"); err != nil || !strings.Contains(out, "may call: all") {
		t.Fatalf("set-upstreams --all: %q, %v", out, err)
	}
	// A change made on the store reaches the running gateway within its
	// registry's generation check (100 ms).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		r := callFull(t, billing, "search_docs", args)
		if !r.isError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after set-upstreams --all: %s", r.text)
		}
	}
	out, _, err = run(t, "agents", "show", "acme-only", "--config", cfg)
	if err != nil || !strings.Contains(out, "allowed upstreams  all") || !strings.Contains(out, "agent_upstreams_set") {
		t.Errorf("agents show after --all (%v):\n%s", err, out)
	}
}
