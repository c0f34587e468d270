package notify

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultPushTTL is how long a push service keeps an undelivered message
// when WebPush.TTL is zero; a message never outlives its approval.
const DefaultPushTTL = time.Hour

// vapidLifetime is the lifetime of VAPID JWTs (RFC 8292 allows 24h at most).
const vapidLifetime = 12 * time.Hour

// recordSize is the aes128gcm record size written in the header.
const recordSize = 4096

// maxPushPlaintext keeps the request body within the 4096 octets every push
// service must accept (RFC 8030 section 7.2): 86 octets of header, one of
// padding delimiter and 16 of tag.
const maxPushPlaintext = 4096 - 86 - 1 - 16

// SubscriptionGoneError reports that the push service no longer knows a
// subscription (404 Not Found or 410 Gone): delete it. It matches
// ErrSubscriptionGone and ErrPermanent.
type SubscriptionGoneError struct {
	// Endpoint is the subscription's endpoint (a capability URL: Error
	// shows only its origin).
	Endpoint   string
	StatusCode int
}

func (e *SubscriptionGoneError) Error() string {
	return fmt.Sprintf("push subscription at %s gone (http status %d)", origin(e.Endpoint), e.StatusCode)
}

// Is makes e match ErrSubscriptionGone and ErrPermanent.
func (e *SubscriptionGoneError) Is(target error) bool {
	return target == ErrSubscriptionGone || target == ErrPermanent
}

// WebPush sends each notification to every push subscription of the
// recipient (RFC 8030), as the JSON {"title","body","url","approval_id"}
// encrypted per RFC 8291 (aes128gcm) and authenticated with VAPID (RFC
// 8292). The service worker shows it. Within a Dispatcher each subscription
// is a delivery of its own.
type WebPush struct {
	// VAPIDPrivateKey is the application server's P-256 key
	// (GenerateVAPIDKeys, ParseVAPIDPrivateKey); browsers subscribe with
	// its public half (VAPIDPublicKey) as applicationServerKey.
	VAPIDPrivateKey *ecdsa.PrivateKey
	// Subject is the contact for push services: "mailto:..." or an https
	// URL.
	Subject string
	// TTL is how long the push service keeps an undelivered message
	// (DefaultPushTTL), never past Message.Expires.
	TTL time.Duration
	// Urgency is the RFC 8030 Urgency; empty means "high".
	Urgency string
	// Client; nil means the Dispatcher's (NewHTTPClient outside one).
	Client *http.Client
	// Now is the clock; nil means the Dispatcher's (time.Now outside one).
	Now func() time.Time
}

// Name implements Channel.
func (w WebPush) Name() string { return "webpush" }

// String never shows the key.
func (w WebPush) String() string { return "webpush(" + w.Subject + ")" }

// GoString is String: keeps the private key out of %#v.
func (w WebPush) GoString() string { return w.String() }

// LogValue implements slog.LogValuer.
func (w WebPush) LogValue() slog.Value { return slog.StringValue(w.String()) }

// Validate checks the configuration.
func (w WebPush) Validate() error {
	if w.VAPIDPrivateKey == nil || w.VAPIDPrivateKey.Curve != elliptic.P256() {
		return errors.New("webpush: VAPID private key missing or not P-256")
	}
	if !strings.HasPrefix(w.Subject, "mailto:") && !strings.HasPrefix(w.Subject, "https://") {
		return errors.New("webpush: subject must be a mailto: or https: URL")
	}
	switch w.Urgency {
	case "", "very-low", "low", "normal", "high":
	default:
		return fmt.Errorf("webpush: unknown urgency %q", w.Urgency)
	}
	return nil
}

func (w WebPush) withDefaults(c *http.Client, now func() time.Time) Channel {
	if w.Client == nil {
		w.Client = c
	}
	if w.Now == nil {
		w.Now = now
	}
	return w
}

func (w WebPush) split(to Recipient) []target {
	var ts []target
	for _, s := range to.Push {
		r := to
		r.Push = []PushSubscription{s}
		ts = append(ts, target{to: r, endpoint: s.Endpoint})
	}
	return ts
}

// pushPayload is what the service worker receives.
type pushPayload struct {
	Title      string `json:"title"`
	Body       string `json:"body"`
	URL        string `json:"url,omitempty"`
	ApprovalID string `json:"approval_id"`
}

