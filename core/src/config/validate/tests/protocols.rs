//! `upstreams.*.protocol`, `proxy.h2c` and `telemetry:`.

use super::*;

fn upstream(body: &str) -> String {
    format!("upstreams:\n  g: {{ {body} }}\n")
}

#[test]
fn upstream_protocol_defaults_to_h1_and_matches_the_targets() {
    assert_eq!(
        ok(&upstream("targets: [\"127.0.0.1:50051\"]")).upstreams["g"].protocol,
        UpstreamProtocol::H1
    );
    assert_eq!(
        ok(&upstream("targets: [\"127.0.0.1:50051\"], protocol: h2c")).upstreams["g"].protocol,
        UpstreamProtocol::H2c
    );
    assert_eq!(
        ok(&upstream(
            "targets: [\"https://grpc.example.com\"], protocol: h2"
        ))
        .upstreams["g"]
            .protocol,
        UpstreamProtocol::H2
    );
    let e = errors(&upstream(
        "targets: [\"https://grpc.example.com\"], protocol: h2c",
    ));
    assert!(
        e[0].message
            .contains("upstreams.g.protocol: h2c is HTTP/2 without TLS"),
        "{e:?}"
    );
    let e = errors(&upstream("targets: [\"http://a:1\"], protocol: h2"));
    assert!(e[0].message.contains("use h2c"), "{e:?}");
    for bad in [
        "h3", "HTTP/2", "2", "~h2", "\"\"", "[h2]", "{ a: 1 }", "true",
    ] {
        let src = upstream(&format!("targets: [\"a:1\"], protocol: {bad}"));
        assert!(
            parse_and_validate(&src, "t.yaml").is_err(),
            "protocol {bad} accepted"
        );
    }
}

#[test]
fn h2c_is_a_flag_of_the_plain_listener() {
    assert!(!ok("").proxy.h2c);
    assert!(ok("proxy: { h2c: true }").proxy.h2c);
    let e = errors("proxy: { h2c: maybe }");
    assert!(e[0].message.contains("proxy.h2c"), "{e:?}");
}

#[test]
fn telemetry_needs_a_valid_endpoint_and_turns_trace_context_on() {
    let t = ok("").telemetry;
    assert!(!t.enabled());
    let t = ok("telemetry: { otlp_endpoint: \"http://127.0.0.1:4318\" }").telemetry;
    assert_eq!(
        t.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4318/v1/traces")
    );
    assert!(t.trace_context && t.enabled());
    assert_eq!(t.service_name, "tollgate");
    let t = ok("telemetry: { trace_context: true, service_name: edge-eu }").telemetry;
    assert!(t.trace_context && t.otlp_endpoint.is_none());
    assert_eq!(t.service_name, "edge-eu");
    let t = ok("telemetry: { otlp_endpoint: \"http://c:4318\", trace_context: false }").telemetry;
    assert!(!t.trace_context && t.enabled());
    for bad in [
        "telemetry: { otlp_endpoint: \"localhost:4318\" }",
        "telemetry: { otlp_endpoint: \"udp://c:4318\" }",
        "telemetry: { otlp_endpoint: 4318 }",
        "telemetry: { otlp_endpoint: \"http://c:4318/?x=1\" }",
        "telemetry: { service_name: \"\" }",
        "telemetry: { nope: 1 }",
        "telemetry: [1]",
    ] {
        assert!(parse_and_validate(bad, "t.yaml").is_err(), "{bad} accepted");
    }
}
