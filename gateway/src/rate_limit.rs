//! Per-client rate limits: a fixed one-minute window per client, counted in Redis when it is
//! configured (so every instance shares the count) and in process otherwise. When Redis is
//! unreachable the count falls back to this process: a limit that is too generous for a minute
//! is better than refusing every client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use redis::aio::ConnectionManager;

use crate::error::ApiError;
use crate::http::AppState;
use crate::tls::PeerCertificate;

pub struct RateLimiter {
    per_minute: u32,
    /// Set once Redis has been reached; the manager then reconnects by itself.
    redis: RwLock<Option<ConnectionManager>>,
    redis_healthy: AtomicBool,
    local: Mutex<HashMap<String, (u64, u32)>>,
}

impl RateLimiter {
    /// `per_minute == 0` turns limiting off.
    pub fn new(per_minute: u32, redis: Option<ConnectionManager>) -> Self {
        Self { per_minute, redis: RwLock::new(redis), redis_healthy: AtomicBool::new(true), local: Mutex::new(HashMap::new()) }
    }

    pub fn set_redis(&self, connection: ConnectionManager) {
        *self.redis.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(connection);
    }

    pub fn uses_redis(&self) -> bool {
        self.redis.read().unwrap_or_else(|poisoned| poisoned.into_inner()).is_some()
    }

    pub fn is_enabled(&self) -> bool {
        self.per_minute > 0
    }

    /// Count one request for `client`; refuse it when the client is over its limit.
    pub async fn check(&self, client: &str) -> Result<(), ApiError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let minute = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() / 60;
        let count = match self.count_in_redis(client, minute).await {
            Some(count) => count,
            None => self.count_locally(client, minute),
        };
        if count > self.per_minute {
            return Err(ApiError::TooManyRequests(format!(
                "this client has made more than {} requests this minute; slow down and retry after the Retry-After delay",
                self.per_minute
            )));
        }
        Ok(())
    }

    async fn count_in_redis(&self, client: &str, minute: u64) -> Option<u32> {
        let mut connection = self.redis.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()?;
        let key = format!("hie:rate:{client}:{minute}");
        let result: redis::RedisResult<(u32, bool)> =
            redis::pipe().atomic().incr(&key, 1u32).expire(&key, 120).query_async(&mut connection).await;
        match result {
            Ok((count, _)) => {
                if !self.redis_healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis is back: rate limits are shared again");
                }
                Some(count)
            }
            Err(error) => {
                if self.redis_healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(%error, "Redis is unreachable: rate limits are counted in this process");
                }
                None
            }
        }
    }

    fn count_locally(&self, client: &str, minute: u64) -> u32 {
        let mut windows = self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() > 10_000 {
            windows.retain(|_, (window, _)| *window == minute);
        }
        let entry = windows.entry(client.to_owned()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        entry.1
    }
}

/// Connect to Redis now, or keep trying in the background while working in process; `attach`
/// hands the connection to its users. Once connected, the connection manager reconnects by
/// itself after an outage.
pub async fn attach_redis(url: String, attach: impl Fn(ConnectionManager) + Send + 'static) -> anyhow::Result<()> {
    redis::Client::open(url.as_str()).map_err(|e| anyhow::anyhow!("invalid redis.url: {e}"))?;
    match connect_redis(&url).await {
        Ok(connection) => attach(connection),
        Err(error) => {
            tracing::warn!(%error, "Redis is unreachable at start: rate limits and portal sessions stay in process until it answers");
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    if let Ok(connection) = connect_redis(&url).await {
                        tracing::info!("Redis answers: rate limits and portal sessions are shared");
                        attach(connection);
                        break;
                    }
                }
            });
        }
    }
    Ok(())
}

async fn connect_redis(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("invalid redis.url: {e}"))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    Ok(ConnectionManager::new_with_config(client, config).await?)
}

/// Middleware: count the request against its client (by certificate; anonymous callers by
/// address) before it reaches a handler.
pub async fn limit(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if let Some(state) = request.app_data::<web::Data<AppState>>()
        && state.rate_limiter.is_enabled()
    {
        let key = match request.conn_data::<PeerCertificate>() {
            Some(certificate) => match state.clients.identify(certificate) {
                Some(client) => format!("client:{}", client.name),
                None => format!("certificate:{}", certificate.fingerprint),
            },
            None => format!("address:{}", request.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default()),
        };
        // Answered here as a response (not an error), so the audit middleware around records it.
        if let Err(refused) = state.rate_limiter.check(&key).await {
            return Ok(request.error_response(refused));
        }
    }
    next.call(request).await.map(ServiceResponse::map_into_boxed_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn counts_in_process_without_redis() {
        let limiter = RateLimiter::new(3, None);
        for _ in 0..3 {
            assert!(limiter.check("a").await.is_ok());
        }
        assert!(matches!(limiter.check("a").await, Err(ApiError::TooManyRequests(_))));
        assert!(limiter.check("b").await.is_ok(), "each client has its own budget");
        assert!(RateLimiter::new(0, None).check("a").await.is_ok(), "0 turns limiting off");
    }
}
