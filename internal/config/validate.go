package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/notify"
)

// Defaults.
const (
	DefaultListen              = "127.0.0.1:8470"
	DefaultStorageDriver       = "sqlite"
	DefaultSQLiteDSN           = "interlock.db"
	DefaultUpstreamTimeout     = 5 * time.Minute
	DefaultMaxMessageBytes     = 4 << 20
	DefaultSessionIdleTimeout  = 30 * time.Minute
	DefaultApprovalHold        = 2 * time.Minute
	DefaultApprovalTimeout     = 10 * time.Minute
	DefaultKEKFile             = "interlock.kek"
	DefaultCredentialAlgorithm = "EdDSA"
	DefaultLogLevel            = "info"
	DefaultLogFormat           = "text"
)

// applyDefaults fills every unset value. configDir (absolute) is the
// directory relative paths are resolved against: the sqlite DSN and the
// upstreams' dir. It is called once, by Parse, before validation.
func (c *Config) applyDefaults(configDir string) {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.PublicURL == "" && checkListen(c.Listen) == "" {
		host, port, _ := net.SplitHostPort(c.Listen)
		switch host {
		case "", "0.0.0.0", "::", "127.0.0.1", "::1":
			// A name, not an address: passkeys (the console) are bound
			// to a domain name, and localhost is one browsers trust.
			host = "localhost"
		}
		if port == "0" {
			// A port picked at start-up (tests, demos): the URL cannot
			// name it, so it names the host only.
			c.PublicURL = "http://" + host
			if strings.Contains(host, ":") {
				c.PublicURL = "http://[" + host + "]"
			}
		} else {
			c.PublicURL = "http://" + net.JoinHostPort(host, port)
		}
	}
	if u, err := url.Parse(c.PublicURL); err == nil && u.Host != "" && u.RawQuery == "" && u.Fragment == "" {
		c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	}
	if len(c.AllowedHosts) == 0 {
		c.AllowedHosts = []string{"localhost", "127.0.0.1", "[::1]"}
	}
	for i, h := range c.AllowedHosts {
		c.AllowedHosts[i] = strings.ToLower(h)
	}
	if h := publicHost(c.PublicURL); h != "" && !c.hostAllowed(h) {
		c.AllowedHosts = append(c.AllowedHosts, h)
	}

	if c.Storage.Driver == "" {
		c.Storage.Driver = DefaultStorageDriver
	}
	if c.Storage.Driver == "sqlite" {
		if c.Storage.DSN == "" {
			c.Storage.DSN = DefaultSQLiteDSN
		}
		c.Storage.DSN = resolveSQLite(c.Storage.DSN, configDir)
	}

	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.Prefix == "" && !c.src.has(fmt.Sprintf("upstreams[%d].prefix", i)) {
			u.Prefix = u.Name + "_"
		}
		if u.Timeout == 0 {
			u.Timeout = Duration(DefaultUpstreamTimeout)
		}
		if u.Dir != "" && !filepath.IsAbs(u.Dir) && configDir != "" {
			u.Dir = filepath.Join(configDir, u.Dir)
		}
	}

	if c.Relay.MaxMessageBytes == 0 {
		c.Relay.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.Relay.SessionIdleTimeout == 0 {
		c.Relay.SessionIdleTimeout = Duration(DefaultSessionIdleTimeout)
	}
	if c.Policy.File != "" && !filepath.IsAbs(c.Policy.File) && configDir != "" {
		c.Policy.File = filepath.Join(configDir, c.Policy.File)
	}
	if c.Policy.WatchInterval == 0 {
		c.Policy.WatchInterval = Duration(2 * time.Second)
	}
	if c.Audit.CheckpointInterval == 0 {
		c.Audit.CheckpointInterval = Duration(time.Minute)
	}
	if c.Credentials.KEKFile == "" {
		c.Credentials.KEKFile = DefaultKEKFile
	}
	if !filepath.IsAbs(c.Credentials.KEKFile) && configDir != "" {
		c.Credentials.KEKFile = filepath.Join(configDir, c.Credentials.KEKFile)
	}
	if c.Approvals.Hold == 0 {
		c.Approvals.Hold = Duration(DefaultApprovalHold)
	}
	if c.Approvals.Timeout == 0 {
		c.Approvals.Timeout = Duration(DefaultApprovalTimeout)
	}
	if c.Credentials.Algorithm == "" {
		c.Credentials.Algorithm = DefaultCredentialAlgorithm
	}
	c.applyCIBADefaults(configDir)
	if c.Log.Level == "" {
		c.Log.Level = DefaultLogLevel
	}
	if c.Log.Format == "" {
		c.Log.Format = DefaultLogFormat
	}
}

