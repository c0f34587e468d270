package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/interlock-dev/interlock/internal/approval"
	"github.com/interlock-dev/interlock/internal/store"
)

// Decisions an approver can confirm.
const (
	DecisionApprove = "approve"
	DecisionDeny    = "deny"
)

// VoteMethod is the approval.Vote Method of a console vote.
const VoteMethod = "webauthn-uv"

// NonceSize is the size of a vote nonce.
const NonceSize = 32

// voteChallengeTag separates vote challenges from any other hash input.
const voteChallengeTag = "interlock/console/vote/v1"

// VoteChallenge returns the WebAuthn challenge an approver signs to take
// decision ("approve" or "deny") on the approval with id approvalID and
// arguments digest argsDigest, with the server's nonce:
//
//	SHA-256(tag ‖ nonce ‖ u32(len id) ‖ id ‖ u32(len digest) ‖ digest ‖ u32(len decision) ‖ decision)
//
// where tag is "interlock/console/vote/v1" and u32 is 4 bytes big-endian.
// The lengths make the encoding unambiguous. Anyone holding a vote's
// evidence can recompute it.
func VoteChallenge(nonce []byte, approvalID, argsDigest, decision string) []byte {
	h := sha256.New()
	h.Write([]byte(voteChallengeTag))
	h.Write(nonce)
	for _, s := range []string{approvalID, argsDigest, decision} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	return h.Sum(nil)
}

// ---- the user as go-webauthn sees it ----

type waUser struct {
	u     store.User
	creds []webauthn.Credential
}

func (u *waUser) WebAuthnID() []byte   { return []byte(u.u.ID) }
func (u *waUser) WebAuthnName() string { return u.u.Email }
func (u *waUser) WebAuthnDisplayName() string {
	if u.u.Name != "" {
		return u.u.Name
	}
	return u.u.Email
}
func (u *waUser) WebAuthnCredentials() []webauthn.Credential { return u.creds }

func credentialOf(p store.Passkey) webauthn.Credential {
	tr := make([]protocol.AuthenticatorTransport, len(p.Transports))
	for i, t := range p.Transports {
		tr[i] = protocol.AuthenticatorTransport(t)
	}
	return webauthn.Credential{
		ID: p.ID, PublicKey: p.PublicKey, Transport: tr,
		AttestationType: "none", AttestationFormat: "none",
		Flags:         webauthn.NewCredentialFlags(protocol.AuthenticatorFlags(p.Flags)),
		Authenticator: webauthn.Authenticator{AAGUID: p.AAGUID, SignCount: p.SignCount},
	}
}

func (c *Console) waUser(ctx context.Context, u store.User) (*waUser, error) {
	if len(u.ID) == 0 || len(u.ID) > 64 {
		return nil, fmt.Errorf("console: user id of %d bytes cannot be a WebAuthn user handle", len(u.ID))
	}
	keys, err := c.o.Store.ListPasskeys(ctx, u.ID)
	if err != nil {
		return nil, err
	}
	wu := &waUser{u: u}
	for _, k := range keys {
		wu.creds = append(wu.creds, credentialOf(k))
	}
	return wu, nil
}

// ceremony is the signed state of a sign-in or enrolment ceremony, kept in
// a short-lived cookie between begin and finish.
type ceremony struct {
	Kind      string               `json:"k"` // "login" or "enroll"
	SID       string               `json:"sid"`
	TokenHash []byte               `json:"th,omitempty"`
	Session   webauthn.SessionData `json:"s"`
}

func (c *Console) setCeremony(w http.ResponseWriter, cer ceremony) error {
	v, err := c.seal.seal("ceremony", cer, c.o.Now().Add(ceremonyTTL))
	if err != nil {
		return err
	}
	c.setCookie(w, ceremonyCookie, v, int(ceremonyTTL.Seconds()), true)
	return nil
}

// takeCeremony returns the request's ceremony of kind for session s,
// marks its challenge used and clears the cookie.
func (c *Console) takeCeremony(w http.ResponseWriter, r *http.Request, s *session, kind string) (ceremony, error) {
	now := c.o.Now()
	var cer ceremony
	ck, err := r.Cookie(ceremonyCookie)
	if err != nil {
		return cer, errorf(http.StatusBadRequest, "The passkey ceremony was not started or has expired: try again.", err)
	}
	c.clearCookie(w, ceremonyCookie)
	if err := c.seal.open("ceremony", ck.Value, now, &cer); err != nil {
		return cer, errorf(http.StatusBadRequest, "The passkey ceremony has expired: try again.", err)
	}
	if cer.Kind != kind || cer.SID != s.SID {
		return cer, errorf(http.StatusBadRequest, "The passkey ceremony does not belong to this page: try again.", nil)
	}
	if !c.used.use("ceremony:"+cer.Session.Challenge, now.Add(ceremonyTTL), now) {
		return cer, errorf(http.StatusBadRequest, "This passkey challenge was used already: try again.", nil)
	}
	// go-webauthn must check user verification on every ceremony.
	cer.Session.UserVerification = protocol.VerificationRequired
	return cer, nil
}

