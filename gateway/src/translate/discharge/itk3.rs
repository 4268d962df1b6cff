//! ITK3 FHIR eDischarge (STU3, CareConnect): an `ITK-Message-Bundle-1` (a message Bundle whose
//! MessageHeader points at the document) or the `ITK-Document-Bundle-1` itself. Its Composition,
//! Patient, authors, Encounter and the section entries (Conditions, Procedures, Allergies and
//! MedicationStatements, directly or through the Lists ITK3 puts in sections) are read into the
//! shared model and rebuilt as R4 UK Core: STU3 status codes become R4 CodeableConcepts, section
//! XHTML is rebuilt from an allow-list, and the STU3 original is attached as sent.

use std::collections::HashMap;

use fhir_models::system::{NHS_NUMBER, ODS_ORGANIZATION_CODE, SDS_USER_ID};
use serde_json::{Value, json};

use super::{DISCHARGE_SUMMARY, build, narrative};
use super::{
    Discharge, DocumentError, EncounterDetails, Entry, EntryKind, Identifier, Organisation, Party, PatientDetails, Section, Translated,
};

const FORMAT: &str = "itk3";

/// Sections within sections (see the CDA reader).
const MAX_SECTION_DEPTH: usize = 8;

/// Document types that are discharge summaries (SNOMED CT, and LOINC for the generic one).
const DISCHARGE_CODES: &[&str] = &[DISCHARGE_SUMMARY.0, "163391000000107", "18842-5", "28655-9"];

/// Translate an ITK3 eDischarge into the R4 transaction.
pub fn translate(bytes: &[u8]) -> Result<Translated, DocumentError> {
    build(read(bytes)?, bytes)
}

fn fail(location: impl Into<String>, reason: impl Into<String>) -> DocumentError {
    DocumentError::new(FORMAT, location, reason)
}

/// The document's resources by every name a reference may use (`fullUrl`, `Type/id`), with
/// where each is.
struct Resources<'a> {
    by_reference: HashMap<String, (String, &'a Value)>,
}

impl<'a> Resources<'a> {
    fn new(entries: &'a [Value], base: &str) -> Self {
        let mut by_reference = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            let resource = &entry["resource"];
            let place = format!("{base}.entry[{index}].resource");
            if let Some(full_url) = entry["fullUrl"].as_str() {
                by_reference.insert(full_url.to_owned(), (place.clone(), resource));
            }
            if let (Some(kind), Some(id)) = (resource["resourceType"].as_str(), resource["id"].as_str()) {
                by_reference.insert(format!("{kind}/{id}"), (place.clone(), resource));
                if let Some(full_url) = entry["fullUrl"].as_str()
                    && let Some(base_url) = full_url.strip_suffix(&format!("{kind}/{id}"))
                {
                    by_reference.insert(format!("{base_url}{kind}/{id}"), (place, resource));
                }
            }
        }
        Self { by_reference }
    }

    /// The resource a Reference points at, if it is in the Bundle.
    fn resolve(&self, reference: &Value) -> Option<&(String, &'a Value)> {
        self.by_reference.get(reference["reference"].as_str()?)
    }
}

