//! `search-type`: GET `[type]?…` and POST `[type]/_search`.

use fhir_models::OperationOutcome;
use fhir_models::ResourceType;
use fhir_models::bundle::{BundleWriter, EntryParts, Link};
use fhir_models::outcome::{Issue, IssueSeverity, IssueType};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::paging::PagingKey;
use super::search_params::{Handling, parse_search};
use super::{FhirResponse, FhirService, instant};
use crate::enforce::Permitted;
use crate::error::ApiError;

/// Characters escaped in a query component of a link.
const QUERY: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'<').add(b'>').add(b'&').add(b'+').add(b'=').add(b'%').add(b'|').add(b'\\').add(b',');

pub fn query_string(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(name, value)| format!("{}={}", utf8_percent_encode(name, QUERY), utf8_percent_encode(value, QUERY)))
        .collect::<Vec<_>>()
        .join("&")
}

pub async fn search(
    service: &FhirService,
    permit: &Permitted,
    resource_type: ResourceType,
    params: &[(String, String)],
    handling: Handling,
) -> Result<FhirResponse, ApiError> {
    debug_assert_eq!(permit.interaction(), fhir_models::interaction::Interaction::SearchType);
    let parsed = parse_search(resource_type, params, &service.limits, handling)?;
    let mut query = parsed.query;
    let canonical = PagingKey::canonical(&format!("search {resource_type}"), &parsed.used);
    if let Some(cursor) = &parsed.cursor {
        let position = service.paging.verify(&canonical, cursor).ok_or_else(|| {
            ApiError::invalid_at(IssueType::Value, "_cursor", "the paging link was altered or belongs to another search; search again")
        })?;
        query.after_key = Some(position);
    }
    let page = service.store.search(&query).await?;

    let base = format!("{}/{resource_type}", service.base_url);
    let used = query_string(&parsed.used);
    let join = |extra: &str| match (used.is_empty(), extra.is_empty()) {
        (true, true) => base.clone(),
        (true, false) => format!("{base}?{extra}"),
        (false, true) => format!("{base}?{used}"),
        (false, false) => format!("{base}?{used}&{extra}"),
    };
    let self_link = match &parsed.cursor {
        Some(cursor) => join(&format!("_cursor={}", utf8_percent_encode(cursor, QUERY))),
        None => join(""),
    };
    let first_link = join("");
    let next_link = page
        .has_more
        .then(|| {
            page.matches
                .last()
                .map(|last| join(&format!("_cursor={}", utf8_percent_encode(&service.paging.sign(&canonical, last.key), QUERY))))
        })
        .flatten();
    let mut links = vec![Link { relation: "self", url: &self_link }, Link { relation: "first", url: &first_link }];
    if let Some(next) = &next_link {
        links.push(Link { relation: "next", url: next });
    }

    let now = service.now();
    let mut writer = BundleWriter::new(
        &uuid::Uuid::new_v4().to_string(),
        &instant(fhir_models::datetime::to_micros(now)),
        "searchset",
        page.total,
        &links,
    );
    for version in &page.matches {
        let full_url = service.full_url(version);
        writer.entry(EntryParts {
            full_url: Some(&full_url),
            resource: version.content.as_deref(),
            search_mode: Some("match"),
            ..Default::default()
        });
    }
    if !parsed.ignored.is_empty() {
        let outcome = OperationOutcome::new(
            parsed.ignored.iter().map(|reason| Issue::new(IssueSeverity::Warning, IssueType::NotSupported, reason.as_str())).collect(),
        )
        .to_json_bytes();
        writer.entry(EntryParts { resource: Some(&outcome), search_mode: Some("outcome"), ..Default::default() });
    }
    Ok(FhirResponse::ok(writer.finish()))
}
