// Package ciba is interlock's OpenID Provider for Client-Initiated
// Backchannel Authentication (OpenID CIBA Core 1.0, FAPI-CIBA profile:
// poll and ping delivery, no push). An agent (the CIBA client,
// authenticated with its id and token, or a private_key_jwt assertion)
// asks ahead of acting for one action, given as RFC 9396
// authorization_details of type interlock_tool_call; the gate decides it
// exactly as it decides the MCP call; when a human must approve, the
// agent polls the token endpoint (or is pinged) until they have; the
// access token is the action credential, which the agent then presents
// with the call.
//
// State lives in the shared store, so several replicas can serve one
// client: a request's record is sealed in the store's meta area under the
// hash of its auth_req_id (and only that auth_req_id opens it); approval
// state is the approval's. Poll pacing (slow_down), private_key_jwt jti
// replay and ping delivery are kept in the memory of the replica that
// sees them (docs/ciba.md says what that means).
//
// It must not decide what is allowed (the gate does) nor how humans
// approve (the approval service and console do).
package ciba

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/interlock-dev/interlock/internal/gate"
	"github.com/interlock-dev/interlock/internal/store"
)

// GrantType is the CIBA grant type at the token endpoint.
const GrantType = "urn:openid:params:grant-type:ciba"

// Paths, relative to the issuer.
const (
	DiscoveryPath   = "/.well-known/openid-configuration"
	BackchannelPath = "/oauth/backchannel"
	TokenPath       = "/oauth/token"
)

// Defaults.
const (
	DefaultInterval = 2 * time.Second
	// pollTolerance forgives a poll that arrives this much before the
	// interval is over (timers and clocks are not exact).
	pollTolerance = 250 * time.Millisecond
	clockSkew     = 30 * time.Second
)

// Delivery modes.
const (
	ModePoll = "poll"
	ModePing = "ping"
)

// Gate decides actions asked for ahead of the call and issues approved
// ones' credentials (*gate.Gate).
type Gate interface {
	Authorize(ctx context.Context, p *store.Principal, upstream, tool string, arguments json.RawMessage, o gate.AuthorizeOptions) (gate.Grant, error)
	Redeem(ctx context.Context, p *store.Principal, a store.Approval) (string, store.Credential, error)
}

// Approvals reads approval requests and tells of their changes in this
// process (*approval.Service).
type Approvals interface {
	Get(ctx context.Context, id string) (store.Approval, error)
	Subscribe() (<-chan store.Approval, func())
}

// Authenticator resolves an agent token (*registry.Registry). Errors
// about the token itself have a BadToken() bool method returning true.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (store.Principal, error)
}

// Meta is the store's small shared key-value area.
type Meta interface {
	GetMeta(ctx context.Context, key string) ([]byte, error)
	PutMetaIfAbsent(ctx context.Context, key string, value []byte) ([]byte, error)
}

// ClientKeys gives a client's registered public keys (a JWK Set) for
// private_key_jwt. No keys (nil or an empty set) means the client cannot
// authenticate that way.
type ClientKeys interface {
	ClientKeys(ctx context.Context, clientID string) (jwks []byte, err error)
}

// Metadata is a client's CIBA registration.
type Metadata struct {
	// DeliveryMode is ModePoll (default) or ModePing.
	DeliveryMode string `json:"backchannel_token_delivery_mode"`
	// NotificationEndpoint is where pings go (ping only): https, or http
	// to a loopback address.
	NotificationEndpoint string `json:"backchannel_client_notification_endpoint"`
}