/// Read an ITK3 eDischarge Bundle.
pub fn read(bytes: &[u8]) -> Result<Discharge, DocumentError> {
    let root: Value = serde_json::from_slice(bytes)
        .map_err(|error| fail(format!("line {}, column {}", error.line(), error.column()), format!("not valid JSON: {error}")))?;
    if root["resourceType"] != "Bundle" {
        return Err(fail("resourceType", "an ITK3 eDischarge is a Bundle (an ITK message or an ITK document)"));
    }
    let (document, base) = match root["type"].as_str() {
        Some("document") => (&root, "Bundle".to_owned()),
        Some("message") => {
            let entries = root["entry"].as_array().map(Vec::as_slice).unwrap_or_default();
            match entries.iter().position(|e| e["resource"]["resourceType"] == "Bundle" && e["resource"]["type"] == "document") {
                Some(index) => (&entries[index]["resource"], format!("Bundle.entry[{index}].resource")),
                // ITK3 messages may carry the document's resources directly.
                None => (&root, "Bundle".to_owned()),
            }
        }
        other => return Err(fail("Bundle.type", format!("Bundle.type {other:?}: an ITK3 eDischarge is a message or a document Bundle"))),
    };
    let entries = document["entry"].as_array().map(Vec::as_slice).unwrap_or_default();
    let resources = Resources::new(entries, &base);
    let (composition_index, composition) = entries
        .iter()
        .enumerate()
        .find(|(_, e)| e["resource"]["resourceType"] == "Composition")
        .map(|(index, e)| (index, &e["resource"]))
        .ok_or_else(|| fail(format!("{base}.entry"), "the document has no Composition"))?;
    let at = |field: &str| format!("{base}.entry[{composition_index}].resource.{field}");

    let original_type = composition["type"]["coding"].as_array().cloned().unwrap_or_default();
    let title = composition["title"].as_str().map(str::to_owned);
    let is_discharge = original_type.iter().any(|c| c["code"].as_str().is_some_and(|code| DISCHARGE_CODES.contains(&code)))
        || title.as_deref().is_some_and(|t| t.to_ascii_lowercase().contains("discharge"));
    if !is_discharge {
        let codes: Vec<&str> = original_type.iter().filter_map(|c| c["code"].as_str()).collect();
        return Err(fail(at("type"), format!("this gateway files discharge summaries; a document of type {codes:?} is not one")));
    }
    let identifier = |value: &Value| match (value["system"].as_str(), value["value"].as_str()) {
        (Some(system), Some(value)) if !system.is_empty() && !value.trim().is_empty() => Some(Identifier::new(system, value.trim())),
        _ => None,
    };
    let set_id = identifier(&composition["identifier"]);
    let id = identifier(&document["identifier"]).or_else(|| set_id.clone());
    if id.is_none() {
        return Err(fail(
            at("identifier"),
            "the document needs an identifier with system and value (Bundle.identifier or Composition.identifier)",
        ));
    }
    let status = match composition["status"].as_str() {
        Some("preliminary") => "preliminary",
        Some("final") => "final",
        Some("amended") => "amended",
        Some("entered-in-error") => "entered-in-error",
        other => return Err(fail(at("status"), format!("status {other:?} is not preliminary, final, amended or entered-in-error"))),
    };
    let date = composition["date"].as_str().ok_or_else(|| fail(at("date"), "the Composition has no date"))?;
    check_date_time(date, &at("date"))?;
    let confidentiality = match composition["confidentiality"].as_str() {
        None => None,
        Some(code @ ("U" | "L" | "M" | "N" | "R" | "V")) => Some(code.to_owned()),
        Some(other) => return Err(fail(at("confidentiality"), format!("confidentiality {other:?} is not an HL7 v3 Confidentiality code"))),
    };

    let (patient_place, patient) =
        resources.resolve(&composition["subject"]).ok_or_else(|| fail(at("subject"), "the subject is not a Patient in the Bundle"))?;
    if patient["resourceType"] != "Patient" {
        return Err(fail(at("subject"), "the subject is not a Patient"));
    }
    let patient = read_patient(patient, patient_place)?;

    let mut authors = Vec::new();
    for (index, author) in composition["author"].as_array().into_iter().flatten().enumerate() {
        if let Some((_, resource)) = resources.resolve(author) {
            authors.extend(read_party(resource, &resources));
        } else if let Some(display) = author["display"].as_str() {
            authors.push(Party { name: Some(json!({"text": display})), ..Party::default() });
        } else {
            return Err(fail(at(&format!("author[{index}]")), "the author is not in the Bundle"));
        }
    }
    let custodian = resources.resolve(&composition["custodian"]).map(|(_, org)| read_organisation(org));
    let encounter = match resources.resolve(&composition["encounter"]) {
        Some((place, encounter)) => Some(read_encounter(encounter, place)?),
        None => None,
    };
    let set_key = set_id.clone().or_else(|| id.clone()).map(|i| i.to_string()).unwrap_or_default();
    let sections = composition["section"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(index, section)| read_section(section, &resources, &at(&format!("section[{index}]")), &set_key, 1))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Discharge {
        format: FORMAT,
        id,
        set_id,
        version: None,
        title: title.unwrap_or_else(|| DISCHARGE_SUMMARY.1.to_owned()),
        date: date.to_owned(),
        original_type,
        status,
        confidentiality,
        patient: Some(patient),
        authors,
        custodian,
        encounter,
        sections,
        original_content_type: "application/fhir+json",
        source_codings: fhir_models::json::codings(document).into_iter().map(|(s, c)| (s.to_owned(), c.to_owned())).collect(),
        digested: serde_json::to_vec(document).expect("a parsed JSON value serialises"),
    })
}

