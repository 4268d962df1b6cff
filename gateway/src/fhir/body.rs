//! Reading a resource from a request body.

use fhir_models::ResourceType;
use fhir_models::outcome::IssueType;
use serde_json::Value;

use crate::error::ApiError;

/// A resource as received: its bytes (kept, so that decimals keep their precision) and its
/// parsed form (for validation and indexing).
pub struct ParsedResource {
    pub resource_type: ResourceType,
    pub value: Value,
    pub bytes: Vec<u8>,
}

impl ParsedResource {
    /// Parse a body that must be a resource, of `expected` type when given.
    pub fn parse(bytes: Vec<u8>, expected: Option<ResourceType>) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(&bytes).map_err(|error| {
            ApiError::invalid(
                IssueType::Structure,
                format!("the body is not valid JSON: {error} (line {}, column {})", error.line(), error.column()),
            )
        })?;
        Self::from_value(value, bytes, expected)
    }

    /// From JSON already parsed (a Bundle entry); `bytes` must be the same JSON.
    pub fn from_value(value: Value, bytes: Vec<u8>, expected: Option<ResourceType>) -> Result<Self, ApiError> {
        let Some(type_name) = value.get("resourceType").and_then(Value::as_str) else {
            return Err(ApiError::invalid_at(
                IssueType::Required,
                "resourceType",
                "the body is not a FHIR resource: resourceType is missing",
            ));
        };
        let resource_type =
            ResourceType::parse(type_name).map_err(|e| ApiError::invalid_at(IssueType::Value, "resourceType", e.to_string()))?;
        if let Some(expected) = expected
            && expected != resource_type
        {
            return Err(ApiError::invalid_at(
                IssueType::Invalid,
                "resourceType",
                format!("the body is a {resource_type} but the URL is for {expected}"),
            ));
        }
        Ok(Self { resource_type, value, bytes })
    }

    pub fn id(&self) -> Option<&str> {
        self.value.get("id").and_then(Value::as_str)
    }
}
