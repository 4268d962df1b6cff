//! Development PKI: a CA, a server certificate and client certificates, made with rcgen.
//! Keys are written with owner-only permissions and are git-ignored; they are for development
//! and tests, never for production (where the trust's or NHS PKI issues certificates).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use consent::ClientKind;
use fhir_models::OdsCode;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::configuration::ClientEntry;

pub struct DevPki {
    pub dir: PathBuf,
}

/// A client certificate just issued, and the config entry that registers it.
pub struct IssuedClient {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub entry: ClientEntry,
}

impl DevPki {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn ca_certificate(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    pub fn server_certificate(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    pub fn exists(&self) -> bool {
        self.ca_certificate().exists() && self.ca_key().exists() && self.server_certificate().exists() && self.server_key().exists()
    }

    /// Make a CA and a server certificate for `localhost`, `127.0.0.1` and `::1` (plus any
    /// extra names). Refuses to overwrite an existing CA unless `force`.
    pub fn init(&self, extra_names: &[String], force: bool) -> anyhow::Result<()> {
        if self.ca_certificate().exists() && !force {
            bail!("{} already exists; pass --force to replace the development CA", self.ca_certificate().display());
        }
        fs::create_dir_all(&self.dir).with_context(|| format!("failed to create {}", self.dir.display()))?;
        let now = OffsetDateTime::now_utc();

        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "HIE Gateway development CA");
        ca_params.distinguished_name.push(DnType::OrganizationName, "HIE Gateway (development only)");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        ca_params.not_before = now - Duration::days(1);
        ca_params.not_after = now + Duration::days(3650);
        let ca_key = KeyPair::generate()?;
        let ca_key_pem = ca_key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        names.extend(extra_names.iter().cloned());
        let mut server_params = CertificateParams::new(names)?;
        server_params.distinguished_name.push(DnType::CommonName, "hie-gateway");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        server_params.not_before = now - Duration::days(1);
        server_params.not_after = now + Duration::days(825);
        let server_key = KeyPair::generate()?;
        let server = server_params.signed_by(&server_key, &ca)?;

        write_public(&self.ca_certificate(), &ca.pem())?;
        write_secret(&self.ca_key(), &ca_key_pem)?;
        write_public(&self.server_certificate(), &server.pem())?;
        write_secret(&self.server_key(), &server_key.serialize_pem())?;
        Ok(())
    }

    /// Issue a client certificate signed by the development CA.
    pub fn issue_client(&self, name: &str, ods: &OdsCode, kind: ClientKind) -> anyhow::Result<IssuedClient> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
            bail!("a client name is letters, digits, '-', '_' and '.', found {name:?}");
        }
        let ca_pem = fs::read_to_string(self.ca_certificate())
            .with_context(|| format!("no development CA at {}; run `hie-gateway certs init` first", self.ca_certificate().display()))?;
        let ca_key = KeyPair::from_pem(&fs::read_to_string(self.ca_key()).context("failed to read the CA key")?)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("failed to read the CA certificate")?;

        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.distinguished_name.push(DnType::OrganizationName, ods.as_ref());
        params.distinguished_name.push(DnType::OrganizationalUnitName, kind.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(825);
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &issuer)?;

        let clients = self.dir.join("clients");
        fs::create_dir_all(&clients)?;
        let certificate_path = clients.join(format!("{name}.pem"));
        let key_path = clients.join(format!("{name}.key"));
        write_public(&certificate_path, &certificate.pem())?;
        write_secret(&key_path, &key.serialize_pem())?;
        Ok(IssuedClient {
            certificate: certificate_path,
            private_key: key_path,
            entry: ClientEntry {
                name: name.to_owned(),
                kind,
                ods: ods.clone(),
                fingerprint: Some(fingerprint(certificate.der())),
                subject: None,
                scopes: Some(kind.default_scopes().iter().map(|scope| (*scope).to_owned()).collect()),
                secondary_uses: Vec::new(),
            },
        })
    }
}

/// SHA-256 of a DER certificate as lower-case hex, the form `[[clients]] fingerprint` takes.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Normalise a configured fingerprint: hex, any case, colons or spaces allowed.
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|c| !matches!(c, ':' | ' ')).collect::<String>().to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// The config entry for a client, as `certs client` prints it.
pub fn client_entry_toml(entry: &ClientEntry) -> String {
    let mut text = format!("[[clients]]\nname = {:?}\nkind = {:?}\nods = {:?}\n", entry.name, entry.kind.as_str(), entry.ods.as_ref());
    if let Some(fingerprint) = &entry.fingerprint {
        text.push_str(&format!("fingerprint = {fingerprint:?}\n"));
    }
    if let Some(subject) = &entry.subject {
        text.push_str(&format!("subject = {subject:?}\n"));
    }
    if let Some(scopes) = &entry.scopes {
        text.push_str(&format!("scopes = {scopes:?}\n"));
    }
    text
}

fn write_public(path: &Path, contents: &str) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("failed to write {}", path.display()))
}

pub(crate) fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_a_ca_server_and_client_that_chain() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::new(dir.path());
        pki.init(&[], false).unwrap();
        assert!(pki.exists());
        assert!(pki.init(&[], false).is_err(), "an existing CA is not replaced silently");
        let issued = pki.issue_client("practice-1", &OdsCode::parse("A81001").unwrap(), ClientKind::GpSystem).unwrap();
        assert_eq!(issued.entry.fingerprint.as_ref().unwrap().len(), 64);
        let toml = client_entry_toml(&issued.entry);
        assert!(toml.contains("kind = \"gp-system\""), "{toml}");
        let mode = std::fs::metadata(&issued.private_key).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn normalizes_fingerprints() {
        let hex = "AB".repeat(32);
        let with_colons = hex.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":");
        assert_eq!(normalize_fingerprint(&with_colons), Some("ab".repeat(32)));
        assert_eq!(normalize_fingerprint("abc"), None);
    }
}
