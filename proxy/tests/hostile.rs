//! Hostile and odd input to the real proxy, over raw TCP: every answer is a
//! clear 4xx (or a closed connection), never a 5xx, a panic or a hang.

mod common;

use std::time::Duration;

use common::raw::{self, statuses};
use common::{named, Store, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
plans:
  free: { limits: [ { name: minute, rate: 1000, per: 1m } ] }
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - name: users
    match: { path_prefix: /api/users }
    upstream: demo
    strip_prefix: /api
    default_plan: free
"#;

/// Send raw bytes, read until the peer closes or 2 s pass.
async fn raw(p: &TestProxy, bytes: &[u8]) -> String {
    raw::exchange(None, p.addr, bytes, Duration::from_secs(2)).await
}

async fn setup() -> (TestProxy, String) {
    TestProxy::sqlite_with_key(CONFIG, "hostile").await
}

fn no_5xx(what: &str, response: &str) {
    for s in statuses(response) {
        assert!(s < 500, "{what}: got {s}\n{response}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_requests_get_4xx() {
    let (p, key) = setup().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "huge header",
            format!("GET /api/users HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nx-big: {}\r\n\r\n", "a".repeat(200_000)).into_bytes(),
        ),
        (
            "huge url",
            format!("GET /api/users?{} HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\r\n", "q".repeat(200_000)).into_bytes(),
        ),
        (
            "many headers",
            format!(
                "GET /api/users HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n{}\r\n",
                (0..500).map(|i| format!("x-h{i}: v\r\n")).collect::<String>()
            )
            .into_bytes(),
        ),
        ("garbage", b"\x00\x01\x02 not http at all\r\n\r\n".to_vec()),
        ("bad method", b"G\x01T /api/users HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "10 KB key",
            format!("GET /api/users HTTP/1.1\r\nHost: x\r\nx-api-key: tg_{}\r\nConnection: close\r\n\r\n", "A".repeat(10_000)).into_bytes(),
        ),
        (
            "invalid UTF-8 key",
            [b"GET /api/users HTTP/1.1\r\nHost: x\r\nx-api-key: tg_\xff\xfe\xfd\r\nConnection: close\r\n\r\n".as_slice()].concat(),
        ),
    ];
    for (what, bytes) in cases {
        let resp = raw(&p, &bytes).await;
        no_5xx(what, &resp);
    }
    let resp = raw(
        &p,
        format!(
            "GET /api/users HTTP/1.1\r\nHost: x\r\nx-api-key: tg_{}\r\nConnection: close\r\n\r\n",
            "A".repeat(10_000)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(statuses(&resp), vec![403], "{resp}");
    // The proxy is still fine afterwards.
    let r = p.get_with_key("/api/users", &key).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_and_pipelining_are_handled() {
    let (p, key) = setup().await;
    let resp = raw(
        &p,
        format!("GET /api/users HTTP/1.0\r\nx-api-key: {key}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(statuses(&resp), vec![200], "{resp}");

    let one = format!("GET /api/users/1 HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\r\n");
    let last = format!(
        "GET /api/users/2 HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n"
    );
    // Pipelined requests are served in turn, each on its own: no 5xx, no
    // crash, the keyless one is never forwarded.
    let resp = raw(
        &p,
        format!("{one}GET /api/users HTTP/1.1\r\nHost: x\r\n\r\n{last}").as_bytes(),
    )
    .await;
    let got = statuses(&resp);
    assert_eq!(got.first(), Some(&200), "{resp}");
    no_5xx("pipelining", &resp);
    assert_eq!(got, vec![200, 401, 200], "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_attempts_are_refused() {
    let (p, key) = setup().await;
    // Content-Length and Transfer-Encoding together (CL.TE).
    let smuggle = format!(
        "POST /api/users HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/users HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    let resp = raw(&p, smuggle.as_bytes()).await;
    no_5xx("CL+TE", &resp);
    // Whatever happens, the smuggled, keyless request must not be forwarded as 200.
    assert!(
        statuses(&resp).iter().filter(|&&s| s == 200).count() <= 1,
        "{resp}"
    );
    // Two different Content-Lengths.
    let resp = raw(&p, format!("POST /api/users HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde").as_bytes()).await;
    no_5xx("double CL", &resp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_block_others() {
    let (p, key) = setup().await;
    // Slowloris: send half a request and keep the connection open.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(p.addr).await.expect("connect");
        s.write_all(b"GET /api/users HTTP/1.1\r\nHost: x\r\nx-api-")
            .await
            .expect("write");
        slow.push(s);
    }
    let start = std::time::Instant::now();
    let r = p.get_with_key("/api/users", &key).await;
    assert_eq!(r.status(), 200);
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(slow);
}

/// Headers in numbers: sixty small ones pass (the demo upstream, hyper,
/// takes at most 100 itself); beyond what Pingora's parser takes (256), 500
/// are refused with a 4xx or the connection closed, never a 5xx, and the
/// proxy serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_headers_are_bounded() {
    let (p, key) = setup().await;
    let headers = |n: usize| (0..n).map(|i| format!("x-h{i}: v\r\n")).collect::<String>();
    let resp = raw(
        &p,
        format!(
            "GET /api/users HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n{}Connection: close\r\n\r\n",
            headers(60)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(statuses(&resp), vec![200], "60 headers: {resp}");
    let resp = raw(
        &p,
        format!(
            "GET /api/users HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n{}Connection: close\r\n\r\n",
            headers(500)
        )
        .as_bytes(),
    )
    .await;
    let got = statuses(&resp);
    assert!(
        got.iter().all(|s| (400..500).contains(s)),
        "500 headers: {resp}"
    );
    println!("500 headers: {got:?}");
    let r = p.get_with_key("/api/users", &key).await;
    assert_eq!(r.status(), 200);
}

/// Keys with the right prefix, length and alphabet but a wrong checksum are
/// refused by the format check (reason `malformed`), before any lookup in the
/// key set; a well-formed key that is not in the set is `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_checksum_is_refused_before_any_lookup() {
    let (p, key) = setup().await;
    assert_eq!(tollgate_core::keys::validate(&key), Ok(()));
    let client = reqwest::Client::new();
    let reason = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        let body: serde_json::Value = r.json().await.expect("json");
        body["reason"].as_str().unwrap_or_default().to_string()
    };
    // The real key with each of its last three (checksum) characters changed.
    for i in 1..=3 {
        let mut bytes = key.clone().into_bytes();
        let at = bytes.len() - i;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let wrong = String::from_utf8(bytes).expect("ascii");
        assert!(tollgate_core::keys::validate(&wrong).is_err(), "{wrong}");
        assert_eq!(wrong.len(), key.len());
        let r = client
            .get(p.url("/api/users"))
            .header("x-api-key", &wrong)
            .send()
            .await
            .expect("request");
        assert_eq!(reason(r).await, "malformed");
    }
    let unknown = tollgate_core::keys::generate().expect("key").plain;
    let r = client
        .get(p.url("/api/users"))
        .header("x-api-key", &unknown)
        .send()
        .await
        .expect("request");
    assert_eq!(reason(r).await, "unknown");
}

/// Downstream idle limits: a connection that sends nothing is closed after
/// `proxy.keepalive_timeout` (not Pingora's fixed 60 s), and so is a
/// kept-alive one idle after its request; a connection that sends in time
/// is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_keepalive_timeout() {
    let yaml = format!(
        "proxy:\n  listen: \"{{listen}}\"\n  metrics_listen: \"{{metrics}}\"\n  threads: 2\n  keepalive_timeout: 1s\n{CONFIG}"
    );
    let p = TestProxy::start(&yaml, Store::Sqlite)
        .await
        .expect("sqlite");
    let (_, key) = p.key(named("idle")).await;

    // Sends nothing at all.
    let start = std::time::Instant::now();
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let waited = start.elapsed();
    assert!(read.is_ok(), "a silent connection was still open after 5 s");
    assert!(out.is_empty());
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "closed after {waited:?}"
    );
    let m = p.metrics_text().await;
    assert!(common::metric_value(&m, "tollgate_idle_connections_closed_total", &[]) >= 1.0);

    // One request, then silence: closed after the keep-alive timeout.
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.write_all(
        format!("GET /api/users HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let waited = start.elapsed();
    assert!(
        read.is_ok(),
        "an idle kept-alive connection was still open after 5 s"
    );
    let resp = String::from_utf8_lossy(&out);
    assert_eq!(statuses(&resp), vec![200], "{resp}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "closed after {waited:?}"
    );
}

/// Round 14 (black-box): `Connection: host` (or another header the proxy
/// frames or sets) was refused by Pingora only after the key and limits:
/// a token spent, an upstream connection opened, an ERROR logged, and a
/// bare 400. Now a 400 problem with a reason at the edge, closed, counted,
/// and the key's one token is still there for its next real request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_options_naming_proxy_headers_are_refused_at_the_edge() {
    const ONE: &str = r#"
plans:
  free: { limits: [ { name: minute, rate: 1000, per: 1m } ] }
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - { name: users, match: { path_prefix: /api/users }, upstream: demo, strip_prefix: /api, default_plan: free }
  - { name: one, match: { path_prefix: /one }, upstream: demo, strip_prefix: /one, default_plan: free, limits: [ { name: one, rate: 1, per: 1h } ] }
  - { name: open, match: { path_prefix: /open }, upstream: demo, strip_prefix: /open, auth: none }
"#;
    let (p, key) = TestProxy::sqlite_with_key(ONE, "conn").await;
    // Ordinary options still work (on a keyless route: no token spent).
    for ok in ["keep-alive", "keep-alive, x-custom-hop", "TE"] {
        let r = raw::get(None, p.addr, "/open/users", &[("Connection", ok)]).await;
        assert_eq!(r.status, 200, "{ok}: {}", r.raw);
    }
    let refused = [
        "host",
        "x-forwarded-for",
        "keep-alive, X-Forwarded-Host",
        "content-length",
        "x-request-id",
        "\"x-forwarded-for\"",
    ];
    for bad in refused {
        let r = raw::get(
            None,
            p.addr,
            "/one/users",
            &[("x-api-key", &key), ("Connection", bad)],
        )
        .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.raw);
        assert_eq!(r.json()["reason"], "bad-connection", "{bad}: {}", r.raw);
        assert_eq!(r.header("connection"), Some("close"), "{bad}: {}", r.raw);
    }
    // The route's one token was not spent by the refusals.
    let ok = raw::get(None, p.addr, "/one/users", &[("x-api-key", &key)]).await;
    assert_eq!(ok.status, 200, "{}", ok.raw);
    let over = raw::get(None, p.addr, "/one/users", &[("x-api-key", &key)]).await;
    assert_eq!(over.status, 429, "{}", over.raw);
    let m = p.metrics_text().await;
    assert_eq!(
        common::metric_value(&m, "tollgate_edge_refused_total", &["bad-connection"]),
        refused.len() as f64,
        "{m}"
    );
}
