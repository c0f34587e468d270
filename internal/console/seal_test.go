package console

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func TestVoteChallenge(t *testing.T) {
	nonce := bytes.Repeat([]byte{7}, NonceSize)
	id, digest := "apr_0123456789abcdef01234567", strings.Repeat("ab", 32)
	got := VoteChallenge(nonce, id, digest, DecisionApprove)

	// The documented derivation, computed by hand.
	var in []byte
	in = append(in, "interlock/console/vote/v1"...)
	in = append(in, nonce...)
	for _, s := range []string{id, digest, DecisionApprove} {
		in = binary.BigEndian.AppendUint32(in, uint32(len(s)))
		in = append(in, s...)
	}
	want := sha256.Sum256(in)
	if !bytes.Equal(got, want[:]) {
		t.Fatalf("VoteChallenge = %x, want %x", got, want)
	}
	if len(got) != 32 {
		t.Fatalf("challenge is %d bytes", len(got))
	}
	// Every input changes it.
	other := map[string][]byte{
		"decision": VoteChallenge(nonce, id, digest, DecisionDeny),
		"id":       VoteChallenge(nonce, id+"x", digest, DecisionApprove),
		"digest":   VoteChallenge(nonce, id, strings.Repeat("cd", 32), DecisionApprove),
		"nonce":    VoteChallenge(bytes.Repeat([]byte{8}, NonceSize), id, digest, DecisionApprove),
		// Moving bytes between fields must not collide (length prefixes).
		"shifted": VoteChallenge(nonce, id+digest[:2], digest[2:], DecisionApprove),
	}
	for name, c := range other {
		if bytes.Equal(c, got) {
			t.Errorf("changing the %s does not change the challenge", name)
		}
	}
	// Deterministic: a verifier recomputes it from the evidence.
	if !bytes.Equal(got, VoteChallenge(nonce, id, digest, DecisionApprove)) {
		t.Error("VoteChallenge is not deterministic")
	}
	// A fixed vector, so that a change of the derivation is noticed.
	vec := VoteChallenge(make([]byte, NonceSize), "apr_1", "00", "approve")
	if h := hex.EncodeToString(vec); h != "e76da04ac24d599bac1aeb7146f44ce26b669c0dacf3b4bb63901ca79782c392" {
		t.Errorf("vector %s", h)
	}
}

func TestSealOpen(t *testing.T) {
	s := newSealer(bytes.Repeat([]byte("k"), 32))
	now := time.Unix(1_800_000_000, 0)
	type payload struct {
		A string `json:"a"`
		N int    `json:"n"`
	}
	tok, err := s.seal("session", payload{A: "x", N: 3}, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var got payload
	if err := s.open("session", tok, now, &got); err != nil || got != (payload{A: "x", N: 3}) {
		t.Fatalf("open = %+v, %v", got, err)
	}
	// Another purpose's key refuses it.
	if err := s.open("ceremony", tok, now, &got); err != errBadSeal {
		t.Errorf("open with another purpose = %v", err)
	}
	// Another session key refuses it.
	s2 := newSealer(bytes.Repeat([]byte("j"), 32))
	if err := s2.open("session", tok, now, &got); err != errBadSeal {
		t.Errorf("open with another key = %v", err)
	}
	// Expired.
	if err := s.open("session", tok, now.Add(time.Minute), &got); err != errSealExpired {
		t.Errorf("open after expiry = %v", err)
	}
	// Tampered payload or signature.
	p, sig, _ := strings.Cut(tok, ".")
	forged, _ := s.seal("session", payload{A: "admin"}, now.Add(time.Hour))
	fp, _, _ := strings.Cut(forged, ".")
	for name, bad := range map[string]string{
		"payload swapped": fp + "." + sig,
		"signature cut":   p + "." + sig[:len(sig)-2],
		"no signature":    p,
		"empty":           "",
		"garbage":         "!!.!!",
	} {
		if err := s.open("session", bad, now, &got); err != errBadSeal {
			t.Errorf("%s: open = %v", name, err)
		}
	}
}

func TestCSRF(t *testing.T) {
	s := newSealer(bytes.Repeat([]byte("k"), 32))
	tok := s.csrfToken("sid-1")
	if !s.checkCSRF("sid-1", tok, tok) {
		t.Fatal("a matching token is refused")
	}
	for name, c := range map[string][3]string{
		"other session": {"sid-2", tok, tok},
		"no header":     {"sid-1", "", tok},
		"no cookie":     {"sid-1", tok, ""},
		"wrong header":  {"sid-1", s.csrfToken("sid-2"), tok},
		"no session":    {"", s.csrfToken(""), s.csrfToken("")},
	} {
		if s.checkCSRF(c[0], c[1], c[2]) {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestEnrollToken(t *testing.T) {
	s := newSealer(bytes.Repeat([]byte("k"), 32))
	exp := time.Unix(1_800_000_000, 0)
	tok, err := s.enrollToken("u-alice", exp)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := b64.DecodeString(tok)
	if len(raw) < linkRandom+8+len("u-alice")+linkMAC {
		t.Fatalf("token of %d bytes", len(raw))
	}
	uid, gotExp, err := s.parseEnrollToken(tok)
	if err != nil || uid != "u-alice" || !gotExp.Equal(exp) {
		t.Fatalf("parse = %q %v %v", uid, gotExp, err)
	}
	tok2, _ := s.enrollToken("u-alice", exp)
	if tok2 == tok {
		t.Error("two tokens are equal: not random")
	}
	// Changing the user id breaks the MAC.
	raw[linkRandom+8] ^= 1
	if _, _, err := s.parseEnrollToken(b64.EncodeToString(raw)); err == nil {
		t.Error("a tampered token is accepted")
	}
	if _, _, err := newSealer(bytes.Repeat([]byte("j"), 32)).parseEnrollToken(tok); err == nil {
		t.Error("a token is accepted under another key")
	}
	if len(tokenHash(tok)) != 32 {
		t.Error("token hash is not SHA-256")
	}
}

func TestUsedSet(t *testing.T) {
	var u usedSet
	now := time.Unix(1_800_000_000, 0)
	if !u.use("a", now.Add(time.Minute), now) {
		t.Fatal("first use refused")
	}
	if u.use("a", now.Add(time.Minute), now.Add(30*time.Second)) {
		t.Fatal("second use accepted")
	}
	if !u.use("b", now.Add(time.Minute), now) {
		t.Fatal("another key refused")
	}
	// After expiry (and a prune), the entry is gone.
	if !u.use("c", now.Add(3*time.Minute), now.Add(2*time.Minute)) || len(u.m) != 1 {
		t.Fatalf("prune left %d entries", len(u.m))
	}
}

func TestSafeNext(t *testing.T) {
	c := &Console{o: Options{BasePath: "/console"}}
	for in, want := range map[string]string{
		"":                         "/console/",
		"/console/approvals/apr_1": "/console/approvals/apr_1",
		"//evil.example/console/":  "/console/",
		"https://evil.example/":    "/console/",
		"/other":                   "/console/",
		"/console/\\evil":          "/console/",
	} {
		if got := c.safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}
