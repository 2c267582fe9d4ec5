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

pub mod holds;

use std::fmt;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClientBuilder, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::io::tcp::TcpSettings;
use ::redis::{
    ErrorKind, IntoConnectionInfo, RedisError, Script, ScriptInvocation, ServerErrorKind,
    TlsCertificates,
};
use smallvec::SmallVec;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tollgate_core::limits::{ceil_secs, Decision, Limit, LimitState};
use tollgate_core::redis_url::{self, RedisUrl};

use super::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use super::over_limit::OverLimitCache;
use super::{Bucket, Subject};

/// The Lua source, loaded at build time.
pub const SCRIPT_SOURCE: &str = include_str!("../../../lua/token_bucket.lua");

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SCRIPT_SOURCE));

/// Integers returned per limit by the script: allowed, remaining, reset, retry.
const REPLY_STRIDE: usize = 4;

/// The longest span (µs) the script handles: "now" (~2^50.6 µs since the
/// epoch) plus a stored TAT's lead plus a cost, each ≤ 2^50 (+ one interval),
/// stays below 2^53, exact in Lua's doubles, until the year 2100 and beyond.
/// 2^50 µs is 35 years; only absurd policies are clamped, as the local
/// arithmetic clamps them (`tollgate_core::limits::MAX_SPAN_NS`).
pub const MAX_SPAN_US: u64 = tollgate_core::limits::MAX_SPAN_NS / 1_000;

/// The Redis key of one bucket of one subject, e.g. `tg:{k42}:p:minute` or
/// `tg:{ip10.0.0.1}:r:users:route`. The hash tag `{subject}` puts every bucket
/// of a subject in the same cluster slot. The only place the key format lives.
pub fn bucket_key(subject: &Subject, bucket: &Bucket) -> String {
    format!("tg:{{{subject}}}:{}", bucket.name)
}

/// The numbers the script gets for one limit (ARGV triple).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptArgs {
    /// µs for one token to come back, ≥ 1.
    pub interval_us: u64,
    pub burst: u64,
    pub cost: u64,
}

impl ScriptArgs {
    /// The limit's parameters in µs, clamped so that `interval × burst` and
    /// `interval × cost` are ≤ [`MAX_SPAN_US`] (+ one interval); a cost above
    /// the burst stays above it (never admitted). The interval is
    /// `per / rate` truncated to whole µs (core truncates to whole ns): the
    /// backends agree exactly whenever `per / rate` is a whole number of µs,
    /// and otherwise differ by less than 1 µs per token.
    pub fn new(limit: &Limit) -> Self {
        let c = tollgate_core::limits::clamp_us(limit);
        Self {
            interval_us: c.interval,
            burst: c.burst,
            cost: c.cost,
        }
    }
}

/// What the script answered for one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketReply {
    pub allowed: bool,
    pub remaining: u64,
    pub reset_us: u64,
    /// µs until this bucket admits the request; `None`: never (cost > burst).
    pub retry_us: Option<u64>,
}

/// Parse the script's flat reply (see `lua/token_bucket.lua`).
pub fn parse_reply(reply: &[i64], limits: usize) -> Result<Vec<BucketReply>, RedisLimitError> {
    if reply.len() != limits * REPLY_STRIDE {
        return Err(RedisLimitError::Script(format!(
            "unexpected reply: {} integers for {limits} limits",
            reply.len()
        )));
    }
    let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(reply
        .chunks_exact(REPLY_STRIDE)
        .map(|c| BucketReply {
            allowed: c[0] == 1,
            remaining: non_negative(c[1]),
            reset_us: non_negative(c[2]),
            retry_us: (c[3] >= 0).then(|| non_negative(c[3])),
        })
        .collect())
}

/// When a limit is full again and when it admits the request, for the
/// [`OverLimitCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitTimes {
    pub reset: Duration,
    /// `None`: never (cost > burst). Zero for limits that did not refuse.
    pub retry: Option<Duration>,
}

