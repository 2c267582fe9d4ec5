//! `GET /api/health`: without a token only `{"status": …}` (for load
//! balancers and probes); with one (any role) the admin API itself, the
//! database, Redis (when the limiter uses it), every proxy instance from the
//! `instances` table, and every upstream target as the proxies last saw it.
//!
//! The probe runs at most about once a second ([`HealthCache`]): concurrent
//! and repeated calls share its result, and the Redis connection is kept
//! and reused rather than opened per call.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tollgate_core::config::LimiterBackend;
use tollgate_core::db::instances::{Instance, TargetHealth};
use tollgate_core::db::DbKind;
use utoipa::ToSchema;

use crate::AppState;

/// An instance whose last heartbeat is older than this is reported down.
pub const INSTANCE_STALE_AFTER: Duration = Duration::from_secs(15);
const DB_TIMEOUT: Duration = Duration::from_secs(2);
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a probe's result is served before the next probe.
pub const PROBE_CACHE: Duration = Duration::from_secs(1);

/// The last probe and the Redis connection, shared by every call.
#[derive(Default)]
pub struct HealthCache {
    last: tokio::sync::Mutex<Option<(Instant, StatusCode, HealthReport)>>,
    redis: tokio::sync::Mutex<Option<(String, RedisConn)>>,
    probes: std::sync::atomic::AtomicU64,
    redis_connects: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for HealthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCache").finish_non_exhaustive()
    }
}

impl HealthCache {
    /// How many probes ran (not served from the cache).
    pub fn probes(&self) -> u64 {
        self.probes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many Redis connections the probes opened.
    pub fn redis_connects(&self) -> u64 {
        self.redis_connects
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Clone)]
enum RedisConn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// The unauthenticated answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthSummary {
    /// `ok`, `degraded` or `down` (HTTP 503).
    #[schema(example = "ok")]
    pub status: String,
}

