// Package adminapi is interlock's admin API at /api/v1: JSON endpoints
// over the registry (users, agents, agent tokens), the owner and agent
// lifecycle (the kill switch, the emergency stop), approvals and action
// credentials. The CLI uses it with --server URL --admin-token T.
//
// Every request needs an admin token (Authorization: Bearer), compared by
// SHA-256 in constant time against the configured hashes; each token
// carries roles: viewer reads, security also stops (suspends, resumes,
// deactivates, activates, revokes), admin does everything. Every change is
// audited with who = "admin:<token name>".
//
// It must not keep, log or echo an admin token, and must not decide
// policy: it calls the registry and the lifecycle, which do the work.
package adminapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
)

// Roles an admin token may carry.
const (
	RoleViewer   = "viewer"
	RoleSecurity = "security"
	RoleAdmin    = "admin"
)

// TokenPrefix starts every admin token NewToken makes.
const TokenPrefix = "ila_"

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 64 << 10

// AdminToken is one configured admin token: its name, the SHA-256 of the
// token and its roles.
type AdminToken struct {
	Name   string
	SHA256 [sha256.Size]byte
	Roles  []string
}

// ParseToken builds an AdminToken from the configured name, hex hash and roles.
func ParseToken(name, hexHash string, roles []string) (AdminToken, error) {
	b, err := hex.DecodeString(hexHash)
	if err != nil || len(b) != sha256.Size {
		return AdminToken{}, fmt.Errorf("adminapi: token %q: sha256 must be 64 hex characters", name)
	}
	t := AdminToken{Name: name, Roles: slices.Clone(roles)}
	copy(t.SHA256[:], b)
	return t, nil
}

// NewToken returns a fresh admin token: TokenPrefix and 32 random bytes
// (256 bits) in unpadded base64url.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("adminapi: new token: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashHex is the lower-case hex SHA-256 of a token, as configured.
func HashHex(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// CredentialRevoker revokes an issued action credential and sets its
// status-list bit (*credential.Issuer).
type CredentialRevoker interface {
	Revoke(ctx context.Context, id, reason string) (store.Credential, error)
}

// Options configure New. Registry, Lifecycle, Store and Audit are required.
type Options struct {
	// Tokens are the admin tokens accepted. None: every request is 401.
	Tokens    []AdminToken
	Registry  *registry.Registry
	Lifecycle *registry.Lifecycle
	Store     store.Store
	// Issuer revokes credentials; nil: revoked in the store directly.
	Issuer CredentialRevoker
	Audit  registry.Auditor
	Logger *slog.Logger
	Now    func() time.Time
}

// perm is what an endpoint needs.
type perm int

const (
	permRead  perm = iota // viewer, security, admin
	permStop              // security, admin
	permAdmin             // admin
)

func (p perm) roles() string {
	switch p {
	case permRead:
		return "viewer, security or admin"
	case permStop:
		return "security or admin"
	}
	return "admin"
}

func allows(roles []string, p perm) bool {
	for _, r := range roles {
		switch {
		case r == RoleAdmin:
			return true
		case r == RoleSecurity && p <= permStop:
			return true
		case r == RoleViewer && p == permRead:
			return true
		}
	}
	return false
}

// caller is the authenticated admin token.
type caller struct {
	name  string
	roles []string
}

// by is who the audit log names.
func (c *caller) by() string { return "admin:" + c.name }

// endpoint is one method on one path.
type endpoint struct {
	perm perm
	what string // for 403: "may not <what>"
	fn   func(w http.ResponseWriter, r *http.Request, c *caller) error
}

type handler struct {
	o      Options
	log    *slog.Logger
	now    func() time.Time
	tokens []AdminToken
	mux    *http.ServeMux
}

// New returns the admin API handler. It routes the full paths
// (/api/v1/...), so mount it at /api/v1/ without stripping the prefix.
func New(o Options) http.Handler {
	h := &handler{o: o, log: o.Logger, now: o.Now, mux: http.NewServeMux()}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.now == nil {
		h.now = time.Now
	}
	for _, t := range o.Tokens {
		t.Roles = slices.Clone(t.Roles)
		h.tokens = append(h.tokens, t)
	}
	h.routes()
	return h
}

// apiError is what endpoints return: the status and the public message go
// to the client, the cause to the log only.
type apiError struct {
	status int
	msg    string
	err    error
	report *registry.Report // what a lifecycle operation did before it failed
}

func (e *apiError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *apiError) Unwrap() error { return e.err }

func errorf(status int, format string, args ...any) *apiError {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, format, args...)
}

