package adminapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/adminapi"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
)

type env struct {
	t     testing.TB
	st    store.Store
	reg   *registry.Registry
	srv   *httptest.Server
	admin string // token of "ops" (admin)
	sec   string // token of "sec" (security)
	view  string // token of "auditors" (viewer)
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "interlock.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := registry.New(registry.Options{Store: st, Logger: log})
	t.Cleanup(func() { reg.Close() })
	al, err := audit.New(ctx, audit.Options{Store: st, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	lc := registry.NewLifecycle(reg, registry.LifecycleOptions{Audit: al})
	e := &env{t: t, st: st, reg: reg}
	var tokens []adminapi.AdminToken
	for _, x := range []struct {
		name, role string
		tok        *string
	}{{"ops", "admin", &e.admin}, {"sec", "security", &e.sec}, {"auditors", "viewer", &e.view}} {
		tok, err := adminapi.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		*x.tok = tok
		at, err := adminapi.ParseToken(x.name, adminapi.HashHex(tok), []string{x.role})
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, at)
	}
	h := adminapi.New(adminapi.Options{Tokens: tokens, Registry: reg, Lifecycle: lc, Store: st, Audit: al, Logger: log})
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", h)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	return e
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) obj(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer is not a JSON object: %s (%v)", r.body, err)
	}
	return m
}

func (r resp) list(t testing.TB) []map[string]any {
	t.Helper()
	var l []map[string]any
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatalf("answer is not a JSON array: %s (%v)", r.body, err)
	}
	return l
}

func (r resp) errText(t testing.TB) string {
	t.Helper()
	s, _ := r.obj(t)["error"].(string)
	if s == "" {
		t.Fatalf("no error message in %d %s", r.status, r.body)
	}
	return s
}

// do sends a request with the token ("" for none) and a body ("" for
// none).
func (e *env) do(token, method, path, body string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func (e *env) want(r resp, status int, what string) resp {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("%s: status %d, want %d: %s", what, r.status, status, r.body)
	}
	return r
}

// lastAudit returns the data of the newest audit event of type typ.
func (e *env) lastAudit(typ string) map[string]any {
	e.t.Helper()
	evs, err := e.st.ListAudit(context.Background(), store.AuditFilter{Types: []string{typ}})
	if err != nil {
		e.t.Fatal(err)
	}
	if len(evs) == 0 {
		e.t.Fatalf("no %s event in the audit log", typ)
	}
	var m map[string]any
	if err := json.Unmarshal(evs[len(evs)-1].Data, &m); err != nil {
		e.t.Fatal(err)
	}
	return m
}

// setup creates alice (owner of bot-1) and bob through the API and returns
// bot-1's token.
func (e *env) setup() string {
	e.t.Helper()
	e.want(e.do(e.admin, "POST", "/api/v1/users", `{"email":"alice@example.com","name":"Alice","roles":["finance"]}`), 201, "create alice")
	e.want(e.do(e.admin, "POST", "/api/v1/users", `{"email":"bob@example.com"}`), 201, "create bob")
	r := e.want(e.do(e.admin, "POST", "/api/v1/agents", `{"id":"bot-1","owner":"alice@example.com","department":"finance"}`), 201, "create bot-1")
	tok, _ := r.obj(e.t)["token"].(string)
	if !strings.HasPrefix(tok, registry.TokenPrefix) {
		e.t.Fatalf("create agent: no token in %s", r.body)
	}
	return tok
}

