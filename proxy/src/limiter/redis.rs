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

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClientBuilder, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::io::tcp::TcpSettings;
use ::redis::{
    ErrorKind, IntoConnectionInfo, RedisError, Script, ScriptInvocation, ServerErrorKind,
};
use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tollgate_core::limits::{ceil_secs, Decision, Limit, LimitState};

use super::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
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
        let per_us = u64::try_from(limit.per.as_micros()).unwrap_or(u64::MAX);
        let interval_us = (per_us / limit.rate.max(1)).clamp(1, MAX_SPAN_US);
        let max_tokens = MAX_SPAN_US / interval_us;
        let burst = limit.burst().min(max_tokens);
        let cost = if limit.cost() > limit.burst() {
            burst + 1
        } else {
            limit.cost().min(burst)
        };
        Self {
            interval_us,
            burst,
            cost,
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .thread_name("tollgate-redis")
            .enable_all()
            .build()
            .map_err(|e| RedisLimitError::Other(format!("redis runtime: {e}")))?;
        // Connection tasks spawned while connecting land on this runtime.
        let conn = {
            let _entered = runtime.enter();
            connect(redis_url, &options)?
        };
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
            target: redact(redis_url),
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
fn connect(url: &str, options: &RedisLimiterOptions) -> Result<Conn, RedisLimitError> {
    let config_err = |e: RedisError| RedisLimitError::Config(e.to_string());
    // Internal response timeout, longer than ours (which answers first): it
    // only bounds requests the caller gave up on.
    let response_timeout = options
        .timeout
        .saturating_mul(2)
        .max(Duration::from_millis(500));
    if let Some(nodes) = cluster_nodes(url)? {
        let client = ClusterClientBuilder::new(nodes)
            .tcp_settings(tcp_settings())
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .build()
            .map_err(config_err)?;
        let config = ClusterConfig::new()
            .set_connection_timeout(options.connect_timeout)
            .set_response_timeout(response_timeout);
        Ok(Conn::Cluster(
            client.get_pending_async_connection_with_config(config),
        ))
    } else {
        let info = url
            .into_connection_info()
            .map_err(config_err)?
            .set_tcp_settings(tcp_settings());
        let client = ::redis::Client::open(info).map_err(config_err)?;
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

/// `redis+cluster://[userinfo@]h1:p1,h2:p2[/…]` → one `redis://` URL per
/// node (`rediss+cluster` → `rediss://`); `None` for a single-node URL.
pub fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>, RedisLimitError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(RedisLimitError::Config(format!(
            "{}: expected redis://, rediss:// or redis+cluster://",
            redact(url)
        )));
    };
    let node_scheme = match scheme {
        "redis+cluster" => "redis",
        "rediss+cluster" => "rediss",
        _ => return Ok(None),
    };
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let split = hosts.find(['/', '?']).unwrap_or(hosts.len());
    let (hosts, suffix) = hosts.split_at(split);
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .map(|h| {
            if h.is_empty() {
                return Err(RedisLimitError::Config(format!(
                    "{}: empty host in the cluster node list",
                    redact(url)
                )));
            }
            Ok(match userinfo {
                Some(u) => format!("{node_scheme}://{u}@{h}{suffix}"),
                None => format!("{node_scheme}://{h}{suffix}"),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(nodes))
}

/// The URL without its userinfo (password).
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, hosts)) => format!("{scheme}://***@{hosts}"),
            None => url.to_string(),
        },
        None => match url.rsplit_once('@') {
            Some((_, hosts)) => format!("***@{hosts}"),
            None => url.to_string(),
        },
    }
}

// --- Over-limit cache --------------------------------------------------------

struct CachedLimit {
    state: LimitState,
    reset_at: Instant,
    /// `None`: never admits (cost > burst).
    retry_at: Option<Instant>,
}

struct Refusal {
    ids: SmallVec<[u64; 4]>,
    until: Instant,
    limits: Vec<CachedLimit>,
}

type Refusals = SmallVec<[Refusal; 1]>;
type CacheShard = Mutex<HashMap<Subject, Refusals, ahash::RandomState>>;

/// Refusals Redis gave, remembered until their Retry-After so the same
/// request of the same subject is refused locally without a round trip.
///
/// A refused request takes nothing and tokens only come back with time, so
/// until the longest wait among the violated limits Redis could only refuse
/// again: serving the refusal locally changes no decision (requests through
/// other proxies need the same violated bucket and are refused too). Keyed by
/// subject and the exact list of bucket ids (a different route's request is
/// asked again). The limit states served are those of the refusal, with
/// reset and retry-after counted down; a subject's refusals are dropped when
/// this process admits one of its requests, so only admissions through other
/// proxies can leave the `remaining` of a non-violated limit overstated. Bounded: at most `capacity` subjects (expired entries are swept
/// when a shard is full; if still full, the refusal is not cached), each
/// held at most `max_ttl`.
pub struct OverLimitCache {
    shards: Box<[CacheShard]>,
    hasher: ahash::RandomState,
    per_shard: usize,
    max_ttl: Duration,
    hits: AtomicU64,
}

