//! Per-principal rate limits: a token bucket of `burst` tokens refilled at `per_second`.
//!
//! With Redis configured the buckets live there (one Lua script, atomic, on Redis's clock), so
//! a limit holds across controller replicas; otherwise they live in process (`governor`).
//! A Redis failure lets the request through and is logged: losing the limiter must not take
//! the API down with it.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use redis::aio::ConnectionManager;

/// Limits per principal.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 20.0,
            burst: 100,
        }
    }
}

impl RateLimit {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.per_second.is_finite() && self.per_second > 0.0 && self.per_second <= 100_000.0) {
            return Err("rate_limit.per_second must be between 0 and 100000".into());
        }
        if self.burst == 0 {
            return Err("rate_limit.burst must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused; a token is available again after this long.
    Limited {
        retry_after: Duration,
    },
}

enum Buckets {
    Memory(DefaultKeyedRateLimiter<String>),
    Redis {
        connection: ConnectionManager,
        prefix: String,
    },
}

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Buckets,
}

/// KEYS[1]: the bucket; ARGV: refill per second, burst. Returns {allowed, wait in ms}.
const TOKEN_BUCKET: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait}
"#;

impl RateLimiter {
    pub fn in_process(limit: RateLimit) -> Self {
        let period = Duration::from_secs_f64(1.0 / limit.per_second);
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Self {
            limit,
            buckets: Buckets::Memory(DefaultKeyedRateLimiter::dashmap(quota)),
        }
    }

    /// Buckets in Redis under `<prefix>:v1:ratelimit:<principal>`.
    pub fn redis(limit: RateLimit, connection: ConnectionManager, prefix: &str) -> Self {
        Self {
            limit,
            buckets: Buckets::Redis {
                connection,
                prefix: format!("{prefix}:v1:ratelimit:"),
            },
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self.buckets {
            Buckets::Memory(_) => "in-process",
            Buckets::Redis { .. } => "redis",
        }
    }

    /// Takes one token from `principal`'s bucket.
    pub async fn check(&self, principal: &str) -> Decision {
        match &self.buckets {
            Buckets::Memory(limiter) => match limiter.check_key(&principal.to_string()) {
                Ok(()) => Decision::Allowed,
                Err(not_until) => Decision::Limited {
                    retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                },
            },
            Buckets::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                let outcome: redis::RedisResult<(i64, i64)> = redis::Script::new(TOKEN_BUCKET)
                    .key(format!("{prefix}{principal}"))
                    .arg(self.limit.per_second)
                    .arg(self.limit.burst)
                    .invoke_async(&mut connection)
                    .await;
                match outcome {
                    Ok((1, _)) => Decision::Allowed,
                    Ok((_, wait_ms)) => Decision::Limited {
                        retry_after: Duration::from_millis(wait_ms.max(1) as u64),
                    },
                    Err(error) => {
                        tracing::warn!(%error, "rate limiter: Redis failed; request allowed");
                        Decision::Allowed
                    }
                }
            }
        }
    }

    /// Forgets idle in-process buckets (a bucket at rest is full, so dropping it changes
    /// nothing); Redis expires its own.
    pub fn prune(&self) {
        if let Buckets::Memory(limiter) = &self.buckets {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bucket_refuses_past_its_burst_and_refills() {
        let limiter = RateLimiter::in_process(RateLimit {
            per_second: 20.0,
            burst: 2,
        });
        assert_eq!(limiter.check("a").await, Decision::Allowed);
        assert_eq!(limiter.check("a").await, Decision::Allowed);
        let Decision::Limited { retry_after } = limiter.check("a").await else {
            panic!("third request within the burst window must be limited");
        };
        assert!(retry_after <= Duration::from_millis(50), "{retry_after:?}");
        // Buckets are per principal.
        assert_eq!(limiter.check("b").await, Decision::Allowed);
        tokio::time::sleep(retry_after + Duration::from_millis(5)).await;
        assert_eq!(limiter.check("a").await, Decision::Allowed);
    }

    #[test]
    fn bad_limits_are_named() {
        let zero = RateLimit {
            per_second: 0.0,
            burst: 1,
        };
        assert!(zero.validate().unwrap_err().contains("per_second"));
    }
}