// refused reports why the gate would refuse the agent token now ("" if
// it would not).
func (e *env) refused(token string) string {
	e.t.Helper()
	p, err := e.reg.Authenticate(context.Background(), token)
	if err != nil {
		return err.Error()
	}
	if err := registry.CheckActive(p); err != nil {
		return err.Error()
	}
	return ""
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	r := e.want(e.do("", "GET", "/api/v1/agents", ""), 401, "no token")
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("401 without WWW-Authenticate: %v", r.header)
	}
	if !strings.Contains(r.errText(t), "admin token is required") {
		t.Errorf("no token: %s", r.body)
	}
	r = e.want(e.do(adminapi.TokenPrefix+"wrong", "GET", "/api/v1/agents", ""), 401, "bad token")
	if r.header.Get("WWW-Authenticate") == "" || !strings.Contains(r.errText(t), "not valid") {
		t.Errorf("bad token: %v %s", r.header, r.body)
	}
	// An agent token is not an admin token.
	tok := e.setup()
	e.want(e.do(tok, "GET", "/api/v1/agents", ""), 401, "agent token")
	// Basic is not Bearer.
	req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/agents", nil)
	req.SetBasicAuth("ops", e.admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 401 {
		t.Errorf("basic auth: %v %v", res.StatusCode, err)
	}
	res.Body.Close()
	// Even an unknown path needs a token (no probing).
	e.want(e.do("", "GET", "/api/v1/nothing", ""), 401, "unknown path without a token")
	e.want(e.do(e.view, "GET", "/api/v1/nothing", ""), 404, "unknown path")
	r = e.want(e.do(e.view, "DELETE", "/api/v1/users", ""), 405, "DELETE users")
	if r.header.Get("Allow") != "GET, POST" {
		t.Errorf("Allow: %q", r.header.Get("Allow"))
	}
	r = e.want(e.do(e.sec, "GET", "/api/v1/whoami", ""), 200, "whoami")
	if m := r.obj(t); m["name"] != "sec" {
		t.Errorf("whoami: %s", r.body)
	}
	// The token never shows up in an answer.
	if bytes.Contains(r.body, []byte(e.sec)) {
		t.Error("whoami echoes the token")
	}
}

func TestRoles(t *testing.T) {
	e := newEnv(t)
	e.setup()
	// viewer reads, and may not stop anything.
	e.want(e.do(e.view, "GET", "/api/v1/agents", ""), 200, "viewer lists agents")
	e.want(e.do(e.view, "GET", "/api/v1/agents/bot-1", ""), 200, "viewer reads an agent")
	r := e.want(e.do(e.view, "POST", "/api/v1/agents/bot-1/suspend", `{"reason":"x"}`), 403, "viewer suspends")
	if msg := r.errText(t); !strings.Contains(msg, `"auditors"`) || !strings.Contains(msg, "suspend agents") || !strings.Contains(msg, "security or admin") {
		t.Errorf("403 message: %s", msg)
	}
	e.want(e.do(e.view, "POST", "/api/v1/stop", `{"all":true,"reason":"x"}`), 403, "viewer stops")
	e.want(e.do(e.view, "POST", "/api/v1/users/alice@example.com/deactivate", `{}`), 403, "viewer deactivates")
	// security stops, and may not create or reassign.
	r = e.want(e.do(e.sec, "POST", "/api/v1/agents", `{"id":"bot-2","owner":"alice@example.com"}`), 403, "security creates an agent")
	if msg := r.errText(t); !strings.Contains(msg, "create agents") || !strings.Contains(msg, "admin role") {
		t.Errorf("403 message: %s", msg)
	}
	e.want(e.do(e.sec, "POST", "/api/v1/users", `{"email":"eve@example.com"}`), 403, "security creates a user")
	e.want(e.do(e.sec, "POST", "/api/v1/agents/bot-1/tokens", `{}`), 403, "security creates a token")
	e.want(e.do(e.sec, "POST", "/api/v1/agents/bot-1/reassign", `{"to":"bob@example.com"}`), 403, "security reassigns")
	e.want(e.do(e.sec, "POST", "/api/v1/agents/bot-1/decommission", `{}`), 403, "security decommissions")
	e.want(e.do(e.sec, "POST", "/api/v1/agents/bot-1/suspend", `{"reason":"x"}`), 200, "security suspends")
	e.want(e.do(e.sec, "POST", "/api/v1/agents/bot-1/resume", `{}`), 200, "security resumes")
	// A refused request changed nothing.
	if _, err := e.reg.GetAgent(context.Background(), "bot-2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bot-2 exists after a 403: %v", err)
	}
	// admin does everything.
	e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-1/suspend", `{"reason":"x"}`), 200, "admin suspends")
}

