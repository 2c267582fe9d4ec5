//! Slow and greedy clients through a real Pingora listener: every request
//! header of a keep-alive connection must arrive within
//! `proxy.header_timeout` of its first byte (408 + close), an idle
//! keep-alive connection is closed after `proxy.keepalive_timeout`, a
//! stalled request body gets 408 at `proxy.body_timeout`, and a trusted
//! load balancer is not capped by `max_connections_per_ip`.

mod common;

use std::time::{Duration, Instant};

use common::raw;
use common::{Store, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SLOW: &str = r#"
proxy:
  listen: "{listen}"
  metrics_listen: "{metrics}"
  threads: 2
  header_timeout: 1s
  keepalive_timeout: 3s
plans:
  free: { limits: [ { name: minute, rate: 100000, per: 1m } ] }
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - { name: open, match: { path_prefix: /open }, upstream: demo, strip_prefix: /open, auth: none }
  - { name: keyed, match: { path_prefix: /keyed }, upstream: demo, strip_prefix: /keyed, default_plan: free }
"#;

/// Send `req` and read one whole response (with a `Content-Length` body).
async fn one_exchange(s: &mut TcpStream, req: &[u8]) -> String {
    s.write_all(req).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&out).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = raw::parse(&text)
                .header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "no whole response: {text}");
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed mid-response: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

/// Trickle `bytes` one at a time every 100 ms until the proxy closes the
/// connection; what it answered, and how long after the first byte.
async fn trickle_until_closed(s: &mut TcpStream, bytes: &[u8]) -> (String, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    for b in bytes.iter().cycle() {
        // The trickle would take minutes; the proxy must cut it long before.
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still open after 30 s: {}",
            String::from_utf8_lossy(&out)
        );
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    // Whatever is still buffered.
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).to_string(), start.elapsed())
}

fn assert_408_in_time(what: &str, text: &str, took: Duration) {
    assert!(
        took >= Duration::from_millis(900),
        "{what}: cut early, {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "{what}: closed after {took:?}"
    );
    let r = raw::parse(text);
    assert_eq!(r.status, 408, "{what}: {text}");
    assert_eq!(r.header("connection"), Some("close"), "{what}: {text}");
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
}

/// F9: one quick request, then the next header trickled on the same
/// connection: 408 at `header_timeout` from its first byte, then closed;
/// likewise after a 401 that keeps the connection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_keep_alive_request_header_has_the_header_deadline() {
    let p = TestProxy::start(SLOW, Store::Sqlite).await.expect("sqlite");
    let slow = b"GET /open/users HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for (what, first, status) in [
        (
            "after a 200",
            &b"GET /open/users HTTP/1.1\r\nHost: t\r\n\r\n"[..],
            200,
        ),
        (
            "after a 401",
            &b"GET /keyed/users HTTP/1.1\r\nHost: t\r\n\r\n"[..],
            401,
        ),
    ] {
        let mut s = raw::connect(None, p.addr).await;
        let text = one_exchange(&mut s, first).await;
        let r = raw::parse(&text);
        assert_eq!(r.status, status, "{what}: {text}");
        assert_ne!(r.header("connection"), Some("close"), "{what}: {text}");
        let (text, took) = trickle_until_closed(&mut s, slow).await;
        assert_408_in_time(what, &text, took);
    }
    // Several quick requests in a row on one connection are all served.
    let mut s = raw::connect(None, p.addr).await;
    for _ in 0..3 {
        let text = one_exchange(&mut s, b"GET /open/users HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(raw::parse(&text).status, 200, "{text}");
    }
}

/// An idle keep-alive connection is closed after `keepalive_timeout` (3 s),
/// quietly (no answer); one that idles less is served again, however long
/// that is past `header_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_after_keepalive_timeout() {
    let p = TestProxy::start(SLOW, Store::Sqlite).await.expect("sqlite");
    let req = b"GET /open/users HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut s = raw::connect(None, p.addr).await;
    let text = one_exchange(&mut s, req).await;
    assert_eq!(raw::parse(&text).status, 200, "{text}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = one_exchange(&mut s, req).await;
    assert_eq!(raw::parse(&text).status, 200, "{text}");
    closes_quietly_after(&mut s, Duration::from_millis(2500)).await;
}

