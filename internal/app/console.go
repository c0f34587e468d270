package app

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/console"
	"github.com/interlock-dev/interlock/internal/store"
)

const consoleKeyName = "console.session_key"

// ErrConsoleOff: the console cannot run with this configuration (see the
// log line that says why).
var ErrConsoleOff = errors.New("the approvers' console is off: public_url must name a host (passkeys are bound to a domain name), e.g. http://localhost:8470")

// NewConsole builds the approvers' console for the gateway's public URL:
// the WebAuthn relying party is its host, the origin its scheme and host.
// The session key lives in the store, so that every replica shares it.
func NewConsole(ctx context.Context, cfg *config.Config, st store.Store, apr *approval.Service, log *slog.Logger, now func() time.Time) (*console.Console, error) {
	u, err := url.Parse(cfg.PublicURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("console: public_url %q: %v", cfg.PublicURL, err)
	}
	if net.ParseIP(u.Hostname()) != nil {
		// Passkeys are bound to a domain name, never to an address.
		log.Warn("the approvers' console is off: passkeys need a domain name in public_url, not an IP address (for a local gateway use http://localhost:PORT)",
			"public_url", cfg.PublicURL)
		return nil, ErrConsoleOff
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if key, err = st.PutMetaIfAbsent(ctx, consoleKeyName, key); err != nil {
		return nil, fmt.Errorf("console: session key: %w", err)
	}
	c, err := console.New(console.Options{
		Store: st, Approvals: apr,
		RPID:       u.Hostname(),
		RPOrigins:  []string{u.Scheme + "://" + u.Host},
		URL:        cfg.PublicURL + "/console",
		SessionKey: key,
		Notices:    securityNotices(st),
		// Web Push: browsers subscribe with the public half of the VAPID key.
		VAPIDPublicKey: vapidPublicKey(cfg.Notifications.WebPush),
		Now:            now,
		Logger:         log,
	})
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	return c, nil
}

// Enroll makes a one-time link through which user registers a passkey for
// the console.
func (a *App) Enroll(ctx context.Context, userID, by string, ttl time.Duration) (string, error) {
	if a.Console == nil {
		return "", ErrConsoleOff
	}
	return a.Console.CreateEnrollment(ctx, userID, by, ttl)
}

// noticeTypes are the audit events shown as security notices.
var noticeTypes = []string{"user_deactivated", "user_deleted", "agent_orphaned", "agent_suspended", "agent_decommissioned", "emergency_stop"}

// securityNotices reads the most recent kill-switch events from the audit
// log (looking at the last few thousand events only, so a page view stays
// cheap however long the log is).
func securityNotices(st store.Store) func(ctx context.Context) ([]console.Notice, error) {
	const lookBack, most = 5000, 20
	return func(ctx context.Context) ([]console.Notice, error) {
		head, err := st.AuditHead(ctx)
		if err != nil {
			return nil, err
		}
		evs, err := st.ListAudit(ctx, store.AuditFilter{AfterSeq: max(head.Seq-lookBack, 0), Types: noticeTypes})
		if err != nil {
			return nil, err
		}
		var out []console.Notice
		for i := len(evs) - 1; i >= 0 && len(out) < most; i-- {
			out = append(out, console.Notice{Time: evs[i].Time, Text: noticeText(evs[i])})
		}
		return out, nil
	}
}

// noticeText says an event in a line.
func noticeText(ev store.AuditEvent) string {
	var d struct {
		Email, Owner, By, Reason string
		User                     string `json:"user"`
		Agents                   []string
	}
	json.Unmarshal(ev.Data, &d)
	who := d.By
	if who == "" {
		who = "someone"
	}
	var s string
	switch ev.Type {
	case "user_deactivated", "user_deleted":
		name := d.Email
		if name == "" {
			name = d.User
		}
		s = fmt.Sprintf("%s was %s by %s", name, strings.TrimPrefix(ev.Type, "user_"), who)
	case "agent_orphaned":
		s = fmt.Sprintf("agent %s orphaned", ev.AgentID)
		if d.Reason == "" {
			s += fmt.Sprintf(": its owner %s is no longer active", d.Owner)
		}
	case "emergency_stop":
		s = fmt.Sprintf("emergency stop by %s: %d agent(s) suspended", who, len(d.Agents))
	default:
		s = fmt.Sprintf("agent %s %s by %s", ev.AgentID, strings.TrimPrefix(ev.Type, "agent_"), who)
	}
	if d.Reason != "" {
		s += " (" + d.Reason + ")"
	}
	return s
}
