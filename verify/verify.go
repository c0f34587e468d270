package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/canon"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// The sentinel errors Verify returns, each wrapped with detail. Test with
// errors.Is; exactly one of them is in every error Verify returns.
var (
	// ErrMalformed: not a compact JWS, or a payload that is not the
	// credential interlock issues (missing or mistyped fields).
	ErrMalformed = errors.New("verify: malformed credential")
	// ErrAlgorithm: alg "none", an alg other than EdDSA or ES256, or an alg
	// that does not fit the key named by kid.
	ErrAlgorithm = errors.New("verify: algorithm not accepted")
	// ErrType: the header's typ is not vc+jwt or its cty is not vc.
	ErrType = errors.New("verify: wrong token type")
	// ErrVCClaim: the payload has a "vc" claim (VC-JWT 1.1 style), which
	// a vc+jwt credential must not have.
	ErrVCClaim = errors.New("verify: vc claim present")
	// ErrIssuer: iss is not the expected issuer, or differs from the
	// credential's issuer.
	ErrIssuer = errors.New("verify: wrong issuer")
	// ErrSignature: the signature does not verify with the key named by kid.
	ErrSignature = errors.New("verify: bad signature")
	// ErrUnknownKey: no kid, or no key with that kid in the issuer's JWKS
	// (also when the JWKS cannot be fetched; the cause is wrapped too).
	ErrUnknownKey = errors.New("verify: unknown signing key")
	// ErrExpired: past exp or validUntil (beyond the leeway).
	ErrExpired = errors.New("verify: credential expired")
	// ErrNotYetValid: before nbf or validFrom, or iat in the future
	// (beyond the leeway).
	ErrNotYetValid = errors.New("verify: credential not yet valid")
	// ErrRevoked: the credential's bit is set in its status list.
	ErrRevoked = errors.New("verify: credential revoked")
	// ErrStatusUnavailable: the status list could not be fetched, verified
	// or read, so revocation could not be ruled out (fail closed).
	ErrStatusUnavailable = errors.New("verify: credential status unavailable")
	// ErrMismatch: the credential is for another upstream, tool or
	// arguments than the call it arrived with.
	ErrMismatch = errors.New("verify: credential does not match the call")
)

const (
	defaultTimeout = 10 * time.Second
	defaultLeeway  = 30 * time.Second
	// maxTokenSize bounds a credential; interlock's are about 1.5 KB.
	maxTokenSize = 64 << 10
	// vcContextV2 is the first @context of every VC 2.0 credential.
	vcContextV2 = "https://www.w3.org/ns/credentials/v2"
)

// Options configures a Verifier. Issuer is required; zero values elsewhere
// mean the defaults.
type Options struct {
	// Issuer is interlock's public URL (its public_url setting), which
	// must equal every credential's iss and issuer.
	Issuer string
	// JWKS, when set, is a static JSON Web Key Set used instead of fetching
	// Issuer + "/.well-known/jwks.json". It is never refreshed.
	JWKS []byte
	// HTTPClient fetches the JWKS and status lists; default: a client with
	// a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Leeway is the clock skew allowed on every time check; default 30 s.
	// Negative is an error.
	Leeway time.Duration
	// SkipStatus does not check revocation (no status list is fetched):
	// for offline use only.
	SkipStatus bool
}

// Verifier verifies interlock credentials. It caches the issuer's JWKS and
// status lists; it is safe for concurrent use.
type Verifier struct {
	issuer     string
	jwksURL    string
	client     *http.Client
	now        func() time.Time
	leeway     time.Duration
	skipStatus bool
	keys       *keyCache
	lists      *listCache
}