func TestUsersAndAgents(t *testing.T) {
	e := newEnv(t)
	tok := e.setup()

	e.want(e.do(e.admin, "POST", "/api/v1/users", `{"email":"ALICE@example.com"}`), 409, "duplicate user")
	r := e.want(e.do(e.admin, "POST", "/api/v1/users", `{"email":"Alice <a@example.com>"}`), 400, "bad email")
	if strings.Contains(r.errText(t), "registry:") {
		t.Errorf("package prefix in a public message: %s", r.body)
	}
	e.want(e.do(e.admin, "POST", "/api/v1/users", `{}`), 400, "no email")
	e.want(e.do(e.admin, "POST", "/api/v1/users", `{"email":"r@example.com","roles":["Bad Role"]}`), 400, "bad role")

	users := e.want(e.do(e.view, "GET", "/api/v1/users", ""), 200, "list users").list(t)
	if len(users) != 2 || users[0]["email"] != "alice@example.com" || users[0]["roles"].([]any)[0] != "finance" {
		t.Errorf("users: %v", users)
	}
	u := e.want(e.do(e.view, "GET", "/api/v1/users/alice@example.com", ""), 200, "show alice").obj(t)
	if ag := u["agents"].([]any); len(ag) != 1 || ag[0].(map[string]any)["id"] != "bot-1" {
		t.Errorf("alice: %v", u)
	}
	if m := e.want(e.do(e.view, "GET", "/api/v1/users/bob@example.com", ""), 200, "show bob").obj(t); len(m["agents"].([]any)) != 0 {
		t.Errorf("bob: %v", m)
	}
	if msg := e.want(e.do(e.view, "GET", "/api/v1/users/nobody@example.com", ""), 404, "unknown user").errText(t); !strings.Contains(msg, "nobody@example.com") {
		t.Errorf("404: %s", msg)
	}
	if a := e.lastAudit("user_created"); a["by"] != "admin:ops" || a["email"] != "bob@example.com" {
		t.Errorf("user_created event: %v", a)
	}

	e.want(e.do(e.admin, "POST", "/api/v1/agents", `{"id":"bot-1","owner":"alice@example.com"}`), 409, "duplicate agent")
	e.want(e.do(e.admin, "POST", "/api/v1/agents", `{"id":"bot-9","owner":"nobody@example.com"}`), 400, "unknown owner")
	e.want(e.do(e.admin, "POST", "/api/v1/agents", `{"id":"bad id","owner":"alice@example.com"}`), 400, "bad id")
	e.want(e.do(e.admin, "POST", "/api/v1/agents", `{"owner":"alice@example.com"}`), 400, "no id")

	agents := e.want(e.do(e.view, "GET", "/api/v1/agents", ""), 200, "list agents").list(t)
	if len(agents) != 1 || agents[0]["owner"] != "alice@example.com" || agents[0]["state"] != "active" || agents[0]["department"] != "finance" {
		t.Errorf("agents: %v", agents)
	}
	e.want(e.do(e.view, "GET", "/api/v1/agents?state=bogus", ""), 400, "bad state")
	e.want(e.do(e.view, "GET", "/api/v1/agents?orphaned=maybe", ""), 400, "bad orphaned")
	if l := e.want(e.do(e.view, "GET", "/api/v1/agents?owner=bob@example.com", ""), 200, "bob's agents").list(t); len(l) != 0 {
		t.Errorf("bob's agents: %v", l)
	}
	if msg := e.want(e.do(e.view, "GET", "/api/v1/agents/nope", ""), 404, "unknown agent").errText(t); msg != `no agent "nope"` {
		t.Errorf("404: %s", msg)
	}
	e.want(e.do(e.sec, "POST", "/api/v1/agents/nope/suspend", `{}`), 404, "suspend unknown agent")
	d := e.want(e.do(e.view, "GET", "/api/v1/agents/bot-1", ""), 200, "show bot-1").obj(t)
	if d["owner_active"] != true || len(d["tokens"].([]any)) != 1 || len(d["history"].([]any)) != 1 {
		t.Errorf("bot-1: %v", d)
	}
	if h := d["history"].([]any)[0].(map[string]any); h["type"] != "agent_created" || h["data"].(map[string]any)["by"] != "admin:ops" {
		t.Errorf("history: %v", h)
	}
	if e.refused(tok) != "" {
		t.Errorf("new agent refused: %s", e.refused(tok))
	}

	// Tokens.
	e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-1/tokens", `{"ttl":"soon"}`), 400, "bad ttl")
	e.want(e.do(e.admin, "POST", "/api/v1/agents/nope/tokens", `{}`), 404, "token for unknown agent")
	nt := e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-1/tokens", `{"ttl":"24h"}`), 201, "create token").obj(t)
	secret, _ := nt["token"].(string)
	id, _ := nt["id"].(string)
	if !strings.HasPrefix(secret, registry.TokenPrefix) || nt["expires_at"] == nil || e.refused(secret) != "" {
		t.Fatalf("new token: %v", nt)
	}
	if a := e.lastAudit("agent_token_created"); a["by"] != "admin:ops" || a["token_id"] != id {
		t.Errorf("agent_token_created: %v", a)
	}
	toks := e.want(e.do(e.view, "GET", "/api/v1/agents/bot-1/tokens", ""), 200, "list tokens").list(t)
	if len(toks) != 2 || bytes.Contains(e.do(e.view, "GET", "/api/v1/agents/bot-1/tokens", "").body, []byte(secret)) {
		t.Errorf("tokens: %v", toks)
	}
	e.want(e.do(e.sec, "POST", "/api/v1/agents/bot-1/tokens/tok_nope/revoke", `{}`), 404, "revoke unknown token")
	rv := e.want(e.do(e.sec, "POST", "/api/v1/agents/bot-1/tokens/"+id+"/revoke", `{"reason":"leaked"}`), 200, "revoke token").obj(t)
	if rv["revoked_at"] == nil || e.refused(secret) == "" || e.refused(tok) != "" {
		t.Errorf("revoke: %v; refused %q / %q", rv, e.refused(secret), e.refused(tok))
	}
	if a := e.lastAudit("agent_tokens_revoked"); a["by"] != "admin:sec" || a["reason"] != "leaked" {
		t.Errorf("agent_tokens_revoked: %v", a)
	}
}

