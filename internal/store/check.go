package store

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"time"
)

// The checks and encodings below are what every backend applies the same
// way (the conformance suite holds them to it); backends call them rather
// than keep copies.

// AuditHashSize is the length of AuditEvent.Hash and PrevHash.
const AuditHashSize = 32

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// CheckUser is ErrInvalid for a user without id or email.
func CheckUser(u User) error {
	switch {
	case u.ID == "":
		return invalid("user id is empty")
	case u.Email == "":
		return invalid("user %q: email is empty", u.ID)
	}
	return nil
}

// CheckAgent is ErrInvalid for an agent without id or owner, with an
// unknown state, or with an empty allowed upstream.
func CheckAgent(a Agent) error {
	switch {
	case a.ID == "":
		return invalid("agent id is empty")
	case a.OwnerID == "":
		return invalid("agent %q: owner id is empty", a.ID)
	case !a.State.Valid():
		return invalid("agent %q: state %q", a.ID, a.State)
	}
	for _, u := range a.AllowedUpstreams {
		if u == "" {
			return invalid("agent %q: an allowed upstream is empty", a.ID)
		}
	}
	return nil
}

// CheckToken is ErrInvalid for a token without id or agent, or whose hash
// is not TokenHashSize bytes.
func CheckToken(t AgentToken) error {
	switch {
	case t.ID == "":
		return invalid("token id is empty")
	case t.AgentID == "":
		return invalid("token %q: agent id is empty", t.ID)
	case len(t.Hash) != TokenHashSize:
		return invalid("token %q: hash is %d bytes, want %d", t.ID, len(t.Hash), TokenHashSize)
	}
	return nil
}

// CheckCredential is ErrInvalid for a credential record CreateCredential
// must refuse.
func CheckCredential(c Credential) error {
	switch {
	case c.ID == "":
		return invalid("credential id is empty")
	case c.StatusList == "":
		return invalid("credential %q: status list is empty", c.ID)
	case c.StatusIndex < 0:
		return invalid("credential %q: status index %d is negative", c.ID, c.StatusIndex)
	case c.Uses < 1:
		return invalid("credential %q: uses %d, want at least 1", c.ID, c.Uses)
	case c.Used < 0 || c.Used > c.Uses:
		return invalid("credential %q: used %d of %d", c.ID, c.Used, c.Uses)
	}
	return nil
}

// CheckBudget is ErrInvalid for a budget entry or limit ChargeBudget must
// refuse.
func CheckBudget(e BudgetEntry, limit float64) error {
	switch {
	case e.Key == "":
		return invalid("budget key is empty")
	case e.Time.IsZero():
		return invalid("budget entry for %q has no time", e.Key)
	case math.IsNaN(e.Amount) || math.IsInf(e.Amount, 0):
		return invalid("budget entry for %q: amount %v", e.Key, e.Amount)
	case math.IsNaN(limit):
		return invalid("budget limit for %q is NaN", e.Key)
	}
	return nil
}

// CheckChain is ErrInvalid unless evs continue the chain at head.
func CheckChain(head AuditHead, evs []AuditEvent) error {
	prev := head.Hash
	for i, e := range evs {
		switch want := head.Seq + int64(i) + 1; {
		case e.Seq != want:
			return invalid("audit event %d of %d has seq %d, want %d", i+1, len(evs), e.Seq, want)
		case len(e.Hash) != AuditHashSize:
			return invalid("audit event %d: hash is %d bytes, want %d", e.Seq, len(e.Hash), AuditHashSize)
		case !bytes.Equal(e.PrevHash, prev):
			return invalid("audit event %d: prev_hash %x does not continue the chain (%x)", e.Seq, e.PrevHash, prev)
		case e.Type == "":
			return invalid("audit event %d: type is empty", e.Seq)
		}
		prev = e.Hash
	}
	return nil
}

// AuditCredentials returns the credential records evs carry, each checked
// as CreateCredential checks it (a StatusIndex of -1 with an IndexRange of
// at least 1 stands for a random free index).
func AuditCredentials(evs []AuditEvent) ([]*Credential, error) {
	var creds []*Credential
	for _, e := range evs {
		c := e.Credential
		if c == nil {
			continue
		}
		v := *c
		if v.StatusIndex == -1 {
			if v.IndexRange < 1 || v.IndexRange > math.MaxInt32 {
				return nil, invalid("credential %q: index range %d", v.ID, v.IndexRange)
			}
			v.StatusIndex = 0
		}
		if err := CheckCredential(v); err != nil {
			return nil, fmt.Errorf("audit event %d: %w", e.Seq, err)
		}
		creds = append(creds, c)
	}
	return creds, nil
}

