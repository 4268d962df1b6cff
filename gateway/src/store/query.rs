//! Search and history queries as data, and their compilation to SQL.
//!
//! A [`SearchQuery`] is what the FHIR layer understood from a search request: filters ANDed
//! together, each OR-ing its values, as FHIR composes them; sort keys; a keyset position. It
//! compiles to one SQL statement that runs entirely in the database: every filter is a semi-join
//! (`IN (subquery)`) on an index table, chains and `_has` nest those, and the consent scope
//! (`SearchQuery::access`) is compiled into every resource level. The SQL text is the same on SQLite and
//! PostgreSQL except where [`Dialect`] says otherwise.

use fhir_models::ResourceType;

use super::connection::Bind;

/// Which dialect a query is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SearchQuery {
    pub resource_type: ResourceType,
    pub filters: Vec<Filter>,
    /// `_sort`, most significant first; the store key breaks ties.
    pub sort: Vec<SortKey>,
    /// Page size; the store fetches one more to know whether another page follows.
    pub count: usize,
    /// Keyset paging: where the previous page ended (or, going back, where the next one began).
    pub position: Option<Position>,
    pub total: TotalMode,
    /// `_include` and `_revinclude`, applied to the page.
    pub includes: Vec<Include>,
    /// What the requester may see: compiled into every level of the query (matches, chains,
    /// `_has`, includes, counts), so nothing withheld is matched, counted or paged over.
    pub access: Option<std::sync::Arc<consent::Scope>>,
}

impl SearchQuery {
    pub fn new(resource_type: ResourceType, count: usize) -> Self {
        Self {
            resource_type,
            filters: Vec::new(),
            sort: Vec::new(),
            count,
            position: None,
            total: TotalMode::None,
            includes: Vec::new(),
            access: None,
        }
    }

    /// Whether the search reaches Patients through elements a restricted patient's record
    /// hides from others (at the top level: filters and sort keys).
    fn top_level_uses_redacted(&self) -> bool {
        self.resource_type.as_str() == "Patient"
            && (uses_redacted(&self.filters)
                || self.sort.iter().any(|key| matches!(&key.by, SortBy::Param { param, .. } if is_redacted(param))))
    }
}

fn is_redacted(param: &str) -> bool {
    consent::access::REDACTED_PARAMS.contains(&param)
}

