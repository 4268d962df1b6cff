//! The registry of API clients, from `[[clients]]` in the configuration.

use std::collections::HashMap;

use anyhow::bail;
use consent::{RegisteredClient, SmartScopes};

use crate::certs::normalize_fingerprint;
use crate::configuration::ClientEntry;
use crate::tls::PeerCertificate;

#[derive(Default)]
pub struct ClientRegistry {
    by_fingerprint: HashMap<String, RegisteredClient>,
    by_subject: HashMap<String, RegisteredClient>,
}

impl ClientRegistry {
    pub fn new(entries: &[ClientEntry]) -> anyhow::Result<Self> {
        let mut registry = Self::default();
        for entry in entries {
            let scopes = match &entry.scopes {
                Some(scopes) => SmartScopes::parse(scopes.iter().map(String::as_str)),
                None => SmartScopes::parse(entry.kind.default_scopes().iter().copied()),
            }
            .map_err(|error| anyhow::anyhow!("client {:?}: {error}", entry.name))?;
            let client = RegisteredClient { name: entry.name.clone(), kind: entry.kind, ods: entry.ods.clone(), scopes };
            match (&entry.fingerprint, &entry.subject) {
                (Some(fingerprint), _) => {
                    let Some(fingerprint) = normalize_fingerprint(fingerprint) else {
                        bail!("client {:?}: fingerprint must be 64 hex digits (SHA-256 of the certificate)", entry.name);
                    };
                    if registry.by_fingerprint.insert(fingerprint, client.clone()).is_some() {
                        bail!("client {:?}: another client has the same certificate fingerprint", entry.name);
                    }
                }
                (None, Some(subject)) => {
                    if registry.by_subject.insert(subject.clone(), client).is_some() {
                        bail!("client {:?}: another client has the same certificate subject", entry.name);
                    }
                }
                (None, None) => bail!("client {:?}: give a certificate fingerprint or subject", entry.name),
            }
        }
        Ok(registry)
    }

    /// The registered client a verified certificate belongs to.
    pub fn identify(&self, certificate: &PeerCertificate) -> Option<&RegisteredClient> {
        self.by_fingerprint
            .get(&certificate.fingerprint)
            .or_else(|| certificate.subject_common_name.as_ref().and_then(|subject| self.by_subject.get(subject)))
    }

    pub fn len(&self) -> usize {
        self.by_fingerprint.len() + self.by_subject.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
