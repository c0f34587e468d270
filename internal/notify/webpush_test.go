package notify

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func b64u(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("base64url %q: %v", s, err)
	}
	return b
}

// browserSub is a push subscription as a browser makes it: a P-256 key pair
// and a 16-byte auth secret.
type browserSub struct {
	priv *ecdh.PrivateKey
	auth []byte
	sub  PushSubscription
}

func newBrowserSub(t *testing.T, endpoint string) browserSub {
	t.Helper()
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth := make([]byte, 16)
	rand.Read(auth)
	enc := base64.RawURLEncoding
	return browserSub{priv: priv, auth: auth, sub: PushSubscription{
		Endpoint: endpoint,
		P256dh:   enc.EncodeToString(priv.PublicKey().Bytes()),
		Auth:     enc.EncodeToString(auth),
	}}
}

// HKDF (RFC 5869) from HMAC, written apart from the package's crypto/hkdf
// use.
func testHKDFExtract(salt, ikm []byte) []byte {
	m := hmac.New(sha256.New, salt)
	m.Write(ikm)
	return m.Sum(nil)
}

func testHKDFExpand(prk, info []byte, n int) []byte {
	m := hmac.New(sha256.New, prk)
	m.Write(info)
	m.Write([]byte{1})
	return m.Sum(nil)[:n] // n <= 32: one block
}

// decryptPush is the user agent's side of RFC 8291 / RFC 8188: it parses
// the aes128gcm header, derives the key and nonce with the subscription's
// private key and auth secret, opens the records and strips the padding.
func decryptPush(body []byte, uaPriv *ecdh.PrivateKey, auth []byte) ([]byte, error) {
	if len(body) < 21 {
		return nil, errors.New("short header")
	}
	salt := body[:16]
	rs := int(binary.BigEndian.Uint32(body[16:20]))
	idlen := int(body[20])
	if len(body) < 21+idlen || idlen != 65 || rs < 18 {
		return nil, fmt.Errorf("bad header: idlen %d rs %d", idlen, rs)
	}
	keyid := body[21 : 21+idlen]
	ct := body[21+idlen:]
	asPub, err := ecdh.P256().NewPublicKey(keyid)
	if err != nil {
		return nil, fmt.Errorf("keyid: %w", err)
	}
	shared, err := uaPriv.ECDH(asPub)
	if err != nil {
		return nil, err
	}
	keyInfo := append(append([]byte("WebPush: info\x00"), uaPriv.PublicKey().Bytes()...), keyid...)
	ikm := testHKDFExpand(testHKDFExtract(auth, shared), keyInfo, 32)
	prk := testHKDFExtract(salt, ikm)
	cek := testHKDFExpand(prk, []byte("Content-Encoding: aes128gcm\x00"), 16)
	nonce := testHKDFExpand(prk, []byte("Content-Encoding: nonce\x00"), 12)
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	var out []byte
	for seq := uint64(0); len(ct) > 0; seq++ {
		n := min(rs, len(ct))
		iv := bytes.Clone(nonce)
		for i := range 8 {
			iv[11-i] ^= byte(seq >> (8 * i))
		}
		rec, err := gcm.Open(nil, iv, ct[:n], nil)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", seq, err)
		}
		ct = ct[n:]
		rec = bytes.TrimRight(rec, "\x00")
		if len(rec) == 0 {
			return nil, errors.New("no delimiter")
		}
		last := len(ct) == 0
		if d := rec[len(rec)-1]; (last && d != 2) || (!last && d != 1) {
			return nil, fmt.Errorf("record %d: delimiter %d", seq, d)
		}
		out = append(out, rec[:len(rec)-1]...)
	}
	return out, nil
}

// RFC 8291 Appendix A.
const (
	rfcPlaintext = "When I grow up, I want to be a watermelon"
	rfcASPublic  = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
	rfcASPrivate = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
	rfcUAPublic  = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
	rfcUAPrivate = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
	rfcSalt      = "DGv6ra1nlYgDCS1FRnbzlw"
	rfcAuth      = "BTBZMqHH6r4Tts7J_aSIgg"
	rfcBody      = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
)

