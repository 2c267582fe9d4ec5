//! End-to-end behaviour of the real proxy in front of the real demo upstream.

mod common;

use std::time::{Duration, Instant};

use common::{metric_value, named, Store, TestProxy};
use reqwest::StatusCode;
use serde_json::Value;
use tollgate_core::db::{KeyPatch, NewApiKey};
use tollgate_core::limits::Limit;

const BASE: &str = r#"
plans:
  free: { limits: [ { name: minute, rate: 60, per: 1m, burst: 5 } ] }
  tight: { limits: [ { name: second, rate: 10, per: 1s, burst: 3 } ] }
  big: { limits: [ { name: hour, rate: 1000, per: 1h } ] }
  single: { limits: [ { name: hour, rate: 1000, per: 1h } ], concurrency: 1 }
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - name: users
    match: { path_prefix: /api/users, methods: [GET, POST] }
    upstream: demo
    strip_prefix: /api
    default_plan: free
  - name: orders
    match: { path_prefix: /api/orders }
    upstream: demo
    strip_prefix: /api
    default_plan: big
    limits: [ { name: orders, rate: 2, per: 1m } ]
  - name: products
    match: { path_prefix: /api/products }
    upstream: demo
    strip_prefix: /api
    default_plan: big
    limits: [ { name: expensive, rate: 10, per: 1m, cost: 4 } ]
  - name: slow
    match: { path_prefix: /slow }
    upstream: demo
    default_plan: big
  - name: shadowed
    match: { path_prefix: /shadow }
    upstream: demo
    default_plan: tight
    shadow: true
  - name: health
    match: { path_prefix: /health, methods: [GET] }
    upstream: demo
    auth: none
    limits: [ { name: per-ip, rate: 2, per: 1m } ]
"#;

