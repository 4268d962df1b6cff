//! Configuration: built-in defaults (the embedded default), then `hie-gateway.toml`, then
//! `HIE_<SECTION>_<KEY>` environment variables (`HIE_DATABASE_URL` sets `database.url`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use consent::ClientKind;
use fhir_models::OdsCode;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_FILE: &str = "hie-gateway.toml";

/// The sections environment variables may set.
const SECTIONS: [&str; 14] =
    ["server", "tls", "database", "redis", "cache", "limits", "log", "auth", "mllp", "labels", "consent", "portal", "translation", "audit"];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub tls: TlsSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub cache: CacheSettings,
    pub limits: Limits,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub mllp: MllpSettings,
    pub labels: LabelSettings,
    /// The access rules' parameters (docs/information-governance.md): shared reference types,
    /// extra sensitive labels, relationship windows, release delays.
    #[serde(default)]
    pub consent: consent::AccessPolicy,
    pub portal: PortalSettings,
    pub translation: TranslationSettings,
    #[serde(default)]
    pub audit: AuditSettings,
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
}

/// The audit trail's key: its records' hashes are HMACs under it, so whoever can write the
/// database but not read this file cannot edit a record and recompute the chain to hide it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// A file holding the key as hex (at least 32 bytes); keep it off the database's host and
    /// out of its backups.
    pub key_file: PathBuf,
    /// Make a new key when the file is missing (the embedded default); a production gateway
    /// sets `false`, so a lost key stops it instead of starting a chain no one can check.
    pub generate_key: bool,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { key_file: "data/audit.key".into(), generate_key: true }
    }
}

/// Code maps for translation: the NHS Data Migration tables (`rcsctmap2_uk_*.txt` for Read v2,
/// `ctv3sctmap2_uk_*.txt` for CTV3). None configured: the small demo tables that ship.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslationSettings {
    #[serde(default)]
    pub read_v2_maps: Vec<PathBuf>,
    #[serde(default)]
    pub ctv3_maps: Vec<PathBuf>,
}

impl TranslationSettings {
    /// The configured maps, or the demo ones.
    pub fn code_maps(&self) -> anyhow::Result<crate::translate::codes::CodeMaps> {
        use crate::translate::codes::{CodeMaps, Table};
        if self.read_v2_maps.is_empty() && self.ctv3_maps.is_empty() {
            return Ok(CodeMaps::demo());
        }
        let mut maps = CodeMaps::default();
        for (table, paths) in [(Table::ReadV2, &self.read_v2_maps), (Table::Ctv3, &self.ctv3_maps)] {
            for path in paths {
                let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("code map {}: {e}", path.display()))?;
                maps.load(table, &path.display().to_string(), &String::from_utf8_lossy(&bytes))
                    .map_err(|e| anyhow::anyhow!("code map {e}"))?;
            }
        }
        Ok(maps)
    }
}

/// The patient portal (`/portal/`): a confidential OpenID Connect client of a patient issuer
/// (NHS login-style), signing in with authorization code + PKCE and `private_key_jwt`. Without an
/// `issuer` the portal answers that sign-in is not configured.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalSettings {
    /// The `issuer` of one `[[auth.issuers]]` entry of kind `patient`: people sign in there, and
    /// the access tokens it issues are verified like any other patient token.
    pub issuer: Option<String>,
    /// The portal's client id at that issuer.
    pub client_id: Option<String>,
    /// The portal's P-256 private key (PKCS#8 PEM) for `private_key_jwt` at the token endpoint;
    /// `hie-gateway certs portal-key` makes one and prints the public key set to register.
    pub private_key_file: Option<PathBuf>,
    /// Scopes asked for at sign-in.
    pub scopes: String,
    /// Where the issuer sends people back; default `<origin of the FHIR base>/portal/callback`.
    pub redirect_url: Option<String>,
    /// A session ends this long after its last use, or when its access token expires.
    pub session_idle_minutes: u64,
}

