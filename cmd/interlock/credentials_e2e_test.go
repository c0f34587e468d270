package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/internal/testenv"
	"github.com/interlock-dev/interlock/verify"
)

// headerLog records the Interlock-Credential header of every tools/call
// that reaches the upstream.
type headerLog struct {
	mu   sync.Mutex
	seen []string
}

func (h *headerLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if bytes.Contains(body, []byte(`"tools/call"`)) {
				h.mu.Lock()
				h.seen = append(h.seen, r.Header.Get("Interlock-Credential"))
				h.mu.Unlock()
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (h *headerLog) last() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.seen) == 0 {
		return ""
	}
	return h.seen[len(h.seen)-1]
}

// credentialEnv is a gateway in front of acme with credential verification
// on: acme refuses any call without a valid credential for exactly it.
type credentialEnv struct {
	cfg, token, addr string
	issuer           string // public_url
	headers          *headerLog
}

func newCredentialEnv(t *testing.T) *credentialEnv { return newCredentialEnvWith(t, "") }

// newCredentialEnvWith adds extra (YAML) to the gateway's configuration.
func newCredentialEnvWith(t *testing.T, extra string) *credentialEnv {
	t.Helper()
	addr := freeAddr(t)
	// The default public_url of a loopback listener names localhost.
	issuer := "http://localhost:" + addr[strings.LastIndexByte(addr, ':')+1:]
	v, err := verify.New(verify.Options{Issuer: issuer})
	if err != nil {
		t.Fatal(err)
	}
	srv := acme.NewServer(acme.Options{Verifier: v})
	hl := &headerLog{}
	up := httptest.NewServer(hl.wrap(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)))
	t.Cleanup(up.Close)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), acme.DemoPolicy, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, fmt.Sprintf(`listen: %s
storage: {dsn: interlock.db}
policy: {file: policy.yaml}
upstreams:
  - name: acme
    url: %s
%s`, addr, up.URL, extra))
	token := agent(t, cfg, "procurement-bot", "owner@example.com")
	serveInProcess(t, cfg)
	return &credentialEnv{cfg: cfg, token: token, addr: addr, issuer: issuer, headers: hl}
}

// receipt returns the credential and the decision of a result's _meta.
func receipt(t *testing.T, meta map[string]any) (token string, decision map[string]any) {
	t.Helper()
	token, _ = meta["io.interlock/credential"].(string)
	decision, _ = meta["io.interlock/decision"].(map[string]any)
	if token == "" || decision == nil {
		t.Fatalf("result _meta without a receipt: %v", meta)
	}
	return token, decision
}

func callWithMeta(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any, meta mcp.Meta) callResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args, Meta: meta})
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return callResult{text: strings.Join(parts, "\n"), isError: res.IsError, meta: res.Meta}
}

