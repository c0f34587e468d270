package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var testNow = time.Date(2026, 11, 5, 9, 30, 0, 0, time.UTC)

func fixedNow() time.Time { return testNow }

func noBackoff(int) time.Duration { return 0 }

// recorder collects Deliveries.
type recorder struct {
	mu sync.Mutex
	ds []Delivery
}

func (r *recorder) record(d Delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ds = append(r.ds, d)
}

func (r *recorder) all() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ds)
}

// newTestDispatcher is New with the log going to the test's output.
func newTestDispatcher(t *testing.T, o Options) *Dispatcher {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return New(o)
}

// closeDispatcher closes d, failing the test if deliveries are left.
func closeDispatcher(t *testing.T, d *Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// fakeChannel answers Send with the results of fn.
type fakeChannel struct {
	name string
	fn   func(ctx context.Context, to Recipient, m Message) error
}

func (f fakeChannel) Name() string { return f.name }
func (f fakeChannel) Send(ctx context.Context, to Recipient, m Message) error {
	return f.fn(ctx, to, m)
}

func testMessage() Message {
	return Message{
		ApprovalID: "ap_123",
		Title:      "Approval needed: acme.place_order",
		Text:       "agent shopper wants acme.place_order: 3 × widget, total €120 & <free> shipping",
		URL:        "https://console.example.com/approvals/ap_123?from=notify&x=1",
		Data:       map[string]any{"agent": "shopper", "tool": "acme.place_order", "risk_score": 0.7},
	}
}

func TestDispatcherFanOut(t *testing.T) {
	var mu sync.Mutex
	got := map[string]string{} // channel/user -> delivery id
	mk := func(name string) Channel {
		return fakeChannel{name: name, fn: func(_ context.Context, to Recipient, m Message) error {
			mu.Lock()
			defer mu.Unlock()
			got[name+"/"+to.UserID] = m.DeliveryID
			return nil
		}}
	}
	var rec recorder
	d := newTestDispatcher(t, Options{Channels: []Channel{mk("a"), mk("b")}, Record: rec.record, Now: fixedNow})
	d.Notify(testMessage(), []Recipient{{UserID: "u1"}, {UserID: "u2"}, {UserID: "u3"}})
	closeDispatcher(t, d)

	if len(got) != 6 {
		t.Fatalf("sends = %v, want 6", got)
	}
	ids := map[string]bool{}
	for k, id := range got {
		if id == "" || ids[id] {
			t.Errorf("%s: delivery id %q empty or repeated", k, id)
		}
		ids[id] = true
	}
	ds := rec.all()
	if len(ds) != 6 {
		t.Fatalf("records = %d, want 6", len(ds))
	}
	for _, r := range ds {
		if !r.OK || !r.Final || r.Attempt != 1 || r.ApprovalID != "ap_123" || !r.At.Equal(testNow) {
			t.Errorf("record %+v", r)
		}
	}
}

func TestDispatcherRetries(t *testing.T) {
	transient := errors.New("connection reset")
	tests := []struct {
		name        string
		errs        []error // per attempt; nil after the end
		maxAttempts int
		wantOK      []bool
		wantPerm    bool
	}{
		{"success first", nil, 5, []bool{true}, false},
		{"two failures then success", []error{transient, transient}, 5, []bool{false, false, true}, false},
		{"attempts spent", []error{transient, transient, transient, transient}, 3, []bool{false, false, false}, false},
		{"permanent", []error{fmt.Errorf("bad: %w", ErrPermanent)}, 5, []bool{false}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int32
			var mu sync.Mutex
			ids := map[string]bool{}
			ch := fakeChannel{name: "fake", fn: func(_ context.Context, _ Recipient, m Message) error {
				mu.Lock()
				ids[m.DeliveryID] = true
				mu.Unlock()
				i := int(n.Add(1)) - 1
				if i < len(tt.errs) {
					return tt.errs[i]
				}
				return nil
			}}
			var rec recorder
			var backoffs []int
			d := newTestDispatcher(t, Options{
				Channels:    []Channel{ch},
				MaxAttempts: tt.maxAttempts,
				Backoff: func(a int) time.Duration {
					mu.Lock()
					backoffs = append(backoffs, a)
					mu.Unlock()
					return 0
				},
				Record: rec.record,
				Now:    fixedNow,
			})
			d.Notify(testMessage(), []Recipient{{UserID: "u1"}})
			closeDispatcher(t, d)

			ds := rec.all()
			if len(ds) != len(tt.wantOK) {
				t.Fatalf("records = %+v, want %d", ds, len(tt.wantOK))
			}
			for i, r := range ds {
				if r.Attempt != i+1 || r.OK != tt.wantOK[i] || r.Final != (i == len(ds)-1) {
					t.Errorf("record %d = %+v", i, r)
				}
				if !r.OK && r.Err == "" {
					t.Errorf("record %d: no error text", i)
				}
			}
			if last := ds[len(ds)-1]; last.Permanent != tt.wantPerm {
				t.Errorf("Permanent = %v, want %v", last.Permanent, tt.wantPerm)
			}
			if len(ids) != 1 {
				t.Errorf("delivery ids across attempts = %v, want one", ids)
			}
			if len(backoffs) != len(ds)-1 || (len(backoffs) > 0 && backoffs[0] != 1) {
				t.Errorf("backoff calls %v", backoffs)
			}
		})
	}
}

