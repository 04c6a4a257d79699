// A real OpenID provider issuing sender-constrained access tokens, for tests/dpop.rs and
// tests/cert_bound.rs: oidc-provider with its dPoP feature (DPoP-bound tokens, cnf.jkt) and
// its mTLS feature with certificateBoundAccessTokens (cnf.x5t#S256), the client_credentials
// grant, and JWT access tokens (RFC 9068) for the resource "urn:jwtgate:api" (aud
// "jwtgate-api"), signed ES256.
//
//   node bound.mjs CERTS_DIR
//
// Listens on two ports of 127.0.0.1: plain HTTP (the issuer, discovery, JWKS, token endpoint)
// and HTTPS asking for a client certificate (the mTLS alias of the token endpoint, published in
// discovery's mtls_endpoint_aliases), with CERTS_DIR/server.crt and the client CA
// CERTS_DIR/dev-ca.crt. Prints "ready <http port> <https port>" once listening; exits when
// stdin closes.
//
// Clients (secret "jwtgate-test-secret-that-is-long-enough", client_secret_basic):
//   dpop-client   dpop_bound_access_tokens: every token is DPoP-bound
//   mtls-client   tls_client_certificate_bound_access_tokens: every token is bound to the
//                 certificate presented at the token endpoint

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import * as readline from 'node:readline';

import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

import { resourceIndicators } from './resource.mjs';

const SECRET = 'jwtgate-test-secret-that-is-long-enough';

const certs = process.argv[2];
if (!certs) {
  console.error('usage: node bound.mjs CERTS_DIR');
  process.exit(2);
}
const read = (name) => fs.readFileSync(path.join(certs, name));

const { privateKey } = await generateKeyPair('ES256', { extractable: true });
const signing = { ...(await exportJWK(privateKey)), kid: 'bound-key', alg: 'ES256', use: 'sig' };

let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
const plain = http.createServer((req, res) => handler(req, res));
const mutual = https.createServer(
  {
    cert: read('server.crt'),
    key: read('server.key'),
    ca: read('dev-ca.crt'),
    // Asked for, verified against the CA when sent; the provider decides what it needs.
    requestCert: true,
    rejectUnauthorized: false,
  },
  (req, res) => handler(req, res),
);
const listen = (server) => new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
await listen(plain);
await listen(mutual);
const httpPort = plain.address().port;
const httpsPort = mutual.address().port;
const issuer = `http://127.0.0.1:${httpPort}`;

const client = (id, extra) => ({
  client_id: id,
  client_secret: SECRET,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: 'client_secret_basic',
  scope: 'api:read',
  ...extra,
});

const provider = new Provider(issuer, {
  jwks: { keys: [signing] },
  clients: [
    client('dpop-client', { dpop_bound_access_tokens: true }),
    client('mtls-client', { tls_client_certificate_bound_access_tokens: true }),
  ],
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  enabledJWA: { idTokenSigningAlgValues: ['ES256'], dPoPSigningAlgValues: ['ES256', 'EdDSA', 'Ed25519'] },
  scopes: ['api:read'],
  cookies: { keys: ['jwtgate-oidc-test-cookie-key'] },
  discovery: { mtls_endpoint_aliases: { token_endpoint: `https://127.0.0.1:${httpsPort}/token` } },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    dPoP: { enabled: true },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      // The certificate of this very TLS connection (verified by the server against the CA).
      getCertificate(ctx) {
        const socket = ctx.req.socket;
        if (!socket.authorized || typeof socket.getPeerCertificate !== 'function') {
          return undefined;
        }
        const peer = socket.getPeerCertificate(false);
        return peer && peer.raw ? new crypto.X509Certificate(peer.raw) : undefined;
      },
      certificateAuthorized: (ctx) => ctx.req.socket.authorized === true,
      certificateSubjectMatches: () => false,
    },
    resourceIndicators: resourceIndicators(Provider),
  },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));
handler = provider.callback();
console.log(`ready ${httpPort} ${httpsPort}`);

const rl = readline.createInterface({ input: process.stdin });
rl.on('close', () => {
  plain.close();
  mutual.close();
  process.exit(0);
});
