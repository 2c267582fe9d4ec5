//! `/api/analytics/…`: what the proxies wrote to `usage_minute` and
//! `violations`, read back as a summary, a zero-filled time series, one key's
//! usage with its limits, the busiest keys and a page of violations.
//!
//! Every endpoint takes `from` and `to` (Unix ms, `to` exclusive; default:
//! the last hour). Usage is stored per minute, so `from` counts from the
//! start of its minute. Each request counts in exactly one of `allowed`,
//! `limited` (429), `unauthorized` (401), `forbidden` (403) and
//! `upstream_errors` (5xx or no answer from the upstream); `total` is their
//! sum. Latency percentiles are read from a fixed histogram: a percentile is
//! the upper bound of the bucket holding it (1000 ms for the open-ended
//! slowest bucket).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tollgate_core::db::usage::{
    bucket_bound_ms, Counts, UsageFilter, ViolationFilter, MAX_SERIES_POINTS, MINUTE_MS,
};
use tollgate_core::db::violation_aggregates::AggregateFilter;
use tollgate_core::db::{ApiKey, LATENCY_BUCKETS, LATENCY_BUCKET_BOUNDS_US};
use utoipa::{IntoParams, ToSchema};

use crate::auth::AuthAdmin;
use crate::bodies::{KeyView, LimitBody};
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_id, text_filter, ApiQuery, PathParam, QueryIds, QueryInt};
use crate::state::AppState;

/// The default range: the last hour.
pub const DEFAULT_RANGE_MS: i64 = 3_600_000;
/// Default and largest `limit` of `top-keys`.
pub const DEFAULT_TOP_KEYS: i64 = 10;
pub const MAX_TOP_KEYS: i64 = 100;
/// Default and largest `per_page` of `violations`.
pub const DEFAULT_PER_PAGE: i64 = 50;
pub const MAX_PER_PAGE: i64 = 200;
/// Without `step`, the finest step giving at most this many points.
pub const DEFAULT_MAX_POINTS: i64 = 1_440;
/// The latest instant accepted in `from`/`to` (year 9999).
const MAX_MS: i64 = 253_402_300_799_999;
const MAX_ROUTE_LEN: usize = 200;

// --- response bodies ---------------------------------------------------------

/// One bucket of the latency histogram.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LatencyBucket {
    /// Upper bound (inclusive) in ms; `null` for the open-ended slowest bucket.
    pub le_ms: Option<f64>,
    pub count: i64,
}

/// Counts, rates and latency over a range.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageStats {
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
    fn new(c: &Counts, from: i64, to: i64) -> Self {
        let total = c.total();
        let minutes = (to - from) as f64 / MINUTE_MS as f64;
        Self {
            total,
            allowed: c.allowed,
            limited: c.limited,
            unauthorized: c.unauthorized,
            forbidden: c.forbidden,
            upstream_errors: c.upstream_errors,
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
    pub total: i64,
    pub allowed: i64,
    pub limited: i64,
    pub unauthorized: i64,
    pub forbidden: i64,
    pub upstream_errors: i64,
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
    /// The key's plan.
    Plan,
    /// Neither: each route's `default_plan` applies.
    RouteDefault,
}

/// Usage of one route.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RouteStats {
    pub route: String,
    pub total: i64,
    pub allowed: i64,
    pub limited: i64,
    pub unauthorized: i64,
    pub forbidden: i64,
    pub upstream_errors: i64,
    pub avg_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
}

