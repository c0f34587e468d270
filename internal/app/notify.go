package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/notify"
	"github.com/interlock-dev/interlock/internal/store"
)

// PushStore is the part of the store notifications use: approvers' web
// push subscriptions.
type PushStore interface {
	ListPushSubscriptions(ctx context.Context, userID string) ([]store.PushSubscription, error)
	DeletePushSubscription(ctx context.Context, endpoint string) error
}

// NewDispatcher builds the notification dispatcher for the configured
// channels, recording every delivery attempt in the audit log through
// record (nil: not recorded). A web push subscription the push service
// reports gone is deleted from st. It returns nil when no channel is
// configured.
func NewDispatcher(cfg config.Notifications, st PushStore, record func(audit.Event), log *slog.Logger, now func() time.Time) *notify.Dispatcher {
	return newDispatcher(cfg, st, record, log, now, nil)
}

// newDispatcher is NewDispatcher with the HTTP client of the HTTP channels
// (nil: notify's default).
func newDispatcher(cfg config.Notifications, st PushStore, record func(audit.Event), log *slog.Logger, now func() time.Time, hc *http.Client) *notify.Dispatcher {
	if log == nil {
		log = slog.Default()
	}
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
	if wp, ok := webPushChannel(cfg.WebPush, log); ok {
		chans = append(chans, wp)
	}
	if len(chans) == 0 {
		return nil
	}
	return notify.New(notify.Options{Channels: chans, Logger: log, Now: now, HTTPClient: hc, Record: func(d notify.Delivery) {
		if d.Gone && st != nil && d.Endpoint != "" {
			// The browser unsubscribed or the subscription expired.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := st.DeletePushSubscription(ctx, d.Endpoint)
			cancel()
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				log.Warn("notify: could not delete a push subscription the push service reported gone", "recipient", d.Recipient, "err", err)
			} else {
				log.Info("notify: deleted a push subscription the push service reported gone", "recipient", d.Recipient)
			}
		}
		if record == nil {
			return
		}
		// Never the endpoint: it is a capability URL.
		data := map[string]any{"delivery_id": d.ID, "approval_id": d.ApprovalID, "channel": d.Channel,
			"recipient": d.Recipient, "attempt": d.Attempt, "ok": d.OK, "final": d.Final,
			"duration_us": d.Duration.Microseconds()}
		if d.Err != "" {
			data["error"] = d.Err
			data["permanent"] = d.Permanent
		}
		if d.Gone {
			data["subscription_gone"] = true
		}
		record(audit.Event{Type: "notification", Time: d.At, Data: data})
	}})
}

// webPushChannel is the Web Push channel for cfg, when it is configured.
func webPushChannel(cfg config.WebPush, log *slog.Logger) (notify.WebPush, bool) {
	if cfg.VAPIDPrivateKey == "" {
		return notify.WebPush{}, false
	}
	key, err := notify.ParseVAPIDPrivateKey(cfg.VAPIDPrivateKey)
	if err != nil {
		// Configuration validation refuses such a key before this runs.
		log.Error("notifications.web_push: the VAPID private key does not parse: web push is off", "err", err)
		return notify.WebPush{}, false
	}
	return notify.WebPush{VAPIDPrivateKey: key, Subject: cfg.Subject}, true
}

// vapidPublicKey is the browsers' applicationServerKey for cfg, "" when
// web push is off.
func vapidPublicKey(cfg config.WebPush) string {
	if cfg.VAPIDPrivateKey == "" {
		return ""
	}
	key, err := notify.ParseVAPIDPrivateKey(cfg.VAPIDPrivateKey)
	if err != nil {
		return ""
	}
	pub, err := notify.VAPIDPublicKey(key)
	if err != nil {
		return ""
	}
	return pub
}

// approvalNotifier tells approvers about approval requests through a
// dispatcher.
type approvalNotifier struct {
	d *notify.Dispatcher
	// push, when set, gives each approver their web push subscriptions
	// (nil: web push is off).
	push PushStore
	log  *slog.Logger
}

// newApprovalNotifier tells approvers through d; st gives their web push
// subscriptions when web push is configured.
func newApprovalNotifier(d *notify.Dispatcher, cfg config.Notifications, st PushStore, log *slog.Logger) approvalNotifier {
	n := approvalNotifier{d: d, log: log}
	if cfg.WebPush.VAPIDPrivateKey != "" {
		n.push = st
	}
	if n.log == nil {
		n.log = slog.Default()
	}
	return n
}

// Notify implements approval.Notifier.
func (n approvalNotifier) Notify(a store.Approval, approvers []store.User, link string) {
	to := make([]notify.Recipient, 0, len(approvers))
	for _, u := range approvers {
		r := notify.Recipient{UserID: u.ID, Email: u.Email, Name: u.Name}
		if n.push != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			subs, err := n.push.ListPushSubscriptions(ctx, u.ID)
			cancel()
			if err != nil {
				n.log.Warn("notify: could not read an approver's push subscriptions", "user", u.ID, "approval_id", a.ID, "err", err)
			}
			for _, s := range subs {
				r.Push = append(r.Push, notify.PushSubscription{Endpoint: s.Endpoint, P256dh: s.P256dh, Auth: s.Auth})
			}
		}
		to = append(to, r)
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
