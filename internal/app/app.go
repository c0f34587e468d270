// Package app assembles a running gateway from a Config: it opens the store
// (from a closed map of drivers), builds the registry, gate, relay and HTTP
// server, and runs them until told to stop.
//
// It must not contain business rules: it wires parts together.
package app

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/catalog"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/gate"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/relay"
	"github.com/interlock-dev/interlock/internal/server"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
	"github.com/interlock-dev/interlock/internal/telemetry"
)

// drivers is the closed set of storage backends.
var drivers = map[string]func(ctx context.Context, cfg config.Storage, log *slog.Logger) (store.Store, error){
	"sqlite": func(ctx context.Context, cfg config.Storage, log *slog.Logger) (store.Store, error) {
		return sqlite.Open(ctx, sqlite.Options{Path: cfg.DSN, Logger: log})
	},
}

// OpenStore opens the configured store.
func OpenStore(ctx context.Context, cfg config.Storage, log *slog.Logger) (store.Store, error) {
	open, ok := drivers[cfg.Driver]
	if !ok {
		return nil, fmt.Errorf("unknown storage driver %q", cfg.Driver)
	}
	st, err := open(ctx, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("opening %s store: %w", cfg.Driver, err)
	}
	return st, nil
}

// Options configure an App.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// Store, if set, is used instead of opening cfg.Storage (the App then
	// does not close it).
	Store store.Store
}

// App is one gateway process.
type App struct {
	Config   *config.Config
	Store    store.Store
	Registry *registry.Registry
	Policy   *PolicySource
	Catalog  *catalog.Catalog
	Audit    *audit.Log
	Gate     *gate.Gate
	Relay    *relay.Relay
	Metrics  *telemetry.Metrics
	Handler  http.Handler
	log      *slog.Logger
	ownStore bool
	stop     context.CancelFunc // ends background work (catalog)
}

const sessionKeyName = "relay.session_key"

// New builds the gateway. Close it when done.
func New(ctx context.Context, cfg *config.Config, opts Options) (*App, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &App{Config: cfg, log: opts.Logger, Store: opts.Store}
	if a.Store == nil {
		st, err := OpenStore(ctx, cfg.Storage, opts.Logger)
		if err != nil {
			return nil, err
		}
		a.Store, a.ownStore = st, true
	}
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	key, err := a.Store.PutMetaIfAbsent(ctx, sessionKeyName, key)
	if err != nil {
		return nil, fmt.Errorf("loading the relay session key: %w", err)
	}
	a.Registry = registry.New(registry.Options{Store: a.Store, Now: opts.Now, Logger: opts.Logger})
	a.Metrics = telemetry.New()
	ups := make([]relay.Upstream, 0, len(cfg.Upstreams))
	for _, u := range cfg.Upstreams {
		ups = append(ups, RelayUpstream(u))
	}
	d, err := NewDecisionPath(ctx, cfg, a.Store, NewCatalog(cfg, opts.Logger, opts.Now), opts.Logger, opts.Now)
	if err != nil {
		return nil, err
	}
	a.Policy, a.Catalog, a.Audit, a.Gate, a.stop = d.Policy, d.Catalog, d.Audit, d.Gate, d.stop
	a.Relay, err = relay.New(relay.Options{
		Upstreams: ups,
		Auth:      a.Registry,
		Gate:      a.Gate,
		OnListChanged: func(upstream, method string) {
			if method == "notifications/tools/list_changed" {
				a.Catalog.NotifyListChanged(upstream)
			}
		},
		SessionKey:         key,
		MaxMessageBytes:    cfg.Relay.MaxMessageBytes,
		SessionIdleTimeout: time.Duration(cfg.Relay.SessionIdleTimeout),
		Observer:           a.Metrics,
		Logger:             opts.Logger,
		Now:                opts.Now,
	})
	if err != nil {
		return nil, err
	}
	a.Handler = server.New(server.Options{
		AllowedHosts: cfg.AllowedHosts,
		MCP:          a.Relay.Handler(),
		Metrics:      a.Metrics.Handler(),
		Ready:        a.Store.Ping,
		Logger:       opts.Logger,
	})
	ok = true
	return a, nil
}

// DecisionPath is everything that decides a gated call: the policy in
// force, the tool catalog, the audit log and the gate over them. The HTTP
// gateway and "interlock wrap" build the same one.
type DecisionPath struct {
	Policy  *PolicySource
	Catalog *catalog.Catalog
	Audit   *audit.Log
	Gate    *gate.Gate
	stop    context.CancelFunc
}

