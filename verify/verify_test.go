package verify_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"go/build"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/interlock-dev/interlock/verify"
)

// sentinels are every error Verify may wrap, to check that exactly the
// expected one is in an error.
var sentinels = map[string]error{
	"ErrMalformed": verify.ErrMalformed, "ErrAlgorithm": verify.ErrAlgorithm, "ErrType": verify.ErrType,
	"ErrVCClaim": verify.ErrVCClaim, "ErrIssuer": verify.ErrIssuer, "ErrSignature": verify.ErrSignature,
	"ErrUnknownKey": verify.ErrUnknownKey, "ErrExpired": verify.ErrExpired, "ErrNotYetValid": verify.ErrNotYetValid,
	"ErrRevoked": verify.ErrRevoked, "ErrStatusUnavailable": verify.ErrStatusUnavailable, "ErrMismatch": verify.ErrMismatch,
}

// checkErr fails unless err wraps want and no other sentinel (want nil:
// err must be nil).
func checkErr(t *testing.T, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("Verify: %v, want success", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("Verify: %v, want %v", err, want)
	}
	var others []string
	for name, s := range sentinels {
		if s != want && errors.Is(err, s) {
			others = append(others, name)
		}
	}
	if len(others) > 0 {
		sort.Strings(others)
		t.Fatalf("Verify: %v also wraps %v", err, others)
	}
}

