//! Portal sessions and sign-ins in flight, kept server-side: in process, or in Redis when
//! `redis.url` is set, so that every instance behind a load balancer sees the same ones. The
//! browser holds only a random 256-bit id; the store is keyed by its SHA-256, so neither a Redis
//! dump nor a memory dump yields a usable cookie.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::aio::ConnectionManager;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a stored value is: keys of different kinds never collide.
#[derive(Clone, Copy)]
pub enum Kind {
    /// A sign-in between the redirect to the provider and the callback.
    Pending,
    /// A signed-in person.
    Session,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Session => "session",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the session store is unavailable: {0}")]
pub struct StoreUnavailable(String);

pub struct SessionStore {
    local: moka::sync::Cache<String, Arc<(Instant, String)>>,
    redis: RwLock<Option<ConnectionManager>>,
}

impl Default for SessionStore {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionStore {
    pub fn new() -> Self {
        Self {
            local: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(24 * 3600)).build(),
            redis: RwLock::new(None),
        }
    }

    /// From now on, sessions live in Redis (shared by every instance).
    pub fn set_redis(&self, connection: ConnectionManager) {
        *self.redis.write().expect("session store lock") = Some(connection);
    }

    /// A fresh random id for a cookie.
    pub fn new_id() -> String {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system random source works");
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub async fn put<T: Serialize>(&self, kind: Kind, id: &str, value: &T, ttl: Duration) -> Result<(), StoreUnavailable> {
        let key = key(kind, id);
        let text = serde_json::to_string(value).map_err(|e| StoreUnavailable(e.to_string()))?;
        match self.connection() {
            Some(mut redis) => {
                let seconds = ttl.as_secs().max(1);
                redis::cmd("SET")
                    .arg(&key)
                    .arg(text)
                    .arg("EX")
                    .arg(seconds)
                    .query_async::<()>(&mut redis)
                    .await
                    .map_err(|e| StoreUnavailable(e.to_string()))
            }
            None => {
                self.local.insert(key, Arc::new((Instant::now() + ttl, text)));
                Ok(())
            }
        }
    }

    /// The value, if it exists and has not expired. A store that cannot answer is treated as
    /// holding nothing: the person signs in again (fail closed).
    pub async fn get<T: DeserializeOwned>(&self, kind: Kind, id: &str) -> Option<T> {
        let key = key(kind, id);
        let text = match self.connection() {
            Some(mut redis) => match redis::cmd("GET").arg(&key).query_async::<Option<String>>(&mut redis).await {
                Ok(text) => text?,
                Err(error) => {
                    tracing::warn!(%error, "portal session store unavailable");
                    return None;
                }
            },
            None => self.local.get(&key).filter(|entry| entry.0 > Instant::now())?.1.clone(),
        };
        serde_json::from_str(&text).ok()
    }

    /// The value, removed: a sign-in in flight can be finished once only.
    pub async fn take<T: DeserializeOwned>(&self, kind: Kind, id: &str) -> Option<T> {
        let key = key(kind, id);
        let text = match self.connection() {
            Some(mut redis) => match redis::cmd("GETDEL").arg(&key).query_async::<Option<String>>(&mut redis).await {
                Ok(text) => text?,
                Err(error) => {
                    tracing::warn!(%error, "portal session store unavailable");
                    return None;
                }
            },
            None => self.local.remove(&key).filter(|entry| entry.0 > Instant::now())?.1.clone(),
        };
        serde_json::from_str(&text).ok()
    }

    pub async fn remove(&self, kind: Kind, id: &str) -> Result<(), StoreUnavailable> {
        let key = key(kind, id);
        match self.connection() {
            Some(mut redis) => redis::cmd("DEL").arg(&key).query_async::<()>(&mut redis).await.map_err(|e| StoreUnavailable(e.to_string())),
            None => {
                self.local.invalidate(&key);
                Ok(())
            }
        }
    }

    fn connection(&self) -> Option<ConnectionManager> {
        self.redis.read().expect("session store lock").clone()
    }
}

fn key(kind: Kind, id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    format!("hie:portal:{}:{}", kind.prefix(), URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_expire_and_a_pending_sign_in_can_be_taken_once() {
        let store = SessionStore::new();
        let id = SessionStore::new_id();
        assert_eq!(id.len(), 43, "256 bits, base64url");
        store.put(Kind::Pending, &id, &"state", Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.get::<String>(Kind::Session, &id).await, None, "kinds do not collide");
        assert_eq!(store.take::<String>(Kind::Pending, &id).await.as_deref(), Some("state"));
        assert_eq!(store.take::<String>(Kind::Pending, &id).await, None);

        store.put(Kind::Session, &id, &"gone", Duration::ZERO).await.unwrap();
        assert_eq!(store.get::<String>(Kind::Session, &id).await, None, "expired");
    }

    #[test]
    fn the_store_never_holds_the_cookie_value() {
        let id = SessionStore::new_id();
        assert!(!key(Kind::Session, &id).contains(&id));
    }
}
