#!/usr/bin/env python3
"""Generate the FHIR R4 tables the gateway compiles in, from the official definitions.

Inputs (HL7 FHIR R4 4.0.1, CC0):
  - the npm package hl7.fhir.r4.examples@4.0.1 (its SearchParameter, StructureDefinition and
    CompartmentDefinition resources);
  - conformance/schema/fhir.schema.json (the R4 JSON Schema).

Outputs (committed; `scripts/test.sh` regenerates them and fails on any difference):
  - fhir-models/src/resource_types.rs      the 146 resource type names, sorted
  - fhir-models/data/search-parameters.json every search parameter, its FHIRPath expression
                                            compiled to simple JSON paths with datatypes, and the
                                            patient compartment
  - conformance/data/reference-targets.json allowed target types of each Reference element

Usage: scripts/generate-fhir-tables.py PACKAGE_DIR [--check]
"""

import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = os.path.join(ROOT, "conformance", "schema", "fhir.schema.json")
OUT_RESOURCE_TYPES = os.path.join(ROOT, "fhir-models", "src", "resource_types.rs")
OUT_SEARCH = os.path.join(ROOT, "fhir-models", "data", "search-parameters.json")
OUT_TARGETS = os.path.join(ROOT, "conformance", "data", "reference-targets.json")

# Parameters whose expression the gateway does not index (documented in ARCHITECTURE.md):
# they point into a resource inlined in a Bundle, not at a reference.
UNSUPPORTED = {"Bundle-composition", "Bundle-message"}


def load(pkg, pattern):
    out = []
    for path in sorted(glob.glob(os.path.join(pkg, pattern))):
        with open(path, encoding="utf-8") as f:
            out.append(json.load(f))
    return out


class Model:
    """Element types of every resource and complex datatype, from StructureDefinition snapshots."""

    def __init__(self, structure_definitions):
        self.elements = {}  # "Observation.value[x]" -> element
        self.kinds = {}
        for sd in structure_definitions:
            if sd.get("derivation") != "specialization" or "snapshot" not in sd:
                continue
            if sd["kind"] not in ("resource", "complex-type", "primitive-type"):
                continue
            self.kinds[sd["type"]] = sd["kind"]
            for element in sd["snapshot"]["element"]:
                self.elements[element["path"]] = element

    def child(self, owner_path, owner_type, name):
        """Resolve `name` under an element. Returns [(json_key, datatype, element_path)]."""
        candidates = []
        # Backbone elements live under the owner's own path; datatypes under the type's name.
        bases = [owner_path]
        if owner_type and owner_type not in ("BackboneElement", "Element"):
            bases = [owner_type] if owner_path != owner_type else [owner_path]
        for base in bases:
            element = self.elements.get(f"{base}.{name}")
            if element is not None:
                candidates.append((f"{base}.{name}", element, False))
            element = self.elements.get(f"{base}.{name}[x]")
            if element is not None:
                candidates.append((f"{base}.{name}[x]", element, True))
        if not candidates:
            # Inherited from Element / Resource / DomainResource.
            for base in ("DomainResource", "Resource", "Element", "BackboneElement"):
                element = self.elements.get(f"{base}.{name}")
                if element is not None:
                    candidates.append((f"{base}.{name}", element, False))
                    break
        if not candidates:
            raise KeyError(f"{owner_path} has no element {name}")
        path, element, is_choice = candidates[0]
        if "contentReference" in element:
            ref_path = element["contentReference"].lstrip("#")
            return [(name, "BackboneElement", ref_path)]
        out = []
        for t in element.get("type", []):
            code = t["code"]
            if code.startswith("http://hl7.org/fhirpath/System."):
                code = "string"
            if is_choice:
                out.append((name + code[0].upper() + code[1:], code, path))
            elif code in ("BackboneElement", "Element"):
                out.append((name, "BackboneElement", path))
            else:
                out.append((name, code, path))
        return out

    def targets(self, element_path):
        element = self.elements.get(element_path)
        if element is None:
            return []
        out = []
        for t in element.get("type", []):
            for profile in t.get("targetProfile", []):
                out.append(profile.rsplit("/", 1)[-1])
        return sorted(set(out))


TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^'\\]|\\.)*')
      | (?P<op>!=|=|\(|\)|\.|\||\[|\])
      | (?P<num>\d+)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.X,
)


def tokenize(expression):
    pos, out = 0, []
    while pos < len(expression):
        m = TOKEN.match(expression, pos)
        if not m or m.end() == pos:
            if expression[pos:].strip() == "":
                break
            raise ValueError(f"cannot tokenize {expression[pos:]!r}")
        pos = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
    return out


def split_union(tokens):
    """Split a token list at top-level `|`."""
    parts, depth, current = [], 0, []
    for tok in tokens:
        if tok == ("op", "("):
            depth += 1
        elif tok == ("op", ")"):
            depth -= 1
        if tok == ("op", "|") and depth == 0:
            parts.append(current)
            current = []
        else:
            current.append(tok)
    parts.append(current)
    return parts


def parse_path(tokens, default_type):
    """Parse one FHIRPath path of the subset the R4 search parameters use.

    Returns (resource_type, [ops]) where ops are ("field", name), ("as", Type),
    ("where_eq", field, value), ("where_resolve_is", Type), ("extension", url),
    ("where_has_extension", url), ("index", n).
    """
    toks = list(tokens)
    # A leading parenthesised group, `(X.y as T)` or `(X.y as T).z`, is read as if unbracketed.
    if toks and toks[0] == ("op", "("):
        depth = 0
        for close, tok in enumerate(toks):
            depth += tok == ("op", "(")
            depth -= tok == ("op", ")")
            if depth == 0:
                break
        toks = toks[1:close] + toks[close + 1:]
    ops = []
    i = 0

    def expect(value):
        nonlocal i
        if i >= len(toks) or toks[i][1] != value:
            raise ValueError(f"expected {value!r} at {toks[i:]!r}")
        i += 1

    if toks[0][0] != "ident":
        raise ValueError(f"path must start with a type: {toks!r}")
    if not toks[0][1][0].isupper():
        # `name | alias`: a path relative to the parameter's own base
        toks = [("ident", default_type), ("op", ".")] + toks
    resource_type = toks[0][1]
    i = 1
    while i < len(toks):
        kind, value = toks[i]
        if value == ".":
            i += 1
            kind, name = toks[i]
            i += 1
            if i < len(toks) and toks[i][1] == "(":
                i += 1
                if name in ("as", "ofType"):
                    ops.append(("as", toks[i][1]))
                    i += 1
                    expect(")")
                elif name == "where":
                    if toks[i][1] == "resolve":
                        i += 1
                        expect("(")
                        expect(")")
                        expect("is")
                        ops.append(("where_resolve_is", toks[i][1]))
                        i += 1
                    elif toks[i][1] == "hasExtension":
                        i += 1
                        expect("(")
                        ops.append(("where_has_extension", toks[i][1].strip("'")))
                        i += 1
                        expect(")")
                    else:
                        field = toks[i][1]
                        i += 1
                        expect("=")
                        ops.append(("where_eq", field, toks[i][1].strip("'")))
                        i += 1
                    expect(")")
                elif name == "extension":
                    ops.append(("extension", toks[i][1].strip("'")))
                    i += 1
                    expect(")")
                elif name == "exists":
                    expect(")")
                    ops.append(("exists",))
                else:
                    raise ValueError(f"unsupported function {name}")
            else:
                ops.append(("field", name))
        elif value == "as":
            i += 1
            ops.append(("as", toks[i][1]))
            i += 1
        elif value == "[":
            i += 1
            ops.append(("index", int(toks[i][1])))
            i += 1
            expect("]")
        else:
            raise ValueError(f"unexpected token {value!r} in {toks!r}")
    return resource_type, ops