func TestEncryptRFC8291Vector(t *testing.T) {
	asPriv, err := ecdh.P256().NewPrivateKey(b64u(t, rfcASPrivate))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(asPriv.PublicKey().Bytes(), b64u(t, rfcASPublic)) {
		t.Fatal("as_public does not match as_private")
	}
	uaPub, auth, err := parseSubscriptionKeys(PushSubscription{P256dh: rfcUAPublic, Auth: rfcAuth})
	if err != nil {
		t.Fatal(err)
	}
	got, err := encrypt([]byte(rfcPlaintext), uaPub, auth, asPriv, b64u(t, rfcSalt))
	if err != nil {
		t.Fatal(err)
	}
	if want := b64u(t, rfcBody); !bytes.Equal(got, want) {
		t.Errorf("encrypt:\n got %s\nwant %s", base64.RawURLEncoding.EncodeToString(got), rfcBody)
	}
	// The test's decryption, on the RFC's own message.
	uaPriv, err := ecdh.P256().NewPrivateKey(b64u(t, rfcUAPrivate))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := decryptPush(b64u(t, rfcBody), uaPriv, b64u(t, rfcAuth))
	if err != nil || string(pt) != rfcPlaintext {
		t.Errorf("decryptPush(vector) = %q, %v", pt, err)
	}
}

// pushService is an httptest push service: it answers each endpoint path
// with a fixed status (201 by default) and records the requests.
type pushService struct {
	srv    *httptest.Server
	status map[string]int
	mu     sync.Mutex
	reqs   map[string][]receivedRequest
}

func newPushService(t *testing.T, status map[string]int) *pushService {
	ps := &pushService{status: status, reqs: map[string][]receivedRequest{}}
	ps.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ps.mu.Lock()
		ps.reqs[r.URL.Path] = append(ps.reqs[r.URL.Path], receivedRequest{header: r.Header.Clone(), body: body})
		ps.mu.Unlock()
		code, ok := ps.status[r.URL.Path]
		if !ok {
			code = http.StatusCreated
		}
		w.WriteHeader(code)
	}))
	ps.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // idle connections closed at the end
	ps.srv.StartTLS()
	t.Cleanup(ps.srv.Close)
	return ps
}

func (ps *pushService) requests(path string) []receivedRequest {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.reqs[path]
}

