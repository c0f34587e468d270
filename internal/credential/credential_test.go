package credential

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/interlock-dev/interlock/canon"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
	"github.com/interlock-dev/interlock/internal/testenv"
)

const testIssuer = "https://gw.example.com:8443"

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func openStore(t testing.TB) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), sqlite.Options{Logger: quiet(), Path: filepath.Join(t.TempDir(), "interlock.db")})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func testKEK(b byte) []byte { return bytes.Repeat([]byte{b}, KEKSize) }

type env struct {
	st  *sqlite.Store
	clk *clock
	iss *Issuer
}

func newEnv(t testing.TB, alg string) *env {
	t.Helper()
	e := &env{st: openStore(t), clk: &clock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}}
	e.iss = e.open(t, alg, testKEK(1))
	return e
}

func (e *env) open(t testing.TB, alg string, kek []byte) *Issuer {
	t.Helper()
	iss, err := New(context.Background(), Options{Store: e.st, KEK: kek, Issuer: testIssuer + "/", Alg: alg, Now: e.clk.Now, Logger: quiet()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return iss
}

func sampleAction() Action {
	amount := 2500.5
	return Action{
		AgentID: "procurement-bot", OwnerEmail: "alice@example.com", DecisionID: "dec-1",
		Upstream: "acme", Tool: "pay_invoice",
		Arguments:     map[string]any{"invoice": "INV-7", "amount": 2500.5, "memo": "<ünïcödé>", "lines": []any{1, 2.5, "x"}},
		AuthorizedBy:  []Authorization{{Kind: "policy", Rule: "small-payments"}},
		RiskScore:     30,
		ClientIP:      "10.1.2.3",
		PolicyVersion: "v7",
		MaxAmount:     &amount,
	}
}

// parts decodes a compact JWS's header and payload as JSON objects.
func parts(t *testing.T, tok string) (map[string]any, map[string]any) {
	t.Helper()
	p := strings.Split(tok, ".")
	if len(p) != 3 {
		t.Fatalf("token has %d parts", len(p))
	}
	dec := func(s string) map[string]any {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("base64: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("json: %v", err)
		}
		return m
	}
	return dec(p[0]), dec(p[1])
}

func TestIssueVerify(t *testing.T) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		t.Run(alg, func(t *testing.T) {
			e := newEnv(t, alg)
			ctx := t.Context()
			a := sampleAction()
			tok, rec, err := e.iss.Issue(ctx, a)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			hdr, pl := parts(t, tok)

			canonical, err := canon.Marshal(a.Arguments)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(canonical)
			wantDigest := hex.EncodeToString(sum[:])

			keys := e.iss.Keys()
			if len(keys) != 1 {
				t.Fatalf("%d keys, want 1", len(keys))
			}
			subj, _ := pl["credentialSubject"].(map[string]any)
			action, _ := subj["action"].(map[string]any)
			status, _ := pl["credentialStatus"].(map[string]any)
			for _, c := range []struct {
				what      string
				got, want any
			}{
				{"header typ", hdr["typ"], "vc+jwt"},
				{"header cty", hdr["cty"], "vc"},
				{"header alg", hdr["alg"], alg},
				{"header kid", hdr["kid"], keys[0].ID},
				{"record kid", rec.KeyID, keys[0].ID},
				{"iss", pl["iss"], testIssuer},
				{"issuer", pl["issuer"], testIssuer},
				{"jti", pl["jti"], rec.ID},
				{"id", pl["id"], rec.ID},
				{"no vc claim", pl["vc"], nil},
				{"no vp claim", pl["vp"], nil},
				{"@context[0]", pl["@context"].([]any)[0], ContextV2},
				{"digest", action["arguments_digest"], wantDigest},
				{"record digest", rec.ArgsDigest, wantDigest},
				{"tool", action["tool"], "pay_invoice"},
				{"status type", status["type"], "BitstringStatusListEntry"},
				{"status purpose", status["statusPurpose"], "revocation"},
				{"status index is a string", status["statusListIndex"], strconv.Itoa(rec.StatusIndex)},
				{"status list URL", status["statusListCredential"], testIssuer + "/status/" + rec.StatusList},
				{"iat", pl["iat"], float64(e.clk.Now().Unix())},
				{"nbf", pl["nbf"], float64(e.clk.Now().Unix())},
				{"exp", pl["exp"], float64(e.clk.Now().Add(DefaultLifetime).Unix())},
				{"validUntil", pl["validUntil"], e.clk.Now().Add(DefaultLifetime).Format(time.RFC3339)},
			} {
				if c.got != c.want {
					t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
				}
			}
			if !strings.HasPrefix(rec.ID, "urn:uuid:") || len(rec.ID) != len("urn:uuid:")+36 {
				t.Errorf("id %q is not a urn:uuid", rec.ID)
			}

			// Our own Verify.
			c, err := e.iss.Verify(ctx, tok, e.clk.Now().Add(time.Minute))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.ID != rec.ID || c.AgentID != a.AgentID || c.OwnerEmail != a.OwnerEmail || c.Tool != a.Tool ||
				c.ArgumentsDigest != wantDigest || c.Uses != 1 || c.MaxAmount == nil || *c.MaxAmount != *a.MaxAmount ||
				c.KeyID != keys[0].ID || c.Alg != alg || c.StatusIndex != rec.StatusIndex || c.DecisionID != "dec-1" ||
				!slices.Equal(c.AuthorizedBy, a.AuthorizedBy) || c.RiskScore != 30 || c.ClientIP != "10.1.2.3" {
				t.Errorf("Verify claims = %+v", c)
			}

			// jwx verifies our hand-made JWS through the published JWKS.
			raw, err := e.iss.JWKS(ctx)
			if err != nil {
				t.Fatal(err)
			}
			set, err := jwk.Parse(raw)
			if err != nil {
				t.Fatalf("jwk.Parse: %v", err)
			}
			if _, err := jws.Verify([]byte(tok), jws.WithKeySet(set)); err != nil {
				t.Errorf("jwx does not verify the credential with the JWKS: %v", err)
			}
		})
	}
}

