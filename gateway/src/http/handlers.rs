//! One handler per FHIR interaction. Each authorises through `enforce::authorize` before it
//! touches data, then calls the FHIR layer.

use actix_web::http::header::{CONTENT_TYPE, ETAG};
use actix_web::{HttpRequest, HttpResponse, web};
use fhir_models::ResourceType;
use fhir_models::interaction::Interaction;
use fhir_models::outcome::IssueType;

use super::negotiate::{check_request_format, check_response_format, handling, header, query_params, read_body, return_preference};
use super::respond::{to_http, written};
use super::{AppState, RequesterIdentity};
use crate::enforce::authorize;
use crate::error::{ApiError, FHIR_JSON};
use crate::fhir::{self, Created, SearchScope, Updated};
use crate::store::HistoryScope;

type Result = std::result::Result<HttpResponse, ApiError>;

fn resource_type(name: &str) -> std::result::Result<ResourceType, ApiError> {
    ResourceType::parse(name).map_err(|e| ApiError::NotFound(format!("{e}; the path names no FHIR resource type")))
}

async fn body(request: &HttpRequest, payload: web::Payload, state: &AppState) -> std::result::Result<Vec<u8>, ApiError> {
    check_request_format(request)?;
    read_body(payload, state.fhir.limits.max_body_bytes).await
}

pub async fn contract() -> HttpResponse {
    HttpResponse::Ok().content_type("application/yaml").body(super::OPENAPI)
}

pub async fn capabilities(request: HttpRequest, state: web::Data<AppState>) -> Result {
    check_response_format(&request, &query_params(&request))?;
    Ok(HttpResponse::Ok().insert_header((CONTENT_TYPE, FHIR_JSON)).body(state.capability_statement.clone()))
}

pub async fn read(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let (type_name, id) = path.into_inner();
    let resource_type = resource_type(&type_name)?;
    check_response_format(&request, &query_params(&request))?;
    let permit = authorize(requester.0, Interaction::Read, Some(resource_type))?;
    let response = fhir::read(&state.fhir, &permit, resource_type, &id).await?;
    if let (Some(if_none_match), Some(etag)) = (header(&request, "If-None-Match"), &response.etag)
        && if_none_match.split(',').any(|candidate| candidate.trim() == etag)
    {
        return Ok(HttpResponse::NotModified().insert_header((ETAG, etag.as_str())).finish());
    }
    Ok(to_http(response))
}

pub async fn vread(
    request: HttpRequest,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let (type_name, id, version) = path.into_inner();
    let resource_type = resource_type(&type_name)?;
    check_response_format(&request, &query_params(&request))?;
    let permit = authorize(requester.0, Interaction::Vread, Some(resource_type))?;
    Ok(to_http(fhir::vread(&state.fhir, &permit, resource_type, &id, &version).await?))
}

pub async fn create(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let resource_type = resource_type(&path.into_inner())?;
    check_response_format(&request, &query_params(&request))?;
    let permit = authorize(requester.0, Interaction::Create, Some(resource_type))?;
    let resource = fhir::prepare(&state.fhir, body(&request, payload, &state).await?, Some(resource_type)).await?;
    let preference = return_preference(&request);
    Ok(match fhir::create(&state.fhir, &permit, resource, header(&request, "If-None-Exist")).await? {
        Created::New(version) => written(&state.fhir, 201, &version, preference, "created"),
        Created::Existing(version) => match fhir::access::shown(&state.fhir, &permit, version).await? {
            Some(shown) => written(&state.fhir, 200, &shown, preference, "a resource matching If-None-Exist already exists"),
            None => HttpResponse::Ok()
                .insert_header((CONTENT_TYPE, FHIR_JSON))
                .body(fhir_models::OperationOutcome::all_ok(fhir::access::EXISTING_NOT_SHARED).to_json_bytes()),
        },
    })
}

