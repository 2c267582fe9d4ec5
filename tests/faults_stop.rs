//! Stopping, proved against the real `tollgate` binary: SIGTERM lets
//! requests in flight finish, SIGINT is fast, a SIGINT during a graceful stop
//! makes it fast, and every request cut short is recorded with the usage
//! held in memory.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::faults::*;
use crate::common::proxy::Proxy;
use crate::common::{free_port, Dev};
use tollgate_core::db::{Db, KeyFilter};

const USAGE_HELD: &str = "usage:\n  flush_interval: 1h\n";

/// SIGTERM: the in-flight slow request completes, usage of the requests
/// served before the signal (and of the in-flight one) is written, and the
/// process exits 0 once the grace period is over. The default grace is short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_flushes_usage_and_exits_within_grace() {
    let defaults = tollgate_core::config::parse("{}", "defaults.yaml").expect("empty config");
    assert_eq!(defaults.proxy.grace_period, Duration::from_secs(10));
    assert!(tollgate_proxy::server::max_shutdown(&defaults) <= Duration::from_secs(15));

    let up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
    let (key, plain) = db.create_key(&named("term")).await.expect("key");
    let yaml = format!(
        "{USAGE_HELD}upstreams:\n  u: {{ targets: [\"127.0.0.1:{}\"] }}\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: u\n    strip_prefix: /api\n",
        up.port
    );
    let grace = Duration::from_secs(3);
    let mut p = Proxy::start(dir, db.url(), "  grace_period: 3s\n", &yaml).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(
            get(&client, &p.url("/api/x"), Some(plain.as_str()))
                .await
                .status(),
            200
        );
    }
    let slow = {
        let (client, url, plain) = (client.clone(), p.url("/api/slow/1000"), plain.clone());
        tokio::spawn(async move { get(&client, &url, Some(plain.as_str())).await.status() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        outcomes(&usage_of(&db, key.id).await),
        (0, 0, 0, 0, 0),
        "nothing flushed before the signal (flush interval 1h)"
    );
    let t = Instant::now();
    p.signal("TERM");
    assert_eq!(
        slow.await.expect("slow task"),
        200,
        "in-flight request finished"
    );
    let status = p.wait_exit(grace + Duration::from_secs(4)).await;
    let took = t.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= grace - Duration::from_millis(200),
        "exited after {took:?}"
    );
    println!("SIGTERM → exit after {took:?} (grace {grace:?})");
    assert_eq!(
        outcomes(&usage_of(&db, key.id).await),
        (4, 0, 0, 0, 0),
        "usage written at shutdown"
    );
    assert!(db.list_instances().await.expect("instances").is_empty());
}

