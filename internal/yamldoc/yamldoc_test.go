package yamldoc

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		ok       bool
		nilRoot  bool
		problem  string // substring of the one problem expected, "" for none
		line     int
	}{
		{"empty", "", true, true, "", 0},
		{"comment only", "# nothing\n", true, true, "", 0},
		{"mapping", "a: 1\n", true, false, "", 0},
		{"broken", "a: [\n", false, true, "invalid YAML", 0},
		{"bad indentation", "a:\n  b: 1\n c: 2\n", false, true, "invalid YAML", 2},
		{"two documents", "a: 1\n---\nb: 2\n", true, false, "only one YAML document", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var problems []string
			var lines []int
			root, ok := Parse([]byte(tc.in), func(line int, msg string) {
				problems = append(problems, msg)
				lines = append(lines, line)
			})
			if ok != tc.ok || (root == nil) != tc.nilRoot {
				t.Fatalf("ok=%v root=%v, want ok=%v nil root=%v", ok, root, tc.ok, tc.nilRoot)
			}
			if tc.problem == "" {
				if len(problems) != 0 {
					t.Fatalf("problems %v", problems)
				}
				return
			}
			if len(problems) != 1 || !strings.Contains(problems[0], tc.problem) {
				t.Fatalf("problems %v, want one containing %q", problems, tc.problem)
			}
			if tc.line != 0 && lines[0] != tc.line {
				t.Errorf("line %d, want %d", lines[0], tc.line)
			}
		})
	}
}