impl Default for PortalSettings {
    fn default() -> Self {
        Self {
            issuer: None,
            client_id: None,
            private_key_file: None,
            // Reading the record, and managing the patient's own sharing choices.
            scopes: "openid profile patient/*.rs patient/Consent.cud".into(),
            redirect_url: None,
            session_idle_minutes: 15,
        }
    }
}

/// Sensitivity labels stamped on every write (DESIGN §4). `[[labels.sensitive]]` entries replace
/// the documented default (`consent::SensitivityLabels::uk_default`) as a whole.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSettings {
    pub sensitive: Vec<consent::SensitiveCodeSet>,
}

impl Settings {
    /// The FHIR layer's policy inputs: the sensitive code sets every write is labelled from, and
    /// the access rules with the labels those sets stamp.
    pub fn policy(&self) -> crate::fhir::Policy {
        let labels = consent::SensitivityLabels::new(self.labels.sensitive.clone());
        crate::fhir::Policy {
            code_set_labels: labels.labels(),
            labels: std::sync::Arc::new(labels),
            access: std::sync::Arc::new(self.consent.clone()),
        }
    }
}

/// The HL7 v2 feed: MLLP over TCP. Keep it on loopback or a private network (it has no TLS
/// yet); every message is ACKed only after what it says is committed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpSettings {
    /// Where to listen; `enabled = false` turns the listener off.
    pub listen: SocketAddr,
    pub enabled: bool,
    /// ODS code recorded as the publisher of fed data when MSH-4 (sending facility) is not an
    /// ODS code itself.
    pub organisation: OdsCode,
    /// MSH-11 values filed (HL7 table 0103: P production, T training, D debugging). Others are
    /// refused with AR, so test traffic never lands in a live record.
    pub processing_ids: Vec<String>,
    /// Longer frames are refused (AR) and the connection closed.
    pub max_message_bytes: usize,
    /// A connection idle this long is closed.
    pub idle_timeout_secs: u64,
}

/// Bearer tokens (DESIGN §6): the issuers trusted, each for one kind of requester.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default)]
    pub issuers: Vec<IssuerEntry>,
    /// Leeway for `exp` and `nbf`, for clocks that disagree a little.
    pub clock_skew_secs: u64,
    /// Longer tokens are refused before they are parsed.
    pub max_token_bytes: usize,
    /// An unknown `kid` reloads an issuer's keys at most this often.
    pub jwks_refresh_min_secs: u64,
    /// How long a verified token is remembered (never beyond its `exp`; forgotten when its
    /// issuer's keys reload); 0 verifies every request's signature.
    pub verified_token_cache_secs: u64,
    /// Register development issuers (one key per kind, in the certificate directory) so that
    /// `hie-gateway token` can mint tokens. Unset, it follows `tls.generate_dev_certificates`:
    /// on in the embedded default, off in any configuration with real certificates.
    pub dev_issuers: Option<bool>,
}

/// A trusted token issuer: `[[auth.issuers]]`. Exactly one of `jwks_file`, `jwks_url`,
/// `discovery_url` says where its public keys are.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IssuerEntry {
    /// The `iss` its tokens carry, exactly.
    pub issuer: String,
    /// The `aud` its tokens must carry for this gateway.
    pub audience: String,
    pub kind: IssuerKind,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub discovery_url: Option<String>,
    /// CA bundle for fetching keys from an issuer on a private PKI (public CAs are trusted).
    pub ca_file: Option<PathBuf>,
}

impl IssuerEntry {
    pub fn key_source(&self) -> anyhow::Result<crate::auth::KeySource> {
        use crate::auth::KeySource;
        match (&self.jwks_file, &self.jwks_url, &self.discovery_url) {
            (Some(file), None, None) => Ok(KeySource::File(file.clone())),
            (None, Some(url), None) => Ok(KeySource::Url(url.clone())),
            (None, None, Some(url)) => Ok(KeySource::Discovery(url.clone())),
            _ => anyhow::bail!("issuer {}: give exactly one of jwks_file, jwks_url, discovery_url", self.issuer),
        }
    }
}

/// What kind of requester an issuer's tokens speak for.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssuerKind {
    Clinician,
    Patient,
    System,
}

