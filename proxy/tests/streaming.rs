//! Streaming both ways (issue #22 item 2), through a real Pingora listener:
//! server-sent events reach the client one by one as the upstream writes
//! them, and a chunked request body reaches the upstream piece by piece.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw;
use common::streams::{counting_upstream, sse_upstream, wait_until};
use common::TestProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EVENTS: usize = 10;
const EVERY: Duration = Duration::from_millis(100);

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
plans:
  free: {{ limits: [ {{ name: minute, rate: 100000, per: 1m }} ] }}
upstreams:
  up: {{ targets: ["{upstream}"] }}
  demo: {{ targets: ["{{upstream}}"] }}
routes:
  - {{ name: users, match: {{ path_prefix: /api/users }}, upstream: demo, strip_prefix: /api, default_plan: free }}
  - {{ name: stream, match: {{ path_prefix: /stream }}, upstream: up, default_plan: free }}
  - {{ name: open, match: {{ path_prefix: /open }}, upstream: up, auth: none }}
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
