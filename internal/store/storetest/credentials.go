package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// The store keeps sealed keys and credential records as given: these tests
// use made-up bytes and ids (the credential package seals and signs).

func newKey(id string, created time.Time) store.SigningKey {
	return store.SigningKey{
		ID: id, Alg: "EdDSA", PublicJWK: []byte(`{"kty":"OKP","crv":"Ed25519","x":"` + id + `"}`),
		Sealed: []byte("sealed " + id), CreatedAt: created,
	}
}

func checkKey(t *testing.T, got, want store.SigningKey) {
	t.Helper()
	if got.ID != want.ID || got.Alg != want.Alg || !bytes.Equal(got.PublicJWK, want.PublicJWK) ||
		!bytes.Equal(got.Sealed, want.Sealed) {
		t.Errorf("signing key:\n got %+v\nwant %+v", got, want)
	}
	checkTime(t, want.ID+" CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, want.ID+" RetiredAt", got.RetiredAt, want.RetiredAt)
	checkTime(t, want.ID+" PublishUntil", got.PublishUntil, want.PublishUntil)
}

func newCred(id, agentID, list string, index int, issued time.Time) store.Credential {
	return store.Credential{
		ID: id, AgentID: agentID, DecisionID: "dec-" + id, Upstream: "acme", Tool: "pay_invoice",
		ArgsDigest: fmt.Sprintf("%x", hashOf("args "+id)), KeyID: "k1", StatusList: list, StatusIndex: index,
		IssuedAt: issued, ExpiresAt: issued.Add(5 * time.Minute), Uses: 1,
	}
}

func checkCred(t *testing.T, got, want store.Credential) {
	t.Helper()
	g, w := got, want
	g.IssuedAt, g.ExpiresAt, g.ConsumedAt, g.RevokedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	w.IssuedAt, w.ExpiresAt, w.ConsumedAt, w.RevokedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if g != w {
		t.Errorf("credential:\n got %+v\nwant %+v", got, want)
	}
	checkTime(t, want.ID+" IssuedAt", got.IssuedAt, want.IssuedAt)
	checkTime(t, want.ID+" ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	checkTime(t, want.ID+" ConsumedAt", got.ConsumedAt, want.ConsumedAt)
	checkTime(t, want.ID+" RevokedAt", got.RevokedAt, want.RevokedAt)
}

func credIDs(cs []store.Credential) []string {
	return ids(cs, func(c store.Credential) string { return c.ID })
}

func testSigningKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	keys, err := s.ListSigningKeys(ctx)
	if err != nil || len(keys) != 0 {
		t.Fatalf("ListSigningKeys of an empty store = %d keys, %v", len(keys), err)
	}
	k1 := newKey("k1", t0)
	k2 := newKey("k2", t0.Add(time.Hour))
	k2.Alg = "ES256"
	k3 := newKey("k3", t0.Add(2*time.Hour))
	for _, k := range []store.SigningKey{k2, k1, k3} { // inserted out of order
		if err := s.PutSigningKey(ctx, k); err != nil {
			t.Fatalf("PutSigningKey(%s): %v", k.ID, err)
		}
	}
	for _, tc := range []struct {
		name string
		k    store.SigningKey
		want error
	}{
		{"duplicate id", newKey("k1", t0.Add(5*time.Hour)), store.ErrAlreadyExists},
		{"empty id", newKey("", t0), store.ErrInvalid},
	} {
		wantErr(t, "PutSigningKey "+tc.name, s.PutSigningKey(ctx, tc.k), tc.want)
	}

	keys, err = s.ListSigningKeys(ctx)
	if err != nil {
		t.Fatalf("ListSigningKeys: %v", err)
	}
	if got, want := ids(keys, func(k store.SigningKey) string { return k.ID }), []string{"k3", "k2", "k1"}; !slices.Equal(got, want) {
		t.Fatalf("ListSigningKeys order = %v, want %v (newest first)", got, want)
	}
	for i, want := range []store.SigningKey{k3, k2, k1} {
		checkKey(t, keys[i], want)
	}

	// Retire k2: k1 and k3 are untouched.
	retired, until := t0.Add(3*time.Hour), t0.Add(4*time.Hour)
	if err := s.RetireSigningKey(ctx, "k2", retired, until); err != nil {
		t.Fatalf("RetireSigningKey: %v", err)
	}
	wantErr(t, "RetireSigningKey unknown", s.RetireSigningKey(ctx, "nope", retired, until), store.ErrNotFound)
	keys, err = s.ListSigningKeys(ctx)
	if err != nil || len(keys) != 3 {
		t.Fatalf("ListSigningKeys after retire = %d keys, %v", len(keys), err)
	}
	k2.RetiredAt, k2.PublishUntil = retired, until
	for i, want := range []store.SigningKey{k3, k2, k1} {
		checkKey(t, keys[i], want)
	}
}

func testCreateCredential(t *testing.T, s store.Store) {
	ctx := t.Context()
	c1 := newCred("c1", "agent-1", "1", 42, t0)
	if err := s.CreateCredential(ctx, c1); err != nil {
		t.Fatalf("CreateCredential: %v", err)
	}
	for _, tc := range []struct {
		name string
		c    store.Credential
		want error
	}{
		{"another index", newCred("c2", "agent-1", "1", 41, t0), nil},
		{"same index in another list", newCred("c4", "agent-1", "2", 42, t0), nil},
		{"duplicate id", newCred("c1", "agent-1", "1", 100, t0), store.ErrAlreadyExists},
		{"duplicate list and index", newCred("c5", "agent-2", "1", 42, t0), store.ErrAlreadyExists},
		{"empty id", newCred("", "agent-1", "1", 200, t0), store.ErrInvalid},
	} {
		wantErr(t, "CreateCredential "+tc.name, s.CreateCredential(ctx, tc.c), tc.want)
	}

	got, err := s.GetCredential(ctx, "c1")
	if err != nil {
		t.Fatalf("GetCredential: %v", err)
	}
	checkCred(t, got, c1)
	_, err = s.GetCredential(ctx, "nope")
	wantErr(t, "GetCredential unknown", err, store.ErrNotFound)
	_, err = s.GetCredential(ctx, "c5")
	wantErr(t, "GetCredential of a refused duplicate", err, store.ErrNotFound)
}

// credSet creates, at t0 + i minutes for credential i, the credentials
// ListCredentials and the Live filter are tested on, and returns the time
// at which "live" is judged.
func credSet(t *testing.T, s store.Store) time.Time {
	t.Helper()
	ctx := t.Context()
	now := t0.Add(10 * time.Minute)
	mk := func(id, agent string, i int, edit func(*store.Credential)) store.Credential {
		c := newCred(id, agent, "1", i, t0.Add(time.Duration(i)*time.Minute))
		c.ExpiresAt = now.Add(time.Hour)
		if edit != nil {
			edit(&c)
		}
		return c
	}
	for _, c := range []store.Credential{
		mk("live-a1", "agent-1", 1, nil),
		mk("revoked-a1", "agent-1", 2, func(c *store.Credential) { c.RevokedAt, c.RevokeReason = t0, "test" }),
		mk("used-a2", "agent-2", 3, func(c *store.Credential) { c.Used, c.ConsumedAt = 1, t0 }),
		mk("expired-a2", "agent-2", 4, func(c *store.Credential) { c.ExpiresAt = now }),
		mk("multi-a2", "agent-2", 5, func(c *store.Credential) { c.Uses, c.Used = 3, 2 }),
		mk("never-expires-a1", "agent-1", 6, func(c *store.Credential) { c.ExpiresAt = time.Time{} }),
	} {
		if err := s.CreateCredential(ctx, c); err != nil {
			t.Fatalf("CreateCredential(%s): %v", c.ID, err)
		}
	}
	return now
}

func testListCredentials(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.ListCredentials(ctx, store.CredentialFilter{})
	if err != nil || len(got) != 0 {
		t.Fatalf("ListCredentials of an empty store = %d, %v", len(got), err)
	}
	now := credSet(t, s)
	for _, tc := range []struct {
		name string
		f    store.CredentialFilter
		want []string
	}{
		{"all, newest first", store.CredentialFilter{},
			[]string{"never-expires-a1", "multi-a2", "expired-a2", "used-a2", "revoked-a1", "live-a1"}},
		{"agent", store.CredentialFilter{AgentID: "agent-1"},
			[]string{"never-expires-a1", "revoked-a1", "live-a1"}},
		{"unknown agent", store.CredentialFilter{AgentID: "nope"}, nil},
		{"live", store.CredentialFilter{Live: true, Now: now},
			[]string{"never-expires-a1", "multi-a2", "live-a1"}},
		{"live a minute before expired-a2 expires", store.CredentialFilter{Live: true, Now: now.Add(-time.Minute)},
			[]string{"never-expires-a1", "multi-a2", "expired-a2", "live-a1"}},
		{"live after everything expired", store.CredentialFilter{Live: true, Now: now.Add(2 * time.Hour)},
			[]string{"never-expires-a1"}},
		{"live agent", store.CredentialFilter{AgentID: "agent-2", Live: true, Now: now}, []string{"multi-a2"}},
		{"unexpired (used or not)", store.CredentialFilter{Unexpired: true, Now: now},
			[]string{"never-expires-a1", "multi-a2", "used-a2", "live-a1"}},
		{"unexpired agent", store.CredentialFilter{AgentID: "agent-2", Unexpired: true, Now: now}, []string{"multi-a2", "used-a2"}},
		{"limit", store.CredentialFilter{Limit: 2}, []string{"never-expires-a1", "multi-a2"}},
		{"live limit", store.CredentialFilter{Live: true, Now: now, Limit: 1}, []string{"never-expires-a1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ListCredentials(ctx, tc.f)
			if err != nil {
				t.Fatalf("ListCredentials: %v", err)
			}
			if ids := credIDs(got); !slices.Equal(ids, tc.want) && !(len(ids) == 0 && len(tc.want) == 0) {
				t.Errorf("ListCredentials(%+v) = %v, want %v", tc.f, ids, tc.want)
			}
		})
	}
	// Records come back whole.
	got, err = s.ListCredentials(ctx, store.CredentialFilter{AgentID: "agent-1"})
	if err != nil || len(got) != 3 {
		t.Fatalf("ListCredentials(agent-1) = %d, %v", len(got), err)
	}
	one, err := s.GetCredential(ctx, "revoked-a1")
	if err != nil {
		t.Fatalf("GetCredential: %v", err)
	}
	checkCred(t, got[1], one)
	if one.RevokeReason != "test" || !one.RevokedAt.Equal(t0) {
		t.Errorf("revoked-a1 = %+v, want revoked at t0 for \"test\"", one)
	}
}

func testConsumeCredential(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := credSet(t, s)
	at := now.Add(-30 * time.Second) // before expired-a2's ExpiresAt (now)
	for _, tc := range []struct {
		name     string
		id       string
		at       time.Time
		want     error
		wantUsed int
	}{
		{"single use", "live-a1", at, nil, 1},
		{"single use again (replay)", "live-a1", at.Add(time.Second), store.ErrSpent, 0},
		{"revoked", "revoked-a1", at, store.ErrSpent, 0},
		{"used up", "used-a2", at, store.ErrSpent, 0},
		{"expired at its ExpiresAt", "expired-a2", now, store.ErrSpent, 0},
		{"expired after", "expired-a2", now.Add(time.Minute), store.ErrSpent, 0},
		{"just before it expires", "expired-a2", now.Add(-time.Microsecond), nil, 1},
		{"last of three uses", "multi-a2", at, nil, 3},
		{"none of three left", "multi-a2", at, store.ErrSpent, 0},
		{"never expires", "never-expires-a1", now.Add(1000 * time.Hour), nil, 1},
		{"unknown", "nope", at, store.ErrNotFound, 0},
	} {
		c, err := s.ConsumeCredential(ctx, tc.id, tc.at)
		wantErr(t, "ConsumeCredential "+tc.name, err, tc.want)
		if tc.want != nil {
			continue
		}
		if c.ID != tc.id || c.Used != tc.wantUsed {
			t.Errorf("ConsumeCredential %s = %s used %d, want %s used %d", tc.name, c.ID, c.Used, tc.id, tc.wantUsed)
		}
		checkTime(t, "ConsumeCredential "+tc.name+" ConsumedAt", c.ConsumedAt, tc.at)
		stored, err := s.GetCredential(ctx, tc.id)
		if err != nil {
			t.Fatalf("GetCredential: %v", err)
		}
		checkCred(t, stored, c)
	}
	// A refused consume changes nothing.
	c, err := s.GetCredential(ctx, "live-a1")
	if err != nil || c.Used != 1 || !c.ConsumedAt.Equal(store.NormalizeTime(at)) {
		t.Errorf("live-a1 after a replay = used %d at %v, %v; want used 1 at %v", c.Used, c.ConsumedAt, err, at)
	}
}

func testConcurrentConsume(t *testing.T, s store.Store) {
	ctx := t.Context()
	const consumers, uses = 8, 3
	c := newCred("multi", "agent-1", "1", 7, t0)
	c.Uses = uses
	if err := s.CreateCredential(ctx, c); err != nil {
		t.Fatalf("CreateCredential: %v", err)
	}
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		ok, spent   int
		errs        []error
		usedCounter = map[int]bool{}
	)
	start := make(chan struct{})
	for i := range consumers {
		wg.Go(func() {
			<-start
			got, err := s.ConsumeCredential(ctx, "multi", t0.Add(time.Duration(i+1)*time.Second))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
				if usedCounter[got.Used] {
					errs = append(errs, fmt.Errorf("two consumers saw Used = %d", got.Used))
				}
				usedCounter[got.Used] = true
			case errors.Is(err, store.ErrSpent):
				spent++
			default:
				errs = append(errs, err)
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if ok != uses || spent != consumers-uses {
		t.Errorf("%d consumes succeeded and %d were spent, want %d and %d", ok, spent, uses, consumers-uses)
	}
	got, err := s.GetCredential(ctx, "multi")
	if err != nil || got.Used != uses {
		t.Errorf("after the race Used = %d, %v; want %d", got.Used, err, uses)
	}
}

func testRevokeCredential(t *testing.T, s store.Store) {
	ctx := t.Context()
	c := newCred("c1", "agent-1", "1", 9, t0)
	if err := s.CreateCredential(ctx, c); err != nil {
		t.Fatalf("CreateCredential: %v", err)
	}
	first := t0.Add(time.Minute)
	for _, tc := range []struct {
		name   string
		id     string
		at     time.Time
		reason string
		want   error
	}{
		{"first", "c1", first, "owner left", nil},
		{"again keeps the first", "c1", first.Add(time.Minute), "another reason", nil},
		{"unknown", "nope", first, "x", store.ErrNotFound},
	} {
		got, err := s.RevokeCredential(ctx, tc.id, tc.at, tc.reason)
		wantErr(t, "RevokeCredential "+tc.name, err, tc.want)
		if tc.want != nil {
			continue
		}
		want := c
		want.RevokedAt, want.RevokeReason = first, "owner left"
		checkCred(t, got, want)
		stored, err := s.GetCredential(ctx, "c1")
		if err != nil {
			t.Fatalf("GetCredential: %v", err)
		}
		checkCred(t, stored, want)
	}
	_, err := s.ConsumeCredential(ctx, "c1", first)
	wantErr(t, "ConsumeCredential of a revoked credential", err, store.ErrSpent)
}

func testStatusIndexes(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, c := range []store.Credential{
		newCred("a", "agent-1", "1", 900, t0),
		newCred("b", "agent-1", "1", 3, t0),
		newCred("c", "agent-1", "1", 131071, t0),
		newCred("d", "agent-1", "1", 0, t0),
		newCred("e", "agent-1", "2", 3, t0),
	} {
		if err := s.CreateCredential(ctx, c); err != nil {
			t.Fatalf("CreateCredential(%s): %v", c.ID, err)
		}
	}
	for _, id := range []string{"a", "c", "d", "e"} {
		if _, err := s.RevokeCredential(ctx, id, t0, "test"); err != nil {
			t.Fatalf("RevokeCredential(%s): %v", id, err)
		}
	}
	for _, tc := range []struct {
		list    string
		count   int
		revoked []int
	}{
		{"1", 4, []int{0, 900, 131071}},
		{"2", 1, []int{3}},
		{"unknown", 0, nil},
	} {
		n, err := s.CountStatusIndexes(ctx, tc.list)
		if err != nil || n != tc.count {
			t.Errorf("CountStatusIndexes(%q) = %d, %v; want %d", tc.list, n, err, tc.count)
		}
		rev, err := s.RevokedStatusIndexes(ctx, tc.list)
		if err != nil || !slices.Equal(rev, tc.revoked) && !(len(rev) == 0 && len(tc.revoked) == 0) {
			t.Errorf("RevokedStatusIndexes(%q) = %v, %v; want %v", tc.list, rev, err, tc.revoked)
		}
	}
}
