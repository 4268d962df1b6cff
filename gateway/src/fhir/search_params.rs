//! A search request's parameters, understood: [`parse_search`] turns them into a [`SearchQuery`]
//! the store compiles to SQL, following R4 search (§3.1.1): every parameter type with its
//! modifiers and prefixes, chains, `_has`, the result parameters.
//!
//! Anything the gateway does not support is unknown: with `Prefer: handling=strict` the search
//! is refused (400); by default it is ignored, listed in an OperationOutcome entry, and left
//! out of the `self` link, as the spec asks.

use fhir_models::ResourceType;
use fhir_models::datetime::parse_range;
use fhir_models::outcome::IssueType;
use fhir_models::search::{ParamKind, SearchParamDef, normalize_string, table};

use crate::configuration::Limits;
use crate::error::ApiError;
use crate::store::query::{MAX_SORT_KEYS, Prefix, Range, StringMatch, SystemMatch, UriMatch};
use crate::store::{Condition, Filter, Include, IndexTable, SearchQuery, SortBy, SortKey, TotalMode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Handling {
    Strict,
    #[default]
    Lenient,
}

/// `_summary`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Summary {
    #[default]
    False,
    True,
    Text,
    Data,
    Count,
}

/// A search request, understood.
pub struct ParsedSearch {
    pub query: SearchQuery,
    /// The parameters the search used (for the `self` link and paging signatures).
    pub used: Vec<(String, String)>,
    /// Parameters ignored, with the reason.
    pub ignored: Vec<String>,
    pub cursor: Option<String>,
    pub summary: Summary,
    /// `_elements`: the top-level elements to keep.
    pub elements: Option<Vec<String>>,
}

/// Parameters that shape the response's encoding, not what it holds.
const FORMAT_PARAMETERS: [&str; 2] = ["_format", "_pretty"];

/// How deep chains and `_has` may nest.
const MAX_CHAIN_DEPTH: usize = 3;

/// A parameter the gateway cannot evaluate, and why.
struct Unsupported(String);

type ParamResult = Result<Result<Filter, Unsupported>, ApiError>;

pub fn parse_search(
    resource_type: ResourceType,
    params: &[(String, String)],
    limits: &Limits,
    handling: Handling,
) -> Result<ParsedSearch, ApiError> {
    let mut parsed = ParsedSearch {
        query: SearchQuery::new(resource_type, limits.default_count),
        used: Vec::new(),
        ignored: Vec::new(),
        cursor: None,
        summary: Summary::False,
        elements: None,
    };
    parsed.query.total = TotalMode::Accurate;
    for (name, value) in params {
        let name = name.as_str();
        let outcome = match name {
            "_cursor" => {
                parsed.cursor = Some(value.clone());
                continue;
            }
            _ if FORMAT_PARAMETERS.contains(&name) => continue,
            "_count" => {
                let count = super::parse_count(value)?;
                parsed.query.count = count.min(limits.max_count);
                parsed.used.push(("_count".to_owned(), parsed.query.count.to_string()));
                continue;
            }
            "_total" => {
                parsed.query.total = match value.as_str() {
                    "none" => TotalMode::None,
                    // An estimate is allowed to be exact; counting is what the store does.
                    "accurate" | "estimate" => TotalMode::Accurate,
                    _ => return Err(invalid(name, "_total is none, estimate or accurate")),
                };
                Ok(())
            }
            "_summary" => {
                parsed.summary = match value.as_str() {
                    "true" => Summary::True,
                    "false" => Summary::False,
                    "text" => Summary::Text,
                    "data" => Summary::Data,
                    "count" => Summary::Count,
                    _ => return Err(invalid(name, "_summary is true, false, text, data or count")),
                };
                Ok(())
            }
            "_elements" => {
                let elements: Vec<String> = split_unescaped(value, ',').into_iter().map(|e| e.trim().to_owned()).collect();
                if elements.iter().any(|e| e.is_empty() || e.contains('.')) {
                    return Err(invalid(name, "_elements lists top-level element names, such as identifier,name"));
                }
                parsed.elements = Some(elements);
                Ok(())
            }
            "_sort" => parse_sort(resource_type, value).map(|keys| parsed.query.sort = keys),
            _ if name == "_include" || name == "_revinclude" || name.starts_with("_include:") || name.starts_with("_revinclude:") => {
                parse_include(resource_type, name, value).map(|include| parsed.query.includes.push(include))
            }
            _ => match parse_param(resource_type, name, value, 0)? {
                Ok(filter) => {
                    parsed.query.filters.push(filter);
                    Ok(())
                }
                Err(reason) => Err(reason),
            },
        };
        match outcome {
            Ok(()) => parsed.used.push((name.to_owned(), value.clone())),
            Err(Unsupported(reason)) => {
                if handling == Handling::Strict {
                    return Err(ApiError::invalid_at(IssueType::NotSupported, name, reason));
                }
                parsed.ignored.push(reason);
            }
        }
    }
    if parsed.summary == Summary::Count {
        parsed.query.count = 0;
        parsed.query.total = TotalMode::Accurate;
    }
    Ok(parsed)
}