// ---- enrolment ----

// CreateEnrollment makes a one-time link for user userID to register a
// passkey, valid for ttl (default 72 h, at most 30 days): <URL>/enroll/<token>.
// The token carries 256 random bits (plus the signed user id and expiry);
// only its SHA-256 is stored. createdBy names who made it (a user id or a
// system name).
func (c *Console) CreateEnrollment(ctx context.Context, userID, createdBy string, ttl time.Duration) (string, error) {
	u, err := c.o.Store.GetUser(ctx, userID)
	if err != nil {
		return "", fmt.Errorf("console: enrolment: %w", err)
	}
	if !u.Active {
		return "", fmt.Errorf("console: enrolment: user %s is not active", u.Email)
	}
	if len(u.ID) > 64 {
		return "", fmt.Errorf("console: enrolment: user id longer than 64 bytes cannot be a WebAuthn user handle")
	}
	if ttl <= 0 {
		ttl = DefaultEnrollmentTTL
	}
	ttl = min(ttl, MaxEnrollmentTTL)
	now := c.o.Now()
	exp := store.NormalizeTime(now.Add(ttl)).Truncate(time.Second)
	tok, err := c.seal.enrollToken(u.ID, exp)
	if err != nil {
		return "", err
	}
	if err := c.o.Store.CreateEnrollment(ctx, store.Enrollment{TokenHash: tokenHash(tok), UserID: u.ID,
		CreatedBy: createdBy, CreatedAt: store.NormalizeTime(now), ExpiresAt: exp}); err != nil {
		return "", fmt.Errorf("console: enrolment: %w", err)
	}
	c.log.Info("console: enrolment link created", "user", u.ID, "by", createdBy, "expires", exp)
	return c.o.URL + "/enroll/" + url.PathEscape(tok), nil
}

// enrollUser checks a link token and returns its user.
func (c *Console) enrollUser(ctx context.Context, tok string) (store.User, error) {
	uid, exp, err := c.seal.parseEnrollToken(tok)
	if err != nil {
		return store.User{}, errorf(http.StatusNotFound, "This enrolment link is not valid. Ask your administrator for a new one.", err)
	}
	if !c.o.Now().Before(exp) {
		return store.User{}, errorf(http.StatusGone, "This enrolment link has expired. Ask your administrator for a new one.", nil)
	}
	u, err := c.o.Store.GetUser(ctx, uid)
	if errors.Is(err, store.ErrNotFound) {
		return store.User{}, errorf(http.StatusNotFound, "This enrolment link is not valid. Ask your administrator for a new one.", err)
	}
	if err != nil {
		return store.User{}, err
	}
	if !u.Active {
		return store.User{}, errorf(http.StatusForbidden, "Your account is not active.", nil)
	}
	return u, nil
}

type enrollRequest struct {
	Token      string          `json:"token"`
	Credential json.RawMessage `json:"credential,omitempty"`
}

func (c *Console) enrollBegin(w http.ResponseWriter, r *http.Request, s *session) error {
	var req enrollRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	u, err := c.enrollUser(r.Context(), req.Token)
	if err != nil {
		return err
	}
	wu, err := c.waUser(r.Context(), u)
	if err != nil {
		return err
	}
	creation, sd, err := c.wa.BeginRegistration(wu,
		webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementRequired),
		webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
			ResidentKey: protocol.ResidentKeyRequirementRequired, RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification: protocol.VerificationRequired,
		}),
		webauthn.WithConveyancePreference(protocol.PreferNoAttestation),
		webauthn.WithExclusions(webauthn.Credentials(wu.creds).CredentialDescriptors()),
	)
	if err != nil {
		return err
	}
	if err := c.setCeremony(w, ceremony{Kind: "enroll", SID: s.SID, TokenHash: tokenHash(req.Token), Session: *sd}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"publicKey": creation.Response})
	return nil
}