async fn get(url: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    req.send().await.expect("request")
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn problem(r: reqwest::Response) -> Value {
    assert_eq!(header(&r, "content-type"), Some("application/problem+json"));
    r.json().await.expect("problem json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_with_prefix_stripped_and_key_replaced_by_key_id() {
    let p = TestProxy::start(BASE, Store::Sqlite).await.expect("sqlite");
    let (k, plain) = p.key(named("alice")).await;
    let r = reqwest::Client::new()
        .get(p.url("/api/users/1?x=1"))
        .header("x-api-key", &plain)
        .header("x-request-id", "req-123")
        .header("x-tollgate-key-id", "999")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    // An untrusted client's id is not kept: a new one, the client's passed on
    // as X-Client-Request-Id.
    let rid = header(&r, "x-request-id").map(str::to_string);
    assert!(rid
        .as_deref()
        .is_some_and(|id| id != "req-123" && id.len() == 32));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["request"]["headers"]["x-client-request-id"], "req-123");
    assert_eq!(
        body["request"]["headers"]["x-request-id"].as_str(),
        rid.as_deref()
    );
    let seen = &body["request"];
    assert_eq!(seen["path"], "/users/1");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(body["data"]["name"], "Ada Lovelace");
    let headers = seen["headers"].as_object().expect("headers");
    assert!(headers.get("x-api-key").is_none(), "upstream saw the key");
    assert!(!body.to_string().contains(&plain), "key leaked upstream");
    assert_eq!(
        headers["x-tollgate-key-id"],
        k.id.to_string(),
        "spoofed id replaced"
    );
    assert_eq!(headers["x-tollgate-plan"], "free");
    assert_ne!(headers["x-request-id"], "req-123");

    // Bearer works too and is removed; a request id is minted when absent.
    let r = reqwest::Client::new()
        .get(p.url("/api/users"))
        .bearer_auth(&plain)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let minted = header(&r, "x-request-id").expect("request id").to_string();
    assert!(minted.len() >= 16);
    let body: Value = r.json().await.expect("json");
    assert!(body["request"]["headers"].get("authorization").is_none());
    assert_eq!(body["request"]["headers"]["x-request-id"], minted.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_problem_json_with_the_right_status() {
    let p = TestProxy::start(BASE, Store::Sqlite).await.expect("sqlite");
    let (_, good) = p.key(named("good")).await;

    let r = get(&p.url("/api/users"), None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&r, "www-authenticate"), Some("Bearer"));
    assert!(problem(r).await["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("/missing-api-key")));

    // Wrong checksum: refused without any lookup.
    let mut typo = good.clone().into_bytes();
    typo[8] = if typo[8] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ascii");
    for (key, reason) in [
        ("tg_nonsense", "malformed"),
        (typo.as_str(), "malformed"),
        (&"x".repeat(10_000) as &str, "malformed"),
    ] {
        let r = get(&p.url("/api/users"), Some(key)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{reason}");
        assert_eq!(problem(r).await["reason"], reason);
    }
    let unknown = tollgate_core::keys::generate().expect("rng").plain;
    let r = get(&p.url("/api/users"), Some(&unknown)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem(r).await["reason"], "unknown");

    let (expired, expired_plain) = p
        .create_key(NewApiKey {
            name: "old".into(),
            expires_at: Some(tollgate_core::now_ms() + 300),
            ..NewApiKey::default()
        })
        .await;
    p.wait_status(
        &expired_plain,
        "/api/users",
        |s| s == 200,
        Duration::from_secs(3),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let r = get(&p.url("/api/users"), Some(&expired_plain)).await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "key {} expired",
        expired.id
    );
    assert_eq!(problem(r).await["reason"], "expired");

    let r = get(&p.url("/nowhere"), Some(&good)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(problem(r).await["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("/no-route")));
    // Round 16: the 404 repeated the path, a key in it too.
    let r = get(&p.url(&format!("/nowhere/{good}")), None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body = r.text().await.expect("body");
    assert!(
        !body.contains(&good) && !body.contains("/nowhere"),
        "{body}"
    );

    let r = reqwest::Client::new()
        .delete(p.url("/api/users/1"))
        .header("x-api-key", &good)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    // HEAD rides on GET.
    assert_eq!(header(&r, "allow"), Some("GET, HEAD, POST"));

    // Invalid UTF-8 in the key header is a 403, not a 500.
    let r = reqwest::Client::new()
        .get(p.url("/api/users"))
        .header(
            "x-api-key",
            reqwest::header::HeaderValue::from_bytes(b"tg_\xff\xfe").expect("value"),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_then_429_with_headers_then_steady_refill() {
    let p = TestProxy::start(BASE, Store::Sqlite).await.expect("sqlite");
    let (_, plain) = p
        .key(NewApiKey {
            name: "tight".into(),
            plan: Some("tight".into()),
            ..NewApiKey::default()
        })
        .await;
    // `p.key` used one token while waiting; wait for a full bucket again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    // 10 per second with a burst of 3. On a busy machine the requests may be
    // spread out, so the bucket may refill while they are sent: the number
    // admitted is bounded by burst + rate × elapsed, not fixed.
    let mut statuses = Vec::new();
    let mut last_ok = None;
    let mut limited = None;
    let burst_start = Instant::now();
    let mut refused_at = burst_start;
    while limited.is_none() && statuses.len() < 50 {
        let sent = Instant::now();
        let r = get(&p.url("/api/users"), Some(&plain)).await;
        statuses.push(r.status().as_u16());
        if r.status() == StatusCode::OK {
            last_ok = Some(r);
        } else {
            limited = Some(r);
            refused_at = sent;
        }
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let refill_bound = 3 + tokens_in(burst_start.elapsed(), 10);
    assert!(
        (3..=refill_bound).contains(&admitted),
        "admitted {admitted}, bound {refill_bound}: {statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let ok = last_ok.expect("an admitted request");
    assert_eq!(
        header(&ok, "ratelimit-policy"),
        Some(r#""second";q=10;w=1"#)
    );
    assert_eq!(header(&ok, "ratelimit"), Some(r#""second";r=0;t=1"#));
    let r = limited.expect("a refused request");
    assert_eq!(header(&r, "retry-after"), Some("1"));
    assert_eq!(header(&r, "ratelimit-policy"), Some(r#""second";q=10;w=1"#));
    assert!(header(&r, "ratelimit").is_some_and(|v| v.starts_with(r#""second";r=0;t="#)));
    let body = problem(r).await;
    assert!(body["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("/quota-exceeded")));
    assert_eq!(body["violated_limits"], serde_json::json!(["second"]));

    // Refill: 10 per second, so after 120 ms at least one more fits, and
    // never more than the time since the refusal allows.
    tokio::time::sleep(Duration::from_millis(120)).await;
    let mut refilled = 0;
    loop {
        let status = get(&p.url("/api/users"), Some(&plain)).await.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        refilled += 1;
        assert!(refilled < 50, "the bucket never ran empty again");
    }
    let bound = tokens_in(refused_at.elapsed(), 10);
    assert!(
        (1..=bound).contains(&refilled),
        "{refilled} admitted after the refill, bound {bound}"
    );
}

/// How many tokens a bucket refilled at `per_second` can gain in `elapsed`,
/// counting the one that may be due at the start.
fn tokens_in(elapsed: Duration, per_second: u32) -> usize {
    (elapsed.as_secs_f64() * f64::from(per_second)).floor() as usize + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_by_one_limit_takes_nothing_from_the_others_and_cost_counts() {
    let p = TestProxy::start(BASE, Store::Sqlite).await.expect("sqlite");
    let (_, plain) = p
        .create_key(NewApiKey {
            name: "multi".into(),
            limits: Some(vec![Limit {
                name: "own".into(),
                rate: 5,
                per: Duration::from_secs(3600),
                burst: None,
                cost: None,
                quota: None,
                scope: Default::default(),
            }]),
            ..NewApiKey::default()
        })
        .await;
    p.wait_status(&plain, "/api/orders", |s| s == 200, Duration::from_secs(3))
        .await;
    // orders: 2/min route limit; one token already used above.
    assert_eq!(
        get(&p.url("/api/orders"), Some(&plain)).await.status(),
        StatusCode::OK
    );
    for _ in 0..3 {
        let r = get(&p.url("/api/orders"), Some(&plain)).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            header(&r, "ratelimit"),
            Some(r#""own";r=3;t=1440, "orders";r=0;t=60"#),
            "refused requests took nothing from `own`"
        );
    }
    // The key's own bucket still has 3 tokens: products costs 4 on its route
    // bucket (burst 10) and 1 on `own`.
    let r = get(&p.url("/api/products"), Some(&plain)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "ratelimit"),
        Some(r#""own";r=2;t=2160, "expensive";r=6;t=24"#)
    );
    get(&p.url("/api/products"), Some(&plain)).await;
    let r = get(&p.url("/api/products"), Some(&plain)).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "cost 4 with 2 tokens left"
    );
    assert_eq!(
        problem(r).await["violated_limits"],
        serde_json::json!(["expensive"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_counts_but_never_blocks() {
    let p = TestProxy::start(BASE, Store::Sqlite).await.expect("sqlite");
    let (_, plain) = p.key(named("shadow")).await;
    let before = metric_value(
        &p.metrics_text().await,
        "tollgate_requests_total",
        &["route=\"shadowed\"", "outcome=\"shadow_limited\""],
    );
    for _ in 0..8 {
        let r = get(&p.url("/shadow/health"), Some(&plain)).await;
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "demo has no /shadow/health: forwarded"
        );
    }
    let after = metric_value(
        &p.metrics_text().await,
        "tollgate_requests_total",
        &["route=\"shadowed\"", "outcome=\"shadow_limited\""],
    );
    assert!(after - before >= 4.0, "{before} → {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_none_routes_are_limited_per_client_ip() {
    let p = TestProxy::start(BASE, Store::Sqlite).await.expect("sqlite");
    assert_eq!(get(&p.url("/health"), None).await.status(), StatusCode::OK);
    let r = get(&p.url("/health"), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "ratelimit"), Some(r#""per-ip";r=0;t=60"#));
    let r = get(&p.url("/health"), None).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after"), Some("30"));
}

async fn key_changes_reach_the_running_proxy(store: Store) {
    let Some(p) = TestProxy::start(BASE, store).await else {
        return;
    };
    let (k, plain) = p.key(named("toggle")).await;
    p.db.update_key(
        k.id,
        &KeyPatch {
            enabled: Some(false),
            ..KeyPatch::default()
        },
    )
    .await
    .expect("disable");
    let took = p
        .wait_status(&plain, "/api/users", |s| s == 403, Duration::from_secs(3))
        .await;
    assert!(took < Duration::from_secs(1), "disable took {took:?}");
    p.db.update_key(
        k.id,
        &KeyPatch {
            enabled: Some(true),
            ..KeyPatch::default()
        },
    )
    .await
    .expect("enable");
    p.wait_status(&plain, "/api/users", |s| s == 200, Duration::from_secs(1))
        .await;
    let (_, new_plain) =
        p.db.rotate_key(k.id, Duration::ZERO)
            .await
            .expect("rotate")
            .expect("key exists");
    p.wait_status(&plain, "/api/users", |s| s == 403, Duration::from_secs(1))
        .await;
    p.wait_status(
        &new_plain,
        "/api/users",
        |s| s == 200,
        Duration::from_secs(1),
    )
    .await;
    assert!(p.db.delete_key(k.id).await.expect("delete"));
    p.wait_status(
        &new_plain,
        "/api/users",
        |s| s == 403,
        Duration::from_secs(1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changes_reach_the_running_proxy_sqlite() {
    key_changes_reach_the_running_proxy(Store::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changes_reach_the_running_proxy_postgres() {
    key_changes_reach_the_running_proxy(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_applies_good_edits_and_refuses_bad_ones() {
    let p = TestProxy::start(BASE, Store::Sqlite).await.expect("sqlite");
    let (_, plain) = p.key(named("reload")).await;
    assert_eq!(
        get(&p.url("/api/users"), Some(&plain)).await.status(),
        StatusCode::OK
    );
    let text = std::fs::read_to_string(&p.config_path).expect("config");
    let reloads = |t: &str, r: &str| {
        metric_value(
            t,
            "tollgate_config_reloads_total",
            &[&format!("result=\"{r}\"")],
        )
    };
    let m0 = p.metrics_text().await;

    // Bad edit: unknown upstream. Refused; the old config keeps serving.
    let bad = text.replace(
        "upstream: demo\n    strip_prefix: /api\n    default_plan: free",
        "upstream: nowhere\n    strip_prefix: /api\n    default_plan: free",
    );
    assert_ne!(bad, text);
    std::fs::write(&p.config_path, &bad).expect("write");
    let start = std::time::Instant::now();
    loop {
        let m = p.metrics_text().await;
        if reloads(&m, "failed") > reloads(&m0, "failed") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "bad reload not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&p.url("/api/users"), Some(&plain)).await.status(),
        StatusCode::OK
    );

    // Good edit: the users route moves to /v2/users.
    let good = text
        .replace("path_prefix: /api/users", "path_prefix: /v2/users")
        .replace(
            "strip_prefix: /api\n    default_plan: free",
            "strip_prefix: /v2\n    default_plan: free",
        );
    std::fs::write(&p.config_path, &good).expect("write");
    p.wait_status(&plain, "/v2/users", |s| s == 200, Duration::from_secs(5))
        .await;
    assert_eq!(
        get(&p.url("/api/users"), Some(&plain)).await.status(),
        StatusCode::NOT_FOUND
    );
    let m = p.metrics_text().await;
    assert!(reloads(&m, "ok") > reloads(&m0, "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_bad_keys_from_one_ip_are_throttled() {
    let yaml = BASE.replace("plans:", "proxy:\n  listen: \"{listen}\"\n  metrics_listen: \"{metrics}\"\n  auth_failures_per_second: 5\nplans:");
    let p = TestProxy::start(&yaml, Store::Sqlite)
        .await
        .expect("sqlite");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            get(&p.url("/api/users"), Some("tg_guess"))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(&statuses[..5], &[403; 5], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let r = get(&p.url("/api/users"), Some("tg_guess")).await;
    if r.status() == StatusCode::TOO_MANY_REQUESTS {
        let body = problem(r).await;
        assert!(body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/too-many-auth-failures")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_lists_tollgate_metrics_without_key_labels() {
    let p = TestProxy::start(BASE, Store::Sqlite).await.expect("sqlite");
    let (k, plain) = p.key(named("metrics")).await;
    get(&p.url("/api/users"), Some(&plain)).await;
    get(&p.url("/api/users"), None).await;
    // Requests are counted in Pingora's logging phase, which may run just
    // after the client has its answer: wait for both to be counted.
    let counted = |text: &str, outcome: &str| {
        metric_value(
            text,
            "tollgate_requests_total",
            &["route=\"users\"", &format!("outcome=\"{outcome}\"")],
        ) >= 1.0
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut text = p.metrics_text().await;
    while !(counted(&text, "allowed") && counted(&text, "unauthorized"))
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = p.metrics_text().await;
    }
    for name in [
        "tollgate_requests_total",
        "tollgate_request_duration_seconds_bucket",
        "tollgate_limiter_decision_duration_seconds_bucket",
        "tollgate_keys_loaded",
        "tollgate_config_reloads_total",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    assert!(counted(&text, "allowed"), "{text}");
    assert!(counted(&text, "unauthorized"), "{text}");
    assert!(!text.contains(&plain));
    assert!(!text.contains(&format!("key_id=\"{}\"", k.id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_skips_a_target_that_fails_its_health_check() {
    let dead = common::free_port();
    let yaml = BASE.replace(
        "demo: { targets: [\"{upstream}\"] }",
        &format!("demo: {{ targets: [\"{{upstream}}\", \"127.0.0.1:{dead}\"], health_check: {{ path: /health, interval: 200ms }} }}"),
    );
    let p = TestProxy::start(&yaml, Store::Sqlite)
        .await
        .expect("sqlite");
    let (_, plain) = p
        .key(NewApiKey {
            name: "rr".into(),
            plan: Some("big".into()),
            ..NewApiKey::default()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let healthy = metric_value(
        &p.metrics_text().await,
        "tollgate_upstream_targets_healthy",
        &[],
    );
    assert_eq!(healthy, 1.0, "one of two targets is healthy");
    for _ in 0..10 {
        assert_eq!(
            get(&p.url("/api/users/1"), Some(&plain))
                .await
                .status()
                .as_u16(),
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_problem_json() {
    let dead = common::free_port();
    let yaml = BASE.replace(
        "demo: { targets: [\"{upstream}\"] }",
        &format!("demo: {{ targets: [\"127.0.0.1:{dead}\"] }}"),
    );
    let p = TestProxy::start(&yaml, Store::Sqlite)
        .await
        .expect("sqlite");
    let (_, plain) = p.create_key(named("down")).await;
    let took = p
        .wait_status(&plain, "/api/users", |s| s == 502, Duration::from_secs(3))
        .await;
    assert!(took < Duration::from_secs(3));
    let r = get(&p.url("/api/users"), Some(&plain)).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(
        header(&r, "ratelimit").is_some(),
        "keyed answers carry RateLimit"
    );
    assert!(problem(r).await["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("/upstream-error")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_refuses_a_second_request_in_flight() {
    let p = TestProxy::start(BASE, Store::Sqlite).await.expect("sqlite");
    let (_, plain) = p
        .key(NewApiKey {
            name: "one-at-a-time".into(),
            plan: Some("single".into()),
            ..NewApiKey::default()
        })
        .await;
    let slow = {
        let (url, key) = (p.url("/slow/600"), plain.clone());
        tokio::spawn(async move { get(&url, Some(&key)).await.status() })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = get(&p.url("/slow/0"), Some(&plain)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(problem(r).await["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("/concurrency-exceeded")));
    assert_eq!(slow.await.expect("slow request"), StatusCode::OK);
    // The slot is free again once the first request finished.
    assert_eq!(
        get(&p.url("/slow/0"), Some(&plain)).await.status(),
        StatusCode::OK
    );
}
