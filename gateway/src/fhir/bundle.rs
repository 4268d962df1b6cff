//! `batch` and `transaction`: POST a Bundle to the base.
//!
//! A transaction is atomic: every entry is processed inside one store transaction, in the order
//! the spec gives (DELETE, POST, PUT, GET), with `urn:uuid:` placeholders and conditional
//! references (`Patient?identifier=…`) replaced by the ids they resolve to; if any entry fails,
//! nothing is written and the error names the entry. A batch processes each entry on its own.

use std::collections::HashMap;

use fhir_models::bundle::{EntryParts, EntryResponse};
use fhir_models::json::{RawMembers, rewrite_strings, rewrite_value_strings};
use fhir_models::outcome::IssueType;
use fhir_models::{OperationOutcome, Reference, ResourceType};
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::body::ParsedResource;
use super::create::{Created, create_in, parse_query_string};
use super::delete::{conditional_delete_in, delete_in};
use super::search_params::{Handling, conditional_query};
use super::update::{Updated, conditional_update_in, update_in};
use super::write::{Persist, new_id, persist, prepare};
use super::{Body, FhirResponse, FhirService, ReturnPreference, WriteContext, etag, instant};
use crate::enforce::Permitted;
use crate::error::ApiError;
use crate::store::{StoreTransaction, StoredVersion, WriteMethod};
use fhir_models::interaction::Interaction;

#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
enum Method {
    // Declaration order is the transaction processing order.
    Delete,
    Post,
    Put,
    Get,
}

struct Entry {
    index: usize,
    full_url: Option<String>,
    method: Method,
    url: String,
    if_none_exist: Option<String>,
    if_match: Option<String>,
    resource: Option<Vec<u8>>,
}

/// The response to one entry.
struct EntryResult {
    status: String,
    location: Option<String>,
    etag: Option<String>,
    last_modified: Option<String>,
    resource: Option<Vec<u8>>,
    outcome: Option<Vec<u8>>,
}

impl EntryResult {
    fn from_version(status: &str, version: &StoredVersion, preference: ReturnPreference, with_location: bool) -> Self {
        Self {
            status: status.to_owned(),
            location: with_location.then(|| format!("{}/{}/_history/{}", version.resource_type, version.id, version.version_id)),
            etag: Some(etag(version.version_id)),
            last_modified: Some(instant(version.last_updated)),
            resource: (preference == ReturnPreference::Representation).then(|| version.content.clone().unwrap_or_default().to_vec()),
            outcome: None,
        }
    }

    /// A conditional create matched a version: the requester sees it (as `shown`) only if the
    /// rules let them (docs/information-governance.md).
    fn existing(shown: Option<StoredVersion>, preference: ReturnPreference) -> Self {
        match shown {
            Some(version) => Self::from_version("200 OK", &version, preference, true),
            None => Self {
                outcome: Some(
                    OperationOutcome::single(fhir_models::outcome::Issue::new(
                        fhir_models::outcome::IssueSeverity::Information,
                        IssueType::Informational,
                        super::access::EXISTING_NOT_SHARED,
                    ))
                    .to_json_bytes(),
                ),
                ..Self::status_only("200 OK")
            },
        }
    }

    fn status_only(status: &str) -> Self {
        Self { status: status.to_owned(), location: None, etag: None, last_modified: None, resource: None, outcome: None }
    }

    fn from_error(error: &ApiError) -> Self {
        let status = error.status();
        Self {
            status: format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")),
            outcome: Some(error.outcome().to_json_bytes()),
            ..Self::status_only("")
        }
    }
}