func (c *Console) enrollFinish(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	var req enrollRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	cer, err := c.takeCeremony(w, r, s, "enroll")
	if err != nil {
		return err
	}
	th := tokenHash(req.Token)
	if string(th) != string(cer.TokenHash) {
		return errorf(http.StatusBadRequest, "The passkey ceremony was started for another link: try again.", nil)
	}
	u, err := c.enrollUser(ctx, req.Token)
	if err != nil {
		return err
	}
	wu, err := c.waUser(ctx, u)
	if err != nil {
		return err
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(req.Credential)
	if err != nil {
		return errorf(http.StatusBadRequest, "The passkey response could not be read.", err)
	}
	cred, err := c.wa.CreateCredential(wu, cer.Session, parsed)
	if err != nil {
		return errorf(http.StatusBadRequest, "The passkey could not be verified.", err)
	}
	if !parsed.Response.AttestationObject.AuthData.Flags.HasUserVerified() {
		return errorf(http.StatusBadRequest, "The passkey did not verify you (fingerprint, face or PIN): use a passkey that does.", nil)
	}
	// Only now, with a verified credential, is the link used (atomically).
	now := c.o.Now()
	e, err := c.o.Store.UseEnrollment(ctx, th, now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusNotFound, "This enrolment link is not valid. Ask your administrator for a new one.", err)
	case errors.Is(err, store.ErrEnrollmentUsed):
		return errorf(http.StatusGone, "This enrolment link was already used or has expired. Ask your administrator for a new one.", err)
	case err != nil:
		return err
	}
	if e.UserID != u.ID {
		return errorf(http.StatusBadRequest, "This enrolment link is not valid.", fmt.Errorf("enrolment is for %q, token names %q", e.UserID, u.ID))
	}
	transports := make([]string, len(cred.Transport))
	for i, t := range cred.Transport {
		transports[i] = string(t)
	}
	if len(transports) == 0 {
		transports = nil
	}
	pk := store.Passkey{ID: cred.ID, UserID: u.ID, PublicKey: cred.PublicKey, SignCount: cred.Authenticator.SignCount,
		AAGUID: cred.Authenticator.AAGUID, Transports: transports, Flags: uint8(cred.Flags.ProtocolValue()),
		Name: "Passkey added " + now.UTC().Format("2006-01-02"), CreatedAt: store.NormalizeTime(now)}
	if err := c.o.Store.CreatePasskey(ctx, pk); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return errorf(http.StatusConflict, "This passkey is registered already.", err)
		}
		return err
	}
	if err := c.signIn(w, u.ID); err != nil {
		return err
	}
	c.log.Info("console: passkey enrolled", "user", u.ID, "credential", b64.EncodeToString(cred.ID))
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "redirect": c.o.BasePath + "/"})
	return nil
}

// ---- sign-in ----

func (c *Console) loginBegin(w http.ResponseWriter, r *http.Request, s *session) error {
	assertion, sd, err := c.wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return err
	}
	if err := c.setCeremony(w, ceremony{Kind: "login", SID: s.SID, Session: *sd}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"publicKey": assertion.Response})
	return nil
}

type loginRequest struct {
	Credential json.RawMessage `json:"credential"`
	Next       string          `json:"next,omitempty"`
}

func (c *Console) loginFinish(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	var req loginRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	cer, err := c.takeCeremony(w, r, s, "login")
	if err != nil {
		return err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(req.Credential)
	if err != nil {
		return errorf(http.StatusBadRequest, "The passkey response could not be read.", err)
	}
	var inactive bool
	handler := func(rawID, userHandle []byte) (webauthn.User, error) {
		pk, err := c.o.Store.GetPasskey(ctx, rawID)
		if err != nil {
			return nil, err
		}
		if pk.UserID != string(userHandle) {
			return nil, errors.New("the passkey's user handle does not match its owner")
		}
		u, err := c.o.Store.GetUser(ctx, pk.UserID)
		if err != nil {
			return nil, err
		}
		if !u.Active {
			inactive = true
			return nil, errors.New("the user is not active")
		}
		return c.waUser(ctx, u)
	}
	user, cred, err := c.wa.ValidatePasskeyLogin(handler, cer.Session, parsed)
	if inactive {
		return errorf(http.StatusForbidden, "Your account is not active.", err)
	}
	if err != nil {
		return errorf(http.StatusForbidden, "This passkey could not sign you in.", err)
	}
	u := user.(*waUser).u
	if err := c.checkUse(ctx, parsed, cred); err != nil {
		return err
	}
	if err := c.signIn(w, u.ID); err != nil {
		return err
	}
	c.log.Info("console: signed in", "user", u.ID)
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "redirect": c.safeNext(req.Next)})
	return nil
}

