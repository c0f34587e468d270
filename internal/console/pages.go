package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/store"
)

var pageNames = []string{"list.html", "detail.html", "login.html", "enroll.html", "error.html"}

func (c *Console) parseTemplates() error {
	funcs := template.FuncMap{
		"when": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		},
		"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	}
	c.pages = map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+name)
		if err != nil {
			return fmt.Errorf("console: template %s: %w", name, err)
		}
		c.pages[name] = t
	}
	return nil
}

// view is what every page's template gets.
type view struct {
	Base  string
	CSRF  string
	User  *store.User
	Page  string
	Title string
	Data  any
}

func (c *Console) render(w http.ResponseWriter, status int, name string, s *session, data any) {
	c.renderUser(w, status, name, s, nil, data)
}

func (c *Console) renderUser(w http.ResponseWriter, status int, name string, s *session, u *store.User, data any) {
	t := c.pages[name]
	var buf bytes.Buffer
	v := view{Base: c.o.BasePath, CSRF: c.csrf(s), User: u, Page: strings.TrimSuffix(name, ".html"), Data: data}
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		c.log.Error("console: rendering a page", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func (c *Console) serveStatic(w http.ResponseWriter, r *http.Request) {
	name := path.Clean(r.URL.Path)
	b, err := fs.ReadFile(c.static, strings.TrimPrefix(name, "/"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	switch path.Ext(name) {
	case ".js":
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	case ".css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	case ".svg":
		w.Header().Set("Content-Type", "image/svg+xml")
	case ".png":
		w.Header().Set("Content-Type", "image/png")
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(b)
}

// ---- sign-in and enrolment pages ----

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request, s *session) error {
	if s != nil && s.UID != "" {
		if u, err := c.o.Store.GetUser(r.Context(), s.UID); err == nil && u.Active {
			http.Redirect(w, r, c.safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
			return nil
		}
	}
	c.render(w, http.StatusOK, "login.html", s, map[string]any{"Next": c.safeNext(r.URL.Query().Get("next"))})
	return nil
}

func (c *Console) enrollPage(w http.ResponseWriter, r *http.Request, s *session) error {
	tok := r.PathValue("token")
	u, err := c.enrollUser(r.Context(), tok)
	if err != nil {
		return err
	}
	c.render(w, http.StatusOK, "enroll.html", s, map[string]any{"Token": tok, "Email": u.Email, "Name": u.Name})
	return nil
}

// ---- the list of pending approvals ----

// item is one approval in the list (HTML and JSON).
type item struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Agent     string    `json:"agent"`
	Tool      string    `json:"tool"`
	Message   string    `json:"message"`
	Risk      int       `json:"risk"`
	Approvals int       `json:"approvals"`
	Quorum    int       `json:"quorum"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (c *Console) pending(ctx context.Context, u store.User) ([]item, error) {
	list, err := c.o.Approvals.Pending(ctx, u)
	if err != nil {
		return nil, err
	}
	now := c.o.Now()
	names := map[string]string{}
	out := make([]item, 0, len(list))
	for _, a := range list {
		if !now.Before(a.ExpiresAt) {
			continue
		}
		out = append(out, item{ID: a.ID, URL: c.approvalPath(a.ID), Agent: c.agentName(ctx, a.AgentID, names),
			Tool: a.Upstream + "." + a.Tool, Message: a.BindingMessage, Risk: a.RiskScore,
			Approvals: len(approval.Approvers(a)), Quorum: a.Quorum, CreatedAt: a.CreatedAt, ExpiresAt: a.ExpiresAt})
	}
	return out, nil
}

func (c *Console) approvalPath(id string) string {
	return c.o.BasePath + "/approvals/" + url.PathEscape(id)
}

func (c *Console) agentName(ctx context.Context, id string, cache map[string]string) string {
	if n, ok := cache[id]; ok {
		return n
	}
	n := id
	if ag, err := c.o.Store.GetAgent(ctx, id); err == nil && ag.Name != "" && ag.Name != id {
		n = ag.Name + " (" + id + ")"
	}
	cache[id] = n
	return n
}

func (c *Console) listPage(w http.ResponseWriter, r *http.Request, s *session) error {
	u, err := c.signedIn(r, s, true)
	if err != nil {
		return err
	}
	items, err := c.pending(r.Context(), u)
	if err != nil {
		return err
	}
	data := map[string]any{"Items": items, "PushKey": c.o.VAPIDPublicKey}
	if c.o.Notices != nil && (slices.Contains(u.Roles, "security") || slices.Contains(u.Roles, "admin")) {
		notices, err := c.o.Notices(r.Context())
		if err != nil {
			c.log.Warn("console: reading security notices", "err", err)
		}
		data["Notices"] = notices
		data["ShowNotices"] = true
	}
	c.renderUser(w, http.StatusOK, "list.html", s, &u, data)
	return nil
}

func (c *Console) apiPending(w http.ResponseWriter, r *http.Request, s *session) error {
	u, err := c.signedIn(r, s, false)
	if err != nil {
		return err
	}
	items, err := c.pending(r.Context(), u)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"pending": items})
	return nil
}

// ---- one approval ----

type voteView struct {
	Email   string
	Approve bool
	Reason  string
	Method  string
	At      time.Time
}

type detail struct {
	A             store.Approval
	Agent         string
	Owner         string
	Tool          string
	Arguments     string
	ApproversText string
	Approvals     int
	Votes         []voteView
	State         string
	Pending       bool
	CanVote       bool
	CannotVote    string
}

type historyItem struct {
	item
	State string
}

func (c *Console) detailPage(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	u, err := c.signedIn(r, s, true)
	if err != nil {
		return err
	}
	a, err := c.o.Approvals.Get(ctx, r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "There is no such request.", err)
	}
	if err != nil {
		return err
	}
	now := c.o.Now()
	canErr := c.o.Approvals.CanVote(ctx, a, u)
	if !c.mayView(a, u, canErr) {
		return errorf(http.StatusForbidden, "You may not see this request: you are neither the agent's owner nor one of its approvers.", nil)
	}
	d := detail{A: a, Tool: a.Upstream + "." + a.Tool, ApproversText: approval.ApproversText(a.Approvers),
		Approvals: len(approval.Approvers(a)), State: stateText(a, now)}
	names := map[string]string{}
	d.Agent = c.agentName(ctx, a.AgentID, names)
	d.Owner = a.OwnerID
	if ow, err := c.o.Store.GetUser(ctx, a.OwnerID); err == nil {
		d.Owner = ow.Email
	}
	d.Arguments = prettyJSON(a.Arguments)
	for _, v := range a.Votes {
		d.Votes = append(d.Votes, voteView{Email: v.Email, Approve: v.Approve, Reason: v.Reason, Method: v.Method, At: v.At})
	}
	d.Pending = a.State == store.ApprovalPending && now.Before(a.ExpiresAt)
	switch {
	case !d.Pending:
		d.CannotVote = "This request is no longer pending."
	case canErr != nil:
		var he *httpError
		if errors.As(voteError(a, canErr), &he) {
			d.CannotVote = he.Msg
		} else {
			d.CannotVote = "You cannot vote on this request."
		}
	default:
		d.CanVote = true
	}
	hist, err := c.o.Approvals.List(ctx, store.ApprovalFilter{AgentID: a.AgentID, Limit: 11})
	if err != nil {
		return err
	}
	var history []historyItem
	for _, h := range hist {
		if h.ID == a.ID || len(history) == 10 {
			continue
		}
		history = append(history, historyItem{item: item{ID: h.ID, URL: c.approvalPath(h.ID), Tool: h.Upstream + "." + h.Tool,
			Message: h.BindingMessage, Risk: h.RiskScore, CreatedAt: h.CreatedAt, ExpiresAt: h.ExpiresAt}, State: stateText(h, now)})
	}
	c.renderUser(w, http.StatusOK, "detail.html", s, &u, map[string]any{"D": d, "History": history})
	return nil
}

// mayView: the agent's owner, anyone who voted, anyone who may vote or
// could but for separation of duties or an earlier vote, and admins.
func (c *Console) mayView(a store.Approval, u store.User, canErr error) bool {
	if u.ID == a.OwnerID || slices.Contains(u.Roles, "admin") {
		return true
	}
	for _, v := range a.Votes {
		if v.UserID == u.ID {
			return true
		}
	}
	return canErr == nil || errors.Is(canErr, approval.ErrSeparationOfDuties) || errors.Is(canErr, store.ErrAlreadyExists)
}

// stateText is the state for people ("pending", "approved", ...), with
// "expired" for a pending request past its expiry.
func stateText(a store.Approval, now time.Time) string {
	if a.State == store.ApprovalPending && !now.Before(a.ExpiresAt) {
		return "expired"
	}
	return string(a.State)
}

func prettyJSON(b []byte) string {
	if len(b) == 0 {
		return "{}"
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return string(b)
	}
	return out.String()
}
