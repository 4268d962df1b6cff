//! FHIR responses as HTTP responses.

use std::time::{Duration, SystemTime};

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_ENCODING, CONTENT_LOCATION, CONTENT_TYPE, ETAG, HttpDate, LAST_MODIFIED, LOCATION};
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

/// Bodies smaller than this go out uncompressed: they fit in a packet either way, and gzip's
/// set-up (hundreds of KB zeroed per response) would cost more than the bytes it saves.
const COMPRESS_FROM_BYTES: usize = 1400;

/// A JSON body, marked `Content-Encoding: identity` when too small to compress. The compression
/// middleware leaves an encoded response alone; the outermost middleware removes the marker.
fn json_body(mut http: HttpResponseBuilder, body: impl Into<bytes::Bytes>) -> HttpResponse {
    let body = body.into();
    if body.len() < COMPRESS_FROM_BYTES {
        http.insert_header((CONTENT_ENCODING, IDENTITY));
    }
    http.insert_header((CONTENT_TYPE, FHIR_JSON)).body(body)
}

/// The marker value [`json_body`] sets and `metrics::observe` removes.
pub const IDENTITY: &str = "identity";

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
        Body::Json(bytes) => json_body(http, bytes),
        Body::Outcome(outcome) => json_body(http, outcome.to_json_bytes()),
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
        ReturnPreference::Representation => json_body(http, version.content.clone().unwrap_or_default()),
        ReturnPreference::OperationOutcome => {
            http.insert_header((CONTENT_TYPE, FHIR_JSON)).body(OperationOutcome::all_ok(message).to_json_bytes())
        }
    }
}
