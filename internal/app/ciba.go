package app

import "net/http"

// cibaHandler returns the CIBA OpenID Provider (discovery, backchannel
// authentication and token endpoints), or nil when it is off.
func (a *App) cibaHandler() http.Handler { return nil }
