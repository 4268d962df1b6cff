//! PID (and PD1) into a UK Core Patient, upserted on its NHS number, or on the sender's own
//! patient number when the message carries no NHS number.

use fhir_models::system;
use serde_json::{Map, Value, json};

use super::Context;
use super::datatypes::{Identifier, address, contact_point, human_name, identifier, organisation_reference, person_reference, timestamp};
use super::error::{ErrorCode, Hl7Error};
use super::message::Segment;
use crate::translate::transaction::{TransactionBuilder, query_value};

const UKCORE_PATIENT: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient";
const ETHNIC_CATEGORY_EXTENSION: &str = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory";
const ETHNIC_CATEGORY_SYSTEM: &str = "https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategoryEngland";
const VERIFICATION_STATUS_SYSTEM: &str = "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland";

/// A Patient entry of the Bundle being built.
pub struct PatientEntry {
    /// The placeholder other entries reference.
    pub full_url: String,
    /// The identifier it was upserted on.
    pub key: Identifier,
}

/// The identifiers in PID-3 (PID-2 and PID-4 too, for v2.3 senders that put numbers there).
pub fn identifiers(context: &Context<'_, '_>, pid: &Segment<'_>) -> Result<Vec<Identifier>, Hl7Error> {
    let mut found: Vec<Identifier> = Vec::new();
    for field in [3, 2, 4] {
        for (index, cx) in pid.field(field).repetitions().enumerate() {
            let location = pid.locate(field).repetition(index + 1);
            if let Some(identifier) = identifier(&cx, context.header.authority(), "patient-id", &location)?
                && !found.iter().any(|f| f.system == identifier.system && f.value == identifier.value)
            {
                found.push(identifier);
            }
        }
    }
    Ok(found)
}

/// The identifier a Patient is upserted on: the NHS number, else the first medical record
/// number, else the first identifier.
pub fn key(identifiers: &[Identifier]) -> Option<&Identifier> {
    identifiers
        .iter()
        .find(|i| i.is_nhs_number)
        .or_else(|| identifiers.iter().find(|i| i.type_code.as_deref() == Some("MR")))
        .or_else(|| identifiers.first())
}

/// How a message writes its Patient.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Demographics {
    /// ADT owns the demographics: the Patient is replaced by what PID says.
    Replace,
    /// Results, documents and orders only mention the patient: created if unknown, else left
    /// as ADT wrote it (their PID is often thin).
    CreateIfMissing,
}

pub fn upsert(
    context: &Context<'_, '_>,
    pid: &Segment<'_>,
    pd1: Option<&Segment<'_>>,
    builder: &mut TransactionBuilder,
    demographics: Demographics,
) -> Result<PatientEntry, Hl7Error> {
    let (resource, key) = patient(context, pid, pd1)?;
    let condition = format!("identifier={}", query_value(&key.search_token()));
    let full_url = match demographics {
        Demographics::Replace => builder.upsert(resource, &condition),
        Demographics::CreateIfMissing => builder.ensure(resource, &condition),
    };
    Ok(PatientEntry { full_url, key })
}