// joseVerify has the npm peers (jose, and
// @digitalbazaar/vc-bitstring-status-list) verify token through the
// gateway's published JWKS and read its status bit.
func joseVerify(t *testing.T, issuer, token string, args map[string]any) (ok, revoked bool, digest string, payload map[string]any) {
	t.Helper()
	node := testenv.Node(t)
	root := testenv.RepoRoot(t)
	modules := filepath.Join(root, "test", "peers", "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "jose", "package.json")); err != nil {
		testenv.Skip(t, "npm peer jose is not installed: run `npm ci --prefix test/peers`")
	}
	argsJSON, _ := json.Marshal(args)
	cmd := exec.Command(node, filepath.Join(root, "verify", "testdata", "jose_verify.mjs"), issuer,
		strconv.FormatInt(time.Now().Unix(), 10), string(argsJSON))
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	cmd.Stdin = strings.NewReader(token)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("jose_verify.mjs: %v\n%s", err, stderr.String())
	}
	var got struct {
		OK      bool           `json:"ok"`
		Error   string         `json:"error"`
		Revoked bool           `json:"revoked"`
		Digest  string         `json:"digest"`
		Payload map[string]any `json:"payload"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("jose_verify.mjs printed %s: %v", out, err)
	}
	if !got.OK {
		t.Fatalf("jose refused interlock's credential: %s", got.Error)
	}
	return got.OK, got.Revoked, got.Digest, got.Payload
}

// End to end with a real MCP client: every forwarded call carries its
// credential to the upstream (header and _meta; acme verifies it with the
// verify package), the agent gets it back as its receipt, jose verifies it
// through the published JWKS, a replay is refused, and after
// "credentials revoke" it verifies as revoked (interlock's CLI, and the
// status list as the npm peer reads it).
func TestCredentialsEndToEnd(t *testing.T) {
	e := newCredentialEnv(t)
	args := map[string]any{"item": "USB-C cables", "quantity": 10, "unit_price_usd": 12.5}

	for _, tc := range []struct{ endpoint, tool string }{
		{"/mcp/acme", "place_order"}, // pass-through
		{"/mcp", "acme_place_order"}, // aggregated: message-level sessions
	} {
		t.Run(strings.TrimPrefix(tc.endpoint, "/"), func(t *testing.T) {
			cs := connectHTTP(t, "http://"+e.addr+tc.endpoint, e.token)
			r := callFull(t, cs, tc.tool, args)
			if r.isError {
				t.Fatalf("allowed call failed: %s", r.text)
			}
			token, decision := receipt(t, r.meta)
			if decision["effect"] != "allow" || decision["rule"] != "small-orders" {
				t.Errorf("decision in the receipt = %v", decision)
			}
			id, _ := decision["credential_id"].(string)
			if !strings.HasPrefix(id, "urn:uuid:") {
				t.Fatalf("credential_id = %q", id)
			}
			// acme checked exactly this credential (the verify package) ...
			if got := r.meta[acme.MetaVerifiedCredential]; got != id {
				t.Errorf("acme verified credential %v, want %s", got, id)
			}
			// ... and it also came in the header.
			if got := e.headers.last(); got != token {
				t.Errorf("Interlock-Credential header = %.20q..., want the receipt's credential", got)
			}
			// jose verifies it through the JWKS interlock publishes.
			t.Run("jose", func(t *testing.T) {
				_, revoked, digest, payload := joseVerify(t, e.issuer, token, args)
				subj, _ := payload["credentialSubject"].(map[string]any)
				action, _ := subj["action"].(map[string]any)
				if revoked || payload["jti"] != id || action["tool"] != "place_order" || action["upstream"] != "acme" || action["arguments_digest"] != digest {
					t.Errorf("jose read revoked=%v payload=%v (digest %s)", revoked, payload, digest)
				}
			})
		})
	}

	cs := connectHTTP(t, "http://"+e.addr+"/mcp/acme", e.token)
	first := callFull(t, cs, "place_order", args)
	token, decision := receipt(t, first.meta)
	id := decision["credential_id"].(string)

	// A replayed credential is refused by interlock (consumed), and acme
	// never sees the call.
	before := len(e.headers.seen)
	r := callWithMeta(t, cs, "place_order", args, mcp.Meta{"io.interlock/credential": token})
	if !r.isError || !strings.Contains(r.text, "no use left") {
		t.Fatalf("replay: %+v", r)
	}
	if len(e.headers.seen) != before {
		t.Error("a replayed call reached the upstream")
	}
	// A credential presented for other arguments is refused too.
	other := map[string]any{"item": "USB-C cables", "quantity": 11, "unit_price_usd": 12.5}
	if r := callWithMeta(t, cs, "place_order", other, mcp.Meta{"io.interlock/credential": token}); !r.isError || !strings.Contains(r.text, "other arguments") {
		t.Fatalf("credential for other arguments: %+v", r)
	}

	tokenFile := filepath.Join(t.TempDir(), "receipt.jwt")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	callJSON, _ := json.Marshal(map[string]any{"upstream": "acme", "tool": "place_order", "arguments": args})
	out, _, err := run(t, "credentials", "verify", "--config", e.cfg, "--file", tokenFile, "--call", string(callJSON))
	if err != nil || !strings.Contains(out, "VALID credential "+id) || !strings.Contains(out, "matches the call") {
		t.Fatalf("credentials verify: %v\n%s", err, out)
	}
	wrongCall, _ := json.Marshal(map[string]any{"upstream": "acme", "tool": "place_order", "arguments": other})
	if _, _, err := run(t, "credentials", "verify", "--config", e.cfg, "--file", tokenFile, "--call", string(wrongCall)); err == nil || !strings.Contains(err.Error(), "other arguments") {
		t.Errorf("credentials verify for another call: %v", err)
	}

	if _, _, err := run(t, "credentials", "revoke", "--config", e.cfg, id); err == nil {
		t.Error("revoke without --reason was accepted")
	}
	out, _, err = run(t, "credentials", "revoke", "--config", e.cfg, id, "--reason", "e2e test")
	if err != nil || !strings.Contains(out, "revoked credential "+id) {
		t.Fatalf("credentials revoke: %v\n%s", err, out)
	}
	if _, _, err := run(t, "credentials", "verify", "--config", e.cfg, "--file", tokenFile); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("credentials verify after revoke: %v", err)
	}
	t.Run("status list peer", func(t *testing.T) {
		if _, revoked, _, _ := joseVerify(t, e.issuer, token, args); !revoked {
			t.Error("the status list the gateway publishes does not show the revocation")
		}
	})
	// The revocation is in the audit log, and the chain still verifies.
	out, _, err = run(t, "audit", "export", "--config", e.cfg)
	if err != nil || !strings.Contains(out, `"credential_revoked"`) || !strings.Contains(out, id) {
		t.Errorf("audit export has no credential_revoked event for %s: %v", id, err)
	}
	if _, _, err := run(t, "audit", "verify", "--config", e.cfg); err != nil {
		t.Errorf("audit verify: %v", err)
	}

	// Published documents carry cache headers.
	for path, ct := range map[string]string{
		"/.well-known/jwks.json": "application/jwk-set+json",
		"/.well-known/did.json":  "application/did+json",
		"/status/1":              "application/vc+jwt",
		"/ns/credentials/v1":     "application/ld+json",
	} {
		resp, err := http.Get("http://" + e.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ct || !strings.HasPrefix(resp.Header.Get("Cache-Control"), "public, max-age=") {
			t.Errorf("GET %s: %d, %q, %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"))
		}
	}
	if resp, err := http.Get("http://" + e.addr + "/status/0x"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /status/0x: %v %v", resp.StatusCode, err)
	}
}

// A call that reaches acme without going through interlock is refused by
// acme itself: defence in depth.
func TestAcmeRefusesCallsWithoutCredential(t *testing.T) {
	v, err := verify.New(verify.Options{Issuer: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := acme.NewServer(acme.Options{Verifier: v})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(up.Close)
	cs := connectHTTP(t, up.URL, "")
	r := callFull(t, cs, "place_order", map[string]any{"item": "x", "quantity": 1, "unit_price_usd": 1})
	if !r.isError || !strings.Contains(r.text, "no interlock credential") {
		t.Fatalf("direct call: %+v", r)
	}
}

// Over stdio too, the credential travels in params._meta: to a stdio
// upstream behind the gateway (message-level session), and through
// "interlock wrap". acme, started with -verify-issuer, checks it against
// the keys the gateway publishes (wrap shares the gateway's store).
func TestCredentialsOverStdio(t *testing.T) {
	acmeBin := testenv.GoBinary(t, "./examples/acme/cmd/acme")
	dir := t.TempDir()
	addr := freeAddr(t)
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte("version: 1\ndefault: deny\nrules:\n  - id: all\n    when: 'true'\n    effect: allow\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	acmeCmd := []string{acmeBin, "-verify-issuer", "http://localhost:" + addr[strings.LastIndexByte(addr, ':')+1:], "-upstream-name", "acmes", "-log-level", "warn"}
	cfg := writeConfig(t, dir, fmt.Sprintf(`listen: %s
storage: {dsn: interlock.db}
policy: {file: policy.yaml}
upstreams:
  - name: acmes
    command: [%q, %q, %q, %q, %q, %q, %q]
`, addr, acmeCmd[0], acmeCmd[1], acmeCmd[2], acmeCmd[3], acmeCmd[4], acmeCmd[5], acmeCmd[6]))
	token := agent(t, cfg, "stdio-bot", "owner@example.com")
	serveInProcess(t, cfg)
	args := map[string]any{"query": "refund"}

	check := func(t *testing.T, r callResult) {
		t.Helper()
		if r.isError {
			t.Fatalf("call refused: %s", r.text)
		}
		_, decision := receipt(t, r.meta)
		if id := decision["credential_id"]; id == nil || r.meta[acme.MetaVerifiedCredential] != id {
			t.Errorf("acme verified %v, the receipt names %v", r.meta[acme.MetaVerifiedCredential], id)
		}
	}
	t.Run("gateway", func(t *testing.T) {
		cs := connectHTTP(t, "http://"+addr+"/mcp/acmes", token)
		check(t, callFull(t, cs, "search_docs", args))
	})
	t.Run("wrap", func(t *testing.T) {
		bin := testenv.GoBinary(t, "./cmd/interlock")
		cmd := exec.Command(bin, append([]string{"wrap", "--config", cfg, "--agent", "stdio-bot", "--name", "acmes", "--"}, acmeCmd...)...)
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
		defer cs.Close()
		check(t, callFull(t, cs, "search_docs", args))
	})
}
