package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
)

// MaxCIBAJWKS bounds a CIBA client's JWK Set (inline or in its file).
const MaxCIBAJWKS = 64 << 10

// cibaJWKPrivate are the JWK members that only private (or symmetric)
// keys have (RFC 7518 §6.2.2, §6.3.2, §6.4.1; RFC 8037 §2).
var cibaJWKPrivate = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// applyCIBADefaults: poll delivery, and jwks_file relative to configDir.
func (c *Config) applyCIBADefaults(configDir string) {
	for i := range c.CIBA.Clients {
		cl := &c.CIBA.Clients[i]
		if cl.Delivery == "" {
			cl.Delivery = CIBADeliveryPoll
		}
		if cl.JWKSFile != "" && !filepath.IsAbs(cl.JWKSFile) && configDir != "" {
			cl.JWKSFile = filepath.Join(configDir, cl.JWKSFile)
		}
	}
}

// validateCIBA checks ciba.clients: unique agent ids, the delivery mode
// and its endpoint, and the shape of the keys. The JWK Set in a
// jwks_file is read and checked at start-up (this package opens no
// other file), with the same CheckCIBAJWKS.
func (c *Config) validateCIBA(k *checker) {
	agents := map[string]int{}
	for i, cl := range c.CIBA.Clients {
		p := fmt.Sprintf("ciba.clients[%d]", i)
		switch {
		case cl.Agent == "":
			k.add(p+".agent", "is required: the agent id (its client_id)")
		case !validAgentID(cl.Agent):
			k.add(p+".agent", `%s is not an agent id (1-64 characters from a-z, A-Z, 0-9, ".", "_" and "-", starting with a letter or digit)`, k.show(p+".agent", cl.Agent))
		default:
			if j, ok := agents[cl.Agent]; ok {
				k.add(p+".agent", "agent %s is registered twice (first at %s)", k.show(p+".agent", cl.Agent), k.where(fmt.Sprintf("ciba.clients[%d].agent", j)))
			} else {
				agents[cl.Agent] = i
			}
		}

		switch cl.Delivery {
		case CIBADeliveryPoll, "":
			if cl.NotificationEndpoint != "" {
				k.add(p+".notification_endpoint", "applies only to delivery: ping (poll clients are not notified)")
			}
		case CIBADeliveryPing:
			if cl.NotificationEndpoint == "" {
				k.add(p+".notification_endpoint", "is required for delivery: ping (https, or http to localhost)")
			} else if msg := checkNotificationEndpoint(cl.NotificationEndpoint); msg != "" {
				k.add(p+".notification_endpoint", "%s", msg)
			}
		default:
			k.add(p+".delivery", "%s is not one of poll, ping (push is not supported: FAPI-CIBA)", k.show(p+".delivery", cl.Delivery))
		}

		switch {
		case cl.JWKSFile != "" && cl.JWKS != "":
			k.add(p, "has both jwks_file and jwks; set at most one")
		case cl.JWKS != "":
			if err := CheckCIBAJWKS([]byte(cl.JWKS)); err != nil {
				k.add(p+".jwks", "%v", err)
			}
		case cl.JWKSFile != "":
			if strings.IndexByte(cl.JWKSFile, 0) >= 0 {
				k.add(p+".jwks_file", "must not contain a NUL byte")
			}
		}
	}
}

// CheckCIBAJWKS checks the shape of a CIBA client's JWK Set: a JSON
// object whose "keys" is a non-empty list of public signature keys (kty
// RSA, EC with crv P-256, or OKP with crv Ed25519; use "sig" and alg
// RS256, ES256 or EdDSA when given). A key with private members ("d",
// ...) is refused: the configuration holds public keys only. The key
// material itself is parsed when interlock starts.
func CheckCIBAJWKS(b []byte) error {
	if len(b) > MaxCIBAJWKS {
		return fmt.Errorf("the JWK Set is larger than %d KiB", MaxCIBAJWKS>>10)
	}
	var set struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&set); err != nil {
		return fmt.Errorf(`is not a JWK Set (a JSON object {"keys": [...]}): %v`, err)
	}
	if dec.More() {
		return fmt.Errorf("is not a JWK Set: text follows the JSON object")
	}
	if len(set.Keys) == 0 {
		return fmt.Errorf(`the JWK Set has no keys (want {"keys": [public JWK, ...]})`)
	}
	for i, key := range set.Keys {
		if key == nil {
			return fmt.Errorf("key %d is not a JSON object", i)
		}
		for _, m := range cibaJWKPrivate {
			if _, ok := key[m]; ok {
				if m == "k" {
					return fmt.Errorf("key %d is a symmetric key (it has %q): give the agent's public keys only", i, m)
				}
				return fmt.Errorf("key %d is a private key (it has %q): give the agent's public keys only (interlock agents keygen prints them)", i, m)
			}
		}
		str := func(name string) (string, bool) {
			raw, ok := key[name]
			if !ok {
				return "", false
			}
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return "", true
			}
			return s, true
		}
		kty, _ := str("kty")
		crv, _ := str("crv")
		switch kty {
		case "RSA":
		case "EC":
			if crv != "P-256" {
				return fmt.Errorf("key %d: an EC key must be on curve P-256 (ES256), not %q", i, crv)
			}
		case "OKP":
			if crv != "Ed25519" {
				return fmt.Errorf("key %d: an OKP key must be Ed25519 (EdDSA), not %q", i, crv)
			}
		default:
			return fmt.Errorf("key %d: kty %q is not one of RSA, EC, OKP", i, kty)
		}
		if use, ok := str("use"); ok && use != "sig" {
			return fmt.Errorf(`key %d: use %q must be "sig"`, i, use)
		}
		if alg, ok := str("alg"); ok && !slices.Contains([]string{"RS256", "ES256", "EdDSA"}, alg) {
			return fmt.Errorf("key %d: alg %q is not one of RS256, ES256, EdDSA", i, alg)
		}
	}
	return nil
}

// checkNotificationEndpoint: an absolute https URL, or http to localhost
// or a loopback address; no user info, no fragment. The URL is never
// quoted: its query may carry a secret.
func checkNotificationEndpoint(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "must be an absolute https:// URL (http:// only to localhost)"
	}
	if u.User != nil {
		return "must not contain user info (user:password@)"
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return "must not contain a fragment (\"#...\")"
	}
	if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		return "must use https (http:// only to localhost or a loopback address such as 127.0.0.1)"
	}
	return ""
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// validAgentID is the agent id rule of the registry: 1-64 characters
// from a-z, A-Z, 0-9, ".", "_" and "-", the first a letter or digit.
func validAgentID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}
