package relay

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
)

// The answer to the last open request goes out with the end of the stream
// in one write when the upstream's end is already here, and is flushed at
// once otherwise; other events are always flushed as they come.
func TestRelayStreamFlushes(t *testing.T) {
	r := &Relay{opts: Options{MaxMessageBytes: 1 << 20}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), obs: nopObserver{}}
	const (
		progress = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n"
		answer   = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\n\n"
	)
	for _, tc := range []struct {
		name        string
		stream      string
		ended       func() bool
		wantFlushed bool
	}{
		{"answer, end already here", answer, func() bool { return true }, false},
		{"answer, end not here yet", answer, func() bool { return false }, true},
		{"answer, end unknowable", answer, nil, true},
		{"progress first, then the answer", progress + answer, func() bool { return true }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			why := r.relayStream(w, httptest.NewRequest("POST", "/mcp/x", nil), strings.NewReader(tc.stream), tc.ended,
				&Upstream{Name: "x"}, map[string]bool{"7": true}, nil, nil)
			if w.Body.String() != tc.stream {
				t.Errorf("relayed %q, want %q (%s)", w.Body.String(), tc.stream, why)
			}
			if w.Flushed != tc.wantFlushed {
				t.Errorf("flushed: %v, want %v", w.Flushed, tc.wantFlushed)
			}
		})
	}
}
