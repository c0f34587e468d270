package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/spf13/cobra"
)

// agentIDPattern is the registry's rule for agent ids.
var agentIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// agentKeygenCmd is "interlock agents keygen": a key pair with which an
// agent authenticates to the CIBA provider with private_key_jwt.
func (c *cli) agentKeygenCmd() *cobra.Command {
	var agentID, alg, out, jwksOut string
	cmd := &cobra.Command{
		Use:   "keygen --agent ID [--alg ES256|EdDSA] [--out PRIVATE_FILE]",
		Short: "Make a key pair for an agent's CIBA client authentication (private_key_jwt)",
		Long: `Make a key pair with which an agent authenticates to interlock's CIBA
provider with private_key_jwt (docs/ciba.md). The private key is written as a
JWK to --out (mode 0600, never overwritten): give it to the agent only; it
signs the agent's client assertions. The public JWK Set is printed (and
written to --jwks-out when given) with the ciba.clients lines to paste into
interlock.yaml; interlock reads the keys when it starts.

Nothing is stored: the key pair is not tied to interlock's database, and the
agent keeps its tokens. To replace a key, add the new public key to the set,
restart, switch the agent over, then remove the old one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !agentIDPattern.MatchString(agentID) {
				return fmt.Errorf("--agent %q: want an agent id (1-64 characters from a-z, A-Z, 0-9, \".\", \"_\" and \"-\")", agentID)
			}
			if out == "" {
				out = agentID + ".private.jwk.json"
			}
			for _, f := range []string{out, jwksOut} {
				if _, err := os.Lstat(f); f != "" && err == nil {
					return fmt.Errorf("%s exists already (not overwritten)", f)
				}
			}
			priv, pub, err := agentKeyPair(alg)
			if err != nil {
				return err
			}
			privJSON, err := json.MarshalIndent(priv, "", "  ")
			if err != nil {
				return err
			}
			set := jwk.NewSet()
			if err := set.AddKey(pub); err != nil {
				return err
			}
			setJSON, err := json.Marshal(set)
			if err != nil {
				return err
			}
			if err := writeNew(out, append(privJSON, '\n'), 0o600); err != nil {
				return fmt.Errorf("writing the private key: %w", err)
			}
			jwksFile := "keys/" + agentID + ".jwks.json"
			if jwksOut != "" {
				if err := writeNew(jwksOut, append(setJSON, '\n'), 0o644); err != nil {
					return fmt.Errorf("writing the public key set: %w", err)
				}
				jwksFile = jwksOut
			}
			kid, _ := pub.KeyID()
			fmt.Fprintf(c.stdout, `# Private key (%s, kid %s) written to %s (mode 0600).
# Give it to agent %s only: it signs the agent's client assertions
# (private_key_jwt, iss = sub = %s, aud = interlock's public_url).

# Public key set of agent %s (JWKS)%s:
%s

# Paste into interlock.yaml (jwks_file is relative to interlock.yaml), and restart:
ciba:
  clients:
    - agent: %s
      jwks_file: %s
      # or inline instead of jwks_file:
      # jwks: '%s'
`, alg, kid, out, agentID, agentID, agentID, savedHint(jwksOut), setJSON, agentID, jwksFile, setJSON)
			return nil
		},
	}
	cmd.Flags().StringVar(&agentID, "agent", "", "the agent id (its client_id)")
	cmd.Flags().StringVar(&alg, "alg", "ES256", "signature algorithm: ES256 (P-256) or EdDSA (Ed25519)")
	cmd.Flags().StringVar(&out, "out", "", "file to write the private JWK to (default <agent>.private.jwk.json)")
	cmd.Flags().StringVar(&jwksOut, "jwks-out", "", "also write the public JWK Set to this file (for jwks_file)")
	_ = cmd.MarkFlagRequired("agent")
	return cmd
}

func savedHint(jwksOut string) string {
	if jwksOut == "" {
		return "; save it as the jwks_file below"
	}
	return ", written to " + jwksOut
}

// agentKeyPair makes a private and a public JWK for alg, with kid (the
// RFC 7638 thumbprint), alg and use "sig".
func agentKeyPair(alg string) (priv, pub jwk.Key, err error) {
	var raw any
	var salg jwa.SignatureAlgorithm
	switch alg {
	case "ES256":
		raw, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		salg = jwa.ES256()
	case "EdDSA":
		_, raw, err = ed25519.GenerateKey(rand.Reader)
		salg = jwa.EdDSA()
	default:
		return nil, nil, fmt.Errorf("--alg %q: want ES256 or EdDSA", alg)
	}
	if err != nil {
		return nil, nil, err
	}
	priv, err = jwk.Import(raw)
	if err != nil {
		return nil, nil, err
	}
	pub, err = jwk.PublicKeyOf(priv)
	if err != nil {
		return nil, nil, err
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, nil, err
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	for _, k := range []jwk.Key{priv, pub} {
		for name, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: salg, jwk.KeyUsageKey: "sig"} {
			if err := k.Set(name, v); err != nil {
				return nil, nil, err
			}
		}
	}
	return priv, pub, nil
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists already (not overwritten)", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return os.Chmod(path, mode) // as asked, whatever the umask
}
