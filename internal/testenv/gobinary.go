package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// binaries caches GoBinary's builds for the life of the test process. It is
// the package's only state, and it exists so that a binary many tests spawn
// is built once.
var binaries = struct {
	mu     sync.Mutex
	dir    string // made on first use; removed by Main
	builds map[string]*build
}{builds: make(map[string]*build)}

type build struct {
	once sync.Once
	dir  string // this build's own subdirectory, so equal base names don't clash
	path string
	err  error
}

// GoBinary builds the main package pkg (an import path, or a path relative
// to the repository root such as "./examples/acme/cmd/acme") with `go build`
// the first time it is asked for in this test process, and returns the
// binary's path; later calls, from any test, return the same path. A failed
// build fails the test. The binaries live in one temporary directory, which
// Main removes: call it from TestMain in packages that use GoBinary.
func GoBinary(t testing.TB, pkg string) string {
	t.Helper()
	root := RepoRoot(t)
	binaries.mu.Lock()
	if binaries.dir == "" {
		d, err := os.MkdirTemp("", "interlock-testbin-")
		if err != nil {
			binaries.mu.Unlock()
			t.Fatalf("testenv: %v", err)
		}
		binaries.dir = d
	}
	b := binaries.builds[pkg]
	if b == nil {
		b = &build{dir: filepath.Join(binaries.dir, strconv.Itoa(len(binaries.builds)))}
		binaries.builds[pkg] = b
	}
	binaries.mu.Unlock()

	b.once.Do(func() { b.path, b.err = goBuild(root, pkg, b.dir) })
	if b.err != nil {
		t.Fatalf("testenv: %v", b.err)
	}
	return b.path
}

// goBuild builds pkg from the module root into dir.
func goBuild(root, pkg, dir string) (string, error) {
	gocmd, err := goCommand()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, path.Base(pkg))
	cmd := exec.Command(gocmd, "build", "-o", out, pkg)
	cmd.Dir = root
	if output, err := runQuiet(cmd); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, output)
	}
	return out, nil
}

// Main runs the tests, removes the binaries GoBinary built, and exits with
// the tests' status. Use it as TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	removeBinaries()
	os.Exit(code)
}

func removeBinaries() {
	binaries.mu.Lock()
	defer binaries.mu.Unlock()
	if binaries.dir != "" {
		_ = os.RemoveAll(binaries.dir)
		binaries.dir = ""
	}
	binaries.builds = make(map[string]*build)
}
