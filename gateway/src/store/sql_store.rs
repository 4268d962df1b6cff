//! [`SqlStore`]: the store on SQLite or PostgreSQL.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use fhir_models::ResourceType;
use fhir_models::search::IndexEntries;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use super::connection::{AuditRow, Bind, SqlConn, VersionRow};
use super::query::{CompiledQuery, Dialect, HISTORY_COLUMNS, HistoryScope, Position, SearchQuery, TotalMode, VERSION_COLUMNS};
use super::{FhirStore, NewVersion, SearchPage, StoreError, StoreTransaction, StoredVersion, WriteMethod};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

enum Pools {
    /// SQLite allows one writer at a time: writes go through a single connection (so they
    /// queue in the pool instead of failing with SQLITE_BUSY), reads through several.
    Sqlite {
        readers: SqlitePool,
        writer: SqlitePool,
        /// For the connection that checkpoints the WAL.
        connect: Box<SqliteConnectOptions>,
    },
    Postgres(PgPool),
}

pub struct SqlStore {
    pools: Pools,
    /// Reads and transactions begun: exported as `hie_store_operations_total`, so operators see
    /// database load per request and tests can prove a refused request never reached the store.
    operations: prometheus_client::metrics::counter::Counter,
}

/// An input refused by an ingest path, as kept in the dead-letter store.
#[derive(Clone, Debug, PartialEq)]
pub struct RejectedInput {
    /// Assigned when stored.
    pub id: Option<i64>,
    /// Microseconds since the Unix epoch.
    pub received_at: i64,
    /// `mllp`, `http`, `cli`.
    pub channel: String,
    pub format: String,
    /// ODS code of the authenticated client that sent it, when one did (HTTPS).
    pub publisher: Option<String>,
    pub sender: Option<String>,
    pub control_id: Option<String>,
    /// Where in the input: `PID-3`, `line 12`.
    pub location: Option<String>,
    pub reason: String,
    pub content: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct RejectedRow {
    id: i64,
    received_at: i64,
    channel: String,
    format: String,
    publisher: Option<String>,
    sender: Option<String>,
    control_id: Option<String>,
    location: Option<String>,
    reason: String,
    content: Vec<u8>,
}

impl From<RejectedRow> for RejectedInput {
    fn from(row: RejectedRow) -> Self {
        Self {
            id: Some(row.id),
            received_at: row.received_at,
            channel: row.channel,
            format: row.format,
            publisher: row.publisher,
            sender: row.sender,
            control_id: row.control_id,
            location: row.location,
            reason: row.reason,
            content: row.content,
        }
    }
}

/// Connection settings the store needs.
pub struct StoreOptions<'a> {
    pub url: &'a str,
    pub max_connections: Option<u32>,
    pub acquire_timeout: Duration,
}

impl SqlStore {
    /// The counter of store operations, for the metrics registry.
    pub fn operations_counter(&self) -> prometheus_client::metrics::counter::Counter {
        self.operations.clone()
    }

