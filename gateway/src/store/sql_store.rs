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

use super::connection::{Bind, SqlConn, VersionRow};
use super::query::{CompiledQuery, Dialect, HistoryScope, SearchQuery, VERSION_COLUMNS};
use super::{FhirStore, NewVersion, SearchPage, StoreError, StoreTransaction, StoredVersion, WriteMethod};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

enum Pools {
    /// SQLite allows one writer at a time: writes go through a single connection (so they
    /// queue in the pool instead of failing with SQLITE_BUSY), reads through several.
    Sqlite {
        readers: SqlitePool,
        writer: SqlitePool,
    },
    Postgres(PgPool),
}

pub struct SqlStore {
    pools: Pools,
}

/// Connection settings the store needs.
pub struct StoreOptions<'a> {
    pub url: &'a str,
    pub max_connections: Option<u32>,
    pub acquire_timeout: Duration,
}

impl SqlStore {
    /// Connect without migrating.
    pub async fn connect(options: &StoreOptions<'_>) -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
        if options.url.starts_with("postgres://") || options.url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(options.url).context("invalid PostgreSQL URL")?.application_name("hie-gateway");
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections.unwrap_or(cores * 4))
                .min_connections(1)
                .acquire_timeout(options.acquire_timeout)
                .test_before_acquire(false)
                .connect_with(connect)
                .await
                .context("failed to connect to PostgreSQL")?;
            return Ok(Self { pools: Pools::Postgres(pool) });
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
            .pragma("cache_size", "-32768");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // Writers queue for the one connection; waiting is better than refusing.
            .acquire_timeout(options.acquire_timeout.max(Duration::from_secs(30)))
            .connect_with(connect.clone())
            .await
            .with_context(|| format!("failed to open SQLite database {path}"))?;
        let readers = SqlitePoolOptions::new()
            .max_connections(options.max_connections.unwrap_or(cores * 2))
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(connect.read_only(true))
            .await
            .with_context(|| format!("failed to open SQLite database {path}"))?;
        Ok(Self { pools: Pools::Sqlite { readers, writer } })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => SQLITE_MIGRATIONS.run(writer).await.context("failed to migrate the SQLite database"),
            Pools::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await.context("failed to migrate the PostgreSQL database"),
        }
    }

    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { readers, writer } => {
                readers.close().await;
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
    ($store:expr, |$conn:ident| $body:expr) => {
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
    };
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
        content: row.content,
        sequence: row.sequence,
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
    let mut matches = fetch(conn, query.compile_page()).await?;
    let has_more = matches.len() > query.count;
    matches.truncate(query.count);
    let total = if query.include_total {
        let count = query.compile_count();
        Some(conn.fetch_optional_i64(&count.sql, &count.binds).await?.unwrap_or(0))
    } else {
        None
    };
    Ok(SearchPage { matches, total, has_more })
}

#[async_trait]
impl FhirStore for SqlStore {
    async fn read(&self, resource_type: ResourceType, id: &str) -> Result<Option<StoredVersion>, StoreError> {
        with_reader!(self, |conn| read_current(conn, resource_type, id, false).await)
    }

    async fn vread(&self, resource_type: ResourceType, id: &str, version_id: i64) -> Result<Option<StoredVersion>, StoreError> {
        let sql = "SELECT r.res_key, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.method, r.content, r.sequence \
                   FROM resource_versions r WHERE r.resource_type = $1 AND r.id = $2 AND r.version_id = $3";
        let binds = [Bind::Text(resource_type.as_str()), Bind::Text(id), Bind::Int(version_id)];
        with_reader!(self, |conn| {
            let rows = conn.fetch_versions(sql, &binds).await?;
            rows.into_iter().next().map(to_version).transpose()
        })
    }

    async fn history(
        &self,
        scope: &HistoryScope,
        count: usize,
        before_sequence: Option<i64>,
        since: Option<i64>,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        with_reader!(self, |conn| fetch(conn, scope.compile(count + 1, before_sequence, since)).await)
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        with_reader!(self, |conn| search(conn, query).await)
    }

