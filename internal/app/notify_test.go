package app

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/notify"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
)

// pushReq is one request the test push service received.
type pushReq struct {
	header http.Header
	body   []byte
}

// testPushService is an https push service: it answers 201, or 410 Gone
// under /gone/, and keeps what it received by path.
type testPushService struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs map[string][]pushReq
}

func newTestPushService(t *testing.T) *testPushService {
	ps := &testPushService{reqs: map[string][]pushReq{}}
	ps.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ps.mu.Lock()
		ps.reqs[r.URL.Path] = append(ps.reqs[r.URL.Path], pushReq{header: r.Header.Clone(), body: body})
		ps.mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/gone/") {
			w.WriteHeader(http.StatusGone)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	ps.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	ps.srv.StartTLS()
	t.Cleanup(ps.srv.Close)
	return ps
}

func (ps *testPushService) received(path string) []pushReq {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.reqs[path]
}

// testBrowser is a browser's side of a push subscription.
type testBrowser struct {
	priv *ecdh.PrivateKey
	auth []byte
	sub  store.PushSubscription
}

func newTestBrowser(t *testing.T, id, userID, endpoint string) testBrowser {
	t.Helper()
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth := make([]byte, 16)
	rand.Read(auth)
	enc := base64.RawURLEncoding
	return testBrowser{priv: priv, auth: auth, sub: store.PushSubscription{ID: id, UserID: userID, Endpoint: endpoint,
		P256dh: enc.EncodeToString(priv.PublicKey().Bytes()), Auth: enc.EncodeToString(auth), CreatedAt: time.Now()}}
}

// decrypt is the browser's side of RFC 8291 / RFC 8188 (one record).
func (b testBrowser) decrypt(body []byte) ([]byte, error) {
	if len(body) < 21+65 || body[20] != 65 {
		return nil, errors.New("bad aes128gcm header")
	}
	salt, keyid, ct := body[:16], body[21:86], body[86:]
	asPub, err := ecdh.P256().NewPublicKey(keyid)
	if err != nil {
		return nil, err
	}
	shared, err := b.priv.ECDH(asPub)
	if err != nil {
		return nil, err
	}
	prkKey, _ := hkdf.Extract(sha256.New, shared, b.auth)
	ikm, _ := hkdf.Expand(sha256.New, prkKey, "WebPush: info\x00"+string(b.priv.PublicKey().Bytes())+string(keyid), 32)
	prk, _ := hkdf.Extract(sha256.New, ikm, salt)
	cek, _ := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	nonce, _ := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if rs := binary.BigEndian.Uint32(body[16:20]); int(rs) < len(ct) {
		return nil, fmt.Errorf("more than one record (rs %d, %d bytes)", rs, len(ct))
	}
	pt, err := gcm.Open(nil, nonce, ct, nil)
	if err != nil {
		return nil, err
	}
	pt = bytes.TrimRight(pt, "\x00")
	if len(pt) == 0 || pt[len(pt)-1] != 2 {
		return nil, errors.New("no last-record delimiter")
	}
	return pt[:len(pt)-1], nil
}

