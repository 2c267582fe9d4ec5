//! `routes[].cors` (issue #22 item 5), through a real Pingora listener in
//! front of the demo upstream: preflights answered by the proxy without a
//! key, and every answer (the upstream's, and the proxy's own 401/403/429)
//! readable by a listed origin.

mod common;

use common::raw;
use common::TestProxy;

const APP: &str = "https://app.example";

const CONFIG: &str = r#"
proxy:
  listen: "{listen}"
  metrics_listen: "{metrics}"
  threads: 2
  auth_failures_per_second: 1000
plans:
  free: { limits: [ { name: minute, rate: 100000, per: 1m } ] }
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - name: users
    match: { path_prefix: /api/users, methods: [GET, POST, DELETE] }
    upstream: demo
    strip_prefix: /api
    default_plan: free
    cors: { origins: ["https://app.example", "http://localhost:3000"], methods: [GET, POST], headers: [Content-Type], max_age: 600, credentials: true }
  - name: tight
    match: { path_prefix: /api/orders }
    upstream: demo
    strip_prefix: /api
    default_plan: free
    limits: [ { name: route, rate: 1, per: 1m } ]
    cors: { origins: ["https://app.example"] }
  - name: public
    match: { path_prefix: /open }
    upstream: demo
    strip_prefix: /open
    auth: none
    cors: { origins: ["*"] }
  - name: plain
    match: { path_prefix: /api/products }
    upstream: demo
    strip_prefix: /api
    default_plan: free
"#;

