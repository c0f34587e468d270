package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/ciba"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
	"github.com/interlock-dev/interlock/verify"
)

// keygen runs "interlock agents keygen" and returns the private JWK it
// wrote and the public JWK Set it printed.
func keygen(t *testing.T, dir, agentID, alg, jwksOut string) (private map[string]any, publicSet string) {
	t.Helper()
	out := filepath.Join(dir, agentID+"-"+alg+".private.jwk.json")
	args := []string{"agents", "keygen", "--agent", agentID, "--alg", alg, "--out", out}
	if jwksOut != "" {
		args = append(args, "--jwks-out", jwksOut)
	}
	stdout, _, err := run(t, args...)
	if err != nil {
		t.Fatalf("agents keygen: %v", err)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key file %v (%v), want mode 0600", fi, err)
	}
	b, _ := os.ReadFile(out)
	if err := json.Unmarshal(b, &private); err != nil || private["d"] == nil || private["alg"] != alg || private["kid"] == nil {
		t.Fatalf("private JWK %s (%v)", b, err)
	}
	m := regexp.MustCompile(`(?m)^(\{"keys":.*\})$`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("no JWK Set printed:\n%s", stdout)
	}
	if strings.Contains(m[1], `"d"`) {
		t.Fatalf("the printed set has a private key: %s", m[1])
	}
	if err := app.CheckCIBAClientJWKS([]byte(m[1])); err != nil {
		t.Fatalf("the printed set is refused: %v", err)
	}
	// The lines it prints to paste are a valid configuration naming the
	// agent and the key file.
	_, paste, ok := strings.Cut(stdout, "# Paste into interlock.yaml")
	_, paste, _ = strings.Cut(paste, "\n")
	cfg, err := config.Parse([]byte(paste), filepath.Join(dir, "interlock.yaml"), config.LoadOptions{Getenv: func(string) (string, bool) { return "", false }})
	if !ok || err != nil || len(cfg.CIBA.Clients) != 1 || cfg.CIBA.Clients[0].Agent != agentID || cfg.CIBA.Clients[0].JWKSFile == "" {
		t.Fatalf("the printed configuration (%v):\n%s", err, paste)
	}
	return private, m[1]
}