/// Whether a level's filters test a Patient's redacted elements.
fn uses_redacted(filters: &[Filter]) -> bool {
    filters.iter().any(|filter| match filter {
        Filter::Match { param, .. } | Filter::Missing { param, .. } | Filter::Chain { param, .. } => is_redacted(param),
        Filter::AnyOf(filters) => uses_redacted(filters),
        _ => false,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotalMode {
    None,
    /// Count the matches (for free when the first page holds them all).
    Accurate,
}

/// The index tables, one per search-parameter type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexTable {
    Token,
    String,
    Date,
    Number,
    Quantity,
    Uri,
    Reference,
    Composite,
}

impl IndexTable {
    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token_index",
            Self::String => "string_index",
            Self::Date => "date_index",
            Self::Number => "number_index",
            Self::Quantity => "quantity_index",
            Self::Uri => "uri_index",
            Self::Reference => "reference_index",
            Self::Composite => "composite_index",
        }
    }

    /// The value a resource sorts by: its lowest value ascending, its highest descending.
    fn sort_expression(self, descending: bool) -> (&'static str, SortType) {
        match (self, descending) {
            (Self::Token, false) => ("MIN(x.code)", SortType::Text),
            (Self::Token, true) => ("MAX(x.code)", SortType::Text),
            (Self::String, false) => ("MIN(x.normalized)", SortType::Text),
            (Self::String, true) => ("MAX(x.normalized)", SortType::Text),
            (Self::Date, false) => ("MIN(x.low)", SortType::Int),
            (Self::Date, true) => ("MAX(x.high)", SortType::Int),
            (Self::Number | Self::Quantity, false) => ("MIN(x.low)", SortType::Real),
            (Self::Number | Self::Quantity, true) => ("MAX(x.high)", SortType::Real),
            (Self::Uri, false) => ("MIN(x.uri)", SortType::Text),
            (Self::Uri, true) => ("MAX(x.uri)", SortType::Text),
            (Self::Reference | Self::Composite, false) => ("MIN(x.target_id)", SortType::Text),
            (Self::Reference | Self::Composite, true) => ("MAX(x.target_id)", SortType::Text),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// `_id=a,b`
    Ids(Vec<String>),
    /// `_lastUpdated`, any of the conditions.
    LastUpdated(Vec<Range<i64>>),
    /// A parameter: some index row of `param` meets one of `any_of`; with `negate` (`:not`),
    /// none does.
    Match { table: IndexTable, param: String, any_of: Vec<Condition>, negate: bool },
    /// `:missing=true|false`
    Missing { table: IndexTable, param: String, missing: bool },
    /// A chain: `param` refers to a `target_type` the inner filter selects.
    Chain { param: String, target_type: ResourceType, filter: Box<Filter> },
    /// `_has:source_type:param:…`: some `source_type` the inner filter selects refers to this one by `param`.
    Has { source_type: ResourceType, param: String, filter: Box<Filter> },
    /// Any of these (a chain through a reference with several possible target types).
    AnyOf(Vec<Filter>),
    /// Resources in this patient's compartment.
    PatientCompartment(String),
    /// Nothing matches (a value that cannot match, such as a reference to another type).
    Nothing,
}

/// One value of a parameter, as the index row must meet it.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Token {
        system: SystemMatch,
        code: Option<String>,
    },
    /// `:text`: the coding's display or the concept's text starts with this (normalized).
    TokenText(String),
    String {
        mode: StringMatch,
        value: String,
    },
    Date(Range<i64>),
    Number(Range<f64>),
    Quantity {
        range: Range<f64>,
        system: Option<String>,
        code: Option<String>,
    },
    Uri {
        mode: UriMatch,
        value: String,
    },
    /// `Type/id`, or a bare id (any of `types`, all when empty).
    Reference {
        types: Vec<ResourceType>,
        id: String,
    },
    /// An absolute or canonical reference (without `|version`).
    ReferenceUrl(String),
    /// `:identifier`
    ReferenceIdentifier {
        system: SystemMatch,
        value: Option<String>,
    },
    /// A composite: the first component a token, the second a token, quantity, date or string.
    Composite {
        first: Box<Condition>,
        second: Box<Condition>,
    },
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringMatch {
    /// The default: the normalized value starts with the normalized search value.
    StartsWith,
    /// `:exact`: the value as written, case and accents included.
    Exact,
    /// `:contains`: the normalized value contains the normalized search value.
    Contains,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriMatch {
    Exact,
    /// `:below`: the stored URI starts with the search value.
    Below,
    /// `:above`: the search value starts with the stored URI.
    Above,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

/// A prefixed search value and the range it stands for, both ends inclusive. Index rows hold
/// ranges too (`low`, `high`): a date of day precision is the whole day, a number a point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range<T> {
    pub prefix: Prefix,
    pub low: T,
    pub high: T,
}

/// A `_sort` key.
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    pub by: SortBy,
    pub descending: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SortBy {
    Id,
    LastUpdated,
    Param { table: IndexTable, param: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortType {
    Int,
    Real,
    Text,
}

/// The most `_sort` keys a search may have (each is a column of the page query).
pub const MAX_SORT_KEYS: usize = 3;

/// A value a row sorts by, carried in a paging cursor. `Null` sorts last.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum SortValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// A keyset position: a row's sort values and store key. `backward` pages towards the start.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    #[serde(rename = "v", default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<SortValue>,
    #[serde(rename = "k")]
    pub key: i64,
    #[serde(rename = "b", default, skip_serializing_if = "std::ops::Not::not")]
    pub backward: bool,
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
    /// Nesting depth of resource aliases (`r`, `r1`, `r2`… for chains and `_has`).
    depth: usize,
    /// The consent scope every resource level of the query is held to.
    access: Option<&'q consent::Scope>,
}

impl<'q> CompiledQuery<'q> {
    pub fn new(dialect: Dialect) -> Self {
        Self { sql: String::with_capacity(256), binds: Vec::new(), dialect, depth: 0, access: None }
    }

    /// Hold every resource level compiled from now on to `scope`.
    pub fn with_access(mut self, scope: Option<&'q consent::Scope>) -> Self {
        self.access = scope;
        self
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

    /// A name the server chose — a resource type, or a search parameter's code from the
    /// generated table, never a client's text — written as a literal: PostgreSQL then plans
    /// with the statistics of that type and parameter and can keep one generic plan per
    /// statement instead of planning every execution.
    pub fn push_name(&mut self, name: &str) -> &mut Self {
        debug_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')), "{name:?}");
        self.sql.push('\'');
        self.sql.push_str(&name.replace('\'', "''"));
        self.sql.push('\'');
        self
    }

    /// A constant of the server's (a code system URI) as a quoted literal.
    pub fn push_name_text(&mut self, text: &str) -> &mut Self {
        self.sql.push('\'');
        self.sql.push_str(&text.replace('\'', "''"));
        self.sql.push('\'');
        self
    }

    /// `, ` separated placeholders.
    pub fn push_list(&mut self, values: impl IntoIterator<Item = Bind<'q>>) -> &mut Self {
        for (index, value) in values.into_iter().enumerate() {
            if index > 0 {
                self.push(", ");
            }
            self.push_bind(value);
        }
        self
    }

    /// Text starting with `prefix`, as a range both dialects answer from an index: byte order
    /// on SQLite (BINARY collation), `text_pattern_ops` operators on PostgreSQL.
    fn push_starts_with(&mut self, column: &str, prefix: &'q str) {
        let upper = format!("{prefix}\u{10FFFF}");
        let (ge, lt) = match self.dialect {
            Dialect::Sqlite => (" >= ", " < "),
            Dialect::Postgres => (" ~>=~ ", " ~<~ "),
        };
        self.push("(").push(column).push(ge).push_bind(Bind::Text(prefix));
        self.push(" AND ").push(column).push(lt).push_bind(Bind::Owned(upper)).push(")");
    }

    fn push_contains(&mut self, column: &str, fragment: &str) {
        let escaped: String = fragment.chars().flat_map(|c| if matches!(c, '%' | '_' | '\\') { vec!['\\', c] } else { vec![c] }).collect();
        self.push(column).push(" LIKE ").push_bind(Bind::Owned(format!("%{escaped}%"))).push(" ESCAPE '\\'");
    }
}

pub const VERSION_COLUMNS: &str =
    "r.res_key, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.method, r.content, r.source_org";

/// Columns and source of a version row: a superseded version holds its own JSON; the current one
/// (NULL content, not a deletion) reads it from `resources`.
pub const HISTORY_COLUMNS: &str = "r.res_key, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.method, \
     CASE WHEN r.deleted THEN NULL ELSE COALESCE(r.content, c.content) END AS content, r.sequence, r.source_org \
     FROM resource_versions r JOIN resources c ON c.res_key = r.res_key";

fn alias(depth: usize) -> String {
    if depth == 0 { "r".to_owned() } else { format!("r{depth}") }
}

impl SortKey {
    pub fn value_type(&self) -> SortType {
        match &self.by {
            SortBy::Id => SortType::Text,
            SortBy::LastUpdated => SortType::Int,
            SortBy::Param { table, .. } => table.sort_expression(self.descending).1,
        }
    }

    /// The key's direction as the page is read: reading backward reverses it.
    fn reads_descending(&self, backward: bool) -> bool {
        self.descending != backward
    }

    fn push_expression<'q>(&'q self, query: &mut CompiledQuery<'q>) {
        match &self.by {
            SortBy::Id => query.push("r.id"),
            SortBy::LastUpdated => query.push("r.last_updated"),
            SortBy::Param { table, param } => query
                .push("(SELECT ")
                .push(table.sort_expression(self.descending).0)
                .push(" FROM ")
                .push(table.name())
                .push(" x WHERE x.res_key = r.res_key AND x.param = ")
                .push_name(param)
                .push(")"),
        };
    }
}

impl SearchQuery {
    /// The page: `count + 1` rows in sort order (reversed when reading backward), each with its
    /// sort values as `sort_{i}_{int|real|text}` columns.
    pub fn compile_page(&self, dialect: Dialect) -> CompiledQuery<'_> {
        let mut query = CompiledQuery::new(dialect).with_access(self.access.as_deref());
        let backward = self.position.as_ref().is_some_and(|p| p.backward);
        let key_order = if backward { " DESC" } else { "" };
        if self.sort.is_empty() {
            query.push("SELECT ").push(VERSION_COLUMNS).push(" FROM resources r WHERE ");
            self.push_conditions(&mut query);
            if let Some(position) = &self.position {
                query.push(if backward { " AND r.res_key < " } else { " AND r.res_key > " }).push_bind(Bind::Int(position.key));
            }
            query.push(" ORDER BY r.res_key").push(key_order);
        } else {
            // The sort values are computed once per match in an inner query and compared by name
            // outside it, where the keyset condition and the ORDER BY can refer to them.
            query.push("SELECT * FROM (SELECT ").push(VERSION_COLUMNS);
            for (index, key) in self.sort.iter().enumerate() {
                query.push(", ");
                key.push_expression(&mut query);
                query.push(&format!(" AS {}", sort_column(index, key.value_type())));
            }
            query.push(" FROM resources r WHERE ");
            self.push_conditions(&mut query);
            query.push(") page");
            if let Some(position) = &self.position {
                query.push(" WHERE ");
                self.push_keyset(&mut query, position);
            }
            query.push(" ORDER BY ");
            for (index, key) in self.sort.iter().enumerate() {
                let column = sort_column(index, key.value_type());
                let descending = key.reads_descending(backward);
                // NULLs sort last in the page order, so first when reading backward.
                let nulls = if backward { "FIRST" } else { "LAST" };
                query.push(&format!("page.{column} {} NULLS {nulls}, ", if descending { "DESC" } else { "ASC" }));
            }
            query.push("page.res_key").push(key_order);
        }
        query.push(" LIMIT ").push_bind(Bind::Int(self.count as i64 + 1));
        query
    }

    /// Rows strictly after `position` in reading order: lexicographic over the sort keys, then
    /// the store key. A NULL sort value sorts after every value (before, reading backward).
    fn push_keyset<'q>(&'q self, query: &mut CompiledQuery<'q>, position: &'q Position) {
        let backward = position.backward;
        query.push("(");
        let mut equal_prefix: Vec<(String, &SortValue)> = Vec::new();
        for (index, key) in self.sort.iter().enumerate() {
            let column = format!("page.{}", sort_column(index, key.value_type()));
            let value = position.values.get(index).unwrap_or(&SortValue::Null);
            query.push("(");
            push_equalities(query, &equal_prefix);
            let descending = key.reads_descending(backward);
            match (value, backward) {
                // Reading forward nothing sorts after NULL; reading backward every value does.
                (SortValue::Null, false) => query.push("FALSE"),
                (SortValue::Null, true) => query.push(&column).push(" IS NOT NULL"),
                (value, _) => {
                    query.push("(").push(&column).push(if descending { " < " } else { " > " });
                    push_sort_value(query, value);
                    if !backward {
                        query.push(" OR ").push(&column).push(" IS NULL");
                    }
                    query.push(")")
                }
            };
            query.push(") OR ");
            equal_prefix.push((column, value));
        }
        query.push("(");
        push_equalities(query, &equal_prefix);
        query.push(if backward { "page.res_key < " } else { "page.res_key > " }).push_bind(Bind::Int(position.key));
        query.push("))");
    }

    /// The number of matches, ignoring paging.
    ///
    /// When a positive parameter filter can drive the count and every other filter only tests
    /// `res_key`, the count never touches `resources`: index rows exist only for current,
    /// undeleted resources of their own type, so the distinct keys of the driving filter's
    /// index rows, narrowed by the others, are the matches (an index-only scan on PostgreSQL).
    pub fn compile_count(&self, dialect: Dialect) -> CompiledQuery<'_> {
        let mut query = CompiledQuery::new(dialect).with_access(self.access.as_deref());
        let driver = self.filters.iter().position(|f| matches!(f, Filter::Match { negate: false, .. }));
        match driver {
            // The consent scope reads the resource row (source, type), so a scoped count joins it.
            Some(index) if self.access.is_none() && self.filters.iter().all(tests_only_the_key) => {
                let Filter::Match { table, param, any_of, .. } = &self.filters[index] else { unreachable!("a driving Match filter") };
                query.push("SELECT COUNT(*) FROM (SELECT DISTINCT x.res_key FROM ").push(table.name()).push(" x WHERE x.resource_type = ");
                query.push_name(self.resource_type.as_str()).push(" AND x.param = ").push_name(param);
                query.push(" AND (");
                for (position, condition) in any_of.iter().enumerate() {
                    if position > 0 {
                        query.push(" OR ");
                    }
                    push_condition(&mut query, condition);
                }
                query.push(")) r WHERE TRUE");
                for (position, filter) in self.filters.iter().enumerate() {
                    if position != index {
                        query.push(" AND ");
                        push_filter(&mut query, self.resource_type, filter);
                    }
                }
            }
            _ => {
                query.push("SELECT COUNT(*) FROM resources r WHERE ");
                self.push_conditions(&mut query);
            }
        }
        query
    }

    fn push_conditions<'q>(&'q self, query: &mut CompiledQuery<'q>) {
        push_resource_conditions(query, self.resource_type, &self.filters, self.top_level_uses_redacted());
    }
}

