package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// envOf returns a Getenv reading only m.
func envOf(m map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

func parse(t *testing.T, src string, env map[string]string) (*Config, error) {
	t.Helper()
	return Parse([]byte(src), "interlock.yaml", LoadOptions{Getenv: envOf(env)})
}

func mustParse(t *testing.T, src string, env map[string]string) *Config {
	t.Helper()
	cfg, err := parse(t, src, env)
	if err != nil {
		t.Fatalf("Parse: unexpected error:\n%v", err)
	}
	if cfg == nil {
		t.Fatal("Parse returned nil config and nil error")
	}
	return cfg
}

// want is one expected problem: its line and a substring of "path: msg".
type want struct {
	line int
	text string
}

// checkProblems asserts err is an *Error holding exactly the wanted
// problems (each matched by line and substring, in any order).
func checkProblems(t *testing.T, err error, wants []want) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected %d problem(s), got no error", len(wants))
	}
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("error is %T, want *config.Error: %v", err, err)
	}
	if len(cerr.Problems) != len(wants) {
		t.Errorf("got %d problem(s), want %d:\n%v", len(cerr.Problems), len(wants), err)
	}
	used := make([]bool, len(cerr.Problems))
	for _, w := range wants {
		found := false
		for i, p := range cerr.Problems {
			if !used[i] && p.Line == w.line && strings.Contains(p.String(), w.text) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("missing problem at line %d containing %q; got:\n%v", w.line, w.text, err)
		}
	}
}

const fullConfig = `listen: 0.0.0.0:9000
public_url: https://Interlock.Example.com/
allowed_hosts: [proxy.internal:8443, 10.0.0.5]
storage:
  driver: sqlite
  dsn: data/interlock.db
upstreams:
  - name: acme
    url: https://mcp.acme.example/mcp
    headers:
      Authorization: Bearer ${ACME_API_KEY}
      X-Tenant: blue
    timeout: 45s
  - name: files
    command: [npx, -y, "@modelcontextprotocol/server-filesystem", /tmp]
    env:
      TOKEN: ${FILES_TOKEN:-none}
    dir: work
    shared: true
    prefix: "fs-"
relay:
  max_message_bytes: 1048576
  session_idle_timeout: 1h
log:
  level: debug
  format: json
`