pub async fn update(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let (type_name, id) = path.into_inner();
    let resource_type = resource_type(&type_name)?;
    check_response_format(&request, &query_params(&request))?;
    let permit = authorize(requester.0, Interaction::Update, Some(resource_type))?;
    let resource = fhir::prepare(&state.fhir, body(&request, payload, &state).await?, Some(resource_type)).await?;
    let updated = fhir::update(&state.fhir, &permit, resource_type, &id, resource, header(&request, "If-Match")).await?;
    Ok(updated_response(&state, &request, &updated))
}

fn updated_response(state: &AppState, request: &HttpRequest, updated: &Updated) -> HttpResponse {
    let preference = return_preference(request);
    match updated {
        Updated::Created(version) => written(&state.fhir, 201, version, preference, "created"),
        Updated::Updated(version) => written(&state.fhir, 200, version, preference, "updated"),
        Updated::Unchanged(version) => written(&state.fhir, 200, version, preference, "unchanged: the content equals the current version"),
    }
}

pub async fn conditional_update(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let resource_type = resource_type(&path.into_inner())?;
    let permit = authorize(requester.0, Interaction::Update, Some(resource_type))?;
    let condition = request.query_string().to_owned();
    if condition.is_empty() {
        return Err(ApiError::MethodNotAllowed("PUT on a type needs search parameters (conditional update) or an id in the path".into()));
    }
    let resource = fhir::prepare(&state.fhir, body(&request, payload, &state).await?, Some(resource_type)).await?;
    let updated = fhir::conditional_update(&state.fhir, &permit, resource, &condition).await?;
    Ok(updated_response(&state, &request, &updated))
}

pub async fn delete(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let (type_name, id) = path.into_inner();
    let resource_type = resource_type(&type_name)?;
    check_response_format(&request, &query_params(&request))?;
    let permit = authorize(requester.0, Interaction::Delete, Some(resource_type))?;
    deleted_response(fhir::delete(&state.fhir, &permit, resource_type, &id).await?)
}

fn deleted_response(deleted: Option<i64>) -> Result {
    let mut response = HttpResponse::NoContent();
    if let Some(version_id) = deleted {
        response.insert_header((ETAG, fhir::etag(version_id)));
    }
    Ok(response.finish())
}

pub async fn conditional_delete(
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let resource_type = resource_type(&path.into_inner())?;
    let permit = authorize(requester.0, Interaction::Delete, Some(resource_type))?;
    let condition = request.query_string().to_owned();
    if condition.is_empty() {
        return Err(ApiError::MethodNotAllowed(
            "DELETE on a type needs search parameters (conditional delete) or an id in the path".into(),
        ));
    }
    deleted_response(fhir::conditional_delete(&state.fhir, &permit, resource_type, &condition).await?)
}

pub async fn search_get(request: HttpRequest, path: web::Path<String>, state: web::Data<AppState>, requester: RequesterIdentity) -> Result {
    let resource_type = resource_type(&path.into_inner())?;
    let params = query_params(&request);
    check_response_format(&request, &params)?;
    let permit = authorize(requester.0, Interaction::SearchType, Some(resource_type))?;
    Ok(to_http(fhir::search(&state.fhir, &permit, SearchScope::Type(resource_type), &params, handling(&request)).await?))
}

/// GET `Patient/{id}/[type]?…`: a search within one patient's compartment.
pub async fn search_compartment(
    request: HttpRequest,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let (compartment, patient_id, target) = path.into_inner();
    if compartment != "Patient" {
        return Err(ApiError::NotFound(format!("{compartment}/{patient_id}/{target}: only the Patient compartment can be searched")));
    }
    if !fhir_models::id::is_valid_id(&patient_id) {
        return Err(ApiError::invalid(IssueType::Value, format!("{patient_id:?} is not a FHIR id")));
    }
    let resource_type = resource_type(&target)?;
    let params = query_params(&request);
    check_response_format(&request, &params)?;
    let permit = authorize(requester.0, Interaction::SearchType, Some(resource_type))?;
    let scope = SearchScope::PatientCompartment { patient_id: &patient_id, resource_type };
    Ok(to_http(fhir::search(&state.fhir, &permit, scope, &params, handling(&request)).await?))
}