/// The idle connection `s` is closed, without an answer, no sooner than
/// `at_least` and within 15 s.
async fn closes_quietly_after(s: &mut TcpStream, at_least: Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    let took = start.elapsed();
    assert!(read.is_ok(), "an idle connection still open after 30 s");
    assert!(took >= at_least, "cut early: {took:?}");
    assert!(took < Duration::from_secs(15), "closed after {took:?}");
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
}

/// A reload that shortens `keepalive_timeout` applies to connections
/// already open: after their next request they idle the new time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_keepalive_timeout_applies_to_open_connections() {
    let long = SLOW.replace("keepalive_timeout: 3s", "keepalive_timeout: 60s");
    let p = TestProxy::start(&long, Store::Sqlite)
        .await
        .expect("sqlite");
    let req = b"GET /open/users HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut s = raw::connect(None, p.addr).await;
    let text = one_exchange(&mut s, req).await;
    assert_eq!(raw::parse(&text).status, 200, "{text}");
    let reloads =
        |t: &str| common::metric_value(t, "tollgate_config_reloads_total", &["result=\"ok\""]);
    let before = reloads(&p.metrics_text().await);
    let yaml = std::fs::read_to_string(&p.config_path).expect("config");
    let short = yaml.replace("keepalive_timeout: 60s", "keepalive_timeout: 2s");
    assert_ne!(short, yaml);
    std::fs::write(&p.config_path, short).expect("write");
    let start = Instant::now();
    while reloads(&p.metrics_text().await) <= before {
        assert!(start.elapsed() < Duration::from_secs(10), "no reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The next request on the open connection reads the new value.
    let text = one_exchange(&mut s, req).await;
    assert_eq!(raw::parse(&text).status, 200, "{text}");
    closes_quietly_after(&mut s, Duration::from_millis(1500)).await;
}

const BALANCED: &str = r#"
proxy:
  listen: "{listen}"
  metrics_listen: "{metrics}"
  threads: 2
  max_connections_per_ip: 3
  trusted_proxies: [127.0.0.1/32]
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - { name: open, match: { path_prefix: /open }, upstream: demo, strip_prefix: /open, auth: none }
"#;

/// F2: a trusted load balancer (127.0.0.1) carries many clients: its own
/// address is not capped by `max_connections_per_ip` (3 here), while an
/// untrusted address still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_balancer_is_not_capped_by_its_own_address() {
    let p = TestProxy::start(BALANCED, Store::Sqlite)
        .await
        .expect("sqlite");
    let lb = raw::ip("127.0.0.1");
    let req = b"GET /open/users HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.5\r\nConnection: close\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(raw::connect(lb, p.addr).await);
    }
    // Give the proxy time to take (and count) every held connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        let resp = raw::exchange(lb, p.addr, req, Duration::from_secs(10)).await;
        assert_eq!(raw::statuses(&resp), vec![200], "request {i}: {resp}");
    }
    // The held connections are served too.
    for s in held.iter_mut().take(2) {
        let text = one_exchange(s, b"GET /open/users HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(raw::parse(&text).status, 200, "{text}");
    }
    // An untrusted address is still capped.
    let mut hogged = Vec::new();
    assert!(
        raw::fill_connection_cap(raw::ip("127.0.0.7"), p.addr, b"", req, &mut hogged).await,
        "a fourth connection from 127.0.0.7 was always served"
    );
}

