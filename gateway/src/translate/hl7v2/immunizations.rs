//! VXU^V04: immunisations given or refused. Each RXA (with the ORC before it and the RXR after
//! it) becomes an Immunization upserted on its order's filler number (ORC-3), else the placer's
//! (ORC-2), else — for senders that give neither — on an opaque identifier derived from the
//! patient, the vaccine and the time it was given, so a re-sent or corrected record updates the
//! same Immunization. Mapping: the v2-to-FHIR `RXA[Immunization]` and `RXR[Immunization]` tables.

use serde_json::{Map, Value, json};

use super::Context;
use super::datatypes::{Identifier, codeable_concept, entity_identifier, local_system, person_reference, timestamp, typed_numbers};
use super::error::{ErrorCode, Hl7Error};
use super::message::Segment;
use super::patient::{self, PatientEntry};
use crate::translate::transaction::{TransactionBuilder, derived_id, query_value};

const UKCORE_IMMUNIZATION: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Immunization";

pub fn translate(context: &Context<'_, '_>, builder: &mut TransactionBuilder) -> Result<(), Hl7Error> {
    let segments = context.message.segments();
    let mut patient: Option<PatientEntry> = None;
    let mut order: Option<&Segment<'_>> = None;
    let mut given = 0;
    for (index, segment) in segments.iter().enumerate() {
        match segment.id {
            "PID" => {
                let pd1 = segments.get(index + 1).filter(|next| next.id == "PD1");
                patient = Some(patient::upsert(context, segment, pd1, builder, patient::Demographics::CreateIfMissing)?);
                order = None;
            }
            "ORC" => order = Some(segment),
            "RXA" => {
                let Some(patient) = &patient else {
                    return Err(Hl7Error::new(
                        ErrorCode::SegmentSequence,
                        segment.locate(1),
                        "VXU^V04 without a PID before its RXA: immunisations are filed against a patient",
                    ));
                };
                // The route and site: the RXR that follows, before the next order or dose.
                let route = segments[index + 1..].iter().take_while(|s| !matches!(s.id, "ORC" | "RXA" | "PID")).find(|s| s.id == "RXR");
                let (immunization, condition) = immunization(context, segment, order.take(), route, patient)?;
                builder.upsert(immunization, &condition);
                given += 1;
            }
            _ => {}
        }
    }
    if given == 0 {
        context.message.required("RXA", "VXU^V04 carries each immunisation in an RXA segment")?;
    }
    Ok(())
}

