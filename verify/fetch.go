package verify

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

const (
	// defaultTTL is how long a response without Cache-Control max-age is
	// cached.
	defaultTTL = 5 * time.Minute
	// maxTTL caps any max-age.
	maxTTL = 24 * time.Hour
	// refetchInterval is the least time between two JWKS fetches caused by
	// an unknown kid.
	refetchInterval = time.Minute
	// maxJWKSSize and maxListSize bound the bodies read; maxBitstring
	// bounds a decompressed status list (2^27 entries).
	maxJWKSSize  = 1 << 20
	maxListSize  = 4 << 20
	maxBitstring = 16 << 20
)

// publicKey is one verification key from the JWKS.
type publicKey struct {
	alg string // "EdDSA" or "ES256"
	key any    // ed25519.PublicKey or *ecdsa.PublicKey (P-256)
}

// keyCache holds the issuer's keys. mu guards the fields; fetch serialises
// fetches so that concurrent misses cause one request.
type keyCache struct {
	static bool // Options.JWKS: never fetched

	fetch sync.Mutex

	mu      sync.Mutex
	keys    map[string]publicKey
	expires time.Time // when keys go stale
	fetched time.Time // time of the last fetch (success or not)
	loaded  bool
}

// key returns the key for kid, fetching the JWKS when the cache is stale or
// (at most once per refetchInterval) when kid is unknown.
func (v *Verifier) key(ctx context.Context, kid string) (publicKey, error) {
	c := v.keys
	if c.static {
		if k, ok := c.keys[kid]; ok {
			return k, nil
		}
		return publicKey{}, fmt.Errorf("%w: kid %q is not in the configured JWKS", ErrUnknownKey, kid)
	}
	// lookup reports the key, whether the answer is final, and the error
	// for a final miss.
	lookup := func(now time.Time) (publicKey, bool, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.loaded || !now.Before(c.expires) {
			return publicKey{}, false, nil
		}
		if k, ok := c.keys[kid]; ok {
			return k, true, nil
		}
		if now.Sub(c.fetched) < refetchInterval {
			return publicKey{}, true, fmt.Errorf("%w: kid %q is not in the issuer's JWKS", ErrUnknownKey, kid)
		}
		return publicKey{}, false, nil
	}
	if k, done, err := lookup(v.now()); done {
		return k, err
	}
	c.fetch.Lock()
	defer c.fetch.Unlock()
	if k, done, err := lookup(v.now()); done { // another caller fetched
		return k, err
	}
	now := v.now()
	body, ttl, err := v.get(ctx, v.jwksURL, "application/jwk-set+json, application/json", maxJWKSSize)
	if err == nil {
		var keys map[string]publicKey
		if keys, err = parseJWKS(body); err == nil {
			c.mu.Lock()
			c.keys, c.expires, c.loaded = keys, now.Add(ttl), true
			c.mu.Unlock()
		}
	}
	c.mu.Lock()
	c.fetched = now
	c.mu.Unlock()
	if err != nil {
		return publicKey{}, fmt.Errorf("%w: JWKS %s: %w", ErrUnknownKey, v.jwksURL, err)
	}
	c.mu.Lock()
	k, ok := c.keys[kid]
	c.mu.Unlock()
	if !ok {
		return publicKey{}, fmt.Errorf("%w: kid %q is not in the issuer's JWKS", ErrUnknownKey, kid)
	}
	return k, nil
}

// parseJWKS reads the signature keys of a JWKS: Ed25519 (OKP) for EdDSA and
// P-256 (EC) for ES256, each with a kid. Other keys, keys for other uses
// and kids that appear twice are left out; a set with no usable key is an
// error.
func parseJWKS(data []byte) (map[string]publicKey, error) {
	set, err := jwk.Parse(data, jwk.WithIgnoreParseError(true))
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	keys := make(map[string]publicKey, set.Len())
	dup := make(map[string]bool)
	for i := range set.Len() {
		k, _ := set.Key(i)
		kid, _ := k.KeyID()
		if kid == "" || dup[kid] {
			continue
		}
		if use, ok := k.KeyUsage(); ok && use != "sig" {
			continue
		}
		if ops, ok := k.KeyOps(); ok && !slices.Contains(ops, jwk.KeyOpVerify) {
			continue
		}
		var raw any
		if err := jwk.Export(k, &raw); err != nil {
			continue
		}
		var pk publicKey
		switch key := raw.(type) {
		case ed25519.PublicKey:
			pk = publicKey{alg: "EdDSA", key: key}
		case ed25519.PrivateKey:
			pk = publicKey{alg: "EdDSA", key: key.Public()}
		case *ecdsa.PublicKey:
			pk = publicKey{alg: "ES256", key: key}
		case *ecdsa.PrivateKey:
			pk = publicKey{alg: "ES256", key: &key.PublicKey}
		default:
			continue
		}
		if ec, ok := pk.key.(*ecdsa.PublicKey); ok && ec.Curve != elliptic.P256() {
			continue
		}
		if alg, ok := k.Algorithm(); ok && alg.String() != pk.alg {
			continue
		}
		if _, seen := keys[kid]; seen {
			delete(keys, kid)
			dup[kid] = true
			continue
		}
		keys[kid] = pk
	}
	if len(keys) == 0 {
		return nil, errors.New("no Ed25519 or P-256 signature key with a kid")
	}
	return keys, nil
}

