package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type scenario struct {
	name   string
	checks []string // "id:STATUS"
}

// fixture writes a run's log and results folder as the suite would.
func fixture(t *testing.T, scenarios []scenario, mangleLog func(string) string) (logPath, dir string) {
	t.Helper()
	base := t.TempDir()
	dir = filepath.Join(base, "results")
	var log strings.Builder
	log.WriteString("Running all suite against http://127.0.0.1:1/mcp\n\n=== SUMMARY ===\n")
	var tp, tf int
	for i, s := range scenarios {
		var js []string
		p, f := 0, 0
		js = append(js, `{"id":"outgoing-request","status":"INFO"}`)
		for _, c := range s.checks {
			id, status, _ := strings.Cut(c, ":")
			js = append(js, fmt.Sprintf(`{"id":%q,"name":"x","status":%q,"details":{"id":"nested"}}`, id, status))
			switch status {
			case "SUCCESS":
				p++
			case "FAILURE":
				f++
			}
		}
		sub := filepath.Join(dir, fmt.Sprintf("server-%s-2026-11-27T01-26-%02d-038Z", s.name, i))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, "checks.json"), []byte("["+strings.Join(js, ",")+"]"), 0o644); err != nil {
			t.Fatal(err)
		}
		mark := "✓"
		if f > 0 {
			mark = "✗"
		}
		fmt.Fprintf(&log, "%s %s: %d passed, %d failed\n", mark, s.name, p, f)
		tp, tf = tp+p, tf+f
	}
	fmt.Fprintf(&log, "\nTotal: %d passed, %d failed\n", tp, tf)
	text := log.String()
	if mangleLog != nil {
		text = mangleLog(text)
	}
	logPath = filepath.Join(base, "run.log")
	if err := os.WriteFile(logPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return logPath, dir
}

var baseline = []scenario{
	{"server-initialize", []string{"server-initialize:SUCCESS"}},
	{"json-schema-2020-12", []string{"tool-found:SUCCESS", "$schema:SUCCESS"}},
	{"server-sse-polling", []string{"priming:WARNING", "retry:WARNING"}},
	{"dns-rebinding-protection", []string{"rejected:SUCCESS", "accepted:SUCCESS"}},
}

func compare(t *testing.T, direct, gateway []scenario, mangle func(string) string) (int, string) {
	t.Helper()
	dl, dd := fixture(t, direct, nil)
	args := []string{"-direct-log", dl, "-direct-dir", dd}
	if gateway != nil {
		gl, gd := fixture(t, gateway, mangle)
		args = append(args, "-gateway-log", gl, "-gateway-dir", gd)
	}
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String() + errb.String()
}

func TestIdentical(t *testing.T) {
	code, out := compare(t, baseline, baseline, nil)
	if code != 0 {
		t.Fatalf("exit %d for identical runs:\n%s", code, out)
	}
	for _, want := range []string{
		"direct: Total: 5 passed, 0 failed",
		"through interlock: Total: 5 passed, 0 failed",
		"identical: 4 scenarios, 7 checks",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestDirectOnly(t *testing.T) {
	code, out := compare(t, baseline, nil, nil)
	if code != 0 || !strings.Contains(out, "direct: Total: 5 passed, 0 failed") || strings.Contains(out, "identical") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestMismatches(t *testing.T) {
	clone := func(edit func([]scenario) []scenario) []scenario {
		c := make([]scenario, len(baseline))
		for i, s := range baseline {
			c[i] = scenario{s.name, append([]string(nil), s.checks...)}
		}
		return edit(c)
	}
	for _, tc := range []struct {
		name    string
		gateway []scenario
		want    []string
	}{
		{
			name: "a check fails through interlock",
			gateway: clone(func(s []scenario) []scenario {
				s[3].checks[0] = "rejected:FAILURE"
				return s
			}),
			want: []string{
				"- Total: 5 passed, 0 failed", "+ Total: 4 passed, 1 failed",
				"- scenario dns-rebinding-protection: 2 passed, 0 failed",
				"+ scenario dns-rebinding-protection: 1 passed, 1 failed",
				"- check dns-rebinding-protection rejected SUCCESS",
				"+ check dns-rebinding-protection rejected FAILURE",
			},
		},
		{
			name: "a warning turns into a pass (totals differ)",
			gateway: clone(func(s []scenario) []scenario {
				s[2].checks[0] = "priming:SUCCESS"
				return s
			}),
			want: []string{"+ check server-sse-polling priming SUCCESS", "- check server-sse-polling priming WARNING"},
		},
		{
			name:    "a scenario is missing",
			gateway: clone(func(s []scenario) []scenario { return s[:3] }),
			want:    []string{"- scenario dns-rebinding-protection: 2 passed, 0 failed (missing through interlock)"},
		},
		{
			name: "same counts, different check",
			gateway: clone(func(s []scenario) []scenario {
				s[1].checks[1] = "$defs:SUCCESS"
				return s
			}),
			want: []string{"- check json-schema-2020-12 $schema SUCCESS", "+ check json-schema-2020-12 $defs SUCCESS"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := compare(t, baseline, tc.gateway, nil)
			if code != 1 || !strings.Contains(out, "MISMATCH") {
				t.Fatalf("exit %d, want 1 with MISMATCH:\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w+"\n") {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	// A log without a summary: the suite did not finish.
	code, out := compare(t, baseline, baseline, func(s string) string {
		before, _, _ := strings.Cut(s, "=== SUMMARY ===")
		return before
	})
	if code != 2 || !strings.Contains(out, "no \"=== SUMMARY ===\"") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	// Missing results.
	var buf bytes.Buffer
	dl, _ := fixture(t, baseline, nil)
	if code := run([]string{"-direct-log", dl, "-direct-dir", t.TempDir()}, &buf, &buf); code != 2 {
		t.Fatalf("empty results dir: exit %d:\n%s", code, buf.String())
	}
	if code := run([]string{"-direct-log", dl}, &buf, &buf); code != 2 {
		t.Fatalf("missing flag: exit %d", code)
	}
}

func TestANSIAndReruns(t *testing.T) {
	// Colour codes are ignored, and when a log holds two summaries the last counts.
	code, out := compare(t, baseline, baseline, func(s string) string {
		return "=== SUMMARY ===\n✓ old: 9 passed, 0 failed\nTotal: 9 passed, 0 failed\n" +
			strings.ReplaceAll(s, "Total:", "\x1b[32mTotal:\x1b[0m")
	})
	if code != 0 || strings.Contains(out, "old") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}