impl fmt::Debug for OverLimitCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OverLimitCache")
            .field("subjects", &self.len())
            .field("hits", &self.hits())
            .finish()
    }
}

const CACHE_SHARDS: usize = 64;

fn same_ids(ids: &[u64], buckets: &[&Bucket]) -> bool {
    ids.len() == buckets.len() && ids.iter().zip(buckets).all(|(id, b)| *id == b.id)
}

fn until_ns(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_nanos()).unwrap_or(u64::MAX)
}

impl OverLimitCache {
    pub fn new(capacity: usize, max_ttl: Duration) -> Self {
        Self {
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            hasher: ahash::RandomState::new(),
            per_shard: capacity.div_ceil(CACHE_SHARDS),
            max_ttl,
            hits: AtomicU64::new(0),
        }
    }

    fn shard(&self, subject: &Subject) -> &CacheShard {
        let h = self.hasher.hash_one(subject);
        &self.shards[(h as usize) % self.shards.len()]
    }

    /// The cached refusal of this request at `now`, if one is still running.
    pub fn get(&self, subject: &Subject, buckets: &[&Bucket], now: Instant) -> Option<Decision> {
        let mut map = self.shard(subject).lock();
        let refusals = map.get_mut(subject)?;
        let i = refusals.iter().position(|r| same_ids(&r.ids, buckets))?;
        if refusals[i].until <= now {
            refusals.swap_remove(i);
            if refusals.is_empty() {
                map.remove(subject);
            }
            return None;
        }
        let refusal = &refusals[i];
        let limits = refusal
            .limits
            .iter()
            .map(|c| LimitState {
                reset_secs: ceil_secs(until_ns(now, c.reset_at)),
                retry_after_secs: if c.state.violated {
                    ceil_secs(c.retry_at.map_or(u64::MAX, |t| until_ns(now, t)))
                } else {
                    0
                },
                ..c.state.clone()
            })
            .collect();
        drop(map);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(Decision {
            allowed: false,
            limits,
        })
    }

    /// Remember a refusal made at `now`; `times` in the order of `decision.limits`.
    pub fn insert(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        decision: &Decision,
        times: &[LimitTimes],
        now: Instant,
    ) {
        if decision.allowed
            || decision.limits.len() != buckets.len()
            || times.len() != buckets.len()
        {
            return;
        }
        let wait = decision
            .limits
            .iter()
            .zip(times)
            .filter(|(l, _)| l.violated)
            .map(|(_, t)| t.retry.unwrap_or(self.max_ttl))
            .max()
            .unwrap_or(Duration::ZERO)
            .min(self.max_ttl);
        if wait.is_zero() {
            return;
        }
        let refusal = Refusal {
            ids: buckets.iter().map(|b| b.id).collect(),
            until: now + wait,
            limits: decision
                .limits
                .iter()
                .zip(times)
                .map(|(l, t)| CachedLimit {
                    state: l.clone(),
                    reset_at: now + t.reset,
                    retry_at: t.retry.map(|r| now + r),
                })
                .collect(),
        };
        let mut map = self.shard(subject).lock();
        if map.len() >= self.per_shard && !map.contains_key(subject) {
            map.retain(|_, refusals| {
                refusals.retain(|r| r.until > now);
                !refusals.is_empty()
            });
            if map.len() >= self.per_shard {
                return;
            }
        }
        let refusals = map.entry(*subject).or_default();
        match refusals.iter_mut().find(|r| same_ids(&r.ids, buckets)) {
            Some(slot) => *slot = refusal,
            None => refusals.push(refusal),
        }
    }

    /// Drop the subject's refusals (after an admission of one of its requests).
    pub fn forget(&self, subject: &Subject) {
        let mut map = self.shard(subject).lock();
        if !map.is_empty() {
            map.remove(subject);
        }
    }

