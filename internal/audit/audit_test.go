package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/canon"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// clock is a fake Now: every call returns the next millisecond after t0.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond + 1234*time.Nanosecond)
	return c.t
}

// openStore opens a SQLite store in a temporary directory and returns it
// with the database file's path. It is closed at the end of the test (a
// second Close is harmless).
func openStore(t testing.TB) (*sqlite.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "interlock.db")
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: path, Logger: quiet()})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st, path
}

func newLog(t testing.TB, st store.Store, opts Options) *Log {
	t.Helper()
	opts.Store = st
	if opts.Logger == nil {
		opts.Logger = quiet()
	}
	if opts.Now == nil {
		opts.Now = newClock().Now
	}
	if opts.CheckpointInterval == 0 {
		opts.CheckpointInterval = -1 // no timer-driven checkpoints in tests
	}
	l, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func decision(i int, agent, effect string) Event {
	return Event{Type: "decision", CallID: fmt.Sprintf("call-%03d", i), AgentID: agent, Data: map[string]any{
		"effect": effect, "rule": "rule-" + effect, "tool": "acme.place_order",
		"args": map[string]any{"quantity": i, "unit_price_usd": 12.5, "note": "line\n\"quoted\" <&>"},
	}}
}

func appendAll(t testing.TB, l *Log, evs ...Event) []int64 {
	t.Helper()
	var out []int64
	for _, ev := range evs {
		seq, err := l.Append(context.Background(), ev)
		if err != nil {
			t.Fatalf("Append(%s): %v", ev.Type, err)
		}
		out = append(out, seq)
	}
	return out
}

func mustVerify(t *testing.T, st store.Store) Report {
	t.Helper()
	rep, err := Verify(t.Context(), st, nil)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

// TestRecordIsJCS checks the hand-written record encoding against the
// general canonicaliser on events with awkward strings and times.
func TestRecordIsJCS(t *testing.T) {
	tests := []struct {
		name string
		e    store.AuditEvent
	}{
		{"plain", store.AuditEvent{Seq: 1, Time: t0, Type: "decision", CallID: "c1", AgentID: "bot", Data: []byte(`{"a":1}`)}},
		{"fraction", store.AuditEvent{Seq: 99, Time: t0.Add(123400 * time.Nanosecond), Type: "result", Data: []byte(`{}`)}},
		{"escapes", store.AuditEvent{Seq: 1<<53 - 1, Time: t0, Type: "t\"\\\n\x01\x1f", CallID: "é😀\u2028", AgentID: "<&>", Data: []byte(`{"\ud83d\ude00":1,"\ufb33":[0.5,"x"]}`)}},
		{"zero-width fraction", store.AuditEvent{Seq: 7, Time: time.Date(1999, 12, 31, 23, 59, 59, 100_000_000, time.UTC), Type: "x", Data: []byte(`{"n":null}`)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.e
			data, err := canon.Canonicalize(e.Data)
			if err != nil {
				t.Fatal(err)
			}
			e.Data = data
			e.PrevHash = bytes.Repeat([]byte{0xab}, 32)
			want, err := canon.Marshal(map[string]any{
				"seq": e.Seq, "time": e.Time.UTC().Format(time.RFC3339Nano), "type": e.Type, "call_id": e.CallID,
				"agent_id": e.AgentID, "data": json.RawMessage(e.Data), "prev_hash": hex.EncodeToString(e.PrevHash),
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := appendRecord(nil, &e); !bytes.Equal(got, want) {
				t.Errorf("appendRecord:\n got %s\nwant %s", got, want)
			}
			sum, _ := hashEvent(&e, nil)
			if sum != sha256.Sum256(want) {
				t.Errorf("hashEvent is not the SHA-256 of the record")
			}
		})
	}
}

// TestHashGolden pins the record format: changing it breaks every log
// already written.
func TestHashGolden(t *testing.T) {
	e := store.AuditEvent{Seq: 1, Time: time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC), Type: "decision",
		CallID: "call-1", AgentID: "procurement-bot", Data: []byte(`{"effect":"allow","rule":"small-orders"}`),
		PrevHash: make([]byte, 32)}
	const record = `{"agent_id":"procurement-bot","call_id":"call-1","data":{"effect":"allow","rule":"small-orders"},` +
		`"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","seq":1,` +
		`"time":"2026-03-04T05:06:07.123456Z","type":"decision"}`
	if got := appendRecord(nil, &e); string(got) != record {
		t.Fatalf("record:\n got %s\nwant %s", got, record)
	}
	sum, _ := hashEvent(&e, nil)
	if want := sha256.Sum256([]byte(record)); sum != want {
		t.Errorf("hash = %x, want %x", sum, want)
	}
}

func TestAppendAndVerify(t *testing.T) {
	st, _ := openStore(t)
	clk := newClock()
	l := newLog(t, st, Options{Now: clk.Now})
	ctx := t.Context()
	at := time.Date(2026, 5, 6, 7, 8, 9, 987_654_321, time.FixedZone("X", 7200))
	seqs := appendAll(t, l,
		decision(1, "bot-a", "allow"),
		Event{Type: "forwarded", CallID: "call-001", AgentID: "bot-a", Time: at},
		Event{Type: "result", Data: json.RawMessage(`{ "status" : "success", "duration_us": 1.0 }`)},
	)
	first, err := l.AppendBatch(ctx, []Event{{Type: "a"}, {Type: "b"}, {Type: "c"}})
	if err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	if !slices.Equal(seqs, []int64{1, 2, 3}) || first != 4 {
		t.Errorf("seqs = %v and batch from %d; want 1 2 3 and 4", seqs, first)
	}
	if n, err := l.AppendBatch(ctx, nil); n != 0 || err != nil {
		t.Errorf("AppendBatch(nil) = %d, %v", n, err)
	}
	evs, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 6 {
		t.Fatalf("store has %d events, want 6", len(evs))
	}
	if !evs[1].Time.Equal(store.NormalizeTime(at)) {
		t.Errorf("event 2 time = %v, want the given time to the microsecond (%v)", evs[1].Time, store.NormalizeTime(at))
	}
	if !evs[0].Time.After(t0) || evs[0].Time.Nanosecond()%1000 != 0 {
		t.Errorf("event 1 time = %v, want Options.Now() to the microsecond", evs[0].Time)
	}
	if got := string(evs[2].Data); got != `{"duration_us":1,"status":"success"}` {
		t.Errorf("stored data = %s, want canonical JSON", got)
	}
	if got := string(evs[1].Data); got != `{}` {
		t.Errorf("nil data stored as %s, want {}", got)
	}
	rep := mustVerify(t, st)
	if !rep.OK() || rep.Events != 6 || rep.Problem != "" {
		t.Errorf("Verify = %+v, want OK with 6 events", rep)
	}
}

func TestAppendRejects(t *testing.T) {
	st, _ := openStore(t)
	l := newLog(t, st, Options{})
	var nilMap map[string]any
	tests := []struct {
		name string
		ev   Event
		ok   bool
	}{
		{"empty type", Event{}, false},
		{"invalid utf-8 agent", Event{Type: "x", AgentID: "\xff"}, false},
		{"invalid utf-8 type", Event{Type: "x\xc3"}, false},
		{"string data", Event{Type: "x", Data: "text"}, false},
		{"array data", Event{Type: "x", Data: []int{1}}, false},
		{"NaN in data", Event{Type: "x", Data: map[string]any{"v": math.NaN()}}, false},
		{"unencodable data", Event{Type: "x", Data: map[string]any{"c": make(chan int)}}, false},
		{"invalid raw JSON", Event{Type: "x", Data: json.RawMessage(`{"a":1,"a":2}`)}, false},
		{"year 10000", Event{Type: "x", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, false},
		{"nil map is {}", Event{Type: "x", Data: nilMap}, true},
		{"struct", Event{Type: "x", Data: struct {
			B int    `json:"b"`
			A string `json:"a"`
		}{1, "z"}}, true},
	}
	want := int64(0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seq, err := l.Append(t.Context(), tc.ev)
			if tc.ok {
				want++
				if err != nil || seq != want {
					t.Errorf("Append = %d, %v; want %d", seq, err, want)
				}
				return
			}
			if err == nil {
				t.Errorf("Append succeeded with seq %d, want an error", seq)
			}
			h, err := st.AuditHead(t.Context())
			if err != nil || h.Seq != want {
				t.Errorf("after a refused append the head is %d, %v; want %d", h.Seq, err, want)
			}
		})
	}
	if rep := mustVerify(t, st); !rep.OK() {
		t.Errorf("Verify = %+v", rep)
	}
}

// TestGroupCommit: 64 concurrent appenders get unique seqs covering the
// chain, which verifies.
func TestGroupCommit(t *testing.T) {
	st, _ := openStore(t)
	l := newLog(t, st, Options{CheckpointEvery: 500})
	const appenders, each = 64, 40
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		got  []int64
		errs []error
	)
	start := make(chan struct{})
	for g := range appenders {
		wg.Go(func() {
			<-start
			for i := range each {
				var seq int64
				var err error
				if i%10 == 9 { // some batches in the mix
					seq, err = l.AppendBatch(context.Background(), []Event{decision(i, fmt.Sprint("bot-", g), "allow"), {Type: "forwarded"}})
				} else {
					seq, err = l.Append(context.Background(), decision(i, fmt.Sprint("bot-", g), "deny"))
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					got = append(got, seq)
					if i%10 == 9 {
						got = append(got, seq+1)
					}
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
	slices.Sort(got)
	total := appenders * (each + each/10)
	if len(got) != total {
		t.Fatalf("%d seqs returned, want %d", len(got), total)
	}
	for i, s := range got {
		if s != int64(i)+1 {
			t.Fatalf("seqs are not unique and contiguous: position %d holds %d", i, s)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	rep := mustVerify(t, st)
	if !rep.OK() || rep.Events != int64(total) || rep.Checkpoints < 1 {
		t.Errorf("Verify = %+v, want OK with %d events and checkpoints", rep, total)
	}
}

// gatedStore holds the first AppendAudit until released, so that a test
// can queue appends behind it, and counts AppendAudit calls.
type gatedStore struct {
	store.Store
	entered chan struct{} // closed when the first AppendAudit starts
	release chan struct{}
	mu      sync.Mutex
	calls   int
	sizes   []int
	fail    error // returned by AppendAudit when set
}

func (g *gatedStore) AppendAudit(ctx context.Context, build func(store.AuditHead) ([]store.AuditEvent, error)) error {
	g.mu.Lock()
	g.calls++
	first := g.calls == 1
	fail := g.fail
	g.mu.Unlock()
	if first && g.entered != nil {
		close(g.entered)
		<-g.release
	}
	if fail != nil {
		return fail
	}
	return g.Store.AppendAudit(ctx, func(h store.AuditHead) ([]store.AuditEvent, error) {
		evs, err := build(h)
		g.mu.Lock()
		g.sizes = append(g.sizes, len(evs))
		g.mu.Unlock()
		return evs, err
	})
}

func (l *Log) queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}

// TestGroupCommitBatches: appends that arrive while a commit is running
// are committed together in the next transaction.
func TestGroupCommitBatches(t *testing.T) {
	st, _ := openStore(t)
	g := &gatedStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	l := newLog(t, g, Options{MaxBatch: 100})
	var wg sync.WaitGroup
	wg.Go(func() { appendAll(t, l, Event{Type: "first"}) })
	<-g.entered
	const waiting = 63
	for i := range waiting {
		wg.Go(func() { appendAll(t, l, decision(i, "bot", "allow")) })
	}
	for l.queued() < waiting {
		time.Sleep(time.Millisecond) // waiting for the goroutines to queue, not measuring
	}
	close(g.release)
	wg.Wait()
	g.mu.Lock()
	calls, sizes := g.calls, slices.Clone(g.sizes)
	g.mu.Unlock()
	if calls != 2 || !slices.Equal(sizes, []int{1, waiting}) {
		t.Errorf("AppendAudit calls = %d with batch sizes %v; want 2 calls: [1 %d]", calls, sizes, waiting)
	}
	if rep := mustVerify(t, st); !rep.OK() || rep.Events != waiting+1 {
		t.Errorf("Verify = %+v", rep)
	}
}

// TestMaxBatch: a queue longer than MaxBatch is split, but one AppendBatch
// is never split.
func TestMaxBatch(t *testing.T) {
	st, _ := openStore(t)
	g := &gatedStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	l := newLog(t, g, Options{MaxBatch: 4})
	var wg sync.WaitGroup
	wg.Go(func() { appendAll(t, l, Event{Type: "first"}) })
	<-g.entered
	// Queue, in this order: 3 single events, a batch of 6, 1 single.
	for i := range 3 {
		wg.Go(func() { appendAll(t, l, Event{Type: "one"}) })
		for l.queued() < i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	wg.Go(func() {
		if _, err := l.AppendBatch(context.Background(), slices.Repeat([]Event{{Type: "six"}}, 6)); err != nil {
			t.Error(err)
		}
	})
	for l.queued() < 4 {
		time.Sleep(time.Millisecond)
	}
	wg.Go(func() { appendAll(t, l, Event{Type: "last"}) })
	for l.queued() < 5 {
		time.Sleep(time.Millisecond)
	}
	close(g.release)
	wg.Wait()
	g.mu.Lock()
	sizes := slices.Clone(g.sizes)
	g.mu.Unlock()
	if want := []int{1, 3, 6, 1}; !slices.Equal(sizes, want) {
		t.Errorf("batch sizes = %v, want %v", sizes, want)
	}
	if rep := mustVerify(t, st); !rep.OK() || rep.Events != 11 {
		t.Errorf("Verify = %+v", rep)
	}
}

// TestAppendFailsClosed: when the store fails, Append reports an error,
// never a seq; the log recovers when the store does.
func TestAppendFailsClosed(t *testing.T) {
	t.Run("store error", func(t *testing.T) {
		st, _ := openStore(t)
		g := &gatedStore{Store: st}
		l := newLog(t, g, Options{})
		appendAll(t, l, Event{Type: "before"})
		g.mu.Lock()
		g.fail = errors.New("disk on fire")
		g.mu.Unlock()
		seq, err := l.Append(t.Context(), Event{Type: "during"})
		if err == nil || !strings.Contains(err.Error(), "disk on fire") {
			t.Errorf("Append with a failing store = %d, %v; want the store's error", seq, err)
		}
		if _, err := l.AppendBatch(t.Context(), []Event{{Type: "a"}, {Type: "b"}}); err == nil {
			t.Errorf("AppendBatch with a failing store succeeded")
		}
		g.mu.Lock()
		g.fail = nil
		g.mu.Unlock()
		if seq, err := l.Append(t.Context(), Event{Type: "after"}); err != nil || seq != 2 {
			t.Errorf("Append after recovery = %d, %v; want 2", seq, err)
		}
		if rep := mustVerify(t, st); !rep.OK() || rep.Events != 2 {
			t.Errorf("Verify = %+v", rep)
		}
	})
	t.Run("store closed", func(t *testing.T) {
		st, _ := openStore(t)
		l := newLog(t, st, Options{})
		appendAll(t, l, Event{Type: "before"})
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if seq, err := l.Append(t.Context(), Event{Type: "after"}); err == nil {
				t.Errorf("Append #%d on a closed store = %d, nil; want an error", i, seq)
			}
		}
		if err := l.Close(); err == nil {
			t.Errorf("Close with a closed store signed a checkpoint")
		}
	})
	t.Run("context done", func(t *testing.T) {
		st, _ := openStore(t)
		l := newLog(t, st, Options{})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if seq, err := l.Append(ctx, Event{Type: "x"}); !errors.Is(err, context.Canceled) {
			t.Errorf("Append with a done context = %d, %v; want context.Canceled", seq, err)
		}
		if h, err := st.AuditHead(t.Context()); err != nil || h.Seq != 0 {
			t.Errorf("head = %d, %v; want nothing written", h.Seq, err)
		}
	})
}

func TestClose(t *testing.T) {
	st, _ := openStore(t)
	g := &gatedStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	l := newLog(t, g, Options{})
	var wg sync.WaitGroup
	results := make([]int64, 20)
	wg.Go(func() { results[0] = appendAll(t, l, Event{Type: "first"})[0] })
	<-g.entered
	for i := 1; i < len(results); i++ {
		wg.Go(func() { results[i] = appendAll(t, l, Event{Type: "queued"})[0] })
	}
	for l.queued() < len(results)-1 {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error)
	go func() { closed <- l.Close() }()
	close(g.release)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	slices.Sort(results)
	for i, s := range results {
		if s != int64(i)+1 {
			t.Fatalf("after Close, seqs = %v: queued events were not all committed", results)
		}
	}
	if seq, err := l.Append(t.Context(), Event{Type: "late"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %d, %v; want ErrClosed", seq, err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	cps, err := st.ListCheckpoints(t.Context())
	if err != nil || len(cps) != 1 || cps[0].Seq != 20 {
		t.Errorf("checkpoints after Close = %+v, %v; want one at the head (20)", cps, err)
	}
}

func TestCheckpoints(t *testing.T) {
	st, _ := openStore(t)
	ctx := t.Context()
	l := newLog(t, st, Options{CheckpointEvery: 10})
	if _, err := l.Checkpoint(ctx); err == nil {
		t.Errorf("Checkpoint of an empty chain succeeded")
	}
	for i := range 25 {
		appendAll(t, l, decision(i, "bot", "allow"))
	}
	cps, err := st.ListCheckpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var at []int64
	for _, c := range cps {
		at = append(at, c.Seq)
	}
	if !slices.Equal(at, []int64{10, 20}) {
		t.Errorf("automatic checkpoints at %v, want [10 20]", at)
	}
	c, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	again, err := l.Checkpoint(ctx)
	if err != nil || again.Seq != 25 || !bytes.Equal(again.Signature, c.Signature) {
		t.Errorf("second Checkpoint of the same head = %+v, %v; want the first (25)", again, err)
	}
	evs, err := st.ListAudit(ctx, store.AuditFilter{AfterSeq: 24})
	if err != nil || len(evs) != 1 {
		t.Fatalf("ListAudit: %d, %v", len(evs), err)
	}
	if c.Seq != 25 || !bytes.Equal(c.Hash, evs[0].Hash) {
		t.Errorf("Checkpoint = seq %d hash %x, want the head %d %x", c.Seq, c.Hash, evs[0].Seq, evs[0].Hash)
	}
	// The signature covers the documented message, built independently.
	pub := l.PublicKey()
	sum := sha256.Sum256(pub)
	if l.KeyID() != hex.EncodeToString(sum[:])[:16] || c.KeyID != l.KeyID() {
		t.Errorf("key id = %q (checkpoint %q), want the first 16 hex digits of SHA-256(public key)", l.KeyID(), c.KeyID)
	}
	msg, err := canon.Marshal(map[string]any{"seq": c.Seq, "hash": hex.EncodeToString(c.Hash), "time": c.Time.Format(time.RFC3339Nano), "key_id": c.KeyID})
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(pub, msg, c.Signature) {
		t.Errorf("signature does not verify over %s", msg)
	}
	if !bytes.Equal(SignedMessage(c), msg) {
		t.Errorf("SignedMessage = %s, want %s", SignedMessage(c), msg)
	}
	// A second log on the same store (a restart, a replica) uses the same key.
	l2 := newLog(t, st, Options{})
	if !bytes.Equal(l2.PublicKey(), pub) {
		t.Errorf("second log has a different key")
	}
	raw, err := st.GetMeta(ctx, KeyMeta)
	if err != nil || !strings.Contains(string(raw), `"alg":"Ed25519"`) {
		t.Errorf("meta %s = %s, %v", KeyMeta, raw, err)
	}
	if rep := mustVerify(t, st); !rep.OK() || rep.Checkpoints != 3 {
		t.Errorf("Verify = %+v, want OK with 3 checkpoints", rep)
	}
}

func TestVerifyProgress(t *testing.T) {
	st, _ := openStore(t)
	l := newLog(t, st, Options{})
	evs := make([]Event, 25000)
	for i := range evs {
		evs[i] = decision(i, "bot", "allow")
	}
	if _, err := l.AppendBatch(t.Context(), evs); err != nil {
		t.Fatal(err)
	}
	var calls [][2]int64
	rep, err := Verify(t.Context(), st, func(done, total int64) { calls = append(calls, [2]int64{done, total}) })
	if err != nil || !rep.OK() || rep.Events != 25000 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
	if len(calls) < 3 || calls[len(calls)-1] != [2]int64{25000, 25000} || calls[0][0] != 10000 {
		t.Errorf("progress calls = %v, want one per page of 10000 ending at 25000/25000", calls)
	}
}

// ---- tampering with the database ----

// tamperSetup writes 20 events with checkpoints at 10 and 20 (the final
// one from Close), closes everything and returns the database path.
func tamperSetup(t *testing.T) string {
	t.Helper()
	st, path := openStore(t)
	l := newLog(t, st, Options{})
	for i := 1; i <= 20; i++ {
		appendAll(t, l, decision(i, fmt.Sprint("bot-", i%3), []string{"allow", "deny", "approve"}[i%3]))
		if i == 10 {
			if _, err := l.Checkpoint(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// rawEvent reads one event straight from the database.
func rawEvent(t *testing.T, db *sql.DB, seq int64) store.AuditEvent {
	t.Helper()
	e := store.AuditEvent{Seq: seq}
	var at int64
	if err := db.QueryRow(`SELECT at, type, call_id, agent_id, data, prev_hash, hash FROM audit_events WHERE seq = ?`, seq).
		Scan(&at, &e.Type, &e.CallID, &e.AgentID, &e.Data, &e.PrevHash, &e.Hash); err != nil {
		t.Fatalf("read event %d: %v", seq, err)
	}
	e.Time = time.UnixMicro(at).UTC()
	return e
}

func forge(e store.AuditEvent) []byte {
	sum, _ := hashEvent(&e, nil)
	return sum[:]
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	tests := []struct {
		name          string
		tamper        func(t *testing.T, db *sql.DB)
		firstBad      int64
		badCheckpoint int64
	}{
		{"untouched", func(*testing.T, *sql.DB) {}, 0, 0},
		{"update data", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_events SET data = ? WHERE seq = 7`, `{"effect":"allow"}`)
		}, 7, 0},
		{"update a single byte of data", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_events SET data = replace(data, 'deny', 'allo') WHERE seq = 13`)
		}, 13, 0},
		{"update time", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_events SET at = at + 1 WHERE seq = 3`)
		}, 3, 0},
		{"update agent", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_events SET agent_id = 'someone-else' WHERE seq = 12`)
		}, 12, 0},
		{"update stored hash", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_events SET hash = zeroblob(32) WHERE seq = 5`)
		}, 5, 0},
		{"delete", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM audit_events WHERE seq = 7`)
		}, 7, 0},
		{"delete the first", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM audit_events WHERE seq = 1`)
		}, 1, 0},
		{"delete the last (checkpointed)", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `DELETE FROM audit_events WHERE seq = 20`)
		}, 20, 20},
		{"insert in the middle with a forged hash", func(t *testing.T, db *sql.DB) {
			// Make room at 8 by shifting 8..20 up one (in two steps: seq
			// is a primary key), then insert an event that chains
			// correctly onto 7. The event after it no longer fits.
			mustExec(t, db, `UPDATE audit_events SET seq = -(seq + 1) WHERE seq >= 8`)
			mustExec(t, db, `UPDATE audit_events SET seq = -seq WHERE seq < 0`)
			prev := rawEvent(t, db, 7)
			e := store.AuditEvent{Seq: 8, Time: prev.Time.Add(time.Microsecond), Type: "decision", CallID: "call-forged",
				AgentID: "bot-1", Data: []byte(`{"effect":"allow"}`), PrevHash: prev.Hash}
			e.Hash = forge(e)
			mustExec(t, db, `INSERT INTO audit_events (seq, at, type, call_id, agent_id, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				e.Seq, e.Time.UnixMicro(), e.Type, e.CallID, e.AgentID, e.Data, e.PrevHash, e.Hash)
		}, 9, 0},
		{"insert in the middle with a made-up hash", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_events SET seq = -(seq + 1) WHERE seq >= 8`)
			mustExec(t, db, `UPDATE audit_events SET seq = -seq WHERE seq < 0`)
			prev := rawEvent(t, db, 7)
			mustExec(t, db, `INSERT INTO audit_events (seq, at, type, call_id, agent_id, data, prev_hash, hash) VALUES (8, ?, 'decision', 'c', 'bot-1', '{}', ?, ?)`,
				prev.Time.UnixMicro(), prev.Hash, bytes.Repeat([]byte{7}, 32))
		}, 8, 0},
		{"insert after the head", func(t *testing.T, db *sql.DB) {
			head := rawEvent(t, db, 20)
			mustExec(t, db, `INSERT INTO audit_events (seq, at, type, call_id, agent_id, data, prev_hash, hash) VALUES (21, ?, 'decision', 'c', 'bot-1', '{}', ?, ?)`,
				head.Time.UnixMicro(), head.Hash, sha256.New().Sum(nil))
		}, 21, 0},
		{"swap two events", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_events SET seq = -1 WHERE seq = 5`)
			mustExec(t, db, `UPDATE audit_events SET seq = 5 WHERE seq = 15`)
			mustExec(t, db, `UPDATE audit_events SET seq = 15 WHERE seq = -1`)
		}, 5, 0},
		{"swap two neighbours", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE audit_events SET seq = -1 WHERE seq = 16`)
			mustExec(t, db, `UPDATE audit_events SET seq = 16 WHERE seq = 17`)
			mustExec(t, db, `UPDATE audit_events SET seq = 17 WHERE seq = -1`)
		}, 16, 0},
		{"non-canonical data with a matching hash", func(t *testing.T, db *sql.DB) {
			e := rawEvent(t, db, 4)
			e.Data = append([]byte(" "), e.Data...)
			mustExec(t, db, `UPDATE audit_events SET data = ?, hash = ? WHERE seq = 4`, e.Data, forge(e))
		}, 4, 0},
		{"rewrite with every hash recomputed", func(t *testing.T, db *sql.DB) {
			// Change event 14 and rechain 14..20: the chain is consistent,
			// only checkpoint 20 can tell. Events after checkpoint 10 are
			// no longer vouched for.
			prev := rawEvent(t, db, 13).Hash
			for seq := int64(14); seq <= 20; seq++ {
				e := rawEvent(t, db, seq)
				if seq == 14 {
					e.Data = []byte(`{"effect":"allow","rule":"rewritten"}`)
				}
				e.PrevHash = prev
				e.Hash = forge(e)
				mustExec(t, db, `UPDATE audit_events SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?`, e.Data, e.PrevHash, e.Hash, seq)
				prev = e.Hash
			}
		}, 11, 20},
		{"forged checkpoint signature", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE checkpoints SET signature = zeroblob(64) WHERE seq = 10`)
		}, 0, 10},
		{"checkpoint moved", func(t *testing.T, db *sql.DB) {
			mustExec(t, db, `UPDATE checkpoints SET at = at + 1 WHERE seq = 10`)
		}, 0, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tamperSetup(t)
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			tc.tamper(t, db)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			st, err := sqlite.Open(t.Context(), sqlite.Options{Path: path, Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			rep := mustVerify(t, st)
			if rep.FirstBad != tc.firstBad || rep.BadCheckpoint != tc.badCheckpoint {
				t.Errorf("Verify = %+v\nwant FirstBad %d, BadCheckpoint %d", rep, tc.firstBad, tc.badCheckpoint)
			}
			if ok := tc.firstBad == 0 && tc.badCheckpoint == 0; rep.OK() != ok || (rep.Problem == "") != ok {
				t.Errorf("Verify OK = %v, problem %q; want OK %v", rep.OK(), rep.Problem, ok)
			}
			if tc.firstBad != 0 && !strings.Contains(rep.Problem, fmt.Sprint(tc.firstBad)) {
				t.Errorf("problem %q does not name event %d", rep.Problem, tc.firstBad)
			}
		})
	}
}

// Deferred events are committed in order, with the next commit or after
// the linger at the latest, and none is lost on Close.
func TestDeferredEvents(t *testing.T) {
	st, _ := openStore(t)
	l, err := New(context.Background(), Options{Store: st, Linger: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := l.Defer(Event{Type: "result", CallID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// With an hour's linger, a synchronous append carries them along.
	seq, err := l.Append(context.Background(), Event{Type: "decision", CallID: "d"})
	if err != nil || seq != 4 {
		t.Fatalf("append after three deferred: seq %d, %v (want 4: the deferred ones first)", seq, err)
	}
	if err := l.Defer(Event{Type: "result", CallID: "last"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	evs, err := st.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil || len(evs) != 5 || evs[4].CallID != "last" {
		t.Fatalf("after Close: %d events (%v), want 5 ending with the last deferred", len(evs), err)
	}
	if err := l.Defer(Event{Type: "result"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Defer after Close: %v, want ErrClosed", err)
	}
	// A short linger commits on its own.
	l2, _ := New(context.Background(), Options{Store: st, Linger: time.Millisecond})
	defer l2.Close()
	l2.Defer(Event{Type: "result", CallID: "alone"})
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, _ := st.AuditHead(context.Background())
		if h.Seq == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a deferred event was not committed after its linger (head %d)", h.Seq)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testCred(id string, index int) *store.Credential {
	return &store.Credential{
		ID: id, AgentID: "bot", DecisionID: "d-" + id, Upstream: "acme", Tool: "place_order",
		ArgsDigest: strings.Repeat("ab", 32), KeyID: "k1", StatusList: "1", StatusIndex: index,
		IndexRange: 1000, IssuedAt: t0, ExpiresAt: t0.Add(time.Minute), Uses: 1, Used: 1, ConsumedAt: t0,
	}
}

// An event's credential is inserted with it (its index picked by the
// store and written back) and is not part of its hash.
func TestAppendCredential(t *testing.T) {
	st, _ := openStore(t)
	l := newLog(t, st, Options{Now: func() time.Time { return t0 }})
	c := testCred("urn:uuid:c1", -1)
	ev := decision(1, "bot", "allow")
	ev.Credential = c
	if _, err := l.Append(t.Context(), ev); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if c.StatusIndex < 0 || c.StatusIndex >= 1000 {
		t.Fatalf("StatusIndex after Append = %d", c.StatusIndex)
	}
	got, err := st.GetCredential(t.Context(), c.ID)
	if err != nil || got.StatusIndex != c.StatusIndex || got.Used != 1 || got.DecisionID != c.DecisionID {
		t.Fatalf("GetCredential = %+v, %v; want %+v", got, err, c)
	}
	if rep := mustVerify(t, st); !rep.OK() {
		t.Fatalf("Verify = %+v", rep)
	}
	// The same event without the credential hashes the same.
	evs, err := st.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil || len(evs) != 1 {
		t.Fatalf("ListAudit: %d, %v", len(evs), err)
	}
	plain, err := prepare(decision(1, "bot", "allow"), func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	plain.Seq, plain.PrevHash = 1, make([]byte, HashSize)
	if sum, _ := hashEvent(&plain, nil); !bytes.Equal(sum[:], evs[0].Hash) {
		t.Errorf("the credential changed the event's hash")
	}
}

// A credential the store refuses fails its own append only, even when it
// was batched with others.
func TestCredentialFailsItsAppendOnly(t *testing.T) {
	st, _ := openStore(t)
	if err := st.CreateCredential(t.Context(), *testCred("taken", 5)); err != nil {
		t.Fatal(err)
	}
	g := &gatedStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	l := newLog(t, g, Options{})
	var wg sync.WaitGroup
	wg.Go(func() { appendAll(t, l, Event{Type: "first"}) })
	<-g.entered
	const waiting = 8
	errs := make([]error, waiting)
	creds := make([]*store.Credential, waiting)
	for i := range waiting {
		creds[i] = testCred(fmt.Sprintf("c%d", i), -1)
		if i == 3 {
			creds[i] = testCred("taken", -1) // a duplicate id
		}
		wg.Go(func() {
			ev := decision(i, "bot", "allow")
			ev.Credential = creds[i]
			_, errs[i] = l.Append(t.Context(), ev)
		})
	}
	for l.queued() < waiting {
		time.Sleep(time.Millisecond) // waiting for the goroutines to queue, not measuring
	}
	close(g.release)
	wg.Wait()
	for i, err := range errs {
		switch {
		case i == 3 && !errors.Is(err, store.ErrAlreadyExists):
			t.Errorf("append %d (a duplicate credential) = %v, want ErrAlreadyExists", i, err)
		case i != 3 && err != nil:
			t.Errorf("append %d = %v, want success", i, err)
		case i != 3:
			if got, err := st.GetCredential(t.Context(), creds[i].ID); err != nil || got.StatusIndex != creds[i].StatusIndex {
				t.Errorf("credential %d: %+v, %v (index written back %d)", i, got, err, creds[i].StatusIndex)
			}
		}
	}
	if creds[3].StatusIndex != -1 {
		t.Errorf("the refused credential's index was written back: %d", creds[3].StatusIndex)
	}
	if rep := mustVerify(t, st); !rep.OK() || rep.Events != waiting {
		t.Errorf("Verify = %+v, want %d events", rep, waiting)
	}
}
