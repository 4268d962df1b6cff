//! Bearer tokens: who a request says is asking. A JWT from a registered issuer is verified
//! (signature with the issuer's published key, `iss`, `aud`, `exp`/`nbf` with a small clock skew,
//! asymmetric algorithms only), then its claims become a typed [`Principal`] for the issuer's
//! kind: clinician, patient or system. An issuer is trusted for its own kind only.
//!
//! Nothing here decides what the principal may do; that is the policy engine's job
//! (`consent::decide_interaction`). Tokens are never logged or echoed.

pub mod dev;
mod keys;
mod ring_verifier;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent::{Clinician, PatientUser, Principal, PurposeOfUse, ScopeContext, SmartScopes, SystemUser};
use fhir_models::{NhsNumber, OdsCode};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

pub use keys::{IssuerKeys, KeyError, KeySource, ProviderEndpoints};
pub use ring_verifier::install as install_crypto;

use crate::configuration::{AuthSettings, IssuerEntry, IssuerKind};
use crate::tls::PeerCertificate;

/// Why a token was not accepted. `Invalid` is 401 (`invalid_token`): the token is not one this
/// gateway accepts. `Refused` is 403: the token is genuine but may not be used this way.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(String),
    /// The issuer's keys could not be fetched: 503, the client may retry.
    #[error("{0}")]
    Unavailable(String),
}

fn invalid(message: impl Into<String>) -> AuthError {
    AuthError::Invalid(message.into())
}

fn refused(message: impl Into<String>) -> AuthError {
    AuthError::Refused(message.into())
}

struct TrustedIssuer {
    kind: IssuerKind,
    audience: String,
    keys: IssuerKeys,
    validation: Validation,
}

/// A token whose signature and claims have been verified. A client reuses its access token
/// for many requests, so the signature check (tens of microseconds) is paid once per token.
struct VerifiedToken {
    issuer: Arc<TrustedIssuer>,
    /// The issuer's key-set generation at verification: a reload (key rotation or withdrawal)
    /// makes the entry stale.
    generation: u64,
    /// `exp` plus the clock-skew leeway.
    usable_until: i64,
    /// `cnf.x5t#S256`, checked against every connection that presents the token.
    bound_to: Option<String>,
    principal: Principal,
}

/// The registered issuers and how tokens from them are checked.
pub struct Authenticator {
    issuers: HashMap<String, Arc<TrustedIssuer>>,
    /// Verified tokens by their full text (only successes are kept).
    verified: Option<moka::sync::Cache<String, Arc<VerifiedToken>>>,
    leeway: i64,
    /// Issuer names in configuration order, for describing them.
    order: Vec<String>,
    max_token_bytes: usize,
}

/// A registered issuer, as `/.well-known/smart-configuration` describes it.
#[derive(Clone, Debug)]
pub struct IssuerDescription {
    pub issuer: String,
    pub kind: IssuerKind,
    pub audience: String,
    pub endpoints: ProviderEndpoints,
}

/// The registered claims this gateway reads, beyond `iss`/`aud`/`exp`/`nbf` which `Validation`
/// checks (DESIGN §6).
#[derive(Deserialize)]
struct TokenClaims {
    sub: String,
    /// Required and checked by `Validation`; optional here so that its absence is reported as
    /// such rather than as a type error.
    exp: Option<i64>,
    scope: Option<String>,
    requesting_organization: Option<String>,
    requesting_practitioner_role: Option<String>,
    purpose_of_use: Option<String>,
    reason: Option<String>,
    legitimate_relationship: Option<String>,
    nhs_number: Option<String>,
    identity_proofing_level: Option<String>,
    /// RFC 8705 certificate binding.
    cnf: Option<Confirmation>,
}

#[derive(Deserialize)]
struct Confirmation {
    #[serde(rename = "x5t#S256")]
    x5t_s256: Option<String>,
}

