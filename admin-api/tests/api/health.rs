//! /api/health

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tollgate_core::config;
use tollgate_core::db::instances::{Heartbeat, TargetHealth};

use crate::both;
use crate::common::*;

fn heartbeat(id: &str, healthy_3001: bool) -> Heartbeat {
    let now = tollgate_core::now_ms();
    Heartbeat {
        id: id.into(),
        address: "127.0.0.1:18080".into(),
        version: "0.1.0".into(),
        started_at: tollgate_core::now_ms() - 120_000,
        stats: json!({"requests": 42}),
        upstream_health: vec![TargetHealth {
            upstream: "demo".into(),
            target: "127.0.0.1:3001".into(),
            healthy: healthy_3001,
            checked_at: Some(now),
            error: (!healthy_3001).then(|| "connection refused".to_string()),
            latency_ms: Some(if healthy_3001 { 4.25 } else { 950.5 }),
            latency_samples: 17,
            check_latency_ms: healthy_3001.then_some(1.5),
            up_since: healthy_3001.then_some(now - 3_600_000),
        }],
        counter: None,
        beat_every: std::time::Duration::from_secs(5),
    }
}

async fn health_reports_every_part(app: TestApp) {
    // Without a token: the status only.
    let h = json(
        send(app.anon(Method::GET, "/api/health")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(h.as_object().map(|m| m.len()), Some(1), "{h}");
    // With one: every part.
    let h = json(app.get("/api/health").await, StatusCode::OK).await;
    assert_eq!(h["admin"]["status"], "up");
    assert_eq!(h["database"]["status"], "up");
    assert!(h["database"]["latency_ms"].as_f64().expect("latency") >= 0.0);
    let kind = h["database"]["kind"].as_str().expect("kind");
    assert!(kind == "sqlite" || kind == "postgres");
    assert_eq!(h["redis"], Value::Null, "local limiter: no Redis");
    assert_eq!(h["instances"], json!([]));
    // Configured targets nobody reported yet.
    let ups = h["upstreams"].as_array().expect("upstreams");
    assert_eq!(ups.len(), 2);
    assert!(ups
        .iter()
        .all(|t| t["status"] == "unknown" && t["upstream"] == "demo"));

    // One live instance that sees 3001 down, one stale instance that saw it up.
    app.db
        .upsert_instance(&heartbeat("live-1", false))
        .await
        .expect("heartbeat");
    let stale_seen = tollgate_core::now_ms() - 60_000;
    app.db
        .upsert_instance_at(&heartbeat("stale-1", true), stale_seen)
        .await
        .expect("heartbeat");
    let h = fresh_health(&app).await;
    let instances = h["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 2);
    let live = instances
        .iter()
        .find(|i| i["id"] == "live-1")
        .expect("live");
    assert_eq!(live["status"], "up");
    assert_eq!(live["stats"]["requests"], 42);
    assert_eq!(live["address"], "127.0.0.1:18080");
    assert!(live["uptime_seconds"].as_u64().expect("uptime") >= 119);
    let stale = instances
        .iter()
        .find(|i| i["id"] == "stale-1")
        .expect("stale");
    assert_eq!(stale["status"], "down");
    assert_eq!(stale["last_seen"], stale_seen);
    let ups = h["upstreams"].as_array().expect("upstreams");
    let t1 = ups
        .iter()
        .find(|t| t["target"].as_str().is_some_and(|s| s.ends_with(":3001")))
        .expect("3001");
    assert_eq!(t1["status"], "down", "the live instance's report wins: {h}");
    assert_eq!(t1["reported_by"], "live-1");
    assert_eq!(t1["error"], "connection refused");
    // Down: traffic latency as measured, no check round trip, no up-time.
    assert_eq!(t1["latency_ms"], 950.5);
    assert_eq!(t1["latency_samples"], 17);
    assert_eq!(t1["check_latency_ms"], Value::Null);
    assert_eq!(t1["up_since"], Value::Null);
    assert_eq!(t1["uptime_seconds"], Value::Null);
    let t2 = ups
        .iter()
        .find(|t| t["target"].as_str().is_some_and(|s| s.ends_with(":3002")))
        .expect("3002");
    assert_eq!(t2["status"], "unknown");
    for field in [
        "latency_ms",
        "check_latency_ms",
        "up_since",
        "uptime_seconds",
    ] {
        assert_eq!(t2[field], Value::Null, "{field} of an unreported target");
    }
    assert_eq!(t2["latency_samples"], 0);
    assert_eq!(h["status"], "degraded");

    // The live instance reports it healthy again; the heartbeat replaces its row.
    app.db
        .upsert_instance(&heartbeat("live-1", true))
        .await
        .expect("heartbeat");
    let h = fresh_health(&app).await;
    assert_eq!(h["instances"].as_array().expect("instances").len(), 2);
    let ups = h["upstreams"].as_array().expect("upstreams");
    let t1 = ups
        .iter()
        .find(|t| t["target"].as_str().is_some_and(|s| s.ends_with(":3001")))
        .expect("3001");
    assert_eq!(t1["status"], "up");
    assert_eq!(t1["error"], Value::Null);
    assert_eq!(t1["latency_ms"], 4.25);
    assert_eq!(t1["check_latency_ms"], 1.5);
    let up_since = t1["up_since"].as_i64().expect("up_since");
    assert!(tollgate_core::now_ms() - up_since >= 3_600_000);
    let uptime = t1["uptime_seconds"].as_u64().expect("uptime");
    assert!((3_600..3_700).contains(&uptime), "{uptime}");
    assert_eq!(
        app.db
            .prune_instances(tollgate_core::now_ms() - 30_000)
            .await
            .expect("prune"),
        1
    );
    let h = fresh_health(&app).await;
    assert_eq!(h["instances"].as_array().expect("instances").len(), 1);
}
both!(health_reports_every_part);

/// A row written by a proxy of an earlier version (no latency or up-time in
/// its report) still reads, with those fields empty.
async fn health_reads_reports_of_older_proxies(app: TestApp) {
    app.db
        .upsert_instance(&heartbeat("old-1", true))
        .await
        .expect("heartbeat");
    let old = format!(
        r#"[{{"upstream":"demo","target":"127.0.0.1:3001","healthy":true,"checked_at":{}}}]"#,
        tollgate_core::now_ms()
    );
    sqlx::query("UPDATE instances SET upstream_health = $1 WHERE id = $2")
        .bind(old)
        .bind("old-1")
        .execute(app.db.pool())
        .await
        .expect("rewrite the row as an older proxy wrote it");
    let h = fresh_health(&app).await;
    let t1 = h["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .find(|t| t["target"].as_str().is_some_and(|s| s.ends_with(":3001")))
        .cloned()
        .expect("3001");
    assert_eq!(t1["status"], "up");
    assert_eq!(t1["reported_by"], "old-1");
    for field in [
        "latency_ms",
        "check_latency_ms",
        "up_since",
        "uptime_seconds",
    ] {
        assert_eq!(t1[field], Value::Null, "{field}: {t1}");
    }
}
both!(health_reads_reports_of_older_proxies);

fn redis_config(url: &str) -> tollgate_core::config::Config {
    let limiter = format!("  backend: redis\n  redis_url: \"{url}\"\n  redis_timeout: 20ms");
    config::parse(&test_yaml(&limiter), "test.yaml").expect("valid")
}

#[tokio::test]
async fn health_pings_redis_when_configured() {
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let app = TestApp::sqlite_with(redis_config(&url)).await;
    let h = fresh_health(&app).await;
    assert_eq!(h["redis"]["status"], "up", "{h}");
    assert_eq!(h["redis"]["kind"], "redis");
    assert!(h["redis"]["latency_ms"].as_f64().is_some());
    drop(app);
    // Nothing listens on port 1: down, reported quickly, the endpoint still answers.
    let app = TestApp::sqlite_with(redis_config("redis://127.0.0.1:1")).await;
    let started = std::time::Instant::now();
    let h = fresh_health(&app).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(h["redis"]["status"], "down");
    assert!(h["redis"]["error"].is_string());
    assert_eq!(h["status"], "degraded");
}

#[tokio::test]
async fn health_pings_redis_cluster_when_configured() {
    let Some(url) = service_url("TOLLGATE_TEST_REDIS_CLUSTER_URL") else {
        return;
    };
    let app = TestApp::sqlite_with(redis_config(&url)).await;
    let h = fresh_health(&app).await;
    assert_eq!(h["redis"]["status"], "up", "{h}");
    assert_eq!(h["redis"]["kind"], "redis-cluster");
}

#[tokio::test]
async fn health_is_503_when_the_database_is_down() {
    let app = TestApp::sqlite().await;
    app.db.close().await;
    // The token cannot be checked without the database: the summary.
    let res = app.get("/api/health").await;
    let h = json(res, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(h, json!({"status": "down"}));
    let res = app
        .anon(Method::GET, "/api/health")
        .send()
        .await
        .expect("r");
    let h = json(res, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(h, json!({"status": "down"}));
    // Other endpoints answer 503 problem+json, not 500 (the token check needs the database).
    problem(
        app.get("/api/keys").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "database-unavailable",
    )
    .await;
    problem(
        app.login("admin", ADMIN_PASSWORD).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "database-unavailable",
    )
    .await;
}

/// `/api/health` with a token, once the cached probe (about 1 s) is stale,
/// so it shows what was written since.
async fn fresh_health(app: &TestApp) -> Value {
    tokio::time::sleep(
        tollgate_admin_api::health::PROBE_CACHE + std::time::Duration::from_millis(100),
    )
    .await;
    json(app.get("/api/health").await, StatusCode::OK).await
}

/// Round 18 re-check (black-box): rows with extreme times, which the
/// proxies' database role can write (started at `i64::MIN` and seen ten
/// years ahead; seen at `i64::MIN`), made `/api/health` panic on an overflow
/// and were never forgotten. Health answers, judging them by the one
/// liveness rule, and retention's rule forgets both.
async fn extreme_instance_rows_neither_break_health_nor_stay(app: TestApp) {
    let now = tollgate_core::now_ms();
    let ten_years = 10 * 365 * 86_400_000_i64;
    for (id, started, seen) in [
        ("from-the-future", i64::MIN, now + ten_years),
        ("from-the-past", 0, i64::MIN),
    ] {
        // Its report holds a target up since the dawn of `i64` too.
        let report = json!([{"upstream": "demo", "target": "127.0.0.1:3001", "healthy": true,
            "up_since": i64::MIN}]);
        sqlx::query(
            "INSERT INTO instances (id, address, version, started_at, last_seen, beat_every_ms, \
             upstream_health) VALUES ($1, 'x', '0', $2, $3, 1000, $4)",
        )
        .bind(id)
        .bind(started)
        .bind(seen)
        .bind(report.to_string())
        .execute(app.db.pool())
        .await
        .expect("an extreme row");
    }
    // A report that does not parse hides neither its row nor the others'.
    sqlx::query(
        "INSERT INTO instances (id, address, version, started_at, last_seen, beat_every_ms, \
         stats, upstream_health) VALUES ('bad-report', 'x', '0', 0, $1, 1000, 'not json', '{}')",
    )
    .bind(now)
    .execute(app.db.pool())
    .await
    .expect("a row with a bad report");
    let h = fresh_health(&app).await;
    let status = |id: &str| {
        h["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .find(|i| i["id"] == id)
            .map(|i| i["status"].clone())
    };
    assert_eq!(status("from-the-past"), Some(json!("down")), "{h}");
    assert_eq!(status("from-the-future"), Some(json!("up")), "{h}");
    assert_eq!(status("bad-report"), Some(json!("up")), "{h}");
    assert_eq!(app.db.forget_instances(now).await.expect("forget"), 2);
    let h = fresh_health(&app).await;
    let left: Vec<&Value> = h["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert_eq!(left, [&json!("bad-report")], "{h}");
}
both!(extreme_instance_rows_neither_break_health_nor_stay);
