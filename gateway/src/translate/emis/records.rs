//! The FHIR records an EMIS practice's data becomes, whichever EMIS interface it came through
//! (the CSV extract or EMIS Open XML): the same GUID keys and the same shapes, so a practice's
//! record filed one way is updated, never duplicated, when it arrives the other way.

use serde_json::{Number, Value, json};

use super::identifier;
use crate::translate::gp::set;

/// A consultation, as an ambulatory Encounter.
pub struct Consultation<'a> {
    pub guid: &'a str,
    pub finished: bool,
    pub subject: &'a str,
    /// What kind of consultation, as the practice names it.
    pub kind: Option<&'a str>,
    pub start: Option<String>,
    pub provider: Option<&'a Value>,
}

pub fn encounter(consultation: &Consultation<'_>) -> Value {
    let mut encounter = json!({
        "resourceType": "Encounter",
        "identifier": [identifier("consultation-guid", consultation.guid)],
        "status": if consultation.finished { "finished" } else { "in-progress" },
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
        "subject": {"reference": consultation.subject},
    });
    if let Some(kind) = consultation.kind {
        encounter["type"] = json!([{"text": kind}]);
    }
    if let Some(start) = &consultation.start {
        encounter["period"] = json!({"start": start});
    }
    if let Some(provider) = consultation.provider {
        encounter["serviceProvider"] = provider.clone();
    }
    encounter
}

pub fn allergy(code: Value, subject: &str, onset: Option<String>, recorded: Option<String>) -> Value {
    let mut allergy = json!({
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
        "code": code,
        "patient": {"reference": subject},
    });
    set(&mut allergy, "onsetDateTime", onset);
    set(&mut allergy, "recordedDate", recorded);
    allergy
}

pub fn immunization(code: Value, subject: &str, occurred: String) -> Value {
    json!({
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": code,
        "patient": {"reference": subject},
        "occurrenceDateTime": occurred,
        "primarySource": true,
    })
}

/// A numeric value with its unit and the practice's reference range.
pub struct Measured<'a> {
    pub value: Number,
    pub unit: Option<&'a str>,
    pub low: Option<Number>,
    pub high: Option<Number>,
}

pub fn observation(code: Value, subject: &str, effective: Option<String>, measured: Option<Measured<'_>>) -> Value {
    let mut observation = json!({"resourceType": "Observation", "status": "final", "code": code, "subject": {"reference": subject}});
    set(&mut observation, "effectiveDateTime", effective);
    if let Some(measured) = measured {
        let quantity = |value: Number| {
            let mut quantity = json!({"value": value});
            if let Some(unit) = measured.unit {
                quantity["unit"] = json!(unit);
            }
            quantity
        };
        observation["valueQuantity"] = quantity(measured.value.clone());
        if measured.low.is_some() || measured.high.is_some() {
            let mut range = json!({});
            if let Some(low) = measured.low.clone() {
                range["low"] = quantity(low);
            }
            if let Some(high) = measured.high.clone() {
                range["high"] = quantity(high);
            }
            observation["referenceRange"] = json!([range]);
        }
    }
    observation
}

/// Add a free-text note after any the resource has.
pub fn add_note(resource: &mut Value, text: Option<&str>) {
    if let Some(text) = text {
        let notes = resource["note"].as_array().cloned().unwrap_or_default();
        resource["note"] = json!(notes.into_iter().chain([json!({"text": text})]).collect::<Vec<_>>());
    }
}

/// A medication authorisation (EMIS's drug record), as a MedicationStatement.
pub struct Authorisation<'a> {
    pub guid: &'a str,
    pub active: bool,
    pub medication: Value,
    pub subject: &'a str,
    pub start: Option<String>,
    pub end: Option<String>,
    pub dosage: Option<&'a str>,
    pub prescription_type: Option<&'a str>,
}

pub fn medication_statement(authorisation: &Authorisation<'_>) -> Value {
    let mut statement = json!({
        "resourceType": "MedicationStatement",
        "identifier": [identifier("drug-record-guid", authorisation.guid)],
        "status": if authorisation.active { "active" } else { "stopped" },
        "medicationCodeableConcept": authorisation.medication,
        "subject": {"reference": authorisation.subject},
    });
    let mut period = json!({});
    set(&mut period, "start", authorisation.start.clone());
    set(&mut period, "end", authorisation.end.clone());
    if period.as_object().is_some_and(|p| !p.is_empty()) {
        statement["effectivePeriod"] = period;
    }
    if let Some(dosage) = authorisation.dosage {
        statement["dosage"] = json!([{"text": dosage}]);
    }
    if let Some(kind) = authorisation.prescription_type {
        statement["note"] = json!([{"text": format!("{kind} prescription")}]);
    }
    statement
}

/// One issue of a medication, as a MedicationRequest.
pub struct Issue<'a> {
    pub guid: &'a str,
    pub cancelled: bool,
    pub medication: Value,
    pub subject: &'a str,
    pub authored: Option<String>,
    pub dosage: Option<&'a str>,
    pub quantity: Option<Number>,
    pub unit: Option<&'a str>,
    pub days: Option<Number>,
    /// The drug record (authorisation) it was issued under.
    pub authorisation: Option<&'a str>,
}

pub fn medication_request(issue: &Issue<'_>) -> Value {
    let mut request = json!({
        "resourceType": "MedicationRequest",
        "identifier": [identifier("issue-record-guid", issue.guid)],
        "status": if issue.cancelled { "cancelled" } else { "completed" },
        "intent": "order",
        "medicationCodeableConcept": issue.medication,
        "subject": {"reference": issue.subject},
    });
    set(&mut request, "authoredOn", issue.authored.clone());
    if let Some(dosage) = issue.dosage {
        request["dosageInstruction"] = json!([{"text": dosage}]);
    }
    let mut dispense = json!({});
    if let Some(quantity) = issue.quantity.clone() {
        let mut q = json!({"value": quantity});
        if let Some(unit) = issue.unit {
            q["unit"] = json!(unit);
        }
        dispense["quantity"] = q;
    }
    if let Some(days) = issue.days.clone() {
        dispense["expectedSupplyDuration"] = json!({"value": days, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"});
    }
    if dispense.as_object().is_some_and(|d| !d.is_empty()) {
        request["dispenseRequest"] = dispense;
    }
    if let Some(authorisation) = issue.authorisation {
        request["groupIdentifier"] = identifier("drug-record-guid", authorisation);
    }
    request
}