pub fn patient(context: &Context<'_, '_>, pid: &Segment<'_>, pd1: Option<&Segment<'_>>) -> Result<(Value, Identifier), Hl7Error> {
    let identifiers = identifiers(context, pid)?;
    let Some(key) = key(&identifiers) else {
        return Err(Hl7Error::new(
            ErrorCode::RequiredFieldMissing,
            pid.locate(3),
            "PID-3 (patient identifier list) has no identifier: the gateway cannot tell which patient this is",
        ));
    };
    let key = key.clone();
    let mut patient = Map::new();
    patient.insert("resourceType".into(), json!("Patient"));
    if key.is_nhs_number {
        patient.insert("meta".into(), json!({"profile": [UKCORE_PATIENT]}));
    }
    let mut extensions = Vec::new();
    if let Some(ethnicity) = pid.field(22).first().component(1).text().filter(|code| is_ethnic_category(code)) {
        extensions.push(json!({"url": ETHNIC_CATEGORY_EXTENSION, "valueCodeableConcept": {"coding": [{"system": ETHNIC_CATEGORY_SYSTEM, "code": ethnicity}]}}));
    }
    if !extensions.is_empty() {
        patient.insert("extension".into(), Value::Array(extensions));
    }
    // PID-32 carries the NHS number's trace status (01-08) in the NHS ADT specification.
    let verification = pid.value(32).filter(|code| code.len() == 2 && ("01"..="08").contains(&code.as_ref()));
    let identifier_values: Vec<Value> = identifiers
        .iter()
        .map(|identifier| {
            let mut value = identifier.to_json();
            if identifier.is_nhs_number
                && let Some(code) = &verification
            {
                value.as_object_mut().expect("an object").insert(
                    "extension".into(),
                    json!([{"url": system::NHS_NUMBER_VERIFICATION_STATUS_EXTENSION, "valueCodeableConcept": {"coding": [{"system": VERIFICATION_STATUS_SYSTEM, "code": code}]}}]),
                );
            }
            value
        })
        .collect();
    patient.insert("identifier".into(), Value::Array(identifier_values));
    let names: Vec<Value> = pid.field(5).repetitions().filter_map(|xpn| human_name(&xpn)).collect();
    if !names.is_empty() {
        patient.insert("name".into(), Value::Array(names));
    }
    let mut telecom: Vec<Value> = pid.field(13).repetitions().filter_map(|xtn| contact_point(&xtn, "home")).collect();
    telecom.extend(pid.field(14).repetitions().filter_map(|xtn| contact_point(&xtn, "work")));
    if !telecom.is_empty() {
        patient.insert("telecom".into(), Value::Array(telecom));
    }
    if let Some(sex) = pid.value(8) {
        let gender = match sex.as_ref() {
            "M" => "male",
            "F" => "female",
            "O" | "A" | "X" => "other",
            "U" | "N" => "unknown",
            other => {
                return Err(Hl7Error::new(
                    ErrorCode::TableValueNotFound,
                    pid.locate(8),
                    format!("PID-8 administrative sex {other:?} is not one of M, F, O, U, A, N, X (HL7 table 0001)"),
                ));
            }
        };
        patient.insert("gender".into(), json!(gender));
    }
    if let Some(birth) = pid.value(7) {
        let birth = timestamp(&birth, &pid.locate(7))?;
        patient.insert("birthDate".into(), json!(birth.date()));
    }
    match (pid.value(29), pid.value(30).as_deref()) {
        (Some(death), _) => {
            let death = timestamp(&death, &pid.locate(29))?;
            patient.insert("deceasedDateTime".into(), json!(death.text));
        }
        (None, Some("Y")) => {
            patient.insert("deceasedBoolean".into(), json!(true));
        }
        _ => {}
    }
    let addresses: Vec<Value> = pid.field(11).repetitions().filter_map(|xad| address(&xad)).collect();
    if !addresses.is_empty() {
        patient.insert("address".into(), Value::Array(addresses));
    }
    if let Some(pd1) = pd1 {
        // PD1-3: the registered practice (ODS code); PD1-4: the GP (GMP code).
        let mut practitioners: Vec<Value> = pd1.field(3).repetitions().filter_map(|xon| organisation_reference(&xon)).collect();
        practitioners.extend(pd1.field(4).repetitions().filter_map(|xcn| {
            let mut reference = person_reference(&xcn, "Practitioner")?;
            if let Some(identifier) = reference.get_mut("identifier").and_then(Value::as_object_mut)
                && !identifier.contains_key("system")
                && identifier["value"].as_str().is_some_and(is_gp_code)
            {
                identifier.insert("system".into(), json!("https://fhir.hl7.org.uk/Id/gmp-number"));
            }
            Some(reference)
        }));
        if !practitioners.is_empty() {
            patient.insert("generalPractitioner".into(), Value::Array(practitioners));
        }
    }
    Ok((Value::Object(patient), key))
}

/// NHS Data Dictionary ethnic category codes.
fn is_ethnic_category(code: &str) -> bool {
    code == "99" || (code.len() == 1 && "ABCDEFGHJKLMNPRSZ".contains(code))
}

/// A GP's national code: `G` and seven digits.
fn is_gp_code(code: &str) -> bool {
    code.len() == 8 && code.starts_with('G') && code[1..].bytes().all(|b| b.is_ascii_digit())
}