fn us_to_ns(us: u64) -> u64 {
    us.saturating_mul(1_000)
}

/// Build the request's [`Decision`] from the script's per-limit replies,
/// exactly as `tollgate_core::limits::decide` does from `check_bucket`.
pub fn decide_from_replies(
    buckets: &[&Bucket],
    args: &[ScriptArgs],
    replies: &[BucketReply],
) -> (Decision, Vec<LimitTimes>) {
    let allowed = replies.iter().all(|r| r.allowed);
    let mut times = Vec::with_capacity(replies.len());
    let limits = buckets
        .iter()
        .zip(args)
        .zip(replies)
        .map(|((b, a), r)| {
            let (remaining, reset_us) = if r.allowed && !allowed {
                // Refused by another limit: report this bucket as it stays.
                let taken_us = a.cost.saturating_mul(a.interval_us);
                (r.remaining + a.cost, r.reset_us.saturating_sub(taken_us))
            } else {
                (r.remaining, r.reset_us)
            };
            let retry = if r.allowed {
                Some(Duration::ZERO)
            } else {
                r.retry_us.map(Duration::from_micros)
            };
            times.push(LimitTimes {
                reset: Duration::from_micros(reset_us),
                retry,
            });
            LimitState {
                name: b.limit.name.clone(),
                quota: b.limit.rate,
                window_secs: b.limit.window_secs(),
                remaining,
                reset_secs: ceil_secs(us_to_ns(reset_us)),
                violated: !r.allowed,
                retry_after_secs: if r.allowed {
                    0
                } else {
                    // Like core: "never" is u64::MAX ns, rounded up to seconds.
                    ceil_secs(r.retry_us.map_or(u64::MAX, us_to_ns))
                },
            }
        })
        .collect();
    (Decision { allowed, limits }, times)
}

/// Why a Redis check gave no decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisLimitError {
    /// No answer within `redis_timeout`.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Not connected, connection refused or lost, cluster unreachable.
    #[error("redis connection failed: {0}")]
    Connection(String),
    /// The script failed or answered something unexpected.
    #[error("redis script failed: {0}")]
    Script(String),
    /// The circuit breaker is open: Redis was not asked.
    #[error("redis skipped: circuit breaker open")]
    CircuitOpen,
    /// A bad `redis_url` or options.
    #[error("invalid redis configuration: {0}")]
    Config(String),
    #[error("redis error: {0}")]
    Other(String),
}

impl RedisLimitError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisLimitError::Timeout(_) => "timeout",
            RedisLimitError::Connection(_) => "connection",
            RedisLimitError::Script(_) => "script",
            RedisLimitError::CircuitOpen => "circuit_open",
            RedisLimitError::Config(_) => "config",
            RedisLimitError::Other(_) => "other",
        }
    }

    fn from_redis(e: &RedisError) -> Self {
        let msg = e.to_string();
        if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            return RedisLimitError::Connection(msg);
        }
        if e.is_timeout() {
            return RedisLimitError::Connection(msg);
        }
        match e.kind() {
            ErrorKind::ClusterConnectionNotFound
            | ErrorKind::AuthenticationFailed
            | ErrorKind::Server(
                ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain,
            ) => RedisLimitError::Connection(msg),
            ErrorKind::Server(
                ServerErrorKind::ResponseError
                | ServerErrorKind::NoScript
                | ServerErrorKind::ExecAbort
                | ServerErrorKind::CrossSlot,
            )
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::Parse => RedisLimitError::Script(msg),
            ErrorKind::InvalidClientConfig => RedisLimitError::Config(msg),
            _ => RedisLimitError::Other(msg),
        }
    }
}

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
        }
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn invoke(&mut self, inv: &ScriptInvocation<'static>) -> Result<Vec<i64>, RedisError> {
        match self {
            Conn::Single(c) => inv.invoke_async(c).await,
            Conn::Cluster(c) => inv.invoke_async(c).await,
        }
    }

    async fn invoke_i64(&mut self, inv: &ScriptInvocation<'static>) -> Result<i64, RedisError> {
        match self {
            Conn::Single(c) => inv.invoke_async(c).await,
            Conn::Cluster(c) => inv.invoke_async(c).await,
        }
    }

    async fn query_i64(&mut self, cmd: &::redis::Cmd) -> Result<i64, RedisError> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    async fn ping(&mut self) -> Result<(), RedisError> {
        let cmd = ::redis::cmd("PING");
        match self {
            Conn::Single(c) => cmd.query_async::<()>(c).await,
            Conn::Cluster(c) => cmd.query_async::<()>(c).await,
        }
    }
}

