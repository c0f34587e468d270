// Command compare checks that the MCP conformance suite gave the same
// verdicts through interlock as directly against the upstream server.
//
// Each run is the console log of `conformance server ...` (its SUMMARY
// section) and the results directory given to its -o flag (one
// server-<scenario>-<timestamp>/checks.json per scenario). compare prints
// both summaries, then every difference: per scenario (passed and failed
// counts from the log), per check (scenario, check id and status from
// checks.json; INFO records are left out), and the totals. It exits 1 on any
// difference, 2 on unreadable input.
//
//	compare -direct-log d.log -direct-dir d/ -gateway-log g.log -gateway-dir g/
//
// With only -direct-log and -direct-dir it prints that run's summary.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dLog := fs.String("direct-log", "", "console log of the direct run")
	dDir := fs.String("direct-dir", "", "results directory (-o) of the direct run")
	gLog := fs.String("gateway-log", "", "console log of the run through interlock")
	gDir := fs.String("gateway-dir", "", "results directory (-o) of the run through interlock")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dLog == "" || *dDir == "" || (*gLog == "") != (*gDir == "") || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "compare: need -direct-log and -direct-dir, and optionally both -gateway-log and -gateway-dir")
		return 2
	}
	direct, err := load("direct", *dLog, *dDir)
	if err != nil {
		fmt.Fprintln(stderr, "compare:", err)
		return 2
	}
	direct.print(stdout)
	if *gLog == "" {
		return 0
	}
	gateway, err := load("through interlock", *gLog, *gDir)
	if err != nil {
		fmt.Fprintln(stderr, "compare:", err)
		return 2
	}
	gateway.print(stdout)

	diffs := diff(direct, gateway)
	if len(diffs) > 0 {
		fmt.Fprintf(stdout, "\nMISMATCH: %d difference(s) between the direct run and the run through interlock\n", len(diffs))
		fmt.Fprintln(stdout, "--- direct\n+++ through interlock")
		for _, d := range diffs {
			fmt.Fprintln(stdout, d)
		}
		return 1
	}
	fmt.Fprintf(stdout, "\nidentical: %d scenarios, %d checks, the same verdict for each\n", len(gateway.scenarios), len(gateway.checks))
	return 0
}

// A runResult is one conformance run.
type runResult struct {
	name      string
	scenarios map[string]counts // from the log's SUMMARY
	order     []string          // scenarios in log order
	total     counts            // the log's Total line
	checks    []string          // "scenario\tcheck-id\tSTATUS", sorted
}

type counts struct{ passed, failed int }

func (c counts) String() string { return fmt.Sprintf("%d passed, %d failed", c.passed, c.failed) }

var (
	ansi        = regexp.MustCompile(`\x1b\[[0-9;]*m`)
	scenarioRE  = regexp.MustCompile(`^[✓✗] (\S+): (\d+) passed, (\d+) failed`)
	totalRE     = regexp.MustCompile(`^Total: (\d+) passed, (\d+) failed`)
	timestampRE = regexp.MustCompile(`-\d{4}-\d{2}-\d{2}T[\d-]+Z$`) // as the suite names its result folders
)

