//! Redis failing under load, against the real binary: two `tollgate proxy`
//! processes (threads: 2) on one redis-server of the test's own, eight
//! concurrent clients, and Redis stopped (SIGTERM), killed (SIGKILL), frozen
//! (SIGSTOP) or paused (CLIENT PAUSE) mid-load. No request may wait much
//! longer than `redis_timeout`, and every one is answered. The plan has a
//! `concurrency` cap, so every request makes both Redis calls (its hold and
//! its buckets), which share one deadline.
//!
//! The bound asserted: the slowest request of the healthy first second (the
//! machine's own delay under the same load) plus 300 ms, never more than
//! 900 ms, with `redis_timeout: 20ms`. What a request may spend waiting for
//! Redis is 20 ms; the rest is the proxy, the demo upstream and the test's own
//! client on a 2-core machine that other processes may keep busy (scheduling
//! delays of hundreds of ms happen there). A stall like a reconnect or a lock
//! held across a Redis call (the ~1 s this test was written for) is above it
//! however busy the machine is.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::proxy::Proxy;
use crate::common::redis::{raw_command, OwnRedis};
use tollgate_core::db::{Db, NewApiKey};

/// What a Redis outage may add to the slowest request the same load saw
/// while Redis was healthy (the first second): well under the ~1 s stall
/// this guards against, however busy the machine is.
const BOUND: Duration = Duration::from_millis(300);
/// The bound never grows past this, so a ~1 s stall always fails.
const CAP: Duration = Duration::from_millis(900);