// Send implements Channel: one request per subscription, the errors joined.
func (w WebPush) Send(ctx context.Context, to Recipient, m Message) error {
	if len(to.Push) == 0 {
		return ErrNoAddress
	}
	if err := w.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	now := w.Now
	if now == nil {
		now = time.Now
	}
	ttl := w.TTL
	if ttl <= 0 {
		ttl = DefaultPushTTL
	}
	if !m.Expires.IsZero() {
		ttl = min(ttl, m.Expires.Sub(now()))
		if ttl < time.Second {
			return fmt.Errorf("webpush: %w: approval expired", ErrPermanent)
		}
	}
	payload, err := pushPlaintext(m)
	if err != nil {
		return fmt.Errorf("webpush: %w: %w", ErrPermanent, err)
	}
	c := w.Client
	if c == nil {
		c = NewHTTPClient()
	}
	var errs []error
	for _, sub := range to.Push {
		if err := w.sendOne(ctx, c, sub, payload, ttl, m.ApprovalID, now()); err != nil {
			errs = append(errs, fmt.Errorf("webpush: %w", err))
		}
	}
	return errors.Join(errs...)
}

// pushPlaintext is m's payload, its text shortened to fit one push message.
func pushPlaintext(m Message) ([]byte, error) {
	p := pushPayload{Title: clean(m.Title), Body: m.Text, URL: m.URL, ApprovalID: m.ApprovalID}
	for {
		b, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		if len(b) <= maxPushPlaintext {
			return b, nil
		}
		r := []rune(p.Body)
		if len(r) == 0 {
			return nil, errors.New("payload too large")
		}
		p.Body = string(r[:len(r)*3/4]) + "…"
		if len(r) < 8 {
			p.Body = ""
		}
	}
}

func (w WebPush) sendOne(ctx context.Context, c *http.Client, sub PushSubscription, payload []byte, ttl time.Duration, approvalID string, now time.Time) error {
	if err := checkHTTPURL(sub.Endpoint, true); err != nil {
		return fmt.Errorf("endpoint: %w: %w", ErrPermanent, err)
	}
	uaPub, auth, err := parseSubscriptionKeys(sub)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", origin(sub.Endpoint), ErrPermanent, err)
	}
	asPriv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("ephemeral key: %w", err)
	}
	salt := make([]byte, 16)
	rand.Read(salt)
	body, err := encrypt(payload, uaPub, auth, asPriv, salt)
	if err != nil {
		return fmt.Errorf("encrypt: %w: %w", ErrPermanent, err)
	}
	authz, err := vapidAuthorization(w.VAPIDPrivateKey, origin(sub.Endpoint), w.Subject, now.Add(vapidLifetime))
	if err != nil {
		return fmt.Errorf("vapid: %w: %w", ErrPermanent, err)
	}
	urgency := w.Urgency
	if urgency == "" {
		urgency = "high"
	}
	topic := sha256.Sum256([]byte(approvalID))
	h := http.Header{}
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Encoding", "aes128gcm")
	h.Set("TTL", strconv.FormatInt(int64(ttl/time.Second), 10))
	h.Set("Urgency", urgency)
	h.Set("Topic", base64.RawURLEncoding.EncodeToString(topic[:])[:32])
	h.Set("Authorization", authz)
	err = post(ctx, c, sub.Endpoint, h, body)
	var se *StatusError
	if errors.As(err, &se) && (se.StatusCode == http.StatusNotFound || se.StatusCode == http.StatusGone) {
		return &SubscriptionGoneError{Endpoint: sub.Endpoint, StatusCode: se.StatusCode}
	}
	return err
}

// parseSubscriptionKeys decodes a subscription's p256dh and auth.
func parseSubscriptionKeys(sub PushSubscription) (*ecdh.PublicKey, []byte, error) {
	p, err := decodeB64(sub.P256dh)
	if err != nil {
		return nil, nil, fmt.Errorf("p256dh: %w", err)
	}
	uaPub, err := ecdh.P256().NewPublicKey(p)
	if err != nil {
		return nil, nil, fmt.Errorf("p256dh: %w", err)
	}
	auth, err := decodeB64(sub.Auth)
	if err != nil || len(auth) != 16 {
		return nil, nil, errors.New("auth: want 16 base64url bytes")
	}
	return uaPub, auth, nil
}

// decodeB64 decodes base64url, padded or not (the standard alphabet too,
// which some clients send).
func decodeB64(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	s = strings.NewReplacer("+", "-", "/", "_").Replace(s)
	return base64.RawURLEncoding.DecodeString(s)
}