pub async fn batch_or_transaction(
    service: &FhirService,
    permit: &Permitted,
    bytes: Vec<u8>,
    preference: ReturnPreference,
) -> Result<FhirResponse, ApiError> {
    let members = RawMembers::parse(&bytes)
        .map_err(|error| ApiError::invalid(IssueType::Structure, format!("the body is not a JSON object: {error}")))?;
    let string_member = |name: &str| members.get(name).and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
    if string_member("resourceType").as_deref() != Some("Bundle") {
        return Err(ApiError::invalid_at(
            IssueType::Invalid,
            "resourceType",
            "POST to the base takes a Bundle of type batch or transaction",
        ));
    }
    let bundle_type = string_member("type").unwrap_or_default();
    let raw_entries: Vec<&RawValue> = match members.get("entry") {
        Some(raw) => {
            serde_json::from_str(raw.get()).map_err(|e| ApiError::invalid_at(IssueType::Structure, "Bundle.entry", e.to_string()))?
        }
        None => Vec::new(),
    };
    if raw_entries.len() > service.limits.max_bundle_entries {
        return Err(ApiError::PayloadTooLarge(format!(
            "the Bundle has {} entries; this gateway takes at most {}",
            raw_entries.len(),
            service.limits.max_bundle_entries
        )));
    }
    let entries = raw_entries.iter().enumerate().map(|(index, raw)| parse_entry(index, raw)).collect::<Result<Vec<_>, _>>()?;
    let is_patient = matches!(permit.requester().principal, Some(consent::Principal::Patient(..)));
    match bundle_type.as_str() {
        "transaction" if is_patient => Err(patients_only_read()),
        "transaction" => {
            // Every entry must be permitted before anything is written.
            for entry in &entries {
                let url = parse_url(entry).map_err(|e| in_entry(entry.index, e))?;
                let entry_permit =
                    permit.reauthorize(entry_interaction(entry, &url), Some(url.resource_type)).map_err(|e| in_entry(entry.index, e))?;
                if matches!(entry.method, Method::Put | Method::Delete) {
                    super::access::check_patient_write(service, &entry_permit, url.resource_type, url.id, None, url.query.is_some())
                        .await
                        .map_err(|e| in_entry(entry.index, e))?;
                }
            }
            transaction(service, permit, entries, preference).await
        }
        "batch" => batch(service, permit, entries, preference).await,
        other => Err(ApiError::invalid_at(
            IssueType::Value,
            "Bundle.type",
            format!("POST to the base takes a Bundle of type batch or transaction, not {other:?}"),
        )),
    }
}

async fn existing_result(
    service: &FhirService,
    permit: &Permitted,
    version: &StoredVersion,
    preference: ReturnPreference,
) -> Result<EntryResult, ApiError> {
    Ok(EntryResult::existing(super::access::shown(service, permit, version.clone()).await?, preference))
}

/// A patient's Bundle may only read: their sharing wishes are written one by one, where each is
/// checked to be their own.
fn patients_only_read() -> ApiError {
    ApiError::Forbidden {
        code: consent::DenyCode::AccessDenied,
        rule: "patient-self-access",
        message: "a patient's batch may only read; write Consents one at a time".into(),
    }
}

fn parse_entry(index: usize, raw: &RawValue) -> Result<Entry, ApiError> {
    let at = |path: &str| format!("Bundle.entry[{index}]{path}");
    let members = RawMembers::parse(raw.get().as_bytes()).map_err(|e| ApiError::invalid_at(IssueType::Structure, at(""), e.to_string()))?;
    let request: Value = members
        .get("request")
        .map(|raw| serde_json::from_str(raw.get()))
        .transpose()
        .map_err(|e| ApiError::invalid_at(IssueType::Structure, at(".request"), e.to_string()))?
        .ok_or_else(|| ApiError::invalid_at(IssueType::Required, at(".request"), "every entry needs a request"))?;
    let text = |name: &str| request.get(name).and_then(Value::as_str).map(str::to_owned);
    let method = match text("method").as_deref() {
        Some("GET") | Some("HEAD") => Method::Get,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("DELETE") => Method::Delete,
        Some("PATCH") => {
            return Err(ApiError::invalid_at(IssueType::NotSupported, at(".request.method"), "PATCH is not supported; use PUT"));
        }
        other => return Err(ApiError::invalid_at(IssueType::Value, at(".request.method"), format!("unknown method {other:?}"))),
    };
    let url = text("url").ok_or_else(|| ApiError::invalid_at(IssueType::Required, at(".request.url"), "every request needs a url"))?;
    let full_url = members.get("fullUrl").and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
    let resource = members.get("resource").map(|raw| raw.get().as_bytes().to_vec());
    if matches!(method, Method::Post | Method::Put) && resource.is_none() {
        return Err(ApiError::invalid_at(IssueType::Required, at(".resource"), "POST and PUT entries need a resource"));
    }
    Ok(Entry {
        index,
        full_url,
        method,
        url: url.trim_start_matches('/').to_owned(),
        if_none_exist: text("ifNoneExist"),
        if_match: text("ifMatch"),
        resource,
    })
}

