package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// The store does not compute or check audit hashes beyond their shape and
// linkage (that is the audit package's business), so these tests chain
// made-up 32-byte hashes.

// eventHash is a made-up hash for the event with seq n (and a tag, so that
// two different chains differ).
func eventHash(tag string, n int64) []byte { return hashOf(tag + " event " + strconv.FormatInt(n, 10)) }

// chain returns n events continuing head, made by mk (which sets the
// fields other than Seq, PrevHash and Hash).
func chain(head store.AuditHead, n int, tag string, mk func(seq int64) store.AuditEvent) []store.AuditEvent {
	evs := make([]store.AuditEvent, 0, n)
	prev := head.Hash
	for i := range n {
		seq := head.Seq + int64(i) + 1
		e := mk(seq)
		e.Seq, e.PrevHash, e.Hash = seq, prev, eventHash(tag, seq)
		prev = e.Hash
		evs = append(evs, e)
	}
	return evs
}

func plainEvent(seq int64) store.AuditEvent {
	return store.AuditEvent{
		Time: t0.Add(time.Duration(seq) * time.Second), Type: "decision",
		CallID: "call-" + strconv.FormatInt(seq, 10), AgentID: "agent-1",
		Data: []byte(`{"n":` + strconv.FormatInt(seq, 10) + `}`),
	}
}

func checkEvent(t *testing.T, got, want store.AuditEvent) {
	t.Helper()
	if got.Seq != want.Seq || got.Type != want.Type || got.CallID != want.CallID || got.AgentID != want.AgentID ||
		!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.PrevHash, want.PrevHash) || !bytes.Equal(got.Hash, want.Hash) {
		t.Errorf("audit event:\n got %+v\nwant %+v", got, want)
	}
	checkTime(t, fmt.Sprintf("event %d Time", want.Seq), got.Time, want.Time)
}

