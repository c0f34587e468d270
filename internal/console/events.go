package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// SSE timing: how long to gather a burst of changes before re-reading the
// list, how often to re-read anyway (changes made on another replica are
// not published in this one), and how often to send a keep-alive.
const (
	sseDebounce  = 100 * time.Millisecond
	sseRefresh   = 10 * time.Second
	sseKeepAlive = 25 * time.Second
	// sseMaxLife ends a stream after a while; the browser reconnects,
	// and the session is checked again.
	sseMaxLife = 30 * time.Minute
)

// events streams the signed-in user's pending approvals as server-sent
// events: an event "pending" with {"pending": [...]} at once and whenever
// the list changes. It ends when the session does.
func (c *Console) events(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	u, err := c.signedIn(r, s, false)
	if err != nil {
		return err
	}
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{}) // a server WriteTimeout must not cut the stream
	ch, stop := c.o.Approvals.Subscribe()
	defer stop()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	var last []byte
	send := func() error {
		if cur, err := c.o.Store.GetUser(ctx, u.ID); err != nil || !cur.Active {
			return fmt.Errorf("the user is gone or inactive")
		}
		items, err := c.pending(ctx, u)
		if err != nil {
			return err
		}
		b, err := json.Marshal(map[string]any{"pending": items})
		if err != nil {
			return err
		}
		if bytes.Equal(b, last) {
			return nil
		}
		last = b
		if _, err := fmt.Fprintf(w, "event: pending\ndata: %s\n\n", b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := send(); err != nil {
		c.log.Debug("console: event stream ends", "err", err)
		return nil
	}
	refresh := time.NewTicker(sseRefresh)
	defer refresh.Stop()
	keep := time.NewTicker(sseKeepAlive)
	defer keep.Stop()
	life := time.NewTimer(sseMaxLife)
	defer life.Stop()
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-life.C:
			return nil
		case _, ok := <-ch:
			if !ok {
				return nil
			}
			if debounce == nil {
				debounce = time.After(sseDebounce)
			}
			continue
		case <-debounce:
			debounce = nil
		case <-refresh.C:
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			if err := rc.Flush(); err != nil {
				return nil
			}
			continue
		}
		if err := send(); err != nil {
			c.log.Debug("console: event stream ends", "err", err)
			return nil
		}
	}
}
