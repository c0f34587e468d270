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
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/credential"
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

// writeDoc serves a public document that caches may keep for maxAge.
func writeDoc(w http.ResponseWriter, contentType string, b []byte, maxAge time.Duration) error {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(maxAge.Seconds())))
	h.Set("Access-Control-Allow-Origin", "*") // public keys and lists: any verifier, browsers too
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	return nil
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
	// Credentials publishes what verifiers of interlock's action
	// credentials fetch: /.well-known/jwks.json, /.well-known/did.json,
	// /status/{list} and the JSON-LD context /ns/credentials/v1. Nil: not
	// served.
	Credentials Publisher
	// SCIM serves /scim/v2/ (nil: not mounted).
	SCIM http.Handler
	// Console serves /console/ (nil: not mounted).
	Console http.Handler
	// API serves /api/v1/ (nil: not mounted).
	API http.Handler
	// OIDC serves /.well-known/openid-configuration and /oauth/ (the CIBA
	// provider; nil: not mounted).
	OIDC http.Handler
	// Metrics serves /metrics.
	Metrics http.Handler
	// Ready reports readiness (store reachable, ...); nil means always ready.
	Ready  func(ctx context.Context) error
	Logger *slog.Logger
}

// Publisher is the public side of the credential issuer.
type Publisher interface {
	JWKS(ctx context.Context) ([]byte, error)
	DIDDocument(ctx context.Context) ([]byte, error)
	StatusListCredential(ctx context.Context, list string) ([]byte, time.Duration, error)
	ContextDocument() []byte
}

// Cache lifetimes of published documents. Keys are re-read often enough
// for verifiers to see a rotation in time: a new key signs nothing until
// it is published, and verifiers refetch on an unknown kid.
const (
	jwksMaxAge = 5 * time.Minute
	didMaxAge  = 5 * time.Minute
	ctxMaxAge  = 24 * time.Hour
)

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
	if opts.SCIM != nil {
		s.mux.Handle("/scim/v2/", opts.SCIM)
	}
	if opts.Console != nil {
		s.mux.Handle("/console/", opts.Console)
		s.mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusFound))
	}
	if opts.API != nil {
		s.mux.Handle("/api/v1/", opts.API)
	}
	if opts.OIDC != nil {
		s.mux.Handle("GET /.well-known/openid-configuration", opts.OIDC)
		s.mux.Handle("/oauth/", opts.OIDC)
	}
	if p := opts.Credentials; p != nil {
		s.mux.Handle("GET /.well-known/jwks.json", s.handle(func(w http.ResponseWriter, r *http.Request) error {
			b, err := p.JWKS(r.Context())
			if err != nil {
				return Errorf(http.StatusServiceUnavailable, "the key set is not available", err)
			}
			return writeDoc(w, "application/jwk-set+json", b, jwksMaxAge)
		}))
		s.mux.Handle("GET /.well-known/did.json", s.handle(func(w http.ResponseWriter, r *http.Request) error {
			b, err := p.DIDDocument(r.Context())
			if err != nil {
				return Errorf(http.StatusServiceUnavailable, "the DID document is not available", err)
			}
			return writeDoc(w, "application/did+json", b, didMaxAge)
		}))
		s.mux.Handle("GET /status/{list}", s.handle(func(w http.ResponseWriter, r *http.Request) error {
			b, ttl, err := p.StatusListCredential(r.Context(), r.PathValue("list"))
			if errors.Is(err, credential.ErrUnknownStatusList) {
				return Errorf(http.StatusNotFound, "no such status list", err)
			}
			if err != nil {
				return Errorf(http.StatusServiceUnavailable, "the status list is not available", err)
			}
			return writeDoc(w, "application/vc+jwt", b, ttl)
		}))
		s.mux.Handle("GET /ns/credentials/v1", s.handle(func(w http.ResponseWriter, r *http.Request) error {
			return writeDoc(w, "application/ld+json", p.ContextDocument(), ctxMaxAge)
		}))
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
