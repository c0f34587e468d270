package credential

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrUnknownStatusList: StatusListCredential was asked for a list name
// interlock never uses (lists are named "1", "2", ...).
var ErrUnknownStatusList = errors.New("credential: unknown status list")

// publishedKeys returns the JWKs to publish, newest first: the current key
// and every retired key whose PublishUntil is still ahead.
func (i *Issuer) publishedKeys(ctx context.Context) []*signingKey {
	i.refreshKeys(ctx, false)
	now := i.now()
	i.mu.RLock()
	out := make([]*signingKey, 0, len(i.keys))
	for _, k := range i.keys {
		if k.rec.RetiredAt.IsZero() || k.rec.PublishUntil.After(now) {
			out = append(out, k)
		}
	}
	i.mu.RUnlock()
	slices.SortFunc(out, func(a, b *signingKey) int {
		if c := b.rec.CreatedAt.Compare(a.rec.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.rec.ID, a.rec.ID)
	})
	return out
}

// JWKS returns the JSON Web Key Set of the keys credentials may be verified
// with: the current key and the retired keys still published, each with
// kid, alg and use "sig" (served at /.well-known/jwks.json).
func (i *Issuer) JWKS(ctx context.Context) ([]byte, error) {
	keys := i.publishedKeys(ctx)
	set := struct {
		Keys []json.RawMessage `json:"keys"`
	}{Keys: make([]json.RawMessage, 0, len(keys))}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.rec.PublicJWK)
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("credential: encode JWKS: %w", err)
	}
	return b, nil
}

// DID returns the did:web identifier of the issuer URL.
func (i *Issuer) DID() string { return i.did }

// didWeb maps an issuer URL to its did:web: the host, with ":" of a port
// percent-encoded, then each path segment after a ":". Its document is
// served at /.well-known/did.json for a URL without a path, else at
// <path>/did.json.
func didWeb(issuer string) (string, error) {
	u, err := url.Parse(issuer)
	if err != nil {
		return "", fmt.Errorf("credential: did:web of %q: %w", issuer, err)
	}
	id := "did:web:" + strings.ReplaceAll(url.PathEscape(u.Host), ":", "%3A")
	for seg := range strings.SplitSeq(strings.Trim(u.EscapedPath(), "/"), "/") {
		if seg != "" {
			id += ":" + seg
		}
	}
	return id, nil
}

// DIDDocument returns the did:web DID document of the issuer: one
// JsonWebKey verification method per published key, each also an
// assertionMethod.
func (i *Issuer) DIDDocument(ctx context.Context) ([]byte, error) {
	keys := i.publishedKeys(ctx)
	type vm struct {
		ID           string          `json:"id"`
		Type         string          `json:"type"`
		Controller   string          `json:"controller"`
		PublicKeyJwk json.RawMessage `json:"publicKeyJwk"`
	}
	doc := struct {
		Context            []string `json:"@context"`
		ID                 string   `json:"id"`
		VerificationMethod []vm     `json:"verificationMethod"`
		AssertionMethod    []string `json:"assertionMethod"`
	}{
		Context:            []string{"https://www.w3.org/ns/did/v1", "https://www.w3.org/ns/cid/v1"},
		ID:                 i.did,
		VerificationMethod: []vm{},
		AssertionMethod:    []string{},
	}
	for _, k := range keys {
		id := i.did + "#" + k.rec.ID
		doc.VerificationMethod = append(doc.VerificationMethod, vm{ID: id, Type: "JsonWebKey", Controller: i.did, PublicKeyJwk: k.rec.PublicJWK})
		doc.AssertionMethod = append(doc.AssertionMethod, id)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("credential: encode DID document: %w", err)
	}
	return b, nil
}

