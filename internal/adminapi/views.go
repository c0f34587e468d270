package adminapi

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// The JSON the API speaks. The CLI decodes these with --server.

// User is a human: an agent owner or an approver.
type User struct {
	ID         string    `json:"id"`
	Email      string    `json:"email"`
	Name       string    `json:"name"`
	Roles      []string  `json:"roles"`
	Active     bool      `json:"active"`
	Source     string    `json:"source"`
	ExternalID string    `json:"external_id,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	DeletedAt  time.Time `json:"deleted_at,omitzero"`
}

// UserDetail is GET /api/v1/users/{email}: the user and the agents they
// own.
type UserDetail struct {
	User
	Agents []AgentRef `json:"agents"`
}

// AgentRef names an agent and its state.
type AgentRef struct {
	ID    string           `json:"id"`
	State store.AgentState `json:"state"`
}

// Agent is a registered agent with its owner's email.
type Agent struct {
	ID             string           `json:"id"`
	Name           string           `json:"name"`
	Owner          string           `json:"owner"`
	OwnerID        string           `json:"owner_id"`
	Department     string           `json:"department"`
	Purpose        string           `json:"purpose"`
	State          store.AgentState `json:"state"`
	StateChangedAt time.Time        `json:"state_changed_at,omitzero"`
	StateChangedBy string           `json:"state_changed_by,omitempty"`
	StateReason    string           `json:"state_reason,omitempty"`
	// AllowedUpstreams are the upstreams the agent may call; empty: every
	// upstream.
	AllowedUpstreams []string  `json:"allowed_upstreams"`
	CreatedBy        string    `json:"created_by,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// AgentDetail is GET /api/v1/agents/{id}: the agent, whether its owner is
// active, its tokens and its state history (oldest first).
type AgentDetail struct {
	Agent
	OwnerActive bool `json:"owner_active"`
	// LastUsedAt is the latest use of any of its tokens.
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	Tokens     []Token   `json:"tokens"`
	History    []Event   `json:"history"`
}

// CreatedAgent is the answer to POST /api/v1/agents: the agent and its
// first token, shown this once.
type CreatedAgent struct {
	Agent
	Token string `json:"token"`
}

// Token is one agent token (never the token itself).
type Token struct {
	ID         string    `json:"id"`
	AgentID    string    `json:"agent"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
}

// CreatedToken is the answer to POST /api/v1/agents/{id}/tokens: the
// token, shown this once.
type CreatedToken struct {
	Token
	Secret string `json:"token"`
}

// Event is one audit event of an agent's history.
type Event struct {
	Seq  int64           `json:"seq"`
	Time time.Time       `json:"time"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// Approval is one request for human approval.
type Approval struct {
	ID                 string          `json:"id"`
	State              string          `json:"state"`
	AgentID            string          `json:"agent"`
	Upstream           string          `json:"upstream"`
	Tool               string          `json:"tool"`
	ArgsDigest         string          `json:"args_digest"`
	Arguments          json.RawMessage `json:"arguments"`
	Rule               string          `json:"rule"`
	Approvers          []string        `json:"approvers"`
	Quorum             int             `json:"quorum"`
	SeparationOfDuties bool            `json:"separation_of_duties"`
	BindingMessage     string          `json:"binding_message"`
	RiskScore          int             `json:"risk_score"`
	Source             string          `json:"source"`
	DecisionID         string          `json:"decision_id"`
	CreatedAt          time.Time       `json:"created_at"`
	ExpiresAt          time.Time       `json:"expires_at"`
	DecidedAt          time.Time       `json:"decided_at,omitzero"`
	Reason             string          `json:"reason,omitempty"`
	Votes              []Vote          `json:"votes"`
}

// Vote is one approver's vote.
type Vote struct {
	Email   string    `json:"email"`
	Approve bool      `json:"approve"`
	Reason  string    `json:"reason"`
	Method  string    `json:"method"`
	At      time.Time `json:"at"`
}

// Credential is the record of one issued action credential.
type Credential struct {
	ID           string    `json:"id"`
	AgentID      string    `json:"agent"`
	DecisionID   string    `json:"decision_id"`
	Upstream     string    `json:"upstream"`
	Tool         string    `json:"tool"`
	ArgsDigest   string    `json:"args_digest"`
	KeyID        string    `json:"kid"`
	StatusList   string    `json:"status_list"`
	StatusIndex  int       `json:"status_index"`
	IssuedAt     time.Time `json:"issued_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	Uses         int       `json:"uses"`
	Used         int       `json:"used"`
	State        string    `json:"state"` // live, used, expired or revoked
	RevokedAt    time.Time `json:"revoked_at,omitzero"`
	RevokeReason string    `json:"revoke_reason,omitempty"`
}

// Whoami is GET /api/v1/whoami: the admin token's name and roles.
type Whoami struct {
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s)
}

// UserOf is the view of a stored user.
func UserOf(u store.User) User {
	return User{ID: u.ID, Email: u.Email, Name: u.Name, Roles: orEmpty(u.Roles), Active: u.Active, Source: u.Source,
		ExternalID: u.ExternalID, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, DeletedAt: u.DeletedAt}
}

// Store is the stored user the view shows.
func (u User) Store() store.User {
	return store.User{ID: u.ID, Email: u.Email, Name: u.Name, Roles: store.NormalizeRoles(u.Roles), Active: u.Active,
		Source: u.Source, ExternalID: u.ExternalID, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, DeletedAt: u.DeletedAt}
}

// AgentOf is the view of a stored agent owned by the user with ownerEmail.
func AgentOf(a store.Agent, ownerEmail string) Agent {
	return Agent{ID: a.ID, Name: a.Name, Owner: ownerEmail, OwnerID: a.OwnerID, Department: a.Department, Purpose: a.Purpose,
		State: a.State, StateChangedAt: a.StateChangedAt, StateChangedBy: a.StateChangedBy, StateReason: a.StateReason,
		AllowedUpstreams: orEmpty(a.AllowedUpstreams), CreatedBy: a.CreatedBy, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt}
}

// Store is the stored agent the view shows.
func (a Agent) Store() store.Agent {
	return store.Agent{ID: a.ID, Name: a.Name, OwnerID: a.OwnerID, Department: a.Department, Purpose: a.Purpose, State: a.State,
		StateChangedAt: a.StateChangedAt, StateChangedBy: a.StateChangedBy, StateReason: a.StateReason,
		AllowedUpstreams: nilIfEmpty(a.AllowedUpstreams), CreatedBy: a.CreatedBy, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}

// TokenOf is the view of a stored agent token.
func TokenOf(t store.AgentToken) Token {
	return Token{ID: t.ID, AgentID: t.AgentID, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, RevokedAt: t.RevokedAt, LastUsedAt: t.LastUsedAt}
}

// Store is the stored token the view shows (without its hash).
func (t Token) Store() store.AgentToken {
	return store.AgentToken{ID: t.ID, AgentID: t.AgentID, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, RevokedAt: t.RevokedAt, LastUsedAt: t.LastUsedAt}
}

// EventOf is the view of a stored audit event.
func EventOf(ev store.AuditEvent) Event {
	data := json.RawMessage(ev.Data)
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	return Event{Seq: ev.Seq, Time: ev.Time, Type: ev.Type, Data: data}
}

// Store is the stored event the view shows (without its hashes).
func (e Event) Store() store.AuditEvent {
	return store.AuditEvent{Seq: e.Seq, Time: e.Time, Type: e.Type, Data: e.Data}
}

// ApprovalOf is the view of a stored approval.
func ApprovalOf(a store.Approval) Approval {
	votes := make([]Vote, 0, len(a.Votes))
	for _, v := range a.Votes {
		votes = append(votes, Vote{Email: v.Email, Approve: v.Approve, Reason: v.Reason, Method: v.Method, At: v.At})
	}
	args := json.RawMessage(a.Arguments)
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	out := Approval{ID: a.ID, State: string(a.State), AgentID: a.AgentID, Upstream: a.Upstream, Tool: a.Tool, ArgsDigest: a.ArgsDigest,
		Arguments: args, Rule: a.Rule, Approvers: orEmpty(a.Approvers), Quorum: a.Quorum, SeparationOfDuties: a.SeparationOfDuties,
		BindingMessage: a.BindingMessage, RiskScore: a.RiskScore, Source: a.Source, DecisionID: a.DecisionID,
		CreatedAt: a.CreatedAt, ExpiresAt: a.ExpiresAt, DecidedAt: a.DecidedAt, Votes: votes}
	if !a.DecidedAt.IsZero() {
		out.Reason = a.Reason
	}
	return out
}

// Store is the stored approval the view shows (without the owner's id,
// the client data and the votes' evidence).
func (a Approval) Store() store.Approval {
	var votes []store.ApprovalVote
	for _, v := range a.Votes {
		votes = append(votes, store.ApprovalVote{Email: v.Email, Approve: v.Approve, Reason: v.Reason, Method: v.Method, At: v.At})
	}
	return store.Approval{ID: a.ID, State: store.ApprovalState(a.State), AgentID: a.AgentID, Upstream: a.Upstream, Tool: a.Tool,
		ArgsDigest: a.ArgsDigest, Arguments: a.Arguments, Rule: a.Rule, Approvers: a.Approvers, Quorum: a.Quorum,
		SeparationOfDuties: a.SeparationOfDuties, BindingMessage: a.BindingMessage, RiskScore: a.RiskScore, Source: a.Source,
		DecisionID: a.DecisionID, CreatedAt: a.CreatedAt, ExpiresAt: a.ExpiresAt, DecidedAt: a.DecidedAt, Reason: a.Reason, Votes: votes}
}

// Store is the stored credential the view shows (without the time of its
// last use).
func (c Credential) Store() store.Credential {
	return store.Credential{ID: c.ID, AgentID: c.AgentID, DecisionID: c.DecisionID, Upstream: c.Upstream, Tool: c.Tool,
		ArgsDigest: c.ArgsDigest, KeyID: c.KeyID, StatusList: c.StatusList, StatusIndex: c.StatusIndex,
		IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt, Uses: c.Uses, Used: c.Used, RevokedAt: c.RevokedAt, RevokeReason: c.RevokeReason}
}

// CredentialOf is the view of a stored credential at now.
func CredentialOf(c store.Credential, now time.Time) Credential {
	state := "live"
	switch {
	case !c.RevokedAt.IsZero():
		state = "revoked"
	case !now.Before(c.ExpiresAt):
		state = "expired"
	case c.Used >= c.Uses:
		state = "used"
	}
	return Credential{ID: c.ID, AgentID: c.AgentID, DecisionID: c.DecisionID, Upstream: c.Upstream, Tool: c.Tool,
		ArgsDigest: c.ArgsDigest, KeyID: c.KeyID, StatusList: c.StatusList, StatusIndex: c.StatusIndex,
		IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt, Uses: c.Uses, Used: c.Used, State: state,
		RevokedAt: c.RevokedAt, RevokeReason: c.RevokeReason}
}