// publicHost is the Host header browsers send for the public URL: its host,
// with the port unless it is the scheme's default. "" if the URL is not a
// valid public_url.
func publicHost(publicURL string) string {
	if publicURL == "" || checkPublicURL(publicURL) != "" {
		return ""
	}
	u, err := url.Parse(publicURL)
	if err != nil {
		return ""
	}
	host := strings.ToLower(u.Host)
	if (u.Scheme == "http" && u.Port() == "80") || (u.Scheme == "https" && u.Port() == "443") {
		host = strings.TrimSuffix(host, ":"+u.Port())
	}
	return host
}

// resolveSQLite makes a relative sqlite path (plain, or inside a "file:"
// URI) relative to dir. ":memory:" and absolute paths are kept.
func resolveSQLite(dsn, dir string) string {
	if dir == "" {
		return dsn
	}
	if rest, ok := strings.CutPrefix(dsn, "file:"); ok {
		p, query, hasQuery := strings.Cut(rest, "?")
		if p == "" || p == ":memory:" || strings.HasPrefix(p, "/") || filepath.IsAbs(p) {
			return dsn
		}
		out := "file:" + filepath.ToSlash(filepath.Join(dir, p))
		if hasQuery {
			out += "?" + query
		}
		return out
	}
	if dsn == ":memory:" || filepath.IsAbs(dsn) {
		return dsn
	}
	return filepath.Join(dir, dsn)
}

// has reports whether the file set the key at path (even to null or "").
func (s *source) has(path string) bool {
	if s == nil {
		return false
	}
	_, ok := s.lines[path]
	return ok
}

// line returns the line of path, or of the nearest enclosing value that has
// one; 0 if none.
func (s *source) line(path string) int {
	if s == nil {
		return 0
	}
	for {
		if l, ok := s.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i <= 0 {
			return 0
		}
		path = path[:i]
	}
}

// Validate checks the configuration and reports every problem at once as an
// *Error (nil when there is none). It checks the effective configuration,
// so it expects defaults to have been applied (Load and Parse do that); on a
// Config built in code, empty required values are problems. Problems carry
// the file's line numbers when the Config came from Load or Parse.
func (c *Config) Validate() error {
	problems := c.validate()
	if len(problems) == 0 {
		return nil
	}
	file := ""
	if c.src != nil {
		file = c.src.file
	}
	return newError(file, problems)
}

type checker struct {
	src      *source
	problems []Problem
}