func TestVerify(t *testing.T) {
	f := newFixture(t)
	_, otherEd, _ := ed25519.GenerateKey(rand.Reader)
	edSign := func(key ed25519.PrivateKey) func([]byte) []byte {
		return func(in []byte) []byte { return ed25519.Sign(key, in) }
	}
	// with returns a valid token after mut changed its claims.
	with := func(mut func(c map[string]any)) string {
		c := f.claims(3)
		mut(c)
		return f.token(c)
	}
	subject := func(c map[string]any) map[string]any { return c["credentialSubject"].(map[string]any) }
	action := func(c map[string]any) map[string]any { return subject(c)["action"].(map[string]any) }
	jsonOf := func(v any) []byte { b, _ := json.Marshal(v); return b }
	edHeader := map[string]any{"kid": "ed-1", "typ": "vc+jwt", "cty": "vc"}
	withHeader := func(h map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range edHeader {
			out[k] = v
		}
		for k, v := range h {
			if v == nil {
				delete(out, k)
			} else {
				out[k] = v
			}
		}
		return out
	}

	tests := []struct {
		name  string
		token string
		call  *verify.Call
		opts  verify.Options
		want  error
	}{
		{"valid EdDSA", f.token(f.claims(3)), call(), verify.Options{}, nil},
		{"valid ES256", f.sign(jwa.ES256(), f.ec, map[string]any{"kid": "ec-1", "typ": "vc+jwt", "cty": "vc"}, jsonOf(f.claims(3))), call(), verify.Options{}, nil},
		{"valid without a call", f.token(f.claims(3)), nil, verify.Options{}, nil},
		{"valid, typ and cty as full media types", f.sign(jwa.EdDSA(), f.ed, withHeader(map[string]any{"typ": "application/vc+jwt", "cty": "application/vc"}), jsonOf(f.claims(3))), call(), verify.Options{}, nil},
		{"valid, arguments reordered and spaced", f.token(f.claims(3)), &verify.Call{Upstream: "acme", Tool: "pay", Arguments: json.RawMessage(` { "to":"acct-42","memo":"\u00e9", "amount":1.205e2 } `)}, verify.Options{}, nil},
		{"valid, expired within the leeway", with(func(c map[string]any) { c["exp"] = t0.Add(-10 * time.Second).Unix(); delete(c, "validUntil") }), call(), verify.Options{}, nil},
		{"valid, static JWKS", f.token(f.claims(3)), call(), verify.Options{JWKS: f.jwks()}, nil},
		{"valid, revoked but status skipped", f.token(f.claims(7)), call(), verify.Options{SkipStatus: true}, nil},

		{"not a JWS", "not-a-jwt", call(), verify.Options{}, verify.ErrMalformed},
		{"two segments", "eyJhbGciOiJFZERTQSJ9.e30", call(), verify.Options{}, verify.ErrMalformed},
		{"four segments", f.token(f.claims(3)) + ".x", call(), verify.Options{}, verify.ErrMalformed},
		{"header not base64url", "%%%.e30.c2ln", call(), verify.Options{}, verify.ErrMalformed},
		{"header not JSON", rawToken("x", map[string]any{}, edSign(f.ed)), call(), verify.Options{}, verify.ErrMalformed},
		{"crit header", f.sign(jwa.EdDSA(), f.ed, withHeader(map[string]any{"crit": []string{"exp"}, "exp": 1}), jsonOf(f.claims(3))), call(), verify.Options{}, verify.ErrMalformed},
		{"payload not JSON", f.sign(jwa.EdDSA(), f.ed, edHeader, []byte("hello")), call(), verify.Options{}, verify.ErrMalformed},
		{"payload an array", f.sign(jwa.EdDSA(), f.ed, edHeader, []byte("[1]")), call(), verify.Options{}, verify.ErrMalformed},
		{"jti differs from id", with(func(c map[string]any) { c["jti"] = "urn:uuid:other" }), call(), verify.Options{}, verify.ErrMalformed},
		{"no exp", with(func(c map[string]any) { delete(c, "exp") }), call(), verify.Options{}, verify.ErrMalformed},
		{"wrong @context", with(func(c map[string]any) { c["@context"] = []any{"https://www.w3.org/2018/credentials/v1"} }), call(), verify.Options{}, verify.ErrMalformed},
		{"no action", with(func(c map[string]any) { delete(subject(c), "action") }), call(), verify.Options{}, verify.ErrMalformed},
		{"digest not hex", with(func(c map[string]any) { action(c)["arguments_digest"] = "sha256:abc" }), call(), verify.Options{}, verify.ErrMalformed},
		{"uses zero", with(func(c map[string]any) { action(c)["constraints"] = map[string]any{"uses": 0} }), call(), verify.Options{}, verify.ErrMalformed},
		{"no credentialStatus", with(func(c map[string]any) { delete(c, "credentialStatus") }), call(), verify.Options{}, verify.ErrMalformed},
		{"statusListIndex not decimal", with(func(c map[string]any) { c["credentialStatus"].(map[string]any)["statusListIndex"] = "x1" }), call(), verify.Options{}, verify.ErrMalformed},

		{"alg none", rawToken(map[string]any{"alg": "none", "typ": "vc+jwt", "cty": "vc", "kid": "ed-1"}, f.claims(3), nil), call(), verify.Options{}, verify.ErrAlgorithm},
		{"alg HS256", rawToken(map[string]any{"alg": "HS256", "typ": "vc+jwt", "cty": "vc", "kid": "ed-1"}, f.claims(3), edSign(f.ed)), call(), verify.Options{}, verify.ErrAlgorithm},
		{"no alg", rawToken(map[string]any{"typ": "vc+jwt", "cty": "vc", "kid": "ed-1"}, f.claims(3), edSign(f.ed)), call(), verify.Options{}, verify.ErrAlgorithm},
		{"alg ES256 on an Ed25519 key", rawToken(map[string]any{"alg": "ES256", "typ": "vc+jwt", "cty": "vc", "kid": "ed-1"}, f.claims(3), edSign(f.ed)), call(), verify.Options{}, verify.ErrAlgorithm},

		{"typ JWT", f.sign(jwa.EdDSA(), f.ed, withHeader(map[string]any{"typ": "JWT"}), jsonOf(f.claims(3))), call(), verify.Options{}, verify.ErrType},
		{"no typ", f.sign(jwa.EdDSA(), f.ed, withHeader(map[string]any{"typ": nil}), jsonOf(f.claims(3))), call(), verify.Options{}, verify.ErrType},
		{"no cty", f.sign(jwa.EdDSA(), f.ed, withHeader(map[string]any{"cty": nil}), jsonOf(f.claims(3))), call(), verify.Options{}, verify.ErrType},

		{"vc claim", with(func(c map[string]any) { c["vc"] = map[string]any{"type": "VerifiableCredential"} }), call(), verify.Options{}, verify.ErrVCClaim},

		{"iss not the issuer", with(func(c map[string]any) { c["iss"] = "https://evil.example"; c["issuer"] = "https://evil.example" }), call(), verify.Options{}, verify.ErrIssuer},
		{"iss differs from issuer", with(func(c map[string]any) { c["issuer"] = "https://other.example" }), call(), verify.Options{}, verify.ErrIssuer},
		{"issuer object with another id", with(func(c map[string]any) { c["issuer"] = map[string]any{"id": "https://other.example"} }), call(), verify.Options{}, verify.ErrIssuer},
		{"issuer option differs", with(func(c map[string]any) {}), call(), verify.Options{Issuer: "https://interlock.example", JWKS: f.jwks()}, verify.ErrIssuer},

		{"signature by another key", rawToken(edHeaderAlg(), f.claims(3), edSign(otherEd)), call(), verify.Options{}, verify.ErrSignature},
		{"payload altered", alterPayload(t, f.token(f.claims(3))), call(), verify.Options{}, verify.ErrSignature},

		{"unknown kid", f.sign(jwa.EdDSA(), f.ed, withHeader(map[string]any{"kid": "ed-9"}), jsonOf(f.claims(3))), call(), verify.Options{}, verify.ErrUnknownKey},
		{"no kid", f.sign(jwa.EdDSA(), f.ed, withHeader(map[string]any{"kid": nil}), jsonOf(f.claims(3))), call(), verify.Options{}, verify.ErrUnknownKey},
		{"unknown kid, static JWKS", f.sign(jwa.EdDSA(), f.ed, withHeader(map[string]any{"kid": "ed-9"}), jsonOf(f.claims(3))), call(), verify.Options{JWKS: f.jwks()}, verify.ErrUnknownKey},

		{"expired", with(func(c map[string]any) {
			c["exp"] = t0.Add(-time.Minute).Unix()
			c["validUntil"] = t0.Add(-time.Minute).Format(time.RFC3339)
		}), call(), verify.Options{}, verify.ErrExpired},
		{"validUntil passed, exp not", with(func(c map[string]any) { c["validUntil"] = t0.Add(-time.Minute).Format(time.RFC3339) }), call(), verify.Options{}, verify.ErrExpired},
		{"expired with a short leeway", with(func(c map[string]any) { c["exp"] = t0.Add(-10 * time.Second).Unix(); delete(c, "validUntil") }), call(), verify.Options{Leeway: time.Second}, verify.ErrExpired},
		{"not yet valid", with(func(c map[string]any) { c["nbf"] = t0.Add(time.Minute).Unix() }), call(), verify.Options{}, verify.ErrNotYetValid},
		{"validFrom in the future", with(func(c map[string]any) { c["validFrom"] = t0.Add(time.Minute).Format(time.RFC3339) }), call(), verify.Options{}, verify.ErrNotYetValid},
		{"iat in the future", with(func(c map[string]any) { c["iat"] = t0.Add(time.Hour).Unix() }), call(), verify.Options{}, verify.ErrNotYetValid},

		{"revoked", f.token(f.claims(7)), call(), verify.Options{}, verify.ErrRevoked},

		{"index beyond the list", f.token(f.claims(listSize + 5)), call(), verify.Options{}, verify.ErrStatusUnavailable},
		{"status list unreachable", with(func(c map[string]any) {
			c["credentialStatus"].(map[string]any)["statusListCredential"] = f.issuer + "/status/404"
		}), call(), verify.Options{}, verify.ErrStatusUnavailable},
		{"status purpose unknown", with(func(c map[string]any) { c["credentialStatus"].(map[string]any)["statusPurpose"] = "message" }), call(), verify.Options{}, verify.ErrStatusUnavailable},

		{"other tool", f.token(f.claims(3)), &verify.Call{Upstream: "acme", Tool: "refund", Arguments: args}, verify.Options{}, verify.ErrMismatch},
		{"other upstream", f.token(f.claims(3)), &verify.Call{Upstream: "globex", Tool: "pay", Arguments: args}, verify.Options{}, verify.ErrMismatch},
		{"other arguments", f.token(f.claims(3)), &verify.Call{Upstream: "acme", Tool: "pay", Arguments: json.RawMessage(`{"amount":12050,"to":"acct-42","memo":"é"}`)}, verify.Options{}, verify.ErrMismatch},
		{"arguments not JSON", f.token(f.claims(3)), &verify.Call{Upstream: "acme", Tool: "pay", Arguments: json.RawMessage(`{"amount":`)}, verify.Options{}, verify.ErrMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := f.verifier(tt.opts)
			cred, err := v.Verify(context.Background(), tt.token, tt.call)
			checkErr(t, err, tt.want)
			if tt.want == nil && cred == nil {
				t.Fatal("Verify returned no credential and no error")
			}
			if tt.want != nil && cred != nil {
				t.Fatalf("Verify returned a credential with error %v", err)
			}
		})
	}
}