// signRaw signs any header and payload with key k (for malformed and
// hostile tokens).
func signRaw(t *testing.T, k *signingKey, hdr, payload any) string {
	t.Helper()
	h, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	kk := *k
	kk.hdr = base64.RawURLEncoding.EncodeToString(h) + "."
	tok, err := kk.sign(p, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestVerifyRefuses(t *testing.T) {
	e := newEnv(t, AlgEdDSA)
	ctx := t.Context()
	tok, rec, err := e.iss.Issue(ctx, sampleAction())
	if err != nil {
		t.Fatal(err)
	}
	now := e.clk.Now().Add(time.Minute)
	hdr, pl := parts(t, tok)
	key := e.iss.current
	with := func(m map[string]any, k string, v any) map[string]any {
		out := map[string]any{}
		for kk, vv := range m {
			out[kk] = vv
		}
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
		return out
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	stranger, err := newSigningKey(store.SigningKey{ID: "stranger", Alg: AlgEdDSA}, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	p := strings.Split(tok, ".")
	flipped := []byte(p[2])
	flipped[3] ^= 0x01
	if flipped[3] == p[2][3] {
		flipped[3] ^= 0x02
	}

	for _, tc := range []struct {
		name  string
		token string
		now   time.Time
		want  error
	}{
		{"garbage", "not a token", now, ErrMalformed},
		{"empty", "", now, ErrMalformed},
		{"four parts", tok + ".x", now, ErrMalformed},
		{"bad signature", p[0] + "." + p[1] + "." + string(flipped), now, ErrSignature},
		{"payload swapped", p[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"x":1}`)) + "." + p[2], now, ErrSignature},
		{"alg none", p[0][:0] + base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"vc+jwt","cty":"vc","kid":"`+rec.KeyID+`"}`)) + "." + p[1] + ".", now, ErrMalformed},
		{"alg none signed", signRaw(t, key, with(hdr, "alg", "none"), pl), now, ErrAlgorithm},
		{"alg HS256", signRaw(t, key, with(hdr, "alg", "HS256"), pl), now, ErrAlgorithm},
		{"alg ES256 with an EdDSA key", signRaw(t, key, with(hdr, "alg", "ES256"), pl), now, ErrAlgorithm},
		{"typ JWT", signRaw(t, key, with(hdr, "typ", "JWT"), pl), now, ErrType},
		{"typ missing", signRaw(t, key, with(hdr, "typ", nil), pl), now, ErrType},
		{"typ vc+ld+jwt", signRaw(t, key, with(hdr, "typ", "vc+ld+jwt"), pl), now, ErrType},
		{"cty missing", signRaw(t, key, with(hdr, "cty", nil), pl), now, ErrType},
		{"crit", signRaw(t, key, with(hdr, "crit", []string{"exp"}), pl), now, ErrMalformed},
		{"embedded jwk", signRaw(t, key, with(hdr, "jwk", map[string]any{"kty": "OKP"}), pl), now, ErrUnknownKey},
		{"unknown kid", signRaw(t, stranger, with(hdr, "kid", "stranger"), pl), now, ErrUnknownKey},
		{"no kid", signRaw(t, key, with(hdr, "kid", nil), pl), now, ErrUnknownKey},
		{"right kid, stranger's signature", signRaw(t, stranger, hdr, pl), now, ErrSignature},
		{"vc claim", signRaw(t, key, hdr, with(pl, "vc", map[string]any{"type": "x"})), now, ErrClaims},
		{"iss differs from issuer", signRaw(t, key, hdr, with(pl, "iss", "https://evil.example")), now, ErrClaims},
		{"issuer is another", signRaw(t, key, hdr, with(with(pl, "iss", "https://evil.example"), "issuer", "https://evil.example")), now, ErrClaims},
		{"jti differs from id", signRaw(t, key, hdr, with(pl, "jti", "urn:uuid:other")), now, ErrClaims},
		{"wrong context", signRaw(t, key, hdr, with(pl, "@context", []string{"https://www.w3.org/2018/credentials/v1"})), now, ErrClaims},
		{"numeric status index", signRaw(t, key, hdr, with(pl, "credentialStatus", map[string]any{
			"type": TypeStatusEntry, "statusPurpose": "revocation", "statusListIndex": rec.StatusIndex,
			"statusListCredential": testIssuer + "/status/1"})), now, ErrMalformed},
		{"expired", tok, e.clk.Now().Add(DefaultLifetime), ErrExpired},
		{"long expired", tok, e.clk.Now().Add(24 * time.Hour), ErrExpired},
		{"not yet valid", tok, e.clk.Now().Add(-time.Second), ErrNotYet},
		{"not issued here", signRaw(t, key, hdr, with(with(pl, "id", "urn:uuid:00000000-0000-4000-8000-000000000000"), "jti", "urn:uuid:00000000-0000-4000-8000-000000000000")), now, ErrUnknown},
		{"digest changed", signRaw(t, key, hdr, with(pl, "credentialSubject", map[string]any{
			"id": "x", "agent": map[string]any{"id": "procurement-bot"},
			"action": map[string]any{"upstream": "acme", "tool": "pay_invoice", "arguments_digest": strings.Repeat("0", 64)}})), now, ErrClaims},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := e.iss.Verify(ctx, tc.token, tc.now)
			if !errors.Is(err, tc.want) {
				t.Errorf("Verify = %+v, %v; want %v", c, err, tc.want)
			}
			if err == nil || c != nil {
				t.Errorf("Verify accepted a bad token")
			}
		})
	}
	if _, err := e.iss.Verify(ctx, tok, now); err != nil {
		t.Errorf("the good token: %v", err)
	}
}

