//! The one error type of the API, and the one place it becomes an HTTP status and an
//! OperationOutcome. Batch and transaction entries use the same mapping for `response.status`.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use consent::DenyCode;
use fhir_models::OperationOutcome;
use fhir_models::outcome::{Issue, IssueType};

use crate::store::StoreError;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: bad JSON, a bad parameter, an unknown type.
    #[error("invalid request")]
    Invalid(OperationOutcome),
    /// The resource is well-formed JSON but not acceptable (schema, UK Core rules).
    #[error("unprocessable resource")]
    Unprocessable(OperationOutcome),
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// A bearer token was presented and is not acceptable (RFC 6750 `invalid_token`).
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("forbidden ({rule}): {message}")]
    Forbidden { code: DenyCode, rule: &'static str, message: String },
    #[error("not found")]
    NotFound(String),
    #[error("deleted")]
    Gone(String),
    #[error("method not allowed")]
    MethodNotAllowed(String),
    #[error("not acceptable")]
    NotAcceptable(String),
    #[error("conflict")]
    Conflict(String),
    #[error("precondition failed")]
    PreconditionFailed(String),
    #[error("payload too large")]
    PayloadTooLarge(String),
    #[error("unsupported media type")]
    UnsupportedMediaType(String),
    #[error("too many requests")]
    TooManyRequests(String),
    /// A dependency (the database) is down or overloaded; the client may retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure. Opaque to the client; logged in full.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self::Invalid(OperationOutcome::single(Issue::error(code, diagnostics)))
    }

    pub fn invalid_at(code: IssueType, expression: impl Into<String>, diagnostics: impl Into<String>) -> Self {
        Self::Invalid(OperationOutcome::single(Issue::error(code, diagnostics).at(expression)))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated(_) | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Gone(_) => StatusCode::GONE,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn outcome(&self) -> OperationOutcome {
        let issue = |code: IssueType, message: &str| OperationOutcome::single(Issue::error(code, message));
        match self {
            Self::Invalid(outcome) | Self::Unprocessable(outcome) => outcome.clone(),
            Self::Unauthenticated(message) | Self::InvalidToken(message) => {
                OperationOutcome::single(Issue::error(IssueType::Login, message.as_str()).with_spine_code("ACCESS DENIED", "Access denied"))
            }
            Self::Forbidden { code, message, .. } => OperationOutcome::single(
                Issue::error(IssueType::Forbidden, message.as_str()).with_spine_code(code.spine_code(), code.spine_code()),
            ),
            Self::NotFound(message) => issue(IssueType::NotFound, message),
            Self::Gone(message) => issue(IssueType::Deleted, message),
            Self::MethodNotAllowed(message) => issue(IssueType::NotSupported, message),
            Self::NotAcceptable(message) | Self::UnsupportedMediaType(message) => issue(IssueType::NotSupported, message),
            Self::Conflict(message) => issue(IssueType::Conflict, message),
            Self::PreconditionFailed(message) => issue(IssueType::Conflict, message),
            Self::PayloadTooLarge(message) => issue(IssueType::TooLong, message),
            Self::TooManyRequests(message) => issue(IssueType::Throttled, message),
            Self::Unavailable(message) => issue(IssueType::Transient, message),
            Self::Internal(_) => OperationOutcome::single(
                Issue::error(IssueType::Exception, "internal error; the request id in the response headers identifies it in the logs")
                    .with_spine_code("INTERNAL_SERVER_ERROR", "Internal server error"),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(message) => Self::Unavailable(message),
            StoreError::Conflict(message) => Self::Conflict(message),
            StoreError::Internal(error) => Self::Internal(error),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = ?self, status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
        }
        let mut response = HttpResponse::build(status);
        response.insert_header((CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON)));
        match self {
            Self::Unavailable(_) | Self::TooManyRequests(_) => {
                response.insert_header((RETRY_AFTER, HeaderValue::from_static("1")));
            }
            Self::Unauthenticated(_) => {
                response.insert_header(("WWW-Authenticate", HeaderValue::from_static("Bearer realm=\"hie-gateway\"")));
            }
            Self::InvalidToken(_) => {
                response
                    .insert_header(("WWW-Authenticate", HeaderValue::from_static("Bearer realm=\"hie-gateway\", error=\"invalid_token\"")));
            }
            _ => {}
        }
        response.body(self.outcome().to_json_bytes())
    }
}