def compile_ops(model, resource_type, ops, start=None):
    """Turn ops into concrete JSON paths: [{"steps": [...], "type": datatype}].

    A step is {"key": json_key} with optional "where": [field, value], "target": Type,
    "has_extension": url, or {"extension": url}. A datatype of "*" means the final key is a
    choice resolved at run time (`valueQuantity` -> Quantity).
    """
    paths = [start or ([], resource_type, resource_type)]  # (steps, datatype, element_path)
    for op in ops:
        new_paths = []
        for steps, datatype, element_path in paths:
            if op[0] == "field":
                if datatype == "Extension" and op[1] == "value":
                    new_paths.append((steps + [{"choice": "value"}], "*", "Extension.value[x]"))
                    continue
                for key, child_type, child_path in model.child(element_path, datatype, op[1]):
                    new_paths.append((steps + [{"key": key}], child_type, child_path))
            elif op[0] == "as":
                wanted = op[1]
                last = steps[-1]
                if "choice" in last:
                    key = last["choice"] + wanted[0].upper() + wanted[1:]
                    new_paths.append((steps[:-1] + [{"key": key}], wanted, element_path))
                elif datatype.lower() == wanted.lower():
                    new_paths.append((steps, datatype, element_path))
                # else: this expansion of a choice is not the wanted type; drop it
            elif op[0] == "where_resolve_is":
                last = dict(steps[-1])
                last["target"] = op[1]
                new_paths.append((steps[:-1] + [last], datatype, element_path))
            elif op[0] == "where_eq":
                last = dict(steps[-1])
                last["where"] = [op[1], op[2]]
                new_paths.append((steps[:-1] + [last], datatype, element_path))
            elif op[0] == "where_has_extension":
                last = dict(steps[-1])
                last["has_extension"] = op[1]
                new_paths.append((steps[:-1] + [last], datatype, element_path))
            elif op[0] == "extension":
                new_paths.append((steps + [{"extension": op[1]}], "Extension", "Extension"))
            elif op[0] == "index":
                last = dict(steps[-1])
                last["index"] = op[1]
                new_paths.append((steps[:-1] + [last], datatype, element_path))
            else:
                raise ValueError(f"unsupported op {op}")
        paths = new_paths
    return paths


def compile_expression(model, expression, bases):
    by_base = {}
    for part in split_union(tokenize(expression)):
        resource_type, ops = parse_path(part, bases[0])
        if resource_type not in bases and resource_type not in ("Resource", "DomainResource"):
            raise ValueError(f"{resource_type} not among bases {bases}")
        targets = bases if resource_type in ("Resource", "DomainResource") else [resource_type]
        for base in targets:
            by_base.setdefault(base, []).extend(compile_ops(model, base, ops))
    return by_base


def compile_components(model, components, base_path, param_types):
    """Compile composite components relative to one path of the composite parameter."""
    _, datatype, element_path = base_path
    out = []
    for component in components:
        ops = []
        for part in split_union(tokenize(component["expression"])):
            _, part_ops = parse_path(part, "Self")
            ops.append(part_ops)
        paths = []
        for part_ops in ops:
            paths += [{"steps": s, "type": t}
                      for s, t, _ in compile_ops(model, datatype, part_ops, ([], datatype, element_path))]
        definition = component["definition"].rsplit("/", 1)[-1]
        out.append({"definition": definition, "type": param_types[definition], "paths": paths})
    return out


