package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/interlock-dev/interlock/canon"
	"github.com/interlock-dev/interlock/internal/store"
)

// KeyMeta is the store meta key holding the checkpoint signing key.
//
// The value is JSON: {"alg":"Ed25519","seed":"<base64 of the 32-byte RFC
// 8032 private key seed>"}. It is stored in the clear for now; issue 4
// encrypts signing keys with a key-encryption key from the environment.
const KeyMeta = "audit.checkpoint_key"

type storedKey struct {
	Alg  string `json:"alg"`
	Seed []byte `json:"seed"`
}

// loadOrCreateKey returns the checkpoint key, creating it if the store has
// none. Concurrent creators (replicas) agree through PutMetaIfAbsent.
func loadOrCreateKey(ctx context.Context, st store.Store) (ed25519.PrivateKey, error) {
	raw, err := st.GetMeta(ctx, KeyMeta)
	if errors.Is(err, store.ErrNotFound) {
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return nil, fmt.Errorf("audit: generate checkpoint key: %w", err)
		}
		fresh, err := json.Marshal(storedKey{Alg: "Ed25519", Seed: seed})
		if err != nil {
			return nil, fmt.Errorf("audit: encode checkpoint key: %w", err)
		}
		raw, err = st.PutMetaIfAbsent(ctx, KeyMeta, fresh)
		if err != nil {
			return nil, fmt.Errorf("audit: store checkpoint key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("audit: read checkpoint key: %w", err)
	}
	return parseKey(raw)
}

func parseKey(raw []byte) (ed25519.PrivateKey, error) {
	var k storedKey
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, fmt.Errorf("audit: decode checkpoint key: %w", err)
	}
	if k.Alg != "Ed25519" || len(k.Seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("audit: checkpoint key: unsupported algorithm %q or seed of %d bytes", k.Alg, len(k.Seed))
	}
	return ed25519.NewKeyFromSeed(k.Seed), nil
}

// loadPublicKey returns the checkpoint public key kept in st, or nil when
// there is none.
func loadPublicKey(ctx context.Context, st store.Store) (ed25519.PublicKey, error) {
	raw, err := st.GetMeta(ctx, KeyMeta)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: read checkpoint key: %w", err)
	}
	k, err := parseKey(raw)
	if err != nil {
		return nil, err
	}
	return k.Public().(ed25519.PublicKey), nil
}

// KeyID is the id checkpoints name their key by: the first 16 hex digits of
// the SHA-256 of the raw 32-byte public key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// SignedMessage returns the bytes a checkpoint's signature covers: the
// canonical JSON (RFC 8785) of
//
//	{"hash":"<hex>","key_id":"<id>","seq":N,"time":"<RFC 3339 UTC>"}
func SignedMessage(c store.Checkpoint) []byte {
	b := make([]byte, 0, 160)
	b = append(b, `{"hash":"`...)
	b = hex.AppendEncode(b, c.Hash)
	b = append(b, `","key_id":`...)
	b = canon.AppendString(b, c.KeyID)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, c.Seq, 10)
	b = append(b, `,"time":"`...)
	b = c.Time.UTC().AppendFormat(b, timeFormat)
	return append(b, `"}`...)
}

// VerifyCheckpoint reports whether c is signed by pub under pub's key id.
func VerifyCheckpoint(pub ed25519.PublicKey, c store.Checkpoint) bool {
	return len(pub) == ed25519.PublicKeySize && c.KeyID == KeyID(pub) &&
		ed25519.Verify(pub, SignedMessage(c), c.Signature)
}

// Checkpoint signs the current head of the chain now and stores the
// checkpoint. If the head is already checkpointed it returns that
// checkpoint. An empty chain has nothing to sign: an error.
func (l *Log) Checkpoint(ctx context.Context) (store.Checkpoint, error) {
	head, err := l.st.AuditHead(ctx)
	if err != nil {
		return store.Checkpoint{}, fmt.Errorf("audit: checkpoint: %w", err)
	}
	if head.Seq == 0 {
		return store.Checkpoint{}, errors.New("audit: checkpoint: the chain is empty")
	}
	return l.checkpointAt(ctx, head)
}

// checkpointAt signs and stores a checkpoint of head, unless one at that
// seq or later is already known.
func (l *Log) checkpointAt(ctx context.Context, head store.AuditHead) (store.Checkpoint, error) {
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	if head.Seq <= l.lastCP.Seq {
		return l.lastCP, nil
	}
	c := store.Checkpoint{
		Seq:   head.Seq,
		Hash:  bytes.Clone(head.Hash),
		Time:  store.NormalizeTime(l.now()),
		KeyID: l.keyID,
	}
	c.Signature = ed25519.Sign(l.key, SignedMessage(c))
	err := l.st.PutCheckpoint(ctx, c)
	if errors.Is(err, store.ErrAlreadyExists) {
		// Another process signed this head first; use its checkpoint.
		cps, lerr := l.st.ListCheckpoints(ctx)
		if lerr != nil {
			return store.Checkpoint{}, fmt.Errorf("audit: checkpoint %d: %w", c.Seq, lerr)
		}
		for _, other := range cps {
			if other.Seq == c.Seq {
				c, err = other, nil
			}
		}
	}
	if err != nil {
		return store.Checkpoint{}, fmt.Errorf("audit: checkpoint %d: %w", c.Seq, err)
	}
	l.lastCP = c
	l.log.Debug("audit checkpoint", "seq", c.Seq, "key_id", c.KeyID)
	return c, nil
}
