//! Faults, proved against the real `tollgate` binary (`tollgate proxy` and
//! `tollgate dev` as child processes): slow, down and flapping upstreams,
//! SIGTERM and SIGINT with usage held in memory, and a PostgreSQL of the
//! test's own stopped under load.
//!
//! Upstreams here are tiny HTTP servers of the test's own that count what
//! they serve and can be stopped (connections included) and restarted on the
//! same port.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{closed_port, free_port, tollgate, Dev};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::{JoinHandle, JoinSet};
use tollgate_core::db::own_postgres::OwnPostgres;
use tollgate_core::db::usage::{Counts, UsageFilter};
use tollgate_core::db::{Db, KeyFilter, NewApiKey};

// --- a test upstream -----------------------------------------------------------

/// An HTTP/1.1 upstream answering `{"target": NAME}`; `/slow/{ms}` waits
/// first; `/health` is not counted as a hit (nor as arrived).
struct Upstream {
    name: &'static str,
    port: u16,
    hits: Arc<AtomicU64>,
    /// Requests whose head arrived (a slow one before its wait).
    arrived: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl Upstream {
    async fn start(name: &'static str, port: u16) -> Self {
        let mut u = Self {
            name,
            port,
            hits: Arc::new(AtomicU64::new(0)),
            arrived: Arc::new(AtomicU64::new(0)),
            task: None,
        };
        u.restart().await;
        u
    }

    /// (Re)bind the port and serve.
    async fn restart(&mut self) {
        let start = Instant::now();
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(start.elapsed() < Duration::from_secs(5), "bind: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let (name, hits, arrived) = (self.name, self.hits.clone(), self.arrived.clone());
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut conns = JoinSet::new();
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    conns.spawn(serve_conn(stream, name, hits.clone(), arrived.clone()));
                }
                while conns.try_join_next().is_some() {}
            }
        }));
    }

    /// Stop listening and cut every open connection.
    async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn serve_conn(
    mut s: tokio::net::TcpStream,
    name: &'static str,
    hits: Arc<AtomicU64>,
    arrived: Arc<AtomicU64>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 65_536 {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        if path != "/health" {
            arrived.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(ms) = path.strip_prefix("/slow/") {
            let ms = ms.parse::<u64>().unwrap_or(0).min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if path != "/health" {
            hits.fetch_add(1, Ordering::Relaxed);
        }
        let body = format!("{{\"target\":\"{name}\",\"path\":\"{path}\"}}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Sum of a metric's samples whose line contains every `labels` fragment.
fn metric_value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn get(client: &reqwest::Client, url: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = client.get(url);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    req.send().await.expect("request answered")
}

async fn problem_type(r: reqwest::Response) -> String {
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: serde_json::Value = r.json().await.expect("problem json");
    body["type"].as_str().unwrap_or_default().to_string()
}

/// Usage of one key (0: requests without a known key), summed over all time.
async fn usage_of(db: &Db, key_id: i64) -> Counts {
    let filter = UsageFilter {
        from: 0,
        to: i64::MAX,
        key_id: Some(key_id),
        route: None,
    };
    // Errors (a database being restarted) read as nothing written yet.
    db.usage_totals(&filter)
        .await
        .map(|t| t.counts)
        .unwrap_or_default()
}

/// (allowed, limited, unauthorized, forbidden, upstream errors).
fn outcomes(c: &Counts) -> (i64, i64, i64, i64, i64) {
    (
        c.allowed,
        c.limited,
        c.unauthorized,
        c.forbidden,
        c.upstream_errors,
    )
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "{what}: not after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sqlite() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tollgate_core::db::testing::fresh_sqlite(dir.path()).await;
    (dir, db)
}

fn named(name: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        ..NewApiKey::default()
    }
}

// --- 1. upstream faults ----------------------------------------------------------

/// An upstream slower than its `timeouts.read` gets 504 problem+json after
/// about that timeout (not the client's patience), counted as an upstream
/// error in /metrics; the same upstream still serves fast requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gets_504_after_its_read_timeout() {
    let up = Upstream::start("slow", free_port()).await;
    let (dir, db) = sqlite().await;
    let yaml = format!(
        "upstreams:\n  u: {{ targets: [\"127.0.0.1:{}\"], timeouts: {{ connect: 500ms, read: 400ms }} }}\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: u\n    strip_prefix: /api\n    auth: none\n",
        up.port
    );
    let p = Proxy::start(dir, db.url(), "", &yaml).await;
    let client = reqwest::Client::new();
    assert_eq!(get(&client, &p.url("/api/fast"), None).await.status(), 200);

    let t = Instant::now();
    let r = get(&client, &p.url("/api/slow/3000"), None).await;
    let waited = t.elapsed();
    assert_eq!(r.status(), 504);
    assert!(problem_type(r).await.ends_with("/upstream-timeout"));
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_millis(1500),
        "504 after {waited:?}, read timeout 400ms"
    );
    assert_eq!(get(&client, &p.url("/api/fast"), None).await.status(), 200);
    let m = p.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "tollgate_requests_total",
            &["route=\"api\"", "outcome=\"upstream_error\""]
        ),
        1.0,
        "{m}"
    );
}