// get fetches url and returns its body and how long it may be cached.
func (v *Verifier) get(ctx context.Context, url, accept string, limit int64) ([]byte, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", accept)
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", url, err)
	}
	if int64(len(body)) > limit {
		return nil, 0, fmt.Errorf("GET %s: body larger than %d bytes", url, limit)
	}
	return body, cacheTTL(resp.Header.Values("Cache-Control")), nil
}

// cacheTTL returns how long a response may be cached: its max-age (capped
// at maxTTL), none for no-store or no-cache, else defaultTTL.
func cacheTTL(values []string) time.Duration {
	ttl := defaultTTL
	for _, v := range values {
		for _, d := range strings.Split(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store", "no-cache":
				return 0
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(arg), `"`), 10, 64)
				if err != nil || n < 0 {
					return 0 // a malformed max-age is stale (RFC 9111 §4.2.1)
				}
				ttl = maxTTL
				if n < int64(maxTTL/time.Second) {
					ttl = time.Duration(n) * time.Second
				}
			}
		}
	}
	return ttl
}

// listCache holds decoded status lists by URL.
type listCache struct {
	mu      sync.Mutex
	entries map[string]*listEntry
}

// listEntry is one status list; fetch serialises its fetches, mu guards
// the rest.
type listEntry struct {
	fetch sync.Mutex

	mu       sync.Mutex
	bits     []byte
	purposes []string
	expires  time.Time
}

// checkStatus checks every status entry of a credential (an object or an
// array): each must be a BitstringStatusListEntry for revocation or
// suspension whose bit is clear, and there must be a revocation entry.
func (v *Verifier) checkStatus(ctx context.Context, status any, now time.Time) error {
	var entries []any
	switch s := status.(type) {
	case nil:
		return fmt.Errorf("%w: no credentialStatus", ErrMalformed)
	case map[string]any:
		entries = []any{s}
	case []any:
		entries = s
	default:
		return fmt.Errorf("%w: credentialStatus is neither an object nor an array", ErrMalformed)
	}
	revocation := false
	for _, e := range entries {
		entry, ok := e.(map[string]any)
		if !ok {
			return fmt.Errorf("%w: a credentialStatus entry is not an object", ErrMalformed)
		}
		typ, _ := entry["type"].(string)
		purpose, _ := entry["statusPurpose"].(string)
		listURL, _ := entry["statusListCredential"].(string)
		if typ != "BitstringStatusListEntry" || (purpose != "revocation" && purpose != "suspension") {
			return fmt.Errorf("%w: status entry of type %q, purpose %q cannot be checked", ErrStatusUnavailable, typ, purpose)
		}
		if !strings.HasPrefix(listURL, "https://") && !strings.HasPrefix(listURL, "http://") {
			return fmt.Errorf("%w: statusListCredential %q is not an http(s) URL", ErrMalformed, listURL)
		}
		index, err := parseIndex(entry["statusListIndex"])
		if err != nil {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		set, err := v.statusBit(ctx, listURL, purpose, index, now)
		if err != nil {
			return err
		}
		if set {
			return fmt.Errorf("%w: %s bit %d is set in %s", ErrRevoked, purpose, index, listURL)
		}
		revocation = revocation || purpose == "revocation"
	}
	if !revocation {
		return fmt.Errorf("%w: no revocation status entry", ErrMalformed)
	}
	return nil
}

// statusBit returns bit index of the status list at listURL, fetching it
// when the cache has none or a stale one.
func (v *Verifier) statusBit(ctx context.Context, listURL, purpose string, index int, now time.Time) (bool, error) {
	v.lists.mu.Lock()
	e := v.lists.entries[listURL]
	if e == nil {
		e = &listEntry{}
		v.lists.entries[listURL] = e
	}
	v.lists.mu.Unlock()

	read := func(now time.Time) (bits []byte, purposes []string, fresh bool) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.bits, e.purposes, e.bits != nil && now.Before(e.expires)
	}
	bits, purposes, fresh := read(now)
	if !fresh {
		e.fetch.Lock()
		bits, purposes, fresh = read(v.now())
		if !fresh {
			var ttl time.Duration
			var err error
			fetchedAt := v.now()
			bits, purposes, ttl, err = v.fetchList(ctx, listURL, fetchedAt)
			if err != nil {
				e.fetch.Unlock()
				return false, fmt.Errorf("%w: %s: %v", ErrStatusUnavailable, listURL, err)
			}
			e.mu.Lock()
			e.bits, e.purposes, e.expires = bits, purposes, fetchedAt.Add(ttl)
			e.mu.Unlock()
		}
		e.fetch.Unlock()
	}
	if !slices.Contains(purposes, purpose) {
		return false, fmt.Errorf("%w: %s is a %q list, not %s", ErrStatusUnavailable, listURL, purposes, purpose)
	}
	if index/8 >= len(bits) {
		return false, fmt.Errorf("%w: index %d beyond the %d entries of %s", ErrStatusUnavailable, index, len(bits)*8, listURL)
	}
	return bits[index/8]&(0x80>>(index%8)) != 0, nil
}