// checkUse enforces what go-webauthn reports but leaves to the RP: the UV
// flag of this very assertion, and the sign count (recorded atomically by
// the store, which refuses a count that does not grow: a cloned passkey).
func (c *Console) checkUse(ctx context.Context, parsed *protocol.ParsedCredentialAssertionData, cred *webauthn.Credential) error {
	if !parsed.Response.AuthenticatorData.Flags.HasUserVerified() || !parsed.Response.AuthenticatorData.Flags.HasUserPresent() {
		return errorf(http.StatusForbidden, "The passkey did not verify you (fingerprint, face or PIN).", nil)
	}
	if cred.Authenticator.CloneWarning {
		return errorf(http.StatusForbidden, "This passkey's signature counter went backwards: it may have been copied. Ask your administrator.", nil)
	}
	err := c.o.Store.UpdatePasskeyUse(ctx, cred.ID, parsed.Response.AuthenticatorData.Counter, c.o.Now())
	if errors.Is(err, store.ErrInvalid) {
		return errorf(http.StatusForbidden, "This passkey's signature counter went backwards: it may have been copied. Ask your administrator.", err)
	}
	return err
}

// safeNext returns next when it is a path inside the console, else the
// console's home.
func (c *Console) safeNext(next string) string {
	home := c.o.BasePath + "/"
	if next == "" || !strings.HasPrefix(next, home) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return home
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" {
		return home
	}
	return next
}

// ---- votes ----

// voteToken is the signed, single-use grant of a vote challenge: it binds
// the nonce to the session, the user, the approval and the decision.
type voteToken struct {
	SID   string `json:"sid"`
	UID   string `json:"uid"`
	AID   string `json:"aid"`
	Dec   string `json:"dec"`
	Nonce []byte `json:"n"`
}

type voteRequest struct {
	Decision   string          `json:"decision"`
	Reason     string          `json:"reason,omitempty"`
	Token      string          `json:"token,omitempty"`
	Credential json.RawMessage `json:"credential,omitempty"`
}

const maxReason = 1000

// votable loads approval id and checks that u may vote on it now.
func (c *Console) votable(ctx context.Context, id string, u store.User) (store.Approval, error) {
	a, err := c.o.Approvals.Get(ctx, id)
	if err != nil {
		return a, voteError(a, err)
	}
	if a.State != store.ApprovalPending || !c.o.Now().Before(a.ExpiresAt) {
		return a, errorf(http.StatusConflict, "This request is no longer pending ("+stateText(a, c.o.Now())+"), so it cannot be voted on.", nil)
	}
	return a, voteError(a, c.o.Approvals.CanVote(ctx, a, u))
}

func (c *Console) voteChallenge(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	u, err := c.signedIn(r, s, false)
	if err != nil {
		return err
	}
	var req voteRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Decision != DecisionApprove && req.Decision != DecisionDeny {
		return errorf(http.StatusBadRequest, `The decision must be "approve" or "deny".`, nil)
	}
	a, err := c.votable(ctx, r.PathValue("id"), u)
	if err != nil {
		return err
	}
	wu, err := c.waUser(ctx, u)
	if err != nil {
		return err
	}
	if len(wu.creds) == 0 {
		return errorf(http.StatusForbidden, "You have no passkey registered.", nil)
	}
	nonce := make([]byte, NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	challenge := VoteChallenge(nonce, a.ID, a.ArgsDigest, req.Decision)
	assertion, _, err := c.wa.BeginLogin(wu, webauthn.WithChallenge(challenge),
		webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return err
	}
	tok, err := c.seal.seal("vote", voteToken{SID: s.SID, UID: u.ID, AID: a.ID, Dec: req.Decision, Nonce: nonce},
		c.o.Now().Add(ceremonyTTL))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"publicKey": assertion.Response, "token": tok})
	return nil
}

// Evidence is the JSON kept with a console vote (approval.Vote.Evidence):
// the WebAuthn assertion as the browser sent it and the inputs of its
// challenge (see VoteChallenge), all binary values base64url.
type Evidence struct {
	Type              string `json:"type"` // "webauthn.get"
	RPID              string `json:"rpId"`
	Origin            string `json:"origin"`
	CredentialID      string `json:"credentialId"`
	AuthenticatorData string `json:"authenticatorData"`
	ClientDataJSON    string `json:"clientDataJSON"`
	Signature         string `json:"signature"`
	UserHandle        string `json:"userHandle"`
	UserVerified      bool   `json:"userVerified"`
	SignCount         uint32 `json:"signCount"`
	Challenge         string `json:"challenge"`
	Nonce             string `json:"nonce"`
	ApprovalID        string `json:"approvalId"`
	ArgsDigest        string `json:"argsDigest"`
	Decision          string `json:"decision"`
	Derivation        string `json:"derivation"`
}

