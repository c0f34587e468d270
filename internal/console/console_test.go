package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	cdpwebauthn "github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
	"github.com/interlock-dev/interlock/internal/testenv"
)

// env is one console served on http://localhost:PORT over a real SQLite
// store, audit log and approval service, driven by a real headless
// Chromium with a CDP virtual authenticator.
type env struct {
	t      *testing.T
	st     *sqlite.Store
	svc    *approval.Service
	con    *Console
	origin string // http://localhost:PORT
	base   string // origin + "/console"

	alice, bob store.User // alice owns the agent and has no roles; bob is a finance-manager
	agent      store.Agent

	tab  context.Context // the browser tab
	auth cdpwebauthn.AuthenticatorID

	mu       sync.Mutex
	captured map[string][]byte // path -> last POST body seen (test hook)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	chromium := testenv.Chromium(t)
	ctx := t.Context()
	discard := slog.New(slog.DiscardHandler)
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "console.db"), Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	al, err := audit.New(ctx, audit.Options{Store: st, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	e := &env{t: t, st: st, captured: map[string][]byte{}}
	now := time.Now()
	mk := func(id, email string, roles ...string) store.User {
		u := store.User{ID: id, Email: email, Name: strings.ToUpper(id[2:3]) + id[3:], Roles: store.NormalizeRoles(roles),
			Active: true, Source: "local", CreatedAt: now, UpdatedAt: now}
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	e.alice = mk("u-alice", "alice@example.com")
	e.bob = mk("u-bob", "bob@example.com", "finance-manager")
	e.agent = store.Agent{ID: "procurement-bot", Name: "Procurement bot", OwnerID: e.alice.ID, State: store.AgentActive, CreatedAt: now, UpdatedAt: now}
	if err := st.CreateAgent(ctx, e.agent); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	e.origin = fmt.Sprintf("http://localhost:%d", port)
	e.base = e.origin + "/console"
	e.svc, err = approval.New(approval.Options{Store: st, Audit: al, ConsoleURL: e.base, PollInterval: 20 * time.Millisecond, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	e.con, err = New(Options{Store: st, Approvals: e.svc, RPID: "localhost", RPOrigins: []string{e.origin},
		SessionKey: key, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/console/", e.con.Handler())
	mux.Handle("/console", e.con.Handler())
	// Test hook: remember the body of every POST to the JSON API, to
	// replay it.
	hook := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/api/") {
			b, _ := io.ReadAll(r.Body)
			e.mu.Lock()
			e.captured[r.URL.Path] = b
			e.mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		mux.ServeHTTP(w, r)
	})
	srv := httptest.NewUnstartedServer(hook)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
	)
	tab, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(tab, 10*time.Second)
		defer cancel()
		chromedp.Cancel(cctx)
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
	})
	if err := chromedp.Do(tab); err != nil { // starts the browser, with no timeout
		t.Fatalf("starting Chromium: %v", err)
	}
	e.tab = tab
	e.auth = e.addAuthenticator(tab)
	return e
}

// addAuthenticator enables the WebAuthn domain on the tab of ctx and adds a
// platform authenticator with resident keys and user verification.
func (e *env) addAuthenticator(ctx context.Context) cdpwebauthn.AuthenticatorID {
	e.t.Helper()
	if _, err := chromedp.Call(ctx, cdpwebauthn.Enable, cdpwebauthn.EnableParams{}); err != nil {
		e.t.Fatalf("WebAuthn.enable: %v", err)
	}
	res, err := chromedp.Call(ctx, cdpwebauthn.AddVirtualAuthenticator, cdpwebauthn.AddVirtualAuthenticatorParams{
		Options: &cdpwebauthn.VirtualAuthenticatorOptions{
			Protocol: cdpwebauthn.AuthenticatorProtocolCtap2, Ctap2version: cdpwebauthn.Ctap2versionCtap21,
			Transport:      cdpwebauthn.AuthenticatorTransportInternal,
			HasResidentKey: true, HasUserVerification: true, IsUserVerified: true,
			AutomaticPresenceSimulation: true, // not omitempty: false would hang presence checks
		}})
	if err != nil {
		e.t.Fatalf("WebAuthn.addVirtualAuthenticator: %v", err)
	}
	return res.AuthenticatorID
}

// do runs actions on the tab with a timeout.
func (e *env) do(actions ...chromedp.Action[chromedp.Void]) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.tab, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		e.t.Fatalf("browser: %v\npage: %s", err, e.pageText())
	}
}

