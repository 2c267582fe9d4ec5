//! `routes[].max_body_bytes` (issue #22 item 4), through a real Pingora
//! listener in front of an upstream that counts the body bytes it receives:
//! a body over the cap, declared or streamed, gets 413 `body-too-large` and
//! the upstream never sees more than the cap.

mod common;

use std::time::Duration;

use common::raw;
use common::streams::{counting_upstream, wait_until};
use common::TestProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
plans:
  free: {{ limits: [ {{ name: minute, rate: 100000, per: 1m }} ] }}
upstreams:
  counting: {{ targets: ["{upstream}"] }}
routes:
  - {{ name: small, match: {{ path_prefix: /small }}, upstream: counting, auth: none, max_body_bytes: 1KiB }}
  - {{ name: keyed, match: {{ path_prefix: /keyed }}, upstream: counting, default_plan: free, max_body_bytes: 1KiB }}
  - {{ name: default, match: {{ path_prefix: /default }}, upstream: counting, auth: none }}
  - {{ name: uncapped, match: {{ path_prefix: /uncapped }}, upstream: counting, auth: none, max_body_bytes: 0 }}
"#
    )
}

async fn setup() -> (TestProxy, std::sync::Arc<common::streams::Seen>) {
    let (upstream, seen) = counting_upstream().await;
    let p = TestProxy::start(&config(upstream), common::Store::Sqlite)
        .await
        .expect("sqlite");
    (p, seen)
}

fn post(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n")
        .into_bytes();
    req.extend_from_slice(body);
    req
}

fn assert_413(r: &raw::RawResponse, cap: u64) {
    assert_eq!(r.status, 413, "{}", r.raw);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.raw
    );
    let j = r.json();
    assert!(
        j["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("body-too-large")),
        "{j}"
    );
    assert_eq!(j["max_body_bytes"], cap, "{j}");
    assert_eq!(r.header("connection"), Some("close"), "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_the_cap_never_reaches_the_upstream() {
    let (p, seen) = setup().await;
    let wait = Duration::from_secs(10);
    // Exactly the cap passes, whole.
    let body = vec![b'a'; 1024];
    let r = raw::parse(
        &raw::exchange(
            None,
            p.addr,
            &post("/small", "Content-Length: 1024\r\n", &body),
            wait,
        )
        .await,
    );
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body, "1024");
    assert_eq!(seen.requests(), 1);

    // One byte more is refused from the header alone; sending the body or
    // not makes no difference.
    for (headers, body) in [
        ("Content-Length: 1025\r\n", vec![b'a'; 1025]),
        ("Content-Length: 1025\r\n", Vec::new()),
        ("Content-Length: 1000000000000000\r\n", vec![b'a'; 10]),
        (
            "Content-Length: 1048576\r\nExpect: 100-continue\r\n",
            Vec::new(),
        ),
    ] {
        let r =
            raw::parse(&raw::exchange(None, p.addr, &post("/small", headers, &body), wait).await);
        assert_413(&r, 1024);
    }
    // A length no 64-bit number holds is refused by Pingora's parser: 400.
    let r = raw::parse(
        &raw::exchange(
            None,
            p.addr,
            &post("/small", "Content-Length: 99999999999999999999\r\n", b"a"),
            wait,
        )
        .await,
    );
    assert_eq!(r.status, 400, "{}", r.raw);
    // On a keyed route the cap is checked before the key (no token taken,
    // no auth failure counted).
    let r = raw::parse(
        &raw::exchange(
            None,
            p.addr,
            &post("/keyed", "Content-Length: 5000\r\n", &[]),
            wait,
        )
        .await,
    );
    assert_413(&r, 1024);
    assert_eq!(seen.requests(), 1, "a refused request reached the upstream");
    assert_eq!(seen.bytes(), 1024);
}

/// Send a chunked body piece by piece, waiting for each piece to reach the
/// upstream while the total is within the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_is_cut_at_the_cap() {
    let (p, seen) = setup().await;
    let mut s = raw::connect(None, p.addr).await;
    s.write_all(b"POST /small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("head");
    let piece = vec![b'x'; 300];
    let mut sent = 0u64;
    let mut refused = false;
    for _ in 0..10 {
        let framed = [format!("{:x}\r\n", piece.len()).as_bytes(), &piece, b"\r\n"].concat();
        if s.write_all(&framed).await.is_err() {
            refused = true;
            break;
        }
        sent += piece.len() as u64;
        if sent <= 1024 {
            // Streamed: the upstream has it before the next piece is sent.
            assert!(
                wait_until(Duration::from_secs(10), || seen.bytes() == sent).await,
                "upstream saw {} of {sent} bytes",
                seen.bytes()
            );
        } else {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let r = raw::parse(&String::from_utf8_lossy(&out));
    assert!(!refused || r.status == 413);
    assert_413(&r, 1024);
    assert_eq!(seen.bytes(), 900, "the upstream saw more than the cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_within_the_cap_passes_whole() {
    let (p, seen) = setup().await;
    let wait = Duration::from_secs(10);
    let body = b"200\r\n"
        .iter()
        .chain(vec![b'y'; 512].iter())
        .chain(b"\r\n200\r\n".iter())
        .chain(vec![b'y'; 512].iter())
        .chain(b"\r\n0\r\n\r\n".iter())
        .copied()
        .collect::<Vec<u8>>();
    let r = raw::parse(
        &raw::exchange(
            None,
            p.addr,
            &post("/small", "Transfer-Encoding: chunked\r\n", &body),
            wait,
        )
        .await,
    );
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body, "1024");
    assert_eq!(seen.bytes(), 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_cap_is_10_mib_and_0_means_none() {
    let (p, seen) = setup().await;
    let client = reqwest::Client::new();
    let big = vec![b'z'; 10 * 1024 * 1024 + 1];
    // Answered from the header: the client need not send the body (a client
    // that insists on writing it meets a closed connection).
    let head = format!("Content-Length: {}\r\n", big.len());
    let r = raw::parse(
        &raw::exchange(
            None,
            p.addr,
            &post("/default", &head, &[]),
            Duration::from_secs(10),
        )
        .await,
    );
    assert_413(&r, 10 * 1024 * 1024);
    assert_eq!(seen.requests(), 0);
    let r = client
        .post(p.url("/uncapped"))
        .body(big)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.expect("body"),
        (10 * 1024 * 1024 + 1).to_string()
    );
    // A request without a body is never refused by the cap.
    let r = client.get(p.url("/small")).send().await.expect("send");
    assert_eq!(r.status(), 200);
}
