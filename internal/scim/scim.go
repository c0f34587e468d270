// Package scim is a SCIM 2.0 service provider for Users (RFC 7643, RFC
// 7644): the endpoint through which an identity provider (Microsoft Entra
// ID, Okta) provisions interlock's human owners and, above all,
// deprovisions them, so that their agents stop.
//
// It accepts what those providers really send, including their departures
// from the RFC: a capitalised "Replace", "False" as a string, a path-less
// replace whose value object carries plain, dotted or URN-qualified
// attribute names, attributes of the RFC 7643 User schema that interlock
// does not keep, and the enterprise extension. It refuses what it cannot
// interpret with a SCIM error instead of guessing: an unrecognised value for
// "active" is a 400, never "still active".
//
// Storage is the caller's, behind Directory. PATCH is applied here, to the
// User read with GetUser, and written back whole with ReplaceUser; the
// caller's ReplaceUser runs the deactivation cascade when Active turns
// false. Every request needs the configured bearer token.
package scim

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Sentinel errors a Directory returns.
var (
	// ErrNotFound: no user has that id.
	ErrNotFound = errors.New("scim: no such user")
	// ErrConflict: another user already has that userName.
	ErrConflict = errors.New("scim: userName already taken")
	// ErrInvalidValue: the Directory cannot keep a value it was given (for
	// example a userName that is not an email address when the Directory
	// needs one). It is a 400 invalidValue with the error's text as detail.
	ErrInvalidValue = errors.New("scim: invalid value")
)

// Email is one value of the multi-valued "emails" attribute.
type Email struct {
	Value   string
	Type    string
	Primary bool
}

// User is what interlock keeps of a SCIM User. Attributes of the RFC 7643
// User schema that are not here (title, phoneNumbers, addresses, password,
// the enterprise extension ...) are accepted and dropped.
type User struct {
	ID         string // service-provider assigned, immutable
	ExternalID string // the identity provider's id for the user
	UserName   string // unique, compared case-insensitively

	GivenName   string // name.givenName
	FamilyName  string // name.familyName
	Formatted   string // name.formatted
	DisplayName string

	Emails []Email
	// Active false means deprovisioned: the owner may not approve and the
	// owner's agents stop.
	Active bool
	// Roles are the "value"s of the multi-valued "roles" attribute.
	Roles []string

	Created, LastModified time.Time
}

// Filter selects users in ListUsers: Attr eq Value. Attr is one of
// "userName" (compare case-insensitively, RFC 7643 caseExact=false),
// "externalId" (case-exact), "emails.value" (case-insensitive; true when
// any of the user's emails matches) or "" (every user).
type Filter struct {
	Attr  string
	Value string
}

// Directory is the caller's user store.
type Directory interface {
	// CreateUser stores a new user. u.ID is a fresh random id the
	// Directory may keep or replace. ErrConflict when userName exists.
	CreateUser(ctx context.Context, u User) (User, error)
	// GetUser returns the user, active or not. ErrNotFound.
	GetUser(ctx context.Context, id string) (User, error)
	// ListUsers returns the page of users matching f, in a stable order,
	// starting at the 1-based startIndex with at most count users, and the
	// total number of matches.
	ListUsers(ctx context.Context, f Filter, startIndex, count int) (users []User, total int, err error)
	// ReplaceUser replaces the user with u.ID entirely (PUT, and PATCH
	// after it is applied here). When u.Active is false and the stored user
	// was active, the Directory deactivates: that is the deprovisioning
	// cascade. ErrNotFound, ErrConflict (userName taken).
	ReplaceUser(ctx context.Context, u User) (User, error)
	// DeleteUser removes the user. ErrNotFound.
	DeleteUser(ctx context.Context, id string) error
}

