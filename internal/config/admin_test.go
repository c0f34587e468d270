package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const (
	hashA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	hashB = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
)

func TestAdminTokens(t *testing.T) {
	cfg := mustParse(t, fmt.Sprintf(`admin:
  tokens:
    - {name: ops-team, sha256: %s, roles: [admin]}
    - name: soc
      sha256: %s
      roles: [security, viewer]
`, hashA, hashB), nil)
	if len(cfg.Admin.Tokens) != 2 || cfg.Admin.Tokens[0].Name != "ops-team" || cfg.Admin.Tokens[1].Roles[1] != "viewer" {
		t.Errorf("admin tokens: %+v", cfg.Admin.Tokens)
	}
	// No tokens: the API is off, and that is valid.
	if cfg := mustParse(t, "admin: {tokens: []}\n", nil); len(cfg.Admin.Tokens) != 0 {
		t.Error("tokens from nothing")
	}
}

func TestAdminTokenProblems(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"no name", `[{sha256: ` + hashA + `, roles: [admin]}]`, "admin.tokens[0].name"},
		{"bad name", `[{name: "a b", sha256: ` + hashA + `, roles: [admin]}]`, "admin.tokens[0].name"},
		{"duplicate name", `[{name: a, sha256: ` + hashA + `, roles: [admin]}, {name: a, sha256: ` + hashB + `, roles: [viewer]}]`, "duplicate admin token name"},
		{"short hash", `[{name: a, sha256: abc, roles: [admin]}]`, "64 lower-case hex"},
		{"upper-case hash", `[{name: a, sha256: ` + strings.ToUpper(hashA) + `, roles: [admin]}]`, "64 lower-case hex"},
		{"same hash", `[{name: a, sha256: ` + hashA + `, roles: [admin]}, {name: b, sha256: ` + hashA + `, roles: [viewer]}]`, "same token as line"},
		{"no roles", `[{name: a, sha256: ` + hashA + `}]`, "admin.tokens[0].roles: is required"},
		{"unknown role", `[{name: a, sha256: ` + hashA + `, roles: [root]}]`, `"root" is not a role`},
		{"unknown key", `[{name: a, sha256: ` + hashA + `, roles: [admin], token: x}]`, "token"},
	} {
		_, err := parse(t, "admin:\n  tokens: "+c.yaml+"\n", nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error = %v, want it to say %q", c.name, err, c.want)
		}
	}
	// A bad hash is not printed back (it might be the token itself).
	_, err := parse(t, "admin:\n  tokens: [{name: a, sha256: ila_the-token-itself, roles: [admin]}]\n", nil)
	if err == nil || strings.Contains(err.Error(), "ila_the-token-itself") {
		t.Errorf("bad hash: %v", err)
	}
}

func TestAdminTokensNotLogged(t *testing.T) {
	cfg := mustParse(t, "admin:\n  tokens: [{name: ops, sha256: "+hashA+", roles: [admin]}]\n", nil)
	r := cfg.Redacted()
	if r.Admin.Tokens[0].SHA256 != RedactedValue || r.Admin.Tokens[0].Name != "ops" || r.Admin.Tokens[0].Roles[0] != "admin" {
		t.Errorf("redacted: %+v", r.Admin.Tokens)
	}
	if cfg.Admin.Tokens[0].SHA256 != hashA {
		t.Error("Redacted changed the original")
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "config", cfg)
	for name, out := range map[string]string{"String": cfg.String(), "log": buf.String(), "Sprint": fmt.Sprint(*cfg)} {
		if strings.Contains(out, hashA) {
			t.Errorf("%s prints an admin token hash:\n%s", name, out)
		}
	}
}