// TestApprovalWebPush: a new approval request reaches each approver's
// subscribed browsers as an encrypted, VAPID-signed Web Push message that
// names the request; a subscription the push service reports gone is
// deleted; nobody else is sent anything.
func TestApprovalWebPush(t *testing.T) {
	ctx := t.Context()
	discard := slog.New(slog.DiscardHandler)
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "i.db"), Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now()
	owner := store.User{ID: "u-owner", Email: "owner@example.com", Active: true, Source: "local", CreatedAt: now, UpdatedAt: now}
	fin := store.User{ID: "u-fin", Email: "fin@example.com", Roles: []string{"finance"}, Active: true, Source: "local", CreatedAt: now, UpdatedAt: now}
	agent := store.Agent{ID: "procurement-bot", Name: "procurement", OwnerID: owner.ID, State: store.AgentActive, CreatedAt: now, UpdatedAt: now}
	for _, u := range []store.User{owner, fin} {
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreateAgent(ctx, agent); err != nil {
		t.Fatal(err)
	}

	ps := newTestPushService(t)
	phone := newTestBrowser(t, "push-phone", fin.ID, ps.srv.URL+"/push/phone")
	gone := newTestBrowser(t, "push-old", fin.ID, ps.srv.URL+"/gone/old-laptop")
	ownerPhone := newTestBrowser(t, "push-owner", owner.ID, ps.srv.URL+"/push/owner")
	for _, b := range []testBrowser{phone, gone, ownerPhone} {
		if err := st.SavePushSubscription(ctx, b.sub); err != nil {
			t.Fatal(err)
		}
	}

	vapid, vapidPub, err := notify.GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	vapidKey, _ := notify.MarshalVAPIDPrivateKey(vapid)
	cfg := config.Notifications{WebPush: config.WebPush{VAPIDPrivateKey: vapidKey, Subject: "mailto:security@example.com"}}
	if got := vapidPublicKey(cfg.WebPush); got != vapidPub {
		t.Errorf("vapidPublicKey = %q, want %q", got, vapidPub)
	}
	var (
		mu      sync.Mutex
		records []audit.Event
	)
	disp := newDispatcher(cfg, st, func(ev audit.Event) {
		mu.Lock()
		records = append(records, ev)
		mu.Unlock()
	}, discard, time.Now, ps.srv.Client())
	if disp == nil {
		t.Fatal("no dispatcher with web_push configured")
	}
	al, err := audit.New(ctx, audit.Options{Store: st, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	const consoleURL = "https://gw.example.com/console"
	apr, err := approval.New(approval.Options{Store: st, Audit: al, Notifier: newApprovalNotifier(disp, cfg, st, discard),
		ConsoleURL: consoleURL, DefaultTTL: 10 * time.Minute, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	const msg = "Your procurement agent wants to place a $1,200 order for laptop batteries. Approve or deny?"
	a, joined, err := apr.Open(ctx, approval.Request{
		Principal: store.Principal{Agent: agent, Owner: owner}, DecisionID: "dec-1",
		Upstream: "acme", Tool: "place_order", Arguments: map[string]any{"amount": 1200},
		ArgsDigest: strings.Repeat("ab", 32), Rule: "big-orders", Approvers: []string{"role:finance"},
		Quorum: 1, SeparationOfDuties: true, Message: msg, RiskScore: 70, Source: "mcp",
	})
	if err != nil || joined {
		t.Fatalf("Open = %v, joined %v", err, joined)
	}
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := disp.Close(closeCtx); err != nil {
		t.Fatal(err)
	}

	// The approver's phone got the message, encrypted for it.
	got := ps.received("/push/phone")
	if len(got) != 1 {
		t.Fatalf("the phone received %d messages, want 1", len(got))
	}
	h := got[0].header
	if h.Get("Content-Encoding") != "aes128gcm" || h.Get("TTL") == "" || !strings.HasPrefix(h.Get("Authorization"), "vapid t=") ||
		!strings.HasSuffix(h.Get("Authorization"), ", k="+vapidPub) {
		t.Errorf("push headers %v", h)
	}
	if bytes.Contains(got[0].body, []byte(a.ID)) || bytes.Contains(got[0].body, []byte("place_order")) {
		t.Error("the push body is not encrypted")
	}
	pt, err := phone.decrypt(got[0].body)
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	var p struct {
		Title, Body, URL string
		ApprovalID       string `json:"approval_id"`
	}
	if err := json.Unmarshal(pt, &p); err != nil {
		t.Fatalf("payload %s: %v", pt, err)
	}
	if p.ApprovalID != a.ID || p.URL != consoleURL+"/approvals/"+a.ID || p.Body != msg || !strings.Contains(p.Title, "acme.place_order") {
		t.Errorf("payload %s (approval %s)", pt, a.ID)
	}
	// Nobody else's browser was sent anything: the owner is not an approver.
	if n := len(ps.received("/push/owner")); n != 0 {
		t.Errorf("the owner's phone received %d messages", n)
	}

	// The subscription the push service reports gone was tried once and
	// deleted; the others stay.
	if n := len(ps.received("/gone/old-laptop")); n != 1 {
		t.Errorf("the gone subscription was tried %d times, want 1", n)
	}
	subs, err := st.ListPushSubscriptions(ctx, fin.ID)
	if err != nil || len(subs) != 1 || subs[0].Endpoint != phone.sub.Endpoint {
		t.Errorf("the approver's subscriptions after delivery: %+v, %v", subs, err)
	}
	if subs, _ := st.ListPushSubscriptions(ctx, owner.ID); len(subs) != 1 {
		t.Errorf("the owner's subscription was touched: %+v", subs)
	}

	// Every attempt is recorded, never with the endpoint (a capability).
	mu.Lock()
	defer mu.Unlock()
	var ok, goneRec int
	for _, ev := range records {
		b, _ := json.Marshal(ev.Data)
		if ev.Type != "notification" || strings.Contains(string(b), "/push/") || strings.Contains(string(b), "old-laptop") {
			t.Errorf("record %s %s", ev.Type, b)
		}
		d, _ := ev.Data.(map[string]any)
		if d["ok"] == true && d["channel"] == "webpush" && d["approval_id"] == a.ID {
			ok++
		}
		if d["subscription_gone"] == true {
			goneRec++
		}
	}
	if ok != 1 || goneRec != 1 {
		t.Errorf("records: %d delivered, %d gone; want 1 and 1 (%v)", ok, goneRec, records)
	}
}

// TestNoWebPushWithoutConfig: without web_push there is no channel, no
// public key for the console, and approvers' subscriptions are not read.
func TestNoWebPushWithoutConfig(t *testing.T) {
	if d := NewDispatcher(config.Notifications{}, nil, nil, nil, nil); d != nil {
		t.Error("a dispatcher without any channel")
	}
	if k := vapidPublicKey(config.WebPush{}); k != "" {
		t.Errorf("public key %q without web_push", k)
	}
	n := newApprovalNotifier(nil, config.Notifications{}, failingPushStore{}, nil)
	if n.push != nil {
		t.Error("the notifier reads push subscriptions with web push off")
	}
}

type failingPushStore struct{}

func (failingPushStore) ListPushSubscriptions(context.Context, string) ([]store.PushSubscription, error) {
	return nil, errors.New("must not be called")
}

func (failingPushStore) DeletePushSubscription(context.Context, string) error {
	return errors.New("must not be called")
}