func (k *checker) add(path, format string, args ...any) {
	k.problems = append(k.problems, Problem{Line: k.src.line(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// show quotes a value for a message without revealing an expanded secret.
func (k *checker) show(path, s string) string {
	var raw map[string]string
	if k.src != nil {
		raw = k.src.raw
	}
	return showValue(raw, path, s)
}

// where points at an earlier value: "line N", or its path without a file.
func (k *checker) where(path string) string {
	if l := k.src.line(path); l > 0 {
		return "line " + strconv.Itoa(l)
	}
	return path
}

func (c *Config) validate() []Problem {
	k := &checker{src: c.src}

	listenOK := true
	if c.Listen == "" {
		k.add("listen", "is required (host:port, e.g. %s)", DefaultListen)
		listenOK = false
	} else if msg := checkListen(c.Listen); msg != "" {
		k.add("listen", "%s %s", k.show("listen", c.Listen), msg)
		listenOK = false
	}

	switch {
	case c.PublicURL == "":
		if listenOK {
			k.add("public_url", "is required (e.g. http://%s)", DefaultListen)
		}
	default:
		if msg := checkPublicURL(c.PublicURL); msg != "" {
			if strings.HasPrefix(msg, "must") {
				k.add("public_url", "%s", msg)
			} else {
				k.add("public_url", "%s %s", k.show("public_url", c.PublicURL), msg)
			}
		}
	}

	for i, h := range c.AllowedHosts {
		p := fmt.Sprintf("allowed_hosts[%d]", i)
		if msg := checkAllowedHost(h); msg != "" {
			if h == "" {
				k.add(p, "%s", msg)
			} else {
				k.add(p, "%s %s", k.show(p, h), msg)
			}
		}
	}

	switch c.Storage.Driver {
	case "sqlite":
		if c.Storage.DSN == "" {
			k.add("storage.dsn", "is required (a file path for sqlite, e.g. %s)", DefaultSQLiteDSN)
		}
	case "postgres":
		if c.Storage.DSN == "" {
			k.add("storage.dsn", "is required for postgres (e.g. postgres://interlock@db:5432/interlock?sslmode=verify-full)")
		}
		if c.Storage.Schema != "" && !validIdent(c.Storage.Schema) {
			k.add("storage.schema", "%s must be a plain identifier (letters, digits and _, not starting with a digit, at most 63 bytes)", k.show("storage.schema", c.Storage.Schema))
		}
		if c.Storage.MaxConns < 0 {
			k.add("storage.max_conns", "must not be negative")
		}
	case "":
		k.add("storage.driver", `is required (use "sqlite" or "postgres")`)
	default:
		k.add("storage.driver", `unknown driver %s (want "sqlite" or "postgres")`, k.show("storage.driver", c.Storage.Driver))
	}
	if c.Storage.Driver == "sqlite" && (c.Storage.Schema != "" || c.Storage.MaxConns != 0) {
		k.add("storage", "schema and max_conns apply only to the postgres driver")
	}

	c.validateUpstreams(k)

	if c.Relay.MaxMessageBytes <= 0 {
		k.add("relay.max_message_bytes", "must be a positive number of bytes, got %s", k.show("relay.max_message_bytes", strconv.FormatInt(c.Relay.MaxMessageBytes, 10)))
	}
	if c.Relay.SessionIdleTimeout <= 0 {
		k.add("relay.session_idle_timeout", "must be positive, got %s", k.show("relay.session_idle_timeout", c.Relay.SessionIdleTimeout.String()))
	}

	if c.Policy.WatchInterval < 0 {
		k.add("policy.watch_interval", "must be positive, got %s", k.show("policy.watch_interval", c.Policy.WatchInterval.String()))
	}
	if c.Audit.CheckpointInterval < 0 {
		k.add("audit.checkpoint_interval", "must be positive, got %s", k.show("audit.checkpoint_interval", c.Audit.CheckpointInterval.String()))
	}
	for i, r := range c.Audit.Redact {
		if strings.TrimSpace(r) == "" {
			k.add(fmt.Sprintf("audit.redact[%d]", i), "must name an argument")
		}
	}

	if c.Approvals.Hold < 0 {
		k.add("approvals.hold", "must be positive, got %s", k.show("approvals.hold", c.Approvals.Hold.String()))
	}
	if c.Approvals.Timeout < 0 || (c.Approvals.Timeout > 0 && time.Duration(c.Approvals.Timeout) > 24*time.Hour) {
		k.add("approvals.timeout", "must be positive and at most 24h, got %s", k.show("approvals.timeout", c.Approvals.Timeout.String()))
	}

	if c.SCIM.Token != "" && len(c.SCIM.Token) < 32 {
		k.add("scim.token", "is too short to be a secret: use at least 32 random characters (e.g. openssl rand -base64 32)")
	}

	c.validateAdmin(k)

	for i, w := range c.Notifications.Webhooks {
		p := fmt.Sprintf("notifications.webhooks[%d]", i)
		if msg := checkUpstreamURL(w.URL); msg != "" {
			k.add(p+".url", "%s", msg)
		}
		if len(w.Secret) < 16 {
			k.add(p+".secret", "is required and must be at least 16 characters (receivers check the signature with it)")
		}
	}
	for i, w := range c.Notifications.Slack {
		if msg := checkUpstreamURL(w.URL); msg != "" {
			k.add(fmt.Sprintf("notifications.slack[%d].url", i), "%s", msg)
		}
	}
	if m := c.Notifications.SMTP; m != (SMTP{}) {
		if _, _, err := net.SplitHostPort(m.Addr); err != nil {
			k.add("notifications.smtp.addr", "must be host:port (e.g. smtp.example.com:587)")
		}
		if m.From == "" {
			k.add("notifications.smtp.from", "is required")
		}
		switch m.TLS {
		case "", "starttls", "tls", "none":
		default:
			k.add("notifications.smtp.tls", "%s is not one of starttls, tls, none", k.show("notifications.smtp.tls", m.TLS))
		}
	}
	if w := c.Notifications.WebPush; w != (WebPush{}) {
		// The key is never quoted: it is a secret.
		if _, err := notify.ParseVAPIDPrivateKey(w.VAPIDPrivateKey); err != nil {
			k.add("notifications.web_push.vapid_private_key", "must be a P-256 private key in base64url (32 bytes): make one with interlock notifications vapid-keys")
		}
		if !validPushSubject(w.Subject) {
			k.add("notifications.web_push.subject", "%s must be a mailto: address or an https:// URL (push services contact you there)", k.show("notifications.web_push.subject", w.Subject))
		}
	}

	c.validateCIBA(k)

	switch c.Credentials.Algorithm {
	case "EdDSA", "ES256":
	default:
		k.add("credentials.algorithm", "%s is not one of EdDSA, ES256", k.show("credentials.algorithm", c.Credentials.Algorithm))
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		k.add("log.level", "%s is not one of debug, info, warn, error", k.show("log.level", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		k.add("log.format", "%s is not one of text, json", k.show("log.format", c.Log.Format))
	}
	return k.problems
}

func (c *Config) validateUpstreams(k *checker) {
	names := map[string]int{}    // name -> index of first upstream with it
	prefixes := map[string]int{} // prefix -> index of first upstream with it
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		p := fmt.Sprintf("upstreams[%d]", i)

		nameOK := false
		switch {
		case u.Name == "":
			k.add(p+".name", `is required (1-32 characters from a-z, A-Z, 0-9, "_" and "-")`)
		case !validName(u.Name, 1, 32):
			k.add(p+".name", `%s must be 1-32 characters from a-z, A-Z, 0-9, "_" and "-"`, k.show(p+".name", u.Name))
		default:
			if j, ok := names[u.Name]; ok {
				k.add(p+".name", "duplicate upstream name %s (first at %s)", k.show(p+".name", u.Name), k.where(fmt.Sprintf("upstreams[%d].name", j)))
			} else {
				names[u.Name] = i
				nameOK = true
			}
		}

		// The default prefix "<name>_" is accepted as is (it may be 33
		// characters long); a prefix written out must match the pattern.
		if u.Prefix != u.Name+"_" && !validName(u.Prefix, 0, 32) {
			k.add(p+".prefix", `%s must be 0-32 characters from a-z, A-Z, 0-9, "_" and "-"`, k.show(p+".prefix", u.Prefix))
		} else if nameOK {
			if j, ok := prefixes[u.Prefix]; ok {
				k.add(p+".prefix", "prefix %s is also used by upstream %q (tool names would collide)", k.show(p+".prefix", u.Prefix), c.Upstreams[j].Name)
			} else {
				// One prefix must not start another ("a_" and "a_b_"): upstream
				// a's tool "b_x" and upstream a_b's tool "x" would both be a_b_x.
				for other, j := range prefixes {
					if strings.HasPrefix(u.Prefix, other) || strings.HasPrefix(other, u.Prefix) {
						k.add(p+".prefix", "prefix %s and upstream %q's prefix %q start alike, so tool names on /mcp could collide; choose prefixes where neither starts the other",
							k.show(p+".prefix", u.Prefix), c.Upstreams[j].Name, other)
						break
					}
				}
				prefixes[u.Prefix] = i
			}
		}

		if u.Timeout <= 0 {
			k.add(p+".timeout", "must be positive, got %s", k.show(p+".timeout", u.Timeout.String()))
		}

		hasURL, hasCmd := u.URL != "", len(u.Command) > 0
		switch {
		case hasURL && hasCmd:
			k.add(p, "has both url and command; set exactly one (url for Streamable HTTP, command for stdio)")
		case !hasURL && !hasCmd:
			k.add(p, "needs url (Streamable HTTP) or command (stdio)")
		case hasURL:
			if msg := checkUpstreamURL(u.URL); msg != "" {
				k.add(p+".url", "%s", msg)
			}
			if len(u.Env) > 0 {
				k.add(p+".env", "applies only to command (stdio) upstreams")
			}
			if u.Dir != "" {
				k.add(p+".dir", "applies only to command (stdio) upstreams")
			}
			if u.Shared {
				k.add(p+".shared", "applies only to command (stdio) upstreams")
			}
			if u.CredentialAsBearer {
				for name := range u.Headers {
					if strings.EqualFold(name, "Authorization") {
						k.add(p+".credential_as_bearer", "cannot be used with an Authorization header in headers: the brokered secret would be replaced (tool servers can read the credential from the Interlock-Credential header instead)")
					}
				}
			}
		case hasCmd:
			if u.CredentialAsBearer {
				k.add(p+".credential_as_bearer", "applies only to url (Streamable HTTP) upstreams; stdio servers get the credential in params._meta")
			}
			if u.Command[0] == "" {
				k.add(p+".command[0]", "the program must not be empty")
			}
			for j, arg := range u.Command {
				if strings.IndexByte(arg, 0) >= 0 {
					k.add(fmt.Sprintf("%s.command[%d]", p, j), "must not contain a NUL byte")
				}
			}
			if len(u.Headers) > 0 {
				k.add(p+".headers", "apply only to url (Streamable HTTP) upstreams; give a stdio server its secrets with env")
			}
		}

		seenHeader := map[string]string{}
		for _, name := range k.keysInFileOrder(u.Headers, p+".headers.") {
			hp := p + ".headers." + name
			if msg := checkHeaderName(name); msg != "" {
				k.add(hp, "%s", msg)
				continue
			}
			canon := strings.ToLower(name)
			if other, ok := seenHeader[canon]; ok {
				k.add(hp, "%s repeats header %s (header names are case-insensitive)", quote(name), quote(other))
				continue
			}
			seenHeader[canon] = name
			if strings.ContainsAny(u.Headers[name], "\r\n\x00") {
				k.add(hp, "value must not contain CR, LF or NUL")
			}
		}
		for _, name := range k.keysInFileOrder(u.Env, p+".env.") {
			ep := p + ".env." + name
			if name == "" || strings.ContainsAny(name, "=\x00") {
				k.add(ep, `%s is not a valid environment variable name (must be non-empty, without "=" or NUL)`, quote(name))
				continue
			}
			if strings.IndexByte(u.Env[name], 0) >= 0 {
				k.add(ep, "value must not contain a NUL byte")
			}
		}
		if strings.IndexByte(u.Dir, 0) >= 0 {
			k.add(p+".dir", "must not contain a NUL byte")
		}
	}
}

// keysInFileOrder returns the keys of m in the order they appear in the
// file (by line, then name), so that problems name the later of two keys.
func (k *checker) keysInFileOrder(m map[string]string, prefix string) []string {
	keys := slices.Sorted(maps.Keys(m))
	slices.SortStableFunc(keys, func(a, b string) int {
		return k.src.line(prefix+a) - k.src.line(prefix+b)
	})
	return keys
}

// validName reports whether s is min..max characters from [a-zA-Z0-9_-].
func validName(s string, minLen, maxLen int) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// checkListen returns "" if s is a valid listen address, or the rest of a
// sentence saying what is wrong with it.
func checkListen(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "is not host:port (e.g. " + DefaultListen + ")"
	}
	if host != "" && !validHost(host, true) {
		return "does not have a valid host name or IP address"
	}
	if port != "0" && !validPort(port) {
		return "does not have a port from 0 to 65535 (0 picks a free port)"
	}
	return ""
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// validHost reports whether h is an IPv4 address, a DNS name, or (if
// allowV6) a bare IPv6 address.
func validHost(h string, allowV6 bool) bool {
	if addr, err := netip.ParseAddr(h); err == nil {
		return addr.Is4() || allowV6
	}
	return validHostname(h)
}

// validHostname accepts DNS names made of letters, digits, "-" and "_",
// whose last label is not all digits (that would be a broken IPv4 address).
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || !validName(l, 1, 63) {
			return false
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}

// checkPublicURL returns "" for an absolute http(s) URL without query,
// fragment or user info. Messages starting with "must" stand alone; the
// others follow the quoted value.
func checkPublicURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "is not an absolute http:// or https:// URL"
	}
	if u.User != nil {
		return "must not contain user info (user:password@)"
	}
	if u.RawQuery != "" || u.ForceQuery {
		return "must not contain a query (\"?...\")"
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return "must not contain a fragment (\"#...\")"
	}
	host := u.Hostname()
	if strings.HasPrefix(u.Host, "[") {
		if addr, err := netip.ParseAddr(host); err != nil || !addr.Is6() {
			return "does not have a valid host"
		}
	} else if !validHost(host, false) {
		return "does not have a valid host"
	}
	if p := u.Port(); p != "" && !validPort(p) {
		return "does not have a port from 1 to 65535"
	}
	return ""
}

// checkUpstreamURL never quotes the URL: it may carry a secret.
func checkUpstreamURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "must be an absolute http:// or https:// URL"
	}
	if u.Fragment != "" {
		return "must not contain a fragment (\"#...\")"
	}
	return ""
}

// splitHostEntry splits an allowed_hosts entry (or a Host header) into a
// lower-case host, without brackets, and its port ("" if none).
func splitHostEntry(s string) (host, port string, ok bool) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false
		}
		host, rest := s[1:end], s[end+1:]
		if rest != "" {
			p, found := strings.CutPrefix(rest, ":")
			if !found {
				return "", "", false
			}
			port = p
		}
		return strings.ToLower(host), port, true
	}
	if strings.Count(s, ":") > 1 {
		return "", "", false
	}
	host, port, _ = strings.Cut(s, ":")
	return strings.ToLower(strings.TrimSuffix(host, ".")), port, true
}

