//! Costs known from the response (`routes[].cost`, issue #20 item 4)
//! through the real binary: two `tollgate proxy` processes on one Redis (a
//! redis-server of the test's own), a route reserving 5 tokens per request
//! of a 100-per-hour plan, and an upstream that states each request's cost
//! in `X-Tollgate-Cost` (the test picks it, and the status, in the path).
//!
//! What is proved: a response cost of 10 lowers the remaining count by 10
//! and a 503 by 0, whichever proxy answers; an invalid header keeps the
//! reservation; an upstream that cannot be reached (502) refunds it; the
//! client never sees the upstream's cost header.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::proxy::Proxy;
use crate::common::redis::OwnRedis;
use tollgate_core::db::NewApiKey;

/// Two proxies' config on Redis at `redis_url`.
fn yaml(redis_url: &str, upstream: u16, closed: u16) -> String {
    let limiter = format!(
        "limiter:\n  backend: redis\n  redis_url: \"{redis_url}\"\n  redis_timeout: 2s\n  on_redis_error: deny\n"
    );
    config(&limiter, upstream, closed)
}

/// The plans, upstreams and routes of these tests after `limiter` (the
/// limiter section and any other).
fn config(limiter: &str, upstream: u16, closed: u16) -> String {
    format!(
        r#"{limiter}plans:
  p: {{ limits: [ {{ name: hour, rate: 100, per: 1h }} ] }}
  w: {{ limits: [ {{ name: warm, rate: 100, per: 1s }} ] }}
  m: {{ limits: [ {{ name: day, quota: 100, period: day }} ] }}
upstreams:
  llm: {{ targets: ["127.0.0.1:{upstream}"] }}
  down: {{ targets: ["127.0.0.1:{closed}"] }}
routes:
  - name: warm
    match: {{ path_prefix: /v1/warm }}
    upstream: llm
    default_plan: w
  - name: llm
    match: {{ path_prefix: /v1/complete }}
    upstream: llm
    default_plan: p
    cost: {{ reserve: 5, from_response_header: X-Tollgate-Cost, refund_on: [5xx] }}
  - name: metered
    match: {{ path_prefix: /v1/metered }}
    upstream: llm
    default_plan: m
    cost: {{ reserve: 5, from_response_header: X-Tollgate-Cost, refund_on: [5xx] }}
  - name: down
    match: {{ path_prefix: /v1/down }}
    upstream: down
    default_plan: p
    cost: {{ reserve: 5, from_response_header: X-Tollgate-Cost, refund_on: [5xx] }}
"#
    )
}

/// `r` of the `hour` member of `RateLimit`.
fn remaining(resp: &reqwest::Response) -> u64 {
    let v = resp
        .headers()
        .get("ratelimit")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no RateLimit header: {:?}", resp.headers()));
    v.split(';')
        .find_map(|p| p.trim().strip_prefix("r="))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no r in {v:?}"))
}

