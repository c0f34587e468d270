package adminapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
)

// Request bodies.
type (
	userRequest struct {
		Email string   `json:"email"`
		Name  string   `json:"name"`
		Roles []string `json:"roles"`
	}
	agentRequest struct {
		ID         string `json:"id"`
		Owner      string `json:"owner"`
		Name       string `json:"name"`
		Department string `json:"department"`
		Purpose    string `json:"purpose"`
		// AllowedUpstreams: empty or absent for every upstream.
		AllowedUpstreams []string `json:"allowed_upstreams"`
	}
	upstreamsRequest struct {
		// AllowedUpstreams replaces the agent's list; empty: every
		// upstream. It must be present (an explicit [] for every upstream).
		AllowedUpstreams *[]string `json:"allowed_upstreams"`
	}
	reasonRequest struct {
		Reason string `json:"reason"`
	}
	reassignRequest struct {
		To     string `json:"to"`
		Reason string `json:"reason"`
	}
	tokenRequest struct {
		// TTL is a Go duration ("24h"); empty or "0": never expires.
		TTL string `json:"ttl"`
	}
	selectorRequest struct {
		All    bool   `json:"all"`
		Agent  string `json:"agent"`
		Owner  string `json:"owner"`
		Reason string `json:"reason"`
	}
)

// DeactivateResult is the answer to POST users/{email}/deactivate.
type DeactivateResult struct {
	User   User            `json:"user"`
	Report registry.Report `json:"report"`
}

const base = "/api/v1"

func (h *handler) routes() {
	type eps = map[string]endpoint
	h.route(base+"/whoami", eps{"GET": {permRead, "read", h.whoami}})
	h.route(base+"/users", eps{
		"GET":  {permRead, "list users", h.listUsers},
		"POST": {permAdmin, "create users", h.createUser},
	})
	h.route(base+"/users/{email}", eps{"GET": {permRead, "read users", h.getUser}})
	h.route(base+"/users/{email}/deactivate", eps{"POST": {permStop, "deactivate users", h.deactivateUser}})
	h.route(base+"/users/{email}/activate", eps{"POST": {permStop, "activate users", h.activateUser}})
	h.route(base+"/agents", eps{
		"GET":  {permRead, "list agents", h.listAgents},
		"POST": {permAdmin, "create agents", h.createAgent},
	})
	h.route(base+"/agents/{id}", eps{"GET": {permRead, "read agents", h.getAgent}})
	h.route(base+"/agents/{id}/suspend", eps{"POST": {permStop, "suspend agents", h.suspendAgent}})
	h.route(base+"/agents/{id}/resume", eps{"POST": {permStop, "resume agents", h.resumeAgent}})
	h.route(base+"/agents/{id}/reassign", eps{"POST": {permAdmin, "reassign agents", h.reassignAgent}})
	h.route(base+"/agents/{id}/decommission", eps{"POST": {permAdmin, "decommission agents", h.decommissionAgent}})
	h.route(base+"/agents/{id}/upstreams", eps{"POST": {permAdmin, "set agents' upstreams", h.setUpstreams}})
	h.route(base+"/agents/{id}/tokens", eps{
		"GET":  {permRead, "list agent tokens", h.listTokens},
		"POST": {permAdmin, "create agent tokens", h.createToken},
	})
	h.route(base+"/agents/{id}/tokens/{tokenID}/revoke", eps{"POST": {permStop, "revoke agent tokens", h.revokeToken}})
	h.route(base+"/stop", eps{"POST": {permStop, "stop agents", h.stop}})
	h.route(base+"/resume", eps{"POST": {permStop, "resume agents", h.resume}})
	h.route(base+"/approvals", eps{"GET": {permRead, "list approvals", h.listApprovals}})
	h.route(base+"/approvals/{id}", eps{"GET": {permRead, "read approvals", h.getApproval}})
	h.route(base+"/credentials", eps{"GET": {permRead, "list credentials", h.listCredentials}})
	h.route(base+"/credentials/{id}/revoke", eps{"POST": {permStop, "revoke credentials", h.revokeCredential}})
	h.mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.render(w, r, errorf(http.StatusNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	}))
}

// audit appends one event for a change that the lifecycle does not audit
// itself.
func (h *handler) audit(r *http.Request, ev audit.Event) error {
	if _, err := h.o.Audit.Append(r.Context(), ev); err != nil {
		return &apiError{status: http.StatusInternalServerError, msg: "the change was made but recording it in the audit log failed", err: err}
	}
	return nil
}

