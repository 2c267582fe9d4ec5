//! OpenTelemetry spans of proxied requests, received by a real OTLP/HTTP
//! receiver: one span per request, its parent the client's `traceparent`,
//! its span id the parent the upstream was sent; refusals (401, 429) have
//! spans too; junk trace context starts a fresh trace; a collector that is
//! down or hangs changes no answer.

mod common;

use std::time::{Duration, Instant};

use common::{metric_value, TestProxy};
use tollgate_core::db::NewApiKey;
use tollgate_core::trace::parse_traceparent;
use tollgate_telemetry::testing::{Collector, Hanging, Received};

const WAIT: Duration = Duration::from_secs(60);

fn config(endpoint: &str) -> String {
    format!(
        r#"
proxy:
  listen: "{{listen}}"
  metrics_listen: "{{metrics}}"
  threads: 2
telemetry: {{ otlp_endpoint: "{endpoint}", service_name: edge-test }}
plans:
  tight: {{ limits: [ {{ name: burst, rate: 1, per: 1m, burst: 2 }} ] }}
upstreams:
  demo: {{ targets: ["{{upstream}}"] }}
routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
    default_plan: tight
"#
    )
}

/// The `traceparent` the demo upstream echoed back.
async fn upstream_traceparent(r: reqwest::Response) -> String {
    let body: serde_json::Value = r.json().await.expect("json");
    body["request"]["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("upstream saw no traceparent: {body}"))
        .to_string()
}

async fn get(proxy: &TestProxy, key: Option<&str>, traceparent: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(proxy.url("/api/users"));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    if let Some(t) = traceparent {
        req = req.header("traceparent", t);
    }
    req.send().await.expect("request")
}

async fn span_with_request_id(c: &Collector, r: &reqwest::Response) -> Received {
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id")
        .to_string();
    c.wait_for(WAIT, |s| s.attr("tollgate.request_id") == Some(id.as_str()))
        .await
        .unwrap_or_else(|| panic!("no span for request {id}: {:?}", c.spans()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_one_span_and_the_upstream_its_child() {
    let c = Collector::start().await;
    let proxy = TestProxy::start(&config(&c.endpoint()), common::Store::Sqlite)
        .await
        .expect("sqlite proxy");
    let (key_row, key) = proxy
        .key(NewApiKey {
            name: "otel".into(),
            limits: Some(vec![]),
            ..NewApiKey::default()
        })
        .await;

    // With the client's parent: same trace, the proxy's span in between.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = get(&proxy, Some(&key), Some(parent)).await;
    assert_eq!(r.status().as_u16(), 200);
    let s = span_with_request_id(&c, &r).await;
    let seen = parse_traceparent(&upstream_traceparent(r).await).expect("valid traceparent");
    assert_eq!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(s.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(
        s.span_id,
        seen.span_id_hex(),
        "the upstream's parent is the proxy span"
    );
    assert_eq!(seen.trace_id_hex(), s.trace_id);
    assert_eq!(s.service_name, "edge-test");
    assert_eq!(s.scope, "tollgate-proxy");
    assert_eq!(s.name, "GET users");
    assert_eq!(s.attr("tollgate.route"), Some("users"));
    assert_eq!(
        s.attr("tollgate.key_id"),
        Some(key_row.id.to_string().as_str())
    );
    assert_eq!(s.attr("tollgate.identity"), Some(""));
    assert_eq!(s.attr("tollgate.decision"), Some("allowed"));
    assert_eq!(s.attr("tollgate.limiter"), Some("local"));
    assert_eq!(s.attr("tollgate.limits.violated"), Some(""));
    assert_eq!(s.attr("http.response.status_code"), Some("200"));
    assert_eq!(s.attr("http.request.method"), Some("GET"));
    let upstream = s.attr("tollgate.upstream").expect("upstream attribute");
    assert!(upstream.contains("127.0.0.1:"), "{upstream}");

    // Without one: a fresh root trace, still the upstream's parent.
    let r = get(&proxy, Some(&key), None).await;
    assert_eq!(r.status().as_u16(), 200);
    let s = span_with_request_id(&c, &r).await;
    let seen = parse_traceparent(&upstream_traceparent(r).await).expect("valid traceparent");
    assert_eq!(s.parent_span_id, "");
    assert_eq!(
        (s.trace_id.as_str(), s.span_id.as_str()),
        (seen.trace_id_hex().as_str(), seen.span_id_hex().as_str())
    );
    assert_ne!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");

    // Over the plan's burst (2): 429, a span with the decision and the limit.
    let (_, tight) = proxy.key(common::named("tight")).await;
    let mut r = get(&proxy, Some(&tight), Some(parent)).await;
    for _ in 0..3 {
        if r.status().as_u16() == 429 {
            break;
        }
        r = get(&proxy, Some(&tight), Some(parent)).await;
    }
    assert_eq!(r.status().as_u16(), 429);
    let s = span_with_request_id(&c, &r).await;
    assert_eq!(s.attr("tollgate.decision"), Some("limited"));
    assert_eq!(s.attr("tollgate.limits.violated"), Some("burst"));
    assert_eq!(s.attr("http.response.status_code"), Some("429"));
    assert_eq!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(s.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(s.attr("tollgate.upstream"), None);

    // No key: 401, a span saying so, no key id.
    let r = get(&proxy, None, None).await;
    assert_eq!(r.status().as_u16(), 401);
    let s = span_with_request_id(&c, &r).await;
    assert_eq!(s.attr("tollgate.decision"), Some("unauthorized"));
    assert_eq!(s.attr("http.response.status_code"), Some("401"));
    assert_eq!(s.attr("tollgate.key_id"), None);
    assert_eq!(s.parent_span_id, "");
    assert_eq!(s.trace_id.len(), 32);

    // Round 15 (black-box): a key put in the URL path by mistake is not
    // exported in `url.path`, literal or percent-encoded.
    let encoded = format!("tg%5F{}", &key[3..]);
    for (path, want) in [
        (format!("/api/users/{key}/x"), "/api/users/tg_[redacted]/x"),
        (format!("/api/users/{encoded}"), "/api/users/tg_[redacted]"),
    ] {
        let r = reqwest::Client::new()
            .get(proxy.url(&path))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let s = span_with_request_id(&c, &r).await;
        assert_eq!(s.attr("url.path"), Some(want), "{path}");
    }

    // Hostile trace context: a fresh, valid trace each time.
    let (_, key2) = proxy
        .key(NewApiKey {
            name: "hostile".into(),
            limits: Some(vec![]),
            ..NewApiKey::default()
        })
        .await;
    let long = format!("00-{}-00f067aa0ba902b7-01", "a".repeat(6000));
    for bad in [
        long.as_str(),
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-junk",
        "\u{7f}garbage",
    ] {
        let r = reqwest::Client::new()
            .get(proxy.url("/api/users"))
            .header("x-api-key", &key2)
            .header(
                "traceparent",
                reqwest::header::HeaderValue::from_bytes(bad.as_bytes())
                    .unwrap_or(reqwest::header::HeaderValue::from_static("junk")),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 200, "{bad:?}");
        let s = span_with_request_id(&c, &r).await;
        let seen = parse_traceparent(&upstream_traceparent(r).await).expect("valid traceparent");
        assert_eq!(s.parent_span_id, "", "{bad:?}");
        assert_ne!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad:?}");
        assert_eq!(s.span_id, seen.span_id_hex(), "{bad:?}");
        assert_eq!(s.trace_id, seen.trace_id_hex(), "{bad:?}");
    }
    // Two `traceparent` lines, even both valid: a fresh trace (W3C), not
    // the first line's.
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = reqwest::Client::new()
        .get(proxy.url("/api/users"))
        .header("x-api-key", &key2)
        .header("traceparent", valid)
        .header(
            "traceparent",
            "00-11111111111111111111111111111111-2222222222222222-01",
        )
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let s = span_with_request_id(&c, &r).await;
    assert_eq!(s.parent_span_id, "", "two traceparent lines");
    assert_ne!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(s.trace_id, "11111111111111111111111111111111");

    // Round 15 (black-box): a valid tracestate whose member holds a key
    // was passed on; it is dropped (the parent is kept).
    let r = reqwest::Client::new()
        .get(proxy.url("/api/users"))
        .header("x-api-key", &key)
        .header("traceparent", parent)
        .header("tracestate", format!("vendor={key}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let body = r.text().await.expect("body");
    assert!(
        !body.contains(&key[3..]),
        "the key reached the upstream: {body}"
    );
    assert!(body.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{body}");

    // Every span was valid OTLP, and the metric counts them.
    assert!(c.bad_requests.lock().expect("bad").is_empty());
    let m = proxy.metrics_text().await;
    assert!(
        metric_value(&m, "tollgate_otlp_spans_total", &["outcome=\"exported\""]) >= 10.0,
        "{m}"
    );
}

/// A dead or hanging collector: every answer is the same as without one,
/// none waits for the export (the bound is far above a request's time and
/// far below the exporter's 5 s timeout times the requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_hangs_changes_no_answer() {
    let hang = Hanging::start().await;
    let (_refusing, refused_port) = common::closed_port();
    for endpoint in [hang.endpoint(), format!("http://127.0.0.1:{refused_port}")] {
        let proxy = TestProxy::start(&config(&endpoint), common::Store::Sqlite)
            .await
            .expect("sqlite proxy");
        let (_, key) = proxy
            .key(NewApiKey {
                name: "k".into(),
                limits: Some(vec![]),
                ..NewApiKey::default()
            })
            .await;
        let started = Instant::now();
        for i in 0..30 {
            let r = get(&proxy, Some(&key), None).await;
            assert_eq!(r.status().as_u16(), 200, "{endpoint} request {i}");
            let _ = upstream_traceparent(r).await;
            if i % 10 == 0 {
                // (Few: the bad-key throttle answers 429 past a few a second.)
                let r = get(&proxy, None, None).await;
                assert_eq!(r.status().as_u16(), 401, "{endpoint} request {i}");
            }
        }
        // 33 requests; a request path that waited on the exporter would
        // take 5 s for each batch interval (1 s) that it spans.
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "{endpoint}: {:?}",
            started.elapsed()
        );
    }
}

/// With the Redis limiter the span says so and carries the time Redis took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_decision_carries_the_redis_time() {
    let Some(url) = common::redis::service_url("TOLLGATE_TEST_REDIS_URL") else {
        return;
    };
    let c = Collector::start().await;
    let yaml = format!(
        r#"
proxy:
  listen: "{{listen}}"
  metrics_listen: "{{metrics}}"
limiter:
  backend: redis
  redis_url: "{url}"
  redis_timeout: 2s
  on_redis_error: local
telemetry: {{ otlp_endpoint: "{}" }}
plans:
  wide: {{ limits: [ {{ name: otel_wide, rate: 100000, per: 1s, burst: 100000 }} ] }}
upstreams:
  demo: {{ targets: ["{{upstream}}"] }}
routes:
  - name: users
    match: {{ path_prefix: /api/users }}
    upstream: demo
    strip_prefix: /api
    default_plan: wide
"#,
        c.endpoint()
    );
    let proxy = TestProxy::start(&yaml, common::Store::Sqlite)
        .await
        .expect("sqlite proxy");
    let (_, key) = proxy.key(common::named("redis")).await;
    let r = get(&proxy, Some(&key), None).await;
    assert_eq!(r.status().as_u16(), 200);
    let s = span_with_request_id(&c, &r).await;
    assert_eq!(s.attr("tollgate.limiter"), Some("redis"), "{s:?}");
    let us: u64 = s
        .attr("tollgate.redis.duration_us")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Redis time: {s:?}"));
    assert!(us > 0, "{s:?}");
}

/// A stop sends the spans still queued: the last request's span arrives
/// although the proxy stopped right after it was counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_sends_the_spans_still_queued() {
    let c = Collector::start().await;
    let yaml = config(&c.endpoint()).replace("name: users", "name: flushed");
    let proxy = TestProxy::start(&yaml, common::Store::Sqlite)
        .await
        .expect("sqlite proxy");
    let (_, key) = proxy
        .key(NewApiKey {
            name: "flush".into(),
            limits: Some(vec![]),
            ..NewApiKey::default()
        })
        .await;
    let counted = |m: &str| {
        metric_value(
            m,
            "tollgate_requests_total",
            &["route=\"flushed\"", "outcome=\"allowed\""],
        )
    };
    let before = counted(&proxy.metrics_text().await);
    let r = get(&proxy, Some(&key), None).await;
    assert_eq!(r.status().as_u16(), 200);
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id")
        .to_string();
    // The span is recorded in the same step as the request's metric.
    let deadline = Instant::now() + WAIT;
    while counted(&proxy.metrics_text().await) <= before {
        assert!(Instant::now() < deadline, "request never counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::task::spawn_blocking(move || drop(proxy))
        .await
        .expect("stop");
    assert!(
        c.spans()
            .iter()
            .any(|s| s.attr("tollgate.request_id") == Some(id.as_str())),
        "the queued span was not sent at stop: {:?}",
        c.spans()
    );
}
