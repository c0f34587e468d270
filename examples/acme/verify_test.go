package acme_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/interlock-dev/interlock/examples/acme"
	"github.com/interlock-dev/interlock/internal/credential"
	"github.com/interlock-dev/interlock/internal/store/sqlite"
	"github.com/interlock-dev/interlock/verify"
)

// testClock is a settable clock shared by the issuer and the verifiers.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// interlockFixture stands in for interlock: a credential issuer on a
// temporary SQLite store, publishing its JWKS and status lists from an
// httptest server whose URL is the issuer.
type interlockFixture struct {
	clk *testClock
	iss *credential.Issuer
	srv *httptest.Server
}

func newInterlock(t *testing.T) *interlockFixture {
	t.Helper()
	ctx := t.Context()
	quiet := slog.New(slog.DiscardHandler)
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "interlock.db"), Logger: quiet})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })

	f := &interlockFixture{clk: &testClock{t: fixedNow}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		b, err := f.iss.JWKS(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "max-age=300")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("GET /status/{list}", func(w http.ResponseWriter, r *http.Request) {
		b, maxAge, err := f.iss.StatusListCredential(r.Context(), r.PathValue("list"))
		if errors.Is(err, credential.ErrUnknownStatusList) {
			http.NotFound(w, r)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/vc+jwt")
		w.Header().Set("Cache-Control", fmt.Sprintf("max-age=%d", int(maxAge/time.Second)))
		_, _ = w.Write(b)
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)

	f.iss, err = credential.New(ctx, credential.Options{
		Store:  st,
		KEK:    bytes.Repeat([]byte{7}, credential.KEKSize),
		Issuer: f.srv.URL,
		Now:    f.clk.Now,
		Logger: quiet,
	})
	if err != nil {
		t.Fatalf("credential.New: %v", err)
	}
	return f
}

// issue signs a credential for a call, as interlock does when it forwards
// one, and returns the token and the credential's id.
func (f *interlockFixture) issue(t *testing.T, a credential.Action) (token, id string) {
	t.Helper()
	if a.AgentID == "" {
		a.AgentID = "agent-7"
		a.OwnerEmail = "alice@example.com"
		a.AuthorizedBy = []credential.Authorization{{Kind: "policy", Rule: "small-orders"}}
	}
	tok, rec, err := f.iss.Issue(t.Context(), a)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return tok, rec.ID
}

// verifier returns a fresh Verifier of the fixture's credentials, with no
// cached JWKS or status list, whose clock is the fixture's shifted by skew.
func (f *interlockFixture) verifier(t *testing.T, skew time.Duration) *verify.Verifier {
	t.Helper()
	v, err := verify.New(verify.Options{
		Issuer:     f.srv.URL,
		HTTPClient: f.srv.Client(),
		Now:        func() time.Time { return f.clk.Now().Add(skew) },
	})
	if err != nil {
		t.Fatalf("verify.New: %v", err)
	}
	return v
}

// connectVerifying starts a fresh acme server in verification mode and
// returns a client session to it and its log.
func connectVerifying(t *testing.T, v *verify.Verifier, upstream string) (*mcp.ClientSession, *syncBuffer) {
	t.Helper()
	ctx := t.Context()
	logs := &syncBuffer{}
	server := acme.NewServer(acme.Options{
		Now:      func() time.Time { return fixedNow },
		Logger:   slog.New(slog.NewTextHandler(logs, nil)),
		Verifier: v,
		Upstream: upstream,
	})
	st, ct := mcp.NewInMemoryTransports()
	ss, err := server.Connect(ctx, st, nil)
	if err != nil {
		t.Fatalf("server connect: %v", err)
	}
	t.Cleanup(func() { _ = ss.Close() })
	client := mcp.NewClient(&mcp.Implementation{Name: "acme-verify-test", Version: "0"}, nil)
	cs, err := client.Connect(ctx, ct, nil)
	if err != nil {
		t.Fatalf("client connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs, logs
}

// callWithMeta calls tool with args and _meta (nil: none).
func callWithMeta(t *testing.T, cs *mcp.ClientSession, tool string, args map[string]any, meta mcp.Meta) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: tool, Arguments: args, Meta: meta})
	if err != nil {
		t.Fatalf("%s: protocol error: %v", tool, err)
	}
	return res
}

func credMeta(token string) mcp.Meta { return mcp.Meta{acme.MetaCredential: token} }

const refused = "acme refuses this call: "

func TestVerificationMode(t *testing.T) {
	f := newInterlock(t)
	order := map[string]any{"item": "laptop", "quantity": 3, "unit_price_usd": 1299.0}
	orderAction := func() credential.Action {
		return credential.Action{Upstream: "acme", Tool: "place_order", Arguments: order}
	}

	cases := []struct {
		name string
		// meta returns the call's _meta (nil: none) and the id of the
		// credential it carries.
		meta func(t *testing.T) (mcp.Meta, string)
		skew time.Duration // of the verifier's clock
		// wantText is the refusal's exact text, or (wantPrefix) its start;
		// both empty means the call is accepted.
		wantText, wantPrefix string
	}{
		{
			name: "valid credential",
			meta: func(t *testing.T) (mcp.Meta, string) {
				tok, id := f.issue(t, orderAction())
				return credMeta(tok), id
			},
		},
		{
			name:     "no _meta",
			meta:     func(*testing.T) (mcp.Meta, string) { return nil, "" },
			wantText: refused + `no interlock credential in params._meta["io.interlock/credential"]`,
		},
		{
			name:     "_meta without a credential",
			meta:     func(*testing.T) (mcp.Meta, string) { return mcp.Meta{"progressToken": "p1"}, "" },
			wantText: refused + `no interlock credential in params._meta["io.interlock/credential"]`,
		},
		{
			name:     "credential is not a string",
			meta:     func(*testing.T) (mcp.Meta, string) { return mcp.Meta{acme.MetaCredential: 42}, "" },
			wantText: refused + `params._meta["io.interlock/credential"] is not a string`,
		},
		{
			name: "credential for another tool",
			meta: func(t *testing.T) (mcp.Meta, string) {
				a := orderAction()
				a.Tool = "issue_refund"
				tok, _ := f.issue(t, a)
				return credMeta(tok), ""
			},
			wantText: refused + "credential does not match the call: credential for acme.issue_refund, call to acme.place_order",
		},
		{
			name: "credential for other arguments",
			meta: func(t *testing.T) (mcp.Meta, string) {
				a := orderAction()
				a.Arguments = map[string]any{"item": "laptop", "quantity": 300, "unit_price_usd": 1299.0}
				tok, _ := f.issue(t, a)
				return credMeta(tok), ""
			},
			wantPrefix: refused + "credential does not match the call: arguments digest ",
		},
		{
			name: "credential for another upstream",
			meta: func(t *testing.T) (mcp.Meta, string) {
				a := orderAction()
				a.Upstream = "billing"
				tok, _ := f.issue(t, a)
				return credMeta(tok), ""
			},
			wantText: refused + "credential does not match the call: credential for billing.place_order, call to acme.place_order",
		},
		{
			name: "expired credential",
			meta: func(t *testing.T) (mcp.Meta, string) {
				a := orderAction()
				a.Lifetime = time.Minute
				tok, _ := f.issue(t, a)
				return credMeta(tok), ""
			},
			// Past exp and the 30 s leeway, while the status list
			// (valid 5 minutes) still is.
			skew:       2 * time.Minute,
			wantPrefix: refused + "credential expired: ",
		},
		{
			name: "revoked credential",
			meta: func(t *testing.T) (mcp.Meta, string) {
				tok, id := f.issue(t, orderAction())
				if _, err := f.iss.Revoke(t.Context(), id, "test: agent compromised"); err != nil {
					t.Fatalf("Revoke: %v", err)
				}
				return credMeta(tok), ""
			},
			wantPrefix: refused + "credential revoked: ",
		},
		{
			name:       "garbage token",
			meta:       func(*testing.T) (mcp.Meta, string) { return credMeta("not.a.credential"), "" },
			wantPrefix: refused + "malformed credential: ",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A fresh verifier per case: no JWKS or status list cached
			// from another case.
			cs, logs := connectVerifying(t, f.verifier(t, tc.skew), "")
			meta, id := tc.meta(t)
			res := callWithMeta(t, cs, "place_order", order, meta)
			accepted := tc.wantText == "" && tc.wantPrefix == ""
			got := text(res)

			// The next order's id shows whether the first call placed one.
			followUp := orderAction()
			followUp.Lifetime = time.Hour // still valid for the skewed verifier
			tok, followID := f.issue(t, followUp)
			next := callWithMeta(t, cs, "place_order", order, credMeta(tok))
			if next.IsError {
				t.Fatalf("follow-up call refused: %s", text(next))
			}
			if v := next.Meta[acme.MetaVerifiedCredential]; v != followID {
				t.Errorf("follow-up _meta[%s] = %v, want %s", acme.MetaVerifiedCredential, v, followID)
			}
			nextID := decode[acme.Order](t, next).OrderID

			if accepted {
				if res.IsError {
					t.Fatalf("call refused: %s", got)
				}
				o := decode[acme.Order](t, res)
				if o.OrderID != "ORD-1004" || o.TotalUSD != 3897 {
					t.Errorf("order = %+v, want ORD-1004 totalling 3897", o)
				}
				if v := res.Meta[acme.MetaVerifiedCredential]; v != id {
					t.Errorf("_meta[%s] = %v, want %s", acme.MetaVerifiedCredential, v, id)
				}
				if nextID != "ORD-1005" {
					t.Errorf("next order id %s, want ORD-1005", nextID)
				}
				if strings.Contains(logs.String(), "call refused") {
					t.Errorf("an accepted call logged a refusal:\n%s", logs)
				}
				return
			}

			if !res.IsError {
				t.Fatalf("call accepted, want a refusal; result %s", got)
			}
			if tc.wantText != "" && got != tc.wantText {
				t.Errorf("refusal text\n got %q\nwant %q", got, tc.wantText)
			}
			if tc.wantPrefix != "" && !strings.HasPrefix(got, tc.wantPrefix) {
				t.Errorf("refusal text %q does not start with %q", got, tc.wantPrefix)
			}
			if _, ok := res.Meta[acme.MetaVerifiedCredential]; ok {
				t.Errorf("a refused call's result has _meta[%s]", acme.MetaVerifiedCredential)
			}
			if res.StructuredContent != nil {
				t.Errorf("a refused call has structuredContent %v", res.StructuredContent)
			}
			if nextID != "ORD-1004" {
				t.Errorf("next order id %s, want ORD-1004: the refused call placed an order", nextID)
			}
			if n := strings.Count(logs.String(), "acme: call refused"); n != 1 {
				t.Errorf("%d refusal log lines, want 1:\n%s", n, logs)
			}
			if !strings.Contains(logs.String(), "tool=place_order") {
				t.Errorf("refusal log does not name the tool:\n%s", logs)
			}
		})
	}
}

