//! The validated, internal configuration model, and its defaults (each next
//! to the section it belongs to: what a value is when the file does not say).
//!
//! Everything here has been checked by [`super::validate`]: durations are parsed,
//! every referenced plan and upstream exists, numbers are in range. The proxy and
//! the admin API only ever see this model, never the raw YAML structs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::limits::Limit;

/// A complete, validated Tollgate configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this config was read from, if any (used for hot reload).
    pub source: Option<PathBuf>,
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub storage: StorageConfig,
    pub limiter: LimiterConfig,
    pub log: LogConfig,
    pub usage: UsageConfig,
    pub telemetry: TelemetryConfig,
    pub verify: VerifyConfig,
    pub plans: BTreeMap<String, Plan>,
    pub upstreams: BTreeMap<String, Upstream>,
    /// In file order; the proxy builds its own matcher from these.
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub threads: usize,
    /// Lower-cased header name the key is read from (`Authorization: Bearer` also works).
    pub key_header: String,
    /// 401/403 answers per second one client IP may provoke before it is throttled.
    pub auth_failures_per_second: u32,
    /// Seconds Pingora waits for in-flight requests on SIGTERM.
    pub grace_period: Duration,
    /// Downstream keep-alive idle timeout.
    pub keepalive_timeout: Duration,
    pub tls: Option<TlsListener>,
    /// The request edge: paths, client addresses, header limits.
    pub edge: EdgeConfig,
    /// Pingora's server settings (runtime, listeners, connection reuse).
    pub tuning: ServerTuning,
    /// `proxy.h2c`: the plain listener also speaks HTTP/2 without TLS (prior
    /// knowledge, as gRPC clients do), beside HTTP/1.
    pub h2c: bool,
    /// Where a caller reads its own limits with its key (`None`: off).
    pub usage_path: Option<String>,
    /// `proxy.instance_name`: the name a local-backend proxy writes its
    /// quota counts under (`None`: `<host>@<listen address>`, see
    /// [`ProxyConfig::counter_name`]).
    pub instance_name: Option<String>,
}

impl ProxyConfig {
    /// The name this proxy's local quota counts are written under:
    /// `proxy.instance_name`, else `<host>@<listen address>`.
    pub fn counter_name(&self, host: &str) -> String {
        match &self.instance_name {
            Some(name) => name.clone(),
            None => format!("{host}@{}", self.listen),
        }
    }
}

/// The longest `proxy.instance_name`.
pub const MAX_INSTANCE_NAME: usize = 128;

/// `proxy.usage_path` when the file does not set it (`""` turns it off).
pub const DEFAULT_USAGE_PATH: &str = "/_tollgate/usage";
/// The longest `proxy.usage_path`.
pub const MAX_USAGE_PATH: usize = 256;

/// `proxy.work_stealing`, `listener_tasks`, `upstream_keepalive_pool`,
/// `downstream_keepalive_requests`: the Pingora server settings that change
/// throughput (benches/RESULTS.md, "Pingora's settings"). The defaults are
/// Pingora's, except `work_stealing: false` (one single-threaded runtime per
/// worker thread: +17 % for Tollgate's local mode on this box, measured
/// interleaved against `true`, with fewer cross-thread wake-ups) and the
/// 10 000 requests per client connection Tollgate always had. Two faults of
/// Pingora 0.9.1's no-steal runtime are handled around it: it keeps each
/// runtime's handles per thread id and thread ids are reused, so a server
/// started after another one stopped in the same process may pick the
/// stopped one's runtime (one process runs one proxy server for its life;
/// the in-process tests start several and run work-stealing); and on a fast
/// stop its join can wait for ever on an accept loop left spinning, which
/// `usage::shutdown::bound_fast_stop` bounds. TCP_NODELAY is always on
/// (Pingora sets it on every accepted and upstream socket) and the listen
/// backlog is Pingora's 65 535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTuning {
    /// One work-stealing tokio runtime for all `threads` (Pingora's default),
    /// or one single-threaded runtime per thread (`false`).
    pub work_stealing: bool,
    /// Accept tasks per listening socket.
    pub listener_tasks: usize,
    /// Idle upstream connections kept for reuse (all upstreams together).
    pub upstream_keepalive_pool: usize,
    /// Requests served on one client connection before it is closed.
    pub downstream_keepalive_requests: u32,
}

