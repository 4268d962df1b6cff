#!/usr/bin/env node
// Authorization-code + PKCE (S256) login against an OpenID provider, without a browser.
//
//   node authorize.mjs --issuer URL --client-id ID --redirect-uri URI --login ACCOUNT \
//       [--password PW] [--scope "openid profile patient/*.rs"] [--resource URI] [--prompt consent] [--verbose]
//
// Uses only fetch, with manual redirects and a small cookie jar: GET the authorization endpoint,
// follow the interaction redirects, submit the login form with the account id, submit the
// consent form if one is shown, catch the redirect to the redirect URI (it is never fetched),
// check `state` (and `iss` when sent), exchange the code with the code_verifier, and print the
// token endpoint's JSON response as one line on stdout. Any failure: a message on stderr, exit 1.

import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';

function fail(message) {
  process.stderr.write(`authorize.mjs: ${message}\n`);
  process.exit(1);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      issuer: { type: 'string' },
      'client-id': { type: 'string' },
      'redirect-uri': { type: 'string' },
      login: { type: 'string' },
      password: { type: 'string', default: 'any-password' },
      scope: { type: 'string', default: 'openid' },
      resource: { type: 'string' },
      prompt: { type: 'string' },
      verbose: { type: 'boolean', short: 'v' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  }));
} catch (err) {
  fail(err.message);
}
if (args.help) {
  process.stdout.write('usage: node authorize.mjs --issuer URL --client-id ID --redirect-uri URI --login ACCOUNT '
    + '[--password PW] [--scope SCOPE] [--resource URI] [--prompt consent] [--verbose]\n');
  process.exit(0);
}
for (const name of ['issuer', 'client-id', 'redirect-uri', 'login']) {
  if (!args[name]) fail(`missing --${name}`);
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const issuer = args.issuer.replace(/\/+$/, '');
const redirectUri = new URL(args['redirect-uri']);

// ---------------------------------------------------------------------------------------------
// Cookie jar (one host; name + path, Max-Age / Expires deletion)

const jar = new Map(); // `${path}\t${name}` -> { name, value, path }

function pathMatches(requestPath, cookiePath) {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

function storeCookies(response, url) {
  for (const line of response.headers.getSetCookie()) {
    const [pair, ...attrs] = line.split(';');
    const eq = pair.indexOf('=');
    if (eq <= 0) continue;
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    let path;
    let expired = false;
    for (const attr of attrs) {
      const [k, ...rest] = attr.split('=');
      const key = k.trim().toLowerCase();
      const v = rest.join('=').trim();
      if (key === 'path' && v.startsWith('/')) path = v;
      if (key === 'max-age' && Number(v) <= 0) expired = true;
      if (key === 'expires' && Date.parse(v) <= Date.now()) expired = true;
    }
    if (!path) {
      const p = url.pathname;
      path = p.lastIndexOf('/') > 0 ? p.slice(0, p.lastIndexOf('/')) : '/';
    }
    const key = `${path}\t${name}`;
    if (expired) jar.delete(key);
    else jar.set(key, { name, value, path });
  }
}

function cookieHeader(url) {
  const cookies = [...jar.values()]
    .filter((c) => pathMatches(url.pathname, c.path))
    .sort((a, b) => b.path.length - a.path.length);
  return cookies.map((c) => `${c.name}=${c.value}`).join('; ');
}

async function request(url, init = {}) {
  const headers = new Headers(init.headers);
  const cookie = cookieHeader(url);
  if (cookie) headers.set('cookie', cookie);
  let response;
  try {
    response = await fetch(url, { ...init, headers, redirect: 'manual' });
  } catch (err) {
    fail(`${init.method ?? 'GET'} ${url.href}: ${err.cause?.message ?? err.message}`);
  }
  storeCookies(response, url);
  if (args.verbose) {
    const location = response.headers.get('location');
    process.stderr.write(`authorize.mjs: ${init.method ?? 'GET'} ${url.pathname} -> ${response.status}${location ? ` ${location}` : ''}\n`);
  }
  return response;
}

// ---------------------------------------------------------------------------------------------
// HTML forms (the provider's login and consent pages)

function attributes(tag) {
  const out = {};
  for (const m of tag.matchAll(/([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*(?:=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?/g)) {
    out[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

function decodeEntities(s) {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_, e) => {
    if (e[0] === '#') return String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[e];
  });
}

function postForms(html) {
  const forms = [];
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const attrs = attributes(m[1]);
    if ((attrs.method ?? 'get').toLowerCase() !== 'post') continue;
    const fields = new Map();
    for (const input of m[2].matchAll(/<input\b([^>]*)>/gi)) {
      const a = attributes(input[1]);
      if (a.name) fields.set(a.name, { type: (a.type ?? 'text').toLowerCase(), value: a.value ?? '' });
    }
    forms.push({ action: attrs.action ?? '', fields });
  }
  return forms;
}

function pageText(html) {
  return html.replace(/<style[\s\S]*?<\/style>/gi, '').replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300);
}

// ---------------------------------------------------------------------------------------------
// The flow

const discoveryUrl = new URL(`${issuer}/.well-known/openid-configuration`);
const discoveryResponse = await request(discoveryUrl);
if (!discoveryResponse.ok) fail(`GET ${discoveryUrl.href}: HTTP ${discoveryResponse.status}`);
const discovery = await discoveryResponse.json();
if (discovery.issuer !== issuer) fail(`discovery issuer ${discovery.issuer} is not ${issuer}`);
for (const key of ['authorization_endpoint', 'token_endpoint']) {
  if (!discovery[key]) fail(`discovery has no ${key}`);
}

const codeVerifier = b64url(crypto.randomBytes(32));
const codeChallenge = b64url(crypto.createHash('sha256').update(codeVerifier).digest());
const state = b64url(crypto.randomBytes(16));
const nonce = b64url(crypto.randomBytes(16));

const authUrl = new URL(discovery.authorization_endpoint);
authUrl.search = new URLSearchParams({
  response_type: 'code',
  client_id: args['client-id'],
  redirect_uri: args['redirect-uri'],
  scope: args.scope,
  state,
  nonce,
  code_challenge: codeChallenge,
  code_challenge_method: 'S256',
  ...(args.resource ? { resource: args.resource } : {}),
  ...(args.prompt ? { prompt: args.prompt } : {}),
}).toString();

const isRedirectUri = (url) => url.origin === redirectUri.origin && url.pathname === redirectUri.pathname;

let url = authUrl;
let init = {};
let callback;
let loginSubmitted = false;
let consentSubmitted = false;
for (let step = 0; step < 20 && !callback; step += 1) {
  const method = init.method ?? 'GET';
  const response = await request(url, init);
  if (response.status >= 300 && response.status < 400) {
    const location = response.headers.get('location');
    if (!location) fail(`${method} ${url.href}: HTTP ${response.status} without Location`);
    const next = new URL(location, url);
    await response.arrayBuffer();
    if (isRedirectUri(next)) {
      callback = next;
    } else {
      url = next;
      init = {};
    }
    continue;
  }
  const body = await response.text();
  const type = response.headers.get('content-type') ?? '';
  if (!type.includes('text/html')) {
    fail(`${method} ${url.href}: HTTP ${response.status} ${type}: ${body.slice(0, 500)}`);
  }
  const forms = postForms(body);
  const loginForm = forms.find((f) => f.fields.has('login'));
  const otherForm = forms.find((f) => !f.fields.has('login'));
  if (loginForm) {
    if (loginSubmitted) fail(`login as ${JSON.stringify(args.login)} was refused (HTTP ${response.status}): ${pageText(body)}`);
    loginSubmitted = true;
    const form = new URLSearchParams();
    for (const [name, field] of loginForm.fields) {
      if (name === 'login') form.set(name, args.login);
      else if (field.type === 'password') form.set(name, args.password);
      else form.set(name, field.value);
    }
    url = new URL(loginForm.action || url.href, url);
    init = { method: 'POST', body: form, headers: { 'content-type': 'application/x-www-form-urlencoded' } };
  } else if (otherForm && response.ok) {
    if (consentSubmitted) fail(`consent was not accepted: ${pageText(body)}`);
    consentSubmitted = true;
    const form = new URLSearchParams();
    for (const [name, field] of otherForm.fields) form.set(name, field.value);
    url = new URL(otherForm.action || url.href, url);
    init = { method: 'POST', body: form, headers: { 'content-type': 'application/x-www-form-urlencoded' } };
  } else {
    fail(`${method} ${url.href}: HTTP ${response.status}, no login or consent form: ${pageText(body)}`);
  }
}
if (!callback) fail('no redirect to the redirect URI after 20 steps');

const params = callback.searchParams;
if (params.get('error')) {
  fail(`authorization error: ${params.get('error')}${params.get('error_description') ? `: ${params.get('error_description')}` : ''}`);
}
if (params.get('state') !== state) fail(`state mismatch: sent ${state}, got ${params.get('state')}`);
if (params.has('iss') && params.get('iss') !== issuer) fail(`iss mismatch in the authorization response: ${params.get('iss')}`);
const code = params.get('code');
if (!code) fail(`no code in the redirect: ${callback.href}`);

const tokenResponse = await request(new URL(discovery.token_endpoint), {
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
  body: new URLSearchParams({
    grant_type: 'authorization_code',
    code,
    redirect_uri: args['redirect-uri'],
    client_id: args['client-id'],
    code_verifier: codeVerifier,
  }),
});
const tokenText = await tokenResponse.text();
let tokens;
try {
  tokens = JSON.parse(tokenText);
} catch {
  fail(`token endpoint: HTTP ${tokenResponse.status}, not JSON: ${tokenText.slice(0, 500)}`);
}
if (!tokenResponse.ok) fail(`token endpoint: HTTP ${tokenResponse.status}: ${JSON.stringify(tokens)}`);
if (!tokens.access_token) fail(`token endpoint returned no access_token: ${JSON.stringify(tokens)}`);
if (tokens.id_token) {
  let idPayload;
  try {
    idPayload = JSON.parse(Buffer.from(tokens.id_token.split('.')[1], 'base64url').toString('utf8'));
  } catch {
    fail('id_token is not a JWT');
  }
  if (idPayload.nonce !== nonce) fail(`id_token nonce mismatch: sent ${nonce}, got ${idPayload.nonce}`);
}
process.stdout.write(`${JSON.stringify(tokens)}\n`);
