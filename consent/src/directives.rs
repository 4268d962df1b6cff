//! A patient's sharing wishes: `Consent` resources read as deny rules with exceptions
//! (docs/information-governance.md, "Patient consent directives").
//!
//! Each rule and exception is flattened into rows whose conditions are single values (a
//! condition with several values becomes several rows), so that "the rule applies" is "one of its
//! rows matches" both here and in SQL. What cannot be interpreted fails closed: a deny rule drops
//! the condition (it applies more widely), an exception is dropped whole (it never widens access).

use fhir_models::ResourceType;
use fhir_models::reference::Reference;
use serde_json::Value;

use crate::relationships::period_bounds;

pub const CONSENT_SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
pub const PATIENT_PRIVACY: &str = "patient-privacy";
const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const RESOURCE_TYPES: &str = "http://hl7.org/fhir/resource-types";
pub const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

/// Whether a row denies or is an exception to the deny rule of the same number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    Deny,
    Except,
}

impl Effect {
    pub fn code(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Except => "except",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "deny" => Some(Self::Deny),
            "except" => Some(Self::Except),
            _ => None,
        }
    }
}

/// One row of a directive: every condition present must hold. `None` is "any".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DirectiveRow {
    pub patient_id: String,
    /// The rule within its Consent; exceptions carry the number of the rule they except.
    pub rule: i64,
    pub effect: Effect,
    /// The requester's organisation (ODS code).
    pub recipient: Option<String>,
    /// The resource's publishing organisation (ODS code).
    pub source: Option<String>,
    /// A resource type.
    pub class: Option<String>,
    /// A security label code.
    pub label: Option<String>,
    /// A v3-ActReason purpose of use.
    pub purpose: Option<String>,
    /// When the Consent is in force (microseconds since the epoch, both ends inclusive).
    pub starts: Option<i64>,
    pub ends: Option<i64>,
}

/// Why a Consent cannot be accepted as a sharing directive.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{path}: {reason}")]
pub struct DirectiveError {
    /// FHIRPath of the problem.
    pub path: String,
    pub reason: String,
}

/// Whether a Consent is a patient-privacy Consent (the only kind read as sharing wishes).
pub fn is_privacy_consent(consent: &Value) -> bool {
    consent["scope"]["coding"]
        .as_array()
        .is_some_and(|codings| codings.iter().any(|c| c["system"] == CONSENT_SCOPE_SYSTEM && c["code"] == PATIENT_PRIVACY))
}

/// The patient a patient-privacy Consent is about: a literal `Patient/{id}` reference, which
/// writes must carry (a wish that names no stored patient could not be enforced).
pub fn consent_patient(consent: &Value) -> Result<&str, DirectiveError> {
    consent["patient"]["reference"]
        .as_str()
        .and_then(|text| match Reference::parse(text).local() {
            Some((resource_type, id)) if resource_type.as_str() == "Patient" => Some(id),
            _ => None,
        })
        .ok_or_else(|| DirectiveError {
            path: "Consent.patient".into(),
            reason: "a patient-privacy Consent must reference the patient as Patient/{id}".into(),
        })
}