/// A request URL of an entry: `Patient`, `Patient/1`, `Patient/1/_history/2`, `Patient?x=y`.
struct EntryUrl<'a> {
    resource_type: ResourceType,
    id: Option<&'a str>,
    version: Option<&'a str>,
    query: Option<&'a str>,
}

fn parse_url(entry: &Entry) -> Result<EntryUrl<'_>, ApiError> {
    let at = format!("Bundle.entry[{}].request.url", entry.index);
    let (path, query) = match entry.url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (entry.url.as_str(), None),
    };
    let segments: Vec<&str> = path.split('/').collect();
    let resource_type = ResourceType::parse(segments[0]).map_err(|e| ApiError::invalid_at(IssueType::Value, at.clone(), e.to_string()))?;
    match segments.as_slice() {
        [_] => Ok(EntryUrl { resource_type, id: None, version: None, query }),
        [_, id] => Ok(EntryUrl { resource_type, id: Some(id), version: None, query }),
        [_, id, "_history", version] => Ok(EntryUrl { resource_type, id: Some(id), version: Some(version), query }),
        _ => Err(ApiError::invalid_at(IssueType::NotSupported, at, format!("unsupported request url {:?}", entry.url))),
    }
}

/// Prefix an error's issues with the entry they belong to.
fn in_entry(index: usize, error: ApiError) -> ApiError {
    let locate = |mut outcome: OperationOutcome| {
        for issue in &mut outcome.issue {
            if issue.expression.is_empty() {
                issue.expression.push(format!("Bundle.entry[{index}]"));
            } else {
                for expression in &mut issue.expression {
                    *expression = format!(
                        "Bundle.entry[{index}].resource.{}",
                        expression.split_once('.').map_or(expression.as_str(), |(_, rest)| rest)
                    );
                }
            }
            let diagnostics = issue.diagnostics.take().unwrap_or_default();
            issue.diagnostics = Some(format!("entry {index}: {diagnostics}"));
        }
        outcome
    };
    match error {
        ApiError::Invalid(outcome) => ApiError::Invalid(locate(outcome)),
        ApiError::Unprocessable(outcome) => ApiError::Unprocessable(locate(outcome)),
        ApiError::NotFound(message) => ApiError::NotFound(format!("entry {index}: {message}")),
        ApiError::PreconditionFailed(message) => ApiError::PreconditionFailed(format!("entry {index}: {message}")),
        ApiError::Conflict(message) => ApiError::Conflict(format!("entry {index}: {message}")),
        ApiError::Gone(message) => ApiError::Gone(format!("entry {index}: {message}")),
        other => other,
    }
}

/// FHIR R4 transactions change a resource once; a second entry naming it is refused.
fn changed_twice(index: usize, first: usize, target: &str) -> ApiError {
    in_entry(
        index,
        ApiError::invalid(
            IssueType::Duplicate,
            format!("entry {first} already changes {target}: a transaction changes each resource once"),
        ),
    )
}