    /// Drop every expired refusal. Returns how many subjects were dropped.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            let before = map.len();
            map.retain(|_, refusals| {
                refusals.retain(|r| r.until > now);
                !refusals.is_empty()
            });
            removed += before - map.len();
        }
        removed
    }

    /// Subjects held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests refused from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
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
    fn cluster_urls() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379").expect("ok"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://127.0.0.1:7301,127.0.0.1:7302").expect("ok"),
            Some(vec![
                "redis://127.0.0.1:7301".to_string(),
                "redis://127.0.0.1:7302".to_string()
            ])
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://u:p@a:1,b:2/0").expect("ok"),
            Some(vec![
                "rediss://u:p@a:1/0".to_string(),
                "rediss://u:p@b:2/0".to_string()
            ])
        );
        assert!(cluster_nodes("redis+cluster://a:1,,b:2").is_err());
        assert!(cluster_nodes("localhost:6379").is_err());
        assert_eq!(redact("redis://user:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
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

    fn refusal() -> (Vec<Bucket>, Decision, Vec<LimitTimes>) {
        let a = Bucket::new(
            Scope::Key,
            limit("a", 100, Duration::from_secs(1), None, None),
        );
        let b = Bucket::new(
            Scope::Route("r"),
            limit("b", 1, Duration::from_secs(60), Some(1), None),
        );
        let decision = Decision {
            allowed: false,
            limits: vec![
                LimitState {
                    name: "a".into(),
                    quota: 100,
                    window_secs: 1,
                    remaining: 99,
                    reset_secs: 1,
                    violated: false,
                    retry_after_secs: 0,
                },
                LimitState {
                    name: "b".into(),
                    quota: 1,
                    window_secs: 60,
                    remaining: 0,
                    reset_secs: 30,
                    violated: true,
                    retry_after_secs: 30,
                },
            ],
        };
        let times = vec![
            LimitTimes {
                reset: Duration::from_millis(10),
                retry: Some(Duration::ZERO),
            },
            LimitTimes {
                reset: Duration::from_millis(29_500),
                retry: Some(Duration::from_millis(29_500)),
            },
        ];
        (vec![a, b], decision, times)
    }

    #[test]
    fn cache_refuses_until_retry_after() {
        let cache = OverLimitCache::new(1000, Duration::from_secs(3600));
        let t0 = Instant::now();
        let (buckets, decision, times) = refusal();
        let refs: Vec<&Bucket> = buckets.iter().collect();
        let k = Subject::Key(9);
        assert!(cache.get(&k, &refs, t0).is_none());
        cache.insert(&k, &refs, &decision, &times, t0);
        let d = cache
            .get(&k, &refs, t0 + Duration::from_secs(10))
            .expect("cached");
        assert!(!d.allowed);
        assert_eq!(d.violated_names(), vec!["b"]);
        assert_eq!(d.retry_after_secs(), 20, "19.5 s left, rounded up");
        assert_eq!(d.limits[1].reset_secs, 20);
        assert_eq!(d.limits[0].remaining, 99);
        assert_eq!(cache.hits(), 1);
        // Another subject, or another set of buckets, is not refused.
        assert!(cache.get(&Subject::Key(10), &refs, t0).is_none());
        assert!(cache.get(&k, &refs[..1], t0).is_none());
        assert!(cache.get(&k, &[refs[1], refs[0]], t0).is_none());
        // An admission of the subject drops its refusals.
        cache.forget(&Subject::Key(10));
        assert!(cache.get(&k, &refs, t0).is_some());
        cache.forget(&k);
        assert!(cache.get(&k, &refs, t0).is_none());
        cache.insert(&k, &refs, &decision, &times, t0);
        // Expired at exactly the retry instant, and dropped.
        assert!(cache
            .get(&k, &refs, t0 + Duration::from_millis(29_500))
            .is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn cache_caps_ttl_and_never_caches_admissions() {
        let cache = OverLimitCache::new(1000, Duration::from_secs(5));
        let t0 = Instant::now();
        let (buckets, mut decision, mut times) = refusal();
        let refs: Vec<&Bucket> = buckets.iter().collect();
        let k = Subject::Key(1);
        times[1].retry = None; // cost > burst: never fits
        cache.insert(&k, &refs, &decision, &times, t0);
        let d = cache
            .get(&k, &refs, t0 + Duration::from_secs(4))
            .expect("cached");
        assert_eq!(d.retry_after_secs(), ceil_secs(u64::MAX));
        assert!(cache.get(&k, &refs, t0 + Duration::from_secs(5)).is_none());
        decision.allowed = true;
        cache.insert(&Subject::Key(2), &refs, &decision, &times, t0);
        assert!(cache.is_empty());
    }

    #[test]
    fn cache_is_bounded_and_sweeps() {
        let cache = OverLimitCache::new(CACHE_SHARDS * 2, Duration::from_secs(3600));
        let t0 = Instant::now();
        let (buckets, decision, times) = refusal();
        let refs: Vec<&Bucket> = buckets.iter().collect();
        for id in 0..10_000 {
            cache.insert(&Subject::Key(id), &refs, &decision, &times, t0);
        }
        assert!(cache.len() <= CACHE_SHARDS * 2, "{}", cache.len());
        assert!(cache.len() >= CACHE_SHARDS, "{}", cache.len());
        // Once expired, room is made again.
        let later = t0 + Duration::from_secs(31);
        cache.insert(&Subject::Key(20_000), &refs, &decision, &times, later);
        assert!(cache.get(&Subject::Key(20_000), &refs, later).is_some());
        let held = cache.len();
        assert_eq!(cache.sweep(later), held - 1, "all but the new one expired");
        assert_eq!(cache.sweep(later + Duration::from_secs(31)), 1);
        assert!(cache.is_empty());
    }
}
