use std::collections::{HashMap, HashSet};
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

/// The R4 JSON Schema, compiled per resource type on first use of that type.
///
/// Nested resources (`contained`, `Bundle.entry.resource`, `Bundle.entry.response.outcome`,
/// `Parameters.parameter.resource`) are the schema's `ResourceList`, a `oneOf` over all 146
/// types: compiled as written, every type's validator would hold the whole schema (about 20 MB
/// each) and a nested error would read "no alternative of oneOf matched". So `ResourceList` is
/// replaced by "an object with a resourceType", and each nested resource is validated with its
/// own type's validator, its issues located inside it. Validators then cost about 1 MB each.
pub struct SchemaValidator {
    registry: Registry<'static>,
    validators: Vec<OnceLock<jsonschema::Validator>>,
    /// For each definition that can hold a nested resource, directly or through its children:
    /// property name → what the property holds.
    nesting: HashMap<String, Vec<(String, Nested)>>,
}

#[derive(Clone, Debug)]
enum Nested {
    /// A resource (or an array of them).
    Resource,
    /// A datatype or backbone element that may hold resources further down.
    Element(String),
}

const RESOURCE_LIST: &str = "#/definitions/ResourceList";

fn referenced_definition(property: &Value) -> Option<&str> {
    property.get("$ref").or_else(|| property.get("items").and_then(|items| items.get("$ref"))).and_then(Value::as_str)
}

