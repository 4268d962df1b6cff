//! `history-instance`, `history-type` and `history-system`: versions newest first.

use fhir_models::bundle::{EntryParts, EntryResponse};
use fhir_models::outcome::IssueType;
use percent_encoding::utf8_percent_encode;

use super::paging::PagingKey;
use super::search::query_string;
use super::{FhirResponse, FhirService, access, etag, instant};
use crate::enforce::Permitted;
use crate::error::ApiError;
use crate::store::{HistoryScope, Position, StoredVersion, WriteMethod};

pub async fn history(
    service: &FhirService,
    permit: &Permitted,
    scope: HistoryScope,
    params: &[(String, String)],
) -> Result<FhirResponse, ApiError> {
    let mut count = service.limits.default_count;
    let mut since = None;
    let mut cursor = None;
    let mut used = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "_count" => {
                count = super::parse_count(value)?.min(service.limits.max_count);
                used.push((name.clone(), count.to_string()));
            }
            "_since" => {
                let (range, _) = fhir_models::datetime::parse_range(value).ok_or_else(|| {
                    ApiError::invalid_at(IssueType::Value, "_since", format!("_since must be a FHIR instant, found {value:?}"))
                })?;
                since = Some(range.low);
                used.push((name.clone(), value.clone()));
            }
            "_cursor" => cursor = Some(value.clone()),
            "_format" | "_pretty" => {}
            _ => return Err(ApiError::invalid_at(IssueType::NotSupported, name.as_str(), format!("{name} is not a history parameter"))),
        }
    }
    let (scope_name, path) = match &scope {
        HistoryScope::Instance(resource_type, id) => {
            super::read::check_id(id)?;
            (format!("history {resource_type}/{id}"), format!("{}/{resource_type}/{id}/_history", service.base_url))
        }
        HistoryScope::Type(resource_type) => (format!("history {resource_type}"), format!("{}/{resource_type}/_history", service.base_url)),
        HistoryScope::System => ("history".to_owned(), format!("{}/_history", service.base_url)),
    };
    let canonical = PagingKey::canonical(&scope_name, &used);
    let before =
        match &cursor {
            Some(cursor) => Some(service.paging.verify(&canonical, cursor).map(|position| position.key).ok_or_else(|| {
                ApiError::invalid_at(IssueType::Value, "_cursor", "the paging link was altered or belongs to another query")
            })?),
            None => None,
        };
    // A resource's history is shown to those who may see the resource as it last stood, each
    // version as they may see it; the history of a type or of the system holds only what the
    // requester's organisation wrote.
    let access_scope = access::scope(service, permit, &[]).await?;
    let published_by = match (&scope, access_scope.org()) {
        (HistoryScope::Instance(resource_type, id), _) => {
            if super::read::last_content(service, &access_scope, *resource_type, id).await?.is_none() {
                return Err(ApiError::NotFound(format!("{resource_type}/{id} is not known")));
            }
            None
        }
        (_, Some(organisation)) => Some(organisation),
        (_, None) => {
            return Err(ApiError::Forbidden {
                code: consent::DenyCode::AccessDenied,
                rule: "history",
                message: "the history of a type or of the system is kept for the organisations that wrote it".into(),
            });
        }
    };
    let mut versions = service.store.history(&scope, count, before, since, published_by).await?;
    let has_more = versions.len() > count;
    versions.truncate(count);
    let versions: Vec<StoredVersion> = access::returned(access::release(service, &access_scope, versions, false).await?);

    let used_query = query_string(&used);
    let link = |extra: Option<String>| {
        let mut parts: Vec<String> = Vec::new();
        if !used_query.is_empty() {
            parts.push(used_query.clone());
        }
        if let Some(extra) = extra {
            parts.push(extra);
        }
        if parts.is_empty() { path.clone() } else { format!("{path}?{}", parts.join("&")) }
    };
    let self_link = link(cursor.as_ref().map(|c| format!("_cursor={}", utf8_percent_encode(c, percent_encoding::NON_ALPHANUMERIC))));
    let next_link = has_more
        .then(|| {
            versions.last().map(|last| {
                link(Some(format!(
                    "_cursor={}",
                    utf8_percent_encode(
                        &service.paging.sign(&canonical, &Position { values: Vec::new(), key: last.sequence, backward: false }),
                        percent_encoding::NON_ALPHANUMERIC
                    )
                )))
            })
        })
        .flatten();
    let links = super::page_links(&self_link, None, None, next_link.as_deref());
    let mut writer = service.bundle_writer("history", None, &links);
    for version in &versions {
        let full_url = service.full_url(version);
        let request_url = match version.method {
            WriteMethod::Create => version.resource_type.to_string(),
            _ => format!("{}/{}", version.resource_type, version.id),
        };
        let status = match version.method {
            WriteMethod::Create => "201 Created",
            WriteMethod::Update if version.version_id == 1 => "201 Created",
            WriteMethod::Update => "200 OK",
            WriteMethod::Delete => "204 No Content",
        };
        let version_etag = etag(version.version_id);
        let last_modified = instant(version.last_updated);
        writer.entry(EntryParts {
            full_url: Some(&full_url),
            resource: version.content.as_deref(),
            request: Some((version.method.code(), &request_url)),
            response: Some(EntryResponse {
                status,
                location: None,
                etag: Some(&version_etag),
                last_modified: Some(&last_modified),
                outcome: None,
            }),
            ..Default::default()
        });
    }
    Ok(FhirResponse::ok(writer.finish()))
}