    /// Connect without migrating.
    pub async fn connect(options: &StoreOptions<'_>) -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
        if options.url.starts_with("postgres://") || options.url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(options.url).context("invalid PostgreSQL URL")?.application_name("hie-gateway");
            let peers: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((connect.get_host(), connect.get_port())).await.map(Iterator::collect).unwrap_or_default();
            let pool = PgPoolOptions::new()
                .after_connect(move |_, _| {
                    super::nodelay::set_on_sockets_to(&peers);
                    Box::pin(async { Ok(()) })
                })
                .max_connections(options.max_connections.unwrap_or(cores * 4))
                .min_connections(1)
                .acquire_timeout(options.acquire_timeout)
                .test_before_acquire(false)
                .connect_with(connect)
                .await
                .context("failed to connect to PostgreSQL")?;
            return Ok(Self { pools: Pools::Postgres(pool), operations: Default::default() });
        }
        let path = options.url.strip_prefix("sqlite://").or_else(|| options.url.strip_prefix("sqlite:")).with_context(|| {
            format!("database.url must start with sqlite:// or postgres://, found {:?}", options.url.split(':').next().unwrap_or(""))
        })?;
        if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("failed to create {}", parent.display()))?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a write acknowledged to a client survives a power cut.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            .pragma("cache_size", "-8192");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // A file connection does not break in the pool; a ping before each write (every
            // audit commit among them) would be one more round trip to its thread.
            .test_before_acquire(false)
            // Writers queue for the one connection; waiting is better than refusing.
            .acquire_timeout(options.acquire_timeout.max(Duration::from_secs(30)))
            // Commits only append to the WAL; a background task checkpoints it (see
            // `start_background_tasks`), so no write pays for copying pages back.
            .connect_with(
                connect
                    .clone()
                    .pragma("wal_autocheckpoint", "0")
                    // A transaction bundle rewrites the same index pages many times: keep the
                    // statement journal in memory instead of a temporary file, and enough pages
                    // cached (32 MiB, allocated as used) that a large transaction never spills.
                    .pragma("temp_store", "memory")
                    .pragma("cache_size", "-32768"),
            )
            .await
            .with_context(|| format!("failed to open SQLite database {path}"))?;
        let readers = SqlitePoolOptions::new()
            .max_connections(options.max_connections.unwrap_or(cores * 2))
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(connect.clone().read_only(true))
            .await
            .with_context(|| format!("failed to open SQLite database {path}"))?;
        Ok(Self { pools: Pools::Sqlite { readers, writer, connect: Box::new(connect) }, operations: Default::default() })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => SQLITE_MIGRATIONS.run(writer).await.context("failed to migrate the SQLite database")?,
            Pools::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await.context("failed to migrate the PostgreSQL database")?,
        }
        match &self.pools {
            Pools::Sqlite { writer, .. } => {
                let mut transaction = writer.begin_with("BEGIN IMMEDIATE").await?;
                backfill_access_rows(&mut *transaction).await?;
                transaction.commit().await?;
            }
            Pools::Postgres(pool) => {
                let mut transaction = pool.begin().await?;
                // One instance fills them in; the others wait and find the marker.
                sqlx::query("LOCK TABLE store_markers IN EXCLUSIVE MODE").execute(&mut *transaction).await?;
                backfill_access_rows(&mut *transaction).await?;
                transaction.commit().await?;
            }
        }
        Ok(())
    }

    /// PostgreSQL's plan for a search page, with sequential scans priced out so that the plan
    /// shows whether an index *can* answer each part (a test holds the hot queries to it; on a
    /// small table the planner would rightly scan instead).
    pub async fn explain_page(&self, query: &SearchQuery) -> anyhow::Result<String> {
        let Pools::Postgres(pool) = &self.pools else { anyhow::bail!("EXPLAIN is checked on PostgreSQL") };
        let mut conn = pool.acquire().await?;
        let conn: &mut dyn SqlConn = &mut *conn;
        conn.execute("SET enable_seqscan = off", &[]).await?;
        let page = query.compile_page(Dialect::Postgres);
        let plan = conn.fetch_text(&format!("EXPLAIN {}", page.sql), &page.binds).await;
        conn.execute("RESET enable_seqscan", &[]).await?;
        Ok(plan?.join("\n"))
    }

    /// Keep an input that was refused, with why: the dead-letter store.
    pub async fn record_rejected(&self, input: &RejectedInput) -> Result<i64, StoreError> {
        let id: i64 =
            match &self.pools {
                Pools::Sqlite { writer, .. } => sqlx::query_scalar(
                    "INSERT INTO rejected_inputs (received_at, channel, format, publisher, sender, control_id, location, reason, content) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                )
                .bind(input.received_at)
                .bind(&input.channel)
                .bind(&input.format)
                .bind(&input.publisher)
                .bind(&input.sender)
                .bind(&input.control_id)
                .bind(&input.location)
                .bind(&input.reason)
                .bind(&input.content)
                .fetch_one(writer)
                .await?,
                Pools::Postgres(pool) => sqlx::query_scalar(
                    "INSERT INTO rejected_inputs (received_at, channel, format, publisher, sender, control_id, location, reason, content) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                )
                .bind(input.received_at)
                .bind(&input.channel)
                .bind(&input.format)
                .bind(&input.publisher)
                .bind(&input.sender)
                .bind(&input.control_id)
                .bind(&input.location)
                .bind(&input.reason)
                .bind(&input.content)
                .fetch_one(pool)
                .await?,
            };
        Ok(id)
    }

    /// The most recent refused inputs, newest first.
    pub async fn rejected_inputs(&self, limit: i64) -> Result<Vec<RejectedInput>, StoreError> {
        let rows: Vec<RejectedRow> = match &self.pools {
            Pools::Sqlite { readers, .. } => {
                sqlx::query_as(
                    "SELECT id, received_at, channel, format, publisher, sender, control_id, location, reason, content \
                 FROM rejected_inputs ORDER BY id DESC LIMIT ?",
                )
                .bind(limit)
                .fetch_all(readers)
                .await?
            }
            Pools::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT id, received_at, channel, format, publisher, sender, control_id, location, reason, content \
                 FROM rejected_inputs ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows.into_iter().map(RejectedInput::from).collect())
    }

    /// Forget a refused input (it has been replayed and filed).
    pub async fn delete_rejected(&self, id: i64) -> Result<(), StoreError> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => {
                sqlx::query("DELETE FROM rejected_inputs WHERE id = ?").bind(id).execute(writer).await?;
            }
            Pools::Postgres(pool) => {
                sqlx::query("DELETE FROM rejected_inputs WHERE id = $1").bind(id).execute(pool).await?;
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { readers, writer, .. } => {
                readers.close().await;
                if let Ok(mut connection) = writer.acquire().await {
                    let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut *connection).await;
                }
                writer.close().await;
            }
            Pools::Postgres(pool) => pool.close().await,
        }
    }

    fn dialect(&self) -> Dialect {
        match self.pools {
            Pools::Sqlite { .. } => Dialect::Sqlite,
            Pools::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// Run `$body` with `$conn` bound to a pooled reader connection of either dialect.
macro_rules! with_reader {
    ($store:expr, |$conn:ident| $body:expr) => {{
        $store.operations.inc();
        match &$store.pools {
            Pools::Sqlite { readers, .. } => {
                let mut pooled = readers.acquire().await?;
                let $conn: &mut dyn SqlConn = &mut *pooled;
                $body
            }
            Pools::Postgres(pool) => {
                let mut pooled = pool.acquire().await?;
                let $conn: &mut dyn SqlConn = &mut *pooled;
                $body
            }
        }
    }};
}

fn to_version(row: VersionRow) -> Result<StoredVersion, StoreError> {
    let resource_type = ResourceType::parse(&row.resource_type)
        .map_err(|e| StoreError::Internal(anyhow::anyhow!("stored row has an unknown resource type: {e}")))?;
    Ok(StoredVersion {
        key: row.res_key,
        resource_type,
        id: row.id,
        version_id: row.version_id,
        last_updated: row.last_updated,
        deleted: row.deleted,
        method: WriteMethod::from_code(&row.method),
        content: row.content.map(bytes::Bytes::from),
        sequence: row.sequence,
        source_org: row.source_org,
    })
}

async fn fetch(conn: &mut dyn SqlConn, query: CompiledQuery<'_>) -> Result<Vec<StoredVersion>, StoreError> {
    conn.fetch_versions(&query.sql, &query.binds).await?.into_iter().map(to_version).collect()
}

async fn read_current(
    conn: &mut dyn SqlConn,
    resource_type: ResourceType,
    id: &str,
    lock: bool,
) -> Result<Option<StoredVersion>, StoreError> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM resources r WHERE r.resource_type = $1 AND r.id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let rows = conn.fetch_versions(&sql, &[Bind::Text(resource_type.as_str()), Bind::Text(id)]).await?;
    rows.into_iter().next().map(to_version).transpose()
}

async fn search(conn: &mut dyn SqlConn, query: &SearchQuery) -> Result<SearchPage, StoreError> {
    let dialect = conn.dialect();
    let page = query.compile_page(dialect);
    let mut rows = conn.fetch_versions(&page.sql, &page.binds).await?;
    let backward = query.position.as_ref().is_some_and(|p| p.backward);
    let beyond = rows.len() > query.count;
    rows.truncate(query.count);
    if backward {
        rows.reverse();
    }
    let mut positions = Vec::with_capacity(rows.len());
    let mut matches = Vec::with_capacity(rows.len());
    for mut row in rows {
        let values = query.sort.iter().enumerate().map(|(index, key)| row.sort_value(index, key.value_type())).collect();
        positions.push(Position { values, key: row.res_key, backward: false });
        matches.push(to_version(row)?);
    }
    let total = match query.total {
        TotalMode::None => None,
        // The first page holding every match counts itself.
        TotalMode::Accurate if query.position.is_none() && !beyond => Some(matches.len() as i64),
        TotalMode::Accurate => {
            let count = query.compile_count(dialect);
            Some(conn.fetch_optional_i64(&count.sql, &count.binds).await?.unwrap_or(0))
        }
    };
    let included = include(conn, query, &matches).await?;
    Ok(SearchPage {
        matches,
        included,
        total,
        more_after: if backward { true } else { beyond },
        more_before: if backward { beyond } else { query.position.is_some() },
        first: positions.first().cloned(),
        last: positions.last().cloned(),
    })
}

/// `_include` and `_revinclude`: the plain ones from the page, the `:iterate` ones again from
/// what they added, until nothing new comes or [`MAX_INCLUDED`] is reached. The consent scope
/// narrows these too: an included resource leaves like a match.
async fn include(conn: &mut dyn SqlConn, query: &SearchQuery, matches: &[StoredVersion]) -> Result<Vec<StoredVersion>, StoreError> {
    if query.includes.is_empty() || matches.is_empty() {
        return Ok(Vec::new());
    }
    let dialect = conn.dialect();
    let mut seen: std::collections::HashSet<i64> = matches.iter().map(|m| m.key).collect();
    let mut included: Vec<StoredVersion> = Vec::new();
    let mut frontier: Vec<&StoredVersion> = matches.iter().collect();
    let mut found: Vec<StoredVersion> = Vec::new();
    let mut first_round = true;
    while !frontier.is_empty() && included.len() < MAX_INCLUDED {
        for include in query.includes.iter().filter(|i| first_round || i.iterate) {
            let sources: Vec<i64> = if include.reverse {
                frontier.iter().map(|v| v.key).collect()
            } else {
                frontier.iter().filter(|v| v.resource_type == include.source_type).map(|v| v.key).collect()
            };
            if sources.is_empty() {
                continue;
            }
            let compiled = include.compile(dialect, &sources, query.access.as_deref());
            for version in fetch(conn, compiled).await? {
                if seen.insert(version.key) {
                    found.push(version);
                }
            }
        }
        first_round = false;
        let start = included.len();
        included.append(&mut found);
        included.truncate(MAX_INCLUDED);
        frontier = included[start..].iter().collect();
        if !query.includes.iter().any(|i| i.iterate) {
            break;
        }
    }
    Ok(included)
}

/// A record ready to append.
struct ChainedRecord {
    seq: i64,
    recorded: i64,
    event: String,
    previous: String,
    hash: String,
    /// JSON array of the patient ids the record is about.
    patients: String,
}

/// Number and hash `events` after `head`; returns them and the new head.
fn chain(
    key: &crate::audit::AuditKey,
    head: &(i64, String),
    events: &[(String, i64, Vec<String>)],
) -> Result<(Vec<ChainedRecord>, (i64, String)), StoreError> {
    let (mut seq, mut previous) = head.clone();
    let mut records = Vec::with_capacity(events.len());
    for (event, recorded, patients) in events {
        seq += 1;
        let hash = crate::audit::chain_hash(key, &previous, seq, *recorded, event);
        let patients = serde_json::to_string(patients).map_err(|e| StoreError::Internal(e.into()))?;
        records.push(ChainedRecord {
            seq,
            recorded: *recorded,
            event: event.clone(),
            previous: std::mem::replace(&mut previous, hash.clone()),
            hash,
            patients,
        });
    }
    Ok((records, (seq, previous)))
}

/// Derive the access rows of resources stored before migrations 0005 (relationships, wishes,
/// security contexts) and 0006 (document entries), once each, marked as done.
async fn backfill_access_rows(conn: &mut dyn SqlConn) -> Result<(), StoreError> {
    let types = "'Patient', 'Encounter', 'EpisodeOfCare', 'ServiceRequest', 'Consent', 'Binary'";
    backfill(conn, "access-rows-1", types, |row, value| {
        let directives = if row.resource_type == "Consent" {
            consent::directives::directive_rows(value).unwrap_or_else(|error| {
                // Stored before writes were checked: it names no stored patient, so it
                // cannot be enforced. Said loudly, so the publisher can be asked to fix it.
                tracing::warn!(consent = %row.id, %error, "a patient-privacy Consent cannot be read as a sharing wish");
                Vec::new()
            })
        } else {
            Vec::new()
        };
        super::AccessRows {
            relationships: consent::relationships::relationship_rows(&row.resource_type, &row.id, value),
            directives,
            security_context: consent::access::security_context(&row.resource_type, value),
            document_entries: Vec::new(),
        }
    })
    .await?;
    backfill(conn, "document-entries-1", "'Composition'", |row, value| super::AccessRows {
        document_entries: consent::access::document_entries(&row.resource_type, value),
        ..Default::default()
    })
    .await
}

/// Derive rows for the current resources of `types` (SQL literals) unless `marker` says it was
/// done; then mark it.
async fn backfill(
    conn: &mut dyn SqlConn,
    marker: &str,
    types: &str,
    derive: impl Fn(&VersionRow, &serde_json::Value) -> super::AccessRows,
) -> Result<(), StoreError> {
    let done = conn.fetch_optional_i64("SELECT CAST(1 AS BIGINT) FROM store_markers WHERE name = $1", &[Bind::Text(marker)]).await?;
    if done.is_some() {
        return Ok(());
    }
    let mut after = 0i64;
    loop {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM resources r WHERE r.deleted = FALSE AND r.res_key > $1 AND r.resource_type IN ({types}) \
             ORDER BY r.res_key LIMIT 2000"
        );
        let rows = conn.fetch_versions(&sql, &[Bind::Int(after)]).await?;
        let Some(last) = rows.last() else { break };
        after = last.res_key;
        let derived: Vec<(i64, super::AccessRows)> = rows
            .iter()
            .filter_map(|row| {
                let value: serde_json::Value = serde_json::from_str(row.content.as_deref()?).ok()?;
                Some((row.res_key, derive(row, &value)))
            })
            .collect();
        insert_access_rows(conn, derived.iter().map(|(key, rows)| (*key, rows))).await?;
    }
    conn.execute("INSERT INTO store_markers (name) VALUES ($1)", &[Bind::Text(marker)]).await?;
    Ok(())
}

