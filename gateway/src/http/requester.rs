//! Who is calling: the connection's client certificate and the request's bearer token.

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use consent::Requester;
use futures_util::future::LocalBoxFuture;

use super::AppState;
use crate::auth::AuthError;
use crate::error::ApiError;
use crate::tls::PeerCertificate;

/// The requester behind a request: the registered client its certificate identifies, if any,
/// and the principal its bearer token names, if any. A token that does not verify fails the
/// request here; what a verified requester may do is the policy engine's decision.
pub struct RequesterIdentity(pub Requester);

impl FromRequest for RequesterIdentity {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = request.app_data::<web::Data<AppState>>().cloned() else {
            return Box::pin(async { Err(ApiError::Internal(anyhow::anyhow!("application state is missing"))) });
        };
        let certificate = request.conn_data::<PeerCertificate>().cloned();
        // A `HeaderValue` clone shares its bytes: no copy of the token per request.
        let authorization = request.headers().get(AUTHORIZATION).cloned();
        Box::pin(async move {
            let mut requester = match &certificate {
                None => Requester::anonymous(),
                Some(certificate) => match state.clients.identify(certificate) {
                    Some(client) => Requester::client(client.clone()),
                    None => Requester { unregistered_certificate: true, ..Requester::anonymous() },
                },
            };
            let principal = state
                .authenticator
                .authenticate(authorization.as_ref().map(|value| value.as_bytes()), certificate.as_ref())
                .await
                .map_err(|error| {
                    tracing::info!(reason = %error, "bearer token refused");
                    match error {
                        AuthError::Invalid(message) => ApiError::InvalidToken(message),
                        AuthError::Refused(message) => {
                            ApiError::Forbidden { code: consent::DenyCode::AccessDenied, rule: consent::Rule::TokenClaims.name(), message }
                        }
                        AuthError::Unavailable(message) => ApiError::Unavailable(message),
                    }
                })?;
            requester.principal = principal;
            crate::audit::record_requester(&requester);
            Ok(Self(requester))
        })
    }
}
