package console

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
)

// newHeadless returns a console over a real store, for tests that need no
// browser.
func newHeadless(t *testing.T, origin string) (*Console, *sqlite.Store) {
	t.Helper()
	ctx := t.Context()
	discard := slog.New(slog.DiscardHandler)
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "c.db"), Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	al, err := audit.New(ctx, audit.Options{Store: st, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	svc, err := approval.New(approval.Options{Store: st, Audit: al, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := st.CreateUser(ctx, store.User{ID: "u-alice", Email: "alice@example.com", Active: true, Source: "local", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(origin)
	c, err := New(Options{Store: st, Approvals: svc, RPID: u.Hostname(), RPOrigins: []string{origin},
		SessionKey: bytes.Repeat([]byte("s"), 32), Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	return c, st
}

func TestNewValidates(t *testing.T) {
	c, _ := newHeadless(t, "https://gw.example.com")
	base := Options{Store: c.o.Store, Approvals: c.o.Approvals, RPID: "gw.example.com",
		RPOrigins: []string{"https://gw.example.com"}, SessionKey: bytes.Repeat([]byte("k"), 32)}
	for name, mod := range map[string]func(o *Options){
		"short key":        func(o *Options) { o.SessionKey = o.SessionKey[:31] },
		"no RP ID":         func(o *Options) { o.RPID = "" },
		"no origins":       func(o *Options) { o.RPOrigins = nil },
		"origin path":      func(o *Options) { o.RPOrigins = []string{"https://gw.example.com/x"} },
		"origin elsewhere": func(o *Options) { o.RPOrigins = []string{"https://evil.example"} },
		"no store":         func(o *Options) { o.Store = nil },
	} {
		o := base
		o.RPOrigins = append([]string(nil), base.RPOrigins...)
		mod(&o)
		if _, err := New(o); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := New(base); err != nil {
		t.Fatalf("valid options: %v", err)
	}
}

func TestCookiesSecureOnHTTPS(t *testing.T) {
	c, _ := newHeadless(t, "https://gw.example.com")
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "https://gw.example.com/console/login", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET login = %d", rec.Code)
	}
	cookies := rec.Result().Cookies()
	if len(cookies) != 2 {
		t.Fatalf("cookies %v", cookies)
	}
	for _, ck := range cookies {
		if !ck.Secure || ck.Path != "/console" || ck.SameSite != http.SameSiteStrictMode {
			t.Errorf("cookie %s: secure %v path %q samesite %v", ck.Name, ck.Secure, ck.Path, ck.SameSite)
		}
		if ck.Name == sessionCookie && !ck.HttpOnly {
			t.Error("session cookie not HttpOnly")
		}
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	if body := rec.Body.String(); strings.Contains(body, "<script>") || !strings.Contains(body, `src="/console/static/console.js"`) {
		t.Error("the page has inline script or lacks console.js")
	}
}

func TestSignedOut(t *testing.T) {
	c, _ := newHeadless(t, "http://localhost:8080")
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://localhost:8080/console/approvals/apr_1", nil))
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/console/login?next=%2Fconsole%2Fapprovals%2Fapr_1" {
		t.Errorf("signed-out detail page = %d %s", rec.Code, rec.Header().Get("Location"))
	}
	for _, p := range []string{"/console/api/pending", "/console/events"} {
		rec = httptest.NewRecorder()
		c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://localhost:8080"+p, nil))
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("signed-out %s = %d", p, rec.Code)
		}
	}
	// A session cookie signed with another key is ignored.
	other, _ := newHeadless(t, "http://localhost:8080")
	other.seal = newSealer(bytes.Repeat([]byte("x"), 32))
	rec = httptest.NewRecorder()
	other.signIn(rec, "u-alice")
	req := httptest.NewRequest(http.MethodGet, "http://localhost:8080/console/api/pending", nil)
	for _, ck := range rec.Result().Cookies() {
		req.AddCookie(ck)
	}
	rec = httptest.NewRecorder()
	c.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("forged session = %d", rec.Code)
	}
	// A cookie under the right key signs in.
	rec = httptest.NewRecorder()
	c.signIn(rec, "u-alice")
	req = httptest.NewRequest(http.MethodGet, "http://localhost:8080/console/api/pending", nil)
	for _, ck := range rec.Result().Cookies() {
		req.AddCookie(ck)
	}
	rec = httptest.NewRecorder()
	c.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("signed-in /api/pending = %d %s", rec.Code, rec.Body)
	}
}

func TestCreateEnrollment(t *testing.T) {
	c, st := newHeadless(t, "https://gw.example.com")
	ctx := t.Context()
	link, err := c.CreateEnrollment(ctx, "u-alice", "admin", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tok, ok := strings.CutPrefix(link, "https://gw.example.com/console/enroll/")
	if !ok {
		t.Fatalf("link %s", link)
	}
	raw, err := b64.DecodeString(tok)
	if err != nil || len(raw) < 32 {
		t.Fatalf("token %q: %v", tok, err)
	}
	// The store knows the token by its SHA-256 only, and uses it once.
	if _, err := st.UseEnrollment(ctx, []byte(tok), time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UseEnrollment by the raw token = %v", err)
	}
	e, err := st.UseEnrollment(ctx, tokenHash(tok), time.Now())
	if err != nil || e.UserID != "u-alice" || e.CreatedBy != "admin" {
		t.Fatalf("UseEnrollment = %+v, %v", e, err)
	}
	if _, err := st.UseEnrollment(ctx, tokenHash(tok), time.Now()); !errors.Is(err, store.ErrEnrollmentUsed) {
		t.Errorf("second use = %v", err)
	}
	if _, err := c.CreateEnrollment(ctx, "u-nobody", "admin", time.Hour); err == nil {
		t.Error("an enrolment for an unknown user")
	}
	// An expired link is refused by its page before any ceremony.
	c.o.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, link, nil))
	if rec.Code != http.StatusGone {
		t.Errorf("expired link page = %d", rec.Code)
	}
}

// Security and admin users see the recent security notices on the list
// page; other users do not.
func TestSecurityNoticesOnTheList(t *testing.T) {
	c, st := newHeadless(t, "http://localhost:8080")
	ctx := t.Context()
	now := time.Now()
	if err := st.CreateUser(ctx, store.User{ID: "u-sec", Email: "sec@example.com", Roles: []string{"security"}, Active: true, Source: "local", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	c.o.Notices = func(context.Context) ([]Notice, error) {
		return []Notice{{Time: now, Text: "agent ghost-bot orphaned (owner left)"}}, nil
	}
	page := func(user string) string {
		rec := httptest.NewRecorder()
		c.signIn(rec, user)
		req := httptest.NewRequest(http.MethodGet, "http://localhost:8080/console/", nil)
		for _, ck := range rec.Result().Cookies() {
			req.AddCookie(ck)
		}
		rec = httptest.NewRecorder()
		c.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("list page for %s = %d", user, rec.Code)
		}
		return rec.Body.String()
	}
	if got := page("u-sec"); !strings.Contains(got, "Security notices") || !strings.Contains(got, "agent ghost-bot orphaned (owner left)") {
		t.Errorf("a security user's list page lacks the notices:\n%s", got)
	}
	if got := page("u-alice"); strings.Contains(got, "Security notices") {
		t.Error("a user without the role sees the security notices")
	}
}