/// Whether a filter refers to nothing of the resource row but its key.
fn tests_only_the_key(filter: &Filter) -> bool {
    match filter {
        Filter::Match { .. } | Filter::Missing { .. } | Filter::Chain { .. } | Filter::PatientCompartment(_) | Filter::Nothing => true,
        Filter::AnyOf(filters) => filters.iter().all(tests_only_the_key),
        Filter::Ids(_) | Filter::LastUpdated(_) | Filter::Has { .. } => false,
    }
}

fn sort_column(index: usize, value_type: SortType) -> String {
    let suffix = match value_type {
        SortType::Int => "int",
        SortType::Real => "real",
        SortType::Text => "text",
    };
    format!("sort_{index}_{suffix}")
}

fn push_equalities<'q>(query: &mut CompiledQuery<'q>, equal_prefix: &[(String, &'q SortValue)]) {
    for (column, value) in equal_prefix {
        match value {
            SortValue::Null => query.push(column).push(" IS NULL AND "),
            value => {
                query.push(column).push(" = ");
                push_sort_value(query, value);
                query.push(" AND ")
            }
        };
    }
}

fn push_sort_value<'q>(query: &mut CompiledQuery<'q>, value: &'q SortValue) {
    match value {
        SortValue::Null => query.push("NULL"),
        SortValue::Int(v) => query.push_bind(Bind::Int(*v)),
        SortValue::Real(v) => query.push_bind(Bind::Real(*v)),
        SortValue::Text(v) => query.push_bind(Bind::Text(v)),
    };
}

