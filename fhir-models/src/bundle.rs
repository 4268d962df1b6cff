//! Writing Bundles as bytes: stored resources are spliced in as they are, never re-serialised.

use crate::json::write_string;

/// Builds a Bundle's JSON incrementally.
pub struct BundleWriter {
    out: Vec<u8>,
    entries: usize,
}

/// One `Bundle.link`.
pub struct Link<'a> {
    pub relation: &'a str,
    pub url: &'a str,
}

/// The parts of an entry other than the resource.
#[derive(Default)]
pub struct EntryParts<'a> {
    pub full_url: Option<&'a str>,
    /// Raw JSON of the resource, spliced in as is.
    pub resource: Option<&'a [u8]>,
    /// `search.mode`: `match`, `include` or `outcome`.
    pub search_mode: Option<&'a str>,
    /// `request.method` and `request.url` (history entries).
    pub request: Option<(&'a str, &'a str)>,
    pub response: Option<EntryResponse<'a>>,
}

pub struct EntryResponse<'a> {
    pub status: &'a str,
    pub location: Option<&'a str>,
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
    /// Raw JSON of an OperationOutcome.
    pub outcome: Option<&'a [u8]>,
}

impl BundleWriter {
    /// Start a Bundle: `bundle_type` is `searchset`, `history`, `batch-response`….
    pub fn new(id: &str, last_updated: &str, bundle_type: &str, total: Option<i64>, links: &[Link<'_>]) -> Self {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(b"{\"resourceType\":\"Bundle\",\"id\":");
        write_string(&mut out, id);
        out.extend_from_slice(b",\"meta\":{\"lastUpdated\":");
        write_string(&mut out, last_updated);
        out.extend_from_slice(b"},\"type\":");
        write_string(&mut out, bundle_type);
        if let Some(total) = total {
            out.extend_from_slice(format!(",\"total\":{total}").as_bytes());
        }
        if !links.is_empty() {
            out.extend_from_slice(b",\"link\":[");
            for (index, link) in links.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"relation\":");
                write_string(&mut out, link.relation);
                out.extend_from_slice(b",\"url\":");
                write_string(&mut out, link.url);
                out.push(b'}');
            }
            out.push(b']');
        }
        Self { out, entries: 0 }
    }

    pub fn entry(&mut self, parts: EntryParts<'_>) {
        self.out.extend_from_slice(if self.entries == 0 { b",\"entry\":[{" } else { b",{" });
        self.entries += 1;
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, name: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            write_string(out, name);
            out.push(b':');
        };
        if let Some(full_url) = parts.full_url {
            key(&mut self.out, "fullUrl");
            write_string(&mut self.out, full_url);
        }
        if let Some(resource) = parts.resource {
            key(&mut self.out, "resource");
            self.out.extend_from_slice(resource);
        }
        if let Some(mode) = parts.search_mode {
            key(&mut self.out, "search");
            self.out.extend_from_slice(b"{\"mode\":");
            write_string(&mut self.out, mode);
            self.out.push(b'}');
        }
        if let Some((method, url)) = parts.request {
            key(&mut self.out, "request");
            self.out.extend_from_slice(b"{\"method\":");
            write_string(&mut self.out, method);
            self.out.extend_from_slice(b",\"url\":");
            write_string(&mut self.out, url);
            self.out.push(b'}');
        }
        if let Some(response) = parts.response {
            key(&mut self.out, "response");
            self.out.extend_from_slice(b"{\"status\":");
            write_string(&mut self.out, response.status);
            for (name, value) in [("location", response.location), ("etag", response.etag), ("lastModified", response.last_modified)] {
                if let Some(value) = value {
                    self.out.push(b',');
                    write_string(&mut self.out, name);
                    self.out.push(b':');
                    write_string(&mut self.out, value);
                }
            }
            if let Some(outcome) = response.outcome {
                self.out.extend_from_slice(b",\"outcome\":");
                self.out.extend_from_slice(outcome);
            }
            self.out.push(b'}');
        }
        self.out.push(b'}');
    }

    pub fn finish(mut self) -> Vec<u8> {
        if self.entries > 0 {
            self.out.push(b']');
        }
        self.out.push(b'}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_searchset() {
        let mut writer =
            BundleWriter::new("b1", "2026-01-01T00:00:00Z", "searchset", Some(1), &[Link { relation: "self", url: "https://x/Patient" }]);
        writer.entry(EntryParts {
            full_url: Some("https://x/Patient/1"),
            resource: Some(br#"{"resourceType":"Patient","id":"1"}"#),
            search_mode: Some("match"),
            ..Default::default()
        });
        let bundle: serde_json::Value = serde_json::from_slice(&writer.finish()).unwrap();
        assert_eq!(bundle["total"], 1);
        assert_eq!(bundle["entry"][0]["resource"]["id"], "1");
        assert_eq!(bundle["entry"][0]["search"]["mode"], "match");
        assert_eq!(bundle["link"][0]["relation"], "self");
    }

    #[test]
    fn an_empty_bundle_has_no_entry_array() {
        let bundle: serde_json::Value =
            serde_json::from_slice(&BundleWriter::new("b", "2026-01-01T00:00:00Z", "searchset", Some(0), &[]).finish()).unwrap();
        assert!(bundle.get("entry").is_none());
    }
}
