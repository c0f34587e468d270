// Package credential issues and verifies action credentials (W3C VC 2.0
// secured as JWS, typ vc+jwt), manages signing keys sealed with a
// key-encryption key, and publishes JWKS, did:web and Bitstring Status List
// credentials; must not decide.
//
// An Issuer signs one credential per gated call, bound to exactly that
// action: the agent and its owner, the upstream and tool, the hex SHA-256 of
// the RFC 8785 canonical JSON of the call's arguments (ArgumentsDigest), the
// decision's constraints, who authorised it and how, and the risk context.
// The credential is the JWS payload itself (VC-JOSE-COSE: no "vc" claim),
// with iss equal to the VC issuer (interlock's public URL), jti equal to the
// VC id, and iat, nbf and exp; the protected header carries typ "vc+jwt",
// cty "vc", kid (the key's RFC 7638 JWK thumbprint) and alg EdDSA (Ed25519)
// or ES256. Its credentialStatus is a BitstringStatusListEntry (purpose
// revocation) at a random index of the current status list.
//
// Every credential is recorded in the store (store.Credential) before it is
// signed; Consume uses it atomically in the store (single use by default,
// refused even by another replica) and Revoke marks it revoked, which sets
// its bit in the status list StatusListCredential publishes.
//
// Signing keys live in the store with their private half sealed by
// AES-256-GCM under a 32-byte key-encryption key (LoadKEK), the key id as
// additional data. Rotate makes a new key current and keeps the old public
// key published (JWKS, DIDDocument) until every credential it signed has
// expired.
//
// The package must not decide whether a call may go ahead (that is the
// policy's and the gate's business), must not log keys or tokens, and must
// not read the clock or the random source except through Options.Now and
// Options.Rand.
package credential
