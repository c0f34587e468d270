package ciba

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/interlock-dev/interlock/internal/store"
)

// AssertionType is the client_assertion_type of private_key_jwt.
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionAlgs are the signature algorithms accepted for client
// assertions.
var assertionAlgs = []string{"RS256", "ES256", "EdDSA"}

const (
	maxAssertionLifetime = time.Hour
	maxAssertion         = 8 << 10
)

// client is an authenticated client: an agent.
type client struct {
	id        string
	principal store.Principal
	method    string // client_secret_basic, client_secret_post or private_key_jwt
}

// badClient is invalid_client (401); with a Basic challenge when the
// client used the Authorization header (RFC 6749 §5.2).
func badClient(basic bool, format string, args ...any) *Error {
	e := errorf(http.StatusUnauthorized, "invalid_client", format, args...)
	e.challenge = basic
	return e
}

// authenticate authenticates the client of a backchannel or token
// request: client_secret_basic or client_secret_post (client_id = the
// agent id, client_secret = an agent token of that agent) or
// private_key_jwt. Exactly one method may be used.
func (p *Provider) authenticate(ctx context.Context, r *http.Request, form url.Values) (client, *Error) {
	for _, k := range []string{"client_id", "client_secret", "client_assertion", "client_assertion_type"} {
		if len(form[k]) > 1 {
			return client{}, invalidRequest("parameter %s is repeated", k)
		}
	}
	formID := form.Get("client_id")
	var (
		methods      []string
		id, secret   string
		basic        bool
		hasAssertion = form.Has("client_assertion") || form.Has("client_assertion_type")
	)
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, cred, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Basic") {
			return client{}, badClient(false, "unsupported Authorization scheme: use client_secret_basic, client_secret_post or private_key_jwt")
		}
		basic = true
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
		if err != nil {
			return client{}, badClient(true, "the Basic credentials do not decode")
		}
		u, pw, ok := strings.Cut(string(raw), ":")
		if !ok {
			return client{}, badClient(true, "the Basic credentials do not decode")
		}
		if id, err = url.QueryUnescape(u); err != nil {
			return client{}, badClient(true, "the Basic credentials do not decode")
		}
		if secret, err = url.QueryUnescape(pw); err != nil {
			return client{}, badClient(true, "the Basic credentials do not decode")
		}
		methods = append(methods, "client_secret_basic")
	}
	if form.Has("client_secret") {
		methods = append(methods, "client_secret_post")
		id, secret = formID, form.Get("client_secret")
	}
	if hasAssertion {
		methods = append(methods, "private_key_jwt")
	}
	switch len(methods) {
	case 0:
		return client{}, badClient(false, "client authentication is required (client_secret_basic, client_secret_post or private_key_jwt)")
	case 1:
	default:
		return client{}, invalidRequest("use one client authentication method, not %s", strings.Join(methods, " and "))
	}
	if methods[0] == "private_key_jwt" {
		return p.assertion(ctx, form)
	}
	if id == "" {
		return client{}, badClient(basic, "client_id is required")
	}
	if formID != "" && formID != id {
		return client{}, badClient(basic, "client_id does not match the authenticated client")
	}
	pr, err := p.o.Auth.Authenticate(ctx, secret)
	if err != nil {
		var bt interface{ BadToken() bool }
		if errors.As(err, &bt) && bt.BadToken() {
			p.log.Info("ciba: client authentication failed", "client", trunc(id), "method", methods[0], "err", err)
			return client{}, badClient(basic, "client authentication failed")
		}
		p.log.Error("ciba: authenticating a client", "client", trunc(id), "err", err)
		return client{}, &Error{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Description: "clients cannot be authenticated right now"}
	}
	if pr.Agent.ID != id {
		p.log.Info("ciba: client secret of another agent", "client", trunc(id), "agent", pr.Agent.ID)
		return client{}, badClient(basic, "client authentication failed")
	}
	return client{id: id, principal: pr, method: methods[0]}, nil
}