/// `up`, `down`, or `unknown` (never checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Up,
    Down,
    Unknown,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthReport {
    /// `ok`: everything up; `degraded`: the admin API and database are up but
    /// something else is not; `down`: the database is unreachable (HTTP 503).
    #[schema(example = "ok")]
    pub status: String,
    /// Unix ms.
    pub checked_at: i64,
    pub admin: AdminHealth,
    pub database: ComponentHealth,
    /// `null` unless `limiter.backend` is `redis`.
    pub redis: Option<ComponentHealth>,
    pub instances: Vec<InstanceHealth>,
    pub upstreams: Vec<TargetHealthView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminHealth {
    pub status: Status,
    pub version: String,
    /// Unix ms.
    pub started_at: i64,
    pub uptime_seconds: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ComponentHealth {
    pub status: Status,
    /// `sqlite`, `postgres`, `redis` or `redis-cluster`.
    pub kind: String,
    /// Round-trip time of the check, when it succeeded.
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstanceHealth {
    pub id: String,
    pub address: String,
    pub version: String,
    /// `up` if its last heartbeat is at most 15 s old.
    pub status: Status,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms of the last heartbeat.
    pub last_seen: i64,
    pub uptime_seconds: u64,
    /// The instance's own figures.
    #[schema(value_type = Object)]
    pub stats: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetHealthView {
    pub upstream: String,
    pub target: String,
    /// As reported by the most recently seen live instance; `unknown` if no
    /// live instance reports it.
    pub status: Status,
    /// Unix ms of that instance's last health check of the target; `null`
    /// before the first one or when the upstream has no `health_check`.
    pub checked_at: Option<i64>,
    /// Why the last health check failed.
    pub error: Option<String>,
    /// Median time, in ms, from a request's arrival at the proxy to the
    /// target's response header, over the requests that instance proxied to
    /// it in the last 5 minutes; `null` without recent traffic.
    #[schema(example = 4.2)]
    pub latency_ms: Option<f64>,
    /// How many requests `latency_ms` is the median of.
    pub latency_samples: u32,
    /// Round trip of the last health check, in ms, when it passed.
    pub check_latency_ms: Option<f64>,
    /// Unix ms since which the health checks have seen the target up without
    /// interruption; `null` while it is down, before its first check, or
    /// when the upstream has no `health_check`.
    pub up_since: Option<i64>,
    /// Seconds from `up_since` to now (`null` when `up_since` is).
    pub uptime_seconds: Option<u64>,
    /// The instance whose report this is.
    pub reported_by: Option<String>,
}

impl TargetHealthView {
    /// A configured target nobody reported yet.
    fn unknown(upstream: &str, target: String) -> Self {
        Self {
            upstream: upstream.to_string(),
            target,
            status: Status::Unknown,
            checked_at: None,
            error: None,
            latency_ms: None,
            latency_samples: 0,
            check_latency_ms: None,
            up_since: None,
            uptime_seconds: None,
            reported_by: None,
        }
    }

    /// Take `report` of instance `by`, as of `now` (Unix ms).
    fn fill(&mut self, report: &TargetHealth, by: &str, now: i64) {
        self.status = if report.healthy {
            Status::Up
        } else {
            Status::Down
        };
        self.checked_at = report.checked_at;
        self.error = report.error.clone();
        self.latency_ms = report.latency_ms;
        self.latency_samples = report.latency_samples;
        self.check_latency_ms = report.check_latency_ms;
        // An up-time only means something for a target reported up.
        self.up_since = report.up_since.filter(|_| report.healthy);
        self.uptime_seconds = self
            .up_since
            .map(|since| u64::try_from((now - since) / 1000).unwrap_or(0));
        self.reported_by = Some(by.to_string());
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/api/health", get(health))
}

/// Health: without a token only `{"status"}`; with a token (any role) the
/// admin API, database, Redis, proxy instances and upstream targets.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "health",
    responses(
        (status = 200, description = "The admin API and the database are up (see `status` for the rest). Without a token the body is only `{\"status\"}` (HealthSummary)", body = HealthReport),
        (status = 401, description = "A token was sent and is invalid", body = crate::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable; the body is the same report", body = HealthReport),
    ),
    security((), ("bearer" = ["viewer"]))
)]
pub async fn health(State(state): State<AppState>, parts: Parts) -> axum::response::Response {
    // Details only for a logged-in admin; a bad token is refused, not
    // silently downgraded.
    let detailed = if parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION)
    {
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let token = match crate::auth::bearer(&parts) {
            Ok(t) => t,
            Err(e) => return e.into_response(),
        };
        match crate::auth::authenticate(&state, token, ip).await {
            Ok(_) => true,
            // The token cannot be checked: say what can be said without it.
            Err(crate::error::ApiError::DatabaseUnavailable(_)) => false,
            Err(e) => return e.into_response(),
        }
    } else {
        false
    };
    let (code, report) = cached_probe(&state).await;
    if detailed {
        (code, Json(report)).into_response()
    } else {
        (
            code,
            Json(HealthSummary {
                status: report.status,
            }),
        )
            .into_response()
    }
}

/// The last probe if it is younger than [`PROBE_CACHE`], else a new one.
/// Callers arriving during a probe wait for it rather than start their own.
async fn cached_probe(state: &AppState) -> (StatusCode, HealthReport) {
    let cache = state.health_cache();
    let mut last = cache.last.lock().await;
    if let Some((at, code, report)) = last.as_ref() {
        if at.elapsed() < PROBE_CACHE {
            return (*code, report.clone());
        }
    }
    cache
        .probes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (code, report) = probe(state).await;
    *last = Some((Instant::now(), code, report.clone()));
    (code, report)
}

async fn probe(state: &AppState) -> (StatusCode, HealthReport) {
    let config = state.config();
    let now = tollgate_core::now_ms();

    let db_fut = ping_database(state);
    let redis_fut = async {
        match (config.limiter.backend, config.limiter.redis_url.as_deref()) {
            (LimiterBackend::Redis, Some(url)) => Some(
                ping_redis(
                    state.health_cache(),
                    url,
                    config.limiter.redis_ca_file.as_deref(),
                )
                .await,
            ),
            (LimiterBackend::Redis, None) => Some(ComponentHealth {
                status: Status::Down,
                kind: "redis".into(),
                latency_ms: None,
                error: Some("limiter.backend is redis but no redis_url is configured".into()),
            }),
            _ => None,
        }
    };
    let (database, redis) = tokio::join!(db_fut, redis_fut);

    let stored = if database.status == Status::Up {
        match tokio::time::timeout(DB_TIMEOUT, state.db().list_instances()).await {
            Ok(Ok(list)) => list,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading proxy instances failed");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let stale_ms = i64::try_from(INSTANCE_STALE_AFTER.as_millis()).unwrap_or(15_000);
    let is_up = |i: &Instance| now - i.last_seen <= stale_ms;
    let instances: Vec<InstanceHealth> = stored
        .iter()
        .map(|i| InstanceHealth {
            id: i.id.clone(),
            address: i.address.clone(),
            version: i.version.clone(),
            status: if is_up(i) { Status::Up } else { Status::Down },
            started_at: i.started_at,
            last_seen: i.last_seen,
            uptime_seconds: u64::try_from((i.last_seen - i.started_at) / 1000).unwrap_or(0),
            stats: i.stats.clone(),
        })
        .collect();

    // Every configured target, then anything a live instance reports that the
    // (possibly older or newer) config here does not name. Live instances are
    // visited most recently seen first, so the freshest report wins.
    let mut targets: BTreeMap<(String, String), TargetHealthView> = BTreeMap::new();
    for (name, up) in &config.upstreams {
        for t in &up.targets {
            let view = TargetHealthView::unknown(name, t.to_string());
            targets.insert((name.clone(), t.to_string()), view);
        }
    }
    let mut live: Vec<&Instance> = stored.iter().filter(|i| is_up(i)).collect();
    live.sort_by_key(|i| std::cmp::Reverse(i.last_seen));
    for inst in live {
        for th in &inst.upstream_health {
            let entry = targets
                .entry((th.upstream.clone(), canonical_target(&config, th)))
                .or_insert_with(|| TargetHealthView::unknown(&th.upstream, th.target.clone()));
            if entry.reported_by.is_none() {
                entry.fill(th, &inst.id, now);
            }
        }
    }
    let upstreams: Vec<TargetHealthView> = targets.into_values().collect();

    let db_up = database.status == Status::Up;
    let all_up = db_up
        && redis.as_ref().is_none_or(|r| r.status == Status::Up)
        && instances.iter().all(|i| i.status == Status::Up)
        && upstreams.iter().all(|t| t.status != Status::Down);
    let report = HealthReport {
        status: if !db_up {
            "down"
        } else if all_up {
            "ok"
        } else {
            "degraded"
        }
        .to_string(),
        checked_at: now,
        admin: AdminHealth {
            status: Status::Up,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: state.started_at(),
            uptime_seconds: u64::try_from((now - state.started_at()) / 1000).unwrap_or(0),
        },
        database,
        redis,
        instances,
        upstreams,
    };
    let code = if db_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, report)
}

/// A reported target matched to the config's spelling of it (the proxy may
/// report `127.0.0.1:3001` for a target written `http://127.0.0.1:3001`).
fn canonical_target(config: &tollgate_core::config::Config, th: &TargetHealth) -> String {
    if let Some(up) = config.upstreams.get(&th.upstream) {
        for t in &up.targets {
            if th.target == t.to_string() || th.target == t.authority() {
                return t.to_string();
            }
        }
    }
    th.target.clone()
}

async fn ping_database(state: &AppState) -> ComponentHealth {
    let kind = match state.db().kind() {
        DbKind::Sqlite => "sqlite",
        DbKind::Postgres => "postgres",
    };
    let start = Instant::now();
    let ping = sqlx::query("SELECT 1").execute(state.db().pool());
    match tokio::time::timeout(DB_TIMEOUT, ping).await {
        Ok(Ok(_)) => up(kind, start),
        Ok(Err(e)) => down(kind, e.to_string()),
        Err(_) => down(
            kind,
            format!("no answer within {} ms", DB_TIMEOUT.as_millis()),
        ),
    }
}

fn up(kind: &str, start: Instant) -> ComponentHealth {
    ComponentHealth {
        status: Status::Up,
        kind: kind.into(),
        latency_ms: Some((start.elapsed().as_secs_f64() * 1e6).round() / 1e3),
        error: None,
    }
}

fn down(kind: &str, error: String) -> ComponentHealth {
    ComponentHealth {
        status: Status::Down,
        kind: kind.into(),
        latency_ms: None,
        error: Some(error),
    }
}

/// A connection to Redis as the proxy makes it (the URL parsed by core's one
/// parser, TLS with `limiter.redis_ca_file` if set): the kept one, or a new
/// one, kept for the next probe.
async fn redis_conn(
    cache: &HealthCache,
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<RedisConn, String> {
    let mut slot = cache.redis.lock().await;
    if let Some((u, c)) = slot.as_ref() {
        if u == url {
            return Ok(c.clone());
        }
    }
    cache
        .redis_connects
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let parsed = tollgate_core::redis_url::parse(url).map_err(|e| e.to_string())?;
    let certs = match ca_file {
        Some(path) if parsed.tls => {
            let pem = tokio::fs::read(path)
                .await
                .map_err(|e| format!("limiter.redis_ca_file {}: {e}", path.display()))?;
            Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            })
        }
        _ => None,
    };
    let nodes = parsed.node_urls();
    let connect = async {
        if parsed.cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            let client = builder.build()?;
            Ok::<_, redis::RedisError>(RedisConn::Cluster(client.get_async_connection().await?))
        } else {
            let node = nodes.into_iter().next().unwrap_or_default();
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(node, certs)?,
                None => redis::Client::open(node)?,
            };
            Ok(RedisConn::Single(
                client.get_multiplexed_async_connection().await?,
            ))
        }
    };
    let conn = connect.await.map_err(|e| e.to_string())?;
    *slot = Some((url.to_string(), conn.clone()));
    Ok(conn)
}

/// PING Redis, bounded by [`REDIS_TIMEOUT`]. Errors never show the password.
async fn ping_redis(
    cache: &HealthCache,
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> ComponentHealth {
    let start = Instant::now();
    let kind = match tollgate_core::redis_url::parse(url) {
        Ok(p) => p.kind(),
        Err(e) => return down("redis", e.to_string()),
    };
    let check = async {
        match redis_conn(cache, url, ca_file).await? {
            RedisConn::Single(mut c) => redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map_err(|e| e.to_string()),
            RedisConn::Cluster(mut c) => redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map_err(|e| e.to_string()),
        }
    };
    let result = tokio::time::timeout(REDIS_TIMEOUT, check).await;
    if !matches!(result, Ok(Ok(_))) {
        // Reconnect next time rather than trust a broken connection.
        *cache.redis.lock().await = None;
    }
    match result {
        Ok(Ok(_)) => up(kind, start),
        Ok(Err(e)) => down(kind, tollgate_core::redis_url::redact(&e)),
        Err(_) => down(
            kind,
            format!("no answer within {} ms", REDIS_TIMEOUT.as_millis()),
        ),
    }
}