/// A target that is down (nothing listens: connection refused) gets 502
/// problem+json at once; one that does not answer SYNs (a full accept queue)
/// gets 502 after `timeouts.connect`, not after retries piling up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_target_gets_502_within_the_connect_timeout() {
    // Held for the whole test: nothing else can start listening on it.
    let (_held, refused) = closed_port();
    // A listener that never accepts, its queue filled: further SYNs are dropped.
    let (blackhole, _) = common::ports::socket();
    let blackhole = blackhole.listen(1).expect("listen");
    let hole = blackhole.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(hole),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let hole_blocks = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::net::TcpStream::connect(hole),
    )
    .await
    .is_err();

    let (dir, db) = sqlite().await;
    let yaml = format!(
        "upstreams:\n  refused: {{ targets: [\"127.0.0.1:{refused}\"], timeouts: {{ connect: 5s, read: 2s }} }}\n  hole: {{ targets: [\"{hole}\"], timeouts: {{ connect: 600ms, read: 2s }} }}\nroutes:\n  - name: refused\n    match: {{ path_prefix: /refused }}\n    upstream: refused\n    auth: none\n  - name: hole\n    match: {{ path_prefix: /hole }}\n    upstream: hole\n    auth: none\n"
    );
    let p = Proxy::start(dir, db.url(), "", &yaml).await;
    let client = reqwest::Client::new();

    let t = Instant::now();
    let r = get(&client, &p.url("/refused/x"), None).await;
    let waited = t.elapsed();
    assert_eq!(r.status(), 502);
    assert!(problem_type(r).await.ends_with("/upstream-error"));
    // A refused connection is answered at once, not at the 5 s connect timeout.
    assert!(
        waited < Duration::from_millis(2500),
        "refused: 502 after {waited:?}, connect timeout 5s"
    );

    if hole_blocks {
        let t = Instant::now();
        let r = get(&client, &p.url("/hole/x"), None).await;
        let waited = t.elapsed();
        assert_eq!(r.status(), 502);
        assert!(problem_type(r).await.ends_with("/upstream-error"));
        assert!(
            // At the timeout, not at the kernel's SYN retries (over two minutes).
            waited >= Duration::from_millis(550) && waited < Duration::from_millis(3000),
            "unanswered SYN: 502 after {waited:?}, connect timeout 600ms"
        );
    } else {
        eprintln!("notice: this kernel accepted beyond the backlog; connect-timeout case skipped");
    }
    let m = p.metrics().await;
    assert!(
        metric_value(
            &m,
            "tollgate_requests_total",
            &["outcome=\"upstream_error\""]
        ) >= 1.0
    );
    drop(fillers);
}

