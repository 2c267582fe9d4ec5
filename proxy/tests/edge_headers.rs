//! What reaches the upstream and what does not (issue #15 item 4, #16 item 3),
//! through a real Pingora listener in front of the echoing demo upstream
//! (strict HTTP/1 framing and header limits: `edge_framing.rs`; HTTP/2's
//! header fields: `edge_h2.rs`).

mod common;

use common::edge::setup;
use common::raw;
use serde_json::Value;

fn seen_headers(r: &raw::RawResponse) -> serde_json::Map<String, Value> {
    r.json()["request"]["headers"]
        .as_object()
        .cloned()
        .unwrap_or_else(|| panic!("no echo: {}", r.raw))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_never_reaches_the_upstream_on_any_route() {
    let (p, key) = setup().await;
    let bearer = format!("Bearer {key}");
    let spaced = format!("bearer   {key}");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/api/users", vec![("x-api-key", &key)]),
        ("/api/users", vec![("Authorization", &bearer)]),
        ("/api/users", vec![("x-api-key", &key), ("x_api_key", &key)]),
        // auth: none routes never see a key either.
        ("/open/users", vec![("x-api-key", &key)]),
        ("/open/users", vec![("X_Api_Key", &key)]),
        ("/open/users", vec![("Authorization", &bearer)]),
        ("/open/users", vec![("authorization", &spaced)]),
    ];
    // F3: unusual forms an upstream may still read as the key.
    let tab = format!("Bearer\t{key}");
    let listed = format!("Bearer x, Bearer {key}");
    let basic = format!("Basic {key}");
    let token = format!("Token {key}");
    let cookie = format!("session=1; x-api-key={key}");
    let encoded = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("user:{key}"))
        )
    };
    // Round 14 (black-box): other encodings in any header.
    let b64 = |s: String| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let x_auth = format!("Basic {}", b64(format!("user:{key}")));
    let percent = format!("tg%5F{}", &key[3..]);
    let b64_cookie = format!("s={}", b64(key.clone()));
    let odd: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/open/users", vec![("X-Auth", &x_auth)]),
        ("/open/users", vec![("X-Foo", &percent)]),
        ("/open/users", vec![("Cookie", &b64_cookie)]),
        ("/api/users", vec![("x-api-key", &key), ("X-Foo", &percent)]),
        ("/open/users", vec![("Authorization", &tab)]),
        ("/open/users", vec![("Authorization", &listed)]),
        ("/open/users", vec![("Authorization", &key)]),
        ("/open/users", vec![("Authorization", &basic)]),
        ("/open/users", vec![("Authorization", &token)]),
        ("/open/users", vec![("Authorization", &encoded)]),
        ("/open/users", vec![("Proxy-Authorization", &encoded)]),
        ("/open/users", vec![("Cookie", &cookie)]),
        ("/open/users", vec![("X.Api.Key", &key)]),
        ("/open/users", vec![("X-Api-Key_", &key)]),
        (
            "/api/users",
            vec![("x-api-key", &key), ("Authorization", &listed)],
        ),
    ];
    for (path, headers) in &odd {
        let r = raw::get(None, p.addr, path, headers).await;
        assert_eq!(r.status, 200, "{path} {headers:?}: {}", r.raw);
        assert!(
            !r.body.contains(&key[3..]),
            "{path} {headers:?}: the key reached the upstream\n{}",
            r.body
        );
        let seen = seen_headers(&r);
        for (name, _) in headers {
            if !name.eq_ignore_ascii_case("x-api-key") {
                assert!(
                    !seen.contains_key(&name.to_ascii_lowercase()),
                    "{path} {name} reached the upstream: {seen:?}"
                );
            }
        }
    }
    // Round 15 (black-box): a key as the client's request id was passed on
    // as `X-Client-Request-Id` (and logged); it is not taken as an id.
    let b64_key = b64(key.clone());
    let ids: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/open/users", vec![("X-Request-Id", &key)]),
        ("/open/users", vec![("X-Request-Id", &b64_key)]),
        (
            "/api/users",
            vec![("x-api-key", &key), ("X-Request-Id", &key)],
        ),
    ];
    for (path, headers) in &ids {
        let r = raw::get(None, p.addr, path, headers).await;
        assert_eq!(r.status, 200, "{path} {headers:?}: {}", r.raw);
        assert!(!r.raw.contains(&key[3..]), "{path} {headers:?}: {}", r.raw);
        assert!(!r.raw.contains(&b64_key), "{path} {headers:?}: {}", r.raw);
        assert!(
            !seen_headers(&r).contains_key("x-client-request-id"),
            "{}",
            r.raw
        );
    }
    // Round 15 re-check: a key as the host or a header name arrived
    // lower-cased (its checksum no longer tells it).
    let lower = key.to_ascii_lowercase();
    for path in ["/open/users", "/api/users"] {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {key}\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n"
        );
        let r = raw::send(None, p.addr, req.as_bytes()).await;
        assert_eq!(r.status, 400, "{path}: {}", r.raw);
        assert_eq!(r.json()["reason"], "bad-host", "{}", r.raw);
        let r = raw::get(
            None,
            p.addr,
            path,
            &[("x-api-key", &key), (key.as_str(), "1")],
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.raw);
        assert!(
            !r.raw.to_ascii_lowercase().contains(&lower[3..]),
            "{path}: {}",
            r.raw
        );
    }
    // Round 15 re-check: a key as the method was forwarded (and logged).
    for path in ["/open/users", "/api/users"] {
        let req = format!(
            "{key} {path} HTTP/1.1\r\nHost: a\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n"
        );
        let r = raw::send(None, p.addr, req.as_bytes()).await;
        assert_eq!(r.status, 400, "{path}: {}", r.raw);
        assert_eq!(r.json()["reason"], "bad-method", "{}", r.raw);
        assert!(!r.raw.contains(&key[3..]), "{path}: {}", r.raw);
    }
    for (path, headers) in cases {
        let r = raw::get(None, p.addr, path, &headers).await;
        assert_eq!(r.status, 200, "{path} {headers:?}: {}", r.raw);
        assert!(
            !r.body.contains(&key[3..]),
            "{path} {headers:?}: the key reached the upstream\n{}",
            r.body
        );
    }
    // An upstream's own bearer token (not a Tollgate key) passes on auth: none.
    let r = raw::get(
        None,
        p.addr,
        "/open/users",
        &[("Authorization", "Bearer eyJ.upstream")],
    )
    .await;
    assert_eq!(seen_headers(&r)["authorization"], "Bearer eyJ.upstream");
}

