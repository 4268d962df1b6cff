//! Byte-level JSON work on resources: the gateway stores and serves JSON bytes, so it must
//! set `id` and `meta` without re-serialising the rest (which would lose decimal precision
//! such as `1.50`, and cost time on every read).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A resource's top level, each member's value kept as its raw JSON text.
pub struct RawMembers<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawMembers<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = RawMembers<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if members.iter().any(|(existing, _): &(Cow<str>, &RawValue)| *existing == key) {
                        return Err(serde::de::Error::custom(format_args!("duplicate property {key:?}")));
                    }
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(RawMembers(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

impl<'a> RawMembers<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// Server-owned metadata stamped on every stored version.
pub struct StoredMeta<'a> {
    pub id: &'a str,
    pub version_id: i64,
    /// FHIR instant, e.g. `2026-11-22T10:00:00.123456Z`.
    pub last_updated: &'a str,
}

/// Rewrite a resource for storage: `resourceType`, `id` and `meta` first (with `versionId` and
/// `lastUpdated` set, other `meta` members kept), every other member after them in its original
/// order and untouched apart from whitespace.
pub fn stamp_resource(raw: &[u8], stamp: &StoredMeta<'_>) -> Result<Vec<u8>, serde_json::Error> {
    let members = RawMembers::parse(raw)?;
    let meta = match members.get("meta") {
        Some(meta) => RawMembers::parse(meta.get().as_bytes())?,
        None => RawMembers(Vec::new()),
    };

    let mut out = Vec::with_capacity(raw.len() + 96);
    out.push(b'{');
    if let Some(resource_type) = members.get("resourceType") {
        out.extend_from_slice(b"\"resourceType\":");
        minify_into(resource_type.get().as_bytes(), &mut out);
        out.push(b',');
    }
    out.extend_from_slice(b"\"id\":");
    write_string(&mut out, stamp.id);
    out.extend_from_slice(b",\"meta\":{\"versionId\":");
    write_string(&mut out, &stamp.version_id.to_string());
    out.extend_from_slice(b",\"lastUpdated\":");
    write_string(&mut out, stamp.last_updated);
    write_members(&mut out, &meta, &["versionId", "lastUpdated"]);
    out.push(b'}');
    write_members(&mut out, &members, &["resourceType", "id", "meta"]);
    out.push(b'}');
    Ok(out)
}

/// Every Coding in a resource (objects with a string `system` and `code`), outside `meta`.
pub fn codings(resource: &serde_json::Value) -> Vec<(&str, &str)> {
    fn walk<'v>(value: &'v serde_json::Value, out: &mut Vec<(&'v str, &'v str)>) {
        match value {
            serde_json::Value::Object(object) => {
                if let (Some(serde_json::Value::String(system)), Some(serde_json::Value::String(code))) =
                    (object.get("system"), object.get("code"))
                {
                    out.push((system, code));
                }
                object.values().for_each(|child| walk(child, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let serde_json::Value::Object(object) = resource {
        for (key, value) in object {
            if key != "meta" {
                walk(value, &mut out);
            }
        }
    }
    out
}

/// Add security labels (`system` and each of `codes`) to `meta.security`, keeping the labels
/// already there and everything else as written.
pub fn add_security_labels(raw: &[u8], system: &str, codes: &[&str]) -> Result<Vec<u8>, serde_json::Error> {
    let members = RawMembers::parse(raw)?;
    let meta = match members.get("meta") {
        Some(meta) => RawMembers::parse(meta.get().as_bytes())?,
        None => RawMembers(Vec::new()),
    };
    let existing: Vec<&RawValue> = match meta.get("security") {
        Some(security) => serde_json::from_str(security.get())?,
        None => Vec::new(),
    };
    let has = |code: &str| {
        existing.iter().any(|label| {
            serde_json::from_str::<serde_json::Value>(label.get()).is_ok_and(|label| label["system"] == system && label["code"] == code)
        })
    };
    let mut security = vec![b'['];
    for label in &existing {
        if security.len() > 1 {
            security.push(b',');
        }
        minify_into(label.get().as_bytes(), &mut security);
    }
    for code in codes.iter().filter(|code| !has(code)) {
        if security.len() > 1 {
            security.push(b',');
        }
        security.extend_from_slice(b"{\"system\":");
        write_string(&mut security, system);
        security.extend_from_slice(b",\"code\":");
        write_string(&mut security, code);
        security.push(b'}');
    }
    security.push(b']');
    let mut new_meta = vec![b'{'];
    for (key, value) in meta.0.iter().filter(|(key, _)| key.as_ref() != "security") {
        if new_meta.len() > 1 {
            new_meta.push(b',');
        }
        write_string(&mut new_meta, key);
        new_meta.push(b':');
        minify_into(value.get().as_bytes(), &mut new_meta);
    }
    if new_meta.len() > 1 {
        new_meta.push(b',');
    }
    new_meta.extend_from_slice(b"\"security\":");
    new_meta.extend_from_slice(&security);
    new_meta.push(b'}');

    let mut out = Vec::with_capacity(raw.len() + new_meta.len());
    out.push(b'{');
    let mut meta_written = false;
    for (key, value) in &members.0 {
        if out.len() > 1 {
            out.push(b',');
        }
        write_string(&mut out, key);
        out.push(b':');
        if key.as_ref() == "meta" {
            out.extend_from_slice(&new_meta);
            meta_written = true;
        } else {
            minify_into(value.get().as_bytes(), &mut out);
        }
    }
    if !meta_written {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(b"\"meta\":");
        out.extend_from_slice(&new_meta);
    }
    out.push(b'}');
    Ok(out)
}

/// Set a resource's `id`, keeping everything else as written.
pub fn set_id(raw: &[u8], id: &str) -> Result<Vec<u8>, serde_json::Error> {
    let members = RawMembers::parse(raw)?;
    let mut out = Vec::with_capacity(raw.len() + 48);
    out.extend_from_slice(b"{\"id\":");
    write_string(&mut out, id);
    write_members(&mut out, &members, &["id"]);
    out.push(b'}');
    Ok(out)
}

/// Append `,"key":value` for each member not in `skip`, minified.
fn write_members(out: &mut Vec<u8>, members: &RawMembers<'_>, skip: &[&str]) {
    for (key, value) in &members.0 {
        if skip.contains(&key.as_ref()) {
            continue;
        }
        out.push(b',');
        write_string(out, key);
        out.push(b':');
        minify_into(value.get().as_bytes(), out);
    }
}

/// Append `text` as a JSON string literal.
pub fn write_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("writing a string to a Vec cannot fail");
}

/// Copy JSON text, dropping whitespace outside strings. The input must be valid JSON.
pub fn minify_into(json: &[u8], out: &mut Vec<u8>) {
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            out.push(byte);
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
            if byte == b'"' {
                in_string = true;
            }
            out.push(byte);
        }
    }
}

/// Keep only the named top-level members (and `resourceType`, `id`, `meta`), as `_elements`
/// asks; the result is tagged SUBSETTED by the caller.
pub fn select_members(raw: &[u8], keep: &[&str]) -> Result<Vec<u8>, serde_json::Error> {
    let members = RawMembers::parse(raw)?;
    let mut out = Vec::with_capacity(raw.len());
    out.push(b'{');
    let mut first = true;
    for (key, value) in &members.0 {
        let mandatory = matches!(key.as_ref(), "resourceType" | "id" | "meta");
        if !mandatory && !keep.contains(&key.as_ref()) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_string(&mut out, key);
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    Ok(out)
}

/// Members whose string value can be a link to another entry of a transaction: `reference`
/// (Reference.reference) and `url` (Attachment.url and other uri-typed elements). R4 transaction
/// processing rewrites links, not every string that happens to equal a `fullUrl`: an
/// `Identifier.value` of `urn:uuid:…` is data and stays as written.
pub const LINK_MEMBERS: [&str; 2] = ["reference", "url"];

/// Copy a JSON document, minified, replacing the value of every link member (see
/// [`LINK_MEMBERS`]) for which `replace` gives a new value (transaction processing swaps
/// `urn:uuid:` placeholders and conditional references for the ids it assigned). One linear
/// pass; numbers and everything else are copied as written.
pub fn rewrite_strings(raw: &[u8], replace: &dyn Fn(&str) -> Option<String>) -> Result<Vec<u8>, serde_json::Error> {
    // Reject what is not JSON before rewriting it.
    serde_json::from_slice::<serde::de::IgnoredAny>(raw)?;
    let mut out = Vec::with_capacity(raw.len());
    let mut position = 0;
    // The last member name seen, and whether the previous significant byte was the `:` after it.
    let mut link_member = false;
    let mut after_colon = false;
    while position < raw.len() {
        let byte = raw[position];
        if byte != b'"' {
            if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                out.push(byte);
                after_colon = byte == b':';
            }
            position += 1;
            continue;
        }
        let start = position;
        let mut end = position + 1;
        let mut escaped = false;
        while end < raw.len() {
            match raw[end] {
                b'\\' => {
                    escaped = true;
                    end += 2;
                }
                b'"' => break,
                _ => end += 1,
            }
        }
        let token = &raw[start..=end.min(raw.len() - 1)];
        let is_key = raw[end + 1..].iter().find(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t')) == Some(&b':');
        let text = || -> Option<String> {
            if escaped {
                serde_json::from_slice::<String>(token).ok()
            } else {
                std::str::from_utf8(&token[1..token.len() - 1]).ok().map(str::to_owned)
            }
        };
        let replacement = if is_key {
            link_member = text().is_some_and(|name| LINK_MEMBERS.contains(&name.as_str()));
            None
        } else if link_member && after_colon {
            text().and_then(|value| replace(&value))
        } else {
            None
        };
        match replacement {
            Some(text) => write_string(&mut out, &text),
            None => out.extend_from_slice(token),
        }
        after_colon = false;
        position = end + 1;
    }
    Ok(out)
}

/// Replace the value of every link member (see [`LINK_MEMBERS`]) in a parsed document for
/// which `replace` gives a new value; returns how many were replaced.
pub fn rewrite_value_strings(value: &mut serde_json::Value, replace: &dyn Fn(&str) -> Option<String>) -> usize {
    match value {
        serde_json::Value::Array(items) => items.iter_mut().map(|item| rewrite_value_strings(item, replace)).sum(),
        serde_json::Value::Object(members) => members
            .iter_mut()
            .map(|(name, member)| match member {
                serde_json::Value::String(text) if LINK_MEMBERS.contains(&name.as_str()) => match replace(text) {
                    Some(replacement) => {
                        *text = replacement;
                        1
                    }
                    None => 0,
                },
                other => rewrite_value_strings(other, replace),
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_id_and_meta_and_keeps_decimal_precision() {
        let raw = br#"{ "valueQuantity": {"value": 1.50, "unit": "mg"},
            "resourceType": "Observation", "id": "old", "meta": {"versionId": "9", "profile": ["x"]}, "status": "final" }"#;
        let stamped = stamp_resource(raw, &StoredMeta { id: "new", version_id: 2, last_updated: "2026-01-01T00:00:00Z" }).unwrap();
        let text = String::from_utf8(stamped).unwrap();
        assert_eq!(
            text,
            r#"{"resourceType":"Observation","id":"new","meta":{"versionId":"2","lastUpdated":"2026-01-01T00:00:00Z","profile":["x"]},"valueQuantity":{"value":1.50,"unit":"mg"},"status":"final"}"#
        );
    }

    #[test]
    fn security_labels_are_added_beside_the_publisher_s_and_nothing_else_moves() {
        let raw = br#"{"resourceType":"Condition","meta":{"profile":["p"],"security":[{"system":"s","code":"R"}]},"code":{"coding":[{"system":"http://snomed.info/sct","code":"86406008"}]},"onsetAge":{"value":1.50}}"#;
        let labelled = add_security_labels(raw, "a", &["HIV", "R"]).unwrap();
        assert_eq!(
            String::from_utf8(labelled).unwrap(),
            r#"{"resourceType":"Condition","meta":{"profile":["p"],"security":[{"system":"s","code":"R"},{"system":"a","code":"HIV"},{"system":"a","code":"R"}]},"code":{"coding":[{"system":"http://snomed.info/sct","code":"86406008"}]},"onsetAge":{"value":1.50}}"#
        );
        let without_meta = add_security_labels(br#"{"resourceType":"Condition","id":"1"}"#, "a", &["STD"]).unwrap();
        assert_eq!(
            String::from_utf8(without_meta).unwrap(),
            r#"{"resourceType":"Condition","id":"1","meta":{"security":[{"system":"a","code":"STD"}]}}"#
        );
        let value: serde_json::Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(codings(&value), [("http://snomed.info/sct", "86406008")], "meta's own codings are not the resource's codes");
    }

    #[test]
    fn minify_keeps_whitespace_inside_strings() {
        let mut out = Vec::new();
        minify_into(br#"{ "a" : "x \" y\\" , "b" : [ 1 , 2 ] }"#, &mut out);
        assert_eq!(out, br#"{"a":"x \" y\\","b":[1,2]}"#);
    }

    #[test]
    fn rejects_duplicate_members() {
        assert!(RawMembers::parse(br#"{"a":1,"a":2}"#).is_err());
    }

    #[test]
    fn rewrites_strings_and_keeps_numbers() {
        let raw = br#"{"subject": {"reference": "urn:uuid:1"}, "value": 1.50, "note": ["urn:uuid:1", "x"],
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1"}], "content": [{"attachment": {"url" : "urn:uuid:1"}}]}"#;
        let replace = |s: &str| (s == "urn:uuid:1").then(|| "Patient/p".to_owned());
        let out = rewrite_strings(raw, &replace).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"subject":{"reference":"Patient/p"},"value":1.50,"note":["urn:uuid:1","x"],"identifier":[{"system":"urn:ietf:rfc:3986","value":"urn:uuid:1"}],"content":[{"attachment":{"url":"Patient/p"}}]}"#,
            "links are rewritten; an identifier's value and other strings are data"
        );
        let mut value: serde_json::Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(rewrite_value_strings(&mut value, &replace), 2);
        assert_eq!(value, serde_json::from_slice::<serde_json::Value>(&out).unwrap());
    }

    #[test]
    fn rewrites_escaped_strings_and_values() {
        let raw = br#"{"reference": "x\"y", "url": "urn:uuid:1", "c": {"reference" : "urn:uuid:1", "d": ["urn:uuid:1"]}}"#;
        let replace = |s: &str| match s {
            "urn:uuid:1" => Some("Patient/p".to_owned()),
            "x\"y" => Some("z".to_owned()),
            _ => None,
        };
        assert_eq!(
            std::str::from_utf8(&rewrite_strings(raw, &replace).unwrap()).unwrap(),
            r#"{"reference":"z","url":"Patient/p","c":{"reference":"Patient/p","d":["urn:uuid:1"]}}"#
        );
        let mut value: serde_json::Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(rewrite_value_strings(&mut value, &replace), 3);
        assert_eq!(value["c"]["reference"], "Patient/p");
        assert_eq!(value["c"]["d"][0], "urn:uuid:1");
        assert!(rewrite_strings(b"{\"a\": ", &replace).is_err());
    }

    #[test]
    fn selects_members() {
        let out = select_members(br#"{"resourceType":"Patient","id":"1","name":[],"gender":"male"}"#, &["gender"]).unwrap();
        assert_eq!(out, br#"{"resourceType":"Patient","id":"1","gender":"male"}"#);
    }
}
