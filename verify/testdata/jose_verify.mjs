// Independent peer for the verify package: jose verifies a credential built
// by the Go test, through the JWKS the test serves, with typ vc+jwt; then
// @digitalbazaar/vc-bitstring-status-list reads the credential's bit in the
// status list, and the arguments digest is recomputed.
//
// Usage: node jose_verify.mjs ISSUER NOW_SECONDS ARGUMENTS_JSON < TOKEN
// Prints JSON: {ok, error?, header, payload, revoked, digest}.
import { readFileSync } from 'node:fs';
import { load, digest } from './peers.mjs';

const jose = await load('jose');
const bsl = await load('@digitalbazaar/vc-bitstring-status-list');

const [issuer, nowArg, argsJSON] = process.argv.slice(2);
const currentDate = new Date(Number(nowArg) * 1000);
const token = readFileSync(0, 'utf8').trim();
const JWKS = jose.createRemoteJWKSet(new URL(`${issuer}/.well-known/jwks.json`));

const out = { digest: digest(JSON.parse(argsJSON)) };
try {
  const { payload, protectedHeader } = await jose.jwtVerify(token, JWKS, { typ: 'vc+jwt', issuer, currentDate });
  out.ok = true;
  out.header = protectedHeader;
  out.payload = payload;
  const status = payload.credentialStatus;
  const res = await fetch(status.statusListCredential);
  const listJWT = (await res.text()).trim();
  const list = await jose.jwtVerify(listJWT, JWKS, { typ: 'vc+jwt', issuer, currentDate });
  const decoded = await bsl.decodeList({ encodedList: list.payload.credentialSubject.encodedList });
  out.revoked = decoded.getStatus(Number(status.statusListIndex));
} catch (err) {
  out.ok = false;
  out.error = `${err.code ?? ''} ${err.message}`;
}
process.stdout.write(JSON.stringify(out));
