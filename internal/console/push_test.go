package console

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

const testVAPIDPublic = "BKW6euVQAZcOEZ24hqXFOwSLJ2ciU_Zsix1xbJUkMpTxZm-xXNOKUt5XNQ9yUwNtRe54F8CGZfkyb0oWwBlvL0c"

// browserKeys returns a subscription's keys as a browser makes them.
func browserKeys(t *testing.T) (p256dh, auth string) {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a := make([]byte, 16)
	rand.Read(a)
	return base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes()), base64.RawURLEncoding.EncodeToString(a)
}

func subJSON(endpoint, p256dh, auth string) string {
	b, _ := json.Marshal(map[string]any{"endpoint": endpoint, "expirationTime": nil,
		"keys": map[string]string{"p256dh": p256dh, "auth": auth}})
	return string(b)
}

// pushClient makes requests to the console as a browser at origin would,
// signed in as uid ("" for a signed-out visitor), with its CSRF token.
type pushClient struct {
	t       *testing.T
	c       *Console
	origin  string
	cookies []*http.Cookie
	csrf    string
}

func newPushClient(t *testing.T, c *Console, origin, uid string) *pushClient {
	t.Helper()
	rec := httptest.NewRecorder()
	if uid != "" {
		if err := c.signIn(rec, uid); err != nil {
			t.Fatal(err)
		}
	} else {
		c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, origin+"/console/login", nil))
	}
	pc := &pushClient{t: t, c: c, origin: origin, cookies: rec.Result().Cookies()}
	for _, ck := range pc.cookies {
		if ck.Name == csrfCookie {
			pc.csrf = ck.Value
		}
	}
	if pc.csrf == "" {
		t.Fatal("no CSRF cookie")
	}
	return pc
}

// do sends method path with body; edit may change the request first.
func (pc *pushClient) do(method, path, body string, edit ...func(*http.Request)) *httptest.ResponseRecorder {
	pc.t.Helper()
	req := httptest.NewRequest(method, pc.origin+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", pc.origin)
	req.Header.Set("X-CSRF-Token", pc.csrf)
	req.Header.Set("User-Agent", "Mozilla/5.0 (Linux; Android 15) Chrome/140")
	for _, ck := range pc.cookies {
		req.AddCookie(ck)
	}
	for _, e := range edit {
		e(req)
	}
	rec := httptest.NewRecorder()
	pc.c.ServeHTTP(rec, req)
	return rec
}

func listPush(t *testing.T, st store.Store, uid string) []store.PushSubscription {
	t.Helper()
	subs, err := st.ListPushSubscriptions(t.Context(), uid)
	if err != nil {
		t.Fatal(err)
	}
	return subs
}

func TestPushAPIOff(t *testing.T) {
	const origin = "https://gw.example.com"
	c, st := newHeadless(t, origin)
	alice := newPushClient(t, c, origin, "u-alice")
	p, a := browserKeys(t)
	for _, method := range []string{http.MethodPost, http.MethodDelete} {
		if rec := alice.do(method, "/console/api/push", subJSON("https://push.example.com/x", p, a)); rec.Code != http.StatusNotFound {
			t.Errorf("%s /api/push without a VAPID key = %d %s, want 404", method, rec.Code, rec.Body)
		}
	}
	if subs := listPush(t, st, "u-alice"); len(subs) != 0 {
		t.Errorf("subscriptions stored: %v", subs)
	}
	rec := alice.do(http.MethodGet, "/console/", "")
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), "push-enable") || strings.Contains(rec.Body.String(), "data-key") {
		t.Errorf("list page without a VAPID key = %d, shows the notifications button:\n%s", rec.Code, rec.Body)
	}
}

