// Package console is the approvers' web console: approvers enrol a passkey
// through a one-time link, sign in with it (a discoverable WebAuthn
// credential, user verification required), see the pending approvals they
// may vote on (live, over server-sent events), read one request in full and
// approve or deny it with a fresh passkey assertion whose challenge is
// derived from that request and that decision.
//
// It must not bypass the approval package: it never decides who may vote
// (approval.Service.CanVote and Vote do) and never writes approvals itself.
//
// # Mounting
//
// The handler serves full paths under Options.BasePath (default
// "/console"), so mount it without stripping the prefix:
//
//	c, err := console.New(console.Options{Store: st, Approvals: svc,
//		RPID: "gw.example.com", RPOrigins: []string{"https://gw.example.com"},
//		SessionKey: key}) // key: >= 32 bytes, the same on every replica
//	mux.Handle("/console/", c)
//	mux.Handle("/console", c)
//	link, err := c.CreateEnrollment(ctx, user.ID, "admin@example.com", 72*time.Hour)
//
// Routes: GET / (pending list), /login, /approvals/{id}, /enroll/{token},
// /events (SSE), /static/*, /api/pending, /manifest.webmanifest and /sw.js
// (the installable app and its service worker); POST /logout,
// /api/login/begin, /api/login/finish, /api/enroll/begin,
// /api/enroll/finish, /api/approvals/{id}/challenge,
// /api/approvals/{id}/vote, /api/push; DELETE /api/push. Every POST and
// DELETE needs an Origin from Options.RPOrigins and the CSRF token (header
// X-CSRF-Token, equal to the interlock_csrf cookie and to the HMAC of the
// session id).
//
// # Vote challenges
//
// An approve or deny needs a WebAuthn assertion with the UV flag over
//
//	challenge = SHA-256("interlock/console/vote/v1" ‖ nonce ‖ len ID ‖ ID ‖
//	                     len ArgsDigest ‖ ArgsDigest ‖ len decision ‖ decision)
//
// (see VoteChallenge; lengths are 4-byte big-endian), where nonce is 32
// random bytes the server issues for one session, one approval and one
// decision, usable once. The assertion therefore proves which request and
// which decision the human confirmed, and cannot be replayed for another
// request, or for the other decision. The assertion and the challenge
// inputs are kept as the vote's evidence.
//
// # State across replicas
//
// Nothing is kept in memory that a replica needs from another: sessions,
// CSRF tokens, the challenge of a sign-in or enrolment ceremony and the
// nonce of a vote are HMAC-signed values (cookies, or a token the page
// posts back) under Options.SessionKey, which all replicas share. Single
// use of a challenge or nonce is enforced by a small in-memory set per
// replica until the value expires (5 minutes). The trade-off: within those
// minutes, a captured ceremony response could be presented once to each
// other replica. That gains an attacker nothing in practice: the response
// is bound to the victim's session cookie (ceremony state and vote tokens
// carry the session id), the store refuses a sign count that does not
// grow (UpdatePasskeyUse, atomic, so the same assertion from a counting
// authenticator is refused everywhere), an enrolment link is used
// atomically in the store, and a second vote by the same person on the
// same request is refused by the store.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/interlock-dev/interlock/internal/server"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/store"
)

// Defaults.
const (
	DefaultBasePath      = "/console"
	DefaultSessionTTL    = 12 * time.Hour
	DefaultEnrollmentTTL = 72 * time.Hour
	MaxEnrollmentTTL     = 30 * 24 * time.Hour
	// MinSessionKeySize is the shortest Options.SessionKey accepted.
	MinSessionKeySize = 32

	ceremonyTTL = 5 * time.Minute
	maxBody     = 64 << 10
)

// Store is the part of the store the console uses.
type Store interface {
	GetUser(ctx context.Context, id string) (store.User, error)
	GetAgent(ctx context.Context, id string) (store.Agent, error)
	CreatePasskey(ctx context.Context, p store.Passkey) error
	ListPasskeys(ctx context.Context, userID string) ([]store.Passkey, error)
	GetPasskey(ctx context.Context, id []byte) (store.Passkey, error)
	UpdatePasskeyUse(ctx context.Context, id []byte, signCount uint32, at time.Time) error
	CreateEnrollment(ctx context.Context, e store.Enrollment) error
	UseEnrollment(ctx context.Context, tokenHash []byte, at time.Time) (store.Enrollment, error)
	SavePushSubscription(ctx context.Context, s store.PushSubscription) error
	ListPushSubscriptions(ctx context.Context, userID string) ([]store.PushSubscription, error)
	DeletePushSubscription(ctx context.Context, endpoint string) error
}

