//! Per-key concurrency (`plans.NAME.concurrency`) through the real proxy:
//! exact per key, and with the Redis backend global across two proxies, a
//! proxy's holds released when its requests end. (A killed proxy's holds
//! expiring with the lease: tests/redis_outage.rs, with the real binary.)

mod common;

use std::time::{Duration, Instant};

use common::redis::OwnRedis;
use common::{Store, TestProxy};

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
    p.serving_key(name, Duration::from_secs(5)).await
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
    all_admitted_again(&[&p], &a).await;
}

/// The slots are freed just after the answers went out: within 2 s (far
/// below the 10 s lease, so released, not expired) 3 requests at once are
/// admitted again.
async fn all_admitted_again(proxies: &[&TestProxy], key: &str) {
    let start = Instant::now();
    loop {
        let s = burst(proxies, key, 3, 10).await;
        if count(&s, 200) == 3 {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "{s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    // Released when they end.
    all_admitted_again(&[&a, &b], &k).await;
}

/// A request on a capped plan makes two Redis calls (its hold, then its
/// buckets), and they share ONE deadline: with Redis frozen (SIGSTOP), no
/// request waits for Redis longer than `redis_timeout` in all. Two
/// deadlines would take at least 2 × 400 ms = 800 ms (timers never fire
/// early); one takes about 400 ms, so 650 ms leaves a busy box 250 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_buckets_share_one_redis_deadline() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let limiter = format!(
        "limiter:\n  backend: redis\n  redis_url: \"{}\"\n  redis_timeout: 400ms\n  on_redis_error: local\n",
        redis.url()
    );
    let p = TestProxy::start(&yaml(&limiter), Store::Sqlite)
        .await
        .expect("sqlite");
    let key = key(&p, "deadline").await;
    redis.signal("STOP");
    let client = reqwest::Client::new();
    let mut took = Vec::new();
    // The breaker opens after 3 failed requests: the first ones wait.
    for _ in 0..5 {
        let start = Instant::now();
        let status = client
            .get(p.url("/api/users"))
            .header("x-api-key", &key)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        took.push((status, start.elapsed()));
    }
    redis.signal("CONT");
    println!("redis frozen: {took:?}");
    assert!(took.iter().all(|(s, _)| *s == 200), "{took:?}");
    let worst = took.iter().map(|(_, d)| *d).max().unwrap_or_default();
    assert!(
        worst >= Duration::from_millis(400),
        "the first request waited for Redis: {took:?}"
    );
    assert!(
        worst < Duration::from_millis(650),
        "a request waited {worst:?} (two Redis deadlines?): {took:?}"
    );
}
