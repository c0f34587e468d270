package ciba

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// Kinds of request records.
const (
	kindAllow   = "allow"   // the policy allowed it: Token is ready
	kindApprove = "approve" // waits for approval ApprovalID
)

// Meta key prefixes.
const (
	recordPrefix   = "ciba/req/"      // + hex sha256(auth_req_id): the sealed record
	redeemedPrefix = "ciba/redeemed/" // + the same: the single use of an allowed grant
)

// record is what the store keeps of one accepted backchannel request,
// sealed with a key derived from its auth_req_id (the store alone cannot
// open it, nor use the credential inside).
type record struct {
	V            int             `json:"v"`
	ClientID     string          `json:"client_id"`
	Kind         string          `json:"kind"`
	ApprovalID   string          `json:"approval_id,omitempty"`
	DecisionID   string          `json:"decision_id,omitempty"`
	Token        string          `json:"token,omitempty"`
	CredentialID string          `json:"credential_id,omitempty"`
	TokenExpires time.Time       `json:"token_expires,omitzero"`
	Expires      time.Time       `json:"expires_at"`
	Interval     int             `json:"interval"`
	Details      json.RawMessage `json:"authorization_details"`
	Mode         string          `json:"mode"`
	Created      time.Time       `json:"created_at"`
}

var errNoRecord = errors.New("ciba: no such request")

// keys derives a request's store key and sealing key from its auth_req_id.
func keys(id string) (storeKey string, aead cipher.AEAD, err error) {
	h := sha256.Sum256([]byte("interlock ciba auth_req_id\x00" + id))
	k := sha256.Sum256([]byte("interlock ciba record key\x00" + id))
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return "", nil, err
	}
	aead, err = cipher.NewGCM(block)
	if err != nil {
		return "", nil, err
	}
	return hex.EncodeToString(h[:]), aead, nil
}

func (p *Provider) putRecord(ctx context.Context, id string, rec *record) error {
	key, aead, err := keys(id)
	if err != nil {
		return err
	}
	plain, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	sealed := aead.Seal(nonce, nonce, plain, []byte(recordPrefix+key))
	got, err := p.o.Meta.PutMetaIfAbsent(ctx, recordPrefix+key, sealed)
	if err != nil {
		return err
	}
	if string(got) != string(sealed) {
		return errors.New("ciba: auth_req_id collision")
	}
	return nil
}

// getRecord opens the record of auth_req_id id; errNoRecord when there is
// none (or it does not open with this id).
func (p *Provider) getRecord(ctx context.Context, id string) (*record, string, error) {
	if len(id) > 256 {
		return nil, "", errNoRecord
	}
	key, aead, err := keys(id)
	if err != nil {
		return nil, "", err
	}
	sealed, err := p.o.Meta.GetMeta(ctx, recordPrefix+key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, "", errNoRecord
	}
	if err != nil {
		return nil, "", err
	}
	ns := aead.NonceSize()
	if len(sealed) < ns {
		return nil, "", errNoRecord
	}
	plain, err := aead.Open(nil, sealed[:ns], sealed[ns:], []byte(recordPrefix+key))
	if err != nil {
		return nil, "", errNoRecord
	}
	var rec record
	if err := json.Unmarshal(plain, &rec); err != nil || rec.V != 1 {
		return nil, "", fmt.Errorf("ciba: a stored request does not decode: %v", err)
	}
	return &rec, key, nil
}

// claim marks the record under key redeemed; false when it was already
// (by this or another replica: the store keeps the first claim).
func (p *Provider) claim(ctx context.Context, key string) (bool, error) {
	mine := make([]byte, 16)
	if _, err := rand.Read(mine); err != nil {
		return false, err
	}
	got, err := p.o.Meta.PutMetaIfAbsent(ctx, redeemedPrefix+key, mine)
	if err != nil {
		return false, err
	}
	return string(got) == string(mine), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func ioCopy(dst io.Writer, src io.Reader) (int64, error) { return io.Copy(dst, src) }

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
