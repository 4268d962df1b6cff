//! The UK Core rules the gateway enforces on write, beyond the R4 schema:
//! - an identifier in the NHS number system holds a valid NHS number (Modulus 11);
//! - an identifier in an ODS system holds a well-formed ODS code;
//! - a literal reference points at a resource type the element allows (R4 targetProfile): an
//!   error for `subject` and `patient`, which decide whose record a resource is part of, and a
//!   warning elsewhere (four official R4 examples break the rule on other elements).

use std::collections::HashMap;

use fhir_models::outcome::{Issue, IssueSeverity, IssueType};
use fhir_models::{NhsNumber, OdsCode, Reference, ResourceType, system};
use serde::Deserialize;
use serde_json::Value;

use crate::report::Report;
use crate::schema::SchemaError;

#[derive(Deserialize)]
struct TargetsFile {
    targets: HashMap<String, Vec<String>>,
}

struct ReferenceRule {
    /// Element path below the resource (`participant`, `individual`).
    segments: Vec<String>,
    allowed: Vec<ResourceType>,
}

pub struct UkCoreRules {
    references: HashMap<ResourceType, Vec<ReferenceRule>>,
}

impl UkCoreRules {
    pub fn new(reference_targets: &[u8]) -> Result<Self, SchemaError> {
        let file: TargetsFile = serde_json::from_slice(reference_targets)?;
        let mut references: HashMap<ResourceType, Vec<ReferenceRule>> = HashMap::new();
        for (path, targets) in file.targets {
            let mut segments = path.split('.').map(str::to_owned);
            let Some(Ok(resource_type)) = segments.next().map(|t| ResourceType::parse(&t)) else { continue };
            let allowed: Vec<ResourceType> = targets.iter().filter_map(|t| ResourceType::parse(t).ok()).collect();
            if allowed.is_empty() {
                continue;
            }
            references.entry(resource_type).or_default().push(ReferenceRule { segments: segments.collect(), allowed });
        }
        Ok(Self { references })
    }

    pub fn check(&self, resource_type: ResourceType, resource: &Value, report: &mut Report) {
        check_identifiers(resource, &mut resource_type.as_str().to_owned(), report);
        self.check_references(resource_type, resource, report);
    }

    pub fn check_references(&self, resource_type: ResourceType, resource: &Value, report: &mut Report) {
        for rule in self.references.get(&resource_type).into_iter().flatten() {
            check_reference_targets(resource, &rule.segments, &rule.allowed, &mut resource_type.as_str().to_owned(), report);
        }
    }
}

/// Look at every object in the resource: an Identifier is an object with `system` and `value`.
fn check_identifiers(value: &Value, location: &mut String, report: &mut Report) {
    match value {
        Value::Object(object) => {
            if let (Some(Value::String(system_uri)), Some(Value::String(text))) = (object.get("system"), object.get("value")) {
                match system_uri.as_str() {
                    system::NHS_NUMBER => {
                        if let Err(error) = NhsNumber::parse(text) {
                            report.push(
                                Issue::error(IssueType::Value, format!("not a valid NHS number: {error}"))
                                    .at(format!("{location}.value"))
                                    .with_spine_code("INVALID_NHS_NUMBER", "Invalid NHS number"),
                            );
                        }
                    }
                    system::ODS_ORGANIZATION_CODE | system::ODS_SITE_CODE => {
                        if let Err(error) = OdsCode::parse(text) {
                            report.push(
                                Issue::error(IssueType::Value, error.to_string())
                                    .at(format!("{location}.value"))
                                    .with_spine_code("INVALID_IDENTIFIER_VALUE", "Invalid identifier value"),
                            );
                        }
                    }
                    _ => {}
                }
            }
            for (key, child) in object {
                let length = location.len();
                location.push('.');
                location.push_str(key);
                check_identifiers(child, location, report);
                location.truncate(length);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let length = location.len();
                location.push_str(&format!("[{index}]"));
                check_identifiers(item, location, report);
                location.truncate(length);
            }
        }
        _ => {}
    }
}