func (h *handler) whoami(w http.ResponseWriter, r *http.Request, c *caller) error {
	return writeJSON(w, http.StatusOK, Whoami{Name: c.name, Roles: orEmpty(c.roles)})
}

// ---- users ----

func (h *handler) listUsers(w http.ResponseWriter, r *http.Request, _ *caller) error {
	users, err := h.o.Registry.ListUsers(r.Context())
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	out := make([]User, 0, len(users))
	for _, u := range users {
		out = append(out, UserOf(u))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (h *handler) createUser(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req userRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Email) == "" {
		return badRequest("email is required")
	}
	u, err := h.o.Registry.CreateUser(r.Context(), registry.UserSpec{Email: req.Email, Name: req.Name, Roles: req.Roles})
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	if err := h.audit(r, audit.Event{Type: "user_created", Data: map[string]any{
		"user_id": u.ID, "email": u.Email, "roles": u.Roles, "source": u.Source, "by": c.by()}}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, UserOf(u))
}

func (h *handler) getUser(w http.ResponseWriter, r *http.Request, _ *caller) error {
	ref := r.PathValue("email")
	u, err := h.o.Registry.ResolveUser(r.Context(), ref)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "no user %q", ref)
	}
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	agents, err := h.o.Registry.ListAgents(r.Context())
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	out := UserDetail{User: UserOf(u), Agents: []AgentRef{}}
	for _, a := range agents {
		if a.OwnerID == u.ID {
			out.Agents = append(out.Agents, AgentRef{ID: a.ID, State: a.State})
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

func (h *handler) deactivateUser(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req reasonRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	ref := r.PathValue("email")
	u, rep, err := h.o.Lifecycle.DeactivateUser(r.Context(), ref, c.by(), req.Reason)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) && u.ID == "" {
			return errorf(http.StatusNotFound, "no user %q", ref)
		}
		ae := fail(err, http.StatusBadRequest)
		if u.ID != "" && ae.status >= 500 {
			ae.msg = "the user is deactivated and the gateway refuses their agents, but the cascade did not complete: run it again"
		}
		return withReport(ae, rep)
	}
	return writeJSON(w, http.StatusOK, DeactivateResult{User: UserOf(u), Report: rep})
}

func (h *handler) activateUser(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req reasonRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	ref := r.PathValue("email")
	u, err := h.o.Lifecycle.ActivateUser(r.Context(), ref, c.by(), req.Reason)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "no user %q", ref)
	}
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	return writeJSON(w, http.StatusOK, UserOf(u))
}

// ---- agents ----

// ownerEmails maps user ids to emails.
func (h *handler) ownerEmails(r *http.Request) (map[string]string, error) {
	users, err := h.o.Registry.ListUsers(r.Context())
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(users))
	for _, u := range users {
		m[u.ID] = u.Email
	}
	return m, nil
}

