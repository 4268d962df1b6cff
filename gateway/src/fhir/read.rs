//! `read` and `vread`.

use fhir_models::ResourceType;
use fhir_models::id::is_valid_id;
use fhir_models::outcome::IssueType;

use super::{FhirResponse, FhirService};
use crate::enforce::Permitted;
use crate::error::ApiError;

pub fn check_id(id: &str) -> Result<(), ApiError> {
    if is_valid_id(id) { Ok(()) } else { Err(ApiError::invalid_at(IssueType::Value, "id", format!("{id:?} is not a FHIR id"))) }
}

fn not_found(resource_type: ResourceType, id: &str) -> ApiError {
    ApiError::NotFound(format!("{resource_type}/{id} is not known"))
}

/// GET `[type]/[id]`. A deleted resource answers 410, an unknown one 404.
pub async fn read(service: &FhirService, permit: &Permitted, resource_type: ResourceType, id: &str) -> Result<FhirResponse, ApiError> {
    debug_assert_eq!(permit.interaction(), fhir_models::interaction::Interaction::Read);
    check_id(id)?;
    if !super::self_access::is_visible(service, permit, resource_type, id).await? {
        return Err(not_found(resource_type, id));
    }
    match service.store.read(resource_type, id).await? {
        None => Err(not_found(resource_type, id)),
        Some(version) if version.deleted => Err(ApiError::Gone(format!("{resource_type}/{id} was deleted"))),
        Some(version) => Ok(FhirResponse::version(200, version)),
    }
}

/// GET `[type]/[id]/_history/[vid]`.
pub async fn vread(
    service: &FhirService,
    permit: &Permitted,
    resource_type: ResourceType,
    id: &str,
    version: &str,
) -> Result<FhirResponse, ApiError> {
    debug_assert_eq!(permit.interaction(), fhir_models::interaction::Interaction::Vread);
    check_id(id)?;
    let Some(version_id) = fhir_models::VersionId::parse(version) else {
        return Err(ApiError::NotFound(format!("{resource_type}/{id} has no version {version:?}")));
    };
    if !super::self_access::is_visible(service, permit, resource_type, id).await? {
        return Err(ApiError::NotFound(format!("{resource_type}/{id} has no version {version_id}")));
    }
    match service.store.vread(resource_type, id, version_id.0).await? {
        None => Err(ApiError::NotFound(format!("{resource_type}/{id} has no version {version_id}"))),
        Some(version) if version.deleted => Err(ApiError::Gone(format!("version {version_id} of {resource_type}/{id} is a deletion"))),
        Some(version) => Ok(FhirResponse::version(200, version)),
    }
}
