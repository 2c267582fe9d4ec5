//! Calendar quotas in Redis (single node and cluster): exact across two
//! limiters (two proxies) with token leases on, periods that reset by
//! themselves, keys that expire after their period. The shared scenario
//! table (`limiter::scenarios`, run by `redis_limiter.rs`) has the quota
//! rows that must match the local limiter.
//!
//! Without the env vars the tests print a notice and pass, unless `CI` or
//! `TOLLGATE_REQUIRE_SERVICES` is set: then they fail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate_core::limits::Limit;
use tollgate_core::quota::{Period, QuotaSpec};
use tollgate_proxy::limiter::redis::{RedisLimiter, RedisLimiterOptions};
use tollgate_proxy::limiter::scenarios::quota::monthly_from_today;
use tollgate_proxy::limiter::{Bucket, Scope, Subject};

mod common;

use common::redis::single_and_cluster;

fn base(test: i64) -> i64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let run = i64::try_from(micros % 1_000_000_000_000).expect("fits");
    let seq = i64::try_from(SEQ.fetch_add(1, Ordering::Relaxed)).expect("fits");
    run * 1_000_000 + test * 10_000 + seq * 100
}

fn limiter(url: &str, lease_ttl: Duration) -> RedisLimiter {
    RedisLimiter::with_options(
        url,
        RedisLimiterOptions {
            // Decisions, not latency: a busy box must not time out.
            timeout: Duration::from_secs(5),
            lease_ttl,
            ..RedisLimiterOptions::default()
        },
    )
    .expect("limiter")
}

/// Two proxies with leases on, a leasable bucket and a quota of 7 on every
/// request: exactly 7 admitted whichever proxy asks, every refusal names
/// the quota with a Retry-After to the period's end, and no request with
/// the quota is served from a lease (the script counts it every time).
async fn exact_across_two_proxies_with_leases(url: &str, test: i64) {
    let proxies = [
        Arc::new(limiter(url, Duration::from_secs(5))),
        Arc::new(limiter(url, Duration::from_secs(5))),
    ];
    let bucket = Bucket::new(
        Scope::Key,
        Limit::new("hour", 100_000, Duration::from_secs(3600), None, None),
    );
    let quota = Bucket::new(Scope::Key, monthly_from_today("monthly", 7, "UTC", None));
    let subject = Subject::Key(base(test));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (p, b, q) = (proxies[i % 2].clone(), bucket.clone(), quota.clone());
        tasks.spawn(async move { p.check(&subject, &[&b, &q]).await.expect("check") });
    }
    let mut admitted = 0;
    while let Some(d) = tasks.join_next().await {
        let d = d.expect("task");
        if d.allowed {
            admitted += 1;
            continue;
        }
        assert_eq!(d.violated_names(), vec!["monthly"]);
        // Anchored today: the period ends 27 to 31 days from now.
        let retry = d.retry_after_secs();
        assert!(
            (27 * 86_400..=31 * 86_400).contains(&retry),
            "retry-after {retry}"
        );
        assert_eq!(d.limits[1].remaining, 0);
    }
    assert_eq!(admitted, 7, "a quota of 7 across two proxies");
    for p in &proxies {
        assert_eq!(p.leases().hits(), 0, "no quota request from a lease");
    }
    // Leases are on: the bucket alone is soon served from one.
    for _ in 0..20 {
        proxies[0]
            .check(&subject, &[&bucket])
            .await
            .expect("bucket");
    }
    assert!(proxies[0].leases().hits() > 0, "leases are in use");
    // And a request with the quota still asks Redis (refused, exactly).
    let d = proxies[0]
        .check(&subject, &[&bucket, &quota])
        .await
        .expect("check");
    assert!(!d.allowed);
}

single_and_cluster!(
    quotas_exact_single: 1,
    quotas_exact_cluster: 2,
    exact_across_two_proxies_with_leases
);

/// A day's quota at chosen instants: spent at noon, refused, full again the
/// next day (a new key: the period is in its name).
async fn periods_reset_by_themselves(url: &str, test: i64) {
    let l = limiter(url, Duration::ZERO);
    let daily = Bucket::new(
        Scope::Key,
        Limit::new_quota(
            "daily",
            2,
            QuotaSpec {
                period: Period::Day,
                anchor: None,
                time_zone: Some("Europe/Paris".into()),
            },
            None,
        ),
    );
    let subject = Subject::Key(base(test));
    // 2026-03-29 (a 23 h day in Paris) at 10:00 UTC, in µs.
    let day = 1_774_778_400_000_000u64;
    for left in [1, 0] {
        let d = l
            .check_at_us(&subject, &[&daily], day)
            .await
            .expect("check");
        assert!(d.allowed);
        assert_eq!(d.limits[0].remaining, left);
        assert_eq!(d.limits[0].window_secs, 23 * 3600);
    }
    let d = l
        .check_at_us(&subject, &[&daily], day)
        .await
        .expect("check");
    assert!(!d.allowed);
    // Paris midnight is 22:00 UTC that day: 12 hours away.
    assert_eq!(d.limits[0].retry_after_secs, 12 * 3600);
    let next = day + 24 * 3_600_000_000;
    let d = l
        .check_at_us(&subject, &[&daily], next)
        .await
        .expect("check");
    assert!(d.allowed);
    assert_eq!(d.limits[0].remaining, 1);
}

single_and_cluster!(
    periods_single: 3,
    periods_cluster: 4,
    periods_reset_by_themselves
);

/// A quota's key names its period and expires an hour after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_keys_expire_after_their_period() {
    let Some(url) = common::redis::service_url("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let l = limiter(&url, Duration::ZERO);
    let quota = Bucket::new(Scope::Key, monthly_from_today("monthly", 5, "UTC", None));
    let subject = Subject::Key(base(5));
    assert!(l.check(&subject, &[&quota]).await.expect("check").allowed);
    // `proxy.usage_path` reads the quota without spending.
    for _ in 0..3 {
        let peeked = l
            .peek(&subject, &[&quota], l.deadline())
            .await
            .expect("peek");
        assert_eq!(peeked[0].remaining, 4);
        assert!(peeked[0].reset_secs > 27 * 86_400, "{peeked:?}");
    }
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let pattern = format!("tg:{{{subject}}}:p:monthly:q-*");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let used: u64 = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_eq!(used, 1);
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .expect("pttl");
    let day_ms = 86_400_000;
    assert!(
        (27 * day_ms..=31 * day_ms + 3_600_000).contains(&ttl_ms),
        "ttl {ttl_ms} ms"
    );
}