impl Default for ServerTuning {
    fn default() -> Self {
        Self {
            work_stealing: false,
            listener_tasks: 1,
            upstream_keepalive_pool: 128,
            downstream_keepalive_requests: 10_000,
        }
    }
}

/// `proxy.listen` when the file does not say.
pub const DEFAULT_PROXY_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_THREADS: u64 = 2;
/// Upper bound for `proxy.threads`.
pub const MAX_THREADS: u64 = 1024;
/// Upper bound for `proxy.listener_tasks`.
pub const MAX_LISTENER_TASKS: u64 = 64;
/// Upper bound for `proxy.upstream_keepalive_pool` (idle connections).
pub const MAX_UPSTREAM_KEEPALIVE_POOL: u64 = 1_000_000;
pub const DEFAULT_KEY_HEADER: &str = "x-api-key";
pub const DEFAULT_AUTH_FAILURES_PER_SECOND: u64 = 20;
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// `proxy.path_policy`, `trusted_proxies`, `proxy_protocol`,
/// `header_timeout`, `body_timeout`, `max_header_bytes`,
/// `max_connections_per_ip`.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    pub path_policy: crate::path::PathPolicy,
    /// Peers whose `X-Forwarded-For` (and `X-Forwarded-Proto`/`-Host`,
    /// `X-Request-Id`) are believed.
    pub trusted_proxies: crate::net::TrustedProxies,
    /// The listeners expect a PROXY protocol (v1 or v2) header first.
    pub proxy_protocol: bool,
    /// The whole request header must arrive within this.
    pub header_timeout: Duration,
    /// The longest wait for the next piece of a request body (408 after).
    pub body_timeout: Duration,
    /// Request line plus header fields; larger → 431.
    pub max_header_bytes: usize,
    /// Open connections per client address (IPv6: per /64); 0 = no cap.
    pub max_connections_per_ip: u32,
    /// How often open WebSockets are checked against the key set: a key
    /// disabled, expired or deleted closes its WebSockets within
    /// `storage.key_refresh` plus this.
    pub websocket_key_check: Duration,
}

/// `proxy.header_timeout` when the file does not say.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `proxy.body_timeout` when the file does not say.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// `proxy.max_header_bytes` when the file does not say (32 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// `proxy.max_connections_per_ip` when the file does not say.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 256;
/// `proxy.websocket_key_check` when the file does not say.
pub const DEFAULT_WEBSOCKET_KEY_CHECK: Duration = Duration::from_secs(1);
/// The longest `proxy.websocket_key_check`.
pub const MAX_WEBSOCKET_KEY_CHECK: Duration = Duration::from_secs(3600);

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            path_policy: crate::path::PathPolicy::Reject,
            trusted_proxies: crate::net::TrustedProxies::default(),
            proxy_protocol: false,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            websocket_key_check: DEFAULT_WEBSOCKET_KEY_CHECK,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Name of the environment variable holding the JWT secret.
    pub jwt_secret_env: String,
    /// How long a session token is valid (its `exp` − `iat` may not exceed it).
    pub session_ttl: Duration,
    /// `Host` values the admin listener answers (lower case, `host` or
    /// `host:port`); empty means the defaults: the listen address and
    /// `localhost`, `127.0.0.1`, `[::1]` on the listen port.
    pub allowed_hosts: Vec<String>,
    /// Time a client has to send a whole request header.
    pub header_timeout: Duration,
    /// A connection with no bytes received for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections accepted at once; more are closed at accept.
    pub max_connections: usize,
    /// Open connections per client address (IPv6: per /64), so one client
    /// cannot take every `max_connections` slot; 0: no cap.
    pub max_connections_per_ip: u32,
    /// Audit events older than this are deleted.
    pub audit_retention: Duration,
}

/// `admin.listen` when the file does not say.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
pub const DEFAULT_JWT_SECRET_ENV: &str = "TOLLGATE_JWT_SECRET";
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The longest `admin.session_ttl`.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(30 * 86_400);
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: u64 = 512;
pub const DEFAULT_ADMIN_MAX_CONNECTIONS_PER_IP: u32 = 32;
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(365 * 86_400);

#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    pub database_url: String,
    /// How often the proxy checks the database for key/plan changes.
    pub key_refresh: Duration,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://tollgate.db";
