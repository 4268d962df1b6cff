//! A read-through cache of current versions, in front of the store.
//!
//! Reading a resource by id is the gateway's hottest path; the cache answers it from memory.
//! Correctness comes first:
//! - this process's own writes evict their keys as their transaction commits;
//! - other instances' writes arrive as PostgreSQL notifications (`LISTEN hie_cache`, sent inside
//!   the writing transaction, so only committed writes are announced);
//! - another process writing the SQLite file (`PRAGMA data_version` on the writer connection
//!   changes only for commits by other connections) empties the cache;
//! - while notifications may be missed (the listener is reconnecting) the cache is bypassed;
//! - a read that raced a write does not fill the cache (an epoch counter, bumped by every
//!   invalidation, must be unchanged across the database read).
//!
//! Only data is cached, never a decision: every read is still authorised per request. Beside
//! the resources it keeps what the access rules read of patients (`consent::PatientFacts`:
//! relationships and sharing wishes), derived from the Patients, Encounters, EpisodesOfCare,
//! ServiceRequests, Consents and Organizations that every commit of one of those types
//! invalidates, here and on every other instance, by the same paths.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use fhir_models::ResourceType;

use super::{FhirStore, HistoryScope, NewVersion, SearchPage, SearchQuery, StoreError, StoreTransaction, StoredVersion};

type Key = (ResourceType, Box<str>);

pub struct ReadCache {
    entries: moka::sync::Cache<Key, Arc<StoredVersion>>,
    facts: moka::sync::Cache<Box<str>, Arc<consent::PatientFacts>>,
    epoch: AtomicU64,
    trusted: AtomicBool,
}

/// The types whose versions give the rows `PatientFacts` are read from (and Organization, whose
/// identifiers name the organisations those rows point at).
const ACCESS_TYPES: [&str; 6] = ["Patient", "Encounter", "EpisodeOfCare", "ServiceRequest", "Consent", "Organization"];

impl ReadCache {
    /// A cache holding up to `max_bytes` of resource JSON.
    pub fn new(max_bytes: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &Key, version: &Arc<StoredVersion>| {
                (version.content.as_ref().map_or(0, |content| content.len()) + version.id.len() + 96).try_into().unwrap_or(u32::MAX)
            })
            .build();
        Self { entries, facts: moka::sync::Cache::new(100_000), epoch: AtomicU64::new(0), trusted: AtomicBool::new(true) }
    }

    fn get(&self, resource_type: ResourceType, id: &str) -> Option<Arc<StoredVersion>> {
        if !self.trusted.load(Ordering::Acquire) {
            return None;
        }
        self.entries.get(&(resource_type, id.into()))
    }

    fn insert_if_unchanged(&self, version: StoredVersion, epoch_before_read: u64) -> Arc<StoredVersion> {
        let version = Arc::new(version);
        if self.trusted.load(Ordering::Acquire) && self.epoch.load(Ordering::Acquire) == epoch_before_read {
            self.entries.insert((version.resource_type, version.id.as_str().into()), version.clone());
        }
        version
    }

    /// Evict resources written elsewhere (`Type/id`), and every patient's facts when one of
    /// them is of a type they are derived from.
    pub fn invalidate(&self, keys: impl IntoIterator<Item = (ResourceType, String)>) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let mut facts_changed = false;
        for (resource_type, id) in keys {
            facts_changed |= ACCESS_TYPES.contains(&resource_type.as_str());
            self.entries.invalidate(&(resource_type, id.into_boxed_str()));
        }
        if facts_changed {
            self.facts.invalidate_all();
        }
    }

    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
        self.facts.invalidate_all();
    }

    /// Whether invalidations from other writers are arriving. When they may be missed, the
    /// cache is emptied and bypassed until they arrive again.
    pub fn set_trusted(&self, trusted: bool) {
        if !trusted {
            self.trusted.store(false, Ordering::Release);
            self.invalidate_all();
        } else {
            self.invalidate_all();
            self.trusted.store(true, Ordering::Release);
        }
    }

    /// Parse a notification payload: `Type/id` lines, or `*` for everything.
    pub fn apply_notification(&self, payload: &str) {
        if payload == "*" {
            self.invalidate_all();
            return;
        }
        self.invalidate(payload.lines().filter_map(|line| {
            let (type_name, id) = line.split_once('/')?;
            Some((ResourceType::parse(type_name).ok()?, id.to_owned()))
        }));
    }
}

/// The store with the read cache in front.
pub struct CachedStore {
    inner: Arc<dyn FhirStore>,
    cache: Arc<ReadCache>,
}

impl CachedStore {
    pub fn new(inner: Arc<dyn FhirStore>, cache: Arc<ReadCache>) -> Self {
        Self { inner, cache }
    }
}

#[async_trait]
impl FhirStore for CachedStore {
    async fn read(&self, resource_type: ResourceType, id: &str) -> Result<Option<StoredVersion>, StoreError> {
        if let Some(version) = self.cache.get(resource_type, id) {
            return Ok(Some(StoredVersion::clone(&version)));
        }
        let epoch = self.cache.epoch.load(Ordering::Acquire);
        let version = self.inner.read(resource_type, id).await?;
        Ok(version.map(|version| StoredVersion::clone(&self.cache.insert_if_unchanged(version, epoch))))
    }

