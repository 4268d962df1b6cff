//! ADT: patients and their visits. Every event upserts the Patient on PID-3 and the Encounter on
//! its visit number (PV1-19), so admits, transfers, discharges, updates and cancellations of one
//! visit all land on the same Encounter, and a re-sent message lands on it unchanged.

use serde_json::{Map, Value, json};

use super::Context;
use super::datatypes::{Identifier, Timestamp, codeable_concept, identifier, local_system, ods_reference, person_reference, timestamp};
use super::error::{ErrorCode, Hl7Error};
use super::message::{Repetition, Segment};
use super::patient::{self, PatientEntry};
use crate::translate::transaction::{TransactionBuilder, query_value};

const UKCORE_ENCOUNTER: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Encounter";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";

pub fn translate(context: &Context<'_, '_>, event: &str, builder: &mut TransactionBuilder) -> Result<(), Hl7Error> {
    let status = match event {
        "A01" | "A02" | "A04" | "A06" | "A07" | "A12" | "A13" => Some("in-progress"),
        "A03" => Some("finished"),
        "A05" => Some("planned"),
        "A11" => Some("cancelled"),
        "A08" | "A28" | "A31" | "A40" => None,
        other => {
            let supported: Vec<&str> =
                super::SUPPORTED_EVENTS.iter().filter(|(code, _, _)| *code == "ADT").map(|(_, event, _)| *event).collect();
            return Err(Hl7Error::new(
                ErrorCode::UnsupportedEventCode,
                context.message.msh().locate(9).component(2),
                format!("ADT^{other} is not translated by this gateway; it takes ADT {}", supported.join(", ")),
            ));
        }
    };
    if event == "A40" {
        return merge(context, builder);
    }
    let pid = context.message.required("PID", "every ADT message names its patient")?;
    let patient = patient::upsert(context, pid, context.message.first("PD1"), builder, patient::Demographics::Replace)?;
    if matches!(event, "A28" | "A31") {
        return Ok(());
    }
    let pv1 = match context.message.first("PV1") {
        Some(pv1) => pv1,
        // A08 may update the person alone.
        None if event == "A08" => return Ok(()),
        None => context.message.required("PV1", &format!("ADT^{event} is about a visit"))?,
    };
    if pv1.value(2).as_deref() == Some("N") {
        if event == "A08" {
            return Ok(());
        }
        return Err(Hl7Error::new(
            ErrorCode::TableValueNotFound,
            pv1.locate(2),
            format!("PV1-2 (patient class) \"N\" (not applicable) makes no sense in ADT^{event}, which is about a visit"),
        ));
    }
    let (encounter, condition) = encounter(context, event, status, pv1, &patient)?;
    builder.upsert(encounter, &condition);
    Ok(())
}