// checkAllowedHost returns "" for a host name or IP address with an
// optional port.
func checkAllowedHost(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case strings.Contains(s, "://"):
		return `must not include a scheme (write the host only, e.g. "example.com" or "example.com:8443")`
	case strings.ContainsAny(s, "/?#@ \t"):
		return "must be a host name or IP address with an optional port (no path, query or user info)"
	case !strings.HasPrefix(s, "[") && strings.Count(s, ":") > 1:
		return `is an IPv6 address without brackets (write e.g. "[::1]" or "[::1]:8470")`
	}
	host, port, ok := splitHostEntry(s)
	if !ok {
		return "is not a host name or IP address with an optional port"
	}
	if strings.HasPrefix(s, "[") {
		if addr, err := netip.ParseAddr(host); err != nil || !addr.Is6() {
			return "is not a valid bracketed IPv6 address"
		}
	} else if !validHost(host, false) {
		return "is not a valid host name or IP address"
	}
	if strings.Contains(s, "]:") || (!strings.HasPrefix(s, "[") && strings.Contains(s, ":")) {
		if !validPort(port) {
			return "does not have a port from 1 to 65535"
		}
	}
	return ""
}

// checkHeaderName rejects names that are not HTTP tokens and headers the
// relay owns. Authorization is allowed: it is how upstream secrets are
// brokered.
func checkHeaderName(name string) string {
	if name == "" {
		return "header name must not be empty"
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return fmt.Sprintf("%s is not a valid HTTP header name", quote(name))
		}
	}
	switch strings.ToLower(name) {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authenticate", "proxy-authorization":
		return fmt.Sprintf("%q is a hop-by-hop header and cannot be set for an upstream", name)
	case "host", "content-length", "content-type", "mcp-session-id", "mcp-protocol-version", "last-event-id":
		return fmt.Sprintf("%q is set by interlock itself and cannot be configured", name)
	}
	return ""
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110).
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// hostAllowed reports whether a Host header value (host or host:port) is in
// AllowedHosts: hosts compare case-insensitively; an entry without a port
// matches any port, an entry with a port only that port. It is the rule
// internal/server applies (and docs/configuration.md describes); here it
// only decides whether public_url's host must be added.
func (c *Config) hostAllowed(hostport string) bool {
	if hostport == "" {
		return false
	}
	host, port, ok := splitHostEntry(hostport)
	if !ok || host == "" {
		return false
	}
	for _, e := range c.AllowedHosts {
		eh, ep, ok := splitHostEntry(e)
		if !ok || eh != host {
			continue
		}
		if ep == "" || ep == port {
			return true
		}
	}
	return false
}

