//! The HTTP adapter: actix-web routes that turn requests into calls of the FHIR layer and its
//! responses into HTTP. No FHIR logic lives here; no route reaches the store directly.

mod handlers;
mod multipart;
mod negotiate;
mod requester;
pub(crate) mod respond;
mod smart;

pub use requester::RequesterIdentity;

use actix_web::web;

use crate::clients::ClientRegistry;
use crate::fhir::FhirService;

/// Shared state of the API server.
pub struct AppState {
    pub fhir: std::sync::Arc<FhirService>,
    pub clients: ClientRegistry,
    pub authenticator: crate::auth::SharedAuthenticator,
    pub rate_limiter: std::sync::Arc<crate::rate_limit::RateLimiter>,
    /// The CapabilityStatement, built once at start.
    pub capability_statement: Vec<u8>,
    /// Files HL7 v2 posted to `/ingest/hl7v2`.
    pub ingest: std::sync::Arc<crate::ingest::Hl7v2Ingest>,
    /// The patient portal's sign-in and sessions.
    pub portal: std::sync::Arc<crate::portal::Portal>,
    /// Every request's AuditEvent is appended here before its answer leaves.
    pub audit: crate::audit::AuditTrail,
    /// Read v2 / CTV3 to SNOMED CT maps for extracts posted to `/ingest/{format}`.
    pub code_maps: std::sync::Arc<crate::translate::codes::CodeMaps>,
}

pub const FHIR_BASE: &str = "/fhir/r4";

/// The HTTP contract, served at `/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../../openapi.yaml");

/// Every route of the API: the contract, and the FHIR API under `/fhir/r4` (more specific paths
/// first). `openapi.yaml` lists exactly these; a test holds them together.
pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/openapi.yaml").route(web::get().to(handlers::contract)).default_service(web::to(handlers::method_not_allowed)),
    );
    config.service(
        web::resource("/ingest/{format}").route(web::post().to(handlers::ingest)).default_service(web::to(handlers::method_not_allowed)),
    );
    config.service(
        web::scope(FHIR_BASE)
            // Before `/{type}/{id}`, which `.well-known` would otherwise match.
            .service(
                web::resource("/.well-known/smart-configuration")
                    .route(web::get().to(smart::smart_configuration))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            // The hottest route first. A FHIR id has no `_` or `$`, so it cannot take
            // `_history`, `_search` or `$validate` from the routes below.
            .service(
                web::resource("/{type}/{id:[A-Za-z0-9.-]{1,64}}")
                    .route(web::get().to(handlers::read))
                    .route(web::put().to(handlers::update))
                    .route(web::delete().to(handlers::delete))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
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
                web::resource("/$access-log")
                    .route(web::get().to(handlers::access_log))
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
                web::resource("/{type}/{id}/$everything")
                    .route(web::get().to(handlers::everything))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            .service(
                web::resource("/{type}/{id}/{compartmentType}")
                    .route(web::get().to(handlers::search_compartment))
                    .default_service(web::to(handlers::method_not_allowed)),
            )
            // Any other second segment is an id that is not a FHIR id: the same handlers answer
            // 400 naming the problem.
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use actix_web::{App, test, web};

    /// (method, path) pairs of a spec or an introspection report.
    type Routes = BTreeSet<(String, String)>;

    fn spec_routes() -> Routes {
        let spec: serde_json::Value = serde_saphyr::from_str(super::OPENAPI).expect("openapi.yaml parses");
        let mut routes = Routes::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
                if item.get(method).is_some() {
                    // Compared without a trailing slash, as the served side is (`/portal/`).
                    routes.insert((method.to_uppercase(), path.trim_end_matches('/').to_owned()));
                }
            }
        }
        routes
    }

    #[actix_web::test]
    async fn the_served_routes_are_exactly_the_routes_in_openapi_yaml() {
        async fn report(tree: web::Data<actix_web::introspection::IntrospectionTree>) -> String {
            tree.report_as_json()
        }
        let app = test::init_service(
            App::new()
                .configure(super::configure)
                .configure(|config| crate::portal::configure(config, "default-src 'none'"))
                .route("/__routes", web::get().to(report)),
        )
        .await;
        let body = test::call_and_read_body(&app, test::TestRequest::get().uri("/__routes").to_request()).await;
        let items: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        let mut served = Routes::new();
        for item in items {
            // The scope's own resource ("") is reported as "/fhir/r4/"; it answers "/fhir/r4".
            let path = crate::metrics::route_label(item["full_path"].as_str().unwrap().trim_end_matches('/'));
            if path == "/__routes" {
                continue;
            }
            for method in item["methods"].as_array().into_iter().flatten() {
                served.insert((method.as_str().unwrap().to_owned(), path.clone()));
            }
        }
        let spec = spec_routes();
        assert!(!served.is_empty());
        let undocumented: Vec<_> = served.difference(&spec).collect();
        let unserved: Vec<_> = spec.difference(&served).collect();
        assert!(undocumented.is_empty(), "served but not in openapi.yaml: {undocumented:?}");
        assert!(unserved.is_empty(), "in openapi.yaml but not served: {unserved:?}");
    }
}
