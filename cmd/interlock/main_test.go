package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// run executes the CLI in process and returns stdout, stderr and the error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRoot(&out, &errb)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "interlock.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// agent creates a user and an agent with the CLI and returns the token.
func agent(t *testing.T, cfg, id, owner string) string {
	t.Helper()
	if _, _, err := run(t, "users", "create", "--config", cfg, "--email", owner, "--name", "Owner"); err != nil && !strings.Contains(err.Error(), "exists") {
		t.Fatalf("users create: %v", err)
	}
	out, _, err := run(t, "agents", "create", "--config", cfg, "--id", id, "--owner", owner, "--json")
	if err != nil {
		t.Fatalf("agents create: %v", err)
	}
	var created struct{ ID, Token string }
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID != id || !strings.HasPrefix(created.Token, "ilk_") {
		t.Fatalf("agents create --json printed %q (%v)", out, err)
	}
	return created.Token
}

type bearerRT struct{ token string }

func (b bearerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func connectHTTP(t *testing.T, url, token string) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: bearerRT{token}}}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func callText(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n"), res.IsError
}

// serveInProcess runs "interlock serve" until the test ends.
func serveInProcess(t *testing.T, cfgPath string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		c := &cli{stdout: os.Stdout, stderr: &bytes.Buffer{}, configPath: cfgPath}
		cfg, err := c.loadConfig()
		if err != nil {
			done <- err
			close(ready)
			return
		}
		done <- c.serve(ctx, cfg, func(string) { close(ready) })
	}()
	<-ready
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

