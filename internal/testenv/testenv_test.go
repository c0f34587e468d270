package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

// recorder stands in for a test so Skip's choice can be observed.
type recorder struct {
	testing.TB
	skipped, fatal string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Skip(args ...any)                  { r.skipped = fmt.Sprint(args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }

func TestStrict(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  bool
	}{{"1", true}, {"", false}, {"0", false}, {"true", false}} {
		t.Setenv(StrictEnv, tc.value)
		if got := Strict(); got != tc.want {
			t.Errorf("%s=%q: Strict() = %v, want %v", StrictEnv, tc.value, got, tc.want)
		}
	}
}

func TestSkip(t *testing.T) {
	t.Setenv(StrictEnv, "")
	r := &recorder{TB: t}
	Skip(r, "no %s here", "widget")
	if r.skipped != "no widget here" || r.fatal != "" {
		t.Errorf("lenient: skipped %q, fatal %q; want a skip", r.skipped, r.fatal)
	}

	t.Setenv(StrictEnv, "1")
	r = &recorder{TB: t}
	Skip(r, "no %s here", "widget")
	if r.skipped != "" || !strings.HasPrefix(r.fatal, "no widget here") || !strings.Contains(r.fatal, StrictEnv) {
		t.Errorf("strict: skipped %q, fatal %q; want a failure naming %s", r.skipped, r.fatal, StrictEnv)
	}
}

func TestRepoRoot(t *testing.T) {
	root := RepoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "module github.com/interlock-dev/interlock\n") {
		t.Fatalf("%s/go.mod is not interlock's", root)
	}
	if _, err := findRoot("/"); err == nil {
		t.Error("findRoot(/) found a go.mod")
	}
}

func TestNodeMajor(t *testing.T) {
	for in, want := range map[string]int{"v22.23.3\n": 22, "v20.20.2": 20, "v100.0.0": 100} {
		got, err := nodeMajor(in)
		if err != nil || got != want {
			t.Errorf("nodeMajor(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "22.1.0", "vX.1", "node"} {
		if _, err := nodeMajor(in); err == nil {
			t.Errorf("nodeMajor(%q) accepted", in)
		}
	}
}

func TestNode(t *testing.T) {
	node := Node(t)
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", node, err)
	}
	major, err := nodeMajor(string(out))
	if err != nil || major < MinNodeMajor {
		t.Fatalf("Node(t) = %s, version %q: want %d+", node, out, MinNodeMajor)
	}
}

func TestPeerBinResolution(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("plain/package.json", `{"name":"plain","bin":"cli.js"}`)
	write("plain/cli.js", "")
	write("@scope/multi/package.json", `{"name":"@scope/multi","bin":{"aaa":"a.js","multi":"dist/m.js"}}`)
	write("@scope/multi/dist/m.js", "")
	write("@scope/other/package.json", `{"name":"@scope/other","bin":{"zz":"z.js","bb":"b.js"}}`)
	write("@scope/other/b.js", "")
	write("nobin/package.json", `{"name":"nobin"}`)
	write("gone/package.json", `{"name":"gone","bin":"missing.js"}`)

	for name, want := range map[string]string{
		"plain":        "plain/cli.js",
		"@scope/multi": "@scope/multi/dist/m.js", // the command named after the package
		"@scope/other": "@scope/other/b.js",      // else the first by name
	} {
		got, err := peerBin(dir, name)
		if err != nil || got != filepath.Join(dir, filepath.FromSlash(want)) {
			t.Errorf("peerBin(%q) = %q, %v; want %s", name, got, err, want)
		}
	}
	for name, notExist := range map[string]bool{"absent": true, "gone": true, "nobin": false, "../x": false} {
		_, err := peerBin(dir, name)
		if err == nil || errors.Is(err, fs.ErrNotExist) != notExist {
			t.Errorf("peerBin(%q) error = %v; want an error, not-exist %v", name, err, notExist)
		}
	}
}

func TestPeerBinInstalled(t *testing.T) {
	p := PeerBin(t, "@modelcontextprotocol/server-filesystem")
	if !strings.HasSuffix(p, filepath.FromSlash("node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")) {
		t.Fatalf("PeerBin = %s", p)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
}

func TestGoBinary(t *testing.T) {
	const pkg = "./internal/testenv/testdata/hello"
	start := time.Now()
	bin := GoBinary(t, pkg)
	first := time.Since(start)
	out, err := exec.Command(bin, "from", "testenv").Output()
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	if string(out) != "hello from testenv\n" {
		t.Fatalf("output %q", out)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}

	// A second request, even from parallel tests, reuses the build.
	done := make(chan string, 4)
	for range cap(done) {
		go func() { done <- GoBinary(t, pkg) }()
	}
	for range cap(done) {
		if again := <-done; again != bin {
			t.Fatalf("second GoBinary = %s, want %s", again, bin)
		}
	}
	fi2, err := os.Stat(bin)
	if err != nil || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatalf("binary rebuilt or gone (%v)", err)
	}
	t.Logf("first build took %v", first)
}

func TestGoBinaryFailure(t *testing.T) {
	r := &recorder{TB: t}
	GoBinary(r, "./internal/testenv/testdata/no-such-package")
	if !strings.Contains(r.fatal, "go build ./internal/testenv/testdata/no-such-package") {
		t.Fatalf("fatal = %q, want the go build error", r.fatal)
	}
}

func TestChromium(t *testing.T) {
	t.Setenv("INTERLOCK_CHROMIUM", "")
	p := Chromium(t)
	if !isExecutable(p) {
		t.Fatalf("Chromium(t) = %q, not executable", p)
	}
}

func TestPostgresDSN(t *testing.T) {
	t.Setenv(PostgresEnv, "postgres://u@127.0.0.1:1/x")
	r := &recorder{TB: t}
	t.Setenv(StrictEnv, "1")
	PostgresDSN(r)
	if !strings.Contains(r.fatal, "not reachable") {
		t.Fatalf("unreachable server in strict mode: fatal %q", r.fatal)
	}
}
