package credential

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/interlock-dev/interlock/canon"
)

// VC vocabulary.
const (
	ContextV2           = "https://www.w3.org/ns/credentials/v2"
	TypeVC              = "VerifiableCredential"
	TypeAction          = "InterlockActionCredential"
	TypeStatusList      = "BitstringStatusListCredential"
	TypeStatusEntry     = "BitstringStatusListEntry"
	TypeBitstringList   = "BitstringStatusList"
	PurposeRevocation   = "revocation"
	contextPath         = "/ns/credentials/v1"       // interlock's context, under the issuer URL
	statusPath          = "/status/"                 // status lists, under the issuer URL
	agentPath           = "/agents/"                 // credential subjects, under the issuer URL
	authorizationPolicy = "policy"                   // Authorization.Kind
	authorizationHuman  = "approval"                 // Authorization.Kind
	digestAlgorithm     = "SHA-256 of RFC 8785 JSON" // for messages
)

// ArgumentsDigest returns the hex SHA-256 of the RFC 8785 canonical JSON of
// a call's arguments: the digest a credential binds. nil arguments are the
// empty object (a tools/call without arguments has none), so nil and an
// empty map give the same digest.
func ArgumentsDigest(args map[string]any) (string, error) {
	if args == nil {
		args = map[string]any{}
	}
	b, err := canon.Marshal(args)
	if err != nil {
		return "", fmt.Errorf("credential: arguments digest (%s): %w", digestAlgorithm, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// The JSON shape of an action credential (the JWS payload).

type vcPayload struct {
	Context           []string     `json:"@context"`
	ID                string       `json:"id"`
	Type              []string     `json:"type"`
	Issuer            string       `json:"issuer"`
	ValidFrom         string       `json:"validFrom"`
	ValidUntil        string       `json:"validUntil"`
	CredentialSubject vcSubject    `json:"credentialSubject"`
	CredentialStatus  *statusEntry `json:"credentialStatus"`

	Iss string `json:"iss"`
	Jti string `json:"jti"`
	Iat int64  `json:"iat"`
	Nbf int64  `json:"nbf"`
	Exp int64  `json:"exp"`
}

type vcSubject struct {
	ID            string          `json:"id"`
	Agent         vcAgent         `json:"agent"`
	Action        vcAction        `json:"action"`
	Authorization []Authorization `json:"authorization"`
	Context       vcContext       `json:"context"`
}

type vcAgent struct {
	ID    string `json:"id"`
	Owner string `json:"owner"`
}

type vcAction struct {
	Upstream        string        `json:"upstream"`
	Tool            string        `json:"tool"`
	ArgumentsDigest string        `json:"arguments_digest"`
	Constraints     vcConstraints `json:"constraints"`
}

type vcConstraints struct {
	MaxAmount *float64 `json:"max_amount,omitempty"`
	Uses      int      `json:"uses"`
}

type vcContext struct {
	RiskScore     int    `json:"risk_score"`
	ClientIP      string `json:"client_ip,omitempty"`
	DecisionID    string `json:"decision_id"`
	PolicyVersion string `json:"policy_version,omitempty"`
}

type statusEntry struct {
	ID                   string `json:"id"`
	Type                 string `json:"type"`
	StatusPurpose        string `json:"statusPurpose"`
	StatusListIndex      string `json:"statusListIndex"`
	StatusListCredential string `json:"statusListCredential"`
}

// The JSON shape of a status list credential.

type statusListPayload struct {
	Context           []string          `json:"@context"`
	ID                string            `json:"id"`
	Type              []string          `json:"type"`
	Issuer            string            `json:"issuer"`
	ValidFrom         string            `json:"validFrom"`
	ValidUntil        string            `json:"validUntil"`
	CredentialSubject statusListSubject `json:"credentialSubject"`

	Iss string `json:"iss"`
	Jti string `json:"jti"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
}

type statusListSubject struct {
	ID            string `json:"id"`
	Type          string `json:"type"`
	StatusPurpose string `json:"statusPurpose"`
	EncodedList   string `json:"encodedList"`
	TTL           int64  `json:"ttl"` // milliseconds
}