impl RouteStats {
    fn new(route: String, c: &Counts) -> Self {
        Self {
            route,
            total: c.total(),
            allowed: c.allowed,
            limited: c.limited,
            unauthorized: c.unauthorized,
            forbidden: c.forbidden,
            upstream_errors: c.upstream_errors,
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
    pub total: i64,
    pub allowed: i64,
    pub limited: i64,
    pub unauthorized: i64,
    pub forbidden: i64,
    pub upstream_errors: i64,
    pub block_rate: f64,
    pub avg_latency_ms: Option<f64>,
}

impl KeyCounts {
    fn new(c: &Counts) -> Self {
        Self {
            total: c.total(),
            allowed: c.allowed,
            limited: c.limited,
            unauthorized: c.unauthorized,
            forbidden: c.forbidden,
            upstream_errors: c.upstream_errors,
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

// --- query strings -----------------------------------------------------------

/// A Unix ms instant accepted in `from`.
pub type FromMs = QueryInt<0, MAX_MS>;
/// A Unix ms instant accepted in `to`.
pub type ToMs = QueryInt<1, MAX_MS>;

/// `from`/`to` of every analytics endpoint.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// Unix ms (default: `to` minus one hour); before `to`.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 253_402_300_799_999.0)]
    pub from: Option<FromMs>,
    /// Unix ms, exclusive (default: now).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 253_402_300_799_999.0)]
    pub to: Option<ToMs>,
}

/// A time series step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
pub enum Step {
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "5m")]
    FiveMinutes,
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "1d")]
    Day,
}

impl Step {
    /// Finest first.
    pub const ALL: [Step; 4] = [Step::Minute, Step::FiveMinutes, Step::Hour, Step::Day];

