//! Per-key concurrency (`plans.NAME.concurrency`) through the real proxy:
//! exact per key, and with the Redis backend global across two proxies, a
//! proxy's holds released when its requests end. (A killed proxy's holds
//! expiring with the lease: tests/redis_outage.rs, with the real binary.)

mod common;

use std::time::Duration;

use common::redis::OwnRedis;
use common::{Store, TestProxy};
use tollgate_core::db::NewApiKey;

fn yaml(limiter: &str) -> String {
    format!(
        r#"
{limiter}
plans:
  p: {{ limits: [ {{ name: s, rate: 100000, per: 1s }} ], concurrency: 3 }}
upstreams:
  demo: {{ targets: ["{{upstream}}"] }}
routes:
  - name: slow
    match: {{ path_prefix: /slow }}
    upstream: demo
    default_plan: p
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
    default_plan: p
"#
    )
}

fn redis_limiter(url: &str, lease: &str) -> String {
    format!(
        "limiter:\n  backend: redis\n  redis_url: \"{url}\"\n  redis_timeout: 200ms\n  on_redis_error: deny\n  concurrency_lease: {lease}\n"
    )
}

/// Send `n` slow (`ms`) requests at once, spread over the proxies; the statuses.
async fn burst(proxies: &[&TestProxy], key: &str, n: usize, ms: u64) -> Vec<u16> {
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = proxies[i % proxies.len()].url(&format!("/slow/{ms}"));
        let (client, key) = (client.clone(), key.to_string());
        tasks.push(tokio::spawn(async move {
            client
                .get(url)
                .header("x-api-key", key)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out.sort_unstable();
    out
}

fn count(statuses: &[u16], s: u16) -> usize {
    statuses.iter().filter(|&&x| x == s).count()
}

async fn key(p: &TestProxy, name: &str) -> String {
    let (_, key) = p
        .create_key(NewApiKey {
            name: name.into(),
            ..NewApiKey::default()
        })
        .await;
    p.wait_status(&key, "/api/users", |s| s == 200, Duration::from_secs(5))
        .await;
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_concurrency_is_exact_per_key() {
    let p = TestProxy::start(&yaml(""), Store::Sqlite)
        .await
        .expect("sqlite");
    let a = key(&p, "a").await;
    let b = key(&p, "b").await;
    // 8 slow requests of key a at once: exactly 3 run, 5 are refused; key b
    // is not affected by a's full slots.
    let only = [&p];
    let (sa, sb) = tokio::join!(burst(&only, &a, 8, 1500), async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        burst(&only, &b, 3, 10).await
    });
    assert_eq!((count(&sa, 200), count(&sa, 429)), (3, 5), "{sa:?}");
    assert_eq!(count(&sb, 200), 3, "{sb:?}");
    // Slots come back when requests end.
    assert_eq!(count(&burst(&[&p], &a, 3, 10).await, 200), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrency_is_global_across_two_proxies() {
    // Its own Redis: key ids of fresh databases repeat across tests.
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let y = yaml(&redis_limiter(&redis.url(), "10s"));
    let a = TestProxy::start(&y, Store::Sqlite).await.expect("sqlite");
    let b = a.start_sharing(&y).await;
    let k = key(&a, "global").await;
    b.wait_status(&k, "/api/users", |s| s == 200, Duration::from_secs(5))
        .await;
    // 8 at once through two proxies: 3 in total, not 3 per proxy.
    let s = burst(&[&a, &b], &k, 8, 1500).await;
    assert_eq!((count(&s, 200), count(&s, 429)), (3, 5), "{s:?}");
    // Released when they end: 3 again, right away.
    let s = burst(&[&a, &b], &k, 3, 10).await;
    assert_eq!(count(&s, 200), 3, "{s:?}");
}
