package ciba

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// pingJob is one ping to send (CIBA §10.2) when a request's result is
// ready: approved, denied, expired or cancelled.
type pingJob struct {
	authReqID, approvalID string
	endpoint, token       string
	client                string
	expires               time.Time // the request's own expiry
	ready                 bool      // the result is ready now (allowed)
}

// pinger sends the pings of ping-mode requests accepted by this replica.
// It watches their approvals: woken at once by this process's approval
// service, and re-reading the store every WatchInterval for decisions
// taken elsewhere (another replica, the CLI). It runs only while some
// request waits.
type pinger struct {
	p       *Provider
	ctx     context.Context
	cancel  context.CancelFunc
	mu      sync.Mutex
	jobs    map[string][]pingJob // by approval id
	running bool
	wg      sync.WaitGroup
}

func newPinger(p *Provider) *pinger {
	ctx, cancel := context.WithCancel(context.Background())
	return &pinger{p: p, ctx: ctx, cancel: cancel, jobs: map[string][]pingJob{}}
}

func (g *pinger) close() {
	g.cancel()
	g.wg.Wait()
}

func (g *pinger) add(j pingJob) {
	if j.ready {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.send(j)
		}()
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.jobs[j.approvalID] = append(g.jobs[j.approvalID], j)
	if !g.running {
		g.running = true
		g.wg.Add(1)
		go g.loop()
	}
}

func (g *pinger) loop() {
	defer g.wg.Done()
	sub, stop := g.p.o.Approvals.Subscribe()
	defer stop()
	t := time.NewTicker(g.p.o.WatchInterval)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			g.mu.Lock()
			g.running = false
			g.mu.Unlock()
			return
		case a := <-sub:
			if a.State != store.ApprovalPending {
				g.fire(a.ID, nil)
			}
		case <-t.C:
			g.scan()
		}
		g.mu.Lock()
		if len(g.jobs) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
	}
}

// scan re-reads the approvals waited on, and fires the requests that are
// decided or expired.
func (g *pinger) scan() {
	now := g.p.o.Now()
	g.mu.Lock()
	ids := make([]string, 0, len(g.jobs))
	for id, list := range g.jobs {
		ids = append(ids, id)
		// A request may expire before its approval (requested_expiry).
		var keep []pingJob
		for _, j := range list {
			if !now.Before(j.expires) {
				g.start(j)
			} else {
				keep = append(keep, j)
			}
		}
		if len(keep) == 0 {
			delete(g.jobs, id)
		} else {
			g.jobs[id] = keep
		}
	}
	g.mu.Unlock()
	for _, id := range ids {
		a, err := g.p.o.Approvals.Get(g.ctx, id)
		if err != nil {
			if g.ctx.Err() == nil {
				g.p.log.Warn("ciba: reading an approval for ping delivery", "approval", id, "err", err)
			}
			continue
		}
		if a.State != store.ApprovalPending || !now.Before(a.ExpiresAt) {
			g.fire(id, &a)
		}
	}
}

// fire sends the pings of every request waiting on approval id.
func (g *pinger) fire(id string, _ *store.Approval) {
	g.mu.Lock()
	list := g.jobs[id]
	delete(g.jobs, id)
	for _, j := range list {
		g.start(j)
	}
	g.mu.Unlock()
}

// start sends j in the background (g.mu held).
func (g *pinger) start(j pingJob) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.send(j)
	}()
}

// send POSTs {"auth_req_id": ...} to the client's notification endpoint
// with its client_notification_token as bearer, retrying with backoff
// until it answers 200 or 204 (no redirects are followed).
func (g *pinger) send(j pingJob) {
	body, _ := json.Marshal(map[string]string{"auth_req_id": j.authReqID})
	backoff := 500 * time.Millisecond
	for attempt := 0; attempt <= g.p.o.PingRetries; attempt++ {
		if attempt > 0 {
			select {
			case <-g.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff *= 2
		}
		req, err := http.NewRequestWithContext(g.ctx, http.MethodPost, j.endpoint, bytes.NewReader(body))
		if err != nil {
			g.p.log.Error("ciba: ping", "client", j.client, "err", err)
			return
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+j.token)
		resp, err := g.p.o.HTTPClient.Do(req)
		if err != nil {
			g.p.log.Warn("ciba: ping failed", "client", j.client, "auth_req", short(j.authReqID), "attempt", attempt+1, "err", err)
			continue
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK {
			g.p.log.Info("ciba: ping delivered", "client", j.client, "auth_req", short(j.authReqID), "attempt", attempt+1)
			return
		}
		g.p.log.Warn("ciba: ping refused", "client", j.client, "auth_req", short(j.authReqID), "attempt", attempt+1, "status", resp.StatusCode)
	}
	g.p.log.Error("ciba: ping not delivered; the client may still poll the token endpoint", "client", j.client, "auth_req", short(j.authReqID))
}
