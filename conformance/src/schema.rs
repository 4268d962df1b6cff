use std::sync::OnceLock;

use fhir_models::ResourceType;
use fhir_models::outcome::IssueType;
use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, Registry};
use serde_json::{Value, json};

use crate::path::pointer_to_fhirpath;
use crate::report::Report;

const SCHEMA_ID: &str = "http://hl7.org/fhir/json-schema/4.0";

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("the FHIR JSON Schema is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the FHIR JSON Schema cannot be registered: {0}")]
    Registry(String),
    #[error("the FHIR JSON Schema does not define {0}")]
    MissingDefinition(String),
}

/// The R4 JSON Schema, compiled per resource type on first use of that type: the whole schema
/// is 3.3 MB, and a gateway that only ever sees thirty types should not pay for 146.
pub struct SchemaValidator {
    registry: Registry<'static>,
    validators: Vec<OnceLock<jsonschema::Validator>>,
}

impl SchemaValidator {
    pub fn new(schema: &[u8]) -> Result<Self, SchemaError> {
        let schema: Value = serde_json::from_slice(schema)?;
        let definitions = schema.get("definitions").and_then(Value::as_object);
        for resource_type in ResourceType::all() {
            if !definitions.is_some_and(|d| d.contains_key(resource_type.as_str())) {
                return Err(SchemaError::MissingDefinition(resource_type.to_string()));
            }
        }
        let registry = Registry::new()
            .draft(Draft::Draft6)
            .add(SCHEMA_ID, schema)
            .and_then(|builder| builder.prepare())
            .map_err(|e| SchemaError::Registry(e.to_string()))?;
        let validators = (0..ResourceType::count()).map(|_| OnceLock::new()).collect();
        Ok(Self { registry, validators })
    }

    fn validator(&self, resource_type: ResourceType) -> &jsonschema::Validator {
        self.validators[resource_type.index()].get_or_init(|| {
            let root = json!({ "$ref": format!("{SCHEMA_ID}#/definitions/{resource_type}") });
            jsonschema::options()
                .with_draft(Draft::Draft6)
                .with_registry(&self.registry)
                .build(&root)
                .expect("every definition of the checked schema compiles")
        })
    }

    /// Compile the validators of these types now rather than on first use.
    pub fn warm(&self, types: impl IntoIterator<Item = ResourceType>) {
        for resource_type in types {
            self.validator(resource_type);
        }
    }

    pub fn is_valid(&self, resource_type: ResourceType, resource: &Value) -> bool {
        resource.get("resourceType").and_then(Value::as_str) == Some(resource_type.as_str())
            && self.validator(resource_type).is_valid(resource)
    }

    /// Validate `resource` as `resource_type`, adding an issue per failure. A nested resource
    /// (contained, or a Bundle entry) that fails is validated again as its own type, so the
    /// issue names the element inside it rather than "no alternative of oneOf matched".
    pub fn validate(&self, resource_type: ResourceType, resource: &Value, report: &mut Report) {
        self.validate_at(resource_type, resource, resource_type.as_str(), report);
    }

    fn validate_at(&self, resource_type: ResourceType, resource: &Value, location: &str, report: &mut Report) {
        match resource.get("resourceType").and_then(Value::as_str) {
            Some(found) if found == resource_type.as_str() => {}
            Some(found) => {
                report.error(
                    IssueType::Invalid,
                    format!("{location}.resourceType"),
                    format!("expected a {resource_type} resource, found resourceType {found:?}"),
                );
                return;
            }
            None => {
                report.error(IssueType::Required, format!("{location}.resourceType"), "resourceType is missing");
                return;
            }
        }
        let validator = self.validator(resource_type);
        if validator.is_valid(resource) {
            return;
        }
        for error in validator.iter_errors(resource) {
            let pointer = error.instance_path().as_str().to_owned();
            let expression = pointer_to_fhirpath(location, &pointer);
            if let ValidationErrorKind::OneOfNotValid { .. } = error.kind()
                && let Some(nested) = resource.pointer(&pointer)
                && let Some(nested_type) = nested.get("resourceType").and_then(Value::as_str).and_then(|t| ResourceType::parse(t).ok())
                && !pointer.is_empty()
            {
                self.validate_at(nested_type, nested, &expression, report);
                continue;
            }
            report.error(issue_type(error.kind()), expression, describe(&error));
        }
    }
}

fn issue_type(kind: &ValidationErrorKind) -> IssueType {
    match kind {
        ValidationErrorKind::Required { .. } => IssueType::Required,
        ValidationErrorKind::AdditionalProperties { .. } | ValidationErrorKind::Type { .. } => IssueType::Structure,
        _ => IssueType::Value,
    }
}

/// The schema's message, cut short: some quote whole sub-trees of the input.
fn describe(error: &jsonschema::ValidationError<'_>) -> String {
    let message = error.to_string();
    const LIMIT: usize = 300;
    if message.len() <= LIMIT {
        return message;
    }
    let cut = (0..=LIMIT).rev().find(|i| message.is_char_boundary(*i)).unwrap_or(0);
    format!("{}…", &message[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> SchemaValidator {
        SchemaValidator::new(crate::FHIR_R4_SCHEMA).unwrap()
    }

    #[test]
    fn accepts_a_valid_patient_and_names_the_path_of_an_invalid_one() {
        let validator = validator();
        let patient = ResourceType::parse("Patient").unwrap();
        assert!(validator.is_valid(patient, &json!({"resourceType": "Patient", "gender": "female"})));

        let mut report = Report::default();
        validator.validate(patient, &json!({"resourceType": "Patient", "gender": "woman", "name": [{"family": 7}]}), &mut report);
        let expressions: Vec<&str> = report.issues.iter().flat_map(|i| i.expression.iter().map(String::as_str)).collect();
        assert!(expressions.contains(&"Patient.gender"), "{expressions:?}");
        assert!(expressions.contains(&"Patient.name[0].family"), "{expressions:?}");
    }

    #[test]
    fn a_bad_contained_resource_is_reported_inside_it() {
        let validator = validator();
        let observation = ResourceType::parse("Observation").unwrap();
        let resource = json!({
            "resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "contained": [{"resourceType": "Patient", "id": "p", "birthDate": "yesterday"}]
        });
        let mut report = Report::default();
        validator.validate(observation, &resource, &mut report);
        let expressions: Vec<&str> = report.issues.iter().flat_map(|i| i.expression.iter().map(String::as_str)).collect();
        assert_eq!(expressions, vec!["Observation.contained[0].birthDate"]);
    }

    #[test]
    fn rejects_a_resource_of_another_type() {
        let mut report = Report::default();
        validator().validate(ResourceType::parse("Patient").unwrap(), &json!({"resourceType": "Observation"}), &mut report);
        assert!(!report.is_acceptable());
    }
}
