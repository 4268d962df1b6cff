//! `Patient/{id}/$everything`: what the requester may see of one patient's record, every type
//! in the patient compartment (or those `_type` lists), as a searchset paged by signed cursor.
//! The consent scope is in the SQL, so the total and the pages count only what may be seen.

use std::sync::Arc;

use fhir_models::ResourceType;
use fhir_models::bundle::EntryParts;
use fhir_models::outcome::IssueType;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::paging::PagingKey;
use super::read::check_id;
use super::search::query_string;
use super::{FhirResponse, FhirService, access};
use crate::enforce::Permitted;
use crate::error::ApiError;
use crate::store::{CompartmentQuery, Position};

pub async fn everything(
    service: &FhirService,
    permit: &Permitted,
    patient_id: &str,
    params: &[(String, String)],
) -> Result<FhirResponse, ApiError> {
    check_id(patient_id)?;
    let mut count = service.limits.default_count;
    let mut types = Vec::new();
    let mut cursor = None;
    let mut used = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "_count" => {
                count = super::parse_count(value)?.clamp(1, service.limits.max_count);
                used.push((name.clone(), count.to_string()));
            }
            "_type" => {
                for type_name in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    let resource_type = ResourceType::parse(type_name)
                        .map_err(|_| ApiError::invalid_at(IssueType::Value, "_type", format!("{type_name:?} is not a resource type")))?;
                    types.push(resource_type);
                }
                used.push((name.clone(), value.clone()));
            }
            "_cursor" => cursor = Some(value.clone()),
            "_format" | "_pretty" => {}
            _ => {
                return Err(ApiError::invalid_at(
                    IssueType::NotSupported,
                    name.as_str(),
                    format!("$everything takes _count and _type; {name} is not supported"),
                ));
            }
        }
    }
    let named = match &permit.requester().principal {
        Some(consent::Principal::Clinician(..)) => access::resolve(service, &access::Target::PatientId(patient_id.to_owned())).await?,
        _ => Vec::new(),
    };
    let scope = access::scope(service, permit, &named).await?;
    let known = access::gate(service, &scope, &named).await?;
    let scope = Arc::new(consent::Scope::clone(&scope).with_known_patients(&known));

    let path = format!("Patient/{patient_id}/$everything");
    let canonical = PagingKey::canonical(&format!("everything {path}"), &used);
    let after =
        match &cursor {
            Some(cursor) => Some(service.paging.verify(&canonical, cursor).map(|position| position.key).ok_or_else(|| {
                ApiError::invalid_at(IssueType::Value, "_cursor", "the paging link was altered or belongs to another query")
            })?),
            None => None,
        };
    let query = CompartmentQuery { patient_id: patient_id.to_owned(), types, count, after, access: Arc::clone(&scope) };
    let (mut versions, total) = service.store.compartment(&query, true).await?;
    let more = versions.len() > count;
    versions.truncate(count);
    let last_key = versions.last().map(|version| version.key);
    let released = access::returned(access::release(service, &scope, versions, true).await?);

    let base = format!("{}/{path}", service.base_url);
    let used_query = query_string(&used);
    let link = |cursor: Option<String>| {
        let mut parts: Vec<String> = Vec::new();
        if !used_query.is_empty() {
            parts.push(used_query.clone());
        }
        if let Some(cursor) = cursor {
            parts.push(format!("_cursor={}", utf8_percent_encode(&cursor, NON_ALPHANUMERIC)));
        }
        if parts.is_empty() { base.clone() } else { format!("{base}?{}", parts.join("&")) }
    };
    let self_link = link(cursor.clone());
    let first_link = link(None);
    let next_link = match (more, last_key) {
        (true, Some(key)) => Some(link(Some(service.paging.sign(&canonical, &Position { values: Vec::new(), key, backward: false })))),
        _ => None,
    };
    let links = super::page_links(&self_link, Some(&first_link), None, next_link.as_deref());
    let mut writer = service.bundle_writer("searchset", total, &links);
    for version in &released {
        let full_url = service.full_url(version);
        writer.entry(EntryParts {
            full_url: Some(&full_url),
            resource: version.content.as_deref(),
            search_mode: Some("match"),
            ..Default::default()
        });
    }
    Ok(FhirResponse::ok(writer.finish()))
}