/// Black-box round 13: requests still in flight when a stop ends them (the
/// grace period over, or SIGINT) were never recorded: Pingora drops them
/// without `logging`. Each is recorded as its context is dropped, before
/// the last usage write: admitted, so `allowed` (status 0).
async fn requests_cut_by_a_stop_are_recorded(signal: &str) {
    let (dir, db) = sqlite().await;
    three_cut_by(signal, dir, &db, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_by_the_end_of_the_grace_period_are_recorded() {
    requests_cut_by_a_stop_are_recorded("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_by_a_fast_stop_are_recorded() {
    requests_cut_by_a_stop_are_recorded("INT").await;
}

/// A fast stop whose last write has to wait (another session holds
/// `usage_minute` locked past the 1 s the runtimes get to stop, as a busy
/// disk or database would) does not end in the middle of it: the requests
/// it cut are still written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_stop_waits_for_its_last_write() {
    let Some(db) = tollgate_core::db::testing::fresh_postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    three_cut_by("INT", dir, &db, true).await;
}

/// Three requests in flight on a slow upstream, then `signal`: each is cut
/// and recorded once. `lock_usage` (PostgreSQL): `usage_minute` is held
/// locked by another session from before the signal until 2 s after it.
async fn three_cut_by(signal: &str, dir: tempfile::TempDir, db: &Db, lock_usage: bool) {
    let up = Upstream::start("u", free_port()).await;
    let (key, plain) = db.create_key(&named("cut")).await.expect("key");
    let yaml = format!(
        "{USAGE_HELD}upstreams:\n  u: {{ targets: [\"127.0.0.1:{}\"], timeouts: {{ read: 60s }} }}\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: u\n    strip_prefix: /api\n",
        up.port
    );
    let mut p = Proxy::start(dir, db.url(), "  grace_period: 1s\n", &yaml).await;
    let client = reqwest::Client::new();
    let cut: Vec<_> = (0..3)
        .map(|_| {
            let (client, url, plain) = (client.clone(), p.url("/api/slow/30000"), plain.clone());
            tokio::spawn(async move { client.get(url).header("x-api-key", plain).send().await })
        })
        .collect();
    wait_for(
        "3 requests at the upstream",
        Duration::from_secs(10),
        || async { up.arrived.load(Ordering::Relaxed) == 3 },
    )
    .await;
    let lock = if lock_usage {
        let mut tx = db.pool().begin().await.expect("begin");
        sqlx::query("LOCK TABLE usage_minute IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .expect("lock");
        Some(tx)
    } else {
        None
    };
    p.signal(signal);
    if let Some(tx) = lock {
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        tx.rollback().await.expect("unlock");
    }
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    for c in cut {
        let answered = c.await.expect("task");
        assert!(answered.is_err(), "cut, not answered: {answered:?}");
    }
    assert_eq!(up.hits(), 0, "no request finished");
    // Each once: allowed, or an upstream error where Pingora saw the cut
    // as one (a fast stop can fail an upstream read first).
    let (allowed, limited, unauthorized, forbidden, errors) = outcomes(&usage_of(db, key.id).await);
    assert_eq!(
        (allowed + errors, limited, unauthorized, forbidden),
        (3, 0, 0, 0),
        "the cut requests are recorded ({allowed} allowed, {errors} upstream errors)"
    );
}

/// Round 13 (black-box): SIGINT during a graceful stop (SIGTERM, a 20 s
/// grace period, a request still in flight) makes it a fast stop: the
/// usage of the requests that finished (one during the grace period) and of
/// the one cut is written and the process exits within the fast-stop bound,
/// not when the grace period ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_graceful_stop_makes_it_fast() {
    sigint_during_a_graceful_stop(Client::H1(reqwest::Client::new()), "").await;
}

/// The same over one HTTP/2 connection (h2c, prior knowledge): its socket
/// is shut down too, the stream in flight on it is cut and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_graceful_stop_makes_it_fast_over_http2() {
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    sigint_during_a_graceful_stop(Client::H2c(Box::new(h2)), "  h2c: true\n").await;
}

/// A client of the proxy: HTTP/1.1, or HTTP/2 by prior knowledge.
#[derive(Clone)]
enum Client {
    H1(reqwest::Client),
    H2c(
        Box<
            hyper_util::client::legacy::Client<
                hyper_util::client::legacy::connect::HttpConnector,
                http_body_util::Empty<bytes::Bytes>,
            >,
        >,
    ),
}

impl Client {
    /// GET `url` with the key `key`: its status, or why none came.
    async fn get(&self, url: &str, key: &str) -> Result<u16, String> {
        match self {
            Self::H1(c) => c
                .get(url)
                .header("x-api-key", key)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string()),
            Self::H2c(c) => {
                let req = http::Request::get(url)
                    .header("x-api-key", key)
                    .body(http_body_util::Empty::new())
                    .expect("request");
                let r = c.request(req).await.map_err(|e| e.to_string())?;
                assert_eq!(r.version(), http::Version::HTTP_2);
                Ok(r.status().as_u16())
            }
        }
    }
}

