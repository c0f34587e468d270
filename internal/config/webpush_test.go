package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/interlock-dev/interlock/internal/notify"
)

func TestWebPush(t *testing.T) {
	priv, _, err := notify.GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	key, err := notify.MarshalVAPIDPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mustParse(t, `notifications:
  web_push:
    vapid_private_key: ${VAPID}
    subject: mailto:security@example.com
`, map[string]string{"VAPID": key})
	if w := cfg.Notifications.WebPush; w.VAPIDPrivateKey != key || w.Subject != "mailto:security@example.com" {
		t.Errorf("web_push = %+v", w)
	}
	// The key never shows.
	r := cfg.Redacted()
	if r.Notifications.WebPush.VAPIDPrivateKey != RedactedValue || cfg.Notifications.WebPush.VAPIDPrivateKey != key {
		t.Errorf("redacted key %q (original %q)", r.Notifications.WebPush.VAPIDPrivateKey, cfg.Notifications.WebPush.VAPIDPrivateKey)
	}
	for name, out := range map[string]string{"String": cfg.String(), "Sprint": fmt.Sprint(cfg), "slog": logJSON(cfg)} {
		if strings.Contains(out, key) {
			t.Errorf("%s leaks the VAPID key:\n%s", name, out)
		}
	}
	if cfg := mustParse(t, "notifications:\n  web_push: {vapid_private_key: '${VAPID}', subject: 'https://example.com/contact'}\n",
		map[string]string{"VAPID": key}); cfg.Notifications.WebPush.Subject != "https://example.com/contact" {
		t.Errorf("https subject: %+v", cfg.Notifications.WebPush)
	}
	// Off by default.
	if cfg := mustParse(t, "notifications: {}\n", nil); cfg.Notifications.WebPush != (WebPush{}) {
		t.Errorf("web_push from nothing: %+v", cfg.Notifications.WebPush)
	}

	secret := "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I"
	for _, c := range []struct{ name, key, subject, want string }{
		{"no key", "", "mailto:a@example.com", "notifications.web_push.vapid_private_key: must be a P-256 private key"},
		{"short key", secret[:20], "mailto:a@example.com", "notifications.web_push.vapid_private_key: must be a P-256 private key"},
		{"not base64", "not base64!!", "mailto:a@example.com", "notifications.web_push.vapid_private_key"},
		{"zero scalar", strings.Repeat("A", 43), "mailto:a@example.com", "notifications.web_push.vapid_private_key"},
		{"no subject", key, "", "notifications.web_push.subject"},
		{"http subject", key, "http://example.com", "must be a mailto: address or an https:// URL"},
		{"bare mailto", key, "mailto:", "notifications.web_push.subject"},
		{"other scheme", key, "tel:+123", "notifications.web_push.subject"},
	} {
		_, err := parse(t, "notifications:\n  web_push: {vapid_private_key: '${VAPID}', subject: '"+c.subject+"'}\n",
			map[string]string{"VAPID": c.key})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to say %q", c.name, err, c.want)
			continue
		}
		if len(c.key) > 8 && strings.Contains(err.Error(), c.key) {
			t.Errorf("%s: the error shows the key: %v", c.name, err)
		}
	}
}

func TestStarterShowsWebPush(t *testing.T) {
	if !strings.Contains(string(Starter()), "web_push:") || !strings.Contains(string(Starter()), "interlock notifications vapid-keys") {
		t.Error("the starter configuration does not show notifications.web_push")
	}
}