// TestVerificationRevokedAfterCache revokes a credential after the
// verifier cached its status list: the refusal comes once the cached list
// is past its max-age.
func TestVerificationRevokedAfterCache(t *testing.T) {
	f := newInterlock(t)
	cs, _ := connectVerifying(t, f.verifier(t, 0), "")
	echo := func(s string) (map[string]any, credential.Action) {
		args := map[string]any{"text": s}
		return args, credential.Action{Upstream: "acme", Tool: "echo", Arguments: args, Lifetime: time.Hour}
	}

	args1, a1 := echo("one")
	tok1, id1 := f.issue(t, a1)
	args2, a2 := echo("two")
	tok2, id2 := f.issue(t, a2)

	// The first call caches the (shared) status list, with nothing revoked.
	if res := callWithMeta(t, cs, "echo", args1, credMeta(tok1)); res.IsError || res.Meta[acme.MetaVerifiedCredential] != id1 {
		t.Fatalf("first call: isError %v, text %q, _meta %v", res.IsError, text(res), res.Meta)
	}
	if _, err := f.iss.Revoke(t.Context(), id2, "test"); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	// Past the list's max-age, the verifier fetches it again and sees the
	// revocation.
	f.clk.Add(credential.StatusListCacheTTL + time.Second)
	res := callWithMeta(t, cs, "echo", args2, credMeta(tok2))
	if !res.IsError || !strings.HasPrefix(text(res), refused+"credential revoked: ") {
		t.Fatalf("revoked credential: isError %v, text %q", res.IsError, text(res))
	}
}