// New returns a Verifier for opts. It does no I/O: a JWKS that is not given
// is fetched on first use.
func New(opts Options) (*Verifier, error) {
	if opts.Issuer == "" {
		return nil, errors.New("verify: Options.Issuer is required")
	}
	u, err := url.Parse(opts.Issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("verify: Options.Issuer %q is not an http(s) URL", opts.Issuer)
	}
	if opts.Leeway < 0 {
		return nil, fmt.Errorf("verify: Options.Leeway %v is negative", opts.Leeway)
	}
	v := &Verifier{
		issuer:     opts.Issuer,
		jwksURL:    strings.TrimSuffix(opts.Issuer, "/") + "/.well-known/jwks.json",
		client:     opts.HTTPClient,
		now:        opts.Now,
		leeway:     opts.Leeway,
		skipStatus: opts.SkipStatus,
		keys:       &keyCache{},
		lists:      &listCache{entries: make(map[string]*listEntry)},
	}
	if v.client == nil {
		v.client = &http.Client{Timeout: defaultTimeout}
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.leeway == 0 {
		v.leeway = defaultLeeway
	}
	if opts.JWKS != nil {
		keys, err := parseJWKS(opts.JWKS)
		if err != nil {
			return nil, fmt.Errorf("verify: Options.JWKS: %w", err)
		}
		v.keys.static = true
		v.keys.keys = keys
	}
	return v, nil
}

// Call is the call a credential arrived with.
type Call struct {
	Upstream  string          // the upstream's name in interlock
	Tool      string          // the tool's name (without the upstream)
	Arguments json.RawMessage // the call's arguments; absent or null means {}
}

// Credential is a verified credential.
type Credential struct {
	ID              string // the credential's id (= jti)
	Issuer          string
	AgentID         string
	Owner           string // the agent's owner
	Upstream        string
	Tool            string
	ArgumentsDigest string // hex SHA-256 of the canonical arguments
	ValidFrom       time.Time
	ValidUntil      time.Time
	MaxAmount       *float64 // constraints.max_amount, nil when absent
	Uses            int      // constraints.uses (1 when absent); enforced by interlock
	// Authorization is credentialSubject.authorization: who authorised the
	// call and how, one object per authority (policy rule, approver).
	Authorization []map[string]any
	// Raw is the whole JWT payload, as decoded by encoding/json.
	Raw map[string]any
}

// ArgumentsDigest returns the hex SHA-256 of the RFC 8785 canonical form of
// args, the digest a credential binds; absent (empty) or null arguments
// count as {}.
func ArgumentsDigest(args json.RawMessage) (string, error) {
	trimmed := bytes.TrimSpace(args)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		trimmed = []byte("{}")
	}
	c, err := canon.Canonicalize(trimmed)
	if err != nil {
		return "", fmt.Errorf("verify: arguments: %w", err)
	}
	sum := sha256.Sum256(c)
	return hex.EncodeToString(sum[:]), nil
}

