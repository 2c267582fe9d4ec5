//! One health probe: the database, Redis (when the limiter uses it), the
//! proxy instances' heartbeats and the upstream targets they report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tollgate_core::config::LimiterBackend;
use tollgate_core::db::instances::{is_live, Instance, TargetHealth};
use tollgate_core::db::DbKind;

use crate::health_report::{
    redis_conn, AdminHealth, ComponentHealth, HealthCache, HealthReport, InstanceHealth, RedisConn,
    Status, TargetHealthView,
};
use crate::state::AppState;

const DB_TIMEOUT: Duration = Duration::from_secs(2);
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Check every part now.
pub(super) async fn probe(state: &AppState) -> (StatusCode, HealthReport) {
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
    // Up by the one liveness rule (three of its own heartbeat periods), as
    // the proxies count each other.
    let is_up = |i: &Instance| is_live(i.last_seen, i.beat_every_ms, now);
    let instances: Vec<InstanceHealth> = stored
        .iter()
        .map(|i| InstanceHealth {
            id: i.id.clone(),
            address: i.address.clone(),
            version: i.version.clone(),
            status: if is_up(i) { Status::Up } else { Status::Down },
            started_at: i.started_at,
            last_seen: i.last_seen,
            uptime_seconds: u64::try_from(i.last_seen.saturating_sub(i.started_at) / 1000)
                .unwrap_or(0),
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
        cache.forget_redis().await;
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