/// Just enough of the unverified parts to pick the issuer and key; nothing read here is trusted
/// until the signature has been checked with that issuer's key.
#[derive(Deserialize)]
struct UnverifiedHeader {
    alg: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct UnverifiedIssuer {
    iss: Option<String>,
}

impl Authenticator {
    pub fn new(settings: &AuthSettings, issuers: &[IssuerEntry]) -> anyhow::Result<Self> {
        ring_verifier::install();
        let mut trusted = HashMap::new();
        for entry in issuers {
            let http = http_client(entry)?;
            let source = entry.key_source()?;
            let mut validation = Validation::new(Algorithm::ES256);
            validation.algorithms.clear();
            validation.set_issuer(&[&entry.issuer]);
            validation.set_audience(&[&entry.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.validate_nbf = true;
            validation.leeway = settings.clock_skew_secs;
            let keys = IssuerKeys::new(source, http, Duration::from_secs(settings.jwks_refresh_min_secs));
            let issuer = Arc::new(TrustedIssuer { kind: entry.kind, audience: entry.audience.clone(), keys, validation });
            if trusted.insert(entry.issuer.clone(), issuer).is_some() {
                anyhow::bail!("issuer {} is registered twice; an issuer is trusted for one kind only", entry.issuer);
            }
        }
        let order = issuers.iter().map(|entry| entry.issuer.clone()).collect();
        let verified = (settings.verified_token_cache_secs > 0).then(|| {
            moka::sync::Cache::builder()
                .weigher(|token: &String, _: &Arc<VerifiedToken>| u32::try_from(token.len() + 512).unwrap_or(u32::MAX))
                .max_capacity(16 * 1024 * 1024)
                .time_to_live(Duration::from_secs(settings.verified_token_cache_secs))
                .build()
        });
        let leeway = i64::try_from(settings.clock_skew_secs).unwrap_or(i64::MAX);
        Ok(Self { issuers: trusted, verified, leeway, order, max_token_bytes: settings.max_token_bytes })
    }

    /// Load every issuer's keys. A failure is logged, not fatal: the issuer may come up later,
    /// and its tokens are refused until it does.
    pub async fn load_keys(&self) {
        for (issuer, trusted) in &self.issuers {
            match trusted.keys.load().await {
                Ok(count) => tracing::info!(issuer, keys = count, kind = trusted.kind.as_str(), "token issuer keys loaded"),
                Err(error) => {
                    tracing::warn!(issuer, %error, "token issuer keys could not be loaded; its tokens are refused until they can")
                }
            }
        }
    }

    /// The registered issuers, in configuration order, with what is known of their endpoints.
    pub fn describe(&self) -> Vec<IssuerDescription> {
        self.order
            .iter()
            .filter_map(|name| {
                let trusted = self.issuers.get(name)?;
                Some(IssuerDescription {
                    issuer: name.clone(),
                    kind: trusted.kind,
                    audience: trusted.audience.clone(),
                    endpoints: trusted.keys.endpoints(),
                })
            })
            .collect()
    }

    /// Verify the `Authorization` header, if any, and turn the token into a principal.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        certificate: Option<&PeerCertificate>,
    ) -> Result<Option<Principal>, AuthError> {
        let Some(authorization) = authorization else { return Ok(None) };
        if authorization.len() > self.max_token_bytes + "Bearer ".len() {
            return Err(invalid(format!("the bearer token is larger than the {} bytes this gateway accepts", self.max_token_bytes)));
        }
        let token = bearer_token(authorization)?;
        if let Some(cache) = &self.verified
            && let Some(hit) = cache.get(token)
        {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            if hit.generation == hit.issuer.keys.generation() && now <= hit.usable_until {
                check_binding(hit.bound_to.as_deref(), certificate)?;
                return Ok(Some(hit.principal.clone()));
            }
            cache.invalidate(token);
        }
        let (header, issuer) = peek(token)?;
        let trusted = self.issuers.get(&issuer).ok_or_else(|| invalid("the token's issuer is not registered with this gateway"))?;
        let (key, generation) = trusted.keys.find(header.kid.as_deref()).await.map_err(|error| match error {
            KeyError::UnknownKey => invalid("the token's signing key (kid) is not in its issuer's key set"),
            KeyError::Unavailable(detail) => {
                tracing::warn!(issuer, detail, "token issuer keys unavailable");
                AuthError::Unavailable("the token's issuer cannot be reached to check its signature; retry later".into())
            }
        })?;
        let algorithm = parse_algorithm(&header.alg)?;
        if !key.algorithms.contains(&algorithm) {
            return Err(invalid(format!("the token's algorithm {} does not match its signing key", header.alg)));
        }
        let mut validation = trusted.validation.clone();
        validation.algorithms = vec![algorithm];
        let mut claims = jsonwebtoken::decode::<TokenClaims>(token, &key.key, &validation).map_err(rejection)?.claims;
        let bound_to = claims.cnf.take().and_then(|cnf| cnf.x5t_s256);
        check_binding(bound_to.as_deref(), certificate)?;
        let usable_until = claims.exp.unwrap_or(0).saturating_add(self.leeway);
        let principal = principal(trusted.kind, claims)?;
        if let Some(cache) = &self.verified {
            // Stamped with the generation of the key set that verified it: if a reload happened
            // since, the entry is already stale and the next use verifies again.
            let entry = VerifiedToken { issuer: trusted.clone(), generation, usable_until, bound_to, principal: principal.clone() };
            cache.insert(token.to_owned(), Arc::new(entry));
        }
        Ok(Some(principal))
    }
}

/// RFC 8705: a token bound to a certificate is usable only on a connection presenting it.
fn check_binding(bound_to: Option<&str>, certificate: Option<&PeerCertificate>) -> Result<(), AuthError> {
    match bound_to {
        None => Ok(()),
        Some(bound) if certificate.map(certificate_thumbprint).as_deref() == Some(bound) => Ok(()),
        Some(_) => Err(invalid("the token is bound to a different client certificate than this connection presented")),
    }
}

fn http_client(entry: &IssuerEntry) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(5)).use_rustls_tls();
    if let Some(ca_file) = &entry.ca_file {
        let pem = std::fs::read(ca_file).map_err(|e| anyhow::anyhow!("issuer {} ca_file {}: {e}", entry.issuer, ca_file.display()))?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder.build()?)
}