// Approvals is the part of approval.Service the console uses.
type Approvals interface {
	Get(ctx context.Context, id string) (store.Approval, error)
	List(ctx context.Context, f store.ApprovalFilter) ([]store.Approval, error)
	Pending(ctx context.Context, u store.User) ([]store.Approval, error)
	CanVote(ctx context.Context, a store.Approval, u store.User) error
	Vote(ctx context.Context, id string, voter store.User, v approval.Vote) (store.Approval, error)
	Subscribe() (<-chan store.Approval, func())
}

// Options configure a Console. Store, Approvals, RPID, RPOrigins and
// SessionKey are required.
type Options struct {
	Store     Store
	Approvals Approvals
	// RPID is the WebAuthn relying party id: the host of the gateway's
	// public URL, without port ("gw.example.com", or "localhost").
	RPID string
	// RPOrigins are the exact origins pages are served from
	// ("https://gw.example.com", "http://localhost:8080"). POSTs must
	// carry one of them in Origin, and WebAuthn responses must name one.
	RPOrigins []string
	// RPDisplayName is shown by authenticators (default "interlock").
	RPDisplayName string
	// BasePath is where the caller mounts the console (default "/console").
	BasePath string
	// URL is the console's public base URL, for enrolment links (default
	// RPOrigins[0] + BasePath).
	URL string
	// SessionKey signs session cookies, CSRF tokens, ceremony state and
	// enrolment links; at least 32 bytes, the same on every replica.
	SessionKey []byte
	// SessionTTL is how long a sign-in lasts (default 12 h).
	SessionTTL time.Duration
	// VAPIDPublicKey is the Web Push application server key (base64url,
	// an uncompressed P-256 point: notify.VAPIDPublicKey) browsers
	// subscribe with. Empty: Web Push is off, the list page shows no
	// "Enable notifications" button and /api/push answers 404.
	VAPIDPublicKey string
	// Notices, when set, gives the recent security notices (the kill
	// switch: owners deactivated, agents orphaned or stopped) that the
	// list page shows to users with the security or admin role.
	Notices func(ctx context.Context) ([]Notice, error)
	Now     func() time.Time
	Logger  *slog.Logger
}

// Console is the web console, an http.Handler. It is safe for concurrent use.
type Console struct {
	o      Options
	log    *slog.Logger
	wa     *webauthn.WebAuthn
	seal   *sealer
	used   usedSet
	mux    *http.ServeMux
	pages  map[string]*template.Template
	static fs.FS
	secure bool
	origin map[string]bool
}

//go:embed templates static
var assets embed.FS

// New returns a Console.
func New(o Options) (*Console, error) {
	if o.Store == nil || o.Approvals == nil {
		return nil, errors.New("console: Options.Store and Options.Approvals are required")
	}
	if len(o.SessionKey) < MinSessionKeySize {
		return nil, fmt.Errorf("console: Options.SessionKey must be at least %d bytes", MinSessionKeySize)
	}
	if o.RPID == "" || len(o.RPOrigins) == 0 {
		return nil, errors.New("console: Options.RPID and Options.RPOrigins are required")
	}
	origins := map[string]bool{}
	secure := true
	o.RPOrigins = slices.Clone(o.RPOrigins)
	for i, s := range o.RPOrigins {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return nil, fmt.Errorf("console: RPOrigins[%d] %q is not an origin (scheme://host[:port])", i, s)
		}
		if u.Hostname() != o.RPID && !strings.HasSuffix(u.Hostname(), "."+o.RPID) {
			return nil, fmt.Errorf("console: RPOrigins[%d] %q is not within the RP ID %q", i, s, o.RPID)
		}
		if u.Scheme != "https" {
			secure = false
		}
		o.RPOrigins[i] = strings.ToLower(u.Scheme + "://" + u.Host)
		origins[o.RPOrigins[i]] = true
	}
	if o.RPDisplayName == "" {
		o.RPDisplayName = "interlock"
	}
	o.BasePath = "/" + strings.Trim(o.BasePath, "/")
	if o.BasePath == "/" {
		o.BasePath = DefaultBasePath
	}
	if o.URL == "" {
		o.URL = o.RPOrigins[0] + o.BasePath
	}
	o.URL = strings.TrimRight(o.URL, "/")
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID:                  o.RPID,
		RPDisplayName:         o.RPDisplayName,
		RPOrigins:             o.RPOrigins,
		AttestationPreference: protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:        protocol.ResidentKeyRequirementRequired,
			RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification:   protocol.VerificationRequired,
		},
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Timeout: 2 * time.Minute, TimeoutUVD: 2 * time.Minute},
			Registration: webauthn.TimeoutConfig{Timeout: 3 * time.Minute, TimeoutUVD: 3 * time.Minute},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("console: webauthn: %w", err)
	}
	c := &Console{o: o, log: o.Logger, wa: wa, seal: newSealer(o.SessionKey), mux: http.NewServeMux(),
		secure: secure, origin: origins}
	if err := c.parseTemplates(); err != nil {
		return nil, err
	}
	c.static, _ = fs.Sub(assets, "static")
	c.routes()
	return c, nil
}

