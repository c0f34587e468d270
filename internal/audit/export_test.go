package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/canon"
	"github.com/interlock-dev/interlock/internal/store"
	"github.com/interlock-dev/interlock/internal/testenv"
)

// exportLine is one line of an export.
type exportLine struct {
	Seq      int64           `json:"seq"`
	Time     string          `json:"time"`
	Type     string          `json:"type"`
	CallID   string          `json:"call_id"`
	AgentID  string          `json:"agent_id"`
	Data     json.RawMessage `json:"data"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
}

func parseExport(t *testing.T, b []byte) []exportLine {
	t.Helper()
	var out []exportLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l exportLine
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// seedExport appends 12 events: for i = 1..12, agent bot-(i%2), type
// cycling decision/forwarded/result, decisions' effect cycling
// allow/deny/approve by i%3, one second apart from t0.
func seedExport(t *testing.T, l *Log) {
	t.Helper()
	for i := 1; i <= 12; i++ {
		ev := decision(i, fmt.Sprint("bot-", i%2), []string{"approve", "allow", "deny"}[i%3])
		ev.Type = []string{"result", "decision", "forwarded"}[i%3]
		ev.Time = t0.Add(time.Duration(i) * time.Second)
		appendAll(t, l, ev)
	}
}

func TestExport(t *testing.T) {
	st, _ := openStore(t)
	l := newLog(t, st, Options{})
	seedExport(t, l)
	tests := []struct {
		name string
		f    Filter
		want []int64
	}{
		{"all", Filter{}, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"after seq", Filter{AfterSeq: 9}, []int64{10, 11, 12}},
		{"since", Filter{Since: t0.Add(11 * time.Second)}, []int64{11, 12}},
		{"agent", Filter{AgentID: "bot-0"}, []int64{2, 4, 6, 8, 10, 12}},
		{"types", Filter{Types: []string{"forwarded", "result"}}, []int64{2, 3, 5, 6, 8, 9, 11, 12}},
		{"effect", Filter{Effect: "allow"}, []int64{1, 4, 7, 10}},
		{"effect and agent", Filter{Effect: "allow", AgentID: "bot-0"}, []int64{4, 10}},
		{"effect with decision among types", Filter{Effect: "allow", Types: []string{"result", "decision"}}, []int64{1, 4, 7, 10}},
		{"effect without decision among types", Filter{Effect: "allow", Types: []string{"result"}}, nil},
		{"effect nobody had", Filter{Effect: "maybe"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			n, err := Export(t.Context(), st, &buf, tc.f)
			if err != nil {
				t.Fatalf("Export: %v", err)
			}
			lines := parseExport(t, buf.Bytes())
			var got []int64
			for _, l := range lines {
				got = append(got, l.Seq)
			}
			if !slices.Equal(got, tc.want) || n != int64(len(tc.want)) {
				t.Errorf("Export(%+v) = %v (n=%d), want %v", tc.f, got, n, tc.want)
			}
		})
	}

	// Every field of a line is the stored event's.
	var buf bytes.Buffer
	if _, err := Export(t.Context(), st, &buf, Filter{}); err != nil {
		t.Fatal(err)
	}
	evs, err := st.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range parseExport(t, buf.Bytes()) {
		e := evs[i]
		tm, err := time.Parse(time.RFC3339Nano, l.Time)
		if err != nil || !tm.Equal(e.Time) || !strings.HasSuffix(l.Time, "Z") {
			t.Errorf("line %d time %q, %v; want %v in UTC", i, l.Time, err, e.Time)
		}
		if l.Seq != e.Seq || l.Type != e.Type || l.CallID != e.CallID || l.AgentID != e.AgentID || string(l.Data) != string(e.Data) ||
			l.PrevHash != hex.EncodeToString(e.PrevHash) || l.Hash != hex.EncodeToString(e.Hash) {
			t.Errorf("line %d = %+v, want event %+v", i, l, e)
		}
	}
}

func TestExportCheckpoints(t *testing.T) {
	st, _ := openStore(t)
	l := newLog(t, st, Options{CheckpointEvery: 5})
	for i := range 12 {
		appendAll(t, l, decision(i, "bot", "allow"))
	}
	var buf bytes.Buffer
	n, err := ExportCheckpoints(t.Context(), st, &buf)
	if err != nil || n != 2 {
		t.Fatalf("ExportCheckpoints = %d, %v; want 2", n, err)
	}
	sc := bufio.NewScanner(&buf)
	var seqs []int64
	for sc.Scan() {
		var c struct {
			Seq       int64  `json:"seq"`
			Hash      string `json:"hash"`
			Time      string `json:"time"`
			KeyID     string `json:"key_id"`
			Signature string `json:"signature"`
			PublicKey string `json:"public_key"`
		}
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("line %s: %v", sc.Text(), err)
		}
		seqs = append(seqs, c.Seq)
		pub, _ := hex.DecodeString(c.PublicKey)
		sig, _ := hex.DecodeString(c.Signature)
		msg, err := canon.Marshal(map[string]any{"seq": c.Seq, "hash": c.Hash, "time": c.Time, "key_id": c.KeyID})
		if err != nil {
			t.Fatal(err)
		}
		if !ed25519.Verify(pub, msg, sig) || !bytes.Equal(pub, l.PublicKey()) {
			t.Errorf("checkpoint %d does not verify from its exported fields", c.Seq)
		}
	}
	if !slices.Equal(seqs, []int64{5, 10}) {
		t.Errorf("exported checkpoints %v, want [5 10]", seqs)
	}
}

func TestTail(t *testing.T) {
	st, _ := openStore(t)
	l := newLog(t, st, Options{})
	seedExport(t, l)

	var buf bytes.Buffer
	if err := Tail(t.Context(), st, &buf, Filter{AfterSeq: 10}, false, 0); err != nil {
		t.Fatalf("Tail: %v", err)
	}
	if lines := parseExport(t, buf.Bytes()); len(lines) != 2 || lines[0].Seq != 11 {
		t.Errorf("Tail without follow = %+v, want events 11 and 12", lines)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Tail(ctx, st, pw, Filter{AfterSeq: 11, Effect: "deny"}, true, time.Millisecond)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	next := func() exportLine {
		t.Helper()
		if !sc.Scan() {
			t.Fatalf("Tail ended early: %v", sc.Err())
		}
		return parseExport(t, sc.Bytes())[0]
	}
	// Nothing matches yet; new events arrive, only the deny decisions show.
	appendAll(t, l, decision(13, "bot", "allow"), decision(14, "bot", "deny"))
	if got := next(); got.Seq != 14 {
		t.Errorf("first followed line is event %d, want 14", got.Seq)
	}
	appendAll(t, l, Event{Type: "result"}, decision(16, "bot", "deny"))
	if got := next(); got.Seq != 16 {
		t.Errorf("second followed line is event %d, want 16", got.Seq)
	}
	cancel()
	go func() { _, _ = io.Copy(io.Discard, pr) }() // drain until Tail returns
	if err := <-done; err != nil {
		t.Errorf("Tail after cancel = %v, want nil", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestExportWriteError(t *testing.T) {
	st, _ := openStore(t)
	l := newLog(t, st, Options{})
	seedExport(t, l)
	if _, err := Export(t.Context(), st, failingWriter{}, Filter{}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Export to a failing writer = %v, want its error", err)
	}
}

// ---- the Python verifier in docs/audit.md ----

// verifierScript extracts the script from docs/audit.md into a file.
func verifierScript(t *testing.T) (python, script string) {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		testenv.Skip(t, "python3 is not on PATH: %v", err)
	}
	doc, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "docs", "audit.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- verify_export.py: begin -->\n```python\n")
	body, _, ok2 := strings.Cut(rest, "```\n<!-- verify_export.py: end -->")
	if !ok || !ok2 {
		t.Fatal("docs/audit.md has no verify_export.py block between its markers")
	}
	script = filepath.Join(t.TempDir(), "verify_export.py")
	if err := os.WriteFile(script, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return python, script
}

func runVerifier(t *testing.T, python, script string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(python, append([]string{script}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("python3: %v\n%s", err, out)
	return "", -1
}

// awkwardData are event bodies that exercise the parts of JCS where a naive
// encoder differs: numbers in every notation, escapes, non-ASCII, and keys
// that sort differently by UTF-16 than by code point.
var awkwardData = []any{
	map[string]any{"tiny": 1e-7, "small": 0.00001, "edge": 0.000001, "big": 1e21, "bigger": 1.5e300, "int": 1 << 53,
		"neg": -0.0000033333333333333333, "frac": 333333333.33333329, "minus_zero": math.Copysign(0, -1), "max": math.MaxFloat64, "min": 5e-324},
	map[string]any{"\U0001F600": 1, "\uFB33": 2, "\u20ac": 3, "\r": 4, "1": 5, "\u0080": 6, "\u00f6": 7, "": 8},
	map[string]any{"s": "quote\" backslash\\ nl\n tab\t ctl\x01\x1f del\x7f ls\u2028 html<&> é 😀"},
	map[string]any{"nested": []any{map[string]any{"b": []any{}, "a": map[string]any{}}, nil, true, false, "x"}},
	json.RawMessage(`{"z": 1.0, "a": [1E2, -0, 4.50]}`),
}

func TestPythonVerifier(t *testing.T) {
	python, script := verifierScript(t)
	st, _ := openStore(t)
	l := newLog(t, st, Options{CheckpointEvery: 7})
	for i := range 20 {
		ev := decision(i, "bot-"+strconv.Itoa(i%3), "allow")
		if i < len(awkwardData) {
			ev.Data = awkwardData[i]
		}
		if i == 6 {
			ev.CallID, ev.AgentID, ev.Type = "call \"é\"\n", "ägent😀", "tÿpe"
		}
		appendAll(t, l, ev)
	}
	dir := t.TempDir()
	write := func(name string, export func(w io.Writer) error) string {
		t.Helper()
		path := filepath.Join(dir, name)
		var buf bytes.Buffer
		if err := export(&buf); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cps := write("checkpoints.jsonl", func(w io.Writer) error { _, err := ExportCheckpoints(t.Context(), st, w); return err })
	full := write("export.jsonl", func(w io.Writer) error { _, err := Export(t.Context(), st, w, Filter{}); return err })
	filtered := write("filtered.jsonl", func(w io.Writer) error {
		_, err := Export(t.Context(), st, w, Filter{AgentID: "bot-1"})
		return err
	})
	good, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(good), "\n"), "\n")
	if len(lines) != 20 {
		t.Fatalf("export has %d lines, want 20", len(lines))
	}
	variant := func(name string, edit func(lines []string) []string) string {
		return write(name, func(w io.Writer) error {
			_, err := io.WriteString(w, strings.Join(edit(slices.Clone(lines)), ""))
			return err
		})
	}

	tests := []struct {
		name string
		args []string
		ok   bool
		bad  string // the seq the script must name
	}{
		{"good export", []string{full}, true, ""},
		{"good export with checkpoints", []string{full, "--checkpoints", cps}, true, ""},
		{"filtered export needs --allow-gaps", []string{filtered}, false, "5"},
		{"filtered export with --allow-gaps", []string{filtered, "--allow-gaps"}, true, ""},
		{"changed data", []string{variant("changed.jsonl", func(l []string) []string {
			l[9] = strings.Replace(l[9], `"effect":"allow"`, `"effect":"deny"`, 1)
			return l
		})}, false, "10"},
		{"changed number", []string{variant("number.jsonl", func(l []string) []string {
			l[0] = strings.Replace(l[0], `"tiny":1e-7`, `"tiny":1e-8`, 1)
			return l
		})}, false, "1"},
		{"same number written differently", []string{variant("respelled.jsonl", func(l []string) []string {
			l[0] = strings.Replace(l[0], `"tiny":1e-7`, `"tiny":0.0000001`, 1)
			return l
		})}, true, ""},
		{"deleted line", []string{variant("deleted.jsonl", func(l []string) []string { return slices.Delete(l, 12, 13) })}, false, "14"},
		{"swapped lines", []string{variant("swapped.jsonl", func(l []string) []string {
			l[4], l[5] = l[5], l[4]
			return l
		})}, false, "6"},
		{"truncated, caught by a checkpoint", []string{variant("truncated.jsonl", func(l []string) []string { return l[:13] }), "--checkpoints", cps}, false, "14"},
		{"duplicate member", []string{variant("dup.jsonl", func(l []string) []string {
			l[2] = strings.Replace(l[2], `"data":{`, `"data":{"s":"x",`, 1)
			return l
		})}, false, "3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runVerifier(t, python, script, tc.args...)
			if tc.ok {
				if code != 0 || !strings.HasPrefix(out, "OK") {
					t.Errorf("verifier exit %d, output %q; want OK", code, out)
				}
				return
			}
			if code != 1 || !strings.Contains(out, "BAD: seq "+tc.bad+":") {
				t.Errorf("verifier exit %d, output %q; want BAD naming seq %s", code, out, tc.bad)
			}
		})
	}
	if out, _ := runVerifier(t, python, script, full, "--checkpoints", cps); !strings.Contains(out, "2 checkpoints matched") {
		t.Errorf("verifier output %q, want 2 checkpoints matched (at 7 and 14)", out)
	}
}

// TestPythonNumbers compares the script's number formatting with
// canon.AppendNumber on many doubles.
func TestPythonNumbers(t *testing.T) {
	python, script := verifierScript(t)
	r := rand.New(rand.NewPCG(5, 6))
	var floats []float64
	for range 20000 {
		floats = append(floats, math.Float64frombits(r.Uint64()))
	}
	for e := -325; e <= 308; e++ {
		floats = append(floats, math.Pow(10, float64(e)), 1.5*math.Pow(10, float64(e)), -7.25*math.Pow(10, float64(e)))
	}
	floats = slices.DeleteFunc(floats, func(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) })
	var in strings.Builder
	for _, f := range floats {
		fmt.Fprintf(&in, "%016x\n", math.Float64bits(f))
	}
	driver := `import importlib.util, struct, sys
spec = importlib.util.spec_from_file_location("v", sys.argv[1]); v = importlib.util.module_from_spec(spec); spec.loader.exec_module(v)
for h in sys.stdin.read().split():
    print(v.jnum(struct.unpack(">d", bytes.fromhex(h))[0]))`
	cmd := exec.Command(python, "-c", driver, script)
	cmd.Stdin = strings.NewReader(in.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, stderr.Bytes())
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(got) != len(floats) {
		t.Fatalf("python printed %d numbers for %d", len(got), len(floats))
	}
	bad := 0
	for i, f := range floats {
		want, err := canon.AppendNumber(nil, f)
		if err != nil || got[i] != string(want) {
			t.Errorf("%016x: python %q, canon %q", math.Float64bits(f), got[i], want)
			if bad++; bad > 10 {
				t.FailNow()
			}
		}
	}
}
