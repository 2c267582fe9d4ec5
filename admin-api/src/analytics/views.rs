//! The bodies the analytics endpoints answer.

use serde::Serialize;
use tollgate_core::db::usage::{bucket_bound_ms, Counts, MINUTE_MS};
use tollgate_core::db::{LATENCY_BUCKETS, LATENCY_BUCKET_BOUNDS_US};
use utoipa::ToSchema;

use crate::bodies::{KeyView, LimitBody};

/// One bucket of the latency histogram.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LatencyBucket {
    /// Upper bound (inclusive) in ms; `null` for the open-ended slowest bucket.
    pub le_ms: Option<f64>,
    pub count: i64,
}

/// How the requests ended: each counts in exactly one of `allowed`,
/// `limited`, `unauthorized`, `forbidden` and `upstream_errors`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Outcomes {
    /// Every request: allowed + limited + unauthorized + forbidden + upstream_errors.
    pub total: i64,
    /// Admitted and answered by the upstream (below 500).
    pub allowed: i64,
    /// Refused with 429.
    pub limited: i64,
    /// Refused with 401 (no key).
    pub unauthorized: i64,
    /// Refused with 403 (unknown, disabled or expired key).
    pub forbidden: i64,
    /// Admitted, but the upstream failed or answered 5xx.
    pub upstream_errors: i64,
}

impl Outcomes {
    pub(super) fn new(c: &Counts) -> Self {
        Self {
            total: c.total(),
            allowed: c.allowed,
            limited: c.limited,
            unauthorized: c.unauthorized,
            forbidden: c.forbidden,
            upstream_errors: c.upstream_errors,
        }
    }
}

/// Counts, rates and latency over a range.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageStats {
    #[serde(flatten)]
    pub outcomes: Outcomes,
    /// (limited + unauthorized + forbidden) / total; 0 without requests.
    #[schema(example = 0.125)]
    pub block_rate: f64,
    /// total / minutes in `from..to`.
    pub requests_per_minute: f64,
    /// `null` without requests.
    pub avg_latency_ms: Option<f64>,
    /// Percentiles, to the histogram bucket; `null` without requests.
    pub p50_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
    pub p99_latency_ms: Option<f64>,
    pub latency_histogram: Vec<LatencyBucket>,
}

impl UsageStats {
    pub(super) fn new(c: &Counts, from: i64, to: i64) -> Self {
        let total = c.total();
        let minutes = (to - from) as f64 / MINUTE_MS as f64;
        Self {
            outcomes: Outcomes::new(c),
            block_rate: ratio(c.refused(), total),
            requests_per_minute: if minutes > 0.0 {
                round(total as f64 / minutes)
            } else {
                0.0
            },
            avg_latency_ms: c.avg_latency_ms().map(round),
            p50_latency_ms: c.percentile_ms(0.50),
            p95_latency_ms: c.percentile_ms(0.95),
            p99_latency_ms: c.percentile_ms(0.99),
            latency_histogram: (0..LATENCY_BUCKETS)
                .map(|i| LatencyBucket {
                    le_ms: (i < LATENCY_BUCKET_BOUNDS_US.len()).then(|| bucket_bound_ms(i)),
                    count: c.latency_buckets[i],
                })
                .collect(),
        }
    }
}

fn ratio(part: i64, whole: i64) -> f64 {
    if whole > 0 {
        round(part as f64 / whole as f64)
    } else {
        0.0
    }
}

/// Four decimals are plenty for a dashboard and keep the JSON short.
fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// `GET /api/analytics/summary`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Summary {
    /// Unix ms.
    pub from: i64,
    /// Unix ms (exclusive).
    pub to: i64,
    #[serde(flatten)]
    pub stats: UsageStats,
    /// Keys with at least one request in the range.
    pub active_keys: i64,
}

/// One step of a time series.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeriesPoint {
    /// Unix ms at the start of the step (steps are aligned to UTC).
    pub at: i64,
    #[serde(flatten)]
    pub outcomes: Outcomes,
}

/// `GET /api/analytics/timeseries`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Timeseries {
    pub from: i64,
    pub to: i64,
    #[schema(example = "5m")]
    pub step: String,
    pub step_ms: i64,
    /// The key filter (0: requests without a key), if any.
    pub key: Option<i64>,
    pub route: Option<String>,
    /// One point per step from the step holding `from` up to `to`, zero-filled.
    pub points: Vec<SeriesPoint>,
}