/// SIGTERM with a 20 s grace period, one request finishing in it and one
/// in flight, then SIGINT, on `client` (`proxy_extra`: added to `proxy:`).
async fn sigint_during_a_graceful_stop(client: Client, proxy_extra: &str) {
    let up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
    let (key, plain) = db.create_key(&named("cut")).await.expect("key");
    let yaml = format!(
        "{USAGE_HELD}upstreams:\n  u: {{ targets: [\"127.0.0.1:{}\"] }}\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: u\n    strip_prefix: /api\n",
        up.port
    );
    let extra = format!("  grace_period: 20s\n{proxy_extra}");
    let mut p = Proxy::start(dir, db.url(), &extra, &yaml).await;
    for _ in 0..3 {
        assert_eq!(client.get(&p.url("/api/x"), &plain).await, Ok(200));
    }
    let slow = |ms: u64| {
        let (client, url, plain) = (
            client.clone(),
            p.url(&format!("/api/slow/{ms}")),
            plain.clone(),
        );
        tokio::spawn(async move { client.get(&url, &plain).await })
    };
    let (short, long) = (slow(1500), slow(60_000));
    wait_for(
        "both slow requests upstream",
        Duration::from_secs(10),
        || async { up.arrived.load(Ordering::Relaxed) == 5 },
    )
    .await;
    p.signal("TERM");
    // The graceful stop has begun once the flusher wrote what it held.
    wait_for(
        "usage written at the graceful stop",
        Duration::from_secs(10),
        || async { outcomes(&usage_of(&db, key.id).await).0 == 3 },
    )
    .await;
    assert_eq!(
        short.await.expect("short task").expect("short request"),
        200,
        "finished in the grace period"
    );
    let t = Instant::now();
    p.signal("INT");
    let status = p
        .wait_exit(tollgate_proxy::server::FAST_STOP_FLUSH + Duration::from_secs(2))
        .await;
    let took = t.elapsed();
    assert!(status.success(), "exit status {status}");
    println!("SIGTERM, SIGINT → exit {took:?} after the SIGINT (grace 20 s)");
    assert!(
        long.await.expect("long task").is_err(),
        "the request in flight is cut"
    );
    // Every finished request, and the one cut (round 15: it was never
    // recorded, Pingora's main thread sleeping out the grace period; its
    // connection is shut down now, so it ends and records itself): allowed,
    // or an upstream error where Pingora saw the cut as one.
    let (allowed, limited, unauthorized, forbidden, errors) =
        outcomes(&usage_of(&db, key.id).await);
    assert!(allowed >= 4, "{allowed} allowed");
    assert_eq!(
        (allowed + errors, limited, unauthorized, forbidden),
        (5, 0, 0, 0),
        "usage of every finished request and of the one cut written ({allowed} allowed, {errors} upstream errors)"
    );
    assert!(db.list_instances().await.expect("instances").is_empty());
}

/// SIGINT (Ctrl-C) in `tollgate dev`: a fast exit that still writes the usage
/// held in memory first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_flushes_usage_before_a_fast_exit() {
    let mut dev = Dev::start(&[("plans:\n", &format!("{USAGE_HELD}plans:\n"))], &[]);
    let key = dev.line("demo key: ").expect("demo key");
    let client = reqwest::Client::new();
    let url = dev.proxy_url("/api/products");
    wait_for("demo upstream up", Duration::from_secs(10), || async {
        get(&client, &url, Some(&key)).await.status() == 200
    })
    .await;
    let mut sent = 1;
    for _ in 0..4 {
        assert_eq!(get(&client, &url, Some(&key)).await.status(), 200);
        sent += 1;
    }
    assert_eq!(get(&client, &url, None).await.status(), 401);

    let db_url = format!("sqlite://{}", dev.dir.path().join("t.db").display());
    let db = Db::connect(&db_url).await.expect("dev database");
    let filter = KeyFilter {
        name: Some("demo".into()),
        limit: 10,
        ..KeyFilter::default()
    };
    let (listed, _) = db.list_keys(&filter).await.expect("keys");
    let demo = listed
        .iter()
        .find(|k| k.name == "demo")
        .expect("demo key row");
    assert_eq!(outcomes(&usage_of(&db, demo.id).await), (0, 0, 0, 0, 0));

    let t = Instant::now();
    let status = dev.interrupt();
    let took = t.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took < tollgate_proxy::server::FAST_STOP_FLUSH + Duration::from_secs(2),
        "SIGINT exit after {took:?}"
    );
    println!("SIGINT → exit after {took:?}");
    assert_eq!(
        outcomes(&usage_of(&db, demo.id).await),
        (sent, 0, 0, 0, 0),
        "usage written before the fast exit"
    );
    assert_eq!(outcomes(&usage_of(&db, 0).await).2, 1, "the 401 too");
    db.close().await;
}
