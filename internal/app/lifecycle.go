package app

import "net/http"

// scimHandler returns the SCIM 2.0 service provider, or nil when SCIM is
// off (no scim.token).
func (a *App) scimHandler() http.Handler { return nil }

// apiHandler returns the admin API, or nil when it is off.
func (a *App) apiHandler() http.Handler { return nil }
