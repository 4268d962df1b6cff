#!/usr/bin/env node
// Self-check for provider.mjs and authorize.mjs: starts the provider with a generated config,
// runs client_credentials (private_key_jwt, ES256 and RS256), the authorization-code + PKCE
// login, key rotation and the stdin-close shutdown. Exit 0 when every check passes.
//
//   node tests/tools/oidc/selfcheck.mjs

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const AUDIENCE = 'https://gateway.test/fhir/r4';
const REDIRECT_URI = 'http://127.0.0.1:9/callback';

let passed = 0;
let failed = 0;
function check(name, condition, detail) {
  if (condition) {
    passed += 1;
    process.stdout.write(`ok - ${name}\n`);
  } else {
    failed += 1;
    process.stdout.write(`not ok - ${name}${detail === undefined ? '' : `: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`}\n`);
  }
  return condition;
}

const b64url = (b) => Buffer.from(b).toString('base64url');
const decodePart = (jwt, i) => JSON.parse(Buffer.from(jwt.split('.')[i], 'base64url').toString('utf8'));

function signJwt(header, payload, privateKey) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  const hash = { ES256: 'sha256', RS256: 'sha256' }[header.alg];
  const sig = crypto.sign(hash, Buffer.from(input), header.alg.startsWith('ES')
    ? { key: privateKey, dsaEncoding: 'ieee-p1363' }
    : privateKey);
  return `${input}.${b64url(sig)}`;
}

function verifyWithJwks(jwt, jwks) {
  const header = decodePart(jwt, 0);
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  if (!jwk || header.alg !== 'RS256') return false;
  const [h, p, s] = jwt.split('.');
  return crypto.verify('sha256', Buffer.from(`${h}.${p}`), crypto.createPublicKey({ key: jwk, format: 'jwk' }), Buffer.from(s, 'base64url'));
}

// --- config with two backend keys (EC P-256 and RSA) ---------------------------------------

const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const config = {
  audience: AUDIENCE,
  clients: [
    {
      client_id: 'trust-publisher',
      type: 'backend',
      jwks: {
        keys: [
          { ...ec.publicKey.export({ format: 'jwk' }), kid: 'backend-ec', alg: 'ES256', use: 'sig' },
          { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'backend-rsa', alg: 'RS256', use: 'sig' },
        ],
      },
      scope: 'system/*.cruds system/Patient.rs',
      claims: { requesting_organization: 'R9Z' },
    },
    {
      client_id: 'patient-app',
      type: 'public',
      redirect_uris: [REDIRECT_URI],
      scope: 'openid profile patient/*.rs',
    },
  ],
  accounts: {
    'patient-1': { nhs_number: '9449305552', identity_proofing_level: 'P9', family_name: 'Smith' },
  },
};
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oidc-selfcheck-'));
const configPath = path.join(tmp, 'config.json');
fs.writeFileSync(configPath, JSON.stringify(config));

// --- 1. start the provider --------------------------------------------------------------------

const child = spawn(process.execPath, [path.join(here, 'provider.mjs'), configPath], { stdio: ['pipe', 'pipe', 'pipe'] });
let stderr = '';
child.stderr.on('data', (d) => { stderr += d; });
const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));

const stdoutLines = [];
let stdoutBuf = '';
child.stdout.setEncoding('utf8');
const firstLine = new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('no issuer line within 20 s')), 20000);
  child.stdout.on('data', (d) => {
    stdoutBuf += d;
    let i;
    while ((i = stdoutBuf.indexOf('\n')) >= 0) {
      stdoutLines.push(stdoutBuf.slice(0, i));
      stdoutBuf = stdoutBuf.slice(i + 1);
      if (stdoutLines.length === 1) {
        clearTimeout(timer);
        resolve(stdoutLines[0]);
      }
    }
  });
  child.on('exit', () => reject(new Error(`provider exited early:\n${stderr}`)));
});

function finish() {
  fs.rmSync(tmp, { recursive: true, force: true });
  process.stdout.write(`selfcheck: ${passed} passed, ${failed} failed\n`);
  process.exit(failed ? 1 : 0);
}