// The CIBA clients registered in the configuration (ciba.clients),
// against openid-client: private_key_jwt with a key pair made by
// "interlock agents keygen" (ES256 with its public set in a jwks_file,
// EdDSA inline) through a full poll flow whose token verifies with jose
// and works once; a key not registered for the agent (a fresh one, or
// another agent's) is invalid_client; and a ping client registered in the
// configuration is pinged. A jwks_file with a private key stops the
// gateway at start-up.
func TestCIBAClientsFromConfigWithOpenIDClient(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	keyBotPriv, _ := keygen(t, dir, "key-bot", "ES256", filepath.Join(dir, "keys", "key-bot.jwks.json"))
	pingBotPriv, pingBotSet := keygen(t, dir, "cfg-ping-bot", "EdDSA", "")
	strangerPriv, _ := keygen(t, dir, "key-bot", "EdDSA", "")

	e := newConfiguredCIBAEnv(t, dir, fmt.Sprintf(`ciba:
  clients:
    - agent: key-bot
      jwks_file: keys/key-bot.jwks.json
    - agent: cfg-ping-bot
      delivery: ping
      notification_endpoint: http://127.0.0.1:{{PING_PORT}}/cb
      jwks: '%s'
`, pingBotSet))
	pkjwt := func(id string, jwk map[string]any, extra map[string]any) map[string]any {
		o := map[string]any{"client_id": id, "auth": "private_key_jwt", "private_jwk": jwk}
		for k, v := range extra {
			o[k] = v
		}
		return o
	}

	t.Run("private_key_jwt ES256 from jwks_file: approved", func(t *testing.T) {
		args, det := orderDetails("keyed batteries", 10, 120)
		ch := e.openidClient(t, pkjwt("key-bot", keyBotPriv, map[string]any{"details": det, "login_hint": "owner@example.com"}))
		ap := e.pendingItem(t, "keyed batteries")
		if ap.AgentID != "key-bot" {
			t.Errorf("approval of %q", ap.AgentID)
		}
		e.side.vote(t, ap.ID, "owner@example.com", true, "")
		r := wait(t, ch)
		// key-bot also has a ping registration in the store: the
		// configuration (poll) wins, so openid-client got the token by
		// polling.
		if !r.OK || r.AccessToken == "" || len(r.Polls) == 0 || r.Polls[len(r.Polls)-1].Error != "ok" {
			t.Fatalf("openid-client: %+v", r)
		}
		_, revoked, digest, pl := joseVerify(t, e.issuer, r.AccessToken, args)
		subj, _ := pl["credentialSubject"].(map[string]any)
		action, _ := subj["action"].(map[string]any)
		auth, _ := subj["authorization"].([]any)
		if revoked || action["arguments_digest"] != digest || len(auth) != 1 || auth[0].(map[string]any)["approver"] != "owner@example.com" {
			t.Errorf("jose read revoked=%v subject=%v", revoked, subj)
		}
		presentOnce(t, e, "key-bot", r.AccessToken, args)
	})

	t.Run("private_key_jwt: allowed by the policy", func(t *testing.T) {
		args, det := orderDetails("keyed cables", 2, 10)
		r := wait(t, e.openidClient(t, pkjwt("key-bot", keyBotPriv, map[string]any{"details": det})))
		if !r.OK || len(r.Polls) != 1 {
			t.Fatalf("openid-client: %+v", r)
		}
		joseVerify(t, e.issuer, r.AccessToken, args)
		presentOnce(t, e, "key-bot", r.AccessToken, args)
	})

	t.Run("private_key_jwt: a key not registered is refused", func(t *testing.T) {
		_, det := orderDetails("unkeyed", 1, 1)
		for name, jwk := range map[string]map[string]any{"a fresh key": strangerPriv, "another agent's key": pingBotPriv} {
			r := wait(t, e.openidClient(t, pkjwt("key-bot", jwk, map[string]any{"details": det})))
			if r.OK || r.Error != "invalid_client" || r.Status != 401 {
				t.Errorf("%s: %+v", name, r)
			}
		}
		// An agent without keys in the configuration cannot use
		// private_key_jwt at all, even with a well-formed assertion.
		r := wait(t, e.openidClient(t, pkjwt("plain-bot", keyBotPriv, map[string]any{"details": det})))
		if r.OK || r.Error != "invalid_client" || r.Status != 401 {
			t.Errorf("agent without keys: %+v", r)
		}
	})

	t.Run("ping from the configuration, private_key_jwt EdDSA inline: approved", func(t *testing.T) {
		args, det := orderDetails("configured pings", 10, 105)
		ch := e.openidClient(t, pkjwt("cfg-ping-bot", pingBotPriv, map[string]any{"details": det,
			"ping_port": e.pingPort, "notification_token": "cnt-" + strings.Repeat("c", 40)}))
		ap := e.pendingItem(t, "configured pings")
		e.side.vote(t, ap.ID, "owner@example.com", true, "")
		r := wait(t, ch)
		if !r.OK || r.Ping == nil || len(r.Polls) != 1 {
			t.Fatalf("openid-client: %+v", r)
		}
		if body, _ := r.Ping["body"].(map[string]any); body["auth_req_id"] != r.Ack["auth_req_id"] {
			t.Errorf("ping %v, ack %v", r.Ping, r.Ack)
		}
		joseVerify(t, e.issuer, r.AccessToken, args)
		presentOnce(t, e, "cfg-ping-bot", r.AccessToken, args)
	})

	t.Run("ping from the configuration, client_secret_post: allowed", func(t *testing.T) {
		args, det := orderDetails("configured secret pings", 1, 10)
		r := wait(t, e.openidClient(t, map[string]any{"client_id": "cfg-ping-bot", "details": det,
			"ping_port": e.pingPort, "notification_token": "cnt-" + strings.Repeat("s", 40)}))
		if !r.OK || r.Ping == nil {
			t.Fatalf("openid-client: %+v", r)
		}
		joseVerify(t, e.issuer, r.AccessToken, args)
	})

	if _, _, err := run(t, "audit", "verify", "--config", e.cfg); err != nil {
		t.Errorf("audit verify: %v", err)
	}

	t.Run("a private key in jwks_file stops the start", func(t *testing.T) {
		b, _ := json.Marshal(map[string]any{"keys": []any{keyBotPriv}})
		bad := filepath.Join(dir, "keys", "private.jwks.json")
		if err := os.WriteFile(bad, b, 0o600); err != nil {
			t.Fatal(err)
		}
		d2 := t.TempDir()
		cfg := writeConfig(t, d2, fmt.Sprintf("listen: 127.0.0.1:0\nstorage: {dsn: interlock.db}\nciba:\n  clients:\n    - {agent: key-bot, jwks_file: %s}\n", bad))
		c := &cli{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, configPath: cfg}
		loaded, err := c.loadConfig()
		if err != nil {
			t.Fatal(err) // the file is not read by the config package
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = c.serve(ctx, loaded, func(string) { t.Error("the gateway started") })
		if err == nil || !strings.Contains(err.Error(), "ciba.clients[0] (agent key-bot): jwks_file "+bad) || !strings.Contains(err.Error(), `private key (it has "d")`) {
			t.Errorf("serve: %v", err)
		}
	})
}

// newConfiguredCIBAEnv is newCIBAEnv's gateway (acme verifying every
// credential, the CIBA policy) with the ciba section given ({{PING_PORT}}
// is replaced by a free port) and agents key-bot, cfg-ping-bot and
// plain-bot. key-bot also gets a ping registration in the store, which
// its configuration entry overrides.
func newConfiguredCIBAEnv(t *testing.T, dir, cibaSection string) *cibaEnv {
	t.Helper()
	addr := freeAddr(t)
	v, err := verify.New(verify.Options{Issuer: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	srv := acme.NewServer(acme.Options{Verifier: v})
	upstream := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(upstream.Close)
	up := upstream.URL
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(cibaPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &cibaEnv{addr: addr, issuer: "http://" + addr, tokens: map[string]string{}}
	pingAddr := freeAddr(t)
	fmt.Sscanf(pingAddr[strings.LastIndexByte(pingAddr, ':')+1:], "%d", &e.pingPort)
	e.cfg = writeConfig(t, dir, fmt.Sprintf(`listen: %s
public_url: http://%[1]s
storage: {dsn: interlock.db}
policy: {file: policy.yaml}
upstreams:
  - name: acme
    url: %s
`, addr, up)+strings.ReplaceAll(cibaSection, "{{PING_PORT}}", fmt.Sprint(e.pingPort)))
	for _, id := range []string{"key-bot", "cfg-ping-bot", "plain-bot"} {
		e.tokens[id] = agent(t, e.cfg, id, "owner@example.com")
	}
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(dir, "interlock.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	reg, _ := json.Marshal(ciba.Metadata{DeliveryMode: ciba.ModePing, NotificationEndpoint: "http://127.0.0.1:9/nobody-listens"})
	if _, err := st.PutMetaIfAbsent(context.Background(), app.CIBAClientKey+"key-bot", reg); err != nil {
		t.Fatal(err)
	}
	st.Close()
	serveInProcess(t, e.cfg)
	e.side = newApproverSide(t, e.cfg)
	return e
}

// presentOnce presents agent id's action credential with the MCP call it
// authorises: it goes through once (acme verifies it too), and a second
// presentation is refused.
func presentOnce(t *testing.T, e *cibaEnv, id, token string, args map[string]any) {
	t.Helper()
	cs := connectHTTP(t, "http://"+e.addr+"/mcp/acme", e.tokens[id])
	r := callWithMeta(t, cs, "place_order", args, mcp.Meta{"io.interlock/credential": token})
	if r.isError {
		t.Fatalf("call with the CIBA credential refused: %s", r.text)
	}
	if r.meta[acme.MetaVerifiedCredential] != payload(t, token)["jti"] {
		t.Errorf("acme verified %v", r.meta[acme.MetaVerifiedCredential])
	}
	if r := callWithMeta(t, cs, "place_order", args, mcp.Meta{"io.interlock/credential": token}); !r.isError || !strings.Contains(r.text, "no use left") {
		t.Fatalf("second presentation: %+v", r)
	}
}
