//! Search and history queries as data, and their compilation to SQL. The compiled SQL is the
//! same text on SQLite and PostgreSQL (`$n` placeholders, `IN (subquery)` semi-joins); where a
//! dialect needs its own words, [`Dialect`] supplies them.

use fhir_models::ResourceType;

use super::connection::Bind;

/// Which dialect a query is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A search: filters ANDed together, each OR-ing its values, as FHIR search composes them.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchQuery {
    pub resource_type: ResourceType,
    pub filters: Vec<Filter>,
    /// Page size; the store fetches one more to know whether a next page exists.
    pub count: usize,
    /// Keyset paging: only matches after this store key.
    pub after_key: Option<i64>,
    pub include_total: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// `_id=a,b`
    Ids(Vec<String>),
    /// A token parameter: `identifier=system|value,…`. `negate` is the `:not` modifier.
    Token { param: String, values: Vec<TokenValue>, negate: bool },
    /// Resources in this patient's compartment.
    PatientCompartment(String),
}

/// One token value: `code`, `system|code`, `|code` or `system|`.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenValue {
    pub system: SystemMatch,
    pub code: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SystemMatch {
    /// `code`: any system.
    Any,
    /// `|code`: no system.
    Absent,
    /// `system|code` or `system|`.
    Is(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum HistoryScope {
    Instance(ResourceType, String),
    Type(ResourceType),
    System,
}

/// SQL text with its binds, built left to right: each bind is pushed where its placeholder
/// goes (`$n` on PostgreSQL; `?` on SQLite, whose driver looks `$n` names up one by one and
/// makes a statement with thousands of binds quadratic).
pub struct CompiledQuery<'q> {
    pub sql: String,
    pub binds: Vec<Bind<'q>>,
    dialect: Dialect,
}

impl<'q> CompiledQuery<'q> {
    pub fn new(dialect: Dialect) -> Self {
        Self { sql: String::with_capacity(256), binds: Vec::new(), dialect }
    }

    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Append a placeholder for `value`.
    pub fn push_bind(&mut self, value: Bind<'q>) -> &mut Self {
        self.binds.push(value);
        match self.dialect {
            Dialect::Postgres => {
                self.sql.push('$');
                self.sql.push_str(&self.binds.len().to_string());
            }
            Dialect::Sqlite => self.sql.push('?'),
        }
        self
    }
}

pub const VERSION_COLUMNS: &str = "r.res_key, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.method, r.content";

/// Columns and source of a version row: a superseded version holds its own JSON; the current one
/// (NULL content, not a deletion) reads it from `resources`.
pub const HISTORY_COLUMNS: &str = "r.res_key, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.method, \
     CASE WHEN r.deleted THEN NULL ELSE COALESCE(r.content, c.content) END AS content, r.sequence \
     FROM resource_versions r JOIN resources c ON c.res_key = r.res_key";

impl SearchQuery {
    /// The page of matches: `count + 1` rows in store-key order.
    pub fn compile_page(&self, dialect: Dialect) -> CompiledQuery<'_> {
        let mut query = CompiledQuery::new(dialect);
        query.push("SELECT ").push(VERSION_COLUMNS).push(" FROM resources r WHERE ");
        self.push_conditions(&mut query);
        if let Some(after) = self.after_key {
            query.push(" AND r.res_key > ").push_bind(Bind::Int(after));
        }
        query.push(" ORDER BY r.res_key LIMIT ").push_bind(Bind::Int(self.count as i64 + 1));
        query
    }

    /// The number of matches, ignoring paging.
    pub fn compile_count(&self, dialect: Dialect) -> CompiledQuery<'_> {
        let mut query = CompiledQuery::new(dialect);
        query.push("SELECT COUNT(*) FROM resources r WHERE ");
        self.push_conditions(&mut query);
        query
    }

    fn push_conditions<'q>(&'q self, query: &mut CompiledQuery<'q>) {
        let resource_type = self.resource_type.as_str();
        query.push("r.resource_type = ").push_bind(Bind::Text(resource_type)).push(" AND r.deleted = FALSE");
        for filter in &self.filters {
            query.push(" AND ");
            match filter {
                Filter::Ids(ids) => {
                    query.push("r.id IN (");
                    for (index, id) in ids.iter().enumerate() {
                        if index > 0 {
                            query.push(", ");
                        }
                        query.push_bind(Bind::Text(id));
                    }
                    query.push(")");
                }
                Filter::Token { param, values, negate } => {
                    query
                        .push(if *negate { "r.res_key NOT IN" } else { "r.res_key IN" })
                        .push(" (SELECT t.res_key FROM token_index t WHERE t.resource_type = ")
                        .push_bind(Bind::Text(resource_type))
                        .push(" AND t.param = ")
                        .push_bind(Bind::Text(param))
                        .push(" AND (");
                    for (index, value) in values.iter().enumerate() {
                        if index > 0 {
                            query.push(" OR ");
                        }
                        query.push("(");
                        let mut any = false;
                        if let Some(code) = &value.code {
                            query.push("t.code = ").push_bind(Bind::Text(code));
                            any = true;
                        }
                        match &value.system {
                            SystemMatch::Any => {}
                            SystemMatch::Absent => {
                                query.push(if any { " AND t.system IS NULL" } else { "t.system IS NULL" });
                                any = true;
                            }
                            SystemMatch::Is(system) => {
                                query.push(if any { " AND t.system = " } else { "t.system = " }).push_bind(Bind::Text(system));
                                any = true;
                            }
                        }
                        if !any {
                            query.push("TRUE");
                        }
                        query.push(")");
                    }
                    query.push("))");
                }
                Filter::PatientCompartment(patient_id) => {
                    query
                        .push("r.res_key IN (SELECT c.res_key FROM patient_compartment c WHERE c.patient_id = ")
                        .push_bind(Bind::Text(patient_id))
                        .push(")");
                }
            }
        }
    }
}