fn encounter(
    context: &Context<'_, '_>,
    event: &str,
    status: Option<&str>,
    pv1: &Segment<'_>,
    patient: &PatientEntry,
) -> Result<(Value, String), Hl7Error> {
    let authority = context.header.authority();
    let mut identifiers = Vec::new();
    for field in [19, 50] {
        if let Some(visit) = identifier(&pv1.field(field).first(), authority, "visit-number", &pv1.locate(field))? {
            identifiers.push(visit);
        }
    }
    let admitted = optional_time(pv1, 44)?;
    let discharged = optional_time(pv1, 45)?;
    let evn = context.message.first("EVN");
    let occurred = match evn {
        Some(evn) => optional_time(evn, 6)?.or(optional_time(evn, 2)?),
        None => None,
    };
    // An admission without PV1-44 was admitted when the event happened.
    let admitted = admitted.or_else(|| occurred.clone().filter(|_| matches!(event, "A01" | "A04" | "A05")));
    let key = match identifiers.first() {
        Some(visit) => format!("identifier={}", query_value(&visit.search_token())),
        None => {
            // Without a visit number, the admission time identifies the visit of this patient.
            if admitted.is_none() {
                return Err(Hl7Error::new(
                    ErrorCode::RequiredFieldMissing,
                    pv1.locate(19),
                    "PV1-19 (visit number) is required to tell which encounter this message is about (or PV1-44, admit date/time)",
                ));
            }
            let system = local_system(authority, "admission");
            let admitted = admitted.as_ref().expect("checked above");
            let value = format!("{}-{}", patient.key.value, admitted.text);
            let synthetic = Identifier { system, value, is_nhs_number: false, type_code: None };
            let condition = format!("identifier={}", query_value(&synthetic.search_token()));
            identifiers.push(synthetic);
            condition
        }
    };

    let mut encounter = Map::new();
    encounter.insert("resourceType".into(), json!("Encounter"));
    encounter.insert("meta".into(), json!({"profile": [UKCORE_ENCOUNTER]}));
    encounter.insert("identifier".into(), Value::Array(identifiers.iter().map(|i| i.to_json()).collect()));
    let status = status.unwrap_or(if discharged.is_some() { "finished" } else { "in-progress" });
    encounter.insert("status".into(), json!(status));
    encounter.insert("class".into(), class(pv1)?);
    if let Some(service) = pv1.field(10).first().component(1).text() {
        encounter.insert(
            "serviceType".into(),
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0069", "code": service}]}),
        );
    }
    encounter.insert("subject".into(), json!({"reference": patient.full_url}));
    let participants: Vec<Value> = [(7, "ATND"), (8, "REF"), (9, "CON"), (17, "ADM")]
        .iter()
        .flat_map(|&(field, role)| {
            pv1.field(field).repetitions().filter_map(move |xcn| {
                let individual = person_reference(&xcn, "Practitioner")?;
                Some(json!({"type": [{"coding": [{"system": PARTICIPATION_TYPE, "code": role}]}], "individual": individual}))
            })
        })
        .collect();
    if !participants.is_empty() {
        encounter.insert("participant".into(), Value::Array(participants));
    }
    let start = admitted.clone();
    let end = match event {
        "A13" => None,
        "A03" => discharged.clone().or(occurred.clone()),
        _ => discharged.clone(),
    };
    let mut period = Map::new();
    if let Some(start) = &start {
        period.insert("start".into(), json!(start.text));
    }
    if let Some(end) = &end {
        period.insert("end".into(), json!(end.text));
    }
    if !period.is_empty() {
        encounter.insert("period".into(), Value::Object(period));
    }
    if let Some(pv2) = context.message.first("PV2")
        && let Some(reason) = codeable_concept(&pv2.field(3).first())
    {
        encounter.insert("reasonCode".into(), json!([reason]));
    }
    let mut hospitalization = Map::new();
    if let Some(preadmit) = identifier(&pv1.field(5).first(), context.header.authority(), "preadmit-number", &pv1.locate(5))? {
        hospitalization.insert("preAdmissionIdentifier".into(), preadmit.to_json());
    }
    if let Some(source) = pv1.value(14) {
        hospitalization
            .insert("admitSource".into(), json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0023", "code": source}]}));
    }
    if let Some(disposition) = pv1.value(36) {
        hospitalization.insert(
            "dischargeDisposition".into(),
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0112", "code": disposition}]}),
        );
    }
    if !hospitalization.is_empty() {
        encounter.insert("hospitalization".into(), Value::Object(hospitalization));
    }
    let mut locations = Vec::new();
    let current_status = if status == "finished" || status == "cancelled" { "completed" } else { "active" };
    if let Some(current) = location_display(&pv1.field(3).first()) {
        locations.push(json!({"location": {"display": current}, "status": current_status}));
    }
    if event == "A02"
        && let Some(prior) = location_display(&pv1.field(6).first())
    {
        locations.push(json!({"location": {"display": prior}, "status": "completed"}));
    }
    if !locations.is_empty() {
        encounter.insert("location".into(), Value::Array(locations));
    }
    if let Some(provider) = context.message.msh().field(4).first().component(1).text().and_then(|code| ods_reference(&code)) {
        encounter.insert("serviceProvider".into(), provider);
    }
    Ok((Value::Object(encounter), key))
}

fn optional_time(segment: &Segment<'_>, field: usize) -> Result<Option<Timestamp>, Hl7Error> {
    segment.value(field).map(|text| timestamp(&text, &segment.locate(field))).transpose()
}

/// PV1-2 (HL7 table 0004) into the Encounter class (v3 ActCode).
fn class(pv1: &Segment<'_>) -> Result<Value, Hl7Error> {
    let code = pv1.required_value(2, "patient class")?;
    let (act, display) = match code.as_ref() {
        "I" | "B" => ("IMP", "inpatient encounter"),
        "O" | "R" | "C" => ("AMB", "ambulatory"),
        "E" => ("EMER", "emergency"),
        "P" => ("PRENC", "pre-admission"),
        "U" => {
            return Ok(json!({"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK", "display": "unknown"}));
        }
        other => {
            return Err(Hl7Error::new(
                ErrorCode::TableValueNotFound,
                pv1.locate(2),
                format!("PV1-2 patient class {other:?} is not one of I, O, E, P, R, B, C, U (HL7 table 0004)"),
            ));
        }
    };
    Ok(json!({"system": ACT_CODE, "code": act, "display": display}))
}

/// PL (point of care, room, bed, facility, …, building, floor, description) as display text.
fn location_display(pl: &Repetition<'_>) -> Option<String> {
    let parts: Vec<String> = [(1, ""), (2, "room "), (3, "bed "), (7, "building "), (8, "floor ")]
        .iter()
        .filter_map(|&(component, label)| pl.component(component).text().map(|text| format!("{label}{text}")))
        .collect();
    let description = pl.component(9).text();
    match (parts.is_empty(), description) {
        (true, None) => None,
        (true, Some(description)) => Some(description.into_owned()),
        (false, Some(description)) => Some(format!("{} ({description})", parts.join(", "))),
        (false, None) => Some(parts.join(", ")),
    }
}

/// A40: for each PID/MRG pair, the prior record (MRG-1) becomes inactive and `replaced-by` the
/// surviving one (PID-3), which `replaces` it. Both are upserted on their own identifiers, so a
/// re-sent merge changes nothing.
fn merge(context: &Context<'_, '_>, builder: &mut TransactionBuilder) -> Result<(), Hl7Error> {
    let segments = context.message.segments();
    let mut merged = 0;
    for (index, pid) in segments.iter().enumerate().filter(|(_, segment)| segment.id == "PID") {
        let group_end = segments[index + 1..].iter().position(|s| s.id == "PID").map_or(segments.len(), |p| index + 1 + p);
        let group = &segments[index + 1..group_end];
        let pd1 = group.iter().find(|s| s.id == "PD1");
        let Some(mrg) = group.iter().find(|s| s.id == "MRG") else {
            return Err(Hl7Error::new(
                ErrorCode::SegmentSequence,
                pid.locate(1),
                format!("ADT^A40: PID {} has no MRG segment naming the record it replaces", pid.sequence),
            ));
        };
        let surviving = patient::upsert(context, pid, pd1, builder, patient::Demographics::Replace)?;
        let mut prior_ids = Vec::new();
        for (position, cx) in mrg.field(1).repetitions().enumerate() {
            if let Some(id) = identifier(&cx, context.header.authority(), "patient-id", &mrg.locate(1).repetition(position + 1))? {
                prior_ids.push(id);
            }
        }
        let Some(prior_key) = patient::key(&prior_ids) else {
            return Err(Hl7Error::new(ErrorCode::RequiredFieldMissing, mrg.locate(1), "MRG-1 (prior patient identifier list) is required"));
        };
        if prior_key.system == surviving.key.system && prior_key.value == surviving.key.value {
            return Err(Hl7Error::new(
                ErrorCode::DataType,
                mrg.locate(1),
                "MRG-1 names the same patient as PID-3: there is nothing to merge",
            ));
        }
        let mut prior = Map::new();
        prior.insert("resourceType".into(), json!("Patient"));
        prior.insert("identifier".into(), Value::Array(prior_ids.iter().map(|i| i.to_json()).collect()));
        prior.insert("active".into(), json!(false));
        let names: Vec<Value> = mrg.field(7).repetitions().filter_map(|xpn| super::datatypes::human_name(&xpn)).collect();
        if !names.is_empty() {
            prior.insert("name".into(), Value::Array(names));
        }
        prior.insert("link".into(), json!([{"other": {"reference": surviving.full_url}, "type": "replaced-by"}]));
        let prior_url = builder.upsert(Value::Object(prior), &format!("identifier={}", query_value(&prior_key.search_token())));
        if let Some(Value::Object(resource)) = builder.resource_mut(&surviving.full_url) {
            resource.insert("link".into(), json!([{"other": {"reference": prior_url}, "type": "replaces"}]));
        }
        merged += 1;
    }
    if merged == 0 {
        context.message.required("PID", "ADT^A40 names the surviving patient in PID")?;
    }
    Ok(())
}