/// `alias.resource_type = T AND NOT deleted AND filters… AND access` for the alias at the
/// query's depth. `reached_through_redacted`: this level is a Patient matched through elements a
/// restricted patient hides from others.
fn push_resource_conditions<'q>(
    query: &mut CompiledQuery<'q>,
    resource_type: ResourceType,
    filters: &'q [Filter],
    reached_through_redacted: bool,
) {
    let me = alias(query.depth);
    query.push(&me).push(".resource_type = ").push_name(resource_type.as_str());
    query.push(" AND ").push(&me).push(".deleted = FALSE");
    for filter in filters {
        query.push(" AND ");
        push_filter(query, resource_type, filter);
    }
    if let Some(scope) = query.access {
        query.push(" AND ");
        super::access_sql::push_access(query, &me, scope);
        if resource_type.as_str() == "Patient" && (reached_through_redacted || uses_redacted(filters)) {
            query.push(" AND ");
            super::access_sql::push_restricted_guard(query, &me, scope);
        }
    }
}

fn push_filter<'q>(query: &mut CompiledQuery<'q>, resource_type: ResourceType, filter: &'q Filter) {
    let me = alias(query.depth);
    match filter {
        Filter::Ids(ids) => {
            query.push(&me).push(".id IN (").push_list(ids.iter().map(|id| Bind::Text(id))).push(")");
        }
        Filter::LastUpdated(ranges) => {
            query.push("(");
            for (index, range) in ranges.iter().enumerate() {
                if index > 0 {
                    query.push(" OR ");
                }
                let column = format!("{me}.last_updated");
                push_range(query, &column, &column, range, Bind::Int);
            }
            query.push(")");
        }
        Filter::Match { table, param, any_of, negate } => {
            query.push(&me).push(if *negate { ".res_key NOT IN" } else { ".res_key IN" });
            push_index_subquery(query, resource_type, *table, param);
            query.push(" AND (");
            for (index, condition) in any_of.iter().enumerate() {
                if index > 0 {
                    query.push(" OR ");
                }
                push_condition(query, condition);
            }
            query.push("))");
        }
        Filter::Missing { table, param, missing } => {
            query.push(&me).push(if *missing { ".res_key NOT IN" } else { ".res_key IN" });
            push_index_subquery(query, resource_type, *table, param);
            query.push(")");
        }
        Filter::Chain { param, target_type, filter } => {
            query.push(&me).push(".res_key IN (SELECT x.res_key FROM reference_index x WHERE x.resource_type = ");
            query.push_name(resource_type.as_str()).push(" AND x.param = ").push_name(param);
            query.push(" AND x.target_type = ").push_name(target_type.as_str());
            query.depth += 1;
            let inner = alias(query.depth);
            query.push(&format!(" AND x.target_id IN (SELECT {inner}.id FROM resources {inner} WHERE "));
            push_resource_conditions(query, *target_type, std::slice::from_ref(filter), false);
            query.depth -= 1;
            query.push("))");
        }
        Filter::Has { source_type, param, filter } => {
            query.push(&me).push(".id IN (SELECT x.target_id FROM reference_index x WHERE x.resource_type = ");
            query.push_name(source_type.as_str()).push(" AND x.param = ").push_name(param);
            query.push(" AND x.target_type = ").push_name(resource_type.as_str());
            query.depth += 1;
            let inner = alias(query.depth);
            query.push(&format!(" AND x.res_key IN (SELECT {inner}.res_key FROM resources {inner} WHERE "));
            let through_redacted = source_type.as_str() == "Patient" && is_redacted(param);
            push_resource_conditions(query, *source_type, std::slice::from_ref(filter), through_redacted);
            query.depth -= 1;
            query.push("))");
        }
        Filter::AnyOf(filters) => {
            query.push("(");
            for (index, filter) in filters.iter().enumerate() {
                if index > 0 {
                    query.push(" OR ");
                }
                push_filter(query, resource_type, filter);
            }
            query.push(")");
        }
        Filter::PatientCompartment(patient_id) => {
            query.push(&me).push(".res_key IN (SELECT x.res_key FROM patient_compartment x WHERE x.patient_id = ");
            query.push_bind(Bind::Text(patient_id)).push(")");
        }
        Filter::Nothing => {
            query.push("FALSE");
        }
    }
}

