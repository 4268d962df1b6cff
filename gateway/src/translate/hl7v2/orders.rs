//! ORM^O01 and OML^O21: orders. Each ORC (with the OBR that details it) becomes a
//! ServiceRequest upserted on its placer order number (else the filler's), so a later status
//! change or cancellation of the same order updates it.

use serde_json::{Map, Value, json};

use super::Context;
use super::datatypes::{codeable_concept, entity_identifier, person_reference, timestamp, typed_numbers};
use super::error::{ErrorCode, Hl7Error};
use super::message::Segment;
use super::patient::{self, PatientEntry};
use crate::translate::transaction::{TransactionBuilder, query_value};

pub fn translate(context: &Context<'_, '_>, builder: &mut TransactionBuilder) -> Result<(), Hl7Error> {
    let segments = context.message.segments();
    let mut patient: Option<PatientEntry> = None;
    let mut orders = 0;
    for (index, segment) in segments.iter().enumerate() {
        match segment.id {
            "PID" => {
                let pd1 = segments.get(index + 1).filter(|next| next.id == "PD1");
                patient = Some(patient::upsert(context, segment, pd1, builder, patient::Demographics::CreateIfMissing)?);
            }
            "ORC" => {
                let Some(patient) = &patient else {
                    return Err(Hl7Error::new(
                        ErrorCode::SegmentSequence,
                        segment.locate(1),
                        format!(
                            "{}^{} without a PID before its ORC: orders are filed against a patient",
                            context.header.message_code, context.header.trigger_event
                        ),
                    ));
                };
                // The order's detail: the first OBR before the next ORC.
                let detail = segments[index + 1..].iter().take_while(|s| s.id != "ORC").find(|s| s.id == "OBR");
                let notes: Vec<String> = segments[index + 1..]
                    .iter()
                    .take_while(|s| s.id != "ORC" && s.id != "OBX" && s.id != "SPM")
                    .filter(|s| s.id == "NTE")
                    .filter_map(|nte| nte.field(3).first().full_text().map(|t| t.into_owned()))
                    .collect();
                let (request, condition) = service_request(context, segment, detail, patient, &notes)?;
                builder.upsert(request, &condition);
                orders += 1;
            }
            _ => {}
        }
    }
    if orders == 0 {
        context.message.required("ORC", "an order message carries its orders in ORC segments")?;
    }
    Ok(())
}

fn service_request(
    context: &Context<'_, '_>,
    orc: &Segment<'_>,
    obr: Option<&Segment<'_>>,
    patient: &PatientEntry,
    notes: &[String],
) -> Result<(Value, String), Hl7Error> {
    let authority = context.header.authority();
    let number = |field_orc: usize, field_obr: usize, kind: &str| {
        entity_identifier(&orc.field(field_orc).first(), authority, kind)
            .or_else(|| obr.and_then(|obr| entity_identifier(&obr.field(field_obr).first(), authority, kind)))
    };
    let placer = number(2, 2, "placer-order-number");
    let filler = number(3, 3, "filler-order-number");
    let Some(key) = placer.as_ref().or(filler.as_ref()) else {
        return Err(Hl7Error::new(
            ErrorCode::RequiredFieldMissing,
            orc.locate(2),
            "ORC-2 (placer order number) or ORC-3 (filler order number) is required to identify the order",
        ));
    };
    let condition = format!("identifier={}", query_value(&key.search_token()));
    let mut request = Map::new();
    request.insert("resourceType".into(), json!("ServiceRequest"));
    let identifiers: Vec<Value> = typed_numbers(&[(&placer, "PLAC"), (&filler, "FILL")]);
    request.insert("identifier".into(), Value::Array(identifiers));
    let control = orc.required_value(1, "order control")?;
    let status = match orc.value(5).as_deref() {
        Some("CM") => "completed",
        Some("CA" | "DC" | "RP") => "revoked",
        Some("HD") => "on-hold",
        Some("ER") => "entered-in-error",
        Some("A" | "IP" | "SC") => "active",
        // Senders put their own words here ("Ordered", "unknown"): the status is then unknown.
        Some(_) => "unknown",
        None => match control.as_ref() {
            "CA" | "OC" | "CR" | "DC" | "OD" | "DR" => "revoked",
            "HD" | "OH" => "on-hold",
            "NW" | "OK" | "XO" | "XX" | "XR" | "SC" | "SN" | "SS" | "RE" | "RP" | "RO" | "RL" | "OR" | "NA" | "PA" | "CH" | "UA" => {
                "active"
            }
            other => {
                return Err(Hl7Error::new(
                    ErrorCode::TableValueNotFound,
                    orc.locate(1),
                    format!("ORC-1 order control {other:?} is not in HL7 table 0119"),
                ));
            }
        },
    };
    request.insert("status".into(), json!(status));
    request.insert("intent".into(), json!("order"));
    if let Some(code) = obr.and_then(|obr| codeable_concept(&obr.field(4).first())) {
        request.insert("code".into(), code);
    }
    request.insert("subject".into(), json!({"reference": patient.full_url}));
    if let Some(authored) = orc.value(9) {
        request.insert("authoredOn".into(), json!(timestamp(&authored, &orc.locate(9))?.text));
    }
    let requester = person_reference(&orc.field(12).first(), "Practitioner")
        .or_else(|| obr.and_then(|obr| person_reference(&obr.field(16).first(), "Practitioner")));
    if let Some(requester) = requester {
        request.insert("requester".into(), requester);
    }
    if !notes.is_empty() {
        request.insert("note".into(), Value::Array(notes.iter().map(|text| json!({"text": text})).collect()));
    }
    Ok((Value::Object(request), condition))
}
