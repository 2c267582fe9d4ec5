//! HTTP/2 (h2c) header fields through a real Pingora listener in front of
//! the echoing demo upstream: the forwarded host, and the field cap HTTP/1
//! has too (`edge_headers.rs`).

mod common;

use common::{metric_value, Store, TestProxy};
use serde_json::Value;

const CONFIG: &str = r#"
proxy:
  listen: "{listen}"
  metrics_listen: "{metrics}"
  threads: 2
  h2c: true
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - { name: open, match: { path_prefix: /open }, upstream: demo, strip_prefix: /open, auth: none }
"#;

/// An h2c client of a proxy with [`CONFIG`].
async fn h2c() -> (TestProxy, reqwest::Client) {
    let p = TestProxy::start(CONFIG, Store::Sqlite)
        .await
        .expect("sqlite");
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("api.example", p.addr)
        .build()
        .expect("client");
    (p, client)
}

/// Black-box round 13: HTTP/2 requests reached the upstream without
/// `X-Forwarded-Host` (h2 carries the host as `:authority`, not `Host`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_forward_their_authority_as_x_forwarded_host() {
    let (p, client) = h2c().await;
    let port = p.addr.port();
    let r = client
        .get(format!("http://API.example:{port}/open/users"))
        .send()
        .await
        .expect("h2c request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("echo");
    assert_eq!(
        body["request"]["headers"]["x-forwarded-host"],
        format!("api.example:{port}"),
        "{body}"
    );
}

/// Black-box round 13: HTTP/1 refuses more than 256 header fields, HTTP/2
/// forwarded 1500. Now 257 are a 431 problem on h2 too, 256 are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_over_256_header_fields_are_431() {
    let (p, client) = h2c().await;
    let with_fields = |n: usize| {
        let mut req = client.get(p.url("/open/users"));
        for i in 0..n {
            req = req.header(format!("x-h{i}"), "v");
        }
        req
    };
    // reqwest adds none of its own on h2 but `accept` and the authority.
    let r = with_fields(255).send().await.expect("255 + accept");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    // The counter is the process's (other tests refuse fields too).
    let refused = |m: &str| {
        metric_value(
            m,
            "tollgate_edge_refused_total",
            &["too-many-header-fields"],
        )
    };
    let before = refused(&p.metrics_text().await);
    let r = with_fields(257).send().await.expect("257 fields");
    assert_eq!(r.status(), 431);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = r.json().await.expect("problem");
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/header-too-large")),
        "{body}"
    );
    assert_eq!(body["max_header_fields"], 256);
    let m = p.metrics_text().await;
    assert!(refused(&m) >= before + 1.0, "{m}");
    // The connection still serves.
    let r = with_fields(10).send().await.expect("after the 431");
    assert_eq!(r.status(), 200);
}