func TestWrongKEK(t *testing.T) {
	e := newEnv(t, AlgEdDSA)
	kid := e.iss.Keys()[0].ID
	_, err := New(t.Context(), Options{Store: e.st, KEK: testKEK(2), Issuer: testIssuer, Now: e.clk.Now, Logger: quiet()})
	if !errors.Is(err, ErrWrongKEK) || !strings.Contains(err.Error(), "the key-encryption key does not open signing key "+kid) {
		t.Fatalf("New with another KEK = %v; want ErrWrongKEK naming key %s", err, kid)
	}
	// The right one still opens it, and does not make a second key.
	again := e.open(t, AlgEdDSA, testKEK(1))
	if ks := again.Keys(); len(ks) != 1 || ks[0].ID != kid {
		t.Errorf("reopened keys = %+v, want only %s", ks, kid)
	}
	for _, kek := range [][]byte{nil, make([]byte, 16)} {
		if _, err := New(t.Context(), Options{Store: e.st, KEK: kek, Issuer: testIssuer}); !errors.Is(err, ErrKEK) {
			t.Errorf("New with a %d-byte KEK = %v, want ErrKEK", len(kek), err)
		}
	}
}

func TestLoadKEK(t *testing.T) {
	key := make([]byte, KEKSize)
	for i := range key {
		key[i] = byte(0xf0 + i%16) // exercises + / - and / _ alphabets
	}
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	std := base64.StdEncoding.EncodeToString(key)
	short := base64.StdEncoding.EncodeToString(key[:16])
	env := func(v string) func(string) (string, bool) {
		return func(k string) (string, bool) {
			if k == KEKEnv && v != "" {
				return v, true
			}
			return "", false
		}
	}
	for _, tc := range []struct {
		name   string
		getenv func(string) (string, bool)
		file   string
		want   error
	}{
		{"env std padded", env(std), "", nil},
		{"env std raw", env(base64.RawStdEncoding.EncodeToString(key)), "", nil},
		{"env url padded", env(base64.URLEncoding.EncodeToString(key)), "", nil},
		{"env url raw with spaces", env("  " + base64.RawURLEncoding.EncodeToString(key) + "\n"), "", nil},
		{"env wins over file", env(std), file("bad1", "nonsense"), nil},
		{"file", env(""), file("good", std+"\n"), nil},
		{"nil getenv, file", nil, file("good2", base64.RawURLEncoding.EncodeToString(key)), nil},
		{"env too short", env(short), "", ErrKEK},
		{"env not base64", env("this is *not* base64!"), "", ErrKEK},
		{"file too short", env(""), file("short", short), ErrKEK},
		{"file missing", env(""), filepath.Join(dir, "missing"), ErrKEK},
		{"none", env(""), "", ErrKEK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LoadKEK(tc.getenv, tc.file)
			if tc.want == nil {
				if err != nil || !bytes.Equal(got, key) {
					t.Errorf("LoadKEK = %x, %v; want the key", got, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("LoadKEK error %v, want %v", err, tc.want)
			}
			if err != nil && (strings.Contains(err.Error(), short) || strings.Contains(err.Error(), std)) {
				t.Errorf("error %q contains the key", err)
			}
		})
	}

	p := filepath.Join(dir, "kek")
	if err := WriteKEKFile(p); err != nil {
		t.Fatalf("WriteKEKFile: %v", err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	k, err := LoadKEK(nil, p)
	if err != nil || len(k) != KEKSize || bytes.Equal(k, make([]byte, KEKSize)) {
		t.Errorf("LoadKEK of a written file = %d bytes, %v", len(k), err)
	}
	if err := WriteKEKFile(p); err == nil {
		t.Error("WriteKEKFile overwrote an existing file")
	}
}

func jwksKids(t *testing.T, iss *Issuer) []string {
	t.Helper()
	raw, err := iss.JWKS(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []struct{ Kid, Alg, Use, Kty string } `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		if k.Use != "sig" || k.Alg == "" || k.Kty == "" {
			t.Errorf("JWKS key %+v lacks use sig, alg or kty", k)
		}
		kids = append(kids, k.Kid)
	}
	return kids
}

func TestRotate(t *testing.T) {
	e := newEnv(t, AlgEdDSA)
	ctx := t.Context()
	old := e.iss.Keys()[0].ID
	a := sampleAction()
	a.Lifetime = 2 * time.Hour
	tokOld, _, err := e.iss.Issue(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Add(time.Minute)
	k, err := e.iss.Rotate(ctx)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if k.ID == old {
		t.Fatal("Rotate returned the old key")
	}
	if got := jwksKids(t, e.iss); !slices.Equal(got, []string{k.ID, old}) {
		t.Errorf("JWKS kids after rotate = %v, want [%s %s]", got, k.ID, old)
	}
	keys, err := e.st.ListSigningKeys(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("ListSigningKeys = %d, %v", len(keys), err)
	}
	if want := e.clk.Now().Add(MaxLifetime); !keys[1].PublishUntil.Equal(want) || !keys[1].RetiredAt.Equal(e.clk.Now()) {
		t.Errorf("old key retired %v until %v, want %v until %v", keys[1].RetiredAt, keys[1].PublishUntil, e.clk.Now(), want)
	}
	// The old credential still verifies; new ones use the new key.
	if _, err := e.iss.Verify(ctx, tokOld, e.clk.Now()); err != nil {
		t.Errorf("Verify of a credential signed by the retired key: %v", err)
	}
	tokNew, recNew, err := e.iss.Issue(ctx, sampleAction())
	if err != nil {
		t.Fatal(err)
	}
	if hdr, _ := parts(t, tokNew); hdr["kid"] != k.ID || recNew.KeyID != k.ID {
		t.Errorf("new credential kid %v / %s, want %s", hdr["kid"], recNew.KeyID, k.ID)
	}
	// Another replica (a second Issuer on the same store) sees both.
	other := e.open(t, AlgEdDSA, testKEK(1))
	if _, err := other.Verify(ctx, tokOld, e.clk.Now()); err != nil {
		t.Errorf("another replica's Verify of the old credential: %v", err)
	}
	// The DID document lists both too.
	doc, err := e.iss.DIDDocument(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		ID                 string
		VerificationMethod []struct{ ID, Type, Controller string }
		AssertionMethod    []string
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	did := "did:web:gw.example.com%3A8443"
	if d.ID != did || len(d.VerificationMethod) != 2 || d.VerificationMethod[0].ID != did+"#"+k.ID ||
		d.VerificationMethod[0].Type != "JsonWebKey" || d.VerificationMethod[0].Controller != did ||
		!slices.Equal(d.AssertionMethod, []string{did + "#" + k.ID, did + "#" + old}) {
		t.Errorf("DID document = %s", doc)
	}
	// Past PublishUntil only the new key is published.
	e.clk.Add(MaxLifetime + time.Second)
	if got := jwksKids(t, e.iss); !slices.Equal(got, []string{k.ID}) {
		t.Errorf("JWKS kids after PublishUntil = %v, want [%s]", got, k.ID)
	}
}

func TestDIDWeb(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"https://gw.example.com", "did:web:gw.example.com"},
		{"https://gw.example.com:8443/", "did:web:gw.example.com%3A8443"},
		{"http://localhost:8080/interlock/eu", "did:web:localhost%3A8080:interlock:eu"},
	} {
		iss, err := normalizeIssuer(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := didWeb(iss); err != nil || got != tc.want {
			t.Errorf("didWeb(%s) = %q, %v; want %q", tc.url, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "ftp://x", "https://x/?q=1", "https://u@x", "gw.example.com"} {
		if _, err := normalizeIssuer(bad); err == nil {
			t.Errorf("normalizeIssuer(%q) accepted", bad)
		}
	}
}

func TestConsume(t *testing.T) {
	e := newEnv(t, AlgEdDSA)
	ctx := t.Context()
	a := sampleAction()
	_, rec, err := e.iss.Issue(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	a.Uses = 2
	_, rec2, err := e.iss.Issue(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   string
		want error
	}{
		{"first use", rec.ID, nil},
		{"replay", rec.ID, ErrSpent},
		{"two uses: first", rec2.ID, nil},
		{"two uses: second", rec2.ID, nil},
		{"two uses: third", rec2.ID, ErrSpent},
		{"unknown", "urn:uuid:nope", store.ErrNotFound},
	} {
		_, err := e.iss.Consume(ctx, tc.id)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: Consume = %v, want %v", tc.name, err, tc.want)
		}
	}
	// Consumed at issuance: verifies, but a later Consume is a replay.
	a = sampleAction()
	a.ConsumeNow = true
	tok4, rec4, err := e.iss.Issue(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if rec4.Used != 1 || !rec4.ConsumedAt.Equal(e.clk.Now()) {
		t.Errorf("ConsumeNow record = used %d at %v", rec4.Used, rec4.ConsumedAt)
	}
	if c, err := e.iss.Verify(ctx, tok4, e.clk.Now()); err != nil || c.Record.Used != 1 {
		t.Errorf("Verify of a credential consumed at issuance = %+v, %v", c, err)
	}
	if _, err := e.iss.Consume(ctx, rec4.ID); !errors.Is(err, ErrSpent) {
		t.Errorf("Consume of a credential consumed at issuance = %v, want ErrSpent", err)
	}
	// Expired credentials cannot be consumed.
	_, rec3, err := e.iss.Issue(ctx, sampleAction())
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Add(DefaultLifetime)
	if _, err := e.iss.Consume(ctx, rec3.ID); !errors.Is(err, ErrSpent) {
		t.Errorf("Consume of an expired credential = %v, want ErrSpent", err)
	}
}

// listBits fetches, verifies and decodes status list list.
func listBits(t *testing.T, iss *Issuer, list string) ([]byte, map[string]any) {
	t.Helper()
	tok, maxAge, err := iss.StatusListCredential(t.Context(), list)
	if err != nil {
		t.Fatalf("StatusListCredential: %v", err)
	}
	if maxAge <= 0 || maxAge > StatusListCacheTTL {
		t.Errorf("maxAge = %v", maxAge)
	}
	raw, err := iss.JWKS(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	set, err := jwk.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify(tok, jws.WithKeySet(set)); err != nil {
		t.Fatalf("status list signature: %v", err)
	}
	hdr, pl := parts(t, string(tok))
	if hdr["typ"] != "vc+jwt" {
		t.Errorf("status list typ = %v", hdr["typ"])
	}
	if !slices.Contains(pl["type"].([]any), any("BitstringStatusListCredential")) || pl["iss"] != testIssuer ||
		pl["id"] != testIssuer+"/status/"+list || pl["vc"] != nil {
		t.Errorf("status list payload = %v", pl)
	}
	subj := pl["credentialSubject"].(map[string]any)
	if subj["type"] != "BitstringStatusList" || subj["statusPurpose"] != "revocation" {
		t.Errorf("status list subject = %v", subj)
	}
	enc := subj["encodedList"].(string)
	if !strings.HasPrefix(enc, "uH4sI") {
		t.Errorf("encodedList %.10s... is not u + base64url(gzip)", enc)
	}
	bits, err := DecodeList(enc, 1<<20)
	if err != nil {
		t.Fatalf("DecodeList: %v", err)
	}
	if len(bits)*8 != DefaultStatusListSize {
		t.Errorf("status list has %d bits, want %d", len(bits)*8, DefaultStatusListSize)
	}
	return bits, subj
}

func bit(bits []byte, i int) bool { return bits[i/8]&(0x80>>(i%8)) != 0 }

func TestRevokeStatusList(t *testing.T) {
	e := newEnv(t, AlgEdDSA)
	ctx := t.Context()
	tok, rec, err := e.iss.Issue(ctx, sampleAction())
	if err != nil {
		t.Fatal(err)
	}
	bits, _ := listBits(t, e.iss, rec.StatusList) // cached now
	if bit(bits, rec.StatusIndex) {
		t.Fatal("bit set before revocation")
	}
	r, err := e.iss.Revoke(ctx, rec.ID, "owner left")
	if err != nil || r.RevokedAt.IsZero() || r.RevokeReason != "owner left" {
		t.Fatalf("Revoke = %+v, %v", r, err)
	}
	if _, err := e.iss.Verify(ctx, tok, e.clk.Now()); !errors.Is(err, ErrRevoked) {
		t.Errorf("Verify of a revoked credential = %v, want ErrRevoked", err)
	}
	if _, err := e.iss.Consume(ctx, rec.ID); !errors.Is(err, ErrSpent) {
		t.Errorf("Consume of a revoked credential = %v, want ErrSpent", err)
	}
	bits, _ = listBits(t, e.iss, rec.StatusList)
	if !bit(bits, rec.StatusIndex) {
		t.Error("revocation did not set the bit (stale cache?)")
	}
	n := 0
	for i := range len(bits) * 8 {
		if bit(bits, i) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d bits set, want 1", n)
	}
	for _, bad := range []string{"", "0", "01", "a", "1/2", "1234567890", "2", "77"} { // 2, 77: never used
		if _, _, err := e.iss.StatusListCredential(ctx, bad); !errors.Is(err, ErrUnknownStatusList) {
			t.Errorf("StatusListCredential(%q) = %v, want ErrUnknownStatusList", bad, err)
		}
	}
}

func TestStatusListCache(t *testing.T) {
	e := newEnv(t, AlgEdDSA)
	ctx := t.Context()
	a, age, err := e.iss.StatusListCredential(ctx, "1")
	if err != nil || age != StatusListCacheTTL {
		t.Fatalf("StatusListCredential = %v, %v", age, err)
	}
	e.clk.Add(10 * time.Second)
	b, age, err := e.iss.StatusListCredential(ctx, "1")
	if err != nil || !bytes.Equal(a, b) || age != 20*time.Second {
		t.Errorf("cached: same %v, max-age %v, %v; want same, 20s", bytes.Equal(a, b), age, err)
	}
	e.clk.Add(20 * time.Second)
	c, age, err := e.iss.StatusListCredential(ctx, "1")
	if err != nil || bytes.Equal(a, c) || age != StatusListCacheTTL {
		t.Errorf("after the TTL: rebuilt %v, max-age %v, %v", !bytes.Equal(a, c), age, err)
	}
}

// A revocation made by another process or replica (a second Issuer on the
// same store) shows in this one's status list at once, cache or not.
func TestStatusListSeesOtherReplicasRevocation(t *testing.T) {
	e := newEnv(t, AlgEdDSA)
	ctx := t.Context()
	_, rec, err := e.iss.Issue(ctx, sampleAction())
	if err != nil {
		t.Fatal(err)
	}
	if bits, _ := listBits(t, e.iss, rec.StatusList); bit(bits, rec.StatusIndex) { // cached now
		t.Fatal("bit set before revocation")
	}
	other := e.open(t, AlgEdDSA, testKEK(1))
	if _, err := other.Revoke(ctx, rec.ID, "revoked elsewhere"); err != nil {
		t.Fatal(err)
	}
	if bits, _ := listBits(t, e.iss, rec.StatusList); !bit(bits, rec.StatusIndex) {
		t.Error("the other replica's revocation is not in this replica's status list")
	}
}

// revokeAt records and revokes credentials at the given indexes of list
// "1" directly in the store.
func revokeAt(t *testing.T, e *env, idx ...int) {
	t.Helper()
	for _, i := range idx {
		id := "urn:test:" + strconv.Itoa(i)
		c := store.Credential{ID: id, AgentID: "a", StatusList: "1", StatusIndex: i, Uses: 1,
			IssuedAt: e.clk.Now(), ExpiresAt: e.clk.Now().Add(time.Minute)}
		if err := e.st.CreateCredential(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		if _, err := e.iss.Revoke(t.Context(), id, "test"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStatusListBitOrder(t *testing.T) {
	e := newEnv(t, AlgEdDSA)
	revokeAt(t, e, 0, 7, 8, 131071)
	bits, _ := listBits(t, e.iss, "1")
	want := make([]byte, DefaultStatusListSize/8)
	want[0] = 0x81  // indexes 0 (MSB) and 7 (LSB)
	want[1] = 0x80  // index 8
	want[16383] = 1 // index 131071
	if !bytes.Equal(bits, want) {
		for i := range bits {
			if bits[i] != want[i] {
				t.Errorf("byte %d = %08b, want %08b", i, bits[i], want[i])
			}
		}
	}
}

// TestStatusListPeer decodes interlock's list with the reference
// implementation, @digitalbazaar/vc-bitstring-status-list.
func TestStatusListPeer(t *testing.T) {
	node := testenv.Node(t)
	root := testenv.RepoRoot(t)
	lib := filepath.Join(root, "test/peers/node_modules/@digitalbazaar/vc-bitstring-status-list/lib/index.js")
	if _, err := os.Stat(lib); err != nil {
		testenv.Skip(t, "npm peer @digitalbazaar/vc-bitstring-status-list is missing: run `npm ci --prefix test/peers`")
	}
	e := newEnv(t, AlgEdDSA)
	idx := []int{0, 7, 8, 94567, 131071}
	revokeAt(t, e, idx...)
	_, subj := listBits(t, e.iss, "1")
	script := filepath.Join(t.TempDir(), "decode.mjs")
	src := `import {pathToFileURL} from 'node:url';
const {decodeList} = await import(pathToFileURL(process.argv[2]).href);
const list = await decodeList({encodedList: process.argv[3]});
const set = [];
for (let i = 0; i < list.length; i++) if (list.getStatus(i)) set.push(i);
console.log(JSON.stringify({length: list.length, set}));
`
	if err := os.WriteFile(script, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), node, script, lib, subj["encodedList"].(string))
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(root, "test/peers/node_modules"))
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("node: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("node: %v", err)
	}
	var got struct {
		Length int
		Set    []int
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node output %q: %v", out, err)
	}
	if got.Length != DefaultStatusListSize || !slices.Equal(got.Set, idx) {
		t.Errorf("the reference decoder reads %d entries with %v set; want %d with %v", got.Length, got.Set, DefaultStatusListSize, idx)
	}
}

func TestRandomIndexesUnique(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 issues")
	}
	e := newEnv(t, AlgEdDSA)
	ctx := t.Context()
	const n = 2000
	seen := make(map[int]bool, n)
	ids := make(map[string]bool, n)
	increasing := 0
	prev := -1
	for range n {
		_, rec, err := e.iss.Issue(ctx, sampleAction())
		if err != nil {
			t.Fatal(err)
		}
		if seen[rec.StatusIndex] || ids[rec.ID] || rec.StatusList != "1" {
			t.Fatalf("index %d or id %s issued twice (list %s)", rec.StatusIndex, rec.ID, rec.StatusList)
		}
		seen[rec.StatusIndex], ids[rec.ID] = true, true
		if rec.StatusIndex > prev {
			increasing++
		}
		prev = rec.StatusIndex
	}
	if c, err := e.st.CountStatusIndexes(ctx, "1"); err != nil || c != n {
		t.Errorf("CountStatusIndexes = %d, %v; want %d", c, err, n)
	}
	// Random, not sequential: about half the steps go up.
	if increasing < n/3 || increasing > 2*n/3 {
		t.Errorf("%d of %d indexes were above the previous one: not random", increasing, n)
	}
}

// TestStatusListRollover: a list that reaches the rollover point (half
// its size; lowered here) is closed and the next one opened, also by an
// Issuer that starts later.
func TestStatusListRollover(t *testing.T) {
	e := newEnv(t, AlgEdDSA)
	ctx := t.Context()
	e.iss.rollover = 3
	var lists []string
	for range 7 {
		_, rec, err := e.iss.Issue(ctx, sampleAction())
		if err != nil {
			t.Fatal(err)
		}
		lists = append(lists, rec.StatusList)
	}
	if want := []string{"1", "1", "1", "2", "2", "2", "3"}; !slices.Equal(lists, want) {
		t.Errorf("lists = %v, want %v", lists, want)
	}
	other, err := New(ctx, Options{Store: e.st, KEK: testKEK(1), Issuer: testIssuer, Now: e.clk.Now, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	other.rollover = 3
	if err := other.findList(ctx); err != nil {
		t.Fatal(err)
	}
	if _, rec, err := other.Issue(ctx, sampleAction()); err != nil || rec.StatusList != "3" {
		t.Errorf("a new Issuer issues into list %q, %v; want 3", rec.StatusList, err)
	}
}

func TestIssueRejects(t *testing.T) {
	e := newEnv(t, AlgEdDSA)
	nan := 0.0
	nan = nan / nan
	for _, tc := range []struct {
		name string
		edit func(*Action)
	}{
		{"no agent", func(a *Action) { a.AgentID = "" }},
		{"no tool", func(a *Action) { a.Tool = "" }},
		{"negative lifetime", func(a *Action) { a.Lifetime = -time.Second }},
		{"too long", func(a *Action) { a.Lifetime = MaxLifetime + time.Second }},
		{"negative uses", func(a *Action) { a.Uses = -1 }},
		{"NaN amount", func(a *Action) { a.MaxAmount = &nan }},
		{"bad kind", func(a *Action) { a.AuthorizedBy = []Authorization{{Kind: "magic"}} }},
		{"bad arguments", func(a *Action) { a.Arguments = map[string]any{"x": make(chan int)} }},
	} {
		a := sampleAction()
		tc.edit(&a)
		if _, _, err := e.iss.Issue(t.Context(), a); !errors.Is(err, ErrInvalidAction) {
			t.Errorf("%s: Issue = %v, want ErrInvalidAction", tc.name, err)
		}
	}
}

func TestArgumentsDigest(t *testing.T) {
	nilD, err := ArgumentsDigest(nil)
	if err != nil {
		t.Fatal(err)
	}
	emptyD, _ := ArgumentsDigest(map[string]any{})
	sum := sha256.Sum256([]byte("{}"))
	if nilD != emptyD || nilD != hex.EncodeToString(sum[:]) {
		t.Errorf("digest of nil = %s, of {} = %s; want both sha256({})", nilD, emptyD)
	}
	a, _ := ArgumentsDigest(map[string]any{"b": 1, "a": []any{1.0, "é"}})
	b, _ := ArgumentsDigest(map[string]any{"a": []any{1, "é"}, "b": 1.0})
	if a != b {
		t.Error("digest depends on key order or number spelling")
	}
}

func FuzzVerify(f *testing.F) {
	e := newEnv(f, AlgEdDSA)
	tok, _, err := e.iss.Issue(context.Background(), sampleAction())
	if err != nil {
		f.Fatal(err)
	}
	p := strings.Split(tok, ".")
	for _, s := range []string{tok, "", ".", "..", "a.b.c", p[0] + ".." + p[2], p[0] + "." + p[1] + ".",
		"eyJhbGciOiJub25lIn0.e30.", strings.Repeat("A", 100) + "." + p[1] + "." + p[2]} {
		f.Add(s)
	}
	// Far past every validity window: even the real token must fail.
	later := e.clk.Now().Add(365 * 24 * time.Hour)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := e.iss.Verify(context.Background(), s, later)
		if err == nil || c != nil {
			t.Fatalf("Verify(%q) accepted: %+v", s, c)
		}
	})
}

func BenchmarkIssue(b *testing.B) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		b.Run(alg, func(b *testing.B) {
			e := newEnv(b, alg)
			ctx := context.Background()
			a := sampleAction()
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := e.iss.Issue(ctx, a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIssueSign is Issue without the store write: building the
// credential and signing it (the "sign" line of the performance budget).
func BenchmarkIssueSign(b *testing.B) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		b.Run(alg, func(b *testing.B) {
			e := newEnv(b, alg)
			a := sampleAction()
			key := e.iss.current
			b.ReportAllocs()
			for b.Loop() {
				digest, err := ArgumentsDigest(a.Arguments)
				if err != nil {
					b.Fatal(err)
				}
				rec := store.Credential{ID: "urn:uuid:00000000-0000-4000-8000-000000000000", ArgsDigest: digest,
					StatusList: "1", StatusIndex: 94567, IssuedAt: e.clk.Now(), ExpiresAt: e.clk.Now().Add(DefaultLifetime), Uses: 1}
				if _, err := e.iss.signAction(key, &rec, &a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		b.Run(alg, func(b *testing.B) {
			e := newEnv(b, alg)
			ctx := context.Background()
			tok, _, err := e.iss.Issue(ctx, sampleAction())
			if err != nil {
				b.Fatal(err)
			}
			now := e.clk.Now().Add(time.Second)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.iss.Verify(ctx, tok, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkConsume is the store's atomic use of a credential (one write
// transaction), for the allow path's budget.
func BenchmarkConsume(b *testing.B) {
	e := newEnv(b, AlgEdDSA)
	ctx := context.Background()
	a := sampleAction()
	a.Uses = 1 << 30
	_, rec, err := e.iss.Issue(ctx, a)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.iss.Consume(ctx, rec.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// commit records p's credential the way the gate does: with an audit
// event, in the store's AppendAudit.
func commit(t *testing.T, st store.Store, p *Prepared) error {
	t.Helper()
	return st.AppendAudit(t.Context(), func(h store.AuditHead) ([]store.AuditEvent, error) {
		sum := sha256.Sum256([]byte(p.Record().ID))
		return []store.AuditEvent{{Seq: h.Seq + 1, Time: time.Now(), Type: "decision", Data: []byte(`{}`),
			PrevHash: h.Hash, Hash: sum[:], Credential: p.Record()}}, nil
	})
}

// Prepare builds the record without writing it; Sign refuses until the
// record is committed with its index, and the committed credential
// verifies like an issued one.
func TestPrepareSign(t *testing.T) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		t.Run(alg, func(t *testing.T) {
			e := newEnv(t, alg)
			ctx := t.Context()
			a := sampleAction()
			a.ConsumeNow = true
			p, err := e.iss.Prepare(ctx, a)
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			r := p.Record()
			if r.StatusIndex != -1 || r.IndexRange != DefaultStatusListSize || r.StatusList != "1" ||
				r.Uses != 1 || r.Used != 1 || r.ConsumedAt.IsZero() || r.KeyID != e.iss.Keys()[0].ID ||
				!strings.HasPrefix(r.ID, "urn:uuid:") || r.DecisionID != "dec-1" {
				t.Errorf("prepared record %+v", *r)
			}
			if _, err := e.st.GetCredential(ctx, r.ID); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Prepare wrote the record: %v", err)
			}
			if _, _, err := p.Sign(); !errors.Is(err, ErrNotRecorded) {
				t.Errorf("Sign before the commit = %v, want ErrNotRecorded", err)
			}
			if err := commit(t, e.st, p); err != nil {
				t.Fatalf("AppendAudit: %v", err)
			}
			tok, rec, err := p.Sign()
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			stored, err := e.st.GetCredential(ctx, rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			if rec.IndexRange != 0 || rec.StatusIndex != stored.StatusIndex || rec.ID != stored.ID || stored.Used != 1 {
				t.Errorf("Sign returned %+v; stored %+v", rec, stored)
			}
			c, err := e.iss.Verify(ctx, tok, e.clk.Now().Add(time.Second))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.ID != rec.ID || c.StatusIndex != stored.StatusIndex || c.StatusList != "1" || c.Uses != 1 {
				t.Errorf("claims %+v", c)
			}
			// Used at issuance: a Consume is a replay.
			if _, err := e.iss.Consume(ctx, rec.ID); !errors.Is(err, ErrSpent) {
				t.Errorf("Consume of a credential used at issuance = %v, want ErrSpent", err)
			}
			// A failed commit leaves the record unsigned.
			p2, err := e.iss.Prepare(ctx, a)
			if err != nil {
				t.Fatal(err)
			}
			p2.Record().ID = rec.ID // taken: the append fails
			if err := commit(t, e.st, p2); !errors.Is(err, store.ErrAlreadyExists) {
				t.Fatalf("AppendAudit of a taken id = %v", err)
			}
			if _, _, err := p2.Sign(); !errors.Is(err, ErrNotRecorded) {
				t.Errorf("Sign after a failed commit = %v, want ErrNotRecorded", err)
			}
		})
	}
}

// Signed prepared credentials count towards the list's rollover, like
// issued ones; unsigned ones do not (yet).
func TestPrepareRollover(t *testing.T) {
	e := newEnv(t, AlgEdDSA)
	ctx := t.Context()
	e.iss.rollover = 3
	var lists []string
	for i := range 7 {
		var rec store.Credential
		if i%2 == 0 {
			p, err := e.iss.Prepare(ctx, sampleAction())
			if err != nil {
				t.Fatal(err)
			}
			if err := commit(t, e.st, p); err != nil {
				t.Fatal(err)
			}
			if _, rec, err = p.Sign(); err != nil {
				t.Fatal(err)
			}
			// Signing again is harmless and counts once.
			if _, _, err = p.Sign(); err != nil {
				t.Fatal(err)
			}
		} else {
			var err error
			if _, rec, err = e.iss.Issue(ctx, sampleAction()); err != nil {
				t.Fatal(err)
			}
		}
		lists = append(lists, rec.StatusList)
	}
	if want := []string{"1", "1", "1", "2", "2", "2", "3"}; !slices.Equal(lists, want) {
		t.Errorf("lists = %v, want %v", lists, want)
	}
	for _, l := range []string{"1", "2"} {
		if n, err := e.st.CountStatusIndexes(ctx, l); err != nil || n != 3 {
			t.Errorf("list %s has %d indexes (%v), want 3", l, n, err)
		}
	}
}

// Replicas that start together on an empty store agree on one first
// signing key instead of each making its own.
func TestFirstKeyOnce(t *testing.T) {
	e := &env{st: openStore(t), clk: &clock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}}
	const n = 4
	kids := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			iss := e.open(t, AlgEdDSA, testKEK(1))
			iss.mu.RLock()
			kids <- iss.current.rec.ID
			iss.mu.RUnlock()
		}()
	}
	wg.Wait()
	close(kids)
	first := ""
	for k := range kids {
		if first == "" {
			first = k
		} else if k != first {
			t.Errorf("replicas sign with different first keys: %s and %s", first, k)
		}
	}
	keys, err := e.st.ListSigningKeys(t.Context())
	if err != nil || len(keys) != 1 {
		t.Errorf("%d signing keys stored (%v), want 1", len(keys), err)
	}
}

// BenchmarkIssueWithDecision is what a credential costs the allow path:
// prepared, its record committed with the call's decision event (one
// AppendAudit, a decision of realistic size), then signed. "commit only"
// is the decision's transaction without a credential: the difference is
// the credential's cost.
func BenchmarkIssueWithDecision(b *testing.B) {
	data := bytes.Repeat([]byte(`{"k":"decision record of realistic size"},`), 24)
	data = append(append([]byte(`[`), data...), `{}]`...)
	appendWith := func(e *env, rec *store.Credential) error {
		return e.st.AppendAudit(context.Background(), func(h store.AuditHead) ([]store.AuditEvent, error) {
			sum := sha256.Sum256(append(h.Hash, data...))
			return []store.AuditEvent{{Seq: h.Seq + 1, Time: time.Now(), Type: "decision", CallID: "c", AgentID: "procurement-bot",
				Data: data, PrevHash: h.Hash, Hash: sum[:], Credential: rec}}, nil
		})
	}
	for _, mode := range []string{"commit only", "with credential"} {
		b.Run(mode, func(b *testing.B) {
			e := newEnv(b, AlgEdDSA)
			ctx := context.Background()
			a := sampleAction()
			a.ConsumeNow = true
			b.ReportAllocs()
			for b.Loop() {
				if mode == "commit only" {
					if err := appendWith(e, nil); err != nil {
						b.Fatal(err)
					}
					continue
				}
				p, err := e.iss.Prepare(ctx, a)
				if err != nil {
					b.Fatal(err)
				}
				if err := appendWith(e, p.Record()); err != nil {
					b.Fatal(err)
				}
				if _, _, err := p.Sign(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
