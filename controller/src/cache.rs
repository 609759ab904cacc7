//! The read cache behind one interface: Redis when `redis_url` is configured (shared by every
//! controller replica), in process otherwise. Values are JSON with a TTL per entry.
//!
//! The cache only ever speeds reads up: a Redis failure counts as a miss and is logged, so an
//! unavailable cache never fails an operation. Writes invalidate what readers would see through
//! [`Cache::invalidate`], whichever surface they came from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::telemetry::CacheMetrics;

/// What is cached, and for how long at most; writes invalidate earlier.
pub mod ttl {
    use std::time::Duration;
    /// Device list: status and headline metrics may lag by this much.
    pub const DEVICES: Duration = Duration::from_secs(5);
    /// Latest samples: invalidated by each ingested batch of the device.
    pub const LATEST_METRICS: Duration = Duration::from_secs(60);
    /// Capabilities: invalidated by each check report of the device.
    pub const CAPABILITIES: Duration = Duration::from_secs(300);
    /// A diagnosis: invalidated by check reports and device changes.
    pub const DIAGNOSIS: Duration = Duration::from_secs(15);
}

/// Cache keys, in one place so readers and invalidators agree.
pub mod key {
    pub const DEVICES: &str = "devices";
    pub fn latest_metrics(device_id: &str) -> String {
        format!("latest:{device_id}")
    }
    pub fn capabilities(device_id: &str) -> String {
        format!("capabilities:{device_id}")
    }
    pub fn diagnosis(device_id: &str) -> String {
        format!("diagnosis:{device_id}")
    }
    /// Everything derived from one device's state.
    pub fn of_device(device_id: &str) -> Vec<String> {
        vec![
            DEVICES.to_string(),
            latest_metrics(device_id),
            capabilities(device_id),
            diagnosis(device_id),
        ]
    }
}

#[derive(Clone)]
struct Entry {
    json: Arc<[u8]>,
    ttl: Duration,
}

struct PerEntryTtl;

impl moka::Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _at: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

enum Backend {
    Memory(moka::sync::Cache<String, Entry>),
    /// Keys are `<prefix>:v1:<key>`, so one Redis can serve several fleets.
    Redis {
        connection: ConnectionManager,
        prefix: String,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis at {url}: {source}")]
pub struct CacheError {
    url: String,
    source: redis::RedisError,
}

/// Hit/miss counts and lookup latency, for `/readyz` and `/metrics`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct CacheStats {
    pub backend: String,
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    /// Mean lookup latency in milliseconds.
    pub mean_lookup_ms: f64,
}

pub struct Cache {
    backend: Backend,
    metrics: CacheMetrics,
    lookups: AtomicU64,
    lookup_micros: AtomicU64,
}

impl Cache {
    pub fn in_process() -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(50_000)
            .expire_after(PerEntryTtl)
            .build();
        Self::on(Backend::Memory(cache))
    }

    /// On a Redis connection (see [`connect_redis`]), with keys under `prefix`.
    pub fn redis(connection: ConnectionManager, prefix: &str) -> Self {
        Self::on(Backend::Redis {
            connection,
            prefix: format!("{prefix}:v1:"),
        })
    }

    fn on(backend: Backend) -> Self {
        Self {
            backend,
            metrics: CacheMetrics::default(),
            lookups: AtomicU64::new(0),
            lookup_micros: AtomicU64::new(0),
        }
    }