func TestPushAPI(t *testing.T) {
	const origin = "https://gw.example.com"
	c, st := newHeadless(t, origin)
	c.o.VAPIDPublicKey = testVAPIDPublic
	ctx := t.Context()
	now := time.Now()
	if err := st.CreateUser(ctx, store.User{ID: "u-bob", Email: "bob@example.com", Active: true, Source: "local", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	alice := newPushClient(t, c, origin, "u-alice")
	bob := newPushClient(t, c, origin, "u-bob")
	anon := newPushClient(t, c, origin, "")

	// The list page offers the button, with the key to subscribe with.
	rec := alice.do(http.MethodGet, "/console/", "")
	if body := rec.Body.String(); rec.Code != http.StatusOK || !strings.Contains(body, `id="push-enable"`) ||
		!strings.Contains(body, `data-key="`+testVAPIDPublic+`"`) || strings.Contains(body, "<script>") {
		t.Fatalf("list page = %d:\n%s", rec.Code, body)
	}

	p, a := browserKeys(t)
	const ep = "https://fcm.googleapis.com/fcm/send/abc:def"
	good := subJSON(ep, p, a)

	// Refused before anything is looked at.
	for name, tc := range map[string]struct {
		pc   *pushClient
		edit func(*http.Request)
		want int
	}{
		"no Origin":      {alice, func(r *http.Request) { r.Header.Del("Origin") }, http.StatusForbidden},
		"foreign Origin": {alice, func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") }, http.StatusForbidden},
		"no CSRF token":  {alice, func(r *http.Request) { r.Header.Del("X-CSRF-Token") }, http.StatusForbidden},
		"wrong CSRF":     {alice, func(r *http.Request) { r.Header.Set("X-CSRF-Token", bob.csrf) }, http.StatusForbidden},
		"no cookies":     {alice, func(r *http.Request) { r.Header.Del("Cookie") }, http.StatusForbidden},
		"signed out":     {anon, func(*http.Request) {}, http.StatusUnauthorized},
	} {
		for _, method := range []string{http.MethodPost, http.MethodDelete} {
			if rec := tc.pc.do(method, "/console/api/push", good, tc.edit); rec.Code != tc.want {
				t.Errorf("%s %s = %d %s, want %d", name, method, rec.Code, rec.Body, tc.want)
			}
		}
	}
	if subs := listPush(t, st, "u-alice"); len(subs) != 0 {
		t.Fatalf("refused requests stored %v", subs)
	}

	// Validation.
	short := base64.RawURLEncoding.EncodeToString(make([]byte, 15))
	offCurve := base64.RawURLEncoding.EncodeToString(append([]byte{4}, make([]byte, 64)...))
	for name, body := range map[string]string{
		"not JSON":            "{",
		"http endpoint":       subJSON("http://push.example.com/x", p, a),
		"relative endpoint":   subJSON("/push/x", p, a),
		"no endpoint":         subJSON("", p, a),
		"IP endpoint":         subJSON("https://10.0.0.1/push", p, a),
		"IPv6 endpoint":       subJSON("https://[::1]/push", p, a),
		"localhost endpoint":  subJSON("https://localhost/push", p, a),
		"internal endpoint":   subJSON("https://metadata.google.internal/push", p, a),
		"user info":           subJSON("https://u:p@push.example.com/x", p, a),
		"long endpoint":       subJSON("https://push.example.com/"+strings.Repeat("x", store.MaxPushEndpointLen), p, a),
		"no keys":             `{"endpoint":"` + ep + `"}`,
		"p256dh not base64":   subJSON(ep, "not base64!", a),
		"p256dh too short":    subJSON(ep, p[:40], a),
		"p256dh off curve":    subJSON(ep, offCurve, a),
		"p256dh padded":       subJSON(ep, p+"=", a),
		"auth 15 bytes":       subJSON(ep, p, short),
		"auth empty":          subJSON(ep, p, ""),
		"auth standard b64 +": subJSON(ep, p, "++++++++++++++++++++++"),
	} {
		if rec := alice.do(http.MethodPost, "/console/api/push", body); rec.Code != http.StatusBadRequest {
			t.Errorf("%s: POST = %d %s, want 400", name, rec.Code, rec.Body)
		} else if !strings.Contains(rec.Body.String(), `"error"`) {
			t.Errorf("%s: body %s", name, rec.Body)
		}
	}
	if subs := listPush(t, st, "u-alice"); len(subs) != 0 {
		t.Fatalf("invalid subscriptions stored %v", subs)
	}

	// A good one is stored for the signed-in user.
	if rec := alice.do(http.MethodPost, "/console/api/push", good); rec.Code != http.StatusOK {
		t.Fatalf("POST = %d %s", rec.Code, rec.Body)
	}
	subs := listPush(t, st, "u-alice")
	if len(subs) != 1 || subs[0].Endpoint != ep || subs[0].P256dh != p || subs[0].Auth != a ||
		!strings.Contains(subs[0].UserAgent, "Android") || subs[0].ID == "" || subs[0].CreatedAt.IsZero() {
		t.Fatalf("stored %+v", subs)
	}
	// Subscribing again (new keys) replaces it.
	p2, a2 := browserKeys(t)
	if rec := alice.do(http.MethodPost, "/console/api/push", subJSON(ep, p2, a2)); rec.Code != http.StatusOK {
		t.Fatalf("POST again = %d %s", rec.Code, rec.Body)
	}
	if subs := listPush(t, st, "u-alice"); len(subs) != 1 || subs[0].P256dh != p2 || subs[0].Auth != a2 {
		t.Fatalf("after re-subscription %+v", subs)
	}

	// Bob cannot unsubscribe Alice's browser.
	if rec := bob.do(http.MethodDelete, "/console/api/push", `{"endpoint":"`+ep+`"}`); rec.Code != http.StatusNotFound {
		t.Errorf("DELETE of another user's subscription = %d %s", rec.Code, rec.Body)
	}
	if subs := listPush(t, st, "u-alice"); len(subs) != 1 {
		t.Fatalf("another user deleted the subscription: %+v", subs)
	}
	if rec := alice.do(http.MethodDelete, "/console/api/push", `{"endpoint":"https://push.example.com/unknown"}`); rec.Code != http.StatusNotFound {
		t.Errorf("DELETE of an unknown subscription = %d %s", rec.Code, rec.Body)
	}
	if rec := alice.do(http.MethodDelete, "/console/api/push", `{"endpoint":"`+ep+`"}`); rec.Code != http.StatusOK {
		t.Errorf("DELETE = %d %s", rec.Code, rec.Body)
	}
	if subs := listPush(t, st, "u-alice"); len(subs) != 0 {
		t.Fatalf("after DELETE %+v", subs)
	}

	// One user keeps at most MaxPushSubscriptionsPerUser browsers: the
	// oldest go.
	clock := now
	c.o.Now = func() time.Time { return clock }
	for i := range MaxPushSubscriptionsPerUser + 2 {
		clock = clock.Add(time.Second)
		p, a := browserKeys(t)
		if rec := alice.do(http.MethodPost, "/console/api/push", subJSON(fmt.Sprintf("https://push.example.com/%d", i), p, a)); rec.Code != http.StatusOK {
			t.Fatalf("POST %d = %d %s", i, rec.Code, rec.Body)
		}
	}
	subs = listPush(t, st, "u-alice")
	if len(subs) != MaxPushSubscriptionsPerUser || subs[0].Endpoint != "https://push.example.com/2" {
		t.Errorf("after %d subscriptions: %d kept, oldest %s", MaxPushSubscriptionsPerUser+2, len(subs), subs[0].Endpoint)
	}
}

func TestManifestAndServiceWorker(t *testing.T) {
	const origin = "https://gw.example.com"
	c, _ := newHeadless(t, origin)
	get := func(path string) *httptest.ResponseRecorder {
		t.Helper()
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, origin+path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s = %d", path, rec.Code)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: CSP %q", path, csp)
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", path)
		}
		return rec
	}

	rec := get("/console/manifest.webmanifest")
	if ct := rec.Header().Get("Content-Type"); ct != "application/manifest+json" {
		t.Errorf("manifest Content-Type %q", ct)
	}
	var m struct {
		Name, StartURL, Scope, Display string
		Icons                          []struct{ Src, Sizes, Type string }
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	json.Unmarshal(rec.Body.Bytes(), &raw)
	if m.Name != "interlock approvals" || raw["start_url"] != "/console/" || raw["scope"] != "/console/" || m.Display != "standalone" {
		t.Errorf("manifest %s", rec.Body)
	}
	sizes := map[string]bool{}
	for _, ic := range m.Icons {
		r := get(ic.Src)
		if ct := r.Header().Get("Content-Type"); ct != ic.Type {
			t.Errorf("icon %s: Content-Type %q, manifest says %q", ic.Src, ct, ic.Type)
		}
		sizes[ic.Sizes] = true
	}
	if !sizes["192x192"] || !sizes["512x512"] {
		t.Errorf("icon sizes %v: installability needs 192 and 512", sizes)
	}

	rec = get("/console/sw.js")
	if ct := rec.Header().Get("Content-Type"); ct != "text/javascript; charset=utf-8" {
		t.Errorf("sw.js Content-Type %q", ct)
	}
	for _, want := range []string{`addEventListener("push"`, "showNotification", `addEventListener("notificationclick"`, "openWindow"} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("sw.js lacks %s", want)
		}
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("sw.js Cache-Control %q: browsers must check for a new worker", cc)
	}

	// Every page links the manifest and loads no inline script.
	rec = get("/console/login")
	body := rec.Body.String()
	if !strings.Contains(body, `<link rel="manifest" href="/console/manifest.webmanifest">`) || strings.Contains(body, "<script>") {
		t.Errorf("login page:\n%s", body)
	}
}