// checkVAPID verifies the Authorization header as a push service would: the
// ES256 JWT against the key in k=, its aud, exp and sub. It returns k.
func checkVAPID(t *testing.T, authz, wantAud, wantSub string, now time.Time) string {
	t.Helper()
	rest, ok := strings.CutPrefix(authz, "vapid ")
	if !ok {
		t.Fatalf("Authorization %q: not vapid", authz)
	}
	params := map[string]string{}
	for p := range strings.SplitSeq(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		params[k] = v
	}
	jwt, k := params["t"], params["k"]
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), b64u(t, k))
	if err != nil {
		t.Fatalf("k: %v", err)
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("jwt %q", jwt)
	}
	var hdr map[string]string
	if err := json.Unmarshal(b64u(t, parts[0]), &hdr); err != nil || hdr["alg"] != "ES256" || hdr["typ"] != "JWT" {
		t.Errorf("jwt header %v, %v", hdr, err)
	}
	sig := b64u(t, parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if len(sig) != 64 || !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatal("jwt signature does not verify with k")
	}
	var claims struct {
		Aud string `json:"aud"`
		Exp int64  `json:"exp"`
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(b64u(t, parts[1]), &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Aud != wantAud {
		t.Errorf("aud = %q, want %q", claims.Aud, wantAud)
	}
	if exp := time.Unix(claims.Exp, 0); !exp.After(now) || exp.After(now.Add(24*time.Hour)) {
		t.Errorf("exp = %v, want within 24h of %v", exp, now)
	}
	if claims.Sub != wantSub {
		t.Errorf("sub = %q, want %q", claims.Sub, wantSub)
	}
	return k
}

func TestWebPushDelivery(t *testing.T) {
	ps := newPushService(t, nil)
	vapid, vapidPub, err := GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	subs := []browserSub{
		newBrowserSub(t, ps.srv.URL+"/push/phone"),
		newBrowserSub(t, ps.srv.URL+"/push/laptop"),
	}
	var rec recorder
	d := newTestDispatcher(t, Options{
		Channels:   []Channel{WebPush{VAPIDPrivateKey: vapid, Subject: "mailto:ops@example.com", TTL: 2 * time.Hour}},
		Record:     rec.record,
		Now:        fixedNow,
		HTTPClient: ps.srv.Client(),
		Backoff:    noBackoff,
	})
	m := testMessage()
	m.Expires = testNow.Add(30 * time.Minute) // caps the TTL
	d.Notify(m, []Recipient{
		{UserID: "u1", Push: []PushSubscription{subs[0].sub, subs[1].sub}},
		{UserID: "u2"}, // no subscription: nothing to do
	})
	closeDispatcher(t, d)

	ds := rec.all()
	if len(ds) != 2 {
		t.Fatalf("records = %+v, want one per subscription", ds)
	}
	endpoints := map[string]bool{}
	for _, r := range ds {
		if !r.OK || r.Channel != "webpush" || r.Recipient != "u1" {
			t.Errorf("record %+v", r)
		}
		endpoints[r.Endpoint] = true
	}
	u, _ := url.Parse(ps.srv.URL)
	aud := "https://" + u.Host
	for _, bs := range subs {
		if !endpoints[bs.sub.Endpoint] {
			t.Errorf("no record for %s", bs.sub.Endpoint)
		}
		path := strings.TrimPrefix(bs.sub.Endpoint, ps.srv.URL)
		reqs := ps.requests(path)
		if len(reqs) != 1 {
			t.Fatalf("%s: %d requests, want 1", path, len(reqs))
		}
		r := reqs[0]
		for k, want := range map[string]string{
			"Content-Encoding": "aes128gcm",
			"Content-Type":     "application/octet-stream",
			"Urgency":          "high",
			"TTL":              strconv.Itoa(30 * 60),
		} {
			if got := r.header.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", path, k, got, want)
			}
		}
		if topic := r.header.Get("Topic"); len(topic) != 32 {
			t.Errorf("Topic = %q, want 32 base64url characters", topic)
		}
		if k := checkVAPID(t, r.header.Get("Authorization"), aud, "mailto:ops@example.com", testNow); k != vapidPub {
			t.Errorf("k = %q, want the VAPID public key %q", k, vapidPub)
		}
		if len(r.body) > 4096 {
			t.Errorf("body %d bytes, over 4096", len(r.body))
		}
		pt, err := decryptPush(r.body, bs.priv, bs.auth)
		if err != nil {
			t.Fatalf("%s: decrypt: %v", path, err)
		}
		var p map[string]string
		if err := json.Unmarshal(pt, &p); err != nil {
			t.Fatalf("payload %q: %v", pt, err)
		}
		want := map[string]string{"title": m.Title, "body": m.Text, "url": m.URL, "approval_id": m.ApprovalID}
		if fmt.Sprint(p) != fmt.Sprint(want) {
			t.Errorf("payload = %v, want %v", p, want)
		}
		// Another subscription's keys cannot open it.
		other := subs[0]
		if other.sub.Endpoint == bs.sub.Endpoint {
			other = subs[1]
		}
		if _, err := decryptPush(r.body, other.priv, other.auth); err == nil {
			t.Error("decrypted with another subscription's keys")
		}
	}
}

func TestWebPushGone(t *testing.T) {
	for _, code := range []int{http.StatusGone, http.StatusNotFound} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			ps := newPushService(t, map[string]int{"/push/old": code, "/push/flaky": http.StatusServiceUnavailable})
			vapid, _, err := GenerateVAPIDKeys()
			if err != nil {
				t.Fatal(err)
			}
			old := newBrowserSub(t, ps.srv.URL+"/push/old")
			good := newBrowserSub(t, ps.srv.URL+"/push/good")
			flaky := newBrowserSub(t, ps.srv.URL+"/push/flaky")
			var rec recorder
			d := newTestDispatcher(t, Options{
				Channels:    []Channel{WebPush{VAPIDPrivateKey: vapid, Subject: "https://interlock.example.com"}},
				Record:      rec.record,
				Now:         fixedNow,
				HTTPClient:  ps.srv.Client(),
				Backoff:     noBackoff,
				MaxAttempts: 3,
			})
			d.Notify(testMessage(), []Recipient{{UserID: "u1", Push: []PushSubscription{old.sub, good.sub, flaky.sub}}})
			closeDispatcher(t, d)

			if n := len(ps.requests("/push/old")); n != 1 {
				t.Errorf("gone subscription: %d requests, want 1 (no retry)", n)
			}
			if n := len(ps.requests("/push/good")); n != 1 {
				t.Errorf("good subscription: %d requests, want 1 (not resent)", n)
			}
			if n := len(ps.requests("/push/flaky")); n != 3 {
				t.Errorf("flaky subscription: %d requests, want 3", n)
			}
			var gone []Delivery
			for _, r := range rec.all() {
				if r.Gone {
					gone = append(gone, r)
				}
			}
			if len(gone) != 1 || gone[0].Endpoint != old.sub.Endpoint || !gone[0].Permanent || !gone[0].Final || gone[0].Attempt != 1 {
				t.Errorf("gone records = %+v", gone)
			}

			// Send itself reports it distinctly.
			err = WebPush{VAPIDPrivateKey: vapid, Subject: "mailto:a@example.com", Client: ps.srv.Client(), Now: fixedNow}.
				Send(context.Background(), Recipient{Push: []PushSubscription{old.sub}}, testMessage())
			var ge *SubscriptionGoneError
			if !errors.Is(err, ErrSubscriptionGone) || !errors.Is(err, ErrPermanent) || !errors.As(err, &ge) ||
				ge.Endpoint != old.sub.Endpoint || ge.StatusCode != code {
				t.Errorf("Send = %v, want a SubscriptionGoneError", err)
			}
			if strings.Contains(err.Error(), "/push/old") {
				t.Errorf("error shows the endpoint path: %v", err)
			}
		})
	}
}

