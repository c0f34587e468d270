package verify_test

import (
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/interlock-dev/interlock/verify"
)

// t0 is the fixtures' "now".
var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// listSize is the number of entries in the test status list (the
// Bitstring Status List minimum).
const listSize = 131072

// fixture is an interlock stand-in: two signing keys (Ed25519 "ed-1" and
// P-256 "ec-1") published as a JWKS, and one revocation status list at
// /status/1, served by an httptest server that counts fetches.
type fixture struct {
	t      testing.TB
	srv    *httptest.Server
	issuer string
	ed     ed25519.PrivateKey
	ec     *ecdsa.PrivateKey

	mu           sync.Mutex
	clock        time.Time
	extraKeys    []jwk.Key // published in addition to ed-1 and ec-1
	revoked      map[int]bool
	jwksCC       string // Cache-Control of the JWKS
	listCC       string // Cache-Control of the status list
	jwksFetches  int
	listFetches  int
	jwksStatus   int // non-zero: answer the JWKS with this status
	listStatus   int // non-zero: answer the status list with this status
	listSigner   func(payload []byte) string
	listOverride func(map[string]any)
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ed: ed, ec: ec, clock: t0, revoked: map[int]bool{7: true}, jwksCC: "max-age=300", listCC: "max-age=300"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.jwksFetches++
		status, cc := f.jwksStatus, f.jwksCC
		f.mu.Unlock()
		if status != 0 {
			http.Error(w, "down", status)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", cc)
		_, _ = w.Write(f.jwks())
	})
	mux.HandleFunc("GET /status/1", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.listFetches++
		status, cc := f.listStatus, f.listCC
		f.mu.Unlock()
		if status != 0 {
			http.Error(w, "down", status)
			return
		}
		w.Header().Set("Content-Type", "application/vc+jwt")
		w.Header().Set("Cache-Control", cc)
		_, _ = w.Write([]byte(f.statusList()))
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	f.issuer = f.srv.URL
	return f
}

func (f *fixture) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clock
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.clock = f.clock.Add(d)
	f.mu.Unlock()
}

func (f *fixture) counts() (jwks, lists int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jwksFetches, f.listFetches
}

