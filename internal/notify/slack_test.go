package notify

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

func TestSlack(t *testing.T) {
	tests := []struct {
		name string
		m    Message
		want string
	}{
		{
			"escaped text and link",
			Message{Text: "agent a&b wants <tool> -> go", URL: "https://console.example.com/approvals/ap_1?x=1&y=2"},
			"agent a&amp;b wants &lt;tool&gt; -&gt; go <https://console.example.com/approvals/ap_1?x=1&amp;y=2|Open in interlock>",
		},
		{
			"pipe and angle in url",
			Message{Text: "t", URL: "https://c.example/a|b>c"},
			"t <https://c.example/a%7Cb&gt;c|Open in interlock>",
		},
		{
			"no url",
			Message{Text: "plain & simple"},
			"plain &amp; simple",
		},
		{
			"title when no text",
			Message{Title: "Approval needed: x", URL: "https://c.example/a"},
			"Approval needed: x <https://c.example/a|Open in interlock>",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var got map[string]any
			var ct string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				defer mu.Unlock()
				ct = r.Header.Get("Content-Type")
				if err := json.Unmarshal(b, &got); err != nil {
					http.Error(w, "invalid_payload", http.StatusBadRequest)
					return
				}
				io.WriteString(w, "ok")
			}))
			defer srv.Close()

			var rec recorder
			d := newTestDispatcher(t, Options{Channels: []Channel{Slack{URL: srv.URL + "/services/T/B/X"}}, Record: rec.record, Backoff: noBackoff})
			d.Notify(tt.m, []Recipient{{UserID: "u1"}})
			closeDispatcher(t, d)

			if ds := rec.all(); len(ds) != 1 || !ds[0].OK || ds[0].Channel != "slack" {
				t.Fatalf("records = %+v", ds)
			}
			mu.Lock()
			defer mu.Unlock()
			if ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if len(got) != 1 || got["text"] != tt.want {
				t.Errorf("payload = %q\nwant text %q", got, tt.want)
			}
		})
	}
}

func TestSlackPermanent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no_service", http.StatusNotFound)
	}))
	defer srv.Close()
	err := Slack{URL: srv.URL}.Send(context.Background(), Recipient{}, testMessage())
	var se *StatusError
	if !errors.Is(err, ErrPermanent) || !errors.As(err, &se) || se.StatusCode != 404 || se.Body != "no_service" {
		t.Fatalf("Send = %v, want permanent 404 no_service", err)
	}
}