impl IssuerKind {
    pub const ALL: [Self; 3] = [Self::Clinician, Self::Patient, Self::System];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Clinician => "clinician",
            Self::Patient => "patient",
            Self::System => "system",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// HTTPS listener for the FHIR API (mutual TLS).
    pub listen: SocketAddr,
    /// Plain-HTTP listener for `/healthz`, `/readyz` and `/metrics`. Keep it on loopback or a
    /// private network.
    pub ops_listen: SocketAddr,
    /// The externally visible base of the FHIR API, used in `fullUrl`, `Location` and paging
    /// links. Defaults to `https://<listen>/fhir/r4`.
    pub public_base_url: Option<String>,
    /// HTTP worker threads; defaults to the number of cores.
    pub workers: Option<usize>,
    /// Seconds in-flight requests get to finish on shutdown.
    pub shutdown_timeout_secs: u64,
    /// Key that signs paging links (hex or any text, at least 32 bytes). Generated into the
    /// data directory when absent; set it explicitly when several instances share a database.
    pub paging_secret: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// CA bundle that client certificates must chain to.
    pub client_ca: PathBuf,
    /// Make a development CA and server certificate (and demo clients) when the files above are
    /// missing. On in the embedded default only.
    pub generate_dev_certificates: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` or `postgres://user@host:port/database`.
    pub url: String,
    pub max_connections: Option<u32>,
    /// How long a request waits for a database connection before it is answered 503.
    pub acquire_timeout_ms: u64,
    pub migrate_on_start: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port/db`. Without it, caches and rate limits are in-process.
    pub url: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Memory for the read-by-id cache of current versions, in bytes; 0 turns it off.
    pub read_cache_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_bundle_entries: usize,
    pub default_count: usize,
    pub max_count: usize,
    /// Requests a client may make per minute; 0 turns rate limiting off.
    pub requests_per_minute_per_client: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `json` (for machines) or `pretty` (for people).
    pub format: String,
    /// An `EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
}

/// A registered API client: `certs client` prints one of these to append to the config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    pub name: String,
    pub kind: ClientKind,
    pub ods: OdsCode,
    /// SHA-256 of the DER certificate, hex, colons optional.
    pub fingerprint: Option<String>,
    /// Or the certificate's subject common name (for certificates renewed under one CA).
    pub subject: Option<String>,
    /// The widest SMART scopes tokens with this certificate may carry; the kind's default
    /// (`ClientKind::default_scopes`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// The secondary-use purposes (v3-ActReason `HOPERAT`, `HRESCH`, `PUBHLTH`) the client is
    /// approved for, e.g. under an s251 approval; none by default. Patients' opt-outs still apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondary_uses: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings {
                listen: "127.0.0.1:8443".parse().expect("valid address"),
                ops_listen: "127.0.0.1:9464".parse().expect("valid address"),
                public_base_url: None,
                workers: None,
                shutdown_timeout_secs: 30,
                paging_secret: None,
            },
            tls: TlsSettings {
                certificate: "certs/server.pem".into(),
                private_key: "certs/server.key".into(),
                client_ca: "certs/ca.pem".into(),
                generate_dev_certificates: true,
            },
            database: DatabaseSettings {
                url: "sqlite://data/hie.db".into(),
                max_connections: None,
                acquire_timeout_ms: 1_000,
                migrate_on_start: true,
            },
            redis: RedisSettings::default(),
            cache: CacheSettings { read_cache_bytes: 64 * 1024 * 1024 },
            limits: Limits {
                max_body_bytes: 64 * 1024 * 1024,
                max_bundle_entries: 10_000,
                default_count: 20,
                max_count: 1_000,
                requests_per_minute_per_client: 0,
            },
            log: LogSettings { format: "json".into(), level: "info".into() },
            auth: AuthSettings {
                issuers: Vec::new(),
                clock_skew_secs: 60,
                max_token_bytes: 8 * 1024,
                jwks_refresh_min_secs: 30,
                verified_token_cache_secs: 60,
                dev_issuers: None,
            },
            mllp: MllpSettings {
                listen: "127.0.0.1:2575".parse().expect("valid address"),
                enabled: true,
                organisation: OdsCode::parse("HIEGW").expect("a valid ODS code"),
                processing_ids: vec!["P".into()],
                max_message_bytes: 8 * 1024 * 1024,
                idle_timeout_secs: 600,
            },
            labels: LabelSettings { sensitive: consent::SensitivityLabels::uk_default() },
            consent: consent::AccessPolicy::default(),
            portal: PortalSettings::default(),
            translation: TranslationSettings::default(),
            audit: AuditSettings::default(),
            clients: Vec::new(),
        }
    }
}