/// The search a conditional interaction runs (`If-None-Exist`, conditional update and delete,
/// conditional references in a transaction): strict, at most two matches — one is the answer,
/// two are ambiguous — and no total. `None` when the condition names no search parameter.
pub fn conditional_query(resource_type: ResourceType, condition: &str, limits: &Limits) -> Result<Option<SearchQuery>, ApiError> {
    let parsed = parse_search(resource_type, &super::create::parse_query_string(condition), limits, Handling::Strict)?;
    if parsed.query.filters.is_empty() {
        return Ok(None);
    }
    // A conditional write looks unscoped (it decides what is written), and answers whether it
    // matched: on anything but keys that would tell a writer what records it may not see hold
    // (`code=<HIV test>&subject:Patient.identifier=…`). Identifiers, ids and a patient's
    // identifier are what idempotent publishing needs.
    if let Some(name) = parsed.used.iter().map(|(name, _)| name.as_str()).find(|name| !is_key_parameter(name)) {
        return Err(ApiError::invalid_at(
            IssueType::NotSupported,
            name,
            format!(
                "a conditional write matches on identifiers only (identifier, _id, patient.identifier, subject:Patient.identifier), not {name}"
            ),
        ));
    }
    let mut query = parsed.query;
    query.count = 2;
    query.total = TotalMode::None;
    Ok(Some(query))
}

/// The parameters a conditional write may match on.
fn is_key_parameter(name: &str) -> bool {
    matches!(
        name,
        "identifier"
            | "_id"
            | "patient.identifier"
            | "subject.identifier"
            | "patient:Patient.identifier"
            | "subject:Patient.identifier"
            | "beneficiary.identifier"
            | "_count"
    )
}

fn invalid(name: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_at(IssueType::Value, name, message)
}

