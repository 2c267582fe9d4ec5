//! Admin API spans (`telemetry.otlp_endpoint`), received by a real
//! OTLP/HTTP receiver: one per request, named by the route template, the
//! status and the caller's parent kept.

use std::time::Duration;

use reqwest::Method;
use tollgate_telemetry::testing::Collector;

use crate::common::{test_yaml, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_admin_request_is_one_span_named_by_its_route() {
    let c = Collector::start().await;
    let yaml = format!(
        "{}telemetry: {{ otlp_endpoint: \"{}\", service_name: admin-test }}\n",
        test_yaml("  backend: local"),
        c.endpoint()
    );
    let config = tollgate_core::config::parse(&yaml, "test.yaml").expect("config");
    let app = TestApp::sqlite_with(config).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = app
        .req(Method::GET, "/api/keys/987654")
        .header("traceparent", parent)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 404);
    let s = c
        .wait_for(Duration::from_secs(60), |s| {
            s.attr("http.route") == Some("/api/keys/{id}")
        })
        .await
        .unwrap_or_else(|| panic!("no admin span: {:?}", c.spans()));
    assert_eq!(s.name, "GET /api/keys/{id}");
    assert_eq!(s.attr("http.response.status_code"), Some("404"));
    assert_eq!(s.attr("http.request.method"), Some("GET"));
    assert_eq!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(s.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(s.service_name, "admin-test");
    assert_eq!(s.scope, "tollgate-admin");

    // A junk traceparent starts a fresh trace; a listed route answers 200.
    let r = app
        .req(Method::GET, "/api/keys")
        .header("traceparent", "00-zz-junk")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let s = c
        .wait_for(Duration::from_secs(60), |s| s.name == "GET /api/keys")
        .await
        .unwrap_or_else(|| panic!("no span for GET /api/keys: {:?}", c.spans()));
    assert_eq!(s.attr("http.response.status_code"), Some("200"));
    assert_eq!(s.parent_span_id, "");
    assert_eq!(s.trace_id.len(), 32);
    assert!(c.bad_requests.lock().expect("bad").is_empty());
}
