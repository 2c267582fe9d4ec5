//! The Redis limiter: the token buckets of every proxy instance in one Redis
//! (single node or Redis Cluster), checked and taken by one Lua script
//! (`lua/token_bucket.lua`) in one round trip per request.
//!
//! - Same semantics as [`super::local`]: GCRA arithmetic from
//!   `tollgate_core::limits`, in microseconds (see the script's header), on
//!   Redis' clock. All limits of a request are decided atomically and tokens are
//!   taken only if every limit admits.
//! - All keys of one request share the hash tag `{subject}` ([`bucket_key`]),
//!   so the script runs in one cluster slot.
//! - One multiplexed connection (a `ConnectionManager`, or a cluster
//!   connection) shared by all requests; no pool, no connection per request.
//!   Its I/O driver and reconnects run on a small runtime owned by the
//!   [`RedisLimiter`], and every call is spawned there: Pingora runs each
//!   service on its own runtimes, and a connection's tasks must not live on
//!   a runtime that may stop or be busy. [`RedisLimiter::check`] can be awaited
//!   from any tokio runtime.
//! - Every call is bounded by `redis_timeout`; a [`CircuitBreaker`] skips Redis
//!   while it keeps failing; an [`OverLimitCache`] refuses a subject that Redis
//!   refused until its Retry-After, without asking Redis again.
//! - With `limiter.lease_ttl` > 0 a call may take more tokens than the
//!   request costs: a lease this proxy spends locally ([`lease`]), with no
//!   Redis call and no hop to the limiter's runtime. Unspent tokens go back.
//! - Calls queued on the multiplexed connection by the time its driver runs
//!   go out in one write (its sink is flushed only when its queue is empty):
//!   the calls of one event-loop turn share one pipeline.
//!
//! Split by concept: [`script`] (the token-bucket script's protocol),
//! [`lease`] (token leases), [`conn`] (the connection), [`holds`]
//! (concurrency across proxies), [`over_limit`] (refusals served locally),
//! [`error`].

pub mod balance;
mod calendar;
pub mod conn;
pub mod credits;
pub mod error;
pub mod holds;
pub mod lease;
pub mod over_limit;
pub mod peek;
pub mod quota_adjust;
pub mod script;
pub mod settle;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::RedisError;
use smallvec::SmallVec;
use tokio::runtime::{Handle, Runtime};
use tollgate_core::config::DEFAULT_LEASE_TTL;
use tollgate_core::limits::Decision;
use tollgate_core::redis_url;

use super::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use super::{Bucket, Subject};
use conn::{connect, spawn_keepalive, AbortOnDrop, Conn, Keepalive};
pub use error::RedisLimitError;
use lease::{LeaseArgs, Leases};
pub use over_limit::OverLimitCache;
pub use script::{
    bucket_key, decide_from_replies, left_in_redis, parse_reply, BucketReply, LimitTimes,
    ScriptArgs, MAX_SPAN_US, SCRIPT_SOURCE,
};

/// Tuning of a [`RedisLimiter`]; `Default` is what production uses apart
/// from `timeout` (the config's `redis_timeout`).
#[derive(Debug, Clone)]
pub struct RedisLimiterOptions {
    /// Every check gets an answer or [`RedisLimitError::Timeout`] within this.
    pub timeout: Duration,
    pub breaker: BreakerConfig,
    /// Subjects held by the [`OverLimitCache`] at most.
    pub over_limit_capacity: usize,
    /// The longest a refusal is served from the cache.
    pub over_limit_max_ttl: Duration,
    /// Each attempt to (re)connect gives up after this.
    pub connect_timeout: Duration,
    /// Worker threads of the limiter's own runtime.
    pub threads: usize,
    /// PEM CA certificates trusted for `rediss://` instead of the system
    /// roots (`limiter.redis_ca_file`).
    pub ca_pem: Option<Vec<u8>>,
    /// How long a concurrency hold outlives this process (`limiter.concurrency_lease`).
    pub concurrency_lease: Duration,
    /// How long a token lease may be spent (`limiter.lease_ttl`; zero: no leases).
    pub lease_ttl: Duration,
}

impl Default for RedisLimiterOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(20),
            breaker: BreakerConfig::default(),
            over_limit_capacity: 100_000,
            over_limit_max_ttl: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(1),
            threads: 1,
            ca_pem: None,
            concurrency_lease: Duration::from_secs(10),
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }
}