// verifier returns a Verifier for the fixture with its clock.
func (f *fixture) verifier(opts verify.Options) *verify.Verifier {
	f.t.Helper()
	if opts.Issuer == "" {
		opts.Issuer = f.issuer
	}
	if opts.Now == nil {
		opts.Now = f.now
	}
	v, err := verify.New(opts)
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

// publicJWK returns the public JWK of priv with kid.
func publicJWK(t testing.TB, priv any, kid string) jwk.Key {
	t.Helper()
	var pub any
	switch k := priv.(type) {
	case ed25519.PrivateKey:
		pub = k.Public()
	case *ecdsa.PrivateKey:
		pub = &k.PublicKey
	}
	key, err := jwk.Import(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := key.Set(jwk.KeyIDKey, kid); err != nil {
		t.Fatal(err)
	}
	return key
}

func (f *fixture) jwks() []byte {
	set := jwk.NewSet()
	for _, k := range []jwk.Key{publicJWK(f.t, f.ed, "ed-1"), publicJWK(f.t, f.ec, "ec-1")} {
		_ = set.AddKey(k)
	}
	f.mu.Lock()
	for _, k := range f.extraKeys {
		_ = set.AddKey(k)
	}
	f.mu.Unlock()
	out, err := json.Marshal(set)
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// encodeList returns the encodedList of a list of n entries with the given
// bits set.
func encodeList(t testing.TB, n int, set map[int]bool) string {
	t.Helper()
	bits := make([]byte, n/8)
	for i, on := range set {
		if on {
			bits[i/8] |= 0x80 >> (i % 8)
		}
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(bits)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return "u" + base64.RawURLEncoding.EncodeToString(buf.Bytes())
}

// statusList returns the signed status list credential.
func (f *fixture) statusList() string {
	f.mu.Lock()
	revoked := make(map[int]bool, len(f.revoked))
	for i, on := range f.revoked {
		revoked[i] = on
	}
	override, signer := f.listOverride, f.listSigner
	f.mu.Unlock()
	id := f.issuer + "/status/1"
	p := map[string]any{
		"@context":   []any{"https://www.w3.org/ns/credentials/v2"},
		"id":         id,
		"type":       []any{"VerifiableCredential", "BitstringStatusListCredential"},
		"issuer":     f.issuer,
		"iss":        f.issuer,
		"jti":        id,
		"iat":        t0.Add(-time.Hour).Unix(),
		"validFrom":  t0.Add(-time.Hour).Format(time.RFC3339),
		"validUntil": t0.Add(24 * time.Hour).Format(time.RFC3339),
		"credentialSubject": map[string]any{
			"id":            id + "#list",
			"type":          "BitstringStatusList",
			"statusPurpose": "revocation",
			"encodedList":   encodeList(f.t, listSize, revoked),
		},
	}
	if override != nil {
		override(p)
	}
	payload, _ := json.Marshal(p)
	if signer != nil {
		return signer(payload)
	}
	return f.sign(jwa.EdDSA(), f.ed, map[string]any{"kid": "ed-1", "typ": "vc+jwt"}, payload)
}

// args is the arguments of the fixtures' call.
var args = json.RawMessage(`{"amount": 120.5, "to": "acct-42", "memo": "é"}`)

// call is the call the fixtures' credentials are for.
func call() *verify.Call {
	return &verify.Call{Upstream: "acme", Tool: "pay", Arguments: args}
}

// claims returns a valid credential payload for call() with status index.
func (f *fixture) claims(index int) map[string]any {
	f.t.Helper()
	digest, err := verify.ArgumentsDigest(args)
	if err != nil {
		f.t.Fatal(err)
	}
	id := "urn:uuid:7b1c4a52-9d0e-4a40-8a1e-2f7c1d3e5a6b"
	return map[string]any{
		"@context":   []any{"https://www.w3.org/ns/credentials/v2"},
		"id":         id,
		"type":       []any{"VerifiableCredential", "InterlockActionCredential"},
		"issuer":     f.issuer,
		"validFrom":  t0.Add(-time.Minute).Format(time.RFC3339),
		"validUntil": t0.Add(4 * time.Minute).Format(time.RFC3339),
		"iss":        f.issuer,
		"jti":        id,
		"iat":        t0.Add(-time.Minute).Unix(),
		"nbf":        t0.Add(-time.Minute).Unix(),
		"exp":        t0.Add(4 * time.Minute).Unix(),
		"credentialSubject": map[string]any{
			"id": "urn:interlock:agent:agent-7",
			"agent": map[string]any{
				"id":    "agent-7",
				"owner": "alice@example.com",
			},
			"action": map[string]any{
				"upstream":         "acme",
				"tool":             "pay",
				"arguments_digest": digest,
				"constraints":      map[string]any{"max_amount": 500.0, "uses": 1},
			},
			"authorization": []any{map[string]any{"kind": "policy", "rule": "small-payments"}},
		},
		"credentialStatus": map[string]any{
			"id":                   f.issuer + "/status/1#" + strconv.Itoa(index),
			"type":                 "BitstringStatusListEntry",
			"statusPurpose":        "revocation",
			"statusListIndex":      strconv.Itoa(index),
			"statusListCredential": f.issuer + "/status/1",
		},
	}
}

// sign signs payload with jwx under the given protected header (alg comes
// from alg).
func (f *fixture) sign(alg jwa.SignatureAlgorithm, key any, header map[string]any, payload []byte) string {
	f.t.Helper()
	hdr := jws.NewHeaders()
	for k, v := range header {
		if err := hdr.Set(k, v); err != nil {
			f.t.Fatal(err)
		}
	}
	tok, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		f.t.Fatal(err)
	}
	return string(tok)
}

// token signs claims as interlock does (EdDSA, ed-1).
func (f *fixture) token(claims map[string]any) string {
	f.t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.sign(jwa.EdDSA(), f.ed, map[string]any{"kid": "ed-1", "typ": "vc+jwt", "cty": "vc"}, payload)
}

// rawToken builds a compact JWS by hand: header and payload JSON, and a
// signature made by signFn over the signing input (nil: empty signature).
func rawToken(header, payload any, signFn func([]byte) []byte) string {
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(payload)
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	var sig []byte
	if signFn != nil {
		sig = signFn([]byte(input))
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func jsonB64Decode(s string) (map[string]any, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

func jsonB64Encode(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// set changes the fixture's server state under its lock.
func (f *fixture) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}
