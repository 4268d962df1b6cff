//! FHIR responses as HTTP responses.

use std::time::{Duration, SystemTime};

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LOCATION, CONTENT_TYPE, ETAG, HttpDate, LAST_MODIFIED, LOCATION};
use actix_web::{HttpResponse, HttpResponseBuilder};
use fhir_models::OperationOutcome;

use crate::error::FHIR_JSON;
use crate::fhir::{Body, FhirResponse, FhirService, ReturnPreference};
use crate::store::StoredVersion;

fn http_date(micros: i64) -> HttpDate {
    HttpDate::from(SystemTime::UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64))
}

fn builder(status: u16) -> HttpResponseBuilder {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
}

pub fn to_http(response: FhirResponse) -> HttpResponse {
    let mut http = builder(response.status);
    if let Some(etag) = &response.etag {
        http.insert_header((ETAG, etag.as_str()));
    }
    if let Some(last_modified) = response.last_modified {
        http.insert_header((LAST_MODIFIED, http_date(last_modified)));
    }
    if let Some(location) = &response.location {
        http.insert_header((LOCATION, location.as_str()));
    }
    match response.body {
        Body::Json(bytes) => http.insert_header((CONTENT_TYPE, FHIR_JSON)).body(bytes),
        Body::Outcome(outcome) => http.insert_header((CONTENT_TYPE, FHIR_JSON)).body(outcome.to_json_bytes()),
        Body::Empty => http.finish(),
    }
}

/// The answer to a create or update: `Location`, `ETag`, `Last-Modified`, and a body as the
/// client's `Prefer: return=` asks.
pub fn written(service: &FhirService, status: u16, version: &StoredVersion, preference: ReturnPreference, message: &str) -> HttpResponse {
    let location = format!("{}/{}/{}/_history/{}", service.base_url, version.resource_type, version.id, version.version_id);
    let mut http = builder(status);
    http.insert_header((ETAG, crate::fhir::etag(version.version_id)))
        .insert_header((LAST_MODIFIED, http_date(version.last_updated)))
        .insert_header((LOCATION, location.as_str()))
        .insert_header((CONTENT_LOCATION, location.as_str()));
    match preference {
        ReturnPreference::Minimal => http.finish(),
        ReturnPreference::Representation => http.insert_header((CONTENT_TYPE, FHIR_JSON)).body(version.content.clone().unwrap_or_default()),
        ReturnPreference::OperationOutcome => {
            http.insert_header((CONTENT_TYPE, FHIR_JSON)).body(OperationOutcome::all_ok(message).to_json_bytes())
        }
    }
}
