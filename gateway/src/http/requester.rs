//! Who is calling, from the connection's client certificate.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use consent::Requester;

use super::AppState;
use crate::error::ApiError;
use crate::tls::PeerCertificate;

/// The requester behind a request: the registered client its certificate identifies, if any.
/// Extracting it never fails; what it may do is the policy engine's decision.
pub struct RequesterIdentity(pub Requester);

impl FromRequest for RequesterIdentity {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = request.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Internal(anyhow::anyhow!("application state is missing"))));
        };
        let requester = match request.conn_data::<PeerCertificate>() {
            None => Requester::anonymous(),
            Some(certificate) => match state.clients.identify(certificate) {
                Some(client) => Requester::client(client.clone()),
                None => Requester { client: None, unregistered_certificate: true },
            },
        };
        ready(Ok(Self(requester)))
    }
}