func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	tok := e.setup()

	rep := e.want(e.do(e.sec, "POST", "/api/v1/agents/bot-1/suspend", `{"reason":"incident 7"}`), 200, "suspend").obj(t)
	if ag := rep["agents"].([]any); len(ag) != 1 || ag[0] != "bot-1" || rep["story"] == "" {
		t.Errorf("suspend report: %v", rep)
	}
	if why := e.refused(tok); !strings.Contains(why, "suspended") {
		t.Errorf("suspended agent: %q", why)
	}
	if a := e.lastAudit("agent_suspended"); a["by"] != "admin:sec" || a["reason"] != "incident 7" {
		t.Errorf("agent_suspended event: %v", a)
	}
	a := e.want(e.do(e.sec, "POST", "/api/v1/agents/bot-1/resume", ``), 200, "resume").obj(t)
	if a["state"] != "active" || e.refused(tok) != "" {
		t.Errorf("resume: %v", a)
	}
	e.want(e.do(e.sec, "POST", "/api/v1/agents/bot-1/resume", `{}`), 409, "resume an active agent")

	// The kill switch.
	d := e.want(e.do(e.sec, "POST", "/api/v1/users/alice@example.com/deactivate", `{"reason":"left"}`), 200, "deactivate").obj(t)
	if d["user"].(map[string]any)["active"] != false || len(d["report"].(map[string]any)["agents"].([]any)) != 1 {
		t.Errorf("deactivate: %v", d)
	}
	if why := e.refused(tok); !strings.Contains(why, "orphaned") {
		t.Errorf("orphaned agent: %q", why)
	}
	if a := e.lastAudit("user_deactivated"); a["by"] != "admin:sec" {
		t.Errorf("user_deactivated: %v", a)
	}
	orph := e.want(e.do(e.view, "GET", "/api/v1/agents?orphaned=true", ""), 200, "orphaned").list(t)
	if len(orph) != 1 || orph[0]["id"] != "bot-1" || orph[0]["state_changed_by"] != "admin:sec" {
		t.Errorf("orphaned: %v", orph)
	}
	e.want(e.do(e.sec, "POST", "/api/v1/users/nobody@example.com/deactivate", `{}`), 404, "deactivate unknown")
	if u := e.want(e.do(e.sec, "POST", "/api/v1/users/alice@example.com/activate", `{}`), 200, "activate").obj(t); u["active"] != true {
		t.Errorf("activate: %v", u)
	}
	if e.refused(tok) == "" {
		t.Error("activating the owner brought the orphaned agent back")
	}
	e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-1/reassign", `{}`), 400, "reassign without to")
	e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-1/reassign", `{"to":"nobody@example.com"}`), 404, "reassign to unknown")
	a = e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-1/reassign", `{"to":"bob@example.com","reason":"handover"}`), 200, "reassign").obj(t)
	if a["state"] != "active" || a["owner"] != "bob@example.com" || e.refused(tok) != "" {
		t.Errorf("reassign: %v", a)
	}
	if ev := e.lastAudit("agent_reassigned"); ev["by"] != "admin:ops" || ev["to_owner"] != "bob@example.com" {
		t.Errorf("agent_reassigned: %v", ev)
	}

	// The emergency stop.
	e.want(e.do(e.sec, "POST", "/api/v1/stop", `{"all":true}`), 400, "stop without reason")
	e.want(e.do(e.sec, "POST", "/api/v1/stop", `{"all":true,"agent":"bot-1","reason":"x"}`), 400, "stop with two selectors")
	e.want(e.do(e.sec, "POST", "/api/v1/stop", `{"agent":"nope","reason":"x"}`), 404, "stop unknown agent")
	e.want(e.do(e.sec, "POST", "/api/v1/stop", `{"owner":"nobody@example.com","reason":"x"}`), 404, "stop unknown owner")
	rep = e.want(e.do(e.sec, "POST", "/api/v1/stop", `{"owner":"bob@example.com","reason":"incident 8"}`), 200, "stop").obj(t)
	if len(rep["agents"].([]any)) != 1 || !strings.Contains(e.refused(tok), "suspended") {
		t.Errorf("stop: %v", rep)
	}
	if ev := e.lastAudit("emergency_stop"); ev["by"] != "admin:sec" || ev["owner"] != "bob@example.com" {
		t.Errorf("emergency_stop: %v", ev)
	}
	rep = e.want(e.do(e.sec, "POST", "/api/v1/resume", `{"all":true}`), 200, "resume all").obj(t)
	if len(rep["agents"].([]any)) != 1 || e.refused(tok) != "" {
		t.Errorf("resume all: %v", rep)
	}

	rep = e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-1/decommission", `{"reason":"retired"}`), 200, "decommission").obj(t)
	if len(rep["tokens_revoked"].([]any)) != 1 || e.refused(tok) == "" {
		t.Errorf("decommission: %v", rep)
	}
	e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-1/reassign", `{"to":"alice@example.com"}`), 409, "reassign decommissioned")
	e.want(e.do(e.admin, "POST", "/api/v1/agents/bot-1/tokens", `{}`), 409, "token for decommissioned")
	d = e.want(e.do(e.view, "GET", "/api/v1/agents/bot-1", ""), 200, "show").obj(t)
	if d["state"] != "decommissioned" || len(d["history"].([]any)) < 8 {
		t.Errorf("history: %v", d)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	e.setup()
	for _, c := range []struct{ name, body, want string }{
		{"malformed", `{"reason":`, "invalid JSON"},
		{"unknown field", `{"reason":"x","force":true}`, "force"},
		{"wrong type", `{"reason":42}`, "reason must be a string"},
		{"array", `["x"]`, "invalid JSON"},
		{"trailing data", `{"reason":"x"} {"reason":"y"}`, "after the JSON object"},
	} {
		r := e.want(e.do(e.sec, "POST", "/api/v1/agents/bot-1/suspend", c.body), 400, c.name)
		if msg := r.errText(t); !strings.Contains(msg, c.want) {
			t.Errorf("%s: %q does not say %q", c.name, msg, c.want)
		}
	}
	big := `{"reason":"` + strings.Repeat("x", adminapi.MaxBodyBytes) + `"}`
	e.want(e.do(e.sec, "POST", "/api/v1/agents/bot-1/suspend", big), 413, "huge body")
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/agents/bot-1/suspend", strings.NewReader("reason=x"))
	req.Header.Set("Authorization", "Bearer "+e.sec)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("form body: %v %v", res.StatusCode, err)
	}
	res.Body.Close()
	// Nothing was suspended by the bad requests.
	if a, _ := e.reg.GetAgent(context.Background(), "bot-1"); a.State != store.AgentActive {
		t.Errorf("bot-1 is %s", a.State)
	}
	e.want(e.do(e.view, "GET", "/api/v1/approvals?state=maybe", ""), 400, "bad approval state")
	e.want(e.do(e.view, "GET", "/api/v1/credentials?limit=-1", ""), 400, "bad limit")
	e.want(e.do(e.view, "GET", "/api/v1/credentials?live=perhaps", ""), 400, "bad live")
}

