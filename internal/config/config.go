// Package config defines interlock's configuration file: its schema, a strict
// decoder (unknown keys are errors with line numbers), ${VAR} expansion for
// secrets, defaults, and Validate, which reports every problem at once.
//
// It must not read the environment anywhere but in Load's expansion step
// (through the Getenv it is given), and must not open files other than the
// one it is asked to load.
package config

import (
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration file.
type Config struct {
	// Listen is the TCP address the gateway serves on. Default 127.0.0.1:8470.
	Listen string `yaml:"listen"`
	// PublicURL is the URL agents and browsers reach the gateway at. Default
	// http://<listen>.
	PublicURL string `yaml:"public_url"`
	// AllowedHosts lists the Host header values (host, or host:port) accepted
	// on every request, and the hosts accepted in the Origin header. An
	// entry without a port matches any port. Default: localhost, 127.0.0.1
	// and [::1], plus the host of PublicURL.
	AllowedHosts  []string      `yaml:"allowed_hosts"`
	Storage       Storage       `yaml:"storage"`
	Upstreams     []Upstream    `yaml:"upstreams"`
	Relay         Relay         `yaml:"relay"`
	Policy        Policy        `yaml:"policy"`
	Audit         Audit         `yaml:"audit"`
	Credentials   Credentials   `yaml:"credentials"`
	Approvals     Approvals     `yaml:"approvals"`
	SCIM          SCIM          `yaml:"scim"`
	Admin         Admin         `yaml:"admin"`
	Notifications Notifications `yaml:"notifications"`
	CIBA          CIBA          `yaml:"ciba"`
	Log           Log           `yaml:"log"`

	// src remembers where the values came from (file name, line of every
	// key, raw text of values that used ${VAR}) so that Validate can point
	// at lines without printing expanded secrets. Nil for a Config built in
	// code.
	src *source
}

// Storage selects the store backend.
type Storage struct {
	// Driver is "sqlite" (default) or "postgres".
	Driver string `yaml:"driver"`
	// DSN is the data source. For sqlite a file path (default
	// "interlock.db" next to the config file); for postgres a URL or
	// key=value connection string (required), e.g.
	// postgres://interlock:${PGPASSWORD}@db:5432/interlock?sslmode=verify-full.
	DSN string `yaml:"dsn"`
	// Schema (postgres): the schema interlock keeps its tables in, created
	// if missing. Default: the connection's search_path (usually public).
	Schema string `yaml:"schema"`
	// MaxConns (postgres): the most connections each replica opens.
	// Default: the larger of 4 and the number of CPUs.
	MaxConns int32 `yaml:"max_conns"`
}

// Upstream is one MCP server interlock fronts: either URL (Streamable HTTP)
// or Command (stdio), never both.
type Upstream struct {
	// Name is unique, [a-zA-Z0-9_-]{1,32}; it appears in /mcp/{name}.
	Name string `yaml:"name"`
	// URL of a Streamable HTTP MCP endpoint.
	URL string `yaml:"url"`
	// Headers are added to every request to URL (secrets such as an API
	// key); agents never see them.
	Headers map[string]string `yaml:"headers"`
	// Command is the argv of a stdio MCP server.
	Command []string `yaml:"command"`
	// Env is added to the stdio server's environment.
	Env map[string]string `yaml:"env"`
	// Dir is the stdio server's working directory.
	Dir string `yaml:"dir"`
	// Shared: one stdio process serves every downstream session (default:
	// one process per downstream session).
	Shared bool `yaml:"shared"`
	// Prefix is put before this upstream's tool, prompt and resource names on
	// the aggregated endpoint /mcp. Default "<name>_".
	Prefix string `yaml:"prefix"`
	// Timeout bounds one request to this upstream (default 5m; 0 keeps the
	// default).
	Timeout Duration `yaml:"timeout"`
	// CredentialAsBearer also sends each call's action credential as
	// "Authorization: Bearer" (for tool servers that read it there). Not
	// allowed together with an Authorization header in Headers: a
	// brokered secret is never replaced.
	CredentialAsBearer bool `yaml:"credential_as_bearer"`
}

// Relay tunes the MCP relay.
type Relay struct {
	// MaxMessageBytes caps one JSON-RPC message from an agent. Default 4 MiB.
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	// SessionIdleTimeout ends downstream sessions that saw no request for
	// this long. Default 30m.
	SessionIdleTimeout Duration `yaml:"session_idle_timeout"`
}

// Policy selects the policy that decides every gated call.
type Policy struct {
	// File is the policy file (docs/policy.md), relative to the config
	// file. Empty: a built-in policy that denies every gated call (fail
	// closed), with a warning at start-up.
	File string `yaml:"file"`
	// WatchInterval is how often the file is checked for changes (a
	// changed file is compiled and swapped in; on error the old policy
	// stays). Default 2s. SIGHUP reloads at once.
	WatchInterval Duration `yaml:"watch_interval"`
}

// Audit configures the audit log.
type Audit struct {
	// Redact names tool arguments whose values are replaced by
	// "[redacted]" in audit events, at any depth, compared
	// case-insensitively. The argument digest still covers the real values.
	Redact []string `yaml:"redact"`
	// CheckpointInterval is how often the chain head is signed. Default 1m.
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
}

// Credentials configures the action credentials interlock signs for every
// call it forwards (docs/credentials.md).
type Credentials struct {
	// KEKFile holds the key-encryption key that seals the signing keys in
	// the store (base64 of 32 bytes), relative to the config file. The
	// environment variable INTERLOCK_KEK, when set, is used instead.
	// Default "interlock.kek"; created (mode 0600) when neither exists and
	// the store holds no signing key yet.
	KEKFile string `yaml:"kek_file"`
	// Algorithm of new signing keys: EdDSA (Ed25519, default) or ES256.
	Algorithm string `yaml:"algorithm"`
}

// Approvals configures how calls the policy marks "approve" wait for
// humans (docs/approvals.md).
type Approvals struct {
	// Hold is the longest an agent's call is held open waiting for the
	// decision. Past it the agent is told the request is still pending
	// and that calling again with the same arguments joins it. Default 2m.
	Hold Duration `yaml:"hold"`
	// Timeout is how long a request stays open for approvers before it
	// expires. Default 10m.
	Timeout Duration `yaml:"timeout"`
}

// SCIM configures the SCIM 2.0 service provider at /scim/v2 through which
// an identity provider (Entra ID, Okta) provisions and deprovisions users
// (docs/identity.md).
type SCIM struct {
	// Token is the bearer token the identity provider sends; use ${VAR}.
	// Empty: SCIM is off (every request is refused).
	Token string `yaml:"token"`
}

// Admin configures the admin API at /api/v1 (docs/admin-api.md), which
// the CLI uses with --server. Off when no token is configured.
type Admin struct {
	// Tokens are the admin tokens the API accepts. Only the SHA-256 of
	// each token is kept here; `interlock admin token` makes one.
	Tokens []AdminToken `yaml:"tokens"`
}

// AdminToken is one admin API token.
type AdminToken struct {
	// Name is unique; it names the token in the audit log
	// ("admin:<name>").
	Name string `yaml:"name"`
	// SHA256 is the lower-case hex SHA-256 of the token (64 characters).
	SHA256 string `yaml:"sha256"`
	// Roles: viewer (reads), security (also suspends and resumes agents,
	// deactivates and activates users, stops and resumes, revokes tokens
	// and credentials) and admin (everything).
	Roles []string `yaml:"roles"`
}

// AdminRoles are the roles an admin token may carry.
var AdminRoles = []string{"admin", "security", "viewer"}

// Notifications configures how approvers (and security admins) are told
// about approval requests. Every channel configured is used; each
// delivery is retried with backoff and recorded in the audit log.
type Notifications struct {
	// Webhooks receive a signed JSON body (header Interlock-Signature:
	// t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>).
	Webhooks []Webhook `yaml:"webhooks"`
	// Slack lists Slack-compatible incoming webhook URLs.
	Slack []SlackWebhook `yaml:"slack"`
	// SMTP sends one plain-text email per approver (off when Addr is
	// empty).
	SMTP SMTP `yaml:"smtp"`
	// WebPush sends Web Push notifications to the browsers where approvers
	// enabled them in the console (off when VAPIDPrivateKey is empty).
	WebPush WebPush `yaml:"web_push"`
}

// WebPush is the application server identity (VAPID, RFC 8292) of Web
// Push notifications to the console.
type WebPush struct {
	// VAPIDPrivateKey is the P-256 private key, the 32-byte scalar in
	// base64url, as `interlock notifications vapid-keys` prints it. A
	// secret: use ${VAR}. Every replica needs the same key (browsers
	// subscribe with its public half).
	VAPIDPrivateKey string `yaml:"vapid_private_key"`
	// Subject is the contact push services may use: "mailto:..." or an
	// https URL.
	Subject string `yaml:"subject"`
}

// Webhook is one signed webhook receiver.
type Webhook struct {
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"` // use ${VAR}; at least 16 characters
}

// SlackWebhook is one Slack-compatible incoming webhook.
type SlackWebhook struct {
	URL string `yaml:"url"` // a secret itself: use ${VAR}
}

// SMTP is an email relay.
type SMTP struct {
	Addr     string `yaml:"addr"` // host:port
	From     string `yaml:"from"`
	Username string `yaml:"username"`
	Password string `yaml:"password"` // use ${VAR}
	// TLS is starttls (default), tls (implicit, port 465) or none (only
	// for a relay on localhost).
	TLS string `yaml:"tls"`
}

// CIBA configures interlock as a CIBA OpenID Provider (docs/ciba.md).
type CIBA struct {
	// Clients registers agents as CIBA clients: their delivery mode (ping
	// needs a notification endpoint) and their public keys for
	// private_key_jwt. An agent without an entry is a poll client that
	// authenticates with one of its agent tokens.
	Clients []CIBAClient `yaml:"clients"`
}

// CIBAClient is one agent's CIBA client registration.
type CIBAClient struct {
	// Agent is the agent id, which is the client_id. Unique.
	Agent string `yaml:"agent"`
	// Delivery is the token delivery mode: poll (default) or ping.
	Delivery string `yaml:"delivery"`
	// NotificationEndpoint is where interlock pings the client (ping
	// only, required then): https, or http only to localhost or a
	// loopback address.
	NotificationEndpoint string `yaml:"notification_endpoint"`
	// JWKSFile is a file holding the agent's public keys (a JWK Set) for
	// private_key_jwt, relative to the config file. It is read when
	// interlock starts. Not together with JWKS.
	JWKSFile string `yaml:"jwks_file"`
	// JWKS is the agent's public JWK Set written inline (JSON). Not
	// together with JWKSFile.
	JWKS string `yaml:"jwks"`
}

// CIBA delivery modes.
const (
	CIBADeliveryPoll = "poll"
	CIBADeliveryPing = "ping"
)

// Log configures log/slog output.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error (default info)
	Format string `yaml:"format"` // text | json (default text)
}

// Duration is a time.Duration written as a Go duration string ("30s", "5m").
type Duration time.Duration

// String formats the duration the way time.Duration does ("5m0s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes the duration as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a Go duration string such as "30s" or "5m". A bare
// number without a unit (other than 0) is an error. It serves callers that
// decode a Duration with yaml.Unmarshal directly; Load and Parse use their
// own decoder, which also expands ${VAR}.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("config: line %d: a duration must be a string such as \"30s\" or \"5m\", not %s", n.Line, kindName(n))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("config: line %d: want a Go duration such as \"30s\" or \"5m\": %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}