/// An R4 `dateTime`: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or a full time with seconds and a zone.
fn check_date_time(text: &str, place: &str) -> Result<(), DocumentError> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes.get(range).is_some_and(|part| part.iter().all(u8::is_ascii_digit));
    let date_ok = match bytes.len() {
        4 => digits(0..4),
        7 => digits(0..4) && bytes[4] == b'-' && digits(5..7),
        _ => digits(0..4) && bytes.get(4) == Some(&b'-') && digits(5..7) && bytes.get(7) == Some(&b'-') && digits(8..10),
    };
    let time_ok = bytes.len() <= 10 || {
        let zone = &text[19.min(text.len())..];
        let zone = zone.strip_prefix('.').map_or(zone, |fraction| fraction.trim_start_matches(|c: char| c.is_ascii_digit()));
        bytes.get(10) == Some(&b'T')
            && digits(11..13)
            && bytes.get(13) == Some(&b':')
            && digits(14..16)
            && bytes.get(16) == Some(&b':')
            && digits(17..19)
            && (zone == "Z" || (zone.len() == 6 && zone.starts_with(['+', '-']) && zone.as_bytes()[3] == b':'))
    };
    if date_ok && time_ok && fhir_models::datetime::parse_range(text).is_some() {
        Ok(())
    } else {
        Err(fail(place, format!("{text:?} is not an R4 dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss with Z or ±hh:mm)")))
    }
}

fn optional_date_time(resource: &Value, field: &str, place: &str) -> Result<Option<String>, DocumentError> {
    match resource[field].as_str() {
        Some(text) => check_date_time(text, &format!("{place}.{field}")).map(|()| Some(text.to_owned())),
        None => Ok(None),
    }
}

fn identifier_with(resource: &Value, system: &str) -> Option<String> {
    resource["identifier"].as_array()?.iter().find(|i| i["system"] == system)?["value"].as_str().map(|v| v.trim().to_owned())
}

fn read_patient(patient: &Value, place: &str) -> Result<PatientDetails, DocumentError> {
    let (index, nhs) =
        patient["identifier"].as_array().into_iter().flatten().enumerate().find(|(_, i)| i["system"] == NHS_NUMBER).ok_or_else(|| {
            fail(format!("{place}.identifier"), "the patient has no NHS number; a discharge summary is filed against one")
        })?;
    let nhs_number = fhir_models::NhsNumber::parse(nhs["value"].as_str().unwrap_or_default())
        .map_err(|error| fail(format!("{place}.identifier[{index}].value"), format!("the NHS number is not valid: {error}")))?;
    let gender = match patient["gender"].as_str() {
        None => None,
        Some("male") => Some("male"),
        Some("female") => Some("female"),
        Some("other") => Some("other"),
        Some("unknown") => Some("unknown"),
        Some(other) => return Err(fail(format!("{place}.gender"), format!("gender {other:?} is not male, female, other or unknown"))),
    };
    let birth_date = match patient["birthDate"].as_str() {
        Some(date) => {
            check_date_time(date, &format!("{place}.birthDate"))?;
            Some(date.to_owned())
        }
        None => None,
    };
    Ok(PatientDetails { nhs_number, name: patient["name"].get(0).map(human_name), gender, birth_date })
}

