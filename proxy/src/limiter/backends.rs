//! Choosing the backend for a request: the in-process limiter, or Redis with
//! the `on_redis_error` policy when Redis fails, times out or its breaker is
//! open. The request filter calls [`Limiters::decide`] and nothing else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tollgate_core::config::{LimiterBackend, LimiterConfig, OnRedisError};
use tollgate_core::limits::Decision;

use super::redis::RedisLimiter;
use super::{Bucket, LocalLimiter, Subject};
use crate::metrics;

/// What the limiter step concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A decision, and which backend made it (`local`, `redis`, `fallback`, `allow`).
    Decided(Decision, &'static str),
    /// Redis failed and the policy is `deny`.
    Unavailable,
}

struct RedisSlot {
    url: String,
    timeout: Duration,
    limiter: Arc<RedisLimiter>,
}

/// The limiters of one proxy process.
pub struct Limiters {
    pub local: Arc<LocalLimiter>,
    redis: ArcSwapOption<RedisSlot>,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Limiters {
    pub fn new(local: Arc<LocalLimiter>) -> Self {
        Self {
            local,
            redis: ArcSwapOption::empty(),
        }
    }

    /// The Redis limiter for this config, created (lazily connecting) when
    /// the URL or timeout changes. `None` for the local backend.
    pub fn redis_for(&self, cfg: &LimiterConfig) -> Option<Arc<RedisLimiter>> {
        if cfg.backend != LimiterBackend::Redis {
            return None;
        }
        let url = cfg.redis_url.as_deref()?;
        if let Some(slot) = self.redis.load().as_ref() {
            if slot.url == url && slot.timeout == cfg.redis_timeout {
                return Some(slot.limiter.clone());
            }
        }
        match RedisLimiter::new(url, cfg.redis_timeout) {
            Ok(limiter) => {
                let limiter = Arc::new(limiter);
                self.redis.store(Some(Arc::new(RedisSlot {
                    url: url.to_string(),
                    timeout: cfg.redis_timeout,
                    limiter: limiter.clone(),
                })));
                Some(limiter)
            }
            Err(e) => {
                tracing::error!("cannot create the Redis limiter: {e}");
                None
            }
        }
    }

    /// The current Redis limiter, if one was created.
    pub fn current_redis(&self) -> Option<Arc<RedisLimiter>> {
        self.redis.load().as_ref().map(|s| s.limiter.clone())
    }

    /// Decide a request's limits with the configured backend and policy.
    pub async fn decide(
        &self,
        cfg: &LimiterConfig,
        subject: &Subject,
        buckets: &[&Bucket],
    ) -> Verdict {
        if buckets.is_empty() {
            return Verdict::Decided(
                Decision {
                    allowed: true,
                    limits: Vec::new(),
                },
                "local",
            );
        }
        let started = Instant::now();
        let Some(redis) = self.redis_for(cfg) else {
            let d = self.local.check(subject, buckets);
            observe("local", started);
            return Verdict::Decided(d, "local");
        };
        let result = redis.check(subject, buckets).await;
        metrics::REDIS_BREAKER_STATE.set(redis.breaker_state().as_i64());
        match result {
            Ok(d) => {
                observe("redis", started);
                Verdict::Decided(d, "redis")
            }
            Err(e) => {
                metrics::REDIS_ERRORS.with_label_values(&[e.kind()]).inc();
                tracing::debug!("redis limiter: {e}");
                let verdict = match cfg.on_redis_error {
                    OnRedisError::Local => {
                        Verdict::Decided(self.local.check(subject, buckets), "fallback")
                    }
                    OnRedisError::Allow => Verdict::Decided(
                        Decision {
                            allowed: true,
                            limits: Vec::new(),
                        },
                        "allow",
                    ),
                    OnRedisError::Deny => Verdict::Unavailable,
                };
                let policy = match cfg.on_redis_error {
                    OnRedisError::Local => "local",
                    OnRedisError::Allow => "allow",
                    OnRedisError::Deny => "deny",
                };
                metrics::LIMITER_FALLBACKS
                    .with_label_values(&[policy])
                    .inc();
                observe("redis", started);
                verdict
            }
        }
    }
}

fn observe(backend: &str, started: Instant) {
    metrics::LIMITER_DURATION
        .with_label_values(&[backend])
        .observe(started.elapsed().as_secs_f64());
}