/// Where a key's limits come from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitsSource {
    /// The key's own limits.
    Key,
    /// The key's identity's own limits.
    Identity,
    /// The key's plan, else its identity's.
    Plan,
    /// Neither: each route's `default_plan` applies.
    RouteDefault,
}

/// Usage of one route.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RouteStats {
    pub route: String,
    #[serde(flatten)]
    pub outcomes: Outcomes,
    pub avg_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
}

impl RouteStats {
    pub(super) fn new(route: String, c: &Counts) -> Self {
        Self {
            route,
            outcomes: Outcomes::new(c),
            avg_latency_ms: c.avg_latency_ms().map(round),
            p95_latency_ms: c.percentile_ms(0.95),
        }
    }
}

/// `GET /api/analytics/keys/{id}`: a key, the limits that apply to it and
/// its usage in the range.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyAnalytics {
    pub key: KeyView,
    pub limits_source: LimitsSource,
    /// The plan whose limits apply (`limits_source = plan`).
    pub plan: Option<String>,
    /// The limits that apply, besides each route's own (empty for `route_default`).
    pub limits: Vec<LimitBody>,
    /// Maximum in-flight requests (the key's own, else its plan's).
    pub concurrency: Option<u32>,
    pub from: i64,
    pub to: i64,
    #[serde(flatten)]
    pub stats: UsageStats,
    /// Per route, busiest first.
    pub routes: Vec<RouteStats>,
}

/// A key's requests over a range.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyCounts {
    #[serde(flatten)]
    pub outcomes: Outcomes,
    pub block_rate: f64,
    pub avg_latency_ms: Option<f64>,
}

impl KeyCounts {
    pub(super) fn new(c: &Counts) -> Self {
        Self {
            outcomes: Outcomes::new(c),
            block_rate: ratio(c.refused(), c.total()),
            avg_latency_ms: c.avg_latency_ms().map(round),
        }
    }
}

/// One key in `top-keys`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopKey {
    pub key_id: i64,
    /// `null` if the key has been deleted since.
    pub name: Option<String>,
    pub key_prefix: Option<String>,
    #[serde(flatten)]
    pub counts: KeyCounts,
}

/// One key in `GET /api/analytics/keys`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyUsageView {
    pub key_id: i64,
    #[serde(flatten)]
    pub counts: KeyCounts,
}

/// `GET /api/analytics/keys`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeysUsage {
    pub from: i64,
    pub to: i64,
    /// One per requested id, in the order asked (zeros for a key without
    /// requests, or no key of that id).
    pub items: Vec<KeyUsageView>,
}

/// `GET /api/analytics/top-keys`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopKeys {
    pub from: i64,
    pub to: i64,
    /// Most requests first (ties: lower id first).
    pub items: Vec<TopKey>,
}

/// A refused request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ViolationView {
    pub id: i64,
    /// Unix ms.
    pub at: i64,
    /// `null` when no known key was presented.
    pub key_id: Option<i64>,
    pub key_name: Option<String>,
    pub route: String,
    #[schema(example = "GET")]
    pub method: String,
    pub path: String,
    pub client_ip: String,
    /// The violated limit(s) of a 429, comma-separated; `null` for 401/403.
    #[schema(example = "minute")]
    pub limit: Option<String>,
    #[schema(example = 429)]
    pub status: i64,
}

/// Refusals without a valid key (401, 403, throttled 429s), counted per
/// minute, route, status, reason and client network instead of one row each.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AggregatedViolationView {
    /// Unix ms at the start of the minute.
    pub at: i64,
    pub route: String,
    #[schema(example = 403)]
    pub status: i64,
    /// The answer's problem type, e.g. `invalid-api-key:unknown`.
    #[schema(example = "invalid-api-key:unknown")]
    pub reason: String,
    /// The clients' /24 (IPv4) or /64 (IPv6).
    #[schema(example = "203.0.113.0/24")]
    pub client_net: String,
    /// Refusals counted in this row.
    pub count: i64,
}

/// `GET /api/analytics/violations`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ViolationPage {
    /// Newest first.
    pub items: Vec<ViolationView>,
    /// How many match in all.
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
    /// The same page of the aggregated refusals (none when filtered by a
    /// key other than 0): newest minute first.
    pub aggregated: Vec<AggregatedViolationView>,
    /// How many aggregated rows match in all.
    pub aggregated_total: i64,
    /// How many refusals those rows count.
    pub aggregated_refusals: i64,
}