// Verify verifies token, interlock's credential, and returns what it says.
// With a non-nil call it also checks that the credential is for exactly
// that call; with nil it skips that check. Errors wrap one of the package's
// sentinel errors.
func (v *Verifier) Verify(ctx context.Context, token string, call *Call) (*Credential, error) {
	payload, err := v.verifyJWS(ctx, token, true)
	if err != nil {
		return nil, err
	}
	raw, err := decodeObject(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	if _, ok := raw["vc"]; ok {
		return nil, fmt.Errorf("%w: a vc+jwt credential is the payload itself", ErrVCClaim)
	}
	now := v.now()
	c, err := v.checkVC(raw, now)
	if err != nil {
		return nil, err
	}
	if err := v.checkSubject(raw, c); err != nil {
		return nil, err
	}
	if call != nil {
		if err := matchCall(c, call); err != nil {
			return nil, err
		}
	}
	if !v.skipStatus {
		if err := v.checkStatus(ctx, raw["credentialStatus"], now); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// header is the part of a JWS protected header the verifier reads.
type header struct {
	alg, typ, cty, kid string
}

// verifyJWS checks the shape, header and signature of a vc+jwt and returns
// its payload. requireCty demands cty vc (a credential); without it an
// absent cty is accepted (a status list).
func (v *Verifier) verifyJWS(ctx context.Context, token string, requireCty bool) ([]byte, error) {
	if len(token) > maxTokenSize {
		return nil, fmt.Errorf("%w: token of %d bytes (limit %d)", ErrMalformed, len(token), maxTokenSize)
	}
	first := strings.IndexByte(token, '.')
	last := strings.LastIndexByte(token, '.')
	if first <= 0 || first == last || strings.Count(token, ".") != 2 || last == first+1 {
		return nil, fmt.Errorf("%w: not a JWS compact serialization", ErrMalformed)
	}
	hdrJSON, err := base64.RawURLEncoding.Strict().DecodeString(token[:first])
	if err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	h, err := parseHeader(hdrJSON)
	if err != nil {
		return nil, err
	}
	alg, err := signatureAlgorithm(h.alg)
	if err != nil {
		return nil, err
	}
	if !mediaType(h.typ, "vc+jwt") {
		return nil, fmt.Errorf("%w: typ %q, want vc+jwt", ErrType, h.typ)
	}
	if (h.cty != "" || requireCty) && !mediaType(h.cty, "vc") {
		return nil, fmt.Errorf("%w: cty %q, want vc", ErrType, h.cty)
	}
	if h.kid == "" {
		return nil, fmt.Errorf("%w: no kid in the header", ErrUnknownKey)
	}
	key, err := v.key(ctx, h.kid)
	if err != nil {
		return nil, err
	}
	if key.alg != h.alg {
		return nil, fmt.Errorf("%w: alg %s with key %q, which is for %s", ErrAlgorithm, h.alg, h.kid, key.alg)
	}
	payload, err := jws.VerifyCompactFast(key.key, []byte(token), alg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	return payload, nil
}

// parseHeader reads the protected header; crit and b64 (extensions the
// verifier does not implement) are refused.
func parseHeader(data []byte) (header, error) {
	m, err := decodeObject(data)
	if err != nil {
		return header{}, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	var h header
	for name, dst := range map[string]*string{"alg": &h.alg, "typ": &h.typ, "cty": &h.cty, "kid": &h.kid} {
		val, ok := m[name]
		if !ok {
			continue
		}
		s, isString := val.(string)
		if !isString {
			return header{}, fmt.Errorf("%w: header %q is not a string", ErrMalformed, name)
		}
		*dst = s
	}
	for _, name := range []string{"crit", "b64", "jku", "x5u", "jwk"} {
		if _, ok := m[name]; ok {
			return header{}, fmt.Errorf("%w: header parameter %q is not supported", ErrMalformed, name)
		}
	}
	return h, nil
}

// signatureAlgorithm maps the accepted algs to jwx's.
func signatureAlgorithm(alg string) (jwa.SignatureAlgorithm, error) {
	switch alg {
	case "EdDSA":
		return jwa.EdDSA(), nil
	case "ES256":
		return jwa.ES256(), nil
	case "":
		return jwa.SignatureAlgorithm{}, fmt.Errorf("%w: no alg", ErrAlgorithm)
	default:
		return jwa.SignatureAlgorithm{}, fmt.Errorf("%w: alg %q (accepted: EdDSA, ES256)", ErrAlgorithm, alg)
	}
}

// mediaType compares a typ or cty value with want as RFC 7515 §4.1.9 does:
// case-insensitively, with an optional "application/" prefix.
func mediaType(got, want string) bool {
	if len(got) > len("application/") && strings.EqualFold(got[:len("application/")], "application/") {
		got = got[len("application/"):]
	}
	return strings.EqualFold(got, want)
}

// decodeObject decodes one JSON object.
func decodeObject(data []byte) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("not a JSON object")
	}
	return m, nil
}

// checkVC checks the registered claims and the credential's envelope
// (context, type, id, issuer, validity) and starts the Credential.
func (v *Verifier) checkVC(raw map[string]any, now time.Time) (*Credential, error) {
	iss, err := str(raw, "iss", true)
	if err != nil {
		return nil, err
	}
	if iss != v.issuer {
		return nil, fmt.Errorf("%w: iss %q, want %q", ErrIssuer, iss, v.issuer)
	}
	vcIssuer, err := issuerOf(raw)
	if err != nil {
		return nil, err
	}
	if vcIssuer != iss {
		return nil, fmt.Errorf("%w: credential issuer %q differs from iss %q", ErrIssuer, vcIssuer, iss)
	}
	if err := checkEnvelope(raw, "VerifiableCredential"); err != nil {
		return nil, err
	}
	jti, err := str(raw, "jti", true)
	if err != nil {
		return nil, err
	}
	id, err := str(raw, "id", true)
	if err != nil {
		return nil, err
	}
	if jti != id {
		return nil, fmt.Errorf("%w: jti %q differs from the credential id %q", ErrMalformed, jti, id)
	}
	from, until, err := v.checkTimes(raw, now, true)
	if err != nil {
		return nil, err
	}
	return &Credential{ID: id, Issuer: iss, ValidFrom: from, ValidUntil: until, Raw: raw}, nil
}

// checkEnvelope checks @context and type.
func checkEnvelope(raw map[string]any, wantType string) error {
	ctxs, ok := raw["@context"].([]any)
	if !ok || len(ctxs) == 0 || ctxs[0] != vcContextV2 {
		return fmt.Errorf("%w: @context must be an array starting with %s", ErrMalformed, vcContextV2)
	}
	types, err := strs(raw, "type")
	if err != nil {
		return err
	}
	for _, t := range types {
		if t == wantType {
			return nil
		}
	}
	return fmt.Errorf("%w: type %q lacks %s", ErrMalformed, types, wantType)
}

// issuerOf returns the credential's issuer: a URL, or an object with an id.
func issuerOf(raw map[string]any) (string, error) {
	switch is := raw["issuer"].(type) {
	case string:
		return is, nil
	case map[string]any:
		if id, ok := is["id"].(string); ok {
			return id, nil
		}
	case nil:
		return "", fmt.Errorf("%w: no credential issuer", ErrIssuer)
	}
	return "", fmt.Errorf("%w: issuer is neither a URL nor an object with an id", ErrMalformed)
}

// checkTimes checks exp, nbf, iat, validFrom and validUntil against now with
// the leeway, and returns the validity window (validFrom/validUntil, or
// nbf/exp when those are absent). requireExp demands an exp.
func (v *Verifier) checkTimes(raw map[string]any, now time.Time, requireExp bool) (from, until time.Time, err error) {
	exp, hasExp, err := numericDate(raw, "exp")
	if err != nil {
		return from, until, err
	}
	if !hasExp && requireExp {
		return from, until, fmt.Errorf("%w: no exp", ErrMalformed)
	}
	nbf, hasNbf, err := numericDate(raw, "nbf")
	if err != nil {
		return from, until, err
	}
	iat, hasIat, err := numericDate(raw, "iat")
	if err != nil {
		return from, until, err
	}
	vFrom, hasFrom, err := dateTime(raw, "validFrom")
	if err != nil {
		return from, until, err
	}
	vUntil, hasUntil, err := dateTime(raw, "validUntil")
	if err != nil {
		return from, until, err
	}
	late := now.Add(-v.leeway)
	early := now.Add(v.leeway)
	switch {
	case hasExp && !late.Before(exp):
		return from, until, fmt.Errorf("%w: exp %s, now %s", ErrExpired, exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case hasUntil && late.After(vUntil):
		return from, until, fmt.Errorf("%w: validUntil %s, now %s", ErrExpired, vUntil.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case hasNbf && early.Before(nbf):
		return from, until, fmt.Errorf("%w: nbf %s, now %s", ErrNotYetValid, nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case hasFrom && early.Before(vFrom):
		return from, until, fmt.Errorf("%w: validFrom %s, now %s", ErrNotYetValid, vFrom.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case hasIat && early.Before(iat):
		return from, until, fmt.Errorf("%w: iat %s is in the future, now %s", ErrNotYetValid, iat.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	from, until = nbf, exp
	if hasFrom {
		from = vFrom
	}
	if hasUntil {
		until = vUntil
	}
	return from, until, nil
}

// checkSubject reads credentialSubject into c.
func (v *Verifier) checkSubject(raw map[string]any, c *Credential) error {
	subject, ok := raw["credentialSubject"].(map[string]any)
	if !ok {
		return fmt.Errorf("%w: credentialSubject is not an object", ErrMalformed)
	}
	agent, ok := subject["agent"].(map[string]any)
	if !ok {
		return fmt.Errorf("%w: credentialSubject.agent is not an object", ErrMalformed)
	}
	action, ok := subject["action"].(map[string]any)
	if !ok {
		return fmt.Errorf("%w: credentialSubject.action is not an object", ErrMalformed)
	}
	var err error
	fields := []struct {
		obj  map[string]any
		name string
		dst  *string
	}{
		{agent, "id", &c.AgentID},
		{agent, "owner", &c.Owner},
		{action, "upstream", &c.Upstream},
		{action, "tool", &c.Tool},
		{action, "arguments_digest", &c.ArgumentsDigest},
	}
	for _, f := range fields {
		if *f.dst, err = str(f.obj, f.name, true); err != nil {
			return err
		}
	}
	if !isHexDigest(c.ArgumentsDigest) {
		return fmt.Errorf("%w: arguments_digest %q is not a lowercase hex SHA-256", ErrMalformed, c.ArgumentsDigest)
	}
	c.Uses = 1
	switch cons := action["constraints"].(type) {
	case nil:
	case map[string]any:
		if m, ok := cons["max_amount"]; ok && m != nil {
			f, isNum := m.(float64)
			if !isNum {
				return fmt.Errorf("%w: constraints.max_amount is not a number", ErrMalformed)
			}
			c.MaxAmount = &f
		}
		if u, ok := cons["uses"]; ok {
			f, isNum := u.(float64)
			if !isNum || f < 1 || f != math.Trunc(f) || f > math.MaxInt32 {
				return fmt.Errorf("%w: constraints.uses is not a positive integer", ErrMalformed)
			}
			c.Uses = int(f)
		}
	default:
		return fmt.Errorf("%w: constraints is not an object", ErrMalformed)
	}
	switch a := subject["authorization"].(type) {
	case nil:
	case map[string]any:
		c.Authorization = []map[string]any{a}
	case []any:
		for _, e := range a {
			obj, ok := e.(map[string]any)
			if !ok {
				return fmt.Errorf("%w: an authorization entry is not an object", ErrMalformed)
			}
			c.Authorization = append(c.Authorization, obj)
		}
	default:
		return fmt.Errorf("%w: authorization is neither an object nor an array", ErrMalformed)
	}
	return nil
}

// matchCall checks that c authorises call.
func matchCall(c *Credential, call *Call) error {
	if call.Upstream != c.Upstream || call.Tool != c.Tool {
		return fmt.Errorf("%w: credential for %s.%s, call to %s.%s", ErrMismatch, c.Upstream, c.Tool, call.Upstream, call.Tool)
	}
	digest, err := ArgumentsDigest(call.Arguments)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMismatch, err)
	}
	if digest != c.ArgumentsDigest {
		return fmt.Errorf("%w: arguments digest %s, credential binds %s", ErrMismatch, digest, c.ArgumentsDigest)
	}
	return nil
}

func isHexDigest(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// str reads a string member; a missing one is an error when required (and
// "" otherwise); a non-string one always is.
func str(m map[string]any, name string, required bool) (string, error) {
	val, ok := m[name]
	if !ok || val == nil {
		if required {
			return "", fmt.Errorf("%w: no %s", ErrMalformed, name)
		}
		return "", nil
	}
	s, ok := val.(string)
	if !ok || (required && s == "") {
		return "", fmt.Errorf("%w: %s is not a non-empty string", ErrMalformed, name)
	}
	return s, nil
}

// strs reads a member that is a string or an array of strings.
func strs(m map[string]any, name string) ([]string, error) {
	switch val := m[name].(type) {
	case string:
		return []string{val}, nil
	case []any:
		out := make([]string, 0, len(val))
		for _, e := range val {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: %s has a non-string entry", ErrMalformed, name)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: %s is neither a string nor an array of strings", ErrMalformed, name)
}

// numericDate reads a JWT NumericDate claim.
func numericDate(m map[string]any, name string) (time.Time, bool, error) {
	val, ok := m[name]
	if !ok {
		return time.Time{}, false, nil
	}
	f, ok := val.(float64)
	if !ok || f < 0 || f > 1<<40 {
		return time.Time{}, false, fmt.Errorf("%w: %s is not a NumericDate", ErrMalformed, name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// dateTime reads an RFC 3339 date-time member (validFrom, validUntil).
func dateTime(m map[string]any, name string) (time.Time, bool, error) {
	val, ok := m[name]
	if !ok {
		return time.Time{}, false, nil
	}
	s, ok := val.(string)
	if !ok {
		return time.Time{}, false, fmt.Errorf("%w: %s is not a string", ErrMalformed, name)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("%w: %s: %w", ErrMalformed, name, err)
	}
	return t, true, nil
}

// parseIndex reads a statusListIndex: a decimal string (a number is
// tolerated).
func parseIndex(val any) (int, error) {
	switch x := val.(type) {
	case string:
		n, err := strconv.ParseUint(x, 10, 31)
		if err != nil || (len(x) > 1 && x[0] == '0') {
			return 0, fmt.Errorf("statusListIndex %q is not a decimal index", x)
		}
		return int(n), nil
	case float64:
		if x < 0 || x != math.Trunc(x) || x > math.MaxInt32 {
			return 0, fmt.Errorf("statusListIndex %v is not an index", x)
		}
		return int(x), nil
	}
	return 0, errors.New("statusListIndex is missing or not a string")
}
