// A real OpenID provider for tests/sessions.rs (browser sessions): oidc-provider on
// 127.0.0.1 (issuer http://127.0.0.1:PORT) with one confidential web client of the gateway at
// ORIGIN: authorization code flow with PKCE required, refresh-token rotation on every use,
// short-lived RFC 9068 JWT access tokens (aud "jwtgate-api", scope "api:read"), RP-initiated
// logout, back-channel logout to ORIGIN/.jwtgate/backchannel-logout, and RFC 7009 revocation.
// The login form is oidc-provider's own (devInteractions: any login, any password); consent is
// granted without a page. The account "big" gets a 4.5 kB claim in its access tokens (for the
// "session too large" page).
//
//   node session-provider.mjs ORIGIN ACCESS_TOKEN_TTL_SECONDS
//
// Prints "ready <port>" once listening; exits when stdin closes. Set NODE_EXTRA_CA_CERTS to
// the gateway's CA so back-channel calls to its https origin are trusted.

import * as http from 'node:http';
import * as readline from 'node:readline';

import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

import { RESOURCE, resourceIndicators } from './resource.mjs';

const CLIENT_ID = 'jwtgate-web';
const CLIENT_SECRET = 'jwtgate-web-secret-that-is-long-enough';

const origin = process.argv[2];
const ttl = Number(process.argv[3] ?? '300');
if (!origin || !Number.isInteger(ttl) || ttl <= 0) {
  console.error('usage: node session-provider.mjs ORIGIN ACCESS_TOKEN_TTL_SECONDS');
  process.exit(2);
}

const { privateKey } = await generateKeyPair('ES256', { extractable: true });
const key = { ...(await exportJWK(privateKey)), kid: 'session-key', alg: 'ES256', use: 'sig' };

const server = http.createServer((req, res) => handler(req, res));
let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
await new Promise((resolve) => {
  server.listen(0, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  jwks: { keys: [key] },
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: [`${origin}/.jwtgate/callback`],
      post_logout_redirect_uris: [`${origin}/`],
      backchannel_logout_uri: `${origin}/.jwtgate/backchannel-logout`,
      backchannel_logout_session_required: true,
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
    },
  ],
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  enabledJWA: { idTokenSigningAlgValues: ['ES256'] },
  scopes: ['openid', 'email', 'offline_access', 'api:read'],
  claims: { openid: ['sub'], email: ['email'] },
  cookies: { keys: ['jwtgate-session-test-cookie-key'] },
  pkce: { required: () => true },
  ttl: { IdToken: 3600, RefreshToken: 86400, Session: 86400, Grant: 86400 },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.test` };
      },
    };
  },
  // Refresh tokens without `prompt=consent` (which oidc-provider otherwise requires for
  // offline_access), rotated on every use.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  // Consent without a page: the gateway's client is first-party.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const found = await ctx.oidc.provider.Grant.find(grantId);
      if (found) return found;
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email offline_access api:read');
    grant.addResourceScope(RESOURCE, 'api:read');
    await grant.save();
    return grant;
  },
  async extraTokenClaims(_ctx, token) {
    return token.accountId === 'big' ? { filler: 'x'.repeat(4500) } : undefined;
  },
  // oidc-provider refuses outgoing calls to special-use addresses (SSRF protection); the
  // gateway under test listens on 127.0.0.1.
  fetch: (url, options) => {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: resourceIndicators(Provider, ttl),
  },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));
provider.on('backchannel.error', (_client, err) => console.error('backchannel.error', err));
provider.on('backchannel.success', () => console.log('backchannel sent'));
handler = provider.callback();
console.log(`ready ${port}`);

const rl = readline.createInterface({ input: process.stdin });
rl.on('close', () => {
  server.close();
  process.exit(0);
});
