// Package gate decides whether one gated call may go on. Today it admits a
// call only when the calling agent is active and its owner is active: the
// ghost-agent kill switch, which holds even with an allow-all policy.
// Classification, policy, approvals and credentials hang on this hook in
// later stages.
//
// It must not do I/O of its own beyond what it is given, and must not know
// the MCP wire format (the relay hands it a Call).
package gate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/interlock-dev/interlock/internal/relay"
	"github.com/interlock-dev/interlock/internal/store"
)

// Options configure a Gate.
type Options struct {
	Logger *slog.Logger
}

// Gate implements relay.Gate.
type Gate struct {
	log *slog.Logger
}

// New returns a Gate.
func New(opts Options) *Gate {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Gate{log: opts.Logger}
}

// Check refuses the call when the agent or its owner is not active.
func (g *Gate) Check(ctx context.Context, c *relay.Call) (*relay.Denial, error) {
	if c == nil || c.Principal == nil {
		return nil, errors.New("gate: call without a principal")
	}
	if reason := Inactive(c.Principal); reason != "" {
		g.log.Info("call refused at the gate", "agent", c.Principal.Agent.ID, "upstream", c.Upstream, "name", c.Name, "reason", reason)
		return &relay.Denial{Reason: reason}, nil
	}
	return nil, nil
}

// Inactive returns why the principal may not act, or "" when it may.
func Inactive(p *store.Principal) string {
	a, o := &p.Agent, &p.Owner
	switch a.State {
	case store.AgentActive:
	case store.AgentSuspended:
		return fmt.Sprintf("interlock refused this call: agent %q is suspended; ask its owner (%s) or the security team to resume it", a.ID, o.Email)
	case store.AgentOrphaned:
		return fmt.Sprintf("interlock refused this call: agent %q is orphaned because its owner (%s) is no longer active; an administrator must reassign it to an active owner or decommission it", a.ID, o.Email)
	case store.AgentDecommissioned:
		return fmt.Sprintf("interlock refused this call: agent %q is decommissioned and can no longer act", a.ID)
	default:
		return fmt.Sprintf("interlock refused this call: agent %q is in unknown state %q", a.ID, a.State)
	}
	if !o.Active {
		return fmt.Sprintf("interlock refused this call: the owner of agent %q (%s) is deactivated; an administrator must reassign the agent to an active owner or decommission it", a.ID, o.Email)
	}
	return ""
}
