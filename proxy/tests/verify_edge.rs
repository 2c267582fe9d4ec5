//! The verify listener (`verify.listen`) and the metrics listener
//! (`proxy.metrics_listen`) behind the proxy's connection edge, through real
//! Pingora listeners (attack round 3, B2/B11/B12): a header trickled past
//! `header_timeout` gets 408 and is closed; connections over
//! `max_connections_per_ip` are refused and counted; the proxy's framing
//! checks (CL+TE, repeated Content-Length) are 400 + close;
//! `Expect: 100-continue` is answered; a JSON array body is refused; `HEAD`
//! is judged as the proxy judges it; two `Authorization` headers are 400
//! and a body in a `Content-Encoding` is 415 (round 10, as the admin API);
//! a header too large or with too many fields is 431 (round 12).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::raw::{self, RawResponse};
use common::{free_port, metric_value, Store, TestProxy};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_core::db::NewApiKey;
use tollgate_core::rules::access::Scopes;

fn yaml(verify_port: u16) -> String {
    format!(
        r#"
proxy:
  listen: "{{listen}}"
  metrics_listen: "{{metrics}}"
  threads: 2
  header_timeout: 1s
  keepalive_timeout: 30s
  max_connections_per_ip: 3
verify:
  listen: "127.0.0.1:{verify_port}"
plans:
  roomy: {{ limits: [ {{ name: w{verify_port}, rate: 1000, per: 1h }} ] }}
upstreams:
  up: {{ targets: ["{{upstream}}"] }}
routes:
  - {{ name: users, match: {{ path_prefix: /api/users }}, upstream: up }}
"#
    )
}