// Options configure a Provider. Issuer, Gate, Approvals, Auth and Meta
// are required.
type Options struct {
	// Issuer is the gateway's public URL (no trailing slash).
	Issuer string
	// JWKSURI is where the credential signing keys are published
	// (default Issuer + "/.well-known/jwks.json").
	JWKSURI   string
	Gate      Gate
	Approvals Approvals
	Auth      Authenticator
	Meta      Meta
	// Principal resolves a client id (an agent id) to its principal, for
	// clients that authenticate with private_key_jwt (no agent token).
	// Nil: private_key_jwt is refused.
	Principal func(ctx context.Context, clientID string) (store.Principal, error)
	// ClientKeys are the clients' keys for private_key_jwt (nil: none).
	ClientKeys ClientKeys
	// ClientMetadata returns a client's CIBA registration (nil, or a zero
	// DeliveryMode: poll).
	ClientMetadata func(ctx context.Context, clientID string) (Metadata, error)
	// KnownUpstream reports whether an upstream exists (nil: all do; the
	// policy then decides unknown ones).
	KnownUpstream func(name string) bool
	// Interval is the minimum time between token polls (default 2 s,
	// whole seconds).
	Interval time.Duration
	// HTTPClient sends pings (default: 10 s timeout, no redirects).
	HTTPClient *http.Client
	// PingRetries is how many times a failed ping is retried (default 3).
	PingRetries int
	// WatchInterval is how often pending ping requests re-read their
	// approval, to see a decision taken in another process (default 1 s).
	WatchInterval time.Duration
	Logger        *slog.Logger
	Now           func() time.Time
}

// Provider is the CIBA OpenID Provider: an http.Handler for discovery,
// the backchannel authentication endpoint and the token endpoint.
type Provider struct {
	o   Options
	log *slog.Logger
	mux *http.ServeMux

	backchannelURL, tokenURL string

	mu    sync.Mutex
	polls map[string]*pollState // by record key
	jtis  map[string]time.Time  // private_key_jwt jti (client|jti) -> expiry

	pinger *pinger
}

type pollState struct {
	last     time.Time
	interval time.Duration
	expires  time.Time
}

// New returns a Provider.
func New(o Options) (*Provider, error) {
	if o.Issuer == "" || o.Gate == nil || o.Approvals == nil || o.Auth == nil || o.Meta == nil {
		return nil, errors.New("ciba: Options.Issuer, Gate, Approvals, Auth and Meta are required")
	}
	u, err := url.Parse(o.Issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("ciba: issuer %q is not an http(s) URL", o.Issuer)
	}
	o.Issuer = strings.TrimRight(o.Issuer, "/")
	if o.JWKSURI == "" {
		o.JWKSURI = o.Issuer + "/.well-known/jwks.json"
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	o.Interval = max(time.Second, o.Interval.Round(time.Second))
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.PingRetries <= 0 {
		o.PingRetries = 3
	}
	if o.WatchInterval <= 0 {
		o.WatchInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	p := &Provider{o: o, log: o.Logger, mux: http.NewServeMux(),
		backchannelURL: o.Issuer + BackchannelPath, tokenURL: o.Issuer + TokenPath,
		polls: map[string]*pollState{}, jtis: map[string]time.Time{}}
	p.pinger = newPinger(p)
	p.mux.HandleFunc("GET "+DiscoveryPath, p.discovery)
	p.mux.HandleFunc(BackchannelPath, p.post(p.backchannel))
	p.mux.HandleFunc(TokenPath, p.post(p.token))
	p.mux.HandleFunc("/oauth/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &Error{Status: http.StatusNotFound, Code: "invalid_request", Description: "no such endpoint"})
	})
	return p, nil
}

// ServeHTTP serves discovery, /oauth/backchannel and /oauth/token.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.mux.ServeHTTP(w, r) }

// Close stops the ping deliveries in flight.
func (p *Provider) Close() { p.pinger.close() }

// Metadata returns the discovery document.
func (p *Provider) Metadata() map[string]any {
	return map[string]any{
		"issuer":                              p.o.Issuer,
		"backchannel_authentication_endpoint": p.backchannelURL,
		"token_endpoint":                      p.tokenURL,
		"jwks_uri":                            p.o.JWKSURI,
		"backchannel_token_delivery_modes_supported":       []string{ModePoll, ModePing},
		"backchannel_user_code_parameter_supported":        false,
		"grant_types_supported":                            []string{GrantType},
		"token_endpoint_auth_methods_supported":            []string{"client_secret_basic", "client_secret_post", "private_key_jwt"},
		"token_endpoint_auth_signing_alg_values_supported": assertionAlgs,
		"authorization_details_types_supported":            []string{DetailsType},
		"scopes_supported":                                 []string{"openid"},
		"response_types_supported":                         []string{},
		"subject_types_supported":                          []string{"public"},
		"claims_parameter_supported":                       false,
		"request_parameter_supported":                      false,
		"request_uri_parameter_supported":                  false,
	}
}

func (p *Provider) discovery(w http.ResponseWriter, r *http.Request) {
	b, _ := json.Marshal(p.Metadata())
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "public, max-age=300")
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("X-Content-Type-Options", "nosniff")
	w.Write(b)
}

