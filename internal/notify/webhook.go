package notify

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Webhook headers and event type.
const (
	SignatureHeader = "Interlock-Signature"
	DeliveryHeader  = "Interlock-Delivery"
	EventHeader     = "Interlock-Event"
	EventApproval   = "approval.requested"
	// EventSecurity is a security notice: agents were stopped (their
	// owner deactivated, an emergency stop, a decommission).
	EventSecurity = "security.agents_stopped"
)

// DefaultSignatureTolerance is VerifySignature's tolerance when given none.
const DefaultSignatureTolerance = 5 * time.Minute

var (
	// ErrInvalidSignature means a signature header is malformed or no v1
	// signature in it matches the body.
	ErrInvalidSignature = errors.New("invalid webhook signature")
	// ErrStaleSignature means the signature's timestamp is outside the
	// tolerance (a replay, or clocks apart).
	ErrStaleSignature = errors.New("webhook signature timestamp outside tolerance")
)

// Webhook POSTs each notification as a signed JSON event:
//
//	{"type":"approval.requested","delivery_id":...,"approval_id":...,
//	 "title":...,"text":...,"url":...,"expires_at":...,
//	 "recipient":{"user_id":...,"email":...,"name":...},"data":{...}}
//
// with the headers Interlock-Signature (t=<unix seconds>,v1=<hex
// HMAC-SHA256(Secret, "<t>.<body>")>, see VerifySignature),
// Interlock-Delivery (the delivery id, the same on every attempt) and
// Interlock-Event. Any 2xx is success; a 3xx or 4xx other than 408 and 429
// is a permanent failure.
type Webhook struct {
	URL string
	// Secret is the HMAC key shared with the receiver (required).
	Secret []byte
	// Client; nil means the Dispatcher's (NewHTTPClient outside one).
	Client *http.Client
	// Now is the clock; nil means the Dispatcher's (time.Now outside one).
	Now func() time.Time
}

// Name implements Channel.
func (w Webhook) Name() string { return "webhook" }

// String shows the URL's origin only, never the secret.
func (w Webhook) String() string { return "webhook(" + origin(w.URL) + ")" }

// GoString is String: keeps the secret out of %#v.
func (w Webhook) GoString() string { return w.String() }

// LogValue implements slog.LogValuer.
func (w Webhook) LogValue() slog.Value { return slog.StringValue(w.String()) }

// Validate checks the configuration.
func (w Webhook) Validate() error {
	if err := checkHTTPURL(w.URL, false); err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	if len(w.Secret) == 0 {
		return errors.New("webhook: no secret")
	}
	return nil
}

func (w Webhook) withDefaults(c *http.Client, now func() time.Time) Channel {
	if w.Client == nil {
		w.Client = c
	}
	if w.Now == nil {
		w.Now = now
	}
	return w
}

type webhookRecipient struct {
	UserID string `json:"user_id,omitempty"`
	Email  string `json:"email,omitempty"`
	Name   string `json:"name,omitempty"`
}

type webhookEvent struct {
	Type       string           `json:"type"`
	DeliveryID string           `json:"delivery_id"`
	ApprovalID string           `json:"approval_id"`
	Title      string           `json:"title,omitempty"`
	Text       string           `json:"text"`
	URL        string           `json:"url,omitempty"`
	ExpiresAt  *time.Time       `json:"expires_at,omitempty"`
	Recipient  webhookRecipient `json:"recipient"`
	Data       map[string]any   `json:"data,omitempty"`
}

// Send implements Channel.
func (w Webhook) Send(ctx context.Context, to Recipient, m Message) error {
	if err := w.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	typ := m.Event
	if typ == "" {
		typ = EventApproval
	}
	ev := webhookEvent{
		Type:       typ,
		DeliveryID: m.DeliveryID,
		ApprovalID: m.ApprovalID,
		Title:      m.Title,
		Text:       m.Text,
		URL:        m.URL,
		Recipient:  webhookRecipient{UserID: to.UserID, Email: to.Email, Name: to.Name},
		Data:       m.Data,
	}
	if ev.DeliveryID == "" {
		ev.DeliveryID = rand.Text()
	}
	if !m.Expires.IsZero() {
		exp := m.Expires.UTC()
		ev.ExpiresAt = &exp
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("webhook: encode event: %w: %w", ErrPermanent, err)
	}
	now := w.Now
	if now == nil {
		now = time.Now
	}
	c := w.Client
	if c == nil {
		c = NewHTTPClient()
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(SignatureHeader, Sign(w.Secret, now(), body))
	h.Set(DeliveryHeader, ev.DeliveryID)
	h.Set(EventHeader, typ)
	if err := post(ctx, c, w.URL, h, body); err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	return nil
}

// Sign returns the Interlock-Signature header value for body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// maxSignatureHeader bounds the header VerifySignature accepts.
const maxSignatureHeader = 4096

// VerifySignature checks an Interlock-Signature header against the raw
// request body, for receivers of Webhook events: the header must hold one
// t=<unix seconds> within tolerance of now (DefaultSignatureTolerance when
// tolerance <= 0) and at least one v1=<hex> (several are allowed, for secret
// rotation) equal to HMAC-SHA256(secret, "<t>.<body>"). Other keys are
// ignored. It returns an error wrapping ErrInvalidSignature or
// ErrStaleSignature. Receivers should also drop repeated Interlock-Delivery
// ids.
func VerifySignature(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if len(secret) == 0 {
		return fmt.Errorf("%w: no secret", ErrInvalidSignature)
	}
	if len(header) > maxSignatureHeader {
		return fmt.Errorf("%w: header too long", ErrInvalidSignature)
	}
	if tolerance <= 0 {
		tolerance = DefaultSignatureTolerance
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return fmt.Errorf("%w: malformed element", ErrInvalidSignature)
		}
		switch k {
		case "t":
			if ts != "" {
				return fmt.Errorf("%w: repeated timestamp", ErrInvalidSignature)
			}
			if v == "" || len(v) > 19 || strings.Trim(v, "0123456789") != "" {
				return fmt.Errorf("%w: malformed timestamp", ErrInvalidSignature)
			}
			ts = v
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return fmt.Errorf("%w: malformed v1 signature", ErrInvalidSignature)
			}
			sigs = append(sigs, b)
		}
	}
	if ts == "" {
		return fmt.Errorf("%w: no timestamp", ErrInvalidSignature)
	}
	if len(sigs) == 0 {
		return fmt.Errorf("%w: no v1 signature", ErrInvalidSignature)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: malformed timestamp", ErrInvalidSignature)
	}
	want := mac(secret, ts, body)
	match := false
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			match = true
		}
	}
	if !match {
		return fmt.Errorf("%w: no signature matches", ErrInvalidSignature)
	}
	// Compared in seconds, so that no conversion overflows.
	if d := now.Unix() - sec; d > int64(tolerance/time.Second) || -d > int64(tolerance/time.Second) {
		return fmt.Errorf("%w: timestamp %d, now %d", ErrStaleSignature, sec, now.Unix())
	}
	return nil
}