fn check_reference_targets(value: &Value, segments: &[String], allowed: &[ResourceType], location: &mut String, report: &mut Report) {
    match value {
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let length = location.len();
                location.push_str(&format!("[{index}]"));
                check_reference_targets(item, segments, allowed, location, report);
                location.truncate(length);
            }
        }
        Value::Object(object) => match segments.split_first() {
            Some((segment, rest)) => {
                if let Some(child) = object.get(segment) {
                    let length = location.len();
                    location.push('.');
                    location.push_str(segment);
                    check_reference_targets(child, rest, allowed, location, report);
                    location.truncate(length);
                }
            }
            None => {
                let Some(text) = object.get("reference").and_then(Value::as_str) else { return };
                if let Some((target, _)) = Reference::parse(text).local()
                    && !allowed.contains(&target)
                {
                    let names: Vec<&str> = allowed.iter().map(ResourceType::as_str).collect();
                    let message = format!("a reference here may point at {}, not {target}", names.join(", "));
                    let patient_link = location.rsplit('.').next().is_some_and(|element| {
                        let element = element.split('[').next().unwrap_or(element);
                        element == "subject" || element == "patient"
                    });
                    let issue = if patient_link {
                        Issue::error(IssueType::Value, message).with_spine_code("REFERENCE_NOT_FOUND", "Reference not found")
                    } else {
                        Issue::new(IssueSeverity::Warning, IssueType::Value, message)
                    };
                    report.push(issue.at(format!("{location}.reference")));
                }
            }
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(resource: Value) -> Report {
        let rules = UkCoreRules::new(crate::REFERENCE_TARGETS).unwrap();
        let resource_type = ResourceType::parse(resource["resourceType"].as_str().unwrap()).unwrap();
        let mut report = Report::default();
        rules.check(resource_type, &resource, &mut report);
        report
    }

    #[test]
    fn nhs_numbers_must_pass_modulus_11() {
        let ok = check(json!({"resourceType": "Patient", "identifier": [{"system": system::NHS_NUMBER, "value": "9449305552"}]}));
        assert!(ok.is_acceptable());
        let bad = check(json!({"resourceType": "Patient", "identifier": [{"system": system::NHS_NUMBER, "value": "4447685222"}]}));
        assert_eq!(bad.issues[0].expression, vec!["Patient.identifier[0].value"]);
        // an NHS number inside a reference's identifier is checked too
        let nested =
            check(json!({"resourceType": "Observation", "subject": {"identifier": {"system": system::NHS_NUMBER, "value": "123"}}}));
        assert_eq!(nested.issues[0].expression, vec!["Observation.subject.identifier.value"]);
    }

    #[test]
    fn ods_codes_must_be_well_formed() {
        let bad =
            check(json!({"resourceType": "Organization", "identifier": [{"system": system::ODS_ORGANIZATION_CODE, "value": "a81 001"}]}));
        assert!(!bad.is_acceptable());
    }

    #[test]
    fn references_must_point_at_allowed_types() {
        let ok = check(json!({"resourceType": "Observation", "subject": {"reference": "Patient/1"}}));
        assert!(ok.is_acceptable());
        let bad = check(json!({"resourceType": "Observation", "subject": {"reference": "Medication/1"}}));
        assert_eq!(bad.issues[0].expression, vec!["Observation.subject.reference"]);
        let nested = check(json!({"resourceType": "Encounter", "participant": [{"individual": {"reference": "Observation/1"}}]}));
        assert_eq!(nested.issues[0].expression, vec!["Encounter.participant[0].individual.reference"]);
        assert!(nested.is_acceptable(), "outside subject and patient, a wrong target is a warning");
        assert!(!check(json!({"resourceType": "AllergyIntolerance", "patient": {"reference": "Group/1"}})).is_acceptable());
        // conditional and placeholder references are resolved later, not judged here
        assert!(check(json!({"resourceType": "Observation", "subject": {"reference": "urn:uuid:1"}})).is_acceptable());
    }
}
