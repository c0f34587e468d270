package relay

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
)

// progressNotification encodes a notifications/progress for token (raw
// JSON) with a count and a message.
func progressNotification(token json.RawMessage, n int, msg string) []byte {
	b, _ := json.Marshal(struct {
		JSONRPC string `json:"jsonrpc"`
		Method  string `json:"method"`
		Params  struct {
			Token    json.RawMessage `json:"progressToken"`
			Progress int             `json:"progress"`
			Message  string          `json:"message,omitempty"`
		} `json:"params"`
	}{JSONRPC: "2.0", Method: "notifications/progress", Params: struct {
		Token    json.RawMessage `json:"progressToken"`
		Progress int             `json:"progress"`
		Message  string          `json:"message,omitempty"`
	}{token, n, msg}})
	return b
}

// heldStream is the answer stream of a pass-through request the gate
// holds (waiting for approval): the first progress message turns the
// answer into an event stream, so that the agent hears from interlock
// while it waits (a progress notification when it gave a progress token,
// else an SSE comment that keeps the stream alive), and whatever comes
// afterwards (the upstream's answer, or a refusal) is written as events
// on it.
type heldStream struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	token   json.RawMessage
	sw      *sseWriter
	n       int
	started bool
	stopped bool
}

// progress sends one progress notification, starting the stream first.
func (h *heldStream) progress(msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	if !h.started {
		hd := h.w.Header()
		hd.Set("Content-Type", "text/event-stream")
		hd.Set("Cache-Control", "no-cache")
		hd.Set("X-Accel-Buffering", "no")
		h.w.WriteHeader(http.StatusOK)
		h.sw = newSSEWriter(h.w)
		h.started = true
	}
	if len(h.token) == 0 {
		// No progress token: a comment keeps the stream alive (and tells
		// whoever reads the raw stream what is happening).
		h.sw.writeRaw([]byte(": " + strings.ReplaceAll(msg, "\n", " ") + "\n\n"))
		return
	}
	h.n++
	h.sw.writeMessage("", progressNotification(h.token, h.n, msg))
}

// stop ends progress (later calls do nothing) and reports whether the
// stream was started, and so whether everything else must go on it.
func (h *heldStream) stop() bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	return h.started
}
