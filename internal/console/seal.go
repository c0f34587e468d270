package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Errors of sealed values.
var (
	errBadSeal     = errors.New("console: sealed value is malformed or its signature does not match")
	errSealExpired = errors.New("console: sealed value has expired")
)

var b64 = base64.RawURLEncoding

// sealer signs small values (cookies, ceremony state, vote tokens, CSRF
// tokens, enrolment links) with HMAC-SHA-256 under keys derived from the
// session key, one key per purpose, so that a value made for one purpose
// is never accepted for another. Values are signed, not encrypted: they
// hold nothing secret (ids, random challenges, expiry).
type sealer struct {
	mu   sync.Mutex
	key  []byte
	keys map[string][]byte
}

func newSealer(key []byte) *sealer {
	return &sealer{key: append([]byte(nil), key...), keys: map[string][]byte{}}
}

// subkey returns HMAC(key, "interlock/console/v1/" + purpose).
func (s *sealer) subkey(purpose string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[purpose]; ok {
		return k
	}
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("interlock/console/v1/" + purpose))
	k := m.Sum(nil)
	s.keys[purpose] = k
	return k
}

func (s *sealer) mac(purpose string, data []byte) []byte {
	m := hmac.New(sha256.New, s.subkey(purpose))
	m.Write(data)
	return m.Sum(nil)
}

// envelope is what a sealed value carries: its expiry and the value.
type envelope struct {
	Exp  int64           `json:"exp"`
	Data json.RawMessage `json:"d"`
}

// seal returns base64url(JSON{exp, d: v}) "." base64url(HMAC).
func (s *sealer) seal(purpose string, v any, exp time.Time) (string, error) {
	d, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	body, err := json.Marshal(envelope{Exp: exp.Unix(), Data: d})
	if err != nil {
		return "", err
	}
	p := b64.EncodeToString(body)
	return p + "." + b64.EncodeToString(s.mac(purpose, []byte(p))), nil
}

// open checks tok's signature for purpose and its expiry at now, and
// decodes its value into v.
func (s *sealer) open(purpose, tok string, now time.Time, v any) error {
	p, sig, ok := strings.Cut(tok, ".")
	if !ok || p == "" || len(tok) > 8192 {
		return errBadSeal
	}
	got, err := b64.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(purpose, []byte(p))) {
		return errBadSeal
	}
	body, err := b64.DecodeString(p)
	if err != nil {
		return errBadSeal
	}
	var e envelope
	if err := json.Unmarshal(body, &e); err != nil {
		return errBadSeal
	}
	if now.Unix() >= e.Exp {
		return errSealExpired
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return errBadSeal
	}
	return nil
}

// csrfToken is the CSRF token of session id sid: base64url(HMAC(csrf key,
// sid)). It is sent in the page and in a cookie, and every POST must echo
// it (header X-CSRF-Token or form field csrf).
func (s *sealer) csrfToken(sid string) string {
	return b64.EncodeToString(s.mac("csrf", []byte(sid)))
}

// checkCSRF compares the token a request sent with the cookie it carries
// and with the token of its session, in constant time.
func (s *sealer) checkCSRF(sid, sent, cookie string) bool {
	want := []byte(s.csrfToken(sid))
	okSent := subtle.ConstantTimeCompare([]byte(sent), want) == 1
	okCookie := subtle.ConstantTimeCompare([]byte(cookie), want) == 1
	return sid != "" && okSent && okCookie
}

// Enrolment link tokens: base64url(random 32 bytes ‖ expiry (8 bytes, Unix
// seconds, big-endian) ‖ user id ‖ first 16 bytes of HMAC over the rest).
// The store keeps only SHA-256 of the token string; the signed user id and
// expiry let the page show whom the link is for (and refuse an expired
// one) before the ceremony, without a store lookup.
const (
	linkRandom = 32
	linkMAC    = 16
)

func (s *sealer) enrollToken(userID string, exp time.Time) (string, error) {
	buf := make([]byte, linkRandom, linkRandom+8+len(userID)+linkMAC)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	buf = binary.BigEndian.AppendUint64(buf, uint64(exp.Unix()))
	buf = append(buf, userID...)
	buf = append(buf, s.mac("enroll-link", buf)[:linkMAC]...)
	return b64.EncodeToString(buf), nil
}

// parseEnrollToken returns the user id and expiry of a link token whose
// signature holds.
func (s *sealer) parseEnrollToken(tok string) (userID string, exp time.Time, err error) {
	if len(tok) > 1024 {
		return "", time.Time{}, errBadSeal
	}
	raw, err := b64.DecodeString(tok)
	if err != nil || len(raw) < linkRandom+8+1+linkMAC {
		return "", time.Time{}, errBadSeal
	}
	body, sig := raw[:len(raw)-linkMAC], raw[len(raw)-linkMAC:]
	if !hmac.Equal(sig, s.mac("enroll-link", body)[:linkMAC]) {
		return "", time.Time{}, errBadSeal
	}
	exp = time.Unix(int64(binary.BigEndian.Uint64(body[linkRandom:linkRandom+8])), 0)
	return string(body[linkRandom+8:]), exp, nil
}

// tokenHash is what the store keeps of an enrolment token.
func tokenHash(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

// randomID returns n random bytes, base64url-encoded.
func randomID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("console: crypto/rand: %v", err))
	}
	return b64.EncodeToString(b)
}

// usedSet remembers single-use values (ceremony challenges, vote nonces)
// until they expire. It is per process: see the package comment for what
// that means with several replicas.
type usedSet struct {
	mu        sync.Mutex
	m         map[string]time.Time
	lastPrune time.Time
}

// use marks key used until exp and reports whether it was unused.
func (u *usedSet) use(key string, exp, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]time.Time{}
	}
	if now.Sub(u.lastPrune) > time.Minute {
		for k, e := range u.m {
			if !now.Before(e) {
				delete(u.m, k)
			}
		}
		u.lastPrune = now
	}
	if e, ok := u.m[key]; ok && now.Before(e) {
		return false
	}
	u.m[key] = exp
	return true
}