/// Relationships and directives of patients, for `consent::decide`.
async fn patient_facts(conn: &mut dyn SqlConn, patient_ids: &[String]) -> Result<Vec<consent::PatientFacts>, StoreError> {
    use consent::access::Relationship;
    use consent::directives::{DirectiveRow, Effect};
    use consent::relationships::RelationshipKind;
    let dialect = conn.dialect();
    let mut query = CompiledQuery::new(dialect);
    query.push("SELECT patient_id, kind, org_ods, org_id, ends FROM care_relationships WHERE patient_id IN (");
    query.push_list(patient_ids.iter().map(|id| Bind::Text(id))).push(")");
    let relationships = conn.fetch_relationships(&query.sql, &query.binds).await?;
    // The ODS codes of the Organizations named by id.
    let org_ids: std::collections::BTreeSet<&str> = relationships.iter().filter_map(|r| r.org_id.as_deref()).collect();
    let mut ods_of: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    if !org_ids.is_empty() {
        let mut query = CompiledQuery::new(dialect);
        query.push(
            "SELECT o.id, x.code FROM resources o JOIN token_index x ON x.res_key = o.res_key WHERE o.resource_type = 'Organization' \
             AND x.resource_type = 'Organization' AND x.param = 'identifier' AND x.system = ",
        );
        query.push_name_text(fhir_models::system::ODS_ORGANIZATION_CODE).push(" AND x.code IS NOT NULL AND o.id IN (");
        query.push_list(org_ids.iter().map(|id| Bind::Text(id))).push(")");
        for (id, ods) in conn.fetch_pairs(&query.sql, &query.binds).await? {
            ods_of.entry(id).or_default().push(ods);
        }
    }
    let mut query = CompiledQuery::new(dialect);
    query.push(
        "SELECT res_key, patient_id, rule, effect, recipient, source, class, label, purpose, starts, ends FROM consent_directives \
         WHERE patient_id IN (",
    );
    query.push_list(patient_ids.iter().map(|id| Bind::Text(id))).push(")");
    let directives = conn.fetch_directives(&query.sql, &query.binds).await?;
    let mut facts: Vec<consent::PatientFacts> =
        patient_ids.iter().map(|id| consent::PatientFacts { id: id.clone(), ..Default::default() }).collect();
    fn slot<'f>(facts: &'f mut [consent::PatientFacts], patient_id: &str) -> Option<&'f mut consent::PatientFacts> {
        facts.iter_mut().find(|f| f.id == patient_id)
    }
    for record in relationships {
        let Some(kind) = RelationshipKind::parse(&record.kind) else { continue };
        let orgs = match (record.org_ods, record.org_id) {
            (Some(ods), _) => vec![ods],
            (None, Some(id)) => ods_of.get(&id).cloned().unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        if let Some(entry) = slot(&mut facts, &record.patient_id) {
            entry.relationships.push(Relationship { kind, orgs, ends: record.ends });
        }
    }
    for record in directives {
        let Some(effect) = Effect::parse(&record.effect) else { continue };
        let row = DirectiveRow {
            patient_id: record.patient_id,
            rule: record.rule,
            effect,
            recipient: record.recipient,
            source: record.source,
            class: record.class,
            label: record.label,
            purpose: record.purpose,
            starts: record.starts,
            ends: record.ends,
        };
        if let Some(entry) = slot(&mut facts, &row.patient_id) {
            entry.directives.push((record.res_key, row));
        }
    }
    Ok(facts)
}