/// A decision of [`RedisLimiter::check_by`], with what Redis reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub decision: Decision,
    /// Tokens left in each Redis bucket after the call, when Redis was
    /// asked (this proxy's new lease counted as taken: it is spent here);
    /// `None` when the decision was served here (a lease, a cached refusal).
    pub left: Option<SmallVec<[u64; 4]>>,
}

impl Checked {
    fn here(decision: Decision) -> Self {
        Self {
            decision,
            left: None,
        }
    }
}

/// The Redis backend. Create one per process (per `redis_url`) and share it.
pub struct RedisLimiter {
    conn: Conn,
    handle: Handle,
    runtime: Option<Runtime>,
    timeout: Duration,
    breaker: Arc<CircuitBreaker>,
    over_limit: OverLimitCache,
    /// The URL without credentials, for logs.
    target: String,
    /// Concurrency holds of this process (see [`holds`]).
    holds: holds::Holds,
    /// How long a concurrency hold outlives this process.
    lease: Duration,
    /// Token leases of this process (see [`lease`]).
    leases: Arc<Leases>,
    /// The PINGs that keep the connection alive (see [`conn`]).
    keepalive: Arc<Keepalive>,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("breaker", &self.breaker.state())
            .finish()
    }
}

impl Drop for RedisLimiter {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl RedisLimiter {
    /// A limiter for `redis_url` with the default options. See [`Self::with_options`].
    pub fn new(redis_url: &str, redis_timeout: Duration) -> Result<Self, RedisLimitError> {
        Self::with_options(
            redis_url,
            RedisLimiterOptions {
                timeout: redis_timeout,
                ..RedisLimiterOptions::default()
            },
        )
    }

