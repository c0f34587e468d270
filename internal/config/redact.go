package config

import (
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// RedactedValue replaces every secret in Redacted, String and LogValue.
const RedactedValue = "[redacted]"

// Redacted returns a deep copy of c that is safe to log: every header value
// and env value becomes "[redacted]", and so do passwords and query values
// in URLs and the DSN. Names (header names, env names) are kept. Command
// arguments are kept as written: pass secrets to stdio servers through env.
func (c Config) Redacted() Config {
	r := c
	r.AllowedHosts = slices.Clone(c.AllowedHosts)
	r.Storage.DSN = redactURL(c.Storage.DSN)
	r.Upstreams = make([]Upstream, len(c.Upstreams))
	for i, u := range c.Upstreams {
		u.URL = redactURL(u.URL)
		u.Headers = redactMap(u.Headers)
		u.Env = redactMap(u.Env)
		u.Command = slices.Clone(u.Command)
		r.Upstreams[i] = u
	}
	if c.Upstreams == nil {
		r.Upstreams = nil
	}
	if c.SCIM.Token != "" {
		r.SCIM.Token = RedactedValue
	}
	// Admin tokens are stored as hashes, not secrets; still, a log is no
	// place for them.
	r.Admin.Tokens = nil
	for _, t := range c.Admin.Tokens {
		r.Admin.Tokens = append(r.Admin.Tokens, AdminToken{Name: t.Name, SHA256: RedactedValue, Roles: slices.Clone(t.Roles)})
	}
	r.Notifications.Webhooks = nil
	for _, w := range c.Notifications.Webhooks {
		r.Notifications.Webhooks = append(r.Notifications.Webhooks, Webhook{URL: redactURL(w.URL), Secret: RedactedValue})
	}
	r.Notifications.Slack = nil
	for range c.Notifications.Slack {
		r.Notifications.Slack = append(r.Notifications.Slack, SlackWebhook{URL: RedactedValue}) // the URL is the secret
	}
	if r.Notifications.SMTP.Password != "" {
		r.Notifications.SMTP.Password = RedactedValue
	}
	if r.Notifications.WebPush.VAPIDPrivateKey != "" {
		r.Notifications.WebPush.VAPIDPrivateKey = RedactedValue
	}
	// CIBA clients: the keys are public; a notification endpoint is
	// redacted like any URL.
	r.CIBA.Clients = nil
	for _, cl := range c.CIBA.Clients {
		cl.NotificationEndpoint = redactURL(cl.NotificationEndpoint)
		r.CIBA.Clients = append(r.CIBA.Clients, cl)
	}
	return r
}

func redactMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k := range m {
		out[k] = RedactedValue
	}
	return out
}

// redactURL hides the user info and query values of a URL-shaped string.
// Anything else (a file path) is returned unchanged.
func redactURL(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return RedactedValue
	}
	userinfo := ""
	if u.User != nil {
		userinfo = RedactedValue + "@"
		u.User = nil
	}
	if u.RawQuery != "" {
		pairs := strings.Split(u.RawQuery, "&")
		for i, p := range pairs {
			k, _, _ := strings.Cut(p, "=")
			pairs[i] = k + "=" + RedactedValue
		}
		u.RawQuery = strings.Join(pairs, "&")
	}
	out := u.String()
	if userinfo != "" {
		if scheme, rest, ok := strings.Cut(out, "://"); ok {
			out = scheme + "://" + userinfo + rest
		}
	}
	return out
}

// String renders the redacted configuration as YAML.
func (c Config) String() string {
	out, err := yaml.Marshal(c.Redacted())
	if err != nil {
		return "config: " + err.Error()
	}
	return string(out)
}

// LogValue makes log/slog print the redacted configuration as groups of
// attributes.
func (c Config) LogValue() slog.Value {
	r := c.Redacted()
	ups := make([]slog.Attr, 0, len(r.Upstreams))
	for _, u := range r.Upstreams {
		attrs := []slog.Attr{slog.String("prefix", u.Prefix), slog.String("timeout", u.Timeout.String())}
		if u.URL != "" {
			attrs = append(attrs, slog.String("url", u.URL))
		}
		if len(u.Headers) > 0 {
			attrs = append(attrs, slog.Any("headers", slices.Sorted(maps.Keys(u.Headers))))
		}
		if len(u.Command) > 0 {
			attrs = append(attrs, slog.Any("command", u.Command), slog.Bool("shared", u.Shared))
		}
		if len(u.Env) > 0 {
			attrs = append(attrs, slog.Any("env", slices.Sorted(maps.Keys(u.Env))))
		}
		if u.Dir != "" {
			attrs = append(attrs, slog.String("dir", u.Dir))
		}
		ups = append(ups, slog.Attr{Key: u.Name, Value: slog.GroupValue(attrs...)})
	}
	return slog.GroupValue(
		slog.String("listen", r.Listen),
		slog.String("public_url", r.PublicURL),
		slog.Any("allowed_hosts", r.AllowedHosts),
		slog.Group("storage", slog.String("driver", r.Storage.Driver), slog.String("dsn", r.Storage.DSN)),
		slog.Attr{Key: "upstreams", Value: slog.GroupValue(ups...)},
		slog.Group("relay", slog.Int64("max_message_bytes", r.Relay.MaxMessageBytes), slog.String("session_idle_timeout", r.Relay.SessionIdleTimeout.String())),
		slog.Group("log", slog.String("level", r.Log.Level), slog.String("format", r.Log.Format)),
	)
}