pub const DEFAULT_KEY_REFRESH: Duration = Duration::from_millis(500);
/// The longest `storage.key_refresh`: a disabled key is refused within it.
pub const MAX_KEY_REFRESH: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterBackend {
    Local,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// Fall back to the in-process limiter with the same limits (per instance).
    Local,
    /// Admit the request.
    Allow,
    /// Refuse with 503.
    Deny,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimiterConfig {
    pub backend: LimiterBackend,
    /// Checked by [`crate::redis_url::parse`]; parse it again to use it.
    pub redis_url: Option<String>,
    pub redis_timeout: Duration,
    pub on_redis_error: OnRedisError,
    /// PEM file of the CA certificates trusted for `rediss://` instead of
    /// the system roots.
    pub redis_ca_file: Option<PathBuf>,
    /// With the Redis backend: how long a proxy's concurrency hold outlives
    /// the proxy (renewed every third of it while its request runs).
    pub concurrency_lease: Duration,
    /// With the Redis backend: how long a token lease taken from a Redis
    /// bucket may be spent locally before its unused tokens go back.
    /// Zero: no leases, every request asks Redis.
    pub lease_ttl: Duration,
}

pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(20);
pub const DEFAULT_CONCURRENCY_LEASE: Duration = Duration::from_secs(10);
/// The longest `limiter.concurrency_lease`.
pub const MAX_CONCURRENCY_LEASE: Duration = Duration::from_secs(3600);
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_millis(200);
/// `limiter.lease_ttl`: 0 (off) or within these bounds.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(10);
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
    pub access_log: bool,
}

pub const DEFAULT_LOG_LEVEL: &str = "info";

#[derive(Debug, Clone, PartialEq)]
pub struct UsageConfig {
    pub flush_interval: Duration,
    pub retention_days: u32,
    /// Days the `violations` and `violation_aggregates` tables are kept.
    pub violation_retention_days: u32,
    /// Maximum number of aggregated rows held while the database is unreachable.
    pub buffer_rows: usize,
}

pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// The longest `usage.flush_interval`.
pub const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_RETENTION_DAYS: u64 = 30;
pub const DEFAULT_BUFFER_ROWS: u64 = 100_000;
pub const DEFAULT_VIOLATION_RETENTION_DAYS: u64 = 7;

/// A named set of limits a key can be assigned to.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub limits: Vec<Limit>,
    /// Optional maximum number of in-flight requests per key.
    pub concurrency: Option<u32>,
    /// Routes and methods the plan's keys may use (see `rules::access`).
    pub scopes: Option<crate::rules::access::Scopes>,
    /// `credits.refill`: its keys' (or its identities') prepaid balance is
    /// set to the amount at each period start (see [`crate::refill`]).
    pub credits_refill: Option<crate::refill::Refill>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub targets: Vec<Target>,
    pub health_check: Option<HealthCheck>,
    pub timeouts: Timeouts,
    /// Forward the client's `Host` header instead of the target's host.
    pub preserve_host: bool,
    /// How `https://` targets are verified.
    pub tls: UpstreamTls,
    /// How often host names among the targets are resolved again.
    pub resolve_interval: Duration,
    /// `upstreams.*.protocol`: the HTTP version spoken to the targets.
    pub protocol: UpstreamProtocol,
}

/// `upstreams.*.protocol`: `h1` (HTTP/1.1, the default), `h2c` (HTTP/2
/// without TLS, prior knowledge: `http://` targets) or `h2` (HTTP/2 over TLS
/// chosen by ALPN: `https://` targets). gRPC upstreams need `h2c` or `h2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    H1,
    H2c,
    H2,
}

impl UpstreamProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H1 => "h1",
            Self::H2c => "h2c",
            Self::H2 => "h2",
        }
    }
}

/// `upstreams.*.resolve_interval`: how often target host names are resolved again.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
/// The longest `upstreams.*.resolve_interval`.
pub const MAX_RESOLVE_INTERVAL: Duration = Duration::from_secs(86_400);

/// TLS towards an upstream's `https://` targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM file of the CA certificates to trust instead of the system roots
    /// (for private upstreams). Re-read when the config is reloaded.
    pub ca_file: Option<PathBuf>,
    /// Verify the upstream's certificate chain and name (default true).
    pub verify: bool,
    /// Server name sent in SNI and checked against the certificate, instead of
    /// the target's host (e.g. targets given as IP addresses).
    pub sni: Option<String>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        Self {
            ca_file: None,
            verify: true,
            sni: None,
        }
    }
}

