//! `delete` and conditional delete. Deleting keeps the history: a deletion is a version.

use fhir_models::ResourceType;
use fhir_models::outcome::IssueType;
use time::OffsetDateTime;

use super::read::check_id;
use super::search_params::conditional_query;
use super::{FhirService, WriteContext};
use crate::enforce::Permitted;
use crate::error::ApiError;
use crate::store::{NewVersion, StoreTransaction, WriteMethod};

/// Delete inside an open transaction. Returns the version id of the deletion, or `None` when
/// there was nothing to delete (deleting is idempotent).
pub async fn delete_in(
    service: &FhirService,
    transaction: &mut dyn StoreTransaction,
    context: &WriteContext,
    resource_type: ResourceType,
    id: &str,
    now: OffsetDateTime,
) -> Result<Option<i64>, ApiError> {
    check_id(id)?;
    let Some(current) = transaction.read_for_update(resource_type, id).await? else { return Ok(None) };
    // A record its writer may not see is answered as a missing one: there was nothing for them
    // to delete.
    if current.deleted || !super::access::writable(service, context, &current).await? {
        return Ok(None);
    }
    let version_id = current.version_id + 1;
    let patients = current
        .content
        .as_deref()
        .and_then(|content| serde_json::from_slice::<serde_json::Value>(content).ok())
        .map(|value| fhir_models::search::extract_some(resource_type, id, &value, |_| false).patient_compartment)
        .unwrap_or_default();
    crate::audit::record_written(format!("{resource_type}/{id}/_history/{version_id}"), &patients);
    transaction
        .write(NewVersion {
            resource_type,
            id: id.to_owned(),
            version_id,
            last_updated: fhir_models::datetime::to_micros(now),
            method: WriteMethod::Delete,
            content: None,
            index: None,
            access: Default::default(),
            source_org: context.source_org.as_ref().map(|ods| ods.to_string()),
        })
        .await?;
    Ok(Some(version_id))
}

/// DELETE `[type]/[id]`.
pub async fn delete(service: &FhirService, permit: &Permitted, resource_type: ResourceType, id: &str) -> Result<Option<i64>, ApiError> {
    super::access::check_patient_write(service, permit, resource_type, Some(id), None, false).await?;
    let context = super::access::write_context(service, permit).await?;
    let mut transaction = service.store.begin().await?;
    let deleted = delete_in(service, transaction.as_mut(), &context, resource_type, id, service.now()).await?;
    transaction.commit().await?;
    Ok(deleted)
}

/// Conditional delete inside an open transaction: `DELETE [type]?[search]` deletes the one match.
pub async fn conditional_delete_in(
    service: &FhirService,
    transaction: &mut dyn StoreTransaction,
    context: &WriteContext,
    resource_type: ResourceType,
    condition: &str,
    now: OffsetDateTime,
) -> Result<Option<i64>, ApiError> {
    let query = conditional_query(resource_type, condition, &service.limits)?
        .ok_or_else(|| ApiError::invalid(IssueType::Value, "a conditional delete needs at least one search parameter"))?;
    transaction.lock_condition(&format!("{resource_type}?{condition}")).await?;
    let found = transaction.search(&query).await?;
    match found.matches.as_slice() {
        [] => Ok(None),
        [one] => {
            let id = one.id.clone();
            delete_in(service, transaction, context, resource_type, &id, now).await
        }
        _ => Err(ApiError::PreconditionFailed(format!("the condition matches more than one {resource_type}; delete them one by one"))),
    }
}

pub async fn conditional_delete(
    service: &FhirService,
    permit: &Permitted,
    resource_type: ResourceType,
    condition: &str,
) -> Result<Option<i64>, ApiError> {
    super::access::check_patient_write(service, permit, resource_type, None, None, true).await?;
    let context = super::access::write_context(service, permit).await?;
    let mut transaction = service.store.begin().await?;
    let deleted = conditional_delete_in(service, transaction.as_mut(), &context, resource_type, condition, service.now()).await?;
    transaction.commit().await?;
    Ok(deleted)
}
