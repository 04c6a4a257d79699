// A real client of sender-constrained tokens for tests/dpop.rs and tests/cert_bound.rs:
// openid-client (token requests, protected resource requests, DPoP nonce retry) and dpop
// (proofs made outside a request), against the provider of bound.mjs and through jwtgate.
//
//   node bound_client.mjs MODE ISSUER URL CERTS_DIR
//
// Prints one JSON object on stdout.
//   dpop        a DPoP-bound token (client "dpop-client"), then GET URL twice through
//               openid-client's fetchProtectedResource with fresh proofs:
//               {"token", "cnf", "answers": [{"status", "body", "www", "nonce"}, ...]}
//   dpop-ed25519  the same with an Ed25519 key (proofs with alg "Ed25519", RFC 9864)
//   dpop-token  a DPoP-bound token and proofs made with npm `dpop` for URL:
//               {"token", "cnf", "get", "post", "other_key", "other_url"}
//   mtls        a certificate-bound token (client "mtls-client") fetched over mTLS with
//               CERTS_DIR/client.crt, then GET URL over mTLS with the same certificate:
//               {"token", "cnf", "answers": [{"status", "body", "www"}]}

import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';

import * as client from 'openid-client';
import * as DPoP from 'dpop';

import { RESOURCE } from './resource.mjs';

const SECRET = 'jwtgate-test-secret-that-is-long-enough';

const [mode, issuer, url, certs] = process.argv.slice(2);
if (!mode || !issuer || !url || !certs) {
  console.error('usage: node bound_client.mjs MODE ISSUER URL CERTS_DIR');
  process.exit(2);
}
const read = (name) => fs.readFileSync(path.join(certs, name));

function claimsOf(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
}

// fetch over node's http/https with the dev CA and, for mTLS, the dev client certificate:
// the platform fetch cannot present a client certificate.
function mtlsFetch(target, options = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(target);
    const headers = {};
    new Headers(options.headers).forEach((v, k) => {
      headers[k] = v;
    });
    const tls = u.protocol === 'https:'
      ? { ca: read('dev-ca.crt'), cert: read('client.crt'), key: read('client.key') }
      : {};
    const req = (u.protocol === 'https:' ? https : http).request(
      u,
      { method: options.method ?? 'GET', headers, ...tls },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const h = new Headers();
          for (const [k, v] of Object.entries(res.headers)) {
            for (const one of Array.isArray(v) ? v : [v]) h.append(k, one);
          }
          resolve(new Response(Buffer.concat(chunks), { status: res.statusCode, headers: h }));
        });
      },
    );
    req.on('error', reject);
    const body = options.body;
    req.end(body === undefined || body === null ? undefined : String(body));
  });
}

async function answerOf(run) {
  try {
    const res = await run();
    return {
      status: res.status,
      body: await res.text(),
      www: res.headers.get('www-authenticate'),
      nonce: res.headers.get('dpop-nonce'),
    };
  } catch (err) {
    // openid-client throws on a 401 with a challenge: report it like an answer.
    const res = err.response;
    return {
      status: res?.status ?? err.status ?? 0,
      body: res ? await res.text().catch(() => '') : String(err),
      www: res?.headers.get('www-authenticate') ?? null,
      nonce: res?.headers.get('dpop-nonce') ?? null,
      error: err.message,
    };
  }
}

const server = new URL(issuer);
const params = { resource: RESOURCE, scope: 'api:read' };

if (mode === 'dpop' || mode === 'dpop-ed25519' || mode === 'dpop-token') {
  const config = await client.discovery(server, 'dpop-client', SECRET, client.ClientSecretBasic(SECRET), {
    execute: [client.allowInsecureRequests],
  });
  const keyPair = await client.randomDPoPKeyPair(mode === 'dpop-ed25519' ? 'Ed25519' : 'ES256');
  const handle = client.getDPoPHandle(config, keyPair);
  const tokens = await client.clientCredentialsGrant(config, params, { DPoP: handle });
  const token = tokens.access_token;
  const out = { token, cnf: claimsOf(token).cnf ?? null };
  if (mode !== 'dpop-token') {
    out.answers = [];
    for (let i = 0; i < 2; i += 1) {
      out.answers.push(
        await answerOf(() => client.fetchProtectedResource(config, token, new URL(url), 'GET', undefined, undefined, { DPoP: handle })),
      );
    }
  } else {
    const other = await DPoP.generateKeyPair('ES256');
    out.get = await DPoP.generateProof(keyPair, url, 'GET', undefined, token);
    out.post = await DPoP.generateProof(keyPair, url, 'POST', undefined, token);
    out.other_key = await DPoP.generateProof(other, url, 'GET', undefined, token);
    out.other_url = await DPoP.generateProof(keyPair, `${url}/elsewhere`, 'GET', undefined, token);
  }
  console.log(JSON.stringify(out));
} else if (mode === 'mtls') {
  const config = await client.discovery(
    server,
    'mtls-client',
    { use_mtls_endpoint_aliases: true },
    client.ClientSecretBasic(SECRET),
    { execute: [client.allowInsecureRequests] },
  );
  config[client.customFetch] = mtlsFetch;
  const tokens = await client.clientCredentialsGrant(config, params);
  const token = tokens.access_token;
  const answers = [
    await answerOf(() => client.fetchProtectedResource(config, token, new URL(url), 'GET')),
  ];
  console.log(JSON.stringify({ token, cnf: claimsOf(token).cnf ?? null, answers }));
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
