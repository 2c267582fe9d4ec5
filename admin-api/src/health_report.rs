//! What `GET /api/health` answers ([`HealthReport`], [`HealthSummary`]) and
//! the cache of the last probe ([`HealthCache`]) the app state holds: below
//! `state`, apart from the handler and the probe (`health/`), which use the
//! state.

use std::time::Instant;

use axum::http::StatusCode;
use serde::Serialize;
use tollgate_core::db::instances::TargetHealth;
use utoipa::ToSchema;

/// The last probe and the Redis connection, shared by every call.
#[derive(Default)]
pub struct HealthCache {
    pub(crate) last: tokio::sync::Mutex<Option<(Instant, StatusCode, HealthReport)>>,
    pub(crate) redis: tokio::sync::Mutex<Option<(String, RedisConn)>>,
    pub(crate) probes: std::sync::atomic::AtomicU64,
    pub(crate) redis_connects: std::sync::atomic::AtomicU64,
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

    /// Drop the kept Redis connection: the next read or probe connects
    /// anew rather than trust one that failed.
    pub(crate) async fn forget_redis(&self) {
        *self.redis.lock().await = None;
    }
}

/// A kept connection to Redis.
#[derive(Clone)]
pub(crate) enum RedisConn {
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
    pub(crate) fn unknown(upstream: &str, target: String) -> Self {
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
    pub(crate) fn fill(&mut self, report: &TargetHealth, by: &str, now: i64) {
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
            .map(|since| u64::try_from(now.saturating_sub(since) / 1000).unwrap_or(0));
        self.reported_by = Some(by.to_string());
    }
}

/// A connection to Redis as the proxy makes it (the URL parsed by core's one
/// parser, TLS with `limiter.redis_ca_file` if set): the kept one, or a new
/// one, kept for the next probe.
pub(crate) async fn redis_conn(
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