func seqs(evs []store.AuditEvent) []int64 {
	out := make([]int64, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

func testAuditHeadEmpty(t *testing.T, s store.Store) {
	h, err := s.AuditHead(t.Context())
	if err != nil {
		t.Fatalf("AuditHead: %v", err)
	}
	if h.Seq != 0 || !bytes.Equal(h.Hash, make([]byte, 32)) {
		t.Errorf("AuditHead of an empty chain = %d, %x; want 0 and 32 zero bytes", h.Seq, h.Hash)
	}
	evs, err := s.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil || len(evs) != 0 {
		t.Errorf("ListAudit of an empty chain = %d events, %v", len(evs), err)
	}
}

func testAppendAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	// A first batch, with every field set, round-trips.
	var first []store.AuditEvent
	var seen store.AuditHead
	err := s.AppendAudit(ctx, func(h store.AuditHead) ([]store.AuditEvent, error) {
		seen = h
		first = chain(h, 3, "a", func(seq int64) store.AuditEvent {
			e := plainEvent(seq)
			e.Time = time.Date(2026, 7, 1, 23, 59, 59, 999_999_999, time.FixedZone("X", 3600)) // normalised on the way
			return e
		})
		first[1].CallID, first[1].AgentID = "", ""
		return first, nil
	})
	if err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	if seen.Seq != 0 || !bytes.Equal(seen.Hash, make([]byte, 32)) {
		t.Errorf("build saw head %d, %x; want the empty head", seen.Seq, seen.Hash)
	}
	got, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(got) != len(first) {
		t.Fatalf("ListAudit = %d events, want %d", len(got), len(first))
	}
	for i := range got {
		checkEvent(t, got[i], first[i])
	}
	head := store.AuditHead{Seq: 3, Hash: first[2].Hash}

	valid := func(h store.AuditHead) []store.AuditEvent { return chain(h, 2, "b", plainEvent) }
	tests := []struct {
		name  string
		build func(h store.AuditHead) ([]store.AuditEvent, error)
		err   error
	}{
		{"seq skips ahead", func(h store.AuditHead) ([]store.AuditEvent, error) {
			evs := chain(store.AuditHead{Seq: h.Seq + 1, Hash: h.Hash}, 1, "b", plainEvent)
			return evs, nil
		}, store.ErrInvalid},
		{"seq repeats the head", func(h store.AuditHead) ([]store.AuditEvent, error) {
			evs := chain(store.AuditHead{Seq: h.Seq - 1, Hash: h.Hash}, 1, "b", plainEvent)
			return evs, nil
		}, store.ErrInvalid},
		{"wrong first prev_hash", func(h store.AuditHead) ([]store.AuditEvent, error) {
			return chain(store.AuditHead{Seq: h.Seq, Hash: hashOf("not the head")}, 2, "b", plainEvent), nil
		}, store.ErrInvalid},
		{"non-contiguous seqs", func(h store.AuditHead) ([]store.AuditEvent, error) {
			evs := valid(h)
			evs[1].Seq++
			return evs, nil
		}, store.ErrInvalid},
		{"broken link inside the batch", func(h store.AuditHead) ([]store.AuditEvent, error) {
			evs := valid(h)
			evs[1].PrevHash = hashOf("elsewhere")
			return evs, nil
		}, store.ErrInvalid},
		{"missing hash", func(h store.AuditHead) ([]store.AuditEvent, error) {
			evs := valid(h)
			evs[1].Hash = nil
			return evs, nil
		}, store.ErrInvalid},
		{"short hash", func(h store.AuditHead) ([]store.AuditEvent, error) {
			evs := valid(h)
			evs[0].Hash = evs[0].Hash[:16]
			evs[1].PrevHash = evs[0].Hash
			return evs, nil
		}, store.ErrInvalid},
		{"empty type", func(h store.AuditHead) ([]store.AuditEvent, error) {
			evs := valid(h)
			evs[0].Type = ""
			return evs, nil
		}, store.ErrInvalid},
		{"build error", func(h store.AuditHead) ([]store.AuditEvent, error) {
			return valid(h), fmt.Errorf("wrapped: %w", errBoom)
		}, errBoom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var builds int
			err := s.AppendAudit(ctx, func(h store.AuditHead) ([]store.AuditEvent, error) {
				builds++
				if h.Seq != head.Seq || !bytes.Equal(h.Hash, head.Hash) {
					t.Errorf("build saw head %d, %x; want %d, %x", h.Seq, h.Hash, head.Seq, head.Hash)
				}
				return tc.build(h)
			})
			wantErr(t, "AppendAudit", err, tc.err)
			if builds == 0 {
				t.Errorf("build was not called")
			}
			h, err := s.AuditHead(ctx)
			if err != nil {
				t.Fatalf("AuditHead: %v", err)
			}
			if h.Seq != head.Seq || !bytes.Equal(h.Hash, head.Hash) {
				t.Errorf("after a refused append the head is %d, %x; want %d, %x", h.Seq, h.Hash, head.Seq, head.Hash)
			}
			evs, err := s.ListAudit(ctx, store.AuditFilter{})
			if err != nil || len(evs) != int(head.Seq) {
				t.Errorf("after a refused append ListAudit = %d events, %v; want %d", len(evs), err, head.Seq)
			}
		})
	}

	t.Run("build error returned as is", func(t *testing.T) {
		mine := errors.New("mine")
		if err := s.AppendAudit(ctx, func(store.AuditHead) ([]store.AuditEvent, error) { return nil, mine }); err != mine { // the very value: "returned as is"
			t.Errorf("AppendAudit = %v, want the build error itself", err)
		}
	})
	t.Run("empty batch", func(t *testing.T) {
		if err := s.AppendAudit(ctx, func(store.AuditHead) ([]store.AuditEvent, error) { return nil, nil }); err != nil {
			t.Errorf("AppendAudit of no events = %v", err)
		}
		if h, err := s.AuditHead(ctx); err != nil || h.Seq != head.Seq {
			t.Errorf("AuditHead = %d, %v; want %d", h.Seq, err, head.Seq)
		}
	})
	t.Run("continues after refusals", func(t *testing.T) {
		var more []store.AuditEvent
		err := s.AppendAudit(ctx, func(h store.AuditHead) ([]store.AuditEvent, error) {
			more = chain(h, 40, "c", plainEvent) // more than a backend's insert batch
			return more, nil
		})
		if err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
		h, err := s.AuditHead(ctx)
		if err != nil || h.Seq != 43 || !bytes.Equal(h.Hash, more[len(more)-1].Hash) {
			t.Errorf("AuditHead = %d, %x, %v; want 43, %x", h.Seq, h.Hash, err, more[len(more)-1].Hash)
		}
		evs, err := s.ListAudit(ctx, store.AuditFilter{AfterSeq: 3})
		if err != nil || len(evs) != len(more) {
			t.Fatalf("ListAudit = %d, %v; want %d", len(evs), err, len(more))
		}
		for i := range evs {
			checkEvent(t, evs[i], more[i])
		}
	})
}

func testConcurrentAppendAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	const goroutines, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	start := make(chan struct{})
	var mu sync.Mutex
	appended := 0
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for i := range each {
				n := 1 + (g+i)%3
				err := s.AppendAudit(ctx, func(h store.AuditHead) ([]store.AuditEvent, error) {
					return chain(h, n, "g"+strconv.Itoa(g), plainEvent), nil
				})
				if err != nil {
					errs <- err
					continue
				}
				mu.Lock()
				appended += n
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("AppendAudit: %v", err)
	}
	evs, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(evs) != appended {
		t.Fatalf("chain has %d events, %d were appended", len(evs), appended)
	}
	prev := make([]byte, 32)
	for i, e := range evs {
		if e.Seq != int64(i)+1 {
			t.Fatalf("event %d has seq %d: the chain is not contiguous", i+1, e.Seq)
		}
		if !bytes.Equal(e.PrevHash, prev) {
			t.Fatalf("event %d: prev_hash does not link to event %d", e.Seq, e.Seq-1)
		}
		prev = e.Hash
	}
	h, err := s.AuditHead(ctx)
	if err != nil || h.Seq != int64(appended) || !bytes.Equal(h.Hash, prev) {
		t.Errorf("AuditHead = %d, %v; want %d", h.Seq, err, appended)
	}
}

// credEvents returns plainEvent for each seq, carrying creds[i] for the
// i-th event (nil: none).
func credEvents(creds []*store.Credential) func(seq int64) store.AuditEvent {
	first := int64(-1)
	return func(seq int64) store.AuditEvent {
		if first < 0 {
			first = seq
		}
		e := plainEvent(seq)
		if i := int(seq - first); i < len(creds) {
			e.Credential = creds[i]
		}
		return e
	}
}

// appendCreds appends one event per credential (the chain tagged tag), in
// one AppendAudit.
func appendCreds(t *testing.T, s store.Store, tag string, creds ...*store.Credential) error {
	t.Helper()
	return s.AppendAudit(t.Context(), func(h store.AuditHead) ([]store.AuditEvent, error) {
		return chain(h, len(creds), tag, credEvents(creds)), nil
	})
}

// randomCred is a credential for AppendAudit to place at a random index
// in [0, n) of list.
func randomCred(id, list string, n int) *store.Credential {
	c := newCred(id, "agent-1", list, -1, t0)
	c.IndexRange = n
	return &c
}

// checkStoredCred checks that c (as appended, with the index the store wrote
// back) is what GetCredential returns.
func checkStoredCred(t *testing.T, s store.Store, c *store.Credential) {
	t.Helper()
	got, err := s.GetCredential(t.Context(), c.ID)
	if err != nil {
		t.Fatalf("GetCredential(%s): %v", c.ID, err)
	}
	want := *c
	want.IndexRange = 0
	checkCred(t, got, want)
}