fn bearer_token(authorization: &[u8]) -> Result<&str, AuthError> {
    let text = std::str::from_utf8(authorization).map_err(|_| invalid("the Authorization header is not text"))?;
    let (scheme, token) = text.split_once(' ').ok_or_else(|| invalid("the Authorization header must be \"Bearer <token>\""))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(invalid("the Authorization header must use the Bearer scheme"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(invalid("the Authorization header carries an empty bearer token"));
    }
    Ok(token)
}

/// The header and `iss` of a token, unverified.
fn peek(token: &str) -> Result<(UnverifiedHeader, String), AuthError> {
    let malformed = || invalid("the bearer token is not a well-formed JWT (three base64url parts: header, claims, signature)");
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(malformed());
    };
    let header: UnverifiedHeader = decode_part(header).ok_or_else(malformed)?;
    if header.alg.eq_ignore_ascii_case("none") || signature.is_empty() {
        return Err(invalid("unsigned tokens (alg \"none\") are not accepted"));
    }
    let claims: UnverifiedIssuer = decode_part(claims).ok_or_else(malformed)?;
    let issuer = claims.iss.ok_or_else(|| invalid("the token has no iss claim"))?;
    Ok((header, issuer))
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn parse_algorithm(name: &str) -> Result<Algorithm, AuthError> {
    match name {
        "HS256" | "HS384" | "HS512" => {
            Err(invalid("symmetric algorithms (HS256/384/512) are not accepted; tokens must be signed with the issuer's private key"))
        }
        _ => name.parse().map_err(|_| invalid("the token's algorithm is not supported")),
    }
}

/// Why jsonwebtoken refused a token, in words for the requester.
fn rejection(error: jsonwebtoken::errors::Error) -> AuthError {
    invalid(match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidAudience => "the token is not meant for this gateway (aud)".to_owned(),
        ErrorKind::InvalidIssuer => "the token's issuer does not match".to_owned(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its signing key".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => "the token's claims do not have the expected types".to_owned(),
        _ => "the bearer token could not be verified".to_owned(),
    })
}

/// SHA-256 of the DER certificate, base64url: the RFC 8705 `x5t#S256` form.
fn certificate_thumbprint(certificate: &PeerCertificate) -> String {
    let bytes: Vec<u8> = (0..certificate.fingerprint.len() / 2)
        .filter_map(|i| u8::from_str_radix(&certificate.fingerprint[2 * i..2 * i + 2], 16).ok())
        .collect();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The verified claims as a principal of the issuer's kind.
fn principal(kind: IssuerKind, claims: TokenClaims) -> Result<Principal, AuthError> {
    let scopes = SmartScopes::parse_claim(claims.scope.as_deref().unwrap_or(""))
        .map_err(|error| invalid(format!("the token's scope claim is not valid: {error}")))?;
    let context = match kind {
        IssuerKind::Clinician => ScopeContext::User,
        IssuerKind::Patient => ScopeContext::Patient,
        IssuerKind::System => ScopeContext::System,
    };
    if let Some(foreign) = scopes.iter().find(|scope| scope.context != context) {
        return Err(refused(format!("a {} issuer's token may carry only {}/ scopes, not {foreign}", kind.as_str(), context.as_str())));
    }
    let has_patient_claims = claims.nhs_number.is_some() || claims.identity_proofing_level.is_some();
    let has_staff_claims = claims.requesting_organization.is_some() || claims.requesting_practitioner_role.is_some();
    match kind {
        IssuerKind::Patient => {
            if has_staff_claims || claims.purpose_of_use.is_some() {
                return Err(refused(
                    "a patient issuer's token carries clinician or organisation claims; an issuer is trusted for its own kind only",
                ));
            }
            let nhs_number = claims.nhs_number.ok_or_else(|| invalid("a patient token must carry the nhs_number claim"))?;
            let nhs_number = NhsNumber::parse(&nhs_number)
                .map_err(|error| invalid(format!("the token's nhs_number claim is not a valid NHS number: {error}")))?;
            let proofing_level =
                claims.identity_proofing_level.ok_or_else(|| invalid("a patient token must carry the identity_proofing_level claim"))?;
            Ok(Principal::Patient(PatientUser { subject: claims.sub, nhs_number, proofing_level }, scopes))
        }
        IssuerKind::Clinician | IssuerKind::System => {
            if has_patient_claims {
                return Err(refused(format!(
                    "a {} issuer's token carries patient claims; an issuer is trusted for its own kind only",
                    kind.as_str()
                )));
            }
            let organisation = claims
                .requesting_organization
                .ok_or_else(|| invalid("the token must carry the requesting_organization claim (an ODS code)"))?;
            let organisation = OdsCode::parse(&organisation)
                .map_err(|error| invalid(format!("the token's requesting_organization claim is not an ODS code: {error}")))?;
            let purpose = match claims.purpose_of_use.as_deref() {
                None => PurposeOfUse::Treatment,
                Some(code) => PurposeOfUse::parse(code)
                    .ok_or_else(|| invalid("the token's purpose_of_use is not one of TREAT, ETREAT, BTG, HOPERAT, HRESCH, PUBHLTH"))?,
            };
            let reason = claims.reason.filter(|reason| !reason.trim().is_empty());
            if purpose.needs_reason() && reason.is_none() {
                return Err(refused(format!("emergency access ({}) must give a reason in the reason claim", purpose.code())));
            }
            let self_claimed = match claims.legitimate_relationship.as_deref() {
                None => false,
                Some("self-claimed") if kind == IssuerKind::Clinician => true,
                Some("self-claimed") => return Err(refused("only a clinician may self-claim a legitimate relationship")),
                Some(_) => return Err(invalid("the token's legitimate_relationship claim may only be \"self-claimed\"")),
            };
            if self_claimed && reason.is_none() {
                return Err(refused("a self-claimed legitimate relationship must give a reason in the reason claim"));
            }
            Ok(match kind {
                IssuerKind::System => Principal::System(SystemUser { subject: claims.sub, organisation, purpose }, scopes),
                _ => Principal::Clinician(
                    Clinician {
                        subject: claims.sub,
                        role: claims.requesting_practitioner_role,
                        organisation,
                        purpose,
                        reason,
                        self_claimed,
                    },
                    scopes,
                ),
            })
        }
    }
}

/// Shared so that every worker uses one key cache.
pub type SharedAuthenticator = Arc<Authenticator>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_required() {
        assert!(bearer_token(b"Bearer abc").is_ok());
        assert!(bearer_token(b"bearer abc").is_ok());
        assert!(bearer_token(b"Basic abc").is_err());
        assert!(bearer_token(b"Bearer ").is_err());
        assert!(bearer_token(b"abc").is_err());
    }

    #[test]
    fn unsigned_and_malformed_tokens_are_refused_before_any_key_lookup() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(br#"{"iss":"x","sub":"y"}"#);
        let error = peek(&format!("{header}.{claims}.")).err().unwrap();
        assert!(error.to_string().contains("unsigned"), "{error}");
        assert!(peek("not-a-jwt").is_err());
        assert!(peek("a.b.c.d").is_err());
        assert!(parse_algorithm("HS256").unwrap_err().to_string().contains("symmetric"));
        assert_eq!(parse_algorithm("ES256"), Ok(Algorithm::ES256));
    }

    /// Tokens are credentials: neither the errors nor the logs may contain one, whatever is
    /// wrong with it.
    #[test]
    fn refused_tokens_are_neither_logged_nor_echoed() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(move || writer.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let dir = tempfile::tempdir().unwrap();
        let issuer = dev::SigningIssuer::generate("https://issuer.test", IssuerKind::Clinician).unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, serde_json::to_vec(&issuer.jwks()).unwrap()).unwrap();
        let entry = IssuerEntry {
            issuer: issuer.issuer.clone(),
            audience: "https://gateway.test".into(),
            kind: IssuerKind::Clinician,
            jwks_file: Some(jwks),
            jwks_url: None,
            discovery_url: None,
            ca_file: None,
        };
        let settings = crate::configuration::Settings::default();
        let authenticator = Authenticator::new(&settings.auth, &[entry]).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(authenticator.load_keys());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = serde_json::json!({"iss": issuer.issuer, "aud": "https://gateway.test", "sub": "s", "exp": now + 60,
            "scope": "user/*.rs", "requesting_organization": "Y90001", "purpose_of_use": "ETREAT"});
        let mut bad_tokens = vec![
            issuer.sign(&claims),
            issuer.sign(&serde_json::json!({"iss": issuer.issuer, "aud": "elsewhere", "sub": "s", "exp": now + 60})),
            issuer.sign(&serde_json::json!({"iss": issuer.issuer, "aud": "https://gateway.test", "sub": "s", "exp": now - 600})),
            "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.".to_owned(),
        ];
        bad_tokens.push(format!("{}x", bad_tokens[0]));
        for token in &bad_tokens {
            let header = format!("Bearer {token}");
            let error = runtime.block_on(authenticator.authenticate(Some(header.as_bytes()), None)).unwrap_err();
            assert!(!error.to_string().contains(token.as_str()));
            tracing::info!(reason = %error, "bearer token refused");
        }
        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("bearer token refused"), "the refusals were logged: {logs}");
        for token in &bad_tokens {
            let signature = token.rsplit('.').next().unwrap();
            assert!(signature.is_empty() || !logs.contains(signature), "a token reached the logs");
            assert!(!logs.contains(token.split('.').nth(1).unwrap()), "a token's claims reached the logs");
        }
    }

    #[test]
    fn thumbprint_is_base64url_of_the_sha256() {
        let certificate = PeerCertificate { fingerprint: "00ff10".into(), subject_common_name: None };
        assert_eq!(certificate_thumbprint(&certificate), "AP8Q");
    }
}
