package console

import (
	"net/http"
	"time"
)

// Cookie names. Every cookie has Path=BasePath, SameSite=Strict, and Secure
// when the origins are https.
const (
	sessionCookie  = "interlock_session"
	csrfCookie     = "interlock_csrf"
	ceremonyCookie = "interlock_ceremony"
)

// session is the signed content of the session cookie. Every visitor has
// one (UID empty until sign-in), so that sign-in and enrolment POSTs are
// CSRF-protected too. SID is random and changes at sign-in and sign-out.
type session struct {
	SID string `json:"sid"`
	UID string `json:"uid,omitempty"`
	// Iat is when it was issued (Unix seconds).
	Iat int64 `json:"iat"`
	// exp is the cookie's expiry (not serialised; the envelope has it).
	exp time.Time
}

// anonTTL is how long a signed-out visitor's session lasts.
const anonTTL = 12 * time.Hour

// loadSession returns the request's session. When it has none (or an
// invalid or expired one) and start is set, it starts a signed-out one and
// sets its cookies; otherwise it returns nil.
func (c *Console) loadSession(w http.ResponseWriter, r *http.Request, start bool) *session {
	now := c.o.Now()
	if ck, err := r.Cookie(sessionCookie); err == nil {
		var s session
		if err := c.seal.open("session", ck.Value, now, &s); err == nil && s.SID != "" {
			if start {
				// Restore a deleted or stale CSRF cookie.
				tok := c.seal.csrfToken(s.SID)
				if ck, err := r.Cookie(csrfCookie); err != nil || ck.Value != tok {
					c.setCookie(w, csrfCookie, tok, int(c.o.SessionTTL.Seconds()), false)
				}
			}
			return &s
		}
	}
	if !start {
		return nil
	}
	s := &session{SID: randomID(24), Iat: now.Unix(), exp: now.Add(anonTTL)}
	if err := c.setSession(w, s); err != nil {
		c.log.Error("console: could not start a session", "err", err)
		return nil
	}
	return s
}

// signIn starts a new session (new SID) for user uid.
func (c *Console) signIn(w http.ResponseWriter, uid string) error {
	now := c.o.Now()
	return c.setSession(w, &session{SID: randomID(24), UID: uid, Iat: now.Unix(), exp: now.Add(c.o.SessionTTL)})
}

// setSession sets the session cookie and its CSRF cookie.
func (c *Console) setSession(w http.ResponseWriter, s *session) error {
	v, err := c.seal.seal("session", s, s.exp)
	if err != nil {
		return err
	}
	maxAge := int(s.exp.Sub(c.o.Now()).Seconds())
	c.setCookie(w, sessionCookie, v, maxAge, true)
	// The CSRF cookie is readable by the page (double submit); its value
	// is an HMAC of the session id, useless without the session cookie.
	c.setCookie(w, csrfCookie, c.seal.csrfToken(s.SID), maxAge, false)
	return nil
}

func (c *Console) setCookie(w http.ResponseWriter, name, value string, maxAge int, httpOnly bool) {
	if maxAge <= 0 {
		maxAge = -1
	}
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: c.o.BasePath, MaxAge: maxAge,
		HttpOnly: httpOnly, Secure: c.secure, SameSite: http.SameSiteStrictMode,
	})
}

func (c *Console) clearCookie(w http.ResponseWriter, name string) {
	c.setCookie(w, name, "", -1, true)
}

// csrf returns the CSRF token of s ("" for none).
func (c *Console) csrf(s *session) string {
	if s == nil {
		return ""
	}
	return c.seal.csrfToken(s.SID)
}

// logout ends the session: a new signed-out session replaces it. The page
// posts it with fetch (a form post would carry "Origin: null" under
// Referrer-Policy: no-referrer, and be refused by the Origin check).
func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) error {
	now := c.o.Now()
	if err := c.setSession(w, &session{SID: randomID(24), Iat: now.Unix(), exp: now.Add(anonTTL)}); err != nil {
		return err
	}
	if s != nil && s.UID != "" {
		c.log.Info("console: signed out", "user", s.UID)
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "redirect": c.o.BasePath + "/login"})
	return nil
}