// RandomIndex returns a uniformly random index in [0, n), from crypto/rand.
func RandomIndex(n int) (int, error) {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		return 0, fmt.Errorf("random status index: %w", err)
	}
	return int(v.Int64()), nil
}

// CheckNewApproval is ErrInvalid for an approval CreateApproval must refuse.
func CheckNewApproval(a Approval) error {
	switch {
	case a.ID == "":
		return invalid("approval id is empty")
	case a.AgentID == "":
		return invalid("approval %q: agent id is empty", a.ID)
	case a.Quorum < 1:
		return invalid("approval %q: quorum %d, want at least 1", a.ID, a.Quorum)
	case a.State != ApprovalPending:
		return invalid("approval %q: state %q, want %q", a.ID, a.State, ApprovalPending)
	case a.ExpiresAt.IsZero():
		return invalid("approval %q: no expiry", a.ID)
	case !a.DecidedAt.IsZero():
		return invalid("approval %q: a new approval has no decision time", a.ID)
	case len(a.Votes) > 0:
		return invalid("approval %q: a new approval has no votes", a.ID)
	}
	return nil
}

// NotPending is ErrNotPending for a, naming its state (or its expiry, for
// a vote at at).
func NotPending(a Approval, at time.Time) error {
	if a.State == ApprovalPending {
		return fmt.Errorf("%w: it expired at %s (vote at %s)", ErrNotPending,
			a.ExpiresAt.Format(time.RFC3339Nano), at.UTC().Format(time.RFC3339Nano))
	}
	return fmt.Errorf("%w: it is %s", ErrNotPending, a.State)
}

// EnrollmentSpent is ErrEnrollmentUsed for e, saying why.
func EnrollmentSpent(e Enrollment) error {
	if !e.UsedAt.IsZero() {
		return fmt.Errorf("%w: used at %s", ErrEnrollmentUsed, e.UsedAt.Format(time.RFC3339Nano))
	}
	return fmt.Errorf("%w: expired at %s", ErrEnrollmentUsed, e.ExpiresAt.Format(time.RFC3339Nano))
}

// EncodeList is how backends keep a list of strings (roles, approvers,
// transports, allowed upstreams): a JSON array, "[]" when empty.
func EncodeList(xs []string) (string, error) {
	if len(xs) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(xs)
	if err != nil {
		return "", fmt.Errorf("encode list: %w", err)
	}
	return string(b), nil
}

// DecodeList reads what EncodeList wrote: nil when empty, else the list in
// the order stored.
func DecodeList(s string) ([]string, error) {
	if s == "[]" || s == "" {
		return nil, nil
	}
	var xs []string
	if err := json.Unmarshal([]byte(s), &xs); err != nil {
		return nil, fmt.Errorf("decode list: %w", err)
	}
	return xs, nil
}

// NormalizeUser returns u as stores keep it (email lower-case, roles
// sorted and unique, times normalised).
func NormalizeUser(u User) User {
	u.Email = NormalizeEmail(u.Email)
	u.Roles = NormalizeRoles(u.Roles)
	u.CreatedAt = NormalizeTime(u.CreatedAt)
	u.UpdatedAt = NormalizeTime(u.UpdatedAt)
	u.DeletedAt = NormalizeTime(u.DeletedAt)
	return u
}

// NormalizeAgent returns a with its times normalised.
func NormalizeAgent(a Agent) Agent {
	a.CreatedAt = NormalizeTime(a.CreatedAt)
	a.UpdatedAt = NormalizeTime(a.UpdatedAt)
	a.StateChangedAt = NormalizeTime(a.StateChangedAt)
	return a
}

// DecodeRoles reads roles EncodeList wrote, normalised.
func DecodeRoles(s string) ([]string, error) {
	roles, err := DecodeList(s)
	if err != nil {
		return nil, err
	}
	return NormalizeRoles(roles), nil
}