/// The directive rows of a Consent: none unless it is an active patient-privacy Consent.
pub fn directive_rows(consent: &Value) -> Result<Vec<DirectiveRow>, DirectiveError> {
    if !is_privacy_consent(consent) {
        return Ok(Vec::new());
    }
    let patient_id = consent_patient(consent)?.to_owned();
    if consent["status"] != "active" {
        return Ok(Vec::new());
    }
    let base = &consent["provision"];
    let (starts, ends) = period_bounds(&base["period"]);
    let mut builder = Builder { patient_id, starts, ends, rows: Vec::new(), next_rule: 0 };
    let nested = base["provision"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    // An absent base type is read as deny: the narrower reading.
    if base["type"] == "permit" {
        for provision in nested.iter().filter(|p| p["type"] != "permit") {
            let exceptions: Vec<&Value> =
                provision["provision"].as_array().into_iter().flatten().filter(|p| p["type"] == "permit").collect();
            builder.rule(provision, &exceptions, false);
        }
    } else {
        let exceptions: Vec<&Value> = nested.iter().filter(|p| p["type"] == "permit").collect();
        builder.rule(base, &exceptions, true);
    }
    Ok(builder.rows)
}

struct Builder {
    patient_id: String,
    starts: Option<i64>,
    ends: Option<i64>,
    rows: Vec<DirectiveRow>,
    next_rule: i64,
}

impl Builder {
    /// A deny rule and its exceptions. The base provision's own period is the Consent's period,
    /// not a condition.
    fn rule(&mut self, provision: &Value, exceptions: &[&Value], is_base: bool) {
        let rule = self.next_rule;
        self.next_rule += 1;
        let conditions = Conditions::read(provision, Reading::Deny, is_base);
        self.push(rule, Effect::Deny, conditions.expect("deny rules never fail"));
        for exception in exceptions {
            if exception.get("provision").is_some() {
                continue;
            }
            if let Some(conditions) = Conditions::read(exception, Reading::Exception, false) {
                self.push(rule, Effect::Except, conditions);
            }
        }
    }

    fn push(&mut self, rule: i64, effect: Effect, conditions: Conditions) {
        for recipient in options(&conditions.recipients) {
            for source in options(&conditions.sources) {
                for class in options(&conditions.classes) {
                    for label in options(&conditions.labels) {
                        for purpose in options(&conditions.purposes) {
                            self.rows.push(DirectiveRow {
                                patient_id: self.patient_id.clone(),
                                rule,
                                effect,
                                recipient: recipient.clone(),
                                source: source.clone(),
                                class: class.clone(),
                                label: label.clone(),
                                purpose: purpose.clone(),
                                starts: self.starts,
                                ends: self.ends,
                            });
                        }
                    }
                }
            }
        }
    }
}

/// `[None]` for "any", else each value.
fn options(values: &[String]) -> Vec<Option<String>> {
    if values.is_empty() { vec![None] } else { values.iter().cloned().map(Some).collect() }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    Deny,
    Exception,
}

#[derive(Default)]
struct Conditions {
    recipients: Vec<String>,
    sources: Vec<String>,
    classes: Vec<String>,
    labels: Vec<String>,
    purposes: Vec<String>,
}

impl Conditions {
    /// The conditions of a provision; `None` when an exception holds something it cannot
    /// interpret. A deny rule drops what it cannot interpret instead.
    fn read(provision: &Value, reading: Reading, is_base: bool) -> Option<Self> {
        let mut conditions = Self::default();
        let mut understood = true;
        let Some(object) = provision.as_object() else { return Some(conditions) };
        for (element, value) in object {
            match element.as_str() {
                "type" | "id" | "extension" | "provision" => {}
                "period" if is_base => {}
                "actor" => understood &= conditions.read_actors(value),
                // An element read only in part is dropped whole: keeping the part would narrow a
                // deny rule.
                "class" => match read_codes(value, |system, code| system == RESOURCE_TYPES && ResourceType::parse(code).is_ok()) {
                    Some(codes) => conditions.classes = codes,
                    None => understood = false,
                },
                "securityLabel" => match read_codes(value, |system, _| crate::access::is_label_system(system)) {
                    Some(codes) => conditions.labels = codes,
                    None => understood = false,
                },
                "purpose" => match read_codes(value, |system, _| system == ACT_REASON) {
                    Some(codes) => conditions.purposes = codes,
                    None => understood = false,
                },
                _ => understood = false,
            }
        }
        match reading {
            Reading::Exception if !understood => None,
            _ => Some(conditions),
        }
    }

    /// Recipients and sources named by ODS code. A deny rule whose actors are not all
    /// understood keeps only the understood ones of each role, or none (anyone) when a role has
    /// an actor it cannot read.
    fn read_actors(&mut self, actors: &Value) -> bool {
        let mut understood = true;
        let (mut recipients, mut sources) = (Vec::new(), Vec::new());
        let (mut recipients_partial, mut sources_partial) = (false, false);
        for actor in actors.as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let role = actor["role"]["coding"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["system"] == PARTICIPATION_TYPE)
                .and_then(|c| c["code"].as_str());
            let ods = ods_identifier(&actor["reference"]);
            match (role, ods) {
                (Some("IRCP" | "PRCP"), Some(ods)) => recipients.push(ods),
                (Some("AUT" | "CST" | "INF"), Some(ods)) => sources.push(ods),
                (Some("IRCP" | "PRCP"), None) => {
                    recipients_partial = true;
                    understood = false;
                }
                (Some("AUT" | "CST" | "INF"), None) => {
                    sources_partial = true;
                    understood = false;
                }
                _ => understood = false,
            }
        }
        // An actor of a role that cannot be read makes that role "anyone" in a deny rule.
        if !recipients_partial {
            self.recipients = recipients;
        }
        if !sources_partial {
            self.sources = sources;
        }
        understood
    }
}

