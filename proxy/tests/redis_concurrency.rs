//! Per-key concurrency (`plans.NAME.concurrency`) through the real proxy:
//! exact per key, and with the Redis backend global across two proxies, a
//! proxy's holds released when its requests end, and one proxy never over
//! the cap while Redis fails. (A killed proxy's holds expiring with the
//! lease: tests/redis_outage.rs, with the real binary.)

mod common;

use std::time::{Duration, Instant};

use common::redis::{raw_command, OwnRedis};
use common::streams::{wait_until, HeldUpstream};
use common::{named, Store, TestProxy};
use tollgate_proxy::limiter::redis::holds::holds_key;

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

/// A cap of 1, `on_redis_error: local`, `/held` answered when the test says.
fn capped_yaml(redis: &OwnRedis, held: std::net::SocketAddr) -> String {
    format!(
        r#"
limiter:
  backend: redis
  redis_url: "{}"
  redis_timeout: 200ms
  on_redis_error: local
  concurrency_lease: 1s
plans:
  one: {{ limits: [ {{ name: s, rate: 100000, per: 1s }} ], concurrency: 1 }}
upstreams:
  demo: {{ targets: ["{{upstream}}"] }}
  held: {{ targets: ["{held}"] }}
routes:
  - {{ name: held, match: {{ path_prefix: /held }}, upstream: held, default_plan: one }}
  - {{ name: users, match: {{ path_prefix: /api/users }}, upstream: demo, strip_prefix: /api, default_plan: one }}
"#,
        redis.url()
    )
}

/// Whether Redis holds a concurrency hold of key `id` now.
fn held_in_redis(redis: &OwnRedis, id: i64) -> bool {
    let reply = raw_command(redis.port, &format!("EXISTS {}", holds_key(id))).expect("EXISTS");
    reply.starts_with(":1")
}

/// A `/held` request of `key`, in flight until the upstream releases it.
fn send_held(p: &TestProxy, key: &str) -> tokio::task::JoinHandle<u16> {
    let (url, key) = (p.url("/held/x"), key.to_string());
    tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .header("x-api-key", key)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
}

async fn status(p: &TestProxy, key: &str) -> u16 {
    p.get_with_key("/api/users", key).await.status().as_u16()
}

/// Black-box round 13: with a cap of 1 and `on_redis_error: local`, two
/// requests of a key ran at once through one proxy while Redis timed out
/// (the fallback counted only its own slots, not the holds this process
/// has in Redis). One proxy never runs more than the cap, Redis up or
/// down: a hold taken in Redis before the outage is counted by the
/// fallback, one the fallback took is counted once Redis answers again
/// (while Redis holds nothing of that key), and a slot released during the
/// outage comes back at once (its Redis hold expires with the lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_proxy_never_runs_more_than_the_cap_redis_up_or_down() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let upstream = HeldUpstream::start().await;
    let p = TestProxy::start(&capped_yaml(&redis, upstream.addr), Store::Sqlite)
        .await
        .expect("sqlite");
    let (key1, k1) = p.key(named("held-in-redis")).await;
    let (key2, k2) = p.key(named("held-by-the-fallback")).await;
    let (key3, k3) = p.key(named("probe")).await;
    let (id1, id2, id3) = (key1.id, key2.id, key3.id);
    let secs = |s| Duration::from_secs(s);

    // Redis up: A is admitted through Redis and held by the upstream.
    let a = send_held(&p, &k1);
    assert!(
        wait_until(secs(5), || upstream.seen() == 1).await,
        "A in flight"
    );
    assert!(held_in_redis(&redis, id1), "A's hold is in Redis");
    redis.signal("STOP");
    // Redis times out: the fallback counts A, held in Redis.
    assert_eq!(status(&p, &k1).await, 429, "a second beside A");
    // The fallback admits E and counts it.
    let e = send_held(&p, &k2);
    assert!(
        wait_until(secs(5), || upstream.seen() == 2).await,
        "E in flight"
    );
    assert_eq!(status(&p, &k2).await, 429, "a second beside E");
    // A ends during the outage: its slot comes back at once.
    upstream.release(0);
    assert_eq!(a.await.expect("A"), 200);
    p.wait_status(&k1, "/api/users", |s| s == 200, secs(5))
        .await;
    redis.signal("CONT");

    // Redis decides again once a fresh key's request leaves its hold there.
    let started = Instant::now();
    let probe = loop {
        assert!(started.elapsed() < secs(10), "Redis never decided again");
        let n = upstream.seen();
        let g = send_held(&p, &k3);
        assert!(
            wait_until(secs(5), || upstream.seen() > n || g.is_finished()).await,
            "the probe is neither held nor answered"
        );
        if upstream.seen() > n && held_in_redis(&redis, id3) {
            break (n, g);
        }
        upstream.release(n);
        let _ = g.await;
    };
    // Redis holds nothing of E's key (whatever a timed-out call left there
    // has expired): only this process knows E is in flight.
    assert!(
        wait_until(secs(5), || !held_in_redis(&redis, id2)).await,
        "a hold of E's key stays in Redis"
    );
    assert_eq!(status(&p, &k2).await, 429, "Redis admitted beside E");
    upstream.release(1);
    assert_eq!(e.await.expect("E"), 200);
    // Nothing leaked: both keys are admitted again, through Redis.
    p.wait_status(&k2, "/api/users", |s| s == 200, secs(5))
        .await;
    p.wait_status(&k1, "/api/users", |s| s == 200, secs(5))
        .await;
    upstream.release(probe.0);
    assert_eq!(probe.1.await.expect("probe"), 200);
}
