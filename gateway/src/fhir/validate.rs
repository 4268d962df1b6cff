//! `$validate`: check a resource without storing it.

use fhir_models::outcome::IssueType;
use fhir_models::{OperationOutcome, ResourceType};
use serde_json::Value;

use super::body::ParsedResource;
use super::{Body, FhirResponse, FhirService};
use crate::error::ApiError;

/// POST `[type]/$validate` with the resource, or a Parameters resource whose `resource`
/// parameter holds it. Answers 200 with an OperationOutcome listing every issue (or one
/// informational issue when there are none); 400 when there is nothing to validate.
pub fn validate(service: &FhirService, resource_type: ResourceType, bytes: Vec<u8>) -> Result<FhirResponse, ApiError> {
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::invalid(IssueType::Structure, format!("the body is not valid JSON: {error}")))?;
    let resource = if value.get("resourceType").and_then(Value::as_str) == Some("Parameters") && resource_type.as_str() != "Parameters" {
        let inner = value
            .get("parameter")
            .and_then(Value::as_array)
            .and_then(|params| params.iter().find(|p| p.get("name").and_then(Value::as_str) == Some("resource")))
            .and_then(|p| p.get("resource"))
            .cloned()
            .ok_or_else(|| {
                ApiError::invalid_at(IssueType::Required, "Parameters.parameter", "the Parameters resource has no \"resource\" parameter")
            })?;
        let inner_bytes = serde_json::to_vec(&inner).map_err(|e| ApiError::Internal(e.into()))?;
        ParsedResource::from_value(inner, inner_bytes, Some(resource_type))?
    } else {
        ParsedResource::from_value(value, bytes, Some(resource_type))?
    };
    let report = service.validator.validate(resource.resource_type, &resource.value);
    let outcome = if report.issues.is_empty() { OperationOutcome::all_ok("the resource is valid") } else { report.into_outcome() };
    Ok(FhirResponse { status: 200, body: Body::Outcome(outcome), etag: None, last_modified: None, location: None })
}