func TestParseFullConfig(t *testing.T) {
	cfg := mustParse(t, fullConfig, map[string]string{"ACME_API_KEY": "k-123"})
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Listen, "0.0.0.0:9000"},
		{"public_url (trailing slash trimmed)", cfg.PublicURL, "https://Interlock.Example.com"},
		{"allowed_hosts (public host appended, lower-case)", fmt.Sprint(cfg.AllowedHosts), "[proxy.internal:8443 10.0.0.5 interlock.example.com]"},
		{"storage.driver", cfg.Storage.Driver, "sqlite"},
		{"storage.dsn (relative to the file)", cfg.Storage.DSN, filepath.Join(dir, "data", "interlock.db")},
		{"upstreams", len(cfg.Upstreams), 2},
		{"acme url", cfg.Upstreams[0].URL, "https://mcp.acme.example/mcp"},
		{"acme Authorization (expanded)", cfg.Upstreams[0].Headers["Authorization"], "Bearer k-123"},
		{"acme X-Tenant", cfg.Upstreams[0].Headers["X-Tenant"], "blue"},
		{"acme prefix (default)", cfg.Upstreams[0].Prefix, "acme_"},
		{"acme timeout", cfg.Upstreams[0].Timeout, Duration(45 * time.Second)},
		{"files command", fmt.Sprint(cfg.Upstreams[1].Command), "[npx -y @modelcontextprotocol/server-filesystem /tmp]"},
		{"files env (default used)", cfg.Upstreams[1].Env["TOKEN"], "none"},
		{"files dir (relative to the file)", cfg.Upstreams[1].Dir, filepath.Join(dir, "work")},
		{"files shared", cfg.Upstreams[1].Shared, true},
		{"files prefix (explicit)", cfg.Upstreams[1].Prefix, "fs-"},
		{"files timeout (default)", cfg.Upstreams[1].Timeout, Duration(5 * time.Minute)},
		{"relay.max_message_bytes", cfg.Relay.MaxMessageBytes, int64(1 << 20)},
		{"relay.session_idle_timeout", cfg.Relay.SessionIdleTimeout, Duration(time.Hour)},
		{"log.level", cfg.Log.Level, "debug"},
		{"log.format", cfg.Log.Format, "json"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate on a parsed config: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		src  string
		get  func(*Config) any
		want any
	}{
		{"listen", "", func(c *Config) any { return c.Listen }, "127.0.0.1:8470"},
		{"public_url from listen", "", func(c *Config) any { return c.PublicURL }, "http://localhost:8470"},
		{"public_url from another listen", "listen: 127.0.0.1:9999", func(c *Config) any { return c.PublicURL }, "http://localhost:9999"},
		{"public_url for an unspecified listen host", "listen: 0.0.0.0:8470", func(c *Config) any { return c.PublicURL }, "http://localhost:8470"},
		{"public_url for an empty listen host", "listen: :8470", func(c *Config) any { return c.PublicURL }, "http://localhost:8470"},
		{"public_url for an IPv6 loopback listen", "listen: '[::1]:8470'", func(c *Config) any { return c.PublicURL }, "http://localhost:8470"},
		{"public_url for another IP keeps it", "listen: 10.1.2.3:8470", func(c *Config) any { return c.PublicURL }, "http://10.1.2.3:8470"},
		{"allowed_hosts", "", func(c *Config) any { return fmt.Sprint(c.AllowedHosts) }, "[localhost 127.0.0.1 [::1]]"},
		{"allowed_hosts gets the public host", "public_url: https://gw.example.com:8443", func(c *Config) any { return fmt.Sprint(c.AllowedHosts) }, "[localhost 127.0.0.1 [::1] gw.example.com:8443]"},
		{"allowed_hosts drops a default port", "public_url: https://gw.example.com:443", func(c *Config) any { return fmt.Sprint(c.AllowedHosts) }, "[localhost 127.0.0.1 [::1] gw.example.com]"},
		{"explicit allowed_hosts kept, public host added", "allowed_hosts: [a.example]\npublic_url: http://b.example", func(c *Config) any { return fmt.Sprint(c.AllowedHosts) }, "[a.example b.example]"},
		{"empty allowed_hosts means default", "allowed_hosts: []", func(c *Config) any { return len(c.AllowedHosts) }, 3},
		{"storage.driver", "", func(c *Config) any { return c.Storage.Driver }, "sqlite"},
		{"storage.dsn", "", func(c *Config) any { return c.Storage.DSN }, filepath.Join(dir, "interlock.db")},
		{"absolute dsn kept", "storage: {dsn: /var/lib/interlock.db}", func(c *Config) any { return c.Storage.DSN }, "/var/lib/interlock.db"},
		{"memory dsn kept", "storage: {dsn: ':memory:'}", func(c *Config) any { return c.Storage.DSN }, ":memory:"},
		{"file: dsn resolved", "storage: {dsn: 'file:x.db?mode=ro'}", func(c *Config) any { return c.Storage.DSN }, "file:" + filepath.ToSlash(filepath.Join(dir, "x.db")) + "?mode=ro"},
		{"upstream prefix", "upstreams: [{name: gh, url: 'http://h'}]", func(c *Config) any { return c.Upstreams[0].Prefix }, "gh_"},
		{"upstream timeout", "upstreams: [{name: gh, url: 'http://h'}]", func(c *Config) any { return c.Upstreams[0].Timeout }, Duration(5 * time.Minute)},
		{"upstream timeout 0 keeps the default", "upstreams: [{name: gh, url: 'http://h', timeout: 0s}]", func(c *Config) any { return c.Upstreams[0].Timeout }, Duration(5 * time.Minute)},
		{"relay.max_message_bytes", "", func(c *Config) any { return c.Relay.MaxMessageBytes }, int64(4 << 20)},
		{"relay.session_idle_timeout", "", func(c *Config) any { return c.Relay.SessionIdleTimeout }, Duration(30 * time.Minute)},
		{"log.level", "", func(c *Config) any { return c.Log.Level }, "info"},
		{"log.format", "", func(c *Config) any { return c.Log.Format }, "text"},
		{"null values are unset", "listen: ~\nlog: {level: null}", func(c *Config) any { return c.Listen + " " + c.Log.Level }, "127.0.0.1:8470 info"},
		{"comments only", "# nothing here\n", func(c *Config) any { return c.Listen }, "127.0.0.1:8470"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, tt.src, nil)
			if got := tt.get(cfg); got != tt.want {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "interlock.yaml")
	src := "storage:\n  dsn: state/db.sqlite\nupstreams:\n  - name: fs\n    command: [server]\n    dir: srv\n    env: {TOKEN: '${T}'}\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, LoadOptions{Getenv: envOf(map[string]string{"T": "tok"})})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := filepath.Join(dir, "state", "db.sqlite"); cfg.Storage.DSN != want {
		t.Errorf("dsn = %q, want %q", cfg.Storage.DSN, want)
	}
	if want := filepath.Join(dir, "srv"); cfg.Upstreams[0].Dir != want {
		t.Errorf("dir = %q, want %q", cfg.Upstreams[0].Dir, want)
	}
	if got := cfg.Upstreams[0].Env["TOKEN"]; got != "tok" {
		t.Errorf("env TOKEN = %q, want tok", got)
	}

	// Problems name the file as given.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("listen: 127.0.0.1:8470\nlistn: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad, LoadOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), bad+":2: unknown key \"listn\"") {
		t.Errorf("Load(bad) error = %v, want it to start with %q", err, bad+":2: unknown key \"listn\"")
	}

	_, err = Load(filepath.Join(dir, "missing.yaml"), LoadOptions{})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want one wrapping fs.ErrNotExist", err)
	}
}