/// The parts of a HumanName R4 shares with STU3.
fn human_name(name: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in ["use", "text", "family", "given", "prefix", "suffix"] {
        if let Some(value) = name.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    Value::Object(out)
}

fn read_organisation(org: &Value) -> Organisation {
    Organisation { ods: identifier_with(org, ODS_ORGANIZATION_CODE), name: org["name"].as_str().map(str::to_owned) }
}

/// An author: a Practitioner, a PractitionerRole (its practitioner and organisation), or an
/// Organization.
fn read_party(resource: &Value, resources: &Resources<'_>) -> Option<Party> {
    let practitioner =
        |p: &Value| Party { sds_user_id: identifier_with(p, SDS_USER_ID), name: p["name"].get(0).map(human_name), organisation: None };
    match resource["resourceType"].as_str()? {
        "Practitioner" => Some(practitioner(resource)),
        "Organization" => Some(Party { organisation: Some(read_organisation(resource)), ..Party::default() }),
        "PractitionerRole" => {
            let mut party = resources.resolve(&resource["practitioner"]).map(|(_, p)| practitioner(p)).unwrap_or_default();
            party.organisation = resources.resolve(&resource["organization"]).map(|(_, org)| read_organisation(org));
            Some(party)
        }
        _ => None,
    }
}

fn read_encounter(encounter: &Value, place: &str) -> Result<EncounterDetails, DocumentError> {
    let identifier = encounter["identifier"].as_array().into_iter().flatten().find_map(|i| {
        Some(Identifier::new(i["system"].as_str().filter(|s| !s.is_empty())?, i["value"].as_str().filter(|v| !v.trim().is_empty())?))
    });
    let period = &encounter["period"];
    let start = optional_date_time(period, "start", &format!("{place}.period"))?;
    let end = optional_date_time(period, "end", &format!("{place}.period"))?;
    let class = encounter["class"].as_object().filter(|c| c.contains_key("code")).map(|c| {
        let mut class = Value::Object(c.clone());
        // STU3 named v3 code systems under hl7.org/fhir/v3/; R4 under terminology.hl7.org.
        if let Some(name) = class["system"].as_str().and_then(|s| s.strip_prefix("http://hl7.org/fhir/v3/")) {
            class["system"] = json!(format!("http://terminology.hl7.org/CodeSystem/v3-{name}"));
        }
        class
    });
    Ok(EncounterDetails { identifier, start, end, class })
}

fn read_section(section: &Value, resources: &Resources<'_>, place: &str, set_key: &str, depth: usize) -> Result<Section, DocumentError> {
    if depth > MAX_SECTION_DEPTH {
        return Err(fail(place, format!("sections nest more than {MAX_SECTION_DEPTH} deep")));
    }
    let narrative = match section["text"]["div"].as_str() {
        Some(div) => narrative::from_xhtml(div).map_err(|reason| fail(format!("{place}.text.div"), reason))?,
        None => None,
    };
    let mut out = Section {
        title: section["title"].as_str().map(str::to_owned),
        codes: section["code"]["coding"].as_array().cloned().unwrap_or_default(),
        narrative,
        ..Section::default()
    };
    // Section entries, with ITK3's Lists opened up.
    let mut targets: Vec<(String, &Value)> = Vec::new();
    for (index, reference) in section["entry"].as_array().into_iter().flatten().enumerate() {
        let Some((target_place, resource)) = resources.resolve(reference) else {
            return Err(fail(format!("{place}.entry[{index}]"), "the entry is not in the Bundle"));
        };
        if resource["resourceType"] == "List" {
            for (item_index, item) in resource["entry"].as_array().into_iter().flatten().enumerate() {
                match resources.resolve(&item["item"]) {
                    Some((item_place, item)) => targets.push((item_place.clone(), item)),
                    None => return Err(fail(format!("{target_place}.entry[{item_index}].item"), "the List item is not in the Bundle")),
                }
            }
        } else {
            targets.push((target_place.clone(), resource));
        }
    }
    for (number, (target_place, resource)) in targets.into_iter().enumerate() {
        if let Some(entry) = read_entry(resource, &target_place, resources, &format!("{set_key}/{place}/{number}"))? {
            out.entries.push(entry);
        }
    }
    out.sections = section["section"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(index, child)| read_section(child, resources, &format!("{place}.section[{index}]"), set_key, depth + 1))
        .collect::<Result<_, _>>()?;
    Ok(out)
}

/// An STU3 status code checked against the R4 codes it maps to.
fn status(resource: &Value, field: &str, place: &str, map: &[(&str, Option<&str>)]) -> Result<Option<String>, DocumentError> {
    let Some(code) = resource[field].as_str() else { return Ok(None) };
    match map.iter().find(|(stu3, _)| *stu3 == code) {
        Some((_, r4)) => Ok(r4.map(str::to_owned)),
        None => {
            let known: Vec<&str> = map.iter().map(|(stu3, _)| *stu3).collect();
            Err(fail(format!("{place}.{field}"), format!("{code:?} is not one of {}", known.join(", "))))
        }
    }
}

fn read_entry(resource: &Value, place: &str, resources: &Resources<'_>, fallback_key: &str) -> Result<Option<Entry>, DocumentError> {
    let kind = match resource["resourceType"].as_str() {
        Some("Condition") => EntryKind::Condition,
        Some("Procedure") => EntryKind::Procedure,
        Some("AllergyIntolerance") => EntryKind::Allergy,
        Some("MedicationStatement") => EntryKind::Medication,
        // Others (Observations, Flags, Devices…) stay in the narrative and the original.
        _ => return Ok(None),
    };
    let code = match kind {
        EntryKind::Medication => match resource.get("medicationCodeableConcept") {
            Some(code) => Some(code.clone()),
            None => resources.resolve(&resource["medicationReference"]).map(|(_, medication)| medication["code"].clone()),
        },
        _ => resource.get("code").cloned(),
    };
    let Some(code) = code.filter(|c| c["coding"].as_array().is_some_and(|c| !c.is_empty()) || c["text"].is_string()) else {
        return Ok(None);
    };
    let key = resource["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|i| {
            Some(Identifier::new(i["system"].as_str().filter(|s| !s.is_empty())?, i["value"].as_str().filter(|v| !v.is_empty())?))
        })
        .unwrap_or_else(|| Identifier::new("urn:hie:itk3:entry", fallback_key));
    let mut entry = Entry {
        kind,
        key,
        code,
        start: None,
        end: None,
        status: None,
        verification: None,
        text: None,
        reactions: Vec::new(),
        criticality: None,
        labels: resource["meta"]["security"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|label| label["system"].as_str().is_some_and(consent::access::is_label_system))
            .filter_map(|label| label["code"].as_str().and_then(super::entry_label))
            .collect(),
    };
    match kind {
        EntryKind::Condition => {
            let clinical = [
                ("active", Some("active")),
                ("recurrence", Some("recurrence")),
                ("inactive", Some("inactive")),
                ("remission", Some("remission")),
                ("resolved", Some("resolved")),
            ];
            entry.status = status(resource, "clinicalStatus", place, &clinical)?;
            let verification = [
                ("provisional", Some("provisional")),
                ("differential", Some("differential")),
                ("confirmed", Some("confirmed")),
                ("refuted", Some("refuted")),
                ("entered-in-error", Some("entered-in-error")),
                ("unknown", None),
            ];
            entry.verification = status(resource, "verificationStatus", place, &verification)?;
            entry.start = optional_date_time(resource, "onsetDateTime", place)?;
            entry.end = optional_date_time(resource, "abatementDateTime", place)?;
        }
        EntryKind::Procedure => {
            let map = [
                ("preparation", Some("preparation")),
                ("in-progress", Some("in-progress")),
                ("suspended", Some("on-hold")),
                ("aborted", Some("stopped")),
                ("completed", Some("completed")),
                ("entered-in-error", Some("entered-in-error")),
                ("unknown", Some("unknown")),
            ];
            entry.status = status(resource, "status", place, &map)?;
            if resource["notDone"] == true {
                entry.status = Some("not-done".into());
            }
            entry.start = optional_date_time(resource, "performedDateTime", place)?;
            if entry.start.is_none() {
                entry.start = optional_date_time(&resource["performedPeriod"], "start", &format!("{place}.performedPeriod"))?;
                entry.end = optional_date_time(&resource["performedPeriod"], "end", &format!("{place}.performedPeriod"))?;
            }
        }
        EntryKind::Allergy => {
            let clinical = [("active", Some("active")), ("inactive", Some("inactive")), ("resolved", Some("resolved"))];
            entry.status = status(resource, "clinicalStatus", place, &clinical)?;
            let verification = [
                ("unconfirmed", Some("unconfirmed")),
                ("confirmed", Some("confirmed")),
                ("refuted", Some("refuted")),
                ("entered-in-error", Some("entered-in-error")),
            ];
            entry.verification = status(resource, "verificationStatus", place, &verification)?;
            if entry.verification.as_deref() == Some("entered-in-error") {
                // R4 ait-2: no clinical status on an allergy entered in error.
                entry.status = None;
            }
            entry.start = optional_date_time(resource, "onsetDateTime", place)?;
            entry.criticality = status(
                resource,
                "criticality",
                place,
                &[("low", Some("low")), ("high", Some("high")), ("unable-to-assess", Some("unable-to-assess"))],
            )?;
            for (index, reaction) in resource["reaction"].as_array().into_iter().flatten().enumerate() {
                let manifestation = reaction["manifestation"].as_array().cloned().unwrap_or_default();
                if manifestation.is_empty() {
                    continue;
                }
                let mut out = json!({"manifestation": manifestation});
                let severity = [("mild", Some("mild")), ("moderate", Some("moderate")), ("severe", Some("severe"))];
                if let Some(severity) = status(reaction, "severity", &format!("{place}.reaction[{index}]"), &severity)? {
                    out["severity"] = json!(severity);
                }
                if let Some(substance) = reaction.get("substance") {
                    out["substance"] = substance.clone();
                }
                entry.reactions.push(out);
            }
            entry.text = resource["note"].get(0).and_then(|n| n["text"].as_str()).map(str::to_owned);
        }
        EntryKind::Medication => {
            let map = [
                ("active", Some("active")),
                ("completed", Some("completed")),
                ("entered-in-error", Some("entered-in-error")),
                ("intended", Some("intended")),
                ("stopped", Some("stopped")),
                ("on-hold", Some("on-hold")),
            ];
            entry.status = status(resource, "status", place, &map)?;
            // STU3 `taken`: `n` is a medicine not taken (R4 has it as a status).
            if resource["taken"] == "n" {
                entry.status = Some("not-taken".into());
            }
            entry.start = optional_date_time(resource, "effectiveDateTime", place)?;
            if entry.start.is_none() {
                entry.start = optional_date_time(&resource["effectivePeriod"], "start", &format!("{place}.effectivePeriod"))?;
                entry.end = optional_date_time(&resource["effectivePeriod"], "end", &format!("{place}.effectivePeriod"))?;
            }
            let doses: Vec<String> = resource["dosage"].as_array().into_iter().flatten().filter_map(dosage_text).collect();
            entry.text = (!doses.is_empty()).then(|| doses.join("; "));
        }
    }
    Ok(Some(entry))
}