func TestApprovalsAndCredentials(t *testing.T) {
	e := newEnv(t)
	e.setup()
	ctx := context.Background()
	now := time.Now()
	alice, _ := e.reg.GetUserByEmail(ctx, "alice@example.com")
	if err := e.st.CreateApproval(ctx, store.Approval{ID: "apr_1", AgentID: "bot-1", OwnerID: alice.ID, DecisionID: "dec_1",
		Upstream: "acme", Tool: "place_order", ArgsDigest: strings.Repeat("a", 64), Arguments: []byte(`{"qty":10}`),
		Rule: "big-orders", Approvers: []string{"owner"}, Quorum: 1, BindingMessage: "order 10", Source: "mcp",
		State: store.ApprovalPending, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	l := e.want(e.do(e.view, "GET", "/api/v1/approvals?state=pending", ""), 200, "list approvals").list(t)
	if len(l) != 1 || l[0]["id"] != "apr_1" || l[0]["arguments"].(map[string]any)["qty"] != float64(10) {
		t.Errorf("approvals: %v", l)
	}
	if a := e.want(e.do(e.view, "GET", "/api/v1/approvals/apr_1", ""), 200, "show approval").obj(t); a["tool"] != "place_order" || a["state"] != "pending" {
		t.Errorf("approval: %v", a)
	}
	e.want(e.do(e.view, "GET", "/api/v1/approvals/nope", ""), 404, "unknown approval")

	if err := e.st.CreateCredential(ctx, store.Credential{ID: "urn:uuid:c1", AgentID: "bot-1", DecisionID: "dec_2", Upstream: "acme",
		Tool: "place_order", ArgsDigest: strings.Repeat("b", 64), KeyID: "k1", StatusList: "l1", StatusIndex: 7,
		IssuedAt: now, ExpiresAt: now.Add(5 * time.Minute), Uses: 1}); err != nil {
		t.Fatal(err)
	}
	cl := e.want(e.do(e.view, "GET", "/api/v1/credentials?live=true", ""), 200, "list credentials").list(t)
	if len(cl) != 1 || cl[0]["state"] != "live" {
		t.Errorf("credentials: %v", cl)
	}
	e.want(e.do(e.view, "POST", "/api/v1/credentials/urn:uuid:c1/revoke", `{"reason":"x"}`), 403, "viewer revokes")
	e.want(e.do(e.sec, "POST", "/api/v1/credentials/urn:uuid:c1/revoke", `{}`), 400, "revoke without reason")
	e.want(e.do(e.sec, "POST", "/api/v1/credentials/nope/revoke", `{"reason":"x"}`), 404, "revoke unknown")
	c := e.want(e.do(e.sec, "POST", "/api/v1/credentials/urn:uuid:c1/revoke", `{"reason":"fraud"}`), 200, "revoke").obj(t)
	if c["state"] != "revoked" || c["revoke_reason"] != "fraud" {
		t.Errorf("revoked: %v", c)
	}
	if ev := e.lastAudit("credential_revoked"); ev["by"] != "admin:sec" || ev["credential_id"] != "urn:uuid:c1" || ev["already_revoked"] != false {
		t.Errorf("credential_revoked: %v", ev)
	}
	if l := e.want(e.do(e.view, "GET", "/api/v1/credentials?live=true", ""), 200, "live credentials").list(t); len(l) != 0 {
		t.Errorf("live after revoke: %v", l)
	}
}

func TestTokenHelpers(t *testing.T) {
	a, err := adminapi.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := adminapi.NewToken()
	if a == b || !strings.HasPrefix(a, "ila_") || len(a) != len("ila_")+43 {
		t.Errorf("tokens %q %q", a, b)
	}
	if h := adminapi.HashHex(a); len(h) != 64 || strings.ToLower(h) != h {
		t.Errorf("hash %q", h)
	}
	if _, err := adminapi.ParseToken("x", "abc", nil); err == nil {
		t.Error("a short hash was accepted")
	}
}

// FuzzAdminRequest: decoding a request body never panics, and no body
// makes an endpoint fail with a 5xx.
func FuzzAdminRequest(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"reason":"x"}`, `{"all":true,"reason":"r"}`, `{"agent":"bot-1","reason":"r"}`, `{"owner":"alice@example.com"}`,
		`{"to":"bob@example.com"}`, `{"ttl":"1h"}`, `{"ttl":"-1h"}`, `{"email":"a@b.c","roles":["x"]}`, `{"id":"x","owner":"alice@example.com"}`,
		`{"reason":`, `[]`, `null`, `"x"`, `{"reason":"\u0000"}`, `{"roles":[1,2]}`, `{"all":"yes"}`, `{"a":{"b":{"c":[[[[]]]]}}}`,
		`{"reason":"x"}{}`, "\xff\xfe", `{"email":"` + strings.Repeat("a", 300) + `@x.y"}`,
	} {
		f.Add(s)
	}
	e := newEnv(f)
	e.setup()
	paths := []string{
		"/api/v1/users", "/api/v1/users/alice@example.com/activate", "/api/v1/agents",
		"/api/v1/agents/bot-1/resume", "/api/v1/agents/bot-1/reassign", "/api/v1/agents/bot-1/tokens",
		"/api/v1/resume", "/api/v1/credentials/nope/revoke",
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, v := range []any{&struct {
			Reason string `json:"reason"`
		}{}, &map[string]any{}, &[]string{}} {
			_ = adminapi.DecodeBody(strings.NewReader(body), v)
		}
		e.t = t
		for _, p := range paths {
			req, _ := http.NewRequest("POST", e.srv.URL+p, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+e.admin)
			req.Header.Set("Content-Type", "application/json")
			res, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode >= 500 || !json.Valid(b) {
				t.Fatalf("POST %s %q: %d %s", p, body, res.StatusCode, b)
			}
		}
	})
}
