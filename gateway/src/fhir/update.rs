//! `update` (including update-as-create with a client-chosen id) and conditional update.

use fhir_models::outcome::IssueType;
use fhir_models::{ResourceType, VersionId};
use time::OffsetDateTime;

use super::body::ParsedResource;
use super::read::check_id;
use super::search_params::conditional_query;
use super::write::{Persist, Validated, new_id, persist, stamp};
use super::{FhirService, WriteContext};
use crate::enforce::Permitted;
use crate::error::ApiError;
use crate::store::{StoreTransaction, StoredVersion, WriteMethod};

pub enum Updated {
    /// The resource did not exist (or was deleted): 201.
    Created(StoredVersion),
    Updated(StoredVersion),
    /// The content equals the current version: no new version is made, so a re-sent update
    /// changes nothing.
    Unchanged(StoredVersion),
}

impl Updated {
    pub fn version(&self) -> &StoredVersion {
        match self {
            Self::Created(version) | Self::Updated(version) | Self::Unchanged(version) => version,
        }
    }
}

/// Update inside an open transaction; the resource has been validated already.
#[allow(clippy::too_many_arguments)]
pub async fn update_in(
    service: &FhirService,
    transaction: &mut dyn StoreTransaction,
    context: &WriteContext,
    resource_type: ResourceType,
    id: &str,
    resource: &ParsedResource,
    if_match: Option<&str>,
    now: OffsetDateTime,
) -> Result<Updated, ApiError> {
    check_id(id)?;
    match resource.id() {
        None => {
            return Err(ApiError::invalid_at(IssueType::Required, format!("{resource_type}.id"), "an update must carry the resource's id"));
        }
        Some(body_id) if body_id != id => {
            return Err(ApiError::invalid_at(
                IssueType::Invalid,
                format!("{resource_type}.id"),
                format!("the body's id {body_id:?} does not match the id in the URL {id:?}"),
            ));
        }
        Some(_) => {}
    }
    let current = transaction.read_for_update(resource_type, id).await?;
    if let Some(version) = &current
        && !super::access::writable(service, context, version).await?
    {
        return Err(super::access::not_writable(resource_type));
    }
    if let Some(if_match) = if_match {
        let expected = VersionId::from_etag(if_match).ok_or_else(|| {
            ApiError::invalid_at(IssueType::Value, "If-Match", format!("If-Match must be an ETag such as W/\"3\", found {if_match:?}"))
        })?;
        match &current {
            Some(version) if !version.deleted && version.version_id == expected.0 => {}
            Some(version) if !version.deleted => {
                return Err(ApiError::PreconditionFailed(format!(
                    "{resource_type}/{id} is at version {}, not {}; read it again before updating",
                    version.version_id, expected.0
                )));
            }
            _ => return Err(ApiError::PreconditionFailed(format!("{resource_type}/{id} does not exist, so If-Match cannot match"))),
        }
    }
    if let Some(version) = &current
        && !version.deleted
        && version.content.as_deref() == Some(stamp(resource, id, version.version_id, version.last_updated)?.as_bytes())
    {
        return Ok(Updated::Unchanged(version.clone()));
    }
    let version_id = current.as_ref().map_or(1, |version| version.version_id + 1);
    let created = current.as_ref().is_none_or(|version| version.deleted);
    let version = persist(transaction, context, Persist { resource, id, version_id, method: WriteMethod::Update, now }).await?;
    Ok(if created { Updated::Created(version) } else { Updated::Updated(version) })
}

/// PUT `[type]/[id]`.
pub async fn update(
    service: &FhirService,
    permit: &Permitted,
    resource_type: ResourceType,
    id: &str,
    resource: Validated,
    if_match: Option<&str>,
) -> Result<Updated, ApiError> {
    super::access::check_patient_write(service, permit, resource_type, Some(id), Some(&resource.value), false).await?;
    let context = super::access::write_context(service, permit).await?;
    let mut transaction = service.store.begin().await?;
    let updated = update_in(service, transaction.as_mut(), &context, resource_type, id, &resource, if_match, service.now()).await?;
    transaction.commit().await?;
    Ok(updated)
}

/// Conditional update inside an open transaction: `PUT [type]?[search]`.
pub async fn conditional_update_in(
    service: &FhirService,
    transaction: &mut dyn StoreTransaction,
    context: &WriteContext,
    resource: &ParsedResource,
    condition: &str,
    now: OffsetDateTime,
) -> Result<Updated, ApiError> {
    let resource_type = resource.resource_type;
    let query = conditional_query(resource_type, condition, &service.limits)?
        .ok_or_else(|| ApiError::invalid(IssueType::Value, "a conditional update needs at least one search parameter"))?;
    transaction.lock_condition(&format!("{resource_type}?{condition}")).await?;
    let found = transaction.search(&query).await?;
    match found.matches.as_slice() {
        [] => {
            let id = resource.id().map(str::to_owned).unwrap_or_else(new_id);
            let with_id = with_id(resource, &id)?;
            update_in(service, transaction, context, resource_type, &id, &with_id, None, now).await
        }
        [existing] => {
            if let Some(body_id) = resource.id()
                && body_id != existing.id
            {
                return Err(ApiError::invalid_at(
                    IssueType::Invalid,
                    format!("{resource_type}.id"),
                    format!("the condition matches {resource_type}/{} but the body's id is {body_id:?}", existing.id),
                ));
            }
            let with_id = with_id(resource, &existing.id)?;
            update_in(service, transaction, context, resource_type, &existing.id.clone(), &with_id, None, now).await
        }
        _ => Err(ApiError::PreconditionFailed(format!("the condition matches more than one {resource_type}; it is not selective enough"))),
    }
}

/// PUT `[type]?[search]`.
pub async fn conditional_update(
    service: &FhirService,
    permit: &Permitted,
    resource: Validated,
    condition: &str,
) -> Result<Updated, ApiError> {
    super::access::check_patient_write(service, permit, resource.resource_type, None, None, true).await?;
    let context = super::access::write_context(service, permit).await?;
    let mut transaction = service.store.begin().await?;
    let updated = conditional_update_in(service, transaction.as_mut(), &context, &resource, condition, service.now()).await?;
    transaction.commit().await?;
    Ok(updated)
}

/// The resource with its `id` set (a conditional update may arrive without one).
fn with_id(resource: &ParsedResource, id: &str) -> Result<ParsedResource, ApiError> {
    if resource.id() == Some(id) {
        return Ok(ParsedResource { resource_type: resource.resource_type, value: resource.value.clone(), bytes: resource.bytes.clone() });
    }
    let mut value = resource.value.clone();
    value["id"] = serde_json::Value::String(id.to_owned());
    let bytes = fhir_models::json::set_id(&resource.bytes, id).map_err(|e| ApiError::invalid(IssueType::Structure, e.to_string()))?;
    Ok(ParsedResource { resource_type: resource.resource_type, value, bytes })
}
