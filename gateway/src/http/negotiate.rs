//! Content negotiation, `Prefer`, bodies and query strings.

use actix_web::HttpRequest;
use actix_web::http::header::{ACCEPT, CONTENT_TYPE};
use actix_web::web;
use futures_util::StreamExt;

use crate::error::ApiError;
use crate::fhir::{Handling, ReturnPreference};

const JSON_TYPES: [&str; 3] = ["application/fhir+json", "application/json", "application/json+fhir"];

fn is_json_type(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    JSON_TYPES.contains(&essence.as_str()) || matches!(essence.as_str(), "json" | "*/*" | "application/*")
}

/// Refuse a request for a format other than JSON: `_format=xml` or an `Accept` without JSON.
pub fn check_response_format(request: &HttpRequest, params: &[(String, String)]) -> Result<(), ApiError> {
    if let Some((_, format)) = params.iter().find(|(name, _)| name == "_format")
        && !is_json_type(format)
    {
        return Err(ApiError::NotAcceptable(format!("this server answers in JSON only; _format={format} is not supported")));
    }
    if let Some(accept) = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok())
        && !accept.trim().is_empty()
        && !accept.split(',').any(is_json_type)
    {
        return Err(ApiError::NotAcceptable(format!("this server answers in application/fhir+json only, not {accept}")));
    }
    Ok(())
}

/// A body must be FHIR JSON.
pub fn check_request_format(request: &HttpRequest) -> Result<(), ApiError> {
    match request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        Some(content_type) if is_json_type(content_type) && !content_type.starts_with("*") => Ok(()),
        Some(content_type) => Err(ApiError::UnsupportedMediaType(format!("send application/fhir+json, not {content_type}"))),
        None => Err(ApiError::UnsupportedMediaType("send the body as application/fhir+json (Content-Type is missing)".into())),
    }
}

/// Read a body up to the configured limit.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::invalid(fhir_models::outcome::IssueType::Structure, format!("failed to read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(format!("the body is larger than this gateway's limit of {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The query string as decoded pairs.
pub fn query_params(request: &HttpRequest) -> Vec<(String, String)> {
    crate::fhir::parse_query_string(request.query_string())
}

fn prefer_values(request: &HttpRequest) -> impl Iterator<Item = (String, String)> + '_ {
    request
        .headers()
        .get_all("Prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|part| part.split_once('='))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().trim_matches('"').to_ascii_lowercase()))
}

pub fn return_preference(request: &HttpRequest) -> ReturnPreference {
    prefer_values(request)
        .find(|(name, _)| name == "return")
        .map(|(_, value)| match value.as_str() {
            "minimal" => ReturnPreference::Minimal,
            "operationoutcome" => ReturnPreference::OperationOutcome,
            _ => ReturnPreference::Representation,
        })
        .unwrap_or_default()
}

pub fn handling(request: &HttpRequest) -> Handling {
    match prefer_values(request).find(|(name, _)| name == "handling") {
        Some((_, value)) if value == "strict" => Handling::Strict,
        _ => Handling::Lenient,
    }
}

pub fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn json_is_accepted_and_xml_is_not() {
        let json = TestRequest::default().insert_header((ACCEPT, "application/fhir+json")).to_http_request();
        assert!(check_response_format(&json, &[]).is_ok());
        let browser = TestRequest::default().insert_header((ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")).to_http_request();
        assert!(check_response_format(&browser, &[]).is_ok());
        let xml = TestRequest::default().insert_header((ACCEPT, "application/fhir+xml")).to_http_request();
        assert!(check_response_format(&xml, &[]).is_err());
        let plain = TestRequest::default().to_http_request();
        assert!(check_response_format(&plain, &[("_format".into(), "xml".into())]).is_err());
        assert!(check_response_format(&plain, &[("_format".into(), "json".into())]).is_ok());
    }

    #[test]
    fn reads_prefer() {
        let request = TestRequest::default().insert_header(("Prefer", "return=minimal, handling=strict")).to_http_request();
        assert_eq!(return_preference(&request), ReturnPreference::Minimal);
        assert_eq!(handling(&request), Handling::Strict);
        assert_eq!(return_preference(&TestRequest::default().to_http_request()), ReturnPreference::Representation);
    }
}
