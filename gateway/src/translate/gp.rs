//! What the GP extract translators (EMIS-style, SystmOne-style) share: the Patient's identity,
//! name, gender and dates from an extract row, the key it is upserted on, the practice's
//! Organization, problem-list Conditions, a Type 1 opt-out as a sharing wish, and the
//! Provenance of a patient's rows.

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

/// The codes that record a Type 1 opt-out ("Dissent from secondary use of GP patient
/// identifiable data": Read v2, CTV3, SNOMED CT) and the Read v2 code that withdraws one. A
/// withdrawal coded otherwise is not recognised, so the opt-out stands.
pub const TYPE1_OPT_OUT: [&str; 3] = ["9Nu0", "XaZ89", "827241000000103"];
pub const TYPE1_WITHDRAWN: [&str; 1] = ["9Nu1"];

/// A patient's Type 1 opt-out as the access rules read it (docs/information-governance.md):
/// when this patient's coded records (Observations, Conditions) carry an opt-out or withdrawal
/// code, the latest of them becomes a patient-privacy Consent — active for an opt-out, inactive
/// for a withdrawal — that denies the secondary uses what the practice (`practice_ods`)
/// recorded, or everything when the practice has no ODS code. Written by `id` (derived per
/// patient and source system: Consents are changed by id, never by search), so a later
/// extract's withdrawal updates it; `identifier` finds it. An undated opt-out counts as
/// the latest and an undated withdrawal as the earliest: when unsure, the opt-out stands.
pub fn type1_opt_out(bundle: &mut TransactionBuilder, subject: &str, practice_ods: Option<&str>, identifier: Value, id: String) {
    let coded = |resource: &Value, codes: &[&str]| {
        // Read codes are five characters, dot-padded (`9Nu0.`).
        let listed = |code: &str| codes.contains(&code.trim_end_matches('.'));
        resource["code"]["coding"].as_array().is_some_and(|codings| codings.iter().any(|c| c["code"].as_str().is_some_and(listed)))
    };
    let start = |text: Option<&str>| text.and_then(fhir_models::datetime::parse_range).map(|(range, _)| range.low);
    let latest = bundle
        .resources()
        .filter(|resource| matches!(resource["resourceType"].as_str(), Some("Observation" | "Condition")))
        .filter_map(|resource| {
            let opted_out = coded(resource, &TYPE1_OPT_OUT);
            if !opted_out && !coded(resource, &TYPE1_WITHDRAWN) {
                return None;
            }
            let date = ["effectiveDateTime", "onsetDateTime", "recordedDate"].iter().find_map(|field| resource[*field].as_str());
            let order = start(date).unwrap_or(if opted_out { i64::MAX } else { i64::MIN });
            Some((order, opted_out, date.map(str::to_owned)))
        })
        .max();
    let Some((_, opted_out, date)) = latest else { return };
    let reason = |code: &str| json!({"system": consent::directives::ACT_REASON, "code": code});
    let mut provision = json!({"type": "deny", "purpose": [reason("HOPERAT"), reason("HRESCH"), reason("PUBHLTH")]});
    if let Some(ods) = practice_ods {
        provision["actor"] = json!([{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "CST"}]},
            "reference": {"identifier": {"system": ODS_ORGANIZATION_CODE, "value": ods}},
        }]);
    }
    let mut wish = json!({
        "resourceType": "Consent",
        "id": id,
        "identifier": [identifier],
        "status": if opted_out { "active" } else { "inactive" },
        "scope": {"coding": [{"system": consent::directives::CONSENT_SCOPE_SYSTEM, "code": consent::directives::PATIENT_PRIVACY}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-6", "display": "Consent Document"}]}],
        "patient": {"reference": subject},
        "policyRule": {"text": "Type 1 opt-out: dissent from secondary use of GP patient identifiable data"},
        "provision": provision,
    });
    set(&mut wish, "dateTime", date);
    bundle.put(wish);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coded(code: &str, date: Option<&str>) -> Value {
        let mut observation = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": fhir_models::system::READ_V2, "code": code}]}, "subject": {"reference": "urn:uuid:p"}});
        set(&mut observation, "effectiveDateTime", date.map(str::to_owned));
        observation
    }

    /// The Consent the coded records give, if any.
    fn wish(records: &[Value], practice: Option<&str>) -> Option<Value> {
        let mut bundle = TransactionBuilder::new("seed");
        for (n, record) in records.iter().enumerate() {
            bundle.upsert(record.clone(), &format!("identifier=row|{n}"));
        }
        type1_opt_out(&mut bundle, "urn:uuid:p", practice, json!({"system": "urn:test", "value": "p"}), "test-p".into());
        bundle.resources().find(|resource| resource["resourceType"] == "Consent").cloned()
    }

    #[test]
    fn the_latest_type_1_code_decides_the_wish() {
        assert_eq!(wish(&[coded("H33..", Some("2020-01-01"))], Some("A81001")), None);
        let opted_out = wish(&[coded("9Nu0.", Some("2019-05-01"))], Some("A81001")).expect("a wish");
        assert_eq!((&opted_out["status"], &opted_out["dateTime"]), (&json!("active"), &json!("2019-05-01")));
        // As the access rules read it: the secondary uses, of what the practice recorded.
        let mut stored = opted_out.clone();
        stored["patient"]["reference"] = json!("Patient/p1");
        let rows = consent::directives::directive_rows(&stored).unwrap();
        let mut purposes: Vec<&str> = rows.iter().filter_map(|row| row.purpose.as_deref()).collect();
        purposes.sort();
        assert_eq!(purposes, ["HOPERAT", "HRESCH", "PUBHLTH"]);
        assert!(rows.iter().all(|row| row.source.as_deref() == Some("A81001") && row.recipient.is_none() && row.class.is_none()));
        let withdrawn = [coded("9Nu0.", Some("2019-05-01")), coded("9Nu1.", Some("2022-02-01"))];
        assert_eq!(wish(&withdrawn, Some("A81001")).unwrap()["status"], "inactive");
        let again = [coded("9Nu1.", Some("2022-02-01")), coded("XaZ89", Some("2023-03-01T10:00:00Z")), coded("9Nu0", Some("2019"))];
        assert_eq!(wish(&again, Some("A81001")).unwrap()["status"], "active");
        // When unsure, the opt-out stands.
        let undated_withdrawal = [coded("9Nu0.", Some("2019-05-01")), coded("9Nu1.", None)];
        assert_eq!(wish(&undated_withdrawal, Some("A81001")).unwrap()["status"], "active");
        let undated_opt_out = [coded("9Nu0.", None), coded("9Nu1.", Some("2022-02-01"))];
        assert_eq!(wish(&undated_opt_out, Some("A81001")).unwrap()["status"], "active");
        let same_day = [coded("9Nu1.", Some("2022-02-01")), coded("9Nu0.", Some("2022-02-01"))];
        assert_eq!(wish(&same_day, Some("A81001")).unwrap()["status"], "active");
        // A practice without an ODS code: every source is covered.
        let anywhere = wish(&[coded("9Nu0.", Some("2019-05-01"))], None).unwrap();
        assert!(anywhere["provision"].get("actor").is_none(), "{anywhere}");
    }
}
