//! Index extraction: walk a resource along each search parameter's compiled paths and collect
//! the values the store indexes, one row per value.

use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use super::definitions::{Component, ParamKind, SearchParamDef, Step, StepSelect, table};
use crate::datetime::{MAX_MICROS, MIN_MICROS, parse_range};
use crate::reference::Reference;
use crate::resource_type::ResourceType;

#[derive(Clone, Debug, PartialEq, Default)]
pub struct TokenEntry {
    pub param: String,
    pub system: Option<String>,
    pub code: Option<String>,
    /// `CodeableConcept.text`, `Coding.display` or `Identifier.type.text`, for `:text`.
    pub text: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StringEntry {
    pub param: String,
    /// Lower-cased, accents removed: what `name=` and `:contains` compare with.
    pub normalized: String,
    /// As written: what `:exact` compares with.
    pub exact: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DateEntry {
    pub param: String,
    pub low: i64,
    pub high: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NumberEntry {
    pub param: String,
    pub low: f64,
    pub high: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QuantityEntry {
    pub param: String,
    pub system: Option<String>,
    pub code: Option<String>,
    pub unit: Option<String>,
    pub low: f64,
    pub high: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UriEntry {
    pub param: String,
    pub uri: String,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ReferenceEntry {
    pub param: String,
    /// For a reference to `Type/id` (local or behind a base URL).
    pub target_type: Option<ResourceType>,
    pub target_id: Option<String>,
    /// For canonical and other absolute references: the URL, without `|version`.
    pub url: Option<String>,
    /// `Reference.identifier`, for the `:identifier` modifier.
    pub identifier_system: Option<String>,
    pub identifier_value: Option<String>,
}

/// One pair of values of a composite parameter, taken from the same element.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CompositeEntry {
    pub param: String,
    /// The first component, a token.
    pub system: Option<String>,
    pub code: Option<String>,
    /// The second component: a token (`system2`, `code2`), a quantity (its unit's system and
    /// code, its `unit`, and `low`/`high`) or a date (`low`/`high`, microseconds).
    pub system2: Option<String>,
    pub code2: Option<String>,
    pub unit2: Option<String>,
    pub low: f64,
    pub high: f64,
}

/// Everything the store indexes for one resource version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexEntries {
    pub tokens: Vec<TokenEntry>,
    pub strings: Vec<StringEntry>,
    pub dates: Vec<DateEntry>,
    pub numbers: Vec<NumberEntry>,
    pub quantities: Vec<QuantityEntry>,
    pub uris: Vec<UriEntry>,
    pub references: Vec<ReferenceEntry>,
    pub composites: Vec<CompositeEntry>,
    /// Ids of the patients whose compartment holds the resource.
    pub patient_compartment: Vec<String>,
}

/// The ends of a Range with no `low` or `high`: the largest finite numbers rather than
/// infinities, so that every indexed value can travel in a JSON paging cursor as a sort value.
pub const OPEN_LOW: f64 = f64::MIN;
pub const OPEN_HIGH: f64 = f64::MAX;

/// Lower-case and strip accents, as string search compares.
pub fn normalize_string(text: &str) -> String {
    text.nfkd()
        .filter(|c| !matches!(*c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Extract the index values of a resource of type `resource_type` with logical id `id`.
pub fn extract(resource_type: ResourceType, id: &str, resource: &Value) -> IndexEntries {
    extract_some(resource_type, id, resource, |_| true)
}

/// As [`extract`], for the parameters `wanted` names only — and always the patient compartment
/// (the access rules read a resource's compartment, labels and a few tokens and dates, not every
/// index value).
pub fn extract_some(resource_type: ResourceType, id: &str, resource: &Value, wanted: impl Fn(&str) -> bool) -> IndexEntries {
    let mut entries = IndexEntries::default();
    let compartment_params = table().patient_compartment_params(resource_type);
    for param in table().params(resource_type) {
        if !wanted(&param.code) && !compartment_params.contains(&param.code) {
            continue;
        }
        if param.code == "_id" || param.code == "_lastUpdated" {
            // columns of the resource row
            continue;
        }
        let tokens_before = entries.tokens.len();
        for path in &param.paths {
            let mut found = Vec::new();
            walk(resource, &path.steps, &path.datatype, &mut found);
            for (value, datatype) in found {
                if param.kind == ParamKind::Composite {
                    index_composite(&param.code, &path.components, value, &mut entries);
                } else {
                    index_value(param.into(), value, &datatype, &mut entries);
                }
            }
        }
        // `Patient.deceased.exists() and Patient.deceased != false`: no deceased[x] is false.
        if entries.tokens.len() == tokens_before && param.paths.iter().any(|path| path.datatype == "presence") {
            push_token(&mut entries, &param.code, None, Some("false".to_owned()), None);
        }
    }
    if resource_type.as_str() == "Patient" {
        entries.patient_compartment.push(id.to_owned());
    }
    for reference in &entries.references {
        if compartment_params.contains(&reference.param)
            && reference.target_type.map(|t| t.as_str()) == Some("Patient")
            && let Some(target) = &reference.target_id
            && !entries.patient_compartment.contains(target)
        {
            entries.patient_compartment.push(target.clone());
        }
    }
    entries
}

/// Follow `steps` from `value`, collecting each value reached with its datatype.
fn walk<'v>(value: &'v Value, steps: &[Step], datatype: &str, out: &mut Vec<(&'v Value, String)>) {
    let Some((step, rest)) = steps.split_first() else {
        match value {
            Value::Array(items) => items.iter().for_each(|item| out.push((item, datatype.to_owned()))),
            _ => out.push((value, datatype.to_owned())),
        }
        return;
    };
    let Value::Object(object) = value else { return };
    let children: Vec<&Value> = match &step.select {
        StepSelect::Key(key) => match object.get(key) {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(child) => vec![child],
            None => Vec::new(),
        },
        StepSelect::Extension(url) => match object.get("extension") {
            Some(Value::Array(items)) => items.iter().filter(|ext| ext.get("url").and_then(Value::as_str) == Some(url)).collect(),
            _ => Vec::new(),
        },
    };
    for child in children {
        if let Some((field, wanted)) = &step.where_eq
            && child.get(field).and_then(Value::as_str) != Some(wanted)
        {
            continue;
        }
        if let Some(url) = &step.has_extension {
            let has = child
                .get("extension")
                .and_then(Value::as_array)
                .is_some_and(|exts| exts.iter().any(|ext| ext.get("url").and_then(Value::as_str) == Some(url)));
            if !has {
                continue;
            }
        }
        if let Some(target) = step.target {
            let points_at = child
                .get("reference")
                .and_then(Value::as_str)
                .and_then(|text| Reference::parse(text).local())
                .map(|(resource_type, _)| resource_type);
            if points_at != Some(target) {
                continue;
            }
        }
        walk(child, rest, datatype, out);
    }
}

/// An extension's value and its datatype (`valueString` → `string`, `valueCoding` → `Coding`).
fn extension_value(extension: &Value) -> Option<(&Value, String)> {
    extension.as_object()?.iter().find_map(|(key, value)| {
        let suffix = key.strip_prefix("value").filter(|s| s.starts_with(|c: char| c.is_ascii_uppercase()))?;
        let lowered = format!("{}{}", suffix[..1].to_ascii_lowercase(), &suffix[1..]);
        let datatype = if PRIMITIVES.contains(&lowered.as_str()) { lowered } else { suffix.to_owned() };
        Some((value, datatype))
    })
}

const PRIMITIVES: [&str; 19] = [
    "string",
    "boolean",
    "integer",
    "decimal",
    "dateTime",
    "date",
    "instant",
    "uri",
    "url",
    "canonical",
    "code",
    "id",
    "markdown",
    "time",
    "unsignedInt",
    "positiveInt",
    "base64Binary",
    "oid",
    "uuid",
];

fn string(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn push_token(entries: &mut IndexEntries, param: &str, system: Option<String>, code: Option<String>, text: Option<String>) {
    if system.is_some() || code.is_some() || text.is_some() {
        let text = text.map(|text| normalize_string(&text));
        entries.tokens.push(TokenEntry { param: param.to_owned(), system, code, text });
    }
}

/// The composite parameters the store indexes: a token first component and a token, quantity
/// or date second one (every R4 composite but five rarely used ones). Each element the
/// parameter's path selects gives one row per pair of its components' values.
fn index_composite(code: &str, components: &[Component], element: &Value, entries: &mut IndexEntries) {
    let [first, second] = components else { return };
    if first.kind != ParamKind::Token || !matches!(second.kind, ParamKind::Token | ParamKind::Quantity | ParamKind::Date) {
        return;
    }
    let component_values = |component: &Component| {
        let mut values = IndexEntries::default();
        for path in &component.paths {
            let mut found = Vec::new();
            walk(element, &path.steps, &path.datatype, &mut found);
            for (value, datatype) in found {
                index_value(ParamRef { code, kind: component.kind }, value, &datatype, &mut values);
            }
        }
        values
    };
    let firsts = component_values(first);
    let seconds = component_values(second);
    let second_rows: Vec<CompositeEntry> = match second.kind {
        ParamKind::Token => seconds
            .tokens
            .into_iter()
            .filter(|t| t.code.is_some())
            .map(|t| CompositeEntry { system2: t.system, code2: t.code, ..Default::default() })
            .collect(),
        ParamKind::Quantity => seconds
            .quantities
            .into_iter()
            .map(|q| CompositeEntry { system2: q.system, code2: q.code, unit2: q.unit, low: q.low, high: q.high, ..Default::default() })
            .collect(),
        _ => seconds.dates.into_iter().map(|d| CompositeEntry { low: d.low as f64, high: d.high as f64, ..Default::default() }).collect(),
    };
    for token in firsts.tokens.iter().filter(|t| t.code.is_some()) {
        for row in &second_rows {
            entries.composites.push(CompositeEntry {
                param: code.to_owned(),
                system: token.system.clone(),
                code: token.code.clone(),
                ..row.clone()
            });
        }
    }
}

fn push_string(entries: &mut IndexEntries, param: &str, text: &str) {
    if !text.is_empty() {
        entries.strings.push(StringEntry { param: param.to_owned(), normalized: normalize_string(text), exact: text.to_owned() });
    }
}

fn push_date(entries: &mut IndexEntries, param: &str, low: i64, high: i64) {
    entries.dates.push(DateEntry { param: param.to_owned(), low, high });
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64()
}

/// Which parameter a value is indexed for: its code and type.
#[derive(Clone, Copy)]
struct ParamRef<'a> {
    code: &'a str,
    kind: ParamKind,
}

impl<'a> From<&'a SearchParamDef> for ParamRef<'a> {
    fn from(param: &'a SearchParamDef) -> Self {
        Self { code: &param.code, kind: param.kind }
    }
}

fn index_value(param: ParamRef<'_>, value: &Value, datatype: &str, entries: &mut IndexEntries) {
    let code = param.code;
    if datatype == "Extension" {
        if let Some((inner, inner_type)) = extension_value(value) {
            index_value(param, inner, &inner_type, entries);
        }
        return;
    }
    match param.kind {
        ParamKind::Token => match datatype {
            "Coding" => push_token(entries, code, string(value, "system"), string(value, "code"), string(value, "display")),
            "CodeableConcept" => {
                if let Some(codings) = value.get("coding").and_then(Value::as_array) {
                    for coding in codings {
                        push_token(entries, code, string(coding, "system"), string(coding, "code"), string(coding, "display"));
                    }
                }
                if let Some(text) = string(value, "text") {
                    push_token(entries, code, None, None, Some(text));
                }
            }
            "Identifier" => {
                let type_text = value.get("type").and_then(|t| string(t, "text"));
                push_token(entries, code, string(value, "system"), string(value, "value"), type_text);
            }
            "ContactPoint" => push_token(entries, code, string(value, "system"), string(value, "value"), None),
            "boolean" => {
                if let Some(flag) = value.as_bool() {
                    push_token(entries, code, None, Some(flag.to_string()), None);
                }
            }
            "presence" => push_token(entries, code, None, Some("true".to_owned()), None),
            _ => {
                if let Some(text) = value.as_str() {
                    push_token(entries, code, None, Some(text.to_owned()), None);
                }
            }
        },
        ParamKind::String => match datatype {
            "HumanName" => {
                for key in ["text", "family"] {
                    if let Some(text) = value.get(key).and_then(Value::as_str) {
                        push_string(entries, code, text);
                    }
                }
                for key in ["given", "prefix", "suffix"] {
                    for text in value.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                        push_string(entries, code, text);
                    }
                }
            }
            "Address" => {
                for key in ["text", "city", "district", "state", "postalCode", "country"] {
                    if let Some(text) = value.get(key).and_then(Value::as_str) {
                        push_string(entries, code, text);
                    }
                }
                for text in value.get("line").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                    push_string(entries, code, text);
                }
            }
            _ => {
                if let Some(text) = value.as_str() {
                    push_string(entries, code, text);
                }
            }
        },
        ParamKind::Date => match datatype {
            "Period" => {
                let low = value.get("start").and_then(Value::as_str).and_then(parse_range).map_or(MIN_MICROS, |(r, _)| r.low);
                let high = value.get("end").and_then(Value::as_str).and_then(parse_range).map_or(MAX_MICROS, |(r, _)| r.high);
                if value.get("start").is_some() || value.get("end").is_some() {
                    push_date(entries, code, low, high);
                }
            }
            "Timing" => {
                for event in value.get("event").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                    if let Some((range, _)) = parse_range(event) {
                        push_date(entries, code, range.low, range.high);
                    }
                }
                if let Some(bounds) = value.get("repeat").and_then(|r| r.get("boundsPeriod")) {
                    index_value(param, bounds, "Period", entries);
                }
            }
            _ => {
                if let Some((range, _)) = value.as_str().and_then(parse_range) {
                    push_date(entries, code, range.low, range.high);
                }
            }
        },
        ParamKind::Number => match datatype {
            "Range" => {
                let low = value.get("low").and_then(|q| q.get("value")).and_then(number);
                let high = value.get("high").and_then(|q| q.get("value")).and_then(number);
                if low.is_some() || high.is_some() {
                    entries.numbers.push(NumberEntry {
                        param: code.to_owned(),
                        low: low.unwrap_or(OPEN_LOW),
                        high: high.unwrap_or(OPEN_HIGH),
                    });
                }
            }
            _ => {
                if let Some(n) = number(value) {
                    entries.numbers.push(NumberEntry { param: code.to_owned(), low: n, high: n });
                }
            }
        },
        ParamKind::Quantity => match datatype {
            "Range" => {
                let low = value.get("low");
                let high = value.get("high");
                let unit_source = low.or(high);
                let low_value = low.and_then(|q| q.get("value")).and_then(number);
                let high_value = high.and_then(|q| q.get("value")).and_then(number);
                if let Some(unit_source) = unit_source
                    && (low_value.is_some() || high_value.is_some())
                {
                    entries.quantities.push(QuantityEntry {
                        param: code.to_owned(),
                        system: string(unit_source, "system"),
                        code: string(unit_source, "code"),
                        unit: string(unit_source, "unit"),
                        low: low_value.unwrap_or(OPEN_LOW),
                        high: high_value.unwrap_or(OPEN_HIGH),
                    });
                }
            }
            "Money" => {
                if let Some(amount) = value.get("value").and_then(number) {
                    entries.quantities.push(QuantityEntry {
                        param: code.to_owned(),
                        system: Some("urn:iso:std:iso:4217".to_owned()),
                        code: string(value, "currency"),
                        unit: None,
                        low: amount,
                        high: amount,
                    });
                }
            }
            "SampledData" => {}
            _ => {
                if let Some(amount) = value.get("value").and_then(number) {
                    entries.quantities.push(QuantityEntry {
                        param: code.to_owned(),
                        system: string(value, "system"),
                        code: string(value, "code"),
                        unit: string(value, "unit"),
                        low: amount,
                        high: amount,
                    });
                }
            }
        },
        ParamKind::Uri => {
            if let Some(uri) = value.as_str() {
                entries.uris.push(UriEntry { param: code.to_owned(), uri: uri.to_owned() });
            }
        }
        ParamKind::Reference => index_reference(param, value, datatype, entries),
        ParamKind::Composite | ParamKind::Special => {}
    }
}

fn index_reference(param: ParamRef<'_>, value: &Value, datatype: &str, entries: &mut IndexEntries) {
    let mut entry = ReferenceEntry { param: param.code.to_owned(), ..Default::default() };
    let reference_text = match datatype {
        "Reference" => {
            if let Some(identifier) = value.get("identifier") {
                entry.identifier_system = string(identifier, "system");
                entry.identifier_value = string(identifier, "value");
            }
            value.get("reference").and_then(Value::as_str)
        }
        "Attachment" => value.get("url").and_then(Value::as_str),
        _ => value.as_str(),
    };
    if let Some(text) = reference_text {
        match Reference::parse(text) {
            Reference::Literal { resource_type, id, base, .. } if base.is_none() || datatype == "Reference" => {
                entry.target_type = Some(resource_type);
                entry.target_id = Some(id.to_owned());
                if base.is_some() {
                    entry.url = Some(text.to_owned());
                }
            }
            // A contained resource: a value all the same (for `:missing`), kept as written.
            Reference::Contained(_) => entry.url = Some(text.to_owned()),
            _ => entry.url = Some(text.split('|').next().unwrap_or(text).to_owned()),
        }
    }
    if entry.target_id.is_some() || entry.url.is_some() || entry.identifier_value.is_some() {
        entries.references.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patient() -> Value {
        json!({
            "resourceType": "Patient",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9449305552"}],
            "name": [{"family": "Smíth", "given": ["Jane", "Q"]}],
            "telecom": [{"system": "phone", "value": "0123"}, {"system": "email", "value": "j@x"}],
            "gender": "female",
            "birthDate": "1970-02",
            "deceasedBoolean": false,
            "generalPractitioner": [{"reference": "Organization/A81001"}],
            "active": true
        })
    }

    #[test]
    fn indexes_a_patient() {
        let patient_type = ResourceType::parse("Patient").unwrap();
        let entries = extract(patient_type, "p1", &patient());
        assert!(entries.tokens.iter().any(|t| t.param == "identifier"
            && t.system.as_deref() == Some("https://fhir.nhs.uk/Id/nhs-number")
            && t.code.as_deref() == Some("9449305552")));
        assert!(entries.tokens.iter().any(|t| t.param == "phone" && t.code.as_deref() == Some("0123")));
        assert!(!entries.tokens.iter().any(|t| t.param == "phone" && t.code.as_deref() == Some("j@x")));
        assert!(entries.tokens.iter().any(|t| t.param == "gender" && t.code.as_deref() == Some("female")));
        assert!(entries.tokens.iter().any(|t| t.param == "deceased" && t.code.as_deref() == Some("false")));
        let mut alive = patient();
        alive.as_object_mut().unwrap().remove("deceasedBoolean");
        let entries = extract(patient_type, "p1", &alive);
        assert!(entries.tokens.iter().any(|t| t.param == "deceased" && t.code.as_deref() == Some("false")), "absent means not deceased");
        assert!(entries.strings.iter().any(|s| s.param == "family" && s.normalized == "smith" && s.exact == "Smíth"));
        assert!(entries.strings.iter().any(|s| s.param == "name" && s.normalized == "jane"));
        assert!(entries.dates.iter().any(|d| d.param == "birthdate"));
        assert!(entries.references.iter().any(|r| r.param == "general-practitioner"
            && r.target_type.map(|t| t.as_str()) == Some("Organization")
            && r.target_id.as_deref() == Some("A81001")));
        assert_eq!(entries.patient_compartment, vec!["p1".to_owned()]);
    }

    #[test]
    fn observation_joins_its_patients_compartment() {
        let observation = json!({
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "271649006"}], "text": "Systolic"},
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Practitioner/d1"}],
            "effectivePeriod": {"start": "2024-01-01"},
            "valueQuantity": {"value": 120.0, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
        });
        let entries = extract(ResourceType::parse("Observation").unwrap(), "o1", &observation);
        assert_eq!(entries.patient_compartment, vec!["p1".to_owned()]);
        assert!(entries.references.iter().any(|r| r.param == "patient" && r.target_id.as_deref() == Some("p1")));
        assert!(!entries.references.iter().any(|r| r.param == "patient" && r.target_id.as_deref() == Some("d1")));
        assert!(entries.quantities.iter().any(|q| q.param == "value-quantity" && q.low == 120.0 && q.code.as_deref() == Some("mm[Hg]")));
        assert!(entries.dates.iter().any(|d| d.param == "date" && d.high == MAX_MICROS));
        assert!(entries.tokens.iter().any(|t| t.param == "code" && t.text.as_deref() == Some("systolic")));
        assert!(entries.composites.iter().any(|c| c.param == "code-value-quantity"
            && c.code.as_deref() == Some("271649006")
            && c.code2.as_deref() == Some("mm[Hg]")
            && c.low == 120.0));
    }

    #[test]
    fn common_parameters_read_meta() {
        let resource = json!({"resourceType": "Flag", "meta": {"security": [{"system": "s", "code": "R"}], "tag": [{"code": "t"}], "profile": ["http://p"]}});
        let entries = extract(ResourceType::parse("Flag").unwrap(), "f", &resource);
        assert!(entries.tokens.iter().any(|t| t.param == "_security" && t.code.as_deref() == Some("R")));
        assert!(entries.tokens.iter().any(|t| t.param == "_tag" && t.code.as_deref() == Some("t")));
        assert!(
            entries.references.iter().any(|r| r.param == "_profile" && r.url.as_deref() == Some("http://p"))
                || entries.uris.iter().any(|u| u.param == "_profile" && u.uri == "http://p")
        );
    }

    #[test]
    fn normalizes_strings() {
        assert_eq!(normalize_string("Ångström ÉLAN"), "angstrom elan");
    }
}