/// One search parameter (`name=value`) on `resource_type`, chains and `_has` included.
fn parse_param(resource_type: ResourceType, name: &str, value: &str, depth: usize) -> ParamResult {
    if let Some(rest) = name.strip_prefix("_has:") {
        return parse_has(resource_type, name, rest, value, depth);
    }
    if let Some((head, rest)) = name.split_once('.') {
        return parse_chain(resource_type, name, head, rest, value, depth);
    }
    let (code, modifier) = match name.split_once(':') {
        Some((code, modifier)) => (code, Some(modifier)),
        None => (name, None),
    };
    match code {
        "_id" => {
            if modifier.is_some() {
                return Ok(Err(Unsupported(format!("_id takes no modifier ({name})"))));
            }
            let ids = split_unescaped(value, ',');
            if ids.is_empty() || ids.iter().any(|id| !fhir_models::id::is_valid_id(id)) {
                return Err(invalid(name, format!("not a FHIR id: {value:?}")));
            }
            return Ok(Ok(Filter::Ids(ids)));
        }
        "_lastUpdated" => {
            if modifier.is_some() {
                return Ok(Err(Unsupported(format!("_lastUpdated takes no modifier ({name})"))));
            }
            let ranges = split_values(name, value)?.iter().map(|v| date_range(name, v)).collect::<Result<_, _>>()?;
            return Ok(Ok(Filter::LastUpdated(ranges)));
        }
        _ => {}
    }
    let Some(param) = table().get(resource_type, code) else {
        return Ok(Err(Unsupported(format!("the search parameter {code:?} is not a parameter of {resource_type} the gateway supports"))));
    };
    let Some(index) = index_table(param) else {
        return Ok(Err(Unsupported(format!("the search parameter {code:?} of {resource_type} is not supported"))));
    };
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(invalid(name, ":missing is true or false")),
        };
        return Ok(Ok(Filter::Missing { table: index, param: code.to_owned(), missing }));
    }
    let mut negate = false;
    let mut any_of = Vec::new();
    let values = split_values(name, value)?;
    match (param.kind, modifier) {
        (ParamKind::Token, None | Some("not")) => {
            negate = modifier.is_some();
            for value in &values {
                let (system, code) = token_value(name, value)?;
                any_of.push(Condition::Token { system, code });
            }
        }
        (ParamKind::Token, Some("text")) => any_of.extend(values.iter().map(|v| Condition::TokenText(normalize_string(v)))),
        (ParamKind::String, None | Some("contains")) => {
            let mode = if modifier.is_some() { StringMatch::Contains } else { StringMatch::StartsWith };
            any_of.extend(values.iter().map(|v| Condition::String { mode, value: normalize_string(v) }));
        }
        (ParamKind::String, Some("exact")) => {
            any_of.extend(values.iter().map(|v| Condition::String { mode: StringMatch::Exact, value: v.clone() }));
        }
        (ParamKind::Date, None) => {
            for value in &values {
                any_of.push(Condition::Date(date_range(name, value)?));
            }
        }
        (ParamKind::Number, None) => {
            for value in &values {
                any_of.push(Condition::Number(number_range(name, value)?));
            }
        }
        (ParamKind::Quantity, None) => {
            for value in &values {
                any_of.push(quantity(name, value)?);
            }
        }
        (ParamKind::Uri, None | Some("below") | Some("above")) => {
            let mode = match modifier {
                Some("below") => UriMatch::Below,
                Some("above") => UriMatch::Above,
                _ => UriMatch::Exact,
            };
            any_of.extend(values.iter().map(|v| Condition::Uri { mode, value: v.clone() }));
        }
        (ParamKind::Reference, Some("identifier")) => {
            for value in &values {
                let (system, value) = token_value(name, value)?;
                any_of.push(Condition::ReferenceIdentifier { system, value });
            }
        }
        (ParamKind::Reference, modifier) => {
            let type_modifier = match modifier {
                None => None,
                Some(type_name) => match ResourceType::parse(type_name) {
                    Ok(target) if param.targets.is_empty() || param.targets.contains(&target) => Some(target),
                    _ => return Ok(Err(Unsupported(format!("{name}: {type_name:?} is not a modifier of {code}")))),
                },
            };
            for value in &values {
                match reference_condition(param, type_modifier, value) {
                    Some(condition) => any_of.push(condition),
                    None => continue,
                }
            }
            if any_of.is_empty() {
                // Every value names a type the parameter cannot refer to: nothing matches.
                return Ok(Ok(Filter::Nothing));
            }
        }
        (ParamKind::Composite, None) => {
            for value in &values {
                match composite(param, name, value)? {
                    Ok(condition) => any_of.push(condition),
                    Err(reason) => return Ok(Err(reason)),
                }
            }
        }
        (kind, Some(modifier)) => {
            return Ok(Err(Unsupported(format!("the modifier :{modifier} is not supported on {} parameter {code}", kind.code()))));
        }
        (kind, None) => return Ok(Err(Unsupported(format!("{} parameters such as {code} are not supported", kind.code())))),
    }
    Ok(Ok(Filter::Match { table: index, param: code.to_owned(), any_of, negate }))
}

