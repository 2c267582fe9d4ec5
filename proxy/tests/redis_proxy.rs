//! The Redis limiter through the real proxy: two proxies sharing one Redis
//! (and a Redis Cluster) admit no more than the limits allow, and a Redis that
//! dies or stalls never hangs a request.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::{raw_command, single_and_cluster, OwnRedis};
use common::{metric_value, named, Store, TestProxy};
use tollgate_core::db::usage::{UsageFilter, ViolationFilter};

fn yaml(redis_url: &str, policy: &str, rate: u32, per: &str, burst: u32) -> String {
    format!(
        r#"
limiter:
  backend: redis
  redis_url: "{redis_url}"
  redis_timeout: 50ms
  on_redis_error: {policy}
plans:
  p: {{ limits: [ {{ name: plan, rate: {rate}, per: {per}, burst: {burst} }} ] }}
upstreams:
  demo: {{ targets: ["{{upstream}}"] }}
routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
    default_plan: p
"#
    )
}

async fn status(client: &reqwest::Client, url: &str, key: &str) -> u16 {
    client
        .get(url)
        .header("x-api-key", key)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Offer load at several times the limit through both proxies for `secs`;
/// returns (admitted, bound = burst + rate × elapsed).
async fn hammer(
    a: &TestProxy,
    b: &TestProxy,
    key: &str,
    rate: f64,
    burst: f64,
    secs: f64,
) -> (u64, f64) {
    let admitted = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = if i % 2 == 0 {
            a.url("/api/users")
        } else {
            b.url("/api/users")
        };
        let (client, key, admitted) = (client.clone(), key.to_string(), admitted.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed().as_secs_f64() < secs {
                if status(&client, &url, &key).await == 200 {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("load task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    (admitted.load(Ordering::Relaxed), burst + rate * elapsed)
}

async fn two_proxies_share_one_budget(url: &str, label: &str) {
    // `deny`: a Redis hiccup under load must not admit through a local fallback.
    // This measures accuracy, not outages: a generous Redis timeout keeps a
    // busy machine's slow round trips from turning into refusals (which
    // would make the lower bound below fail for the wrong reason).
    let y = yaml(url, "deny", 40, "1s", 20).replace("redis_timeout: 50ms", "redis_timeout: 5s");
    assert!(y.contains("redis_timeout: 5s"));
    let a = TestProxy::start(&y, Store::Sqlite).await.expect("sqlite");
    let b = a.start_sharing(&y).await;
    let (_, key) = a.create_key(named(&format!("shared-{label}"))).await;
    for p in [&a, &b] {
        p.wait_status(&key, "/api/users", |s| s != 403, Duration::from_secs(3))
            .await;
    }
    // Let the bucket fill up again after the two probes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (admitted, bound) = hammer(&a, &b, &key, 40.0, 20.0, 3.0).await;
    println!("{label}: two proxies admitted {admitted}, bound burst + rate × t = {bound:.1}");
    assert!(admitted as f64 <= bound + 1.0, "{admitted} > {bound}");
    assert!(
        admitted as f64 >= 0.8 * bound,
        "{admitted} much less than {bound}"
    );
    let m = a.metrics_text().await;
    assert!(
        metric_value(
            &m,
            "tollgate_limiter_decision_duration_seconds_count",
            &["backend=\"redis\""]
        ) > 0.0,
        "decisions came from Redis"
    );
}

single_and_cluster!(
    two_proxies_on_one_redis_admit_no_more_than_the_limit: "single node",
    two_proxies_on_a_redis_cluster_admit_no_more_than_the_limit: "cluster",
    two_proxies_share_one_budget
);

/// Requests while Redis is down: none waits much longer than redis_timeout.
async fn max_latency(p: &TestProxy, key: &str, n: usize) -> (Duration, Vec<u16>) {
    let client = reqwest::Client::new();
    let mut worst = Duration::ZERO;
    let mut statuses = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        statuses.push(status(&client, &p.url("/api/users"), key).await);
        worst = worst.max(t.elapsed());
    }
    (worst, statuses)
}

async fn start_on_own_redis(policy: &str) -> Option<(OwnRedis, TestProxy, String)> {
    let redis = OwnRedis::start()?;
    let p = TestProxy::start(&yaml(&redis.url(), policy, 1, "1h", 3), Store::Sqlite)
        .await
        .expect("sqlite");
    let key = p.serving_key("r", Duration::from_secs(3)).await;
    Some((redis, p, key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_policy_local_falls_back_then_recovers() {
    let Some((mut redis, p, key)) = start_on_own_redis("local").await else {
        return;
    };
    // On a busy machine a set-up request may already have fallen back (a
    // Redis round trip slower than redis_timeout) and taken a local token.
    let fallen_back = metric_value(
        &p.metrics_text().await,
        "tollgate_limiter_fallback_decisions_total",
        &["policy=\"local\""],
    ) as usize;
    redis.kill();
    let (worst, statuses) = max_latency(&p, &key, 12).await;
    println!(
        "redis down, policy local: worst {worst:?}, {statuses:?}, {fallen_back} fell back before"
    );
    assert!(
        worst < Duration::from_millis(500),
        "a request waited {worst:?}"
    );
    // The local fallback enforces the same limits (burst 3) for this
    // instance, from what is left after the set-up's one admission: taken
    // by Redis (its reply lowered the share to the 2 it had left) or, on a
    // busy machine, by the fallback itself (from the share).
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
    let m = p.metrics_text().await;
    assert!(
        metric_value(
            &m,
            "tollgate_limiter_fallback_decisions_total",
            &["policy=\"local\""]
        ) >= 12.0
    );
    assert!(
        metric_value(
            &m,
            "tollgate_redis_errors_total",
            &["kind=\"circuit_open\""]
        ) >= 1.0,
        "breaker opened"
    );
    // The gauge is process-wide, and the other tests of this binary running
    // at the same time set it too: poll (each request of ours sets it from
    // this proxy's breaker, open for a second at a time) instead of reading once.
    let start = Instant::now();
    loop {
        status(&reqwest::Client::new(), &p.url("/api/users"), &key).await;
        let m = p.metrics_text().await;
        if metric_value(&m, "tollgate_redis_breaker_state", &[]) == 1.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "breaker state never 1 (open) while Redis is down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Back: decisions come from Redis again within 2 s (its bucket has 2 tokens left).
    redis.restart();
    let before = metric_value(
        &m,
        "tollgate_limiter_decision_duration_seconds_count",
        &["backend=\"redis\""],
    );
    let start = Instant::now();
    loop {
        status(&reqwest::Client::new(), &p.url("/api/users"), &key).await;
        let m = p.metrics_text().await;
        let now = metric_value(
            &m,
            "tollgate_limiter_decision_duration_seconds_count",
            &["backend=\"redis\""],
        );
        if now > before {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "Redis not used again after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("redis back in use after {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_policy_allow_admits_and_deny_refuses_with_503() {
    let Some((mut redis, p, key)) = start_on_own_redis("allow").await else {
        return;
    };
    redis.kill();
    let (worst, statuses) = max_latency(&p, &key, 8).await;
    assert!(
        worst < Duration::from_millis(500),
        "a request waited {worst:?}"
    );
    assert!(statuses.iter().all(|&s| s == 200), "allow: {statuses:?}");

    let Some((mut redis, p, key)) = start_on_own_redis("deny").await else {
        return;
    };
    redis.kill();
    let (worst, statuses) = max_latency(&p, &key, 5).await;
    assert!(
        worst < Duration::from_millis(500),
        "a request waited {worst:?}"
    );
    assert!(statuses.iter().all(|&s| s == 503), "deny: {statuses:?}");
    let r = p.get_with_key("/api/users", &key).await;
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("/limiter-unavailable")));
}

/// Black-box round 17: the proxy's own 503 `limiter-unavailable` (Redis
/// down, `deny`) was counted in the usage rows, and so the analytics and the
/// billing export, as `upstream_errors` (metrics: outcome="unavailable").
/// Refused by the limiter layer and never forwarded, it counts as `limited`,
/// and is no violation (no limit was exceeded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_refusal_while_redis_is_down_counts_as_limited_in_usage() {
    let Some(mut redis) = OwnRedis::start() else {
        return;
    };
    let y = format!(
        "{}usage:\n  flush_interval: 100ms\n",
        yaml(&redis.url(), "deny", 1000, "1h", 1000)
    );
    let p = TestProxy::start(&y, Store::Sqlite).await.expect("sqlite");
    let key = p.serving_key("r", Duration::from_secs(3)).await;
    let totals = || async {
        let filter = UsageFilter {
            from: 0,
            to: i64::MAX,
            ..UsageFilter::default()
        };
        p.db.usage_totals(&filter).await.expect("totals").counts
    };
    // What the warm-up recorded (admitted), all written: the same over a
    // few flushes.
    let start = Instant::now();
    let before = loop {
        let a = totals().await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        if a.total() > 0 && totals().await == a {
            break a;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{a:?}");
    };
    assert_eq!((before.limited, before.upstream_errors), (0, 0));
    redis.kill();
    let client = reqwest::Client::new();
    for _ in 0..5 {
        assert_eq!(status(&client, &p.url("/api/users"), &key).await, 503);
    }
    let start = Instant::now();
    loop {
        let c = totals().await;
        if c.total() >= before.total() + 5 {
            assert_eq!(
                (c.allowed, c.limited, c.upstream_errors),
                (before.allowed, 5, 0),
                "{c:?}"
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filter = ViolationFilter {
        from: 0,
        to: i64::MAX,
        limit: 100,
        ..ViolationFilter::default()
    };
    let (listed, n) = p.db.list_violations(&filter).await.expect("violations");
    assert_eq!(n, 0, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_is_bounded_by_the_timeout() {
    let Some((redis, p, key)) = start_on_own_redis("allow").await else {
        return;
    };
    // Accepts connections but answers nothing for 1.5 s.
    let r = raw_command(redis.port, "CLIENT PAUSE 1500 ALL").expect("pause");
    assert!(r.starts_with("+OK"), "{r}");
    let (worst, statuses) = max_latency(&p, &key, 6).await;
    println!("redis paused: worst {worst:?}, {statuses:?}");
    assert!(
        worst < Duration::from_millis(500),
        "a request waited {worst:?}"
    );
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

/// Redis killed and restarted while four clients keep sending: no request
/// fails or hangs (each waits at most about `redis_timeout` for Redis, then
/// the breaker answers), and every one is decided (limits are generous, so
/// every answer is 200 under `on_redis_error: local`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_under_concurrent_load_hangs_nothing() {
    let Some(mut redis) = OwnRedis::start() else {
        return;
    };
    let p = TestProxy::start(
        &yaml(&redis.url(), "local", 1_000_000, "1s", 1_000_000),
        Store::Sqlite,
    )
    .await
    .expect("sqlite");
    let key = p.serving_key("load", Duration::from_secs(3)).await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let start = Instant::now();
    let run_for = Duration::from_millis(3000);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, url, key) = (client.clone(), p.url("/api/users"), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while start.elapsed() < run_for {
                let t = Instant::now();
                let s = status(&client, &url, &key).await;
                seen.push((start.elapsed(), s, t.elapsed()));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.kill();
    let down_at = start.elapsed();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.restart();
    let up_at = start.elapsed();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    let during = all
        .iter()
        .filter(|(at, _, _)| *at > down_at && *at < up_at)
        .count();
    let worst = all
        .iter()
        .map(|(_, _, took)| *took)
        .max()
        .unwrap_or_default();
    let not_ok: Vec<_> = all.iter().filter(|(_, s, _)| *s != 200).collect();
    println!(
        "{} requests, {during} while Redis was down, worst {worst:?}",
        all.len()
    );
    assert!(not_ok.is_empty(), "failed or refused: {not_ok:?}");
    assert!(during >= 20, "only {during} requests during the outage");
    assert!(
        worst < Duration::from_millis(1000),
        "a request waited {worst:?}"
    );
    let m = p.metrics_text().await;
    assert!(
        metric_value(
            &m,
            "tollgate_limiter_fallback_decisions_total",
            &["policy=\"local\""]
        ) >= 1.0,
        "the outage was noticed"
    );
}

/// A refusal Redis gave is served from the over-limit cache until its
/// Retry-After, but only for the limit values it was made with: raising
/// the limit (a config reload) applies at the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_a_limit_is_not_hidden_by_the_over_limit_cache() {
    // Its own Redis: key ids of fresh databases repeat across tests.
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    // 1 per 10 s, burst 1: the second request is refused for ~10 s.
    let p = TestProxy::start(&yaml(&redis.url(), "deny", 1, "10s", 1), Store::Sqlite)
        .await
        .expect("sqlite");
    let key = p.serving_key("raise", Duration::from_secs(3)).await;
    let client = reqwest::Client::new();
    assert_eq!(status(&client, &p.url("/api/users"), &key).await, 429);
    assert_eq!(status(&client, &p.url("/api/users"), &key).await, 429);
    // Burst raised to 20 (same limit name, same bucket): Redis admits now.
    let text = std::fs::read_to_string(&p.config_path).expect("config");
    let raised = text.replace("burst: 1 }", "burst: 20 }");
    assert_ne!(raised, text);
    std::fs::write(&p.config_path, raised).expect("write");
    let took = p
        .wait_status(&key, "/api/users", |s| s == 200, Duration::from_secs(5))
        .await;
    println!("admitted {took:?} after the raise");
}
