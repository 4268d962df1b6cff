//! The few primitives the store needs from a database connection, implemented once for each
//! dialect by a macro, so that everything above them is written once for both.

use async_trait::async_trait;
use sqlx::AssertSqlSafe;

use super::query::{Dialect, SortType, SortValue};

/// A value bound to a placeholder.
#[derive(Clone, Debug)]
pub enum Bind<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    OptInt(Option<i64>),
    Owned(String),
    Int(i64),
    Real(f64),
    Bool(bool),
    /// A PostgreSQL array (for `UNNEST` bulk inserts), all of the first item's kind.
    Array(Vec<Bind<'a>>),
}

impl Bind<'_> {
    /// The PostgreSQL array type of a column of these values.
    pub fn array_type(&self) -> &'static str {
        match self {
            Self::Int(_) | Self::OptInt(_) => "bigint[]",
            Self::Real(_) => "float8[]",
            Self::Bool(_) => "bool[]",
            _ => "text[]",
        }
    }
}

/// A row of `resources` or `resource_versions`.
#[derive(Debug, sqlx::FromRow)]
pub struct VersionRow {
    pub res_key: i64,
    pub resource_type: String,
    pub id: String,
    pub version_id: i64,
    pub last_updated: i64,
    pub deleted: bool,
    pub method: String,
    pub content: Option<String>,
    #[sqlx(default)]
    pub sequence: i64,
    #[sqlx(default)]
    pub source_org: Option<String>,
    /// Sort values of a sorted search page (`SearchQuery::compile_page` names them).
    #[sqlx(default)]
    pub sort_0_int: Option<i64>,
    #[sqlx(default)]
    pub sort_0_real: Option<f64>,
    #[sqlx(default)]
    pub sort_0_text: Option<String>,
    #[sqlx(default)]
    pub sort_1_int: Option<i64>,
    #[sqlx(default)]
    pub sort_1_real: Option<f64>,
    #[sqlx(default)]
    pub sort_1_text: Option<String>,
    #[sqlx(default)]
    pub sort_2_int: Option<i64>,
    #[sqlx(default)]
    pub sort_2_real: Option<f64>,
    #[sqlx(default)]
    pub sort_2_text: Option<String>,
}

impl VersionRow {
    /// The row's value for sort key `index`, read from the column of `value_type`.
    pub fn sort_value(&mut self, index: usize, value_type: SortType) -> SortValue {
        let (int, real, text) = match index {
            0 => (self.sort_0_int, self.sort_0_real, self.sort_0_text.take()),
            1 => (self.sort_1_int, self.sort_1_real, self.sort_1_text.take()),
            _ => (self.sort_2_int, self.sort_2_real, self.sort_2_text.take()),
        };
        let value = match value_type {
            SortType::Int => int.map(SortValue::Int),
            SortType::Real => real.map(SortValue::Real),
            SortType::Text => text.map(SortValue::Text),
        };
        value.unwrap_or(SortValue::Null)
    }
}

/// A row of `care_relationships`, with the ODS code of the Organization an `org_id` names.
#[derive(Debug, sqlx::FromRow)]
pub struct RelationshipRecord {
    pub patient_id: String,
    pub kind: String,
    pub org_ods: Option<String>,
    pub org_id: Option<String>,
    pub ends: Option<i64>,
}

/// A row of `audit_log`.
#[derive(Debug, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub recorded: i64,
    pub event: String,
    pub previous: String,
    pub hash: String,
}

impl AuditRow {
    pub fn into_record(self) -> crate::audit::AuditRecord {
        crate::audit::AuditRecord { seq: self.seq, recorded: self.recorded, text: self.event, previous: self.previous, hash: self.hash }
    }
}

/// A row of `consent_directives`.
#[derive(Debug, sqlx::FromRow)]
pub struct DirectiveRecord {
    pub res_key: i64,
    pub patient_id: String,
    pub rule: i64,
    pub effect: String,
    pub recipient: Option<String>,
    pub source: Option<String>,
    pub class: Option<String>,
    pub label: Option<String>,
    pub purpose: Option<String>,
    pub starts: Option<i64>,
    pub ends: Option<i64>,
}

