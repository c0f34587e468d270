package store

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// ---- approvers' web push subscriptions ----

// Limits on PushSubscription fields; longer values are ErrInvalid.
const (
	// MaxPushEndpointLen bounds Endpoint (push services use a few hundred
	// bytes).
	MaxPushEndpointLen = 2048
	// MaxPushKeyLen bounds P256dh and Auth (a P-256 point is 87 base64url
	// characters, an auth secret 22).
	MaxPushKeyLen = 256
	// MaxPushUserAgentLen bounds UserAgent.
	MaxPushUserAgentLen = 512
	// MaxPushIDLen bounds ID and UserID.
	MaxPushIDLen = 256
)

// PushSubscription is one browser's Web Push subscription (RFC 8030) of a
// user, made in the console: where to send (Endpoint, a capability URL
// unique across subscriptions) and the keys that encrypt for it (RFC 8291),
// base64url as browsers give them. Endpoint and keys are secrets: keep them
// out of logs.
type PushSubscription struct {
	ID        string // opaque, unique
	UserID    string // User.ID; must exist
	Endpoint  string // unique
	P256dh    string // the browser's P-256 public key, base64url
	Auth      string // the 16-byte auth secret, base64url
	UserAgent string // the browser that subscribed, for people; may be ""
	CreatedAt time.Time
}

// CheckPushSubscription returns an error wrapping ErrInvalid when s has an
// empty ID, UserID, Endpoint, P256dh or Auth, a field over its limit, or a
// field that is not valid UTF-8 or contains a NUL byte. Backends call it
// before they write; whether the keys decode is the caller's business.
func CheckPushSubscription(s PushSubscription) error {
	for _, f := range []struct {
		name     string
		v        string
		max      int
		optional bool
	}{
		{"id", s.ID, MaxPushIDLen, false},
		{"user id", s.UserID, MaxPushIDLen, false},
		{"endpoint", s.Endpoint, MaxPushEndpointLen, false},
		{"p256dh", s.P256dh, MaxPushKeyLen, false},
		{"auth", s.Auth, MaxPushKeyLen, false},
		{"user agent", s.UserAgent, MaxPushUserAgentLen, true},
	} {
		switch {
		case f.v == "" && !f.optional:
			return fmt.Errorf("%w: push subscription %s is empty", ErrInvalid, f.name)
		case len(f.v) > f.max:
			return fmt.Errorf("%w: push subscription %s is longer than %d bytes", ErrInvalid, f.name, f.max)
		case !utf8.ValidString(f.v) || strings.ContainsRune(f.v, 0):
			return fmt.Errorf("%w: push subscription %s is not valid text", ErrInvalid, f.name)
		}
	}
	return nil
}

// PushStore is the web push part of the store (Store embeds it). None of
// its methods bumps the Generation: subscriptions are not part of any
// principal.
type PushStore interface {
	// SavePushSubscription stores s, replacing the subscription with the
	// same Endpoint if there is one (a browser that subscribes again gets
	// the same endpoint, perhaps new keys; every field is replaced, its
	// user too). ErrInvalid for a record CheckPushSubscription refuses or a
	// user that does not exist; ErrAlreadyExists when another endpoint's
	// subscription has s.ID.
	SavePushSubscription(ctx context.Context, s PushSubscription) error
	// ListPushSubscriptions returns the user's subscriptions in CreatedAt
	// (then ID) order; empty for an unknown user.
	ListPushSubscriptions(ctx context.Context, userID string) ([]PushSubscription, error)
	// DeletePushSubscription removes the subscription with this endpoint;
	// ErrNotFound if none.
	DeletePushSubscription(ctx context.Context, endpoint string) error
}