/// A dosage in words: its text, else what its structure says (dose, timing, route), so a dose
/// sent only as structure is not lost.
fn dosage_text(dosage: &Value) -> Option<String> {
    if let Some(text) = dosage["text"].as_str().filter(|t| !t.trim().is_empty()) {
        return Some(text.to_owned());
    }
    let mut parts: Vec<String> = Vec::new();
    let dose = &dosage["doseQuantity"];
    if let Some(value) = dose["value"].as_f64().or_else(|| dose["value"].as_i64().map(|v| v as f64)) {
        parts.push(format!("{value} {}", dose["unit"].as_str().or(dose["code"].as_str()).unwrap_or_default()).trim().to_owned());
    }
    let concept_text = |concept: &Value| concept["text"].as_str().or_else(|| concept["coding"][0]["display"].as_str()).map(str::to_owned);
    parts.extend(concept_text(&dosage["timing"]["code"]));
    let repeat = &dosage["timing"]["repeat"];
    if let (Some(frequency), Some(period), Some(unit)) =
        (repeat["frequency"].as_i64(), repeat["period"].as_f64(), repeat["periodUnit"].as_str())
    {
        parts.push(format!("{frequency} times every {period} {unit}"));
    }
    parts.extend(concept_text(&dosage["route"]));
    parts.extend(dosage["patientInstruction"].as_str().map(str::to_owned));
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Value {
        let (_, bytes) = crate::synthetic::discharge::discharge_summaries(crate::translate::Format::Itk3, &[3]).remove(0);
        serde_json::from_slice(&bytes).unwrap()
    }

    fn document_entry<'a>(message: &'a mut Value, kind: &str) -> &'a mut Value {
        message["entry"][1]["resource"]["entry"].as_array_mut().unwrap().iter_mut().find(|e| e["resource"]["resourceType"] == kind).unwrap()
    }

    #[test]
    fn stu3_codes_become_r4_ones() {
        let mut message = summary();
        document_entry(&mut message, "MedicationStatement")["resource"]["taken"] = json!("n");
        let allergy = &mut document_entry(&mut message, "AllergyIntolerance")["resource"];
        allergy["criticality"] = json!("high");
        allergy["reaction"] = json!([{"manifestation": [{"text": "Rash"}], "severity": "severe"}]);
        let read = read(&serde_json::to_vec(&message).unwrap()).unwrap();
        let class = &read.encounter.as_ref().unwrap().class.as_ref().unwrap()["system"];
        assert_eq!(class, "http://terminology.hl7.org/CodeSystem/v3-ActCode");
        let entries: Vec<&Entry> = read.sections.iter().flat_map(|s| &s.entries).collect();
        let medicine = entries.iter().find(|e| e.kind == EntryKind::Medication).unwrap();
        assert_eq!(medicine.status.as_deref(), Some("not-taken"));
        let allergy = entries.iter().find(|e| e.kind == EntryKind::Allergy).unwrap();
        assert_eq!(allergy.criticality.as_deref(), Some("high"));
        assert_eq!(allergy.reactions, [json!({"manifestation": [{"text": "Rash"}], "severity": "severe"})]);
    }

    #[test]
    fn an_entry_s_own_labels_are_kept_on_what_it_becomes() {
        let mut message = summary();
        document_entry(&mut message, "AllergyIntolerance")["resource"]["meta"] =
            json!({"security": [{"system": "http://hl7.org/fhir/v3/ActCode", "code": "NOPAT"}, {"system": "urn:other", "code": "NOPAT"}]});
        let translated = translate(&serde_json::to_vec(&message).unwrap()).unwrap();
        let labelled: Vec<&Value> = translated.bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| &entry["resource"])
            .filter(|resource| resource["meta"]["security"].as_array().is_some_and(|labels| !labels.is_empty()))
            .collect();
        assert_eq!(labelled.len(), 1, "only the entry that carried it");
        assert_eq!(labelled[0]["resourceType"], "AllergyIntolerance");
        assert_eq!(
            labelled[0]["meta"]["security"],
            json!([{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "NOPAT"}])
        );
    }

    #[test]
    fn structured_doses_are_kept_in_words() {
        let dosage = json!({"doseQuantity": {"value": 500, "unit": "mg"}, "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}}, "route": {"text": "Oral"}});
        assert_eq!(dosage_text(&dosage).as_deref(), Some("500 mg, 3 times every 1 d, Oral"));
        assert_eq!(dosage_text(&json!({})), None);
    }

    #[test]
    fn date_times_must_be_r4_ones() {
        for good in ["2026", "2026-03", "2026-03-01", "2026-03-01T14:30:00Z", "2026-03-01T14:30:00.5+01:00"] {
            assert!(check_date_time(good, "x").is_ok(), "{good}");
        }
        for bad in ["2026-03-01T14:30", "2026-03-01T14:30:00", "2026-13-01", "26-03-01", "2026-03-01T14:30:00+0100", "yesterday"] {
            assert!(check_date_time(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn the_same_document_bare_or_in_a_message_is_the_same_document() {
        let message = summary();
        let bare = message["entry"][1]["resource"].clone();
        let (one, two) =
            (translate(&serde_json::to_vec(&message).unwrap()).unwrap(), translate(&serde_json::to_vec(&bare).unwrap()).unwrap());
        assert_eq!((one.digest, one.provenance_id), (two.digest, two.provenance_id));
    }

    #[test]
    fn errors_name_the_fhirpath_and_the_reason() {
        let mut message = summary();
        document_entry(&mut message, "Patient")["resource"]["identifier"][0]["value"] = json!("9449305553");
        let error = read(&serde_json::to_vec(&message).unwrap()).unwrap_err();
        assert!(
            error.location.starts_with("Bundle.entry[1].resource.entry[") && error.location.ends_with("].resource.identifier[0].value"),
            "{error}"
        );
        assert!(error.reason.contains("NHS number is not valid"), "{error}");
        assert!(read(b"{\"resourceType\": \"Bundle\",\n \"type\": }").unwrap_err().location.starts_with("line 2, column"));
        let mut deep = json!({"title": "x"});
        for _ in 0..12 {
            deep = json!({"title": "x", "section": [deep]});
        }
        let mut message = summary();
        message["entry"][1]["resource"]["entry"][0]["resource"]["section"] = json!([deep]);
        assert!(read(&serde_json::to_vec(&message).unwrap()).unwrap_err().reason.contains("nest more than 8 deep"));
    }
}