async fn transaction(
    service: &FhirService,
    permit: &Permitted,
    mut entries: Vec<Entry>,
    preference: ReturnPreference,
) -> Result<FhirResponse, ApiError> {
    let context = &super::access::write_context(service, permit).await?;
    let now = service.now();
    // Parse and validate every entry before the transaction takes any lock. Rewriting references
    // later changes only reference strings, whose targets are checked again after the rewrite.
    let mut resources: Vec<Option<ParsedResource>> = Vec::with_capacity(entries.len());
    for entry in &mut entries {
        resources.push(match entry.resource.take() {
            Some(bytes) => {
                let url = parse_url(entry).map_err(|e| in_entry(entry.index, e))?;
                Some(prepare(service, bytes, Some(url.resource_type)).await.map_err(|e| in_entry(entry.index, e))?.into_inner())
            }
            None => None,
        });
    }
    let mut transaction = service.store.begin().await?;
    let tx = transaction.as_mut();

    // 1. Decide the identity of every entry that creates or updates, so that references between
    //    entries can be rewritten before anything is written.
    let mut identities: HashMap<String, String> = HashMap::new();
    let mut assigned: HashMap<usize, Assignment> = HashMap::new();
    // What each entry changes, by identity and by condition: a transaction changes a resource
    // once (two conditional creates of one record would otherwise make it twice).
    let mut changed: HashMap<String, usize> = HashMap::new();
    for entry in &entries {
        let url = parse_url(entry).map_err(|e| in_entry(entry.index, e))?;
        let condition = match (entry.method, &entry.if_none_exist, url.query) {
            (Method::Post, Some(condition), _) => Some(format!("{}?{condition}", url.resource_type)),
            (Method::Put, _, Some(query)) => Some(format!("{}?{query}", url.resource_type)),
            _ => None,
        };
        if let Some(condition) = condition
            && let Some(first) = changed.insert(condition.clone(), entry.index)
        {
            return Err(changed_twice(entry.index, first, &condition));
        }
        let assignment = match entry.method {
            Method::Post => match &entry.if_none_exist {
                Some(condition) => {
                    match find_one(service, tx, url.resource_type, condition).await.map_err(|e| in_entry(entry.index, e))? {
                        Some(existing) => Assignment::Existing(existing),
                        None => Assignment::Create(new_id()),
                    }
                }
                None => Assignment::Create(new_id()),
            },
            Method::Put => match (url.id, url.query) {
                (Some(id), None) => Assignment::Update(id.to_owned()),
                (None, Some(condition)) => {
                    match find_one(service, tx, url.resource_type, condition).await.map_err(|e| in_entry(entry.index, e))? {
                        Some(existing) => Assignment::Update(existing.id),
                        None => Assignment::Update(new_id()),
                    }
                }
                _ => return Err(in_entry(entry.index, ApiError::invalid(IssueType::Value, "PUT takes [type]/[id] or [type]?[search]"))),
            },
            _ => continue,
        };
        let local = format!("{}/{}", url.resource_type, assignment.id());
        if !matches!(assignment, Assignment::Existing(_))
            && let Some(first) = changed.insert(local.clone(), entry.index)
        {
            return Err(changed_twice(entry.index, first, &local));
        }
        if let Some(full_url) = &entry.full_url {
            identities.insert(full_url.clone(), local.clone());
        }
        assigned.insert(entry.index, assignment);
    }

    // 2. Resolve conditional references and rewrite every reference to a placeholder.
    for (entry, resource) in entries.iter().zip(resources.iter_mut()) {
        let Some(resource) = resource else { continue };
        let mut conditional = Vec::new();
        collect_conditional_references(&resource.value, &mut conditional);
        for reference in conditional {
            if identities.contains_key(&reference) {
                continue;
            }
            let Reference::Conditional { resource_type, query } = Reference::parse(&reference) else { continue };
            let resolved =
                find_referable(service, context, tx, resource_type, query).await.map_err(|e| in_entry(entry.index, e))?.ok_or_else(
                    || in_entry(entry.index, ApiError::NotFound(format!("the conditional reference {reference} matches no resource"))),
                )?;
            identities.insert(reference.clone(), format!("{resource_type}/{}", resolved.id));
        }
        let replace = |text: &str| identities.get(text).cloned();
        if !identities.is_empty() && rewrite_value_strings(&mut resource.value, &replace) > 0 {
            resource.bytes = rewrite_strings(&resource.bytes, &replace)
                .map_err(|e| in_entry(entry.index, ApiError::invalid(IssueType::Structure, e.to_string())))?;
        }
    }

    // 3. Process in the spec's order; answer in the Bundle's order.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&index| (entries[index].method, index));
    let mut results: Vec<Option<EntryResult>> = (0..entries.len()).map(|_| None).collect();
    for index in order {
        let entry = &entries[index];
        let resource = resources[index].take();
        let result = process_in_transaction(service, permit, tx, context, entry, resource, assigned.remove(&index), preference, now)
            .await
            .map_err(|e| in_entry(index, e))?;
        results[index] = Some(result);
    }
    transaction.commit().await?;
    Ok(response_bundle(service, "transaction-response", results.into_iter().map(|r| r.expect("every entry processed")).collect()))
}