/// Drop the `description` annotations: they are most of the schema's size and no check uses
/// them. (A `description` inside a `properties` map is an element name, and stays.)
fn strip_descriptions(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.shift_remove("description");
            for (key, child) in object.iter_mut() {
                match (key.as_str(), child) {
                    ("properties" | "definitions", Value::Object(members)) => members.values_mut().for_each(strip_descriptions),
                    (_, child) => strip_descriptions(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

impl SchemaValidator {
    pub fn new(schema: &[u8]) -> Result<Self, SchemaError> {
        let mut schema: Value = serde_json::from_slice(schema)?;
        let definitions =
            schema.get("definitions").and_then(Value::as_object).ok_or_else(|| SchemaError::MissingDefinition("definitions".into()))?;
        for resource_type in ResourceType::all() {
            if !definitions.contains_key(resource_type.as_str()) {
                return Err(SchemaError::MissingDefinition(resource_type.to_string()));
            }
        }
        let nesting = nesting_table(definitions);
        strip_descriptions(&mut schema);
        // The published schema gives complex types and resources properties but no type, so an
        // array where one element belongs (`Composition.identifier: [...]`) would pass: JSON
        // Schema applies `properties` to objects only.
        // A primitive's extensions (`_given`) are a list aligned with its values, with null
        // where a value has none: those items stay free to be null.
        for definition in schema["definitions"].as_object_mut().into_iter().flat_map(|all| all.values_mut()) {
            let Some(object) = definition.as_object_mut() else { continue };
            if object.contains_key("properties") && !object.contains_key("type") {
                object.insert("type".into(), json!("object"));
            }
            for (name, property) in object.get_mut("properties").and_then(Value::as_object_mut).into_iter().flatten() {
                if name.starts_with('_') && property["type"] == "array" {
                    let items = property["items"].take();
                    property["items"] = json!({"anyOf": [items, {"type": "null"}]});
                }
            }
        }
        schema["definitions"]["ResourceList"] = json!({"type": "object", "required": ["resourceType"]});
        let registry = Registry::new()
            .draft(Draft::Draft6)
            .add(SCHEMA_ID, schema)
            .and_then(|builder| builder.prepare())
            .map_err(|e| SchemaError::Registry(e.to_string()))?;
        let validators = (0..ResourceType::count()).map(|_| OnceLock::new()).collect();
        Ok(Self { registry, validators, nesting })
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

    pub fn is_valid(&self, resource_type: ResourceType, resource: &Value) -> bool {
        let mut report = Report::default();
        self.validate(resource_type, resource, &mut report);
        report.is_acceptable()
    }

    /// Validate `resource` as `resource_type`, adding an issue per failure, located by FHIRPath.
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
        if !validator.is_valid(resource) {
            for error in validator.iter_errors(resource) {
                let expression = pointer_to_fhirpath(location, error.instance_path().as_str());
                report.error(issue_type(error.kind()), expression, describe(&error));
            }
        }
        self.validate_nested(resource_type.as_str(), resource, location, report);
    }

    /// Validate the resources nested in an element of definition `definition`.
    fn validate_nested(&self, definition: &str, element: &Value, location: &str, report: &mut Report) {
        let Some(properties) = self.nesting.get(definition) else { return };
        for (property, nested) in properties {
            let Some(value) = element.get(property) else { continue };
            let items: Vec<(String, &Value)> = match value {
                Value::Array(items) => items.iter().enumerate().map(|(i, item)| (format!("{location}.{property}[{i}]"), item)).collect(),
                other => vec![(format!("{location}.{property}"), other)],
            };
            for (item_location, item) in items {
                match nested {
                    Nested::Resource => match item.get("resourceType").and_then(Value::as_str).map(ResourceType::parse) {
                        Some(Ok(nested_type)) => self.validate_at(nested_type, item, &item_location, report),
                        Some(Err(error)) => report.error(IssueType::Value, format!("{item_location}.resourceType"), error.to_string()),
                        // the schema has reported the missing resourceType already
                        None => {}
                    },
                    Nested::Element(child) => self.validate_nested(child, item, &item_location, report),
                }
            }
        }
    }
}

/// Which properties of which definitions lead to nested resources.
fn nesting_table(definitions: &serde_json::Map<String, Value>) -> HashMap<String, Vec<(String, Nested)>> {
    let definition_name = |reference: &str| reference.strip_prefix("#/definitions/").map(str::to_owned);
    // Definitions that can reach a ResourceList, found by iterating to a fixed point.
    let mut reaching: HashSet<String> = HashSet::new();
    loop {
        let before = reaching.len();
        for (name, definition) in definitions {
            let properties = definition.get("properties").and_then(Value::as_object);
            let reaches = properties.into_iter().flatten().any(|(_, property)| match referenced_definition(property) {
                Some(RESOURCE_LIST) => true,
                Some(reference) => definition_name(reference).is_some_and(|child| reaching.contains(&child)),
                None => false,
            });
            if reaches {
                reaching.insert(name.clone());
            }
        }
        if reaching.len() == before {
            break;
        }
    }
    let mut table = HashMap::new();
    for name in &reaching {
        let properties = definitions[name].get("properties").and_then(Value::as_object);
        let entries: Vec<(String, Nested)> = properties
            .into_iter()
            .flatten()
            .filter_map(|(property, schema)| match referenced_definition(schema) {
                Some(RESOURCE_LIST) => Some((property.clone(), Nested::Resource)),
                Some(reference) => definition_name(reference)
                    .filter(|child| reaching.contains(child))
                    .map(|child| (property.clone(), Nested::Element(child))),
                None => None,
            })
            .collect();
        table.insert(name.clone(), entries);
    }
    table
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
    fn bundle_entries_and_parameters_are_validated_as_their_own_types() {
        let validator = validator();
        let bundle = json!({
            "resourceType": "Bundle", "type": "collection",
            "entry": [
                {"resource": {"resourceType": "Patient", "gender": "female"}},
                {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueBoolean": "yes"},
                 "response": {"status": "200", "outcome": {"resourceType": "OperationOutcome", "issue": [{"severity": "bad", "code": "value"}]}}},
                {"resource": {"resourceType": "NotAType"}}
            ]
        });
        let mut report = Report::default();
        validator.validate(ResourceType::parse("Bundle").unwrap(), &bundle, &mut report);
        let expressions: Vec<&str> = report.issues.iter().flat_map(|i| i.expression.iter().map(String::as_str)).collect();
        assert!(expressions.contains(&"Bundle.entry[1].resource.valueBoolean"), "{expressions:?}");
        assert!(expressions.contains(&"Bundle.entry[1].response.outcome.issue[0].severity"), "{expressions:?}");
        assert!(expressions.contains(&"Bundle.entry[2].resource.resourceType"), "{expressions:?}");
        assert!(!expressions.iter().any(|e| e.starts_with("Bundle.entry[0]")), "{expressions:?}");
        let parameters = json!({"resourceType": "Parameters", "parameter": [{"name": "a", "part": [{"name": "b", "resource": {"resourceType": "Patient", "active": 3}}]}]});
        let mut report = Report::default();
        validator.validate(ResourceType::parse("Parameters").unwrap(), &parameters, &mut report);
        let expressions: Vec<&str> = report.issues.iter().flat_map(|i| i.expression.iter().map(String::as_str)).collect();
        assert_eq!(expressions, vec!["Parameters.parameter[0].part[0].resource.active"]);
    }

    #[test]
    fn a_list_where_one_element_belongs_is_refused_and_an_object_where_a_list_belongs_too() {
        let validator = validator();
        let composition = ResourceType::parse("Composition").unwrap();
        let base = json!({"resourceType": "Composition", "status": "final", "type": {"text": "x"}, "date": "2026-01-01",
            "author": [{"display": "a"}], "title": "t"});
        assert!(validator.is_valid(composition, &base));
        let mut listed = base.clone();
        listed["identifier"] = json!([{"system": "s", "value": "v"}]);
        let mut report = Report::default();
        validator.validate(composition, &listed, &mut report);
        let expressions: Vec<&str> = report.issues.iter().flat_map(|i| i.expression.iter().map(String::as_str)).collect();
        assert_eq!(expressions, vec!["Composition.identifier"]);
        let mut single = base.clone();
        single["author"] = json!({"display": "a"});
        assert!(!validator.is_valid(composition, &single));
        // A primitive list's extensions keep their places with null.
        let patient = ResourceType::parse("Patient").unwrap();
        let aligned = json!({"resourceType": "Patient", "name": [{"given": ["Ann", "Bea"], "_given": [null, {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}]}]});
        assert!(validator.is_valid(patient, &aligned));
        assert!(!validator.is_valid(patient, &json!({"resourceType": "Patient", "name": [{"given": ["Ann"], "_given": [7]}]})));
    }

    #[test]
    fn rejects_a_resource_of_another_type() {
        let mut report = Report::default();
        validator().validate(ResourceType::parse("Patient").unwrap(), &json!({"resourceType": "Observation"}), &mut report);
        assert!(!report.is_acceptable());
    }
}
