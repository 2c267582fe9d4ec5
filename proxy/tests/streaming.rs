//! Streaming both ways (issue #22 item 2), through a real Pingora listener:
//! server-sent events reach the client one by one as the upstream writes
//! them, and a chunked request body reaches the upstream piece by piece;
//! a client that closes part way through a large answer is counted allowed,
//! and one that stops reading it is cut at `body_timeout`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw;
use common::streams::{
    counting_upstream, large_body_upstream, sse_upstream, wait_until, HeldUpstream,
};
use common::{metric_value, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_core::db::usage::UsageFilter;

const EVENTS: usize = 10;
const EVERY: Duration = Duration::from_millis(100);

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
usage: {{ flush_interval: 100ms }}
plans:
  free: {{ limits: [ {{ name: minute, rate: 100000, per: 1m }} ] }}
upstreams:
  up: {{ targets: ["{upstream}"] }}
  demo: {{ targets: ["{{upstream}}"] }}
routes:
  - {{ name: users, match: {{ path_prefix: /api/users }}, upstream: demo, strip_prefix: /api, default_plan: free }}
  - {{ name: stream, match: {{ path_prefix: /stream }}, upstream: up, default_plan: free }}
  - {{ name: open, match: {{ path_prefix: /open }}, upstream: up, auth: none }}
  - {{ name: cut, match: {{ path_prefix: /cut }}, upstream: up, default_plan: free }}
  - {{ name: gone, match: {{ path_prefix: /gone }}, upstream: up, default_plan: free }}
"#
    )
}

/// The latencies of each event (arrival minus the upstream's write time).
async fn read_events(
    mut resp: reqwest::Response,
    base: Instant,
    received: &AtomicUsize,
) -> Vec<Duration> {
    let mut text = String::new();
    let mut latencies = Vec::new();
    while let Ok(Ok(Some(chunk))) =
        tokio::time::timeout(Duration::from_secs(30), resp.chunk()).await
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let now = base.elapsed();
            let sent_us: u64 = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("not an event: {event:?}"));
            latencies.push(now.saturating_sub(Duration::from_micros(sent_us)));
            received.fetch_add(1, Ordering::SeqCst);
        }
    }
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_one_by_one() {
    let base = Instant::now();
    let received = Arc::new(AtomicUsize::new(0));
    let upstream = sse_upstream(EVENTS, EVERY, base, received.clone()).await;
    let (p, key) = TestProxy::sqlite_with_key(&config(upstream), "sse").await;
    let resp = reqwest::Client::new()
        .get(p.url("/stream/events"))
        .header("x-api-key", &key)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    // The upstream writes the next event only once this client has counted
    // the previous one: a proxy that holds events back (until a buffer
    // fills or the stream ends) cuts the stream short here.
    let latencies = read_events(resp, base, &received).await;
    assert_eq!(latencies.len(), EVENTS, "events arrived: {latencies:?}");
    // Each event arrived before the next one was due: well under the
    // 100 ms between events. The bound has room for a busy machine; the
    // typical figure (a few ms) is in benches/RESULTS.md.
    let mut sorted = latencies.clone();
    sorted.sort();
    assert!(
        sorted[EVENTS / 2] < EVERY,
        "median over {EVERY:?}: {latencies:?}"
    );
    assert!(
        latencies.iter().all(|l| *l < Duration::from_secs(2)),
        "{latencies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_request_body_streams_to_the_upstream() {
    let (upstream, seen) = counting_upstream().await;
    let p = TestProxy::start(&config(upstream), common::Store::Sqlite)
        .await
        .expect("sqlite");
    let mut s = raw::connect(None, p.addr).await;
    s.write_all(b"POST /open/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nfirst\r\n")
        .await
        .expect("first chunk");
    // The upstream holds the first chunk while the client has not sent the
    // last one.
    assert!(
        wait_until(Duration::from_secs(10), || seen.bytes() == 5).await,
        "the first chunk did not reach the upstream before the body ended (saw {} bytes)",
        seen.bytes()
    );
    for piece in ["second", "third"] {
        let before = seen.bytes();
        s.write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes())
            .await
            .expect("chunk");
        let want = before + piece.len() as u64;
        assert!(
            wait_until(Duration::from_secs(10), || seen.bytes() == want).await,
            "{piece}: upstream saw {}",
            seen.bytes()
        );
    }
    s.write_all(b"0\r\n\r\n").await.expect("last chunk");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let r = raw::parse(&String::from_utf8_lossy(&out));
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body, "16");
}