// TestVerificationModeScope: only tools/call is checked, and Upstream
// names the server.
func TestVerificationModeScope(t *testing.T) {
	f := newInterlock(t)

	t.Run("tools/list needs no credential", func(t *testing.T) {
		cs, logs := connectVerifying(t, f.verifier(t, 0), "")
		res, err := cs.ListTools(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Tools) != 7 {
			t.Errorf("%d tools, want 7", len(res.Tools))
		}
		if err := cs.Ping(t.Context(), nil); err != nil {
			t.Errorf("ping: %v", err)
		}
		if strings.Contains(logs.String(), "call refused") {
			t.Errorf("a refusal was logged:\n%s", logs)
		}
	})

	t.Run("custom upstream name", func(t *testing.T) {
		cs, _ := connectVerifying(t, f.verifier(t, 0), "acme-prod")
		args := map[string]any{"text": "hi"}
		tok, id := f.issue(t, credential.Action{Upstream: "acme-prod", Tool: "echo", Arguments: args})
		res := callWithMeta(t, cs, "echo", args, credMeta(tok))
		if res.IsError || text(res) != "hi" || res.Meta[acme.MetaVerifiedCredential] != id {
			t.Errorf("isError %v, text %q, _meta %v", res.IsError, text(res), res.Meta)
		}
		// A credential for the default name does not fit this server.
		tok, _ = f.issue(t, credential.Action{Upstream: "acme", Tool: "echo", Arguments: args})
		res = callWithMeta(t, cs, "echo", args, credMeta(tok))
		want := refused + "credential does not match the call: credential for acme.echo, call to acme-prod.echo"
		if !res.IsError || text(res) != want {
			t.Errorf("isError %v, text %q, want %q", res.IsError, text(res), want)
		}
	})

	t.Run("tool errors keep the verified id", func(t *testing.T) {
		cs, _ := connectVerifying(t, f.verifier(t, 0), "")
		args := map[string]any{"order_id": "ORD-9999", "amount_usd": 10.0}
		tok, id := f.issue(t, credential.Action{Upstream: "acme", Tool: "issue_refund", Arguments: args})
		res := callWithMeta(t, cs, "issue_refund", args, credMeta(tok))
		if !res.IsError || strings.HasPrefix(text(res), refused) || res.Meta[acme.MetaVerifiedCredential] != id {
			t.Errorf("isError %v, text %q, _meta %v", res.IsError, text(res), res.Meta)
		}
	})
}