    pub fn name(self) -> &'static str {
        match self {
            Step::Minute => "1m",
            Step::FiveMinutes => "5m",
            Step::Hour => "1h",
            Step::Day => "1d",
        }
    }

    pub fn ms(self) -> i64 {
        match self {
            Step::Minute => MINUTE_MS,
            Step::FiveMinutes => 5 * MINUTE_MS,
            Step::Hour => 60 * MINUTE_MS,
            Step::Day => 1_440 * MINUTE_MS,
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimeseriesQuery {
    /// Unix ms (default: `to` minus one hour); before `to`.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 253_402_300_799_999.0)]
    pub from: Option<FromMs>,
    /// Unix ms, exclusive (default: now).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 253_402_300_799_999.0)]
    pub to: Option<ToMs>,
    /// `1m`, `5m`, `1h` or `1d` (default: the finest giving at most 1440
    /// points). At most 10000 points.
    #[param(inline)]
    pub step: Option<Step>,
    /// Only this key (0: requests without a key).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub key: Option<QueryInt<0, { i64::MAX }>>,
    /// Only this route.
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub route: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopKeysQuery {
    /// Unix ms (default: `to` minus one hour); before `to`.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 253_402_300_799_999.0)]
    pub from: Option<FromMs>,
    /// Unix ms, exclusive (default: now).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 253_402_300_799_999.0)]
    pub to: Option<ToMs>,
    /// How many keys (default 10, at most 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<QueryInt<1, MAX_TOP_KEYS>>,
}

/// The most ids `GET /api/analytics/keys` takes.
pub const MAX_BATCH_KEYS: usize = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeysUsageQuery {
    /// Unix ms (default: `to` minus one hour); before `to`.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 253_402_300_799_999.0)]
    pub from: Option<FromMs>,
    /// Unix ms, exclusive (default: now).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 253_402_300_799_999.0)]
    pub to: Option<ToMs>,
    /// The keys: 1 to 100 comma-separated ids.
    #[param(
        value_type = String,
        pattern = "^[1-9][0-9]{0,17}(,[1-9][0-9]{0,17}){0,99}$",
        example = "1,2,3"
    )]
    pub ids: QueryIds<MAX_BATCH_KEYS>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ViolationsQuery {
    /// Unix ms (default: `to` minus one hour); before `to`.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 253_402_300_799_999.0)]
    pub from: Option<FromMs>,
    /// Unix ms, exclusive (default: now).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 253_402_300_799_999.0)]
    pub to: Option<ToMs>,
    /// Only this key (0: requests without a known key).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub key: Option<QueryInt<0, { i64::MAX }>>,
    /// Only this route.
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub route: Option<String>,
    /// 1-based page number (default 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    pub page: Option<QueryInt<1, 1_000_000>>,
    /// Violations per page (default 50, at most 200).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub per_page: Option<QueryInt<1, MAX_PER_PAGE>>,
}

/// `from`/`to`, defaulted and checked (`from < to`).
fn range(from: Option<FromMs>, to: Option<ToMs>) -> ApiResult<(i64, i64)> {
    let to = to.map_or_else(tollgate_core::now_ms, QueryInt::get);
    let from = from.map_or((to - DEFAULT_RANGE_MS).max(0), QueryInt::get);
    if from >= to {
        return Err(ApiError::validation("from", "must be before to"));
    }
    Ok((from, to))
}

fn route_filter(v: Option<String>) -> ApiResult<Option<String>> {
    text_filter("route", v, MAX_ROUTE_LEN)
}

fn points(from: i64, to: i64, step_ms: i64) -> i64 {
    let first = from - from.rem_euclid(step_ms);
    (to - first + step_ms - 1) / step_ms
}

/// The step named in the query, or the finest one giving at most
/// [`DEFAULT_MAX_POINTS`] points; never more than [`MAX_SERIES_POINTS`].
fn step(v: Option<Step>, from: i64, to: i64) -> ApiResult<Step> {
    let Some(s) = v else {
        let s = Step::ALL
            .into_iter()
            .find(|s| points(from, to, s.ms()) <= DEFAULT_MAX_POINTS)
            .unwrap_or(Step::Day);
        if points(from, to, s.ms()) > MAX_SERIES_POINTS {
            return Err(ApiError::validation(
                "from",
                format!(
                    "the range is too long for a time series (at most {MAX_SERIES_POINTS} days)"
                ),
            ));
        }
        return Ok(s);
    };
    let n = points(from, to, s.ms());
    if n > MAX_SERIES_POINTS {
        return Err(ApiError::validation(
            "step",
            format!("{} gives {n} points over this range, at most {MAX_SERIES_POINTS} are served: use a coarser step", s.name()),
        ));
    }
    Ok(s)
}

// --- handlers ----------------------------------------------------------------

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/analytics/summary", get(summary))
        .route("/api/analytics/timeseries", get(timeseries))
        .route("/api/analytics/keys", get(keys_usage))
        .route("/api/analytics/keys/{id}", get(key_analytics))
        .route("/api/analytics/top-keys", get(top_keys))
        .route("/api/analytics/violations", get(violations))
}

/// Totals, block rate, requests per minute, active keys and latency over a range.
#[utoipa::path(
    get,
    path = "/api/analytics/summary",
    tag = "analytics",
    params(RangeQuery),
    responses(
        (status = 200, description = "The summary", body = Summary),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn summary(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<Summary>> {
    let (from, to) = range(q.from, q.to)?;
    let totals = state
        .db()
        .usage_totals(&UsageFilter {
            from,
            to,
            ..UsageFilter::default()
        })
        .await?;
    Ok(Json(Summary {
        from,
        to,
        stats: UsageStats::new(&totals.counts, from, to),
        active_keys: totals.active_keys,
    }))
}

/// Allowed, limited, refused and failed requests per step, zero-filled.
#[utoipa::path(
    get,
    path = "/api/analytics/timeseries",
    tag = "analytics",
    params(TimeseriesQuery),
    responses(
        (status = 200, description = "One point per step", body = Timeseries),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn timeseries(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TimeseriesQuery>,
) -> ApiResult<Json<Timeseries>> {
    let (from, to) = range(q.from, q.to)?;
    let step = step(q.step, from, to)?;
    let step_ms = step.ms();
    let key = q.key.map(QueryInt::get);
    let route = route_filter(q.route)?;
    let filter = UsageFilter {
        from,
        to,
        key_id: key,
        route: route.clone(),
    };
    let series = state.db().usage_timeseries(&filter, step_ms).await?;
    Ok(Json(Timeseries {
        from,
        to,
        step: step.name().to_string(),
        step_ms,
        key,
        route,
        points: series
            .iter()
            .map(|p| SeriesPoint {
                at: p.at,
                total: p.counts.total(),
                allowed: p.counts.allowed,
                limited: p.counts.limited,
                unauthorized: p.counts.unauthorized,
                forbidden: p.counts.forbidden,
                upstream_errors: p.counts.upstream_errors,
            })
            .collect(),
    }))
}

/// The limits that apply to a key (besides the routes' own).
async fn key_limits(
    state: &AppState,
    key: &ApiKey,
) -> ApiResult<(LimitsSource, Option<String>, Vec<LimitBody>, Option<u32>)> {
    if let Some(own) = &key.limits {
        return Ok((
            LimitsSource::Key,
            None,
            own.iter().map(LimitBody::from).collect(),
            key.concurrency,
        ));
    }
    if let Some(plan) = &key.plan {
        if let Some(p) = state.config().plans.get(plan) {
            return Ok((
                LimitsSource::Plan,
                Some(plan.clone()),
                p.limits.iter().map(LimitBody::from).collect(),
                key.concurrency.or(p.concurrency),
            ));
        }
        if let Some(p) = state.db().get_plan(plan).await? {
            return Ok((
                LimitsSource::Plan,
                Some(plan.clone()),
                p.limits.iter().map(LimitBody::from).collect(),
                key.concurrency.or(p.concurrency),
            ));
        }
    }
    Ok((
        LimitsSource::RouteDefault,
        None,
        Vec::new(),
        key.concurrency,
    ))
}

/// One key's usage (totals, latency, per route) and the limits that apply to it.
#[utoipa::path(
    get,
    path = "/api/analytics/keys/{id}",
    tag = "analytics",
    params(("id" = i64, Path, minimum = 1, description = "Key id"), RangeQuery),
    responses(
        (status = 200, description = "The key, its limits and its usage", body = KeyAnalytics),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn key_analytics(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<KeyAnalytics>> {
    let id = parse_id(&id)?;
    let (from, to) = range(q.from, q.to)?;
    let Some(key) = state.db().get_key(id).await? else {
        return Err(ApiError::not_found(format!("no API key with id {id}")));
    };
    let (limits_source, plan, limits, concurrency) = key_limits(&state, &key).await?;
    let filter = UsageFilter {
        from,
        to,
        key_id: Some(id),
        route: None,
    };
    let routes = state.db().usage_by_route(&filter).await?;
    let mut all = Counts::default();
    for r in &routes {
        all.add(&r.counts);
    }
    Ok(Json(KeyAnalytics {
        key: key.into(),
        limits_source,
        plan,
        limits,
        concurrency,
        from,
        to,
        stats: UsageStats::new(&all, from, to),
        routes: routes
            .iter()
            .map(|r| RouteStats::new(r.route.clone(), &r.counts))
            .collect(),
    }))
}

/// Several keys' requests over a range, in one call (the dashboard's keys
/// table asks for its page of keys at once).
#[utoipa::path(
    get,
    path = "/api/analytics/keys",
    tag = "analytics",
    params(KeysUsageQuery),
    responses(
        (status = 200, description = "One item per requested key", body = KeysUsage),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn keys_usage(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<KeysUsageQuery>,
) -> ApiResult<Json<KeysUsage>> {
    let (from, to) = range(q.from, q.to)?;
    let mut items = Vec::with_capacity(q.ids.0.len());
    for key_id in q.ids.0 {
        let filter = UsageFilter {
            from,
            to,
            key_id: Some(key_id),
            route: None,
        };
        let totals = state.db().usage_totals(&filter).await?;
        items.push(KeyUsageView {
            key_id,
            counts: KeyCounts::new(&totals.counts),
        });
    }
    Ok(Json(KeysUsage { from, to, items }))
}

/// The keys with the most requests in the range.
#[utoipa::path(
    get,
    path = "/api/analytics/top-keys",
    tag = "analytics",
    params(TopKeysQuery),
    responses(
        (status = 200, description = "The busiest keys", body = TopKeys),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn top_keys(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TopKeysQuery>,
) -> ApiResult<Json<TopKeys>> {
    let (from, to) = range(q.from, q.to)?;
    let limit = q.limit.map_or(DEFAULT_TOP_KEYS, QueryInt::get);
    let items = state.db().top_keys(from, to, limit).await?;
    Ok(Json(TopKeys {
        from,
        to,
        items: items
            .into_iter()
            .map(|k| TopKey {
                key_id: k.key_id,
                name: k.name,
                key_prefix: k.key_prefix,
                counts: KeyCounts::new(&k.counts),
            })
            .collect(),
    }))
}

/// Refused requests (429, 401, 403), newest first, paged: valid keys over
/// their limits one by one (`items`), refusals without a valid key counted
/// per minute × route × status × reason × client network (`aggregated`).
#[utoipa::path(
    get,
    path = "/api/analytics/violations",
    tag = "analytics",
    params(ViolationsQuery),
    responses(
        (status = 200, description = "One page of violations", body = ViolationPage),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn violations(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ViolationsQuery>,
) -> ApiResult<Json<ViolationPage>> {
    let (from, to) = range(q.from, q.to)?;
    let key_id = q.key.map(QueryInt::get);
    let route = route_filter(q.route)?;
    let page = q.page.map_or(1, QueryInt::get);
    let per_page = q.per_page.map_or(DEFAULT_PER_PAGE, QueryInt::get);
    let (aggregated, aggregated_total, aggregated_refusals) = match key_id {
        Some(k) if k != 0 => (Vec::new(), 0, 0),
        _ => {
            state
                .db()
                .list_violation_aggregates(&AggregateFilter {
                    from,
                    to,
                    route: route.clone(),
                    limit: per_page,
                    offset: (page - 1) * per_page,
                })
                .await?
        }
    };
    let (items, total) = state
        .db()
        .list_violations(&ViolationFilter {
            from,
            to,
            key_id,
            route,
            limit: per_page,
            offset: (page - 1) * per_page,
        })
        .await?;
    Ok(Json(ViolationPage {
        items: items
            .into_iter()
            .map(|v| ViolationView {
                id: v.id,
                at: v.at,
                key_id: v.key_id,
                key_name: v.key_name,
                route: v.route,
                method: v.method,
                path: v.path,
                client_ip: v.client_ip,
                limit: v.limit_name,
                status: v.status,
            })
            .collect(),
        total,
        page,
        per_page,
        aggregated: aggregated
            .into_iter()
            .map(|a| AggregatedViolationView {
                at: a.key.minute,
                route: a.key.route,
                status: a.key.status,
                reason: a.key.reason,
                client_net: a.key.client_net,
                count: a.count,
            })
            .collect(),
        aggregated_total,
        aggregated_refusals,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_steps_keep_series_short() {
        let day = 86_400_000;
        let pick = |span: i64| step(None, 10 * day, 10 * day + span).map(Step::name).ok();
        assert_eq!(pick(3_600_000), Some("1m"));
        assert_eq!(pick(day), Some("1m"));
        assert_eq!(pick(2 * day), Some("5m"));
        assert_eq!(pick(30 * day), Some("1h"));
        assert_eq!(pick(365 * day), Some("1d"));
        assert!(step(None, 0, 20_000 * day).is_err());
        assert!(step(Some(Step::Minute), 0, 7 * day).is_err());
        assert!(crate::extract::parse_query::<TimeseriesQuery>("step=2m").is_err());
    }
}