/// Two targets, one down: the health check takes it out and every request
/// goes to the other; back up and healthy, it gets traffic again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_takes_a_down_target_out_and_back_in() {
    let a = Upstream::start("a", free_port()).await;
    let mut b = Upstream::start("b", free_port()).await;
    let (dir, db) = sqlite().await;
    let yaml = format!(
        "upstreams:\n  u: {{ targets: [\"127.0.0.1:{}\", \"127.0.0.1:{}\"], health_check: {{ path: /health, interval: 200ms }}, timeouts: {{ connect: 300ms, read: 2s }} }}\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: u\n    strip_prefix: /api\n    auth: none\n",
        a.port, b.port
    );
    let p = Proxy::start(dir, db.url(), "", &yaml).await;
    let client = reqwest::Client::new();
    let url = p.url("/api/x");

    // Both healthy: round robin uses both.
    for _ in 0..10 {
        assert_eq!(get(&client, &url, None).await.status(), 200);
    }
    assert!(
        a.hits() > 0 && b.hits() > 0,
        "a {} b {}",
        a.hits(),
        b.hits()
    );

    b.stop().await;
    let down_at = Instant::now();
    // Until the check notices, requests routed to b fail; then none does.
    wait_for("b taken out", Duration::from_secs(5), || async {
        let mut ok = true;
        for _ in 0..4 {
            ok &= get(&client, &url, None).await.status() == 200;
        }
        ok
    })
    .await;
    println!("b out of rotation after {:?}", down_at.elapsed());
    let (a0, b0) = (a.hits(), b.hits());
    for _ in 0..20 {
        assert_eq!(get(&client, &url, None).await.status(), 200);
    }
    assert_eq!(a.hits() - a0, 20, "every request went to a");
    assert_eq!(b.hits(), b0);

    b.restart().await;
    let up_at = Instant::now();
    wait_for("b back in rotation", Duration::from_secs(5), || async {
        let before = b.hits();
        for _ in 0..4 {
            assert_eq!(get(&client, &url, None).await.status(), 200);
        }
        b.hits() > before
    })
    .await;
    println!("b back in rotation after {:?}", up_at.elapsed());
    let (a1, b1) = (a.hits(), b.hits());
    for _ in 0..20 {
        assert_eq!(get(&client, &url, None).await.status(), 200);
    }
    assert!(
        a.hits() - a1 >= 5 && b.hits() - b1 >= 5,
        "both serve again: a +{} b +{}",
        a.hits() - a1,
        b.hits() - b1
    );
}

