//! FHIR references: `Patient/123`, `Patient/123/_history/2`, absolute URLs, `urn:uuid:…`,
//! contained (`#x`) and conditional (`Patient?identifier=…`) references.

use crate::id::is_valid_id;
use crate::resource_type::ResourceType;

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Reference<'a> {
    /// `Type/id` or `Type/id/_history/v`, possibly behind a base URL.
    Literal { base: Option<&'a str>, resource_type: ResourceType, id: &'a str, version: Option<&'a str> },
    /// `urn:uuid:…` or `urn:oid:…`: a placeholder inside a Bundle.
    Urn(&'a str),
    /// `#id`: a contained resource.
    Contained(&'a str),
    /// `Type?search`: resolved by search when a transaction is processed.
    Conditional { resource_type: ResourceType, query: &'a str },
    /// A URL that does not end in `Type/id`.
    Other(&'a str),
}

impl<'a> Reference<'a> {
    pub fn parse(text: &'a str) -> Self {
        if let Some(rest) = text.strip_prefix('#') {
            return Self::Contained(rest);
        }
        if text.starts_with("urn:uuid:") || text.starts_with("urn:oid:") {
            return Self::Urn(text);
        }
        if let Some((head, query)) = text.split_once('?')
            && let Ok(resource_type) = ResourceType::parse(head)
        {
            return Self::Conditional { resource_type, query };
        }
        let (path, version) = match text.rsplit_once("/_history/") {
            Some((path, version)) if is_valid_id(version) => (path, Some(version)),
            _ => (text, None),
        };
        let mut segments = path.rsplitn(3, '/');
        let id = segments.next();
        let type_name = segments.next();
        let base = segments.next();
        if let (Some(id), Some(type_name)) = (id, type_name)
            && is_valid_id(id)
            && let Ok(resource_type) = ResourceType::parse(type_name)
        {
            return Self::Literal { base, resource_type, id, version };
        }
        Self::Other(text)
    }

    /// The `Type/id` of a literal reference, if it is one.
    pub fn local(&self) -> Option<(ResourceType, &'a str)> {
        match self {
            Self::Literal { resource_type, id, .. } => Some((*resource_type, id)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let patient = ResourceType::parse("Patient").unwrap();
        assert_eq!(Reference::parse("Patient/123"), Reference::Literal { base: None, resource_type: patient, id: "123", version: None });
        assert_eq!(
            Reference::parse("https://example.org/fhir/Patient/1/_history/2"),
            Reference::Literal { base: Some("https://example.org/fhir"), resource_type: patient, id: "1", version: Some("2") }
        );
        assert_eq!(Reference::parse("urn:uuid:abc"), Reference::Urn("urn:uuid:abc"));
        assert_eq!(Reference::parse("#p1"), Reference::Contained("p1"));
        assert_eq!(Reference::parse("Patient?identifier=x|1"), Reference::Conditional { resource_type: patient, query: "identifier=x|1" });
        assert_eq!(Reference::parse("Foo/1"), Reference::Other("Foo/1"));
        assert_eq!(Reference::parse("http://x/y"), Reference::Other("http://x/y"));
    }
}