/// ` (SELECT x.res_key FROM <table> x WHERE x.resource_type = T AND x.param = P` — left open.
fn push_index_subquery<'q>(query: &mut CompiledQuery<'q>, resource_type: ResourceType, table: IndexTable, param: &'q str) {
    query.push(" (SELECT x.res_key FROM ").push(table.name()).push(" x WHERE x.resource_type = ");
    query.push_name(resource_type.as_str()).push(" AND x.param = ").push_name(param);
}

fn push_token<'q>(query: &mut CompiledQuery<'q>, system_column: &str, code_column: &str, system: &'q SystemMatch, code: Option<&'q str>) {
    query.push("(");
    let mut any = false;
    if let Some(code) = code {
        query.push(code_column).push(" = ").push_bind(Bind::Text(code));
        any = true;
    }
    match system {
        SystemMatch::Any => {}
        SystemMatch::Absent => {
            query.push(if any { " AND " } else { "" }).push(system_column).push(" IS NULL");
            any = true;
        }
        SystemMatch::Is(system) => {
            query.push(if any { " AND " } else { "" }).push(system_column).push(" = ").push_bind(Bind::Text(system));
            any = true;
        }
    }
    if !any {
        query.push("TRUE");
    }
    query.push(")");
}

/// Column names of an index row a condition reads: the plain tables share names; the composite
/// table keeps its second component in columns of its own.
struct Columns {
    system: &'static str,
    code: &'static str,
    unit: &'static str,
    low: &'static str,
    high: &'static str,
}

const PLAIN: Columns = Columns { system: "x.system", code: "x.code", unit: "x.unit", low: "x.low", high: "x.high" };
const SECOND_COMPONENT: Columns = Columns { system: "x.system2", code: "x.code2", unit: "x.unit2", low: "x.low", high: "x.high" };

fn push_condition<'q>(query: &mut CompiledQuery<'q>, condition: &'q Condition) {
    push_condition_on(query, condition, &PLAIN);
}

