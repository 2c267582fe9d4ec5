//! `GET /api/health`: without a token only `{"status": …}` (for load
//! balancers and probes); with one (any role) the admin API itself, the
//! database, Redis (when the limiter uses it), every proxy instance from the
//! `instances` table, and every upstream target as the proxies last saw it.
//!
//! The probe runs at most about once a second ([`HealthCache`]): concurrent
//! and repeated calls share its result, and the Redis connection is kept
//! and reused rather than opened per call.

mod probe;

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::state::AppState;

pub use crate::health_report::{
    AdminHealth, ComponentHealth, HealthCache, HealthReport, HealthSummary, InstanceHealth, Status,
    TargetHealthView,
};

/// How long a probe's result is served before the next probe.
pub const PROBE_CACHE: Duration = Duration::from_secs(1);

pub fn router() -> Router<AppState> {
    Router::new().route("/api/health", get(health))
}

/// Health: without a token only `{"status"}`; with a token (any role) the
/// admin API, database, Redis, proxy instances and upstream targets.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "health",
    responses(
        (status = 200, description = "The admin API and the database are up (see `status` for the rest). Without a token the body is only `{\"status\"}` (HealthSummary)", body = HealthReport),
        (status = 401, description = "A token was sent and is invalid", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable; the body is the same report", body = HealthReport),
    ),
    security((), ("bearer" = ["viewer"]))
)]
pub async fn health(State(state): State<AppState>, parts: Parts) -> axum::response::Response {
    // Details only for a logged-in admin; a bad token is refused, not
    // silently downgraded.
    let detailed = if parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION)
    {
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let token = match crate::auth::bearer(&parts) {
            Ok(t) => t,
            Err(e) => return e.into_response(),
        };
        match crate::auth::authenticate(&state, token, ip).await {
            Ok(_) => true,
            // The token cannot be checked: say what can be said without it.
            Err(crate::error::ApiError::DatabaseUnavailable(_)) => false,
            Err(e) => return e.into_response(),
        }
    } else {
        false
    };
    let (code, report) = cached_probe(&state).await;
    if detailed {
        (code, Json(report)).into_response()
    } else {
        (
            code,
            Json(HealthSummary {
                status: report.status,
            }),
        )
            .into_response()
    }
}

/// The last probe if it is younger than [`PROBE_CACHE`], else a new one.
/// Callers arriving during a probe wait for it rather than start their own.
async fn cached_probe(state: &AppState) -> (StatusCode, HealthReport) {
    let cache = state.health_cache();
    let mut last = cache.last.lock().await;
    if let Some((at, code, report)) = last.as_ref() {
        if at.elapsed() < PROBE_CACHE {
            return (*code, report.clone());
        }
    }
    cache
        .probes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (code, report) = probe::probe(state).await;
    *last = Some((Instant::now(), code, report.clone()));
    (code, report)
}
