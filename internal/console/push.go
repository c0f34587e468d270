package console

import (
	"crypto/ecdh"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/interlock-dev/interlock/internal/store"
)

// Web Push: the console is an installable app (a web app manifest and a
// service worker under BasePath) and approvers may subscribe a browser to
// notifications of approval requests. The browser subscribes with
// Options.VAPIDPublicKey and posts the subscription to /api/push; the
// gateway's notify.WebPush channel sends to it, and the service worker
// shows the message and opens the request's page when it is tapped.

// MaxPushSubscriptionsPerUser is how many browsers one user may subscribe;
// subscribing one more drops the oldest.
const MaxPushSubscriptionsPerUser = 10

func (c *Console) pushRoutes() {
	b := c.o.BasePath
	c.mux.HandleFunc("GET "+b+"/manifest.webmanifest", c.manifest)
	c.mux.HandleFunc("GET "+b+"/sw.js", c.serviceWorker)
	c.mux.Handle("POST "+b+"/api/push", c.api(c.pushSubscribe))
	c.mux.Handle("DELETE "+b+"/api/push", c.api(c.pushUnsubscribe))
}

// manifest serves the web app manifest that makes the console installable.
func (c *Console) manifest(w http.ResponseWriter, r *http.Request) {
	b := c.o.BasePath
	m := map[string]any{
		"name":             "interlock approvals",
		"short_name":       "interlock",
		"description":      "Approve or deny what your AI agents ask to do.",
		"id":               b + "/",
		"start_url":        b + "/",
		"scope":            b + "/",
		"display":          "standalone",
		"background_color": "#ffffff",
		"theme_color":      "#0b5fff",
		"icons": []map[string]string{
			{"src": b + "/static/icon-192.png", "sizes": "192x192", "type": "image/png", "purpose": "any"},
			{"src": b + "/static/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "any"},
			{"src": b + "/static/icon.svg", "sizes": "any", "type": "image/svg+xml", "purpose": "any"},
		},
	}
	w.Header().Set("Content-Type", "application/manifest+json")
	w.Header().Set("Cache-Control", "no-cache")
	json.NewEncoder(w).Encode(m)
}

// serviceWorker serves sw.js from BasePath, so that its scope is the whole
// console (a worker under /static/ could only control /static/).
func (c *Console) serviceWorker(w http.ResponseWriter, r *http.Request) {
	b, err := assets.ReadFile("static/sw.js")
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(b)
}

// pushSubscriptionJSON is PushSubscription.toJSON() as browsers give it.
type pushSubscriptionJSON struct {
	Endpoint string `json:"endpoint"`
	Keys     struct {
		P256dh string `json:"p256dh"`
		Auth   string `json:"auth"`
	} `json:"keys"`
}

// pushSubscribe stores the signed-in user's subscription of this browser.
func (c *Console) pushSubscribe(w http.ResponseWriter, r *http.Request, s *session) error {
	if c.o.VAPIDPublicKey == "" {
		return errorf(http.StatusNotFound, "Notifications are not set up on this gateway.", nil)
	}
	u, err := c.signedIn(r, s, false)
	if err != nil {
		return err
	}
	var in pushSubscriptionJSON
	if err := readJSON(r, &in); err != nil {
		return err
	}
	if err := checkPushEndpoint(in.Endpoint); err != nil {
		return errorf(http.StatusBadRequest, "The subscription's endpoint is not acceptable: "+err.Error(), nil)
	}
	if err := checkPushKeys(in.Keys.P256dh, in.Keys.Auth); err != nil {
		return errorf(http.StatusBadRequest, "The subscription's keys are not acceptable: "+err.Error(), nil)
	}
	ctx := r.Context()
	// Make room: the oldest subscriptions of this user go first.
	subs, err := c.o.Store.ListPushSubscriptions(ctx, u.ID)
	if err != nil {
		return err
	}
	known := false
	for _, p := range subs {
		known = known || p.Endpoint == in.Endpoint
	}
	for i := 0; !known && len(subs)-i >= MaxPushSubscriptionsPerUser; i++ {
		if err := c.o.Store.DeletePushSubscription(ctx, subs[i].Endpoint); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	ua := strings.ToValidUTF8(strings.ReplaceAll(r.UserAgent(), "\x00", ""), "")
	for len(ua) > store.MaxPushUserAgentLen {
		ua = strings.ToValidUTF8(ua[:store.MaxPushUserAgentLen], "")
	}
	sub := store.PushSubscription{ID: "push_" + randomID(12), UserID: u.ID, Endpoint: in.Endpoint,
		P256dh: in.Keys.P256dh, Auth: in.Keys.Auth, UserAgent: ua, CreatedAt: c.o.Now()}
	if err := c.o.Store.SavePushSubscription(ctx, sub); err != nil {
		if errors.Is(err, store.ErrInvalid) {
			return errorf(http.StatusBadRequest, "The subscription is not acceptable.", err)
		}
		return err
	}
	c.log.Info("console: push subscription saved", "user", u.ID, "push_service", pushOrigin(in.Endpoint))
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	return nil
}

// pushUnsubscribe deletes one of the signed-in user's subscriptions.
func (c *Console) pushUnsubscribe(w http.ResponseWriter, r *http.Request, s *session) error {
	if c.o.VAPIDPublicKey == "" {
		return errorf(http.StatusNotFound, "Notifications are not set up on this gateway.", nil)
	}
	u, err := c.signedIn(r, s, false)
	if err != nil {
		return err
	}
	var in struct {
		Endpoint string `json:"endpoint"`
	}
	if err := readJSON(r, &in); err != nil {
		return err
	}
	ctx := r.Context()
	subs, err := c.o.Store.ListPushSubscriptions(ctx, u.ID)
	if err != nil {
		return err
	}
	mine := false
	for _, p := range subs {
		mine = mine || p.Endpoint == in.Endpoint
	}
	if !mine {
		return errorf(http.StatusNotFound, "This browser is not subscribed to your notifications.", nil)
	}
	if err := c.o.Store.DeletePushSubscription(ctx, in.Endpoint); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	c.log.Info("console: push subscription deleted", "user", u.ID, "push_service", pushOrigin(in.Endpoint))
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	return nil
}

// checkPushEndpoint accepts an absolute https URL with a host name that is
// neither an IP address nor local (the gateway will POST to it: it must
// not be a way to reach internal services).
func checkPushEndpoint(s string) error {
	if s == "" {
		return errors.New("it is missing")
	}
	if len(s) > store.MaxPushEndpointLen {
		return errors.New("it is too long")
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Opaque != "" {
		return errors.New("it must be an https URL")
	}
	if u.User != nil || u.Fragment != "" {
		return errors.New("it must not carry user info or a fragment")
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if net.ParseIP(host) != nil || strings.HasPrefix(u.Host, "[") {
		return errors.New("its host must be a name, not an IP address")
	}
	if host == "" || host == "localhost" || !strings.Contains(host, ".") ||
		strings.HasSuffix(host, ".localhost") || strings.HasSuffix(host, ".local") || strings.HasSuffix(host, ".internal") {
		return errors.New("its host must be a public push service")
	}
	return nil
}

// checkPushKeys accepts p256dh, a P-256 public key (65-byte uncompressed
// point), and auth, a 16-byte secret, both base64url without padding as
// browsers give them.
func checkPushKeys(p256dh, auth string) error {
	enc := base64.RawURLEncoding
	p, err := enc.DecodeString(p256dh)
	if err != nil || len(p) != 65 {
		return errors.New("p256dh must be a P-256 public key in base64url (65 bytes)")
	}
	if _, err := ecdh.P256().NewPublicKey(p); err != nil {
		return errors.New("p256dh is not a point on P-256")
	}
	a, err := enc.DecodeString(auth)
	if err != nil || len(a) != 16 {
		return errors.New("auth must be 16 bytes in base64url")
	}
	return nil
}

// pushOrigin is an endpoint's origin, for logs (the full URL is a
// capability).
func pushOrigin(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}
