//! The HTTP adapter: actix-web routes that turn requests into calls of the FHIR layer and its
//! responses into HTTP. No FHIR logic lives here; no route reaches the store directly.

mod handlers;
mod negotiate;
mod requester;
mod respond;

pub use requester::RequesterIdentity;

use actix_web::web;

use crate::clients::ClientRegistry;
use crate::fhir::FhirService;

/// Shared state of the API server.
pub struct AppState {
    pub fhir: FhirService,
    pub clients: ClientRegistry,
    /// The CapabilityStatement, built once at start.
    pub capability_statement: Vec<u8>,
}

pub const FHIR_BASE: &str = "/fhir/r4";

/// Every route of the FHIR API, under `/fhir/r4`. More specific paths come first.
pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope(FHIR_BASE)
            .service(
                web::resource("/metadata")
                    .route(web::get().to(handlers::capabilities))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            .service(
                web::resource("")
                    .route(web::post().to(handlers::batch_or_transaction))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            .service(
                web::resource("/")
                    .route(web::post().to(handlers::batch_or_transaction))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            .service(
                web::resource("/_history")
                    .route(web::get().to(handlers::history_system))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            .service(
                web::resource("/{type}/_search")
                    .route(web::post().to(handlers::search_post))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            .service(
                web::resource("/{type}/_history")
                    .route(web::get().to(handlers::history_type))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            .service(
                web::resource("/{type}/$validate")
                    .route(web::post().to(handlers::validate_type))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            .service(
                web::resource("/{type}/{id}/_history/{version}")
                    .route(web::get().to(handlers::vread))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            .service(
                web::resource("/{type}/{id}/_history")
                    .route(web::get().to(handlers::history_instance))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            .service(
                web::resource("/{type}/{id}/$validate")
                    .route(web::post().to(handlers::validate_instance))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            .service(
                web::resource("/{type}/{id}")
                    .route(web::get().to(handlers::read))
                    .route(web::put().to(handlers::update))
                    .route(web::delete().to(handlers::delete))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            .service(
                web::resource("/{type}")
                    .route(web::get().to(handlers::search_get))
                    .route(web::post().to(handlers::create))
                    .route(web::put().to(handlers::conditional_update))
                    .route(web::delete().to(handlers::conditional_delete))
                    .default_service(web::to(handlers::method_not_allowed)),
            ),
    );
}

/// Unknown paths: 404 with an OperationOutcome.
pub async fn not_found() -> Result<actix_web::HttpResponse, crate::error::ApiError> {
    Err(crate::error::ApiError::NotFound("no such endpoint; the FHIR API is under /fhir/r4".into()))
}
