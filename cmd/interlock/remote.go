package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/internal/adminapi"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/store"
)

// The CLI against a running gateway: with --server URL (env
// INTERLOCK_SERVER) and --admin-token T (env INTERLOCK_ADMIN_TOKEN), the
// users, agents, tokens, stop, resume, approvals list|show and credentials
// list|revoke commands call the gateway's admin API (/api/v1) instead of
// opening the store, and print the same output.
// The gateway applies the change itself: it closes the agents' open
// sessions at once and audits the change as "admin:<token name>".

// addServerFlags adds --server and --admin-token to a command that can
// work against a running gateway.
func (c *cli) addServerFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.server, "server", "", "call this running gateway's admin API (e.g. https://gw.example.com) instead of opening the store (env INTERLOCK_SERVER)")
	cmd.Flags().StringVar(&c.adminToken, "admin-token", "", "admin token for --server (env INTERLOCK_ADMIN_TOKEN)")
}

// remoteClient returns the admin API client when the command is to work
// against a server: --server, or INTERLOCK_SERVER unless --config was
// given. It returns nil to work on the local store.
func (c *cli) remoteClient(cmd *cobra.Command) (*adminClient, error) {
	server := c.server
	if server == "" && !cmd.Flags().Changed("config") {
		server = os.Getenv("INTERLOCK_SERVER")
	}
	if server == "" {
		if cmd.Flags().Changed("admin-token") {
			return nil, errors.New("--admin-token needs --server (or INTERLOCK_SERVER)")
		}
		return nil, nil
	}
	if cmd.Flags().Changed("server") && cmd.Flags().Changed("config") {
		return nil, errors.New("give --server or --config, not both")
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("--server %q: want the gateway's URL, e.g. https://gw.example.com", server)
	}
	token := c.adminToken
	if token == "" {
		token = os.Getenv("INTERLOCK_ADMIN_TOKEN")
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, errors.New("--server needs an admin token: --admin-token or INTERLOCK_ADMIN_TOKEN (make one with: interlock admin token)")
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		fmt.Fprintf(c.stderr, "interlock: warning: sending the admin token to %s without TLS\n", u.Host)
	}
	c.remote = true
	return &adminClient{base: strings.TrimRight(u.String(), "/") + "/api/v1", token: token,
		hc: &http.Client{Timeout: 2 * time.Minute}}, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// adminClient calls the admin API.
type adminClient struct {
	base, token string
	hc          *http.Client
}

// remoteError is an error answer of the admin API.
type remoteError struct {
	status int
	msg    string
	report *registry.Report
}

func (e *remoteError) Error() string {
	s := fmt.Sprintf("the server refused (%d %s): %s", e.status, http.StatusText(e.status), e.msg)
	switch e.status {
	case http.StatusUnauthorized:
		s += " (check --admin-token or INTERLOCK_ADMIN_TOKEN)"
	case http.StatusForbidden:
		s += " (use an admin token with that role)"
	}
	return s
}

// do sends a request with a JSON body (nil: none) and decodes the JSON
// answer into out (nil: ignored).
func (a *adminClient) do(ctx context.Context, method, path string, q url.Values, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := a.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("calling the admin API: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading the admin API's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error  string           `json:"error"`
			Report *registry.Report `json:"report"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
			if len(e.Error) > 300 {
				e.Error = e.Error[:300] + "..."
			}
			if resp.StatusCode == http.StatusNotFound && e.Error == "404 page not found" {
				e.Error = "no admin API at " + a.base + " (is admin.tokens configured on the gateway?)"
			}
		}
		return &remoteError{status: resp.StatusCode, msg: e.Error, report: e.Report}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding the admin API's answer: %w", err)
	}
	return nil
}

func esc(s string) string { return url.PathEscape(s) }

// reportOf returns the report carried by a failed lifecycle request.
func reportOf(err error) (registry.Report, bool) {
	var re *remoteError
	if errors.As(err, &re) && re.report != nil {
		return *re.report, true
	}
	return registry.Report{}, false
}

// ---- the calls the commands make ----

// getList GETs a list of views from path and returns what they show.
func getList[V interface{ Store() S }, S any](ctx context.Context, a *adminClient, path string, q url.Values) ([]S, error) {
	var vs []V
	if err := a.do(ctx, "GET", path, q, nil, &vs); err != nil {
		return nil, err
	}
	out := make([]S, 0, len(vs))
	for _, v := range vs {
		out = append(out, v.Store())
	}
	return out, nil
}

func (a *adminClient) createUser(ctx context.Context, spec registry.UserSpec) (store.User, error) {
	var u adminapi.User
	err := a.do(ctx, "POST", "/users", nil, map[string]any{"email": spec.Email, "name": spec.Name, "roles": spec.Roles}, &u)
	return u.Store(), err
}

func (a *adminClient) listUsers(ctx context.Context) ([]store.User, error) {
	return getList[adminapi.User](ctx, a, "/users", nil)
}

func (a *adminClient) showUser(ctx context.Context, ref string) (store.User, []store.Agent, error) {
	var d adminapi.UserDetail
	if err := a.do(ctx, "GET", "/users/"+esc(ref), nil, nil, &d); err != nil {
		return store.User{}, nil, err
	}
	var owned []store.Agent
	for _, r := range d.Agents {
		owned = append(owned, store.Agent{ID: r.ID, OwnerID: d.ID, State: r.State})
	}
	return d.User.Store(), owned, nil
}

func (a *adminClient) deactivateUser(ctx context.Context, ref, reason string) (store.User, registry.Report, error) {
	var res adminapi.DeactivateResult
	err := a.do(ctx, "POST", "/users/"+esc(ref)+"/deactivate", nil, map[string]string{"reason": reason}, &res)
	if rep, ok := reportOf(err); ok {
		res.Report = rep
	}
	return res.User.Store(), res.Report, err
}

func (a *adminClient) activateUser(ctx context.Context, ref, reason string) (store.User, error) {
	var u adminapi.User
	err := a.do(ctx, "POST", "/users/"+esc(ref)+"/activate", nil, map[string]string{"reason": reason}, &u)
	return u.Store(), err
}

func (a *adminClient) createAgent(ctx context.Context, spec registry.AgentSpec) (store.Agent, string, error) {
	var res adminapi.CreatedAgent
	err := a.do(ctx, "POST", "/agents", nil, map[string]any{"id": spec.ID, "owner": spec.OwnerEmail, "name": spec.Name,
		"department": spec.Department, "purpose": spec.Purpose, "allowed_upstreams": spec.AllowedUpstreams}, &res)
	return res.Agent.Store(), res.Token, err
}

// listAgents returns the agents in state ("" for all) and their owners'
// emails by user id.
func (a *adminClient) listAgents(ctx context.Context, state string) ([]store.Agent, map[string]string, error) {
	q := url.Values{}
	if state != "" {
		q.Set("state", state)
	}
	var as []adminapi.Agent
	if err := a.do(ctx, "GET", "/agents", q, nil, &as); err != nil {
		return nil, nil, err
	}
	out := make([]store.Agent, 0, len(as))
	owners := map[string]string{}
	for _, x := range as {
		out = append(out, x.Store())
		owners[x.OwnerID] = x.Owner
	}
	return out, owners, nil
}

func (a *adminClient) showAgent(ctx context.Context, id string) (store.Agent, store.User, []store.AgentToken, []store.AuditEvent, error) {
	var d adminapi.AgentDetail
	if err := a.do(ctx, "GET", "/agents/"+esc(id), nil, nil, &d); err != nil {
		return store.Agent{}, store.User{}, nil, nil, err
	}
	owner := store.User{ID: d.OwnerID, Email: d.Owner, Active: d.OwnerActive}
	toks := make([]store.AgentToken, 0, len(d.Tokens))
	for _, t := range d.Tokens {
		toks = append(toks, t.Store())
	}
	hist := make([]store.AuditEvent, 0, len(d.History))
	for _, ev := range d.History {
		hist = append(hist, ev.Store())
	}
	return d.Agent.Store(), owner, toks, hist, nil
}

// agentReport posts to an agent operation that answers with a report.
func (a *adminClient) agentReport(ctx context.Context, id, op, reason string) (registry.Report, error) {
	var rep registry.Report
	err := a.do(ctx, "POST", "/agents/"+esc(id)+"/"+op, nil, map[string]string{"reason": reason}, &rep)
	if r, ok := reportOf(err); ok {
		rep = r
	}
	return rep, err
}

func (a *adminClient) resumeAgent(ctx context.Context, id, reason string) (store.Agent, error) {
	var ag adminapi.Agent
	err := a.do(ctx, "POST", "/agents/"+esc(id)+"/resume", nil, map[string]string{"reason": reason}, &ag)
	return ag.Store(), err
}

func (a *adminClient) reassignAgent(ctx context.Context, id, to, reason string) (store.Agent, error) {
	var ag adminapi.Agent
	err := a.do(ctx, "POST", "/agents/"+esc(id)+"/reassign", nil, map[string]string{"to": to, "reason": reason}, &ag)
	return ag.Store(), err
}

func (a *adminClient) createToken(ctx context.Context, agentID string, ttl time.Duration) (store.AgentToken, string, error) {
	body := map[string]string{}
	if ttl != 0 {
		body["ttl"] = ttl.String()
	}
	var res adminapi.CreatedToken
	err := a.do(ctx, "POST", "/agents/"+esc(agentID)+"/tokens", nil, body, &res)
	return res.Token.Store(), res.Secret, err
}

func (a *adminClient) listTokens(ctx context.Context, agentID string) ([]store.AgentToken, error) {
	return getList[adminapi.Token](ctx, a, "/agents/"+esc(agentID)+"/tokens", nil)
}

func (a *adminClient) revokeToken(ctx context.Context, agentID, tokenID string) error {
	return a.do(ctx, "POST", "/agents/"+esc(agentID)+"/tokens/"+esc(tokenID)+"/revoke", nil, map[string]string{}, nil)
}

func (a *adminClient) listApprovals(ctx context.Context, f store.ApprovalFilter) ([]store.Approval, error) {
	q := url.Values{"limit": {strconv.Itoa(f.Limit)}}
	if f.State != "" {
		q.Set("state", string(f.State))
	}
	if f.AgentID != "" {
		q.Set("agent", f.AgentID)
	}
	return getList[adminapi.Approval](ctx, a, "/approvals", q)
}

func (a *adminClient) getApproval(ctx context.Context, id string) (store.Approval, error) {
	var ap adminapi.Approval
	err := a.do(ctx, "GET", "/approvals/"+esc(id), nil, nil, &ap)
	return ap.Store(), err
}

func (a *adminClient) listCredentials(ctx context.Context, f store.CredentialFilter) ([]store.Credential, error) {
	q := url.Values{"limit": {strconv.Itoa(f.Limit)}}
	if f.AgentID != "" {
		q.Set("agent", f.AgentID)
	}
	if f.Live {
		q.Set("live", "true")
	}
	return getList[adminapi.Credential](ctx, a, "/credentials", q)
}

func (a *adminClient) revokeCredential(ctx context.Context, id, reason string) (store.Credential, error) {
	var c adminapi.Credential
	err := a.do(ctx, "POST", "/credentials/"+esc(id)+"/revoke", nil, map[string]string{"reason": reason}, &c)
	return c.Store(), err
}

// stopResume posts an emergency stop (or resume).
func (a *adminClient) stopResume(ctx context.Context, stop bool, sel registry.Selector, reason string) (registry.Report, error) {
	path := "/resume"
	if stop {
		path = "/stop"
	}
	var rep registry.Report
	err := a.do(ctx, "POST", path, nil, map[string]any{"all": sel.All, "agent": sel.Agent, "owner": sel.Owner, "reason": reason}, &rep)
	if r, ok := reportOf(err); ok {
		rep = r
	}
	return rep, err
}
