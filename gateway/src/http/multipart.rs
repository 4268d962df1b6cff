//! Several files in one request: a `multipart/form-data` body read into named files, for the
//! extracts GP systems post (an extract is a set of CSV files whose names say what each holds).

use actix_web::{HttpRequest, web};
use fhir_models::outcome::IssueType;
use futures_util::StreamExt;

use crate::error::ApiError;
use crate::translate::emis::ExtractFile;

/// Whether the request's body is `multipart/form-data`.
pub fn is_multipart(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// Every part of the body that carries a file, under its file name (without any directory), in
/// the order sent; `limit` bounds the files' bytes together.
pub async fn files(request: &HttpRequest, payload: web::Payload, limit: usize) -> Result<Vec<ExtractFile>, ApiError> {
    if !is_multipart(request) {
        return Err(ApiError::UnsupportedMediaType(
            "post an extract as multipart/form-data, one part per file under its own file name (curl -F file=@NAME.csv …)".into(),
        ));
    }
    let unreadable = |error: actix_multipart::MultipartError| {
        ApiError::invalid(IssueType::Structure, format!("the multipart body cannot be read: {error}"))
    };
    let mut multipart = actix_multipart::Multipart::new(request.headers(), payload);
    let mut files: Vec<ExtractFile> = Vec::new();
    let mut total = 0usize;
    let mut part = 0;
    while let Some(field) = multipart.next().await {
        part += 1;
        let mut field = field.map_err(unreadable)?;
        let name = field
            .content_disposition()
            .and_then(|disposition| disposition.get_filename())
            .map(|name| name.rsplit(['/', '\\']).next().unwrap_or_default().to_owned())
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(
                    IssueType::Required,
                    format!("part {part} of the body has no file name; each part is one file of the extract"),
                )
            })?;
        if files.iter().any(|file| file.name == name) {
            return Err(ApiError::invalid(IssueType::Duplicate, format!("part {part}: the file {name:?} was sent twice")));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(unreadable)?;
            total += chunk.len();
            if total > limit {
                return Err(ApiError::PayloadTooLarge(format!(
                    "the extract's files are larger than this gateway's limit of {limit} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        files.push(ExtractFile { name, bytes });
    }
    if files.is_empty() {
        return Err(ApiError::invalid(IssueType::Required, "the body holds no files; each part is one file of the extract"));
    }
    Ok(files)
}