/// Whether the gateway can search by a parameter (what the CapabilityStatement advertises).
pub fn is_supported(param: &SearchParamDef) -> bool {
    matches!(param.code.as_str(), "_id" | "_lastUpdated") || index_table(param).is_some()
}

/// The index table a parameter's values live in, if the gateway indexes that kind.
fn index_table(param: &SearchParamDef) -> Option<IndexTable> {
    Some(match param.kind {
        ParamKind::Token => IndexTable::Token,
        ParamKind::String => IndexTable::String,
        ParamKind::Date => IndexTable::Date,
        ParamKind::Number => IndexTable::Number,
        ParamKind::Quantity => IndexTable::Quantity,
        ParamKind::Uri => IndexTable::Uri,
        ParamKind::Reference => IndexTable::Reference,
        ParamKind::Composite if composite_supported(param) => IndexTable::Composite,
        ParamKind::Composite | ParamKind::Special => return None,
    })
}

/// Composites the store indexes: a token, then a token, quantity or date (see `index_composite`).
fn composite_supported(param: &SearchParamDef) -> bool {
    param.paths.iter().all(|path| match path.components.as_slice() {
        [first, second] => {
            first.kind == ParamKind::Token && matches!(second.kind, ParamKind::Token | ParamKind::Quantity | ParamKind::Date)
        }
        _ => false,
    })
}

fn composite(param: &SearchParamDef, name: &str, value: &str) -> Result<Result<Condition, Unsupported>, ApiError> {
    let Some(second_kind) = param.paths.first().and_then(|p| p.components.get(1)).map(|c| c.kind) else {
        return Ok(Err(Unsupported(format!("{name} has no components"))));
    };
    let Some((first, second)) = split_unescaped_once_raw(value, '$') else {
        return Err(invalid(name, format!("a composite value is two values joined by $, found {value:?}")));
    };
    let (system, code) = token_value(name, &unescape(&first))?;
    let second = unescape(&second);
    let second = match second_kind {
        ParamKind::Token => {
            let (system, code) = token_value(name, &second)?;
            Condition::Token { system, code }
        }
        ParamKind::Quantity => quantity(name, &second)?,
        _ => {
            let range = date_range(name, &second)?;
            // The composite table holds dates as floating-point microseconds.
            Condition::Number(Range { prefix: range.prefix, low: range.low as f64, high: range.high as f64 })
        }
    };
    Ok(Ok(Condition::Composite { first: Box::new(Condition::Token { system, code }), second: Box::new(second) }))
}

/// `subject:Patient.name=…`, `patient.identifier=…`: the reference parameter `head` refers to a
/// resource the rest of the name selects.
fn parse_chain(resource_type: ResourceType, name: &str, head: &str, rest: &str, value: &str, depth: usize) -> ParamResult {
    if depth >= MAX_CHAIN_DEPTH {
        return Ok(Err(Unsupported(format!("{name}: chains go {MAX_CHAIN_DEPTH} levels deep at most"))));
    }
    let (code, type_modifier) = match head.split_once(':') {
        Some((code, type_name)) => match ResourceType::parse(type_name) {
            Ok(target) => (code, Some(target)),
            Err(_) => return Ok(Err(Unsupported(format!("{name}: {type_name:?} is not a resource type")))),
        },
        None => (head, None),
    };
    let Some(param) = table().get(resource_type, code).filter(|p| p.kind == ParamKind::Reference) else {
        return Ok(Err(Unsupported(format!("{name}: {code:?} is not a reference parameter of {resource_type}"))));
    };
    let candidates: Vec<ResourceType> = match type_modifier {
        Some(target) => vec![target],
        None => param.targets.clone(),
    };
    let mut branches = Vec::new();
    let mut reasons = Vec::new();
    for target in candidates {
        match parse_param(target, rest, value, depth + 1)? {
            Ok(filter) => branches.push(Filter::Chain { param: code.to_owned(), target_type: target, filter: Box::new(filter) }),
            Err(Unsupported(reason)) => reasons.push(reason),
        }
    }
    Ok(match branches.len() {
        0 => Err(Unsupported(format!("{name}: no resource {code} refers to has the parameter {rest:?}"))),
        1 => Ok(branches.remove(0)),
        _ => Ok(Filter::AnyOf(branches)),
    })
}

