//! What the GP extract translators (EMIS-style, SystmOne-style) share: the Patient's identity,
//! name, gender and dates from an extract row, the key it is upserted on, the practice's
//! Organization, problem-list Conditions, and the Provenance of a patient's rows.

use fhir_models::system::{NHS_NUMBER, ODS_ORGANIZATION_CODE};
use serde_json::{Value, json};

use super::rows::{ExtractError, Row};
use super::transaction::{Source, TransactionBuilder, query_value};

/// Where a system keeps a patient's core details.
pub struct PatientColumns {
    pub nhs_number: &'static str,
    pub given: &'static str,
    pub gender: &'static str,
    pub birth: &'static str,
    pub death: &'static str,
}

/// A UK Core Patient from an extract row: see [`patient_resource`].
pub fn patient(row: &Row, columns: &PatientColumns, local: Value, active: bool) -> Result<Value, ExtractError> {
    let details = PatientDetails {
        nhs_number: row.get(columns.nhs_number),
        family: row.get("Surname"),
        given: [row.get(columns.given), row.get("MiddleNames")].into_iter().flatten().flat_map(str::split_whitespace).collect(),
        title: row.get("Title"),
        gender: row.get(columns.gender),
        birth: row.date_time(columns.birth, Some("YMD"))?,
        death: row.date_time(columns.death, None)?,
    };
    patient_resource(&details, local, active).map_err(|error| match error {
        DetailError::NhsNumber(reason) => row.error(columns.nhs_number, reason),
        DetailError::Gender(reason) => row.error(columns.gender, reason),
    })
}

/// A patient's core details, however the source holds them.
pub struct PatientDetails<'a> {
    pub nhs_number: Option<&'a str>,
    pub family: Option<&'a str>,
    pub given: Vec<&'a str>,
    pub title: Option<&'a str>,
    /// `M`, `F`, `I` or `U`.
    pub gender: Option<&'a str>,
    pub birth: Option<String>,
    pub death: Option<String>,
}

/// Which detail is wrong, and why.
pub enum DetailError {
    NhsNumber(String),
    Gender(String),
}

/// A UK Core Patient: the NHS number (checked) and the system's own identifier, the official
/// name (title, given and middle names, surname), gender (M, F, I, U), birth and death.
pub fn patient_resource(details: &PatientDetails<'_>, local: Value, active: bool) -> Result<Value, DetailError> {
    let mut identifiers = Vec::new();
    if let Some(number) = details.nhs_number {
        let parsed = fhir_models::NhsNumber::parse(number)
            .map_err(|_| DetailError::NhsNumber(format!("{number:?} is not a valid NHS number (Modulus 11)")))?;
        identifiers.push(json!({"system": NHS_NUMBER, "value": parsed.as_string()}));
    }
    identifiers.push(local);
    let mut patient = json!({
        "resourceType": "Patient",
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},
        "identifier": identifiers,
        "active": active,
    });
    let mut name = json!({"use": "official"});
    if let Some(family) = details.family {
        name["family"] = json!(family);
    }
    if !details.given.is_empty() {
        name["given"] = json!(details.given);
    }
    if let Some(title) = details.title {
        name["prefix"] = json!([title]);
    }
    if name.as_object().is_some_and(|n| n.len() > 1) {
        patient["name"] = json!([name]);
    }
    if let Some(gender) = details.gender {
        patient["gender"] = json!(match gender {
            "M" => "male",
            "F" => "female",
            "I" => "other",
            "U" => "unknown",
            other => return Err(DetailError::Gender(format!("{other:?} is not M, F, I or U"))),
        });
    }
    set(&mut patient, "birthDate", details.birth.clone());
    set(&mut patient, "deceasedDateTime", details.death.clone());
    Ok(patient)
}

/// The key a Patient is upserted on: its NHS number when it has one, else `local`.
pub fn patient_condition(patient: &Value, local: String) -> String {
    match (patient["identifier"][0]["system"].as_str(), patient["identifier"][0]["value"].as_str()) {
        (Some(NHS_NUMBER), Some(number)) => format!("identifier={}", query_value(&format!("{NHS_NUMBER}|{number}"))),
        _ => local,
    }
}

/// The practice's Organization, created if missing; returns the reference to it.
pub fn practice(bundle: &mut TransactionBuilder, ods: &str, name: &str) -> Value {
    let url = bundle.ensure(
        json!({"resourceType": "Organization", "identifier": [{"system": ODS_ORGANIZATION_CODE, "value": ods}], "name": name, "active": true}),
        &format!("identifier={}", query_value(&format!("{ODS_ORGANIZATION_CODE}|{ods}"))),
    );
    json!({"reference": url, "identifier": {"system": ODS_ORGANIZATION_CODE, "value": ods}, "display": name})
}

/// A problem-list Condition, resolved when it has ended.
pub fn problem(code: Value, subject: &str, onset: Option<String>, recorded: Option<String>, ended: Option<String>) -> Value {
    let mut condition = json!({
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": if ended.is_some() { "resolved" } else { "active" }}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
        "code": code,
        "subject": {"reference": subject},
    });
    set(&mut condition, "onsetDateTime", onset);
    set(&mut condition, "recordedDate", recorded);
    set(&mut condition, "abatementDateTime", ended);
    condition
}

/// The Provenance of one patient's rows of an extract.
pub struct PatientRows<'a> {
    pub format: &'a str,
    pub id: &'a str,
    pub recorded: &'a str,
    pub author: &'a str,
    pub key: &'a str,
    pub sources: &'a [String],
    pub digest: &'a str,
}

pub fn provenance(rows: &PatientRows<'_>, targets: &[String]) -> Value {
    let display = format!("{} extract of {}: {}", rows.format, rows.recorded, rows.sources.join(", "));
    let system = format!("urn:hie:{}:extract", rows.format.to_ascii_lowercase());
    super::transaction::provenance(
        &Source {
            id: rows.id,
            recorded: rows.recorded,
            author: rows.author,
            system: &system,
            key: rows.key,
            display: &display,
            digest: rows.digest,
            digested: "SHA-256 of the patient's rows as received",
        },
        targets,
    )
}

pub fn set(resource: &mut Value, field: &str, value: Option<String>) {
    if let Some(value) = value {
        resource[field] = json!(value);
    }
}

/// RFC 6920 digest of a patient's rows, in file order: what a re-sent extract is recognised by.
pub fn rows_digest(patient: &Row, rows: &[(&str, &Row)]) -> String {
    let mut text = patient.raw();
    for (_, row) in rows {
        text.push('\n');
        text.push_str(&row.raw());
    }
    super::transaction::content_digest(text.as_bytes())
}
