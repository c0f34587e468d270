// Package verify lets a tool owner check, on their own side, the credential
// interlock attaches to every call it forwards: defence in depth, so that a
// tool server refuses a call that did not pass interlock's policy (and, where
// required, a human approval) even if something in between is bypassed.
//
// A Verifier is built once from interlock's public URL (or a static JWKS)
// and is safe for concurrent use. Verify checks one credential and, when
// given the call it arrived with, that the credential authorises exactly that
// call:
//
//	v, err := verify.New(verify.Options{Issuer: "https://interlock.example.com"})
//	if err != nil {
//		log.Fatal(err)
//	}
//	// In the tool handler: the token came in the Interlock-Credential header
//	// or in params._meta["io.interlock/credential"].
//	cred, err := v.Verify(ctx, token, &verify.Call{Upstream: "acme", Tool: "pay", Arguments: args})
//	if err != nil {
//		return toolError(err) // errors.Is(err, verify.ErrRevoked), verify.ErrMismatch, ...
//	}
//	log.Printf("agent %s (owner %s) may call %s.%s", cred.AgentID, cred.Owner, cred.Upstream, cred.Tool)
//
// # The credential
//
// interlock issues a W3C Verifiable Credential 2.0 secured as a JWS compact
// JWT (VC-JOSE-COSE): protected header typ "vc+jwt", cty "vc", a kid and alg
// EdDSA (Ed25519) or ES256; the payload is the credential itself (never a
// "vc" claim) plus iss (equal to the credential's issuer, interlock's public
// URL), jti (equal to its id), iat, nbf and exp. Its credentialSubject names
// the agent (id, owner), the action (upstream, tool, the hex SHA-256 of the
// RFC 8785 canonical JSON of the call's arguments, and constraints such as a
// maximum amount and the number of uses) and who authorised it. Its
// credentialStatus is a BitstringStatusListEntry (purpose revocation) whose
// status list credential is itself a VC-JWT signed by interlock.
// docs/credentials.md describes every field.
//
// # What Verify checks
//
// In order: the token's shape; alg (EdDSA or ES256 only, never "none");
// typ and cty; the signature with the key named by kid from interlock's JWKS;
// that there is no "vc" claim; iss against Options.Issuer and against the
// credential's issuer; exp, nbf, iat, validFrom and validUntil against
// Options.Now with Options.Leeway; the credential's structure; the call
// (upstream, tool and arguments digest); and, unless Options.SkipStatus, the
// revocation bit in the status list. Each failure is reported with one of the
// package's sentinel errors (test with errors.Is), wrapped with detail.
//
// The JWKS (Issuer + "/.well-known/jwks.json" unless Options.JWKS is given)
// and the status lists are fetched over HTTP and cached for the Cache-Control
// max-age of their responses (five minutes without one; no-store or no-cache
// mean no caching). A kid not in the cached JWKS refetches it, at most once a
// minute. Anything that cannot be fetched or checked fails closed: the
// credential is refused.
//
// # What it does not do
//
// Single use is interlock's job, not the verifier's: interlock consumes a
// credential atomically in its store when it forwards the call, so a replay
// is refused there, even across replicas. A Verifier keeps no record of the
// credentials it has seen; a tool owner who wants a second replay check can
// record Credential.ID.
//
// The package must not import interlock's internal packages: tool owners
// import it on its own, with only the standard library, the public canon
// package and github.com/lestrrat-go/jwx/v3.
package verify
