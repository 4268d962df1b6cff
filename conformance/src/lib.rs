//! Is this resource acceptable? The FHIR R4 JSON Schema and the UK Core rules that matter to the
//! gateway, with findings reported as values (`Report`) that turn into an OperationOutcome.
//!
//! **Architecture Invariant:** no I/O. The schema arrives as bytes from the caller (the gateway
//! embeds it); nothing here reads files, the network or the clock.
#![forbid(unsafe_code)]

pub mod capability;
mod path;
mod report;
mod schema;
mod ukcore;

pub use path::pointer_to_fhirpath;
pub use report::Report;
pub use schema::{SchemaError, SchemaValidator};
pub use ukcore::UkCoreRules;

use fhir_models::ResourceType;
use serde_json::Value;

/// The R4 JSON Schema shipped with the gateway (HL7 FHIR R4 4.0.1, CC0).
pub const FHIR_R4_SCHEMA: &[u8] = include_bytes!("../schema/fhir.schema.json");

/// Reference-target table generated from the R4 StructureDefinitions.
pub const REFERENCE_TARGETS: &[u8] = include_bytes!("../data/reference-targets.json");

/// Everything a resource is checked against on write.
pub struct Validator {
    schema: SchemaValidator,
    ukcore: UkCoreRules,
}

impl Validator {
    pub fn new(schema: &[u8], reference_targets: &[u8]) -> Result<Self, SchemaError> {
        Ok(Self { schema: SchemaValidator::new(schema)?, ukcore: UkCoreRules::new(reference_targets)? })
    }

    /// The validator over the embedded schema and tables.
    pub fn embedded() -> Result<Self, SchemaError> {
        Self::new(FHIR_R4_SCHEMA, REFERENCE_TARGETS)
    }

    /// Check a resource that claims to be `resource_type`. The report is empty when it is
    /// acceptable; it may hold warnings only, which do not reject it.
    pub fn validate(&self, resource_type: ResourceType, resource: &Value) -> Report {
        let mut report = Report::default();
        self.schema.validate(resource_type, resource, &mut report);
        self.ukcore.check(resource_type, resource, &mut report);
        report
    }

    /// Only the reference-target rule: for a resource whose references were just rewritten.
    pub fn check_references(&self, resource_type: ResourceType, resource: &Value) -> Report {
        let mut report = Report::default();
        self.ukcore.check_references(resource_type, resource, &mut report);
        report
    }

    pub fn schema(&self) -> &SchemaValidator {
        &self.schema
    }
}