async fn start() -> (TestProxy, SocketAddr, String) {
    let port = free_port();
    let p = TestProxy::start(&yaml(port), Store::Sqlite)
        .await
        .expect("sqlite");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let (_, token) =
        p.db.create_service_token("tests", None)
            .await
            .expect("token");
    // The listener is up and knows the token.
    let start = Instant::now();
    loop {
        let r = post(addr, &token, "", br#"{"key":"x"}"#).await;
        if r.status == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "verify never accepted the token: {}",
            r.raw
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (p, addr, token)
}

/// One `POST /v1/verify` with `extra` header lines, on its own connection.
async fn post(addr: SocketAddr, token: &str, extra: &str, body: &[u8]) -> RawResponse {
    let mut req = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: v\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw::send(None, addr, &req).await
}

/// Send `start` then trickle `rest` one byte a second; what the listener
/// answered, and whether it closed the connection, within `wait`.
async fn trickle(addr: SocketAddr, start: &[u8], rest: &[u8], wait: Duration) -> (String, bool) {
    let mut s = raw::connect(None, addr).await;
    s.write_all(start).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    let mut i = 0;
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {
                if let Some(b) = rest.get(i) {
                    if s.write_all(&[*b]).await.is_err() {
                        return (String::from_utf8_lossy(&out).into_owned(), true);
                    }
                    i += 1;
                }
            }
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_listeners_time_out_trickled_headers() {
    let (p, verify, _) = start().await;
    let header = b"ization: Bearer tgs_x\r\nContent-Type: application/json\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    // header_timeout is 1 s: long before 20 s the header is refused.
    for (name, addr, start) in [
        (
            "verify",
            verify,
            &b"POST /v1/verify HTTP/1.1\r\nHost: v\r\nAuthor"[..],
        ),
        (
            "metrics",
            p.metrics,
            &b"GET /metrics HTTP/1.1\r\nHost: m\r\nAuthor"[..],
        ),
    ] {
        let began = Instant::now();
        let (got, closed) = trickle(addr, start, header, Duration::from_secs(20)).await;
        assert!(closed, "{name}: still open after 20 s: {got:?}");
        assert_eq!(raw::statuses(&got), vec![408], "{name}: {got:?}");
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "{name}: closed only after {:?}",
            began.elapsed()
        );
    }
    // After a complete request, a trickled second header on the same
    // connection gets its own deadline.
    let mut s = raw::connect(None, p.metrics).await;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\nGET /metrics HTTP/1.1\r\nHo")
        .await
        .expect("write");
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    assert!(
        r.is_ok(),
        "metrics: a trickled second header kept the connection"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:.200}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_listeners_cap_connections_per_address() {
    let (p, verify, token) = start().await;
    let before = metric_value(
        &p.metrics_text().await,
        "tollgate_connections_refused_total",
        &["per_ip_cap"],
    );
    let probe = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: v\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{{\"key\":\"x\"}}"
    );
    let mut held = Vec::new();
    assert!(
        raw::fill_connection_cap(
            raw::ip("127.0.0.61"),
            verify,
            b"",
            probe.as_bytes(),
            &mut held
        )
        .await,
        "verify: a 4th connection from one address was served (cap 3)"
    );
    // Another address is not affected.
    let r = raw::send(raw::ip("127.0.0.62"), verify, probe.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let metrics_probe = b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n";
    let mut held_m = Vec::new();
    assert!(
        raw::fill_connection_cap(
            raw::ip("127.0.0.63"),
            p.metrics,
            b"",
            metrics_probe,
            &mut held_m
        )
        .await,
        "metrics: a 4th connection from one address was served (cap 3)"
    );
    let after = metric_value(
        &p.metrics_text().await,
        "tollgate_connections_refused_total",
        &["per_ip_cap"],
    );
    assert!(
        after >= before + 2.0,
        "refusals not counted: {before} -> {after}"
    );
    // Released when they close.
    drop(held);
    let start = Instant::now();
    loop {
        let r = raw::send(raw::ip("127.0.0.61"), verify, probe.as_bytes()).await;
        if r.status == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_applies_the_proxys_framing_rules() {
    let (_p, verify, token) = start().await;
    let body = br#"{"key":"x"}"#;
    // Content-Length beside chunked, the body sent chunked (B11).
    let req = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: v\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n\
         b\r\n{{\"key\":\"x\"}}\r\n0\r\n\r\n"
    );
    let got = raw::exchange(None, verify, req.as_bytes(), Duration::from_secs(10)).await;
    let r = raw::parse(&got);
    assert_eq!(r.status, 400, "{got}");
    assert_eq!(r.header("connection"), Some("close"), "{got}");
    assert_eq!(r.json()["reason"], "content-length-and-transfer-encoding");
    assert_eq!(raw::statuses(&got), vec![400], "{got}");
    // Two Content-Lengths, a list-valued one.
    for cl in [
        "Content-Length: 11\r\nContent-Length: 11\r\n",
        "Content-Length: 11, 11\r\n",
    ] {
        let req = format!(
            "POST /v1/verify HTTP/1.1\r\nHost: v\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\n{cl}\r\n{{\"key\":\"x\"}}"
        );
        let got = raw::exchange(None, verify, req.as_bytes(), Duration::from_secs(10)).await;
        assert_eq!(raw::statuses(&got), vec![400], "{cl:?}: {got}");
    }
    // Expect: 100-continue is answered before the body is sent.
    let mut s = raw::connect(None, verify).await;
    let head = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: v\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("no 100 Continue within 10 s")
        .expect("read");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.starts_with("HTTP/1.1 100"), "{first}");
    s.write_all(body).await.expect("write");
    let mut out = first.into_bytes();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if String::from_utf8_lossy(&out).contains("\"valid\"") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(raw::statuses(&text), vec![100, 200], "{text}");
    // Another expectation: 417, closed.
    let r = post(verify, &token, "Expect: the-moon\r\n", body).await;
    assert_eq!(r.status, 417, "{}", r.raw);
    // A JSON array (serde's positional form) is no verify request (B12).
    let r = post(verify, &token, "", br#"["tg_x",null,null,null,null]"#).await;
    assert_eq!(r.status, 400, "{}", r.raw);
    assert_eq!(r.json()["field"], "body", "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_the_proxy_judge_head_alike() {
    let (p, verify, token) = start().await;
    let (_, plain) = p
        .create_key(NewApiKey {
            name: "get-only".into(),
            plan: Some("roomy".into()),
            scopes: Some(Scopes {
                routes: None,
                methods: Some(vec!["GET".into()]),
            }),
            ..NewApiKey::default()
        })
        .await;
    let check = |method: &'static str| {
        let plain = plain.clone();
        let token = token.clone();
        async move {
            let body = json!({"key": plain, "route": "users", "method": method}).to_string();
            let r = post(verify, &token, "", body.as_bytes()).await;
            assert_eq!(r.status, 200, "{}", r.raw);
            r.json()
        }
    };
    let start = Instant::now();
    while check("GET").await["code"] == "key-invalid" {
        assert!(start.elapsed() < Duration::from_secs(15), "key never known");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = reqwest::Client::new();
    for method in ["GET", "HEAD", "POST"] {
        let v: Value = check(method).await;
        let proxied = client
            .request(method.parse().expect("method"), p.url("/api/users"))
            .header("x-api-key", &plain)
            .send()
            .await
            .expect("proxy")
            .status()
            .as_u16();
        // The proxy's scope refusal is 403 (the test upstream answers the
        // rest, 404 included).
        assert_eq!(
            v["valid"] == json!(true),
            proxied != 403,
            "{method}: verify {v}, proxy {proxied}"
        );
    }
}

/// Two service tokens (two `Authorization` lines, the valid one first or
/// twice) are 400, not the first one's answer; a body sent with
/// `Content-Encoding` is 415 with `Accept-Encoding: identity`, not parsed
/// as plain JSON (black-box round 10, as in the admin API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_two_credentials_and_coded_bodies() {
    let (_p, verify, token) = start().await;
    let body = br#"{"key":"x"}"#;
    for second in ["Bearer tgs_garbage".to_string(), format!("Bearer {token}")] {
        let r = post(
            verify,
            &token,
            &format!("Authorization: {second}\r\n"),
            body,
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.raw);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        let v = r.json();
        assert!(
            v["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("/bad-request")),
            "{v}"
        );
        assert!(
            v["detail"]
                .as_str()
                .is_some_and(|d| d.contains("more than one Authorization header")),
            "{v}"
        );
    }
    for coding in ["gzip", "br", "identity, deflate"] {
        let r = post(
            verify,
            &token,
            &format!("Content-Encoding: {coding}\r\n"),
            body,
        )
        .await;
        assert_eq!(r.status, 415, "{coding}: {}", r.raw);
        assert_eq!(r.header("accept-encoding"), Some("identity"), "{}", r.raw);
        assert!(
            r.json()["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("/unsupported-media-type")),
            "{}",
            r.raw
        );
    }
    // One token, no coding (or `identity`, which is none): decided.
    for extra in ["", "Content-Encoding: identity\r\n"] {
        let r = post(verify, &token, extra, body).await;
        assert_eq!(r.status, 200, "{extra:?}: {}", r.raw);
        assert_eq!(r.json()["valid"], false, "{}", r.raw);
    }
}

/// Round 12 (black-box): about 1,000 header fields closed the verify
/// connection without an answer. Too many fields (more than Pingora's parser
/// holds) or more than `proxy.max_header_bytes` is 431 problem+json, as on
/// the proxy listener, and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_answers_oversized_headers_with_431() {
    let (p, verify, token) = start().await;
    let many: String = (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "a".repeat(40 * 1024));
    for (what, extra, field) in [
        ("1000 fields", &many, "max_header_fields"),
        ("40 KiB", &big, "max_header_bytes"),
    ] {
        let req = format!(
            "POST /v1/verify HTTP/1.1\r\nHost: v\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n{extra}\r\n{{}}"
        );
        let resp = raw::exchange(None, verify, req.as_bytes(), Duration::from_secs(5)).await;
        let r = raw::parse(&resp);
        assert_eq!(r.status, 431, "{what}: {resp}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.header("connection"), Some("close"), "{what}: {resp}");
        let v = r.json();
        assert!(
            v["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("/header-too-large")),
            "{what}: {v}"
        );
        assert!(v[field].is_u64(), "{what}: {v}");
    }
    let m = p.metrics_text().await;
    assert!(metric_value(&m, "tollgate_edge_refused_total", &["header-too-large"]) >= 1.0);
    assert!(
        metric_value(
            &m,
            "tollgate_edge_refused_total",
            &["too-many-header-fields"]
        ) >= 1.0
    );
    // An ordinary request still passes.
    let r = post(verify, &token, "", br#"{"key":"x"}"#).await;
    assert_eq!(r.status, 200, "{}", r.raw);
}

/// Requests sent before the previous answer was read (pipelined, RFC 9112
/// §9.3.2) are answered in turn, as on the proxy listener; one with a
/// framing error still ends the connection after the answers before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_answers_pipelined_requests_in_turn() {
    let (_p, verify, token) = start().await;
    let one = |body: &str, last: bool| {
        format!(
            "POST /v1/verify HTTP/1.1\r\nHost: v\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if last { "Connection: close\r\n" } else { "" }
        )
    };
    let three = [
        one(r#"{"key":"a"}"#, false),
        one("[]", false),
        one(r#"{"key":"b"}"#, true),
    ]
    .concat();
    let got = raw::exchange(None, verify, three.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(raw::statuses(&got), vec![200, 400, 200], "{got}");
    // A bad one in the middle: the one before is answered, then 400 + close.
    let bad =
        "POST /v1/verify HTTP/1.1\r\nHost: v\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}";
    let req = [one(r#"{"key":"a"}"#, false), bad.into()].concat();
    let got = raw::exchange(None, verify, req.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(raw::statuses(&got), vec![200, 400], "{got}");
}
