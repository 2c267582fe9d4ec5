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

pub mod identity;
mod query;
mod views;

pub use identity::{identity_usage, IdentityKeyUsage, IdentityUsage, MAX_IDENTITY_KEYS};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use tollgate_core::db::usage::{Counts, UsageFilter, ViolationFilter};
use tollgate_core::db::violation_aggregates::AggregateFilter;
use tollgate_core::db::ApiKey;
use tollgate_core::effective_limits::LimitsFrom;

use crate::auth::AuthAdmin;
use crate::bodies::LimitBody;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_id, ApiQuery, Paging, PathParam, QueryInt};
use crate::state::AppState;
use query::{range, route_filter, step};

pub use query::{
    FromMs, KeysUsageQuery, RangeQuery, Step, TimeseriesQuery, ToMs, TopKeysQuery, ViolationsQuery,
    DEFAULT_MAX_POINTS, DEFAULT_PER_PAGE, DEFAULT_RANGE_MS, DEFAULT_TOP_KEYS, MAX_BATCH_KEYS,
    MAX_PER_PAGE, MAX_TOP_KEYS,
};
pub use views::{
    AggregatedViolationView, KeyAnalytics, KeyCounts, KeyUsageView, KeysUsage, LatencyBucket,
    LimitsSource, Outcomes, RouteStats, SeriesPoint, Summary, Timeseries, TopKey, TopKeys,
    UsageStats, ViolationPage, ViolationView,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/analytics/summary", get(summary))
        .route("/api/analytics/timeseries", get(timeseries))
        .route("/api/analytics/keys", get(keys_usage))
        .route("/api/analytics/keys/{id}", get(key_analytics))
        .route("/api/analytics/top-keys", get(top_keys))
        .route("/api/analytics/violations", get(violations))
        .route("/api/analytics/identities/{id}", get(identity_usage))
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
                outcomes: Outcomes::new(&p.counts),
            })
            .collect(),
    }))
}

/// The limits that apply to a key (besides the routes' own), by the proxy's
/// rule (`tollgate_core::rules::effective`); the route's default plan is
/// per route, so it is not resolved here.
async fn key_limits(
    state: &AppState,
    key: &ApiKey,
) -> ApiResult<(LimitsSource, Option<String>, Vec<LimitBody>, Option<u32>)> {
    let k = state.db().key_limits(&state.config().plans, key).await?;
    let source = match k.from {
        LimitsFrom::Key => LimitsSource::Key,
        LimitsFrom::Identity => LimitsSource::Identity,
        LimitsFrom::Plan => LimitsSource::Plan,
        LimitsFrom::RouteDefault => LimitsSource::RouteDefault,
    };
    let bodies = k.limits.iter().map(LimitBody::from).collect();
    Ok((source, k.plan, bodies, k.concurrency))
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
    let filter = UsageFilter {
        from,
        to,
        ..UsageFilter::default()
    };
    let totals = state.db().usage_totals_of_keys(&filter, &q.ids.0).await?;
    let items = q
        .ids
        .0
        .iter()
        .map(|&key_id| KeyUsageView {
            key_id,
            counts: KeyCounts::new(&totals.get(&key_id).copied().unwrap_or_default()),
        })
        .collect();
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
    let Paging {
        page,
        per_page,
        offset,
    } = Paging::new(q.page, q.per_page, DEFAULT_PER_PAGE);
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
                    offset,
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
            offset,
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
