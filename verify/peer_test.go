package verify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/interlock-dev/interlock/internal/testenv"
	"github.com/interlock-dev/interlock/verify"
)

// runPeer runs the node script testdata/script with args (and stdin) with
// NODE_PATH at test/peers/node_modules; it skips (fails when strict) when
// Node or the npm peers are missing.
func runPeer(t *testing.T, script string, stdin string, args ...string) []byte {
	t.Helper()
	if testing.Short() {
		t.Skip("spawns node")
	}
	node := testenv.Node(t)
	modules := filepath.Join(testenv.RepoRoot(t), "test", "peers", "node_modules")
	for _, pkg := range []string{"jose", "@digitalbazaar/vc-bitstring-status-list"} {
		if _, err := os.Stat(filepath.Join(modules, filepath.FromSlash(pkg), "package.json")); err != nil {
			testenv.Skip(t, "npm peer %s is not installed: run `npm ci --prefix test/peers`", pkg)
		}
	}
	cmd := exec.Command(node, append([]string{filepath.Join("testdata", script)}, args...)...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, stderr.String())
	}
	return out
}

// TestJoseFixtures: credentials signed by jose (and a status list built by
// @digitalbazaar/vc-bitstring-status-list) are accepted or refused with
// exactly the expected error.
func TestJoseFixtures(t *testing.T) {
	var mu sync.Mutex
	served := map[string][]byte{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		body, ok := served[r.URL.Path]
		mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write(body)
	}))
	defer srv.Close()

	now := t0
	out := runPeer(t, "jose_fixtures.mjs", "", srv.URL, strconv.FormatInt(now.Unix(), 10), string(args))
	var got struct {
		JWKS       json.RawMessage `json:"jwks"`
		StatusList string          `json:"statusList"`
		Digest     string          `json:"digest"`
		Fixtures   []struct {
			Name, Token, Want string
		} `json:"fixtures"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("peer output: %v\n%s", err, out)
	}
	if len(got.Fixtures) < 11 {
		t.Fatalf("peer produced %d fixtures, want 11", len(got.Fixtures))
	}
	// An independent JCS + SHA-256 agrees with ArgumentsDigest.
	if d, err := verify.ArgumentsDigest(args); err != nil || d != got.Digest {
		t.Fatalf("ArgumentsDigest = %s, %v; jose peer computed %s", d, err, got.Digest)
	}
	mu.Lock()
	served["/.well-known/jwks.json"] = got.JWKS
	served["/status/1"] = []byte(got.StatusList)
	mu.Unlock()

	v, err := verify.New(verify.Options{Issuer: srv.URL, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for _, fx := range got.Fixtures {
		t.Run(fx.Name, func(t *testing.T) {
			want, ok := sentinels[fx.Want]
			if fx.Want != "" && !ok {
				t.Fatalf("fixture expects unknown error %q", fx.Want)
			}
			cred, err := v.Verify(context.Background(), fx.Token, call())
			checkErr(t, err, want)
			if want == nil && (cred.AgentID != "agent-7" || cred.Tool != "pay" || cred.Uses != 1) {
				t.Fatalf("credential %+v", cred)
			}
		})
	}
}

// TestJoseVerifiesGo: jose's jwtVerify accepts a credential built in Go
// through the JWKS with typ vc+jwt (and refuses one with typ JWT), and the
// status list decodes with @digitalbazaar/vc-bitstring-status-list.
func TestJoseVerifiesGo(t *testing.T) {
	f := newFixture(t)
	payload, _ := json.Marshal(f.claims(7))
	tests := []struct {
		name        string
		token       string
		wantOK      bool
		wantRevoked bool
	}{
		{"EdDSA, not revoked", f.token(f.claims(3)), true, false},
		{"ES256, revoked", f.sign(jwa.ES256(), f.ec, map[string]any{"kid": "ec-1", "typ": "vc+jwt", "cty": "vc"}, payload), true, true},
		{"typ JWT", f.sign(jwa.EdDSA(), f.ed, map[string]any{"kid": "ed-1", "typ": "JWT", "cty": "vc"}, payload), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := runPeer(t, "jose_verify.mjs", tt.token, f.issuer, strconv.FormatInt(t0.Unix(), 10), string(args))
			var got struct {
				OK      bool           `json:"ok"`
				Error   string         `json:"error"`
				Header  map[string]any `json:"header"`
				Payload map[string]any `json:"payload"`
				Revoked bool           `json:"revoked"`
				Digest  string         `json:"digest"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("peer output: %v\n%s", err, out)
			}
			if got.OK != tt.wantOK {
				t.Fatalf("jose ok = %v (%s), want %v", got.OK, got.Error, tt.wantOK)
			}
			if !tt.wantOK {
				return
			}
			if got.Header["typ"] != "vc+jwt" || got.Payload["jti"] != "urn:uuid:7b1c4a52-9d0e-4a40-8a1e-2f7c1d3e5a6b" {
				t.Fatalf("jose read header %v, payload jti %v", got.Header, got.Payload["jti"])
			}
			if got.Revoked != tt.wantRevoked {
				t.Fatalf("status list bit read by the peer = %v, want %v", got.Revoked, tt.wantRevoked)
			}
			action := got.Payload["credentialSubject"].(map[string]any)["action"].(map[string]any)
			if action["arguments_digest"] != got.Digest {
				t.Fatalf("Go's arguments digest %v differs from the peer's %s", action["arguments_digest"], got.Digest)
			}
			// And the Go verifier agrees.
			_, err := f.verifier(verify.Options{}).Verify(context.Background(), tt.token, call())
			if tt.wantRevoked {
				checkErr(t, err, verify.ErrRevoked)
			} else {
				checkErr(t, err, nil)
			}
		})
	}
}