func TestDispatcherMaxInFlight(t *testing.T) {
	const limit, total = 2, 10
	var inFlight, peak atomic.Int32
	started := make(chan struct{}, total)
	release := make(chan struct{})
	ch := fakeChannel{name: "fake", fn: func(ctx context.Context, _ Recipient, _ Message) error {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		started <- struct{}{}
		<-release
		return nil
	}}
	d := newTestDispatcher(t, Options{Channels: []Channel{ch}, MaxInFlight: limit, Now: fixedNow})
	var to []Recipient
	for i := range total {
		to = append(to, Recipient{UserID: fmt.Sprint("u", i)})
	}
	d.Notify(testMessage(), to)
	for range limit {
		<-started
	}
	close(release)
	closeDispatcher(t, d)
	if got := len(started); got != total-limit {
		t.Errorf("sends after release = %d, want %d", got, total-limit)
	}
	if p := peak.Load(); p != limit {
		t.Errorf("peak in flight = %d, want %d", p, limit)
	}
}

func TestDispatcherCloseAbandons(t *testing.T) {
	started := make(chan struct{})
	var sendErr error
	ch := fakeChannel{name: "slow", fn: func(ctx context.Context, _ Recipient, _ Message) error {
		close(started)
		<-ctx.Done()
		sendErr = ctx.Err()
		return sendErr
	}}
	var rec recorder
	d := newTestDispatcher(t, Options{Channels: []Channel{ch}, Record: rec.record, Now: fixedNow, Backoff: noBackoff})
	d.Notify(testMessage(), []Recipient{{UserID: "u1"}})
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := d.Close(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v, want context.Canceled", err)
	}
	if !errors.Is(sendErr, context.Canceled) {
		t.Errorf("Send saw %v, want its context cancelled", sendErr)
	}
	if ds := rec.all(); len(ds) != 1 || ds[0].OK || !ds[0].Final {
		t.Errorf("records = %+v, want one final failure", ds)
	}
}

func TestDispatcherSkips(t *testing.T) {
	var sends atomic.Int32
	ok := fakeChannel{name: "ok", fn: func(context.Context, Recipient, Message) error { sends.Add(1); return nil }}
	noAddr := fakeChannel{name: "noaddr", fn: func(context.Context, Recipient, Message) error { return ErrNoAddress }}

	t.Run("no address", func(t *testing.T) {
		var rec recorder
		d := newTestDispatcher(t, Options{Channels: []Channel{noAddr}, Record: rec.record})
		d.Notify(testMessage(), []Recipient{{UserID: "u1"}})
		closeDispatcher(t, d)
		if ds := rec.all(); len(ds) != 0 {
			t.Errorf("records = %+v, want none", ds)
		}
	})
	t.Run("expired", func(t *testing.T) {
		sends.Store(0)
		d := newTestDispatcher(t, Options{Channels: []Channel{ok}, Now: fixedNow})
		m := testMessage()
		m.Expires = testNow.Add(-time.Second)
		d.Notify(m, []Recipient{{UserID: "u1"}})
		closeDispatcher(t, d)
		if n := sends.Load(); n != 0 {
			t.Errorf("sends = %d, want 0", n)
		}
	})
	t.Run("after close", func(t *testing.T) {
		sends.Store(0)
		d := newTestDispatcher(t, Options{Channels: []Channel{ok}})
		closeDispatcher(t, d)
		d.Notify(testMessage(), []Recipient{{UserID: "u1"}})
		closeDispatcher(t, d)
		if n := sends.Load(); n != 0 {
			t.Errorf("sends = %d, want 0", n)
		}
	})
}

