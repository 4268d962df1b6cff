//! The FHIR RESTful API, independent of HTTP and of storage: each interaction is a function
//! from a plain request to a [`FhirResponse`], reaching data only through the store trait.
//! The HTTP layer (`crate::http`) adapts actix-web requests to these functions, and batch and
//! transaction Bundles call the same functions entry by entry.

pub mod access;
mod body;
mod bundle;
mod capabilities;
mod create;
mod delete;
mod everything;
mod history;
mod paging;
mod read;
mod search;
mod search_params;
mod update;
mod validate;
mod write;

pub use body::ParsedResource;
pub use bundle::batch_or_transaction;
pub use capabilities::capability_statement;
pub use create::{Created, create, parse_query_string};
pub use delete::{conditional_delete, delete};
pub use everything::everything;
pub use history::history;
pub use paging::PagingKey;
pub use read::{read, vread};
pub use search::{SearchScope, search};
pub use search_params::{Handling, ParsedSearch, parse_search};
pub use update::{Updated, conditional_update, update};
pub use validate::validate;
pub use write::{Validated, prepare};

use std::sync::Arc;

use fhir_models::bundle::{BundleWriter, Link};
use fhir_models::datetime::{format_instant, from_micros};
use fhir_models::{OdsCode, OperationOutcome};
use time::OffsetDateTime;

use crate::configuration::Limits;
use crate::error::ApiError;
use crate::store::{SharedStore, StoredVersion};

/// What every interaction needs: the store, the validator, limits and the base URL.
pub struct FhirService {
    pub store: SharedStore,
    pub validator: Arc<conformance::Validator>,
    /// `https://host:port/fhir/r4`, for `fullUrl`, `Location` and links.
    pub base_url: String,
    pub limits: Limits,
    pub paging: PagingKey,
    /// Sensitive code sets and the access rules.
    pub policy: Policy,
    /// What the access rules read of each version already released.
    pub resource_facts: access::FactsCache,
}

/// Policy as data: what writes are labelled with and what reads may see.
#[derive(Clone)]
pub struct Policy {
    /// Sensitive code sets: the labels every write stamps (`[[labels.sensitive]]`).
    pub labels: Arc<consent::SensitivityLabels>,
    /// The labels those sets stamp, all withheld outside their source.
    pub code_set_labels: Vec<String>,
    /// `[consent]`.
    pub access: Arc<consent::AccessPolicy>,
}

impl FhirService {
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    pub fn full_url(&self, version: &StoredVersion) -> String {
        format!("{}/{}/{}", self.base_url, version.resource_type, version.id)
    }

    /// A new Bundle of `bundle_type` stamped now.
    pub fn bundle_writer(&self, bundle_type: &str, total: Option<i64>, links: &[Link<'_>]) -> BundleWriter {
        let now = instant(fhir_models::datetime::to_micros(self.now()));
        BundleWriter::new(&uuid::Uuid::new_v4().to_string(), &now, bundle_type, total, links)
    }
}

/// A page's links: `self`, then `first`, `previous` and `next` where there are such pages.
pub fn page_links<'a>(self_url: &'a str, first: Option<&'a str>, previous: Option<&'a str>, next: Option<&'a str>) -> Vec<Link<'a>> {
    let mut links = vec![Link { relation: "self", url: self_url }];
    links.extend(first.map(|url| Link { relation: "first", url }));
    links.extend(previous.map(|url| Link { relation: "previous", url }));
    links.extend(next.map(|url| Link { relation: "next", url }));
    links
}

/// `_count=value`, a whole number; each operation bounds it.
pub fn parse_count(value: &str) -> Result<usize, ApiError> {
    value.parse::<usize>().map_err(|_| {
        ApiError::invalid_at(fhir_models::outcome::IssueType::Value, "_count", format!("_count must be a whole number, found {value:?}"))
    })
}

/// Who is writing, as far as the stored data needs to know.
#[derive(Clone, Debug, Default)]
pub struct WriteContext {
    /// The publishing organisation, recorded as each version's source.
    pub source_org: Option<OdsCode>,
    /// What the writer may see: a write that would change or delete a record outside it is
    /// refused (`access::writable`). `None` for patients, whose own rule is stricter.
    pub scope: Option<std::sync::Arc<consent::Scope>>,
}

/// `Prefer: return=…` (<http://hl7.org/fhir/R4/http.html#ops>).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReturnPreference {
    Minimal,
    #[default]
    Representation,
    OperationOutcome,
}

/// The body of a response.
#[derive(Debug)]
pub enum Body {
    /// Raw FHIR JSON (a stored resource, or a Bundle written as bytes).
    Json(bytes::Bytes),
    Outcome(OperationOutcome),
    Empty,
}

#[derive(Debug)]
pub struct FhirResponse {
    pub status: u16,
    pub body: Body,
    /// `W/"3"`
    pub etag: Option<String>,
    /// Microseconds since the epoch.
    pub last_modified: Option<i64>,
    pub location: Option<String>,
}

impl FhirResponse {
    pub fn ok(body: Vec<u8>) -> Self {
        Self { status: 200, body: Body::Json(body.into()), etag: None, last_modified: None, location: None }
    }

    /// A stored version as a response, with `ETag` and `Last-Modified`.
    pub fn version(status: u16, version: StoredVersion) -> Self {
        Self {
            status,
            body: Body::Json(version.content.unwrap_or_default()),
            etag: Some(etag(version.version_id)),
            last_modified: Some(version.last_updated),
            location: None,
        }
    }
}

pub fn etag(version_id: i64) -> String {
    format!("W/\"{version_id}\"")
}

/// `meta.lastUpdated` form of a stored time.
pub fn instant(micros: i64) -> String {
    format_instant(from_micros(micros))
}
