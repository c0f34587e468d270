package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/interlock-dev/interlock/internal/ciba"
	"github.com/interlock-dev/interlock/internal/store"
)

// CIBAClientKey is the store meta key under which an agent's CIBA client
// registration is kept (JSON: backchannel_token_delivery_mode and
// backchannel_client_notification_endpoint), + the agent id. Without one
// the agent is a poll client. See docs/ciba.md.
const CIBAClientKey = "ciba/client/"

// cibaHandler returns the CIBA OpenID Provider (discovery, backchannel
// authentication and token endpoints), or nil when it is off.
func (a *App) cibaHandler() http.Handler {
	if a.Gate == nil || a.Approvals == nil || a.Issuer == nil || a.Registry == nil {
		return nil
	}
	names := map[string]bool{}
	for _, u := range a.Config.Upstreams {
		names[u.Name] = true
	}
	p, err := ciba.New(ciba.Options{
		Issuer:    a.Config.PublicURL,
		JWKSURI:   a.Config.PublicURL + "/.well-known/jwks.json",
		Gate:      a.Gate,
		Approvals: a.Approvals,
		Auth:      a.Registry,
		Meta:      a.Store,
		Principal: func(ctx context.Context, id string) (store.Principal, error) {
			return principalOf(ctx, a.Store, id)
		},
		// Agents have no registered public keys yet: private_key_jwt is
		// advertised and implemented, and refuses every client until
		// key registration exists.
		ClientKeys: noClientKeys{},
		ClientMetadata: func(ctx context.Context, id string) (ciba.Metadata, error) {
			return CIBAClientMetadata(ctx, a.Store, id)
		},
		KnownUpstream: func(name string) bool { return names[name] },
		Logger:        a.log,
	})
	if err != nil {
		a.log.Error("the CIBA provider is off", "err", err)
		return nil
	}
	a.ciba = p
	return p
}

// CIBAClientMetadata reads agent id's CIBA registration from the store's
// meta area; an agent without one is a poll client.
func CIBAClientMetadata(ctx context.Context, st store.Store, id string) (ciba.Metadata, error) {
	b, err := st.GetMeta(ctx, CIBAClientKey+id)
	if errors.Is(err, store.ErrNotFound) {
		return ciba.Metadata{DeliveryMode: ciba.ModePoll}, nil
	}
	if err != nil {
		return ciba.Metadata{}, err
	}
	var m ciba.Metadata
	if err := json.Unmarshal(b, &m); err != nil {
		return ciba.Metadata{}, fmt.Errorf("the CIBA registration of agent %s does not decode: %w", id, err)
	}
	return m, nil
}

// principalOf builds the principal of agent id (without a token) for a
// client that authenticated with a key.
func principalOf(ctx context.Context, st store.Store, id string) (store.Principal, error) {
	ag, err := st.GetAgent(ctx, id)
	if err != nil {
		return store.Principal{}, err
	}
	owner, err := st.GetUser(ctx, ag.OwnerID)
	if err != nil {
		return store.Principal{}, err
	}
	return store.Principal{Agent: ag, Owner: owner}, nil
}

type noClientKeys struct{}

func (noClientKeys) ClientKeys(context.Context, string) ([]byte, error) { return nil, nil }
