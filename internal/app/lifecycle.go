package app

import (
	"net/http"
	"strings"

	"github.com/interlock-dev/interlock/internal/registry"
	"github.com/interlock-dev/interlock/internal/scim"
)

// Lifecycle returns the owner and agent lifecycle operations (the kill
// switch) wired to this gateway: audited, revoking through the credential
// issuer, cancelling through the approval service (which wakes held calls
// at once), closing the relay's sessions, and telling security through the
// log (a webhook or console notifier can be added to the Notifier).
func (a *App) Lifecycle() *registry.Lifecycle {
	return registry.NewLifecycle(a.Registry, registry.LifecycleOptions{
		Audit:       a.Audit,
		Credentials: a.Issuer,
		Approvals:   a.Approvals,
		Sessions:    a.Relay,
		Notifier:    registry.LogNotifier(a.log),
	})
}

// scimHandler returns the SCIM 2.0 service provider, or nil when SCIM is
// off (no scim.token).
func (a *App) scimHandler() http.Handler {
	if a.Config.SCIM.Token == "" {
		return nil
	}
	base := ""
	if a.Config.PublicURL != "" {
		base = strings.TrimRight(a.Config.PublicURL, "/") + "/scim/v2"
	}
	return scim.New(scim.Options{
		Directory: registry.NewSCIMDirectory(a.Lifecycle()),
		Token:     a.Config.SCIM.Token,
		BaseURL:   base,
		Logger:    a.log,
	})
}

// apiHandler returns the admin API, or nil when it is off.
func (a *App) apiHandler() http.Handler { return nil }
