//! ORU^R01: results. Each OBR becomes a DiagnosticReport upserted on its filler order number,
//! each OBX under it an Observation upserted on the report's number and the OBX's set id (or
//! OBX-21), so corrected results replace the earlier ones. Encapsulated data (a PDF report)
//! becomes the report's `presentedForm`.

use serde_json::{Map, Value, json};

use super::Context;
use super::datatypes::{Identifier, attachment, codeable_concept, entity_identifier, timestamp};
use super::error::{ErrorCode, Hl7Error};
use super::message::Segment;
use super::patient::{self, PatientEntry};
use crate::translate::transaction::{TransactionBuilder, query_value};

const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

/// An Observation not yet added, and the condition it is upserted on.
type PendingObservation = (Map<String, Value>, String);

struct Report {
    resource: Map<String, Value>,
    key: Identifier,
    results: Vec<String>,
    conclusion: Vec<String>,
    presented: Vec<Value>,
    effective: Option<String>,
    issued: Option<String>,
}

pub fn translate(context: &Context<'_, '_>, builder: &mut TransactionBuilder) -> Result<(), Hl7Error> {
    let segments = context.message.segments();
    let mut patient: Option<PatientEntry> = None;
    let mut order: Option<&Segment<'_>> = None;
    let mut report: Option<Report> = None;
    let mut observation: Option<PendingObservation> = None;
    let mut reports = 0;
    for (index, segment) in segments.iter().enumerate() {
        match segment.id {
            "PID" => {
                flush_observation(&mut observation, &mut report, builder);
                flush_report(&mut report, builder);
                let pd1 = segments.get(index + 1).filter(|next| next.id == "PD1");
                patient = Some(patient::upsert(context, segment, pd1, builder, patient::Demographics::CreateIfMissing)?);
                order = None;
            }
            "ORC" => {
                flush_observation(&mut observation, &mut report, builder);
                flush_report(&mut report, builder);
                order = Some(segment);
            }
            "OBR" => {
                flush_observation(&mut observation, &mut report, builder);
                flush_report(&mut report, builder);
                let Some(patient) = &patient else {
                    return Err(Hl7Error::new(
                        ErrorCode::SegmentSequence,
                        segment.locate(1),
                        "ORU^R01 without a PID before its OBR: results are filed against a patient",
                    ));
                };
                report = Some(new_report(context, segment, order, patient)?);
                reports += 1;
            }
            "OBX" => {
                flush_observation(&mut observation, &mut report, builder);
                let Some(current) = report.as_mut() else {
                    return Err(Hl7Error::new(ErrorCode::SegmentSequence, segment.locate(1), "an OBX must follow the OBR it reports on"));
                };
                let subject = patient.as_ref().expect("a report has a patient").full_url.clone();
                observation = new_observation(context, segment, current, &subject, builder)?;
            }
            "NTE" => {
                let text: Vec<String> = segment.field(3).repetitions().filter_map(|r| r.full_text().map(|t| t.into_owned())).collect();
                if text.is_empty() {
                    continue;
                }
                match (&mut observation, &mut report) {
                    (Some((resource, _)), _) => {
                        let notes = resource.entry("note").or_insert_with(|| json!([]));
                        notes.as_array_mut().expect("an array").push(json!({"text": text.join("\n")}));
                    }
                    (None, Some(report)) => report.conclusion.push(text.join("\n")),
                    (None, None) => {}
                }
            }
            _ => {}
        }
    }
    flush_observation(&mut observation, &mut report, builder);
    flush_report(&mut report, builder);
    if reports == 0 {
        context.message.required("OBR", "ORU^R01 carries results under an OBR")?;
    }
    Ok(())
}

