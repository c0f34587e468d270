// Independent CIBA client for interlock's e2e tests: openid-client (npm,
// panva) discovers interlock as an OpenID Provider, starts a backchannel
// authentication request for one tool call (RFC 9396
// authorization_details of type interlock_tool_call) and polls the token
// endpoint (poll mode) or waits for interlock's ping on a tiny local
// notification endpoint first (ping mode).
//
// Usage: node ciba_client.mjs OPTIONS_JSON
//   {issuer, client_id, secret, auth: "post"|"basic"|"private_key_jwt",
//    private_jwk?, details, login_hint?, binding_message?, requested_expiry?,
//    ping_port?, notification_token?, force_slow_down?}
// With auth "private_key_jwt" the client authenticates with
// client.PrivateKeyJwt and private_jwk (a private JWK, e.g. the file
// `interlock agents keygen` writes), imported with jose; the assertion's
// alg is the JWK's alg (openid-client would name an Ed25519 key "Ed25519",
// RFC 9864; interlock takes "EdDSA").
// Prints JSON: {ok, ack?, ping?, access_token?, token_type?, expires_in?,
//   authorization_details?, error?, status?, description?, polls: [...]}
import http from 'node:http';
import { load } from '../../../verify/testdata/peers.mjs';

const client = await load('openid-client');
const jose = await load('jose');
const opts = JSON.parse(process.argv[2]);
const out = { polls: [] };

// Every token endpoint answer is recorded (code and time); with
// force_slow_down the first poll is sent twice in a row, so that the
// second comes sooner than the interval.
let duplicated = false;
async function recordingFetch(url, init) {
  const isToken = String(url).endsWith('/oauth/token');
  if (isToken && opts.force_slow_down && !duplicated) {
    duplicated = true;
    const early = await fetch(url, { ...init, body: new URLSearchParams(init.body) });
    const body = await early.json();
    out.polls.push({ at: Date.now(), status: early.status, error: body.error ?? 'ok', copy: true });
  }
  const res = await fetch(url, init);
  if (isToken) {
    const body = await res.clone().json().catch(() => ({}));
    out.polls.push({ at: Date.now(), status: res.status, error: body.error ?? 'ok' });
  }
  return res;
}

let server;
let pinged;
if (opts.ping_port) {
  pinged = new Promise((resolve) => {
    server = http.createServer((req, res) => {
      let data = '';
      req.on('data', (c) => { data += c; });
      req.on('end', () => {
        if (req.method !== 'POST' || req.url !== '/cb' || req.headers.authorization !== `Bearer ${opts.notification_token}`) {
          res.writeHead(401).end();
          return;
        }
        res.writeHead(204).end();
        resolve({ body: JSON.parse(data), content_type: req.headers['content-type'] });
      });
    });
  });
  await new Promise((r) => server.listen(opts.ping_port, '127.0.0.1', r));
}

try {
  let auth = opts.auth === 'basic' ? client.ClientSecretBasic(opts.secret) : undefined;
  let secret = opts.secret;
  if (opts.auth === 'private_key_jwt') {
    const jwk = opts.private_jwk;
    const key = await jose.importJWK(jwk, jwk.alg);
    auth = client.PrivateKeyJwt({ key, kid: jwk.kid }, {
      [client.modifyAssertion]: (header) => { if (jwk.alg) header.alg = jwk.alg; },
    });
    secret = undefined;
  }
  const config = await client.discovery(new URL(opts.issuer), opts.client_id, secret, auth, {
    execute: [client.allowInsecureRequests],
  });
  config[client.customFetch] = recordingFetch;
  const md = config.serverMetadata();
  out.discovered = {
    backchannel: md.backchannel_authentication_endpoint,
    modes: md.backchannel_token_delivery_modes_supported,
  };
  const params = { scope: 'openid', authorization_details: JSON.stringify(opts.details) };
  for (const k of ['login_hint', 'binding_message', 'requested_expiry']) {
    if (opts[k] !== undefined) params[k] = String(opts[k]);
  }
  if (opts.notification_token) params.client_notification_token = opts.notification_token;
  const ack = await client.initiateBackchannelAuthentication(config, params);
  out.ack = { auth_req_id: ack.auth_req_id, expires_in: ack.expires_in, interval: ack.interval };
  let pollWith = ack;
  if (pinged) {
    out.ping = await Promise.race([pinged, new Promise((_, rej) => setTimeout(() => rej(new Error('no ping in 60 s')), 60000))]);
    pollWith = { ...ack, interval: 0 }; // the result is ready: ask once, now
  }
  const tokens = await client.pollBackchannelAuthenticationGrant(config, pollWith, undefined, {
    signal: AbortSignal.timeout(60000), // beyond expires_in, to hear expired_token from the OP
  });
  out.ok = true;
  out.access_token = tokens.access_token;
  out.token_type = tokens.token_type;
  out.expires_in = tokens.expires_in;
  out.authorization_details = tokens.authorization_details;
} catch (err) {
  out.ok = false;
  out.name = err.name;
  out.message = err.message;
  out.error = err.error ?? err.code;
  out.status = err.status ?? err.response?.status;
  out.description = err.error_description;
  if (err.cause && Array.isArray(err.cause)) out.challenges = err.cause.map((c) => c.scheme);
  else if (err.cause) out.cause = JSON.stringify(err.cause).slice(0, 500);
}
server?.close();
process.stdout.write(JSON.stringify(out));
process.exit(0);