func testAppendAuditCredentials(t *testing.T, s store.Store) {
	ctx := t.Context()

	// A fixed index and a random one, with an event without a credential
	// between them, in one transaction.
	fixed := newCred("fixed", "agent-1", "1", 7, t0)
	fixed.Used, fixed.ConsumedAt = 1, t0.Add(time.Second)
	random := randomCred("random", "1", 1000)
	random.Uses, random.Used, random.ConsumedAt = 3, 1, t0.Add(time.Second)
	if err := appendCreds(t, s, "a", &fixed, nil, random); err != nil {
		t.Fatalf("AppendAudit with credentials: %v", err)
	}
	if fixed.StatusIndex != 7 {
		t.Errorf("a fixed index was changed to %d", fixed.StatusIndex)
	}
	if random.StatusIndex < 0 || random.StatusIndex >= 1000 || random.StatusIndex == 7 {
		t.Errorf("random index %d: want one in [0, 1000) other than 7", random.StatusIndex)
	}
	checkStoredCred(t, s, &fixed)
	checkStoredCred(t, s, random)
	evs, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil || len(evs) != 3 {
		t.Fatalf("ListAudit = %d events, %v; want 3", len(evs), err)
	}
	for _, e := range evs {
		if e.Credential != nil {
			t.Errorf("ListAudit returned event %d with a credential", e.Seq)
		}
	}
	// Fixed indexes only (PostgreSQL commits without reading their
	// outcome first).
	fixed2, fixed3 := newCred("fixed-2", "agent-1", "1", 8, t0), newCred("fixed-3", "agent-1", "2", 7, t0)
	if err := appendCreds(t, s, "a", &fixed2, &fixed3); err != nil {
		t.Fatalf("AppendAudit with fixed indexes: %v", err)
	}
	checkStoredCred(t, s, &fixed2)
	checkStoredCred(t, s, &fixed3)
	head, err := s.AuditHead(ctx)
	if err != nil || head.Seq != 5 {
		t.Fatalf("AuditHead = %d, %v; want 5", head.Seq, err)
	}

	// A credential the store refuses fails the whole append: no event, no
	// credential, and the random index is not written back.
	for _, tc := range []struct {
		name string
		bad  store.Credential
		want error
	}{
		{"duplicate id", newCred("fixed", "agent-1", "1", 8, t0), store.ErrAlreadyExists},
		{"duplicate id at a random index", *randomCred("random", "1", 1000), store.ErrAlreadyExists},
		{"taken index", newCred("other", "agent-1", "1", 7, t0), store.ErrAlreadyExists},
		{"empty id", newCred("", "agent-1", "1", 9, t0), store.ErrInvalid},
		{"no index range", *randomCred("norange", "1", 0), store.ErrInvalid},
		{"negative index", newCred("negative", "agent-1", "1", -2, t0), store.ErrInvalid},
		{"no uses", func() store.Credential { c := *randomCred("nouses", "1", 1000); c.Uses = 0; return c }(), store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := randomCred("good-"+tc.name, "1", 1000)
			bad := tc.bad
			before := bad.StatusIndex
			wantErr(t, "AppendAudit", appendCreds(t, s, "b", good, &bad), tc.want)
			if good.StatusIndex != -1 || bad.StatusIndex != before {
				t.Errorf("indexes after a failed append: %d and %d, want -1 and %d", good.StatusIndex, bad.StatusIndex, before)
			}
			_, err := s.GetCredential(ctx, good.ID)
			wantErr(t, "GetCredential of a credential whose append failed", err, store.ErrNotFound)
			h, err := s.AuditHead(ctx)
			if err != nil || h.Seq != head.Seq || !bytes.Equal(h.Hash, head.Hash) {
				t.Errorf("AuditHead after a failed append = %d, %v; want %d", h.Seq, err, head.Seq)
			}
		})
	}
	if n, err := s.CountStatusIndexes(ctx, "1"); err != nil || n != 3 {
		t.Errorf("CountStatusIndexes = %d, %v; want 3", n, err)
	}

	// A small list filled to half, ten credentials a transaction (taken
	// indexes are tried again, within a transaction too): every index is
	// in range and unique.
	const size, total, per = 400, 200, 10
	seen := map[int]string{}
	for b := range total / per {
		creds := make([]*store.Credential, per)
		for i := range creds {
			creds[i] = randomCred(fmt.Sprintf("small-%d-%d", b, i), "small", size)
		}
		if err := appendCreds(t, s, "s", creds...); err != nil {
			t.Fatalf("AppendAudit of batch %d: %v", b, err)
		}
		for _, c := range creds {
			if c.StatusIndex < 0 || c.StatusIndex >= size {
				t.Fatalf("%s got index %d, want one in [0, %d)", c.ID, c.StatusIndex, size)
			}
			if other, ok := seen[c.StatusIndex]; ok {
				t.Fatalf("%s and %s both got index %d", c.ID, other, c.StatusIndex)
			}
			seen[c.StatusIndex] = c.ID
			checkStoredCred(t, s, c)
		}
	}
	if n, err := s.CountStatusIndexes(ctx, "small"); err != nil || n != total {
		t.Errorf("CountStatusIndexes(small) = %d, %v; want %d", n, err, total)
	}

	// A full list: no free index, ErrAlreadyExists, nothing written.
	full := []*store.Credential{randomCred("full-1", "full", 1)}
	if err := appendCreds(t, s, "f", full...); err != nil || full[0].StatusIndex != 0 {
		t.Fatalf("AppendAudit into a list of one = index %d, %v", full[0].StatusIndex, err)
	}
	head, err = s.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "AppendAudit into a full list", appendCreds(t, s, "f", randomCred("full-2", "full", 1)), store.ErrAlreadyExists)
	if h, err := s.AuditHead(ctx); err != nil || h.Seq != head.Seq {
		t.Errorf("AuditHead after a failed append = %d, %v; want %d", h.Seq, err, head.Seq)
	}
}