    async fn vread(&self, resource_type: ResourceType, id: &str, version_id: i64) -> Result<Option<StoredVersion>, StoreError> {
        self.inner.vread(resource_type, id, version_id).await
    }

    async fn history(
        &self,
        scope: &HistoryScope,
        count: usize,
        before_sequence: Option<i64>,
        since: Option<i64>,
        published_by: Option<&str>,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        self.inner.history(scope, count, before_sequence, since, published_by).await
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        self.inner.search(query).await
    }

    async fn compartment(
        &self,
        query: &super::CompartmentQuery,
        with_total: bool,
    ) -> Result<(Vec<StoredVersion>, Option<i64>), StoreError> {
        self.inner.compartment(query, with_total).await
    }

    async fn patient_facts(&self, patient_ids: &[String]) -> Result<Vec<consent::PatientFacts>, StoreError> {
        let trusted = self.cache.trusted.load(Ordering::Acquire);
        let mut known = Vec::with_capacity(patient_ids.len());
        let mut missing = Vec::new();
        for id in patient_ids {
            match self.cache.facts.get(id.as_str()).filter(|_| trusted) {
                Some(facts) => known.push(consent::PatientFacts::clone(&facts)),
                None => missing.push(id.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(known);
        }
        let epoch = self.cache.epoch.load(Ordering::Acquire);
        let loaded = self.inner.patient_facts(&missing).await?;
        // As for resources: a read that raced a commit of the types these come from is not kept.
        if self.cache.trusted.load(Ordering::Acquire) && self.cache.epoch.load(Ordering::Acquire) == epoch {
            for facts in &loaded {
                self.cache.facts.insert(facts.id.as_str().into(), Arc::new(facts.clone()));
            }
        }
        known.extend(loaded);
        Ok(known)
    }

    async fn published_for(&self, patient_ids: &[String], org: &str) -> Result<bool, StoreError> {
        self.inner.published_for(patient_ids, org).await
    }

    async fn begin(&self) -> Result<Box<dyn StoreTransaction>, StoreError> {
        Ok(Box::new(CachingTransaction { inner: self.inner.begin().await?, written: Vec::new(), cache: self.cache.clone() }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}

struct CachingTransaction {
    inner: Box<dyn StoreTransaction>,
    written: Vec<(ResourceType, String)>,
    cache: Arc<ReadCache>,
}

#[async_trait]
impl StoreTransaction for CachingTransaction {
    async fn read_for_update(&mut self, resource_type: ResourceType, id: &str) -> Result<Option<StoredVersion>, StoreError> {
        self.inner.read_for_update(resource_type, id).await
    }

    async fn lock_condition(&mut self, condition: &str) -> Result<(), StoreError> {
        self.inner.lock_condition(condition).await
    }

    async fn search(&mut self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        self.inner.search(query).await
    }

    async fn write(&mut self, version: NewVersion) -> Result<(), StoreError> {
        self.written.push((version.resource_type, version.id.clone()));
        self.inner.write(version).await
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let result = self.inner.commit().await;
        // Evict even when the commit failed: whether it took effect may be unknown.
        self.cache.invalidate(self.written);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WriteMethod;

    fn version(id: &str, version_id: i64) -> StoredVersion {
        StoredVersion {
            key: 1,
            resource_type: ResourceType::parse("Patient").unwrap(),
            id: id.into(),
            version_id,
            last_updated: 0,
            deleted: false,
            method: WriteMethod::Create,
            content: Some(bytes::Bytes::from_static(b"{}")),
            sequence: 0,
            source_org: None,
        }
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let cache = ReadCache::new(1 << 20);
        let patient = ResourceType::parse("Patient").unwrap();
        let epoch = cache.epoch.load(Ordering::Acquire);
        cache.invalidate([(patient, "a".to_owned())]);
        cache.insert_if_unchanged(version("a", 1), epoch);
        assert!(cache.get(patient, "a").is_none());
        let epoch = cache.epoch.load(Ordering::Acquire);
        cache.insert_if_unchanged(version("a", 2), epoch);
        assert_eq!(cache.get(patient, "a").unwrap().version_id, 2);
    }

    #[test]
    fn notifications_and_distrust_evict() {
        let cache = ReadCache::new(1 << 20);
        let patient = ResourceType::parse("Patient").unwrap();
        let epoch = cache.epoch.load(Ordering::Acquire);
        cache.insert_if_unchanged(version("a", 1), epoch);
        cache.apply_notification("Patient/a\nObservation/b");
        assert!(cache.get(patient, "a").is_none());
        let epoch = cache.epoch.load(Ordering::Acquire);
        cache.insert_if_unchanged(version("a", 1), epoch);
        cache.set_trusted(false);
        let epoch = cache.epoch.load(Ordering::Acquire);
        cache.insert_if_unchanged(version("a", 1), epoch);
        assert!(cache.get(patient, "a").is_none(), "an untrusted cache neither answers nor fills");
        cache.set_trusted(true);
        let epoch = cache.epoch.load(Ordering::Acquire);
        cache.insert_if_unchanged(version("a", 3), epoch);
        assert_eq!(cache.get(patient, "a").unwrap().version_id, 3);
    }
}