async fn preflight(
    p: &TestProxy,
    path: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> raw::RawResponse {
    let mut h = vec![
        ("Origin", origin),
        ("Access-Control-Request-Method", method),
    ];
    if let Some(v) = headers {
        h.push(("Access-Control-Request-Headers", v));
    }
    options(p, path, &h).await
}

async fn options(p: &TestProxy, path: &str, headers: &[(&str, &str)]) -> raw::RawResponse {
    let mut req = format!("OPTIONS {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw::parse(
        &raw::exchange(
            None,
            p.addr,
            req.as_bytes(),
            std::time::Duration::from_secs(10),
        )
        .await,
    )
}

fn no_allow_headers(r: &raw::RawResponse) {
    assert!(
        r.headers
            .iter()
            .all(|(n, _)| !n.to_ascii_lowercase().starts_with("access-control-allow")),
        "{}",
        r.raw
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_is_answered_without_a_key() {
    let (p, _key) = TestProxy::sqlite_with_key(CONFIG, "cors").await;
    let r = preflight(
        &p,
        "/api/users/1",
        APP,
        "POST",
        Some("content-type, x-api-key"),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.raw);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type, x-api-key, authorization")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert!(
        r.header("vary").is_some_and(|v| v.contains("Origin")),
        "{}",
        r.raw
    );
    assert!(r.body.is_empty(), "{}", r.raw);
    // The second listed origin too; with `*` any origin gets `*`.
    let r = preflight(&p, "/api/users", "http://localhost:3000", "GET", None).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    let r = preflight(&p, "/open/users", "https://anyone.example", "PUT", None).await;
    assert_eq!(r.status, 204, "{}", r.raw);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_never_count_as_auth_failures() {
    // No key is created (waiting for one counts 403s as failures).
    let p = TestProxy::start(
        &CONFIG.replace(
            "auth_failures_per_second: 1000",
            "auth_failures_per_second: 3",
        ),
        common::Store::Sqlite,
    )
    .await
    .expect("sqlite");
    // auth_failures_per_second is 3: twenty preflights (allowed or not)
    // must leave this address its failures.
    for i in 0..20 {
        let origin = if i % 2 == 0 {
            APP
        } else {
            "https://evil.example"
        };
        let r = preflight(&p, "/api/users", origin, "GET", None).await;
        assert!(r.status == 204 || r.status == 403, "{}", r.raw);
    }
    let r = raw::get(None, p.addr, "/api/users", &[("Origin", APP)]).await;
    assert_eq!(r.status, 401, "{}", r.raw);
    let text = p.metrics_text().await;
    assert!(
        common::metric_value(&text, "tollgate_requests_total", &["outcome=\"preflight\""]) >= 20.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_preflights_get_no_allow_headers() {
    let (p, _key) = TestProxy::sqlite_with_key(CONFIG, "cors").await;
    let huge = format!("https://{}.example", "a".repeat(6000));
    for (origin, method, headers) in [
        ("null", "GET", None),
        ("https://evil.example", "GET", None),
        ("https://app.example.evil.example", "GET", None),
        ("https://app.example:443", "GET", None),
        ("https://APP.example", "GET", None),
        ("http://app.example", "GET", None),
        (huge.as_str(), "GET", None),
        // DELETE is a method of the route, not of its CORS policy.
        (APP, "DELETE", None),
        (APP, "GET", Some("x-admin")),
        (APP, "GET", Some("content-type, cookie")),
    ] {
        let r = preflight(&p, "/api/users", origin, method, headers).await;
        assert_eq!(
            r.status, 403,
            "{origin:.40} {method} {headers:?}: {}",
            r.raw
        );
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(r.json()["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("cors-refused")));
        assert!(!r.body.contains("evil"), "the origin is echoed: {}", r.body);
        no_allow_headers(&r);
    }
    // A method the route does not take at all: no route answers it.
    let r = preflight(&p, "/api/users", APP, "PATCH", None).await;
    assert_eq!(r.status, 405, "{}", r.raw);
    no_allow_headers(&r);
    // Two Origin headers: not one origin.
    let r = options(
        &p,
        "/api/users",
        &[
            ("Origin", APP),
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "GET"),
        ],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.raw);
    no_allow_headers(&r);
    // A route without cors: the preflight is an ordinary OPTIONS request
    // (here without a key: 401), and nothing CORS is added.
    let r = preflight(&p, "/api/products", APP, "GET", None).await;
    assert_eq!(r.status, 401, "{}", r.raw);
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{}",
        r.raw
    );
    assert!(r.header("vary").is_none(), "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_cors_headers_for_a_listed_origin() {
    let (p, key) = TestProxy::sqlite_with_key(CONFIG, "cors").await;
    let check = |r: &raw::RawResponse, status: u16| {
        assert_eq!(r.status, status, "{}", r.raw);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(APP),
            "{}",
            r.raw
        );
        assert!(
            r.header("access-control-expose-headers")
                .is_some_and(|v| v.contains("Retry-After") && v.contains("RateLimit")),
            "{}",
            r.raw
        );
        assert!(
            r.headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("vary") && v.contains("Origin")),
            "{}",
            r.raw
        );
    };
    // The upstream's answer, then the proxy's own refusals: 401, 403, 429.
    let mut last = None;
    for (path, key, status) in [
        ("/api/users", Some(key.as_str()), 200),
        ("/api/users", None, 401),
        ("/api/users", Some("tg_nope"), 403),
        ("/api/orders", Some(key.as_str()), 200),
        ("/api/orders", Some(key.as_str()), 429),
    ] {
        let mut headers = vec![("Origin", APP)];
        headers.extend(key.map(|k| ("x-api-key", k)));
        let r = raw::get(None, p.addr, path, &headers).await;
        check(&r, status);
        if status == 200 && path == "/api/users" {
            assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        }
        last = Some(r);
    }
    let r = last.expect("answers");
    assert!(r.header("retry-after").is_some(), "{}", r.raw);
    // An unlisted origin reads nothing, but the answer still varies by Origin.
    let r = raw::get(
        None,
        p.addr,
        "/api/users",
        &[("Origin", "https://evil.example"), ("x-api-key", &key)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{}",
        r.raw
    );
    assert!(
        r.header("vary").is_some_and(|v| v.contains("Origin")),
        "{}",
        r.raw
    );
    // No Origin at all (not a browser): the same, Vary included.
    let r = raw::get(None, p.addr, "/api/users", &[("x-api-key", &key)]).await;
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{}",
        r.raw
    );
    // A route without cors adds nothing.
    let r = raw::get(
        None,
        p.addr,
        "/api/products",
        &[("Origin", APP), ("x-api-key", &key)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{}",
        r.raw
    );
}