// fail maps an error of the registry, the lifecycle or the store to a
// status: not found 404, already exists 409, invalid 400 (or conflict,
// when the request was well-formed but the state does not allow it),
// anything else 500.
func fail(err error, invalid int) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	msg := publicText(err)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &apiError{status: http.StatusNotFound, msg: msg, err: err}
	case errors.Is(err, store.ErrAlreadyExists):
		return &apiError{status: http.StatusConflict, msg: msg, err: err}
	case errors.Is(err, store.ErrNotPending):
		return &apiError{status: http.StatusConflict, msg: msg, err: err}
	case errors.Is(err, store.ErrInvalid):
		return &apiError{status: invalid, msg: msg, err: err}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &apiError{status: http.StatusServiceUnavailable, msg: "the request was cancelled or timed out", err: err}
	}
	return &apiError{status: http.StatusInternalServerError, msg: "internal error", err: err}
}

// publicText is an error's text without the package prefixes.
func publicText(err error) string {
	s := err.Error()
	for _, p := range []string{"registry: ", "store: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}

// withReport attaches what a lifecycle operation did to its error.
func withReport(ae *apiError, rep registry.Report) *apiError {
	if rep.Story != "" {
		ae.report = &rep
	}
	return ae
}

// ServeHTTP authenticates, then routes.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := h.authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="interlock admin API", error="invalid_token"`)
		h.render(w, r, err)
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
	h.mux.ServeHTTP(w, r)
}

type callerKey struct{}

func (h *handler) authenticate(r *http.Request) (*caller, *apiError) {
	auth := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(auth, " ")
	if auth == "" {
		return nil, errorf(http.StatusUnauthorized, "an admin token is required: send Authorization: Bearer <token>")
	}
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return nil, errorf(http.StatusUnauthorized, "the Authorization header must be Bearer <admin token>")
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	var found *AdminToken
	// Every configured hash is compared, whichever matches.
	for i := range h.tokens {
		if subtle.ConstantTimeCompare(h.tokens[i].SHA256[:], sum[:]) == 1 {
			found = &h.tokens[i]
		}
	}
	if found == nil {
		h.log.Warn("admin API: request with an unknown admin token refused", "remote", r.RemoteAddr, "path", r.URL.Path)
		return nil, errorf(http.StatusUnauthorized, "the admin token is not valid")
	}
	return &caller{name: found.Name, roles: found.Roles}, nil
}

// route serves pattern (a path) with one endpoint per method; other
// methods are 405 with Allow.
func (h *handler) route(pattern string, eps map[string]endpoint) {
	methods := make([]string, 0, len(eps))
	for m := range eps {
		methods = append(methods, m)
	}
	slices.Sort(methods)
	h.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ep, ok := eps[r.Method]
		if !ok && r.Method == http.MethodHead {
			ep, ok = eps[http.MethodGet]
		}
		if !ok {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			h.render(w, r, errorf(http.StatusMethodNotAllowed, "%s is not allowed here; use %s", r.Method, strings.Join(methods, " or ")))
			return
		}
		c, _ := r.Context().Value(callerKey{}).(*caller)
		if c == nil || !allows(c.roles, ep.perm) {
			name, roles := "", ""
			if c != nil {
				name, roles = c.name, strings.Join(c.roles, ", ")
			}
			h.render(w, r, errorf(http.StatusForbidden, "admin token %q (roles: %s) may not %s: that needs the %s role",
				name, roles, ep.what, ep.perm.roles()))
			return
		}
		h.render(w, r, ep.fn(w, r, c))
	}))
}

// render writes err as JSON {"error": ...} (nothing when nil).
func (h *handler) render(w http.ResponseWriter, r *http.Request, err error) {
	if err == nil {
		return
	}
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{status: http.StatusInternalServerError, msg: "internal error", err: err}
	}
	if ae.status >= 500 {
		h.log.Error("admin API request failed", "method", r.Method, "path", r.URL.Path, "status", ae.status, "err", ae.err)
	}
	body := map[string]any{"error": ae.msg}
	if ae.report != nil {
		body["report"] = ae.report
	}
	writeJSON(w, ae.status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// DecodeBody decodes a request body of at most MaxBodyBytes into v,
// strictly: unknown fields, trailing data and wrong types are errors. An
// empty body leaves v as it is.
func DecodeBody(body io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(body, MaxBodyBytes+1))
	if err != nil {
		return badRequest("reading the request body: %v", err)
	}
	if len(data) > MaxBodyBytes {
		return errorf(http.StatusRequestEntityTooLarge, "the request body is larger than %d bytes", MaxBodyBytes)
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("invalid JSON body: %s", jsonErrText(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("invalid JSON body: data after the JSON object")
	}
	return nil
}

func jsonErrText(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("%s must be %s, not %s", te.Field, jsonType(te.Type.Kind().String()), te.Value)
	}
	s := strings.TrimPrefix(err.Error(), "json: ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return "a " + kind
}

// decode reads the request's JSON body into v.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && r.ContentLength != 0 {
		mt, _, _ := strings.Cut(ct, ";")
		if mt = strings.TrimSpace(strings.ToLower(mt)); mt != "application/json" {
			return errorf(http.StatusUnsupportedMediaType, "the request body must be application/json, not %q", mt)
		}
	}
	return DecodeBody(r.Body, v)
}