/// One upstream address: `host:port`, `http://host[:port]` or `https://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Target {
    /// `host:port`, suitable for socket address resolution.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
}

/// `health_check.interval` when a health check gives only its path.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// The longest `health_check.interval`.
pub const MAX_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(30),
            write: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    ApiKey,
    /// No key: limits apply per client IP.
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    /// Starts with `/`; matches on segment boundaries (`/api/users` matches
    /// `/api/users` and `/api/users/1`, not `/api/usersx`).
    pub path_prefix: String,
    /// Upper-case method names; `None` = every method.
    pub methods: Option<Vec<String>>,
    pub upstream: String,
    pub strip_prefix: Option<String>,
    pub auth: Auth,
    /// Plan for keys with neither a plan nor own limits (and for `auth: none`).
    pub default_plan: Option<String>,
    /// Extra limits, per key (or IP) on this route.
    pub limits: Vec<Limit>,
    /// Count and report, never block.
    pub shadow: bool,
    /// `match.case_insensitive`: the prefix matches in any ASCII case (for
    /// upstreams that route that way).
    pub case_insensitive: bool,
    /// Forward `X-HTTP-Method-Override` and its kin (stripped otherwise).
    pub allow_method_override: bool,
    /// Client networks allowed on this route (empty: all).
    pub ip_allow: Vec<ipnet::IpNet>,
    /// Client networks refused on this route; wins over `ip_allow`.
    pub ip_deny: Vec<ipnet::IpNet>,
    /// WebSocket upgrades are forwarded (stripped otherwise: no tunnel opens).
    pub websocket: bool,
    /// The largest request body forwarded, declared or streamed; 0 = no cap.
    pub max_body_bytes: u64,
    /// Browser callers (`None`: the proxy adds no CORS headers and
    /// preflights go to the upstream like any request).
    pub cors: Option<Cors>,
    /// `cost`: reserve before forwarding, settle from the response.
    pub cost: Option<crate::cost::RouteCost>,
}

/// `telemetry:`: W3C trace context and OpenTelemetry spans.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TelemetryConfig {
    /// `otlp_endpoint`: where spans are sent (OTLP over HTTP/protobuf, e.g.
    /// `http://127.0.0.1:4318`; `/v1/traces` is added when the URL has no
    /// path). None: no spans.
    pub otlp_endpoint: Option<String>,
    /// `trace_context`: read `traceparent`/`tracestate` and pass them upstream
    /// with the proxy as the parent. Defaults to on when `otlp_endpoint` is
    /// set, off otherwise (the request path is then untouched).
    pub trace_context: bool,
    /// `service_name`: the `service.name` of the spans (default `tollgate`).
    pub service_name: String,
}

/// `telemetry.service_name` when not given.
pub const DEFAULT_SERVICE_NAME: &str = "tollgate";

impl TelemetryConfig {
    /// Whether anything at all happens per request.
    pub fn enabled(&self) -> bool {
        self.trace_context || self.otlp_endpoint.is_some()
    }
}

/// `routes[].max_body_bytes` when the file does not say (10 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;

/// Which browser origins may call a route, and how (the proxy answers
/// preflights and adds the CORS headers to every answer).
#[derive(Debug, Clone, PartialEq)]
pub struct Cors {
    pub origins: CorsOrigins,
    /// Upper-case methods a preflight may ask for.
    pub methods: Vec<String>,
    /// Lower-case request header names a preflight may ask for (the key
    /// header and `authorization` are always allowed on top).
    pub headers: Vec<String>,
    /// `Access-Control-Max-Age` in seconds (`None`: not sent).
    pub max_age: Option<u64>,
    /// `Access-Control-Allow-Credentials: true` (never with `*`).
    pub credentials: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CorsOrigins {
    /// `*`: every origin (answered with `Access-Control-Allow-Origin: *`).
    Any,
    /// Exact serialized origins (`https://app.example:8443`), lower case.
    List(Vec<String>),
}

/// `verify:`: the verify API (`POST /v1/verify`) for services that are not
/// behind the proxy, served by the proxy process on the same keys and
/// buckets. Off unless `listen` is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyConfig {
    /// `listen`: the verify listener's address (`None`: no verify API).
    pub listen: Option<SocketAddr>,
}