// Handler returns the console as an http.Handler (the Console itself).
func (c *Console) Handler() http.Handler { return c }

// ServeHTTP sets the security headers and routes.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() {
	b := c.o.BasePath
	c.mux.Handle("GET "+b+"/{$}", c.page(c.listPage))
	c.mux.HandleFunc("GET "+b, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, b+"/", http.StatusSeeOther)
	})
	c.mux.Handle("GET "+b+"/login", c.page(c.loginPage))
	c.mux.Handle("POST "+b+"/logout", c.api(c.logout))
	c.mux.Handle("GET "+b+"/approvals/{id}", c.page(c.detailPage))
	c.mux.Handle("GET "+b+"/enroll/{token}", c.page(c.enrollPage))
	c.mux.Handle("GET "+b+"/static/", http.StripPrefix(b+"/static/", http.HandlerFunc(c.serveStatic)))
	c.mux.Handle("GET "+b+"/events", c.api(c.events))
	c.mux.Handle("GET "+b+"/api/pending", c.api(c.apiPending))
	c.mux.Handle("POST "+b+"/api/login/begin", c.api(c.loginBegin))
	c.mux.Handle("POST "+b+"/api/login/finish", c.api(c.loginFinish))
	c.mux.Handle("POST "+b+"/api/enroll/begin", c.api(c.enrollBegin))
	c.mux.Handle("POST "+b+"/api/enroll/finish", c.api(c.enrollFinish))
	c.mux.Handle("POST "+b+"/api/approvals/{id}/challenge", c.api(c.voteChallenge))
	c.mux.Handle("POST "+b+"/api/approvals/{id}/vote", c.api(c.vote))
	c.pushRoutes()
	c.mux.Handle(b+"/", c.page(func(w http.ResponseWriter, r *http.Request, s *session) error {
		return errorf(http.StatusNotFound, "There is no such page.", nil)
	}))
}

// Notice is one security notice shown to security and admin users.
type Notice struct {
	Time time.Time
	Text string
}

// ---- errors ----

// httpError is what handlers return: the gateway's one error type
// (server.Error), Status and Msg to the client, Err to the log only.
type httpError = server.Error

func errorf(status int, msg string, cause error) error {
	return server.Errorf(status, msg, cause)
}

func (c *Console) asHTTPError(r *http.Request, err error) *httpError {
	var he *httpError
	if !errors.As(err, &he) {
		he = &httpError{Status: http.StatusInternalServerError, Msg: "Something went wrong on our side. Try again.", Err: err}
	}
	switch {
	case he.Status >= 500:
		c.log.Error("console: request failed", "path", r.URL.Path, "status", he.Status, "err", he.Err)
	case he.Err != nil:
		c.log.Info("console: request refused", "path", r.URL.Path, "status", he.Status, "msg", he.Msg, "err", he.Err)
	}
	return he
}

