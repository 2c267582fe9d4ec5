//! Prometheus metrics (`tollgate_` prefix, base units, no per-key labels) and
//! the `/metrics` endpoint served on `proxy.metrics_listen`.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{
    register_gauge, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, Encoder, Gauge, Histogram, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, TextEncoder,
};

/// Outcome label values of `tollgate_requests_total`.
pub mod outcome {
    pub const ALLOWED: &str = "allowed";
    pub const LIMITED: &str = "limited";
    pub const SHADOW_LIMITED: &str = "shadow_limited";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const UPSTREAM_ERROR: &str = "upstream_error";
    pub const UNAVAILABLE: &str = "unavailable";
    /// Every value above.
    pub const ALL: [&str; 9] = [
        ALLOWED,
        LIMITED,
        SHADOW_LIMITED,
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        UPSTREAM_ERROR,
        UNAVAILABLE,
    ];
}

/// `tollgate_requests_total` and `tollgate_request_duration_seconds` of one
/// route, kept with the compiled route: each series is looked up by its
/// labels once (on first use, so `/metrics` lists only series that
/// happened), not per request.
#[derive(Debug)]
pub struct RouteMetrics {
    route: Arc<str>,
    requests: [OnceLock<IntCounter>; outcome::ALL.len()],
    duration: OnceLock<Histogram>,
}

impl RouteMetrics {
    pub fn new(route: Arc<str>) -> Self {
        Self {
            route,
            requests: Default::default(),
            duration: OnceLock::new(),
        }
    }

    /// Count one finished request of this route.
    pub fn request(&self, outcome: &str, elapsed: Duration) {
        let labels = [&*self.route, outcome];
        match outcome::ALL.iter().position(|o| *o == outcome) {
            Some(i) => self.requests[i]
                .get_or_init(|| REQUESTS.with_label_values(&labels))
                .inc(),
            None => REQUESTS.with_label_values(&labels).inc(),
        }
        self.duration
            .get_or_init(|| REQUEST_DURATION.with_label_values(&[&*self.route]))
            .observe(elapsed.as_secs_f64());
    }
}

/// Count one finished request that matched no route (label `route=""`).
pub fn unrouted_request(outcome: &str, elapsed: Duration) {
    REQUESTS.with_label_values(&["", outcome]).inc();
    REQUEST_DURATION
        .with_label_values(&[""])
        .observe(elapsed.as_secs_f64());
}

/// `metric!(NAME: Type = register_…!(…))`: a metric registered in the
/// default registry on first use (a name registered twice is a bug, found by
/// the first test that touches it). Shared with `edge_metrics`.
macro_rules! metric {
    ($name:ident: $ty:ty = $init:expr) => {
        pub static $name: std::sync::LazyLock<$ty> = std::sync::LazyLock::new(|| {
            #[allow(clippy::expect_used)]
            $init.expect(concat!("metric ", stringify!($name), " registers once"))
        });
    };
}
pub(crate) use metric;