/// The most resources `_include` and `_revinclude` add to one page.
const MAX_INCLUDED: usize = 1000;

#[async_trait]
impl FhirStore for SqlStore {
    async fn read(&self, resource_type: ResourceType, id: &str) -> Result<Option<StoredVersion>, StoreError> {
        with_reader!(self, |conn| read_current(conn, resource_type, id, false).await)
    }

    async fn vread(&self, resource_type: ResourceType, id: &str, version_id: i64) -> Result<Option<StoredVersion>, StoreError> {
        let sql = format!("SELECT {HISTORY_COLUMNS} WHERE r.resource_type = $1 AND r.id = $2 AND r.version_id = $3");
        let binds = [Bind::Text(resource_type.as_str()), Bind::Text(id), Bind::Int(version_id)];
        with_reader!(self, |conn| {
            let rows = conn.fetch_versions(&sql, &binds).await?;
            rows.into_iter().next().map(to_version).transpose()
        })
    }

    async fn history(
        &self,
        scope: &HistoryScope,
        count: usize,
        before_sequence: Option<i64>,
        since: Option<i64>,
        published_by: Option<&str>,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        with_reader!(self, |conn| {
            let dialect = conn.dialect();
            fetch(conn, scope.compile(dialect, count + 1, before_sequence, since, published_by)).await
        })
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        with_reader!(self, |conn| search(conn, query).await)
    }

    async fn compartment(
        &self,
        query: &super::CompartmentQuery,
        with_total: bool,
    ) -> Result<(Vec<StoredVersion>, Option<i64>), StoreError> {
        with_reader!(self, |conn| {
            let dialect = conn.dialect();
            let page = fetch(conn, query.compile(dialect, false)).await?;
            let total = match with_total {
                true => {
                    let count = query.compile(dialect, true);
                    Some(conn.fetch_optional_i64(&count.sql, &count.binds).await?.unwrap_or(0))
                }
                false => None,
            };
            Ok((page, total))
        })
    }

    async fn patient_facts(&self, patient_ids: &[String]) -> Result<Vec<consent::PatientFacts>, StoreError> {
        if patient_ids.is_empty() {
            return Ok(Vec::new());
        }
        with_reader!(self, |conn| patient_facts(conn, patient_ids).await)
    }

    async fn published_for(&self, patient_ids: &[String], org: &str) -> Result<bool, StoreError> {
        if patient_ids.is_empty() {
            return Ok(false);
        }
        let mut query = CompiledQuery::new(self.dialect());
        query.push("SELECT CAST(1 AS BIGINT) FROM patient_compartment c JOIN resources r ON r.res_key = c.res_key WHERE c.patient_id IN (");
        query.push_list(patient_ids.iter().map(|id| Bind::Text(id))).push(") AND r.deleted = FALSE AND r.source_org = ");
        query.push_bind(Bind::Text(org)).push(" LIMIT 1");
        with_reader!(self, |conn| Ok(conn.fetch_optional_i64(&query.sql, &query.binds).await?.is_some()))
    }