// validListName reports whether list is a name interlock gives status
// lists: a decimal number from 1, without leading zeros, of at most nine
// digits.
func validListName(list string) bool {
	if list == "" || len(list) > 9 || list[0] == '0' {
		return false
	}
	for _, c := range []byte(list) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// StatusListCredential returns the signed Bitstring Status List credential
// (a VC-JWT, typ vc+jwt) of list, and for how long it may be cached
// (max-age). The revoked indexes are read from the store every time, so a
// revocation made by any process or replica shows at once; the signed list
// is rebuilt only when they changed or it is older than StatusListCacheTTL.
// A list with no revoked credential (or none at all) is all zeros.
func (i *Issuer) StatusListCredential(ctx context.Context, list string) ([]byte, time.Duration, error) {
	if !validListName(list) {
		return nil, 0, fmt.Errorf("%w: %q", ErrUnknownStatusList, list)
	}
	// Only lists that exist: this process's current one and those before
	// it, or a later one another replica has started using. Anything else
	// would let anyone make the gateway sign and keep lists at will.
	n, _ := strconv.Atoi(list)
	i.listMu.Lock()
	cur := i.list
	i.listMu.Unlock()
	if n > cur {
		c, err := i.st.CountStatusIndexes(ctx, list)
		if err != nil {
			return nil, 0, fmt.Errorf("credential: status list %s: %w", list, err)
		}
		if c == 0 {
			return nil, 0, fmt.Errorf("%w: %q has no entries", ErrUnknownStatusList, list)
		}
	}
	revoked, err := i.st.RevokedStatusIndexes(ctx, list)
	if err != nil {
		return nil, 0, fmt.Errorf("credential: status list %s: %w", list, err)
	}
	slices.Sort(revoked)
	now := i.now()
	i.cacheMu.Lock()
	defer i.cacheMu.Unlock() // one build at a time; builds are rare
	if c, ok := i.cache[list]; ok && slices.Equal(c.revoked, revoked) {
		if left := c.built.Add(StatusListCacheTTL).Sub(now); left > 0 {
			return c.token, max(left.Truncate(time.Second), time.Second), nil
		}
	}
	delete(i.cache, list)
	tok, err := i.buildStatusList(ctx, list, revoked, now)
	if err != nil {
		return nil, 0, err
	}
	i.cache[list] = cachedList{token: tok, built: now, revoked: revoked}
	return tok, StatusListCacheTTL, nil
}

func (i *Issuer) buildStatusList(ctx context.Context, list string, revoked []int, now time.Time) ([]byte, error) {
	bits := make([]byte, i.size/8)
	for _, idx := range revoked {
		if idx < 0 || idx >= i.size {
			i.log.Warn("revoked status index outside the list", "list", list, "index", idx, "size", i.size)
			continue
		}
		bits[idx/8] |= 0x80 >> (idx % 8)
	}
	enc, err := EncodeList(bits)
	if err != nil {
		return nil, fmt.Errorf("credential: status list %s: %w", list, err)
	}
	i.refreshKeys(ctx, false)
	i.mu.RLock()
	key := i.current
	i.mu.RUnlock()
	if key == nil {
		return nil, errors.New("credential: no current signing key")
	}
	iat := now.Truncate(time.Second).UTC()
	exp := iat.Add(10 * StatusListCacheTTL)
	listURL := i.StatusListURL(list)
	p := statusListPayload{
		Context:    []string{ContextV2},
		ID:         listURL,
		Type:       []string{TypeVC, TypeStatusList},
		Issuer:     i.issuer,
		ValidFrom:  iat.Format(time.RFC3339),
		ValidUntil: exp.Format(time.RFC3339),
		CredentialSubject: statusListSubject{
			ID: listURL + "#list", Type: TypeBitstringList, StatusPurpose: PurposeRevocation,
			EncodedList: enc, TTL: StatusListCacheTTL.Milliseconds(),
		},
		Iss: i.issuer, Jti: listURL, Iat: iat.Unix(), Exp: exp.Unix(),
	}
	payload, err := json.Marshal(&p)
	if err != nil {
		return nil, fmt.Errorf("credential: encode status list %s: %w", list, err)
	}
	tok, err := key.sign(payload, i.rand)
	if err != nil {
		return nil, fmt.Errorf("credential: status list %s: %w", list, err)
	}
	return []byte(tok), nil
}

// EncodeList returns the encodedList of a bitstring (index 0 is the most
// significant bit of byte 0): GZIP, then base64url without padding, with
// the multibase prefix "u".
func EncodeList(bits []byte) (string, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return "", err
	}
	if _, err := zw.Write(bits); err != nil {
		return "", fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("gzip: %w", err)
	}
	return "u" + base64.RawURLEncoding.EncodeToString(buf.Bytes()), nil
}

// DecodeList reverses EncodeList, refusing a list longer than maxBytes
// once expanded.
func DecodeList(encoded string, maxBytes int) ([]byte, error) {
	b64, ok := strings.CutPrefix(encoded, "u")
	if !ok {
		return nil, errors.New("encodedList: no multibase prefix \"u\"")
	}
	z, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("encodedList: %w", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		return nil, fmt.Errorf("encodedList: gzip: %w", err)
	}
	bits, err := io.ReadAll(io.LimitReader(zr, int64(maxBytes)+1))
	if err != nil {
		return nil, fmt.Errorf("encodedList: gzip: %w", err)
	}
	if len(bits) > maxBytes {
		return nil, fmt.Errorf("encodedList: longer than %d bytes", maxBytes)
	}
	return bits, nil
}

// ContextDocument returns interlock's JSON-LD context (served at the
// second @context URL of every action credential): it maps the credential
// type and every term of credentialSubject into a vocabulary under the
// issuer URL, so that JSON-LD processors read the credential without
// guessing.
func (i *Issuer) ContextDocument() []byte {
	vocab := i.ctxURL + "#"
	doc := map[string]any{
		"@context": map[string]any{
			"@version":   1.1,
			"@protected": true,
			TypeAction:   vocab + TypeAction,
			"agent":      map[string]any{"@id": vocab + "agent", "@context": map[string]any{"@vocab": vocab}},
			"action":     map[string]any{"@id": vocab + "action", "@context": map[string]any{"@vocab": vocab}},
			"authorization": map[string]any{"@id": vocab + "authorization", "@container": "@set",
				"@context": map[string]any{"@vocab": vocab}},
			"context": map[string]any{"@id": vocab + "context", "@context": map[string]any{"@vocab": vocab}},
		},
	}
	b, _ := json.Marshal(doc) // only strings and maps: cannot fail
	return b
}