impl Settings {
    /// Defaults, then the file (if it exists, or if it was named explicitly), then the
    /// environment.
    pub fn load(config_file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match config_file {
            Some(path) => {
                if !path.exists() {
                    return Err(Box::new(figment::Error::from(format!("config file {} does not exist", path.display()))));
                }
                figment = figment.merge(Toml::file(path));
            }
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => figment = figment.merge(Toml::file(DEFAULT_CONFIG_FILE)),
            None => {}
        }
        // `HIE_DATABASE_URL` → `database.url`; variables of other sections (`HIE_CONFIG`, the
        // test harness's `HIE_TEST_*`) are not configuration.
        figment = figment.merge(Env::prefixed("HIE_").filter_map(|key| {
            let (section, rest) = key.as_str().split_once('_')?;
            let section = section.to_ascii_lowercase();
            SECTIONS.contains(&section.as_str()).then(|| format!("{section}.{rest}").into())
        }));
        figment.extract().map_err(Box::new)
    }

    /// `https://127.0.0.1:8443/fhir/r4`, or the configured public base.
    pub fn fhir_base_url(&self, bound: SocketAddr) -> String {
        match &self.server.public_base_url {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => format!("https://{bound}/fhir/r4"),
        }
    }

    /// Whether the development token issuers are trusted.
    pub fn dev_issuers(&self) -> bool {
        self.auth.dev_issuers.unwrap_or(self.tls.generate_dev_certificates)
    }

    pub fn is_postgres(&self) -> bool {
        self.database.url.starts_with("postgres://") || self.database.url.starts_with("postgresql://")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_default() {
        let settings = Settings::default();
        assert_eq!(settings.database.url, "sqlite://data/hie.db");
        assert_eq!(settings.server.listen.port(), 8443);
        assert!(!settings.is_postgres());
    }

    #[test]
    fn a_file_and_the_environment_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(
            &path,
            r#"
[database]
url = "postgres://localhost/hie"

[[clients]]
name = "practice"
kind = "gp-system"
ods = "A81001"
fingerprint = "ab:cd"
"#,
        )
        .unwrap();
        let settings = Settings::load(Some(&path)).unwrap();
        assert!(settings.is_postgres());
        assert_eq!(settings.clients[0].kind, ClientKind::GpSystem);
        assert_eq!(settings.limits.max_count, 1_000);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn environment_variables_override_the_file_and_others_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("gw.toml", "[database]\nurl = \"sqlite://from-file.db\"\n")?;
            jail.set_env("HIE_DATABASE_URL", "postgres://from-env/hie");
            jail.set_env("HIE_LIMITS_MAX_COUNT", "50");
            jail.set_env("HIE_TEST_DATABASE", "postgres");
            let settings = Settings::load(Some(Path::new("gw.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(settings.database.url, "postgres://from-env/hie");
            assert_eq!(settings.limits.max_count, 50);
            Ok(())
        });
    }

    #[test]
    fn development_issuers_follow_development_certificates_unless_set() {
        let mut settings = Settings::default();
        assert!(settings.dev_issuers(), "the embedded default trusts its development issuers");
        settings.tls.generate_dev_certificates = false;
        assert!(!settings.dev_issuers(), "real certificates: no development issuers unless asked for");
        settings.auth.dev_issuers = Some(true);
        assert!(settings.dev_issuers());
    }

    #[test]
    fn an_unknown_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(&path, "[database]\nurll = \"x\"\n").unwrap();
        assert!(Settings::load(Some(&path)).is_err());
    }
}
