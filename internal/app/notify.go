package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/notify"
	"github.com/interlock-dev/interlock/internal/store"
)

// NewDispatcher builds the notification dispatcher for the configured
// channels, recording every delivery attempt in the audit log through
// record (nil: not recorded). It returns nil when no channel is
// configured.
func NewDispatcher(cfg config.Notifications, record func(audit.Event), log *slog.Logger, now func() time.Time) *notify.Dispatcher {
	var chans []notify.Channel
	for _, w := range cfg.Webhooks {
		chans = append(chans, notify.Webhook{URL: w.URL, Secret: []byte(w.Secret)})
	}
	for _, s := range cfg.Slack {
		chans = append(chans, notify.Slack{URL: s.URL})
	}
	if m := cfg.SMTP; m.Addr != "" {
		mode := notify.TLSMode(m.TLS)
		if mode == "" {
			mode = notify.StartTLS
		}
		chans = append(chans, notify.SMTP{Addr: m.Addr, From: m.From, Username: m.Username, Password: m.Password, TLS: mode})
	}
	if len(chans) == 0 {
		return nil
	}
	return notify.New(notify.Options{Channels: chans, Logger: log, Now: now, Record: func(d notify.Delivery) {
		if record == nil {
			return
		}
		data := map[string]any{"delivery_id": d.ID, "approval_id": d.ApprovalID, "channel": d.Channel,
			"recipient": d.Recipient, "attempt": d.Attempt, "ok": d.OK, "final": d.Final,
			"duration_us": d.Duration.Microseconds()}
		if d.Err != "" {
			data["error"] = d.Err
			data["permanent"] = d.Permanent
		}
		record(audit.Event{Type: "notification", Time: d.At, Data: data})
	}})
}

// approvalNotifier tells approvers about approval requests through a
// dispatcher.
type approvalNotifier struct {
	d *notify.Dispatcher
}

// Notify implements approval.Notifier.
func (n approvalNotifier) Notify(a store.Approval, approvers []store.User, link string) {
	to := make([]notify.Recipient, 0, len(approvers))
	for _, u := range approvers {
		to = append(to, notify.Recipient{UserID: u.ID, Email: u.Email, Name: u.Name})
	}
	n.d.Notify(notify.Message{
		ApprovalID: a.ID,
		Title:      fmt.Sprintf("Approval needed: %s.%s", a.Upstream, a.Tool),
		Text:       a.BindingMessage,
		URL:        link,
		Expires:    a.ExpiresAt,
		Data: map[string]any{"agent": a.AgentID, "tool": a.Upstream + "." + a.Tool, "rule": a.Rule,
			"risk_score": a.RiskScore, "expires_at": a.ExpiresAt, "approvers": a.Approvers, "quorum": a.Quorum},
	}, to)
}

// closeDispatcher waits a little for deliveries in flight.
func closeDispatcher(d *notify.Dispatcher, log *slog.Logger) {
	if d == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		log.Warn("notifications still in flight were dropped at shutdown", "err", err)
	}
}
