package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/interlock-dev/interlock/internal/ciba"
	"github.com/interlock-dev/interlock/internal/config"
	"github.com/interlock-dev/interlock/internal/store"
)

// CIBAClientKey is the store meta key under which an agent's CIBA client
// registration may be kept (JSON: backchannel_token_delivery_mode and
// backchannel_client_notification_endpoint), + the agent id. It is the
// fallback for agents without an entry in ciba.clients of the
// configuration; without either the agent is a poll client. See
// docs/ciba.md.
const CIBAClientKey = "ciba/client/"

// cibaHandler returns the CIBA OpenID Provider (discovery, backchannel
// authentication and token endpoints), or nil when it is off. An error
// is a ciba.clients entry whose keys cannot be loaded: the gateway does
// not start with it.
func (a *App) cibaHandler(ctx context.Context) (http.Handler, error) {
	clients, err := LoadCIBAClients(a.Config.CIBA)
	if err != nil {
		return nil, err
	}
	if a.Gate == nil || a.Approvals == nil || a.Issuer == nil || a.Registry == nil {
		return nil, nil
	}
	clients.warnShadowed(ctx, a.Store, a.log)
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
		// private_key_jwt: the public keys of ciba.clients (agents
		// without keys there cannot use it).
		ClientKeys: clients,
		ClientMetadata: func(ctx context.Context, id string) (ciba.Metadata, error) {
			return clients.Metadata(ctx, a.Store, id)
		},
		KnownUpstream: func(name string) bool { return names[name] },
		Logger:        a.log,
	})
	if err != nil {
		a.log.Error("the CIBA provider is off", "err", err)
		return nil, nil
	}
	if n := len(a.Config.CIBA.Clients); n > 0 {
		a.log.Info("ciba: clients registered in the configuration", "clients", n, "with_keys", clients.withKeys())
	}
	a.ciba = p
	return p, nil
}

// CIBAClientMetadata reads agent id's CIBA registration from the store's
// meta area (the fallback for agents without a ciba.clients entry); an
// agent without one is a poll client.
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

// CIBAClients are the CIBA client registrations of the configuration
// (ciba.clients), with each agent's public keys read and checked once,
// at start-up. It is the provider's ciba.ClientKeys.
type CIBAClients struct {
	byAgent map[string]cibaClient
}

type cibaClient struct {
	md   ciba.Metadata
	jwks []byte // a checked public JWK Set; nil: no keys
}

// LoadCIBAClients reads the registrations of cfg: the delivery mode and
// endpoint of each, and its JWK Set (inline, or read from jwks_file),
// which must parse as public signature keys interlock can verify
// (RS256 with at least 2048 bits, ES256 on P-256, EdDSA with Ed25519).
// The error names the entry and says what is wrong.
func LoadCIBAClients(cfg config.CIBA) (*CIBAClients, error) {
	c := &CIBAClients{byAgent: make(map[string]cibaClient, len(cfg.Clients))}
	for i, cl := range cfg.Clients {
		where := fmt.Sprintf("ciba.clients[%d] (agent %s)", i, cl.Agent)
		if _, dup := c.byAgent[cl.Agent]; dup || cl.Agent == "" {
			return nil, fmt.Errorf("%s: the agent is missing or registered twice", where)
		}
		md := ciba.Metadata{DeliveryMode: cl.Delivery, NotificationEndpoint: cl.NotificationEndpoint}
		if md.DeliveryMode == "" {
			md.DeliveryMode = ciba.ModePoll
		}
		var raw []byte
		switch {
		case cl.JWKSFile != "" && cl.JWKS != "":
			return nil, fmt.Errorf("%s: set jwks_file or jwks, not both", where)
		case cl.JWKS != "":
			raw = []byte(cl.JWKS)
			where += ": jwks"
		case cl.JWKSFile != "":
			b, err := readJWKSFile(cl.JWKSFile)
			if err != nil {
				return nil, fmt.Errorf("%s: jwks_file: %w", where, err)
			}
			raw = b
			where += ": jwks_file " + cl.JWKSFile
		}
		var jwks []byte
		if raw != nil {
			if err := CheckCIBAClientJWKS(raw); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			jwks = raw
		}
		c.byAgent[cl.Agent] = cibaClient{md: md, jwks: jwks}
	}
	return c, nil
}

func readJWKSFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, config.MaxCIBAJWKS+1))
	if err != nil {
		return nil, err
	}
	if len(b) > config.MaxCIBAJWKS {
		return nil, fmt.Errorf("%s is larger than %d KiB", path, config.MaxCIBAJWKS>>10)
	}
	return b, nil
}

// CheckCIBAClientJWKS checks a CIBA client's JWK Set fully: its shape
// (config.CheckCIBAJWKS: public keys only, never one with "d"), and that
// every key parses and is one interlock verifies client assertions with.
func CheckCIBAClientJWKS(b []byte) error {
	if err := config.CheckCIBAJWKS(b); err != nil {
		return err
	}
	set, err := jwk.Parse(b)
	if err != nil {
		return fmt.Errorf("the JWK Set does not parse: %w", err)
	}
	if set.Len() == 0 {
		return errors.New("the JWK Set has no keys")
	}
	for i := range set.Len() {
		k, _ := set.Key(i)
		if priv, err := jwk.IsPrivateKey(k); err != nil || priv {
			return fmt.Errorf("key %d is not a public key: give the agent's public keys only", i)
		}
		pub, err := jwk.PublicRawKeyOf(k)
		if err != nil {
			return fmt.Errorf("key %d: %w", i, err)
		}
		switch pk := pub.(type) {
		case *rsa.PublicKey:
			if pk.N.BitLen() < 2048 {
				return fmt.Errorf("key %d: an RSA key must have at least 2048 bits, not %d", i, pk.N.BitLen())
			}
		case *ecdsa.PublicKey:
			if pk.Curve != elliptic.P256() {
				return fmt.Errorf("key %d: an EC key must be on P-256", i)
			}
		case ed25519.PublicKey:
		default:
			return fmt.Errorf("key %d: %T keys are not supported (RS256, ES256, EdDSA)", i, pub)
		}
	}
	return nil
}

// ClientKeys returns the public JWK Set of agent id from the
// configuration; nil when it has none (private_key_jwt is then refused).
func (c *CIBAClients) ClientKeys(_ context.Context, id string) ([]byte, error) {
	if c == nil {
		return nil, nil
	}
	return c.byAgent[id].jwks, nil
}

// Metadata returns agent id's CIBA registration: its ciba.clients entry,
// or else the record in the store's meta area (CIBAClientMetadata), or
// else poll.
func (c *CIBAClients) Metadata(ctx context.Context, st store.Store, id string) (ciba.Metadata, error) {
	if c != nil {
		if cl, ok := c.byAgent[id]; ok {
			return cl.md, nil
		}
	}
	return CIBAClientMetadata(ctx, st, id)
}

func (c *CIBAClients) withKeys() int {
	n := 0
	for _, cl := range c.byAgent {
		if cl.jwks != nil {
			n++
		}
	}
	return n
}

// warnShadowed warns about store records that a ciba.clients entry
// overrides (the configuration wins).
func (c *CIBAClients) warnShadowed(ctx context.Context, st store.Store, log interface {
	Warn(msg string, args ...any)
}) {
	for id, cl := range c.byAgent {
		m, err := st.GetMeta(ctx, CIBAClientKey+id)
		if err != nil {
			continue
		}
		var old ciba.Metadata
		if json.Unmarshal(m, &old) == nil && old != cl.md {
			log.Warn("ciba: the configuration's registration of this agent is used; the one in the store is ignored",
				"agent", id, "config_mode", cl.md.DeliveryMode, "store_mode", old.DeliveryMode)
		}
	}
}