/// `_has:Observation:patient:code=…`: some Observation whose `patient` refers to the resource
/// matches `code=…`.
fn parse_has(resource_type: ResourceType, name: &str, rest: &str, value: &str, depth: usize) -> ParamResult {
    if depth >= MAX_CHAIN_DEPTH {
        return Ok(Err(Unsupported(format!("{name}: _has nests {MAX_CHAIN_DEPTH} levels deep at most"))));
    }
    let mut parts = rest.splitn(3, ':');
    let (Some(source), Some(reference), Some(inner)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid(name, "_has is written _has:Type:reference:parameter=value"));
    };
    let Ok(source_type) = ResourceType::parse(source) else {
        return Err(invalid(name, format!("{source:?} is not a resource type")));
    };
    let refers_here = table()
        .get(source_type, reference)
        .is_some_and(|p| p.kind == ParamKind::Reference && (p.targets.is_empty() || p.targets.contains(&resource_type)));
    if !refers_here {
        return Ok(Err(Unsupported(format!("{name}: {reference:?} of {source_type} does not refer to {resource_type}"))));
    }
    Ok(parse_param(source_type, inner, value, depth + 1)?.map(|filter| Filter::Has {
        source_type,
        param: reference.to_owned(),
        filter: Box::new(filter),
    }))
}

/// A reference value: `Type/id`, a bare id, or an absolute or canonical URL. `None` when it
/// names a type the parameter (or its `:Type` modifier) rules out.
fn reference_condition(param: &SearchParamDef, type_modifier: Option<ResourceType>, value: &str) -> Option<Condition> {
    if value.contains("://") || value.starts_with("urn:") {
        let url = value.split('|').next().unwrap_or(value);
        return Some(Condition::ReferenceUrl(url.to_owned()));
    }
    let mut segments = value.split('/');
    match (segments.next(), segments.next()) {
        (Some(type_name), Some(id)) => {
            let target = ResourceType::parse(type_name).ok()?;
            let allowed = (param.targets.is_empty() || param.targets.contains(&target)) && type_modifier.is_none_or(|t| t == target);
            allowed.then(|| Condition::Reference { types: vec![target], id: id.to_owned() })
        }
        _ => Some(Condition::Reference { types: type_modifier.into_iter().collect(), id: value.to_owned() }),
    }
}

/// `_sort=a,-b`
fn parse_sort(resource_type: ResourceType, value: &str) -> Result<Vec<SortKey>, Unsupported> {
    let mut keys = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (code, descending) = match part.strip_prefix('-') {
            Some(code) => (code, true),
            None => (part, false),
        };
        let by = match code {
            "_id" => SortBy::Id,
            "_lastUpdated" => SortBy::LastUpdated,
            _ => match table().get(resource_type, code).and_then(|p| index_table(p).map(|t| (p, t))) {
                Some((_, IndexTable::Composite)) | None => {
                    return Err(Unsupported(format!("_sort: {code:?} is not a parameter of {resource_type} the gateway sorts by")));
                }
                Some((_, table)) => SortBy::Param { table, param: code.to_owned() },
            },
        };
        keys.push(SortKey { by, descending });
    }
    if keys.len() > MAX_SORT_KEYS {
        return Err(Unsupported(format!("_sort takes at most {MAX_SORT_KEYS} keys")));
    }
    Ok(keys)
}

