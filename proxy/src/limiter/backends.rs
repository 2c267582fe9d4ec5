//! Choosing the backend for a request: the in-process limiter, or Redis with
//! the `on_redis_error` policy when Redis fails, times out or its breaker is
//! open. The request filter calls [`Limiters::decide`] and nothing else.

pub mod balance;
pub mod credits;
pub mod fallback;
pub mod quota_adjust;

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use prometheus::Histogram;
use tollgate_core::config::{LimiterBackend, LimiterConfig, OnRedisError};
use tollgate_core::limits::Decision;

use super::concurrency::{InFlight, InFlightGuard};
use super::redis::holds::RedisHold;
use super::redis::{RedisLimitError, RedisLimiter, RedisLimiterOptions};
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

/// The Redis limiter of one (URL, timeout, CA file, leases), or why it could not be
/// created (then retried after [`RETRY_CREATE`]).
struct RedisSlot {
    url: String,
    timeout: Duration,
    ca_file: Option<PathBuf>,
    lease: Duration,
    lease_ttl: Duration,
    limiter: Result<Arc<RedisLimiter>, RedisLimitError>,
    created: Instant,
}

impl RedisSlot {
    fn serves(&self, cfg: &LimiterConfig, url: &str) -> bool {
        self.url == url
            && self.timeout == cfg.redis_timeout
            && self.ca_file == cfg.redis_ca_file
            && self.lease == cfg.concurrency_lease
            && self.lease_ttl == cfg.lease_ttl
    }
}

/// How long a Redis limiter that could not be created (e.g. an unreadable
/// CA file) waits before it is tried again; meanwhile `on_redis_error` decides.
const RETRY_CREATE: Duration = Duration::from_secs(5);

/// The one Redis deadline of a request that starts its limiter step now:
/// its concurrency hold and its buckets together wait for Redis no longer
/// than `redis_timeout`.
pub fn redis_deadline(cfg: &LimiterConfig) -> Instant {
    Instant::now() + cfg.redis_timeout
}

/// A request's concurrency slot, released when dropped.
#[derive(Debug)]
pub enum InFlightHold {
    /// Counted in this process (local backend, or the `local` fallback).
    Local(InFlightGuard),
    /// Counted in Redis across proxies, and in this process (so that the
    /// `local` fallback counts it too).
    Redis(RedisHold, InFlightGuard),
    /// Not counted: Redis failed and the policy is `allow`.
    Uncounted,
}

/// What the concurrency step concluded.
#[derive(Debug)]
pub enum Concurrency {
    /// A slot is held until the value is dropped.
    Held(InFlightHold),
    /// Every slot of the key is taken.
    Full,
    /// Redis failed and the policy is `deny`.
    Unavailable,
}

/// The limiters of one proxy process.
pub struct Limiters {
    pub local: Arc<LocalLimiter>,
    /// Exact per-key in-flight counts of this process: every slot it holds,
    /// in Redis or counted by the local backend or fallback.
    pub in_flight: Arc<InFlight>,
    /// Prepaid credit balances and holders (see [`super::credits`]).
    pub credits: Arc<super::credits::CreditBook>,
    /// Quota and credit webhook events noticed in decisions (see [`crate::limiter::events`]).
    pub events: Arc<crate::limiter::events::Notices>,
    /// Quota resets and adjustments applied (see [`super::quota_adjust`]).
    pub quota_adjustments: Arc<super::quota_adjust::QuotaAdjustBook>,
    /// The live proxies the `local` fallback shares each limit with
    /// ([`fallback`]), counted by the heartbeat.
    peers: Arc<fallback::Peers>,
    redis: ArcSwapOption<RedisSlot>,
    /// Serialises creation, so that concurrent first requests make one.
    creating: Mutex<()>,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// Read the CA file and create the limiter; never panics, whatever the URL.
fn create(url: &str, cfg: &LimiterConfig) -> Result<RedisLimiter, RedisLimitError> {
    let ca_pem = match &cfg.redis_ca_file {
        None => None,
        Some(path) => Some(
            tollgate_core::files::read_regular(path, tollgate_core::files::DEFAULT_MAX_BYTES)
                .map_err(|e| {
                    RedisLimitError::Config(format!(
                        "limiter.redis_ca_file {}: {e}",
                        path.display()
                    ))
                })?,
        ),
    };
    RedisLimiter::with_options(
        url,
        RedisLimiterOptions {
            timeout: cfg.redis_timeout,
            ca_pem,
            concurrency_lease: cfg.concurrency_lease,
            lease_ttl: cfg.lease_ttl,
            ..RedisLimiterOptions::default()
        },
    )
}

impl Limiters {
    pub fn new(local: Arc<LocalLimiter>) -> Self {
        Self {
            local,
            in_flight: Arc::new(InFlight::default()),
            credits: Arc::new(super::credits::CreditBook::new()),
            events: Arc::new(crate::limiter::events::Notices::new()),
            quota_adjustments: Arc::default(),
            peers: Arc::default(),
            redis: ArcSwapOption::empty(),
            creating: Mutex::new(()),
        }
    }

