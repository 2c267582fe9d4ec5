//! Scopes and IP rules through a real Pingora listener (issue #21 items 1,
//! 2): plan scopes, a key's own scopes over its plan's, a key's
//! `allowed_ips`, a route's `ip_allow` / `ip_deny` with the client address
//! resolved through a trusted proxy, and a spoofed `X-Forwarded-For` from
//! an untrusted peer. Distinct peers come from binding `127.0.0.x`.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::raw::{self, RawResponse};
use common::{Store, TestProxy};
use tollgate_core::db::NewApiKey;
use tollgate_core::rules::access::Scopes;

const YAML: &str = r#"
proxy:
  listen: "{listen}"
  metrics_listen: "{metrics}"
  threads: 2
  trusted_proxies: [127.0.0.1/32]
plans:
  reader:
    limits: [ { name: minute, rate: 1000, per: 1m } ]
    scopes: { routes: [users, "prod*"], methods: [get, head] }
  open: { limits: [ { name: minute, rate: 1000, per: 1m } ] }
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - { name: users, match: { path_prefix: /api/users }, upstream: demo, strip_prefix: /api, default_plan: open }
  - { name: edits, match: { path_prefix: /api/edits }, upstream: demo, strip_prefix: /api, default_plan: open, allow_method_override: true }
  - { name: root, match: { path_prefix: / }, upstream: demo, auth: none }
  - { name: products, match: { path_prefix: /api/products }, upstream: demo, strip_prefix: /api, default_plan: open }
  - name: orders
    match: { path_prefix: /api/orders }
    upstream: demo
    strip_prefix: /api
    default_plan: open
    ip_allow: [203.0.113.0/24]
    ip_deny: [203.0.113.66]
"#;

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().expect("ip"))
}