/// Round 12 (black-box): two credentials were accepted (the first won),
/// while the admin and verify APIs answer 400. Now 400 problem+json too,
/// counted as a malformed request, whichever credential would be valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_credentials_are_a_bad_request() {
    let (p, key) = setup().await;
    let bearer = format!("Bearer {key}");
    let other = "tg_0000000000000000000000000000000000000";
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("x-api-key", &key), ("x-api-key", &key)],
            "more than one x-api-key header: send exactly one credential",
        ),
        (
            vec![("x-api-key", other), ("x-api-key", &key)],
            "more than one x-api-key header",
        ),
        (
            vec![("x-api-key", &key), ("Authorization", &bearer)],
            "a key in both x-api-key and Authorization: Bearer: send exactly one credential",
        ),
        (
            vec![("Authorization", &bearer), ("Authorization", &bearer)],
            "more than one Authorization header: send exactly one credential",
        ),
    ];
    for (headers, detail) in &cases {
        let r = raw::get(None, p.addr, "/api/users", headers).await;
        assert_eq!(r.status, 400, "{headers:?}: {}", r.raw);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        let body = r.json();
        assert_eq!(body["reason"], "several-credentials", "{}", r.raw);
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with(detail)),
            "{}",
            r.raw
        );
        assert!(!r.body.contains(&key[3..]), "{}", r.raw);
    }
    let m = p.metrics_text().await;
    assert_eq!(
        common::metric_value(&m, "tollgate_edge_refused_total", &["several-credentials"]),
        cases.len() as f64
    );
    assert!(
        common::metric_value(&m, "tollgate_requests_total", &["keyed", "bad_request"])
            >= cases.len() as f64,
        "{m}"
    );
    // The key header beside an upstream's own bearer token is one key.
    let r = raw::get(
        None,
        p.addr,
        "/api/users",
        &[
            ("x-api-key", &key),
            ("Authorization", "Bearer eyJ.upstream"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(seen_headers(&r)["authorization"], "Bearer eyJ.upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_and_spoofed_headers_are_replaced_in_every_spelling() {
    let (p, key) = setup().await;
    let r = raw::get(
        None,
        p.addr,
        "/api/users",
        &[
            ("x-api-key", &key),
            ("X-Tollgate-Key-Id", "999"),
            ("X_Tollgate_Key_Id", "999"),
            ("x_tollgate_plan", "enterprise"),
            ("X-Tollgate-Admin", "yes"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X_Forwarded_For", "6.6.6.6"),
            ("Forwarded", "for=6.6.6.6"),
            ("X-Real-IP", "6.6.6.6"),
            ("True-Client-IP", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Original-URL", "/admin"),
            ("X-Request-Id", "client-chosen"),
            ("X-Client-Request-Id", "forged"),
            ("Forwarded-For", "6.6.6.6"),
            ("Fastly-Client-IP", "6.6.6.6"),
            ("X-Envoy-Original-Path", "/admin"),
            ("Upgrade", "websocket"),
            ("Content_Length", "50"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let h = seen_headers(&r);
    let names: Vec<&String> = h.keys().collect();
    for forbidden in [
        "x_tollgate_key_id",
        "x_tollgate_plan",
        "x-tollgate-admin",
        "x_forwarded_for",
        "forwarded",
        "x-real-ip",
        "true-client-ip",
        "x-original-url",
        "x-api-key",
        "forwarded-for",
        "fastly-client-ip",
        "x-envoy-original-path",
        "upgrade",
        "content_length",
    ] {
        assert!(
            !h.contains_key(forbidden),
            "{forbidden} reached the upstream: {names:?}"
        );
    }
    assert_ne!(h["x-tollgate-key-id"], "999");
    assert_eq!(h["x-tollgate-plan"], "free");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "t");
    assert_eq!(h["x-client-request-id"], "client-chosen");
    let rid = h["x-request-id"].as_str().expect("id");
    assert_ne!(rid, "client-chosen");
    assert_eq!(r.header("x-request-id"), Some(rid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_overrides_are_stripped_unless_the_route_opts_in() {
    let (p, key) = setup().await;
    for name in [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
        "x_http_method_override",
    ] {
        let r = raw::get(
            None,
            p.addr,
            "/api/users",
            &[("x-api-key", &key), (name, "DELETE")],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.raw);
        let h = seen_headers(&r);
        assert!(
            !h.keys().any(|k| k.contains("method")),
            "{name} reached a method-restricted route: {h:?}"
        );
    }
    let raw_req = "POST /ovr/users HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nX-HTTP-Method-Override: PUT\r\nConnection: close\r\n\r\n";
    let r = raw::send(None, p.addr, raw_req.as_bytes()).await;
    assert_eq!(
        seen_headers(&r)["x-http-method-override"],
        "PUT",
        "{}",
        r.raw
    );
    // An override to a method the route does not take is refused, in any
    // spelling: the route's method list governs the method acted on.
    for name in [
        "X-HTTP-Method-Override",
        "x_method_override",
        "X-Original-Method",
    ] {
        let raw_req = format!("POST /ovr/users HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n{name}: delete\r\nConnection: close\r\n\r\n");
        let r = raw::send(None, p.addr, raw_req.as_bytes()).await;
        assert_eq!(r.status, 405, "{name}: {}", r.raw);
    }
}