    async fn begin(&self) -> Result<Box<dyn StoreTransaction>, StoreError> {
        self.operations.inc();
        let transaction = match &self.pools {
            // IMMEDIATE takes the write lock up front, so a transaction that reads then writes
            // cannot deadlock against another.
            Pools::Sqlite { writer, .. } => OpenTransaction::Sqlite(writer.begin_with("BEGIN IMMEDIATE").await?),
            Pools::Postgres(pool) => OpenTransaction::Postgres(pool.begin().await?),
        };
        Ok(Box::new(SqlTransaction { transaction, dialect: self.dialect(), pending: Vec::new(), written: Vec::new() }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        with_reader!(self, |conn| {
            conn.fetch_optional_i64("SELECT CAST(1 AS BIGINT)", &[]).await?;
            Ok(())
        })
    }

    fn backend(&self) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

impl SqlStore {
    /// Append audit events to the chain after `head` (the last record's sequence number and
    /// hash, as this writer last wrote or read it), as one INSERT — one round trip, committed
    /// durably on its own: each event gets the next sequence number (its FHIR id) and a hash over
    /// the previous record's; the table's trigger moves `audit_head` and fills the patients'
    /// index. When another writer extended the chain first, the sequence numbers collide, the
    /// INSERT changes nothing, and this starts again from the head as it now is. Returns the new
    /// head. (Not counted in `hie_store_operations_total`, which shows the data requests reach.)
    pub async fn append_audit(
        &self,
        key: &crate::audit::AuditKey,
        head: Option<(i64, String)>,
        events: &[(String, i64, Vec<String>)],
    ) -> Result<(i64, String), StoreError> {
        let mut head = match head {
            Some(head) => head,
            None => self.audit_head().await?,
        };
        // Another instance extending the chain between our head and our insert makes the
        // sequence numbers collide; under load that can happen several times in a row.
        const ATTEMPTS: u32 = 32;
        for attempt in 0..ATTEMPTS {
            let (records, next) = chain(key, &head, events)?;
            let mut insert = bulk_insert_in(
                self.dialect(),
                "audit_log",
                &["seq", "recorded", "event", "previous", "hash", "patients"],
                &records,
                |record| {
                    vec![
                        Bind::Int(record.seq),
                        Bind::Int(record.recorded),
                        Bind::Text(&record.event),
                        Bind::Text(&record.previous),
                        Bind::Text(&record.hash),
                        Bind::Text(&record.patients),
                    ]
                },
                &[usize::MAX],
            );
            let insert = insert.pop().ok_or_else(|| StoreError::Internal(anyhow::anyhow!("no audit events to append")))?;
            let result = match &self.pools {
                Pools::Sqlite { writer, .. } => writer.acquire().await?.execute(&insert.sql, &insert.binds).await,
                Pools::Postgres(pool) => pool.acquire().await?.execute(&insert.sql, &insert.binds).await,
            };
            match result.map_err(StoreError::from) {
                Ok(_) => return Ok(next),
                Err(StoreError::Conflict(_)) if attempt + 1 < ATTEMPTS => {
                    // Out of step with the other writer, not in lockstep with it.
                    tokio::time::sleep(std::time::Duration::from_millis(u64::from(1 + attempt % 4))).await;
                    head = self.audit_head().await?;
                }
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Conflict("other writers kept extending the audit trail; try again".into()))
    }

    /// Records of the trail after a sequence number, in order.
    pub async fn audit_records(&self, after: i64, limit: i64) -> Result<Vec<crate::audit::AuditRecord>, StoreError> {
        let sql = "SELECT seq, recorded, event, previous, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2";
        let rows = with_reader!(self, |conn| Ok::<_, StoreError>(conn.fetch_audit(sql, &[Bind::Int(after), Bind::Int(limit)]).await?))?;
        Ok(rows.into_iter().map(AuditRow::into_record).collect())
    }

    /// `(seq, patient_id)` of the patient index rows of records `after < seq <= through`.
    pub async fn audit_patient_rows(&self, after: i64, through: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let sql = "SELECT seq, patient_id FROM audit_patients WHERE seq > $1 AND seq <= $2";
        with_reader!(self, |conn| Ok(conn.fetch_int_text(sql, &[Bind::Int(after), Bind::Int(through)]).await?))
    }

    /// The last record the chain's head names.
    pub async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        let rows = with_reader!(self, |conn| Ok::<_, StoreError>(
            conn.fetch_int_text("SELECT seq, hash FROM audit_head WHERE id = 1", &[]).await?
        ))?;
        rows.into_iter().next().ok_or_else(|| StoreError::Internal(anyhow::anyhow!("the audit trail has no head")))
    }

    /// Records about these patients, newest first, below a sequence number.
    pub async fn audit_for_patients(
        &self,
        patient_ids: &[String],
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<crate::audit::AuditRecord>, StoreError> {
        if patient_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = CompiledQuery::new(self.dialect());
        query.push(
            "SELECT l.seq, l.recorded, l.event, l.previous, l.hash FROM audit_log l \
             WHERE l.seq IN (SELECT p.seq FROM audit_patients p WHERE p.patient_id IN (",
        );
        query.push_list(patient_ids.iter().map(|id| Bind::Text(id))).push("))");
        if let Some(before) = before {
            query.push(" AND l.seq < ").push_bind(Bind::Int(before));
        }
        query.push(" ORDER BY l.seq DESC LIMIT ").push_bind(Bind::Int(limit));
        let rows = with_reader!(self, |conn| Ok::<_, StoreError>(conn.fetch_audit(&query.sql, &query.binds).await?))?;
        Ok(rows.into_iter().map(AuditRow::into_record).collect())
    }
}

/// The channel other instances' caches listen on; PostgreSQL caps a payload below 8,000 bytes.
const CACHE_CHANNEL: &str = "hie_cache";
const MAX_NOTIFY_PAYLOAD: usize = 7_000;

impl SqlStore {
    /// Background work: SQLite WAL checkpoints, and, with a read cache, keeping it told of writes
    /// this process cannot see itself (other instances' commits announced by PostgreSQL, or
    /// another process writing the SQLite file).
    pub fn start_background_tasks(&self, cache: Option<std::sync::Arc<super::ReadCache>>) {
        if let Pools::Sqlite { connect, .. } = &self.pools {
            let connect = SqliteConnectOptions::clone(connect);
            tokio::spawn(async move {
                use sqlx::ConnectOptions;
                let Ok(mut connection) = connect.connect().await else {
                    tracing::warn!("no checkpoint connection: the SQLite WAL grows until restart");
                    return;
                };
                let mut ticks = tokio::time::interval(Duration::from_millis(500));
                loop {
                    ticks.tick().await;
                    // PASSIVE never blocks readers or the writer.
                    if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut connection).await {
                        tracing::debug!(%error, "WAL checkpoint skipped");
                    }
                }
            });
        }
        let Some(cache) = cache else { return };
        match &self.pools {
            Pools::Postgres(pool) => {
                let pool = pool.clone();
                tokio::spawn(async move {
                    loop {
                        match sqlx::postgres::PgListener::connect_with(&pool).await {
                            Ok(mut listener) => {
                                if listener.listen(CACHE_CHANNEL).await.is_err() {
                                    cache.set_trusted(false);
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                    continue;
                                }
                                cache.set_trusted(true);
                                // `None`: the connection dropped, and notifications may be lost.
                                while let Ok(Some(notification)) = listener.try_recv().await {
                                    cache.apply_notification(notification.payload());
                                }
                                tracing::warn!("cache notifications interrupted: the read cache is bypassed until they resume");
                                cache.set_trusted(false);
                            }
                            Err(_) => {
                                cache.set_trusted(false);
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                });
            }
            Pools::Sqlite { writer, .. } => {
                let writer = writer.clone();
                tokio::spawn(async move {
                    let mut seen: Option<i64> = None;
                    let mut ticks = tokio::time::interval(Duration::from_millis(250));
                    loop {
                        ticks.tick().await;
                        // Skip a tick rather than queue behind a long write.
                        let Some(mut connection) = writer.try_acquire() else { continue };
                        let Ok(version) = sqlx::query_scalar::<_, i64>("PRAGMA data_version").fetch_one(&mut *connection).await else {
                            continue;
                        };
                        if seen.is_some_and(|previous| previous != version) {
                            tracing::info!("another process wrote the database: the read cache is emptied");
                            cache.invalidate_all();
                        }
                        seen = Some(version);
                    }
                });
            }
        }
    }
}

enum OpenTransaction {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

struct SqlTransaction {
    transaction: OpenTransaction,
    dialect: Dialect,
    /// Versions written but not yet sent: sent in bulk before the next read and at commit.
    pending: Vec<NewVersion>,
    /// `Type/id` of everything written, announced to other instances' caches on commit.
    written: Vec<String>,
}

impl SqlTransaction {
    fn conn(&mut self) -> &mut dyn SqlConn {
        match &mut self.transaction {
            OpenTransaction::Sqlite(transaction) => &mut **transaction,
            OpenTransaction::Postgres(transaction) => &mut **transaction,
        }
    }

    /// Send pending writes, so that what follows reads them.
    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        write_versions(self.conn(), &pending).await
    }
}

#[async_trait]
impl StoreTransaction for SqlTransaction {
    async fn read_for_update(&mut self, resource_type: ResourceType, id: &str) -> Result<Option<StoredVersion>, StoreError> {
        // SQLite's IMMEDIATE transaction already excludes other writers.
        let lock = self.dialect == Dialect::Postgres;
        self.flush().await?;
        read_current(self.conn(), resource_type, id, lock).await
    }

    async fn lock_condition(&mut self, condition: &str) -> Result<(), StoreError> {
        if self.dialect == Dialect::Postgres {
            let digest = ring::digest::digest(&ring::digest::SHA256, condition.as_bytes());
            let key = i64::from_be_bytes(digest.as_ref()[..8].try_into().expect("a SHA-256 digest has 8 bytes"));
            self.conn().execute("SELECT pg_advisory_xact_lock($1)", &[Bind::Int(key)]).await?;
        }
        Ok(())
    }

    async fn search(&mut self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        self.flush().await?;
        search(self.conn(), query).await
    }

    async fn write(&mut self, version: NewVersion) -> Result<(), StoreError> {
        self.written.push(format!("{}/{}", version.resource_type, version.id));
        self.pending.push(version);
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.flush().await?;
        if self.dialect == Dialect::Postgres && !self.written.is_empty() {
            // Delivered to listeners only if, and when, the transaction commits.
            let payload = self.written.join("\n");
            let payload = if payload.len() > MAX_NOTIFY_PAYLOAD { "*".to_owned() } else { payload };
            self.conn().execute("SELECT pg_notify($1, $2)", &[Bind::Text(CACHE_CHANNEL), Bind::Owned(payload)]).await?;
        }
        match self.transaction {
            OpenTransaction::Sqlite(transaction) => transaction.commit().await?,
            OpenTransaction::Postgres(transaction) => transaction.commit().await?,
        }
        Ok(())
    }
}

/// Persist versions: new resources with one bulk `INSERT … RETURNING`, updates and deletions one
/// by one, then every version row and every index row in bulk. A transaction of 250 new
/// resources is a dozen statements, not three thousand.
async fn write_versions(conn: &mut dyn SqlConn, versions: &[NewVersion]) -> Result<(), StoreError> {
    let mut keys = vec![0i64; versions.len()];
    let creates: Vec<&NewVersion> = versions.iter().filter(|version| version.method == WriteMethod::Create).collect();
    let statements = bulk_insert(
        conn.dialect(),
        "resources",
        &["resource_type", "id", "version_id", "last_updated", "deleted", "method", "source_org", "content"],
        &creates,
        |version| {
            vec![
                Bind::Text(version.resource_type.as_str()),
                Bind::Text(&version.id),
                Bind::Int(version.version_id),
                Bind::Int(version.last_updated),
                Bind::Bool(version.content.is_none()),
                Bind::Text(version.method.code()),
                Bind::OptText(version.source_org.as_deref()),
                Bind::OptText(version.content.as_deref()),
            ]
        },
    );
    let mut created: std::collections::HashMap<(String, String), i64> = std::collections::HashMap::with_capacity(creates.len());
    for mut insert in statements {
        insert.push(" RETURNING res_key, resource_type, id");
        for (key, resource_type, id) in conn.fetch_keys(&insert.sql, &insert.binds).await? {
            created.insert((resource_type, id), key);
        }
    }
    for (i, version) in versions.iter().enumerate() {
        keys[i] = if version.method == WriteMethod::Create {
            *created
                .get(&(version.resource_type.as_str().to_owned(), version.id.clone()))
                .ok_or_else(|| StoreError::Internal(anyhow::anyhow!("INSERT … RETURNING missed a row")))?
        } else {
            upsert_current(conn, version).await?
        };
    }
    let rows: Vec<(i64, &NewVersion)> = keys.iter().copied().zip(versions).collect();
    insert_all(
        conn,
        "resource_versions",
        &["res_key", "resource_type", "id", "version_id", "last_updated", "deleted", "method", "source_org", "content"],
        &rows,
        |(key, version)| {
            vec![
                Bind::Int(*key),
                Bind::Text(version.resource_type.as_str()),
                Bind::Text(&version.id),
                Bind::Int(version.version_id),
                Bind::Int(version.last_updated),
                Bind::Bool(version.content.is_none()),
                Bind::Text(version.method.code()),
                Bind::OptText(version.source_org.as_deref()),
                // The current version's JSON lives in `resources`; it moves here when superseded.
                Bind::OptText(None),
            ]
        },
    )
    .await?;
    insert_index(conn, &rows).await
}

/// Write the current-version row of an update or deletion; returns the resource's key. Its old
/// index rows are removed (the caller inserts the new ones).
async fn upsert_current(conn: &mut dyn SqlConn, version: &NewVersion) -> Result<i64, StoreError> {
    let resource_type = version.resource_type.as_str();
    let existing = conn
        .fetch_optional_i64(
            "SELECT res_key FROM resources WHERE resource_type = $1 AND id = $2",
            &[Bind::Text(resource_type), Bind::Text(&version.id)],
        )
        .await?;
    let current = [
        Bind::Int(version.version_id),
        Bind::Int(version.last_updated),
        Bind::Bool(version.content.is_none()),
        Bind::Text(version.method.code()),
        Bind::OptText(version.source_org.as_deref()),
        Bind::OptText(version.content.as_deref()),
    ];
    match existing {
        Some(res_key) => {
            // The superseded version keeps its JSON in its own row from now on.
            conn.execute(
                "UPDATE resource_versions SET content = (SELECT content FROM resources WHERE res_key = $1) \
                 WHERE res_key = $2 AND version_id = (SELECT version_id FROM resources WHERE res_key = $3)",
                &[Bind::Int(res_key), Bind::Int(res_key), Bind::Int(res_key)],
            )
            .await?;
            let mut binds = current.to_vec();
            binds.push(Bind::Int(res_key));
            conn.execute(
                "UPDATE resources SET version_id = $1, last_updated = $2, deleted = $3, method = $4, source_org = $5, content = $6 \
                 WHERE res_key = $7",
                &binds,
            )
            .await?;
            for table in INDEX_TABLES {
                conn.execute(&format!("DELETE FROM {table} WHERE res_key = $1"), &[Bind::Int(res_key)]).await?;
            }
            Ok(res_key)
        }
        None => {
            let mut binds = vec![Bind::Text(resource_type), Bind::Text(&version.id)];
            binds.extend(current);
            conn.fetch_optional_i64(
                "INSERT INTO resources (resource_type, id, version_id, last_updated, deleted, method, source_org, content) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING res_key",
                &binds,
            )
            .await?
            .ok_or_else(|| StoreError::Internal(anyhow::anyhow!("INSERT … RETURNING gave no key")))
        }
    }
}

const INDEX_TABLES: [&str; 13] = [
    "token_index",
    "string_index",
    "date_index",
    "number_index",
    "quantity_index",
    "uri_index",
    "reference_index",
    "composite_index",
    "patient_compartment",
    "care_relationships",
    "consent_directives",
    "security_contexts",
    "document_entries",
];

/// SQLite: rows per multi-row `INSERT` come in a few fixed sizes, so that the prepared statements
/// are reused from the statement cache rather than compiled anew for every row count.
const SQLITE_CHUNKS: [usize; 4] = [256, 32, 4, 1];

/// The statements that insert `rows` into `table`: on PostgreSQL one `INSERT … SELECT FROM
/// UNNEST(…)` with a typed array per column (the same text whatever the row count); on SQLite
/// multi-row `VALUES` lists in fixed chunk sizes.
fn bulk_insert<'a, T>(
    dialect: Dialect,
    table: &str,
    columns: &[&str],
    rows: &'a [T],
    values: impl Fn(&'a T) -> Vec<Bind<'a>>,
) -> Vec<CompiledQuery<'a>> {
    bulk_insert_in(dialect, table, columns, rows, values, &SQLITE_CHUNKS)
}

/// As [`bulk_insert`], with SQLite's statements holding up to the first of `chunks` rows each
/// (`[usize::MAX]`: one statement, for a commit where round trips cost more than compiling).
fn bulk_insert_in<'a, T>(
    dialect: Dialect,
    table: &str,
    columns: &[&str],
    rows: &'a [T],
    values: impl Fn(&'a T) -> Vec<Bind<'a>>,
    chunks: &[usize],
) -> Vec<CompiledQuery<'a>> {
    if rows.is_empty() {
        return Vec::new();
    }
    let head = format!("INSERT INTO {table} ({}) ", columns.join(", "));
    match dialect {
        Dialect::Postgres => {
            let mut arrays: Vec<Vec<Bind<'a>>> = (0..columns.len()).map(|_| Vec::with_capacity(rows.len())).collect();
            for row in rows {
                for (column, value) in values(row).into_iter().enumerate() {
                    arrays[column].push(value);
                }
            }
            let mut query = CompiledQuery::new(dialect);
            query.push(&head).push("SELECT * FROM UNNEST(");
            for (column, array) in arrays.into_iter().enumerate() {
                if column > 0 {
                    query.push(", ");
                }
                let array_type = array.first().map_or("text[]", Bind::array_type);
                query.push_bind(Bind::Array(array)).push("::").push(array_type);
            }
            query.push(")");
            vec![query]
        }
        Dialect::Sqlite => {
            let mut statements = Vec::new();
            let mut remaining = rows;
            while !remaining.is_empty() {
                let size = chunks.iter().copied().find(|size| *size <= remaining.len()).unwrap_or(remaining.len());
                let (chunk, rest) = remaining.split_at(size);
                remaining = rest;
                let mut query = CompiledQuery::new(dialect);
                query.push(&head).push("VALUES ");
                for (row_number, row) in chunk.iter().enumerate() {
                    query.push(if row_number == 0 { "(" } else { ", (" });
                    for (column, value) in values(row).into_iter().enumerate() {
                        if column > 0 {
                            query.push(", ");
                        }
                        query.push_bind(value);
                    }
                    query.push(")");
                }
                statements.push(query);
            }
            statements
        }
    }
}

async fn insert_all<'a, T>(
    conn: &mut dyn SqlConn,
    table: &str,
    columns: &[&str],
    rows: &'a [T],
    values: impl Fn(&'a T) -> Vec<Bind<'a>> + Copy,
) -> Result<(), StoreError> {
    for insert in bulk_insert(conn.dialect(), table, columns, rows, values) {
        conn.execute(&insert.sql, &insert.binds).await?;
    }
    Ok(())
}

/// Every index row of the versions, table by table.
async fn insert_index(conn: &mut dyn SqlConn, versions: &[(i64, &NewVersion)]) -> Result<(), StoreError> {
    /// `(res_key, seq, resource_type, entry)` for every entry `pick` takes from each version.
    fn rows<'a, T>(versions: &[(i64, &'a NewVersion)], pick: impl Fn(&'a IndexEntries) -> &'a [T]) -> Vec<(i64, i64, &'a str, &'a T)> {
        versions
            .iter()
            .filter_map(|(key, version)| version.index.as_ref().map(|index| (*key, version.resource_type.as_str(), index)))
            .flat_map(|(key, resource_type, index)| {
                pick(index).iter().enumerate().map(move |(seq, entry)| (key, seq as i64, resource_type, entry))
            })
            .collect()
    }
    insert_all(
        conn,
        "token_index",
        &["res_key", "seq", "resource_type", "param", "system", "code", "text"],
        &rows(versions, |i| &i.tokens),
        |(k, n, t, e)| {
            vec![
                Bind::Int(*k),
                Bind::Int(*n),
                Bind::Text(t),
                Bind::Text(&e.param),
                Bind::OptText(e.system.as_deref()),
                Bind::OptText(e.code.as_deref()),
                Bind::OptText(e.text.as_deref()),
            ]
        },
    )
    .await?;
    insert_all(
        conn,
        "string_index",
        &["res_key", "seq", "resource_type", "param", "normalized", "exact"],
        &rows(versions, |i| &i.strings),
        |(k, n, t, e)| {
            vec![Bind::Int(*k), Bind::Int(*n), Bind::Text(t), Bind::Text(&e.param), Bind::Text(&e.normalized), Bind::Text(&e.exact)]
        },
    )
    .await?;
    insert_all(
        conn,
        "date_index",
        &["res_key", "seq", "resource_type", "param", "low", "high"],
        &rows(versions, |i| &i.dates),
        |(k, n, t, e)| vec![Bind::Int(*k), Bind::Int(*n), Bind::Text(t), Bind::Text(&e.param), Bind::Int(e.low), Bind::Int(e.high)],
    )
    .await?;
    insert_all(
        conn,
        "number_index",
        &["res_key", "seq", "resource_type", "param", "low", "high"],
        &rows(versions, |i| &i.numbers),
        |(k, n, t, e)| vec![Bind::Int(*k), Bind::Int(*n), Bind::Text(t), Bind::Text(&e.param), Bind::Real(e.low), Bind::Real(e.high)],
    )
    .await?;
    insert_all(
        conn,
        "quantity_index",
        &["res_key", "seq", "resource_type", "param", "system", "code", "unit", "low", "high"],
        &rows(versions, |i| &i.quantities),
        |(k, n, t, e)| {
            vec![
                Bind::Int(*k),
                Bind::Int(*n),
                Bind::Text(t),
                Bind::Text(&e.param),
                Bind::OptText(e.system.as_deref()),
                Bind::OptText(e.code.as_deref()),
                Bind::OptText(e.unit.as_deref()),
                Bind::Real(e.low),
                Bind::Real(e.high),
            ]
        },
    )
    .await?;
    insert_all(conn, "uri_index", &["res_key", "seq", "resource_type", "param", "uri"], &rows(versions, |i| &i.uris), |(k, n, t, e)| {
        vec![Bind::Int(*k), Bind::Int(*n), Bind::Text(t), Bind::Text(&e.param), Bind::Text(&e.uri)]
    })
    .await?;
    insert_all(
        conn,
        "reference_index",
        &["res_key", "seq", "resource_type", "param", "target_type", "target_id", "url", "identifier_system", "identifier_value"],
        &rows(versions, |i| &i.references),
        |(k, n, t, e)| {
            vec![
                Bind::Int(*k),
                Bind::Int(*n),
                Bind::Text(t),
                Bind::Text(&e.param),
                Bind::OptText(e.target_type.map(|t| t.as_str())),
                Bind::OptText(e.target_id.as_deref()),
                Bind::OptText(e.url.as_deref()),
                Bind::OptText(e.identifier_system.as_deref()),
                Bind::OptText(e.identifier_value.as_deref()),
            ]
        },
    )
    .await?;
    insert_all(
        conn,
        "composite_index",
        &["res_key", "seq", "resource_type", "param", "system", "code", "system2", "code2", "unit2", "low", "high"],
        &rows(versions, |i| &i.composites),
        |(k, n, t, e)| {
            vec![
                Bind::Int(*k),
                Bind::Int(*n),
                Bind::Text(t),
                Bind::Text(&e.param),
                Bind::OptText(e.system.as_deref()),
                Bind::OptText(e.code.as_deref()),
                Bind::OptText(e.system2.as_deref()),
                Bind::OptText(e.code2.as_deref()),
                Bind::OptText(e.unit2.as_deref()),
                Bind::Real(e.low),
                Bind::Real(e.high),
            ]
        },
    )
    .await?;
    insert_all(
        conn,
        "patient_compartment",
        &["res_key", "seq", "patient_id"],
        &rows(versions, |i| &i.patient_compartment),
        |(k, n, _, patient)| vec![Bind::Int(*k), Bind::Int(*n), Bind::Text(patient)],
    )
    .await?;
    insert_access_rows(conn, versions.iter().map(|(key, version)| (*key, &version.access))).await
}

/// The relationship and directive rows of versions (by store key).
pub(crate) async fn insert_access_rows<'a>(
    conn: &mut dyn SqlConn,
    versions: impl Iterator<Item = (i64, &'a super::AccessRows)>,
) -> Result<(), StoreError> {
    let versions: Vec<(i64, &super::AccessRows)> = versions.collect();
    let relationships: Vec<(i64, i64, &consent::relationships::RelationshipRow)> = versions
        .iter()
        .flat_map(|(key, rows)| rows.relationships.iter().enumerate().map(move |(seq, row)| (*key, seq as i64, row)))
        .collect();
    insert_all(
        conn,
        "care_relationships",
        &["res_key", "seq", "patient_id", "kind", "org_ods", "org_id", "ends"],
        &relationships,
        |(key, seq, row)| {
            use consent::relationships::OrgRef;
            let (ods, id) = match &row.organisation {
                OrgRef::Ods(ods) => (Some(ods.as_str()), None),
                OrgRef::Id(id) => (None, Some(id.as_str())),
            };
            vec![
                Bind::Int(*key),
                Bind::Int(*seq),
                Bind::Text(&row.patient_id),
                Bind::Text(row.kind.code()),
                Bind::OptText(ods),
                Bind::OptText(id),
                Bind::OptInt(row.ends),
            ]
        },
    )
    .await?;
    let contexts: Vec<(i64, Option<&(String, String)>)> =
        versions.iter().filter_map(|(key, rows)| rows.security_context.as_ref().map(|context| (*key, context.as_ref()))).collect();
    insert_all(conn, "security_contexts", &["res_key", "target_type", "target_id"], &contexts, |(key, target)| {
        vec![Bind::Int(*key), Bind::OptText(target.map(|(t, _)| t.as_str())), Bind::OptText(target.map(|(_, id)| id.as_str()))]
    })
    .await?;
    // (res_key, seq, the entry's target)
    type EntryRow<'a> = (i64, i64, Option<&'a (String, String)>);
    let entries: Vec<EntryRow<'_>> = versions
        .iter()
        .flat_map(|(key, rows)| rows.document_entries.iter().enumerate().map(move |(seq, entry)| (*key, seq as i64, entry.as_ref())))
        .collect();
    insert_all(conn, "document_entries", &["res_key", "seq", "target_type", "target_id"], &entries, |(key, seq, target)| {
        vec![
            Bind::Int(*key),
            Bind::Int(*seq),
            Bind::OptText(target.map(|(t, _)| t.as_str())),
            Bind::OptText(target.map(|(_, id)| id.as_str())),
        ]
    })
    .await?;
    let directives: Vec<(i64, i64, &consent::directives::DirectiveRow)> =
        versions.iter().flat_map(|(key, rows)| rows.directives.iter().enumerate().map(move |(seq, row)| (*key, seq as i64, row))).collect();
    insert_all(
        conn,
        "consent_directives",
        &["res_key", "seq", "patient_id", "rule", "effect", "recipient", "source", "class", "label", "purpose", "starts", "ends"],
        &directives,
        |(key, seq, row)| {
            vec![
                Bind::Int(*key),
                Bind::Int(*seq),
                Bind::Text(&row.patient_id),
                Bind::Int(row.rule),
                Bind::Text(row.effect.code()),
                Bind::OptText(row.recipient.as_deref()),
                Bind::OptText(row.source.as_deref()),
                Bind::OptText(row.class.as_deref()),
                Bind::OptText(row.label.as_deref()),
                Bind::OptText(row.purpose.as_deref()),
                Bind::OptInt(row.starts),
                Bind::OptInt(row.ends),
            ]
        },
    )
    .await
}
