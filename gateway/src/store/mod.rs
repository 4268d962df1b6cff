//! The store: where resources, their versions and their search indexes live.
//!
//! Routes reach data only through [`FhirStore`]. One implementation, [`SqlStore`], runs on
//! SQLite (the embedded default) and PostgreSQL, with a migration set per dialect; this module
//! and its children are the only place SQL appears.

mod access_sql;
pub mod cache;
mod connection;
mod nodelay;
pub mod query;
pub mod sql_store;

pub use cache::{CachedStore, ReadCache};
pub use query::{
    CompartmentQuery, Condition, Filter, HistoryScope, Include, IndexTable, Position, SearchQuery, SortBy, SortKey, SortValue, TotalMode,
};
pub use sql_store::{RejectedInput, SqlStore};

use std::sync::Arc;

use async_trait::async_trait;
use fhir_models::ResourceType;
use fhir_models::search::IndexEntries;

/// One stored version of a resource.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredVersion {
    /// The store's key for the resource (all versions share it); orders search pages.
    pub key: i64,
    pub resource_type: ResourceType,
    pub id: String,
    pub version_id: i64,
    /// Microseconds since the Unix epoch.
    pub last_updated: i64,
    pub deleted: bool,
    pub method: WriteMethod,
    /// The stamped JSON (`id` and `meta` set), shared without copying; `None` for a deletion.
    pub content: Option<bytes::Bytes>,
    /// Position in the store's history, for paging `_history`.
    pub sequence: i64,
    /// ODS code of the organisation that published this version, when known.
    pub source_org: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMethod {
    Create,
    Update,
    Delete,
}

impl WriteMethod {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Create => "POST",
            Self::Update => "PUT",
            Self::Delete => "DELETE",
        }
    }

    fn from_code(code: &str) -> Self {
        match code {
            "POST" => Self::Create,
            "DELETE" => Self::Delete,
            _ => Self::Update,
        }
    }
}

/// A version about to be written. The FHIR layer decides ids and version numbers; the store
/// persists the version, the current pointer and the index rows together.
pub struct NewVersion {
    pub resource_type: ResourceType,
    pub id: String,
    pub version_id: i64,
    pub last_updated: i64,
    /// `Create` promises a new id (a server-assigned UUID): the store inserts without looking.
    pub method: WriteMethod,
    /// `None` writes a deletion.
    pub content: Option<String>,
    pub index: Option<IndexEntries>,
    /// What the access rules read of this version (relationships, sharing wishes).
    pub access: AccessRows,
    /// ODS code of the organisation that published this version.
    pub source_org: Option<String>,
}

/// The rows a version gives the access rules, written and replaced with its index rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessRows {
    pub relationships: Vec<consent::relationships::RelationshipRow>,
    pub directives: Vec<consent::directives::DirectiveRow>,
    /// A Binary's `securityContext` (`Some(None)`: one that names no stored resource).
    pub security_context: Option<Option<(String, String)>>,
    /// A Composition's section entries, at any depth (`consent::access::document_entries`).
    pub document_entries: Vec<Option<(String, String)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded: retry later (503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A concurrent write won (409).
    #[error("conflicting write: {0}")]
    Conflict(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Self::Unavailable(error.to_string())
            }
            sqlx::Error::Database(db) => {
                if db.is_unique_violation() {
                    return Self::Conflict("another request wrote the same resource at the same time; retry".into());
                }
                match db.code().as_deref() {
                    // PostgreSQL: serialization failure, deadlock, admin shutdown, cannot connect now
                    Some("40001" | "40P01" | "57P01" | "57P02" | "57P03" | "08000" | "08003" | "08006") => {
                        Self::Unavailable(error.to_string())
                    }
                    // SQLite: SQLITE_BUSY, SQLITE_LOCKED
                    Some("5" | "6" | "517" | "262") => Self::Unavailable(error.to_string()),
                    _ => Self::Internal(anyhow::Error::new(error).context("database error")),
                }
            }
            _ => Self::Internal(anyhow::Error::new(error).context("database error")),
        }
    }
}

/// A page of search results.
#[derive(Debug, Default)]
pub struct SearchPage {
    pub matches: Vec<StoredVersion>,
    /// What `_include` and `_revinclude` added.
    pub included: Vec<StoredVersion>,
    /// Set when the query asked for a total.
    pub total: Option<i64>,
    /// Whether matches follow the last one / precede the first one.
    pub more_after: bool,
    pub more_before: bool,
    /// Positions of the first and last match, for `previous` and `next` links.
    pub first: Option<Position>,
    pub last: Option<Position>,
}

#[async_trait]
pub trait FhirStore: Send + Sync + 'static {
    /// The current version, including a deletion marker if the resource was deleted.
    async fn read(&self, resource_type: ResourceType, id: &str) -> Result<Option<StoredVersion>, StoreError>;

    async fn vread(&self, resource_type: ResourceType, id: &str, version_id: i64) -> Result<Option<StoredVersion>, StoreError>;

    /// Versions newest first, `count + 1` at most (the extra one tells the caller a next page
    /// exists), starting below `before_sequence` when paging; only those `published_by` an
    /// organisation when it is given.
    async fn history(
        &self,
        scope: &HistoryScope,
        count: usize,
        before_sequence: Option<i64>,
        since: Option<i64>,
        published_by: Option<&str>,
    ) -> Result<Vec<StoredVersion>, StoreError>;

    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError>;

    /// A page of one patient's compartment (`$everything`) and, when asked, the number of matches.
    async fn compartment(&self, query: &CompartmentQuery, with_total: bool) -> Result<(Vec<StoredVersion>, Option<i64>), StoreError>;

    /// What the access rules read of these patients: relationships (with the ODS codes of the
    /// Organizations they name) and sharing wishes. Every id gets an entry, known or not.
    async fn patient_facts(&self, patient_ids: &[String]) -> Result<Vec<consent::PatientFacts>, StoreError>;

    /// Whether `org` published any current resource in these patients' compartments.
    async fn published_for(&self, patient_ids: &[String], org: &str) -> Result<bool, StoreError>;

    /// Start a write transaction. Everything written through it commits atomically or not at all.
    async fn begin(&self) -> Result<Box<dyn StoreTransaction>, StoreError>;

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    fn backend(&self) -> &'static str;
}

#[async_trait]
pub trait StoreTransaction: Send {
    /// The current version, locked against concurrent writers until commit.
    async fn read_for_update(&mut self, resource_type: ResourceType, id: &str) -> Result<Option<StoredVersion>, StoreError>;

    /// Serialise conditional writes on the same condition (`If-None-Exist`), so two concurrent
    /// conditional creates cannot both create.
    async fn lock_condition(&mut self, condition: &str) -> Result<(), StoreError>;

    /// Search inside the transaction (conditional create, update, delete and references).
    async fn search(&mut self, query: &SearchQuery) -> Result<SearchPage, StoreError>;

    /// Write a version. Writes may be buffered and sent in bulk before the next read and at commit;
    /// a constraint violation may therefore surface at commit.
    async fn write(&mut self, version: NewVersion) -> Result<(), StoreError>;

    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

pub type SharedStore = Arc<dyn FhirStore>;
