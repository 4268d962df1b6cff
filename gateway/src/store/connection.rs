//! The few primitives the store needs from a database connection, implemented once for each
//! dialect by a macro, so that everything above them is written once for both.

use async_trait::async_trait;
use sqlx::AssertSqlSafe;

use super::query::Dialect;

/// A value bound to a `$n` placeholder (SQLite accepts PostgreSQL's `$n` too).
#[derive(Clone, Debug)]
pub enum Bind<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Owned(String),
    Int(i64),
    Real(f64),
    Bool(bool),
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
}

#[async_trait]
pub trait SqlConn: Send {
    fn dialect(&self) -> Dialect;
    async fn fetch_versions(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<VersionRow>, sqlx::Error>;
    async fn fetch_optional_i64(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Option<i64>, sqlx::Error>;
    async fn execute(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<u64, sqlx::Error>;
    /// Rows of `(res_key, resource_type, id)`, as `INSERT … RETURNING` gives them.
    async fn fetch_keys(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<(i64, String, String)>, sqlx::Error>;
}

macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for bind in $binds {
            query = match bind {
                Bind::Text(value) => query.bind(*value),
                Bind::OptText(value) => query.bind(*value),
                Bind::Owned(value) => query.bind(value.as_str()),
                Bind::Int(value) => query.bind(*value),
                Bind::Real(value) => query.bind(*value),
                Bind::Bool(value) => query.bind(*value),
            };
        }
        query
    }};
}

macro_rules! impl_sql_conn {
    ($connection:ty, $database:ty, $dialect:expr) => {
        #[async_trait]
        impl SqlConn for $connection {
            fn dialect(&self) -> Dialect {
                $dialect
            }

            async fn fetch_versions(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<VersionRow>, sqlx::Error> {
                bind_all!(sqlx::query_as::<$database, VersionRow>(AssertSqlSafe(sql)), binds).fetch_all(self).await
            }

            async fn fetch_optional_i64(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Option<i64>, sqlx::Error> {
                bind_all!(sqlx::query_scalar::<$database, i64>(AssertSqlSafe(sql)), binds).fetch_optional(self).await
            }

            async fn fetch_keys(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<Vec<(i64, String, String)>, sqlx::Error> {
                bind_all!(sqlx::query_as::<$database, (i64, String, String)>(AssertSqlSafe(sql)), binds).fetch_all(self).await
            }

            async fn execute(&mut self, sql: &str, binds: &[Bind<'_>]) -> Result<u64, sqlx::Error> {
                let result = bind_all!(sqlx::query::<$database>(AssertSqlSafe(sql)), binds).execute(self).await?;
                Ok(result.rows_affected())
            }
        }
    };
}

impl_sql_conn!(sqlx::SqliteConnection, sqlx::Sqlite, Dialect::Sqlite);
impl_sql_conn!(sqlx::PgConnection, sqlx::Postgres, Dialect::Postgres);