fn immunization(
    context: &Context<'_, '_>,
    rxa: &Segment<'_>,
    orc: Option<&Segment<'_>>,
    rxr: Option<&Segment<'_>>,
    patient: &PatientEntry,
) -> Result<(Value, String), Hl7Error> {
    let authority = context.header.authority();
    let given_at = timestamp(&rxa.required_value(3, "date/time start of administration")?, &rxa.locate(3))?;
    let vaccine = codeable_concept(&rxa.field(5).first()).ok_or_else(|| {
        Hl7Error::new(ErrorCode::RequiredFieldMissing, rxa.locate(5), "RXA-5 (administered code) is required: which vaccine")
    })?;
    let number = |field: usize, kind: &str| orc.and_then(|orc| entity_identifier(&orc.field(field).first(), authority, kind));
    let filler = number(3, "filler-order-number");
    let placer = number(2, "placer-order-number");
    let key = match filler.as_ref().or(placer.as_ref()) {
        Some(key) => Identifier { type_code: None, ..key.clone() },
        None => {
            let vaccine_code = rxa.field(5).first().component(1).raw();
            let name = format!("{}|{}|{}", patient.key.search_token(), given_at.text, vaccine_code);
            Identifier {
                system: local_system(authority, "immunization"),
                value: derived_id("imm", &name),
                is_nhs_number: false,
                type_code: None,
            }
        }
    };
    let condition = format!("identifier={}", query_value(&key.search_token()));

    let mut resource = Map::new();
    resource.insert("resourceType".into(), json!("Immunization"));
    resource.insert("meta".into(), json!({"profile": [UKCORE_IMMUNIZATION]}));
    let mut identifiers: Vec<Value> = typed_numbers(&[(&filler, "FILL"), (&placer, "PLAC")]);
    if identifiers.is_empty() {
        identifiers.push(key.to_json());
    }
    resource.insert("identifier".into(), Value::Array(identifiers));

    let (status, subpotent) = status(rxa)?;
    resource.insert("status".into(), json!(status));
    if status == "not-done"
        && let Some(reason) = codeable_concept(&rxa.field(18).first())
    {
        resource.insert("statusReason".into(), reason);
    }
    resource.insert("vaccineCode".into(), vaccine);
    resource.insert("patient".into(), json!({"reference": patient.full_url}));
    resource.insert("occurrenceDateTime".into(), json!(given_at.text));
    if let Some(recorded) = rxa.value(22) {
        resource.insert("recorded".into(), json!(timestamp(&recorded, &rxa.locate(22))?.text));
    }
    if let Some((primary, origin)) = source_of_record(rxa) {
        resource.insert("primarySource".into(), json!(primary));
        if let Some(origin) = origin {
            resource.insert("reportOrigin".into(), origin);
        }
    }
    if let Some(lot) = rxa.field(15).first().full_text() {
        resource.insert("lotNumber".into(), json!(lot));
    }
    if let Some(expiry) = rxa.value(16) {
        resource.insert("expirationDate".into(), json!(timestamp(&expiry, &rxa.locate(16))?.date()));
    }
    if let Some(manufacturer) = manufacturer(rxa) {
        resource.insert("manufacturer".into(), manufacturer);
    }
    if let Some(route) = rxr.and_then(|rxr| codeable_concept(&rxr.field(1).first())) {
        resource.insert("route".into(), route);
    }
    if let Some(site) = rxr.and_then(|rxr| codeable_concept(&rxr.field(2).first())) {
        resource.insert("site".into(), site);
    }
    if let Some(dose) = dose(rxa)? {
        resource.insert("doseQuantity".into(), dose);
    }
    if let Some(actor) = person_reference(&rxa.field(10).first(), "Practitioner") {
        let administering = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0443", "code": "AP", "display": "Administering Provider"}]});
        resource.insert("performer".into(), json!([{"function": administering, "actor": actor}]));
    }
    let reasons: Vec<Value> = rxa.field(19).repetitions().filter_map(|r| codeable_concept(&r)).collect();
    if !reasons.is_empty() {
        resource.insert("reasonCode".into(), Value::Array(reasons));
    }
    if subpotent {
        resource.insert("isSubpotent".into(), json!(true));
    }
    Ok((Value::Object(resource), condition))
}

/// RXA-21 (action code, table 0206) then RXA-20 (completion status, table 0322): the FHIR status,
/// and whether only part of the dose was given.
fn status(rxa: &Segment<'_>) -> Result<(&'static str, bool), Hl7Error> {
    match rxa.value(21).as_deref() {
        None | Some("A" | "U") => {}
        Some("D") => return Ok(("entered-in-error", false)),
        Some(other) => {
            return Err(Hl7Error::new(
                ErrorCode::TableValueNotFound,
                rxa.locate(21),
                format!("RXA-21 action code {other:?} is not A, D or U (HL7 table 0206)"),
            ));
        }
    }
    match rxa.value(20).as_deref() {
        None | Some("CP") => Ok(("completed", false)),
        Some("PA") => Ok(("completed", true)),
        Some("RE" | "NA") => Ok(("not-done", false)),
        Some(other) => Err(Hl7Error::new(
            ErrorCode::TableValueNotFound,
            rxa.locate(20),
            format!("RXA-20 completion status {other:?} is not CP, PA, RE or NA (HL7 table 0322)"),
        )),
    }
}

