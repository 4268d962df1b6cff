//! The transaction Bundle a translator produces: conditional upserts keyed on the source's own
//! identifiers, so applying the same input twice changes nothing, and `urn:uuid:` placeholders
//! (derived from the input, so translating twice gives the same Bundle) for references between
//! entries.

use ring::digest::{SHA256, digest};
use serde_json::{Value, json};

pub struct TransactionBuilder {
    seed: [u8; 32],
    entries: Vec<Value>,
}

impl TransactionBuilder {
    /// `seed` names the input (a message key, a file and row): placeholders derive from it.
    pub fn new(seed: &str) -> Self {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest(&SHA256, seed.as_bytes()).as_ref());
        Self { seed: bytes, entries: Vec::new() }
    }

    fn placeholder(&self) -> String {
        let mut input = self.seed.to_vec();
        input.extend_from_slice(&(self.entries.len() as u64).to_be_bytes());
        let hash = digest(&SHA256, &input);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash.as_ref()[..16]);
        format!("urn:uuid:{}", uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// `PUT [type]?[condition]`: update the one resource the condition matches, or create it.
    /// Returns the placeholder other entries reference it by. One message names one resource
    /// once: a second entry with the same condition (a repeated PID) is the first one.
    pub fn upsert(&mut self, resource: Value, condition: &str) -> String {
        self.keyed(resource, condition, |resource_type| json!({"method": "PUT", "url": format!("{resource_type}?{condition}")}))
    }

    /// `POST [type]` with `ifNoneExist`: create the resource only if the condition matches
    /// nothing, else reference what it matches, unchanged. For records a message mentions but
    /// does not own (the Patient of a result or a document: its demographics come from ADT).
    pub fn ensure(&mut self, resource: Value, condition: &str) -> String {
        self.keyed(resource, condition, |resource_type| json!({"method": "POST", "url": resource_type, "ifNoneExist": condition}))
    }

    /// Add an entry keyed on `condition` with the request `request` makes, unless one is there.
    fn keyed(&mut self, resource: Value, condition: &str, request: impl FnOnce(&str) -> Value) -> String {
        let resource_type = resource["resourceType"].as_str().expect("translators build typed resources").to_owned();
        if let Some(existing) = self.find(&resource_type, condition) {
            return existing;
        }
        let full_url = self.placeholder();
        self.entries.push(json!({"fullUrl": full_url, "resource": resource, "request": request(&resource_type)}));
        full_url
    }

    /// The placeholder of the entry already keyed on `condition`, if any.
    pub fn find(&self, resource_type: &str, condition: &str) -> Option<String> {
        let conditional_url = format!("{resource_type}?{condition}");
        self.entries
            .iter()
            .find(|entry| {
                let request = &entry["request"];
                request["url"] == conditional_url.as_str() || (request["url"] == resource_type && request["ifNoneExist"] == condition)
            })
            .and_then(|entry| entry["fullUrl"].as_str().map(str::to_owned))
    }

    /// `PUT [type]/[id]` for a resource whose id the translator derives itself (Provenance).
    pub fn put(&mut self, resource: Value) -> String {
        let url = format!(
            "{}/{}",
            resource["resourceType"].as_str().expect("translators build typed resources"),
            resource["id"].as_str().expect("a PUT by id needs an id")
        );
        let full_url = self.placeholder();
        self.entries.push(json!({"fullUrl": full_url, "resource": resource, "request": {"method": "PUT", "url": url}}));
        full_url
    }

    /// `DELETE [type]?[condition]`: remove what the condition matches (nothing, if nothing does).
    pub fn delete(&mut self, resource_type: &str, condition: &str) {
        self.entries.push(json!({"request": {"method": "DELETE", "url": format!("{resource_type}?{condition}")}}));
    }

    /// The resource of an entry already added, to link it to a later one.
    pub fn resource_mut(&mut self, full_url: &str) -> Option<&mut Value> {
        self.entries.iter_mut().find(|entry| entry["fullUrl"] == full_url).map(|entry| &mut entry["resource"])
    }

    /// The placeholders of the entries so far that create or update (what a Provenance targets;
    /// deletes have none).
    pub fn full_urls(&self) -> Vec<String> {
        self.entries.iter().filter_map(|entry| entry["fullUrl"].as_str().map(str::to_owned)).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn finish(self) -> Value {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": self.entries})
    }
}

/// Where translated records came from, for their Provenance.
pub struct Source<'a> {
    /// The Provenance's id, derived from the input's key.
    pub id: &'a str,
    /// An instant.
    pub recorded: &'a str,
    /// Who sent it (a facility, a practice).
    pub author: &'a str,
    /// The input's key: `urn:hie:<format>:<kind>` and its value.
    pub system: &'a str,
    pub key: &'a str,
    /// The input in words: a message type and id, or an extract's files and rows.
    pub display: &'a str,
    /// RFC 6920 digest of the input as received, and what was digested.
    pub digest: &'a str,
    pub digested: &'a str,
}

