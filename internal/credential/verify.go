package credential

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/interlock-dev/interlock/internal/store"
)

// Verification errors. Verify wraps exactly one of them with detail.
var (
	ErrMalformed  = errors.New("credential: malformed token")
	ErrAlgorithm  = errors.New("credential: algorithm not allowed")
	ErrType       = errors.New("credential: wrong token type")
	ErrUnknownKey = errors.New("credential: unknown signing key")
	ErrSignature  = errors.New("credential: bad signature")
	ErrClaims     = errors.New("credential: invalid credential")
	ErrExpired    = errors.New("credential: expired")
	ErrNotYet     = errors.New("credential: not yet valid")
	ErrRevoked    = errors.New("credential: revoked")
	ErrUnknown    = errors.New("credential: not issued here")
)

// MaxTokenSize bounds the tokens Verify reads.
const MaxTokenSize = 32 << 10

// Claims is a verified action credential.
type Claims struct {
	ID         string // VC id and jti
	Issuer     string // VC issuer and iss
	KeyID, Alg string
	IssuedAt   time.Time
	NotBefore  time.Time
	ExpiresAt  time.Time
	ValidFrom  time.Time
	ValidUntil time.Time

	AgentID, OwnerEmail  string
	Upstream, Tool       string
	ArgumentsDigest      string // hex SHA-256 of the RFC 8785 arguments
	MaxAmount            *float64
	Uses                 int
	AuthorizedBy         []Authorization
	RiskScore            int
	ClientIP, DecisionID string
	PolicyVersion        string
	StatusList           string
	StatusIndex          int
	Record               store.Credential // the store's record (uses consumed, ...)
}