/// GET `Patient/{id}/$everything`: what the requester may see of one patient's record.
pub async fn everything(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let (type_name, id) = path.into_inner();
    if type_name != "Patient" {
        return Err(ApiError::NotFound(format!("{type_name}/{id}/$everything: this gateway has Patient/[id]/$everything only")));
    }
    let params = query_params(&request);
    check_response_format(&request, &params)?;
    // Every type of the compartment: the token needs a wildcard search scope.
    let permit = authorize(requester.0, Interaction::SearchType, None)?;
    Ok(to_http(fhir::everything(&state.fhir, &permit, &id, &params).await?))
}

/// GET `$access-log`: the audit events about the signed-in patient's own record.
pub async fn access_log(request: HttpRequest, state: web::Data<AppState>, requester: RequesterIdentity) -> Result {
    let params = query_params(&request);
    check_response_format(&request, &params)?;
    let audit_event = ResourceType::parse("AuditEvent").expect("an R4 type");
    let permit = authorize(requester.0, Interaction::SearchType, Some(audit_event))?;
    Ok(to_http(crate::audit::access_log(&state.audit, &state.fhir, &permit, &params).await?))
}

/// POST `[type]/_search`: parameters in an `application/x-www-form-urlencoded` body (and the
/// query string).
pub async fn search_post(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let resource_type = resource_type(&path.into_inner())?;
    let mut params = query_params(&request);
    check_response_format(&request, &params)?;
    let permit = authorize(requester.0, Interaction::SearchType, Some(resource_type))?;
    let content_type = header(&request, "Content-Type").unwrap_or("");
    if !content_type.is_empty() && !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::UnsupportedMediaType(format!("POST _search takes application/x-www-form-urlencoded, not {content_type}")));
    }
    let body = read_body(payload, state.fhir.limits.max_body_bytes).await?;
    let form = std::str::from_utf8(&body).map_err(|_| ApiError::invalid(IssueType::Structure, "the form body is not UTF-8"))?;
    params.extend(fhir::parse_query_string(form));
    Ok(to_http(fhir::search(&state.fhir, &permit, SearchScope::Type(resource_type), &params, handling(&request)).await?))
}

pub async fn history_instance(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let (type_name, id) = path.into_inner();
    let resource_type = resource_type(&type_name)?;
    let params = query_params(&request);
    check_response_format(&request, &params)?;
    let permit = authorize(requester.0, Interaction::HistoryInstance, Some(resource_type))?;
    Ok(to_http(fhir::history(&state.fhir, &permit, HistoryScope::Instance(resource_type, id), &params).await?))
}

pub async fn history_type(
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let resource_type = resource_type(&path.into_inner())?;
    let params = query_params(&request);
    check_response_format(&request, &params)?;
    let permit = authorize(requester.0, Interaction::HistoryType, Some(resource_type))?;
    Ok(to_http(fhir::history(&state.fhir, &permit, HistoryScope::Type(resource_type), &params).await?))
}

pub async fn history_system(request: HttpRequest, state: web::Data<AppState>, requester: RequesterIdentity) -> Result {
    let params = query_params(&request);
    check_response_format(&request, &params)?;
    let permit = authorize(requester.0, Interaction::HistorySystem, None)?;
    Ok(to_http(fhir::history(&state.fhir, &permit, HistoryScope::System, &params).await?))
}

pub async fn batch_or_transaction(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    check_response_format(&request, &query_params(&request))?;
    let permit = authorize(requester.0, Interaction::Batch, None)?;
    let bytes = body(&request, payload, &state).await?;
    Ok(to_http(fhir::batch_or_transaction(&state.fhir, &permit, bytes, return_preference(&request)).await?))
}