// edHeaderAlg is the header of an EdDSA credential from ed-1.
func edHeaderAlg() map[string]any {
	return map[string]any{"alg": "EdDSA", "typ": "vc+jwt", "cty": "vc", "kid": "ed-1"}
}

// alterPayload re-encodes the payload of tok with its jti changed, keeping
// the signature.
func alterPayload(t testing.TB, tok string) string {
	parts := strings.Split(tok, ".")
	p, err := jsonB64Decode(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	p["exp"] = p["exp"].(float64) + 3600
	return parts[0] + "." + jsonB64Encode(p) + "." + parts[2]
}

func TestVerifyResult(t *testing.T) {
	f := newFixture(t)
	cred, err := f.verifier(verify.Options{}).Verify(context.Background(), f.token(f.claims(3)), call())
	if err != nil {
		t.Fatal(err)
	}
	digest, _ := verify.ArgumentsDigest(args)
	checks := []struct {
		name      string
		got, want any
	}{
		{"ID", cred.ID, "urn:uuid:7b1c4a52-9d0e-4a40-8a1e-2f7c1d3e5a6b"},
		{"Issuer", cred.Issuer, f.issuer},
		{"AgentID", cred.AgentID, "agent-7"},
		{"Owner", cred.Owner, "alice@example.com"},
		{"Upstream", cred.Upstream, "acme"},
		{"Tool", cred.Tool, "pay"},
		{"ArgumentsDigest", cred.ArgumentsDigest, digest},
		{"ValidFrom", cred.ValidFrom.UTC(), t0.Add(-time.Minute)},
		{"ValidUntil", cred.ValidUntil.UTC(), t0.Add(4 * time.Minute)},
		{"MaxAmount", *cred.MaxAmount, 500.0},
		{"Uses", cred.Uses, 1},
		{"Authorization rule", cred.Authorization[0]["rule"], "small-payments"},
		{"Raw jti", cred.Raw["jti"], cred.ID},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestArgumentsDigest(t *testing.T) {
	// The digest of {} is SHA-256("{}").
	const empty = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	tests := []struct {
		args    string
		want    string
		wantErr bool
	}{
		{"", empty, false},
		{"null", empty, false},
		{" {} ", empty, false},
		{`{"b":1,"a":[1.0,"x"]}`, "", false},
		{`{"a"`, "", true},
		{`{"a":1,"a":2}`, "", true},
	}
	for _, tt := range tests {
		got, err := verify.ArgumentsDigest(json.RawMessage(tt.args))
		if (err != nil) != tt.wantErr {
			t.Fatalf("ArgumentsDigest(%q) error %v, want error %v", tt.args, err, tt.wantErr)
		}
		if tt.want != "" && got != tt.want {
			t.Errorf("ArgumentsDigest(%q) = %s, want %s", tt.args, got, tt.want)
		}
	}
	a, _ := verify.ArgumentsDigest(json.RawMessage(`{"b":1,"a":[1.0,"x"]}`))
	b, _ := verify.ArgumentsDigest(json.RawMessage(`{ "a" : [ 1, "\u0078" ], "b" : 1e0 }`))
	if a != b || len(a) != 64 {
		t.Errorf("equal JSON values digest differently: %s, %s", a, b)
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name string
		opts verify.Options
		ok   bool
	}{
		{"ok", verify.Options{Issuer: "https://interlock.example.com"}, true},
		{"no issuer", verify.Options{}, false},
		{"issuer not a URL", verify.Options{Issuer: "interlock"}, false},
		{"issuer ftp", verify.Options{Issuer: "ftp://interlock.example.com"}, false},
		{"negative leeway", verify.Options{Issuer: "https://interlock.example.com", Leeway: -time.Second}, false},
		{"JWKS not JSON", verify.Options{Issuer: "https://interlock.example.com", JWKS: []byte("nope")}, false},
		{"JWKS without usable keys", verify.Options{Issuer: "https://interlock.example.com", JWKS: []byte(`{"keys":[{"kty":"oct","k":"AAAA","kid":"h"}]}`)}, false},
	}
	for _, tt := range tests {
		v, err := verify.New(tt.opts)
		if (err == nil) != tt.ok || (v != nil) != tt.ok {
			t.Errorf("%s: New = %v, %v; want ok %v", tt.name, v, err, tt.ok)
		}
	}
}

// TestCaching counts fetches as the injected clock moves: the JWKS and the
// status list are cached for their Cache-Control max-age.
func TestCaching(t *testing.T) {
	f := newFixture(t)
	f.jwksCC = "public, max-age=120"
	f.listCC = "max-age=30"
	v := f.verifier(verify.Options{})
	tok := f.token(f.claims(3))
	steps := []struct {
		advance               time.Duration
		wantJWKS, wantListReq int
	}{
		{0, 1, 1},
		{0, 1, 1},
		{20 * time.Second, 1, 1},
		{11 * time.Second, 1, 2}, // list stale at 30 s
		{29 * time.Second, 1, 2},
		{2 * time.Second, 1, 3},
		{59 * time.Second, 2, 4}, // both stale at 121 s
	}
	for i, s := range steps {
		f.advance(s.advance)
		if _, err := v.Verify(context.Background(), tok, call()); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if j, l := f.counts(); j != s.wantJWKS || l != s.wantListReq {
			t.Fatalf("step %d: %d JWKS and %d status list fetches, want %d and %d", i, j, l, s.wantJWKS, s.wantListReq)
		}
	}
}

func TestNoStore(t *testing.T) {
	f := newFixture(t)
	f.jwksCC = "no-store"
	f.listCC = "no-cache"
	v := f.verifier(verify.Options{})
	tok := f.token(f.claims(3))
	for range 3 {
		if _, err := v.Verify(context.Background(), tok, call()); err != nil {
			t.Fatal(err)
		}
	}
	// The JWKS is fetched twice per Verify: for the credential and for
	// the status list's signature.
	if j, l := f.counts(); j != 6 || l != 3 {
		t.Fatalf("%d JWKS and %d status list fetches, want 6 and 3", j, l)
	}
}

// TestRevocationSeenAfterMaxAge: a bit set after a list was cached is seen
// once the cache goes stale.
func TestRevocationSeenAfterMaxAge(t *testing.T) {
	f := newFixture(t)
	f.listCC = "max-age=60"
	v := f.verifier(verify.Options{})
	tok := f.token(f.claims(3))
	if _, err := v.Verify(context.Background(), tok, call()); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.revoked[3] = true
	f.mu.Unlock()
	_, err := v.Verify(context.Background(), tok, call())
	checkErr(t, err, nil) // still cached
	f.advance(61 * time.Second)
	_, err = v.Verify(context.Background(), tok, call())
	checkErr(t, err, verify.ErrRevoked)
}

// TestUnknownKidRefetch: an unknown kid refetches the JWKS at most once a
// minute, and a key published since is then found.
func TestUnknownKidRefetch(t *testing.T) {
	f := newFixture(t)
	f.jwksCC = "max-age=3600"
	v := f.verifier(verify.Options{})
	ctx := context.Background()
	if _, err := v.Verify(ctx, f.token(f.claims(3)), call()); err != nil {
		t.Fatal(err)
	}
	_, newKey, _ := ed25519.GenerateKey(rand.Reader)
	payload, _ := json.Marshal(f.claims(3))
	tok := f.sign(jwa.EdDSA(), newKey, map[string]any{"kid": "ed-2", "typ": "vc+jwt", "cty": "vc"}, payload)

	f.advance(2 * time.Minute)
	_, err := v.Verify(ctx, tok, call()) // refetch: still unknown
	checkErr(t, err, verify.ErrUnknownKey)
	f.mu.Lock()
	f.extraKeys = []jwk.Key{publicJWK(t, newKey, "ed-2")}
	f.mu.Unlock()
	f.advance(30 * time.Second)
	_, err = v.Verify(ctx, tok, call()) // within a minute of the last fetch: no refetch
	checkErr(t, err, verify.ErrUnknownKey)
	if j, _ := f.counts(); j != 2 {
		t.Fatalf("%d JWKS fetches, want 2", j)
	}
	f.advance(31 * time.Second)
	_, err = v.Verify(ctx, tok, call())
	checkErr(t, err, nil)
	if j, _ := f.counts(); j != 3 {
		t.Fatalf("%d JWKS fetches, want 3", j)
	}
}

// TestFetchFailuresFailClosed: a JWKS or status list that cannot be fetched
// once the cache is stale refuses the credential.
func TestFetchFailuresFailClosed(t *testing.T) {
	ctx := context.Background()
	t.Run("JWKS", func(t *testing.T) {
		f := newFixture(t)
		f.jwksCC = "max-age=60"
		v := f.verifier(verify.Options{})
		tok := f.token(f.claims(3))
		if _, err := v.Verify(ctx, tok, call()); err != nil {
			t.Fatal(err)
		}
		f.set(func() { f.jwksStatus = http.StatusServiceUnavailable })
		f.advance(61 * time.Second)
		_, err := v.Verify(ctx, tok, call())
		checkErr(t, err, verify.ErrUnknownKey)
	})
	t.Run("status list", func(t *testing.T) {
		f := newFixture(t)
		f.listCC = "max-age=60"
		v := f.verifier(verify.Options{})
		tok := f.token(f.claims(3))
		if _, err := v.Verify(ctx, tok, call()); err != nil {
			t.Fatal(err)
		}
		f.set(func() { f.listStatus = http.StatusInternalServerError })
		f.advance(61 * time.Second)
		_, err := v.Verify(ctx, tok, call())
		checkErr(t, err, verify.ErrStatusUnavailable)
	})
}

// TestStatusListChecked: a status list the verifier cannot trust is
// unavailable, not "not revoked".
func TestStatusListChecked(t *testing.T) {
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name     string
		signer   func(f *fixture) func([]byte) string
		override func(f *fixture) func(map[string]any)
	}{
		{"signed by an unknown key", func(f *fixture) func([]byte) string {
			return func(p []byte) string {
				return f.sign(jwa.EdDSA(), stranger, map[string]any{"kid": "ed-1", "typ": "vc+jwt"}, p)
			}
		}, nil},
		{"wrong typ", func(f *fixture) func([]byte) string {
			return func(p []byte) string {
				return f.sign(jwa.EdDSA(), f.ed, map[string]any{"kid": "ed-1", "typ": "JWT"}, p)
			}
		}, nil},
		{"another issuer", nil, func(f *fixture) func(map[string]any) {
			return func(p map[string]any) { p["iss"] = "https://evil.example"; p["issuer"] = "https://evil.example" }
		}},
		{"expired list", nil, func(f *fixture) func(map[string]any) {
			return func(p map[string]any) { p["validUntil"] = t0.Add(-time.Hour).Format(time.RFC3339) }
		}},
		{"suspension list", nil, func(f *fixture) func(map[string]any) {
			return func(p map[string]any) { p["credentialSubject"].(map[string]any)["statusPurpose"] = "suspension" }
		}},
		{"no u prefix", nil, func(f *fixture) func(map[string]any) {
			return func(p map[string]any) {
				s := p["credentialSubject"].(map[string]any)
				s["encodedList"] = strings.TrimPrefix(s["encodedList"].(string), "u")
			}
		}},
		{"not gzip", nil, func(f *fixture) func(map[string]any) {
			return func(p map[string]any) { p["credentialSubject"].(map[string]any)["encodedList"] = "uAAAA" }
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.signer != nil {
				f.listSigner = tt.signer(f)
			}
			if tt.override != nil {
				f.listOverride = tt.override(f)
			}
			_, err := f.verifier(verify.Options{}).Verify(context.Background(), f.token(f.claims(3)), call())
			checkErr(t, err, verify.ErrStatusUnavailable)
		})
	}
}

// FuzzVerify: Verify never panics, and input that is not a token signed by
// the fixture's key always fails.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f)
	valid := fx.token(fx.claims(3))
	f.Add(valid)
	f.Add(alterPayload(f, valid))
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add(rawToken(map[string]any{"alg": "EdDSA", "typ": "vc+jwt", "cty": "vc", "kid": "ed-1"}, map[string]any{"vc": 1}, nil))
	v, err := verify.New(verify.Options{Issuer: fx.issuer, JWKS: fx.jwks(), SkipStatus: true, Now: fx.now})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token string) {
		cred, err := v.Verify(context.Background(), token, call())
		if token == valid {
			if err != nil {
				t.Fatalf("the valid token failed: %v", err)
			}
			return
		}
		if err == nil || cred != nil {
			t.Fatalf("Verify(%q) = %v, %v; want an error", token, cred, err)
		}
		known := false
		for _, s := range sentinels {
			known = known || errors.Is(err, s)
		}
		if !known {
			t.Fatalf("Verify(%q): %v wraps no sentinel error", token, err)
		}
	})
}