func TestDefaultBackoff(t *testing.T) {
	tests := []struct {
		attempt int
		ceiling time.Duration
	}{
		{1, 500 * time.Millisecond},
		{2, time.Second},
		{3, 2 * time.Second},
		{6, 16 * time.Second},
		{7, 30 * time.Second},
		{50, 30 * time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			if got := DefaultBackoff(tt.attempt); got < tt.ceiling/2 || got > tt.ceiling {
				t.Fatalf("DefaultBackoff(%d) = %v, want in [%v, %v]", tt.attempt, got, tt.ceiling/2, tt.ceiling)
			}
		}
	}
}

func TestStatusErrorClassification(t *testing.T) {
	tests := []struct {
		code      int
		permanent bool
	}{
		{301, true}, {400, true}, {401, true}, {403, true}, {404, true}, {408, false},
		{410, true}, {413, true}, {429, false}, {500, false}, {502, false}, {503, false},
	}
	for _, tt := range tests {
		err := fmt.Errorf("x: %w", &StatusError{StatusCode: tt.code})
		if got := errors.Is(err, ErrPermanent); got != tt.permanent {
			t.Errorf("%d: permanent = %v, want %v", tt.code, got, tt.permanent)
		}
	}
}

// TestNoSecretsLogged runs failing deliveries whose URLs and keys are
// secrets and checks that neither the log nor the records show them.
func TestNoSecretsLogged(t *testing.T) {
	const (
		secret   = "whsec-SUPERSECRET"
		urlToken = "T000/B000/URLTOKEN"
		password = "smtp-PASSWORD"
	)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer failing.Close()
	// A closed port, so that the transport error (which names the URL) is
	// exercised too.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()

	vapid, _, err := GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	vapidB64, _ := MarshalVAPIDPrivateKey(vapid)
	channels := []Channel{
		Webhook{URL: failing.URL + "/hook/" + urlToken, Secret: []byte(secret)},
		Slack{URL: "http://" + deadAddr + "/services/" + urlToken},
		SMTP{Addr: deadAddr, From: "interlock <i@example.com>", Username: "u", Password: password, TLS: NoTLS},
		WebPush{VAPIDPrivateKey: vapid, Subject: "mailto:ops@example.com"},
	}
	var logs bytes.Buffer
	var rec recorder
	d := newTestDispatcher(t, Options{
		Channels:    channels,
		MaxAttempts: 2,
		Backoff:     noBackoff,
		Record:      rec.record,
		Logger:      slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:         fixedNow,
	})
	sub := PushSubscription{Endpoint: "https://" + deadAddr + "/push/" + urlToken, P256dh: "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", Auth: "BTBZMqHH6r4Tts7J_aSIgg"}
	d.Notify(testMessage(), []Recipient{{UserID: "u1", Email: "u1@example.com", Push: []PushSubscription{sub}}})
	closeDispatcher(t, d)

	var all strings.Builder
	all.WriteString(logs.String())
	for _, r := range rec.all() {
		if r.OK {
			t.Errorf("unexpected success %+v", r)
		}
		all.WriteString(r.Err + "\n")
	}
	for _, ch := range channels {
		fmt.Fprintf(&all, "%v %+v %#v %s\n", ch, ch, ch, ch)
		slog.New(slog.NewJSONHandler(&all, nil)).Info("channel", "ch", ch)
	}
	fmt.Fprintf(&all, "%v %#v\n", sub, sub)
	for _, s := range []string{secret, urlToken, password, vapidB64, sub.Auth, "URLTOKEN"} {
		if strings.Contains(all.String(), s) {
			t.Errorf("secret %q shown:\n%s", s, all.String())
		}
	}
	if len(rec.all()) != 8 {
		t.Errorf("records = %d, want 8 (4 channels × 2 attempts)", len(rec.all()))
	}
}