// Concurrent appends with credentials at random indexes of one list: each
// gets its own index, and the chain stays one.
func testConcurrentAppendAuditCredentials(t *testing.T, s store.Store) {
	ctx := t.Context()
	const goroutines, each, size = 8, 20, 1000
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		creds []*store.Credential
	)
	errs := make(chan error, goroutines*each)
	start := make(chan struct{})
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for i := range each {
				cs := []*store.Credential{randomCred(fmt.Sprintf("g%d-%d-a", g, i), "c", size)}
				if i%2 == 1 {
					cs = append(cs, randomCred(fmt.Sprintf("g%d-%d-b", g, i), "c", size))
				}
				if err := appendCreds(t, s, "g"+strconv.Itoa(g), cs...); err != nil {
					errs <- err
					continue
				}
				mu.Lock()
				creds = append(creds, cs...)
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("AppendAudit: %v", err)
	}
	seen := map[int]string{}
	for _, c := range creds {
		if c.StatusIndex < 0 || c.StatusIndex >= size {
			t.Fatalf("%s got index %d", c.ID, c.StatusIndex)
		}
		if other, ok := seen[c.StatusIndex]; ok {
			t.Fatalf("%s and %s both got index %d", c.ID, other, c.StatusIndex)
		}
		seen[c.StatusIndex] = c.ID
		checkStoredCred(t, s, c)
	}
	if n, err := s.CountStatusIndexes(ctx, "c"); err != nil || n != len(creds) {
		t.Errorf("CountStatusIndexes = %d, %v; want %d", n, err, len(creds))
	}
	evs, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil || len(evs) != len(creds) {
		t.Fatalf("ListAudit = %d events, %v; want %d", len(evs), err, len(creds))
	}
	for i, e := range evs {
		if e.Seq != int64(i)+1 {
			t.Fatalf("event %d has seq %d: the chain is not contiguous", i+1, e.Seq)
		}
	}
}

func testListAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Ten events: agents alternate a/b, types cycle decision/forwarded/result,
	// times one minute apart from t0.
	types := []string{"decision", "forwarded", "result"}
	err := s.AppendAudit(ctx, func(h store.AuditHead) ([]store.AuditEvent, error) {
		return chain(h, 10, "l", func(seq int64) store.AuditEvent {
			e := plainEvent(seq)
			e.Time = t0.Add(time.Duration(seq-1) * time.Minute)
			e.AgentID = map[bool]string{true: "a", false: "b"}[seq%2 == 1]
			e.Type = types[(seq-1)%3]
			return e
		}), nil
	})
	if err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	tests := []struct {
		name string
		f    store.AuditFilter
		want []int64
	}{
		{"all", store.AuditFilter{}, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"after seq", store.AuditFilter{AfterSeq: 7}, []int64{8, 9, 10}},
		{"after the head", store.AuditFilter{AfterSeq: 10}, nil},
		{"since is inclusive", store.AuditFilter{Since: t0.Add(7 * time.Minute)}, []int64{8, 9, 10}},
		{"since between events", store.AuditFilter{Since: t0.Add(7*time.Minute - time.Microsecond)}, []int64{8, 9, 10}},
		{"since in another zone", store.AuditFilter{Since: t0.Add(8 * time.Minute).In(time.FixedZone("Y", -7200))}, []int64{9, 10}},
		{"agent", store.AuditFilter{AgentID: "b"}, []int64{2, 4, 6, 8, 10}},
		{"unknown agent", store.AuditFilter{AgentID: "zz"}, nil},
		{"one type", store.AuditFilter{Types: []string{"decision"}}, []int64{1, 4, 7, 10}},
		{"two types", store.AuditFilter{Types: []string{"result", "forwarded"}}, []int64{2, 3, 5, 6, 8, 9}},
		{"unknown type", store.AuditFilter{Types: []string{"nope"}}, nil},
		{"limit", store.AuditFilter{Limit: 3}, []int64{1, 2, 3}},
		{"page", store.AuditFilter{AfterSeq: 3, Limit: 3}, []int64{4, 5, 6}},
		{"all filters", store.AuditFilter{AfterSeq: 1, Since: t0.Add(2 * time.Minute), AgentID: "a", Types: []string{"decision", "forwarded"}, Limit: 2}, []int64{5, 7}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := s.ListAudit(ctx, tc.f)
			if err != nil {
				t.Fatalf("ListAudit: %v", err)
			}
			if got := seqs(evs); !slices.Equal(got, tc.want) {
				t.Errorf("ListAudit(%+v) = %v, want %v", tc.f, got, tc.want)
			}
		})
	}
}

func testCheckpoints(t *testing.T, s store.Store) {
	ctx := t.Context()
	cps, err := s.ListCheckpoints(ctx)
	if err != nil || len(cps) != 0 {
		t.Fatalf("ListCheckpoints on an empty store = %d, %v", len(cps), err)
	}
	cp := func(seq int64) store.Checkpoint {
		return store.Checkpoint{Seq: seq, Hash: eventHash("cp", seq), Time: t0.Add(time.Duration(seq) * time.Hour),
			KeyID: "0123456789abcdef", Signature: hashOf("sig " + strconv.FormatInt(seq, 10))[:32]}
	}
	withSeq0 := cp(0)
	shortHash := cp(5)
	shortHash.Hash = shortHash.Hash[:8]
	noKey := cp(6)
	noKey.KeyID = ""
	noSig := cp(7)
	noSig.Signature = nil
	zoned := cp(9)
	zoned.Time = time.Date(2026, 1, 1, 12, 0, 0, 123_456_789, time.FixedZone("Z", 3*3600))
	tests := []struct {
		name string
		c    store.Checkpoint
		err  error
	}{
		{"later first", cp(20), nil},
		{"earlier", cp(10), nil},
		{"sub-microsecond time in a zone", zoned, nil},
		{"duplicate seq", cp(10), store.ErrAlreadyExists},
		{"seq 0", withSeq0, store.ErrInvalid},
		{"short hash", shortHash, store.ErrInvalid},
		{"no key id", noKey, store.ErrInvalid},
		{"no signature", noSig, store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, "PutCheckpoint", s.PutCheckpoint(ctx, tc.c), tc.err)
		})
	}
	cps, err = s.ListCheckpoints(ctx)
	if err != nil {
		t.Fatalf("ListCheckpoints: %v", err)
	}
	want := []store.Checkpoint{zoned, cp(10), cp(20)}
	if len(cps) != len(want) {
		t.Fatalf("ListCheckpoints = %d checkpoints, want %d", len(cps), len(want))
	}
	for i, c := range cps {
		w := want[i]
		if c.Seq != w.Seq || !bytes.Equal(c.Hash, w.Hash) || c.KeyID != w.KeyID || !bytes.Equal(c.Signature, w.Signature) {
			t.Errorf("checkpoint %d:\n got %+v\nwant %+v", i, c, w)
		}
		checkTime(t, fmt.Sprintf("checkpoint %d Time", w.Seq), c.Time, w.Time)
	}
}