/// RXA-9 in the NIP001 sense: `00` is a record of a dose given by the sender's own service (the
/// primary source); `01`–`08` a historical record from somewhere else, saying where.
fn source_of_record(rxa: &Segment<'_>) -> Option<(bool, Option<Value>)> {
    let note = rxa.field(9).first();
    let code = note.component(1).text()?;
    match code.as_ref() {
        "00" => Some((true, None)),
        "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08" => {
            let mut coding = Map::new();
            coding.insert("system".into(), json!("urn:oid:2.16.840.1.114222.4.5.274"));
            coding.insert("code".into(), json!(code));
            if let Some(display) = note.component(2).text() {
                coding.insert("display".into(), json!(display));
            }
            Some((false, Some(json!({"coding": [Value::Object(coding)]}))))
        }
        _ => None,
    }
}

/// RXA-17 (CWE, MVX codes in the US) as a logical reference to the manufacturer.
fn manufacturer(rxa: &Segment<'_>) -> Option<Value> {
    let field = rxa.field(17).first();
    let code = field.component(1).text();
    let name = field.component(2).text().or_else(|| field.component(9).text());
    if code.is_none() && name.is_none() {
        return None;
    }
    let mut reference = Map::new();
    reference.insert("type".into(), json!("Organization"));
    if let Some(code) = code {
        let mut identifier = Map::new();
        if field.component(3).text().is_some_and(|s| s.eq_ignore_ascii_case("MVX")) {
            identifier.insert("system".into(), json!("http://hl7.org/fhir/sid/mvx"));
        }
        identifier.insert("value".into(), json!(code));
        reference.insert("identifier".into(), Value::Object(identifier));
    }
    if let Some(name) = name {
        reference.insert("display".into(), json!(name));
    }
    Some(Value::Object(reference))
}

/// RXA-6 and RXA-7: the amount given. `999` is the NIP convention for "amount not recorded".
fn dose(rxa: &Segment<'_>) -> Result<Option<Value>, Hl7Error> {
    let Some(amount) = rxa.value(6) else { return Ok(None) };
    if amount.as_ref() == "999" {
        return Ok(None);
    }
    let value: serde_json::Number = amount.trim().parse().ok().filter(|_| !amount.trim().starts_with('+')).ok_or_else(|| {
        Hl7Error::new(ErrorCode::DataType, rxa.locate(6), format!("RXA-6 (administered amount) {amount:?} is not a number"))
    })?;
    let mut quantity = Map::new();
    quantity.insert("value".into(), Value::Number(value));
    let units = rxa.field(7).first();
    if let Some(code) = units.component(1).text() {
        if let Some(display) = units.component(2).text() {
            quantity.insert("unit".into(), json!(display));
        } else {
            quantity.insert("unit".into(), json!(code));
        }
        if units.component(3).text().is_some_and(|s| s.eq_ignore_ascii_case("UCUM")) {
            quantity.insert("system".into(), json!("http://unitsofmeasure.org"));
            quantity.insert("code".into(), json!(code));
        }
    }
    Ok(Some(Value::Object(quantity)))
}

#[cfg(test)]
mod tests {
    use super::super::{ErrorCode, translate};

    const VXU: &str = "MSH|^~\\&|IMMS|RYJ|HIE|HIE|20240310093000||VXU^V04^VXU_V04|V1|P|2.5.1\r\
PID|1||9449305552^^^NHS^NH||TAYLOR^OLIVIA||20180101|F\r\
ORC|RE||IMM-77^RYJ\r\
RXA|0|1|20240309101500||39114911000001105^Fluenz Tetra nasal spray^SCT|0.2|mL^milliliter^UCUM||00^New immunization record^NIP001|C1234567^JONES^ANNE^^^^^^GMC|||||AB1234|20241130|ASZ^AstraZeneca^MVX|||CP|A|20240309103000\r\
RXR|NS^Nasal^HL70162|NA^Nasal^HL70163\r\
ORC|RE||IMM-78^RYJ\r\
RXA|0|1|20240309101500||999^No vaccine administered^CVX|999||||||||||||00^Parental decision^NIP002||RE";

