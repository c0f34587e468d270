package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/notify"
)

func TestNotificationsVAPIDKeys(t *testing.T) {
	out, _, err := run(t, "notifications", "vapid-keys", "--subject", "mailto:ops@example.com")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^export INTERLOCK_VAPID_PRIVATE_KEY=(\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no private key in:\n%s", out)
	}
	priv, err := notify.ParseVAPIDPrivateKey(m[1])
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := notify.VAPIDPublicKey(priv)
	if !strings.Contains(out, "# "+pub+"\n") {
		t.Errorf("the public key %s is not printed:\n%s", pub, out)
	}
	// The YAML it prints is a valid configuration, with the key from the
	// environment.
	_, yaml, ok := strings.Cut(out, "# Paste into interlock.yaml:\n")
	if !ok {
		t.Fatalf("no YAML in:\n%s", out)
	}
	cfg, err := config.Parse([]byte(yaml), "interlock.yaml", config.LoadOptions{Getenv: func(k string) (string, bool) {
		if k == "INTERLOCK_VAPID_PRIVATE_KEY" {
			return m[1], true
		}
		return "", false
	}})
	if err != nil {
		t.Fatalf("the printed YAML does not load: %v\n%s", err, yaml)
	}
	if w := cfg.Notifications.WebPush; w.VAPIDPrivateKey != m[1] || w.Subject != "mailto:ops@example.com" {
		t.Errorf("web_push = %+v", w)
	}
	// Two runs make two keys.
	out2, _, _ := run(t, "notifications", "vapid-keys")
	if strings.Contains(out2, m[1]) {
		t.Error("the same key twice")
	}
	if _, _, err := run(t, "notifications", "vapid-keys", "--subject", "ops@example.com"); err == nil {
		t.Error("a subject without mailto: was accepted")
	}
	if _, _, err := run(t, "notifications", "vapid-keys", "--env", "BAD NAME"); err == nil {
		t.Error("a bad environment variable name was accepted")
	}
}
