//! The listener the edge test files (`edge_headers.rs`, `edge_framing.rs`)
//! share: a keyed route, an `auth: none` route and a method-override route in
//! front of the echoing demo upstream, `max_header_bytes: 8KiB`.

use super::TestProxy;

pub const CONFIG: &str = r#"
proxy:
  listen: "{listen}"
  metrics_listen: "{metrics}"
  threads: 2
  max_header_bytes: 8KiB
plans:
  free: { limits: [ { name: minute, rate: 100000, per: 1m } ] }
upstreams:
  demo: { targets: ["{upstream}"] }
routes:
  - { name: keyed, match: { path_prefix: /api/users, methods: [GET, POST] }, upstream: demo, strip_prefix: /api, default_plan: free }
  - { name: open, match: { path_prefix: /open }, upstream: demo, strip_prefix: /open, auth: none }
  - { name: override, match: { path_prefix: /ovr, methods: [POST, PUT] }, upstream: demo, strip_prefix: /ovr, auth: none, allow_method_override: true }
"#;

/// The proxy on [`CONFIG`] and a valid key of it.
pub async fn setup() -> (TestProxy, String) {
    TestProxy::sqlite_with_key(CONFIG, "edge").await
}
