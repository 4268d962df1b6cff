//! FHIR R4 data for the HIE gateway.
//!
//! JSON-first: resources travel as `serde_json::Value` or raw bytes; typed values exist only for
//! what the gateway builds or checks itself (identifiers, references, outcomes, bundles).
//!
//! **Architecture Invariant:** no I/O, no async, no clock. Everything here is a pure function of
//! its arguments, so it can be fuzzed, benchmarked and property-tested alone.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod datetime;
pub mod id;
pub mod interaction;
pub mod json;
pub mod nhs;
pub mod outcome;
pub mod reference;
pub mod resource_type;
mod resource_types;
pub mod search;
pub mod system;

pub use id::{ResourceId, VersionId};
pub use nhs::{NhsNumber, OdsCode};
pub use outcome::{IssueSeverity, IssueType, OperationOutcome};
pub use reference::Reference;
pub use resource_type::ResourceType;