/// `_include=Source:param[:Target]`, `_revinclude=Source:param[:Target]`, `:iterate`, `Source:*`.
fn parse_include(resource_type: ResourceType, name: &str, value: &str) -> Result<Include, Unsupported> {
    let (base, modifier) = name.split_once(':').map_or((name, None), |(b, m)| (b, Some(m)));
    let iterate = match modifier {
        None => false,
        Some("iterate" | "recurse") => true,
        Some(other) => return Err(Unsupported(format!("{base}: the modifier :{other} is not supported"))),
    };
    let reverse = base == "_revinclude";
    let mut parts = value.split(':');
    let (Some(source), Some(code)) = (parts.next(), parts.next()) else {
        return Err(Unsupported(format!("{name}={value}: write Type:parameter or Type:parameter:TargetType")));
    };
    let Ok(source_type) = ResourceType::parse(source) else {
        return Err(Unsupported(format!("{name}={value}: {source:?} is not a resource type")));
    };
    if !reverse && !iterate && source_type != resource_type {
        return Err(Unsupported(format!("{name}={value}: _include names the searched type ({resource_type}) unless :iterate")));
    }
    let target_type = match parts.next() {
        Some(target) => {
            Some(ResourceType::parse(target).map_err(|_| Unsupported(format!("{name}={value}: {target:?} is not a resource type")))?)
        }
        None => None,
    };
    let param = if code == "*" {
        None
    } else if table().get(source_type, code).is_some_and(|p| p.kind == ParamKind::Reference) {
        Some(code.to_owned())
    } else {
        return Err(Unsupported(format!("{name}={value}: {code:?} is not a reference parameter of {source_type}")));
    };
    Ok(Include { source_type, param, target_type, reverse, iterate })
}

/// Split a parameter's value at unescaped commas (OR); an empty value is an error.
fn split_values(name: &str, value: &str) -> Result<Vec<String>, ApiError> {
    let values = split_unescaped(value, ',');
    if values.is_empty() {
        return Err(invalid(name, format!("{name} needs a value")));
    }
    Ok(values)
}

fn token_value(name: &str, value: &str) -> Result<(SystemMatch, Option<String>), ApiError> {
    let (system, code) = match split_unescaped_once(value, '|') {
        (code, None) => (SystemMatch::Any, non_empty(code)),
        (system, Some(code)) if system.is_empty() => (SystemMatch::Absent, non_empty(code)),
        (system, Some(code)) => (SystemMatch::Is(system), non_empty(code)),
    };
    if code.is_none() && system == SystemMatch::Any {
        return Err(invalid(name, format!("an empty value for {name} matches nothing")));
    }
    Ok((system, code))
}

/// A prefix (`ge2020`, `lt5.4`) and what follows it.
fn prefix(value: &str) -> (Prefix, &str) {
    let prefix = match value.get(..2) {
        Some("eq") => Prefix::Eq,
        Some("ne") => Prefix::Ne,
        Some("gt") => Prefix::Gt,
        Some("lt") => Prefix::Lt,
        Some("ge") => Prefix::Ge,
        Some("le") => Prefix::Le,
        Some("sa") => Prefix::Sa,
        Some("eb") => Prefix::Eb,
        Some("ap") => Prefix::Ap,
        _ => return (Prefix::Eq, value),
    };
    (prefix, &value[2..])
}

fn date_range(name: &str, value: &str) -> Result<Range<i64>, ApiError> {
    let (prefix, text) = prefix(value);
    let Some((range, _)) = parse_range(text) else {
        return Err(invalid(
            name,
            format!("{value:?} is not a FHIR date, dateTime or instant (2024, 2024-05, 2024-05-17, 2024-05-17T10:00:00Z)"),
        ));
    };
    let (mut low, mut high) = (range.low, range.high);
    if prefix == Prefix::Ap {
        // Approximately: within 10 % of the distance between the value and now (at least a day).
        let now = fhir_models::datetime::to_micros(time::OffsetDateTime::now_utc());
        let margin = ((now - low).abs() / 10).max(86_400_000_000);
        low = low.saturating_sub(margin);
        high = high.saturating_add(margin);
    }
    Ok(Range { prefix, low, high })
}