// Options configure the handler. Zero values mean defaults.
type Options struct {
	Directory Directory
	// Token is the bearer token the identity provider sends. Empty: every
	// request is refused with 401.
	Token string
	// BasePath is where the handler is mounted, "/scim/v2" by default.
	// Requests are routed with or without it (http.StripPrefix or not).
	BasePath string
	// BaseURL is the public URL of the SCIM base (for example
	// "https://gw.example.com/scim/v2"), used in meta.location. Empty:
	// locations are BasePath-relative.
	BaseURL string
	// MaxBodyBytes bounds request bodies: 1 MiB by default.
	MaxBodyBytes int64
	Logger       *slog.Logger
	Now          func() time.Time
}

// Schema and message URNs.
const (
	schemaUser           = "urn:ietf:params:scim:schemas:core:2.0:User"
	schemaEnterpriseUser = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	schemaPatchOp        = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	schemaListResponse   = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	schemaError          = "urn:ietf:params:scim:api:messages:2.0:Error"
	schemaSPConfig       = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
	schemaResourceType   = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
	schemaSchema         = "urn:ietf:params:scim:schemas:core:2.0:Schema"
)

// RFC 7644 §3.12 scimType values used here.
const (
	invalidFilter = "invalidFilter"
	tooMany       = "tooMany"
	uniqueness    = "uniqueness"
	mutability    = "mutability"
	invalidSyntax = "invalidSyntax"
	invalidPath   = "invalidPath"
	noTarget      = "noTarget"
	invalidValue  = "invalidValue"
)

const (
	defaultBasePath = "/scim/v2"
	defaultMaxBody  = 1 << 20
	// maxResults caps count on list requests (advertised in
	// ServiceProviderConfig); defaultCount is used when count is absent.
	maxResults   = 200
	defaultCount = 100
	// maxCandidates caps the users read to evaluate a filter the
	// Directory cannot evaluate alone (an "and", a value filter on emails).
	maxCandidates = 1000
	mediaType     = "application/scim+json"
)

// apiError is what handlers return: status, scimType and detail go to the
// client, the cause to the log only.
type apiError struct {
	status   int
	scimType string
	detail   string
	err      error
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("scim %d %s: %s", e.status, e.scimType, e.detail)
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *apiError) Unwrap() error { return e.err }

func errorf(status int, scimType, format string, args ...any) *apiError {
	return &apiError{status: status, scimType: scimType, detail: fmt.Sprintf(format, args...)}
}

func badRequest(scimType, format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, scimType, format, args...)
}

// q quotes client-supplied text for an error detail, truncated.
func q(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	b, _ := json.Marshal(s)
	return string(b)
}

type handler struct {
	dir      Directory
	token    [sha256.Size]byte
	hasToken bool
	base     string
	baseURL  string
	maxBody  int64
	log      *slog.Logger
	now      func() time.Time
}

