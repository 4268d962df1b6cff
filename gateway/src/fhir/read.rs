//! `read` and `vread`.

use fhir_models::ResourceType;
use fhir_models::id::is_valid_id;
use fhir_models::outcome::IssueType;

use super::{FhirResponse, FhirService, access};
use crate::enforce::Permitted;
use crate::error::ApiError;
use crate::store::{HistoryScope, StoredVersion};

pub fn check_id(id: &str) -> Result<(), ApiError> {
    if is_valid_id(id) { Ok(()) } else { Err(ApiError::invalid_at(IssueType::Value, "id", format!("{id:?} is not a FHIR id"))) }
}

fn not_found(resource_type: ResourceType, id: &str) -> ApiError {
    ApiError::NotFound(format!("{resource_type}/{id} is not known"))
}

/// GET `[type]/[id]`. A deleted resource answers 410, an unknown one 404; one the requester may
/// not see answers exactly as an unknown one (and a deleted one they could not have seen, too).
pub async fn read(service: &FhirService, permit: &Permitted, resource_type: ResourceType, id: &str) -> Result<FhirResponse, ApiError> {
    debug_assert_eq!(permit.interaction(), fhir_models::interaction::Interaction::Read);
    check_id(id)?;
    let scope = access::scope(service, permit, &[]).await?;
    let Some(current) = service.store.read(resource_type, id).await? else { return Err(not_found(resource_type, id)) };
    if current.deleted {
        return match last_content(service, &scope, resource_type, id).await? {
            Some(_) => Err(ApiError::Gone(format!("{resource_type}/{id} was deleted"))),
            None => Err(not_found(resource_type, id)),
        };
    }
    match return_one(service, &scope, current).await? {
        Some(version) => Ok(FhirResponse::version(200, version)),
        None => Err(not_found(resource_type, id)),
    }
}

/// The version as the requester may see it, or `None` when they may not.
async fn release_one(service: &FhirService, scope: &consent::Scope, version: StoredVersion) -> Result<Option<StoredVersion>, ApiError> {
    let released = access::release(service, scope, vec![version], false).await?.pop();
    Ok(released.filter(|r| r.is_visible()).map(|r| r.version))
}

/// As [`release_one`], noting the version as returned in the audit record.
async fn return_one(service: &FhirService, scope: &consent::Scope, version: StoredVersion) -> Result<Option<StoredVersion>, ApiError> {
    let released = access::release(service, scope, vec![version], false).await?;
    Ok(access::returned(released).pop())
}

/// Whether the requester may see the resource as it last stood: its current version, or, when
/// it was deleted, the last version with content (released as they may see it).
pub(super) async fn last_content(
    service: &FhirService,
    scope: &consent::Scope,
    resource_type: ResourceType,
    id: &str,
) -> Result<Option<StoredVersion>, ApiError> {
    let history = service.store.history(&HistoryScope::Instance(resource_type, id.to_owned()), 100, None, None, None).await?;
    match history.into_iter().find(|version| version.content.is_some()) {
        Some(version) => release_one(service, scope, version).await,
        None => Ok(None),
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
    let missing = || ApiError::NotFound(format!("{resource_type}/{id} has no version {version_id}"));
    let scope = access::scope(service, permit, &[]).await?;
    // A version is shown only to those who may see the resource as it last stood.
    if last_content(service, &scope, resource_type, id).await?.is_none() {
        return Err(missing());
    }
    match service.store.vread(resource_type, id, version_id.0).await? {
        None => Err(missing()),
        Some(version) if version.deleted => Err(ApiError::Gone(format!("version {version_id} of {resource_type}/{id} is a deletion"))),
        Some(version) => return_one(service, &scope, version).await?.map(|v| FhirResponse::version(200, v)).ok_or_else(missing),
    }
}
