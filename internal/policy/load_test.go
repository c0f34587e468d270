package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		// want are substrings of the error, one problem each, in order.
		want []string
	}{
		{name: "unknown top-level key with line", src: "version: 1\nrulez: []\n",
			want: []string{`test.yaml:2:1: unknown field "rulez"`}},
		{name: "unknown rule key with line", src: "version: 1\nrules:\n  - id: a\n    when: 'true'\n    effect: allow\n    wehn: x\n",
			want: []string{`test.yaml:6:5: rules[0]: unknown field "wehn" (known: id, when, effect,`}},
		{name: "bad CEL names file, rule and position", src: "version: 1\nrules:\n  - id: bad\n    when: 'call.actoin == \"spend\"'\n    effect: allow\n",
			want: []string{`test.yaml:4:16: rule "bad" when: undefined field 'actoin' (expression line 1, column 5)`}},
		{name: "bad CEL in a plain scalar", src: "version: 1\nrules:\n  - id: bad\n    when: nosuchvar > 1\n    effect: allow\n",
			want: []string{`test.yaml:4:11: rule "bad" when: undeclared reference to 'nosuchvar'`}},
		{name: "CEL syntax error in a block scalar", src: "version: 1\nrules:\n  - id: bad\n    when: |\n      true &&\n      (\n    effect: allow\n",
			want: []string{`test.yaml:7: rule "bad" when: Syntax error`}},
		{name: "duplicate rule ids", src: "version: 1\nrules:\n  - {id: a, when: 'true', effect: allow}\n  - {id: a, when: 'true', effect: deny}\n",
			want: []string{`test.yaml:4:10: rules[1].id: duplicate rule id "a"`}},
		{name: "bad effect", src: "version: 1\nrules:\n  - {id: a, when: 'true', effect: permit}\n",
			want: []string{`test.yaml:3:35: rule "a" effect: want allow, deny or approve, got "permit"`}},
		{name: "bad glob", src: "version: 1\ntools:\n  - {match: 'acme.[', risk: low}\n",
			want: []string{`test.yaml:3:13: tools[0].match: bad glob "acme.[": syntax error in pattern`}},
		{name: "missing version", src: "default: deny\n",
			want: []string{`version: missing`}},
		{name: "unsupported version", src: "version: 2\n",
			want: []string{`test.yaml:1:10: version: unsupported version 2 (want 1)`}},
		{name: "every problem at once", src: `version: 1
default: maybe
mode: loud
tools:
  - {match: "a.*", action: fly, risk: extreme, class: odd, amount: 'args.x + "s"'}
  - {match: "b.*"}
rules:
  - {when: 'true', effect: allow}
  - {id: "budget:x", when: 'true', effect: allow}
  - {id: n, when: 'call.amount', effect: allow}
  - {id: a, when: 'true', effect: approve}
  - {id: o, when: 'true', effect: approve, approvers: [owner], separation_of_duties: true}
  - {id: p, when: 'true', effect: allow, approvers: [owner], quorum: 2}
  - {id: q, when: 'true', effect: approve, approvers: ["role:", "user:nobody", boss, owner, owner]}
  - {id: r, when: 'true', effect: approve, approvers: ["user:a@x.org", "user:b@x.org"], quorum: 3}
  - {id: s, when: 'true', effect: deny, mode: sometimes, constraints: {lifetime: 5m}}
  - {id: t, when: 'budget["nope"].total > 0.0', effect: allow, constraints: {lifetime: forever, uses: 0, max_amount: -1}}
  - {id: u, when: 'lookup.nothing', effect: allow}
budgets:
  - {id: b, per: team, window: 0s, sum: '"x"', limit: -5, exceeded: explode}
  - {id: c, per: agent, sum: 1, exceeded: approve}
lookups:
  - {id: open-ticket, ttl: 1y}
`, want: []string{
			`test.yaml:2:10: default: want deny or approve, got "maybe"`,
			`test.yaml:3:7: mode: want enforce or shadow, got "loud"`,
			`test.yaml:5:28: tools[0] (a.*) action: want one of read, write, spend, infrastructure, personal-data, admin, got "fly"`,
			`tools[0] (a.*) risk: want one of low, medium, high, critical, got "extreme"`,
			`tools[0] (a.*) class: want informational or transactional, got "odd"`,
			`tools[0] (a.*) amount: the expression gives string, want a number`,
			`test.yaml:6: tools[1] (b.*): sets nothing`,
			`test.yaml:8: rules[0]: missing id`,
			`rules[1].id: "budget:x" is not a valid rule id`,
			`rule "n" when: the expression gives double, want a bool`,
			`test.yaml:11: rule "a": effect approve needs approvers`,
			`rule "o" separation_of_duties: the owner is the only approver`,
			`rule "p" approvers: approvers only apply to effect approve`,
			`rule "p" quorum: quorum only applies to effect approve`,
			`bad approver "role:"`,
			`bad approver "user:nobody"`,
			`bad approver "boss"`,
			`approver "owner" listed twice`,
			`rule "r" quorum: quorum 3 is more than the 2 people who may approve`,
			`rule "s" constraints: a deny rule has no credential to constrain`,
			`rule "s" mode: want enforce or shadow, got "sometimes"`,
			`rule "t" when: no budget has id "nope"`,
			`rule "t" constraints.lifetime: invalid duration "forever"`,
			`rule "t" constraints.uses: must be at least 1`,
			`rule "t" constraints.max_amount: must not be negative`,
			`rule "u" when: undefined field 'nothing'`,
			`budget "b" per: want agent, owner, department or global, got "team"`,
			`budget "b" window: must be more than 0`,
			`budget "b" sum: the expression gives string, want a number`,
			`budget "b" limit: must not be negative`,
			`budget "b" exceeded: want deny or approve, got "explode"`,
			`budget "c": missing window`,
			`budget "c": missing limit`,
			`budget "c": effect approve needs approvers`,
			`missing upstream`,
			`missing tool`,
			`missing arguments`,
			`missing result`,
			`lookups[0].id: "open-ticket" is not a valid lookup id`,
			`ttl: invalid duration "1y"`,
		}},
		{name: "wrong types", src: "version: one\nrules: {}\nbudgets:\n  - {id: b, per: agent, window: 1h, sum: 1, limit: lots}\n",
			want: []string{`test.yaml:1:10: version: want a whole number, got "one"`, `test.yaml:2:8: rules: want a list, got a mapping`, `budgets[0].limit: want a number, got "lots"`}},
		{name: "broken YAML", src: "version: 1\nrules: [\n", want: []string{`invalid YAML`}},
		{name: "two documents", src: "version: 1\n---\nversion: 1\n", want: []string{`test.yaml:2: only one YAML document is allowed`}},
		{name: "duplicate key", src: "version: 1\nversion: 1\n", want: []string{`test.yaml:2:1: field "version" appears twice`}},
		{name: "lookup arguments must be a map", src: "version: 1\nlookups:\n  - {id: l, upstream: u, tool: t, arguments: '[1]', result: 'true'}\n",
			want: []string{`lookup "l" arguments: the expression gives list(int), want a map`}},
		{name: "lookup expressions cannot use lookups", src: "version: 1\nlookups:\n  - {id: l, upstream: u, tool: t, arguments: '{}', result: 'lookup.l'}\n",
			want: []string{`lookup "l" result: undeclared reference to 'lookup'`}},
		{name: "amount cannot read the call", src: "version: 1\ntools:\n  - {match: 'a.b', amount: 'call.risk_score'}\n",
			want: []string{`tools[0] (a.b) amount: undeclared reference to 'call'`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.src), "test.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded: %v", p.RuleIDs())
			}
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("error %T is not a *LoadError: %v", err, err)
			}
			msg := err.Error()
			lines := strings.Split(msg, "\n")
			if len(lines) != len(le.Problems) {
				t.Errorf("%d lines for %d problems", len(lines), len(le.Problems))
			}
			rest := msg
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Errorf("error does not contain %q (in order):\n%s", w, msg)
					continue
				}
				rest = rest[i+len(w):]
			}
			if len(tt.want) > 1 && len(le.Problems) < len(tt.want) {
				t.Errorf("%d problems, want at least %d:\n%s", len(le.Problems), len(tt.want), msg)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(path, []byte(orders), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != path || p.Default() != EffectDeny || p.Shadow() || strings.Join(p.RuleIDs(), ",") != "small,mid,large,no-prod-deletes" {
		t.Errorf("policy %s default %s shadow %v rules %v", p.Name(), p.Default(), p.Shadow(), p.RuleIDs())
	}
	q := mustParse(t, orders)
	if p.Hash() != q.Hash() {
		t.Error("the hash depends on more than the bytes")
	}
	if r := mustParse(t, orders+"\n"); r.Hash() == q.Hash() {
		t.Error("different bytes, same hash")
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct{ name, src string }{
		{"empty rules", "version: 1\n"},
		{"durations in days", "version: 1\nbudgets:\n  - {id: w, per: global, window: 7d, sum: 1, limit: 1}\n"},
		{"int and uint sums", "version: 1\nbudgets:\n  - {id: w, per: global, window: 1h, sum: 'size(args)', limit: 1}\n  - {id: u, per: global, window: 1h, sum: 'uint(1)', limit: 1}\n"},
		{"dyn conditions", "version: 1\nrules:\n  - {id: d, when: 'args.flag', effect: allow}\n"},
		{"aliases", "version: 1\nrules:\n  - &r {id: a, when: 'true', effect: allow}\n  - {id: b, when: 'false', effect: deny}\n"},
		{"comments in CEL", "version: 1\nrules:\n  - id: c\n    when: |\n      true // always\n    effect: allow\n  - {id: d, when: 'false', effect: deny}\n"},
		{"quorum with roles", "version: 1\nrules:\n  - {id: q, when: 'true', effect: approve, approvers: ['role:sre'], quorum: 3}\n"},
		{"user approvers", "version: 1\nrules:\n  - {id: q, when: 'true', effect: approve, approvers: ['user:a@x.org', 'user:b@x.org'], quorum: 2, separation_of_duties: true}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.src), "ok.yaml"); err != nil {
				t.Fatal(err)
			}
		})
	}
}
