//! `routes[].max_body_bytes` and `routes[].cors`.

use super::*;

fn route(extra: &str) -> String {
    format!(
        "{BASE}routes:\n  - {{ name: r, match: {{ path_prefix: /a, methods: [GET, POST] }}, upstream: demo{extra} }}\n"
    )
}

#[test]
fn max_body_bytes_defaults_to_10_mib_and_takes_sizes() {
    assert_eq!(ok(&route("")).routes[0].max_body_bytes, 10 * 1024 * 1024);
    for (v, n) in [
        ("0", 0),
        ("1", 1),
        ("1MiB", 1 << 20),
        ("64k", 64 << 10),
        ("2GiB", 2 << 30),
        ("~", 10 << 20),
    ] {
        let c = ok(&route(&format!(", max_body_bytes: {v}")));
        assert_eq!(c.routes[0].max_body_bytes, n, "{v}");
    }
    for (v, needle) in [
        ("-1", "expected a size"),
        ("1.5MiB", "expected a size"),
        ("10 furlongs", "expected a size"),
        ("2000GiB", "between"),
        ("99999999999999999999", "expected a size"),
        ("[1]", ""),
    ] {
        let errs = errors(&route(&format!(", max_body_bytes: {v}")));
        assert!(
            errs.iter()
                .any(|e| e.message.contains(needle) && e.line == 6),
            "{v}: {errs:?}"
        );
    }
}

#[test]
fn cors_is_parsed_with_defaults() {
    let c = ok(&route(
        ", cors: { origins: [\"https://App.example\", \"http://localhost:3000\"], headers: [Content-Type], max_age: 600, credentials: true }",
    ));
    let cors = c.routes[0].cors.as_ref().expect("cors");
    assert_eq!(
        cors.origins,
        CorsOrigins::List(vec![
            "https://app.example".into(),
            "http://localhost:3000".into()
        ])
    );
    // The route's methods when cors.methods is not given.
    assert_eq!(cors.methods, ["GET", "POST"]);
    assert_eq!(cors.headers, ["content-type"]);
    assert_eq!(cors.max_age, Some(600));
    assert!(cors.credentials);

    let c = ok(&route(
        ", cors: { origins: [\"*\"], methods: [get], max_age: 10m }",
    ));
    let cors = c.routes[0].cors.as_ref().expect("cors");
    assert_eq!(cors.origins, CorsOrigins::Any);
    assert_eq!(cors.methods, ["GET"]);
    assert_eq!(cors.max_age, Some(600));
    assert!(!cors.credentials);
    assert!(ok(&route("")).routes[0].cors.is_none());
}

#[test]
fn hostile_cors_settings_are_refused_at_their_position() {
    for (cors, needle) in [
        ("{ origins: [\"*\"], credentials: true }", "cannot go with"),
        ("{ origins: [\"null\"] }", "sandboxed"),
        ("{ origins: [\"https://a.example/\"] }", "not an origin"),
        ("{ origins: [\"https://a.example/path\"] }", "not an origin"),
        ("{ origins: [\"a.example\"] }", "not an origin"),
        ("{ origins: [\"*\", \"https://a.example\"] }", "alone"),
        ("{ origins: [] }", "must not be empty"),
        ("{ methods: [GET] }", "origins"),
        (
            "{ origins: [\"*\"], methods: [\"G T\"] }",
            "invalid HTTP method",
        ),
        (
            "{ origins: [\"*\"], headers: [\"x y\"] }",
            "invalid header name",
        ),
        ("{ origins: [\"*\"], max_age: 2d }", "at most"),
        ("{ origins: [\"*\"], max_age: 100000 }", "at most"),
        ("{ origins: [\"*\"], max_age: -1 }", ""),
        ("{ origins: [\"*\"], credentials: maybe }", "true or false"),
        ("{ origins: [\"*\"], expose: [x] }", "unknown field"),
        ("[\"*\"]", ""),
    ] {
        let errs = errors(&route(&format!(", cors: {cors}")));
        assert!(
            errs.iter()
                .any(|e| e.message.contains(needle) && e.line >= 6),
            "{cors}: {errs:?}"
        );
    }
}

#[test]
fn websocket_is_opt_in_per_route_and_the_key_check_has_a_default() {
    let c = ok(&route(""));
    assert!(!c.routes[0].websocket);
    assert_eq!(c.proxy.edge.websocket_key_check, Duration::from_secs(1));
    let c = ok(&format!(
        "proxy: {{ websocket_key_check: 250ms }}\n{}",
        route(", websocket: true")
    ));
    assert!(c.routes[0].websocket);
    assert_eq!(c.proxy.edge.websocket_key_check, Duration::from_millis(250));
    for (src, needle) in [
        (route(", websocket: sometimes"), "true or false"),
        (
            format!("proxy: {{ websocket_key_check: 1ms }}\n{}", route("")),
            "at least",
        ),
        (
            format!("proxy: {{ websocket_key_check: never }}\n{}", route("")),
            "",
        ),
    ] {
        let errs = errors(&src);
        assert!(
            errs.iter().any(|e| e.message.contains(needle)),
            "{src}: {errs:?}"
        );
    }
}

/// Round 10 (black-box): the overlap check takes HEAD where GET is, and no
/// more; a prefix is written without a trailing '/' (only `/` ends in one).
#[test]
fn head_overlaps_get_only_and_prefixes_have_one_spelling() {
    let two = |a: &str, b: &str| {
        format!("{BASE}routes:\n  - {{ name: a, match: {{ path_prefix: {a} }}, upstream: demo, auth: none }}\n  - {{ name: b, match: {{ path_prefix: {b} }}, upstream: demo }}\n")
    };
    for (a, b) in [
        ("/a, methods: [GET]", "/a, methods: [POST]"),
        ("/a, methods: [HEAD]", "/a, methods: [POST, PUT]"),
        ("/a, methods: [GET]", "/a/b, methods: [HEAD]"),
        ("/", "/a"),
    ] {
        let c = ok(&two(a, b));
        assert_eq!(c.routes.len(), 2, "{a} / {b}");
    }
    for (a, b) in [
        ("/a, methods: [GET]", "/a, methods: [HEAD]"),
        ("/a, methods: [HEAD]", "/a, methods: [GET]"),
        ("/a, methods: [HEAD]", "/a, methods: [HEAD]"),
        ("/a", "/a, methods: [HEAD]"),
        (
            "/A, methods: [get], case_insensitive: true",
            "/a, methods: [HEAD]",
        ),
    ] {
        let errs = errors(&two(a, b));
        assert!(
            errs.iter()
                .any(|e| e.message.contains("also matched by routes[0]") && e.line == 7),
            "{a} / {b}: {errs:?}"
        );
    }
    // `/api/products/` beside `/api/products`: refused, not normalised (a
    // laxer route would otherwise take the bare path too, or leave it).
    let errs = errors(&two("/api/products", "/api/products/"));
    assert!(
        errs.iter()
            .any(|e| e.message.contains("ends with '/'") && e.line == 7),
        "{errs:?}"
    );
    assert_eq!(ok(&two("/", "/b")).routes[0].path_prefix, "/");
}