fn new_report(context: &Context<'_, '_>, obr: &Segment<'_>, orc: Option<&Segment<'_>>, patient: &PatientEntry) -> Result<Report, Hl7Error> {
    let authority = context.header.authority();
    let filler = entity_identifier(&obr.field(3).first(), authority, "filler-order-number")
        .or_else(|| orc.and_then(|orc| entity_identifier(&orc.field(3).first(), authority, "filler-order-number")));
    let placer = entity_identifier(&obr.field(2).first(), authority, "placer-order-number")
        .or_else(|| orc.and_then(|orc| entity_identifier(&orc.field(2).first(), authority, "placer-order-number")));
    let Some(key) = filler.as_ref().or(placer.as_ref()) else {
        return Err(Hl7Error::new(
            ErrorCode::RequiredFieldMissing,
            obr.locate(3),
            "OBR-3 (filler order number) or OBR-2 (placer order number) is required to identify the report",
        ));
    };
    let key = Identifier { type_code: None, ..key.clone() };
    let code = codeable_concept(&obr.field(4).first()).ok_or_else(|| {
        Hl7Error::new(ErrorCode::RequiredFieldMissing, obr.locate(4), "OBR-4 (universal service identifier) is required: what was tested")
    })?;
    let mut resource = Map::new();
    resource.insert("resourceType".into(), json!("DiagnosticReport"));
    let identifiers: Vec<Value> = filler.iter().map(|i| i.typed("FILL")).collect();
    resource.insert("identifier".into(), Value::Array(if identifiers.is_empty() { vec![key.to_json()] } else { identifiers }));
    if let Some(placer) = &placer {
        resource.insert("basedOn".into(), json!([{"type": "ServiceRequest", "identifier": placer.typed("PLAC")}]));
    }
    let status = match obr.value(25).as_deref() {
        None => "unknown",
        Some("O" | "I" | "S") => "registered",
        Some("A") => "partial",
        Some("P" | "R") => "preliminary",
        Some("C") => "corrected",
        Some("F") => "final",
        Some("X") => "cancelled",
        // Y, Z and codes outside table 0123: the sender's status is not one FHIR knows.
        Some(_) => "unknown",
    };
    resource.insert("status".into(), json!(status));
    let section = obr.value(24).map(|code| code.into_owned()).unwrap_or_else(|| "LAB".to_owned());
    resource.insert("category".into(), json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": section}]}]));
    resource.insert("code".into(), code);
    resource.insert("subject".into(), json!({"reference": patient.full_url}));
    let effective = obr.value(7).map(|t| timestamp(&t, &obr.locate(7))).transpose()?.map(|t| t.text);
    let issued = obr.value(22).map(|t| timestamp(&t, &obr.locate(22))).transpose()?.and_then(|t| t.instant().map(str::to_owned));
    Ok(Report { resource, key, results: Vec::new(), conclusion: Vec::new(), presented: Vec::new(), effective, issued })
}

/// An OBX as an Observation; `None` for encapsulated data, which goes to the report instead.
fn new_observation(
    context: &Context<'_, '_>,
    obx: &Segment<'_>,
    report: &mut Report,
    subject: &str,
    builder: &TransactionBuilder,
) -> Result<Option<PendingObservation>, Hl7Error> {
    let value_type = obx.value(2).map(|t| t.to_ascii_uppercase());
    let code = codeable_concept(&obx.field(3).first()).ok_or_else(|| {
        Hl7Error::new(ErrorCode::RequiredFieldMissing, obx.locate(3), "OBX-3 (observation identifier) is required: what was observed")
    })?;
    if value_type.as_deref() == Some("ED") {
        // An ED without data (a report whose PDF was stripped upstream) attaches nothing.
        for (index, ed) in obx.field(5).repetitions().enumerate().filter(|(_, ed)| ed.component(5).full_text().is_some()) {
            let title = obx.field(3).first().component(2).text();
            report.presented.push(attachment(&ed, title.as_deref(), &obx.locate(5).repetition(index + 1))?);
        }
        return Ok(None);
    }
    let authority = context.header.authority();
    let key = match entity_identifier(&obx.field(21).first(), authority, "observation-id") {
        Some(instance) => instance,
        None => {
            let set_id = obx.value(1).map(|s| s.into_owned()).unwrap_or_else(|| obx.sequence.to_string());
            let sub_id = obx.value(4).map(|s| format!(".{s}")).unwrap_or_default();
            Identifier {
                system: format!("{}:observation", report.key.system),
                value: format!("{}-{set_id}{sub_id}", report.key.value),
                is_nhs_number: false,
                type_code: None,
            }
        }
    };
    let status = match obx.value(11).as_deref() {
        None => "unknown",
        Some("F" | "U" | "V") => "final",
        Some("C") => "corrected",
        Some("A") => "amended",
        Some("P" | "S") => "preliminary",
        Some("R" | "I" | "O") => "registered",
        Some("X" | "N") => "cancelled",
        Some("D" | "W") => "entered-in-error",
        // Codes outside table 0085: the sender's status is not one FHIR knows.
        Some(_) => "unknown",
    };
    let mut resource = Map::new();
    resource.insert("resourceType".into(), json!("Observation"));
    resource.insert("identifier".into(), json!([key.to_json()]));
    resource.insert("status".into(), json!(status));
    let category = if report.resource["category"][0]["coding"][0]["code"] == "LAB" { "laboratory" } else { "exam" };
    resource.insert("category".into(), json!([{"coding": [{"system": OBSERVATION_CATEGORY, "code": category}]}]));
    resource.insert("code".into(), code);
    resource.insert("subject".into(), json!({"reference": subject}));
    let effective = obx.value(14).map(|t| timestamp(&t, &obx.locate(14))).transpose()?.map(|t| t.text).or(report.effective.clone());
    if let Some(effective) = effective {
        resource.insert("effectiveDateTime".into(), json!(effective));
    }
    if let Some(issued) = &report.issued {
        resource.insert("issued".into(), json!(issued));
    }
    if let Some((key_name, value)) = value(obx, value_type.as_deref())? {
        resource.insert(key_name.into(), value);
    }
    let interpretations: Vec<Value> = obx
        .field(8)
        .repetitions()
        .filter_map(|flag| flag.component(1).text())
        .map(|flag| json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0078", "code": flag}]}))
        .collect();
    if !interpretations.is_empty() {
        resource.insert("interpretation".into(), Value::Array(interpretations));
    }
    if let Some(range) = obx.value(7).and_then(|text| reference_range(&text, obx.field(6).first().component(1).text().as_deref())) {
        resource.insert("referenceRange".into(), json!([range]));
    }
    let mut condition = format!("identifier={}", query_value(&key.search_token()));
    if builder.find("Observation", &condition).is_some() {
        // Two OBX with one set id under one OBR: the second is told apart by its position, which
        // a re-sent copy of the message repeats.
        let key = Identifier { value: format!("{}~{}", key.value, obx.sequence), ..key };
        resource.insert("identifier".into(), json!([key.to_json()]));
        condition = format!("identifier={}", query_value(&key.search_token()));
    }
    Ok(Some((resource, condition)))
}

/// OBX-5 by OBX-2's data type: `(element name, value)`.
fn value(obx: &Segment<'_>, value_type: Option<&str>) -> Result<Option<(&'static str, Value)>, Hl7Error> {
    let field = obx.field(5);
    if field.is_empty() {
        return Ok(None);
    }
    let location = obx.locate(5);
    let number = |text: &str| -> Result<Value, Hl7Error> {
        let trimmed = text.trim();
        trimmed.parse::<f64>().ok().filter(|n| n.is_finite()).and_then(serde_json::Number::from_f64).map(Value::Number).ok_or_else(|| {
            Hl7Error::new(ErrorCode::DataType, location.clone(), format!("OBX-5 {trimmed:?} is not a number, as OBX-2 (NM) says it is"))
        })
    };
    let unit = obx.field(6).first();
    let quantity = |value: Value| {
        let mut quantity = Map::new();
        quantity.insert("value".into(), value);
        let code = unit.component(1).text();
        if let Some(text) = unit.component(2).text().or_else(|| code.clone()) {
            quantity.insert("unit".into(), json!(text));
        }
        let ucum = unit.component(3).text().is_some_and(|s| matches!(s.to_ascii_uppercase().as_str(), "UCUM" | "ANS+"));
        if let (true, Some(code)) = (ucum, code) {
            quantity.insert("system".into(), json!("http://unitsofmeasure.org"));
            quantity.insert("code".into(), json!(code));
        }
        Value::Object(quantity)
    };
    let joined_text = || field.repetitions().filter_map(|r| r.full_text().map(|t| t.into_owned())).collect::<Vec<_>>().join("\n");
    Ok(Some(match value_type {
        Some("NM") => ("valueQuantity", quantity(number(&joined_text())?)),
        Some("SN") => {
            let sn = field.first();
            let comparator = sn.component(1).text();
            let first = sn.component(2).text();
            let separator = sn.component(3).text();
            let second = sn.component(4).text();
            match (comparator.as_deref(), first, separator.as_deref(), second) {
                (None | Some("=" | "<" | ">" | "<=" | ">="), Some(first), None, None) => {
                    let mut value = quantity(number(&first)?);
                    if let Some(comparator) = comparator.filter(|c| c != "=") {
                        value["comparator"] = json!(comparator);
                    }
                    ("valueQuantity", value)
                }
                (None, Some(low), Some("-"), Some(high)) => {
                    ("valueRange", json!({"low": quantity(number(&low)?), "high": quantity(number(&high)?)}))
                }
                (None, Some(numerator), Some(":" | "/"), Some(denominator)) => {
                    ("valueRatio", json!({"numerator": {"value": number(&numerator)?}, "denominator": {"value": number(&denominator)?}}))
                }
                _ => ("valueString", json!(sn.full_text().map(|t| t.replace('^', " ")).unwrap_or_default())),
            }
        }
        Some("CE" | "CWE" | "CNE" | "CF" | "CV") => match codeable_concept(&field.first()) {
            Some(concept) => ("valueCodeableConcept", concept),
            None => return Ok(None),
        },
        Some("DT" | "TS" | "DTM") => {
            let text = field.first().component(1).text().unwrap_or_default();
            ("valueDateTime", json!(timestamp(&text, &location)?.text))
        }
        Some("TM") => {
            let text = field.first().component(1).text().unwrap_or_default();
            let digits: String = text.chars().take_while(|c| c.is_ascii_digit()).collect();
            if !matches!(digits.len(), 2 | 4 | 6) {
                return Err(Hl7Error::new(ErrorCode::DataType, location, format!("OBX-5 {text:?} is not an HL7 time (HHMM[SS])")));
            }
            let part = |i: usize| digits.get(i..i + 2).unwrap_or("00");
            ("valueTime", json!(format!("{}:{}:{}", part(0), part(2), part(4))))
        }
        _ => ("valueString", json!(joined_text())),
    }))
}

/// OBX-7: `3.5-5.0`, `<5`, `>3`; anything else is kept as text.
fn reference_range(text: &str, unit: Option<&str>) -> Option<Value> {
    let quantity = |number: &str| -> Option<Value> {
        let value = serde_json::Number::from_f64(number.trim().parse::<f64>().ok()?)?;
        Some(match unit {
            Some(unit) => json!({"value": value, "unit": unit}),
            None => json!({"value": value}),
        })
    };
    let trimmed = text.trim();
    if let Some(high) = trimmed.strip_prefix('<').map(|t| t.trim_start_matches('=')) {
        return quantity(high).map(|high| json!({"high": high, "text": trimmed}));
    }
    if let Some(low) = trimmed.strip_prefix('>').map(|t| t.trim_start_matches('=')) {
        return quantity(low).map(|low| json!({"low": low, "text": trimmed}));
    }
    if let Some((low, high)) = trimmed.rsplit_once('-').filter(|(low, _)| !low.is_empty())
        && let (Some(low), Some(high)) = (quantity(low), quantity(high))
    {
        return Some(json!({"low": low, "high": high, "text": trimmed}));
    }
    (!trimmed.is_empty()).then(|| json!({"text": trimmed}))
}

fn flush_observation(observation: &mut Option<PendingObservation>, report: &mut Option<Report>, builder: &mut TransactionBuilder) {
    if let Some((resource, condition)) = observation.take() {
        let full_url = builder.upsert(Value::Object(resource), &condition);
        if let Some(report) = report {
            report.results.push(full_url);
        }
    }
}

fn flush_report(report: &mut Option<Report>, builder: &mut TransactionBuilder) {
    let Some(report) = report.take() else { return };
    let Report { mut resource, key, results, conclusion, presented, effective, issued } = report;
    if let Some(effective) = effective {
        resource.insert("effectiveDateTime".into(), json!(effective));
    }
    if let Some(issued) = issued {
        resource.insert("issued".into(), json!(issued));
    }
    if !results.is_empty() {
        resource.insert("result".into(), Value::Array(results.into_iter().map(|r| json!({"reference": r})).collect()));
    }
    if !conclusion.is_empty() {
        resource.insert("conclusion".into(), json!(conclusion.join("\n")));
    }
    if !presented.is_empty() {
        resource.insert("presentedForm".into(), Value::Array(presented));
    }
    builder.upsert(Value::Object(resource), &format!("identifier={}", query_value(&key.search_token())));
}