// post wraps an endpoint: POST with a form-encoded body only, read
// whole (within maxBody) and parsed without the URL's query.
func (p *Provider) post(fn func(w http.ResponseWriter, r *http.Request, form url.Values) *Error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, &Error{Status: http.StatusMethodNotAllowed, Code: "invalid_request", Description: "use POST with an application/x-www-form-urlencoded body"})
			return
		}
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/x-www-form-urlencoded" {
			writeError(w, invalidRequest("the body must be application/x-www-form-urlencoded"))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		var sb strings.Builder
		if _, err := ioCopy(&sb, r.Body); err != nil {
			writeError(w, invalidRequest("the body is too large or could not be read"))
			return
		}
		form, err := url.ParseQuery(sb.String())
		if err != nil {
			writeError(w, invalidRequest("the body is not valid form encoding"))
			return
		}
		if e := fn(w, r, form); e != nil {
			writeError(w, e)
		}
	}
}

// writeError writes an OAuth error response.
func writeError(w http.ResponseWriter, e *Error) {
	if e.Status == 0 {
		e.Status = http.StatusBadRequest
	}
	if e.challenge {
		w.Header().Set("WWW-Authenticate", `Basic realm="interlock", charset="UTF-8"`)
	}
	body := map[string]string{"error": e.Code}
	if e.Description != "" {
		body["error_description"] = descriptionSafe(e.Description)
	}
	writeJSON(w, e.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// backchannel is the backchannel authentication endpoint (CIBA §7).
func (p *Provider) backchannel(w http.ResponseWriter, r *http.Request, form url.Values) *Error {
	ctx := r.Context()
	cl, e := p.authenticate(ctx, r, form)
	if e != nil {
		return e
	}
	for k := range clientAuthParams {
		delete(form, k)
	}
	req, e := ParseRequest(form)
	if e != nil {
		return e
	}
	if p.o.KnownUpstream != nil && !p.o.KnownUpstream(req.Call.Upstream) {
		return invalidDetails("there is no upstream %s", quote(req.Call.Upstream))
	}
	md := Metadata{DeliveryMode: ModePoll}
	if p.o.ClientMetadata != nil {
		m, err := p.o.ClientMetadata(ctx, cl.id)
		if err != nil {
			p.log.Error("ciba: reading client metadata", "client", cl.id, "err", err)
			return &Error{Status: http.StatusInternalServerError, Code: "server_error", Description: "the client's registration could not be read"}
		}
		if m.DeliveryMode != "" {
			md = m
		}
	}
	switch md.DeliveryMode {
	case ModePoll:
	case ModePing:
		if err := checkEndpoint(md.NotificationEndpoint); err != nil {
			p.log.Error("ciba: client registered for ping has no usable notification endpoint", "client", cl.id, "err", err)
			return errorf(http.StatusBadRequest, "unauthorized_client", "the client is registered for ping without a usable notification endpoint")
		}
		if req.ClientNotificationToken == "" {
			return invalidRequest("client_notification_token is required: the client is registered for ping delivery")
		}
	default:
		return errorf(http.StatusBadRequest, "unauthorized_client", "the client's delivery mode %s is not supported (poll, ping)", quote(md.DeliveryMode))
	}

	now := p.o.Now()
	clientData, _ := json.Marshal(map[string]any{"ciba": map[string]any{"client_id": cl.id, "delivery_mode": md.DeliveryMode}})
	g, err := p.o.Gate.Authorize(ctx, &cl.principal, req.Call.Upstream, req.Call.Tool, req.Call.Arguments, gate.AuthorizeOptions{
		BindingMessage: req.BindingMessage, LoginHint: req.LoginHint, ClientData: clientData, ClientIP: clientIP(r),
	})
	if errors.Is(err, gate.ErrUnknownApprover) {
		return errorf(http.StatusBadRequest, "unknown_user_id", "%s may not approve this action", req.LoginHint)
	}
	if err != nil {
		p.log.Error("ciba: deciding a backchannel request", "client", cl.id, "err", err)
		return &Error{Status: http.StatusInternalServerError, Code: "server_error", Description: "interlock could not decide the request"}
	}
	rec := record{V: 1, ClientID: cl.id, DecisionID: g.DecisionID, Interval: int(p.o.Interval / time.Second),
		Details: req.Details, Mode: md.DeliveryMode, Created: now}
	var expires time.Time
	switch g.Effect {
	case "allow":
		rec.Kind, rec.Token, rec.CredentialID, rec.TokenExpires = kindAllow, g.Credential, g.CredentialID, g.ExpiresAt
		expires = g.ExpiresAt
	case "approve":
		rec.Kind, rec.ApprovalID = kindApprove, g.Approval.ID
		expires = g.Approval.ExpiresAt
	default:
		// The policy refused: the OP denies the request (CIBA §13
		// access_denied, 403) at once; nothing is stored.
		why := g.Reason
		if why == "" {
			why = "the policy does not allow this action"
		}
		p.log.Info("ciba: request denied by policy", "client", cl.id, "decision", g.DecisionID, "rule", g.Rule)
		return errorf(http.StatusForbidden, "access_denied", "%s (rule %s, decision %s)", why, g.Rule, g.DecisionID)
	}
	if req.RequestedExpiry > 0 && now.Add(req.RequestedExpiry).Before(expires) {
		expires = now.Add(req.RequestedExpiry)
	}
	expiresIn := int64(expires.Sub(now) / time.Second)
	if expiresIn < 1 {
		p.log.Warn("ciba: the grant expires at once", "client", cl.id, "decision", g.DecisionID)
		return errorf(http.StatusForbidden, "access_denied", "the grant expired before it could be delivered")
	}
	rec.Expires = store.NormalizeTime(expires)
	id, err := newAuthReqID()
	if err != nil {
		return &Error{Status: 500, Code: "server_error", Description: "no randomness"}
	}
	if err := p.putRecord(ctx, id, &rec); err != nil {
		p.log.Error("ciba: storing a request", "client", cl.id, "err", err)
		return &Error{Status: http.StatusInternalServerError, Code: "server_error", Description: "the request could not be stored"}
	}
	p.log.Info("ciba: request accepted", "client", cl.id, "auth_req", short(id), "effect", g.Effect,
		"approval", rec.ApprovalID, "decision", g.DecisionID, "mode", md.DeliveryMode, "expires_in", expiresIn)
	if md.DeliveryMode == ModePing {
		p.pinger.add(pingJob{authReqID: id, approvalID: rec.ApprovalID, endpoint: md.NotificationEndpoint,
			token: req.ClientNotificationToken, expires: expires, ready: rec.Kind == kindAllow, client: cl.id})
	}
	writeJSON(w, http.StatusOK, map[string]any{"auth_req_id": id, "expires_in": expiresIn, "interval": rec.Interval})
	return nil
}

// token is the token endpoint for the CIBA grant (CIBA §10.1, §11).
func (p *Provider) token(w http.ResponseWriter, r *http.Request, form url.Values) *Error {
	ctx := r.Context()
	for k, v := range form {
		if len(v) > 1 {
			return invalidRequest("parameter %s is repeated", k)
		}
	}
	cl, e := p.authenticate(ctx, r, form)
	if e != nil {
		return e
	}
	switch gt := form.Get("grant_type"); gt {
	case GrantType:
	case "":
		return invalidRequest("grant_type is required")
	default:
		return errorf(400, "unsupported_grant_type", "the only grant type is %s", GrantType)
	}
	id := form.Get("auth_req_id")
	if id == "" {
		return invalidRequest("auth_req_id is required")
	}
	rec, key, err := p.getRecord(ctx, id)
	if errors.Is(err, errNoRecord) {
		return errorf(400, "invalid_grant", "unknown auth_req_id")
	}
	if err != nil {
		p.log.Error("ciba: reading a request", "auth_req", short(id), "err", err)
		return &Error{Status: 500, Code: "server_error", Description: "the request could not be read"}
	}
	if rec.ClientID != cl.id {
		p.log.Warn("ciba: auth_req_id presented by another client", "auth_req", short(id), "client", cl.id)
		return errorf(400, "invalid_grant", "unknown auth_req_id")
	}
	now := p.o.Now()
	if !now.Before(rec.Expires) {
		return errorf(400, "expired_token", "the request expired at %s; start a new one", rec.Expires.UTC().Format(time.RFC3339))
	}
	if e := p.pace(key, rec, now); e != nil {
		return e
	}
	switch rec.Kind {
	case kindAllow:
		ok, err := p.claim(ctx, key)
		if err != nil {
			p.log.Error("ciba: marking a grant redeemed", "auth_req", short(id), "err", err)
			return &Error{Status: 500, Code: "server_error", Description: "the grant could not be redeemed"}
		}
		if !ok {
			return errorf(400, "invalid_grant", "this auth_req_id was redeemed already")
		}
		p.forget(key)
		p.log.Info("ciba: token issued", "client", cl.id, "auth_req", short(id), "credential", rec.CredentialID)
		writeJSON(w, 200, tokenResponse(rec.Token, rec.TokenExpires, now, rec.Details))
		return nil
	case kindApprove:
		return p.redeemApproval(ctx, w, cl, id, key, rec, now)
	default:
		return errorf(400, "invalid_grant", "unknown auth_req_id")
	}
}

func (p *Provider) redeemApproval(ctx context.Context, w http.ResponseWriter, cl client, id, key string, rec *record, now time.Time) *Error {
	a, err := p.o.Approvals.Get(ctx, rec.ApprovalID)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(400, "invalid_grant", "the approval request behind this auth_req_id is gone")
	}
	if err != nil {
		p.log.Error("ciba: reading an approval", "approval", rec.ApprovalID, "err", err)
		return &Error{Status: 500, Code: "server_error", Description: "the approval could not be read"}
	}
	if a.AgentID != cl.id {
		return errorf(400, "invalid_grant", "unknown auth_req_id")
	}
	switch a.State {
	case store.ApprovalPending:
		if !now.Before(a.ExpiresAt) {
			return errorf(400, "expired_token", "nobody answered in time; start a new request")
		}
		return errorf(400, "authorization_pending", "waiting for %s (approval %s)", waitingFor(a), a.ID)
	case store.ApprovalApproved:
	case store.ApprovalDenied:
		p.forget(key)
		return errorf(400, "access_denied", "%s", deniedText(a))
	case store.ApprovalExpired:
		p.forget(key)
		return errorf(400, "expired_token", "nobody answered in time (approval %s); start a new request", a.ID)
	case store.ApprovalCancelled:
		p.forget(key)
		return errorf(400, "access_denied", "the approval request %s was cancelled: %s", a.ID, a.Reason)
	default:
		return &Error{Status: 500, Code: "server_error", Description: "the approval is in an unknown state"}
	}
	if why := gate.Inactive(&cl.principal); why != "" {
		return errorf(400, "access_denied", "%s", why)
	}
	tok, cred, err := p.o.Gate.Redeem(ctx, &cl.principal, a)
	if errors.Is(err, store.ErrAlreadyExists) {
		p.forget(key)
		return errorf(400, "invalid_grant", "the credential of approval %s was issued already (this auth_req_id was redeemed, or another request for the same action was)", a.ID)
	}
	if err != nil {
		p.log.Error("ciba: issuing an approved request's credential", "approval", a.ID, "err", err)
		return &Error{Status: 500, Code: "server_error", Description: "the credential could not be issued"}
	}
	p.forget(key)
	p.log.Info("ciba: token issued", "client", cl.id, "auth_req", short(id), "approval", a.ID, "credential", cred.ID)
	writeJSON(w, 200, tokenResponse(tok, cred.ExpiresAt, now, rec.Details))
	return nil
}

func tokenResponse(tok string, exp, now time.Time, details json.RawMessage) map[string]any {
	in := int64(exp.Sub(now) / time.Second)
	if in < 1 {
		in = 1
	}
	return map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": in,
		"scope": "openid", "authorization_details": details}
}