// The stdio path with a real, independent MCP server: the npm package
// @modelcontextprotocol/server-filesystem, on Node, driven by the go-sdk
// client through /mcp/fs, through the aggregated /mcp, and through
// "interlock wrap".
func TestFilesystemServerThroughInterlock(t *testing.T) {
	node := testenv.Node(t)
	fsServer := testenv.PeerBin(t, "@modelcontextprotocol/server-filesystem")
	dir := t.TempDir()
	files := t.TempDir()
	if err := os.WriteFile(filepath.Join(files, "notes.txt"), []byte("interlock was here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte("version: 1\ndefault: deny\nrules:\n  - id: files-read\n    when: 'tool.upstream == \"fs\" && tool.name.startsWith(\"read\")'\n    effect: allow\n"), 0o600)
	cfg := writeConfig(t, dir, fmt.Sprintf(`listen: %s
storage: {dsn: interlock.db}
policy: {file: policy.yaml}
upstreams:
  - name: fs
    command: [%q, %q, %q]
`, addr, node, fsServer, files))
	token := agent(t, cfg, "files-bot", "owner@example.com")
	serveInProcess(t, cfg)

	for _, tc := range []struct{ url, prefix string }{
		{"http://" + addr + "/mcp/fs", ""},
		{"http://" + addr + "/mcp", "fs_"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			cs := connectHTTP(t, tc.url, token)
			tools, err := cs.ListTools(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, tl := range tools.Tools {
				found = found || tl.Name == tc.prefix+"read_text_file"
			}
			if !found {
				t.Fatalf("%sread_text_file not listed", tc.prefix)
			}
			text, isErr := callText(t, cs, tc.prefix+"read_text_file", map[string]any{"path": filepath.Join(files, "notes.txt")})
			if isErr || !strings.Contains(text, "interlock was here") {
				t.Fatalf("read_text_file: %q (isError %v)", text, isErr)
			}
			// The server's own access control still applies behind interlock.
			if text, isErr := callText(t, cs, tc.prefix+"read_text_file", map[string]any{"path": "/etc/passwd"}); !isErr {
				t.Fatalf("outside the allowed directory: %q", text)
			}
		})
	}

	t.Run("wrap", func(t *testing.T) {
		bin := testenv.GoBinary(t, "./cmd/interlock")
		cmd := exec.Command(bin, "wrap", "--config", cfg, "--agent", "files-bot", "--", node, fsServer, files)
		cmd.Env = append(os.Environ(), "INTERLOCK_AGENT_TOKEN="+token)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		c := mcp.NewClient(&mcp.Implementation{Name: "desktop", Version: "1"}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
		if err != nil {
			t.Fatalf("connect to wrap: %v\n%s", err, stderr.String())
		}
		text, isErr := callText(t, cs, "read_text_file", map[string]any{"path": filepath.Join(files, "notes.txt")})
		if isErr || !strings.Contains(text, "interlock was here") {
			t.Fatalf("read_text_file through wrap: %q (isError %v)\n%s", text, isErr, stderr.String())
		}
		if err := cs.Close(); err != nil {
			t.Logf("close: %v", err)
		}
		if !strings.Contains(stderr.String(), "wrapping stdio MCP server") {
			t.Errorf("wrap's log should go to stderr; got %q", stderr.String())
		}
	})
}

func TestWrapRefusesWrongAgentAndBadToken(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "storage: {dsn: interlock.db}\n")
	token := agent(t, cfg, "a1", "o@example.com")
	agent(t, cfg, "a2", "o@example.com")
	for _, tc := range []struct {
		name, agentID, token, want string
	}{
		{"token of another agent", "a2", token, "does not belong"},
		{"bad token", "a1", "ilk_nope", "agent token"},
		{"no token", "a1", "", "token is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("INTERLOCK_AGENT_TOKEN", "")
			_, _, err := run(t, "wrap", "--config", cfg, "--agent", tc.agentID, "--token", tc.token, "--", "true")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestUsersAndAgentsCommands(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "storage: {dsn: interlock.db}\n")
	if _, _, err := run(t, "users", "create", "--config", cfg, "--email", "Fin@Example.com", "--name", "Fin", "--role", "finance-manager"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, "users", "create", "--config", cfg, "--email", "fin@example.com"); err == nil {
		t.Fatal("a second user with the same email was accepted")
	}
	out, _, err := run(t, "users", "list", "--config", cfg, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var users []struct {
		Email string
		Roles []string
	}
	if err := json.Unmarshal([]byte(out), &users); err != nil || len(users) != 1 || users[0].Email != "fin@example.com" || users[0].Roles[0] != "finance-manager" {
		t.Fatalf("users list --json: %s (%v)", out, err)
	}
	token := agent(t, cfg, "buyer", "fin@example.com")
	if _, _, err := run(t, "agents", "create", "--config", cfg, "--id", "ghost", "--owner", "nobody@example.com"); err == nil {
		t.Fatal("an agent without an existing owner was created")
	}
	out, _, err = run(t, "agents", "list", "--config", cfg, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var agents []struct{ ID, Owner, State string }
	if err := json.Unmarshal([]byte(out), &agents); err != nil || len(agents) != 1 || agents[0].ID != "buyer" || agents[0].Owner != "fin@example.com" || agents[0].State != "active" {
		t.Fatalf("agents list --json: %s (%v)", out, err)
	}
	if strings.Contains(out, token) {
		t.Fatal("agents list shows the token")
	}
	db, err := os.ReadFile(filepath.Join(dir, "interlock.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(db, []byte(token)) {
		t.Fatal("the agent token is stored in clear in the database")
	}
}

func TestInitWritesAValidConfig(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := run(t, "init", dir); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, "init", dir); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("init over an existing file: %v", err)
	}
	// The starter config works as written: users can be created against it.
	if _, _, err := run(t, "users", "create", "--config", filepath.Join(dir, "interlock.yaml"), "--email", "x@example.com"); err != nil {
		t.Fatalf("using the starter config: %v", err)
	}
}

func TestConfigErrorsAreReported(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "listen: 127.0.0.1:1\nupstream:\n  - name: x\nstorage: {driver: nosuch}\n")
	_, _, err := run(t, "serve", "--config", cfg)
	if err == nil {
		t.Fatal("serve accepted a broken config")
	}
	for _, want := range []string{":2:", `"upstream"`, ":4:", "nosuch"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestDemo(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	c := &cli{stdout: &out, stderr: &bytes.Buffer{}}
	type up struct{ addr, token string }
	ready := make(chan up, 1)
	done := make(chan error, 1)
	dataDir := t.TempDir()
	go func() {
		done <- c.demo(ctx, dataDir, "127.0.0.1:0", func(addr, token string) { ready <- up{addr, token} })
	}()
	var u up
	select {
	case u = <-ready:
	case err := <-done:
		t.Fatalf("demo ended: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("demo did not start")
	}
	public := "http://localhost:" + u.addr[strings.LastIndexByte(u.addr, ':')+1:]
	if !strings.Contains(out.String(), u.token) || !strings.Contains(out.String(), "call --url "+public+"/mcp/acme") {
		t.Fatalf("demo output lacks the token or the sample call:\n%s", out.String())
	}
	if n := strings.Count(out.String(), public+"/console/enroll/"); n != 2 {
		t.Errorf("demo output has %d enrolment links, want 2 (owner and finance manager)", n)
	}
	cs := connectHTTP(t, "http://"+u.addr+"/mcp/acme", u.token)
	if text, isErr := callText(t, cs, "search_docs", map[string]any{"query": "refund"}); isErr || !strings.Contains(strings.ToLower(text), "refund") {
		t.Fatalf("sample call: %q %v", text, isErr)
	}
	// The printed sample command works as printed (but for the binary).
	var callOut bytes.Buffer
	root := newRoot(&callOut, &bytes.Buffer{})
	root.SetArgs([]string{"call", "--url", "http://" + u.addr + "/mcp", "--token", u.token, "acme_echo", `{"text":"from the cli"}`})
	if err := root.ExecuteContext(context.Background()); err != nil || !strings.Contains(callOut.String(), "from the cli") {
		t.Fatalf("interlock call: %v %q", err, callOut.String())
	}
	cs.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop on cancel")
	}
}

// Tokens: several per agent, each revocable; a revoked token is refused by a
// running gateway (another process) within the registry's cache window.
func TestTokensRevokeStopsARunningGateway(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, fmt.Sprintf("listen: %s\nstorage: {dsn: interlock.db}\nupstreams:\n  - name: x\n    url: http://127.0.0.1:1/mcp\n", addr))
	agent(t, cfg, "bot", "o@example.com")
	out, _, err := run(t, "agents", "tokens", "create", "bot", "--config", cfg, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ ID, Token string }
	if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.Token == "" {
		t.Fatalf("tokens create: %q %v", out, err)
	}
	out, _, err = run(t, "agents", "tokens", "list", "bot", "--config", cfg, "--json")
	if err != nil || strings.Count(out, `"id"`) != 2 || strings.Contains(out, tok.Token) {
		t.Fatalf("tokens list: %q %v", out, err)
	}
	serveInProcess(t, cfg)
	status := func() int {
		req, _ := http.NewRequest("POST", "http://"+addr+"/mcp/x", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := status(); s == http.StatusUnauthorized {
		t.Fatal("a fresh token was refused")
	}
	if _, _, err := run(t, "agents", "tokens", "revoke", tok.ID, "--config", cfg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for status() != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("the revoked token is still accepted by the running gateway")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