// New returns the SCIM handler. It panics if opts.Directory is nil.
func New(opts Options) http.Handler {
	if opts.Directory == nil {
		panic("scim: Options.Directory is nil")
	}
	h := &handler{
		dir:      opts.Directory,
		hasToken: opts.Token != "",
		token:    sha256.Sum256([]byte(opts.Token)),
		base:     strings.TrimRight(opts.BasePath, "/"),
		maxBody:  opts.MaxBodyBytes,
		log:      opts.Logger,
		now:      opts.Now,
	}
	if opts.BasePath == "" {
		h.base = defaultBasePath
	}
	h.baseURL = strings.TrimRight(opts.BaseURL, "/")
	if h.baseURL == "" {
		h.baseURL = h.base
	}
	if h.maxBody <= 0 {
		h.maxBody = defaultMaxBody
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	err := h.serve(w, r)
	if err == nil {
		return
	}
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{status: http.StatusInternalServerError, detail: "internal error", err: err}
	}
	switch {
	case ae.status >= 500:
		h.log.Error("scim request failed", "method", r.Method, "path", r.URL.Path, "status", ae.status, "err", ae.err)
	case ae.status == http.StatusUnauthorized:
		// Never the Authorization header itself.
		h.log.Warn("scim request unauthorized", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	case r.Method != http.MethodGet:
		h.log.Info("scim request refused", "method", r.Method, "path", r.URL.Path, "status", ae.status, "scimType", ae.scimType, "detail", ae.detail)
	}
	if ae.status == http.StatusUnauthorized {
		v := `Bearer realm="scim"`
		if r.Header.Get("Authorization") != "" {
			v += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", v)
	}
	body := map[string]any{"schemas": []string{schemaError}, "status": fmt.Sprint(ae.status), "detail": ae.detail}
	if ae.scimType != "" {
		body["scimType"] = ae.scimType
	}
	writeJSON(w, ae.status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	hd := w.Header()
	hd.Set("Content-Type", mediaType)
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// authorized compares the bearer token in constant time (over digests, so
// the length does not leak either).
func (h *handler) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !h.hasToken || !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	tok = strings.TrimSpace(tok)
	got := sha256.Sum256([]byte(tok))
	return tok != "" && subtle.ConstantTimeCompare(got[:], h.token[:]) == 1
}

// route splits the path below the base into unescaped segments.
func (h *handler) route(r *http.Request) ([]string, error) {
	p := r.URL.EscapedPath()
	if len(p) >= len(h.base) && strings.EqualFold(p[:len(h.base)], h.base) && (len(p) == len(h.base) || p[len(h.base)] == '/') {
		p = p[len(h.base):]
	}
	p = strings.Trim(p, "/")
	if p == "" {
		return nil, nil
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil {
			return nil, errorf(http.StatusNotFound, "", "no such endpoint")
		}
		segs[i] = u
	}
	return segs, nil
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request) error {
	if !h.authorized(r) {
		return errorf(http.StatusUnauthorized, "", "a valid bearer token is required")
	}
	segs, err := h.route(r)
	if err != nil {
		return err
	}
	if len(segs) == 0 {
		return errorf(http.StatusNotFound, "", "no such endpoint")
	}
	endpoint := strings.ToLower(segs[0])
	switch {
	case endpoint == "users" && len(segs) == 1:
		switch r.Method {
		case http.MethodGet:
			return h.listUsers(w, r)
		case http.MethodPost:
			return h.createUser(w, r)
		}
		return notAllowed(w, "GET, POST")
	case endpoint == "users" && len(segs) == 2:
		id := segs[1]
		switch r.Method {
		case http.MethodGet:
			return h.getUser(w, r, id)
		case http.MethodPut:
			return h.replaceUser(w, r, id)
		case http.MethodPatch:
			return h.patchUser(w, r, id)
		case http.MethodDelete:
			return h.deleteUser(w, r, id)
		}
		return notAllowed(w, "GET, PUT, PATCH, DELETE")
	case endpoint == "serviceproviderconfig" && len(segs) == 1:
		if r.Method != http.MethodGet {
			return notAllowed(w, "GET")
		}
		writeJSON(w, http.StatusOK, h.serviceProviderConfig())
		return nil
	case endpoint == "resourcetypes" && len(segs) <= 2:
		if r.Method != http.MethodGet {
			return notAllowed(w, "GET")
		}
		return h.resourceTypes(w, segs[1:])
	case endpoint == "schemas" && len(segs) <= 2:
		if r.Method != http.MethodGet {
			return notAllowed(w, "GET")
		}
		return h.schemas(w, segs[1:])
	case endpoint == "groups" || endpoint == "bulk" || endpoint == "me":
		return errorf(http.StatusNotImplemented, "", "/%s is not supported", segs[0])
	}
	return errorf(http.StatusNotFound, "", "no such endpoint")
}

func notAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	return errorf(http.StatusMethodNotAllowed, "", "method not allowed; allowed: %s", allow)
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // UUID version 4
	b[8] = b[8]&0x3f | 0x80
	s := hex.EncodeToString(b[:])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}
