//! Development token issuers: a P-256 key per requester kind, kept beside the development
//! certificates, published as a JWKS file the gateway trusts like any other issuer. They let a
//! newcomer (and the tests, and load generators) exercise every requester kind without an
//! identity provider: `hie-gateway token --kind clinician …` prints a token.
//!
//! Never registered unless `auth.dev_issuers` is on (the embedded default only).

use std::path::PathBuf;

use anyhow::Context;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::configuration::{IssuerEntry, IssuerKind};

/// An issuer that can sign: its name, kind, key id and private key.
pub struct SigningIssuer {
    pub issuer: String,
    pub kind: IssuerKind,
    pub kid: String,
    key: EncodingKey,
    jwk: Jwk,
}

impl SigningIssuer {
    /// A fresh P-256 key.
    pub fn generate(issuer: impl Into<String>, kind: IssuerKind) -> anyhow::Result<Self> {
        let pem = rcgen::KeyPair::generate()?.serialize_pem();
        Self::from_pem(issuer, kind, pem.as_bytes())
    }

    pub fn from_pem(issuer: impl Into<String>, kind: IssuerKind, pem: &[u8]) -> anyhow::Result<Self> {
        super::install_crypto();
        let key = EncodingKey::from_ec_pem(pem).context("a PKCS#8 P-256 private key")?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)?;
        let kid = jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)?;
        jwk.common.key_id = Some(kid.clone());
        Ok(Self { issuer: issuer.into(), kind, kid, key, jwk })
    }

    /// The public key set to publish.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: vec![self.jwk.clone()] }
    }

    /// Sign `claims` as they are (tests use this to make bad tokens too).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("ES256 signing with a valid key")
    }

    /// Sign a token for `audience`, valid from now for `lifetime_secs`, with `extra` claims
    /// (scope, requesting_organization, nhs_number, …) merged in.
    pub fn mint(&self, audience: &str, subject: &str, lifetime_secs: u64, extra: &Value) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = json!({
            "iss": self.issuer,
            "aud": audience,
            "sub": subject,
            "iat": now,
            "exp": now + lifetime_secs as i64,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.sign(&claims)
    }
}

/// The development issuers in `dir`: one per kind, made on first use.
pub struct DevIssuers {
    dir: PathBuf,
}

pub const DEV_ISSUER_BASE: &str = "https://dev-issuer.hie-gateway.invalid";

impl DevIssuers {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn key_file(&self, kind: IssuerKind) -> PathBuf {
        self.dir.join(format!("dev-issuer-{}.key", kind.as_str()))
    }

    fn jwks_file(&self, kind: IssuerKind) -> PathBuf {
        self.dir.join(format!("dev-issuer-{}.jwks.json", kind.as_str()))
    }

    pub fn issuer_name(kind: IssuerKind) -> String {
        format!("{DEV_ISSUER_BASE}/{}", kind.as_str())
    }

    /// Make the keys that are missing and return the issuer entries to register.
    pub fn ensure(&self, audience: &str) -> anyhow::Result<Vec<IssuerEntry>> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let mut entries = Vec::new();
        for kind in IssuerKind::ALL {
            let key_file = self.key_file(kind);
            if !key_file.exists() {
                let pem = rcgen::KeyPair::generate()?.serialize_pem();
                crate::certs::write_secret(&key_file, &pem)?;
            }
            let issuer = self.load(kind)?;
            std::fs::write(self.jwks_file(kind), serde_json::to_vec_pretty(&issuer.jwks())?)?;
            entries.push(IssuerEntry {
                issuer: issuer.issuer,
                audience: audience.to_owned(),
                kind,
                jwks_file: Some(self.jwks_file(kind)),
                jwks_url: None,
                discovery_url: None,
                ca_file: None,
            });
        }
        Ok(entries)
    }

    pub fn load(&self, kind: IssuerKind) -> anyhow::Result<SigningIssuer> {
        let key_file = self.key_file(kind);
        let pem = std::fs::read(&key_file)
            .with_context(|| format!("{}: no development issuer key; run `hie-gateway certs init` first", key_file.display()))?;
        SigningIssuer::from_pem(Self::issuer_name(kind), kind, &pem)
    }
}
