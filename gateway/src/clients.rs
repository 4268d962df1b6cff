//! The registry of API clients, from `[[clients]]` in the configuration.

use std::collections::HashMap;

use anyhow::bail;
use consent::{PurposeOfUse, RegisteredClient, SmartScopes};

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
            let secondary_uses = entry
                .secondary_uses
                .iter()
                .map(|code| match PurposeOfUse::parse(code) {
                    Some(purpose) if purpose.is_secondary() => Ok(purpose),
                    _ => Err(anyhow::anyhow!(
                        "client {:?}: secondary_uses holds {code:?}; the secondary uses are HOPERAT, HRESCH and PUBHLTH",
                        entry.name
                    )),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let client = RegisteredClient { name: entry.name.clone(), kind: entry.kind, ods: entry.ods.clone(), scopes, secondary_uses };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(secondary_uses: &[&str]) -> ClientEntry {
        ClientEntry {
            name: "research-unit".into(),
            kind: consent::ClientKind::Trust,
            ods: fhir_models::OdsCode::parse("RYY").unwrap(),
            fingerprint: None,
            subject: Some("research-unit".into()),
            scopes: None,
            secondary_uses: secondary_uses.iter().map(|code| (*code).to_owned()).collect(),
        }
    }

    #[test]
    fn only_secondary_purposes_can_be_approved() {
        let registry = ClientRegistry::new(&[entry(&["HRESCH", "PUBHLTH"])]).unwrap();
        let client = &registry.by_subject["research-unit"];
        assert_eq!(client.secondary_uses, [PurposeOfUse::Research, PurposeOfUse::PublicHealth]);
        assert!(ClientRegistry::new(&[entry(&[])]).unwrap().by_subject["research-unit"].secondary_uses.is_empty());
        for wrong in ["TREAT", "BTG", "research"] {
            let error = ClientRegistry::new(&[entry(&[wrong])]).err().expect("refused").to_string();
            assert!(error.contains("secondary_uses") && error.contains(wrong), "{error}");
        }
    }
}