/// Aborts the spawned Redis call if the caller stops waiting for it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The Redis backend. Create one per process (per `redis_url`) and share it.
pub struct RedisLimiter {
    conn: Conn,
    handle: Handle,
    runtime: Option<Runtime>,
    timeout: Duration,
    breaker: CircuitBreaker,
    over_limit: OverLimitCache,
    /// The URL without credentials, for logs.
    target: String,
    /// Concurrency holds of this process (see [`holds`]).
    holds: holds::Holds,
    /// How long a concurrency hold outlives this process.
    lease: Duration,
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
        Ok(Self {
            conn,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            timeout: options.timeout,
            breaker: CircuitBreaker::new(options.breaker),
            over_limit: OverLimitCache::new(
                options.over_limit_capacity,
                options.over_limit_max_ttl,
            ),
            target: url.redacted(),
            holds,
            lease: options.concurrency_lease,
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
        if buckets.is_empty() {
            return Ok(Decision {
                allowed: true,
                limits: Vec::new(),
            });
        }
        if let Some(decision) = self.over_limit.get(subject, buckets, Instant::now()) {
            return Ok(decision);
        }
        if !self.breaker.allow() {
            return Err(RedisLimitError::CircuitOpen);
        }
        // Redis evaluates no earlier than this: waits counted from here are
        // never shorter than Redis' own.
        let started = Instant::now();
        let result = self.eval(subject, buckets, None).await;
        match &result {
            Ok((decision, times)) => {
                self.breaker.success();
                if decision.allowed {
                    // Its other cached refusals may report buckets this
                    // admission just took from.
                    self.over_limit.forget(subject);
                } else {
                    self.over_limit
                        .insert(subject, buckets, decision, times, started);
                }
            }
            Err(_) => self.breaker.failure(),
        }
        result.map(|(decision, _)| decision)
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
                limits: Vec::new(),
            });
        }
        self.eval(subject, buckets, Some(now_us))
            .await
            .map(|(decision, _)| decision)
    }

    /// One script call, without the cache and the breaker.
    async fn eval(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        now_us: Option<u64>,
    ) -> Result<(Decision, Vec<LimitTimes>), RedisLimitError> {
        let args: SmallVec<[ScriptArgs; 4]> =
            buckets.iter().map(|b| ScriptArgs::new(&b.limit)).collect();
        let mut inv = SCRIPT.prepare_invoke();
        for b in buckets {
            inv.key(bucket_key(subject, b));
        }
        for a in &args {
            inv.arg(a.interval_us).arg(a.burst).arg(a.cost);
        }
        if let Some(now) = now_us {
            inv.arg(now);
        }
        let reply = self
            .run(move |mut conn| async move {
                match conn.invoke(&inv).await {
                    // Refused: the script never reached Redis. One retry lets
                    // a connection that died while idle be replaced at once.
                    Err(e) if e.is_connection_refusal() => conn.invoke(&inv).await,
                    other => other,
                }
            })
            .await?;
        let replies = parse_reply(&reply, buckets.len())?;
        Ok(decide_from_replies(buckets, &args, &replies))
    }

    /// Run `f` on the limiter's runtime, bounded by the timeout.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, RedisLimitError>
    where
        T: Send + 'static,
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>> + Send + 'static,
    {
        let mut task = AbortOnDrop(self.handle.spawn(f(self.conn.clone())));
        match tokio::time::timeout(self.timeout, &mut task.0).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(RedisLimitError::from_redis(&e)),
            Ok(Err(join)) => Err(RedisLimitError::Other(format!("redis task: {join}"))),
            Err(_) => Err(RedisLimitError::Timeout(self.timeout)),
        }
    }

    /// PING every node (health checks, warm-up), bounded by the timeout.
    /// Does not touch the breaker.
    pub async fn ping(&self) -> Result<(), RedisLimitError> {
        self.run(|mut conn| async move { conn.ping().await }).await
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

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The Redis URL without credentials.
    pub fn target(&self) -> &str {
        &self.target
    }
}