    async fn begin(&self) -> Result<Box<dyn StoreTransaction>, StoreError> {
        let transaction = match &self.pools {
            // IMMEDIATE takes the write lock up front, so a transaction that reads then writes
            // cannot deadlock against another.
            Pools::Sqlite { writer, .. } => OpenTransaction::Sqlite(writer.begin_with("BEGIN IMMEDIATE").await?),
            Pools::Postgres(pool) => OpenTransaction::Postgres(pool.begin().await?),
        };
        Ok(Box::new(SqlTransaction { transaction, dialect: self.dialect() }))
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

enum OpenTransaction {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

struct SqlTransaction {
    transaction: OpenTransaction,
    dialect: Dialect,
}

impl SqlTransaction {
    fn conn(&mut self) -> &mut dyn SqlConn {
        match &mut self.transaction {
            OpenTransaction::Sqlite(transaction) => &mut **transaction,
            OpenTransaction::Postgres(transaction) => &mut **transaction,
        }
    }
}

#[async_trait]
impl StoreTransaction for SqlTransaction {
    async fn read_for_update(&mut self, resource_type: ResourceType, id: &str) -> Result<Option<StoredVersion>, StoreError> {
        // SQLite's IMMEDIATE transaction already excludes other writers.
        let lock = self.dialect == Dialect::Postgres;
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
        search(self.conn(), query).await
    }

    async fn write(&mut self, version: NewVersion<'_>) -> Result<(), StoreError> {
        write_version(self.conn(), &version).await
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        match self.transaction {
            OpenTransaction::Sqlite(transaction) => transaction.commit().await?,
            OpenTransaction::Postgres(transaction) => transaction.commit().await?,
        }
        Ok(())
    }
}

async fn write_version(conn: &mut dyn SqlConn, version: &NewVersion<'_>) -> Result<(), StoreError> {
    let resource_type = version.resource_type.as_str();
    let existing = conn
        .fetch_optional_i64(
            "SELECT res_key FROM resources WHERE resource_type = $1 AND id = $2",
            &[Bind::Text(resource_type), Bind::Text(version.id)],
        )
        .await?;
    let res_key = match existing {
        Some(res_key) => {
            conn.execute(
                "UPDATE resources SET version_id = $1, last_updated = $2, deleted = $3, method = $4, source_org = $5, content = $6 \
                 WHERE res_key = $7",
                &[
                    Bind::Int(version.version_id),
                    Bind::Int(version.last_updated),
                    Bind::Bool(version.content.is_none()),
                    Bind::Text(version.method.code()),
                    Bind::OptText(version.source_org),
                    Bind::OptText(version.content),
                    Bind::Int(res_key),
                ],
            )
            .await?;
            clear_index(conn, res_key).await?;
            res_key
        }
        None => conn
            .fetch_optional_i64(
                "INSERT INTO resources (resource_type, id, version_id, last_updated, deleted, method, source_org, content) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING res_key",
                &[
                    Bind::Text(resource_type),
                    Bind::Text(version.id),
                    Bind::Int(version.version_id),
                    Bind::Int(version.last_updated),
                    Bind::Bool(version.content.is_none()),
                    Bind::Text(version.method.code()),
                    Bind::OptText(version.source_org),
                    Bind::OptText(version.content),
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Internal(anyhow::anyhow!("INSERT … RETURNING gave no key")))?,
    };
    conn.execute(
        "INSERT INTO resource_versions (res_key, resource_type, id, version_id, last_updated, deleted, method, source_org, content) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            Bind::Int(res_key),
            Bind::Text(resource_type),
            Bind::Text(version.id),
            Bind::Int(version.version_id),
            Bind::Int(version.last_updated),
            Bind::Bool(version.content.is_none()),
            Bind::Text(version.method.code()),
            Bind::OptText(version.source_org),
            Bind::OptText(version.content),
        ],
    )
    .await?;
    if let Some(index) = version.index {
        insert_index(conn, res_key, resource_type, index).await?;
    }
    Ok(())
}

const INDEX_TABLES: [&str; 8] =
    ["token_index", "string_index", "date_index", "number_index", "quantity_index", "uri_index", "reference_index", "patient_compartment"];

async fn clear_index(conn: &mut dyn SqlConn, res_key: i64) -> Result<(), StoreError> {
    for table in INDEX_TABLES {
        conn.execute(&format!("DELETE FROM {table} WHERE res_key = $1"), &[Bind::Int(res_key)]).await?;
    }
    Ok(())
}

/// Rows per multi-row INSERT: well inside SQLite's and PostgreSQL's bind limits.
const ROWS_PER_INSERT: usize = 400;

/// Insert `rows` into `table`: each row gives its values after `res_key, resource_type`.
async fn insert_rows<'a, T>(
    conn: &mut dyn SqlConn,
    table: &str,
    columns: &[&str],
    res_key: i64,
    resource_type: &'a str,
    rows: &'a [T],
    values: impl Fn(&'a T) -> Vec<Bind<'a>>,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = format!("INSERT INTO {table} (res_key, resource_type, {}) VALUES ", columns.join(", "));
        let mut binds = Vec::with_capacity(chunk.len() * (columns.len() + 2));
        for (row_number, row) in chunk.iter().enumerate() {
            if row_number > 0 {
                sql.push_str(", ");
            }
            binds.push(Bind::Int(res_key));
            binds.push(Bind::Text(resource_type));
            binds.extend(values(row));
            let first = binds.len() - columns.len() - 1;
            let placeholders: Vec<String> = (first..=binds.len()).map(|n| format!("${n}")).collect();
            sql.push('(');
            sql.push_str(&placeholders.join(", "));
            sql.push(')');
        }
        conn.execute(&sql, &binds).await?;
    }
    Ok(())
}

async fn insert_index(conn: &mut dyn SqlConn, res_key: i64, resource_type: &str, index: &IndexEntries) -> Result<(), StoreError> {
    insert_rows(conn, "token_index", &["param", "system", "code", "text"], res_key, resource_type, &index.tokens, |t| {
        vec![Bind::Text(&t.param), Bind::OptText(t.system.as_deref()), Bind::OptText(t.code.as_deref()), Bind::OptText(t.text.as_deref())]
    })
    .await?;
    insert_rows(conn, "string_index", &["param", "normalized", "exact"], res_key, resource_type, &index.strings, |s| {
        vec![Bind::Text(&s.param), Bind::Text(&s.normalized), Bind::Text(&s.exact)]
    })
    .await?;
    insert_rows(conn, "date_index", &["param", "low", "high"], res_key, resource_type, &index.dates, |d| {
        vec![Bind::Text(&d.param), Bind::Int(d.low), Bind::Int(d.high)]
    })
    .await?;
    insert_rows(conn, "number_index", &["param", "low", "high"], res_key, resource_type, &index.numbers, |n| {
        vec![Bind::Text(&n.param), Bind::Real(n.low), Bind::Real(n.high)]
    })
    .await?;
    insert_rows(
        conn,
        "quantity_index",
        &["param", "system", "code", "unit", "low", "high"],
        res_key,
        resource_type,
        &index.quantities,
        |q| {
            vec![
                Bind::Text(&q.param),
                Bind::OptText(q.system.as_deref()),
                Bind::OptText(q.code.as_deref()),
                Bind::OptText(q.unit.as_deref()),
                Bind::Real(q.low),
                Bind::Real(q.high),
            ]
        },
    )
    .await?;
    insert_rows(conn, "uri_index", &["param", "uri"], res_key, resource_type, &index.uris, |u| {
        vec![Bind::Text(&u.param), Bind::Text(&u.uri)]
    })
    .await?;
    insert_rows(
        conn,
        "reference_index",
        &["param", "target_type", "target_id", "url", "identifier_system", "identifier_value"],
        res_key,
        resource_type,
        &index.references,
        |r| {
            vec![
                Bind::Text(&r.param),
                Bind::OptText(r.target_type.map(|t| t.as_str())),
                Bind::OptText(r.target_id.as_deref()),
                Bind::OptText(r.url.as_deref()),
                Bind::OptText(r.identifier_system.as_deref()),
                Bind::OptText(r.identifier_value.as_deref()),
            ]
        },
    )
    .await?;
    for patient_id in &index.patient_compartment {
        conn.execute(
            "INSERT INTO patient_compartment (res_key, patient_id) VALUES ($1, $2)",
            &[Bind::Int(res_key), Bind::Text(patient_id)],
        )
        .await?;
    }
    Ok(())
}