fn push_condition_on<'q>(query: &mut CompiledQuery<'q>, condition: &'q Condition, columns: &Columns) {
    let Columns { system, code, unit, low, high } = *columns;
    match condition {
        Condition::Token { system: system_match, code: code_value } => {
            push_token(query, system, code, system_match, code_value.as_deref());
        }
        Condition::TokenText(text) => query.push_starts_with("x.text", text),
        Condition::String { mode, value } => match mode {
            StringMatch::StartsWith => query.push_starts_with("x.normalized", value),
            StringMatch::Exact => {
                query.push("x.exact = ").push_bind(Bind::Text(value));
            }
            StringMatch::Contains => query.push_contains("x.normalized", value),
        },
        Condition::Date(range) => push_range(query, low, high, range, Bind::Int),
        Condition::Number(range) => push_range(query, low, high, range, Bind::Real),
        Condition::Quantity { range, system: unit_system, code: unit_code } => {
            query.push("(");
            push_range(query, low, high, range, Bind::Real);
            match (unit_system, unit_code) {
                (Some(unit_system), Some(unit_code)) => {
                    query.push(" AND ").push(system).push(" = ").push_bind(Bind::Text(unit_system));
                    query.push(" AND ").push(code).push(" = ").push_bind(Bind::Text(unit_code));
                }
                (Some(unit_system), None) => {
                    query.push(" AND ").push(system).push(" = ").push_bind(Bind::Text(unit_system));
                }
                (None, Some(unit_code)) => {
                    query.push(" AND (").push(code).push(" = ").push_bind(Bind::Text(unit_code));
                    query.push(" OR ").push(unit).push(" = ").push_bind(Bind::Text(unit_code)).push(")");
                }
                (None, None) => {}
            }
            query.push(")");
        }
        Condition::Uri { mode, value } => match mode {
            UriMatch::Exact => {
                query.push("x.uri = ").push_bind(Bind::Text(value));
            }
            UriMatch::Below => query.push_starts_with("x.uri", value),
            UriMatch::Above => {
                query.push("(x.uri = substr(").push_bind(Bind::Text(value)).push(", 1, length(x.uri)))");
            }
        },
        Condition::Reference { types, id } => {
            query.push("(x.target_id = ").push_bind(Bind::Text(id));
            if !types.is_empty() {
                query.push(" AND x.target_type IN (");
                for (index, target) in types.iter().enumerate() {
                    query.push(if index > 0 { ", " } else { "" }).push_name(target.as_str());
                }
                query.push(")");
            }
            query.push(")");
        }
        Condition::ReferenceUrl(url) => {
            query.push("x.url = ").push_bind(Bind::Text(url));
        }
        Condition::ReferenceIdentifier { system: system_match, value } => {
            push_token(query, "x.identifier_system", "x.identifier_value", system_match, value.as_deref());
        }
        Condition::Composite { first, second } => {
            query.push("(");
            push_condition_on(query, first, &PLAIN);
            query.push(" AND ");
            push_condition_on(query, second, &SECOND_COMPONENT);
            query.push(")");
        }
    }
}

/// A prefixed range condition on an indexed `[low, high]` (R4 search, "Prefixes"): `eq` the
/// search range contains the row's range; `gt`/`lt` the row's range reaches above/below it;
/// `ge`/`le` either; `sa`/`eb` the row's range starts after / ends before it; `ap` the ranges
/// overlap once the search range is widened (the parser widens it).
fn push_range<'q, T: Copy>(query: &mut CompiledQuery<'q>, low: &str, high: &str, range: &Range<T>, bind: fn(T) -> Bind<'q>) {
    let contained = |query: &mut CompiledQuery<'q>| {
        query.push("(").push(low).push(" >= ").push_bind(bind(range.low));
        query.push(" AND ").push(high).push(" <= ").push_bind(bind(range.high)).push(")");
    };
    query.push("(");
    match range.prefix {
        Prefix::Eq => contained(query),
        Prefix::Ne => {
            query.push("NOT ");
            contained(query);
        }
        Prefix::Gt => {
            query.push(high).push(" > ").push_bind(bind(range.high));
        }
        Prefix::Lt => {
            query.push(low).push(" < ").push_bind(bind(range.low));
        }
        Prefix::Ge => {
            query.push(high).push(" > ").push_bind(bind(range.high)).push(" OR ");
            contained(query);
        }
        Prefix::Le => {
            query.push(low).push(" < ").push_bind(bind(range.low)).push(" OR ");
            contained(query);
        }
        Prefix::Sa => {
            query.push(low).push(" > ").push_bind(bind(range.high));
        }
        Prefix::Eb => {
            query.push(high).push(" < ").push_bind(bind(range.low));
        }
        Prefix::Ap => {
            query.push(low).push(" <= ").push_bind(bind(range.high));
            query.push(" AND ").push(high).push(" >= ").push_bind(bind(range.low));
        }
    }
    query.push(")");
}

/// `_include` and `_revinclude` on a page: the resources the page's resources refer to by
/// `param`, or that refer to them.
#[derive(Clone, Debug, PartialEq)]
pub struct Include {
    pub source_type: ResourceType,
    /// `None` for `*`: every reference parameter.
    pub param: Option<String>,
    pub target_type: Option<ResourceType>,
    pub reverse: bool,
    pub iterate: bool,
}

