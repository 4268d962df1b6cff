//! HIE Gateway: a FHIR R4 (UK Core) health information exchange gateway.
//!
//! `main.rs` is a thin binary over this library; the black-box tests link against it and start
//! an [`startup::Application`] on port 0.
// One audited `unsafe` block exists: `store::nodelay` (a workaround for an sqlx release).
#![deny(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod certs;
pub mod cli;
pub mod clients;
pub mod configuration;
pub mod demo;
pub mod enforce;
pub mod error;
pub mod fhir;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod mllp;
pub mod portal;
pub mod rate_limit;
pub mod startup;
pub mod store;
pub mod synthetic;
pub mod telemetry;
pub mod tls;
pub mod translate;