enum Assignment {
    Create(String),
    Existing(StoredVersion),
    Update(String),
}

impl Assignment {
    fn id(&self) -> &str {
        match self {
            Self::Create(id) | Self::Update(id) => id,
            Self::Existing(version) => &version.id,
        }
    }
}

/// The one resource a conditional write's condition matches (locked until commit), `None` if
/// none; more than one is an error (412).
async fn find_one(
    service: &FhirService,
    tx: &mut dyn StoreTransaction,
    resource_type: ResourceType,
    condition: &str,
) -> Result<Option<StoredVersion>, ApiError> {
    let query = condition_query(service, resource_type, condition)?;
    tx.lock_condition(&format!("{resource_type}?{condition}")).await?;
    let found = tx.search(&query).await?;
    match found.matches.len() {
        0 | 1 => Ok(found.matches.into_iter().next()),
        _ => Err(ApiError::PreconditionFailed(format!("{resource_type}?{condition} matches more than one resource"))),
    }
}

/// The one resource a conditional reference names among those its writer may reach
/// (`access::within_reach`): a record they may not see is answered as no match, so a reference
/// neither reveals it (by its count or its id in the answer) nor links to it.
async fn find_referable(
    service: &FhirService,
    context: &WriteContext,
    tx: &mut dyn StoreTransaction,
    resource_type: ResourceType,
    condition: &str,
) -> Result<Option<StoredVersion>, ApiError> {
    let query = condition_query(service, resource_type, condition)?;
    let mut reachable = Vec::new();
    for version in tx.search(&query).await?.matches {
        if super::access::within_reach(service, context, &version).await? {
            reachable.push(version);
        } else {
            tracing::info!(rule = "reference-not-shared", "a conditional reference to a record its writer may not see matched nothing");
            crate::audit::record(|note| note.rule = Some("reference-not-shared".to_owned()));
        }
    }
    match reachable.len() {
        0 | 1 => Ok(reachable.pop()),
        _ => Err(ApiError::PreconditionFailed(format!("{resource_type}?{condition} matches more than one resource"))),
    }
}

fn condition_query(
    service: &FhirService,
    resource_type: ResourceType,
    condition: &str,
) -> Result<crate::store::query::SearchQuery, ApiError> {
    conditional_query(resource_type, condition, &service.limits)?
        .ok_or_else(|| ApiError::invalid(IssueType::Value, format!("the condition {resource_type}?{condition} has no search parameter")))
}

fn collect_conditional_references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get("reference")
                && matches!(Reference::parse(reference), Reference::Conditional { .. })
            {
                out.push(reference.clone());
            }
            object.values().for_each(|child| collect_conditional_references(child, out));
        }
        Value::Array(items) => items.iter().for_each(|item| collect_conditional_references(item, out)),
        _ => {}
    }
}