fn tcp_settings() -> TcpSettings {
    let keepalive = ::redis::io::tcp::socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    let settings = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    // A peer that vanished (no RST) fails the connection within seconds, so
    // it gets replaced, instead of every call timing out for minutes.
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout(Duration::from_secs(5));
    settings
}

/// Build the (lazy) connection; must run inside the limiter's runtime.
fn connect(url: &RedisUrl, options: &RedisLimiterOptions) -> Result<Conn, RedisLimitError> {
    let config_err = |e: RedisError| RedisLimitError::Config(e.to_string());
    // Internal response timeout, longer than ours (which answers first): it
    // only bounds requests the caller gave up on.
    let response_timeout = options
        .timeout
        .saturating_mul(2)
        .max(Duration::from_millis(500));
    let certs = || TlsCertificates {
        client_tls: None,
        root_cert: options.ca_pem.clone(),
    };
    let nodes = url.node_urls();
    if url.cluster {
        let mut builder = ClusterClientBuilder::new(nodes)
            .tcp_settings(tcp_settings())
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(200);
        if url.tls && options.ca_pem.is_some() {
            builder = builder.certs(certs());
        }
        let client = builder.build().map_err(config_err)?;
        let config = ClusterConfig::new()
            .set_connection_timeout(options.connect_timeout)
            .set_response_timeout(response_timeout);
        Ok(Conn::Cluster(
            client.get_pending_async_connection_with_config(config),
        ))
    } else {
        let node = nodes
            .into_iter()
            .next()
            .ok_or_else(|| RedisLimitError::Config(format!("{}: no host", url.redacted())))?;
        let info = node
            .as_str()
            .into_connection_info()
            .map_err(config_err)?
            .set_tcp_settings(tcp_settings());
        let client = if url.tls && options.ca_pem.is_some() {
            ::redis::Client::build_with_tls(info, certs()).map_err(config_err)?
        } else {
            ::redis::Client::open(info).map_err(config_err)?
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(config_err)?;
        Ok(Conn::Single(manager))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Scope;
    use super::*;
    use tollgate_core::limits::check_bucket;

    fn limit(name: &str, rate: u64, per: Duration, burst: Option<u64>, cost: Option<u64>) -> Limit {
        Limit {
            name: name.into(),
            rate,
            per,
            burst,
            cost,
        }
    }

    #[test]
    fn key_format_shares_the_subject_hash_tag() {
        let b = Bucket::new(
            Scope::Key,
            limit("minute", 60, Duration::from_secs(60), None, None),
        );
        let r = Bucket::new(
            Scope::Route("users"),
            limit("route", 10, Duration::from_secs(1), None, None),
        );
        assert_eq!(bucket_key(&Subject::Key(42), &b), "tg:{k42}:p:minute");
        assert_eq!(bucket_key(&Subject::Key(42), &r), "tg:{k42}:r:users:route");
        let ip = Subject::Ip("10.0.0.1".parse().expect("ip"));
        assert_eq!(bucket_key(&ip, &b), "tg:{ip10.0.0.1}:p:minute");
        let v6 = Subject::Ip("::1".parse().expect("ip"));
        assert_eq!(bucket_key(&v6, &r), "tg:{ip::1}:r:users:route");
    }

    #[test]
    fn script_args_in_microseconds_and_clamped() {
        let a = ScriptArgs::new(&limit("m", 60, Duration::from_secs(60), Some(10), None));
        assert_eq!(
            a,
            ScriptArgs {
                interval_us: 1_000_000,
                burst: 10,
                cost: 1
            }
        );
        // 1 per day with a burst of a million: 2700 years, clamped to 2^50 µs.
        let a = ScriptArgs::new(&limit(
            "d",
            1,
            Duration::from_secs(86_400),
            Some(1_000_000),
            Some(2),
        ));
        assert_eq!(a.interval_us, 86_400_000_000);
        assert!(a.burst * a.interval_us <= MAX_SPAN_US);
        assert_eq!(a.cost, 2);
        // Cost above burst stays above.
        let a = ScriptArgs::new(&limit("c", 10, Duration::from_secs(1), Some(5), Some(6)));
        assert_eq!((a.burst, a.cost), (5, 6));
        let a = ScriptArgs::new(&limit(
            "c",
            1,
            Duration::from_secs(86_400),
            Some(u64::MAX - 1),
            Some(u64::MAX),
        ));
        assert!(a.cost > a.burst);
        // Sub-microsecond intervals become 1 µs.
        let a = ScriptArgs::new(&limit("f", 10_000_000, Duration::from_secs(1), None, None));
        assert_eq!(a.interval_us, 1);
    }

    #[test]
    fn reply_parsing() {
        let r = parse_reply(&[1, 4, 100, 0, 0, 0, 7, -1], 2).expect("parse");
        assert_eq!(
            r,
            vec![
                BucketReply {
                    allowed: true,
                    remaining: 4,
                    reset_us: 100,
                    retry_us: Some(0)
                },
                BucketReply {
                    allowed: false,
                    remaining: 0,
                    reset_us: 7,
                    retry_us: None
                }
            ]
        );
        let e = parse_reply(&[1, 2, 3], 1).expect_err("short");
        assert_eq!(e.kind(), "script");
    }

    /// The script's per-bucket values (simulated here with core's
    /// `check_bucket` in µs-exact units) turn into core's `decide` output.
    #[test]
    fn decision_matches_core_decide() {
        use tollgate_core::limits::decide;
        let a = Bucket::new(
            Scope::Key,
            limit("a", 100, Duration::from_secs(1), None, None),
        );
        let b = Bucket::new(
            Scope::Route("r"),
            limit("b", 1, Duration::from_secs(60), Some(1), None),
        );
        let c = Bucket::new(
            Scope::Key,
            limit("c", 10, Duration::from_secs(1), Some(5), Some(6)),
        );
        let now = 1_000_000_000_000u64; // ns, a whole number of µs
        for (buckets, tats) in [
            (vec![&a, &b], vec![0, 0]),
            (vec![&a, &b], vec![now + 10_000_000, now + 60_000_000_000]),
            (vec![&a, &c], vec![now + 500_000_000, 0]),
        ] {
            let limits: Vec<&Limit> = buckets.iter().map(|b| &*b.limit).collect();
            let (want, _) = decide(&limits, &tats, now);
            let args: Vec<ScriptArgs> = buckets.iter().map(|b| ScriptArgs::new(&b.limit)).collect();
            let replies: Vec<BucketReply> = limits
                .iter()
                .zip(&tats)
                .map(|(l, &tat)| {
                    let c = check_bucket(l, tat, now);
                    BucketReply {
                        allowed: c.allowed,
                        remaining: c.remaining,
                        reset_us: c.reset_ns / 1_000,
                        retry_us: (c.retry_after_ns != u64::MAX)
                            .then_some(c.retry_after_ns / 1_000),
                    }
                })
                .collect();
            let (got, _) = decide_from_replies(&buckets, &args, &replies);
            assert_eq!(got, want);
        }
    }

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
            limit("m", 1, Duration::from_secs(1), None, None),
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
