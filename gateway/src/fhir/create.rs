//! `create`, and conditional create (`If-None-Exist`).

use super::body::ParsedResource;
use super::search_params::conditional_query;
use super::write::{Persist, Validated, new_id, persist};
use super::{FhirService, WriteContext};
use crate::enforce::Permitted;
use crate::error::ApiError;
use crate::store::{StoreTransaction, StoredVersion, WriteMethod};
use fhir_models::outcome::IssueType;
use time::OffsetDateTime;

/// What a create did: made a new resource, or found the one `If-None-Exist` names.
pub enum Created {
    New(StoredVersion),
    Existing(StoredVersion),
}

/// Create inside an open transaction (a single request, or a batch entry). The resource has
/// been validated already: validation runs before the transaction, never while it holds locks.
pub async fn create_in(
    service: &FhirService,
    transaction: &mut dyn StoreTransaction,
    context: &WriteContext,
    resource: &ParsedResource,
    if_none_exist: Option<&str>,
    now: OffsetDateTime,
) -> Result<Created, ApiError> {
    if let Some(condition) = if_none_exist {
        let query = conditional_query(resource.resource_type, condition, &service.limits)?
            .ok_or_else(|| ApiError::invalid_at(IssueType::Value, "If-None-Exist", "If-None-Exist needs at least one search parameter"))?;
        transaction.lock_condition(&format!("{}?{condition}", resource.resource_type)).await?;
        let found = transaction.search(&query).await?;
        match found.matches.len() {
            0 => {}
            1 => return Ok(Created::Existing(found.matches.into_iter().next().expect("one match"))),
            _ => {
                return Err(ApiError::PreconditionFailed(format!(
                    "If-None-Exist matched more than one {}; the condition is not selective enough",
                    resource.resource_type
                )));
            }
        }
    }
    let id = new_id();
    let version = persist(transaction, context, Persist { resource, id: &id, version_id: 1, method: WriteMethod::Create, now }).await?;
    Ok(Created::New(version))
}

/// POST `[type]`.
pub async fn create(
    service: &FhirService,
    permit: &Permitted,
    resource: Validated,
    if_none_exist: Option<&str>,
) -> Result<Created, ApiError> {
    super::access::check_patient_write(service, permit, resource.resource_type, None, Some(&resource.value), if_none_exist.is_some())
        .await?;
    let mut transaction = service.store.begin().await?;
    let created = create_in(service, transaction.as_mut(), &permit.write_context(None), &resource, if_none_exist, service.now()).await?;
    transaction.commit().await?;
    Ok(created)
}

/// `a=1&b=2` into decoded pairs.
pub fn parse_query_string(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned()
}
