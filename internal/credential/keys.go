package credential

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/interlock-dev/interlock/internal/store"
)

// Signature algorithms an Issuer signs with.
const (
	AlgEdDSA = "EdDSA" // Ed25519, the default
	AlgES256 = "ES256" // ECDSA P-256 with SHA-256
)

// Header values of every credential interlock issues.
const (
	TypVCJWT = "vc+jwt"
	CtyVC    = "vc"
)

// signingKey is one usable key: its record, the private and public halves,
// and the encoded protected header of the credentials it signs.
type signingKey struct {
	rec    store.SigningKey
	priv   crypto.Signer // ed25519.PrivateKey or *ecdsa.PrivateKey
	pub    crypto.PublicKey
	jwaAlg jwa.SignatureAlgorithm
	hdr    string // base64url of the protected header, and "."
}

func jwaAlg(alg string) (jwa.SignatureAlgorithm, error) {
	switch alg {
	case AlgEdDSA:
		return jwa.EdDSA(), nil
	case AlgES256:
		return jwa.ES256(), nil
	}
	return jwa.SignatureAlgorithm{}, fmt.Errorf("%w: %q (want %s or %s)", ErrAlgorithm, alg, AlgEdDSA, AlgES256)
}

// generateKey makes a new key pair for alg and its record, sealed with
// aead. Its id is the RFC 7638 thumbprint of the public key.
func generateKey(alg string, r io.Reader, sealer func(kid string, plain []byte) ([]byte, error), now time.Time) (*signingKey, error) {
	var priv crypto.Signer
	switch alg {
	case AlgEdDSA:
		_, p, err := ed25519.GenerateKey(r)
		if err != nil {
			return nil, fmt.Errorf("credential: generate Ed25519 key: %w", err)
		}
		priv = p
	case AlgES256:
		p, err := ecdsa.GenerateKey(elliptic.P256(), r)
		if err != nil {
			return nil, fmt.Errorf("credential: generate P-256 key: %w", err)
		}
		priv = p
	default:
		_, err := jwaAlg(alg)
		return nil, err
	}
	pubJWK, kid, err := publicJWK(alg, priv.Public())
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("credential: encode private key: %w", err)
	}
	sealed, err := sealer(kid, der)
	if err != nil {
		return nil, err
	}
	rec := store.SigningKey{ID: kid, Alg: alg, PublicJWK: pubJWK, Sealed: sealed, CreatedAt: store.NormalizeTime(now)}
	return newSigningKey(rec, priv)
}

// publicJWK returns the public key as a JWK with kid (its thumbprint), alg
// and use "sig", and the kid.
func publicJWK(alg string, pub crypto.PublicKey) ([]byte, string, error) {
	k, err := jwk.Import(pub)
	if err != nil {
		return nil, "", fmt.Errorf("credential: public key as JWK: %w", err)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, "", fmt.Errorf("credential: JWK thumbprint: %w", err)
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	a, err := jwaAlg(alg)
	if err != nil {
		return nil, "", err
	}
	for name, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: a, jwk.KeyUsageKey: jwk.ForSignature} {
		if err := k.Set(name, v); err != nil {
			return nil, "", fmt.Errorf("credential: JWK %s: %w", name, err)
		}
	}
	b, err := json.Marshal(k)
	if err != nil {
		return nil, "", fmt.Errorf("credential: encode JWK: %w", err)
	}
	return b, kid, nil
}

// openKey unseals a stored key.
func openKey(rec store.SigningKey, unsealer func(kid string, sealed []byte) ([]byte, error)) (*signingKey, error) {
	der, err := unsealer(rec.ID, rec.Sealed)
	if err != nil {
		return nil, err
	}
	p, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("credential: signing key %s: decode private key: %w", rec.ID, err)
	}
	priv, ok := p.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("credential: signing key %s: %T is not a signer", rec.ID, p)
	}
	return newSigningKey(rec, priv)
}

func newSigningKey(rec store.SigningKey, priv crypto.Signer) (*signingKey, error) {
	a, err := jwaAlg(rec.Alg)
	if err != nil {
		return nil, fmt.Errorf("credential: signing key %s: %w", rec.ID, err)
	}
	switch p := priv.(type) {
	case ed25519.PrivateKey:
		if rec.Alg != AlgEdDSA {
			return nil, fmt.Errorf("credential: signing key %s: an Ed25519 key for %s", rec.ID, rec.Alg)
		}
	case *ecdsa.PrivateKey:
		if rec.Alg != AlgES256 || p.Curve != elliptic.P256() {
			return nil, fmt.Errorf("credential: signing key %s: an ECDSA key for %s", rec.ID, rec.Alg)
		}
	default:
		return nil, fmt.Errorf("credential: signing key %s: unsupported key type %T", rec.ID, priv)
	}
	hdr, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
		Cty string `json:"cty"`
		Kid string `json:"kid"`
	}{rec.Alg, TypVCJWT, CtyVC, rec.ID})
	if err != nil {
		return nil, fmt.Errorf("credential: encode header: %w", err)
	}
	return &signingKey{
		rec: rec, priv: priv, pub: priv.Public(), jwaAlg: a,
		hdr: base64.RawURLEncoding.EncodeToString(hdr) + ".",
	}, nil
}

// sign returns the compact JWS of payload under k. r is used by ECDSA
// (where the standard library allows it).
func (k *signingKey) sign(payload []byte, r io.Reader) (string, error) {
	n := len(k.hdr) + base64.RawURLEncoding.EncodedLen(len(payload))
	buf := make([]byte, 0, n+1+base64.RawURLEncoding.EncodedLen(64))
	buf = append(buf, k.hdr...)
	buf = base64.RawURLEncoding.AppendEncode(buf, payload)
	var sig []byte
	switch p := k.priv.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(p, buf)
	case *ecdsa.PrivateKey:
		h := sha256.Sum256(buf)
		rr, ss, err := ecdsa.Sign(r, p, h[:])
		if err != nil {
			return "", fmt.Errorf("credential: sign: %w", err)
		}
		sig = make([]byte, 64)
		rr.FillBytes(sig[:32])
		ss.FillBytes(sig[32:])
	default:
		return "", fmt.Errorf("credential: sign: unsupported key type %T", k.priv)
	}
	buf = append(buf, '.')
	buf = base64.RawURLEncoding.AppendEncode(buf, sig)
	return string(buf), nil
}