// fetchList fetches, verifies and decodes a status list credential. The
// errors it returns are reported under ErrStatusUnavailable.
func (v *Verifier) fetchList(ctx context.Context, listURL string, now time.Time) (bits []byte, purposes []string, ttl time.Duration, err error) {
	body, ttl, err := v.get(ctx, listURL, "application/vc+jwt", maxListSize)
	if err != nil {
		return nil, nil, 0, err
	}
	payload, err := v.verifyJWS(ctx, string(bytes.TrimSpace(body)), false)
	if err != nil {
		return nil, nil, 0, err
	}
	raw, err := decodeObject(payload)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("payload: %w", err)
	}
	if _, ok := raw["vc"]; ok {
		return nil, nil, 0, errors.New("status list has a vc claim")
	}
	iss, _ := raw["iss"].(string)
	if iss != v.issuer {
		return nil, nil, 0, fmt.Errorf("status list iss %q, want %q", iss, v.issuer)
	}
	if is, err := issuerOf(raw); err != nil || is != iss {
		return nil, nil, 0, fmt.Errorf("status list issuer %q differs from iss %q", is, iss)
	}
	if err := checkEnvelope(raw, "BitstringStatusListCredential"); err != nil {
		return nil, nil, 0, err
	}
	if _, until, err := v.checkTimes(raw, now, false); err != nil {
		return nil, nil, 0, err
	} else if !until.IsZero() && until.Before(now.Add(ttl)) {
		ttl = max(until.Sub(now), 0) // do not cache past the list's own validity
	}
	subject, ok := raw["credentialSubject"].(map[string]any)
	if !ok {
		return nil, nil, 0, errors.New("status list credentialSubject is not an object")
	}
	if t, _ := subject["type"].(string); t != "BitstringStatusList" {
		return nil, nil, 0, fmt.Errorf("status list credentialSubject type %q, want BitstringStatusList", t)
	}
	if purposes, err = strs(subject, "statusPurpose"); err != nil {
		return nil, nil, 0, err
	}
	encoded, _ := subject["encodedList"].(string)
	if bits, err = decodeList(encoded); err != nil {
		return nil, nil, 0, err
	}
	return bits, purposes, ttl, nil
}

// decodeList decodes an encodedList: "u" (multibase base64url) then the
// base64url, unpadded, of the GZIP of the bitstring.
func decodeList(encoded string) ([]byte, error) {
	rest, ok := strings.CutPrefix(encoded, "u")
	if !ok {
		return nil, errors.New(`encodedList does not start with "u" (multibase base64url)`)
	}
	zipped, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(rest, "="))
	if err != nil {
		return nil, fmt.Errorf("encodedList: %w", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(zipped))
	if err != nil {
		return nil, fmt.Errorf("encodedList: %w", err)
	}
	bits, err := io.ReadAll(io.LimitReader(zr, maxBitstring+1))
	if err != nil {
		return nil, fmt.Errorf("encodedList: %w", err)
	}
	if len(bits) > maxBitstring {
		return nil, fmt.Errorf("encodedList: more than %d bytes of bits", maxBitstring)
	}
	if len(bits) == 0 {
		return nil, errors.New("encodedList: empty")
	}
	return bits, nil
}