fn yaml(redis_url: &str, upstream: u16, concurrency: u32, redis_timeout: &str) -> String {
    format!(
        r#"limiter:
  backend: redis
  redis_url: "{redis_url}"
  redis_timeout: {redis_timeout}
  on_redis_error: local
  concurrency_lease: 1s
plans:
  p: {{ limits: [ {{ name: s, rate: 1000000, per: 1s }} ], concurrency: {concurrency} }}
upstreams:
  demo: {{ targets: ["127.0.0.1:{upstream}"] }}
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

struct Setup {
    redis: OwnRedis,
    proxies: Vec<Proxy>,
    key: String,
    _db: Db,
}

async fn setup() -> Option<Setup> {
    setup_with(1000, "20ms").await
}

async fn setup_with(concurrency: u32, redis_timeout: &str) -> Option<Setup> {
    setup_on(|redis_url, upstream| yaml(redis_url, upstream, concurrency, redis_timeout)).await
}

/// Two proxies on the config `yaml(redis_url, upstream port)`, which has
/// the `/api/users` route.
async fn setup_on(yaml: impl Fn(&str, u16) -> String) -> Option<Setup> {
    setup_each(|redis_url, upstream, _| yaml(redis_url, upstream)).await
}

/// Two proxies, proxy `i` on `yaml(redis_url, upstream port, i)`.
async fn setup_each(yaml: impl Fn(&str, u16, usize) -> String) -> Option<Setup> {
    let redis = OwnRedis::start()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let (_, key) = db
        .create_key(&NewApiKey {
            name: "load".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    let upstream = common::demo_upstream().await;
    let mut proxies = Vec::new();
    for i in 0..2 {
        let dir = tempfile::tempdir().expect("tempdir");
        let y = yaml(&redis.url(), upstream, i);
        proxies.push(Proxy::start(dir, db.url(), "", &y).await);
    }
    let client = reqwest::Client::new();
    for p in &proxies {
        let start = Instant::now();
        loop {
            let s = client
                .get(p.url("/api/users"))
                .header("x-api-key", &key)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if s == 200 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "status {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // `dir` holds the database: keep it as long as the proxies run.
    std::mem::forget(dir);
    Some(Setup {
        redis,
        proxies,
        key,
        _db: db,
    })
}

/// Eight clients (four per proxy) for 3 s; `fault` at 1 s, `recover` at 2 s.
/// Returns every (status, duration, sent at) but each client's first.
async fn under_load(
    s: &mut Setup,
    fault: impl FnOnce(&mut OwnRedis),
    recover: impl FnOnce(&mut OwnRedis),
) -> Vec<(u16, Duration, Duration)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let start = Instant::now();
    let run_for = Duration::from_secs(3);
    let key: Arc<str> = s.key.as_str().into();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = s.proxies[i % 2].url("/api/users");
        let (client, key) = (client.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while start.elapsed() < run_for {
                let t = Instant::now();
                let at = start.elapsed();
                let status = client
                    .get(&url)
                    .header("x-api-key", &*key)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                seen.push((status, t.elapsed(), at));
            }
            // The first request opens the client's connection: not counted.
            seen.remove(0);
            seen
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Blocking (waits for the process): off the clients' worker threads.
    tokio::task::block_in_place(|| fault(&mut s.redis));
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| recover(&mut s.redis));
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

/// Every request was answered 200 within the healthy worst + [`BOUND`] (at most [`CAP`]). `all`: (status,
/// duration, sent at).
fn check(what: &str, all: &[(u16, Duration, Duration)]) {
    let worst = all.iter().map(|(_, d, _)| *d).max().unwrap_or_default();
    // The machine's own delay: the slowest request that ended before the
    // fault (at 1 s), with Redis healthy and the same eight clients.
    let healthy = all
        .iter()
        .filter(|(_, d, at)| *at + *d < Duration::from_millis(950))
        .map(|(_, d, _)| *d)
        .max()
        .unwrap_or_default();
    let bound = (healthy + BOUND).min(CAP);
    let slow = all.iter().filter(|(_, d, _)| *d > bound).count();
    let failed: Vec<_> = all.iter().filter(|(s, _, _)| *s != 200).collect();
    let mut slowest: Vec<_> = all.iter().map(|(_, d, at)| (*d, *at)).collect();
    slowest.sort();
    slowest.reverse();
    println!(
        "{what}: {} requests, healthy worst {healthy:?}, slowest (took, sent at): {:?}",
        all.len(),
        &slowest[..slowest.len().min(5)]
    );
    assert!(
        failed.is_empty(),
        "{what}: not 200: {:?}",
        &failed[..failed.len().min(10)]
    );
    assert!(all.len() >= 100, "{what}: only {} requests", all.len());
    assert_eq!(
        slow, 0,
        "{what}: {slow} requests over {bound:?} (healthy worst {healthy:?} + {BOUND:?}), worst {worst:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_with_sigterm_under_load_delays_no_request() {
    let Some(mut s) = setup().await else { return };
    let all = under_load(&mut s, OwnRedis::terminate, OwnRedis::restart).await;
    check("SIGTERM", &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_delays_no_request() {
    let Some(mut s) = setup().await else { return };
    let all = under_load(&mut s, OwnRedis::kill, OwnRedis::restart).await;
    check("SIGKILL", &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_with_sigstop_under_load_delays_no_request() {
    let Some(mut s) = setup().await else { return };
    let all = under_load(&mut s, |r| r.signal("STOP"), |r| r.signal("CONT")).await;
    check("SIGSTOP", &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_under_load_delays_no_request() {
    let Some(mut s) = setup().await else { return };
    let all = under_load(
        &mut s,
        |r| {
            let reply = raw_command(r.port, "CLIENT PAUSE 1000 ALL").expect("pause");
            assert!(reply.starts_with("+OK"), "{reply}");
        },
        |_| {},
    )
    .await;
    check("CLIENT PAUSE", &all);
}

/// Concurrency 3 across both proxies: three long requests through proxy 0
/// hold every slot (renewed past the 1 s lease), so proxy 1 refuses; proxy
/// 0 killed (SIGKILL: it releases nothing), its holds expire with the lease
/// and proxy 1 admits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_proxys_concurrency_holds_expire_with_the_lease() {
    // Redis stays up here: a generous timeout keeps a busy box's scheduling
    // delays from turning a hold into the local fallback (which is per proxy).
    let Some(s) = setup_with(3, "1s").await else {
        return;
    };
    let client = reqwest::Client::new();
    let get = |p: usize, path: &str| {
        client
            .get(s.proxies[p].url(path))
            .header("x-api-key", &s.key)
            .timeout(Duration::from_secs(30))
            .send()
    };
    // Long enough to outlast a slow start on a busy box; the kill ends them.
    // Three must hold at once: a setup request's hold is released in the
    // background, so one of the first three may still be refused (429,
    // done at once); another is started in its place.
    let mut long: Vec<tokio::task::JoinHandle<_>> = Vec::new();
    let start = Instant::now();
    loop {
        long.retain(|l| !l.is_finished());
        while long.len() < 3 {
            long.push(tokio::spawn(get(0, "/slow/20000")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // All three admitted and holding (polled: the box may be slow).
        let status = get(1, "/api/users").await.map(|r| r.status().as_u16());
        if status.as_ref().is_ok_and(|s| *s == 429) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never full: {status:?}"
        );
    }
    // Still held after twice the lease: renewed while the requests run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = get(1, "/api/users").await.map(|r| r.status().as_u16());
    assert!(status.as_ref().is_ok_and(|s| *s == 429), "{status:?}");

    s.proxies[0].signal("KILL");
    for t in long {
        let _ = t.await;
    }
    let killed = Instant::now();
    loop {
        let status = get(1, "/api/users").await.map(|r| r.status().as_u16());
        if status.as_ref().is_ok_and(|s| *s == 200) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "holds of the killed proxy never expired: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("slots back {:?} after the kill", killed.elapsed());
}

/// Black-box round 14: with `on_redis_error: local` each proxy decided a
/// request Redis could not answer from its own bucket with the whole limit
/// (two proxies, a burst of 10: up to 20 admitted). Now each takes its
/// share: 1/N of the burst, N = the live proxies their heartbeats count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_in_the_fallback_share_the_burst() {
    const BURST: usize = 10;
    let Some(mut s) = setup_on(|redis_url, upstream| {
        format!(
            r#"limiter:
  backend: redis
  redis_url: "{redis_url}"
  on_redis_error: local
usage:
  flush_interval: 1s
plans:
  b: {{ limits: [ {{ name: burst, rate: {BURST}, per: 1h }} ] }}
upstreams:
  demo: {{ targets: ["127.0.0.1:{upstream}"] }}
routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
    default_plan: b
"#
        )
    })
    .await
    else {
        return;
    };
    // The warm-up took one token from Redis' bucket (and, seeding the
    // shares from Redis' reply, at most one from the proxies' own).
    wait_for_two_peers(&s).await;
    tokio::task::block_in_place(|| s.redis.terminate());

    // Three bursts' worth at each proxy at once, eight connections each.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut tasks = Vec::new();
    for p in 0..2 {
        for _ in 0..8 {
            let (client, url, key) = (
                client.clone(),
                s.proxies[p].url("/api/users"),
                s.key.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..(3 * BURST).div_ceil(8) {
                    let r = client.get(&url).header("x-api-key", &key).send().await;
                    seen.push(r.map(|r| {
                        let policy = r
                            .headers()
                            .get("ratelimit-policy")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        (r.status().as_u16(), policy)
                    }));
                }
                (p, seen)
            }));
        }
    }
    let mut admitted = [0usize; 2];
    let mut policies = Vec::new();
    for t in tasks {
        let (p, seen) = t.await.expect("client task");
        for r in seen {
            let (status, policy) = r.expect("answered");
            assert!(status == 200 || status == 429, "status {status}");
            policies.push(policy);
            admitted[p] += usize::from(status == 200);
        }
    }
    println!("admitted with Redis down: {admitted:?}");
    let share = BURST.div_ceil(2);
    assert!(
        admitted.iter().all(|&a| a <= share),
        "a proxy admitted more than its share ({share}): {admitted:?}"
    );
    assert!(
        admitted.iter().sum::<usize>() <= BURST,
        "together more than the burst: {admitted:?}"
    );
    assert!(admitted.iter().all(|&a| a > 0), "{admitted:?}");
    // The fallback reports the share it decided on, admitted or refused.
    assert!(
        policies
            .iter()
            .all(|p| p.as_deref() == Some("\"burst\";q=5;w=3600")),
        "{policies:?}"
    );
}

/// Black-box round 17: a proxy judged the others' heartbeats by its own
/// period (p1, p2 at `flush_interval: 1s` saw p3 at `20s` dead between its
/// beats, counted N=2 where p3 counted 3: 27 admitted of a limit of 20).
/// Now each row is judged by the period it was written with: a proxy at 1s
/// counts one at 6s live all the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_with_a_longer_heartbeat_stays_counted_between_its_beats() {
    let Some(s) = setup_each(|redis_url, upstream, i| {
        let every = if i == 0 { "1s" } else { "6s" };
        format!(
            r#"limiter:
  backend: redis
  redis_url: "{redis_url}"
  on_redis_error: local
usage:
  flush_interval: {every}
plans:
  b: {{ limits: [ {{ name: burst, rate: 10, per: 1h }} ] }}
upstreams:
  demo: {{ targets: ["127.0.0.1:{upstream}"] }}
routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
    default_plan: b
"#
        )
    })
    .await
    else {
        return;
    };
    wait_for_two_peers(&s).await;
    // Proxy 0 counts every second; over more than one 6 s period of proxy
    // 1 (judged by 1 s, it was dead for 3 s of every 6) it always sees 2.
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_secs(9) {
        seen.push(fallback_peers(&s.proxies[0]).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen.iter().all(|p| p.as_deref() == Some("2")),
        "proxy 0 lost count of proxy 1 between its beats: {seen:?}"
    );
}

/// `tollgate_limiter_fallback_peers` of proxy `p`: the N its fallback uses.
async fn fallback_peers(p: &Proxy) -> Option<String> {
    p.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("tollgate_limiter_fallback_peers "))
        .map(str::to_string)
}

/// Both proxies count two live proxies (their heartbeats), so the fallback
/// takes half of each limit.
async fn wait_for_two_peers(s: &Setup) {
    let start = Instant::now();
    for p in &s.proxies {
        loop {
            let peers = fallback_peers(p).await;
            if peers.as_deref() == Some("2") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "never saw two live proxies: {peers:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Round 14's "Redis healthy but late": each fallback share started full,
/// whatever Redis had admitted, so a Redis missing its deadline after the
/// burst was spent let each proxy admit its share again (two proxies,
/// burst 10: 5 more at each). Now each Redis reply lowers the share to what
/// Redis had left / N: after the burst is drained through Redis, a late
/// Redis leaves the fallback only the refill since (10 per hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_redis_after_the_burst_leaves_the_fallback_only_the_refill() {
    const BURST: usize = 10;
    // A generous deadline while draining: every decision there is Redis'
    // on a busy box; CLIENT PAUSE then makes every call miss it.
    let Some(s) = setup_on(|redis_url, upstream| {
        format!(
            r#"limiter:
  backend: redis
  redis_url: "{redis_url}"
  redis_timeout: 500ms
  on_redis_error: local
usage:
  flush_interval: 1s
plans:
  b: {{ limits: [ {{ name: burst, rate: {BURST}, per: 1h }} ] }}
upstreams:
  demo: {{ targets: ["127.0.0.1:{upstream}"] }}
routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
    default_plan: b
"#
        )
    })
    .await
    else {
        return;
    };
    wait_for_two_peers(&s).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    // (status, remaining in `RateLimit`, `RateLimit-Policy`)
    let get = |p: usize| {
        let (client, url, key) = (client.clone(), s.proxies[p].url("/api/users"), &s.key);
        async move {
            let r = client
                .get(&url)
                .header("x-api-key", key)
                .send()
                .await
                .expect("answered");
            let header = |name: &str| {
                r.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let remaining = header("ratelimit")
                .and_then(|v| v.split(";r=").nth(1).map(str::to_string))
                .and_then(|v| v.split(';').next().and_then(|n| n.parse::<u64>().ok()));
            (r.status().as_u16(), remaining, header("ratelimit-policy"))
        }
    };
    // Drain the burst through proxy 0 (Redis deciding) until it reports
    // nothing left, then ask through proxy 1 once: each proxy's last Redis
    // reply says the bucket is empty.
    let drained = Instant::now();
    let mut admitted = 0;
    loop {
        let (status, remaining, _) = get(0).await;
        assert_eq!(status, 200, "refused before the burst was spent");
        admitted += 1;
        if remaining == Some(0) {
            break;
        }
        assert!(admitted < 2 * BURST, "never drained: {remaining:?}");
    }
    let (status, _, _) = get(1).await;
    println!("drained through Redis: {admitted} at proxy 0, then {status} at proxy 1");

    // Redis healthy but late: every call misses the deadline.
    let reply = raw_command(s.redis.port, "CLIENT PAUSE 20000 ALL").expect("pause");
    assert!(reply.starts_with("+OK"), "{reply}");
    let mut late = [0usize; 2];
    let mut fallback_decided = 0;
    for _ in 0..BURST {
        for (p, admitted) in late.iter_mut().enumerate() {
            let (status, _, policy) = get(p).await;
            assert!(status == 200 || status == 429, "status {status}");
            *admitted += usize::from(status == 200);
            // The fallback reports its share (q=5); Redis the limit (q=10).
            fallback_decided += usize::from(policy.as_deref() == Some("\"burst\";q=5;w=3600"));
        }
    }
    let _ = raw_command(s.redis.port, "CLIENT UNPAUSE");
    // What refilled since the drain at 10 per hour, rounded up (1 for
    // anything under six minutes): without the seed, 5 at proxy 0.
    let refill = (drained.elapsed().as_secs_f64() * BURST as f64 / 3600.0).ceil() as usize;
    println!("admitted with Redis late: {late:?}, fallback decisions: {fallback_decided}, refill bound {refill}");
    assert!(fallback_decided > 0, "the fallback never decided");
    assert!(
        late.iter().sum::<usize>() <= refill,
        "the fallback admitted more than the refill since the drain ({refill}): {late:?}"
    );
}