/// `POST /ingest/{format}`: a trust's or GP system's records in a source format, filed as the
/// client's organisation through the same path as the MLLP feed. One issue per message; 200 when
/// every message was filed (or was already), 422 when any was refused (it is kept, with its
/// reason), 503 when the database could not take it (send again).
pub async fn ingest(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    use crate::ingest::Outcome;
    use crate::translate::{Format, hl7v2, split_hl7v2_messages};
    use fhir_models::outcome::{Issue, IssueSeverity};
    let format = Format::parse(&path.into_inner()).map_err(|reason| ApiError::invalid(IssueType::NotSupported, reason))?;
    let permit = authorize(requester.0, Interaction::Transaction, None)?;
    let kind = permit.requester().client.as_ref().map(|client| client.kind);
    if !matches!(kind, Some(consent::ClientKind::Trust | consent::ClientKind::GpSystem)) {
        return Err(ApiError::Forbidden {
            code: consent::DenyCode::AccessDenied,
            rule: "ingest-publishers",
            message: "records are published by registered trust and GP-system clients".into(),
        });
    }
    if format.is_extract() {
        return ingest_extract(&state, format, &request, payload, permit.requester().clone()).await;
    }
    let bytes = read_body(payload, state.fhir.limits.max_body_bytes).await?;
    if format.is_document() {
        return ingest_document(&state, format, &bytes, permit.requester().clone()).await;
    }
    let text = hl7v2::message::decode(&bytes);
    let messages = split_hl7v2_messages(&text);
    if messages.is_empty() {
        return Err(ApiError::invalid(IssueType::Required, "the body holds no HL7 v2 message (each starts with an MSH segment)"));
    }
    let (mut refused, mut retry) = (false, false);
    let mut issues = Vec::with_capacity(messages.len());
    for (line, message) in &messages {
        let control_id = hl7v2::Message::parse(message).ok().and_then(|m| hl7v2::header(&m).ok()).map(|h| h.control_id).unwrap_or_default();
        let issue = match state.ingest.process_as(message.as_bytes(), true, Some(permit.requester().clone())).await {
            Outcome::Filed => {
                Issue::new(IssueSeverity::Information, IssueType::Informational, format!("line {line}: message {control_id:?} filed"))
            }
            Outcome::Duplicate => Issue::new(
                IssueSeverity::Information,
                IssueType::Informational,
                format!("line {line}: message {control_id:?} was already filed; nothing changed"),
            ),
            Outcome::Rejected(error) => {
                refused = true;
                Issue::error(
                    IssueType::Invalid,
                    format!("line {line}: message {control_id:?} refused at {}: {}", error.location, error.reason),
                )
            }
            Outcome::Retry(error) => {
                retry = true;
                Issue::error(IssueType::Transient, format!("line {line}: message {control_id:?} not filed: {}", error.reason))
            }
        };
        issues.push(issue);
    }
    let status = if retry {
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE
    } else if refused {
        actix_web::http::StatusCode::UNPROCESSABLE_ENTITY
    } else {
        actix_web::http::StatusCode::OK
    };
    Ok(HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, FHIR_JSON))
        .body(fhir_models::OperationOutcome::new(issues).to_json_bytes()))
}