// --- 2. shutdown -----------------------------------------------------------------

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
    let up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
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
    p.signal(signal);
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    for c in cut {
        let answered = c.await.expect("task");
        assert!(answered.is_err(), "cut, not answered: {answered:?}");
    }
    assert_eq!(up.hits(), 0, "no request finished");
    // Each once: allowed, or an upstream error where Pingora saw the cut
    // as one (a fast stop can fail an upstream read first).
    let (allowed, limited, unauthorized, forbidden, errors) =
        outcomes(&usage_of(&db, key.id).await);
    assert_eq!(
        (allowed + errors, limited, unauthorized, forbidden),
        (3, 0, 0, 0),
        "the cut requests are recorded ({allowed} allowed, {errors} upstream errors)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_by_the_end_of_the_grace_period_are_recorded() {
    requests_cut_by_a_stop_are_recorded("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_by_a_fast_stop_are_recorded() {
    requests_cut_by_a_stop_are_recorded("INT").await;
}

/// Round 13 (black-box): SIGINT during a graceful stop (SIGTERM, a 20 s
/// grace period, a request still in flight) makes it a fast stop: the
/// usage of the requests that finished (one during the grace period) and of
/// the one cut is written and the process exits within the fast-stop bound,
/// not when the grace period ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_graceful_stop_makes_it_fast() {
    let up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
    let (key, plain) = db.create_key(&named("cut")).await.expect("key");
    let yaml = format!(
        "{USAGE_HELD}upstreams:\n  u: {{ targets: [\"127.0.0.1:{}\"] }}\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: u\n    strip_prefix: /api\n",
        up.port
    );
    let mut p = Proxy::start(dir, db.url(), "  grace_period: 20s\n", &yaml).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(
            get(&client, &p.url("/api/x"), Some(&plain)).await.status(),
            200
        );
    }
    let slow = |ms: u64| {
        let (client, url, plain) = (
            client.clone(),
            p.url(&format!("/api/slow/{ms}")),
            plain.clone(),
        );
        tokio::spawn(async move {
            let sent = client.get(&url).header("x-api-key", plain).send().await;
            sent.map(|r| r.status().as_u16())
        })
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

// --- 3. database outage under load -----------------------------------------------

/// PostgreSQL stopped while four clients keep sending: every request is
/// answered promptly, keys are enforced from the in-memory set (valid 200,
/// missing 401, unknown and disabled 403), and once the database is back the
/// usage of the outage is written (the rows fit `usage.buffer_rows`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_under_load_keeps_answering_and_enforcing_keys() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let db = Db::connect(&pg.url())
        .await
        .expect("connect own PostgreSQL");
    let (valid, valid_plain) = db.create_key(&named("valid")).await.expect("key");
    let (disabled, disabled_plain) = db.create_key(&named("disabled")).await.expect("key");
    db.set_key_enabled(disabled.id, false)
        .await
        .expect("disable");
    let unknown = tollgate_core::keys::generate().expect("key").plain;

    let up = Upstream::start("u", free_port()).await;
    let yaml = format!(
        "usage:\n  flush_interval: 100ms\n  buffer_rows: 1000\nplans:\n  big: {{ limits: [ {{ name: hour, rate: 1000000, per: 1h }} ] }}\nupstreams:\n  u: {{ targets: [\"127.0.0.1:{}\"] }}\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: u\n    strip_prefix: /api\n    default_plan: big\n",
        up.port
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Proxy::start(dir, &pg.url(), "", &yaml).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let url = p.url("/api/x");
    assert_eq!(get(&client, &url, Some(&valid_plain)).await.status(), 200);
    wait_for("first row written", Duration::from_secs(10), || async {
        usage_of(&db, valid.id).await.allowed == 1
    })
    .await;

    pg.stop();
    let stopped = Instant::now();
    // Four clients for two seconds, each cycling through the four kinds of key.
    let keys: Vec<Option<String>> = vec![
        Some(valid_plain.clone()),
        None,
        Some(unknown.clone()),
        Some(disabled_plain.clone()),
    ];
    let mut workers = JoinSet::new();
    for w in 0..4 {
        let (client, url, keys) = (client.clone(), url.clone(), keys.clone());
        workers.spawn(async move {
            let mut seen: BTreeMap<(usize, u16), u64> = BTreeMap::new();
            let mut slowest = Duration::ZERO;
            let start = Instant::now();
            let mut i = w;
            while start.elapsed() < Duration::from_secs(2) {
                let which = i % keys.len();
                i += 1;
                let t = Instant::now();
                let mut req = client.get(&url);
                if let Some(k) = &keys[which] {
                    req = req.header("x-api-key", k);
                }
                let status = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
                slowest = slowest.max(t.elapsed());
                *seen.entry((which, status)).or_default() += 1;
            }
            (seen, slowest)
        });
    }
    let mut seen: BTreeMap<(usize, u16), u64> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    while let Some(r) = workers.join_next().await {
        let (s, w) = r.expect("worker");
        for (k, n) in s {
            *seen.entry(k).or_default() += n;
        }
        slowest = slowest.max(w);
    }
    println!(
        "outage of {:?}: {seen:?}, slowest {slowest:?}",
        stopped.elapsed()
    );
    let expected = [200, 401, 403, 403];
    for ((which, status), n) in &seen {
        assert_eq!(
            *status, expected[*which],
            "key kind {which}: {n} answers with {status} (0 = no answer) during the outage"
        );
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a request waited {slowest:?}"
    );
    let count = |which: usize| seen.get(&(which, expected[which])).copied().unwrap_or(0);
    assert!(count(0) > 20, "{seen:?}");
    // The key refresh notices (bounded, not after the pool's 10 s) and keeps the set.
    wait_for(
        "a failed key refresh is counted",
        Duration::from_secs(5),
        || async {
            metric_value(&p.metrics().await, "tollgate_key_refresh_errors_total", &[]) >= 1.0
        },
    )
    .await;
    assert_eq!(get(&client, &url, Some(&valid_plain)).await.status(), 200);
    assert_eq!(
        get(&client, &url, Some(&disabled_plain)).await.status(),
        403
    );

    pg.start_server();
    let want = (2 + count(0)) as i64;
    wait_for("outage usage written", Duration::from_secs(30), || async {
        usage_of(&db, valid.id).await.allowed == want
    })
    .await;
    let none = usage_of(&db, 0).await;
    assert_eq!(
        (none.unauthorized, none.forbidden),
        (count(1) as i64, (count(2) + count(3)) as i64 + 1),
        "refused requests are counted too"
    );
    let m = p.metrics().await;
    assert_eq!(metric_value(&m, "tollgate_usage_dropped_total", &[]), 0.0);
    drop(p);
    db.close().await;
}

// --- 5. background work, reloads, refusals ----------------------------------------

/// A keyed route to a test upstream, usage flushed quickly.
fn keyed_yaml(upstream_port: u16) -> String {
    format!(
        "usage:\n  flush_interval: 200ms\nplans:\n  free: {{ limits: [ {{ name: minute, rate: 2, per: 1m }} ] }}\nupstreams:\n  u: {{ targets: [\"127.0.0.1:{upstream_port}\"], health_check: {{ path: /health, interval: 200ms }} }}\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: u\n    strip_prefix: /api\n    default_plan: free\n"
    )
}

/// A flood of junk keys (and no keys) from 50 source addresses leaves a few
/// counted rows, not a row per request; a valid key over its limit still
/// leaves one row per refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_key_floods_from_many_addresses_leave_a_bounded_number_of_rows() {
    let up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
    let p = Proxy::start(dir, db.url(), "", &keyed_yaml(up.port)).await;
    let (_, good) = db.create_key(&named("good")).await.expect("key");
    let started = tollgate_core::now_ms();

    let mut tasks = JoinSet::new();
    for host in 1..=50u8 {
        let url = p.url("/api/x");
        tasks.spawn(async move {
            let client = reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 0, host]))
                .build()
                .expect("client");
            let mut statuses = Vec::new();
            for i in 0..22u32 {
                let key = match i % 11 {
                    0 => None,
                    1 => Some(format!("tg_{}", "A".repeat(38))),
                    _ => Some(format!("junk-{host}-{i}")),
                };
                statuses.push(get(&client, &url, key.as_deref()).await.status().as_u16());
            }
            statuses
        });
    }
    let mut refused = 0usize;
    while let Some(r) = tasks.join_next().await {
        for status in r.expect("client task") {
            assert!([401, 403, 429].contains(&status), "{status}");
            refused += 1;
        }
    }
    assert_eq!(refused, 1_100);
    // The valid key: 2 admitted, then 3 refused over its limit.
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            get(&client, &p.url("/api/x"), Some(&good))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429]);

    let range = tollgate_core::db::violation_aggregates::AggregateFilter {
        from: started - 60_000,
        to: tollgate_core::now_ms() + 60_000,
        ..Default::default()
    };
    wait_for("every refusal counted", Duration::from_secs(20), || async {
        db.list_violation_aggregates(&range)
            .await
            .is_ok_and(|(_, _, n)| n == 1_100)
    })
    .await;
    let (rows, total, _) = db.list_violation_aggregates(&range).await.expect("rows");
    // One client network, one route, 401/403/429 by reason, in at most two
    // minutes: a handful of rows for 1,100 refusals.
    assert!(total <= 12, "{total} rows: {rows:?}");
    assert!(rows.iter().all(|r| r.key.client_net == "127.0.0.0/24"));
    wait_for(
        "the valid key's refusals",
        Duration::from_secs(10),
        || async {
            db.list_violations(&tollgate_core::db::usage::ViolationFilter {
                from: 0,
                to: i64::MAX,
                ..Default::default()
            })
            .await
            .is_ok_and(|(_, n)| n == 3)
        },
    )
    .await;
    let (violations, n) = db
        .list_violations(&tollgate_core::db::usage::ViolationFilter {
            from: 0,
            to: i64::MAX,
            ..Default::default()
        })
        .await
        .expect("violations");
    assert_eq!(n, 3, "{violations:?}");
    assert!(violations
        .iter()
        .all(|v| v.status == 429 && v.key_id.is_some()));
}