#[allow(clippy::too_many_arguments)]
async fn process_in_transaction(
    service: &FhirService,
    permit: &Permitted,
    tx: &mut dyn StoreTransaction,
    context: &WriteContext,
    entry: &Entry,
    resource: Option<ParsedResource>,
    assignment: Option<Assignment>,
    preference: ReturnPreference,
    now: OffsetDateTime,
) -> Result<EntryResult, ApiError> {
    let url = parse_url(entry)?;
    match (entry.method, assignment, resource) {
        (Method::Post, Some(Assignment::Existing(version)), _) => existing_result(service, permit, &version, preference).await,
        (Method::Post, Some(Assignment::Create(id)), Some(resource)) => {
            check_references(service, &resource)?;
            let version =
                persist(tx, context, Persist { resource: &resource, id: &id, version_id: 1, method: WriteMethod::Create, now }).await?;
            Ok(EntryResult::from_version("201 Created", &version, preference, true))
        }
        (Method::Put, Some(Assignment::Update(id)), Some(mut resource)) => {
            resource.bytes =
                fhir_models::json::set_id(&resource.bytes, &id).map_err(|e| ApiError::invalid(IssueType::Structure, e.to_string()))?;
            resource.value["id"] = Value::String(id.clone());
            check_references(service, &resource)?;
            let updated = update_in(service, tx, context, url.resource_type, &id, &resource, entry.if_match.as_deref(), now).await?;
            Ok(updated_result(&updated, preference))
        }
        (Method::Delete, ..) => {
            let deleted = match (url.id, url.query) {
                (Some(id), None) => delete_in(service, tx, context, url.resource_type, id, now).await?,
                (None, Some(condition)) => conditional_delete_in(service, tx, context, url.resource_type, condition, now).await?,
                _ => return Err(ApiError::invalid(IssueType::Value, "DELETE takes [type]/[id] or [type]?[search]")),
            };
            Ok(EntryResult { etag: deleted.map(etag), ..EntryResult::status_only("204 No Content") })
        }
        (Method::Get, ..) => read_entry(service, permit, entry).await,
        _ => Err(ApiError::Internal(anyhow::anyhow!("entry {} has no identity assigned", entry.index))),
    }
}

/// After placeholders are rewritten, references must still point at allowed types.
fn check_references(service: &FhirService, resource: &ParsedResource) -> Result<(), ApiError> {
    let report = service.validator.check_references(resource.resource_type, &resource.value);
    if report.is_acceptable() { Ok(()) } else { Err(ApiError::Unprocessable(report.into_outcome())) }
}

fn updated_result(updated: &Updated, preference: ReturnPreference) -> EntryResult {
    match updated {
        Updated::Created(version) => EntryResult::from_version("201 Created", version, preference, true),
        Updated::Updated(version) | Updated::Unchanged(version) => EntryResult::from_version("200 OK", version, preference, true),
    }
}

/// The interaction an entry asks for.
fn entry_interaction(entry: &Entry, url: &EntryUrl<'_>) -> Interaction {
    match (entry.method, url.id, url.version) {
        (Method::Get, Some(_), Some(_)) => Interaction::Vread,
        (Method::Get, Some(_), None) => Interaction::Read,
        (Method::Get, None, _) => Interaction::SearchType,
        (Method::Post, ..) => Interaction::Create,
        (Method::Put, ..) => Interaction::Update,
        (Method::Delete, ..) => Interaction::Delete,
    }
}

/// A GET entry: read, vread or search, answered inline.
async fn read_entry(service: &FhirService, permit: &Permitted, entry: &Entry) -> Result<EntryResult, ApiError> {
    let url = parse_url(entry)?;
    let permit = permit.reauthorize(entry_interaction(entry, &url), Some(url.resource_type))?;
    let response = match (url.id, url.version, url.query) {
        (Some(id), None, None) => super::read::read(service, &permit, url.resource_type, id).await?,
        (Some(id), Some(version), None) => super::read::vread(service, &permit, url.resource_type, id, version).await?,
        (None, None, query) => {
            super::search::search(
                service,
                &permit,
                super::SearchScope::Type(url.resource_type),
                &parse_query_string(query.unwrap_or("")),
                Handling::Lenient,
            )
            .await?
        }
        _ => return Err(ApiError::invalid(IssueType::NotSupported, format!("unsupported GET {:?}", entry.url))),
    };
    let resource = match response.body {
        Body::Json(bytes) => Some(bytes.to_vec()),
        Body::Outcome(outcome) => Some(outcome.to_json_bytes()),
        Body::Empty => None,
    };
    Ok(EntryResult {
        status: "200 OK".to_owned(),
        location: None,
        etag: response.etag,
        last_modified: response.last_modified.map(instant),
        resource,
        outcome: None,
    })
}