// voteError maps the errors of CanVote and Vote to what the approver reads.
func voteError(a store.Approval, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, approval.ErrSeparationOfDuties):
		return errorf(http.StatusForbidden, "Separation of duties: you own the agent that made this request, so someone else must decide it.", err)
	case errors.Is(err, approval.ErrNotEligible):
		return errorf(http.StatusForbidden, "You are not an approver of this request: it needs "+approval.ApproversText(a.Approvers)+".", err)
	case errors.Is(err, approval.ErrInactive):
		return errorf(http.StatusForbidden, "Your account is not active, so you cannot vote.", err)
	case errors.Is(err, store.ErrAlreadyExists):
		return errorf(http.StatusConflict, "You have already voted on this request.", err)
	case errors.Is(err, store.ErrNotPending):
		return errorf(http.StatusConflict, "This request is no longer pending, so it cannot be voted on.", err)
	case errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusNotFound, "There is no such request.", err)
	}
	return err
}

// ---- handler adapters ----

type pageFunc func(w http.ResponseWriter, r *http.Request, s *session) error

// page adapts a page handler: it loads (or starts) the session, checks the
// CSRF token and Origin of a POST, and renders errors as a page.
func (c *Console) page(fn pageFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		s := c.loadSession(w, r, true)
		err := c.checkPost(r, s)
		if err == nil {
			err = fn(w, r, s)
		}
		if err == nil {
			return
		}
		var redirect *redirectError
		if errors.As(err, &redirect) {
			http.Redirect(w, r, redirect.to, http.StatusSeeOther)
			return
		}
		he := c.asHTTPError(r, err)
		c.render(w, he.Status, "error.html", s, map[string]any{"Status": he.Status, "Message": he.Msg})
	})
}

// api adapts a JSON handler: it loads the session, checks the CSRF token
// and Origin of a POST, and renders errors as {"error": msg}.
func (c *Console) api(fn pageFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		s := c.loadSession(w, r, false)
		err := c.checkPost(r, s)
		if err == nil {
			if r.Body != nil {
				r.Body = http.MaxBytesReader(w, r.Body, maxBody)
			}
			err = fn(w, r, s)
		}
		if err == nil {
			return
		}
		he := c.asHTTPError(r, err)
		writeJSON(w, he.Status, map[string]string{"error": he.Msg})
	})
}

type redirectError struct{ to string }

func (e *redirectError) Error() string { return "redirect to " + e.to }

// signedIn returns the session's user, or an error that sends a page to
// the sign-in page (or an API call a 401).
func (c *Console) signedIn(r *http.Request, s *session, page bool) (store.User, error) {
	if s != nil && s.UID != "" {
		u, err := c.o.Store.GetUser(r.Context(), s.UID)
		if err == nil && u.Active {
			return u, nil
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return store.User{}, err
		}
	}
	if page {
		next := r.URL.Path
		if r.URL.RawQuery != "" {
			next += "?" + r.URL.RawQuery
		}
		return store.User{}, &redirectError{to: c.o.BasePath + "/login?next=" + url.QueryEscape(next)}
	}
	return store.User{}, errorf(http.StatusUnauthorized, "You are not signed in.", nil)
}

// checkPost refuses a POST (or DELETE) without a matching Origin or CSRF
// token.
func (c *Console) checkPost(r *http.Request, s *session) error {
	if r.Method != http.MethodPost && r.Method != http.MethodDelete {
		return nil
	}
	o := strings.ToLower(strings.TrimRight(r.Header.Get("Origin"), "/"))
	if o == "" || !c.origin[o] {
		return errorf(http.StatusForbidden, "This request came from another site (its Origin is not allowed).", nil)
	}
	if s == nil {
		return errorf(http.StatusForbidden, "Your session has expired: reload the page.", nil)
	}
	sent := r.Header.Get("X-CSRF-Token")
	if sent == "" {
		ct := r.Header.Get("Content-Type")
		if strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
			r.Body = http.MaxBytesReader(nil, r.Body, maxBody)
			sent = r.PostFormValue("csrf")
		}
	}
	var cookie string
	if ck, err := r.Cookie(csrfCookie); err == nil {
		cookie = ck.Value
	}
	if !c.seal.checkCSRF(s.SID, sent, cookie) {
		return errorf(http.StatusForbidden, "The form's security token is missing or wrong: reload the page and try again.", nil)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// readJSON decodes a request body of at most maxBody bytes into v.
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "The request body is not valid JSON.", err)
	}
	return nil
}