/// A GP extract (`emis-csv`, `emis-xml`, `systmone-csv`) posted as `multipart/form-data`, one part
/// per file under the file's own name (`curl -F file=@1_Admin_Patient_….csv …`), or one EMIS Open
/// record as the body itself, filed patient by patient
/// as the posting GP system, which publishes only its own practice's patients: 200 when every
/// patient is filed (or was already), 422 naming each patient refused and why (the others are
/// filed), 503 when some could not be filed now.
async fn ingest_extract(
    state: &AppState,
    format: crate::translate::Format,
    request: &HttpRequest,
    payload: web::Payload,
    publisher: consent::Requester,
) -> Result {
    use actix_web::http::StatusCode;
    use fhir_models::outcome::{Issue, IssueSeverity};
    if publisher.client.as_ref().map(|client| client.kind) != Some(consent::ClientKind::GpSystem) {
        return Err(ApiError::Forbidden {
            code: consent::DenyCode::AccessDenied,
            rule: "ingest-publishers",
            message: "a GP extract is published by its practice's registered GP-system client".into(),
        });
    }
    let files = if format == crate::translate::Format::EmisXml && !super::multipart::is_multipart(request) {
        // One EMIS Open record may come as the body itself.
        let bytes = read_body(payload, state.fhir.limits.max_body_bytes).await?;
        vec![crate::translate::emis::ExtractFile { name: "(body)".into(), bytes }]
    } else {
        super::multipart::files(request, payload, state.fhir.limits.max_body_bytes).await?
    };
    let report = crate::ingest::file_extract(&state.fhir, format, &files, &state.code_maps, Some(publisher), "http")
        .await
        .map_err(|error| ApiError::invalid(IssueType::Invalid, format!("the extract is refused: {error}")))?;
    let summary = format!("{format} extract of {report}");
    let mut issues = vec![Issue::new(IssueSeverity::Information, IssueType::Informational, summary)];
    issues.extend(report.refused.iter().map(|reason| Issue::error(IssueType::Invalid, reason.clone())));
    issues.extend(report.retry.iter().map(|reason| Issue::error(IssueType::Transient, reason.clone())));
    let status = if !report.retry.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else if !report.refused.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, FHIR_JSON))
        .body(fhir_models::OperationOutcome::new(issues).to_json_bytes()))
}

/// One discharge document (`cda`, `itk3`) posted to `/ingest/{format}`: 200 when filed (or
/// already), 422 naming where and why it was refused (it is kept), 503 when it cannot be filed now.
async fn ingest_document(state: &AppState, format: crate::translate::Format, bytes: &[u8], publisher: consent::Requester) -> Result {
    use crate::ingest::DocumentOutcome;
    use actix_web::http::StatusCode;
    use fhir_models::outcome::{Issue, IssueSeverity};
    let (status, issue) =
        match crate::ingest::file_document(&state.fhir, state.ingest.dead_letters(), format, bytes, Some(publisher), "http", true).await {
            DocumentOutcome::Filed(document) => (
                StatusCode::OK,
                Issue::new(IssueSeverity::Information, IssueType::Informational, format!("{format} document {document} filed")),
            ),
            DocumentOutcome::Duplicate(document) => (
                StatusCode::OK,
                Issue::new(
                    IssueSeverity::Information,
                    IssueType::Informational,
                    format!("{format} document {document} was already filed; nothing changed"),
                ),
            ),
            DocumentOutcome::Superseded(document) => (
                StatusCode::OK,
                Issue::new(
                    IssueSeverity::Information,
                    IssueType::Informational,
                    format!("{format} document {document}: a later version is filed; nothing changed"),
                ),
            ),
            DocumentOutcome::Rejected(error) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Issue::error(IssueType::Invalid, format!("refused at {}: {}", error.location, error.reason)),
            ),
            DocumentOutcome::Retry(reason) => (StatusCode::SERVICE_UNAVAILABLE, Issue::error(IssueType::Transient, reason)),
        };
    Ok(HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, FHIR_JSON))
        .body(fhir_models::OperationOutcome::new(vec![issue]).to_json_bytes()))
}

async fn validate_common(
    request: HttpRequest,
    resource_type: ResourceType,
    payload: web::Payload,
    state: &AppState,
    requester: RequesterIdentity,
) -> Result {
    check_response_format(&request, &query_params(&request))?;
    authorize(requester.0, Interaction::Operation, Some(resource_type))?;
    let bytes = body(&request, payload, state).await?;
    Ok(to_http(fhir::validate(&state.fhir, resource_type, bytes)?))
}

pub async fn validate_type(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let resource_type = resource_type(&path.into_inner())?;
    validate_common(request, resource_type, payload, &state, requester).await
}

pub async fn validate_instance(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
    requester: RequesterIdentity,
) -> Result {
    let (type_name, _id) = path.into_inner();
    let resource_type = resource_type(&type_name)?;
    validate_common(request, resource_type, payload, &state, requester).await
}

pub async fn method_not_allowed(request: HttpRequest) -> Result {
    Err(ApiError::MethodNotAllowed(format!("{} is not supported on {}", request.method(), request.path())))
}