fn kind(r: &RawResponse) -> String {
    r.json()["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or_default()
        .to_string()
}

async fn send(
    p: &TestProxy,
    from: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    raw::parse(&raw::exchange(ip(from), p.addr, req.as_bytes(), Duration::from_secs(10)).await)
}

/// Sends each request and checks its answer: `(status, problem type)`, the
/// type "" for a forwarded answer. Returns the last response.
/// (from, method, path, headers, (status, problem type)).
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
    (u16, &'a str),
);

async fn expect_all(p: &TestProxy, cases: &[Case<'_>]) -> RawResponse {
    let mut last = None;
    for (from, method, path, headers, (status, problem)) in cases {
        let r = send(p, from, method, path, headers).await;
        assert_eq!(
            (r.status, kind(&r).as_str()),
            (*status, *problem),
            "{method} {path} from {from} with {headers:?}: {}",
            r.raw
        );
        last = Some(r);
    }
    last.expect("at least one case")
}

/// Wait until the proxy knows `key` (any answer but `invalid-api-key`).
async fn known(p: &TestProxy, key: &str) {
    let start = Instant::now();
    loop {
        let r = raw::get(
            ip("127.0.0.1"),
            p.addr,
            "/api/products",
            &[("x-api-key", key)],
        )
        .await;
        if kind(&r) != "invalid-api-key" {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{}", r.raw);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_refuse_routes_and_methods_outside_them() {
    let p = TestProxy::start(YAML, Store::Sqlite).await.expect("sqlite");
    let (_, reader) = p
        .create_key(NewApiKey {
            name: "reader".into(),
            plan: Some("reader".into()),
            ..NewApiKey::default()
        })
        .await;
    // Own route list over the plan's; the plan's methods still apply.
    let (_, own) = p
        .create_key(NewApiKey {
            name: "own".into(),
            plan: Some("reader".into()),
            scopes: Some(Scopes {
                routes: Some(vec!["users".into()]),
                methods: None,
            }),
            ..NewApiKey::default()
        })
        .await;
    known(&p, &reader).await;
    known(&p, &own).await;

    let (reader, own) = (reader.as_str(), own.as_str());
    let key = |k| vec![("x-api-key", k)];
    let denied = (403, "scope-denied");
    expect_all(
        &p,
        &[
            ("127.0.0.1", "GET", "/api/users", key(reader), (200, "")),
            // A glob scope.
            ("127.0.0.1", "GET", "/api/products", key(reader), (200, "")),
            (
                "127.0.0.1",
                "DELETE",
                "/api/products/1",
                key(reader),
                denied,
            ),
            ("127.0.0.1", "GET", "/api/users", key(own), (200, "")),
            ("127.0.0.1", "GET", "/api/products", key(own), denied),
        ],
    )
    .await;
    let r = expect_all(
        &p,
        &[("127.0.0.1", "POST", "/api/users", key(reader), denied)],
    )
    .await;
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let r = expect_all(&p, &[("127.0.0.1", "POST", "/api/users", key(own), denied)]).await;

    // A refusal names the route, never the key's lists.
    assert!(!r.body.contains("prod*"), "{}", r.body);
    let m = p.metrics_text().await;
    assert!(
        m.lines()
            .any(|l| l.contains("outcome=\"forbidden\"") && l.contains("route=\"products\"")),
        "no forbidden outcome counted:\n{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_rules_use_the_address_resolved_through_trusted_proxies() {
    let p = TestProxy::start(YAML, Store::Sqlite).await.expect("sqlite");
    let (_, bound) = p
        .create_key(NewApiKey {
            name: "bound".into(),
            allowed_ips: Some(vec!["203.0.113.0/24".into(), "2001:db8::/32".into()]),
            ..NewApiKey::default()
        })
        .await;
    let (_, free) = p
        .create_key(NewApiKey {
            name: "free".into(),
            ..NewApiKey::default()
        })
        .await;
    let start = Instant::now();
    loop {
        let r = send(
            &p,
            "127.0.0.1",
            "GET",
            "/api/users",
            &[("x-api-key", &bound)],
        )
        .await;
        if kind(&r) == "ip-not-allowed" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{}", r.raw);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    known(&p, &free).await;

    let (bound, free) = (bound.as_str(), free.as_str());
    let via = |xff, key| vec![("x-api-key", key), ("x-forwarded-for", xff)];
    let refused = (403, "ip-not-allowed");
    expect_all(
        &p,
        &[
            // The key's networks: the client behind the trusted proxy is in them.
            (
                "127.0.0.1",
                "GET",
                "/api/users",
                via("203.0.113.9", bound),
                (200, ""),
            ),
            (
                "127.0.0.1",
                "GET",
                "/api/users",
                via("198.51.100.1", bound),
                refused,
            ),
            // An untrusted peer cannot claim an allowed address.
            (
                "127.0.0.2",
                "GET",
                "/api/users",
                via("203.0.113.9", bound),
                refused,
            ),
            // The right-most untrusted entry counts, not one the client prepended.
            (
                "127.0.0.1",
                "GET",
                "/api/users",
                via("203.0.113.9, 198.51.100.1", bound),
                refused,
            ),
            // The route's rules, for any key: allow list, and deny wins.
            (
                "127.0.0.1",
                "GET",
                "/api/orders",
                via("203.0.113.10", free),
                (200, ""),
            ),
            (
                "127.0.0.1",
                "GET",
                "/api/orders",
                via("203.0.113.66", free),
                refused,
            ),
            (
                "127.0.0.1",
                "GET",
                "/api/orders",
                vec![("x-api-key", free)],
                refused,
            ),
            // Spoofed.
            (
                "127.0.0.2",
                "GET",
                "/api/orders",
                via("203.0.113.10", free),
                refused,
            ),
            // Refused before the key is even looked at: no key, same answer.
            ("127.0.0.2", "GET", "/api/orders", vec![], refused),
        ],
    )
    .await;
}

/// The method scopes hold for the method the upstream acts on: an override
/// header a route forwards, and no lower-case spelling routed elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_scopes_cover_overrides_and_case() {
    let p = TestProxy::start(YAML, Store::Sqlite).await.expect("sqlite");
    let (_, getter) = p
        .create_key(NewApiKey {
            name: "getter".into(),
            scopes: Some(Scopes {
                routes: Some(vec!["edits".into()]),
                methods: Some(vec!["GET".into()]),
            }),
            ..NewApiKey::default()
        })
        .await;
    known(&p, &getter).await;
    let k = getter.as_str();
    for method in ["GET", "HEAD"] {
        let r = send(&p, "127.0.0.1", method, "/api/edits/1", &[("x-api-key", k)]).await;
        // Forwarded: the demo upstream answers (its own 404 for this path).
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{method}: {}",
            r.raw
        );
    }
    for (name, value) in [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "delete"),
        ("X-Method-Override", "PUT"),
    ] {
        let r = send(
            &p,
            "127.0.0.1",
            "GET",
            "/api/edits/1",
            &[("x-api-key", k), (name, value)],
        )
        .await;
        assert_eq!(
            (r.status, kind(&r)),
            (403, "scope-denied".into()),
            "{name}: {value}: {}",
            r.raw
        );
    }
    // `post` is not `POST`: refused at the edge, never routed to the
    // keyless catch-all where a case-blind upstream would run a POST.
    for method in ["post", "delete", "Get"] {
        let r = send(&p, "127.0.0.1", method, "/api/edits/1", &[]).await;
        assert_eq!(r.status, 400, "{method}: {}", r.raw);
        assert!(r.body.contains("bad-method"), "{method}: {}", r.body);
    }
}
