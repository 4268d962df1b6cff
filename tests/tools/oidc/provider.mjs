#!/usr/bin/env node
// A real OpenID provider (oidc-provider 9) for the gateway's black-box tests.
//
//   node provider.mjs CONFIG.json
//
// Listens on 127.0.0.1 on an OS-assigned port over plain HTTP. When ready it prints exactly one
// line to stdout, {"issuer":"http://127.0.0.1:PORT"}; everything else goes to stderr. It exits
// when its stdin reaches EOF (the test holds the pipe) and on SIGTERM / SIGINT.
// See README.md beside this file for the config shape and the test-only endpoints.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

// oidc-provider prints its notices with console.info, which is stdout: keep stdout for the
// single issuer line and send every console line to stderr.
for (const name of ['log', 'info', 'debug']) {
  console[name] = (...args) => console.error(...args);
}

const { default: Provider, errors } = await import('oidc-provider');

function die(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Configuration file

if (process.argv.length !== 3) {
  die('usage: node provider.mjs CONFIG.json');
}

let config;
try {
  config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
} catch (err) {
  die(`cannot read config ${process.argv[2]}: ${err.message}`);
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
if (!isObject(config)) die('config must be a JSON object');
const { audience } = config;
if (typeof audience !== 'string' || !URL.canParse(audience)) die('config.audience must be an absolute URI');
if (!Array.isArray(config.clients) || config.clients.length === 0) die('config.clients must be a non-empty array');
const accounts = config.accounts ?? {};
if (!isObject(accounts)) die('config.accounts must be an object keyed by account id');
const accessTokenTTL = config.access_token_ttl ?? 3600;
if (!Number.isSafeInteger(accessTokenTTL) || accessTokenTTL <= 0) die('config.access_token_ttl must be a positive integer');

const splitScope = (s) => (typeof s === 'string' ? s.split(' ').filter(Boolean) : []);

// Scopes whose meaning is OpenID Connect claims rather than resource access.
const OIDC_SCOPES = ['openid', 'offline_access', 'profile'];

const allScopes = new Set(OIDC_SCOPES);
const clientClaims = new Map(); // client_id -> extra access-token claims (backend clients)
const clients = config.clients.map((c, i) => {
  if (!isObject(c) || typeof c.client_id !== 'string' || !c.client_id) die(`config.clients[${i}].client_id must be a non-empty string`);
  if (typeof c.scope !== 'string' || !c.scope.trim()) die(`config.clients[${i}].scope must be a non-empty string`);
  const scope = splitScope(c.scope);
  scope.forEach((s) => allScopes.add(s));
  switch (c.type) {
    case 'backend': {
      if (!isObject(c.jwks) || !Array.isArray(c.jwks.keys) || c.jwks.keys.length === 0) {
        die(`config.clients[${i}] (backend) needs jwks.keys`);
      }
      if (c.claims !== undefined && !isObject(c.claims)) die(`config.clients[${i}].claims must be an object`);
      clientClaims.set(c.client_id, c.claims ?? {});
      return {
        client_id: c.client_id,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'private_key_jwt',
        jwks: c.jwks,
        scope: scope.join(' '),
      };
    }
    case 'public': {
      if (!Array.isArray(c.redirect_uris) || c.redirect_uris.length === 0) {
        die(`config.clients[${i}] (public) needs redirect_uris`);
      }
      clientClaims.set(c.client_id, {});
      return {
        client_id: c.client_id,
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: c.redirect_uris,
        token_endpoint_auth_method: 'none',
        scope: scope.join(' '),
      };
    }
    case 'confidential': {
      // A web application's backend (the gateway's portal): authorization code + PKCE, and
      // private_key_jwt at the token endpoint.
      if (!Array.isArray(c.redirect_uris) || c.redirect_uris.length === 0) {
        die(`config.clients[${i}] (confidential) needs redirect_uris`);
      }
      if (!isObject(c.jwks) || !Array.isArray(c.jwks.keys) || c.jwks.keys.length === 0) {
        die(`config.clients[${i}] (confidential) needs jwks.keys`);
      }
      clientClaims.set(c.client_id, {});
      return {
        client_id: c.client_id,
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: c.redirect_uris,
        token_endpoint_auth_method: 'private_key_jwt',
        jwks: c.jwks,
        scope: scope.join(' '),
      };
    }
    default:
      return die(`config.clients[${i}].type must be "backend", "public" or "confidential"`);
  }
});

for (const [id, claims] of Object.entries(accounts)) {
  if (!isObject(claims)) die(`config.accounts.${id} must be an object of claims`);
}
// Every claim any account has is released under the `profile` scope (id token / userinfo).
const accountClaimNames = new Set(['name', 'given_name', 'family_name', 'birthdate', 'gender']);
Object.values(accounts).forEach((claims) => Object.keys(claims).forEach((k) => accountClaimNames.add(k)));
['sub', 'iss', 'aud', 'exp', 'iat', 'jti', 'scope', 'client_id'].forEach((k) => accountClaimNames.delete(k));

// The resource server (the gateway) accepts every configured scope.
const resourceServerScope = [...allScopes].join(' ');

// ---------------------------------------------------------------------------------------------
// Provider

const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `test-${crypto.randomBytes(8).toString('hex')}`, use: 'sig', alg: 'RS256' };
}

