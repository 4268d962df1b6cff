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

/// SQL text with its binds.
pub struct CompiledQuery<'q> {
    pub sql: String,
    pub binds: Vec<Bind<'q>>,
}

impl<'q> CompiledQuery<'q> {
    fn new() -> Self {
        Self { sql: String::with_capacity(256), binds: Vec::new() }
    }

    /// Bind a value and return its placeholder.
    fn bind(&mut self, value: Bind<'q>) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }
}

pub const VERSION_COLUMNS: &str = "r.res_key, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.method, r.content";

impl SearchQuery {
    /// The page of matches: `count + 1` rows in store-key order.
    pub fn compile_page(&self) -> CompiledQuery<'_> {
        let mut query = CompiledQuery::new();
        query.sql.push_str("SELECT ");
        query.sql.push_str(VERSION_COLUMNS);
        query.sql.push_str(" FROM resources r WHERE ");
        self.push_conditions(&mut query);
        if let Some(after) = self.after_key {
            let placeholder = query.bind(Bind::Int(after));
            query.sql.push_str(&format!(" AND r.res_key > {placeholder}"));
        }
        let limit = query.bind(Bind::Int(self.count as i64 + 1));
        query.sql.push_str(&format!(" ORDER BY r.res_key LIMIT {limit}"));
        query
    }

    /// The number of matches, ignoring paging.
    pub fn compile_count(&self) -> CompiledQuery<'_> {
        let mut query = CompiledQuery::new();
        query.sql.push_str("SELECT COUNT(*) FROM resources r WHERE ");
        self.push_conditions(&mut query);
        query
    }

    fn push_conditions<'q>(&'q self, query: &mut CompiledQuery<'q>) {
        let type_placeholder = query.bind(Bind::Text(self.resource_type.as_str()));
        query.sql.push_str(&format!("r.resource_type = {type_placeholder} AND r.deleted = FALSE"));
        for filter in &self.filters {
            query.sql.push_str(" AND ");
            match filter {
                Filter::Ids(ids) => {
                    let placeholders: Vec<String> = ids.iter().map(|id| query.bind(Bind::Text(id))).collect();
                    query.sql.push_str(&format!("r.id IN ({})", placeholders.join(", ")));
                }
                Filter::Token { param, values, negate } => {
                    let param_placeholder = query.bind(Bind::Text(param));
                    let mut alternatives = Vec::with_capacity(values.len());
                    for value in values {
                        let mut parts = Vec::with_capacity(2);
                        if let Some(code) = &value.code {
                            parts.push(format!("t.code = {}", query.bind(Bind::Text(code))));
                        }
                        match &value.system {
                            SystemMatch::Any => {}
                            SystemMatch::Absent => parts.push("t.system IS NULL".to_owned()),
                            SystemMatch::Is(system) => parts.push(format!("t.system = {}", query.bind(Bind::Text(system)))),
                        }
                        if parts.is_empty() {
                            parts.push("TRUE".to_owned());
                        }
                        alternatives.push(format!("({})", parts.join(" AND ")));
                    }
                    query.sql.push_str(&format!(
                        "r.res_key {}IN (SELECT t.res_key FROM token_index t WHERE t.resource_type = {type_placeholder} AND t.param = {param_placeholder} AND ({}))",
                        if *negate { "NOT " } else { "" },
                        alternatives.join(" OR ")
                    ));
                }
                Filter::PatientCompartment(patient_id) => {
                    let placeholder = query.bind(Bind::Text(patient_id));
                    query.sql.push_str(&format!(
                        "r.res_key IN (SELECT c.res_key FROM patient_compartment c WHERE c.patient_id = {placeholder})"
                    ));
                }
            }
        }
    }
}

impl HistoryScope {
    /// Versions newest first, `limit` rows, optionally below a sequence and since a time.
    pub fn compile(&self, limit: usize, before_sequence: Option<i64>, since: Option<i64>) -> CompiledQuery<'_> {
        let mut query = CompiledQuery::new();
        query.sql.push_str(
            "SELECT r.res_key, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.method, r.content, r.sequence \
             FROM resource_versions r WHERE TRUE",
        );
        match self {
            Self::Instance(resource_type, id) => {
                let type_placeholder = query.bind(Bind::Text(resource_type.as_str()));
                let id_placeholder = query.bind(Bind::Text(id));
                query.sql.push_str(&format!(" AND r.resource_type = {type_placeholder} AND r.id = {id_placeholder}"));
            }
            Self::Type(resource_type) => {
                let type_placeholder = query.bind(Bind::Text(resource_type.as_str()));
                query.sql.push_str(&format!(" AND r.resource_type = {type_placeholder}"));
            }
            Self::System => {}
        }
        if let Some(before) = before_sequence {
            let placeholder = query.bind(Bind::Int(before));
            query.sql.push_str(&format!(" AND r.sequence < {placeholder}"));
        }
        if let Some(since) = since {
            let placeholder = query.bind(Bind::Int(since));
            query.sql.push_str(&format!(" AND r.last_updated >= {placeholder}"));
        }
        let limit_placeholder = query.bind(Bind::Int(limit as i64));
        query.sql.push_str(&format!(" ORDER BY r.sequence DESC LIMIT {limit_placeholder}"));
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
        let compiled = query.compile_page();
        assert_eq!(
            compiled.sql,
            "SELECT r.res_key, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.method, r.content FROM resources r \
             WHERE r.resource_type = $1 AND r.deleted = FALSE AND r.res_key IN (SELECT t.res_key FROM token_index t \
             WHERE t.resource_type = $1 AND t.param = $2 AND ((t.code = $3 AND t.system = $4))) AND r.res_key > $5 \
             ORDER BY r.res_key LIMIT $6"
        );
        assert_eq!(compiled.binds.len(), 6);
    }
}