/// With the PROXY protocol the cap applies to the source the header names,
/// not to the balancer that sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_proxy_protocol_the_cap_is_the_sources() {
    let yaml = BALANCED.replace("  threads: 2\n", "  threads: 2\n  proxy_protocol: true\n");
    let p = TestProxy::start(&yaml, Store::Sqlite)
        .await
        .expect("sqlite");
    let lb = raw::ip("127.0.0.1");
    let header = |src: &str| format!("PROXY TCP4 {src} 127.0.0.1 5555 80\r\n");
    let req = "GET /open/users HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let mut held = Vec::new();
    let source = header("198.51.100.7");
    assert!(
        raw::fill_connection_cap(lb, p.addr, source.as_bytes(), req.as_bytes(), &mut held).await,
        "a fourth connection of one PROXY source was always served"
    );
    // Another source through the same balancer is not affected.
    let other = format!("{}{req}", header("198.51.100.8"));
    let resp = raw::exchange(lb, p.addr, other.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(raw::statuses(&resp), vec![200], "{resp}");
}

const BODY: &str = r#"
proxy:
  listen: "{listen}"
  metrics_listen: "{metrics}"
  threads: 2
  body_timeout: 1s
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - { name: open, match: { path_prefix: /open }, upstream: demo, strip_prefix: /open, auth: none }
"#;

/// F10/F11: a request body that stops coming (none at all, or stalled half
/// way) gets `408 Request Timeout` at `body_timeout` (1 s here) and the
/// connection is closed; it is the client's fault, not an upstream error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_gets_408_at_body_timeout() {
    let p = TestProxy::start(BODY, Store::Sqlite).await.expect("sqlite");
    for (what, sent) in [("no body", ""), ("half a body", "{\"name\": \"half")] {
        let mut s = raw::connect(None, p.addr).await;
        let req = format!(
            "POST /open/users HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{sent}"
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let start = Instant::now();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
        let took = start.elapsed();
        assert!(read.is_ok(), "{what}: still open after 30 s");
        assert!(
            took >= Duration::from_millis(900),
            "{what}: cut early, {took:?}"
        );
        assert!(
            took < Duration::from_secs(15),
            "{what}: closed after {took:?}"
        );
        let text = String::from_utf8_lossy(&out);
        let r = raw::parse(&text);
        assert_eq!(r.status, 408, "{what}: {text}");
        assert_eq!(r.header("connection"), Some("close"), "{what}: {text}");
        assert_eq!(r.json()["body_timeout_ms"], 1000, "{what}: {text}");
    }
    let m = p.metrics_text().await;
    assert_eq!(
        common::metric_value(&m, "tollgate_requests_total", &["open", "upstream_error"]),
        0.0,
        "{m}"
    );
    assert!(
        common::metric_value(&m, "tollgate_requests_total", &["\"open\"", "bad_request"]) >= 2.0,
        "{m}"
    );
    // A body sent in pieces, each within the timeout, is served.
    let mut s = raw::connect(None, p.addr).await;
    let body = b"{\"name\":\"Slow\",\"email\":\"slow@example.com\"}";
    let head = format!(
        "POST /open/users HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    for chunk in body.chunks(body.len() / 3 + 1) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(chunk).await.expect("write");
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(raw::statuses(&text), vec![201], "{text}");
}

/// Black-box round 13: an h2 POST with `content-length: 100000` and no
/// DATA frames got `504` at the upstream's read timeout, counted as an
/// upstream error. Now `408` problem+json `body_timeout` for that stream,
/// counted `bad_request`; the connection serves on. (Pingora 0.9.1 has no
/// h2 body read timeout: it comes at `timeouts.read`, 3 s here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http2_request_body_gets_408() {
    let yaml = BODY
        .replace("  body_timeout: 1s\n", "  body_timeout: 1s\n  h2c: true\n")
        .replace(
            "demo: { targets: [\"{upstream}\"] }",
            "demo: { targets: [\"{upstream}\"], timeouts: { read: 3s } }",
        );
    let p = TestProxy::start(&yaml, Store::Sqlite)
        .await
        .expect("sqlite");
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    // The counters are the process's: other tests of this file count too.
    let count = |m: &str, outcome: &str| {
        common::metric_value(m, "tollgate_requests_total", &["route=\"open\"", outcome])
    };
    let m = p.metrics_text().await;
    let (errors, bad) = (count(&m, "upstream_error"), count(&m, "bad_request"));
    let never = futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>();
    let start = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        client
            .post(p.url("/open/users"))
            .header("content-type", "application/json")
            .header("content-length", "100000")
            .body(reqwest::Body::wrap_stream(never))
            .send(),
    )
    .await
    .expect("no answer in 30 s")
    .expect("h2c");
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 408);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: serde_json::Value = r.json().await.expect("problem");
    assert_eq!(body["body_timeout_ms"], 1000, "{body}");
    // Only that stream ended: the connection serves on.
    let r = client.get(p.url("/open/users")).send().await.expect("h2c");
    assert_eq!(r.status(), 200);
    let m = p.metrics_text().await;
    assert_eq!(count(&m, "upstream_error"), errors, "{m}");
    assert!(count(&m, "bad_request") > bad, "{m}");
}

