// A real OpenID provider for tests/oidc.rs: oidc-provider on 127.0.0.1:PORT (issuer
// http://127.0.0.1:PORT; PORT 0 picks a free port), one confidential client using the client_credentials grant, and JWT
// access tokens (RFC 9068, typ "at+jwt") for the resource "urn:jwtgate:api" (aud "jwtgate-api",
// scope "api:read"), signed ES256 with keys generated at start.
//
//   node provider.mjs PORT
//
// Prints "ready <port> <kid>" on stdout once listening. Reads commands from stdin, one per line:
//   rotate   generates a new key, publishes [new, old] and signs with the new one from then
//            on; prints "rotated <kid>" once the new provider serves.
// Exits when stdin closes (so the test's child never outlives it).

import * as http from 'node:http';
import * as readline from 'node:readline';

import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

import { resourceIndicators } from './resource.mjs';

const CLIENT_ID = 'jwtgate-test-client';
const CLIENT_SECRET = 'jwtgate-test-secret-that-is-long-enough';

const wanted = Number(process.argv[2] ?? '0');
if (!Number.isInteger(wanted) || wanted < 0 || wanted > 65535) {
  console.error('usage: node provider.mjs [PORT]');
  process.exit(2);
}

async function newKey(kid) {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg: 'ES256', use: 'sig' };
}

function build(issuer, keys) {
  const provider = new Provider(issuer, {
    // The first key is the one oidc-provider picks to sign with.
    jwks: { keys },
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
        scope: 'api:read',
        id_token_signed_response_alg: 'ES256',
      },
    ],
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    enabledJWA: { idTokenSigningAlgValues: ['ES256'] },
    scopes: ['api:read'],
    cookies: { keys: ['jwtgate-oidc-test-cookie-key'] },
    ttl: { ClientCredentials: 300 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: resourceIndicators(Provider),
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  return provider;
}

let keys = [await newKey('key-a')];
let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
let next = 'b';

// Listen first, so that port 0 can be resolved before the issuer URL is fixed.
const server = http.createServer((req, res) => handler(req, res));
await new Promise((resolve) => {
  server.listen(wanted, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;
handler = build(issuer, keys).callback();
console.log(`ready ${port} ${keys[0].kid}`);

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  if (line.trim() === 'rotate') {
    const key = await newKey(`key-${next}`);
    next = String.fromCharCode(next.charCodeAt(0) + 1);
    keys = [key, ...keys];
    handler = build(issuer, keys).callback();
    console.log(`rotated ${key.kid}`);
  }
});
rl.on('close', () => {
  server.close();
  process.exit(0);
});