    /// `redis_url` is `redis://…` / `rediss://…` (one node) or
    /// `redis+cluster://[user:pass@]h1:p1,h2:p2,…` (Redis Cluster, seed nodes).
    ///
    /// Connects lazily in the background: this fails only on a malformed URL
    /// (Redis being down at start is an ordinary runtime error of `check`).
    /// Callable from inside or outside a tokio runtime.
    pub fn with_options(
        redis_url: &str,
        options: RedisLimiterOptions,
    ) -> Result<Self, RedisLimitError> {
        // Everything that can refuse the URL happens before the runtime
        // exists: a runtime dropped inside another one panics.
        let url =
            redis_url::parse(redis_url).map_err(|e| RedisLimitError::Config(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .thread_name("tollgate-redis")
            .enable_all()
            .build()
            .map_err(|e| RedisLimitError::Other(format!("redis runtime: {e}")))?;
        // Connection tasks spawned while connecting land on this runtime.
        let conn = {
            let _entered = runtime.enter();
            connect(&url, &options)
        };
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let holds = holds::Holds::default();
        holds::spawn_renewal(
            runtime.handle(),
            holds.clone(),
            conn.clone(),
            options.concurrency_lease,
        );
        let leases = Arc::new(Leases::new(options.lease_ttl));
        lease::spawn_returns(
            runtime.handle(),
            leases.clone(),
            conn.clone(),
            options.timeout,
        );
        let keepalive = Arc::new(Keepalive::default());
        let breaker = Arc::new(CircuitBreaker::new(options.breaker));
        spawn_keepalive(
            runtime.handle(),
            conn.clone(),
            keepalive.clone(),
            options
                .timeout
                .saturating_mul(2)
                .max(Duration::from_millis(500)),
            breaker.clone(),
            options.timeout,
        );
        Ok(Self {
            conn,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            timeout: options.timeout,
            breaker,
            over_limit: OverLimitCache::new(
                options.over_limit_capacity,
                options.over_limit_max_ttl,
            ),
            target: url.redacted(),
            holds,
            lease: options.concurrency_lease,
            leases,
            keepalive,
        })
    }

    /// Decide a request against its buckets in Redis and, if admitted, take
    /// the tokens. Answers within the timeout. Errors are not retried (the
    /// caller's `on_redis_error` policy decides), except once, within the same
    /// timeout, when the connection was refused (nothing reached Redis). While
    /// the breaker is open, Redis is not asked ([`RedisLimitError::CircuitOpen`]).
    /// A subject Redis refused is refused from the [`OverLimitCache`] until
    /// its Retry-After (also while the breaker is open).
    ///
    /// Must be awaited inside a tokio runtime (any one: the Redis I/O runs on
    /// the limiter's own).
    pub async fn check(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
    ) -> Result<Decision, RedisLimitError> {
        self.check_by(subject, buckets, self.deadline())
            .await
            .map(|c| c.decision)
    }

    /// [`Self::check`] bounded by `deadline` instead of a timeout of its own:
    /// the request's one Redis deadline, shared with its concurrency hold
    /// ([`Self::acquire_hold_by`]), so a request never waits for Redis longer
    /// than `redis_timeout` in all. A deadline already past is a
    /// [`RedisLimitError::Timeout`] at once, Redis not asked and the breaker
    /// not told (the call that used the time up was counted).
    pub async fn check_by(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        deadline: Instant,
    ) -> Result<Checked, RedisLimitError> {
        if buckets.is_empty() {
            return Ok(Checked::here(Decision {
                allowed: true,
                limits: Default::default(),
            }));
        }
        // Served from this proxy's leases: tokens Redis already granted
        // (never with a quota: the script counts quotas on every call; never
        // for a cost reservation: it is taken and settled in Redis exactly).
        let leased = !super::quota::any_quota(buckets) && !buckets.iter().any(|b| b.reserved);
        if let Some(decision) = leased
            .then(|| self.leases.try_take(subject, buckets, Instant::now()))
            .flatten()
        {
            self.over_limit.forget(subject);
            return Ok(Checked::here(decision));
        }
        if let Some(decision) = self.over_limit.get(subject, buckets, Instant::now()) {
            return Ok(Checked::here(decision));
        }
        // Redis evaluates no earlier than this: waits counted from here are
        // never shorter than Redis' own.
        let started = Instant::now();
        if started >= deadline {
            return Err(RedisLimitError::Timeout(self.timeout));
        }
        if !self.breaker.allow() {
            return Err(RedisLimitError::CircuitOpen);
        }
        let args: SmallVec<[ScriptArgs; 4]> =
            buckets.iter().map(|b| ScriptArgs::new(&b.limit)).collect();
        // This proxy's leases of these buckets go back with the call (lost
        // if it fails: fewer admissions, never more).
        let asked = if leased {
            self.leases.checkout(subject, buckets, &args, started)
        } else {
            settle::exact(&args)
        };
        let result = self
            .eval(subject, buckets, &args, &asked, None, deadline)
            .await;
        match &result {
            Ok((decision, times, replies)) => {
                self.breaker.success();
                if decision.allowed {
                    if leased {
                        self.leases
                            .store(subject, buckets, &args, &asked, replies, Instant::now());
                    }
                    // Its other cached refusals may report buckets this
                    // admission just took from.
                    self.over_limit.forget(subject);
                } else {
                    self.over_limit
                        .insert(subject, buckets, decision, times, started);
                }
            }
            Err(_) => self.failed(),
        }
        result.map(|(decision, _, replies)| Checked {
            decision,
            left: Some(left_in_redis(&replies)),
        })
    }

    /// Tests only: one script call at an explicit instant (µs on any clock)
    /// instead of Redis' TIME, without the cache and the breaker, to compare
    /// the script with the local limiter at chosen instants.
    #[doc(hidden)]
    pub async fn check_at_us(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        now_us: u64,
    ) -> Result<Decision, RedisLimitError> {
        if buckets.is_empty() {
            return Ok(Decision {
                allowed: true,
                limits: Default::default(),
            });
        }
        let args: SmallVec<[ScriptArgs; 4]> =
            buckets.iter().map(|b| ScriptArgs::new(&b.limit)).collect();
        let exact: SmallVec<[LeaseArgs; 4]> = args
            .iter()
            .map(|a| LeaseArgs {
                ret: 0,
                want: a.cost,
            })
            .collect();
        self.eval(
            subject,
            buckets,
            &args,
            &exact,
            Some(now_us),
            self.deadline(),
        )
        .await
        .map(|(decision, _, _)| decision)
    }

    /// Tests only: one script call with explicit lease arguments at an
    /// explicit instant (µs), returning the script's replies, to compare
    /// the script with [`lease::model::script`]. Leaves this proxy's leases
    /// alone.
    #[doc(hidden)]
    pub async fn lease_call_at_us(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        asked: &[LeaseArgs],
        now_us: u64,
    ) -> Result<Vec<BucketReply>, RedisLimitError> {
        let args: SmallVec<[ScriptArgs; 4]> =
            buckets.iter().map(|b| ScriptArgs::new(&b.limit)).collect();
        self.eval(
            subject,
            buckets,
            &args,
            asked,
            Some(now_us),
            self.deadline(),
        )
        .await
        .map(|(_, _, replies)| replies)
    }

    /// One script call, without the cache and the breaker: give back
    /// `asked.ret` and take each bucket's grant for `asked.want`.
    async fn eval(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        args: &[ScriptArgs],
        asked: &[LeaseArgs],
        now_us: Option<u64>,
        deadline: Instant,
    ) -> Result<(Decision, Vec<LimitTimes>, Vec<BucketReply>), RedisLimitError> {
        let wall_us = now_us.map_or_else(super::quota::wall_now_us, |n| {
            i64::try_from(n).unwrap_or(i64::MAX)
        });
        let inv = script::invocation_at(subject, buckets, args, asked, now_us, wall_us);
        let reply = self
            .run(deadline, move |mut conn| async move {
                match conn.invoke(&inv).await {
                    // Refused: the script never reached Redis. One retry lets
                    // a connection that died while idle be replaced at once.
                    Err(e) if e.is_connection_refusal() => conn.invoke(&inv).await,
                    other => other,
                }
            })
            .await?;
        let replies = parse_reply(&reply, buckets.len())?;
        let (mut decision, mut times) = decide_from_replies(buckets, args, &replies);
        calendar::redis_calendar(buckets, &mut decision, &mut times, wall_us);
        Ok((decision, times, replies))
    }

    /// A call starting now may wait for Redis until this instant.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Run `f` on the limiter's runtime, bounded by `deadline` (the timer
    /// runs on the caller's runtime, so a busy or stuck limiter runtime
    /// cannot hold the caller past it).
    async fn run<T, F, Fut>(&self, deadline: Instant, f: F) -> Result<T, RedisLimitError>
    where
        T: Send + 'static,
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>> + Send + 'static,
    {
        let mut task = AbortOnDrop(self.handle.spawn(f(self.conn.clone())));
        match tokio::time::timeout_at(deadline.into(), &mut task.0).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(RedisLimitError::from_redis(&e)),
            Ok(Err(join)) => Err(RedisLimitError::Other(format!("redis task: {join}"))),
            Err(_) => Err(RedisLimitError::Timeout(self.timeout)),
        }
    }

    /// PING every node (health checks, warm-up), bounded by the timeout.
    /// Does not touch the breaker.
    pub async fn ping(&self) -> Result<(), RedisLimitError> {
        self.run(self.deadline(), |mut conn| async move { conn.ping().await })
            .await
    }

    /// A call failed: tell the breaker, and have the keepalive PING now
    /// (a dead connection is replaced before the next request needs it).
    fn failed(&self) {
        self.breaker.failure();
        self.keepalive.wake();
    }

    /// The keepalive's last PING through the requests' connection was
    /// answered (false before the first one).
    pub fn reachable(&self) -> bool {
        self.keepalive.reachable()
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The breaker-state gauge value: 0 closed, 1 open, 2 half-open.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub fn over_limit_cache(&self) -> &OverLimitCache {
        &self.over_limit
    }

    /// This process' token leases.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The Redis URL without credentials.
    pub fn target(&self) -> &str {
        &self.target
    }
}

#[cfg(test)]
mod tests {
    use super::super::Scope;
    use super::*;
    use tollgate_core::limits::Limit;

    #[test]
    fn bad_urls_are_config_errors() {
        let e = RedisLimiter::new("http://x", Duration::from_millis(20)).expect_err("bad scheme");
        assert_eq!(e.kind(), "config");
        let e = RedisLimiter::new("nonsense", Duration::from_millis(20)).expect_err("no scheme");
        assert_eq!(e.kind(), "config");
    }

    #[test]
    fn unreachable_redis_errors_fast_and_opens_the_breaker() {
        // Port 1 on localhost: connection refused at once.
        let l = RedisLimiter::with_options(
            "redis://127.0.0.1:1",
            RedisLimiterOptions {
                timeout: Duration::from_millis(200),
                ..RedisLimiterOptions::default()
            },
        )
        .expect("lazy");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let b = Bucket::new(
            Scope::Key,
            Limit::new("m", 1, Duration::from_secs(1), None, None),
        );
        rt.block_on(async {
            for _ in 0..3 {
                let e = l.check(&Subject::Key(1), &[&b]).await.expect_err("down");
                assert!(matches!(e.kind(), "connection" | "timeout"), "{e}");
            }
            assert_eq!(l.breaker_state(), BreakerState::Open);
            let e = l.check(&Subject::Key(1), &[&b]).await.expect_err("open");
            assert_eq!(e.kind(), "circuit_open");
        });
        // Dropping the limiter inside a runtime must not panic.
        rt.block_on(async move { drop(l) });
    }
}