func TestWebPushRejects(t *testing.T) {
	vapid, _, err := GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	ok := newBrowserSub(t, "https://push.example.com/x").sub
	wp := WebPush{VAPIDPrivateKey: vapid, Subject: "mailto:a@example.com", Now: fixedNow}
	tests := []struct {
		name string
		wp   WebPush
		sub  PushSubscription
		m    func(Message) Message
		want error
	}{
		{"http endpoint", wp, PushSubscription{Endpoint: "http://push.example.com/x", P256dh: ok.P256dh, Auth: ok.Auth}, nil, ErrPermanent},
		{"bad p256dh", wp, PushSubscription{Endpoint: ok.Endpoint, P256dh: "AAAA", Auth: ok.Auth}, nil, ErrPermanent},
		{"short auth", wp, PushSubscription{Endpoint: ok.Endpoint, P256dh: ok.P256dh, Auth: "AAAA"}, nil, ErrPermanent},
		{"expired", wp, ok, func(m Message) Message { m.Expires = testNow; return m }, ErrPermanent},
		{"no key", WebPush{Subject: "mailto:a@example.com"}, ok, nil, ErrPermanent},
		{"bad subject", WebPush{VAPIDPrivateKey: vapid, Subject: "ops@example.com"}, ok, nil, ErrPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testMessage()
			if tt.m != nil {
				m = tt.m(m)
			}
			err := tt.wp.Send(context.Background(), Recipient{Push: []PushSubscription{tt.sub}}, m)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Send = %v, want %v", err, tt.want)
			}
		})
	}
	if err := wp.Send(context.Background(), Recipient{}, testMessage()); !errors.Is(err, ErrNoAddress) {
		t.Errorf("no subscriptions: %v, want ErrNoAddress", err)
	}
}

func TestPushPayloadFits(t *testing.T) {
	m := testMessage()
	m.Text = strings.Repeat("ü", 5000)
	pt, err := pushPlaintext(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(pt) > maxPushPlaintext {
		t.Fatalf("payload %d bytes, over %d", len(pt), maxPushPlaintext)
	}
	var p map[string]string
	if err := json.Unmarshal(pt, &p); err != nil || p["url"] != m.URL || !strings.HasSuffix(p["body"], "…") {
		t.Errorf("payload %v, %v", p, err)
	}
}

func TestVAPIDKeys(t *testing.T) {
	priv, pub, err := GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	if b := b64u(t, pub); len(b) != 65 || b[0] != 4 {
		t.Errorf("public key %q: want 65-byte uncompressed point", pub)
	}
	s, err := MarshalVAPIDPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if len(b64u(t, s)) != 32 {
		t.Errorf("private key encoding %d bytes, want 32", len(b64u(t, s)))
	}
	for _, enc := range []string{s, s + "=", strings.NewReplacer("-", "+", "_", "/").Replace(s)} {
		back, err := ParseVAPIDPrivateKey(enc)
		if err != nil {
			t.Fatalf("ParseVAPIDPrivateKey: %v", err)
		}
		if !back.Equal(priv) {
			t.Error("round trip changed the key")
		}
		if p2, _ := VAPIDPublicKey(back); p2 != pub {
			t.Error("public key differs after round trip")
		}
	}
	for _, bad := range []string{"", "!!!", base64.RawURLEncoding.EncodeToString(make([]byte, 32)), base64.RawURLEncoding.EncodeToString(make([]byte, 31))} {
		if _, err := ParseVAPIDPrivateKey(bad); err == nil {
			t.Errorf("ParseVAPIDPrivateKey(%q) accepted", bad)
		}
	}
}