// text returns the text of the first element sel matches, waiting for
// one to exist. It reads the element in one evaluation: the page may
// replace the node between a lookup and a separate read (a re-render after
// the list loads), which made a two-step read fail with "No node with
// given id found".
func (e *env) text(sel string) string {
	e.t.Helper()
	const missing = "\x00missing"
	js := fmt.Sprintf(`(() => { const el = document.querySelector(%q); return el === null ? %q : el.innerText; })()`, sel, missing)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(e.tab, 5*time.Second)
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		cancel()
		if err == nil && s != missing {
			return s
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("text of %s: %v\npage: %s", sel, err, e.pageText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) eval(js string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.tab, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		e.t.Fatalf("evaluate %s: %v", js, err)
	}
	return s
}

// waitJS waits until the JavaScript expression is true, across
// navigations.
func (e *env) waitJS(js string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(e.tab, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+js+")"))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("waiting for %s: %v\npage: %s", js, err, e.pageText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) pageText() string {
	ctx, cancel := context.WithTimeout(e.tab, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + (document.body ? document.body.innerText : "")`))
	return s
}

// open opens an approval of alice's agent.
func (e *env) open(approvers []string, sod bool) store.Approval {
	e.t.Helper()
	digest := make([]byte, 32)
	rand.Read(digest)
	a, joined, err := e.svc.Open(e.t.Context(), approval.Request{
		Principal: store.Principal{Agent: e.agent, Owner: e.alice}, DecisionID: "dec_" + hex.EncodeToString(digest[:4]),
		Upstream: "acme", Tool: "place_order",
		Arguments:  map[string]any{"item": "laptop batteries", "quantity": 10, "unit_price_usd": 120, "ref": hex.EncodeToString(digest[:4])},
		ArgsDigest: hex.EncodeToString(digest), Rule: "approve-spend", Approvers: approvers, Quorum: 1,
		SeparationOfDuties: sod, RiskScore: 60, Source: "mcp", TTL: 10 * time.Minute,
	})
	if err != nil || joined {
		e.t.Fatalf("Open = %v (joined %v)", err, joined)
	}
	return a
}

// cookies returns the browser's cookies for the console.
func (e *env) cookies() map[string]string {
	e.t.Helper()
	res, err := chromedp.Call(e.tab, network.GetCookies, network.GetCookiesParams{URLs: []string{e.base + "/"}})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range res.Cookies {
		out[c.Name] = c.Value
	}
	return out
}

// post sends a POST from outside the browser with the browser's cookies.
// csrf "" sends no token; origin "" sends no Origin.
func (e *env) post(path, origin, csrf string, body []byte) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.base+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if csrf != "" {
		req.Header.Set("X-CSRF-Token", csrf)
	}
	for k, v := range e.cookies() {
		req.AddCookie(&http.Cookie{Name: k, Value: v})
	}
	// The server listens on 127.0.0.1; the Host stays localhost.
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) csrf() string { return e.cookies()[csrfCookie] }

func (e *env) capturedBody(path string) []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.captured[path]
}

func (e *env) get(id string) store.Approval {
	e.t.Helper()
	a, err := e.svc.Get(e.t.Context(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

func (e *env) detail(id string) {
	e.t.Helper()
	e.do(chromedp.Navigate(e.base+"/approvals/"+id), chromedp.WaitVisible(chromedp.CSS("#approval")))
}

func TestConsoleInChromium(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()

	t.Run("signed-out pages redirect to sign-in", func(t *testing.T) {
		e.t = t
		e.do(chromedp.Navigate(e.base+"/"), chromedp.WaitVisible(chromedp.CSS("#signin")))
		if loc := e.eval(`location.pathname + location.search`); loc != "/console/login?next=%2Fconsole%2F" {
			t.Errorf("signed out / went to %s", loc)
		}
	})

	var link string
	t.Run("enrol with a one-time link", func(t *testing.T) {
		e.t = t
		var err error
		link, err = e.con.CreateEnrollment(ctx, e.alice.ID, "admin-test", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(link, e.base+"/enroll/") || len(strings.TrimPrefix(link, e.base+"/enroll/")) < 43 {
			t.Fatalf("link %s", link)
		}
		e.do(chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#enroll")))
		if got := e.text("main"); !strings.Contains(got, "alice@example.com") {
			t.Errorf("enrol page does not name the user: %s", got)
		}
		e.do(chromedp.Click(chromedp.CSS("#enroll")))
		e.waitJS(`document.body.dataset.page === "list"`)
		keys, err := e.st.ListPasskeys(ctx, e.alice.ID)
		if err != nil || len(keys) != 1 {
			t.Fatalf("passkeys = %v, %v", keys, err)
		}
		if keys[0].Flags&0x04 == 0 {
			t.Errorf("registered passkey flags %#x without UV", keys[0].Flags)
		}
		creds, err := chromedp.Call(e.tab, cdpwebauthn.GetCredentials, cdpwebauthn.GetCredentialsParams{AuthenticatorID: e.auth})
		if err != nil || len(creds.Credentials) != 1 || !creds.Credentials[0].IsResidentCredential ||
			string(creds.Credentials[0].UserHandle) != e.alice.ID {
			t.Fatalf("authenticator credentials = %+v, %v", creds, err)
		}
	})

	t.Run("an enrolment link works once", func(t *testing.T) {
		e.t = t
		// A second tab with an authenticator of its own, so that the
		// browser does not refuse the ceremony itself (excludeCredentials)
		// and the server is what refuses.
		tab2, cancel := chromedp.NewContext(e.tab)
		defer cancel()
		saved, savedAuth := e.tab, e.auth
		e.tab = tab2
		defer func() { e.tab, e.auth = saved, savedAuth }()
		e.auth = e.addAuthenticator(tab2)
		e.do(chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#enroll")), chromedp.Click(chromedp.CSS("#enroll")))
		e.waitJS(`document.querySelector("#status.error") !== null`)
		if got := e.text("#status"); !strings.Contains(got, "already used") {
			t.Errorf("second use: %q", got)
		}
		if keys, _ := e.st.ListPasskeys(ctx, e.alice.ID); len(keys) != 1 {
			t.Errorf("%d passkeys after a second use", len(keys))
		}
		// A tampered link is refused outright.
		e.do(chromedp.Navigate(link[:len(link)-3]+"AAA"), chromedp.WaitVisible(chromedp.CSS("#error-message")))
		if got := e.text("#error-message"); !strings.Contains(got, "not valid") {
			t.Errorf("tampered link: %q", got)
		}
	})

	t.Run("sign out and sign in with the passkey", func(t *testing.T) {
		e.t = t
		before, _ := e.st.ListPasskeys(ctx, e.alice.ID)
		e.do(chromedp.Navigate(e.base+"/"), chromedp.WaitVisible(chromedp.CSS(".signout button")),
			chromedp.Click(chromedp.CSS(".signout button")), chromedp.WaitVisible(chromedp.CSS("#signin")))
		e.do(chromedp.Navigate(e.base+"/"), chromedp.WaitVisible(chromedp.CSS("#signin")))
		e.do(chromedp.Click(chromedp.CSS("#signin")))
		e.waitJS(`document.body.dataset.page === "list"`)
		if got := e.text(".who"); got != "alice@example.com" {
			t.Errorf("signed in as %q", got)
		}
		after, _ := e.st.ListPasskeys(ctx, e.alice.ID)
		if after[0].SignCount <= before[0].SignCount || after[0].LastUsedAt.IsZero() {
			t.Errorf("sign count %d -> %d, last used %v", before[0].SignCount, after[0].SignCount, after[0].LastUsedAt)
		}
	})

	t.Run("a new approval appears live", func(t *testing.T) {
		e.t = t
		e.do(chromedp.Navigate(e.base+"/"), chromedp.WaitVisible(chromedp.CSS("#pending")))
		e.waitJS(`document.getElementById("live").dataset.state === "live"`)
		a := e.open([]string{"owner"}, false)
		e.waitJS(fmt.Sprintf(`document.querySelector('#pending li[data-id=%q]') !== null`, a.ID))
		if got := e.text(fmt.Sprintf(`#pending li[data-id=%q]`, a.ID)); !strings.Contains(got, "acme.place_order") || !strings.Contains(got, "Procurement bot") {
			t.Errorf("list item: %q", got)
		}
		// And leaves when it is decided elsewhere.
		if _, err := e.svc.Cancel(ctx, a.ID, "test"); err != nil {
			t.Fatal(err)
		}
		e.waitJS(fmt.Sprintf(`document.querySelector('#pending li[data-id=%q]') === null`, a.ID))
	})

	t.Run("approve with the passkey", func(t *testing.T) {
		e.t = t
		a := e.open([]string{"owner"}, false)
		waited := make(chan store.Approval, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			got, _ := e.svc.Wait(wctx, a.ID)
			waited <- got
		}()
		e.detail(a.ID)
		page := e.eval(`document.querySelector("main").textContent`)
		for _, want := range []string{a.BindingMessage, "Procurement bot", "alice@example.com", "acme.place_order",
			`"laptop batteries"`, "approve-spend", "the agent's owner", "0 of 1 needed", "pending", "No votes yet"} {
			if !strings.Contains(page, want) {
				t.Errorf("detail page lacks %q", want)
			}
		}
		e.do(chromedp.Click(chromedp.CSS("#approve")))
		e.waitJS(`document.getElementById("state") && document.getElementById("state").textContent === "approved"`)
		got := <-waited
		if got.State != store.ApprovalApproved || len(got.Votes) != 1 {
			t.Fatalf("Wait = %s with %d votes", got.State, len(got.Votes))
		}
		v := got.Votes[0]
		if v.UserID != e.alice.ID || v.Email != "alice@example.com" || !v.Approve || v.Method != "webauthn-uv" {
			t.Errorf("vote = %+v", v)
		}
		checkEvidence(t, v.Evidence, got, "approve")
	})

	t.Run("deny with a reason", func(t *testing.T) {
		e.t = t
		a := e.open([]string{"owner"}, false)
		e.detail(a.ID)
		e.do(chromedp.Click(chromedp.CSS("#deny")), chromedp.WaitVisible(chromedp.CSS("#deny-reason")),
			chromedp.SendKeys(chromedp.CSS("#deny-reason"), "Too expensive this month"),
			chromedp.Click(chromedp.CSS("#deny-confirm")))
		e.waitJS(`document.getElementById("state") && document.getElementById("state").textContent === "denied"`)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		got, err := e.svc.Wait(wctx, a.ID)
		if err != nil || got.State != store.ApprovalDenied || got.Reason != "Too expensive this month" {
			t.Fatalf("Wait = %s %q, %v", got.State, got.Reason, err)
		}
		if v := got.Votes[0]; v.Approve || v.UserID != e.alice.ID || v.Method != "webauthn-uv" {
			t.Errorf("vote = %+v", v)
		}
		checkEvidence(t, got.Votes[0].Evidence, got, "deny")
	})

	t.Run("an assertion without user verification is refused", func(t *testing.T) {
		e.t = t
		a := e.open([]string{"owner"}, false)
		if _, err := chromedp.Call(e.tab, cdpwebauthn.SetResponseOverrideBits, cdpwebauthn.SetResponseOverrideBitsParams{
			AuthenticatorID: e.auth, IsBadUV: new(true)}); err != nil {
			t.Fatal(err)
		}
		defer chromedp.Call(e.tab, cdpwebauthn.SetResponseOverrideBits, cdpwebauthn.SetResponseOverrideBitsParams{AuthenticatorID: e.auth})
		e.detail(a.ID)
		e.do(chromedp.Click(chromedp.CSS("#approve")))
		e.waitJS(`document.querySelector("#status.error") !== null`)
		// go-webauthn's ValidateLogin (UV required) refused it, before the
		// console's own check of the flag.
		if got := e.text("#status"); !strings.Contains(got, "not valid for this request") {
			t.Errorf("status: %q", got)
		}
		if got := e.get(a.ID); got.State != store.ApprovalPending || len(got.Votes) != 0 {
			t.Fatalf("after a UV-less assertion: %s with %d votes", got.State, len(got.Votes))
		}
		body := e.capturedBody("/console/api/approvals/" + a.ID + "/vote")
		var req voteRequest
		if err := json.Unmarshal(body, &req); err != nil || len(req.Credential) == 0 {
			t.Fatalf("no vote was posted (%v): the browser refused instead of the server", err)
		}
	})

	t.Run("a user without the required role cannot vote", func(t *testing.T) {
		e.t = t
		a := e.open([]string{"role:finance-manager"}, false)
		e.detail(a.ID)
		if n := e.eval(`String(document.querySelectorAll("#approve, #deny").length)`); n != "0" {
			t.Errorf("%s vote buttons shown", n)
		}
		if got := e.text("#cannot-vote"); !strings.Contains(got, "finance-manager") {
			t.Errorf("notice: %q", got)
		}
		for _, p := range []string{"/challenge", "/vote"} {
			code, body := e.post("/api/approvals/"+a.ID+p, e.origin, e.csrf(), []byte(`{"decision":"approve","token":"x","credential":{}}`))
			if code != http.StatusForbidden || !strings.Contains(body, "finance-manager") {
				t.Errorf("POST %s = %d %s", p, code, body)
			}
		}
		if got := e.get(a.ID); len(got.Votes) != 0 {
			t.Errorf("%d votes recorded", len(got.Votes))
		}
	})

	t.Run("separation of duties", func(t *testing.T) {
		e.t = t
		a := e.open([]string{"owner", "role:finance-manager"}, true)
		e.detail(a.ID)
		if n := e.eval(`String(document.querySelectorAll("#approve, #deny").length)`); n != "0" {
			t.Errorf("%s vote buttons shown to the owner", n)
		}
		if got := e.text("#cannot-vote"); !strings.Contains(got, "Separation of duties") {
			t.Errorf("notice: %q", got)
		}
		code, body := e.post("/api/approvals/"+a.ID+"/challenge", e.origin, e.csrf(), []byte(`{"decision":"approve"}`))
		if code != http.StatusForbidden || !strings.Contains(body, "Separation of duties") {
			t.Errorf("POST challenge = %d %s", code, body)
		}
	})

	t.Run("an assertion for one approval cannot be replayed for another", func(t *testing.T) {
		e.t = t
		a := e.open([]string{"owner"}, false)
		b := e.open([]string{"owner"}, false)
		e.detail(a.ID)
		e.do(chromedp.Click(chromedp.CSS("#approve")))
		e.waitJS(`document.getElementById("state") && document.getElementById("state").textContent === "approved"`)
		bodyA := e.capturedBody("/console/api/approvals/" + a.ID + "/vote")
		if len(bodyA) == 0 {
			t.Fatal("the vote for A was not captured")
		}
		// A's whole request (its token names A) posted for B.
		code, resp := e.post("/api/approvals/"+b.ID+"/vote", e.origin, e.csrf(), bodyA)
		if code != http.StatusForbidden {
			t.Errorf("A's vote replayed for B = %d %s", code, resp)
		}
		// A's assertion with a fresh, valid token for B: the challenge differs.
		code, resp = e.post("/api/approvals/"+b.ID+"/challenge", e.origin, e.csrf(), []byte(`{"decision":"approve"}`))
		if code != http.StatusOK {
			t.Fatalf("challenge for B = %d %s", code, resp)
		}
		var ch struct{ Token string }
		json.Unmarshal([]byte(resp), &ch)
		var reqA voteRequest
		json.Unmarshal(bodyA, &reqA)
		forged, _ := json.Marshal(voteRequest{Decision: "approve", Token: ch.Token, Credential: reqA.Credential})
		code, resp = e.post("/api/approvals/"+b.ID+"/vote", e.origin, e.csrf(), forged)
		if code != http.StatusForbidden {
			t.Errorf("A's assertion with B's token = %d %s", code, resp)
		}
		// A's assertion for A's approve, offered as a deny of A... A is
		// decided; and B with deny: the decision is in the challenge too.
		code, resp = e.post("/api/approvals/"+b.ID+"/challenge", e.origin, e.csrf(), []byte(`{"decision":"deny"}`))
		if code != http.StatusOK {
			t.Fatalf("challenge for B = %d %s", code, resp)
		}
		json.Unmarshal([]byte(resp), &ch)
		forged, _ = json.Marshal(voteRequest{Decision: "deny", Reason: "replay", Token: ch.Token, Credential: reqA.Credential})
		if code, resp = e.post("/api/approvals/"+b.ID+"/vote", e.origin, e.csrf(), forged); code != http.StatusForbidden {
			t.Errorf("A's assertion as a deny of B = %d %s", code, resp)
		}
		// Replaying A's own request again: already decided.
		if code, resp = e.post("/api/approvals/"+a.ID+"/vote", e.origin, e.csrf(), bodyA); code != http.StatusConflict {
			t.Errorf("A's vote replayed for A = %d %s", code, resp)
		}
		if got := e.get(b.ID); got.State != store.ApprovalPending || len(got.Votes) != 0 {
			t.Errorf("B is %s with %d votes", got.State, len(got.Votes))
		}
		if got := e.get(a.ID); len(got.Votes) != 1 {
			t.Errorf("A has %d votes", len(got.Votes))
		}
	})

	t.Run("CSRF and Origin checks", func(t *testing.T) {
		e.t = t
		a := e.open([]string{"owner"}, false)
		path := "/api/approvals/" + a.ID + "/challenge"
		body := []byte(`{"decision":"approve"}`)
		if code, resp := e.post(path, e.origin, "", body); code != http.StatusForbidden {
			t.Errorf("without a CSRF token = %d %s", code, resp)
		}
		if code, resp := e.post(path, e.origin, "AAAA"+e.csrf()[4:], body); code != http.StatusForbidden {
			t.Errorf("with a wrong CSRF token = %d %s", code, resp)
		}
		if code, resp := e.post(path, "http://evil.example", e.csrf(), body); code != http.StatusForbidden {
			t.Errorf("from another Origin = %d %s", code, resp)
		}
		if code, resp := e.post(path, "", e.csrf(), body); code != http.StatusForbidden {
			t.Errorf("without Origin = %d %s", code, resp)
		}
		if code, resp := e.post("/api/login/begin", "http://localhost:1", e.csrf(), nil); code != http.StatusForbidden {
			t.Errorf("sign-in from another Origin = %d %s", code, resp)
		}
		// With both, the same request passes.
		if code, resp := e.post(path, e.origin, e.csrf(), body); code != http.StatusOK {
			t.Errorf("with token and Origin = %d %s", code, resp)
		}
	})

	t.Run("security headers and cookies", func(t *testing.T) {
		e.t = t
		resp, err := http.Get(e.base + "/login")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := map[string]string{
			"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
		}
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		var sawSession bool
		for _, c := range resp.Cookies() {
			if c.Path != "/console" || c.SameSite != http.SameSiteStrictMode {
				t.Errorf("cookie %s: path %q samesite %v", c.Name, c.Path, c.SameSite)
			}
			if c.Name == sessionCookie {
				sawSession = true
				if !c.HttpOnly {
					t.Error("the session cookie is not HttpOnly")
				}
			}
		}
		if !sawSession {
			t.Error("no session cookie")
		}
		// The pages load no inline script: the browser ran the console's
		// JS under the CSP (the tests above depend on it).
		if n := e.eval(`String(document.querySelectorAll("script:not([src])").length)`); n != "0" {
			t.Errorf("%s inline scripts", n)
		}
	})
}

