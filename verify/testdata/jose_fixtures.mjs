// Independent peer for the verify package: jose signs interlock-shaped
// credentials (valid and invalid), and @digitalbazaar/vc-bitstring-status-list
// builds the revocation list, which jose signs as a VC-JWT.
//
// Usage: node jose_fixtures.mjs ISSUER NOW_SECONDS ARGUMENTS_JSON
// Prints JSON: {jwks, statusList, revokedIndex, fixtures: [{name, token, want}]},
// where want is the name of the verify sentinel error expected ("" = valid).
import { load, digest } from './peers.mjs';

const jose = await load('jose');
const bsl = await load('@digitalbazaar/vc-bitstring-status-list');

const [issuer, nowArg, argsJSON] = process.argv.slice(2);
const now = Number(nowArg);
const args = JSON.parse(argsJSON);
const listURL = `${issuer}/status/1`;
const revokedIndex = 42;

const { publicKey, privateKey } = await jose.generateKeyPair('EdDSA', { crv: 'Ed25519' });
const other = await jose.generateKeyPair('EdDSA', { crv: 'Ed25519' });
const kid = 'jose-1';
const jwk = { ...(await jose.exportJWK(publicKey)), kid, alg: 'EdDSA', use: 'sig' };

// The status list: bit revokedIndex set.
const list = await bsl.createList({ length: 131072 });
list.setStatus(revokedIndex, true);
const listCredential = await bsl.createCredential({ id: listURL, list, statusPurpose: 'revocation' });
const statusList = await new jose.SignJWT({ ...listCredential, issuer })
  .setProtectedHeader({ alg: 'EdDSA', typ: 'vc+jwt', kid })
  .setIssuer(issuer)
  .setJti(listURL)
  .setIssuedAt(now - 3600)
  .setExpirationTime(now + 86400)
  .sign(privateKey);

function credential({ index = 3, digestOf = args } = {}) {
  const id = 'urn:uuid:0f6b0c4e-5c2d-4f7a-9a51-3c2e1b0d9e8f';
  return {
    '@context': ['https://www.w3.org/ns/credentials/v2'],
    id,
    type: ['VerifiableCredential', 'InterlockActionCredential'],
    issuer,
    validFrom: new Date((now - 60) * 1000).toISOString(),
    validUntil: new Date((now + 240) * 1000).toISOString(),
    credentialSubject: {
      agent: { id: 'agent-7', owner: 'alice@example.com' },
      action: {
        upstream: 'acme',
        tool: 'pay',
        arguments_digest: digest(digestOf),
        constraints: { max_amount: 500, uses: 1 },
      },
      authorization: [{ kind: 'policy', rule: 'small-payments' }],
    },
    credentialStatus: {
      id: `${listURL}#${index}`,
      type: 'BitstringStatusListEntry',
      statusPurpose: 'revocation',
      statusListIndex: String(index),
      statusListCredential: listURL,
    },
  };
}

// sign signs a credential with SignJWT; claims override the registered
// claims, header the protected header.
async function sign(vc, { claims = {}, header = {}, key = privateKey } = {}) {
  const payload = { iss: issuer, jti: vc.id, iat: now - 60, nbf: now - 60, exp: now + 240, ...vc, ...claims };
  return new jose.SignJWT(payload)
    .setProtectedHeader({ alg: 'EdDSA', typ: 'vc+jwt', cty: 'vc', kid, ...header })
    .sign(key);
}

// compactSign signs the same with the lower-level CompactSign.
async function compactSign(vc) {
  const payload = { iss: issuer, jti: vc.id, iat: now - 60, nbf: now - 60, exp: now + 240, ...vc };
  return new jose.CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader({ alg: 'EdDSA', typ: 'vc+jwt', cty: 'vc', kid })
    .sign(privateKey);
}

const expired = credential();
expired.validUntil = new Date((now - 3600) * 1000).toISOString();
const early = credential();
early.validFrom = new Date((now + 3600) * 1000).toISOString();

const fixtures = [
  { name: 'valid (SignJWT)', token: await sign(credential()), want: '' },
  { name: 'valid (CompactSign)', token: await compactSign(credential()), want: '' },
  {
    name: 'alg none',
    token: new jose.UnsecuredJWT({ iss: issuer, jti: credential().id, exp: now + 240, ...credential() }).encode(),
    want: 'ErrAlgorithm',
  },
  { name: 'wrong typ', token: await sign(credential(), { header: { typ: 'JWT' } }), want: 'ErrType' },
  { name: 'vc claim', token: await sign(credential(), { claims: { vc: credential() } }), want: 'ErrVCClaim' },
  { name: 'iss is not the issuer', token: await sign(credential(), { claims: { iss: 'https://evil.example' } }), want: 'ErrIssuer' },
  { name: 'expired', token: await sign(expired, { claims: { exp: now - 3600 } }), want: 'ErrExpired' },
  { name: 'not yet valid', token: await sign(early, { claims: { nbf: now + 3600 } }), want: 'ErrNotYetValid' },
  { name: 'unknown kid', token: await sign(credential(), { header: { kid: 'jose-2' }, key: other.privateKey }), want: 'ErrUnknownKey' },
  { name: 'wrong arguments digest', token: await sign(credential({ digestOf: { ...args, amount: 99999 } })), want: 'ErrMismatch' },
  { name: 'revoked', token: await sign(credential({ index: revokedIndex })), want: 'ErrRevoked' },
];

process.stdout.write(JSON.stringify({ jwks: { keys: [jwk] }, statusList, revokedIndex, digest: digest(args), fixtures }));