// Derivation describes VoteChallenge in evidence.
const Derivation = `SHA-256("interlock/console/vote/v1" || nonce || u32be(len(approvalId)) || approvalId || u32be(len(argsDigest)) || argsDigest || u32be(len(decision)) || decision)`

func (c *Console) vote(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	u, err := c.signedIn(r, s, false)
	if err != nil {
		return err
	}
	var req voteRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Decision != DecisionApprove && req.Decision != DecisionDeny {
		return errorf(http.StatusBadRequest, `The decision must be "approve" or "deny".`, nil)
	}
	req.Reason = strings.TrimSpace(req.Reason)
	if req.Decision == DecisionDeny && req.Reason == "" {
		return errorf(http.StatusBadRequest, "Say why you deny this request.", nil)
	}
	if len(req.Reason) > maxReason {
		return errorf(http.StatusBadRequest, fmt.Sprintf("The reason is too long (at most %d characters).", maxReason), nil)
	}
	id := r.PathValue("id")
	a, err := c.votable(ctx, id, u)
	if err != nil {
		return err
	}
	now := c.o.Now()
	var vt voteToken
	if err := c.seal.open("vote", req.Token, now, &vt); err != nil {
		return errorf(http.StatusForbidden, "The passkey confirmation has expired or is not valid: try again.", err)
	}
	if vt.SID != s.SID || vt.UID != u.ID || vt.AID != a.ID || vt.Dec != req.Decision || len(vt.Nonce) != NonceSize {
		return errorf(http.StatusForbidden, "This passkey confirmation was made for another request or decision.", nil)
	}
	challenge := VoteChallenge(vt.Nonce, a.ID, a.ArgsDigest, req.Decision)
	wu, err := c.waUser(ctx, u)
	if err != nil {
		return err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(req.Credential)
	if err != nil {
		return errorf(http.StatusBadRequest, "The passkey response could not be read.", err)
	}
	allowed := make([][]byte, len(wu.creds))
	for i, cr := range wu.creds {
		allowed[i] = cr.ID
	}
	sd := webauthn.SessionData{
		Challenge: b64.EncodeToString(challenge), RelyingPartyID: c.o.RPID, UserID: wu.WebAuthnID(),
		AllowedCredentialIDs: allowed, UserVerification: protocol.VerificationRequired,
	}
	cred, err := c.wa.ValidateLogin(wu, sd, parsed)
	if err != nil {
		return errorf(http.StatusForbidden, "The passkey confirmation is not valid for this request and decision.", err)
	}
	if !c.used.use("vote:"+string(vt.Nonce), now.Add(ceremonyTTL), now) {
		return errorf(http.StatusForbidden, "This passkey confirmation was used already: try again.", nil)
	}
	if err := c.checkUse(ctx, parsed, cred); err != nil {
		return err
	}
	raw := parsed.Raw
	ev := Evidence{
		Type: "webauthn.get", RPID: c.o.RPID, Origin: parsed.Response.CollectedClientData.Origin,
		CredentialID:      b64.EncodeToString(parsed.RawID),
		AuthenticatorData: b64.EncodeToString(raw.AssertionResponse.AuthenticatorData),
		ClientDataJSON:    b64.EncodeToString(raw.AssertionResponse.ClientDataJSON),
		Signature:         b64.EncodeToString(raw.AssertionResponse.Signature),
		UserHandle:        b64.EncodeToString(raw.AssertionResponse.UserHandle),
		UserVerified:      parsed.Response.AuthenticatorData.Flags.HasUserVerified(),
		SignCount:         parsed.Response.AuthenticatorData.Counter,
		Challenge:         b64.EncodeToString(challenge), Nonce: b64.EncodeToString(vt.Nonce),
		ApprovalID: a.ID, ArgsDigest: a.ArgsDigest, Decision: req.Decision, Derivation: Derivation,
	}
	evidence, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	after, err := c.o.Approvals.Vote(ctx, a.ID, u, approval.Vote{Approve: req.Decision == DecisionApprove,
		Reason: req.Reason, Method: VoteMethod, Evidence: evidence})
	if err != nil {
		return voteError(a, err)
	}
	c.log.Info("console: vote recorded", "approval", a.ID, "user", u.ID, "decision", req.Decision, "state", after.State)
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "state": after.State, "redirect": c.o.BasePath + "/approvals/" + url.PathEscape(a.ID)})
	return nil
}