// encrypt encrypts plaintext for the subscription's key uaPub and auth
// secret per RFC 8291, as a single aes128gcm record (RFC 8188) with no
// padding, from the ephemeral key asPriv and the 16-byte salt.
func encrypt(plaintext []byte, uaPub *ecdh.PublicKey, auth []byte, asPriv *ecdh.PrivateKey, salt []byte) ([]byte, error) {
	if len(salt) != 16 || len(auth) != 16 {
		return nil, errors.New("salt and auth secret must be 16 bytes")
	}
	if len(plaintext)+1+16 > recordSize {
		return nil, errors.New("plaintext too long for one record")
	}
	ecdhSecret, err := asPriv.ECDH(uaPub)
	if err != nil {
		return nil, err
	}
	asPub := asPriv.PublicKey().Bytes()
	// RFC 8291 section 3.4: the shared secret and the auth secret give the
	// input keying material of RFC 8188.
	prkKey, err := hkdf.Extract(sha256.New, ecdhSecret, auth)
	if err != nil {
		return nil, err
	}
	keyInfo := "WebPush: info\x00" + string(uaPub.Bytes()) + string(asPub)
	ikm, err := hkdf.Expand(sha256.New, prkKey, keyInfo, 32)
	if err != nil {
		return nil, err
	}
	// RFC 8188 section 2.2 and 2.3: content-encryption key and nonce.
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return nil, err
	}
	cek, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	// Header: salt, record size, key id length and key id (as_public).
	out := make([]byte, 0, 16+4+1+len(asPub)+len(plaintext)+1+gcm.Overhead())
	out = append(out, salt...)
	out = binary.BigEndian.AppendUint32(out, recordSize)
	out = append(out, byte(len(asPub)))
	out = append(out, asPub...)
	record := append(append(make([]byte, 0, len(plaintext)+1), plaintext...), 0x02) // last record
	// Sequence number 0: the nonce as derived.
	return gcm.Seal(out, nonce, record, nil), nil
}

// vapidAuthorization is the RFC 8292 Authorization header value: "vapid
// t=<ES256 JWT>, k=<public key>".
func vapidAuthorization(priv *ecdsa.PrivateKey, aud, sub string, exp time.Time) (string, error) {
	pub, err := VAPIDPublicKey(priv)
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(struct {
		Aud string `json:"aud"`
		Exp int64  `json:"exp"`
		Sub string `json:"sub"`
	}{aud, exp.Unix(), sub})
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(`{"typ":"JWT","alg":"ES256"}`)) + "." + enc.EncodeToString(claims)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, priv, digest[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return "vapid t=" + input + "." + enc.EncodeToString(sig) + ", k=" + pub, nil
}

// GenerateVAPIDKeys returns a new VAPID key pair: the private key and the
// public key as base64url (uncompressed point), as browsers take it for
// applicationServerKey.
func GenerateVAPIDKeys() (priv *ecdsa.PrivateKey, pubB64 string, err error) {
	priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("notify: generate VAPID key: %w", err)
	}
	pubB64, err = VAPIDPublicKey(priv)
	if err != nil {
		return nil, "", err
	}
	return priv, pubB64, nil
}

// VAPIDPublicKey returns priv's public key as base64url (uncompressed
// point), the browser's applicationServerKey.
func VAPIDPublicKey(priv *ecdsa.PrivateKey) (string, error) {
	if priv == nil {
		return "", errors.New("notify: no VAPID key")
	}
	b, err := priv.PublicKey.Bytes()
	if err != nil {
		return "", fmt.Errorf("notify: VAPID public key: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// MarshalVAPIDPrivateKey encodes priv for configuration: the 32-byte scalar
// as base64url, the form web-push libraries use. The result is a secret.
func MarshalVAPIDPrivateKey(priv *ecdsa.PrivateKey) (string, error) {
	if priv == nil || priv.Curve != elliptic.P256() {
		return "", errors.New("notify: VAPID key missing or not P-256")
	}
	b, err := priv.Bytes()
	if err != nil {
		return "", fmt.Errorf("notify: marshal VAPID key: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ParseVAPIDPrivateKey decodes MarshalVAPIDPrivateKey's encoding (padding
// optional). Its errors never echo the input.
func ParseVAPIDPrivateKey(s string) (*ecdsa.PrivateKey, error) {
	b, err := decodeB64(s)
	if err != nil {
		return nil, errors.New("notify: VAPID private key: not base64url")
	}
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), b)
	if err != nil {
		return nil, errors.New("notify: VAPID private key: not a P-256 scalar")
	}
	return priv, nil
}