/// Wait until `p` knows `key` (its key refresh): a 200 on the warm route,
/// whose own plan leaves the tested buckets alone.
async fn until_ok(client: &reqwest::Client, p: &Proxy, key: &str) {
    let start = Instant::now();
    loop {
        let s = client
            .get(p.url("/v1/warm"))
            .header("x-api-key", key)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if s == 200 {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "status {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two proxies on one redis-server of the test's own and one SQLite
/// database holding one key, which both proxies know.
struct Two {
    proxies: Vec<Proxy>,
    db: tollgate_core::db::Db,
    key: String,
    client: reqwest::Client,
    _closed: tokio::net::TcpSocket,
    _dir: tempfile::TempDir,
    _redis: OwnRedis,
}

impl Two {
    async fn start() -> Option<Self> {
        let redis = OwnRedis::start()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
        let (_, key) = db
            .create_key(&NewApiKey {
                name: "llm".into(),
                ..NewApiKey::default()
            })
            .await
            .expect("key");
        let (closed_socket, closed) = common::closed_port();
        let y = yaml(&redis.url(), common::cost_upstream().await, closed);
        let mut proxies = Vec::new();
        for _ in 0..2 {
            proxies
                .push(Proxy::start(tempfile::tempdir().expect("tempdir"), db.url(), "", &y).await);
        }
        let client = reqwest::Client::new();
        // The key reaches both proxies (key refresh), on a route of another plan.
        for p in &proxies {
            until_ok(&client, p, &key).await;
        }
        Some(Self {
            proxies,
            db,
            key,
            client,
            _closed: closed_socket,
            _dir: dir,
            _redis: redis,
        })
    }
}

struct Call {
    status: u16,
    remaining: u64,
    cost_header: bool,
}

async fn call(client: &reqwest::Client, proxy: &Proxy, key: &str, path: &str) -> Call {
    let resp = client
        .get(proxy.url(path))
        .header("x-api-key", key)
        .send()
        .await
        .expect("request");
    Call {
        status: resp.status().as_u16(),
        remaining: remaining(&resp),
        cost_header: resp.headers().contains_key("x-tollgate-cost"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_costs_settle_exactly_across_two_proxies() {
    let Some(t) = Two::start().await else {
        return;
    };
    let (db, key, client) = (&t.db, t.key.clone(), t.client.clone());
    let (a, b) = (&t.proxies[0], &t.proxies[1]);

    // Full (100). Actual cost 5 = the reservation: 95 left.
    let c = call(&client, b, &key, "/v1/complete/200/5").await;
    assert_eq!((c.status, c.remaining, c.cost_header), (200, 95, false));
    // Actual cost 10 through proxy A: 95 − 10 = 85 left.
    let c = call(&client, a, &key, "/v1/complete/200/10").await;
    assert_eq!((c.status, c.remaining, c.cost_header), (200, 90, false));
    // Through B: the cost of 10 counted (85 − 5 reserved); the 503 refunds.
    let c = call(&client, b, &key, "/v1/complete/503/10").await;
    assert_eq!((c.status, c.remaining, c.cost_header), (503, 80, false));
    // The 503 lowered it by 0: still 85 before this one.
    let c = call(&client, a, &key, "/v1/complete/200/0").await;
    assert_eq!((c.status, c.remaining, c.cost_header), (200, 80, false));
    // Cost 0 gave all 5 back: 85. Invalid costs keep the reservation.
    for (i, bad) in ["-3", "1.5", "abc", "99999999999999999999"]
        .iter()
        .enumerate()
    {
        let p = if i % 2 == 0 { a } else { b };
        let c = call(&client, p, &key, &format!("/v1/complete/200/{bad}")).await;
        assert_eq!(
            (c.status, c.remaining, c.cost_header),
            (200, 80 - 5 * i as u64, false),
            "{bad}"
        );
    }
    // 65 left: a cost of 50 takes 45 more (15 left), then a cost of 100
    // takes those and at most one reservation (5) of debt.
    let c = call(&client, b, &key, "/v1/complete/200/50").await;
    assert_eq!(c.remaining, 60);
    let c = call(&client, a, &key, "/v1/complete/200/100").await;
    assert_eq!(c.remaining, 10);
    for p in [a, b] {
        let c = client
            .get(p.url("/v1/complete/200/0"))
            .header("x-api-key", &key)
            .send()
            .await
            .expect("request");
        assert_eq!(c.status().as_u16(), 429, "in debt: refused");
        assert!(c.text().await.expect("body").contains("hour"));
    }

    // An upstream that cannot be reached: 502, and the reservation comes
    // back (settled once the answer is out: polled). A second key.
    let (_, key2) = db
        .create_key(&NewApiKey {
            name: "llm2".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    let start = Instant::now();
    let c = loop {
        let r = client
            .get(a.url("/v1/down"))
            .header("x-api-key", &key2)
            .send()
            .await
            .expect("request");
        if r.status().as_u16() == 502 {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{}", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(remaining(&c), 95);
    // B learns the new key at its own key refresh: wait for it there too
    // (on the warm route: its own plan, the `hour` bucket untouched), or the
    // first request below may be B's 403 for a key it does not know yet.
    until_ok(&client, b, &key2).await;
    // A cost of 0 through B leaves the bucket as it was: it reads 95 while
    // the 502's refund is on its way, 100 − 5 once it landed.
    let start = Instant::now();
    loop {
        let c = call(&client, b, &key2, "/v1/complete/200/0").await;
        assert!(c.remaining == 90 || c.remaining == 95, "{}", c.remaining);
        if c.remaining == 95 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the 502 was not refunded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for p in [a, b] {
        let m = p.metrics().await;
        assert!(m.contains("tollgate_cost_settlements_total"), "{m}");
    }
}

/// The same settlement on a calendar quota (`quota: 100, period: day`, a
/// route reserving 5): the count moves by the response's cost, a 503
/// refunds, and a cost far beyond the quota leaves at most one reservation
/// of debt; then the quota refuses (`quota-exhausted`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_costs_settle_a_calendar_quota_across_two_proxies() {
    let Some(t) = Two::start().await else {
        return;
    };
    let (key, client) = (t.key.clone(), t.client.clone());
    let (a, b) = (&t.proxies[0], &t.proxies[1]);
    // (status, cost) → the quota left after the reservation, alternating
    // proxies. Used: 5; 15 (cost 10); 15 (503 refunded); 15 (cost 0).
    for (i, (path, left)) in [
        ("/v1/metered/200/5", 95),
        ("/v1/metered/200/10", 90),
        ("/v1/metered/503/10", 80),
        ("/v1/metered/200/0", 80),
        // 20 used: a cost of 1000 takes at most quota + one reservation.
        ("/v1/metered/200/1000", 80),
    ]
    .into_iter()
    .enumerate()
    {
        let p = if i % 2 == 0 { b } else { a };
        let c = call(&client, p, &key, path).await;
        let want = if path.contains("/503/") { 503 } else { 200 };
        assert_eq!(
            (c.status, c.remaining, c.cost_header),
            (want, left, false),
            "{path}"
        );
    }
    for p in [a, b] {
        let r = client
            .get(p.url("/v1/metered/200/0"))
            .header("x-api-key", &key)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 429);
        assert!(r.text().await.expect("body").contains("quota-exhausted"));
    }
}

/// A graceful stop (SIGTERM) while a request is in flight on a `cost`
/// route of a local proxy: the request finishes late in the grace period,
/// and its settlement reaches the stored quota count (black-box rounds 4
/// and 5, C7: the last write came before the settlement, which was lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_a_graceful_stop_is_settled_in_the_stored_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    let (row, key) = db
        .create_key(&NewApiKey {
            name: "metered".into(),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    let (_closed_socket, closed) = common::closed_port();
    let y = config(
        "limiter:\n  backend: local\nusage:\n  flush_interval: 200ms\n",
        common::cost_upstream().await,
        closed,
    );
    let d = tempfile::tempdir().expect("tempdir");
    let mut p = Proxy::start(d, db.url(), "  grace_period: 3s\n", &y).await;
    let client = reqwest::Client::new();
    until_ok(&client, &p, &key).await;
    // Answered after 2.65 s with a cost of 80; the stop comes at 150 ms,
    // so the answer comes 2.5 s into the 3 s grace period: after the usage
    // flusher's last tick (2.25 s), settled in the last write once the
    // server stopped (round 5: it was lost), with 0.5 s to spare.
    let slow = {
        let (client, url, key) = (
            client.clone(),
            p.url("/v1/metered/200/80/2650"),
            key.clone(),
        );
        tokio::spawn(async move {
            client
                .get(url)
                .header("x-api-key", key)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    p.signal("TERM");
    assert_eq!(slow.await.expect("task").expect("answered"), 200);
    assert!(p.wait_exit(Duration::from_secs(30)).await.success());
    let counter = format!(
        "{}@127.0.0.1:{}",
        tollgate_proxy::usage::heartbeat::host_name(),
        p.port
    );
    let rows = db
        .quota_counts_running(&counter, tollgate_core::now_ms() * 1_000)
        .await
        .expect("counts");
    let holder = tollgate_core::db::quota_counts::CountHolder::Key(row.id).name();
    let used: Vec<u64> = rows
        .iter()
        .filter(|c| c.holder == holder && c.bucket == "p:day")
        .map(|c| c.used)
        .collect();
    assert_eq!(used, vec![80], "{rows:?}");
}
