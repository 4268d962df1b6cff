#!/usr/bin/env python3
"""Independent FHIR R4 validator (PyPI fhir.resources 6.4.0 on pydantic 1.x) for the black-box tests.

Contract (shared with validate-medplum.mjs):
  stdin : NDJSON, one FHIR resource per line. Blank / whitespace-only lines are ignored
          and do not consume an index.
  stdout: one JSON object per (non-blank) input line, in input order:
            {"index": N, "ok": true}
            {"index": N, "ok": false, "issues": ["...", ...]}
          N is the 0-based position among the non-blank input lines.
  exit  : 0 when every line was processed (whatever the verdicts), 2 on a setup failure.

Each issue string is "<FHIRPath-like location>: <message> (<pydantic error type>)".

In fhir.resources 6.4.0 the top-level package ``fhir.resources`` *is* FHIR R4 (4.0.1);
STU3 / DSTU2 live in the ``fhir.resources.STU3`` / ``fhir.resources.DSTU2`` sub-packages.
The script asserts ``fhir.resources.__fhir_version__ == "4.0.1"`` at start-up.

Usage: tests/tools/.venv/bin/python tests/tools/validate_fhir_resources.py < resources.ndjson
"""

import json
import sys

try:
    import pydantic
    import fhir.resources
    from fhir.resources import construct_fhir_element
    from pydantic import ValidationError
except Exception as exc:  # pragma: no cover - setup failure
    sys.stderr.write(f"validate_fhir_resources: cannot import fhir.resources: {exc}\n")
    sys.exit(2)

if fhir.resources.__fhir_version__ != "4.0.1" or not pydantic.VERSION.startswith("1."):
    sys.stderr.write(
        "validate_fhir_resources: expected fhir.resources R4 4.0.1 on pydantic 1.x, got "
        f"FHIR {fhir.resources.__fhir_version__} / pydantic {pydantic.VERSION}\n"
    )
    sys.exit(2)


def _loc_to_path(resource_type, loc):
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "__root__":
            continue
        else:
            path += f".{part}"
    return path


def validate_line(line):
    try:
        data = json.loads(line)
    except ValueError as exc:
        return {"ok": False, "issues": [f"(root): invalid JSON: {exc}"]}
    if not isinstance(data, dict):
        return {"ok": False, "issues": ["(root): line is not a JSON object"]}
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        return {"ok": False, "issues": ["(root): missing or non-string resourceType"]}
    try:
        construct_fhir_element(resource_type, data)
    except LookupError as exc:
        return {"ok": False, "issues": [f"(root): unknown resourceType: {exc}"]}
    except ValidationError as exc:
        issues = [
            f"{_loc_to_path(resource_type, err.get('loc', ()))}: {err.get('msg')} ({err.get('type')})"
            for err in exc.errors()
        ]
        return {"ok": False, "issues": issues or [str(exc)]}
    except Exception as exc:  # noqa: BLE001 - report anything else as a failure
        return {"ok": False, "issues": [f"(root): {type(exc).__name__}: {exc}"]}
    return {"ok": True}


def main():
    out = sys.stdout
    index = 0
    for raw in sys.stdin:
        line = raw.strip()
        if not line:
            continue
        result = {"index": index}
        result.update(validate_line(line))
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
        index += 1
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
