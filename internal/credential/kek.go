package credential

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// KEKEnv is the environment variable LoadKEK reads the key-encryption key
// from.
const KEKEnv = "INTERLOCK_KEK"

// KEKSize is the length of the key-encryption key: an AES-256 key.
const KEKSize = 32

// Key-encryption key errors.
var (
	// ErrKEK: the key-encryption key is missing or malformed.
	ErrKEK = errors.New("credential: key-encryption key")
	// ErrWrongKEK: the key-encryption key does not open a stored signing
	// key (another key sealed it, or the sealed bytes are damaged).
	ErrWrongKEK = errors.New("wrong key-encryption key")
)

// LoadKEK returns the 32-byte key-encryption key from the environment
// variable INTERLOCK_KEK (read through getenv) or, when that is unset or
// empty, from the key file file (when not ""). Either holds the key as
// base64, standard or URL alphabet, with or without padding, surrounding
// white space ignored. Errors never include the key.
func LoadKEK(getenv func(string) (string, bool), file string) ([]byte, error) {
	if getenv != nil {
		if v, ok := getenv(KEKEnv); ok && strings.TrimSpace(v) != "" {
			k, err := decodeKEK(v)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrKEK, KEKEnv, err)
			}
			return k, nil
		}
	}
	if file == "" {
		return nil, fmt.Errorf("%w: none given: set %s or configure a key file", ErrKEK, KEKEnv)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: read key file: %w", ErrKEK, err)
	}
	k, err := decodeKEK(string(b))
	if err != nil {
		return nil, fmt.Errorf("%w: key file %s: %w", ErrKEK, file, err)
	}
	return k, nil
}

// decodeKEK decodes the text form of a key-encryption key. Its errors do
// not quote the text.
func decodeKEK(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		k, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(k) != KEKSize {
			return nil, fmt.Errorf("decodes to %d bytes, want %d (generate one with `openssl rand -base64 32`)", len(k), KEKSize)
		}
		return k, nil
	}
	return nil, errors.New("not base64 (standard or URL alphabet)")
}

// WriteKEKFile creates the file path holding a new random key-encryption
// key (base64, standard alphabet, and a newline), with mode 0600. It refuses
// to overwrite an existing file.
func WriteKEKFile(path string) error {
	k := make([]byte, KEKSize)
	if _, err := io.ReadFull(rand.Reader, k); err != nil {
		return fmt.Errorf("credential: generate key-encryption key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("credential: create key file: %w", err)
	}
	_, werr := f.WriteString(base64.StdEncoding.EncodeToString(k) + "\n")
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("credential: write key file %s: %w", path, err)
	}
	return nil
}

// sealVersion is the first byte of a sealed key: the format
// version || nonce (12) || AES-256-GCM ciphertext and tag.
const sealVersion = 1

func newAEAD(kek []byte) (cipher.AEAD, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrKEK, len(kek), KEKSize)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKEK, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKEK, err)
	}
	return aead, nil
}

// seal encrypts plain with a random nonce from r, binding it to kid.
func seal(aead cipher.AEAD, r io.Reader, kid string, plain []byte) ([]byte, error) {
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(plain)+aead.Overhead())
	out[0] = sealVersion
	if _, err := io.ReadFull(r, out[1:]); err != nil {
		return nil, fmt.Errorf("credential: nonce: %w", err)
	}
	return aead.Seal(out, out[1:], plain, []byte(kid)), nil
}

// unseal reverses seal. Any failure is ErrWrongKEK: the key-encryption key
// does not open the key (or the sealed bytes were damaged, which GCM cannot
// tell apart).
func unseal(aead cipher.AEAD, kid string, sealed []byte) ([]byte, error) {
	n := aead.NonceSize()
	if len(sealed) < 1+n+aead.Overhead() || sealed[0] != sealVersion {
		return nil, fmt.Errorf("credential: the key-encryption key does not open signing key %s: unknown sealed format: %w", kid, ErrWrongKEK)
	}
	plain, err := aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(kid))
	if err != nil {
		return nil, fmt.Errorf("credential: the key-encryption key does not open signing key %s: %w (is %s or the key file the one the store's keys were sealed with?)",
			kid, ErrWrongKEK, KEKEnv)
	}
	return plain, nil
}
