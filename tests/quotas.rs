//! Calendar quotas through the real binary: a key whose own limit is a
//! monthly quota of 100 anchored on today, two `tollgate proxy` processes on
//! one redis-server of the test's own (token leases on): exactly 100
//! requests are admitted whichever proxy they reach, then every one is
//! refused with 429 `quota-exhausted` naming the quota, a `Retry-After` of
//! the time to the period's end (27 to 31 days: the period began today),
//! and the quota in the RateLimit headers.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::proxy::Proxy;
use crate::common::redis::OwnRedis;
use tollgate_core::db::NewApiKey;
use tollgate_proxy::limiter::scenarios::quota::monthly_from_today;

fn yaml(redis_url: &str, upstream: u16) -> String {
    format!(
        r#"limiter:
  backend: redis
  redis_url: "{redis_url}"
  redis_timeout: 2s
  lease_ttl: 200ms
upstreams:
  demo: {{ targets: ["127.0.0.1:{upstream}"] }}
routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monthly_quota_anchored_today_admits_exactly_100_across_two_proxies() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let (_, key) = db
        .create_key(&NewApiKey {
            name: "quota".into(),
            limits: Some(vec![monthly_from_today("monthly", 100, "UTC", None)]),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    let y = yaml(&redis.url(), common::demo_upstream().await);
    let mut proxies = Vec::new();
    for _ in 0..2 {
        let d = tempfile::tempdir().expect("tempdir");
        proxies.push(Proxy::start(d, db.url(), "", &y).await);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let send = |p: &Proxy| {
        client
            .get(p.url("/api/users"))
            .header("x-api-key", &key)
            .send()
    };
    // Until each proxy knows the key (401 before its first refresh; an
    // admitted request counts).
    let mut admitted = 0;
    for p in &proxies {
        let start = Instant::now();
        loop {
            let status = send(p).await.expect("send").status().as_u16();
            if status == 200 {
                admitted += 1;
                break;
            }
            assert_eq!(status, 401, "before the key is known");
            assert!(start.elapsed() < Duration::from_secs(30), "key not loaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut refused = 0;
    for i in 0..130 {
        let r = send(&proxies[i % 2]).await.expect("send");
        match r.status().as_u16() {
            200 => admitted += 1,
            429 => {
                refused += 1;
                let header = |name: &str| {
                    r.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                        .unwrap_or_default()
                };
                let retry: u64 = header("retry-after").parse().expect("Retry-After");
                assert!(
                    (27 * 86_400..=31 * 86_400).contains(&retry),
                    "Retry-After {retry}"
                );
                assert!(header("ratelimit").starts_with("\"monthly\";r=0;t="));
                assert!(header("ratelimit-policy").starts_with("\"monthly\";q=100;w="));
                let body: serde_json::Value = r.json().await.expect("problem");
                assert!(
                    body["type"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("/quota-exhausted")),
                    "{body}"
                );
                assert_eq!(body["quotas"], serde_json::json!(["monthly"]));
            }
            other => panic!("status {other}"),
        }
    }
    assert_eq!(admitted, 100, "exactly the quota, across both proxies");
    assert_eq!(refused, 132 - 100);
    std::mem::forget(dir);
}