/// The test hook makes the key refresh panic at every start: it is
/// restarted (and counted) again and again, while config reloads and health
/// checks go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_background_task_stops_none_of_the_others() {
    let mut up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
    let yaml = keyed_yaml(up.port);
    let p = Proxy::start_env(
        dir,
        db.url(),
        "",
        &yaml,
        &[("TOLLGATE_FAULT_PANIC", "key-refresh")],
    )
    .await;
    wait_for("key refresh restarted", Duration::from_secs(20), || async {
        metric_value(
            &p.metrics().await,
            "tollgate_background_restarts_total",
            &["task=\"key-refresh\""],
        ) >= 2.0
    })
    .await;
    let m = p.metrics().await;
    assert!(metric_value(&m, "tollgate_keys_last_refresh_timestamp_seconds", &[]) > 0.0);
    assert_eq!(
        metric_value(
            &m,
            "tollgate_background_restarts_total",
            &["task=\"config-reload\""]
        ),
        0.0
    );

    // Health checks still run: the stopped target is taken out.
    up.stop().await;
    wait_for("health check notices", Duration::from_secs(20), || async {
        metric_value(&p.metrics().await, "tollgate_upstream_targets_healthy", &[]) == 0.0
    })
    .await;
    up.restart().await;
    // Config reloads still apply: a new keyless route.
    let text = std::fs::read_to_string(&p.config).expect("config");
    let edited = format!(
        "{text}  - name: open\n    match: {{ path_prefix: /open }}\n    upstream: u\n    auth: none\n"
    );
    std::fs::write(&p.config, edited).expect("write");
    let client = reqwest::Client::new();
    wait_for("the reloaded route", Duration::from_secs(20), || async {
        get(&client, &p.url("/open/x"), None).await.status() == 200
    })
    .await;
    let restarts = metric_value(
        &p.metrics().await,
        "tollgate_background_restarts_total",
        &["task=\"key-refresh\""],
    );
    assert!(restarts >= 2.0, "{restarts}");
}