/// A number and the range its precision implies (`100` is 99.5 to 100.5) for `eq`, `ne` and
/// `ap`; the other prefixes compare with the number itself (R4 search, "number").
fn number_range(name: &str, value: &str) -> Result<Range<f64>, ApiError> {
    let (prefix, text) = prefix(value);
    let number: f64 = text
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
        .ok_or_else(|| invalid(name, format!("{value:?} is not a number (with an optional prefix such as gt)")))?;
    let (low, high) = match prefix {
        Prefix::Eq | Prefix::Ne => {
            // [value - half a step, value + half a step): the upper end is excluded.
            let half_step = 0.5 * 10f64.powi(least_significant_exponent(text));
            (number - half_step, (number + half_step).next_down())
        }
        Prefix::Ap => {
            let margin = (number * 0.1).abs();
            (number - margin, number + margin)
        }
        _ => (number, number),
    };
    Ok(Range { prefix, low, high })
}

/// The power of ten of the last digit written: `100` → 0, `5.40` → -2, `5e1` → 1, `1.5e2` → 1.
fn least_significant_exponent(text: &str) -> i32 {
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let decimals = mantissa.split_once('.').map_or(0, |(_, fraction)| fraction.len() as i32);
    exponent - decimals
}

/// `5.4|http://unitsofmeasure.org|mg`, `5.4||mg`, `5.4`
fn quantity(name: &str, value: &str) -> Result<Condition, ApiError> {
    let (number, rest) = split_unescaped_once(value, '|');
    let range = number_range(name, &number)?;
    let (system, code) = match rest {
        None => (None, None),
        Some(rest) => match split_unescaped_once(&rest, '|') {
            (code, None) => (None, non_empty(code)),
            (system, Some(code)) => (non_empty(system), non_empty(code)),
        },
    };
    Ok(Condition::Quantity { range, system, code })
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// Split on `separator` where it is not escaped with `\`, removing the escapes.
pub fn split_unescaped(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c == separator => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts.retain(|part| !part.is_empty());
    parts
}

/// Split at the first unescaped `separator`, keeping the escapes on both sides.
fn split_unescaped_once_raw(text: &str, separator: char) -> Option<(String, String)> {
    let mut escaped = false;
    for (index, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            return Some((text[..index].to_owned(), text[index + c.len_utf8()..].to_owned()));
        }
    }
    None
}

