package policy

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// TestExplainGolden compares Explain for the demo policy's cases with
// testdata/explain/*.golden (go test -run TestExplainGolden -update
// rewrites them).
func TestExplainGolden(t *testing.T) {
	p, err := Load("../../examples/acme/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases, err := LoadCases("../../examples/acme/policy_cases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Case{}
	for _, c := range cases {
		byName[c.Name] = c
	}
	golden := map[string]string{
		"allow":           "a $300 order is automatic",
		"budget-exceeded": "a small order over the daily budget needs a finance manager",
		"approve-large":   "a $12,000 order needs a finance manager",
		"classify-error":  "an order without a quantity is denied",
		"lookup-error":    "a customer record when the ticket lookup fails",
		"shadow-rule":     "a weekend order is still automatic, the shadow rule only records",
		"unclassified":    "a tool nobody classified is denied",
	}
	for file, name := range golden {
		t.Run(file, func(t *testing.T) {
			c, ok := byName[name]
			if !ok {
				t.Fatalf("no case %q", name)
			}
			checkGolden(t, file, p.Decide(c.Input(p)).Explain())
		})
	}
	t.Run("shadow-mode", func(t *testing.T) {
		q := mustParse(t, "version: 1\nmode: shadow\nrules:\n  - {id: never, when: 'true', effect: deny, reason: nothing runs}\n")
		in := input("echo", map[string]any{"text": "hi"})
		in.Context.Time = time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC)
		checkGolden(t, "shadow-mode", q.Decide(in).Explain())
	})
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "explain", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestExplainGolden -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -run TestExplainGolden -update rewrites it)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestFmtAmount(t *testing.T) {
	tests := map[float64]string{0: "0.00", 5: "5.00", 999.999: "1,000.00", 1234.5: "1,234.50", 1234567.891: "1,234,567.89", -2500: "-2,500.00"}
	for v, want := range tests {
		if got := fmtAmount(v); got != want {
			t.Errorf("fmtAmount(%v) = %q, want %q", v, got, want)
		}
	}
	windows := map[time.Duration]string{0: "0s", 90 * time.Second: "1m30s", 5 * time.Minute: "5m", 24 * time.Hour: "24h", 7 * 24 * time.Hour: "7d"}
	for d, want := range windows {
		if got := fmtWindow(d); got != want {
			t.Errorf("fmtWindow(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestExplainEmpty(t *testing.T) {
	got := Decision{}.Explain()
	if !strings.HasPrefix(got, "decision: - (unknown tool)\n") {
		t.Errorf("got %q", got)
	}
}
