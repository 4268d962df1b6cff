//! The portal's side of OpenID Connect: a confidential client of one patient issuer, signing
//! people in with authorization code + PKCE (S256) and authenticating itself at the token
//! endpoint with `private_key_jwt` (as NHS login requires). openidconnect does discovery, the
//! authorization request and the ID token checks (signature, issuer, audience, expiry, nonce);
//! the access token it returns is verified by the gateway's own [`crate::auth::Authenticator`],
//! like any patient token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::RwLock;

use crate::auth::dev::SigningIssuer;
use crate::configuration::{IssuerEntry, IssuerKind, PortalSettings};

/// Discovery (and the provider's keys with it) is fetched again after this long, and at once
/// when an ID token names a key the cached set does not have.
const METADATA_MAX_AGE: Duration = Duration::from_secs(300);

/// Why a sign-in failed. The text is shown to the person signing in: it never carries a token
/// or a code.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the sign-in service cannot be reached just now; try again in a few minutes")]
    Unavailable(String),
    #[error("the sign-in service's answer could not be trusted, so you have not been signed in")]
    Rejected(String),
}

/// What the browser must bring back to finish a sign-in: kept server-side, keyed by a cookie.
#[derive(Serialize, Deserialize)]
pub struct PendingSignIn {
    pub state: String,
    nonce: String,
    verifier: String,
}

/// A finished sign-in: the ID token's subject and the access token for the FHIR API.
pub struct SignedIn {
    pub subject: String,
    pub access_token: String,
    pub expires_in: Option<Duration>,
}

pub struct SignIn {
    issuer: IssuerUrl,
    client_id: ClientId,
    key: SigningIssuer,
    scopes: Vec<String>,
    redirect: RedirectUrl,
    http: reqwest::Client,
    metadata: RwLock<Option<(Instant, Arc<CoreProviderMetadata>)>>,
}

impl SignIn {
    /// The portal's client, or `None` when `portal.issuer` is not set. A setting that names no
    /// patient issuer, or a key that does not load, is an error at start.
    pub fn from_settings(settings: &PortalSettings, issuers: &[IssuerEntry], base_url: &str) -> anyhow::Result<Option<Self>> {
        let Some(issuer) = &settings.issuer else { return Ok(None) };
        let entry = issuers.iter().find(|entry| &entry.issuer == issuer).ok_or_else(|| {
            anyhow::anyhow!("portal.issuer {issuer} is not one of the registered [[auth.issuers]]: its access tokens could not be verified")
        })?;
        anyhow::ensure!(
            entry.kind == IssuerKind::Patient,
            "portal.issuer {issuer} is registered as a {} issuer, not patient",
            entry.kind.as_str()
        );
        let client_id = settings.client_id.clone().ok_or_else(|| anyhow::anyhow!("portal.client_id is required with portal.issuer"))?;
        let key_file =
            settings.private_key_file.as_ref().ok_or_else(|| anyhow::anyhow!("portal.private_key_file is required with portal.issuer"))?;
        let pem = std::fs::read(key_file).map_err(|e| anyhow::anyhow!("portal.private_key_file {}: {e}", key_file.display()))?;
        let key = SigningIssuer::from_pem(client_id.clone(), IssuerKind::Patient, &pem)
            .map_err(|e| anyhow::anyhow!("portal.private_key_file {}: {e:#}", key_file.display()))?;
        let redirect = match &settings.redirect_url {
            Some(url) => url.clone(),
            None => default_redirect(base_url)?,
        };
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .use_rustls_tls()
            // Following a redirect from the token endpoint would send the code elsewhere.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca_file) = &entry.ca_file {
            let pem = std::fs::read(ca_file).map_err(|e| anyhow::anyhow!("issuer {issuer} ca_file {}: {e}", ca_file.display()))?;
            for certificate in reqwest::Certificate::from_pem_bundle(&pem)? {
                http = http.add_root_certificate(certificate);
            }
        }
        Ok(Some(Self {
            issuer: IssuerUrl::new(issuer.clone()).map_err(|e| anyhow::anyhow!("portal.issuer {issuer}: {e}"))?,
            client_id: ClientId::new(client_id),
            key,
            scopes: settings.scopes.split_whitespace().map(str::to_owned).collect(),
            redirect: RedirectUrl::new(redirect.clone()).map_err(|e| anyhow::anyhow!("portal redirect URL {redirect}: {e}"))?,
            http: http.build()?,
            metadata: RwLock::new(None),
        }))
    }

    pub fn redirect_url(&self) -> &str {
        self.redirect.as_str()
    }

    /// Where to send the browser, and what to keep until it comes back.
    pub async fn start(&self) -> Result<(String, PendingSignIn), SignInError> {
        let metadata = self.metadata(false).await?;
        let client = self.client(&metadata);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge);
        for scope in self.scopes.iter().filter(|scope| scope.as_str() != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let pending = PendingSignIn { state: state.secret().clone(), nonce: nonce.secret().clone(), verifier: verifier.secret().clone() };
        Ok((url.to_string(), pending))
    }

    /// Exchange the code the browser brought back, and check the ID token it buys.
    pub async fn finish(&self, pending: PendingSignIn, code: String) -> Result<SignedIn, SignInError> {
        let metadata = self.metadata(false).await?;
        let client = self.client(&metadata);
        let token_endpoint = metadata
            .token_endpoint()
            .ok_or_else(|| SignInError::Rejected("the provider's discovery document has no token endpoint".into()))?
            .to_string();
        let assertion = self.client_assertion(&token_endpoint);
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| SignInError::Rejected(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .add_extra_param("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            .add_extra_param("client_assertion", assertion)
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::ServerResponse(response) => SignInError::Rejected(format!("token endpoint: {response}")),
                other => SignInError::Unavailable(format!("token endpoint: {other}")),
            })?;
        let id_token = response.id_token().ok_or_else(|| SignInError::Rejected("the token response has no ID token".into()))?;
        let nonce = Nonce::new(pending.nonce);
        let subject = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(claims) => claims.subject().to_string(),
            // Signed with a key published since discovery was cached: fetch it once more.
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
                let fresh = self.metadata(true).await?;
                let client = self.client(&fresh);
                let claims =
                    id_token.claims(&client.id_token_verifier(), &nonce).map_err(|e| SignInError::Rejected(format!("ID token: {e}")))?;
                claims.subject().to_string()
            }
            Err(e) => return Err(SignInError::Rejected(format!("ID token: {e}"))),
        };
        Ok(SignedIn { subject, access_token: response.access_token().secret().clone(), expires_in: response.expires_in() })
    }

    fn client(
        &self,
        metadata: &CoreProviderMetadata,
    ) -> CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        // No client secret: the client id goes in the body, beside the signed assertion.
        CoreClient::from_provider_metadata(metadata.clone(), self.client_id.clone(), None)
            .set_redirect_uri(self.redirect.clone())
            .set_auth_type(AuthType::RequestBody)
    }

    /// RFC 7523 client authentication: a short-lived JWT signed with the portal's key.
    fn client_assertion(&self, token_endpoint: &str) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.key.sign(&json!({
            "iss": self.client_id.as_str(),
            "sub": self.client_id.as_str(),
            "aud": token_endpoint,
            "jti": uuid::Uuid::new_v4().to_string(),
            "iat": now,
            "exp": now + 60,
        }))
    }

    async fn metadata(&self, refresh: bool) -> Result<Arc<CoreProviderMetadata>, SignInError> {
        if !refresh
            && let Some((fetched, metadata)) = self.metadata.read().await.as_ref()
            && fetched.elapsed() < METADATA_MAX_AGE
        {
            return Ok(metadata.clone());
        }
        let mut slot = self.metadata.write().await;
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http).await.map_err(|e| {
            tracing::warn!(issuer = self.issuer.as_str(), error = %e, "portal: OpenID discovery failed");
            SignInError::Unavailable(e.to_string())
        })?;
        let metadata = Arc::new(metadata);
        *slot = Some((Instant::now(), metadata.clone()));
        Ok(metadata)
    }
}

