//! An issuer's signing keys: loaded from a JWKS file, a JWKS URL or OpenID discovery, cached,
//! and reloaded when a token names a key the cache does not hold (key rotation), at most once per
//! `refresh_interval` so that tokens with made-up `kid`s cannot make the gateway hammer the
//! issuer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Where an issuer's keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    File(PathBuf),
    Url(String),
    /// An OpenID Provider configuration URL; its `jwks_uri` is looked up on every reload, so a
    /// provider that moves its key set is followed.
    Discovery(String),
}

/// One verification key and the algorithms it may verify.
pub struct VerificationKey {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct KeySet {
    /// Bumped on every reload: tokens verified under an older key set are verified again.
    generation: u64,
    by_kid: HashMap<String, Arc<VerificationKey>>,
    /// Keys published without a `kid`; used only when the set has exactly one key.
    unnamed: Vec<Arc<VerificationKey>>,
}

/// What OpenID discovery said about a provider's endpoints, for `smart-configuration`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderEndpoints {
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
}

pub struct IssuerKeys {
    source: KeySource,
    discovered: RwLock<ProviderEndpoints>,
    http: reqwest::Client,
    refresh_interval: Duration,
    keys: RwLock<Arc<KeySet>>,
    /// When the keys were last (re)loaded or a reload was last tried; also serialises reloads.
    last_load: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the token's signing key is not in the issuer's key set")]
    UnknownKey,
    #[error("the issuer's key set could not be loaded: {0}")]
    Unavailable(String),
}

impl IssuerKeys {
    pub fn new(source: KeySource, http: reqwest::Client, refresh_interval: Duration) -> Self {
        let discovered = RwLock::new(match &source {
            KeySource::Url(url) => ProviderEndpoints { jwks_uri: Some(url.clone()), ..ProviderEndpoints::default() },
            _ => ProviderEndpoints::default(),
        });
        Self { source, discovered, http, refresh_interval, keys: RwLock::new(Arc::default()), last_load: tokio::sync::Mutex::new(None) }
    }

    /// The current key set's generation.
    pub fn generation(&self) -> u64 {
        self.keys.read().expect("key set lock").generation
    }

    fn replace(&self, mut set: KeySet) {
        let mut keys = self.keys.write().expect("key set lock");
        set.generation = keys.generation + 1;
        *keys = Arc::new(set);
    }

    /// The provider's endpoints, as far as they are known (discovery, or the JWKS URL).
    pub fn endpoints(&self) -> ProviderEndpoints {
        self.discovered.read().expect("endpoints lock").clone()
    }

    /// Load the keys now (at start-up, so a broken issuer entry is found before traffic is).
    pub async fn load(&self) -> Result<usize, KeyError> {
        let mut last = self.last_load.lock().await;
        *last = Some(Instant::now());
        let set = self.fetch().await?;
        let count = set.by_kid.len() + set.unnamed.len();
        self.replace(set);
        Ok(count)
    }

    /// The key for `kid` and the generation of the set it came from, reloading the set once
    /// (rate-limited) when the cache does not have it.
    pub async fn find(&self, kid: Option<&str>) -> Result<(Arc<VerificationKey>, u64), KeyError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let mut last = self.last_load.lock().await;
        // Another request may have reloaded while this one waited for the lock.
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        if last.is_some_and(|at| at.elapsed() < self.refresh_interval) {
            return Err(KeyError::UnknownKey);
        }
        *last = Some(Instant::now());
        let set = self.fetch().await?;
        self.replace(set);
        drop(last);
        self.cached(kid).ok_or(KeyError::UnknownKey)
    }

    fn cached(&self, kid: Option<&str>) -> Option<(Arc<VerificationKey>, u64)> {
        let set = self.keys.read().expect("key set lock");
        let key = match kid {
            Some(kid) => set.by_kid.get(kid).cloned(),
            None if set.by_kid.is_empty() && set.unnamed.len() == 1 => set.unnamed.first().cloned(),
            None => None,
        };
        key.map(|key| (key, set.generation))
    }

    async fn fetch(&self) -> Result<KeySet, KeyError> {
        let document = match &self.source {
            KeySource::File(path) => {
                let bytes = tokio::fs::read(path).await.map_err(|e| KeyError::Unavailable(format!("{}: {e}", path.display())))?;
                serde_json::from_slice(&bytes).map_err(|e| KeyError::Unavailable(format!("{}: {e}", path.display())))?
            }
            KeySource::Url(url) => self.get_json(url).await?,
            KeySource::Discovery(url) => {
                let configuration = self.get_json(url).await?;
                let text = |name: &str| configuration[name].as_str().map(str::to_owned);
                let endpoints = ProviderEndpoints {
                    authorization_endpoint: text("authorization_endpoint"),
                    token_endpoint: text("token_endpoint"),
                    jwks_uri: text("jwks_uri"),
                };
                let jwks_uri = endpoints
                    .jwks_uri
                    .clone()
                    .ok_or_else(|| KeyError::Unavailable(format!("{url}: the provider configuration has no jwks_uri")))?;
                *self.discovered.write().expect("endpoints lock") = endpoints;
                self.get_json(&jwks_uri).await?
            }
        };
        parse_key_set(&document)
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, KeyError> {
        let unavailable = |e: reqwest::Error| KeyError::Unavailable(format!("{url}: {e}"));
        let response = self.http.get(url).send().await.map_err(unavailable)?.error_for_status().map_err(unavailable)?;
        response.json().await.map_err(unavailable)
    }
}

/// Parse a JWKS. Keys this gateway cannot use (encryption keys, symmetric keys, unknown types)
/// are skipped rather than failing the set: providers publish such keys alongside signing ones.
fn parse_key_set(document: &serde_json::Value) -> Result<KeySet, KeyError> {
    let keys = document["keys"].as_array().ok_or_else(|| KeyError::Unavailable("the key set has no \"keys\" array".into()))?;
    let mut set = KeySet::default();
    for key in keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(key.clone()) else {
            tracing::debug!("skipping a JWKS entry this gateway cannot read");
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let Some(algorithms) = algorithms_for(&jwk, key["alg"].as_str()) else { continue };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
        let key = Arc::new(VerificationKey { key, algorithms });
        match jwk.common.key_id {
            Some(kid) => {
                set.by_kid.insert(kid, key);
            }
            None => set.unnamed.push(key),
        }
    }
    Ok(set)
}

/// The asymmetric algorithms a key may verify: the one its `alg` names, or every one its type
/// supports. Symmetric keys verify nothing: a shared secret in a published key set is a mistake,
/// and accepting HS256 is the classic algorithm-confusion hole.
fn algorithms_for(jwk: &Jwk, named: Option<&str>) -> Option<Vec<Algorithm>> {
    use Algorithm::*;
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![EdDSA],
        _ => return None,
    };
    match named {
        None => Some(by_type),
        Some(name) => name.parse::<Algorithm>().ok().filter(|named| by_type.contains(named)).map(|named| vec![named]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_encryption_keys_are_skipped() {
        let document = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "shared", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "enc", "use": "enc", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "kid": "sig", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "weird"}
        ]});
        let set = parse_key_set(&document).unwrap();
        assert_eq!(set.by_kid.keys().collect::<Vec<_>>(), vec!["sig"]);
        assert_eq!(set.by_kid["sig"].algorithms, vec![Algorithm::ES256]);
    }
}