func TestLoadUsesOSEnvByDefault(t *testing.T) {
	t.Setenv("INTERLOCK_CONFIG_TEST_LEVEL", "warn")
	cfg, err := Parse([]byte("log: {level: '${INTERLOCK_CONFIG_TEST_LEVEL}'}"), "x.yaml", LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != "warn" {
		t.Errorf("log.level = %q, want warn (from os.LookupEnv)", cfg.Log.Level)
	}
}

func TestDecodeProblems(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		wants []want
	}{
		{
			name:  "unknown top-level key with suggestion",
			src:   "listen: 127.0.0.1:8470\nupstream: []\n",
			wants: []want{{2, `unknown key "upstream" (did you mean "upstreams"?)`}},
		},
		{
			name: "every unknown key is listed",
			src: `listn: 127.0.0.1:1
storage:
  drivr: sqlite
upstreams:
  - name: a
    url: http://a
    header: {X: y}
    cmd: [x]
log:
  levle: info
  colour: true
`,
			wants: []want{
				{1, `unknown key "listn" (did you mean "listen"?)`},
				{3, `storage: unknown key "drivr" (did you mean "driver"?)`},
				{7, `upstreams[0]: unknown key "header" (did you mean "headers"?)`},
				{8, `upstreams[0]: unknown key "cmd" (known keys: name, url, headers, command, env, dir, shared, prefix, timeout, credential_as_bearer)`},
				{10, `log: unknown key "levle" (did you mean "level"?)`},
				{11, `log: unknown key "colour" (known keys: level, format)`},
			},
		},
		{
			name:  "key in the wrong case",
			src:   "Listen: 127.0.0.1:8470\n",
			wants: []want{{1, `unknown key "Listen" (did you mean "listen"?)`}},
		},
		{
			name:  "duplicate key",
			src:   "log:\n  level: info\n  level: debug\n",
			wants: []want{{3, `log: duplicate key "level" (first at line 2)`}},
		},
		{
			name:  "duplicate header",
			src:   "upstreams:\n  - name: a\n    url: http://a\n    headers:\n      X-A: 1\n      X-A: 2\n",
			wants: []want{{6, `upstreams[0].headers: duplicate key "X-A" (first at line 5)`}},
		},
		{
			name:  "string expected, mapping given",
			src:   "listen: {a: b}\n",
			wants: []want{{1, "listen: must be a string, not a mapping"}},
		},
		{
			name:  "mapping expected, list given",
			src:   "storage: [sqlite]\n",
			wants: []want{{1, "storage: must be a mapping of keys, not a list"}},
		},
		{
			name:  "list expected, scalar given",
			src:   "allowed_hosts: localhost\n",
			wants: []want{{1, "allowed_hosts: must be a list, not a single value"}},
		},
		{
			name:  "command as a string",
			src:   "upstreams:\n  - name: a\n    command: npx -y server\n",
			wants: []want{{3, `upstreams[0].command: must be a list, not a single value (write the program and its arguments as a list`}},
		},
		{
			name:  "headers as a list",
			src:   "upstreams:\n  - name: a\n    url: http://a\n    headers: [Authorization]\n",
			wants: []want{{4, "upstreams[0].headers: must be a mapping of names to values, not a list"}},
		},
		{
			name:  "boolean",
			src:   "upstreams:\n  - name: a\n    command: [x]\n    shared: maybe\n",
			wants: []want{{4, `upstreams[0].shared: "maybe" is not a boolean (want true or false)`}},
		},
		{
			name:  "integer",
			src:   "relay:\n  max_message_bytes: 4MiB\n",
			wants: []want{{2, `relay.max_message_bytes: "4MiB" is not an integer`}},
		},
		{
			name:  "duration without unit",
			src:   "relay:\n  session_idle_timeout: 30\n",
			wants: []want{{2, `relay.session_idle_timeout: "30" is not a duration (want a Go duration such as "30s"`}},
		},
		{
			name:  "duration as a list",
			src:   "relay:\n  session_idle_timeout: [30s]\n",
			wants: []want{{2, `relay.session_idle_timeout: must be a duration such as "30s" or "5m", not a list`}},
		},
		{
			name:  "list item of the wrong kind",
			src:   "upstreams:\n  - name: a\n    command: [x, {y: z}]\n",
			wants: []want{{3, "upstreams[0].command[1]: must be a string, not a mapping"}},
		},
		{
			name:  "upstreams item not a mapping",
			src:   "upstreams:\n  - acme\n",
			wants: []want{{2, "upstreams[0]: must be a mapping of keys, not a single value"}},
		},
		{
			name:  "top level not a mapping",
			src:   "- a\n- b\n",
			wants: []want{{1, "the file must be a mapping of keys (listen, upstreams, ...), not a list"}},
		},
		{
			name:  "YAML syntax error",
			src:   "listen: 127.0.0.1:8470\nupstreams: [\n",
			wants: []want{{2, "invalid YAML: did not find expected node content"}},
		},
		{
			name:  "tab indentation",
			src:   "log:\n\tlevel: info\n",
			wants: []want{{2, "invalid YAML: found character that cannot start any token"}},
		},
		{
			name:  "second document",
			src:   "listen: 127.0.0.1:8470\n---\nlisten: 127.0.0.1:8471\n",
			wants: []want{{2, "only one YAML document is allowed"}},
		},
		{
			name:  "merge keys",
			src:   "base: &b {level: info}\nlog:\n  <<: *b\n",
			wants: []want{{1, `unknown key "base"`}, {3, `log: merge keys ("<<") are not supported`}},
		},
		{
			name:  "non-scalar key",
			src:   "? [a]\n: b\n",
			wants: []want{{1, "keys must be plain names, not a list"}},
		},
		{
			// A type error suppresses the follow-on "needs url or command".
			name:  "no follow-on problems",
			src:   "upstreams:\n  - name: a\n    url: [http://a]\n",
			wants: []want{{3, "upstreams[0].url: must be a string, not a list"}},
		},
		{
			name:  "aliases are followed",
			src:   "upstreams:\n  - name: a\n    url: &u notaurl\n  - name: b\n    url: *u\n",
			wants: []want{{3, "upstreams[0].url: must be an absolute http:// or https:// URL"}, {5, "upstreams[1].url: must be an absolute http:// or https:// URL"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parse(t, tt.src, nil)
			if cfg != nil {
				t.Errorf("Parse returned a config along with problems")
			}
			checkProblems(t, err, tt.wants)
		})
	}
}

func TestValidateProblems(t *testing.T) {
	up := func(body string) string { return "upstreams:\n  - name: a\n" + body }
	tests := []struct {
		name  string
		src   string
		wants []want
	}{
		// listen
		{"listen without port", "listen: localhost\n", []want{{1, `listen: "localhost" is not host:port (e.g. 127.0.0.1:8470)`}}},
		{"listen port out of range", "listen: 127.0.0.1:70000\n", []want{{1, `listen: "127.0.0.1:70000" does not have a port from 0 to 65535`}}},
		{"listen named port", "listen: 127.0.0.1:http\n", []want{{1, "does not have a port from 0 to 65535"}}},
		{"listen bad host", "listen: 'bad host:8470'\n", []want{{1, `listen: "bad host:8470" does not have a valid host name or IP address`}}},

		// public_url
		{"public_url relative", "public_url: /mcp\n", []want{{1, `public_url: "/mcp" is not an absolute http:// or https:// URL`}}},
		{"public_url other scheme", "public_url: ftp://example.com\n", []want{{1, "is not an absolute http:// or https:// URL"}}},
		{"public_url without scheme", "public_url: example.com:8470\n", []want{{1, "is not an absolute http:// or https:// URL"}}},
		{"public_url with query", "public_url: https://example.com/?a=b\n", []want{{1, `public_url: must not contain a query`}}},
		{"public_url with fragment", "public_url: https://example.com/#top\n", []want{{1, `public_url: must not contain a fragment`}}},
		{"public_url with user info", "public_url: https://u:p@example.com\n", []want{{1, `public_url: must not contain user info`}}},
		{"public_url bad port", "public_url: https://example.com:99999\n", []want{{1, "does not have a port from 1 to 65535"}}},

		// allowed_hosts
		{"allowed_hosts scheme", "allowed_hosts: ['https://example.com']\n", []want{{1, `allowed_hosts[0]: "https://example.com" must not include a scheme`}}},
		{"allowed_hosts path", "allowed_hosts: [example.com/mcp]\n", []want{{1, `allowed_hosts[0]: "example.com/mcp" must be a host name or IP address with an optional port (no path`}}},
		{"allowed_hosts unbracketed IPv6", "allowed_hosts: ['::1']\n", []want{{1, `allowed_hosts[0]: "::1" is an IPv6 address without brackets`}}},
		{"allowed_hosts bad port", "allowed_hosts: ['example.com:x']\n", []want{{1, `"example.com:x" does not have a port from 1 to 65535`}}},
		{"allowed_hosts bad host", "allowed_hosts: ['exa mple']\n", []want{{1, "must be a host name or IP address"}}},
		{"allowed_hosts empty entry", "allowed_hosts: ['']\n", []want{{1, "allowed_hosts[0]: must not be empty"}}},
		{"allowed_hosts bad IPv4", "allowed_hosts: [1.2.3.999]\n", []want{{1, `"1.2.3.999" is not a valid host name or IP address`}}},
		{"allowed_hosts second entry bad", "allowed_hosts:\n  - localhost\n  - 'a/b'\n", []want{{3, "allowed_hosts[1]:"}}},

		// storage
		{"postgres without dsn", "storage:\n  driver: postgres\n", []want{{1, `storage.dsn: is required for postgres`}}},
		{"postgres bad schema", "storage:\n  driver: postgres\n  dsn: postgres://x\n  schema: a-b\n", []want{{4, `storage.schema: "a-b" must be a plain identifier`}}},
		{"postgres negative max_conns", "storage:\n  driver: postgres\n  dsn: postgres://x\n  max_conns: -1\n", []want{{4, `storage.max_conns: must not be negative`}}},
		{"max_conns too large", "storage:\n  driver: postgres\n  dsn: postgres://x\n  max_conns: 3000000000\n", []want{{4, `storage.max_conns: "3000000000" is not an integer`}}},
		{"schema on sqlite", "storage:\n  schema: x\n", []want{{1, `storage: schema and max_conns apply only to the postgres driver`}}},
		{"unknown driver", "storage:\n  driver: mysql\n", []want{{2, `storage.driver: unknown driver "mysql" (want "sqlite" or "postgres")`}}},
		{"bearer with brokered authorization", "upstreams:\n  - name: a\n    url: http://x/mcp\n    headers: {Authorization: Bearer k}\n    credential_as_bearer: true\n", []want{{5, `upstreams[0].credential_as_bearer: cannot be used with an Authorization header`}}},
		{"bearer on stdio", "upstreams:\n  - name: a\n    command: [x]\n    credential_as_bearer: true\n", []want{{4, `upstreams[0].credential_as_bearer: applies only to url`}}},
		{"credential algorithm", "credentials:\n  algorithm: RS256\n", []want{{2, `credentials.algorithm: "RS256" is not one of EdDSA, ES256`}}},

		// upstreams
		{"no upstreams is fine", "upstreams: []\n", nil},
		{"name missing", "upstreams:\n  - url: http://a\n", []want{{2, "upstreams[0].name: is required"}}},
		{"name too long", "upstreams:\n  - name: " + strings.Repeat("a", 33) + "\n    url: http://a\n", []want{{2, `must be 1-32 characters from a-z, A-Z, 0-9, "_" and "-"`}}},
		{"name bad characters", "upstreams:\n  - name: a.b\n    url: http://a\n", []want{{2, `upstreams[0].name: "a.b" must be 1-32 characters`}}},
		{"name 32 characters with default prefix", "upstreams:\n  - name: " + strings.Repeat("a", 32) + "\n    url: http://a\n", nil},
		{"duplicate name", up("    url: http://a\n  - name: a\n    url: http://b\n"), []want{{4, `upstreams[1].name: duplicate upstream name "a" (first at line 2)`}}},
		{"neither url nor command", up("    prefix: x_\n"), []want{{2, "upstreams[0]: needs url (Streamable HTTP) or command (stdio)"}}},
		{"both url and command", up("    url: http://a\n    command: [x]\n"), []want{{2, "upstreams[0]: has both url and command; set exactly one"}}},
		{"url relative", up("    url: /mcp\n"), []want{{3, "upstreams[0].url: must be an absolute http:// or https:// URL"}}},
		{"url other scheme", up("    url: ws://host/mcp\n"), []want{{3, "upstreams[0].url: must be an absolute http:// or https:// URL"}}},
		{"url fragment", up("    url: http://host/mcp#x\n"), []want{{3, "upstreams[0].url: must not contain a fragment"}}},
		{"empty command list", up("    command: []\n"), []want{{2, "needs url (Streamable HTTP) or command (stdio)"}}},
		{"empty program", up("    command: ['', x]\n"), []want{{3, "upstreams[0].command[0]: the program must not be empty"}}},
		{"headers with command", up("    command: [x]\n    headers: {X-A: b}\n"), []want{{4, "upstreams[0].headers: apply only to url (Streamable HTTP) upstreams"}}},
		{"env with url", up("    url: http://a\n    env: {A: b}\n"), []want{{4, "upstreams[0].env: applies only to command (stdio) upstreams"}}},
		{"dir with url", up("    url: http://a\n    dir: /tmp\n"), []want{{4, "upstreams[0].dir: applies only to command (stdio) upstreams"}}},
		{"shared with url", up("    url: http://a\n    shared: true\n"), []want{{4, "upstreams[0].shared: applies only to command (stdio) upstreams"}}},
		{"header name not a token", up("    url: http://a\n    headers:\n      'X A': b\n"), []want{{5, `upstreams[0].headers.X A: "X A" is not a valid HTTP header name`}}},
		{"hop-by-hop header", up("    url: http://a\n    headers:\n      Connection: close\n      Transfer-Encoding: chunked\n"), []want{
			{5, `"Connection" is a hop-by-hop header and cannot be set`},
			{6, `"Transfer-Encoding" is a hop-by-hop header and cannot be set`},
		}},
		{"Host and Content-Length", up("    url: http://a\n    headers:\n      Host: x\n      content-length: \"1\"\n"), []want{
			{5, `upstreams[0].headers.Host: "Host" is set by interlock itself and cannot be configured`},
			{6, `"content-length" is set by interlock itself`},
		}},
		{"Authorization is allowed", up("    url: http://a\n    headers:\n      Authorization: Bearer x\n      X-Api-Key: y\n"), nil},
		{"headers differing only in case", up("    url: http://a\n    headers:\n      x-key: a\n      X-Key: b\n"), []want{{6, `upstreams[0].headers.X-Key: "X-Key" repeats header "x-key" (header names are case-insensitive)`}}},
		{"header value with newline", up("    url: http://a\n    headers:\n      X-Key: \"a\\nb\"\n"), []want{{5, "upstreams[0].headers.X-Key: value must not contain CR, LF or NUL"}}},
		{"env name with =", up("    command: [x]\n    env:\n      'A=B': c\n"), []want{{5, `"A=B" is not a valid environment variable name`}}},
		{"prefix bad characters", up("    url: http://a\n    prefix: 'a.'\n"), []want{{4, `upstreams[0].prefix: "a." must be 0-32 characters`}}},
		{"prefix too long", up("    url: http://a\n    prefix: " + strings.Repeat("p", 33) + "\n"), []want{{4, "must be 0-32 characters"}}},
		{"duplicate prefix", up("    url: http://a\n    prefix: x_\n  - name: b\n    url: http://b\n    prefix: x_\n"), []want{{7, `upstreams[1].prefix: prefix "x_" is also used by upstream "a" (tool names would collide)`}}},
		{"explicit prefix equal to another's default", up("    url: http://a\n  - name: b\n    url: http://b\n    prefix: a_\n"), []want{{6, `prefix "a_" is also used by upstream "a"`}}},
		{"two empty prefixes", up("    url: http://a\n    prefix: ''\n  - name: b\n    url: http://b\n    prefix: ''\n"), []want{{7, `prefix "" is also used by upstream "a"`}}},
		{"negative timeout", up("    url: http://a\n    timeout: -1s\n"), []want{{4, `upstreams[0].timeout: must be positive, got "-1s"`}}},

		// relay
		{"negative max_message_bytes", "relay:\n  max_message_bytes: -1\n", []want{{2, `relay.max_message_bytes: must be a positive number of bytes, got "-1"`}}},
		{"negative session_idle_timeout", "relay:\n  session_idle_timeout: -5m\n", []want{{2, `relay.session_idle_timeout: must be positive, got "-5m0s"`}}},

		// log
		{"log level", "log:\n  level: verbose\n", []want{{2, `log.level: "verbose" is not one of debug, info, warn, error`}}},
		{"log format", "log:\n  format: yaml\n", []want{{2, `log.format: "yaml" is not one of text, json`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parse(t, tt.src, nil)
			if len(tt.wants) == 0 {
				if err != nil {
					t.Fatalf("unexpected error:\n%v", err)
				}
				if err := cfg.Validate(); err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if cfg != nil {
				t.Errorf("Parse returned a config along with problems")
			}
			checkProblems(t, err, tt.wants)
		})
	}
}

func TestEveryProblemAtOnce(t *testing.T) {
	src := `listen: nope
public_url: ftp://x
allowed_hosts: ['http://a']
storage: {driver: postgres}
upstreams:
  - name: a b
    url: http://a
    command: [x]
  - name: ok
    url: /relative
    headers: {Host: x}
    timeout: -1s
relay: {max_message_bytes: 0, session_idle_timeout: -1m}
log: {level: loud, format: xml, extra: 1}
`
	_, err := parse(t, src, nil)
	checkProblems(t, err, []want{
		{1, "listen:"},
		{2, "public_url:"},
		{3, "allowed_hosts[0]:"},
		{4, `storage.dsn: is required for postgres`},
		{6, "upstreams[0].name:"},
		{6, "upstreams[0]: has both url and command"},
		{10, "upstreams[1].url:"},
		{11, "upstreams[1].headers.Host:"},
		{12, "upstreams[1].timeout:"},
		{13, "relay.session_idle_timeout:"},
		{14, "log.level:"},
		{14, "log.format:"},
		{14, `log: unknown key "extra"`},
	})
	// max_message_bytes: 0 means "default", so it is not a problem.
	if strings.Contains(err.Error(), "max_message_bytes") {
		t.Errorf("max_message_bytes: 0 should keep the default, got:\n%v", err)
	}
}

func TestErrorFormat(t *testing.T) {
	src := "log:\n  level: loud\nupstream: []\nlisten: x\n"
	_, err := parse(t, src, nil)
	if err == nil {
		t.Fatal("expected an error")
	}
	want := `interlock.yaml:2: log.level: "loud" is not one of debug, info, warn, error
interlock.yaml:3: unknown key "upstream" (did you mean "upstreams"?)
interlock.yaml:4: listen: "x" is not host:port (e.g. 127.0.0.1:8470)`
	if err.Error() != want {
		t.Errorf("Error() =\n%s\nwant\n%s", err, want)
	}

	// Problems without a line come last; without a file the line is shown
	// as "line N".
	e := newError("", []Problem{{Line: 0, Path: "a", Msg: "m0"}, {Line: 9, Msg: "m9"}, {Line: 2, Path: "b", Msg: "m2"}, {Line: 2, Path: "b", Msg: "m2"}})
	if got, want := e.Error(), "line 2: b: m2\nline 9: m9\na: m0"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestEnvExpansion(t *testing.T) {
	env := map[string]string{
		"HOST":    "127.0.0.1",
		"PORT":    "9001",
		"KEY":     "sk-live:abc#def $$ ${OTHER}",
		"EMPTY":   "",
		"SHARED":  "true",
		"MAXB":    "2048",
		"TIMEOUT": "90s",
	}
	src := `listen: ${HOST}:${PORT}
upstreams:
  - name: acme
    url: https://api.example.com/mcp
    headers:
      Authorization: Bearer ${KEY}
      X-Literal: "cost: $$5 and $${NOT_A_VAR}"
      X-Default: ${UNSET:-fallback}
      X-Empty-Default: ${EMPTY:-used}
      X-Empty: "[${EMPTY}]"
      X-Empty-Fallback: "[${UNSET:-}]"
    timeout: ${TIMEOUT}
  - name: fs
    command: ["${UNSET:-npx}", "--key=${KEY}"]
    shared: ${SHARED}
relay:
  max_message_bytes: ${MAXB}
`
	cfg := mustParse(t, src, env)
	h := cfg.Upstreams[0].Headers
	checks := []struct{ name, got, want string }{
		{"listen from two variables", cfg.Listen, "127.0.0.1:9001"},
		{"secret with : # and $ kept literally", h["Authorization"], "Bearer sk-live:abc#def $$ ${OTHER}"},
		{"$$ is a literal $", h["X-Literal"], "cost: $5 and ${NOT_A_VAR}"},
		{"default for an unset variable", h["X-Default"], "fallback"},
		{"default for an empty variable", h["X-Empty-Default"], "used"},
		{"set but empty", h["X-Empty"], "[]"},
		{"empty default", h["X-Empty-Fallback"], "[]"},
		{"argv", strings.Join(cfg.Upstreams[1].Command, " "), "npx --key=sk-live:abc#def $$ ${OTHER}"},
		{"duration", cfg.Upstreams[0].Timeout.String(), "1m30s"},
		{"bool", fmt.Sprint(cfg.Upstreams[1].Shared), "true"},
		{"integer", fmt.Sprint(cfg.Relay.MaxMessageBytes), "2048"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}

	// Expansion happens in values only, never in keys.
	cfg = mustParse(t, "upstreams:\n  - name: a\n    command: [x]\n    env: {'${KEY}_X': v}\n", env)
	if got, ok := cfg.Upstreams[0].Env["${KEY}_X"]; !ok || got != "v" {
		t.Errorf("env keys must be kept literally; got %v", cfg.Upstreams[0].Env)
	}
}

func TestEnvExpansionProblems(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		wants []want
	}{
		{"missing variable", "log:\n  level: ${LOG_LEVEL}\n", []want{{2, "log.level: environment variable LOG_LEVEL is not set (set it, or give a default: ${LOG_LEVEL:-default})"}}},
		{"two missing variables", "listen: ${A}:${B}\n", []want{{1, "environment variable A is not set"}, {1, "environment variable B is not set"}}},
		{"missing in a header", "upstreams:\n  - name: a\n    url: http://a\n    headers:\n      Authorization: Bearer ${ACME_API_KEY}\n", []want{{5, "upstreams[0].headers.Authorization: environment variable ACME_API_KEY is not set"}}},
		{"lone dollar", "log:\n  level: $LEVEL\n", []want{{2, `"$" must be followed by "{" or "$" (write "$$" for a literal "$")`}}},
		{"unterminated", "log:\n  level: ${LEVEL\n", []want{{2, `unterminated "${" (missing "}")`}}},
		{"bad name", "log:\n  level: ${1X}\n", []want{{2, `invalid variable name "1X"`}}},
		{"empty name", "log:\n  level: ${}\n", []want{{2, `invalid variable name ""`}}},
		{"missing variable suppresses follow-on problems", "upstreams:\n  - name: a\n    url: ${URL}\n", []want{{3, "upstreams[0].url: environment variable URL is not set"}}},
		{"missing variables reported with other problems", "listen: ${L}\nlog: {level: x}\nfoo: 1\n", []want{
			{1, "environment variable L is not set"},
			{2, `"x" is not one of`},
			{3, `unknown key "foo"`},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.src, map[string]string{"SET": "x"})
			checkProblems(t, err, tt.wants)
		})
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	const secret = "TOPSECRET-value-42"
	env := map[string]string{"S": secret, "NL": "bad\n" + secret}
	src := `listen: ${S}
public_url: ${S}
allowed_hosts: ['${S}']
storage: {driver: '${S}'}
upstreams:
  - name: ${S}
    url: ftp://${S}
    headers:
      Host: ${S}
      X-Key: ${NL}
    prefix: ${S}.
    timeout: ${S}
  - name: b
    command: [x]
    shared: ${S}
    env: {K: '${S}'}
relay: {max_message_bytes: '${S}', session_idle_timeout: '${S}'}
log: {level: '${S}', format: '${S}'}
`
	_, err := parse(t, src, env)
	if err == nil {
		t.Fatal("expected problems")
	}
	if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "TOPSECRET") {
		t.Fatalf("error message leaks the secret:\n%v", err)
	}
	var cerr *Error
	if !errors.As(err, &cerr) || len(cerr.Problems) < 10 {
		t.Fatalf("expected many problems, got:\n%v", err)
	}
	if !strings.Contains(err.Error(), `log.level: "${S}" (after expansion) is not one of`) {
		t.Errorf("expanded values should be shown as written in the file; got:\n%v", err)
	}

	// Validate on a parsed config that was later made invalid also keeps
	// the secret out.
	cfg := mustParse(t, "log: {level: '${LVL}'}\n", map[string]string{"LVL": "debug"})
	cfg.Log.Level = secret
	verr := cfg.Validate()
	if verr == nil || strings.Contains(verr.Error(), secret) {
		t.Errorf("Validate error = %v; want a problem without the value", verr)
	}
}

func TestValidateDirect(t *testing.T) {
	// A Config built in code, without defaults: every empty required value
	// is a problem, with no file or line.
	err := (&Config{}).Validate()
	checkProblems(t, err, []want{
		{0, "listen: is required"},
		{0, "storage.driver: is required"},
		{0, "relay.max_message_bytes: must be a positive number of bytes"},
		{0, "relay.session_idle_timeout: must be positive"},
		{0, "credentials.algorithm: \"\" is not one of EdDSA, ES256"},
		{0, `log.level: "" is not one of`},
		{0, `log.format: "" is not one of`},
	})
	if strings.Contains(err.Error(), "interlock.yaml") {
		t.Errorf("no file expected in %v", err)
	}

	// A parsed config keeps its line numbers for later Validate calls.
	cfg := mustParse(t, "listen: 127.0.0.1:8470\nupstreams:\n  - name: a\n    url: http://a\n", nil)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	cfg.Upstreams[0].URL = "nope"
	cfg.Log.Level = "loud"
	err = cfg.Validate()
	checkProblems(t, err, []want{{4, "upstreams[0].url:"}, {0, "log.level:"}})
	if !strings.Contains(err.Error(), "interlock.yaml:4: upstreams[0].url:") || !strings.Contains(err.Error(), "interlock.yaml: log.level:") {
		t.Errorf("Validate error should name the file and line:\n%v", err)
	}
}

func TestHostAllowed(t *testing.T) {
	cfg := mustParse(t, "public_url: https://gw.example.com:8443\nallowed_hosts: [localhost, 127.0.0.1, '[::1]', pinned.example:9000]\n", nil)
	tests := []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"localhost:8470", true},
		{"LOCALHOST:1", true},
		{"127.0.0.1:8470", true},
		{"[::1]:8470", true},
		{"[::1]", true},
		{"gw.example.com:8443", true},
		{"gw.example.com", false},
		{"gw.example.com:443", false},
		{"pinned.example:9000", true},
		{"pinned.example:9001", false},
		{"pinned.example", false},
		{"evil.example", false},
		{"localhost.evil.example", false},
		{"127.0.0.2", false},
		{"", false},
		{"::1", false},
	}
	for _, tt := range tests {
		if got := cfg.hostAllowed(tt.host); got != tt.want {
			t.Errorf("hostAllowed(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}

}

func TestRedacted(t *testing.T) {
	const secret = "sk-very-secret"
	cfg := mustParse(t, `storage: {dsn: interlock.db}
upstreams:
  - name: acme
    url: https://user:pw-secret@mcp.acme.example/mcp?key=q-secret&x=1
    headers: {Authorization: 'Bearer ${KEY}'}
  - name: fs
    command: [npx, server]
    env: {TOKEN: '${KEY}'}
scim: {token: '${KEY}-with-enough-length-for-a-token'}
notifications:
  webhooks: [{url: 'https://hooks.example/x', secret: '${KEY}-webhook'}]
  slack: [{url: 'https://hooks.slack.example/services/${KEY}'}]
  smtp: {addr: 'smtp.example:587', from: a@example.com, password: '${KEY}'}
`, map[string]string{"KEY": secret})
	r := cfg.Redacted()

	if got := r.Upstreams[0].Headers["Authorization"]; got != RedactedValue {
		t.Errorf("redacted header = %q", got)
	}
	if got := r.Upstreams[1].Env["TOKEN"]; got != RedactedValue {
		t.Errorf("redacted env = %q", got)
	}
	if want := "https://[redacted]@mcp.acme.example/mcp?key=[redacted]&x=[redacted]"; r.Upstreams[0].URL != want {
		t.Errorf("redacted url = %q, want %q", r.Upstreams[0].URL, want)
	}
	// The original is untouched.
	if cfg.Upstreams[0].Headers["Authorization"] != "Bearer "+secret || cfg.Upstreams[1].Env["TOKEN"] != secret {
		t.Errorf("Redacted changed the original config")
	}
	if !strings.Contains(cfg.Upstreams[0].URL, "pw-secret") {
		t.Errorf("Redacted changed the original URL")
	}

	for name, out := range map[string]string{
		"String":        cfg.String(),
		"Sprint(value)": fmt.Sprint(*cfg),
		"Sprint(ptr)":   fmt.Sprint(cfg),
		"slog json":     logJSON(cfg),
	} {
		for _, s := range []string{secret, "pw-secret", "q-secret"} {
			if strings.Contains(out, s) {
				t.Errorf("%s leaks %q:\n%s", name, s, out)
			}
		}
		if !strings.Contains(out, "acme") {
			t.Errorf("%s should still show the upstream names:\n%s", name, out)
		}
	}
	if !strings.Contains(cfg.String(), "Authorization: '[redacted]'") {
		t.Errorf("String() should show the header name with a redacted value:\n%s", cfg.String())
	}
}

func TestDuration(t *testing.T) {
	var d Duration
	if err := yamlUnmarshal("90s", &d); err != nil || d != Duration(90*time.Second) {
		t.Errorf("unmarshal 90s = %v, %v", d, err)
	}
	for _, bad := range []string{"30", "soon", "[1s]"} {
		if err := yamlUnmarshal(bad, &d); err == nil || !strings.Contains(err.Error(), `want a Go duration such as "30s" or "5m"`) && !strings.Contains(err.Error(), "must be a string") {
			t.Errorf("unmarshal %q: error = %v, want a clear duration error", bad, err)
		}
	}
	if got := Duration(5 * time.Minute).String(); got != "5m0s" {
		t.Errorf("String = %q", got)
	}
	v, err := Duration(30 * time.Second).MarshalYAML()
	if err != nil || v != "30s" {
		t.Errorf("MarshalYAML = %v, %v", v, err)
	}
	// Round trip through the redacted YAML output.
	cfg := mustParse(t, "relay: {session_idle_timeout: 1h30m}", nil)
	again := mustParse(t, cfg.String(), nil)
	if again.Relay.SessionIdleTimeout != cfg.Relay.SessionIdleTimeout {
		t.Errorf("round trip: %v != %v", again.Relay.SessionIdleTimeout, cfg.Relay.SessionIdleTimeout)
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "abc", 0}, {"upstream", "upstreams", 1}, {"levle", "level", 1}, {"kitten", "sitting", 3}, {"", "abc", 3},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func logJSON(cfg *Config) string {
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("effective config", "config", cfg)
	return buf.String()
}

func yamlUnmarshal(src string, v any) error {
	return yaml.Unmarshal([]byte(src), v)
}

func TestListenPortZeroPicksAFreePort(t *testing.T) {
	cfg, err := Parse([]byte("listen: 127.0.0.1:0\n"), "x.yaml", LoadOptions{Getenv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PublicURL != "http://localhost" {
		t.Errorf("public_url %q, want http://localhost", cfg.PublicURL)
	}
}

func TestPrefixesMustNotStartEachOther(t *testing.T) {
	env := LoadOptions{Getenv: func(string) (string, bool) { return "", false }}
	for _, tc := range []struct {
		name, src string
		ok        bool
	}{
		{"default prefixes a_ and a_b_", "upstreams:\n  - {name: a, url: 'http://x/mcp'}\n  - {name: a_b, url: 'http://y/mcp'}\n", false},
		{"empty prefix with another upstream", "upstreams:\n  - {name: a, url: 'http://x/mcp', prefix: ''}\n  - {name: b, url: 'http://y/mcp'}\n", false},
		{"empty prefix alone", "upstreams:\n  - {name: a, url: 'http://x/mcp', prefix: ''}\n", true},
		{"distinct", "upstreams:\n  - {name: acme, url: 'http://x/mcp'}\n  - {name: files, url: 'http://y/mcp'}\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), "x.yaml", env)
			if tc.ok && err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "start alike")) {
				t.Fatalf("want a prefix collision problem, got %v", err)
			}
		})
	}
}