impl HistoryScope {
    /// Versions newest first, `limit` rows, optionally below a sequence and since a time.
    pub fn compile(&self, dialect: Dialect, limit: usize, before_sequence: Option<i64>, since: Option<i64>) -> CompiledQuery<'_> {
        let mut query = CompiledQuery::new(dialect);
        query.push("SELECT ").push(HISTORY_COLUMNS).push(" WHERE TRUE");
        match self {
            Self::Instance(resource_type, id) => {
                query.push(" AND r.resource_type = ").push_bind(Bind::Text(resource_type.as_str()));
                query.push(" AND r.id = ").push_bind(Bind::Text(id));
            }
            Self::Type(resource_type) => {
                query.push(" AND r.resource_type = ").push_bind(Bind::Text(resource_type.as_str()));
            }
            Self::System => {}
        }
        if let Some(before) = before_sequence {
            query.push(" AND r.sequence < ").push_bind(Bind::Int(before));
        }
        if let Some(since) = since {
            query.push(" AND r.last_updated >= ").push_bind(Bind::Int(since));
        }
        query.push(" ORDER BY r.sequence DESC LIMIT ").push_bind(Bind::Int(limit as i64));
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_an_identifier_search() {
        let query = SearchQuery {
            resource_type: ResourceType::parse("Patient").unwrap(),
            filters: vec![Filter::Token {
                param: "identifier".into(),
                values: vec![TokenValue {
                    system: SystemMatch::Is("https://fhir.nhs.uk/Id/nhs-number".into()),
                    code: Some("9449305552".into()),
                }],
                negate: false,
            }],
            count: 10,
            after_key: Some(5),
            include_total: true,
        };
        let compiled = query.compile_page(Dialect::Postgres);
        assert_eq!(
            compiled.sql,
            "SELECT r.res_key, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.method, r.content FROM resources r \
             WHERE r.resource_type = $1 AND r.deleted = FALSE AND r.res_key IN (SELECT t.res_key FROM token_index t \
             WHERE t.resource_type = $2 AND t.param = $3 AND ((t.code = $4 AND t.system = $5))) AND r.res_key > $6 \
             ORDER BY r.res_key LIMIT $7"
        );
        assert_eq!(compiled.binds.len(), 7);
        let sqlite = query.compile_page(Dialect::Sqlite);
        assert_eq!(sqlite.sql.matches('?').count(), 7);
        assert!(!sqlite.sql.contains('$'));
    }
}
