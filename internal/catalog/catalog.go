package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Errors the catalog returns (wrapped, with the upstream's name).
var (
	// ErrUnknownUpstream: no upstream of that name is configured.
	ErrUnknownUpstream = errors.New("unknown upstream")
	// ErrClosed: the catalog has been closed.
	ErrClosed = errors.New("catalog closed")
)

// Defaults.
const (
	// DefaultRefresh is how often every upstream's tools are listed again
	// when nothing asked sooner.
	DefaultRefresh = 10 * time.Minute
	// connectTimeout bounds connecting and initialising one session.
	connectTimeout = 30 * time.Second
	// listTimeout bounds one background tools/list (all pages).
	listTimeout = 60 * time.Second
	// debounce coalesces bursts of list_changed notifications.
	debounce = 100 * time.Millisecond
	// retryMin and retryMax bound the backoff after a failure.
	retryMin = 500 * time.Millisecond
	retryMax = 30 * time.Second
	// maxPages bounds one tools/list walk (a server repeating cursors forever).
	maxPages = 1000
)

// UpstreamSpec says how to reach one upstream: URL (Streamable HTTP) with
// Headers added to every request, or Command (stdio argv) run in Dir with
// Env ("K=V") added to interlock's environment.
type UpstreamSpec struct {
	Name    string
	URL     string
	Headers http.Header
	Command []string
	Env     []string
	Dir     string
}

// Options configures a Catalog.
type Options struct {
	Upstreams []UpstreamSpec
	// Logger receives discovery problems, each with the upstream's name.
	// Default: discard.
	Logger *slog.Logger
	// Now stamps refreshes. Default time.Now.
	Now func() time.Time
	// Refresh is how often tools are listed again without a list_changed.
	// Default DefaultRefresh.
	Refresh time.Duration
	// HTTPClient is the base client for Streamable HTTP upstreams (its
	// Transport gets the upstream's headers added). It should have no
	// Timeout: the server-to-client event stream is long-lived. Default: a
	// client over http.DefaultTransport.
	HTTPClient *http.Client
}

// UpstreamStatus is what Status reports about one upstream.
type UpstreamStatus struct {
	Name string `json:"name"`
	// Transport is "http" or "stdio".
	Transport string `json:"transport"`
	// Tools is how many tools the catalog holds for it.
	Tools int `json:"tools"`
	// Connected reports a live session.
	Connected bool `json:"connected"`
	// LastRefresh is when tools were last listed successfully (zero: never).
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	// LastError is why the latest attempt failed; empty when it succeeded.
	LastError string `json:"last_error,omitempty"`
	// LastErrorAt is when LastError happened.
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Catalog holds the tools of every upstream, discovered over one long-lived
// MCP client session per upstream and refreshed in the background. All
// methods are safe for concurrent use.
type Catalog struct {
	log     *slog.Logger
	now     func() time.Time
	refresh time.Duration
	http    *http.Client

	// Retry bounds; tests shorten them.
	retryMin, retryMax time.Duration

	ups   map[string]*upstream
	order []string // upstream names as configured

	// closeCtx ends at Close; every background loop and every call in
	// flight is cancelled with it.
	closeCtx    context.Context
	closeCancel context.CancelFunc

	mu      sync.Mutex
	started bool
	closed  bool
	wg      sync.WaitGroup // background loops
	ops     sync.WaitGroup // Refresh and CallTool calls in flight
}

// New returns a catalog of opts.Upstreams. Nothing is contacted until
// Start (or Refresh, or CallTool). Upstreams with an empty or repeated name
// are kept once, by first occurrence; config validation rejects both.
func New(opts Options) *Catalog {
	c := &Catalog{
		log:      opts.Logger,
		now:      opts.Now,
		refresh:  opts.Refresh,
		http:     opts.HTTPClient,
		retryMin: retryMin,
		retryMax: retryMax,
		ups:      make(map[string]*upstream),
	}
	c.closeCtx, c.closeCancel = context.WithCancel(context.Background())
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.refresh <= 0 {
		c.refresh = DefaultRefresh
	}
	if c.http == nil {
		c.http = &http.Client{Transport: http.DefaultTransport}
	}
	for _, spec := range opts.Upstreams {
		if spec.Name == "" || c.ups[spec.Name] != nil {
			c.log.Error("catalog: upstream ignored: empty or repeated name", "upstream", spec.Name)
			continue
		}
		spec.Headers = spec.Headers.Clone()
		spec.Command = slices.Clone(spec.Command)
		spec.Env = slices.Clone(spec.Env)
		c.ups[spec.Name] = newUpstream(c, spec)
		c.order = append(c.order, spec.Name)
	}
	return c
}

// Start discovers every upstream in the background: it lists each one's
// tools, then again every Refresh, on NotifyListChanged, on the upstream's
// own notifications/tools/list_changed and after its session ends; a
// failure is logged and retried with a bounded backoff. Upstreams never
// wait for each other. The work stops when ctx ends or at Close. Start
// returns at once; a second call is a no-op.
func (c *Catalog) Start(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.closed {
		return
	}
	c.started = true
	ctx, cancel := context.WithCancel(ctx)
	context.AfterFunc(c.closeCtx, cancel)
	for _, name := range c.order {
		u := c.ups[name]
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			u.run(ctx)
		}()
	}
}

// Wait blocks until the first discovery of every upstream has finished,
// successfully or not (Start must have been called), or ctx ends. It
// returns ctx's error, or the first-discovery errors joined (each naming
// its upstream); the tools of the upstreams that answered are in Tools
// either way. Meant for the CLI; the gateway serves without waiting.
func (c *Catalog) Wait(ctx context.Context) error {
	c.mu.Lock()
	started, closed := c.started, c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !started {
		return errors.New("catalog: Wait before Start")
	}
	var errs []error
	for _, name := range c.order {
		u := c.ups[name]
		select {
		case <-u.firstDone:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closeCtx.Done():
			return ErrClosed
		}
		if err := u.firstError(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Refresh lists upstream's tools now (every page), connecting first if
// needed, and replaces what the catalog holds for it. On error the
// previous tools stay.
func (c *Catalog) Refresh(ctx context.Context, upstream string) error {
	u, err := c.upstream(upstream)
	if err != nil {
		return err
	}
	ctx, done, err := c.op(ctx)
	if err != nil {
		return err
	}
	defer done()
	return u.refreshTools(ctx)
}

// NotifyListChanged asks for upstream's tools to be listed again soon;
// bursts of calls coalesce into one refresh. It does nothing before Start
// or for an unknown upstream.
func (c *Catalog) NotifyListChanged(upstream string) {
	if u := c.ups[upstream]; u != nil {
		u.notify()
	}
}

// Tools returns every known tool, sorted by FullName. The Tools share their
// schema and annotation values with the catalog: do not modify them.
func (c *Catalog) Tools() []Tool {
	var all []Tool
	for _, name := range c.order {
		all = append(all, c.ups[name].snapshot()...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].FullName() < all[j].FullName() })
	return all
}

// Lookup returns upstream's tool name as last discovered.
func (c *Catalog) Lookup(upstream, name string) (Tool, bool) {
	u := c.ups[upstream]
	if u == nil {
		return Tool{}, false
	}
	return u.lookup(name)
}

// Status reports every upstream, in configuration order.
func (c *Catalog) Status() []UpstreamStatus {
	out := make([]UpstreamStatus, 0, len(c.order))
	for _, name := range c.order {
		out = append(out, c.ups[name].status())
	}
	return out
}

// CallTool calls tool name on upstream with args, for policy lookups, and
// returns the result as a JSON object: its structuredContent if it has
// one, else its first text content if that parses as a JSON object, else
// {"text": <first text content>} ({} without any text). meta, when not
// nil, is sent as the request's _meta (the lookup's credential). isError
// is the result's isError. err is a protocol or connection failure; a failure of
// the session (not a JSON-RPC error from the server) reconnects once and
// calls again, so lookups must be safe to repeat.
func (c *Catalog) CallTool(ctx context.Context, upstream, name string, args, meta map[string]any) (result map[string]any, isError bool, err error) {
	u, err := c.upstream(upstream)
	if err != nil {
		return nil, false, err
	}
	ctx, done, err := c.op(ctx)
	if err != nil {
		return nil, false, err
	}
	defer done()
	return u.callTool(ctx, name, args, meta)
}

// Close stops discovery, ends every session and reaps every stdio child.
// It is idempotent.
func (c *Catalog) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.closeCancel()
	c.ops.Wait()
	c.wg.Wait()
	var errs []error
	for _, name := range c.order {
		if err := c.ups[name].close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *Catalog) isClosed() bool { return c.closeCtx.Err() != nil }

// op registers a call in flight, so that Close waits for it, and returns
// its context, cancelled by Close too. done must be called.
func (c *Catalog) op(ctx context.Context) (_ context.Context, done func(), _ error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, nil, ErrClosed
	}
	c.ops.Add(1)
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.closeCtx, cancel)
	return ctx, func() {
		stop()
		cancel()
		c.ops.Done()
	}, nil
}

func (c *Catalog) upstream(name string) (*upstream, error) {
	if c.isClosed() {
		return nil, ErrClosed
	}
	u := c.ups[name]
	if u == nil {
		return nil, fmt.Errorf("catalog: %w %q", ErrUnknownUpstream, name)
	}
	return u, nil
}

// backoff is the wait before retry number n (1-based): retryMin doubling
// up to retryMax.
func (c *Catalog) backoff(n int) time.Duration {
	d := c.retryMin
	for i := 1; i < n && d < c.retryMax; i++ {
		d *= 2
	}
	return min(d, c.retryMax)
}

// headerTransport adds an upstream's headers to requests for its origin
// (never to another host a redirect leads to).
type headerTransport struct {
	base    http.RoundTripper
	origin  string // scheme://host[:port], lower case
	headers http.Header
}

func (h *headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if len(h.headers) == 0 || !strings.EqualFold(r.URL.Scheme+"://"+r.URL.Host, h.origin) {
		return h.base.RoundTrip(r)
	}
	r2 := r.Clone(r.Context())
	for k, vs := range h.headers {
		r2.Header.Del(k)
		for _, v := range vs {
			r2.Header.Add(k, v)
		}
	}
	return h.base.RoundTrip(r2)
}