// checkEvidence checks a vote's evidence: the assertion, and a challenge
// that recomputes from its inputs and the approval, and that the client
// data signed.
func checkEvidence(t *testing.T, raw []byte, a store.Approval, decision string) {
	t.Helper()
	var ev Evidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatalf("evidence %s: %v", raw, err)
	}
	if ev.ApprovalID != a.ID || ev.ArgsDigest != a.ArgsDigest || ev.Decision != decision || !ev.UserVerified ||
		ev.CredentialID == "" || ev.AuthenticatorData == "" || ev.Signature == "" || ev.UserHandle == "" || ev.RPID != "localhost" {
		t.Errorf("evidence = %+v", ev)
	}
	nonce, err := b64.DecodeString(ev.Nonce)
	if err != nil || len(nonce) != NonceSize {
		t.Fatalf("nonce %q: %v", ev.Nonce, err)
	}
	want := b64.EncodeToString(VoteChallenge(nonce, a.ID, a.ArgsDigest, decision))
	if ev.Challenge != want {
		t.Errorf("challenge %s, recomputed %s", ev.Challenge, want)
	}
	cd, err := b64.DecodeString(ev.ClientDataJSON)
	if err != nil {
		t.Fatal(err)
	}
	var client struct{ Type, Challenge, Origin string }
	if err := json.Unmarshal(cd, &client); err != nil {
		t.Fatal(err)
	}
	if client.Type != "webauthn.get" || client.Challenge != want {
		t.Errorf("client data %s does not sign the derived challenge %s", cd, want)
	}
	uh, _ := b64.DecodeString(ev.UserHandle)
	if string(uh) != "u-alice" {
		t.Errorf("user handle %q", uh)
	}
}