metric!(REQUESTS: IntCounterVec = register_int_counter_vec!(
    "tollgate_requests_total",
    "Requests by route and outcome",
    &["route", "outcome"]
));
metric!(REQUEST_DURATION: HistogramVec = register_histogram_vec!(
    "tollgate_request_duration_seconds",
    "Time from request start to the end of the response, by route",
    &["route"],
    vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
));
metric!(LIMITER_DURATION: HistogramVec = register_histogram_vec!(
    "tollgate_limiter_decision_duration_seconds",
    "Time to decide a request's limits, by backend",
    &["backend"],
    vec![0.000_001, 0.000_005, 0.000_025, 0.0001, 0.0005, 0.001, 0.005, 0.02, 0.1]
));
metric!(KEYS_LOADED: IntGauge = register_int_gauge!(
    "tollgate_keys_loaded",
    "API keys held in the proxy's in-memory key set"
));
metric!(KEY_REFRESH_ERRORS: IntCounter = register_int_counter!(
    "tollgate_key_refresh_errors_total",
    "Failed attempts to refresh the key set from the database"
));
metric!(CONFIG_RELOADS: IntCounterVec = register_int_counter_vec!(
    "tollgate_config_reloads_total",
    "Config file reloads by result (ok, failed: refused as invalid, unreadable: file missing or unreadable)",
    &["result"]
));
metric!(LIMITER_SUBJECTS: IntGauge = register_int_gauge!(
    "tollgate_local_limiter_subjects",
    "Subjects (keys, IPs) with non-full buckets in the in-process limiter"
));
metric!(UPSTREAM_HEALTHY: Gauge = register_gauge!(
    "tollgate_upstream_targets_healthy",
    "Upstream targets currently passing health checks"
));
metric!(REDIS_ERRORS: IntCounterVec = register_int_counter_vec!(
    "tollgate_redis_errors_total",
    "Redis limiter failures by kind (timeout, connection, script, circuit_open, …)",
    &["kind"]
));
metric!(REDIS_BREAKER_STATE: IntGauge = register_int_gauge!(
    "tollgate_redis_breaker_state",
    "Redis circuit breaker: 0 closed, 1 open, 2 half-open"
));
metric!(REDIS_UP: IntGauge = register_int_gauge!(
    "tollgate_redis_up",
    "1 while the keepalive PING through the Redis limiter's connection is answered, else 0"
));
metric!(LIMITER_FALLBACKS: IntCounterVec = register_int_counter_vec!(
    "tollgate_limiter_fallback_decisions_total",
    "Decisions made by the on_redis_error policy instead of Redis, by policy",
    &["policy"]
));
metric!(OVER_LIMIT_CACHE_HITS: IntGauge = register_int_gauge!(
    "tollgate_redis_over_limit_cache_hits",
    "Requests refused from the over-limit cache without asking Redis (since start)"
));
metric!(LEASED_TOKENS: IntGauge = register_int_gauge!(
    "tollgate_limiter_leased_tokens",
    "Tokens this proxy holds in Redis token leases, unspent (taken from Redis, not yet admitted or given back)"
));
metric!(FALLBACK_PEERS: IntGauge = register_int_gauge!(
    "tollgate_limiter_fallback_peers",
    "Live proxies (heartbeats in the instances table) that each limit is shared by when on_redis_error: local decides: each proxy takes 1/N of it"
));
metric!(LEASE_HITS: IntGauge = register_int_gauge!(
    "tollgate_limiter_lease_hits",
    "Requests admitted from this proxy's Redis token leases without asking Redis (since start)"
));
metric!(AUTH_THROTTLED: IntCounter = register_int_counter!(
    "tollgate_auth_throttled_total",
    "Requests refused because their IP sent too many missing or invalid keys"
));

metric!(USAGE_ROWS_WRITTEN: IntCounter = register_int_counter!(
    "tollgate_usage_rows_written_total",
    "Usage rows (minute x key x route) written to the database"
));
metric!(USAGE_DROPPED: IntCounterVec = register_int_counter_vec!(
    "tollgate_usage_dropped_total",
    "Usage lost because the bounded buffer was full: requests whose row was dropped (kind=requests), violations (kind=violations)",
    &["kind"]
));
metric!(WEBHOOK_EVENTS: IntCounterVec = register_int_counter_vec!(
    "tollgate_webhook_events_total",
    "Quota and credit webhook events by outcome: noticed (queued), dropped (queue full), enqueued (into the outbox), duplicate (another proxy enqueued it first), failed (the database refused it after retries; sent again by a later request)",
    &["outcome"]
));
metric!(USAGE_FLUSH_ERRORS: IntCounter = register_int_counter!(
    "tollgate_usage_flush_errors_total",
    "Usage flushes that failed (database unreachable or erroring); what was held is retried"
));
metric!(USAGE_BUFFERED_ROWS: IntGauge = register_int_gauge!(
    "tollgate_usage_buffered_rows",
    "Usage rows held by the flusher that are not written yet"
));
metric!(INSTANCE_NAME_CONFLICTS: IntGauge = register_int_gauge!(
    "tollgate_instance_name_conflicts",
    "Other live proxies heartbeating under this proxy's quota-count name (proxy.instance_name): both overwrite the same counts"
));
metric!(IDLE_CLOSED: IntCounter = register_int_counter!(
    "tollgate_idle_connections_closed_total",
    "New client connections closed because they sent nothing within proxy.keepalive_timeout"
));

metric!(USAGE_BATCHES_REPEATED: IntCounter = register_int_counter!(
    "tollgate_usage_batches_repeated_total",
    "Usage batches retried after a timeout that had been written already (skipped, not counted twice)"
));
metric!(BACKGROUND_RESTARTS: IntCounterVec = register_int_counter_vec!(
    "tollgate_background_restarts_total",
    "Background tasks restarted after they panicked or stopped, by task",
    &["task"]
));
metric!(KEYS_LAST_REFRESH: Gauge = register_gauge!(
    "tollgate_keys_last_refresh_timestamp_seconds",
    "Unix time of the last successful check of the key set against the database (revocations are at most this old)"
));
metric!(UNKNOWN_PLAN: IntCounter = register_int_counter!(
    "tollgate_unknown_plan_total",
    "Requests refused (403 unknown-plan) because their key names a plan that exists neither in the YAML nor in the database"
));
metric!(PLAN_CONFLICTS: IntGauge = register_int_gauge!(
    "tollgate_plan_name_conflicts",
    "Plan names defined both in the YAML config and in the database (the YAML plan is used)"
));
metric!(CREDIT_ROWS_FOLDED: IntCounter = register_int_counter!(
    "tollgate_credit_spend_rows_folded_total",
    "Credit spend rows this proxy folded into one row per balance (the start-up read stays short)"
));
metric!(UPSTREAM_RESOLVE_ERRORS: IntCounter = register_int_counter!(
    "tollgate_upstream_resolve_errors_total",
    "Failed re-resolutions of upstream target host names (the previous addresses stay)"
));