func load(name, logPath, dir string) (*runResult, error) {
	r := &runResult{name: name, scenarios: make(map[string]counts)}
	if err := r.readLog(logPath); err != nil {
		return nil, err
	}
	if err := r.readChecks(dir); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *runResult) readLog(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	inSummary, sawTotal := false, false
	for sc.Scan() {
		line := strings.TrimSpace(ansi.ReplaceAllString(sc.Text(), ""))
		if line == "=== SUMMARY ===" {
			// A later summary replaces an earlier one (there is one per run).
			inSummary, sawTotal = true, false
			r.scenarios, r.order = make(map[string]counts), nil
			continue
		}
		if !inSummary {
			continue
		}
		if m := scenarioRE.FindStringSubmatch(line); m != nil {
			c := counts{atoi(m[2]), atoi(m[3])}
			if _, dup := r.scenarios[m[1]]; dup {
				return fmt.Errorf("%s: scenario %s listed twice", path, m[1])
			}
			r.scenarios[m[1]] = c
			r.order = append(r.order, m[1])
		} else if m := totalRE.FindStringSubmatch(line); m != nil {
			r.total = counts{atoi(m[1]), atoi(m[2])}
			sawTotal = true
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if !inSummary || !sawTotal {
		return fmt.Errorf("%s: no \"=== SUMMARY ===\" section with a Total line: did the suite run?", path)
	}
	return nil
}

type check struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

func (r *runResult) readChecks(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*", "checks.json"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("%s: no */checks.json", dir)
	}
	seen := make(map[string]string)
	for _, f := range files {
		scenario := timestampRE.ReplaceAllString(filepath.Base(filepath.Dir(f)), "")
		scenario = strings.TrimPrefix(scenario, "server-")
		if prev, dup := seen[scenario]; dup {
			return fmt.Errorf("%s: two result folders for scenario %s (%s, %s): use a fresh -o directory", dir, scenario, prev, f)
		}
		seen[scenario] = f
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var checks []check
		if err := json.Unmarshal(data, &checks); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		for _, c := range checks {
			if c.Status == "INFO" {
				continue // request/response traces, not verdicts
			}
			r.checks = append(r.checks, scenario+"\t"+c.ID+"\t"+c.Status)
		}
	}
	sort.Strings(r.checks)
	return nil
}

func (r *runResult) print(w io.Writer) {
	fmt.Fprintf(w, "\n== %s: %d scenarios, %d checks ==\n", r.name, len(r.order), len(r.checks))
	for _, s := range r.order {
		mark := "✓"
		if r.scenarios[s].failed > 0 {
			mark = "✗"
		}
		fmt.Fprintf(w, "%s %s: %s\n", mark, s, r.scenarios[s])
	}
	fmt.Fprintf(w, "%s: Total: %s\n", r.name, r.total)
}

// diff lists every difference between a and b, "-" for a's side and "+"
// for b's.
func diff(a, b *runResult) []string {
	var out []string
	if a.total != b.total {
		out = append(out, fmt.Sprintf("- Total: %s", a.total), fmt.Sprintf("+ Total: %s", b.total))
	}
	names := make(map[string]bool)
	for s := range a.scenarios {
		names[s] = true
	}
	for s := range b.scenarios {
		names[s] = true
	}
	sorted := make([]string, 0, len(names))
	for s := range names {
		sorted = append(sorted, s)
	}
	sort.Strings(sorted)
	for _, s := range sorted {
		ca, inA := a.scenarios[s]
		cb, inB := b.scenarios[s]
		switch {
		case !inA:
			out = append(out, fmt.Sprintf("+ scenario %s: %s (not in the direct run)", s, cb))
		case !inB:
			out = append(out, fmt.Sprintf("- scenario %s: %s (missing through interlock)", s, ca))
		case ca != cb:
			out = append(out, fmt.Sprintf("- scenario %s: %s", s, ca), fmt.Sprintf("+ scenario %s: %s", s, cb))
		}
	}
	// Checks as multisets: the same check id may appear more than once.
	count := make(map[string]int)
	for _, c := range a.checks {
		count[c]--
	}
	for _, c := range b.checks {
		count[c]++
	}
	keys := make([]string, 0, len(count))
	for k, n := range count {
		if n != 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		sign := "+"
		n := count[k]
		if n < 0 {
			sign, n = "-", -n
		}
		for range n {
			out = append(out, fmt.Sprintf("%s check %s", sign, strings.ReplaceAll(k, "\t", " ")))
		}
	}
	return out
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(errors.New("regexp matched a non-number: " + s)) // unreachable: \d+
	}
	return n
}