// ---- budgets ----

func testChargeBudget(t *testing.T, s store.Store) {
	ctx := t.Context()
	since := t0
	at := t0.Add(time.Minute)
	entry := func(key string, amount float64) store.BudgetEntry {
		return store.BudgetEntry{Key: key, Time: at, Amount: amount, CallID: "c"}
	}
	// An old entry, at the window's edge: it must not count.
	if _, ok, err := s.ChargeBudget(ctx, store.BudgetEntry{Key: "k", Time: since, Amount: 5}, since.Add(-time.Hour), 100); err != nil || !ok {
		t.Fatalf("ChargeBudget(old entry) = %v, %v", ok, err)
	}
	tests := []struct {
		name    string
		e       store.BudgetEntry
		limit   float64
		total   float64
		charged bool
		err     error
	}{
		{"first", entry("k", 4), 10, 4, true, nil},
		{"second", entry("k", 4), 10, 8, true, nil},
		{"would exceed", entry("k", 4), 10, 8, false, nil},
		{"exactly the limit", entry("k", 2), 10, 10, true, nil},
		{"zero amount at the limit", entry("k", 0), 10, 10, true, nil},
		{"over a smaller limit", entry("k", 1), 5, 10, false, nil},
		{"other key is separate", entry("other", 9.5), 10, 9.5, true, nil},
		{"fractions", entry("other", 0.25), 10, 9.75, true, nil},
		{"empty key", entry("", 1), 10, 0, false, store.ErrInvalid},
		{"NaN amount", entry("k", math.NaN()), 10, 0, false, store.ErrInvalid},
		{"infinite amount", entry("k", math.Inf(1)), 10, 0, false, store.ErrInvalid},
		{"a refund (negative amount) under an infinite limit", entry("k", -1), math.Inf(1), 9, true, nil},
		{"charged again after the refund", entry("k", 1), 10, 10, true, nil},
		{"no time", store.BudgetEntry{Key: "k", Amount: 1}, 10, 0, false, store.ErrInvalid},
		{"NaN limit", entry("k", 1), math.NaN(), 0, false, store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			total, charged, err := s.ChargeBudget(ctx, tc.e, since, tc.limit)
			wantErr(t, "ChargeBudget", err, tc.err)
			if tc.err != nil {
				return
			}
			if total != tc.total || charged != tc.charged {
				t.Errorf("ChargeBudget = %v, %v; want %v, %v", total, charged, tc.total, tc.charged)
			}
		})
	}
	totals, err := s.BudgetTotals(ctx, []string{"k", "other"}, since)
	if err != nil {
		t.Fatalf("BudgetTotals: %v", err)
	}
	if totals["k"] != 10 || totals["other"] != 9.75 {
		t.Errorf("BudgetTotals = %v, want k=10 other=9.75 (refused and invalid charges leave nothing)", totals)
	}
	// Widening the window takes in the old entry.
	if total, charged, err := s.ChargeBudget(ctx, entry("k", 1), since.Add(-time.Second), 15); err != nil || total != 15 || charged != false {
		t.Errorf("ChargeBudget with the old entry in the window = %v, %v, %v; want 15 (refused: 10+5+1 > 15)", total, charged, err)
	}
}

