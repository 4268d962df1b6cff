//! Prometheus metrics, served on the ops port, and the request middleware that records them
//! and gives each request an id.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_ENCODING, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::Instrument;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route pattern (`/fhir/r4/{type}/{id}`), never the concrete path.
    pub route: String,
    pub resource_type: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hie");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        let in_flight = Gauge::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register("http_request_duration_seconds", "Time to answer HTTP requests", latency.clone());
        registry.register("http_requests_in_flight", "HTTP requests being answered", in_flight.clone());
        Self { registry, requests, latency, in_flight }
    }

    /// Export the store's operation counter.
    pub fn register_store_operations(&mut self, operations: Counter) {
        self.registry.register("store_operations", "Store reads and transactions begun", operations);
    }

    pub fn register_audit(&mut self, metrics: &crate::audit::AuditMetrics) {
        self.registry.register("audit_events", "Audit events committed to the trail", metrics.events.clone());
        self.registry.register("audit_commits", "Commits of audit events (each holds a batch)", metrics.commits.clone());
        self.registry.register("audit_commit_seconds", "Time spent committing audit events", metrics.commit_seconds.clone());
        self.registry.register("audit_failures", "Audit commits that failed (their requests were answered 503)", metrics.failures.clone());
        self.registry.register(
            "audit_recorded_requests",
            "HTTP requests whose audit record was committed before their answer",
            metrics.recorded_requests.clone(),
        );
        self.registry.register(
            "audit_unrecorded_requests",
            "Requests answered 503 instead because their audit record could not be written",
            metrics.unrecorded.clone(),
        );
    }

    pub fn register_mllp(&mut self, metrics: &crate::mllp::MllpMetrics) {
        self.registry.register("hl7v2_messages", "HL7 v2 messages received over MLLP, by acknowledgement code", metrics.messages.clone());
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encoding to a String cannot fail");
        text
    }
}

/// A route pattern without its segment regexes: `/{type}/{id:[A-Za-z0-9.-]{1,64}}` is
/// `/{type}/{id}`, as in `openapi.yaml` and on dashboards.
pub fn route_label(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|segment| match segment.strip_prefix('{').and_then(|s| s.split_once(':')) {
            Some((name, _)) => format!("{{{name}}}"),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A request id: the caller's `X-Request-ID` when it is short and plain, else a new UUID.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn request_id(request: &ServiceRequest) -> String {
    request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Middleware: request id, a span with no PHI in it, metrics, and one log line per request.
pub async fn observe(
    metrics: Arc<Metrics>,
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = request_id(&request);
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().to_string();
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = tracing::field::Empty);
    let started = Instant::now();
    metrics.in_flight.inc();
    let result = next.call(request).instrument(span.clone()).await;
    metrics.in_flight.dec();
    let elapsed = started.elapsed();
    let mut response = result?;
    let route = response.request().match_pattern().map_or_else(|| "unmatched".to_owned(), |pattern| route_label(&pattern));
    let resource_type =
        response.request().match_info().get("type").filter(|name| fhir_models::ResourceType::parse(name).is_ok()).unwrap_or("").to_owned();
    let status = response.status().as_u16();
    span.record("route", route.as_str());
    span.in_scope(|| {
        tracing::debug!(status, resource_type = %resource_type, elapsed_us = elapsed.as_micros() as u64, "answered");
    });
    metrics.requests.get_or_create(&RequestLabels { method: method.clone(), route: route.clone(), resource_type, status }).inc();
    metrics.latency.get_or_create(&RouteLabels { method, route }).observe(elapsed.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HeaderName::from_static("x-request-id"), value);
    }
    // Small bodies were marked so that compression skipped them; the marker is not for clients.
    if response.headers().get(CONTENT_ENCODING).is_some_and(|value| value == crate::http::respond::IDENTITY) {
        response.headers_mut().remove(CONTENT_ENCODING);
    }
    Ok(response)
}