/// The Provenance of a translation: what it wrote (`targets`), from which input, when, by whom.
pub fn provenance(source: &Source<'_>, targets: &[String]) -> Value {
    json!({
        "resourceType": "Provenance",
        "id": source.id,
        "target": targets.iter().map(|target| json!({"reference": target})).collect::<Vec<_>>(),
        "recorded": source.recorded,
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}]},
        "agent": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
            "who": {"display": source.author},
        }],
        "entity": [
            {"role": "source", "what": {"identifier": {"system": source.system, "value": source.key}, "display": source.display}},
            {"role": "source", "what": {"identifier": {"system": "urn:ietf:rfc:3986", "value": source.digest}, "display": source.digested}},
        ],
    })
}

/// One transaction of several translators' Bundles (several patients of an extract), so they
/// commit together. Entries that create the same shared record if it is missing (the practice's
/// Organization, `POST` + `ifNoneExist`) are kept once, and references to the copies are pointed
/// at the one kept: two creates of one record in one transaction would make it twice.
pub fn merge_transactions<'a>(bundles: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut entries: Vec<Value> = Vec::new();
    let mut kept: std::collections::HashMap<(String, String), String> = std::collections::HashMap::new();
    let mut aliases: Vec<(String, String)> = Vec::new();
    for bundle in bundles {
        for entry in bundle["entry"].as_array().into_iter().flatten() {
            let request = &entry["request"];
            if let (Some("POST"), Some(condition), Some(full_url)) =
                (request["method"].as_str(), request["ifNoneExist"].as_str(), entry["fullUrl"].as_str())
            {
                let key = (request["url"].as_str().unwrap_or_default().to_owned(), condition.to_owned());
                if let Some(first) = kept.get(&key) {
                    aliases.push((full_url.to_owned(), first.clone()));
                    continue;
                }
                kept.insert(key, full_url.to_owned());
            }
            entries.push(entry.clone());
        }
    }
    if !aliases.is_empty() {
        for entry in &mut entries {
            repoint(entry, &aliases);
        }
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// Replace every `reference` that names an alias with the placeholder it stands for.
fn repoint(value: &mut Value, aliases: &[(String, String)]) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "reference"
                    && let Value::String(reference) = child
                    && let Some((_, to)) = aliases.iter().find(|(from, _)| from == reference)
                {
                    *reference = to.clone();
                } else {
                    repoint(child, aliases);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| repoint(item, aliases)),
        _ => {}
    }
}

/// A search-parameter value as it goes into a request URL: `%`, `&`, `#`, `+` and spaces are
/// percent-encoded so the value survives the query string.
pub fn query_value(text: &str) -> String {
    use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
    const QUERY_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'&').add(b'#').add(b'+').add(b'=').add(b'?');
    utf8_percent_encode(text, QUERY_VALUE).to_string()
}

