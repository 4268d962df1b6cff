//! Search parameters from a query string into a [`SearchQuery`].
//!
//! Supported now: `_id`, every token parameter of the type (with `:not`), `_count`, `_total`.
//! Anything else is unknown: with `Prefer: handling=strict` the search is refused (400); by
//! default it is ignored and listed in an OperationOutcome entry, and left out of the `self`
//! link, as the spec asks.

use fhir_models::ResourceType;
use fhir_models::outcome::IssueType;
use fhir_models::search::{ParamKind, table};

use crate::configuration::Limits;
use crate::error::ApiError;
use crate::store::{Filter, SearchQuery, TokenValue, query::SystemMatch};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Handling {
    Strict,
    #[default]
    Lenient,
}

/// A search request, understood.
pub struct ParsedSearch {
    pub query: SearchQuery,
    /// The parameters the search used (for the `self` link and paging signatures).
    pub used: Vec<(String, String)>,
    /// Parameters ignored, with the reason.
    pub ignored: Vec<String>,
    pub cursor: Option<String>,
}

/// Parameters that shape the response, not the match.
const RESULT_PARAMETERS: [&str; 3] = ["_format", "_pretty", "_cursor"];

pub fn parse_search(
    resource_type: ResourceType,
    params: &[(String, String)],
    limits: &Limits,
    handling: Handling,
) -> Result<ParsedSearch, ApiError> {
    let mut query = SearchQuery { resource_type, filters: Vec::new(), count: limits.default_count, after_key: None, include_total: true };
    let mut used = Vec::new();
    let mut ignored = Vec::new();
    let mut cursor = None;
    for (name, value) in params {
        let name = name.as_str();
        match name {
            "_cursor" => cursor = Some(value.clone()),
            _ if RESULT_PARAMETERS.contains(&name) => {}
            "_count" => {
                let count: usize = value.parse().map_err(|_| {
                    ApiError::invalid_at(IssueType::Value, "_count", format!("_count must be a whole number, found {value:?}"))
                })?;
                query.count = count.min(limits.max_count);
                used.push(("_count".to_owned(), query.count.to_string()));
            }
            "_total" => {
                query.include_total = match value.as_str() {
                    "none" => false,
                    "accurate" | "estimate" => true,
                    _ => return Err(ApiError::invalid_at(IssueType::Value, "_total", "_total is none, estimate or accurate")),
                };
                used.push(("_total".to_owned(), value.clone()));
            }
            "_id" => {
                let ids = split_unescaped(value, ',');
                if ids.is_empty() || ids.iter().any(|id| !fhir_models::id::is_valid_id(id)) {
                    return Err(ApiError::invalid_at(IssueType::Value, "_id", format!("not a FHIR id: {value:?}")));
                }
                query.filters.push(Filter::Ids(ids));
                used.push(("_id".to_owned(), value.clone()));
            }
            _ => match token_filter(resource_type, name, value)? {
                Some(filter) => {
                    query.filters.push(filter);
                    used.push((name.to_owned(), value.clone()));
                }
                None => {
                    let reason = format!("the search parameter {name:?} is not supported for {resource_type}");
                    if handling == Handling::Strict {
                        return Err(ApiError::invalid_at(IssueType::NotSupported, name, reason));
                    }
                    ignored.push(reason);
                }
            },
        }
    }
    Ok(ParsedSearch { query, used, ignored, cursor })
}

/// A token parameter, or `None` when `name` is not a supported token parameter of the type.
fn token_filter(resource_type: ResourceType, name: &str, value: &str) -> Result<Option<Filter>, ApiError> {
    let (code, modifier) = match name.split_once(':') {
        Some((code, modifier)) => (code, Some(modifier)),
        None => (name, None),
    };
    let negate = match modifier {
        None => false,
        Some("not") => true,
        Some(_) => return Ok(None),
    };
    let Some(param) = table().get(resource_type, code) else { return Ok(None) };
    if param.kind != ParamKind::Token {
        return Ok(None);
    }
    let mut values = Vec::new();
    for alternative in split_unescaped(value, ',') {
        let parts = split_unescaped_once(&alternative, '|');
        let token = match parts {
            (code, None) => TokenValue { system: SystemMatch::Any, code: non_empty(code) },
            (system, Some(code)) if system.is_empty() => TokenValue { system: SystemMatch::Absent, code: non_empty(code) },
            (system, Some(code)) => TokenValue { system: SystemMatch::Is(system), code: non_empty(code) },
        };
        if token.code.is_none() && token.system == SystemMatch::Any {
            return Err(ApiError::invalid_at(IssueType::Value, name, format!("an empty value for {name} matches nothing")));
        }
        values.push(token);
    }
    if values.is_empty() {
        return Err(ApiError::invalid_at(IssueType::Value, name, format!("{name} needs a value")));
    }
    Ok(Some(Filter::Token { param: code.to_owned(), values, negate }))
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

/// Split at the first unescaped `separator`, keeping escapes in the rest for later splitting.
fn split_unescaped_once(text: &str, separator: char) -> (String, Option<String>) {
    let mut escaped = false;
    for (index, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            return (unescape(&text[..index]), Some(unescape(&text[index + 1..])));
        }
    }
    (unescape(text), None)
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

    fn parse(params: &[(&str, &str)], handling: Handling) -> Result<ParsedSearch, ApiError> {
        let params: Vec<(String, String)> = params.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        parse_search(ResourceType::parse("Patient").unwrap(), &params, &Settings::default().limits, handling)
    }

    #[test]
    fn parses_identifier_tokens() {
        let parsed = parse(&[("identifier", "https://fhir.nhs.uk/Id/nhs-number|9449305552,|x,y,s|")], Handling::Strict).unwrap();
        let Filter::Token { param, values, negate } = &parsed.query.filters[0] else { panic!() };
        assert_eq!(param, "identifier");
        assert!(!negate);
        assert_eq!(
            values[0],
            TokenValue { system: SystemMatch::Is("https://fhir.nhs.uk/Id/nhs-number".into()), code: Some("9449305552".into()) }
        );
        assert_eq!(values[1], TokenValue { system: SystemMatch::Absent, code: Some("x".into()) });
        assert_eq!(values[2], TokenValue { system: SystemMatch::Any, code: Some("y".into()) });
        assert_eq!(values[3], TokenValue { system: SystemMatch::Is("s".into()), code: None });
    }

    #[test]
    fn escapes_are_honoured() {
        assert_eq!(split_unescaped(r"a\,b,c", ','), vec!["a,b", "c"]);
        assert_eq!(split_unescaped_once(r"sys\|x|code", '|'), ("sys|x".to_owned(), Some("code".to_owned())));
    }

    #[test]
    fn unknown_parameters_are_refused_when_strict_and_listed_when_lenient() {
        assert!(parse(&[("nonsense", "1")], Handling::Strict).is_err());
        let lenient = parse(&[("nonsense", "1"), ("gender", "female")], Handling::Lenient).unwrap();
        assert_eq!(lenient.ignored.len(), 1);
        assert_eq!(lenient.used, vec![("gender".to_owned(), "female".to_owned())]);
    }

    #[test]
    fn count_is_capped_and_checked() {
        assert_eq!(parse(&[("_count", "100000")], Handling::Strict).unwrap().query.count, 1000);
        assert!(parse(&[("_count", "ten")], Handling::Strict).is_err());
    }
}
