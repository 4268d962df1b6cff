//! Writing one version: stamp `id` and `meta`, extract the index rows, validate, persist.

use fhir_models::ResourceType;
use fhir_models::json::{StoredMeta, stamp_resource};
use fhir_models::outcome::IssueType;
use fhir_models::search::extract;
use time::OffsetDateTime;

use super::body::ParsedResource;
use super::{FhirService, WriteContext, instant};
use crate::error::ApiError;
use crate::store::{AccessRows, NewVersion, StoreTransaction, StoredVersion, WriteMethod};

/// A resource that passed the schema and the UK Core rules: the only kind the write
/// interactions take.
pub struct Validated(ParsedResource);

impl Validated {
    pub fn into_inner(self) -> ParsedResource {
        self.0
    }
}

impl std::ops::Deref for Validated {
    type Target = ParsedResource;
    fn deref(&self) -> &ParsedResource {
        &self.0
    }
}

/// Bodies above this size are parsed and validated on the blocking pool, so that a multi-megabyte
/// Bundle does not stall the other requests of its worker.
const BLOCKING_THRESHOLD: usize = 128 * 1024;

/// Parse and validate a body (400 for bad JSON, 422 for an unacceptable resource, every issue
/// named), before any transaction takes a lock.
pub async fn prepare(service: &FhirService, bytes: Vec<u8>, expected: Option<ResourceType>) -> Result<Validated, ApiError> {
    let validator = service.validator.clone();
    let labels = service.policy.labels.clone();
    let large = bytes.len() > BLOCKING_THRESHOLD;
    let work = move || {
        let resource = ParsedResource::parse(bytes, expected)?;
        let report = validator.validate(resource.resource_type, &resource.value);
        if !report.is_acceptable() {
            return Err(ApiError::Unprocessable(report.into_outcome()));
        }
        // A transaction resolves a placeholder or conditional reference before it writes, where
        // the same check is made again on what it resolved to.
        let resolved_later = resource.value["patient"]["reference"].as_str().is_some_and(|r| r.starts_with("urn:") || r.contains('?'));
        if resource.resource_type.as_str() == "Consent" && consent::directives::is_privacy_consent(&resource.value) && !resolved_later {
            consent::directives::consent_patient(&resource.value).map_err(directive_error)?;
        }
        Ok(Validated(label(&labels, resource)?))
    };
    if large { tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::Internal(e.into()))? } else { work() }
}

/// Add the sensitivity labels its codes call for to `meta.security` (DESIGN §4), keeping the
/// labels the publisher sent: every stored resource is labelled at write time, whatever its
/// source, and a re-sent resource gets the same labels (so it is still "unchanged").
fn label(labels: &consent::SensitivityLabels, mut resource: ParsedResource) -> Result<ParsedResource, ApiError> {
    use fhir_models::system::V3_ACT_CODE;
    let found = labels.labels_for(fhir_models::json::codings(&resource.value));
    if found.is_empty() {
        return Ok(resource);
    }
    let present = |code: &str| {
        resource.value["meta"]["security"]
            .as_array()
            .is_some_and(|security| security.iter().any(|label| label["system"] == V3_ACT_CODE && label["code"] == code))
    };
    let missing: Vec<&str> = found.into_iter().filter(|code| !present(code)).collect();
    if missing.is_empty() {
        return Ok(resource);
    }
    let structure = |e: serde_json::Error| ApiError::invalid(IssueType::Structure, e.to_string());
    resource.bytes = fhir_models::json::add_security_labels(&resource.bytes, V3_ACT_CODE, &missing).map_err(structure)?;
    resource.value = serde_json::from_slice(&resource.bytes).map_err(structure)?;
    Ok(resource)
}

/// Stamp a resource for storage as version `version_id` of `id`.
pub fn stamp(resource: &ParsedResource, id: &str, version_id: i64, last_updated: i64) -> Result<String, ApiError> {
    let bytes = stamp_resource(&resource.bytes, &StoredMeta { id, version_id, last_updated: &instant(last_updated) })
        .map_err(|e| ApiError::invalid(IssueType::Structure, format!("the resource is not a JSON object: {e}")))?;
    String::from_utf8(bytes).map_err(|_| ApiError::invalid(IssueType::Structure, "the resource is not UTF-8"))
}

pub struct Persist<'a> {
    pub resource: &'a ParsedResource,
    pub id: &'a str,
    pub version_id: i64,
    pub method: WriteMethod,
    pub now: OffsetDateTime,
}

/// Write a new version of a resource inside `transaction`.
pub async fn persist(
    transaction: &mut dyn StoreTransaction,
    context: &WriteContext,
    write: Persist<'_>,
) -> Result<StoredVersion, ApiError> {
    let last_updated = fhir_models::datetime::to_micros(write.now);
    let content = stamp(write.resource, write.id, write.version_id, last_updated)?;
    let index = extract(write.resource.resource_type, write.id, &write.resource.value);
    let access = access_rows(write.resource.resource_type, write.id, &write.resource.value)?;
    crate::audit::record_written(
        format!("{}/{}/_history/{}", write.resource.resource_type, write.id, write.version_id),
        &index.patient_compartment,
    );
    transaction
        .write(NewVersion {
            resource_type: write.resource.resource_type,
            id: write.id.to_owned(),
            version_id: write.version_id,
            last_updated,
            method: write.method,
            content: Some(content.clone()),
            index: Some(index),
            access,
            source_org: context.source_org.as_ref().map(|ods| ods.to_string()),
        })
        .await?;
    Ok(StoredVersion {
        key: 0,
        resource_type: write.resource.resource_type,
        id: write.id.to_owned(),
        version_id: write.version_id,
        last_updated,
        deleted: false,
        method: write.method,
        content: Some(bytes::Bytes::from(content)),
        sequence: 0,
        source_org: context.source_org.as_ref().map(|ods| ods.to_string()),
    })
}

/// What the access rules read of a version: the relationships a care record gives and the
/// sharing wishes a Consent holds (docs/information-governance.md).
pub fn access_rows(resource_type: ResourceType, id: &str, resource: &serde_json::Value) -> Result<AccessRows, ApiError> {
    let directives = match resource_type.as_str() {
        "Consent" => consent::directives::directive_rows(resource).map_err(directive_error)?,
        _ => Vec::new(),
    };
    Ok(AccessRows {
        relationships: consent::relationships::relationship_rows(resource_type.as_str(), id, resource),
        directives,
        security_context: consent::access::security_context(resource_type.as_str(), resource),
        document_entries: consent::access::document_entries(resource_type.as_str(), resource),
    })
}

fn directive_error(error: consent::directives::DirectiveError) -> ApiError {
    use fhir_models::outcome::Issue;
    ApiError::Unprocessable(fhir_models::OperationOutcome::single(Issue::error(IssueType::Required, error.reason).at(error.path)))
}

/// A fresh server-assigned id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