    #[test]
    fn each_rxa_becomes_an_immunization_keyed_on_its_order() {
        let bundle = translate(VXU).unwrap().bundle;
        let entries = bundle["entry"].as_array().unwrap();
        let immunizations: Vec<&serde_json::Value> =
            entries.iter().filter(|e| e["resource"]["resourceType"] == "Immunization").map(|e| &e["resource"]).collect();
        assert_eq!(immunizations.len(), 2);
        let given = immunizations[0];
        assert_eq!(given["status"], "completed");
        assert_eq!(given["vaccineCode"]["coding"][0]["system"], "http://snomed.info/sct");
        assert_eq!(given["occurrenceDateTime"], "2024-03-09T10:15:00+00:00");
        assert_eq!(
            given["doseQuantity"],
            serde_json::json!({"value": 0.2, "unit": "milliliter", "system": "http://unitsofmeasure.org", "code": "mL"})
        );
        assert_eq!(given["lotNumber"], "AB1234");
        assert_eq!(given["expirationDate"], "2024-11-30");
        assert_eq!(given["primarySource"], true);
        assert_eq!(given["manufacturer"]["identifier"]["system"], "http://hl7.org/fhir/sid/mvx");
        assert_eq!(given["performer"][0]["actor"]["identifier"]["system"], "https://fhir.hl7.org.uk/Id/gmc-number");
        assert_eq!(given["route"]["coding"][0]["code"], "NS");
        assert_eq!(given["site"]["coding"][0]["code"], "NA");
        assert_eq!(given["patient"]["reference"], entries[0]["fullUrl"]);
        let refused = immunizations[1];
        assert_eq!(refused["status"], "not-done");
        assert_eq!(refused["statusReason"]["coding"][0]["code"], "00");
        assert!(refused.get("doseQuantity").is_none(), "999 is no amount recorded");
        let conditions: Vec<&str> = entries
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Immunization")
            .map(|e| e["request"]["url"].as_str().unwrap())
            .collect();
        assert_eq!(
            conditions,
            [
                "Immunization?identifier=urn:hie:ryj:filler-order-number|IMM-77",
                "Immunization?identifier=urn:hie:ryj:filler-order-number|IMM-78"
            ]
        );
    }

    #[test]
    fn a_dose_without_an_order_number_is_keyed_on_patient_vaccine_and_time() {
        let without_orders = VXU.replace("ORC|RE||IMM-77^RYJ\r", "").replace("ORC|RE||IMM-78^RYJ\r", "");
        let first = translate(&without_orders).unwrap().bundle;
        let again = translate(&without_orders.replace("|V1|", "|V2|")).unwrap().bundle;
        let keys = |bundle: &serde_json::Value| -> Vec<String> {
            bundle["entry"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["resource"]["resourceType"] == "Immunization")
                .map(|e| e["request"]["url"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(keys(&first), keys(&again), "a re-sent record updates the same Immunization");
        assert_ne!(keys(&first)[0], keys(&first)[1]);
        assert!(!keys(&first)[0].contains("9449305552"), "the key does not carry the NHS number: {:?}", keys(&first));
    }

    #[test]
    fn bad_immunisation_fields_are_named() {
        let cases = [
            (VXU.replace("|CP|A|", "|XX|A|"), ErrorCode::TableValueNotFound, "RXA-20"),
            (VXU.replace("|CP|A|", "|CP|Q|"), ErrorCode::TableValueNotFound, "RXA-21"),
            (VXU.replace("|0.2|mL", "|a lot|mL"), ErrorCode::DataType, "RXA-6"),
            (
                VXU.replace("RXA|0|1|20240309101500||39114911000001105", "RXA|0|1|||39114911000001105"),
                ErrorCode::RequiredFieldMissing,
                "RXA-3",
            ),
            (VXU.replace("39114911000001105^Fluenz Tetra nasal spray^SCT", ""), ErrorCode::RequiredFieldMissing, "RXA-5"),
            (VXU.replace("PID|1||9449305552^^^NHS^NH||TAYLOR^OLIVIA||20180101|F\r", ""), ErrorCode::SegmentSequence, "RXA-1"),
        ];
        super::super::assert_refused(&cases);
    }
}
