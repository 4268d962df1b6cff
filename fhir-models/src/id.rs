//! Logical ids and version ids.

use std::fmt;

/// A FHIR logical id: 1 to 64 of `A-Z a-z 0-9 - .`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ResourceId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a FHIR id is 1 to 64 characters of A-Z, a-z, 0-9, '-' and '.'")]
pub struct InvalidId;

impl ResourceId {
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        if is_valid_id(text) { Ok(Self(text.to_owned())) } else { Err(InvalidId) }
    }

    /// Wrap an id the caller made itself (a UUID) without checking it again.
    pub fn from_trusted(text: String) -> Self {
        debug_assert!(is_valid_id(&text));
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn is_valid_id(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl AsRef<str> for ResourceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A version id: the gateway numbers versions 1, 2, 3… per resource.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct VersionId(pub i64);

impl VersionId {
    pub fn parse(text: &str) -> Option<Self> {
        let number: i64 = text.parse().ok()?;
        (number > 0 && text.bytes().all(|b| b.is_ascii_digit())).then_some(Self(number))
    }

    /// Parse a weak or strong ETag as sent in `If-Match`: `W/"3"` or `"3"`.
    pub fn from_etag(etag: &str) -> Option<Self> {
        let etag = etag.trim();
        let etag = etag.strip_prefix("W/").unwrap_or(etag);
        Self::parse(etag.strip_prefix('"')?.strip_suffix('"')?)
    }

    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.0)
    }

    pub fn next(&self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(ResourceId::parse("a1-b.2").is_ok());
        assert!(ResourceId::parse("").is_err());
        assert!(ResourceId::parse("a/b").is_err());
        assert!(ResourceId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn etags() {
        assert_eq!(VersionId::from_etag("W/\"3\""), Some(VersionId(3)));
        assert_eq!(VersionId::from_etag("\"12\""), Some(VersionId(12)));
        assert_eq!(VersionId::from_etag("3"), None);
        assert_eq!(VersionId::from_etag("W/\"-1\""), None);
        assert_eq!(VersionId(4).etag(), "W/\"4\"");
    }
}
