//! `search-type`: GET `[type]?…`, POST `[type]/_search`, and the patient compartment
//! `Patient/{id}/[type]?…`.

use fhir_models::OperationOutcome;
use fhir_models::ResourceType;
use fhir_models::bundle::EntryParts;
use fhir_models::outcome::{Issue, IssueSeverity, IssueType};
use fhir_models::search::table;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::Value;

use super::paging::PagingKey;
use super::search_params::{Handling, ParsedSearch, Summary, parse_search};
use super::{FhirResponse, FhirService, access};
use crate::enforce::Permitted;
use crate::error::ApiError;
use crate::store::{Filter, Position, StoredVersion};

/// Characters escaped in a query component of a link.
const QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'&')
    .add(b'+')
    .add(b'=')
    .add(b'%')
    .add(b'|')
    .add(b'\\')
    .add(b',')
    .add(b'{')
    .add(b'}')
    .add(b'[')
    .add(b']');

pub fn query_string(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(name, value)| format!("{}={}", utf8_percent_encode(name, QUERY), utf8_percent_encode(value, QUERY)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Where a search looks: a whole type, or one patient's compartment.
pub enum SearchScope<'a> {
    Type(ResourceType),
    PatientCompartment { patient_id: &'a str, resource_type: ResourceType },
}

impl SearchScope<'_> {
    fn resource_type(&self) -> ResourceType {
        match self {
            Self::Type(resource_type) | Self::PatientCompartment { resource_type, .. } => *resource_type,
        }
    }

    /// The path below the FHIR base, for links and cursor signatures.
    fn path(&self) -> String {
        match self {
            Self::Type(resource_type) => resource_type.to_string(),
            Self::PatientCompartment { patient_id, resource_type } => format!("Patient/{patient_id}/{resource_type}"),
        }
    }
}

/// The SUBSETTED tag a summarised resource carries (R4 search, "_summary").
const SUBSETTED: &str = "SUBSETTED";
const SUBSETTED_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

pub async fn search(
    service: &FhirService,
    permit: &Permitted,
    scope: SearchScope<'_>,
    params: &[(String, String)],
    handling: Handling,
) -> Result<FhirResponse, ApiError> {
    debug_assert_eq!(permit.interaction(), fhir_models::interaction::Interaction::SearchType);
    let resource_type = scope.resource_type();
    let ParsedSearch { mut query, used, ignored, cursor, summary, elements } =
        parse_search(resource_type, params, &service.limits, handling)?;
    if let SearchScope::PatientCompartment { patient_id, .. } = &scope {
        if !table().in_patient_compartment(resource_type) {
            return Err(ApiError::invalid_at(
                IssueType::NotSupported,
                resource_type.as_str(),
                format!("{resource_type} is not in the patient compartment"),
            ));
        }
        query.filters.push(Filter::PatientCompartment((*patient_id).to_owned()));
    }
    query.access = Some(scoped(service, permit, &query).await?);
    let path = scope.path();
    let canonical = PagingKey::canonical(&format!("search {path}"), &used);
    if let Some(cursor) = &cursor {
        let position = service.paging.verify(&canonical, cursor).ok_or_else(|| {
            ApiError::invalid_at(IssueType::Value, "_cursor", "the paging link was altered or belongs to another search; search again")
        })?;
        query.position = Some(position);
    }
    let mut page = service.store.search(&query).await?;
    let scope = query.access.as_deref().expect("every search is scoped");
    page.matches = released(service, scope, std::mem::take(&mut page.matches)).await?;
    page.included = released(service, scope, std::mem::take(&mut page.included)).await?;

    let base = format!("{}/{path}", service.base_url);
    let used_query = query_string(&used);
    let link = |cursor: Option<&str>| {
        let mut url = base.clone();
        let mut separator = '?';
        if !used_query.is_empty() {
            url.push(separator);
            url.push_str(&used_query);
            separator = '&';
        }
        if let Some(cursor) = cursor {
            url.push(separator);
            url.push_str("_cursor=");
            url.push_str(&utf8_percent_encode(cursor, QUERY).to_string());
        }
        url
    };
    let cursor_link = |position: &Position, backward: bool| {
        let position = Position { backward, ..position.clone() };
        link(Some(&service.paging.sign(&canonical, &position)))
    };
    let self_link = link(cursor.as_deref());
    let first_link = link(None);
    let next_link = page.more_after.then(|| page.last.as_ref().map(|last| cursor_link(last, false))).flatten();
    let previous_link = match (&page.first, page.more_before) {
        (Some(first), true) => Some(cursor_link(first, true)),
        // An empty page reached by a cursor: the way back starts where it pointed.
        (None, _) => query.position.as_ref().filter(|p| !p.backward).map(|p| cursor_link(p, true)),
        _ => None,
    };
    let links = super::page_links(&self_link, Some(&first_link), previous_link.as_deref(), next_link.as_deref());
    let mut writer = service.bundle_writer("searchset", page.total, &links);
    let shape = Shape::new(summary, elements);
    for (versions, mode) in [(&page.matches, "match"), (&page.included, "include")] {
        for version in versions {
            let full_url = service.full_url(version);
            let shaped = shape.apply(version)?;
            writer.entry(EntryParts {
                full_url: Some(&full_url),
                resource: shaped.as_deref().or(version.content.as_deref()),
                search_mode: Some(mode),
                ..Default::default()
            });
        }
    }
    if !ignored.is_empty() {
        let outcome = OperationOutcome::new(
            ignored.iter().map(|reason| Issue::new(IssueSeverity::Warning, IssueType::NotSupported, reason.as_str())).collect(),
        )
        .to_json_bytes();
        writer.entry(EntryParts { resource: Some(&outcome), search_mode: Some("outcome"), ..Default::default() });
    }
    Ok(FhirResponse::ok(writer.finish()))
}

/// The scope a search runs in; a clinician's search that names one patient is first answered
/// for that patient (no relationship, dissent).
async fn scoped(
    service: &FhirService,
    permit: &Permitted,
    query: &crate::store::SearchQuery,
) -> Result<std::sync::Arc<consent::Scope>, ApiError> {
    let is_clinician = matches!(permit.requester().principal, Some(consent::Principal::Clinician(..)));
    let targets = if is_clinician { access::targets(query) } else { Vec::new() };
    let mut resolved = Vec::with_capacity(targets.len());
    for target in &targets {
        resolved.push(access::resolve(service, target).await?);
    }
    // A self-claimed relationship covers the one patient a search names: not two named at once.
    let named: Vec<String> = match resolved.split_first() {
        Some((first, rest)) if rest.iter().all(|other| other == first) => first.clone(),
        _ => Vec::new(),
    };
    let scope = access::scope(service, permit, &named).await?;
    let mut known = Vec::new();
    for patients in &resolved {
        known.extend(access::gate(service, &scope, patients).await?);
    }
    Ok(std::sync::Arc::new(consent::Scope::clone(&scope).with_known_patients(&known)))
}

/// What leaves of a page, each resource decided again.
async fn released(service: &FhirService, scope: &consent::Scope, versions: Vec<StoredVersion>) -> Result<Vec<StoredVersion>, ApiError> {
    Ok(access::returned(access::release(service, scope, versions, true).await?))
}

/// `_summary` and `_elements`: which top-level elements of each resource to return.
struct Shape {
    summary: Summary,
    elements: Option<Vec<String>>,
}

impl Shape {
    fn new(summary: Summary, elements: Option<Vec<String>>) -> Self {
        Self { summary, elements }
    }

    /// The subsetted JSON, or `None` to return the resource whole.
    fn apply(&self, version: &StoredVersion) -> Result<Option<Vec<u8>>, ApiError> {
        let Some(content) = version.content.as_deref() else { return Ok(None) };
        let keep: Box<dyn Fn(&str) -> bool + '_> = match (self.summary, &self.elements) {
            (Summary::True, _) => {
                let summary = table().summary_elements(version.resource_type);
                Box::new(move |key| summary.iter().any(|s| s == key))
            }
            (Summary::Text, _) => Box::new(|key| key == "text"),
            (Summary::Data, _) => Box::new(|key| key != "text"),
            (_, Some(elements)) => Box::new(move |key| elements.iter().any(|e| e == key)),
            (Summary::False | Summary::Count, None) => return Ok(None),
        };
        let mut resource: Value =
            serde_json::from_slice(content).map_err(|e| ApiError::Internal(anyhow::anyhow!("stored JSON does not parse: {e}")))?;
        let Value::Object(members) = &mut resource else { return Ok(None) };
        members.retain(|key, _| matches!(key.as_str(), "resourceType" | "id" | "meta") || keep(key));
        let meta = members.entry("meta").or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(meta) = meta {
            let tags = meta.entry("tag").or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(tags) = tags {
                tags.push(serde_json::json!({"system": SUBSETTED_SYSTEM, "code": SUBSETTED}));
            }
        }
        Ok(Some(serde_json::to_vec(&resource).map_err(|e| ApiError::Internal(e.into()))?))
    }
}