/// Split at the first unescaped `separator`, unescaping the first part.
fn split_unescaped_once(text: &str, separator: char) -> (String, Option<String>) {
    match split_unescaped_once_raw(text, separator) {
        Some((first, rest)) => (unescape(&first), Some(rest)),
        None => (unescape(text), None),
    }
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::Settings;

    fn parse_on(resource_type: &str, params: &[(&str, &str)], handling: Handling) -> Result<ParsedSearch, ApiError> {
        let params: Vec<(String, String)> = params.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        parse_search(ResourceType::parse(resource_type).unwrap(), &params, &Settings::default().limits, handling)
    }

    fn parse(params: &[(&str, &str)], handling: Handling) -> Result<ParsedSearch, ApiError> {
        parse_on("Patient", params, handling)
    }

    #[test]
    fn parses_identifier_tokens() {
        let parsed = parse(&[("identifier", "https://fhir.nhs.uk/Id/nhs-number|9449305552,|x,y,s|")], Handling::Strict).unwrap();
        let Filter::Match { param, any_of, negate, table } = &parsed.query.filters[0] else { panic!() };
        assert_eq!((param.as_str(), *negate, *table), ("identifier", false, IndexTable::Token));
        assert_eq!(
            any_of[0],
            Condition::Token { system: SystemMatch::Is("https://fhir.nhs.uk/Id/nhs-number".into()), code: Some("9449305552".into()) }
        );
        assert_eq!(any_of[1], Condition::Token { system: SystemMatch::Absent, code: Some("x".into()) });
        assert_eq!(any_of[2], Condition::Token { system: SystemMatch::Any, code: Some("y".into()) });
        assert_eq!(any_of[3], Condition::Token { system: SystemMatch::Is("s".into()), code: None });
    }

    #[test]
    fn escapes_are_honoured() {
        assert_eq!(split_unescaped(r"a\,b,c", ','), vec!["a,b", "c"]);
        assert_eq!(split_unescaped_once(r"sys\|x|code", '|'), ("sys|x".to_owned(), Some("code".to_owned())));
    }

    #[test]
    fn unknown_parameters_are_refused_when_strict_and_listed_when_lenient() {
        assert!(parse(&[("nonsense", "1")], Handling::Strict).is_err());
        assert!(parse(&[("gender:below", "f")], Handling::Strict).is_err());
        let lenient = parse(&[("nonsense", "1"), ("gender", "female")], Handling::Lenient).unwrap();
        assert_eq!(lenient.ignored.len(), 1);
        assert_eq!(lenient.used, vec![("gender".to_owned(), "female".to_owned())]);
    }

    #[test]
    fn count_is_capped_and_checked() {
        assert_eq!(parse(&[("_count", "100000")], Handling::Strict).unwrap().query.count, 1000);
        assert!(parse(&[("_count", "ten")], Handling::Strict).is_err());
    }

    #[test]
    fn numbers_carry_their_precision() {
        let eq = number_range("n", "100").unwrap();
        assert_eq!((eq.low, eq.high), (99.5, 100.5f64.next_down()));
        let eq = number_range("n", "5e1").unwrap();
        assert_eq!((eq.low, eq.high), (45.0, 55f64.next_down()));
        let eq = number_range("n", "5.40").unwrap();
        assert!((eq.low - 5.395).abs() < 1e-9 && (eq.high - 5.405).abs() < 1e-9);
        let gt = number_range("n", "gt100").unwrap();
        assert_eq!((gt.prefix, gt.low, gt.high), (Prefix::Gt, 100.0, 100.0));
        assert!(number_range("n", "lots").is_err());
    }

    #[test]
    fn chains_resolve_their_target_types() {
        let parsed = parse_on("DocumentReference", &[("patient.identifier", "s|1")], Handling::Strict).unwrap();
        let Filter::Chain { param, target_type, .. } = &parsed.query.filters[0] else { panic!("{:?}", parsed.query.filters) };
        assert_eq!((param.as_str(), target_type.as_str()), ("patient", "Patient"));
        // subject refers to many types; only some have `identifier`
        let parsed = parse_on("Observation", &[("subject.identifier", "s|1")], Handling::Strict).unwrap();
        let Filter::AnyOf(branches) = &parsed.query.filters[0] else { panic!() };
        assert!(branches.len() > 1);
        let parsed = parse_on("Observation", &[("subject:Patient.name", "smith")], Handling::Strict).unwrap();
        assert!(matches!(&parsed.query.filters[0], Filter::Chain { target_type, .. } if target_type.as_str() == "Patient"));
        assert!(parse_on("Observation", &[("subject.nonsense", "x")], Handling::Strict).is_err());
    }

    #[test]
    fn has_names_a_referring_type() {
        let parsed = parse(&[("_has:Observation:patient:code", "1234-5")], Handling::Strict).unwrap();
        assert!(
            matches!(&parsed.query.filters[0], Filter::Has { source_type, param, .. } if source_type.as_str() == "Observation" && param == "patient")
        );
        assert!(parse(&[("_has:Observation:code:code", "x")], Handling::Strict).is_err());
    }

    #[test]
    fn result_parameters() {
        let parsed =
            parse(&[("_sort", "-birthdate,_id"), ("_include", "Patient:general-practitioner"), ("_summary", "count")], Handling::Strict)
                .unwrap();
        assert_eq!(parsed.query.sort.len(), 2);
        assert!(parsed.query.sort[0].descending);
        assert_eq!(parsed.query.includes.len(), 1);
        assert_eq!(parsed.query.count, 0);
        assert!(parse(&[("_include", "Observation:subject")], Handling::Strict).is_err());
        assert!(parse(&[("_sort", "a,b,c,d")], Handling::Strict).is_err());
    }
}