/// `https://host:port/portal/callback` for a FHIR base `https://host:port/fhir/r4`.
fn default_redirect(base_url: &str) -> anyhow::Result<String> {
    let base = openidconnect::url::Url::parse(base_url).map_err(|e| anyhow::anyhow!("FHIR base URL {base_url}: {e}"))?;
    Ok(base.join("/portal/callback")?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(kind: IssuerKind) -> IssuerEntry {
        IssuerEntry {
            issuer: "https://login.example".into(),
            audience: "https://hie.example/fhir/r4".into(),
            kind,
            jwks_file: None,
            jwks_url: None,
            discovery_url: Some("https://login.example/.well-known/openid-configuration".into()),
            ca_file: None,
        }
    }

    #[test]
    fn a_portal_setting_that_cannot_work_stops_the_start() {
        let base = "https://127.0.0.1:8443/fhir/r4";
        let error = |settings: &PortalSettings, issuers: &[IssuerEntry]| match SignIn::from_settings(settings, issuers, base) {
            Err(error) => format!("{error:#}"),
            Ok(_) => panic!("accepted"),
        };
        assert!(SignIn::from_settings(&PortalSettings::default(), &[], base).unwrap().is_none(), "no issuer: no sign-in");
        let mut settings = PortalSettings { issuer: Some("https://login.example".into()), ..PortalSettings::default() };
        assert!(error(&settings, &[]).contains("not one of the registered [[auth.issuers]]"));
        assert!(error(&settings, &[issuer(IssuerKind::Clinician)]).contains("registered as a clinician issuer"));
        assert!(error(&settings, &[issuer(IssuerKind::Patient)]).contains("portal.client_id is required"));
        settings.client_id = Some("hie-portal".into());
        assert!(error(&settings, &[issuer(IssuerKind::Patient)]).contains("portal.private_key_file is required"));
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("portal.key");
        std::fs::write(&key_file, "not a key").unwrap();
        settings.private_key_file = Some(key_file.clone());
        assert!(error(&settings, &[issuer(IssuerKind::Patient)]).contains("portal.private_key_file"));
        std::fs::write(&key_file, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let sign_in = SignIn::from_settings(&settings, &[issuer(IssuerKind::Patient)], base).unwrap().expect("configured");
        assert_eq!(sign_in.redirect_url(), "https://127.0.0.1:8443/portal/callback");
    }

    #[test]
    fn the_callback_sits_at_the_origin_of_the_fhir_base() {
        assert_eq!(default_redirect("https://127.0.0.1:8443/fhir/r4").unwrap(), "https://127.0.0.1:8443/portal/callback");
        assert_eq!(default_redirect("https://hie.example.nhs.uk/fhir/r4/").unwrap(), "https://hie.example.nhs.uk/portal/callback");
    }
}
