//! Metrics of the request edge (paths, framing, client addresses, slow and
//! greedy clients).

use std::sync::LazyLock;

use prometheus::{register_int_counter, register_int_counter_vec, IntCounter, IntCounterVec};

use crate::metrics::metric;

/// Outcome label of `tollgate_requests_total` for requests refused before
/// routing (bad path, framing, header too large).
pub const BAD_REQUEST: &str = "bad_request";

metric!(REFUSED: IntCounterVec = register_int_counter_vec!(
    "tollgate_edge_refused_total",
    "Requests refused as malformed, by reason (dot-segment, encoded-slash, header-too-large, too-many-header-fields, content-length-and-transfer-encoding, several-credentials, ...)",
    &["reason"]
));

metric!(THROTTLE_EVICTIONS: IntCounter = register_int_counter!(
    "tollgate_auth_throttle_evictions_total",
    "Client addresses dropped from the full bad-key throttle table while still throttled"
));

metric!(HEADER_TIMEOUTS: IntCounter = register_int_counter!(
    "tollgate_header_timeouts_total",
    "Connections closed because the request header did not arrive within proxy.header_timeout"
));

metric!(CONNECTIONS_REFUSED: IntCounterVec = register_int_counter_vec!(
    "tollgate_connections_refused_total",
    "Client connections closed at once: over proxy.max_connections_per_ip, over a side listener's total cap, or a bad PROXY protocol header",
    &["reason"]
));

/// Touch every metric so `/metrics` lists them before the first event.
pub fn init() {
    LazyLock::force(&REFUSED);
    LazyLock::force(&THROTTLE_EVICTIONS);
    LazyLock::force(&HEADER_TIMEOUTS);
    for reason in ["per_ip_cap", "total_cap", "proxy_protocol"] {
        CONNECTIONS_REFUSED.with_label_values(&[reason]);
    }
}