/// Round 14 (pipelining): the start of the next request's header sent in
/// the same write as a whole request. Its bytes sat in Pingora's buffer,
/// so no read started its deadline and the connection waited out the
/// keep-alive wait (3 s here) and closed without an answer. Now: the first
/// answered, then 408 at `header_timeout` (1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_partial_header_gets_the_header_deadline() {
    let p = TestProxy::start(SLOW, Store::Sqlite).await.expect("sqlite");
    let mut s = raw::connect(None, p.addr).await;
    let text = one_exchange(
        &mut s,
        b"GET /open/users HTTP/1.1\r\nHost: t\r\n\r\nGET /open/users HTTP/1.1\r\nHost: t\r\n",
    )
    .await;
    assert_eq!(raw::parse(&text).status, 200, "{text}");
    let answered = Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    let took = answered.elapsed();
    assert!(read.is_ok(), "still open after 20 s");
    let rest = String::from_utf8_lossy(&out);
    assert_408_in_time("a pipelined partial header", &rest, took);
    assert!(took < Duration::from_millis(2500), "closed after {took:?}");
}

/// Round 14 (pipelining): a client that pipelines requests and reads none
/// of the answers held its connection for ever: Pingora times writes of a
/// body, not of a header. Now every write on the connection (the proxy's
/// own answers, 404 here, and the upstream's) makes progress within
/// `body_timeout` or the connection ends; with one connection allowed per
/// address, the address can connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reading_none_of_the_answers_is_cut() {
    let yaml = SLOW.replace(
        "  keepalive_timeout: 3s\n",
        "  keepalive_timeout: 60s\n  body_timeout: 1s\n  max_connections_per_ip: 1\n",
    );
    let p = TestProxy::start(&yaml, Store::Sqlite)
        .await
        .expect("sqlite");
    for one in [
        &b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        &b"GET /open/users HTTP/1.1\r\nHost: t\r\n\r\n"[..],
    ] {
        flood_unread(&p, one).await;
    }
}

/// Pipeline `one` over and over on one connection that reads nothing, then
/// wait until its address may connect again (its one connection is gone).
async fn flood_unread(p: &TestProxy, one: &[u8]) {
    let what = String::from_utf8_lossy(one)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut flood = sock.connect(p.addr).await.expect("connect");
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    // Write until the proxy stops reading (its answers have filled every
    // buffer) or the connection is gone.
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(60) {
        match tokio::time::timeout(Duration::from_secs(2), flood.write_all(&batch)).await {
            Ok(Ok(())) => sent += 1000,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    assert!(sent >= 1000, "{what}: the proxy read nothing");
    // The blocked answer times out after 1 s: the one connection of this
    // address is free again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = raw::exchange(
            None,
            p.addr,
            b"GET /open/users HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        if raw::statuses(&r) == vec![200] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the unread connection still holds the address's slot ({sent} requests sent): {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(flood);
}