/// Truncated, emptied, half-written and deleted config files never replace
/// the running config; each refusal is counted; a good edit still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_config_edits_are_never_applied() {
    let up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
    let yaml = format!(
        "upstreams:\n  u: {{ targets: [\"127.0.0.1:{}\"] }}\nroutes:\n  - name: a\n    match: {{ path_prefix: /a }}\n    upstream: u\n    auth: none\n  - name: b\n    match: {{ path_prefix: /b }}\n    upstream: u\n    auth: none\n",
        up.port
    );
    let p = Proxy::start(dir, db.url(), "", &yaml).await;
    let full = std::fs::read_to_string(&p.config).expect("config");
    let client = reqwest::Client::new();
    let both_served = || async {
        get(&client, &p.url("/a"), None).await.status() == 200
            && get(&client, &p.url("/b"), None).await.status() == 200
    };
    assert!(both_served().await);
    let count = |m: &str, r: &str| {
        metric_value(
            m,
            "tollgate_config_reloads_total",
            &[&format!("result=\"{r}\"")],
        )
    };

    // Emptied (a failed `cmd > tollgate.yaml`): refused, counted.
    let m0 = p.metrics().await;
    std::fs::write(&p.config, "").expect("truncate");
    wait_for("empty file refused", Duration::from_secs(15), || async {
        count(&p.metrics().await, "failed") > count(&m0, "failed")
    })
    .await;
    assert!(both_served().await);
    // Cut before the routes: also no routes, refused.
    let m1 = p.metrics().await;
    let cut = &full[..full.find("routes:").expect("routes")];
    std::fs::write(&p.config, cut).expect("cut");
    wait_for("cut file refused", Duration::from_secs(15), || async {
        count(&p.metrics().await, "failed") > count(&m1, "failed")
    })
    .await;
    assert!(both_served().await);

    // Deleted: logged and counted as unreadable, the config stays.
    std::fs::remove_file(&p.config).expect("rm");
    wait_for("deleted file counted", Duration::from_secs(15), || async {
        count(&p.metrics().await, "unreadable") >= 1.0
    })
    .await;
    assert!(both_served().await);

    // Half written (route b cut off), completed 300 ms later: the half
    // file never applies, so /b never stops being served.
    let ok_before = count(&p.metrics().await, "ok");
    let half = &full[..full.find("  - name: b").expect("route b")];
    std::fs::write(&p.config, half).expect("half");
    let written = Instant::now();
    let mut completed = false;
    while written.elapsed() < Duration::from_millis(2_500) {
        if !completed && written.elapsed() >= Duration::from_millis(300) {
            let edited = full.replace("path_prefix: /a", "path_prefix: /a2");
            std::fs::write(&p.config, edited).expect("complete");
            completed = true;
        }
        assert_eq!(get(&client, &p.url("/b"), None).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for("the completed edit", Duration::from_secs(15), || async {
        get(&client, &p.url("/a2"), None).await.status() == 200
    })
    .await;
    assert_eq!(get(&client, &p.url("/b"), None).await.status(), 200);
    assert_eq!(count(&p.metrics().await, "ok"), ok_before + 1.0);
}

/// A key whose plan exists nowhere is refused (403 unknown-plan) and
/// counted, never served with some other plan's limits; plan names defined
/// in the YAML and in the database at once stop the proxy from starting
/// and refuse a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_doubly_defined_plans_fail_closed() {
    let up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
    let yaml = keyed_yaml(up.port);
    let p = Proxy::start(dir, db.url(), "", &yaml).await;
    let (_, orphan) = db
        .create_key(&NewApiKey {
            name: "orphan".into(),
            plan: Some("gold".into()),
            ..NewApiKey::default()
        })
        .await
        .expect("key");
    let client = reqwest::Client::new();
    wait_for("the new key is known", Duration::from_secs(10), || async {
        let r = get(&client, &p.url("/api/x"), Some(&orphan)).await;
        r.status() == 403 && problem_type(r).await.ends_with("/unknown-plan")
    })
    .await;
    for _ in 0..5 {
        let r = get(&client, &p.url("/api/x"), Some(&orphan)).await;
        assert_eq!(r.status(), 403);
        assert!(problem_type(r).await.ends_with("/unknown-plan"));
    }
    assert!(metric_value(&p.metrics().await, "tollgate_unknown_plan_total", &[]) >= 5.0);
    assert_eq!(up.hits(), 0, "nothing forwarded");

    // A database plan named like a YAML plan: a reload adding it is refused.
    let limit = tollgate_core::limits::Limit {
        name: "m".into(),
        rate: 1000,
        per: Duration::from_secs(60),
        burst: None,
        cost: None,
        quota: None,
        scope: Default::default(),
    };
    db.create_plan("gold", std::slice::from_ref(&limit), None)
        .await
        .expect("db plan");
    wait_for(
        "the plan serves the key",
        Duration::from_secs(10),
        || async { get(&client, &p.url("/api/x"), Some(&orphan)).await.status() == 200 },
    )
    .await;
    let m0 = p.metrics().await;
    let text = std::fs::read_to_string(&p.config).expect("config");
    let doubled = text.replace(
        "plans:\n",
        "plans:\n  gold: { limits: [ { name: m, rate: 1, per: 1m } ] }\n",
    );
    assert_ne!(doubled, text);
    std::fs::write(&p.config, &doubled).expect("write");
    wait_for("reload refused", Duration::from_secs(15), || async {
        metric_value(
            &p.metrics().await,
            "tollgate_config_reloads_total",
            &["result=\"failed\""],
        ) > metric_value(&m0, "tollgate_config_reloads_total", &["result=\"failed\""])
    })
    .await;
    assert_eq!(
        get(&client, &p.url("/api/x"), Some(&orphan)).await.status(),
        200
    );

    // Started on that file, the proxy refuses and names the plan.
    let out = tollgate()
        .arg("proxy")
        .arg("--config")
        .arg(&p.config)
        .output()
        .expect("run proxy");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"gold\"") && err.contains("both"), "{err}");
}