/// Black-box round 13: a client that reads 1 MB of a 20 MB answer and
/// closes was counted `upstream_error` (usage and metrics), so streaming
/// clients were not billed and upstream-error alerts fired. It was
/// admitted and served: `allowed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_mid_answer_counts_as_allowed() {
    const CUT: u64 = 3;
    let (upstream, _) = large_body_upstream(20 << 20).await;
    let (p, key) = TestProxy::sqlite_with_key(&config(upstream), "cut").await;
    for _ in 0..CUT {
        let mut s = raw::connect(None, p.addr).await;
        s.write_all(
            format!("GET /cut/big HTTP/1.1\r\nHost: t\r\nx-api-key: {key}\r\n\r\n").as_bytes(),
        )
        .await
        .expect("request");
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while got < 1 << 20 {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("the answer stalled")
                .expect("read");
            assert!(n > 0, "the answer ended after {got} bytes");
            if got == 0 {
                assert!(
                    buf.starts_with(b"HTTP/1.1 200"),
                    "{:?}",
                    String::from_utf8_lossy(&buf[..n.min(200)])
                );
            }
            got += n;
        }
        // Closed with unread data: the proxy's next writes fail.
        drop(s);
    }
    let outcome = |text: &str, o: &str| {
        metric_value(
            text,
            "tollgate_requests_total",
            &["route=\"cut\"", &format!("outcome=\"{o}\"")],
        )
    };
    let start = Instant::now();
    loop {
        let m = p.metrics_text().await;
        let (allowed, errors) = (outcome(&m, "allowed"), outcome(&m, "upstream_error"));
        assert_eq!(errors, 0.0, "a client's close counted as an upstream error");
        if allowed == CUT as f64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "allowed {allowed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filter = UsageFilter {
        from: 0,
        to: i64::MAX,
        ..UsageFilter::default()
    };
    let start = Instant::now();
    loop {
        let rows = p.db.usage_by_route(&filter).await.expect("usage");
        if let Some(c) = rows.iter().find(|r| r.route == "cut").map(|r| &r.counts) {
            assert_eq!(c.upstream_errors, 0, "{c:?}");
            if c.allowed == CUT as i64 {
                break;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "usage {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that hangs up while its request is at the upstream, before any
/// answer (B9: counted `upstream_error`, as if the upstream had failed).
/// It was admitted and sent on: `allowed`, with no status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_before_the_answer_counts_as_allowed() {
    let upstream = HeldUpstream::start().await;
    let (p, key) = TestProxy::sqlite_with_key(&config(upstream.addr), "gone").await;
    let mut s = raw::connect(None, p.addr).await;
    s.write_all(format!("GET /gone/x HTTP/1.1\r\nHost: t\r\nx-api-key: {key}\r\n\r\n").as_bytes())
        .await
        .expect("request");
    assert!(
        wait_until(Duration::from_secs(10), || upstream.seen() == 1).await,
        "the request reached the upstream"
    );
    drop(s);
    // The upstream answers only now, to a client that is gone: whether
    // Pingora saw the hang-up first or fails the write, it is the client's.
    tokio::time::sleep(Duration::from_millis(200)).await;
    upstream.release(0);
    let outcome = |text: &str, o: &str| {
        metric_value(
            text,
            "tollgate_requests_total",
            &["route=\"gone\"", &format!("outcome=\"{o}\"")],
        )
    };
    let start = Instant::now();
    loop {
        let m = p.metrics_text().await;
        let (allowed, errors) = (outcome(&m, "allowed"), outcome(&m, "upstream_error"));
        assert_eq!(
            errors, 0.0,
            "a client's hang-up counted as an upstream error"
        );
        if allowed == 1.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "allowed {allowed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A proxy in front of `big` (an answer of 20 MB) with a 2 s
/// `body_timeout` and room for one HTTP/2 stream per address.
fn stalled_config(big: std::net::SocketAddr) -> String {
    format!(
        r#"
proxy:
  listen: "{{listen}}"
  metrics_listen: "{{metrics}}"
  threads: 2
  h2c: true
  body_timeout: 2s
  max_connections_per_ip: 2
upstreams:
  big: {{ targets: ["{big}"] }}
  demo: {{ targets: ["{{upstream}}"] }}
routes:
  - {{ name: big, match: {{ path_prefix: /big }}, upstream: big, auth: none }}
  - {{ name: open, match: {{ path_prefix: /open }}, upstream: demo, strip_prefix: /open, auth: none }}
"#
    )
}

/// Wait (bounded) until the upstream's answers under way are `n`; how long
/// that took.
async fn until_open(open: &AtomicUsize, n: usize, within: Duration) -> Duration {
    let start = Instant::now();
    assert!(
        wait_until(within, || open.load(Ordering::SeqCst) == n).await,
        "{} upstream answers under way after {within:?}, not {n}",
        open.load(Ordering::SeqCst)
    );
    start.elapsed()
}

/// Wait (bounded) until route `big` counts `n` requests `allowed`, and
/// none as an upstream error.
async fn until_allowed(p: &TestProxy, n: f64) {
    let start = Instant::now();
    loop {
        let m = p.metrics_text().await;
        let count = |o: &str| {
            metric_value(
                &m,
                "tollgate_requests_total",
                &["route=\"big\"", &format!("outcome=\"{o}\"")],
            )
        };
        assert_eq!(count("upstream_error"), 0.0, "{m}");
        if count("allowed") == n {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Black-box round 13: a client that asks for a large answer and never
/// reads it held its upstream connection (and on HTTP/2 its stream slot)
/// ~75 s. A write that makes no progress for `body_timeout` ends the
/// request: counted `allowed` (the client's failure after admission), its
/// upstream connection closed, its connection (HTTP/1) or stream slot
/// (HTTP/2) freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_at_body_timeout() {
    let (big, open) = large_body_upstream(20 << 20).await;
    let p = TestProxy::start(&stalled_config(big), common::Store::Sqlite)
        .await
        .expect("sqlite");
    // HTTP/1, with a tiny receive buffer, never read.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut s = sock.connect(p.addr).await.expect("connect");
    s.write_all(b"GET /big/x HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("request");
    until_open(&open, 1, Duration::from_secs(10)).await;
    let took = until_open(&open, 0, Duration::from_secs(20)).await;
    assert!(took >= Duration::from_millis(1900), "cut early: {took:?}");
    until_allowed(&p, 1.0).await;
    // The proxy closed the client's connection too: what is buffered
    // drains, then it ends.
    let mut buf = vec![0u8; 64 * 1024];
    let start = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => assert!(start.elapsed() < Duration::from_secs(20), "still open"),
            Err(_) => panic!("the proxy left the connection open"),
        }
    }

    // HTTP/2: the stalled stream holds the address's one stream slot.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_initial_stream_window_size(65_535)
        .build()
        .expect("client");
    let held = client.get(p.url("/big/x")).send().await.expect("h2c");
    assert_eq!(held.version(), reqwest::Version::HTTP_2);
    assert_eq!(held.status(), 200);
    let r = client.get(p.url("/open/users")).send().await.expect("h2c");
    assert_eq!(r.status(), 429, "the stalled stream holds no slot");
    let took = until_open(&open, 0, Duration::from_secs(20)).await;
    assert!(took >= Duration::from_millis(500), "cut early: {took:?}");
    until_allowed(&p, 2.0).await;
    // The slot is free again: the same connection serves the next stream.
    let r = client.get(p.url("/open/users")).send().await.expect("h2c");
    assert_eq!(r.status(), 200);
    drop(held);
}