def special_deceased():
    # `Patient.deceased.exists() and Patient.deceased != false`: true when deceasedDateTime is
    # present or deceasedBoolean is true.
    return {"Patient": [
        ([{"key": "deceasedBoolean"}], "boolean", "Patient.deceased[x]"),
        ([{"key": "deceasedDateTime"}], "presence", "Patient.deceased[x]"),
    ]}


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    check = "--check" in sys.argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    pkg = args[0]

    with open(SCHEMA, encoding="utf-8") as f:
        schema = json.load(f)
    resource_types = sorted(schema["discriminator"]["mapping"].keys())

    model = Model(load(pkg, "StructureDefinition-*.json"))

    params = {}
    skipped = []
    search_parameters = load(pkg, "SearchParameter-*.json")
    param_types = {sp["id"]: sp["type"] for sp in search_parameters}
    for sp in search_parameters:
        if sp["id"] in UNSUPPORTED or sp["type"] == "special" or sp["id"].startswith("example"):
            skipped.append(sp["id"])
            continue
        expression = sp.get("expression")
        if not expression:
            skipped.append(sp["id"])
            continue
        try:
            if sp["id"] == "Patient-deceased":
                by_base = special_deceased()
            else:
                by_base = compile_expression(model, expression, sp["base"])
        except (ValueError, KeyError) as error:
            print(f"{sp['id']}: {error}", file=sys.stderr)
            skipped.append(sp["id"])
            continue
        for base, paths in by_base.items():
            entry = {
                "code": sp["code"],
                "url": sp["url"],
                "type": sp["type"],
                "paths": [{"steps": s, "type": t} for s, t, _ in paths],
            }
            if sp.get("target"):
                entry["target"] = sorted(sp["target"])
            if sp.get("component"):
                # A composite is evaluated per element that its path selects: each element
                # yields one tuple of component values.
                try:
                    for compiled, path in zip(entry["paths"], paths):
                        compiled["components"] = compile_components(model, sp["component"], path, param_types)
                except (ValueError, KeyError) as error:
                    print(f"{sp['id']}: {error}", file=sys.stderr)
                    skipped.append(sp["id"])
                    continue
            params.setdefault(base, {})[sp["code"]] = entry

    compartment = {}
    for cd in load(pkg, "CompartmentDefinition-patient.json"):
        for resource in cd.get("resource", []):
            if resource.get("param"):
                compartment[resource["code"]] = resource["param"]

    reference_targets = {}
    for path, element in sorted(model.elements.items()):
        type_codes = [t["code"] for t in element.get("type", [])]
        resource = path.split(".")[0]
        if model.kinds.get(resource) != "resource" or "Reference" not in type_codes:
            continue
        targets = model.targets(path)
        if targets and "Resource" not in targets:
            key = path[:-3] + "Reference" if path.endswith("[x]") else path
            reference_targets[key] = targets

    # `_summary=true` keeps the top-level elements marked isSummary, plus those a resource must have.
    summary = {}
    for path, element in sorted(model.elements.items()):
        parts = path.split(".")
        if len(parts) != 2 or model.kinds.get(parts[0]) != "resource":
            continue
        if element.get("isSummary") or element.get("min", 0) > 0:
            name = parts[1]
            if name.endswith("[x]"):
                stem = name[:-3]
                summary.setdefault(parts[0], []).extend(
                    stem + t["code"][0].upper() + t["code"][1:] for t in element.get("type", []))
            else:
                summary.setdefault(parts[0], []).append(name)

    search_doc = {
        "_source": "HL7 FHIR R4 4.0.1 (CC0), npm hl7.fhir.r4.examples@4.0.1; generated by scripts/generate-fhir-tables.py",
        "_skipped": sorted(skipped),
        "parameters": {k: dict(sorted(v.items())) for k, v in sorted(params.items())},
        "patient_compartment": dict(sorted(compartment.items())),
        "summary_elements": {k: sorted(set(v)) for k, v in sorted(summary.items())},
    }
    targets_doc = {
        "_source": "HL7 FHIR R4 4.0.1 StructureDefinitions (CC0); generated by scripts/generate-fhir-tables.py",
        "targets": reference_targets,
    }
    rust = ["// @generated by scripts/generate-fhir-tables.py from the FHIR R4 JSON Schema. Do not edit.",
            "",
            "/// Every FHIR R4 resource type, sorted (binary-searchable).",
            f"pub const RESOURCE_TYPES: [&str; {len(resource_types)}] = ["]
    rust += [f"    \"{t}\"," for t in resource_types]
    rust += ["];", ""]

    outputs = {
        OUT_RESOURCE_TYPES: "\n".join(rust),
        OUT_SEARCH: json.dumps(search_doc, indent=1, ensure_ascii=False) + "\n",
        OUT_TARGETS: json.dumps(targets_doc, indent=1, ensure_ascii=False) + "\n",
    }
    stale = []
    for path, text in outputs.items():
        if check:
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() != text:
                        stale.append(path)
            except FileNotFoundError:
                stale.append(path)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print("generated tables are stale; run scripts/generate-fhir-tables.py: "
              + ", ".join(os.path.relpath(p, ROOT) for p in stale), file=sys.stderr)
        sys.exit(1)
    count = sum(len(v) for v in params.values())
    print(f"{len(resource_types)} resource types, {count} (type, parameter) pairs, "
          f"{len(skipped)} skipped, {len(reference_targets)} reference elements", file=sys.stderr)


if __name__ == "__main__":
    main()