let issuer;
try {
  const line = await firstLine;
  check('stdout line is {"issuer":"http://127.0.0.1:PORT"}', /^\{"issuer":"http:\/\/127\.0\.0\.1:\d+"\}$/.test(line), line);
  ({ issuer } = JSON.parse(line));
} catch (err) {
  check('provider starts', false, err.message);
  child.kill('SIGTERM');
  finish();
}

try {
  const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  check('discovery issuer', discovery.issuer === issuer, discovery.issuer);
  check('token endpoint is {issuer}/token', discovery.token_endpoint === `${issuer}/token`, discovery.token_endpoint);
  check('jwks_uri is {issuer}/jwks', discovery.jwks_uri === `${issuer}/jwks`, discovery.jwks_uri);
  check('SMART scopes advertised', ['system/*.cruds', 'patient/*.rs'].every((s) => discovery.scopes_supported.includes(s)), discovery.scopes_supported);
  const getJwks = async () => (await fetch(discovery.jwks_uri)).json();

  // --- 2. client_credentials with private_key_jwt -------------------------------------------

  async function clientCredentials(alg, key, kid, scope) {
    const now = Math.floor(Date.now() / 1000);
    const assertion = signJwt({ alg, typ: 'JWT', kid }, {
      iss: 'trust-publisher', sub: 'trust-publisher', aud: discovery.token_endpoint,
      jti: crypto.randomUUID(), iat: now, exp: now + 300,
    }, key);
    const send = async () => {
      const r = await fetch(discovery.token_endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          scope,
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: assertion,
        }),
      });
      return { status: r.status, body: await r.json() };
    };
    return { ...(await send()), replay: send };
  }

  function checkBackendToken(label, res, scope, jwks) {
    if (!check(`${label}: HTTP 200`, res.status === 200, res.body)) return undefined;
    const at = res.body.access_token;
    check(`${label}: access_token is a JWT`, typeof at === 'string' && at.split('.').length === 3, at);
    const h = decodePart(at, 0);
    const p = decodePart(at, 1);
    check(`${label}: header alg RS256, typ at+jwt`, h.alg === 'RS256' && h.typ === 'at+jwt', h);
    check(`${label}: header kid is in the JWKS`, jwks.keys.some((k) => k.kid === h.kid), { kid: h.kid, jwks: jwks.keys.map((k) => k.kid) });
    check(`${label}: signature verifies with the JWKS`, verifyWithJwks(at, jwks));
    check(`${label}: aud = audience (string)`, p.aud === AUDIENCE, p.aud);
    check(`${label}: iss, sub, client_id`, p.iss === issuer && p.sub === 'trust-publisher' && p.client_id === 'trust-publisher', p);
    check(`${label}: exp, iat, jti`, Number.isInteger(p.exp) && Number.isInteger(p.iat) && p.exp > p.iat && typeof p.jti === 'string', p);
    check(`${label}: scope = "${scope}"`, p.scope === scope && res.body.scope === scope, { jwt: p.scope, response: res.body.scope });
    check(`${label}: requesting_organization claim`, p.requesting_organization === 'R9Z', p);
    return h.kid;
  }

  let jwks = await getJwks();
  check('JWKS has one public RSA key', jwks.keys.length === 1 && jwks.keys[0].kty === 'RSA' && !('d' in jwks.keys[0]), jwks);
  const firstKid = jwks.keys[0].kid;

  const es = await clientCredentials('ES256', ec.privateKey, 'backend-ec', 'system/*.cruds');
  checkBackendToken('client_credentials ES256', es, 'system/*.cruds', jwks);
  const replay = await es.replay();
  check('replayed client assertion is refused (invalid_client)', replay.status === 401 || replay.body.error === 'invalid_client', replay);

  const rs = await clientCredentials('RS256', rsa.privateKey, 'backend-rsa', 'system/*.cruds system/Patient.rs');
  checkBackendToken('client_credentials RS256', rs, 'system/*.cruds system/Patient.rs', jwks);

  const bad = await clientCredentials('ES256', ec.privateKey, 'backend-ec', 'patient/*.rs');
  check('backend client asking for a scope it lacks gets invalid_scope', bad.status === 400 && bad.body.error === 'invalid_scope', bad);

  // --- 3. authorization code + PKCE through authorize.mjs -----------------------------------

  function authorize(login, extra = []) {
    return new Promise((resolve) => {
      const p = spawn(process.execPath, [path.join(here, 'authorize.mjs'), '--issuer', issuer, '--client-id', 'patient-app',
        '--redirect-uri', REDIRECT_URI, '--login', login, '--scope', 'openid profile patient/*.rs', ...extra],
      { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      p.stdout.on('data', (d) => { out += d; });
      p.stderr.on('data', (d) => { err += d; });
      p.on('exit', (code) => resolve({ code, out, err }));
    });
  }

  function checkUserToken(label, res, jwks) {
    if (!check(`${label}: authorize.mjs exits 0`, res.code === 0, res.err)) return undefined;
    const lines = res.out.trim().split('\n');
    check(`${label}: one JSON line on stdout`, lines.length === 1, res.out);
    const tokens = JSON.parse(lines[0]);
    const at = tokens.access_token;
    const h = decodePart(at, 0);
    const p = decodePart(at, 1);
    check(`${label}: token_type Bearer, id_token present`, tokens.token_type === 'Bearer' && typeof tokens.id_token === 'string', tokens);
    check(`${label}: header kid is in the JWKS and signature verifies`, verifyWithJwks(at, jwks), h);
    check(`${label}: aud = audience, sub = patient-1, client_id = patient-app`, p.aud === AUDIENCE && p.sub === 'patient-1' && p.client_id === 'patient-app', p);
    check(`${label}: nhs_number and identity_proofing_level`, p.nhs_number === '9449305552' && p.identity_proofing_level === 'P9', p);
    check(`${label}: scope contains patient/*.rs`, p.scope.split(' ').includes('patient/*.rs'), p.scope);
    return h.kid;
  }

  checkUserToken('authorization_code', await authorize('patient-1'), jwks);
  const unknown = await authorize('nobody');
  check('unknown account is refused (authorize.mjs exits non-zero)', unknown.code !== 0 && /refused/.test(unknown.err), unknown);

  // --- 4. key rotation ------------------------------------------------------------------------

  const rot = await fetch(`${issuer}/test/rotate-keys`, { method: 'POST' });
  const { kid: newKid } = await rot.json();
  check('POST /test/rotate-keys returns a new kid', rot.status === 200 && typeof newKid === 'string' && newKid !== firstKid, newKid);
  jwks = await getJwks();
  check('JWKS lists only the new key', jwks.keys.length === 1 && jwks.keys[0].kid === newKid, jwks.keys.map((k) => k.kid));
  const es2 = await clientCredentials('ES256', ec.privateKey, 'backend-ec', 'system/*.cruds');
  check('client_credentials after rotation is signed with the new kid',
    checkBackendToken('client_credentials after rotation', es2, 'system/*.cruds', jwks) === newKid);
  check('authorization_code after rotation is signed with the new kid',
    checkUserToken('authorization_code after rotation', await authorize('patient-1'), jwks) === newKid);
} catch (err) {
  check('no unexpected error', false, err.stack);
}

// --- 5. stdin close -> exit ---------------------------------------------------------------------

child.stdin.end();
const timeout = new Promise((resolve) => setTimeout(() => resolve('timeout'), 5000));
const result = await Promise.race([exited, timeout]);
if (result === 'timeout') child.kill('SIGKILL');
check('provider exits with 0 within 5 s of stdin closing', result !== 'timeout' && result.code === 0, result);
check('nothing on stdout after the issuer line', stdoutLines.length === 1 && stdoutBuf === '', { stdoutLines, stdoutBuf });
if (failed) process.stderr.write(`provider stderr:\n${stderr}\n`);
finish();
