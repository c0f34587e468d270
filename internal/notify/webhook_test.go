package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestVerifySignature(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`{"type":"approval.requested"}`)
	good := Sign(secret, testNow, body)
	ts := strconv.FormatInt(testNow.Unix(), 10)
	other := Sign([]byte("other"), testNow, body)
	_, otherV1, _ := strings.Cut(other, ",")

	tests := []struct {
		name    string
		secret  []byte
		header  string
		body    []byte
		now     time.Time
		wantErr error
	}{
		{"valid", secret, good, body, testNow, nil},
		{"valid, clocks 4m apart", secret, good, body, testNow.Add(4 * time.Minute), nil},
		{"valid, receiver behind", secret, good, body, testNow.Add(-4 * time.Minute), nil},
		{"valid, spaces", secret, strings.ReplaceAll(good, ",", " , "), body, testNow, nil},
		{"rotation: second v1 matches", secret, "t=" + ts + "," + otherV1 + "," + strings.Split(good, ",")[1], body, testNow, nil},
		{"unknown key ignored", secret, good + ",v0=abc", body, testNow, nil},
		{"tampered body", secret, good, []byte(`{"type":"approval.granted"}`), testNow, ErrInvalidSignature},
		{"wrong secret", []byte("nope"), good, body, testNow, ErrInvalidSignature},
		{"old timestamp", secret, good, body, testNow.Add(6 * time.Minute), ErrStaleSignature},
		{"future timestamp", secret, good, body, testNow.Add(-6 * time.Minute), ErrStaleSignature},
		{"old but re-signed elsewhere", secret, Sign(secret, testNow.Add(-time.Hour), body), body, testNow, ErrStaleSignature},
		{"timestamp changed", secret, strings.Replace(good, "t="+ts, "t="+strconv.FormatInt(testNow.Unix()+1, 10), 1), body, testNow, ErrInvalidSignature},
		{"empty", secret, "", body, testNow, ErrInvalidSignature},
		{"no v1", secret, "t=" + ts, body, testNow, ErrInvalidSignature},
		{"no t", secret, strings.Split(good, ",")[1], body, testNow, ErrInvalidSignature},
		{"two t", secret, "t=" + ts + "," + good, body, testNow, ErrInvalidSignature},
		{"negative t", secret, "t=-1," + strings.Split(good, ",")[1], body, testNow, ErrInvalidSignature},
		{"bad hex", secret, "t=" + ts + ",v1=zz", body, testNow, ErrInvalidSignature},
		{"short v1", secret, "t=" + ts + ",v1=abcd", body, testNow, ErrInvalidSignature},
		{"no secret", nil, good, body, testNow, ErrInvalidSignature},
		{"too long", secret, good + strings.Repeat(",x=y", 2000), body, testNow, ErrInvalidSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifySignature(tt.secret, tt.header, tt.body, tt.now, 5*time.Minute)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("VerifySignature = %v, want nil", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("VerifySignature = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// webhookReceiver is an httptest receiver that answers with the next status
// of a script and records what it got.
type webhookReceiver struct {
	t        *testing.T
	secret   []byte
	mu       sync.Mutex
	statuses []int
	reqs     []receivedRequest
}

type receivedRequest struct {
	header http.Header
	body   []byte
	sigErr error
}

func (wr *webhookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	sigErr := VerifySignature(wr.secret, r.Header.Get(SignatureHeader), body, testNow, time.Minute)
	wr.mu.Lock()
	wr.reqs = append(wr.reqs, receivedRequest{header: r.Header.Clone(), body: body, sigErr: sigErr})
	status := http.StatusNoContent
	if len(wr.statuses) > 0 {
		status, wr.statuses = wr.statuses[0], wr.statuses[1:]
	}
	wr.mu.Unlock()
	w.WriteHeader(status)
}

func (wr *webhookReceiver) requests() []receivedRequest {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return wr.reqs
}

func TestWebhookDelivery(t *testing.T) {
	tests := []struct {
		name      string
		statuses  []int
		wantReqs  int
		wantOK    bool
		permanent bool
	}{
		{"200", []int{200}, 1, true, false},
		{"500 then 202", []int{500, 502, 202}, 3, true, false},
		{"429 is retried", []int{429, 200}, 2, true, false},
		{"408 is retried", []int{408, 200}, 2, true, false},
		{"400 is not retried", []int{400}, 1, false, true},
		{"401 is not retried", []int{401}, 1, false, true},
		{"503 until attempts spent", []int{503, 503, 503, 503}, 3, false, false},
		{"redirect not followed", []int{307}, 1, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secret := []byte("whsec_test")
			recv := &webhookReceiver{t: t, secret: secret, statuses: tt.statuses}
			srv := httptest.NewServer(recv)
			defer srv.Close()

			var rec recorder
			d := newTestDispatcher(t, Options{
				Channels:    []Channel{Webhook{URL: srv.URL + "/hook", Secret: secret}},
				MaxAttempts: 3,
				Backoff:     noBackoff,
				Record:      rec.record,
				Now:         fixedNow,
			})
			m := testMessage()
			m.Expires = testNow.Add(time.Hour)
			to := Recipient{UserID: "u1", Email: "ann@example.com", Name: "Ann"}
			d.Notify(m, []Recipient{to})
			closeDispatcher(t, d)

			reqs := recv.requests()
			if len(reqs) != tt.wantReqs {
				t.Fatalf("requests = %d, want %d", len(reqs), tt.wantReqs)
			}
			ds := rec.all()
			if len(ds) != tt.wantReqs {
				t.Fatalf("records = %d, want one per attempt (%d)", len(ds), tt.wantReqs)
			}
			last := ds[len(ds)-1]
			if last.OK != tt.wantOK || last.Permanent != tt.permanent || !last.Final || last.Channel != "webhook" {
				t.Errorf("last record = %+v", last)
			}
			for i, r := range ds[:len(ds)-1] {
				if r.OK || r.Final || r.Attempt != i+1 {
					t.Errorf("record %d = %+v", i, r)
				}
			}
			deliveryID := reqs[0].header.Get(DeliveryHeader)
			for i, r := range reqs {
				if r.sigErr != nil {
					t.Errorf("request %d: signature: %v", i, r.sigErr)
				}
				if got := r.header.Get(DeliveryHeader); got == "" || got != deliveryID {
					t.Errorf("request %d: %s = %q, want %q on every attempt", i, DeliveryHeader, got, deliveryID)
				}
				if ct := r.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
			}
			// The receiver's view of the event.
			var ev struct {
				Type       string         `json:"type"`
				DeliveryID string         `json:"delivery_id"`
				ApprovalID string         `json:"approval_id"`
				Title      string         `json:"title"`
				Text       string         `json:"text"`
				URL        string         `json:"url"`
				ExpiresAt  time.Time      `json:"expires_at"`
				Recipient  map[string]any `json:"recipient"`
				Data       map[string]any `json:"data"`
			}
			if err := json.Unmarshal(reqs[0].body, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Type != EventApproval || ev.ApprovalID != m.ApprovalID || ev.Text != m.Text || ev.URL != m.URL ||
				ev.Title != m.Title || ev.DeliveryID != deliveryID || !ev.ExpiresAt.Equal(m.Expires) {
				t.Errorf("event = %+v", ev)
			}
			if ev.Recipient["user_id"] != "u1" || ev.Recipient["email"] != "ann@example.com" || ev.Recipient["name"] != "Ann" {
				t.Errorf("recipient = %v", ev.Recipient)
			}
			if ev.Data["tool"] != "acme.place_order" || ev.Data["risk_score"] != 0.7 {
				t.Errorf("data = %v", ev.Data)
			}
			// A tampered body or a replay later must not pass.
			if err := VerifySignature(secret, reqs[0].header.Get(SignatureHeader), append(reqs[0].body, ' '), testNow, time.Minute); !errors.Is(err, ErrInvalidSignature) {
				t.Errorf("tampered body: %v", err)
			}
			if err := VerifySignature(secret, reqs[0].header.Get(SignatureHeader), reqs[0].body, testNow.Add(10*time.Minute), time.Minute); !errors.Is(err, ErrStaleSignature) {
				t.Errorf("replay: %v", err)
			}
		})
	}
}

func TestWebhookRetryAfter(t *testing.T) {
	var n int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		n++
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	err := Webhook{URL: srv.URL, Secret: []byte("k")}.Send(context.Background(), Recipient{}, testMessage())
	var se *StatusError
	if !errors.As(err, &se) || se.RetryAfter != 120*time.Second || errors.Is(err, ErrPermanent) {
		t.Fatalf("Send = %v (%+v), want 503 with Retry-After 120s, not permanent", err, se)
	}
}

func TestWebhookValidate(t *testing.T) {
	tests := []struct {
		name string
		w    Webhook
		ok   bool
	}{
		{"ok", Webhook{URL: "https://example.com/hook", Secret: []byte("k")}, true},
		{"http ok", Webhook{URL: "http://10.0.0.1:8080/hook", Secret: []byte("k")}, true},
		{"no secret", Webhook{URL: "https://example.com/hook"}, false},
		{"no url", Webhook{Secret: []byte("k")}, false},
		{"ftp", Webhook{URL: "ftp://example.com/", Secret: []byte("k")}, false},
	}
	for _, tt := range tests {
		err := tt.w.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: Validate = %v", tt.name, err)
		}
		if err != nil {
			if serr := tt.w.Send(context.Background(), Recipient{}, testMessage()); !errors.Is(serr, ErrPermanent) {
				t.Errorf("%s: Send = %v, want permanent", tt.name, serr)
			}
		}
	}
}

func FuzzVerifySignature(f *testing.F) {
	secret := []byte("fuzz-secret")
	body := []byte(`{"approval_id":"ap_1"}`)
	f.Add(Sign(secret, testNow, body), body)
	f.Add("t=1,v1=00", body)
	f.Add("t=,v1=", []byte{})
	f.Add(",,,", []byte("x"))
	f.Add("t=99999999999999999999,v1="+strings.Repeat("a", 64), body)
	f.Add("v1=x=y,t=1=2", body)
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := VerifySignature(secret, header, body, testNow, time.Minute)
		if err == nil {
			// Only a header carrying the true MAC of its own timestamp can pass.
			var ts string
			for _, p := range strings.Split(header, ",") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(p), "t="); ok {
					ts = v
				}
			}
			h := hmac.New(sha256.New, secret)
			h.Write([]byte(ts + "."))
			h.Write(body)
			if !strings.Contains(strings.ToLower(header), "v1="+hex.EncodeToString(h.Sum(nil))) {
				t.Fatalf("forged header %q accepted", header)
			}
			return
		}
		if !errors.Is(err, ErrInvalidSignature) && !errors.Is(err, ErrStaleSignature) {
			t.Fatalf("error %v wraps neither sentinel", err)
		}
	})
}