// pace answers slow_down to a poll that comes sooner than the interval
// after the one before (this replica's memory), and then expects the
// client to wait 5 s longer (CIBA §11).
func (p *Provider) pace(key string, rec *record, now time.Time) *Error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.polls) > 10000 {
		for k, s := range p.polls {
			if now.After(s.expires) {
				delete(p.polls, k)
			}
		}
	}
	s, ok := p.polls[key]
	if !ok {
		p.polls[key] = &pollState{last: now, interval: time.Duration(rec.Interval) * time.Second, expires: rec.Expires}
		return nil
	}
	if now.Sub(s.last) < s.interval-pollTolerance {
		s.last = now
		s.interval += 5 * time.Second
		return errorf(400, "slow_down", "poll at most every %d seconds", int(s.interval/time.Second))
	}
	s.last = now
	return nil
}

func (p *Provider) forget(key string) {
	p.mu.Lock()
	delete(p.polls, key)
	p.mu.Unlock()
}

func waitingFor(a store.Approval) string {
	terms := a.Approvers
	if len(terms) == 0 {
		terms = []string{"owner"}
	}
	var parts []string
	for _, t := range terms {
		switch {
		case t == "owner":
			parts = append(parts, "the agent's owner")
		case strings.HasPrefix(t, "role:"):
			parts = append(parts, "a "+strings.TrimPrefix(t, "role:"))
		default:
			parts = append(parts, strings.TrimPrefix(t, "user:"))
		}
	}
	s := strings.Join(parts, " or ")
	if a.Quorum > 1 {
		s += fmt.Sprintf(" (%d approvals needed)", a.Quorum)
	}
	return s
}

func deniedText(a store.Approval) string {
	for _, v := range a.Votes {
		if !v.Approve {
			return fmt.Sprintf("%s denied this request: %s", v.Email, v.Reason)
		}
	}
	if a.Reason != "" {
		return "denied: " + a.Reason
	}
	return "denied"
}

func clientIP(r *http.Request) string {
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i > 0 {
		host = host[:i]
	}
	return strings.Trim(host, "[]")
}

// short is the part of a secret that may be logged.
func short(s string) string {
	if len(s) <= 8 {
		return "..."
	}
	return s[:6] + "..."
}

func newAuthReqID() (string, error) {
	b := make([]byte, 32) // 256 bits
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return b64(b), nil
}

func checkEndpoint(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("notification endpoint %q is not an absolute URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("notification endpoint %q must use https (http only to a loopback address)", s)
	}
	return fmt.Errorf("notification endpoint %q must use https", s)
}