async fn batch(
    service: &FhirService,
    permit: &Permitted,
    entries: Vec<Entry>,
    preference: ReturnPreference,
) -> Result<FhirResponse, ApiError> {
    let mut results = Vec::with_capacity(entries.len());
    for entry in &entries {
        let result = match process_batch_entry(service, permit, entry, preference).await {
            Ok(result) => result,
            Err(error) => EntryResult::from_error(&error),
        };
        results.push(result);
    }
    Ok(response_bundle(service, "batch-response", results))
}

async fn process_batch_entry(
    service: &FhirService,
    permit: &Permitted,
    entry: &Entry,
    preference: ReturnPreference,
) -> Result<EntryResult, ApiError> {
    let url = parse_url(entry)?;
    let now = service.now();
    if entry.method == Method::Get {
        return read_entry(service, permit, entry).await;
    }
    if matches!(permit.requester().principal, Some(consent::Principal::Patient(..))) {
        return Err(patients_only_read());
    }
    let entry_permit = permit.reauthorize(entry_interaction(entry, &url), Some(url.resource_type))?;
    if matches!(entry.method, Method::Put | Method::Delete) {
        super::access::check_patient_write(service, &entry_permit, url.resource_type, url.id, None, url.query.is_some()).await?;
    }
    let context = &super::access::write_context(service, &entry_permit).await?;
    let resource = match entry.method {
        Method::Post | Method::Put => {
            let bytes = entry.resource.clone().unwrap_or_default();
            Some(prepare(service, bytes, Some(url.resource_type)).await.map_err(|e| in_entry(entry.index, e))?)
        }
        _ => None,
    };
    let mut transaction = service.store.begin().await?;
    let tx = transaction.as_mut();
    let result = match entry.method {
        Method::Post => {
            let resource = resource.as_ref().expect("POST entries carry a resource");
            match create_in(service, tx, context, resource, entry.if_none_exist.as_deref(), now).await? {
                Created::New(version) => EntryResult::from_version("201 Created", &version, preference, true),
                Created::Existing(version) => existing_result(service, &entry_permit, &version, preference).await?,
            }
        }
        Method::Put => {
            let resource = resource.as_ref().expect("PUT entries carry a resource");
            let updated = match (url.id, url.query) {
                (Some(id), None) => {
                    update_in(service, tx, context, url.resource_type, id, resource, entry.if_match.as_deref(), now).await?
                }
                (None, Some(condition)) => conditional_update_in(service, tx, context, resource, condition, now).await?,
                _ => return Err(ApiError::invalid(IssueType::Value, "PUT takes [type]/[id] or [type]?[search]")),
            };
            updated_result(&updated, preference)
        }
        Method::Delete => {
            let deleted = match (url.id, url.query) {
                (Some(id), None) => delete_in(service, tx, context, url.resource_type, id, now).await?,
                (None, Some(condition)) => conditional_delete_in(service, tx, context, url.resource_type, condition, now).await?,
                _ => return Err(ApiError::invalid(IssueType::Value, "DELETE takes [type]/[id] or [type]?[search]")),
            };
            EntryResult { etag: deleted.map(etag), ..EntryResult::status_only("204 No Content") }
        }
        Method::Get => unreachable!("GET entries return above"),
    };
    transaction.commit().await?;
    Ok(result)
}

fn response_bundle(service: &FhirService, bundle_type: &str, results: Vec<EntryResult>) -> FhirResponse {
    let mut writer = service.bundle_writer(bundle_type, None, &[]);
    for result in &results {
        writer.entry(EntryParts {
            resource: result.resource.as_deref(),
            response: Some(EntryResponse {
                status: &result.status,
                location: result.location.as_deref(),
                etag: result.etag.as_deref(),
                last_modified: result.last_modified.as_deref(),
                outcome: result.outcome.as_deref(),
            }),
            ..Default::default()
        });
    }
    FhirResponse::ok(writer.finish())
}