async function findAccount(_ctx, sub) {
  if (!Object.hasOwn(accounts, sub)) return undefined;
  return {
    accountId: sub,
    async claims() {
      return { ...accounts[sub], sub };
    },
  };
}

function buildConfiguration(signingJwk) {
  return {
    clients: structuredClone(clients),
    scopes: [...allScopes],
    claims: {
      openid: ['sub'],
      profile: [...accountClaimNames],
    },
    responseTypes: ['code'],
    pkce: { required: () => true },
    cookies: { keys: cookieKeys },
    jwks: { keys: [signingJwk] },
    findAccount,
    clientBasedCORS: () => false,
    clientAuthMethods: ['private_key_jwt', 'none'],
    enabledJWA: {
      clientAuthSigningAlgValues: ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'ES256', 'ES384'],
    },
    features: {
      devInteractions: { enabled: false }, // our own login/consent pages below
      dPoP: { enabled: false }, // plain Bearer tokens only
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => {
          if (Array.isArray(oneOf) && oneOf.length) return oneOf.includes(audience) ? audience : oneOf[0];
          return audience;
        },
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resourceIndicator) => {
          if (resourceIndicator !== audience) throw new errors.InvalidTarget();
          return {
            scope: resourceServerScope,
            audience,
            accessTokenTTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: async (_ctx, token) => {
      if (token.accountId) {
        return Object.hasOwn(accounts, token.accountId) ? { ...accounts[token.accountId] } : undefined;
      }
      return { ...(clientClaims.get(token.clientId) ?? {}) };
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: {
      AccessToken: accessTokenTTL,
      ClientCredentials: accessTokenTTL,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 3600,
      Session: 3600,
      Grant: 3600,
      RefreshToken: 3600,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  };
}

let server;
let issuer;
let current; // { provider, handler, kid }

function startProvider() {
  const jwk = newSigningKey();
  const provider = new Provider(issuer, buildConfiguration(jwk));
  provider.on('server_error', (_ctx, err) => process.stderr.write(`provider.mjs: server_error: ${err?.stack ?? err}\n`));
  current = { provider, handler: provider.callback(), kid: jwk.kid };
  return jwk.kid;
}

// ---------------------------------------------------------------------------------------------
// Login / consent pages (instead of devInteractions, so that unknown accounts are refused)

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, title, body) {
  const html = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head>`
    + `<body><h1>${esc(title)}</h1>${body}</body></html>`;
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

function loginPage(res, status, uid, params, message) {
  page(res, status, 'Sign-in', `${message ? `<p class="error">${esc(message)}</p>` : ''}
<p>Client: ${esc(params.client_id)}</p>
<form method="post" action="/interaction/${esc(uid)}">
<input type="hidden" name="prompt" value="login">
<input type="text" name="login" placeholder="account id" value="${esc(params.login_hint ?? '')}">
<input type="password" name="password" placeholder="any password">
<button type="submit">Sign-in</button>
</form>
<p><a href="/interaction/${esc(uid)}/abort">Cancel</a></p>`);
}

function consentPage(res, uid, params, details) {
  const items = [];
  (details.missingOIDCScope ?? []).forEach((s) => items.push(`<li>scope: ${esc(s)}</li>`));
  (details.missingOIDCClaims ?? []).forEach((c) => items.push(`<li>claim: ${esc(c)}</li>`));
  Object.entries(details.missingResourceScopes ?? {}).forEach(([rs, scopes]) => {
    scopes.forEach((s) => items.push(`<li>${esc(rs)}: ${esc(s)}</li>`));
  });
  page(res, 200, 'Authorize', `<p>Client: ${esc(params.client_id)}</p><ul>${items.join('')}</ul>
<form method="post" action="/interaction/${esc(uid)}">
<input type="hidden" name="prompt" value="consent">
<button type="submit">Allow</button>
</form>
<p><a href="/interaction/${esc(uid)}/abort">Deny</a></p>`);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
}

async function interaction(req, res, uid, action) {
  const { provider } = current;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    page(res, 400, 'Interaction not found', `<p>${esc(err.message)}</p>`);
    return;
  }
  if (details.uid !== uid) {
    page(res, 400, 'Interaction mismatch', '<p>the interaction cookie does not match this URL</p>');
    return;
  }
  const { prompt, params, session } = details;

  if (action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
    return;
  }

  if (req.method === 'GET') {
    if (prompt.name === 'login') loginPage(res, 200, uid, params);
    else if (prompt.name === 'consent') consentPage(res, uid, params, prompt.details);
    else page(res, 501, 'Not implemented', `<p>prompt ${esc(prompt.name)}</p>`);
    return;
  }
  if (req.method !== 'POST') {
    res.writeHead(405, { allow: 'GET, POST' }).end();
    return;
  }

  const form = await readForm(req);
  if (form.prompt !== prompt.name) {
    page(res, 400, 'Wrong prompt', `<p>expected ${esc(prompt.name)}, got ${esc(form.prompt)}</p>`);
    return;
  }
  if (prompt.name === 'login') {
    const accountId = form.login ?? '';
    if (!Object.hasOwn(accounts, accountId)) {
      loginPage(res, 401, uid, params, `unknown account: ${accountId}`);
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'consent') {
    // Grant everything that was asked for (a test provider).
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  page(res, 501, 'Not implemented', `<p>prompt ${esc(prompt.name)}</p>`);
}

// ---------------------------------------------------------------------------------------------
// HTTP server

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function route(req, res) {
  const { pathname } = new URL(req.url, issuer);
  if (pathname === '/test/rotate-keys') {
    if (req.method !== 'POST') {
      res.writeHead(405, { allow: 'POST' }).end();
      return;
    }
    req.resume();
    const kid = startProvider();
    process.stderr.write(`provider.mjs: signing key rotated, kid=${kid}\n`);
    json(res, 200, { kid });
    return;
  }
  const m = /^\/interaction\/([A-Za-z0-9_-]+)(\/abort)?$/.exec(pathname);
  if (m) {
    await interaction(req, res, m[1], m[2] ? 'abort' : 'page');
    return;
  }
  current.handler(req, res);
}

server = http.createServer((req, res) => {
  route(req, res).catch((err) => {
    process.stderr.write(`provider.mjs: ${req.method} ${req.url}: ${err?.stack ?? err}\n`);
    if (!res.headersSent) json(res, 500, { error: 'server_error', error_description: String(err?.message ?? err) });
    else res.destroy();
  });
});

let stopping = false;
function shutdown(why) {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`provider.mjs: stopping (${why})\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
process.stdin.on('end', () => shutdown('stdin closed'));
process.stdin.on('error', () => shutdown('stdin error'));
process.stdin.resume();

server.listen(0, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  try {
    startProvider();
  } catch (err) {
    die(`cannot start the provider: ${err?.stack ?? err}`);
  }
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
