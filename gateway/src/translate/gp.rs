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
/// The identifier system of the Consents a practice's Type 1 codes make (value: practice|Patient).
pub const TYPE1_IDENTIFIER: &str = "urn:hie:type-1-opt-out";
/// The `code` search for both, as extracts write them (Read codes dot-padded to five characters).
pub const TYPE1_CODE_SEARCH: &str = "9Nu0,9Nu0.,XaZ89,827241000000103,9Nu1,9Nu1.";

fn coded(resource: &Value, codes: &[&str]) -> bool {
    let listed = |code: &str| codes.contains(&code.trim_end_matches('.'));
    resource["code"]["coding"].as_array().is_some_and(|codings| codings.iter().any(|c| c["code"].as_str().is_some_and(listed)))
}

/// A patient's Type 1 opt-out as a practice's records say it: the latest of the opt-out and
/// withdrawal codes among them (Observations, Conditions) — `Some(true)` opted out, `Some(false)`
/// withdrawn, `None` neither coded — with the date of that code. When unsure, the opt-out
/// stands: an opt-out counts from the end of its date's precision and a withdrawal from its
/// start, so a tie goes to the opt-out; an undated opt-out counts as the latest and an undated
/// withdrawal as the earliest.
pub fn type1_state<'a>(records: impl IntoIterator<Item = &'a Value>) -> Option<(bool, Option<String>)> {
    let range = |text: Option<&str>| text.and_then(fhir_models::datetime::parse_range).map(|(range, _)| range);
    records
        .into_iter()
        .filter_map(|resource| {
            let opted_out = coded(resource, &TYPE1_OPT_OUT);
            if !opted_out && !coded(resource, &TYPE1_WITHDRAWN) {
                return None;
            }
            let date = ["effectiveDateTime", "onsetDateTime", "recordedDate"].iter().find_map(|field| resource[*field].as_str());
            let order = match (range(date), opted_out) {
                (Some(range), true) => range.high,
                (Some(range), false) => range.low,
                (None, true) => i64::MAX,
                (None, false) => i64::MIN,
            };
            Some((order, opted_out, date.map(str::to_owned)))
        })
        .max()
        .map(|(_, opted_out, date)| (opted_out, date))
}

/// The sharing wish (docs/information-governance.md) a practice's Type 1 opt-out is: a
/// patient-privacy Consent denying the secondary uses what the practice (`practice_ods`)
/// recorded, active while opted out, inactive once withdrawn or no longer coded.
pub fn type1_consent(id: &str, patient_id: &str, practice_ods: &str, state: Option<(bool, Option<String>)>) -> Value {
    let reason = |code: &str| json!({"system": consent::directives::ACT_REASON, "code": code});
    let mut provision = json!({"type": "deny", "purpose": [reason("HOPERAT"), reason("HRESCH"), reason("PUBHLTH")]});
    provision["actor"] = json!([{
        "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "CST"}]},
        "reference": {"identifier": {"system": ODS_ORGANIZATION_CODE, "value": practice_ods}},
    }]);
    let (opted_out, date) = state.unwrap_or((false, None));
    let mut wish = json!({
        "resourceType": "Consent",
        "id": id,
        "identifier": [{"system": TYPE1_IDENTIFIER, "value": format!("{practice_ods}|{patient_id}")}],
        "status": if opted_out { "active" } else { "inactive" },
        "scope": {"coding": [{"system": consent::directives::CONSENT_SCOPE_SYSTEM, "code": consent::directives::PATIENT_PRIVACY}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-6", "display": "Consent Document"}]}],
        "patient": {"reference": format!("Patient/{patient_id}")},
        "policyRule": {"text": "Type 1 opt-out: dissent from secondary use of GP patient identifiable data"},
        "provision": provision,
    });
    set(&mut wish, "dateTime", date);
    wish
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coded(code: &str, date: Option<&str>) -> Value {
        let mut observation = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": fhir_models::system::READ_V2, "code": code}]}, "subject": {"reference": "Patient/p1"}});
        set(&mut observation, "effectiveDateTime", date.map(str::to_owned));
        observation
    }

    fn status(records: &[Value]) -> Option<bool> {
        type1_state(records).map(|(opted_out, _)| opted_out)
    }

    #[test]
    fn the_latest_type_1_code_decides_and_when_unsure_the_opt_out_stands() {
        assert_eq!(status(&[coded("H33..", Some("2020-01-01"))]), None);
        assert_eq!(type1_state(&[coded("9Nu0.", Some("2019-05-01"))]), Some((true, Some("2019-05-01".into()))));
        assert_eq!(status(&[coded("9Nu0.", Some("2019-05-01")), coded("9Nu1.", Some("2022-02-01"))]), Some(false));
        let again = [coded("9Nu1.", Some("2022-02-01")), coded("XaZ89", Some("2023-03-01T10:00:00Z")), coded("9Nu0", Some("2019"))];
        assert_eq!(status(&again), Some(true));
        assert_eq!(status(&[coded("9Nu0.", Some("2019-05-01")), coded("9Nu1.", None)]), Some(true));
        assert_eq!(status(&[coded("9Nu0.", None), coded("9Nu1.", Some("2022-02-01"))]), Some(true));
        assert_eq!(status(&[coded("9Nu1.", Some("2022-02-01")), coded("9Nu0.", Some("2022-02-01"))]), Some(true));
        // An opt-out dated only by its year may be later than a withdrawal within that year.
        assert_eq!(status(&[coded("9Nu1.", Some("2022-06-01")), coded("9Nu0.", Some("2022"))]), Some(true));
    }

    #[test]
    fn the_wish_is_read_as_a_deny_of_the_secondary_uses_of_what_the_practice_recorded() {
        let wish = type1_consent("t1", "p1", "A81001", Some((true, Some("2019-05-01".into()))));
        assert_eq!((&wish["status"], &wish["dateTime"]), (&json!("active"), &json!("2019-05-01")));
        let rows = consent::directives::directive_rows(&wish).unwrap();
        let mut purposes: Vec<&str> = rows.iter().filter_map(|row| row.purpose.as_deref()).collect();
        purposes.sort();
        assert_eq!(purposes, ["HOPERAT", "HRESCH", "PUBHLTH"]);
        assert!(rows.iter().all(|row| row.source.as_deref() == Some("A81001") && row.recipient.is_none() && row.class.is_none()));
        // Withdrawn or no longer coded: in force nowhere.
        for state in [Some((false, Some("2022-02-01".into()))), None] {
            let withdrawn = type1_consent("t1", "p1", "A81001", state);
            assert_eq!(withdrawn["status"], "inactive");
            assert!(consent::directives::directive_rows(&withdrawn).unwrap().is_empty());
        }
    }
}