#[async_trait]
pub trait SqlConn: Send {
    fn dialect(&self) -> Dialect;
    async fn fetch_versions(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<VersionRow>, sqlx::Error>;
    async fn fetch_optional_i64(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Option<i64>, sqlx::Error>;
    async fn execute(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<u64, sqlx::Error>;
    /// The first column of every row, as text.
    async fn fetch_text(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<String>, sqlx::Error>;
    /// Rows of `(res_key, resource_type, id)`, as `INSERT … RETURNING` gives them.
    async fn fetch_keys(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<(i64, String, String)>, sqlx::Error>;
    /// Rows of two text columns.
    async fn fetch_pairs(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<(String, String)>, sqlx::Error>;
    async fn fetch_relationships(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<RelationshipRecord>, sqlx::Error>;
    async fn fetch_directives(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<DirectiveRecord>, sqlx::Error>;
    async fn fetch_audit(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<AuditRow>, sqlx::Error>;
    /// Rows of an integer and a text column.
    async fn fetch_int_text(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<(i64, String)>, sqlx::Error>;
}

macro_rules! bind_all {
    ($query:expr, $binds:expr, $bind_array:ident) => {{
        let mut query = $query;
        for bind in $binds {
            query = match bind {
                Bind::Text(value) => query.bind(*value),
                Bind::OptText(value) => query.bind(*value),
                Bind::Owned(value) => query.bind(value.as_str()),
                Bind::Int(value) => query.bind(*value),
                Bind::OptInt(value) => query.bind(*value),
                Bind::Real(value) => query.bind(*value),
                Bind::Bool(value) => query.bind(*value),
                Bind::Array(items) => $bind_array!(query, items),
            };
        }
        query
    }};
}

/// PostgreSQL: bind a column of values as one typed array.
macro_rules! pg_array {
    ($query:expr, $items:expr) => {
        match $items.first() {
            Some(Bind::Int(_)) => $query.bind($items.iter().map(|b| if let Bind::Int(v) = b { *v } else { 0 }).collect::<Vec<i64>>()),
            Some(Bind::OptInt(_)) => $query.bind(
                $items
                    .iter()
                    .map(|b| match b {
                        Bind::OptInt(v) => *v,
                        Bind::Int(v) => Some(*v),
                        _ => None,
                    })
                    .collect::<Vec<Option<i64>>>(),
            ),
            Some(Bind::Real(_)) => $query.bind($items.iter().map(|b| if let Bind::Real(v) = b { *v } else { 0.0 }).collect::<Vec<f64>>()),
            Some(Bind::Bool(_)) => $query.bind($items.iter().map(|b| matches!(b, Bind::Bool(true))).collect::<Vec<bool>>()),
            _ => $query.bind(
                $items
                    .iter()
                    .map(|b| match b {
                        Bind::Text(v) => Some(*v),
                        Bind::OptText(v) => *v,
                        Bind::Owned(v) => Some(v.as_str()),
                        _ => None,
                    })
                    .collect::<Vec<Option<&str>>>(),
            ),
        }
    };
}

/// SQLite has no arrays; the store never builds one for it.
macro_rules! no_array {
    ($query:expr, $items:expr) => {{
        let _ = $items;
        unreachable!("array binds are built for PostgreSQL only")
    }};
}

macro_rules! impl_sql_conn {
    ($connection:ty, $database:ty, $dialect:expr, $bind_array:ident) => {
        #[async_trait]
        impl SqlConn for $connection {
            fn dialect(&self) -> Dialect {
                $dialect
            }

            async fn fetch_versions(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<VersionRow>, sqlx::Error> {
                bind_all!(sqlx::query_as::<$database, VersionRow>(AssertSqlSafe(sql)), binds, $bind_array).fetch_all(self).await
            }

            async fn fetch_optional_i64(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Option<i64>, sqlx::Error> {
                bind_all!(sqlx::query_scalar::<$database, i64>(AssertSqlSafe(sql)), binds, $bind_array).fetch_optional(self).await
            }

            async fn fetch_keys(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<(i64, String, String)>, sqlx::Error> {
                bind_all!(sqlx::query_as::<$database, (i64, String, String)>(AssertSqlSafe(sql)), binds, $bind_array).fetch_all(self).await
            }

            async fn fetch_pairs(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<(String, String)>, sqlx::Error> {
                bind_all!(sqlx::query_as::<$database, (String, String)>(AssertSqlSafe(sql)), binds, $bind_array).fetch_all(self).await
            }

            async fn fetch_relationships(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<RelationshipRecord>, sqlx::Error> {
                bind_all!(sqlx::query_as::<$database, RelationshipRecord>(AssertSqlSafe(sql)), binds, $bind_array).fetch_all(self).await
            }

            async fn fetch_directives(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<DirectiveRecord>, sqlx::Error> {
                bind_all!(sqlx::query_as::<$database, DirectiveRecord>(AssertSqlSafe(sql)), binds, $bind_array).fetch_all(self).await
            }

            async fn fetch_audit(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<AuditRow>, sqlx::Error> {
                bind_all!(sqlx::query_as::<$database, AuditRow>(AssertSqlSafe(sql)), binds, $bind_array).fetch_all(self).await
            }

            async fn fetch_int_text(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<(i64, String)>, sqlx::Error> {
                bind_all!(sqlx::query_as::<$database, (i64, String)>(AssertSqlSafe(sql)), binds, $bind_array).fetch_all(self).await
            }

            async fn fetch_text(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<String>, sqlx::Error> {
                bind_all!(sqlx::query_scalar::<$database, String>(AssertSqlSafe(sql)), binds, $bind_array).fetch_all(self).await
            }

            async fn execute(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<u64, sqlx::Error> {
                let result = bind_all!(sqlx::query::<$database>(AssertSqlSafe(sql)), binds, $bind_array).execute(self).await?;
                Ok(result.rows_affected())
            }
        }
    };
}

impl_sql_conn!(sqlx::SqliteConnection, sqlx::Sqlite, Dialect::Sqlite, no_array);
impl_sql_conn!(sqlx::PgConnection, sqlx::Postgres, Dialect::Postgres, pg_array);