func (h *handler) listAgents(w http.ResponseWriter, r *http.Request, _ *caller) error {
	q := r.URL.Query()
	state := q.Get("state")
	if b, err := boolParam(q.Get("orphaned"), "orphaned"); err != nil {
		return err
	} else if b {
		if state != "" && state != string(store.AgentOrphaned) {
			return badRequest("orphaned=true and state=%s contradict each other", state)
		}
		state = string(store.AgentOrphaned)
	}
	if state != "" && !store.AgentState(state).Valid() {
		return badRequest("state %q: want active, suspended, orphaned or decommissioned", state)
	}
	owners, err := h.ownerEmails(r)
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	ownerID := ""
	if o := q.Get("owner"); o != "" {
		u, err := h.o.Registry.ResolveUser(r.Context(), o)
		if errors.Is(err, store.ErrNotFound) {
			return errorf(http.StatusNotFound, "no user %q", o)
		}
		if err != nil {
			return fail(err, http.StatusBadRequest)
		}
		ownerID = u.ID
	}
	all, err := h.o.Registry.ListAgents(r.Context())
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	out := make([]Agent, 0, len(all))
	for _, a := range all {
		if (state == "" || string(a.State) == state) && (ownerID == "" || a.OwnerID == ownerID) {
			out = append(out, AgentOf(a, owners[a.OwnerID]))
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

func (h *handler) createAgent(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req agentRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.ID == "" || req.Owner == "" {
		return badRequest("id and owner are required")
	}
	a, token, err := h.o.Registry.CreateAgent(r.Context(), registry.AgentSpec{ID: req.ID, OwnerEmail: req.Owner,
		Name: req.Name, Department: req.Department, Purpose: req.Purpose,
		AllowedUpstreams: req.AllowedUpstreams, CreatedBy: c.by()})
	if err != nil && a.ID == "" {
		return fail(err, http.StatusBadRequest)
	}
	owner, _ := h.o.Registry.GetUser(r.Context(), a.OwnerID)
	if aerr := h.audit(r, audit.Event{Type: "agent_created", AgentID: a.ID, Data: map[string]any{
		"owner": owner.Email, "owner_id": a.OwnerID, "name": a.Name, "department": a.Department, "purpose": a.Purpose,
		"allowed_upstreams": orEmpty(a.AllowedUpstreams), "to": a.State, "by": c.by()}}); aerr != nil {
		return aerr
	}
	if err != nil {
		return &apiError{status: http.StatusInternalServerError,
			msg: fmt.Sprintf("agent %s was created but its first token was not: create one with POST %s/agents/%s/tokens", a.ID, base, a.ID), err: err}
	}
	return writeJSON(w, http.StatusCreated, CreatedAgent{Agent: AgentOf(a, owner.Email), Token: token})
}

// agent returns the agent with the path's id, or a 404.
func (h *handler) agent(r *http.Request) (store.Agent, error) {
	id := r.PathValue("id")
	a, err := h.o.Registry.GetAgent(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Agent{}, errorf(http.StatusNotFound, "no agent %q", id)
	}
	if err != nil {
		return store.Agent{}, fail(err, http.StatusBadRequest)
	}
	return a, nil
}

func (h *handler) getAgent(w http.ResponseWriter, r *http.Request, _ *caller) error {
	a, err := h.agent(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	owner, err := h.o.Registry.GetUser(ctx, a.OwnerID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fail(err, http.StatusBadRequest)
	}
	toks, err := h.o.Registry.ListTokens(ctx, a.ID)
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	hist, err := h.o.Lifecycle.History(ctx, a.ID)
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	out := AgentDetail{Agent: AgentOf(a, owner.Email), OwnerActive: owner.Active, LastUsedAt: registry.LastUsed(toks),
		Tokens: make([]Token, 0, len(toks)), History: make([]Event, 0, len(hist))}
	for _, t := range toks {
		out.Tokens = append(out.Tokens, TokenOf(t))
	}
	for _, ev := range hist {
		out.History = append(out.History, EventOf(ev))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (h *handler) suspendAgent(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req reasonRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if _, err := h.agent(r); err != nil {
		return err
	}
	rep, err := h.o.Lifecycle.SuspendAgent(r.Context(), r.PathValue("id"), c.by(), req.Reason)
	if err != nil {
		return withReport(fail(err, http.StatusBadRequest), rep)
	}
	return writeJSON(w, http.StatusOK, rep)
}

func (h *handler) resumeAgent(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req reasonRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if _, err := h.agent(r); err != nil {
		return err
	}
	a, err := h.o.Lifecycle.ResumeAgent(r.Context(), r.PathValue("id"), c.by(), req.Reason)
	if err != nil {
		return fail(err, http.StatusConflict) // not suspended, or its owner is deactivated
	}
	return h.writeAgent(w, r, a)
}

// setUpstreams replaces the upstreams the agent may call (audited by the
// lifecycle as agent_upstreams_set).
func (h *handler) setUpstreams(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req upstreamsRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.AllowedUpstreams == nil {
		return badRequest("allowed_upstreams is required ([] for every upstream)")
	}
	cur, err := h.agent(r)
	if err != nil {
		return err
	}
	if cur.State == store.AgentDecommissioned {
		return errorf(http.StatusConflict, "agent %s is decommissioned", cur.ID)
	}
	a, err := h.o.Lifecycle.SetAllowedUpstreams(r.Context(), cur.ID, *req.AllowedUpstreams, c.by())
	if err != nil {
		if a.ID != "" { // changed, but not audited
			return &apiError{status: http.StatusInternalServerError, msg: "the change was made but recording it in the audit log failed", err: err}
		}
		return fail(err, http.StatusBadRequest) // a bad name
	}
	return h.writeAgent(w, r, a)
}

func (h *handler) writeAgent(w http.ResponseWriter, r *http.Request, a store.Agent) error {
	owner, _ := h.o.Registry.GetUser(r.Context(), a.OwnerID)
	return writeJSON(w, http.StatusOK, AgentOf(a, owner.Email))
}

func (h *handler) reassignAgent(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req reassignRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.To) == "" {
		return badRequest("to (the new owner's email) is required")
	}
	if _, err := h.agent(r); err != nil {
		return err
	}
	if _, err := h.o.Registry.ResolveUser(r.Context(), req.To); errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "no user %q", req.To)
	}
	a, err := h.o.Lifecycle.ReassignAgent(r.Context(), r.PathValue("id"), req.To, c.by(), req.Reason)
	if err != nil {
		return fail(err, http.StatusConflict) // decommissioned, or the new owner is deactivated
	}
	return h.writeAgent(w, r, a)
}

func (h *handler) decommissionAgent(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req reasonRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if _, err := h.agent(r); err != nil {
		return err
	}
	rep, err := h.o.Lifecycle.DecommissionAgent(r.Context(), r.PathValue("id"), c.by(), req.Reason)
	if err != nil {
		return withReport(fail(err, http.StatusBadRequest), rep)
	}
	return writeJSON(w, http.StatusOK, rep)
}

// ---- agent tokens ----

func (h *handler) listTokens(w http.ResponseWriter, r *http.Request, _ *caller) error {
	a, err := h.agent(r)
	if err != nil {
		return err
	}
	toks, err := h.o.Registry.ListTokens(r.Context(), a.ID)
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	out := make([]Token, 0, len(toks))
	for _, t := range toks {
		out = append(out, TokenOf(t))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (h *handler) createToken(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req tokenRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < 0 {
			return badRequest("ttl %q: want a positive Go duration such as \"24h\" (empty: never expires)", req.TTL)
		}
		ttl = d
	}
	a, err := h.agent(r)
	if err != nil {
		return err
	}
	t, token, err := h.o.Registry.CreateToken(r.Context(), a.ID, ttl)
	if err != nil {
		return fail(err, http.StatusConflict) // decommissioned
	}
	if err := h.audit(r, audit.Event{Type: "agent_token_created", AgentID: a.ID, Data: map[string]any{
		"token_id": t.ID, "expires_at": t.ExpiresAt, "by": c.by()}}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, CreatedToken{Token: TokenOf(t), Secret: token})
}

func (h *handler) revokeToken(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req reasonRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	a, err := h.agent(r)
	if err != nil {
		return err
	}
	id := r.PathValue("tokenID")
	toks, err := h.o.Registry.ListTokens(r.Context(), a.ID)
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	var before *store.AgentToken
	for i := range toks {
		if toks[i].ID == id {
			before = &toks[i]
		}
	}
	if before == nil {
		return errorf(http.StatusNotFound, "agent %s has no token %q", a.ID, id)
	}
	if err := h.o.Registry.RevokeToken(r.Context(), id); err != nil {
		return fail(err, http.StatusBadRequest)
	}
	if before.RevokedAt.IsZero() {
		if err := h.audit(r, audit.Event{Type: "agent_tokens_revoked", AgentID: a.ID, Data: map[string]any{
			"count": 1, "ids": []string{id}, "by": c.by(), "reason": req.Reason}}); err != nil {
			return err
		}
	}
	toks, err = h.o.Registry.ListTokens(r.Context(), a.ID)
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	for _, t := range toks {
		if t.ID == id {
			return writeJSON(w, http.StatusOK, TokenOf(t))
		}
	}
	return errorf(http.StatusNotFound, "agent %s has no token %q", a.ID, id)
}

// ---- emergency stop ----

func (h *handler) selector(r *http.Request) (registry.Selector, string, error) {
	var req selectorRequest
	if err := decode(r, &req); err != nil {
		return registry.Selector{}, "", err
	}
	sel := registry.Selector{All: req.All, Agent: strings.TrimSpace(req.Agent), Owner: strings.TrimSpace(req.Owner)}
	n := 0
	for _, set := range []bool{sel.All, sel.Agent != "", sel.Owner != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return sel, "", badRequest("choose exactly one of all, agent or owner")
	}
	if sel.Agent != "" {
		if _, err := h.o.Registry.GetAgent(r.Context(), sel.Agent); errors.Is(err, store.ErrNotFound) {
			return sel, "", errorf(http.StatusNotFound, "no agent %q", sel.Agent)
		}
	}
	if sel.Owner != "" {
		if _, err := h.o.Registry.ResolveUser(r.Context(), sel.Owner); errors.Is(err, store.ErrNotFound) {
			return sel, "", errorf(http.StatusNotFound, "no user %q", sel.Owner)
		}
	}
	return sel, req.Reason, nil
}

func (h *handler) stop(w http.ResponseWriter, r *http.Request, c *caller) error {
	sel, reason, err := h.selector(r)
	if err != nil {
		return err
	}
	if strings.TrimSpace(reason) == "" {
		return badRequest("reason is required: say why, it goes into the audit log and to the agents")
	}
	rep, err := h.o.Lifecycle.Stop(r.Context(), sel, c.by(), reason)
	if err != nil {
		return withReport(fail(err, http.StatusBadRequest), rep)
	}
	return writeJSON(w, http.StatusOK, rep)
}

func (h *handler) resume(w http.ResponseWriter, r *http.Request, c *caller) error {
	sel, reason, err := h.selector(r)
	if err != nil {
		return err
	}
	rep, err := h.o.Lifecycle.Resume(r.Context(), sel, c.by(), reason)
	if err != nil {
		return withReport(fail(err, http.StatusBadRequest), rep)
	}
	return writeJSON(w, http.StatusOK, rep)
}

// ---- approvals and credentials ----

func boolParam(s, name string) (bool, error) {
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, badRequest("%s=%q: want true or false", name, s)
	}
	return b, nil
}

func limitParam(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, badRequest("limit=%q: want a number, 0 for all", s)
	}
	return n, nil
}

func (h *handler) listApprovals(w http.ResponseWriter, r *http.Request, _ *caller) error {
	q := r.URL.Query()
	state := store.ApprovalState(q.Get("state"))
	if state != "" && !state.Valid() {
		return badRequest("state %q: want pending, approved, denied, expired or cancelled", state)
	}
	limit, err := limitParam(q.Get("limit"), 50)
	if err != nil {
		return err
	}
	list, err := h.o.Store.ListApprovals(r.Context(), store.ApprovalFilter{State: state, AgentID: q.Get("agent"), Limit: limit})
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	out := make([]Approval, 0, len(list))
	for _, a := range list {
		out = append(out, ApprovalOf(a))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (h *handler) getApproval(w http.ResponseWriter, r *http.Request, _ *caller) error {
	id := r.PathValue("id")
	a, err := h.o.Store.GetApproval(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "no approval %q", id)
	}
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	return writeJSON(w, http.StatusOK, ApprovalOf(a))
}

func (h *handler) listCredentials(w http.ResponseWriter, r *http.Request, _ *caller) error {
	q := r.URL.Query()
	live, err := boolParam(q.Get("live"), "live")
	if err != nil {
		return err
	}
	limit, err := limitParam(q.Get("limit"), 100)
	if err != nil {
		return err
	}
	now := h.now()
	creds, err := h.o.Store.ListCredentials(r.Context(), store.CredentialFilter{AgentID: q.Get("agent"), Live: live, Now: now, Limit: limit})
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	out := make([]Credential, 0, len(creds))
	for _, c := range creds {
		out = append(out, CredentialOf(c, now))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (h *handler) revokeCredential(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req reasonRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Reason) == "" {
		return badRequest("reason is required: say why, it goes into the audit log")
	}
	ctx := r.Context()
	id := r.PathValue("id")
	before, err := h.o.Store.GetCredential(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "no credential %q was issued by this interlock", id)
	}
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	var cr store.Credential
	if h.o.Issuer != nil {
		cr, err = h.o.Issuer.Revoke(ctx, id, req.Reason)
	} else {
		cr, err = h.o.Store.RevokeCredential(ctx, id, h.now(), req.Reason)
	}
	if err != nil {
		return fail(err, http.StatusBadRequest)
	}
	if err := h.audit(r, audit.Event{Type: "credential_revoked", CallID: cr.DecisionID, AgentID: cr.AgentID, Data: map[string]any{
		"credential_id": cr.ID, "decision_id": cr.DecisionID, "reason": req.Reason, "by": c.by(),
		"revoked_at": cr.RevokedAt, "already_revoked": !before.RevokedAt.IsZero(),
		"status_list": cr.StatusList, "status_index": cr.StatusIndex}}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, CredentialOf(cr, h.now()))
}