impl Include {
    /// Current resources this include adds for `keys` (store keys of already selected resources).
    pub fn compile<'q>(&'q self, dialect: Dialect, keys: &[i64], access: Option<&'q consent::Scope>) -> CompiledQuery<'q> {
        let mut query = CompiledQuery::new(dialect).with_access(access);
        query.push("SELECT ").push(VERSION_COLUMNS).push(" FROM resources r WHERE r.deleted = FALSE AND ");
        // A restricted Patient's practice is not included through it, nor it through its practice.
        let through_redacted = self.source_type.as_str() == "Patient"
            && self.param.as_deref().is_none_or(is_redacted)
            && access.is_some_and(|s| s.org().is_some());
        if let Some(scope) = access {
            super::access_sql::push_access(&mut query, "r", scope);
            if through_redacted && self.reverse {
                query.push(" AND ");
                super::access_sql::push_restricted_guard(&mut query, "r", scope);
            }
            query.push(" AND ");
        }
        if self.reverse {
            // Resources of source_type whose param refers to one of the keys' resources.
            query.push("r.resource_type = ").push_name(self.source_type.as_str());
            query.push(" AND r.res_key IN (SELECT x.res_key FROM reference_index x JOIN resources t ON t.resource_type = x.target_type AND t.id = x.target_id WHERE x.resource_type = ");
            query.push_name(self.source_type.as_str());
            self.push_param(&mut query);
            query.push(" AND t.res_key IN (").push_list(keys.iter().map(|k| Bind::Int(*k))).push("))");
        } else {
            // Resources the keys' resources (of source_type) refer to by param.
            query.push("(r.resource_type, r.id) IN (SELECT x.target_type, x.target_id FROM reference_index x WHERE x.resource_type = ");
            query.push_name(self.source_type.as_str());
            self.push_param(&mut query);
            query.push(" AND x.res_key IN (").push_list(keys.iter().map(|k| Bind::Int(*k))).push(")");
            if let (true, Some(scope)) = (through_redacted, access) {
                query.push(" AND x.res_key IN (SELECT g.res_key FROM resources g WHERE g.res_key IN (");
                query.push_list(keys.iter().map(|k| Bind::Int(*k))).push(") AND ");
                super::access_sql::push_restricted_guard(&mut query, "g", scope);
                query.push(")");
            }
            query.push(")");
        }
        query.push(" ORDER BY r.res_key");
        query
    }

    fn push_param<'q>(&'q self, query: &mut CompiledQuery<'q>) {
        if let Some(param) = &self.param {
            query.push(" AND x.param = ").push_name(param);
        }
        if let Some(target) = self.target_type {
            query.push(" AND x.target_type = ").push_name(target.as_str());
        }
    }
}

/// `Patient/{id}/$everything`: one patient's compartment, every type (or those listed), held to
/// the access scope, in store-key order after a keyset position.
#[derive(Clone, Debug)]
pub struct CompartmentQuery {
    pub patient_id: String,
    pub types: Vec<ResourceType>,
    pub count: usize,
    pub after: Option<i64>,
    pub access: std::sync::Arc<consent::Scope>,
}

impl CompartmentQuery {
    /// `count + 1` rows, or the number of matches.
    pub fn compile(&self, dialect: Dialect, counting: bool) -> CompiledQuery<'_> {
        let mut query = CompiledQuery::new(dialect).with_access(Some(&self.access));
        query.push(if counting { "SELECT COUNT(*)" } else { "SELECT " });
        if !counting {
            query.push(VERSION_COLUMNS);
        }
        query.push(
            " FROM resources r WHERE r.deleted = FALSE AND r.res_key IN (SELECT c.res_key FROM patient_compartment c WHERE c.patient_id = ",
        );
        query.push_bind(Bind::Text(&self.patient_id)).push(")");
        if !self.types.is_empty() {
            query.push(" AND r.resource_type IN (");
            for (index, resource_type) in self.types.iter().enumerate() {
                query.push(if index > 0 { ", " } else { "" }).push_name(resource_type.as_str());
            }
            query.push(")");
        }
        query.push(" AND ");
        super::access_sql::push_access(&mut query, "r", &self.access);
        if counting {
            return query;
        }
        if let Some(after) = self.after {
            query.push(" AND r.res_key > ").push_bind(Bind::Int(after));
        }
        query.push(" ORDER BY r.res_key LIMIT ").push_bind(Bind::Int(self.count as i64 + 1));
        query
    }
}

