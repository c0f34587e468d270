package app

import (
	"net/http"
	"strings"

	"github.com/interlock-dev/interlock/internal/adminapi"
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

// apiHandler returns the admin API, or nil when it is off (no admin
// token configured).
func (a *App) apiHandler() http.Handler {
	if len(a.Config.Admin.Tokens) == 0 {
		return nil
	}
	tokens := make([]adminapi.AdminToken, 0, len(a.Config.Admin.Tokens))
	for _, t := range a.Config.Admin.Tokens {
		tok, err := adminapi.ParseToken(t.Name, t.SHA256, t.Roles)
		if err != nil { // Validate has checked it
			a.log.Error("admin token ignored", "name", t.Name, "err", err)
			continue
		}
		tokens = append(tokens, tok)
	}
	o := adminapi.Options{
		Tokens:    tokens,
		Registry:  a.Registry,
		Lifecycle: a.Lifecycle(),
		Store:     a.Store,
		Audit:     a.Audit,
		Logger:    a.log,
	}
	if a.Issuer != nil {
		o.Issuer = a.Issuer
	}
	return adminapi.New(o)
}