func testConcurrentChargeBudget(t *testing.T, s store.Store) {
	ctx := t.Context()
	const goroutines, tries = 16, 10
	const limit, amount = 100.0, 7.0
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		charged int
		errs    []error
	)
	start := make(chan struct{})
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for i := range tries {
				total, ok, err := s.ChargeBudget(ctx, store.BudgetEntry{Key: "daily/agent/x", Time: t0.Add(time.Duration(g*tries+i) * time.Microsecond),
					Amount: amount, CallID: fmt.Sprintf("g%d-%d", g, i)}, t0.Add(-time.Hour), limit)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				if ok {
					charged++
				}
				if total > limit {
					errs = append(errs, fmt.Errorf("ChargeBudget returned total %v over the limit %v", total, limit))
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if want := int(math.Floor(limit / amount)); charged != want {
		t.Errorf("%d charges succeeded, want exactly %d", charged, want)
	}
	totals, err := s.BudgetTotals(ctx, []string{"daily/agent/x"}, t0.Add(-time.Hour))
	if err != nil {
		t.Fatalf("BudgetTotals: %v", err)
	}
	if got, want := totals["daily/agent/x"], float64(charged)*amount; got != want || got > limit {
		t.Errorf("BudgetTotals = %v, want %v (within %v)", got, want, limit)
	}
}

func testBudgetTotals(t *testing.T, s store.Store) {
	ctx := t.Context()
	for i, e := range []store.BudgetEntry{
		{Key: "a", Time: t0, Amount: 1},
		{Key: "a", Time: t0.Add(time.Minute), Amount: 2},
		{Key: "a", Time: t0.Add(2 * time.Minute), Amount: 4},
		{Key: "b", Time: t0.Add(time.Minute), Amount: 8},
	} {
		if _, ok, err := s.ChargeBudget(ctx, e, t0.Add(-time.Hour), 1e9); err != nil || !ok {
			t.Fatalf("ChargeBudget #%d = %v, %v", i, ok, err)
		}
	}
	tests := []struct {
		name  string
		keys  []string
		since time.Time
		want  map[string]float64
	}{
		{"all in the window", []string{"a", "b"}, t0.Add(-time.Second), map[string]float64{"a": 7, "b": 8}},
		{"entries at since do not count", []string{"a", "b"}, t0.Add(time.Minute), map[string]float64{"a": 4, "b": 0}},
		{"missing key is 0", []string{"a", "missing"}, t0.Add(-time.Second), map[string]float64{"a": 7, "missing": 0}},
		{"window past every entry", []string{"a"}, t0.Add(time.Hour), map[string]float64{"a": 0}},
		{"no keys", nil, t0, map[string]float64{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.BudgetTotals(ctx, tc.keys, tc.since)
			if err != nil {
				t.Fatalf("BudgetTotals: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Errorf("BudgetTotals = %v, want %v", got, tc.want)
			}
			for k, w := range tc.want {
				if v, ok := got[k]; !ok || v != w {
					t.Errorf("BudgetTotals[%q] = %v, %v; want %v", k, v, ok, w)
				}
			}
		})
	}
}

func testPruneBudget(t *testing.T, s store.Store) {
	ctx := t.Context()
	for i, at := range []time.Time{t0, t0.Add(time.Hour), t0.Add(2 * time.Hour)} {
		if _, ok, err := s.ChargeBudget(ctx, store.BudgetEntry{Key: "k", Time: at, Amount: float64(int(1) << i)}, t0.Add(-time.Hour), 1e9); err != nil || !ok {
			t.Fatalf("ChargeBudget = %v, %v", ok, err)
		}
	}
	everything := t0.Add(-24 * time.Hour)
	tests := []struct {
		name   string
		before time.Time
		want   float64 // total of what is left
	}{
		{"before every entry", t0.Add(-time.Microsecond), 7},
		{"at an entry deletes it", t0, 6},
		{"between entries", t0.Add(90 * time.Minute), 4},
		{"again is a no-op", t0.Add(90 * time.Minute), 4},
		{"all", t0.Add(3 * time.Hour), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.PruneBudget(ctx, tc.before); err != nil {
				t.Fatalf("PruneBudget: %v", err)
			}
			got, err := s.BudgetTotals(ctx, []string{"k"}, everything)
			if err != nil {
				t.Fatalf("BudgetTotals: %v", err)
			}
			if got["k"] != tc.want {
				t.Errorf("after PruneBudget(%v) the total is %v, want %v", tc.before, got["k"], tc.want)
			}
		})
	}
}