/// The config path briefly becomes a named pipe (or any non-regular file):
/// nothing waits for a writer. The reload counts it as unreadable, and the
/// other background work goes on meanwhile: a key disabled while the pipe is
/// there is refused within the key refresh, and once the file is back an edit
/// applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_pipe_in_place_of_the_config_stalls_nothing() {
    let up = Upstream::start("u", free_port()).await;
    let (dir, db) = sqlite().await;
    let (key, plain) = db.create_key(&named("fifo")).await.expect("key");
    let yaml = format!(
        "upstreams:\n  u: {{ targets: [\"127.0.0.1:{}\"] }}\nroutes:\n  - name: a\n    match: {{ path_prefix: /a }}\n    upstream: u\n",
        up.port
    );
    let p = Proxy::start(dir, db.url(), "", &yaml).await;
    let full = std::fs::read_to_string(&p.config).expect("config");
    let client = reqwest::Client::new();
    assert_eq!(
        get(&client, &p.url("/a"), Some(plain.as_str()))
            .await
            .status(),
        200
    );

    std::fs::remove_file(&p.config).expect("rm");
    let made = std::process::Command::new("mkfifo")
        .arg(&p.config)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    wait_for(
        "the pipe counted as unreadable",
        Duration::from_secs(15),
        || async {
            metric_value(
                &p.metrics().await,
                "tollgate_config_reloads_total",
                &["result=\"unreadable\""],
            ) >= 1.0
        },
    )
    .await;
    // Revocations still reach the proxy while the pipe is there.
    db.set_key_enabled(key.id, false).await.expect("disable");
    wait_for(
        "the disabled key refused",
        Duration::from_secs(15),
        || async {
            get(&client, &p.url("/a"), Some(plain.as_str()))
                .await
                .status()
                == 403
        },
    )
    .await;

    // The file back, with an edit: applied.
    std::fs::remove_file(&p.config).expect("rm pipe");
    std::fs::write(
        &p.config,
        full.replace("path_prefix: /a", "path_prefix: /a2"),
    )
    .expect("restore");
    db.set_key_enabled(key.id, true).await.expect("enable");
    wait_for(
        "the edit after the pipe",
        Duration::from_secs(15),
        || async {
            get(&client, &p.url("/a2"), Some(plain.as_str()))
                .await
                .status()
                == 200
        },
    )
    .await;
}
