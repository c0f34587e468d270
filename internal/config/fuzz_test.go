package config

import (
	"errors"
	"strings"
	"testing"
)

const fuzzSecret = "FUZZ-SECRET-93b1"

func FuzzParse(f *testing.F) {
	seeds := []string{
		"",
		fullConfig,
		string(Starter()),
		"listen: 127.0.0.1:8470\nupstream: []\n",
		"upstreams:\n  - name: a\n    url: http://a\n    headers: {Authorization: 'Bearer ${SECRET}'}\n",
		"upstreams:\n  - name: a\n    command: [npx, -y, x]\n    env: {T: '${SECRET:-d}'}\n    shared: true\n",
		"upstreams:\n  - name: a\n    command: npx\n  - name: a\n    url: ftp://x\n",
		"log: {level: ${MISSING}, format: $$x}\n",
		"listen: [\n",
		"a: &a [*a]\nlisten: *a\n",
		"x: &x {level: info}\nlog: *x\n",
		"---\nlisten: :1\n---\n",
		"allowed_hosts: ['[::1]:8470', '::1', 'http://x/']\npublic_url: http://[::1]:8470/\n",
		"relay: {max_message_bytes: -1, session_idle_timeout: 5}\n",
		"storage: {driver: postgres, dsn: 'postgres://u:p@h/db'}\n",
		"? [a]\n: b\n",
		"upstreams: [~, {name: ~}, {name: b, prefix: ~, url: 'http://b', timeout: 1ns}]\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	env := envOf(map[string]string{"SECRET": fuzzSecret, "EMPTY": "", "PORT": "8470"})
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "fuzz.yaml", LoadOptions{Getenv: env})
		if err != nil {
			if cfg != nil {
				t.Fatalf("Parse returned a config and an error")
			}
			var cerr *Error
			if !errors.As(err, &cerr) || len(cerr.Problems) == 0 {
				t.Fatalf("Parse error is not an *Error with problems: %T %v", err, err)
			}
			if !strings.Contains(string(data), fuzzSecret) && strings.Contains(err.Error(), fuzzSecret) {
				t.Fatalf("error leaks an expanded variable:\n%v", err)
			}
			return
		}
		if cfg == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate rejects:\n%v\ninput:\n%s", err, data)
		}
		r := cfg.Redacted()
		for i, u := range r.Upstreams {
			for k, v := range u.Headers {
				if v != RedactedValue {
					t.Fatalf("Redacted kept upstreams[%d].headers.%s", i, k)
				}
			}
			for k, v := range u.Env {
				if v != RedactedValue {
					t.Fatalf("Redacted kept upstreams[%d].env.%s", i, k)
				}
			}
		}
	})
}
