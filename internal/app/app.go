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
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/catalog"
	"github.com/interlock-dev/interlock/internal/ciba"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/console"
	"github.com/interlock-dev/interlock/internal/credential"
	"github.com/interlock-dev/interlock/internal/gate"
	"github.com/interlock-dev/interlock/internal/notify"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/relay"
	"github.com/interlock-dev/interlock/internal/server"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/store/postgres"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
	"github.com/interlock-dev/interlock/internal/telemetry"
)

// drivers is the closed set of storage backends.
var drivers = map[string]func(ctx context.Context, cfg config.Storage, log *slog.Logger) (store.Store, error){
	"sqlite": func(ctx context.Context, cfg config.Storage, log *slog.Logger) (store.Store, error) {
		return sqlite.Open(ctx, sqlite.Options{Path: cfg.DSN, Logger: log})
	},
	"postgres": func(ctx context.Context, cfg config.Storage, log *slog.Logger) (store.Store, error) {
		return postgres.Open(ctx, postgres.Options{DSN: cfg.DSN, Schema: cfg.Schema, MaxConns: cfg.MaxConns, Logger: log})
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
	// Getenv reads INTERLOCK_KEK; nil means os.LookupEnv.
	Getenv func(string) (string, bool)
}

// App is one gateway process.
type App struct {
	Config    *config.Config
	Store     store.Store
	Registry  *registry.Registry
	Policy    *PolicySource
	Catalog   *catalog.Catalog
	Audit     *audit.Log
	Gate      *gate.Gate
	Issuer    *credential.Issuer
	Approvals *approval.Service
	Console   *console.Console
	ciba      *ciba.Provider
	Relay     *relay.Relay
	Metrics   *telemetry.Metrics
	Handler   http.Handler
	log       *slog.Logger
	ownStore  bool
	decision  *DecisionPath // closed with the App
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
	d, err := NewDecisionPath(ctx, DecisionOptions{Config: cfg, Store: a.Store, Catalog: NewCatalog(cfg, opts.Logger, opts.Now),
		Logger: opts.Logger, Now: opts.Now, Getenv: opts.Getenv})
	if err != nil {
		return nil, err
	}
	a.Policy, a.Catalog, a.Audit, a.Gate, a.Issuer, a.Approvals, a.decision = d.Policy, d.Catalog, d.Audit, d.Gate, d.Issuer, d.Approvals, d
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
	if a.Console, err = NewConsole(ctx, cfg, a.Store, a.Approvals, opts.Logger, opts.Now); errors.Is(err, ErrConsoleOff) {
		a.Console = nil
	} else if err != nil {
		return nil, err
	}
	var consoleHandler http.Handler
	if a.Console != nil {
		consoleHandler = a.Console
	}
	oidc, err := a.cibaHandler(ctx)
	if err != nil {
		return nil, err
	}
	a.Handler = server.New(server.Options{
		AllowedHosts: cfg.AllowedHosts,
		MCP:          a.Relay.Handler(),
		Credentials:  a.Issuer,
		SCIM:         a.scimHandler(),
		Console:      consoleHandler,
		API:          a.apiHandler(),
		OIDC:         oidc,
		Metrics:      a.Metrics.Handler(),
		Ready:        a.Store.Ping,
		Logger:       opts.Logger,
	})
	ok = true
	return a, nil
}

// DecisionPath is everything that decides a gated call: the policy in
// force, the tool catalog, the audit log, the credential issuer and the
// gate over them. The HTTP gateway and "interlock wrap" build the same one.
type DecisionPath struct {
	Policy    *PolicySource
	Catalog   *catalog.Catalog
	Audit     *audit.Log
	Issuer    *credential.Issuer
	Approvals *approval.Service
	Gate      *gate.Gate
	stop      context.CancelFunc

	dispatcher *notify.Dispatcher
	log        *slog.Logger
}

// DecisionOptions configure NewDecisionPath. Config, Store and Catalog are
// required.
type DecisionOptions struct {
	Config  *config.Config
	Store   store.Store
	Catalog *catalog.Catalog
	Logger  *slog.Logger
	Now     func() time.Time
	// Getenv reads INTERLOCK_KEK; nil means os.LookupEnv.
	Getenv func(string) (string, bool)
	// Notifier tells approvers about new approval requests; nil: nobody
	// is told (they see them in the console).
	Notifier approval.Notifier
}

// NewDecisionPath loads the policy, opens the audit log and the credential
// issuer on the store, starts the catalog (its discovery runs in the
// background) and builds the gate.
func NewDecisionPath(ctx context.Context, o DecisionOptions) (*DecisionPath, error) {
	cfg, st, log, now := o.Config, o.Store, o.Logger, o.Now
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	pol, err := NewPolicySource(cfg.Policy.File, log)
	if err != nil {
		return nil, err
	}
	iss, err := OpenIssuer(ctx, cfg, st, log, now, o.Getenv)
	if err != nil {
		return nil, err
	}
	al, err := audit.New(ctx, audit.Options{Store: st, Now: now, Logger: log,
		CheckpointInterval: time.Duration(cfg.Audit.CheckpointInterval)})
	if err != nil {
		return nil, fmt.Errorf("opening the audit log: %w", err)
	}
	disp := NewDispatcher(cfg.Notifications, st, func(ev audit.Event) {
		if err := al.Defer(ev); err != nil {
			log.Warn("audit: could not record a notification", "err", err)
		}
	}, log, now)
	notifier := o.Notifier
	if notifier == nil && disp != nil {
		notifier = newApprovalNotifier(disp, cfg.Notifications, st, log)
	}
	apr, err := approval.New(approval.Options{Store: st, Audit: al, Notifier: notifier,
		ConsoleURL: cfg.PublicURL + "/console", DefaultTTL: time.Duration(cfg.Approvals.Timeout), Now: now, Logger: log})
	if err != nil {
		al.Close()
		return nil, err
	}
	g, err := gate.New(gate.Options{Policy: pol.Current, Catalog: o.Catalog, Audit: al, Credentials: iss,
		Approvals: apr, Hold: time.Duration(cfg.Approvals.Hold), Users: st,
		Budgets: st, Redact: cfg.Audit.Redact, Logger: log, Now: now})
	if err != nil {
		al.Close()
		return nil, err
	}
	bg, stop := context.WithCancel(context.Background())
	o.Catalog.Start(bg)
	go apr.Run(bg, time.Second)
	return &DecisionPath{Policy: pol, Catalog: o.Catalog, Audit: al, Issuer: iss, Approvals: apr, Gate: g, stop: stop,
		dispatcher: disp, log: log}, nil
}

// OpenIssuer opens the credential issuer on st with the key-encryption key
// from INTERLOCK_KEK (read through getenv; nil means os.LookupEnv) or
// cfg.Credentials.KEKFile. When neither exists and the store holds no
// signing key yet, it creates the key file (a first start); when the store
// has keys and the key is missing, it refuses to start.
func OpenIssuer(ctx context.Context, cfg *config.Config, st store.Store, log *slog.Logger, now func() time.Time, getenv func(string) (string, bool)) (*credential.Issuer, error) {
	if getenv == nil {
		getenv = os.LookupEnv
	}
	file := cfg.Credentials.KEKFile
	kek, err := credential.LoadKEK(getenv, file)
	if err != nil && errors.Is(err, fs.ErrNotExist) {
		keys, lerr := st.ListSigningKeys(ctx)
		if lerr != nil {
			return nil, fmt.Errorf("reading the credential signing keys: %w", lerr)
		}
		if len(keys) > 0 {
			return nil, fmt.Errorf("the store holds %d credential signing key(s) sealed with a key-encryption key, but neither %s is set nor the key file %s exists: restore the key file or set %s (every replica needs the same key)",
				len(keys), credential.KEKEnv, file, credential.KEKEnv)
		}
		if werr := credential.WriteKEKFile(file); werr != nil {
			return nil, werr
		}
		log.Warn("created a new key-encryption key for the credential signing keys; keep a copy of it (in production set INTERLOCK_KEK instead)", "file", file)
		kek, err = credential.LoadKEK(getenv, file)
	}
	if err != nil {
		return nil, err
	}
	iss, err := credential.New(ctx, credential.Options{Store: st, KEK: kek, Issuer: cfg.PublicURL,
		Alg: cfg.Credentials.Algorithm, Now: now, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("opening the credential issuer: %w", err)
	}
	return iss, nil
}

// Close stops discovery and closes the catalog, the notifications and the
// audit log.
func (d *DecisionPath) Close() error {
	d.stop()
	d.Catalog.Close()
	closeDispatcher(d.dispatcher, d.log)
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
		Dir: u.Dir, Shared: u.Shared, Prefix: u.Prefix, Timeout: time.Duration(u.Timeout),
		CredentialAsBearer: u.CredentialAsBearer}
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
	if a.ciba != nil {
		a.ciba.Close()
	}
	if a.decision != nil {
		if err := a.decision.Close(); err != nil {
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