/// Touch every metric so `/metrics` lists them before the first request.
pub fn init() {
    LazyLock::force(&USAGE_BATCHES_REPEATED);
    LazyLock::force(&KEYS_LAST_REFRESH);
    LazyLock::force(&UNKNOWN_PLAN);
    LazyLock::force(&PLAN_CONFLICTS);
    LazyLock::force(&UPSTREAM_RESOLVE_ERRORS);
    LazyLock::force(&CREDIT_ROWS_FOLDED);
    LazyLock::force(&REQUESTS);
    LazyLock::force(&IDLE_CLOSED);
    LazyLock::force(&REQUEST_DURATION);
    LazyLock::force(&LIMITER_DURATION);
    LazyLock::force(&KEYS_LOADED);
    LazyLock::force(&KEY_REFRESH_ERRORS);
    LazyLock::force(&CONFIG_RELOADS);
    LazyLock::force(&LIMITER_SUBJECTS);
    LazyLock::force(&UPSTREAM_HEALTHY);
    LazyLock::force(&AUTH_THROTTLED);
    LazyLock::force(&REDIS_ERRORS);
    LazyLock::force(&REDIS_BREAKER_STATE);
    LazyLock::force(&REDIS_UP);
    LazyLock::force(&LIMITER_FALLBACKS);
    LazyLock::force(&OVER_LIMIT_CACHE_HITS);
    LazyLock::force(&LEASED_TOKENS);
    LazyLock::force(&LEASE_HITS);
    FALLBACK_PEERS.set(1);
    LazyLock::force(&USAGE_ROWS_WRITTEN);
    LazyLock::force(&USAGE_FLUSH_ERRORS);
    LazyLock::force(&USAGE_BUFFERED_ROWS);
    LazyLock::force(&INSTANCE_NAME_CONFLICTS);
    for kind in ["requests", "violations"] {
        USAGE_DROPPED.with_label_values(&[kind]);
    }
    for outcome in ["noticed", "dropped", "enqueued", "duplicate", "failed"] {
        WEBHOOK_EVENTS.with_label_values(&[outcome]);
    }
    for result in ["ok", "failed", "unreadable"] {
        CONFIG_RELOADS.with_label_values(&[result]);
    }
}

/// The text exposition of every registered metric.
pub fn render() -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 * 1024);
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut buf) {
        tracing::error!("cannot encode metrics: {e}");
    }
    buf
}

/// `GET /metrics` (anything else is 404).
pub struct MetricsApp;

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        let (status, ctype, body) = if path == "/metrics" {
            (200, "text/plain; version=0.0.4", render())
        } else {
            (404, "text/plain", b"not found\n".to_vec())
        };
        Response::builder()
            .status(status)
            .header("Content-Type", ctype)
            .header("Content-Length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_handles_count_in_the_labelled_series() {
        let m = RouteMetrics::new("metrics-handle-test".into());
        let before = REQUESTS
            .with_label_values(&["metrics-handle-test", outcome::ALLOWED])
            .get();
        m.request(outcome::ALLOWED, Duration::from_millis(1));
        m.request(outcome::ALLOWED, Duration::from_millis(1));
        // An outcome outside `outcome::ALL` is still counted under its label.
        m.request("bad_request", Duration::from_millis(1));
        let allowed = REQUESTS.with_label_values(&["metrics-handle-test", outcome::ALLOWED]);
        assert_eq!(allowed.get(), before + 2);
        let bad = REQUESTS.with_label_values(&["metrics-handle-test", "bad_request"]);
        assert_eq!(bad.get(), 1);
        let d = REQUEST_DURATION.with_label_values(&["metrics-handle-test"]);
        assert_eq!(d.get_sample_count(), 3);
        // A second handle of the same route (after a reload) shares the series.
        RouteMetrics::new("metrics-handle-test".into()).request(outcome::ALLOWED, Duration::ZERO);
        assert_eq!(allowed.get(), before + 3);
    }
}