/// The ODS code a reference names through its `identifier`, in the upper case requesters' and
/// publishers' codes have (`b82002` is `B82002`); a value that is no ODS code names none.
pub fn ods_identifier(reference: &Value) -> Option<String> {
    let identifier = &reference["identifier"];
    if identifier["system"] != fhir_models::system::ODS_ORGANIZATION_CODE {
        return None;
    }
    let value = identifier["value"].as_str()?.trim().to_uppercase();
    fhir_models::OdsCode::parse(&value).ok().map(|ods| ods.to_string())
}

/// The codes of a list of Codings, or `None` if any coding is not one `readable` accepts.
fn read_codes(value: &Value, readable: impl Fn(&str, &str) -> bool) -> Option<Vec<String>> {
    value
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|coding| match (coding["system"].as_str(), coding["code"].as_str()) {
            (Some(system), Some(code)) if readable(system, code) => Some(code.to_owned()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn consent(provision: Value) -> Value {
        json!({
            "resourceType": "Consent",
            "status": "active",
            "scope": {"coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": PATIENT_PRIVACY}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-6"}]}],
            "patient": {"reference": "Patient/p1"},
            "provision": provision
        })
    }

    fn actor(role: &str, ods: &str) -> Value {
        json!({
            "role": {"coding": [{"system": PARTICIPATION_TYPE, "code": role}]},
            "reference": {"identifier": {"system": fhir_models::system::ODS_ORGANIZATION_CODE, "value": ods}}
        })
    }

    fn summary(rows: &[DirectiveRow]) -> Vec<String> {
        rows.iter()
            .map(|r| {
                format!(
                    "{}{} r={} s={} c={} l={} p={}",
                    r.effect.code(),
                    r.rule,
                    r.recipient.as_deref().unwrap_or("*"),
                    r.source.as_deref().unwrap_or("*"),
                    r.class.as_deref().unwrap_or("*"),
                    r.label.as_deref().unwrap_or("*"),
                    r.purpose.as_deref().unwrap_or("*")
                )
            })
            .collect()
    }

    #[test]
    fn share_nothing_is_one_unconditional_deny() {
        let rows = directive_rows(&consent(json!({"type": "deny", "period": {"start": "2020-01-01"}}))).unwrap();
        assert_eq!(summary(&rows), ["deny0 r=* s=* c=* l=* p=*"]);
        assert!(rows[0].starts.is_some() && rows[0].ends.is_none());
    }

    #[test]
    fn the_table_of_wishes_reads_as_documented() {
        let not_with_x = consent(json!({"type": "permit", "provision": [{"type": "deny", "actor": [actor("IRCP", "RXA")]}]}));
        assert_eq!(summary(&directive_rows(&not_with_x).unwrap()), ["deny0 r=RXA s=* c=* l=* p=*"]);
        let not_from_x = consent(json!({"type": "permit", "provision": [{"type": "deny", "actor": [actor("AUT", "RXA")]}]}));
        assert_eq!(summary(&directive_rows(&not_from_x).unwrap()), ["deny0 r=* s=RXA c=* l=* p=*"]);
        let keep_back = consent(json!({"type": "permit", "provision": [{"type": "deny",
            "class": [{"system": RESOURCE_TYPES, "code": "MedicationStatement"}, {"system": RESOURCE_TYPES, "code": "Condition"}],
            "securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}]}));
        assert_eq!(
            summary(&directive_rows(&keep_back).unwrap()),
            ["deny0 r=* s=* c=MedicationStatement l=PSY p=*", "deny0 r=* s=* c=Condition l=PSY p=*"]
        );
        let only_x =
            consent(json!({"type": "deny", "provision": [{"type": "permit", "actor": [actor("IRCP", "RXA"), actor("IRCP", "RXB")]}]}));
        assert_eq!(
            summary(&directive_rows(&only_x).unwrap()),
            ["deny0 r=* s=* c=* l=* p=*", "except0 r=RXA s=* c=* l=* p=*", "except0 r=RXB s=* c=* l=* p=*"]
        );
    }

    #[test]
    fn what_cannot_be_read_fails_closed() {
        // A deny with an unreadable element applies more widely.
        let by_code = consent(json!({"type": "permit", "provision": [{"type": "deny",
            "code": [{"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}], "actor": [actor("IRCP", "RXA")]}]}));
        assert_eq!(summary(&directive_rows(&by_code).unwrap()), ["deny0 r=RXA s=* c=* l=* p=*"]);
        // An actor named by a literal reference is "anyone" in a deny rule …
        let literal = consent(json!({"type": "permit", "provision": [{"type": "deny",
            "actor": [{"role": {"coding": [{"system": PARTICIPATION_TYPE, "code": "IRCP"}]}, "reference": {"reference": "Organization/o1"}}]}]}));
        assert_eq!(summary(&directive_rows(&literal).unwrap()), ["deny0 r=* s=* c=* l=* p=*"]);
        // … and drops an exception.
        let literal_exception = consent(json!({"type": "deny", "provision": [{"type": "permit",
            "actor": [{"role": {"coding": [{"system": PARTICIPATION_TYPE, "code": "IRCP"}]}, "reference": {"reference": "Organization/o1"}}]}]}));
        assert_eq!(summary(&directive_rows(&literal_exception).unwrap()), ["deny0 r=* s=* c=* l=* p=*"]);
        // An exception with exceptions of its own is dropped.
        let deep = consent(json!({"type": "deny", "provision": [{"type": "permit", "actor": [actor("IRCP", "RXA")],
            "provision": [{"type": "deny", "class": [{"system": RESOURCE_TYPES, "code": "Observation"}]}]}]}));
        assert_eq!(summary(&directive_rows(&deep).unwrap()), ["deny0 r=* s=* c=* l=* p=*"]);
        // A class in another system makes a deny rule about every class, even beside one it reads.
        let other_system = consent(json!({"type": "permit", "provision": [{"type": "deny", "class": [
            {"system": RESOURCE_TYPES, "code": "Observation"}, {"system": "urn:x", "code": "meds"}]}]}));
        assert_eq!(summary(&directive_rows(&other_system).unwrap()), ["deny0 r=* s=* c=* l=* p=*"]);
    }

    #[test]
    fn ods_codes_are_read_in_upper_case_and_a_bad_one_names_nobody() {
        let lower = consent(json!({"type": "permit", "provision": [{"type": "deny", "actor": [actor("IRCP", "b82002")]}]}));
        assert_eq!(summary(&directive_rows(&lower).unwrap()), ["deny0 r=B82002 s=* c=* l=* p=*"]);
        let bad = consent(json!({"type": "permit", "provision": [{"type": "deny", "actor": [actor("IRCP", "not an ods code")]}]}));
        assert_eq!(summary(&directive_rows(&bad).unwrap()), ["deny0 r=* s=* c=* l=* p=*"], "a deny rule for everybody");
    }

    #[test]
    fn only_active_privacy_consents_with_a_literal_patient_count() {
        let mut inactive = consent(json!({"type": "deny"}));
        inactive["status"] = json!("inactive");
        assert!(directive_rows(&inactive).unwrap().is_empty());
        let mut research = consent(json!({"type": "deny"}));
        research["scope"] = json!({"coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": "research"}]});
        assert!(directive_rows(&research).unwrap().is_empty());
        let mut by_identifier = consent(json!({"type": "deny"}));
        by_identifier["patient"] = json!({"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9449305552"}});
        assert_eq!(directive_rows(&by_identifier).unwrap_err().path, "Consent.patient");
    }
}
