// Package server is interlock's HTTP surface: it mounts every handler (the
// MCP relay, health, readiness, metrics), checks Host and Origin on every
// request (DNS-rebinding protection), and renders errors from handlers that
// return them.
//
// It must not contain business rules: it routes, checks transport-level
// facts and renders.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Error is the one error type handlers return: the HTTP status and public
// message go to the client, the cause goes to the log only.
type Error struct {
	Status int
	Msg    string
	Err    error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf is a shorthand for an *Error.
func Errorf(status int, msg string, cause error) error {
	return &Error{Status: status, Msg: msg, Err: cause}
}

// HandlerFunc is a handler that returns an error instead of writing one.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle adapts a HandlerFunc, rendering its error as JSON.
func (s *Server) handle(fn HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := fn(w, r)
		if err == nil {
			return
		}
		var he *Error
		if !errors.As(err, &he) {
			he = &Error{Status: http.StatusInternalServerError, Msg: "internal error", Err: err}
		}
		if he.Status >= 500 {
			s.log.Error("request failed", "path", r.URL.Path, "status", he.Status, "err", he.Err)
		}
		writeJSON(w, he.Status, map[string]string{"error": he.Msg})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// Options configure a Server. Zero values mean defaults.
type Options struct {
	// AllowedHosts: accepted Host header values and Origin hosts. An entry
	// without a port matches any port.
	AllowedHosts []string
	// MCP serves /mcp and /mcp/{upstream}.
	MCP http.Handler
	// Metrics serves /metrics.
	Metrics http.Handler
	// Ready reports readiness (store reachable, ...); nil means always ready.
	Ready  func(ctx context.Context) error
	Logger *slog.Logger
}

// Server is the HTTP surface.
type Server struct {
	opts  Options
	log   *slog.Logger
	hosts hostMatcher
	mux   *http.ServeMux
}

// New builds the Server.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger, hosts: newHostMatcher(opts.AllowedHosts), mux: http.NewServeMux()}
	if opts.MCP != nil {
		s.mux.Handle("/mcp", opts.MCP)
		s.mux.Handle("/mcp/{upstream}", opts.MCP)
	}
	if opts.Metrics != nil {
		s.mux.Handle("GET /metrics", opts.Metrics)
	}
	s.mux.Handle("GET /healthz", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return nil
	}))
	s.mux.Handle("GET /readyz", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if s.opts.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := s.opts.Ready(ctx); err != nil {
				return Errorf(http.StatusServiceUnavailable, "not ready", err)
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		return nil
	}))
	return s
}

// ServeHTTP checks Host and Origin, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.hosts.match(r.Host) {
		s.forbid(w, r, "Host "+quoteTrunc(r.Host)+" is not allowed")
		return
	}
	if o := r.Header.Get("Origin"); o != "" && !s.originAllowed(o) {
		s.forbid(w, r, "Origin "+quoteTrunc(o)+" is not allowed")
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) originAllowed(o string) bool {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
		return false
	}
	return s.hosts.match(u.Host)
}

func (s *Server) forbid(w http.ResponseWriter, r *http.Request, msg string) {
	s.log.Warn("request refused: DNS-rebinding protection", "remote", r.RemoteAddr, "reason", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusForbidden)
	json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": nil,
		"error": map[string]any{"code": -32600, "message": "forbidden: " + msg}})
}

func quoteTrunc(s string) string {
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// hostMatcher matches Host values against the allow-list.
type hostMatcher struct {
	anyPort map[string]bool // hosts allowed on any port
	exact   map[string]bool // host:port pairs
}

func newHostMatcher(list []string) hostMatcher {
	m := hostMatcher{anyPort: map[string]bool{}, exact: map[string]bool{}}
	for _, h := range list {
		h = strings.ToLower(strings.TrimSpace(h))
		if host, port, err := net.SplitHostPort(h); err == nil {
			m.exact[net.JoinHostPort(strings.Trim(host, "[]"), port)] = true
			continue
		}
		m.anyPort[strings.Trim(h, "[]")] = true
	}
	return m
}

func (m hostMatcher) match(hostport string) bool {
	hostport = strings.ToLower(hostport)
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.Trim(hostport, "[]"), ""
	}
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return false
	}
	if m.anyPort[host] {
		return true
	}
	return port != "" && m.exact[net.JoinHostPort(host, port)]
}