    /// The lookup counters and latency histogram, for `/metrics`.
    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "in-process",
            Backend::Redis { .. } => "redis",
        }
    }

    /// The cached value under `key`, if present, fresh and readable as `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let started = Instant::now();
        let json = self.get_raw(key).await;
        let elapsed = started.elapsed();
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.lookup_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.metrics.lookup_seconds.observe(elapsed.as_secs_f64());
        let value = json.and_then(|json| serde_json::from_slice(&json).ok());
        self.metrics
            .count(if value.is_some() { "hit" } else { "miss" });
        value
    }

    async fn get_raw(&self, key: &str) -> Option<Arc<[u8]>> {
        match &self.backend {
            Backend::Memory(cache) => cache.get(key).map(|entry| entry.json),
            Backend::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                let fetched: redis::RedisResult<Option<Vec<u8>>> =
                    connection.get(format!("{prefix}{key}")).await;
                match fetched {
                    Ok(json) => json.map(Arc::from),
                    Err(error) => {
                        self.redis_failed("get", &error);
                        None
                    }
                }
            }
        }
    }

    pub async fn put<T: Serialize>(&self, key: &str, value: &T, ttl: Duration) {
        let Ok(json) = serde_json::to_vec(value) else {
            return;
        };
        match &self.backend {
            Backend::Memory(cache) => cache.insert(
                key.to_string(),
                Entry {
                    json: Arc::from(json),
                    ttl,
                },
            ),
            Backend::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                let millis = ttl.as_millis().max(1) as u64;
                let stored: redis::RedisResult<()> = connection
                    .pset_ex(format!("{prefix}{key}"), json, millis)
                    .await;
                if let Err(error) = stored {
                    self.redis_failed("set", &error);
                }
            }
        }
    }

    /// Drops `keys`: called by every write, so the next read sees the new state.
    pub async fn invalidate(&self, keys: &[String]) {
        match &self.backend {
            Backend::Memory(cache) => keys.iter().for_each(|key| cache.invalidate(key)),
            Backend::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                let keys: Vec<String> = keys.iter().map(|k| format!("{prefix}{k}")).collect();
                let deleted: redis::RedisResult<usize> = connection.del(keys).await;
                if let Err(error) = deleted {
                    self.redis_failed("del", &error);
                }
            }
        }
    }

    /// The cached value, or `load()`'s result (which is then cached for `ttl`).
    pub async fn get_or_load<T, E, F>(&self, key: &str, ttl: Duration, load: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: std::future::Future<Output = Result<T, E>>,
    {
        if let Some(value) = self.get(key).await {
            return Ok(value);
        }
        let value = load.await?;
        self.put(key, &value, ttl).await;
        Ok(value)
    }

    /// A round trip to the backend, for readiness.
    pub async fn ping(&self) -> Result<(), String> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis { connection, .. } => {
                let mut connection = connection.clone();
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{:?}", e.kind()))
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        let lookups = self.lookups.load(Ordering::Relaxed);
        let micros = self.lookup_micros.load(Ordering::Relaxed);
        CacheStats {
            backend: self.backend_name().to_string(),
            hits: self.metrics.get("hit"),
            misses: self.metrics.get("miss"),
            errors: self.metrics.get("error"),
            mean_lookup_ms: if lookups == 0 {
                0.0
            } else {
                micros as f64 / lookups as f64 / 1000.0
            },
        }
    }

    fn redis_failed(&self, operation: &str, error: &redis::RedisError) {
        self.metrics.count("error");
        tracing::warn!(operation, %error, "cache: Redis failed; serving from the database");
    }
}

/// A Redis connection with bounded connect and response timeouts, shared by the cache and the
/// rate limiter.
pub async fn connect_redis(url: &str) -> Result<ConnectionManager, CacheError> {
    let failed = |source| CacheError {
        url: crate::store::redact_url(url),
        source,
    };
    let client = redis::Client::open(url).map_err(failed)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(5))
        .set_response_timeout(Duration::from_secs(2))
        // Reconnect attempts back off up to 1 s apart (the crate's default grows to a minute,
        // which would stall startup against a Redis that is down).
        .set_factor(2)
        .set_max_delay(1000)
        .set_number_of_retries(2);
    client
        .get_connection_manager_with_config(config)
        .await
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_expire_and_invalidate() {
        let cache = Cache::in_process();
        cache.put("a", &1u32, Duration::from_millis(50)).await;
        cache.put("b", &2u32, Duration::from_secs(60)).await;
        assert_eq!(cache.get::<u32>("a").await, Some(1));
        cache.invalidate(&["b".to_string()]).await;
        assert_eq!(cache.get::<u32>("b").await, None);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(cache.get::<u32>("a").await, None);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 2));
    }
}