// NewDecisionPath loads the policy, opens the audit log on st, starts cat
// (its discovery runs in the background) and builds the gate.
func NewDecisionPath(ctx context.Context, cfg *config.Config, st store.Store, cat *catalog.Catalog, log *slog.Logger, now func() time.Time) (*DecisionPath, error) {
	pol, err := NewPolicySource(cfg.Policy.File, log)
	if err != nil {
		return nil, err
	}
	al, err := audit.New(ctx, audit.Options{Store: st, Now: now, Logger: log,
		CheckpointInterval: time.Duration(cfg.Audit.CheckpointInterval)})
	if err != nil {
		return nil, fmt.Errorf("opening the audit log: %w", err)
	}
	g, err := gate.New(gate.Options{Policy: pol.Current, Catalog: cat, Audit: al,
		Budgets: st, Redact: cfg.Audit.Redact, Logger: log, Now: now})
	if err != nil {
		al.Close()
		return nil, err
	}
	bg, stop := context.WithCancel(context.Background())
	cat.Start(bg)
	return &DecisionPath{Policy: pol, Catalog: cat, Audit: al, Gate: g, stop: stop}, nil
}

// Close stops discovery and closes the catalog and the audit log.
func (d *DecisionPath) Close() error {
	d.stop()
	d.Catalog.Close()
	return d.Audit.Close()
}

// NewCatalog makes the tool catalog for the configured upstreams and any
// extra ones (not started).
func NewCatalog(cfg *config.Config, log *slog.Logger, now func() time.Time, extra ...relay.Upstream) *catalog.Catalog {
	ups := make([]relay.Upstream, 0, len(cfg.Upstreams)+len(extra))
	for _, u := range cfg.Upstreams {
		ups = append(ups, RelayUpstream(u))
	}
	specs := make([]catalog.UpstreamSpec, 0, len(ups))
	for _, r := range append(ups, extra...) {
		specs = append(specs, catalog.UpstreamSpec{Name: r.Name, URL: r.URL, Headers: r.Headers, Command: r.Command, Env: r.Env, Dir: r.Dir})
	}
	return catalog.New(catalog.Options{Upstreams: specs, Logger: log, Now: now})
}

// RelayUpstream converts a configured upstream for the relay.
func RelayUpstream(u config.Upstream) relay.Upstream {
	h := http.Header{}
	for k, v := range u.Headers {
		h.Set(k, v)
	}
	var env []string
	for k, v := range u.Env {
		env = append(env, k+"="+v)
	}
	return relay.Upstream{Name: u.Name, URL: u.URL, Headers: h, Command: u.Command, Env: env,
		Dir: u.Dir, Shared: u.Shared, Prefix: u.Prefix, Timeout: time.Duration(u.Timeout)}
}

// Serve serves on ln until ctx ends, then shuts down gracefully. Values on
// hup (SIGHUP) reload the policy.
func (a *App) Serve(ctx context.Context, ln net.Listener, hup <-chan os.Signal) error {
	go a.Policy.Watch(ctx, time.Duration(a.Config.Policy.WatchInterval), hup)
	go PruneBudgets(ctx, a.Store, a.Policy, time.Hour, a.log)
	srv := &http.Server{
		Handler:           a.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.Relay.Close() // ends held streams so Shutdown does not wait on them
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		srv.Close()
	}
	return nil
}

// Close releases everything the App opened.
func (a *App) Close() error {
	if a.Relay != nil {
		a.Relay.Close()
	}
	if a.stop != nil {
		a.stop()
		a.Catalog.Close()
		if err := a.Audit.Close(); err != nil {
			a.log.Error("closing the audit log", "err", err)
		}
	}
	if a.Registry != nil {
		a.Registry.Close()
	}
	if a.ownStore && a.Store != nil {
		return a.Store.Close()
	}
	return nil
}

// PruneBudgets deletes, every interval until ctx ends, the budget entries
// older than the longest budget window of the policy in force (they can no
// longer count for anything). Entries are kept a day longer than that, so
// that a policy reload that lengthens a window finds them.
func PruneBudgets(ctx context.Context, st store.Store, pol *PolicySource, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w := pol.Current().MaxBudgetWindow()
		if err := st.PruneBudget(ctx, time.Now().Add(-w-24*time.Hour)); err != nil {
			log.Warn("pruning old budget entries", "err", err)
		}
	}
}
