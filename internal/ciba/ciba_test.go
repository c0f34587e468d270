package ciba_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/internal/app"
	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/ciba"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
)

const testPolicy = `version: 1
default: deny
rules:
  - id: echo-allowed
    when: 'tool.name == "echo"'
    effect: allow
    reason: "echo reads nothing"
  - id: orders-need-owner
    when: 'tool.name == "place_order"'
    effect: approve
    approvers: [owner, "role:buyer"]
    reason: "orders need the owner's approval"
  - id: no-servers
    when: 'tool.name == "provision_servers"'
    effect: deny
    reason: "no servers today"
`

// rig is a real gateway (sqlite store, registry, gate, approvals,
// credential issuer) in front of acme, with a CIBA provider over it.
type rig struct {
	t       *testing.T
	a       *app.App
	p       *ciba.Provider
	srv     *httptest.Server // the provider (issuer = srv.URL)
	gw      *httptest.Server // the whole gateway (app.Handler)
	keys    *keyStore
	tokens  map[string]string // agent id -> token
	issuer  string
	baseURL string
}

type keyStore struct {
	mu   sync.Mutex
	sets map[string][]byte
}

func (k *keyStore) ClientKeys(_ context.Context, id string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sets[id], nil
}

func newRig(t *testing.T) *rig {
	t.Helper()
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return acme.NewServer(acme.Options{}) }, nil))
	t.Cleanup(up.Close)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	// The issuer must be known before the provider exists: reserve the
	// test server first.
	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`storage: {dsn: %s}
policy: {file: %s}
public_url: %s
credentials: {kek_file: %s}
upstreams:
  - name: acme
    url: %s
`, filepath.Join(dir, "i.db"), filepath.Join(dir, "policy.yaml"), issuer, filepath.Join(dir, "kek"), up.URL)), filepath.Join(dir, "interlock.yaml"), config.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx := context.Background()
	a, err := app.New(ctx, cfg, app.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	r := &rig{t: t, a: a, keys: &keyStore{sets: map[string][]byte{}}, tokens: map[string]string{}, issuer: issuer}
	for _, u := range []registry.UserSpec{{Email: "owner@example.com"}, {Email: "buyer@example.com", Roles: []string{"buyer"}}, {Email: "other@example.com"}} {
		if _, err := a.Registry.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"bot", "other-bot", "ping-bot", "key-bot"} {
		_, tok, err := a.Registry.CreateAgent(ctx, registry.AgentSpec{ID: id, OwnerEmail: "owner@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		r.tokens[id] = tok
	}
	r.p, err = ciba.New(ciba.Options{
		Issuer: issuer, Gate: a.Gate, Approvals: a.Approvals, Auth: a.Registry, Meta: a.Store,
		Principal: func(ctx context.Context, id string) (store.Principal, error) {
			ag, err := a.Store.GetAgent(ctx, id)
			if err != nil {
				return store.Principal{}, err
			}
			o, err := a.Store.GetUser(ctx, ag.OwnerID)
			return store.Principal{Agent: ag, Owner: o}, err
		},
		ClientKeys: r.keys,
		ClientMetadata: func(ctx context.Context, id string) (ciba.Metadata, error) {
			return app.CIBAClientMetadata(ctx, a.Store, id)
		},
		KnownUpstream: func(n string) bool { return n == "acme" },
		Interval:      time.Second,
		WatchInterval: 100 * time.Millisecond,
		Logger:        log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.p.Close)
	srv.Config = &http.Server{Handler: r.p}
	srv.Start()
	t.Cleanup(srv.Close)
	r.srv = srv
	r.gw = httptest.NewServer(a.Handler)
	t.Cleanup(r.gw.Close)
	return r
}

type resp struct {
	status int
	header http.Header
	body   map[string]any
}

func (r resp) code() string { s, _ := r.body["error"].(string); return s }

func (r resp) str(k string) string { s, _ := r.body[k].(string); return s }

func do(t *testing.T, req *http.Request) resp {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: %d %q is not JSON", req.Method, req.URL.Path, res.StatusCode, b)
	}
	if cc := res.Header.Get("Cache-Control"); req.Method == http.MethodPost && cc != "no-store" {
		t.Errorf("%s: Cache-Control %q", req.URL.Path, cc)
	}
	return resp{status: res.StatusCode, header: res.Header, body: m}
}

// post sends form to path with client_secret_post as agent id (when id is
// not "").
func (r *rig) post(path, id string, form url.Values) resp {
	r.t.Helper()
	if id != "" {
		form.Set("client_id", id)
		form.Set("client_secret", r.tokens[id])
	}
	req, _ := http.NewRequest(http.MethodPost, r.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(r.t, req)
}

func details(upstream, tool string, args any) string {
	b, _ := json.Marshal([]any{map[string]any{"type": "interlock_tool_call", "upstream": upstream, "tool": tool, "arguments": args}})
	return string(b)
}

func (r *rig) start(id, tool string, args any, extra ...string) resp {
	r.t.Helper()
	f := url.Values{"scope": {"openid"}, "authorization_details": {details("acme", tool, args)}}
	for i := 0; i+1 < len(extra); i += 2 {
		f.Set(extra[i], extra[i+1])
	}
	return r.post(ciba.BackchannelPath, id, f)
}

func (r *rig) poll(id, authReqID string) resp {
	r.t.Helper()
	return r.post(ciba.TokenPath, id, url.Values{"grant_type": {ciba.GrantType}, "auth_req_id": {authReqID}})
}

func (r *rig) vote(approvalID, email string, approve bool, reason string) {
	r.t.Helper()
	u, err := r.a.Store.GetUserByEmail(context.Background(), email)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.a.Approvals.Vote(context.Background(), approvalID, u, approval.Vote{Approve: approve, Reason: reason, Method: "test"}); err != nil {
		r.t.Fatalf("vote: %v", err)
	}
}

func (r *rig) pending(tool string) store.Approval {
	r.t.Helper()
	list, err := r.a.Store.ListApprovals(context.Background(), store.ApprovalFilter{State: store.ApprovalPending})
	if err != nil {
		r.t.Fatal(err)
	}
	for _, a := range list {
		if a.Tool == tool {
			return a
		}
	}
	r.t.Fatalf("no pending approval for %s", tool)
	return store.Approval{}
}

func TestDiscovery(t *testing.T) {
	r := newRig(t)
	// Through the whole gateway, as mounted by the app.
	res, err := http.Get(r.gw.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(res.Body).Decode(&m); err != nil || res.StatusCode != 200 {
		t.Fatalf("discovery: %d %v", res.StatusCode, err)
	}
	iss := r.a.Config.PublicURL
	want := map[string]any{
		"issuer":                              iss,
		"backchannel_authentication_endpoint": iss + "/oauth/backchannel",
		"token_endpoint":                      iss + "/oauth/token",
		"jwks_uri":                            iss + "/.well-known/jwks.json",
		"backchannel_user_code_parameter_supported": false,
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	for k, v := range map[string]string{
		"backchannel_token_delivery_modes_supported":       `["poll","ping"]`,
		"grant_types_supported":                            `["urn:openid:params:grant-type:ciba"]`,
		"token_endpoint_auth_methods_supported":            `["client_secret_basic","client_secret_post","private_key_jwt"]`,
		"token_endpoint_auth_signing_alg_values_supported": `["RS256","ES256","EdDSA"]`,
		"authorization_details_types_supported":            `["interlock_tool_call"]`,
		"scopes_supported":                                 `["openid"]`,
		"subject_types_supported":                          `["public"]`,
	} {
		if b, _ := json.Marshal(m[k]); string(b) != v {
			t.Errorf("%s = %s, want %s", k, b, v)
		}
	}
	// The gateway's own endpoints answer (a poll without a client).
	res2, err := http.Post(r.gw.URL+"/oauth/token", "application/x-www-form-urlencoded", strings.NewReader("grant_type=x"))
	if err != nil {
		t.Fatal(err)
	}
	res2.Body.Close()
	if res2.StatusCode != http.StatusUnauthorized {
		t.Errorf("unauthenticated token request through the gateway: %d", res2.StatusCode)
	}
}

func TestClientAuthentication(t *testing.T) {
	r := newRig(t)
	form := func() url.Values {
		return url.Values{"scope": {"openid"}, "authorization_details": {details("acme", "echo", map[string]any{"text": "hi"})}}
	}
	send := func(f url.Values, basicID, basicSecret string) resp {
		req, _ := http.NewRequest(http.MethodPost, r.srv.URL+ciba.BackchannelPath, strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if basicID != "" {
			req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(basicID)+":"+url.QueryEscape(basicSecret))))
		}
		return do(t, req)
	}
	t.Run("client_secret_basic", func(t *testing.T) {
		if res := send(form(), "bot", r.tokens["bot"]); res.status != 200 || res.str("auth_req_id") == "" {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
	t.Run("client_secret_basic with client_id in the body", func(t *testing.T) {
		f := form()
		f.Set("client_id", "bot")
		if res := send(f, "bot", r.tokens["bot"]); res.status != 200 {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
	t.Run("client_secret_post", func(t *testing.T) {
		if res := r.post(ciba.BackchannelPath, "bot", form()); res.status != 200 {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
	t.Run("bad secret basic", func(t *testing.T) {
		res := send(form(), "bot", "ilk_"+strings.Repeat("A", 43))
		if res.status != 401 || res.code() != "invalid_client" || !strings.HasPrefix(res.header.Get("WWW-Authenticate"), "Basic") {
			t.Fatalf("%d %v %q", res.status, res.body, res.header.Get("WWW-Authenticate"))
		}
	})
	t.Run("bad secret post", func(t *testing.T) {
		f := form()
		f.Set("client_id", "bot")
		f.Set("client_secret", "wrong")
		res := send(f, "", "")
		if res.status != 401 || res.code() != "invalid_client" || res.header.Get("WWW-Authenticate") != "" {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
	t.Run("another agent's token", func(t *testing.T) {
		f := form()
		f.Set("client_id", "bot")
		f.Set("client_secret", r.tokens["other-bot"])
		if res := send(f, "", ""); res.status != 401 || res.code() != "invalid_client" {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
	t.Run("no authentication", func(t *testing.T) {
		if res := send(form(), "", ""); res.status != 401 || res.code() != "invalid_client" {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
	t.Run("two methods", func(t *testing.T) {
		f := form()
		f.Set("client_id", "bot")
		f.Set("client_secret", r.tokens["bot"])
		if res := send(f, "bot", r.tokens["bot"]); res.status != 400 || res.code() != "invalid_request" {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})

	// private_key_jwt, with a key registered for key-bot.
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := jwk.Import(priv.Public())
	pub.Set(jwk.KeyIDKey, "k1")
	set := jwk.NewSet()
	set.AddKey(pub)
	jb, _ := json.Marshal(set)
	r.keys.sets["key-bot"] = jb
	assertion := func(claims map[string]any) string {
		b, _ := json.Marshal(claims)
		h := jws.NewHeaders()
		h.Set(jws.KeyIDKey, "k1")
		tok, err := jws.Sign(b, jws.WithKey(jwa.ES256(), priv, jws.WithProtectedHeaders(h)))
		if err != nil {
			t.Fatal(err)
		}
		return string(tok)
	}
	now := time.Now().Unix()
	claims := func(jti string) map[string]any {
		return map[string]any{"iss": "key-bot", "sub": "key-bot", "aud": r.issuer, "exp": now + 60, "iat": now, "jti": jti}
	}
	withAssertion := func(tok string) url.Values {
		f := form()
		f.Set("client_assertion_type", ciba.AssertionType)
		f.Set("client_assertion", tok)
		return f
	}
	t.Run("private_key_jwt", func(t *testing.T) {
		tok := assertion(claims("j1"))
		if res := send(withAssertion(tok), "", ""); res.status != 200 {
			t.Fatalf("%d %v", res.status, res.body)
		}
		// The same assertion again: its jti was used.
		if res := send(withAssertion(tok), "", ""); res.status != 401 || !strings.Contains(res.str("error_description"), "jti") {
			t.Fatalf("replayed assertion: %d %v", res.status, res.body)
		}
		c := claims("j2")
		c["aud"] = r.issuer + BackchannelPathForTest
		if res := send(withAssertion(assertion(c)), "", ""); res.status != 200 {
			t.Fatalf("aud = endpoint: %d %v", res.status, res.body)
		}
	})
	for name, mod := range map[string]func(map[string]any){
		"wrong aud":      func(c map[string]any) { c["aud"] = "https://elsewhere.example" },
		"expired":        func(c map[string]any) { c["exp"] = now - 120 },
		"no exp":         func(c map[string]any) { delete(c, "exp") },
		"iss is not sub": func(c map[string]any) { c["sub"] = "bot" },
		"no jti":         func(c map[string]any) { delete(c, "jti") },
		"other client":   func(c map[string]any) { c["iss"], c["sub"] = "bot", "bot" }, // bot has no keys
	} {
		t.Run("private_key_jwt "+name, func(t *testing.T) {
			c := claims("x-" + name)
			mod(c)
			if res := send(withAssertion(assertion(c)), "", ""); res.status != 401 || res.code() != "invalid_client" {
				t.Fatalf("%d %v", res.status, res.body)
			}
		})
	}
	t.Run("private_key_jwt signed by another key", func(t *testing.T) {
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		b, _ := json.Marshal(claims("j9"))
		h := jws.NewHeaders()
		h.Set(jws.KeyIDKey, "k1")
		tok, _ := jws.Sign(b, jws.WithKey(jwa.ES256(), other, jws.WithProtectedHeaders(h)))
		if res := send(withAssertion(string(tok)), "", ""); res.status != 401 {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
	t.Run("private_key_jwt on the token endpoint", func(t *testing.T) {
		f := url.Values{"grant_type": {ciba.GrantType}, "auth_req_id": {"nope"}, "client_assertion_type": {ciba.AssertionType}}
		c := claims("j10")
		c["aud"] = r.issuer + ciba.TokenPath
		f.Set("client_assertion", assertion(c))
		req, _ := http.NewRequest(http.MethodPost, r.srv.URL+ciba.TokenPath, strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if res := do(t, req); res.status != 400 || res.code() != "invalid_grant" {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
}

// BackchannelPathForTest is the backchannel path (an aud the assertion
// may name).
const BackchannelPathForTest = ciba.BackchannelPath

func TestMalformedRequests(t *testing.T) {
	r := newRig(t)
	good := details("acme", "echo", map[string]any{"text": "hi"})
	for _, tc := range []struct {
		name string
		form url.Values
		code string
	}{
		{"no scope", url.Values{"authorization_details": {good}}, "invalid_request"},
		{"scope without openid", url.Values{"scope": {"profile"}, "authorization_details": {good}}, "invalid_scope"},
		{"no details", url.Values{"scope": {"openid"}}, "invalid_request"},
		{"details not JSON", url.Values{"scope": {"openid"}, "authorization_details": {"[{"}}, "invalid_authorization_details"},
		{"details not an array", url.Values{"scope": {"openid"}, "authorization_details": {`{"type":"interlock_tool_call"}`}}, "invalid_authorization_details"},
		{"two details", url.Values{"scope": {"openid"}, "authorization_details": {`[` + good[1:len(good)-1] + `,` + good[1:len(good)-1] + `]`}}, "invalid_authorization_details"},
		{"other type", url.Values{"scope": {"openid"}, "authorization_details": {`[{"type":"payment_initiation","upstream":"acme","tool":"echo"}]`}}, "invalid_authorization_details"},
		{"unknown member", url.Values{"scope": {"openid"}, "authorization_details": {`[{"type":"interlock_tool_call","upstream":"acme","tool":"echo","actions":["x"]}]`}}, "invalid_authorization_details"},
		{"arguments not an object", url.Values{"scope": {"openid"}, "authorization_details": {`[{"type":"interlock_tool_call","upstream":"acme","tool":"echo","arguments":[1]}]`}}, "invalid_authorization_details"},
		{"duplicate key", url.Values{"scope": {"openid"}, "authorization_details": {`[{"type":"interlock_tool_call","upstream":"acme","tool":"echo","arguments":{"a":1,"a":2}}]`}}, "invalid_authorization_details"},
		{"unknown upstream", url.Values{"scope": {"openid"}, "authorization_details": {details("nope", "echo", map[string]any{})}}, "invalid_authorization_details"},
		{"two hints", url.Values{"scope": {"openid"}, "authorization_details": {good}, "login_hint": {"owner@example.com"}, "id_token_hint": {"x"}}, "invalid_request"},
		{"id_token_hint", url.Values{"scope": {"openid"}, "authorization_details": {good}, "id_token_hint": {"x"}}, "invalid_request"},
		{"hint not an email", url.Values{"scope": {"openid"}, "authorization_details": {good}, "login_hint": {"owner"}}, "unknown_user_id"},
		{"binding message on two lines", url.Values{"scope": {"openid"}, "authorization_details": {good}, "binding_message": {"a\nb"}}, "invalid_binding_message"},
		{"requested_expiry not a number", url.Values{"scope": {"openid"}, "authorization_details": {good}, "requested_expiry": {"soon"}}, "invalid_request"},
		{"signed request", url.Values{"scope": {"openid"}, "authorization_details": {good}, "request": {"a.b.c"}}, "invalid_request"},
		{"user_code", url.Values{"scope": {"openid"}, "authorization_details": {good}, "user_code": {"1234"}}, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := r.post(ciba.BackchannelPath, "bot", tc.form)
			if res.status != 400 || res.code() != tc.code {
				t.Fatalf("%d %v, want 400 %s", res.status, res.body, tc.code)
			}
		})
	}
	t.Run("repeated parameter", func(t *testing.T) {
		f := url.Values{"scope": {"openid", "openid"}, "authorization_details": {good}}
		if res := r.post(ciba.BackchannelPath, "bot", f); res.status != 400 || res.code() != "invalid_request" {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
	t.Run("JSON body", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, r.srv.URL+ciba.BackchannelPath, strings.NewReader(`{"scope":"openid"}`))
		req.Header.Set("Content-Type", "application/json")
		if res := do(t, req); res.status != 400 || res.code() != "invalid_request" {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
	t.Run("GET", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, r.srv.URL+ciba.TokenPath, nil)
		if res := do(t, req); res.status != 405 {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
	t.Run("token: wrong grant type", func(t *testing.T) {
		if res := r.post(ciba.TokenPath, "bot", url.Values{"grant_type": {"authorization_code"}, "auth_req_id": {"x"}}); res.status != 400 || res.code() != "unsupported_grant_type" {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
	t.Run("token: no auth_req_id", func(t *testing.T) {
		if res := r.post(ciba.TokenPath, "bot", url.Values{"grant_type": {ciba.GrantType}}); res.status != 400 || res.code() != "invalid_request" {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
	t.Run("token: unknown auth_req_id", func(t *testing.T) {
		if res := r.poll("bot", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); res.status != 400 || res.code() != "invalid_grant" {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
}

func TestAllowDenyAndApprove(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()

	t.Run("allow: the token is ready at the first poll, once", func(t *testing.T) {
		args := map[string]any{"text": "hello"}
		ack := r.start("bot", "echo", args, "binding_message", "echo hello")
		id := ack.str("auth_req_id")
		if ack.status != 200 || len(id) < 43 || ack.body["expires_in"].(float64) < 1 || ack.body["interval"] != 1.0 {
			t.Fatalf("ack %d %v", ack.status, ack.body)
		}
		// Another client cannot redeem it.
		if res := r.poll("other-bot", id); res.code() != "invalid_grant" {
			t.Fatalf("other client: %v", res.body)
		}
		time.Sleep(time.Second)
		res := r.poll("bot", id)
		if res.status != 200 || res.str("token_type") != "Bearer" || res.str("access_token") == "" {
			t.Fatalf("token %d %v", res.status, res.body)
		}
		det, _ := json.Marshal(res.body["authorization_details"])
		if string(det) != details("acme", "echo", args) {
			t.Errorf("authorization_details = %s", det)
		}
		claims, err := r.a.Issuer.Verify(ctx, res.str("access_token"), time.Now())
		if err != nil {
			t.Fatalf("the access token is not a valid credential: %v", err)
		}
		if claims.Tool != "echo" || claims.Upstream != "acme" {
			t.Errorf("claims %+v", claims)
		}
		time.Sleep(time.Second)
		if res := r.poll("bot", id); res.code() != "invalid_grant" {
			t.Fatalf("second redemption: %d %v", res.status, res.body)
		}
	})

	t.Run("deny by policy: access_denied at once", func(t *testing.T) {
		res := r.start("bot", "provision_servers", map[string]any{"count": 1})
		if res.status != 403 || res.code() != "access_denied" || !strings.Contains(res.str("error_description"), "no servers today") {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})

	t.Run("unknown approver", func(t *testing.T) {
		res := r.start("bot", "place_order", map[string]any{"item": "x", "quantity": 1, "unit_price_usd": 1}, "login_hint", "other@example.com")
		if res.status != 400 || res.code() != "unknown_user_id" {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})

	t.Run("approve", func(t *testing.T) {
		args := map[string]any{"item": "batteries", "quantity": 2, "unit_price_usd": 600}
		ack := r.start("bot", "place_order", args, "login_hint", "buyer@example.com", "binding_message", "Order 42: batteries")
		id := ack.str("auth_req_id")
		if ack.status != 200 {
			t.Fatalf("%d %v", ack.status, ack.body)
		}
		ap := r.pending("place_order")
		if ap.BindingMessage != "Order 42: batteries" || len(ap.Approvers) != 1 || ap.Approvers[0] != "user:buyer@example.com" {
			t.Errorf("approval %+v", ap)
		}
		if res := r.poll("bot", id); res.code() != "authorization_pending" || !strings.Contains(res.str("error_description"), "buyer@example.com") {
			t.Fatalf("pending: %d %v", res.status, res.body)
		}
		r.vote(ap.ID, "buyer@example.com", true, "")
		time.Sleep(time.Second)
		res := r.poll("bot", id)
		if res.status != 200 {
			t.Fatalf("approved: %d %v", res.status, res.body)
		}
		claims, err := r.a.Issuer.Verify(ctx, res.str("access_token"), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(claims.AuthorizedBy) != 1 || claims.AuthorizedBy[0].Approver != "buyer@example.com" || claims.AuthorizedBy[0].ApprovalID != ap.ID {
			t.Errorf("credential authorized by %+v", claims.AuthorizedBy)
		}
		time.Sleep(time.Second)
		if res := r.poll("bot", id); res.code() != "invalid_grant" {
			t.Fatalf("second redemption: %d %v", res.status, res.body)
		}
	})

	t.Run("denied by the approver", func(t *testing.T) {
		ack := r.start("bot", "place_order", map[string]any{"item": "gold", "quantity": 1, "unit_price_usd": 9000})
		ap := r.pending("place_order")
		r.vote(ap.ID, "owner@example.com", false, "not gold")
		res := r.poll("bot", ack.str("auth_req_id"))
		if res.status != 400 || res.code() != "access_denied" || !strings.Contains(res.str("error_description"), "owner@example.com denied this request: not gold") {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})

	t.Run("slow_down", func(t *testing.T) {
		ack := r.start("bot", "place_order", map[string]any{"item": "slow", "quantity": 1, "unit_price_usd": 1})
		id := ack.str("auth_req_id")
		if res := r.poll("bot", id); res.code() != "authorization_pending" {
			t.Fatalf("%v", res.body)
		}
		if res := r.poll("bot", id); res.code() != "slow_down" || !strings.Contains(res.str("error_description"), "6 seconds") {
			t.Fatalf("%v", res.body)
		}
		// The interval is now 6 s: a poll 1 s later is still too soon.
		time.Sleep(time.Second)
		if res := r.poll("bot", id); res.code() != "slow_down" {
			t.Fatalf("%v", res.body)
		}
	})

	t.Run("expiry", func(t *testing.T) {
		ack := r.start("bot", "place_order", map[string]any{"item": "late", "quantity": 1, "unit_price_usd": 1}, "requested_expiry", "1")
		if ack.body["expires_in"] != 1.0 {
			t.Fatalf("%v", ack.body)
		}
		time.Sleep(1100 * time.Millisecond)
		if res := r.poll("bot", ack.str("auth_req_id")); res.code() != "expired_token" {
			t.Fatalf("%d %v", res.status, res.body)
		}
	})
}

func TestPing(t *testing.T) {
	r := newRig(t)
	type ping struct {
		auth string
		body map[string]string
	}
	pings := make(chan ping, 4)
	fail := 1 // the first ping is refused: it is retried
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var b map[string]string
		json.NewDecoder(req.Body).Decode(&b)
		if fail > 0 {
			fail--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		pings <- ping{req.Header.Get("Authorization"), b}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)
	reg, _ := json.Marshal(ciba.Metadata{DeliveryMode: "ping", NotificationEndpoint: recv.URL + "/cb"})
	if _, err := r.a.Store.PutMetaIfAbsent(context.Background(), app.CIBAClientKey+"ping-bot", reg); err != nil {
		t.Fatal(err)
	}
	args := map[string]any{"item": "pinged", "quantity": 1, "unit_price_usd": 3}
	if res := r.start("ping-bot", "place_order", args); res.status != 400 || !strings.Contains(res.str("error_description"), "client_notification_token") {
		t.Fatalf("ping without client_notification_token: %d %v", res.status, res.body)
	}
	ack := r.start("ping-bot", "place_order", args, "client_notification_token", "cnt-0123456789abcdefghij")
	id := ack.str("auth_req_id")
	ap := r.pending("place_order")
	select {
	case p := <-pings:
		t.Fatalf("pinged before the decision: %v", p)
	case <-time.After(300 * time.Millisecond):
	}
	r.vote(ap.ID, "owner@example.com", true, "")
	select {
	case p := <-pings:
		if p.auth != "Bearer cnt-0123456789abcdefghij" || p.body["auth_req_id"] != id {
			t.Fatalf("ping %v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no ping")
	}
	if res := r.poll("ping-bot", id); res.status != 200 || res.str("access_token") == "" {
		t.Fatalf("token after ping: %d %v", res.status, res.body)
	}
	// An allowed request is pinged at once.
	ack = r.start("ping-bot", "echo", map[string]any{"text": "x"}, "client_notification_token", "cnt-0123456789abcdefghij")
	select {
	case p := <-pings:
		if p.body["auth_req_id"] != ack.str("auth_req_id") {
			t.Fatalf("ping %v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no ping for an allowed request")
	}
}