    /// Take one of `key_id`'s `max` concurrency slots: exact in this process
    /// with the local backend, across every proxy with Redis (where a
    /// failure follows `on_redis_error`). Redis is waited for until
    /// `deadline` at most: the request's one Redis deadline
    /// ([`redis_deadline`]), shared with [`Self::decide`].
    ///
    /// Whatever the backend, every slot this process holds (a hold in Redis
    /// or one the `local` fallback counted) is first counted in
    /// [`Self::in_flight`]: a process that has `max` of the key's requests
    /// in flight refuses without asking Redis, so one proxy never runs more
    /// than `max` of them, Redis up or down (black-box round 13: the
    /// fallback counted only its own slots and admitted beside the Redis
    /// holds; back from an outage, Redis admitted beside the fallback's).
    pub async fn acquire(
        &self,
        cfg: &LimiterConfig,
        key_id: i64,
        max: u32,
        deadline: Instant,
    ) -> Concurrency {
        let Some(here) = self.in_flight.try_acquire(key_id, max) else {
            return Concurrency::Full;
        };
        let result = match self.redis_limiter(cfg) {
            None => return Concurrency::Held(InFlightHold::Local(here)),
            Some(Err(e)) => Err(e),
            Some(Ok(redis)) => {
                let r = redis.acquire_hold_by(key_id, max, deadline).await;
                metrics::REDIS_BREAKER_STATE.set(redis.breaker_state().as_i64());
                r
            }
        };
        match result {
            Ok(Some(hold)) => Concurrency::Held(InFlightHold::Redis(hold, here)),
            Ok(None) => Concurrency::Full,
            Err(e) => {
                metrics::REDIS_ERRORS.with_label_values(&[e.kind()]).inc();
                tracing::debug!("redis concurrency: {e}");
                let (verdict, policy) = match cfg.on_redis_error {
                    OnRedisError::Local => (Concurrency::Held(InFlightHold::Local(here)), "local"),
                    OnRedisError::Allow => (Concurrency::Held(InFlightHold::Uncounted), "allow"),
                    OnRedisError::Deny => (Concurrency::Unavailable, "deny"),
                };
                metrics::LIMITER_FALLBACKS
                    .with_label_values(&[policy])
                    .inc();
                verdict
            }
        }
    }

    /// The Redis limiter for this config, created (lazily connecting) when
    /// the URL, timeout or CA file changes. `None` for the local backend;
    /// `Some(Err)` when it cannot be created (then `on_redis_error` decides).
    pub fn redis_limiter(
        &self,
        cfg: &LimiterConfig,
    ) -> Option<Result<Arc<RedisLimiter>, RedisLimitError>> {
        if cfg.backend != LimiterBackend::Redis {
            return None;
        }
        let Some(url) = cfg.redis_url.as_deref() else {
            return Some(Err(RedisLimitError::Config(
                "limiter.redis_url is not set".into(),
            )));
        };
        let current = |slot: &Option<Arc<RedisSlot>>| {
            slot.as_ref()
                .filter(|s| s.serves(cfg, url))
                .filter(|s| s.limiter.is_ok() || s.created.elapsed() < RETRY_CREATE)
                .map(|s| s.limiter.clone())
        };
        if let Some(found) = current(&self.redis.load_full()) {
            return Some(found);
        }
        let _creating = self.creating.lock();
        if let Some(found) = current(&self.redis.load_full()) {
            return Some(found);
        }
        let limiter = create(url, cfg).map(Arc::new);
        if let Err(e) = &limiter {
            tracing::error!("cannot create the Redis limiter: {e}");
        }
        self.redis.store(Some(Arc::new(RedisSlot {
            url: url.to_string(),
            timeout: cfg.redis_timeout,
            ca_file: cfg.redis_ca_file.clone(),
            lease: cfg.concurrency_lease,
            lease_ttl: cfg.lease_ttl,
            limiter: limiter.clone(),
            created: Instant::now(),
        })));
        Some(limiter)
    }

    /// The Redis limiter for this config, if there is one and it could be
    /// created. See [`Self::redis_limiter`].
    pub fn redis_for(&self, cfg: &LimiterConfig) -> Option<Arc<RedisLimiter>> {
        self.redis_limiter(cfg).and_then(Result::ok)
    }

    /// The current Redis limiter, if one was created.
    pub fn current_redis(&self) -> Option<Arc<RedisLimiter>> {
        self.redis
            .load()
            .as_ref()
            .and_then(|s| s.limiter.as_ref().ok().cloned())
    }