// BenchmarkVerify measures Verify with the JWKS and status list cached.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{"EdDSA", "ES256"} {
		b.Run(alg, func(b *testing.B) {
			f := newFixture(b)
			payload, _ := json.Marshal(f.claims(3))
			tok := f.token(f.claims(3))
			if alg == "ES256" {
				tok = f.sign(jwa.ES256(), f.ec, map[string]any{"kid": "ec-1", "typ": "vc+jwt", "cty": "vc"}, payload)
			}
			v := f.verifier(verify.Options{})
			ctx := context.Background()
			c := call()
			if _, err := v.Verify(ctx, tok, c); err != nil {
				b.Fatal(err)
			}
			durations := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				if _, err := v.Verify(ctx, tok, c); err != nil {
					b.Fatal(err)
				}
				durations = append(durations, time.Since(start))
			}
			b.StopTimer()
			sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
			if len(durations) > 0 {
				b.ReportMetric(float64(durations[len(durations)/2].Nanoseconds()), "p50-ns")
				b.ReportMetric(float64(durations[len(durations)*99/100].Nanoseconds()), "p99-ns")
			}
		})
	}
}

// TestNoInternalImports: tool owners import this package on its own, so it
// must not import interlock's internal packages (tests may).
func TestNoInternalImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkg.Imports) == 0 {
		t.Fatal("no imports found")
	}
	for _, imp := range pkg.Imports {
		if strings.Contains(imp, "/internal/") || strings.HasSuffix(imp, "/internal") {
			t.Errorf("verify imports %s", imp)
		}
	}
}
