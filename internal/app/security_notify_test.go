package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/notify"
	"github.com/interlock-dev/interlock/internal/registry"
)

// Deactivating an owner through the gateway's lifecycle tells the security
// admins (role security or admin, active) on the configured channels: a
// signed webhook naming the orphaned agent, the owner and what was done,
// linking to the console. Other users are not told.
func TestDeactivationNotifiesSecurity(t *testing.T) {
	const secret = "webhook-secret-for-the-security-notice"
	got := make(chan map[string]any, 8)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.VerifySignature([]byte(secret), r.Header.Get(notify.SignatureHeader), body, time.Now(), time.Minute); err != nil {
			t.Errorf("webhook signature: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if ev := r.Header.Get(notify.EventHeader); ev != notify.EventSecurity {
			t.Errorf("%s = %q, want %q", notify.EventHeader, ev, notify.EventSecurity)
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		got <- m
	}))
	t.Cleanup(hook.Close)

	dir := t.TempDir()
	allowAll := "version: 1\ndefault: deny\nrules:\n  - id: all\n    when: 'true'\n    effect: allow\n"
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(allowAll), 0o600); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) (string, bool) { return "", false }
	cfg, err := config.Parse([]byte(fmt.Sprintf(`listen: 127.0.0.1:18479
public_url: http://localhost:18479
storage: {dsn: interlock.db}
policy: {file: policy.yaml}
upstreams:
  - name: acme
    url: http://127.0.0.1:1/mcp
notifications:
  webhooks: [{url: %q, secret: %q}]
`, hook.URL, secret)), filepath.Join(dir, "interlock.yaml"), config.LoadOptions{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, err := New(ctx, cfg, Options{Logger: slog.New(slog.DiscardHandler), Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	closeApp := func() {
		if !closed {
			closed = true
			a.Close()
		}
	}
	t.Cleanup(closeApp)

	for _, u := range []registry.UserSpec{
		{Email: "sec@example.com", Roles: []string{"security"}},
		{Email: "root@example.com", Roles: []string{"admin"}},
		{Email: "gone@example.com", Roles: []string{"security"}}, // deactivated: not told
		{Email: "bystander@example.com", Roles: []string{"finance"}},
		{Email: "owner@example.com"},
	} {
		if _, err := a.Registry.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := a.Registry.CreateAgent(ctx, registry.AgentSpec{ID: "ghost-bot", OwnerEmail: "owner@example.com"}); err != nil {
		t.Fatal(err)
	}
	lc := a.Lifecycle()
	if _, _, err := lc.DeactivateUser(ctx, "gone@example.com", "cli:root", "left"); err != nil {
		t.Fatal(err)
	}
	// gone@ owned no agent: nothing was stopped, nobody is told.
	_, rep, err := lc.DeactivateUser(ctx, "owner@example.com", "scim", "left the company")
	if err != nil || len(rep.Agents) != 1 {
		t.Fatalf("deactivate = %+v, %v", rep, err)
	}
	// The console's security notices (newest first) say the same.
	notices, err := securityNotices(a.Store)(ctx)
	if err != nil || len(notices) < 2 || notices[0].Text != "agent ghost-bot orphaned (owner owner@example.com was deactivated: left the company)" ||
		notices[1].Text != "owner@example.com was deactivated by scim (left the company)" {
		t.Errorf("security notices = %+v, %v", notices, err)
	}

	to := map[string]map[string]any{}
	deadline := time.After(15 * time.Second)
	for len(to) < 2 {
		select {
		case m := <-got:
			r, _ := m["recipient"].(map[string]any)
			email, _ := r["email"].(string)
			to[email] = m
		case <-deadline:
			t.Fatalf("security was told only %d time(s): %v", len(to), to)
		}
	}
	closeApp() // waits for deliveries in flight
	close(got)
	for m := range got {
		r, _ := m["recipient"].(map[string]any)
		t.Errorf("an extra notice went to %v", r["email"])
	}
	for _, email := range []string{"sec@example.com", "root@example.com"} {
		m := to[email]
		if m == nil {
			t.Fatalf("%s was not told; told %v", email, to)
		}
		text, _ := m["text"].(string)
		title, _ := m["title"].(string)
		for _, want := range []string{"owner@example.com", "ghost-bot", "orphaned", "by scim", "left the company", "credentials revoked"} {
			if !strings.Contains(text, want) {
				t.Errorf("notice text %q does not say %q", text, want)
			}
		}
		if !strings.Contains(title, "agents stopped") {
			t.Errorf("title %q", title)
		}
		if m["type"] != notify.EventSecurity || m["url"] != "http://localhost:18479/console/" {
			t.Errorf("notice %v", m)
		}
		data, _ := m["data"].(map[string]any)
		if data["kind"] != "user_deactivated" || fmt.Sprint(data["agents"]) != "[ghost-bot]" || data["story"] != rep.Story {
			t.Errorf("notice data %v", data)
		}
	}
}