    /// Decide a request's limits with the configured backend and policy,
    /// waiting for Redis until `deadline` at most (see [`Self::acquire`]).
    pub async fn decide(
        &self,
        cfg: &LimiterConfig,
        subject: &Subject,
        buckets: &[&Bucket],
        deadline: Instant,
    ) -> Verdict {
        if buckets.is_empty() {
            return Verdict::Decided(
                Decision {
                    allowed: true,
                    limits: Default::default(),
                },
                "local",
            );
        }
        let started = Instant::now();
        let result = match self.redis_limiter(cfg) {
            None => {
                let d = self.local.check_at_instant(subject, buckets, started);
                observe("local", started);
                self.events.quotas(subject, buckets, &d);
                return Verdict::Decided(d, "local");
            }
            Some(Err(e)) => Err(e),
            Some(Ok(redis)) => {
                let result = redis.check_by(subject, buckets, deadline).await;
                metrics::REDIS_BREAKER_STATE.set(redis.breaker_state().as_i64());
                result
            }
        };
        match result {
            Ok(checked) => {
                // Only when Redis replied (not for a lease spent here).
                if let (Some(left), OnRedisError::Local) = (&checked.left, cfg.on_redis_error) {
                    self.fallback_seed(subject, buckets, left);
                }
                let d = checked.decision;
                observe("redis", started);
                self.events.quotas(subject, buckets, &d);
                Verdict::Decided(d, "redis")
            }
            Err(e) => {
                metrics::REDIS_ERRORS.with_label_values(&[e.kind()]).inc();
                tracing::debug!("redis limiter: {e}");
                let verdict = match cfg.on_redis_error {
                    OnRedisError::Local => {
                        Verdict::Decided(self.fallback_check(subject, buckets), "fallback")
                    }
                    OnRedisError::Allow => Verdict::Decided(
                        Decision {
                            allowed: true,
                            limits: Default::default(),
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

/// `tollgate_limiter_duration_seconds` per backend, resolved on first use
/// (no label lookup per request).
static DURATION_LOCAL: LazyLock<Histogram> =
    LazyLock::new(|| metrics::LIMITER_DURATION.with_label_values(&["local"]));
static DURATION_REDIS: LazyLock<Histogram> =
    LazyLock::new(|| metrics::LIMITER_DURATION.with_label_values(&["redis"]));
impl Limiters {
    /// The buckets as they stand, nothing taken (`proxy.usage_path`), with
    /// the backend that answered; `None` when Redis cannot answer and
    /// `on_redis_error` is not `local` (the caller answers 503).
    pub async fn peek(
        &self,
        cfg: &LimiterConfig,
        subject: &Subject,
        buckets: &[&Bucket],
        deadline: Instant,
    ) -> Option<(Vec<tollgate_core::limits::LimitState>, &'static str)> {
        let redis = match self.redis_limiter(cfg) {
            None => return Some((self.local.peek(subject, buckets), "local")),
            Some(r) => r,
        };
        let result = match redis {
            Ok(r) => r.peek(subject, buckets, deadline).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(states) => Some((states, "redis")),
            Err(e) => {
                metrics::REDIS_ERRORS.with_label_values(&[e.kind()]).inc();
                tracing::debug!("redis limiter (peek): {e}");
                match cfg.on_redis_error {
                    OnRedisError::Local => Some((self.fallback_peek(subject, buckets), "fallback")),
                    OnRedisError::Allow | OnRedisError::Deny => None,
                }
            }
        }
    }
}

fn observe(backend: &str, started: Instant) {
    let h = match backend {
        "local" => &*DURATION_LOCAL,
        "redis" => &*DURATION_REDIS,
        other => {
            metrics::LIMITER_DURATION
                .with_label_values(&[other])
                .observe(started.elapsed().as_secs_f64());
            return;
        }
    };
    h.observe(started.elapsed().as_secs_f64());
}

/// Which backend holds a cost reservation (see `super::cost`): the one that decided the request.
pub fn backend_of(decided_by: &str) -> Option<Held> {
    match decided_by {
        "local" | "fallback" => Some(Held::Local),
        "redis" => Some(Held::Redis),
        // `allow`: nothing was taken, nothing to settle.
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Local,
    Redis,
}

/// `tollgate_cost_settlements_total{result}`: settlements by what decided
/// them (`header`, `refund`, a kept reservation's reason: `missing`,
/// `repeated`, `invalid`, `too_large`, `no_response`) and what went wrong
/// applying them (`capped`: a take beyond the debt bound, `error`: the
/// backend could not be reached, the reservation stands).
pub static SETTLEMENTS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "tollgate_cost_settlements_total",
        "Cost reservations settled from the response, by result",
        &["result"]
    )
    .unwrap_or_else(|_| {
        // Registered twice (tests building several proxies): a private one.
        prometheus::IntCounterVec::new(
            prometheus::Opts::new("tollgate_cost_settlements_total", "settlements"),
            &["result"],
        )
        .unwrap_or_else(|e| unreachable!("static metric options: {e}"))
    })
});
