//! Paging links that cannot be tampered with: the position in a result set travels in a
//! `_cursor` parameter signed (HMAC-SHA256) together with the query it belongs to, so that a
//! client cannot edit the query of a `next` link to widen it, nor forge a position.

use ring::hmac;

use crate::store::Position;

pub struct PagingKey(hmac::Key);

/// Parameters that never change what a query selects, left out of its signature.
const UNSIGNED: [&str; 3] = ["_cursor", "_format", "_pretty"];

impl PagingKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The canonical form of a query: its scope (`search Patient`) and its parameters, sorted.
    pub fn canonical(scope: &str, params: &[(String, String)]) -> String {
        let mut pairs: Vec<&(String, String)> = params.iter().filter(|(name, _)| !UNSIGNED.contains(&name.as_str())).collect();
        pairs.sort();
        let mut canonical = String::from(scope);
        for (name, value) in pairs {
            canonical.push('\n');
            canonical.push_str(name);
            canonical.push('=');
            canonical.push_str(value);
        }
        canonical
    }

    /// `position.signature` for the `_cursor` parameter; the position is compact JSON.
    pub fn sign(&self, canonical: &str, position: &Position) -> String {
        let payload = serde_json::to_string(position).expect("a position serializes");
        let signature = self.signature(canonical, &payload);
        format!("{payload}.{signature}")
    }

    /// The position a cursor carries, if it was signed for this query.
    pub fn verify(&self, canonical: &str, cursor: &str) -> Option<Position> {
        let (payload, signature) = cursor.rsplit_once('.')?;
        let expected = self.signature(canonical, payload);
        // Compare in constant time: a timing must not reveal how much of a forgery was right.
        let same_length = expected.len() == signature.len();
        let difference = expected.bytes().zip(signature.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if !same_length || difference != 0 {
            return None;
        }
        serde_json::from_str(payload).ok()
    }

    fn signature(&self, canonical: &str, payload: &str) -> String {
        let tag = hmac::sign(&self.0, format!("{canonical}\n{payload}").as_bytes());
        tag.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn a_cursor_verifies_only_for_its_own_query() {
        let key = PagingKey::new(b"0123456789abcdef0123456789abcdef");
        let canonical = PagingKey::canonical("search Patient", &params(&[("identifier", "x|1"), ("_count", "10")]));
        let position = Position { values: vec![crate::store::SortValue::Text("a.b".into())], key: 42, backward: false };
        let cursor = key.sign(&canonical, &position);
        assert_eq!(key.verify(&canonical, &cursor), Some(position.clone()));
        // order and the cursor itself do not matter
        let same = PagingKey::canonical("search Patient", &params(&[("_count", "10"), ("_cursor", &cursor), ("identifier", "x|1")]));
        assert_eq!(key.verify(&same, &cursor), Some(position));
        // a widened query, a forged position or another key fail
        let widened = PagingKey::canonical("search Patient", &params(&[("_count", "10")]));
        assert_eq!(key.verify(&widened, &cursor), None);
        assert_eq!(key.verify(&canonical, &cursor.replacen("42", "43", 1)), None);
        assert_eq!(PagingKey::new(b"another key of thirty-two bytes!").verify(&canonical, &cursor), None);
    }
}