// header is the protected header as Verify reads it.
type header struct {
	Alg  string          `json:"alg"`
	Typ  string          `json:"typ"`
	Cty  string          `json:"cty"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
	B64  json.RawMessage `json:"b64"`
	Jku  json.RawMessage `json:"jku"`
	Jwk  json.RawMessage `json:"jwk"`
	X5u  json.RawMessage `json:"x5u"`
	X5c  json.RawMessage `json:"x5c"`
}

// verifyPayload is vcPayload plus the claims that must be absent.
type verifyPayload struct {
	vcPayload
	VC json.RawMessage `json:"vc"`
	VP json.RawMessage `json:"vp"`
}

// Verify checks a credential interlock issued, for interlock's own use: the
// header (alg EdDSA or ES256 and the key's, typ vc+jwt, cty vc, a kid of
// one of its keys, no crit), the signature, the payload (no vc or vp claim,
// the VC 2.0 shape, iss and issuer equal to this issuer, jti equal to id),
// the validity window at now (iat, nbf, exp, validFrom, validUntil), and in
// the store that it was issued here and is not revoked. It does not
// consume the credential (Consume does) nor compare it with a call.
func (i *Issuer) Verify(ctx context.Context, token string, now time.Time) (*Claims, error) {
	if len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(token), MaxTokenSize)
	}
	h64, rest, ok1 := strings.Cut(token, ".")
	p64, s64, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s64, ".") || h64 == "" || p64 == "" || s64 == "" {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	hb, err := base64.RawURLEncoding.DecodeString(h64)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	var h header
	if err := strictUnmarshal(hb, &h); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	switch {
	case h.Alg != AlgEdDSA && h.Alg != AlgES256:
		return nil, fmt.Errorf("%w: %q", ErrAlgorithm, h.Alg)
	case h.Typ != TypVCJWT:
		return nil, fmt.Errorf("%w: typ %q, want %q", ErrType, h.Typ, TypVCJWT)
	case h.Cty != CtyVC:
		return nil, fmt.Errorf("%w: cty %q, want %q", ErrType, h.Cty, CtyVC)
	case h.Crit != nil || h.B64 != nil:
		return nil, fmt.Errorf("%w: crit or b64 header", ErrMalformed)
	case h.Jku != nil || h.Jwk != nil || h.X5u != nil || h.X5c != nil:
		return nil, fmt.Errorf("%w: embedded or referenced keys are not accepted", ErrUnknownKey)
	case h.Kid == "":
		return nil, fmt.Errorf("%w: no kid", ErrUnknownKey)
	}
	key := i.key(h.Kid)
	if key == nil {
		i.refreshKeys(ctx, true)
		if key = i.key(h.Kid); key == nil {
			return nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, h.Kid)
		}
	}
	if key.rec.Alg != h.Alg {
		return nil, fmt.Errorf("%w: %s with key %s, which is %s", ErrAlgorithm, h.Alg, h.Kid, key.rec.Alg)
	}
	// The header is checked above (alg from an allow-list and equal to the
	// key's, no crit, no b64), which is what the fast path leaves to us.
	pb, err := jws.VerifyCompactFast(key.pub, []byte(token), key.jwaAlg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}

	var p verifyPayload
	if err := strictUnmarshal(pb, &p); err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	c, err := i.checkPayload(&p, now)
	if err != nil {
		return nil, err
	}
	c.KeyID, c.Alg = h.Kid, h.Alg

	rec, err := i.st.GetCredential(ctx, c.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrUnknown, c.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("credential: verify %s: %w", c.ID, err)
	}
	if rec.StatusList != c.StatusList || rec.StatusIndex != c.StatusIndex || rec.KeyID != c.KeyID ||
		rec.ArgsDigest != c.ArgumentsDigest || rec.Tool != c.Tool || rec.Upstream != c.Upstream || rec.AgentID != c.AgentID {
		return nil, fmt.Errorf("%w: %s does not match its record", ErrClaims, c.ID)
	}
	if !rec.RevokedAt.IsZero() {
		return nil, fmt.Errorf("%w: %s at %s (%s)", ErrRevoked, c.ID, rec.RevokedAt.Format(time.RFC3339), rec.RevokeReason)
	}
	c.Record = rec
	return c, nil
}

func (i *Issuer) key(kid string) *signingKey {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.keys[kid]
}

// strictUnmarshal decodes one JSON value and nothing after it
// (json.Unmarshal refuses trailing data).
func strictUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// checkPayload validates the decoded payload against this issuer and now.
func (i *Issuer) checkPayload(p *verifyPayload, now time.Time) (*Claims, error) {
	bad := func(format string, args ...any) (*Claims, error) {
		return nil, fmt.Errorf("%w: %s", ErrClaims, fmt.Sprintf(format, args...))
	}
	switch {
	case p.VC != nil || p.VP != nil:
		return bad("a vc or vp claim is present")
	case len(p.Context) == 0 || p.Context[0] != ContextV2:
		return bad("@context must start with %s", ContextV2)
	case !slices.Equal(p.Context, []string{ContextV2, i.ctxURL}):
		return bad("@context %q is not the one interlock issues", p.Context)
	case !slices.Contains(p.Type, TypeVC) || !slices.Contains(p.Type, TypeAction):
		return bad("type %q", p.Type)
	case p.Issuer != i.issuer:
		return bad("issuer %q, want %q", p.Issuer, i.issuer)
	case p.Iss != p.Issuer:
		return bad("iss %q differs from issuer %q", p.Iss, p.Issuer)
	case p.ID == "" || p.Jti != p.ID:
		return bad("jti %q differs from id %q", p.Jti, p.ID)
	case p.Iat == 0 || p.Exp == 0:
		return bad("iat or exp missing")
	case p.CredentialStatus == nil:
		return bad("no credentialStatus")
	}
	vf, err := time.Parse(time.RFC3339, p.ValidFrom)
	if err != nil {
		return bad("validFrom: %v", err)
	}
	vu, err := time.Parse(time.RFC3339, p.ValidUntil)
	if err != nil {
		return bad("validUntil: %v", err)
	}
	if vu.Before(vf) {
		return bad("validUntil before validFrom")
	}
	st := p.CredentialStatus
	idx, err := strconv.Atoi(st.StatusListIndex)
	if err != nil || idx < 0 || idx >= i.size || strconv.Itoa(idx) != st.StatusListIndex {
		return bad("statusListIndex %q", st.StatusListIndex)
	}
	list, ok := strings.CutPrefix(st.StatusListCredential, i.issuer+statusPath)
	if !ok || st.Type != TypeStatusEntry || st.StatusPurpose != PurposeRevocation || !validListName(list) {
		return bad("credentialStatus %+v", *st)
	}
	iat, nbf, exp := time.Unix(p.Iat, 0).UTC(), time.Unix(p.Nbf, 0).UTC(), time.Unix(p.Exp, 0).UTC()
	switch {
	case !now.Before(exp) || now.After(vu):
		return nil, fmt.Errorf("%w: at %s (valid until %s)", ErrExpired, now.UTC().Format(time.RFC3339), exp.Format(time.RFC3339))
	case now.Before(nbf) || now.Before(vf) || now.Before(iat):
		return nil, fmt.Errorf("%w: at %s (valid from %s)", ErrNotYet, now.UTC().Format(time.RFC3339), vf.Format(time.RFC3339))
	}
	s := &p.CredentialSubject
	if s.Agent.ID == "" || s.Action.Tool == "" || s.Action.Upstream == "" || len(s.Action.ArgumentsDigest) != 64 {
		return bad("credentialSubject is incomplete")
	}
	return &Claims{
		ID: p.ID, Issuer: p.Issuer,
		IssuedAt: iat, NotBefore: nbf, ExpiresAt: exp, ValidFrom: vf.UTC(), ValidUntil: vu.UTC(),
		AgentID: s.Agent.ID, OwnerEmail: s.Agent.Owner,
		Upstream: s.Action.Upstream, Tool: s.Action.Tool, ArgumentsDigest: s.Action.ArgumentsDigest,
		MaxAmount: s.Action.Constraints.MaxAmount, Uses: s.Action.Constraints.Uses,
		AuthorizedBy: s.Authorization,
		RiskScore:    s.Context.RiskScore, ClientIP: s.Context.ClientIP, DecisionID: s.Context.DecisionID,
		PolicyVersion: s.Context.PolicyVersion,
		StatusList:    list, StatusIndex: idx,
	}, nil
}
