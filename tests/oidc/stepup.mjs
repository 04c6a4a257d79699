// A real OpenID provider for tests/stepup_oidc.rs (RFC 9470 step-up): oidc-provider on
// 127.0.0.1:PORT (issuer http://127.0.0.1:PORT; PORT 0 picks a free port) with one confidential
// client using the authorization code grant (PKCE), and JWT access tokens (RFC 9068, typ
// "at+jwt", ES256) for the resource "urn:jwtgate:api" (aud "jwtgate-api") that carry the
// user's authentication: `auth_time` and `acr` of the login that the code came from.
//
//   node stepup.mjs PORT
//
// Prints "ready <port>" once listening. Reads commands from stdin, one per line:
//   login ACR AGE   a user ("alice") logs in with authentication class ACR, AGE seconds ago
//                   (the login's own timestamp, as a provider records it); the script runs
//                   the whole authorization code flow against the provider over HTTP and
//                   prints "token <access token>", or "error <message>".
// The login interaction is answered by the script instead of a login page: the provider's
// own interaction API (interactionDetails / interactionFinished) records the login.
// Exits when stdin closes (so the test's child never outlives it).

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as readline from 'node:readline';

import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

import { RESOURCE, resourceIndicators } from './resource.mjs';

const CLIENT_ID = 'jwtgate-stepup-client';
const CLIENT_SECRET = 'jwtgate-stepup-secret-that-is-long-enough';
const REDIRECT_URI = 'http://127.0.0.1/callback';

const wanted = Number(process.argv[2] ?? '0');
if (!Number.isInteger(wanted) || wanted < 0 || wanted > 65535) {
  console.error('usage: node stepup.mjs [PORT]');
  process.exit(2);
}

// What the next interaction records as the login: set by the `login` command.
let pendingLogin = null;

const { privateKey } = await generateKeyPair('ES256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: 'stepup-key', alg: 'ES256', use: 'sig' };

const server = http.createServer((req, res) => handler(req, res));
let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
await new Promise((resolve) => {
  server.listen(wanted, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  jwks: { keys: [jwk] },
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['authorization_code'],
      redirect_uris: [REDIRECT_URI],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'openid api:read',
    },
  ],
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  enabledJWA: { idTokenSigningAlgValues: ['ES256'] },
  scopes: ['openid', 'api:read'],
  acrValues: ['pwd', 'mfa', 'phr'],
  cookies: { keys: ['jwtgate-stepup-test-cookie-key'] },
  features: {
    devInteractions: { enabled: false },
    resourceIndicators: resourceIndicators(Provider),
  },
  // The access token carries the authentication its code was issued for (RFC 9470 §4).
  extraTokenClaims: async (ctx) => {
    const code = ctx.oidc.entities.AuthorizationCode;
    if (!code) return undefined;
    return { auth_time: code.authTime, acr: code.acr };
  },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));
const callback = provider.callback();

handler = async (req, res) => {
  if (!req.url.startsWith('/interaction/')) {
    callback(req, res);
    return;
  }
  try {
    // Reads (and checks) the interaction the provider started for this browser.
    await provider.interactionDetails(req, res);
    const login = pendingLogin;
    if (!login) throw new Error('no login pending');
    const grant = new provider.Grant({ accountId: 'alice', clientId: CLIENT_ID });
    grant.addOIDCScope('openid api:read');
    grant.addResourceScope(RESOURCE, 'api:read');
    const grantId = await grant.save();
    await provider.interactionFinished(
      req,
      res,
      {
        login: { accountId: 'alice', acr: login.acr, amr: ['pwd'], ts: login.ts },
        consent: { grantId },
      },
      { mergeWithLastSubmission: false },
    );
  } catch (e) {
    console.error('interaction failed', e);
    res.statusCode = 500;
    res.end(String(e));
  }
};

console.log(`ready ${port}`);

// A cookie jar good enough for one flow: name=value of every Set-Cookie, sent everywhere.
function remember(jar, res) {
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const eq = pair.indexOf('=');
    jar.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
}

function cookieHeader(jar) {
  return [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
}

async function login(acr, ageSecs) {
  pendingLogin = { acr, ts: Math.floor(Date.now() / 1000) - ageSecs };
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const auth = new URL(`${issuer}/auth`);
  auth.search = new URLSearchParams({
    client_id: CLIENT_ID,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope: 'openid api:read',
    resource: RESOURCE,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: crypto.randomBytes(8).toString('hex'),
  }).toString();
  const jar = new Map();
  let url = auth.toString();
  // Follow the redirects (auth -> interaction -> auth resume -> client callback) by hand,
  // carrying cookies, until the provider sends the browser to the redirect_uri.
  for (let hops = 0; hops < 10; hops += 1) {
    const res = await fetch(url, { redirect: 'manual', headers: { cookie: cookieHeader(jar) } });
    remember(jar, res);
    const location = res.headers.get('location');
    if (!location) throw new Error(`${url}: ${res.status} without a redirect: ${await res.text()}`);
    const next = new URL(location, url);
    if (next.toString().startsWith(REDIRECT_URI)) {
      const code = next.searchParams.get('code');
      if (!code) throw new Error(`no code: ${next}`);
      const basic = Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64');
      const token = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'authorization_code',
          code,
          redirect_uri: REDIRECT_URI,
          code_verifier: verifier,
          resource: RESOURCE,
        }).toString(),
      });
      const body = await token.json();
      if (!body.access_token) throw new Error(`token endpoint: ${JSON.stringify(body)}`);
      return body.access_token;
    }
    url = next.toString();
  }
  throw new Error('too many redirects');
}

// One login at a time: each sets the login the next interaction records.
let queue = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const [cmd, acr, age] = line.trim().split(/\s+/);
  if (cmd !== 'login') return;
  queue = queue.then(async () => {
    try {
      console.log(`token ${await login(acr, Number(age))}`);
    } catch (e) {
      console.log(`error ${String(e.message ?? e).replace(/\s+/g, ' ')}`);
    }
  });
});
rl.on('close', () => {
  server.close();
  process.exit(0);
});
