package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/adminapi"
	"github.com/interlock-dev/interlock/internal/notify"
	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/scim"
	"github.com/interlock-dev/interlock/internal/store"
)

// Lifecycle returns the owner and agent lifecycle operations (the kill
// switch) wired to this gateway: audited, revoking through the credential
// issuer, cancelling through the approval service (which wakes held calls
// at once), closing the relay's sessions, and telling security through the
// log and, when notifications are configured, through them (webhooks,
// Slack, email, web push) to every active user with role security or
// admin. The console shows the same notices from the audit log.
func (a *App) Lifecycle() *registry.Lifecycle {
	var d *notify.Dispatcher
	if a.decision != nil {
		d = a.decision.dispatcher
	}
	return registry.NewLifecycle(a.Registry, registry.LifecycleOptions{
		Audit:       a.Audit,
		Credentials: a.Issuer,
		Approvals:   a.Approvals,
		Sessions:    a.Relay,
		Notifier:    a.securityNotifier(d),
	})
}

// SecurityRoles are the roles of the users told when agents are stopped.
var SecurityRoles = []string{"security", "admin"}

// securityNotifier logs each notice and sends it through d (when set) to
// the active users with a SecurityRoles role.
func (a *App) securityNotifier(d *notify.Dispatcher) registry.Notifier {
	logN := registry.LogNotifier(a.log)
	if d == nil {
		return logN
	}
	var push PushStore
	if a.Config.Notifications.WebPush.VAPIDPrivateKey != "" {
		push = a.Store
	}
	link := strings.TrimRight(a.Config.PublicURL, "/") + "/console/"
	st, log := a.Store, a.log
	return registry.NotifierFunc(func(ctx context.Context, n registry.Notice) {
		logN.Notify(ctx, n)
		if len(n.Report.Agents) == 0 && len(n.Report.CredentialsRevoked) == 0 && len(n.Report.ApprovalsCancelled) == 0 {
			return // nothing was stopped (e.g. an owner without agents)
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		to, err := securityRecipients(ctx, st, push, log)
		if err != nil {
			log.Error("security notice: could not list the users to tell", "kind", n.Kind, "story", n.Report.Story, "err", err)
			return
		}
		if len(to) == 0 {
			log.Warn("security notice: no active user has role security or admin to tell", "kind", n.Kind, "story", n.Report.Story)
			return
		}
		d.Notify(securityMessage(n, link), to)
	})
}

// securityRecipients are the active users with a SecurityRoles role, with
// their web push subscriptions when push is set.
func securityRecipients(ctx context.Context, st store.Store, push PushStore, log *slog.Logger) ([]notify.Recipient, error) {
	users, err := st.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	var to []notify.Recipient
	for _, u := range users {
		if !u.Active || !slices.ContainsFunc(u.Roles, func(r string) bool { return slices.Contains(SecurityRoles, r) }) {
			continue
		}
		r := notify.Recipient{UserID: u.ID, Email: u.Email, Name: u.Name}
		if push != nil {
			subs, err := push.ListPushSubscriptions(ctx, u.ID)
			if err != nil {
				log.Warn("security notice: could not read a user's push subscriptions", "user", u.ID, "err", err)
			}
			for _, s := range subs {
				r.Push = append(r.Push, notify.PushSubscription{Endpoint: s.Endpoint, P256dh: s.P256dh, Auth: s.Auth})
			}
		}
		to = append(to, r)
	}
	return to, nil
}

// securityMessage says what a lifecycle notice stopped, for humans.
func securityMessage(n registry.Notice, link string) notify.Message {
	rep := n.Report
	var what, title string
	switch n.Kind {
	case "user_deactivated", "user_deleted":
		verb := "deactivated"
		if n.Kind == "user_deleted" {
			verb = "deleted"
		}
		email := ""
		if n.User != nil {
			email = n.User.Email
		}
		title = fmt.Sprintf("interlock: agents stopped: owner %s %s", email, verb)
		what = fmt.Sprintf("%s was %s by %s; %s orphaned", email, verb, n.By, agentsText(rep.Agents))
	case "emergency_stop":
		title = "interlock: agents stopped: emergency stop"
		what = fmt.Sprintf("Emergency stop by %s: %s suspended", n.By, agentsText(rep.Agents))
	case "agent_suspended":
		title = "interlock: agent stopped: suspended"
		what = fmt.Sprintf("%s suspended by %s", agentsText(rep.Agents), n.By)
	case "agent_decommissioned":
		title = "interlock: agent stopped: decommissioned"
		what = fmt.Sprintf("%s decommissioned by %s", agentsText(rep.Agents), n.By)
	default:
		title = "interlock: agents stopped"
		what = fmt.Sprintf("%s: %s stopped by %s", n.Kind, agentsText(rep.Agents), n.By)
	}
	if n.Reason != "" {
		what += fmt.Sprintf(" (reason: %s)", n.Reason)
	}
	text := fmt.Sprintf("%s. Pending approvals cancelled: %d; live credentials revoked: %d; open sessions closed: %d",
		what, len(rep.ApprovalsCancelled), len(rep.CredentialsRevoked), rep.SessionsClosed)
	if len(rep.TokensRevoked) > 0 {
		text += fmt.Sprintf("; agent tokens revoked: %d", len(rep.TokensRevoked))
	}
	text += "."
	if n.Kind == "user_deactivated" || n.Kind == "user_deleted" {
		text += " Reassign each agent to an active owner (interlock agents reassign ID --to EMAIL) or decommission it."
	}
	return notify.Message{
		Event: notify.EventSecurity,
		Title: title,
		Text:  text,
		URL:   link,
		Data: map[string]any{"kind": n.Kind, "at": n.At.UTC(), "by": n.By, "reason": n.Reason, "story": rep.Story,
			"user": userEmail(n.User), "agents": nonNil(rep.Agents), "approvals_cancelled": nonNil(rep.ApprovalsCancelled),
			"credentials_revoked": nonNil(rep.CredentialsRevoked), "tokens_revoked": nonNil(rep.TokensRevoked),
			"sessions_closed": rep.SessionsClosed},
	}
}

func userEmail(u *store.User) string {
	if u == nil {
		return ""
	}
	return u.Email
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// agentsText names the agents: "agent a1", "3 agents (a1, a2, a3)", at
// most ten by name.
func agentsText(ids []string) string {
	switch len(ids) {
	case 0:
		return "no agent"
	case 1:
		return "agent " + ids[0]
	}
	shown := ids
	more := ""
	if len(ids) > 10 {
		shown, more = ids[:10], ", ..."
	}
	return fmt.Sprintf("%d agents (%s%s)", len(ids), strings.Join(shown, ", "), more)
}

// scimHandler returns the SCIM 2.0 service provider, or nil when SCIM is
// off (no scim.token).
func (a *App) scimHandler() http.Handler {
	if a.Config.SCIM.Token == "" {
		return nil
	}
	base := ""
	if a.Config.PublicURL != "" {
		base = strings.TrimRight(a.Config.PublicURL, "/") + "/scim/v2"
	}
	return scim.New(scim.Options{
		Directory: registry.NewSCIMDirectory(a.Lifecycle()),
		Token:     a.Config.SCIM.Token,
		BaseURL:   base,
		Logger:    a.log,
	})
}

// apiHandler returns the admin API, or nil when it is off (no admin
// token configured).
func (a *App) apiHandler() http.Handler {
	if len(a.Config.Admin.Tokens) == 0 {
		return nil
	}
	tokens := make([]adminapi.AdminToken, 0, len(a.Config.Admin.Tokens))
	for _, t := range a.Config.Admin.Tokens {
		tok, err := adminapi.ParseToken(t.Name, t.SHA256, t.Roles)
		if err != nil { // Validate has checked it
			a.log.Error("admin token ignored", "name", t.Name, "err", err)
			continue
		}
		tokens = append(tokens, tok)
	}
	o := adminapi.Options{
		Tokens:    tokens,
		Registry:  a.Registry,
		Lifecycle: a.Lifecycle(),
		Store:     a.Store,
		Audit:     a.Audit,
		Logger:    a.log,
	}
	if a.Issuer != nil {
		o.Issuer = a.Issuer
	}
	return adminapi.New(o)
}