impl HistoryScope {
    /// Versions newest first, `limit` rows, optionally below a sequence and since a time.
    pub fn compile<'q>(
        &'q self,
        dialect: Dialect,
        limit: usize,
        before_sequence: Option<i64>,
        since: Option<i64>,
        published_by: Option<&'q str>,
    ) -> CompiledQuery<'q> {
        let mut query = CompiledQuery::new(dialect);
        query.push("SELECT ").push(HISTORY_COLUMNS).push(" WHERE TRUE");
        match self {
            Self::Instance(resource_type, id) => {
                query.push(" AND r.resource_type = ").push_name(resource_type.as_str());
                query.push(" AND r.id = ").push_bind(Bind::Text(id));
            }
            Self::Type(resource_type) => {
                query.push(" AND r.resource_type = ").push_name(resource_type.as_str());
            }
            Self::System => {}
        }
        if let Some(before) = before_sequence {
            query.push(" AND r.sequence < ").push_bind(Bind::Int(before));
        }
        if let Some(since) = since {
            query.push(" AND r.last_updated >= ").push_bind(Bind::Int(since));
        }
        if let Some(organisation) = published_by {
            query.push(" AND r.source_org = ").push_bind(Bind::Text(organisation));
        }
        query.push(" ORDER BY r.sequence DESC LIMIT ").push_bind(Bind::Int(limit as i64));
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient() -> ResourceType {
        ResourceType::parse("Patient").unwrap()
    }

    #[test]
    fn compiles_an_identifier_search() {
        let mut query = SearchQuery::new(patient(), 10);
        query.filters.push(Filter::Match {
            table: IndexTable::Token,
            param: "identifier".into(),
            any_of: vec![Condition::Token {
                system: SystemMatch::Is("https://fhir.nhs.uk/Id/nhs-number".into()),
                code: Some("9449305552".into()),
            }],
            negate: false,
        });
        query.position = Some(Position { values: vec![], key: 5, backward: false });
        let compiled = query.compile_page(Dialect::Postgres);
        assert_eq!(
            compiled.sql,
            "SELECT r.res_key, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.method, r.content, r.source_org FROM resources r \
             WHERE r.resource_type = 'Patient' AND r.deleted = FALSE AND r.res_key IN (SELECT x.res_key FROM token_index x \
             WHERE x.resource_type = 'Patient' AND x.param = 'identifier' AND ((x.code = $1 AND x.system = $2))) AND r.res_key > $3 \
             ORDER BY r.res_key LIMIT $4",
            "the server's names are literals, the client's values binds"
        );
        assert_eq!(compiled.binds.len(), 4);
        let sqlite = query.compile_page(Dialect::Sqlite);
        assert_eq!(sqlite.sql.matches('?').count(), 4);
        assert!(!sqlite.sql.contains('$'));
    }

    #[test]
    fn chains_nest_with_their_own_aliases() {
        let document_reference = ResourceType::parse("DocumentReference").unwrap();
        let mut query = SearchQuery::new(document_reference, 10);
        query.filters.push(Filter::Chain {
            param: "patient".into(),
            target_type: patient(),
            filter: Box::new(Filter::Ids(vec!["p1".into()])),
        });
        let sql = query.compile_page(Dialect::Postgres).sql;
        assert!(
            sql.contains(
                "x.target_id IN (SELECT r1.id FROM resources r1 WHERE r1.resource_type = 'Patient' AND r1.deleted = FALSE AND r1.id IN ($1))"
            ),
            "{sql}"
        );
    }

    #[test]
    fn the_access_scope_compiles_into_every_level_for_every_viewer() {
        use consent::{AccessPolicy, PurposeOfUse, Scope, Viewer};
        let viewers = [
            Viewer::Patient { own: vec!["p1".into()] },
            Viewer::Patient { own: vec![] },
            Viewer::System { org: "RXA".into() },
            Viewer::Clinician { org: "A81001".into(), purpose: PurposeOfUse::Treatment, claimed: vec!["p1".into()] },
            Viewer::Clinician { org: "A81001".into(), purpose: PurposeOfUse::EmergencyTreatment, claimed: vec![] },
            Viewer::Secondary { org: "RXA".into(), purpose: PurposeOfUse::Research },
        ];
        for viewer in viewers {
            let mut query = SearchQuery::new(patient(), 10);
            query.filters.push(Filter::Match {
                table: IndexTable::String,
                param: "address-city".into(),
                any_of: vec![Condition::String { mode: StringMatch::StartsWith, value: "leeds".into() }],
                negate: false,
            });
            query.filters.push(Filter::Has {
                source_type: ResourceType::parse("Observation").unwrap(),
                param: "patient".into(),
                filter: Box::new(Filter::Ids(vec!["o1".into()])),
            });
            query.access = Some(std::sync::Arc::new(Scope::new(&AccessPolicy::default(), &[], viewer.clone(), 0)));
            query.includes.push(Include {
                source_type: patient(),
                param: Some("general-practitioner".into()),
                target_type: None,
                reverse: false,
                iterate: false,
            });
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                for (sql, has_level) in [
                    (query.compile_page(dialect).sql, true),
                    (query.compile_count(dialect).sql, true),
                    (query.includes[0].compile(dialect, &[1, 2], query.access.as_deref()).sql, false),
                ] {
                    let depth = sql.chars().try_fold(0i32, |depth, c| {
                        let depth = depth + i32::from(c == '(') - i32::from(c == ')');
                        (depth >= 0).then_some(depth)
                    });
                    assert_eq!(depth, Some(0), "{viewer:?}: unbalanced parentheses in {sql}");
                    assert!(!has_level || sql.contains("r1_c"), "the _has level is scoped: {sql}");
                }
            }
            let sql = query.compile_page(Dialect::Postgres).sql;
            let staff = !matches!(viewer, Viewer::Patient { .. });
            assert_eq!(
                sql.contains("r_g.kind = 'registered'"),
                staff,
                "restricted patients are guarded from staff searching addresses: {sql}"
            );
        }
    }

    #[test]
    fn sorted_pages_carry_a_keyset_condition() {
        let mut query = SearchQuery::new(patient(), 10);
        query.sort.push(SortKey { by: SortBy::Param { table: IndexTable::Date, param: "birthdate".into() }, descending: true });
        query.position = Some(Position { values: vec![SortValue::Int(7)], key: 3, backward: false });
        let sql = query.compile_page(Dialect::Sqlite).sql;
        assert!(sql.contains("AS sort_0_int"), "{sql}");
        assert!(sql.contains("((page.sort_0_int < ? OR page.sort_0_int IS NULL)) OR (page.sort_0_int = ? AND page.res_key > ?)"), "{sql}");
        assert!(sql.ends_with("ORDER BY page.sort_0_int DESC NULLS LAST, page.res_key LIMIT ?"), "{sql}");
    }
}