// assertion authenticates a private_key_jwt client (RFC 7523 §3): a JWT
// signed with one of the client's keys, iss = sub = client_id, aud the
// issuer or the endpoint, exp in the future (within an hour), a jti used
// once (this replica's memory, until the assertion expires).
func (p *Provider) assertion(ctx context.Context, form url.Values) (client, *Error) {
	if form.Get("client_assertion_type") != AssertionType {
		return client{}, badClient(false, "client_assertion_type must be %s", AssertionType)
	}
	tok := form.Get("client_assertion")
	if tok == "" || len(tok) > maxAssertion {
		return client{}, badClient(false, "client_assertion is missing or too long")
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return client{}, badClient(false, "client_assertion is not a compact JWS")
	}
	var hdr struct {
		Alg  string `json:"alg"`
		Kid  string `json:"kid"`
		Crit any    `json:"crit"`
	}
	var claims struct {
		Iss string          `json:"iss"`
		Sub string          `json:"sub"`
		Aud json.RawMessage `json:"aud"`
		Exp *float64        `json:"exp"`
		Nbf *float64        `json:"nbf"`
		Iat *float64        `json:"iat"`
		Jti string          `json:"jti"`
	}
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return client{}, badClient(false, "client_assertion header does not decode")
	}
	if hdr.Alg == "Ed25519" {
		// RFC 9864's fully specified name for EdDSA with Ed25519, which
		// openid-client 6 writes.
		hdr.Alg = "EdDSA"
	}
	if !slices.Contains(assertionAlgs, hdr.Alg) {
		return client{}, badClient(false, "client_assertion alg must be one of %s", strings.Join(assertionAlgs, ", "))
	}
	if hdr.Crit != nil {
		return client{}, badClient(false, "client_assertion must not have critical header parameters")
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return client{}, badClient(false, "client_assertion claims do not decode")
	}
	id := claims.Iss
	if id == "" || claims.Sub != id {
		return client{}, badClient(false, "client_assertion iss and sub must both be the client_id")
	}
	if f := form.Get("client_id"); f != "" && f != id {
		return client{}, badClient(false, "client_id does not match the client_assertion")
	}
	if p.o.ClientKeys == nil || p.o.Principal == nil {
		return client{}, badClient(false, "private_key_jwt: no keys are registered for this client")
	}
	jwks, err := p.o.ClientKeys.ClientKeys(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		p.log.Error("ciba: reading a client's keys", "client", trunc(id), "err", err)
		return client{}, &Error{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Description: "clients cannot be authenticated right now"}
	}
	if err := verifyWithSet(jwks, hdr.Alg, hdr.Kid, []byte(tok)); err != nil {
		p.log.Info("ciba: client assertion refused", "client", trunc(id), "err", err)
		return client{}, badClient(false, "client_assertion: %v", err)
	}
	now := p.o.Now()
	if !audOK(claims.Aud, []string{p.o.Issuer, p.tokenURL, p.backchannelURL}) {
		return client{}, badClient(false, "client_assertion aud must be the issuer or the endpoint URL")
	}
	if claims.Exp == nil {
		return client{}, badClient(false, "client_assertion has no exp")
	}
	exp := time.Unix(int64(*claims.Exp), 0)
	if !now.Before(exp.Add(clockSkew)) {
		return client{}, badClient(false, "client_assertion expired")
	}
	if exp.Sub(now) > maxAssertionLifetime {
		return client{}, badClient(false, "client_assertion exp is more than an hour away")
	}
	if claims.Nbf != nil && time.Unix(int64(*claims.Nbf), 0).After(now.Add(clockSkew)) {
		return client{}, badClient(false, "client_assertion is not valid yet (nbf)")
	}
	if claims.Iat != nil && time.Unix(int64(*claims.Iat), 0).After(now.Add(clockSkew)) {
		return client{}, badClient(false, "client_assertion iat is in the future")
	}
	if claims.Jti == "" || len(claims.Jti) > 256 {
		return client{}, badClient(false, "client_assertion needs a jti")
	}
	if !p.useJTI(id+"\x00"+claims.Jti, exp.Add(clockSkew), now) {
		return client{}, badClient(false, "client_assertion jti was used already")
	}
	pr, err := p.o.Principal(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return client{}, badClient(false, "unknown client")
	}
	if err != nil {
		p.log.Error("ciba: reading a client", "client", trunc(id), "err", err)
		return client{}, &Error{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Description: "clients cannot be authenticated right now"}
	}
	if pr.Agent.ID != id {
		return client{}, badClient(false, "unknown client")
	}
	return client{id: id, principal: pr, method: "private_key_jwt"}, nil
}

// useJTI records a jti until exp; false if it is recorded already.
func (p *Provider) useJTI(key string, exp, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.jtis) > 1000 {
		for k, t := range p.jtis {
			if now.After(t) {
				delete(p.jtis, k)
			}
		}
	}
	if t, ok := p.jtis[key]; ok && !now.After(t) {
		return false
	}
	p.jtis[key] = exp
	return true
}

func decodeSegment(s string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	return dec.Decode(v)
}

func audOK(raw json.RawMessage, want []string) bool {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one != "" && slices.Contains(want, one)
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		for _, a := range many {
			if slices.Contains(want, a) {
				return true
			}
		}
	}
	return false
}

// verifyWithSet verifies the compact JWS tok with alg under one of the
// public keys in the JWK Set jwks (the one with kid, when given).
func verifyWithSet(jwks []byte, alg, kid string, tok []byte) error {
	if len(bytes.TrimSpace(jwks)) == 0 {
		return errors.New("no keys are registered for this client")
	}
	set, err := jwk.Parse(jwks)
	if err != nil {
		return fmt.Errorf("the client's key set does not parse: %w", err)
	}
	salg, ok := jwa.LookupSignatureAlgorithm(alg)
	if !ok {
		return fmt.Errorf("unknown alg %s", alg)
	}
	tried := 0
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		if kid != "" {
			if kk, ok := k.KeyID(); !ok || kk != kid {
				continue
			}
		}
		if a, ok := k.Algorithm(); ok && a.String() != alg && !(alg == "EdDSA" && a.String() == "Ed25519") {
			continue
		}
		if u, ok := k.KeyUsage(); ok && u != "sig" {
			continue
		}
		pub, err := jwk.PublicRawKeyOf(k)
		if err != nil || !keyFits(alg, pub) {
			continue
		}
		tried++
		if _, err := jws.VerifyCompactFast(pub, tok, salg); err == nil {
			return nil
		}
	}
	if tried == 0 {
		return errors.New("no registered key fits the assertion (kid, alg)")
	}
	return errors.New("the signature does not verify")
}

func keyFits(alg string, pub any) bool {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return alg == "RS256" && k.N.BitLen() >= 2048
	case *ecdsa.PublicKey:
		return alg == "ES256" && k.Curve == elliptic.P256()
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// trunc shortens a client-supplied id for the log.
func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