/// A token search value with FHIR's search escapes (`\`, `,`, `|`, `$`), so a source's
/// identifier containing them matches itself and never becomes an OR or a system separator.
pub fn escape_search(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | ',' | '|' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A resource id derived from a name: `prefix-` and 40 hex digits of its SHA-256.
pub fn derived_id(prefix: &str, name: &str) -> String {
    let hash = digest(&SHA256, name.as_bytes());
    let hex: String = hash.as_ref()[..20].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// RFC 6920 "named information" URI of some bytes: how a Provenance says exactly which input
/// it came from.
pub fn content_digest(bytes: &[u8]) -> String {
    use base64::Engine;
    let hash = digest(&SHA256, bytes);
    format!("ni:///sha-256;{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_transactions_create_a_shared_record_once_and_point_at_it() {
        let patient = |seed: &str, nhs: &str| {
            let mut builder = TransactionBuilder::new(seed);
            let org = builder.ensure(json!({"resourceType": "Organization", "name": "Practice"}), "identifier=ods|Y90001");
            builder
                .upsert(json!({"resourceType": "Patient", "generalPractitioner": [{"reference": org}]}), &format!("identifier=nhs|{nhs}"));
            builder.finish()
        };
        let (first, second) = (patient("a", "1"), patient("b", "2"));
        let merged = merge_transactions([&first, &second]);
        let entries = merged["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 3, "one Organization, two Patients");
        let organisation = entries[0]["fullUrl"].as_str().unwrap();
        assert_eq!(entries[1]["resource"]["generalPractitioner"][0]["reference"], organisation);
        assert_eq!(entries[2]["resource"]["generalPractitioner"][0]["reference"], organisation, "the copy's reference is repointed");
    }

    #[test]
    fn placeholders_are_deterministic_and_distinct() {
        let build = || {
            let mut builder = TransactionBuilder::new("RRK|PAS|MSG1");
            let a = builder.upsert(json!({"resourceType": "Patient"}), "identifier=x|1");
            let b = builder.upsert(json!({"resourceType": "Encounter"}), "identifier=x|2");
            (a, b, builder.finish())
        };
        let (a, b, bundle) = build();
        assert_ne!(a, b);
        assert_eq!(build().2, bundle);
        assert_eq!(bundle["entry"][1]["request"]["url"], "Encounter?identifier=x|2");
        assert_ne!(TransactionBuilder::new("other").placeholder(), a);
    }

    #[test]
    fn one_resource_per_condition_in_one_message() {
        let mut builder = TransactionBuilder::new("x");
        let first = builder.upsert(json!({"resourceType": "Patient", "name": [{"family": "A"}]}), "identifier=s|1");
        assert_eq!(builder.upsert(json!({"resourceType": "Patient"}), "identifier=s|1"), first);
        assert_eq!(builder.ensure(json!({"resourceType": "Patient"}), "identifier=s|1"), first);
        let ensured = builder.ensure(json!({"resourceType": "Patient"}), "identifier=s|2");
        assert_eq!(builder.upsert(json!({"resourceType": "Patient"}), "identifier=s|2"), ensured);
        assert_ne!(builder.upsert(json!({"resourceType": "Encounter"}), "identifier=s|1"), first);
        let bundle = builder.finish();
        assert_eq!(bundle["entry"].as_array().unwrap().len(), 3);
        assert_eq!(bundle["entry"][1]["request"], json!({"method": "POST", "url": "Patient", "ifNoneExist": "identifier=s|2"}));
    }

    #[test]
    fn query_values_and_ids() {
        assert_eq!(query_value("urn:hie:a|K 1&2"), "urn:hie:a|K%201%262");
        let id = derived_id("hl7v2", "x");
        assert_eq!(id.len(), 46);
        assert!(id.starts_with("hl7v2-"));
        assert_eq!(content_digest(b"abc"), "ni:///sha-256;ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
    }
}