// validIdent reports whether s is a plain SQL identifier.
func validIdent(s string) bool {
	if s == "" || len(s) > 63 || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, c := range []byte(s) {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// validateAdmin checks admin.tokens: unique names, SHA-256 hashes in
// lower-case hex (never shown in messages), known roles.
func (c *Config) validateAdmin(k *checker) {
	names := map[string]int{}
	hashes := map[string]int{}
	for i, t := range c.Admin.Tokens {
		p := fmt.Sprintf("admin.tokens[%d]", i)
		switch {
		case !validAdminName(t.Name):
			k.add(p+".name", `%s must be 1-64 characters from a-z, A-Z, 0-9, ".", "_" and "-"`, k.show(p+".name", t.Name))
		default:
			if j, ok := names[t.Name]; ok {
				k.add(p+".name", "duplicate admin token name %s (first at %s)", k.show(p+".name", t.Name), k.where(fmt.Sprintf("admin.tokens[%d].name", j)))
			} else {
				names[t.Name] = i
			}
		}
		switch {
		case !validSHA256Hex(t.SHA256):
			k.add(p+".sha256", "must be the SHA-256 of the token in 64 lower-case hex characters (interlock admin token prints it)")
		default:
			if j, ok := hashes[t.SHA256]; ok {
				k.add(p+".sha256", "is the same token as %s", k.where(fmt.Sprintf("admin.tokens[%d].sha256", j)))
			} else {
				hashes[t.SHA256] = i
			}
		}
		if len(t.Roles) == 0 {
			k.add(p+".roles", "is required: one or more of %s", strings.Join(AdminRoles, ", "))
		}
		for j, r := range t.Roles {
			if !slices.Contains(AdminRoles, r) {
				k.add(fmt.Sprintf("%s.roles[%d]", p, j), "%s is not a role: want %s", k.show(fmt.Sprintf("%s.roles[%d]", p, j), r), strings.Join(AdminRoles, ", "))
			}
		}
	}
}

func validAdminName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == '-' || c == '.' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

func validSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// validPushSubject: "mailto:" with an address, or an https URL with a host
// (RFC 8292 section 2.1).
func validPushSubject(s string) bool {
	if addr, ok := strings.CutPrefix(s, "mailto:"); ok {
		return strings.Contains(addr, "@") && strings.TrimSpace(addr) == addr
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && u.Host != "" && u.User == nil
}
