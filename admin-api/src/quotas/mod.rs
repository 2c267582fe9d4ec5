//! `POST /api/keys/{id}/quotas/{name}` and `POST /api/identities/{id}/quotas/{name}`:
//! reset or adjust the current period of a calendar quota (issue #20).
//! One immutable row (`quota_adjustments`); every proxy applies it exactly
//! once within `storage.key_refresh` (see `tollgate_core::db::quota_adjustments`).
//! `GET` on `…/quotas` reads each quota's use and the credit balance ([`usage`]).

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tollgate_core::credits::SubjectKind;
use tollgate_core::db::quota_adjustments::QuotaAdjustment;
use tollgate_core::quota::adjust::QuotaChange;
use tollgate_core::quota_adjust::AdjustError;
use tollgate_core::rules::quota_adjust::FindQuotaError;
use utoipa::ToSchema;

use crate::auth::{audit, RequireAdmin};
use crate::error::{ApiError, ApiResult, ProblemDoc};
use crate::extract::{id_as_sent, parse_id, ApiJson};
use crate::state::AppState;

pub mod usage;

pub use usage::{identity_quotas, key_quotas, CreditUse, QuotaUsage, QuotaUse};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/keys/{id}/quotas/{name}", post(adjust_key_quota))
        .route(
            "/api/identities/{id}/quotas/{name}",
            post(adjust_identity_quota),
        )
        .route("/api/keys/{id}/quotas", get(usage::key_quotas))
        .route("/api/identities/{id}/quotas", get(usage::identity_quotas))
}

/// `{id}` and `{name}` of the path (a bad one is 400 naming it).
pub struct IdAndName(pub i64, pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdAndName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path((id, name)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|r| ApiError::malformed(None, r.body_text()))?;
        let id = id_as_sent(parts).unwrap_or(id);
        Ok(IdAndName(parse_id(&id)?, name))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaAdjustRequest {
    /// `true`: the current period's count back to 0.
    pub reset: Option<bool>,
    /// Uses to add to the current period's count (negative: to give back;
    /// the count never goes below 0). Not 0, at most 2^50 either way. Give
    /// either this or `reset`.
    pub used_delta: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaAdjusted {
    /// The adjustment's id (proxies apply each id once).
    pub adjustment: i64,
    pub quota: String,
    pub reset: bool,
    /// Uses added (negative: given back); 0 for a reset.
    pub used_delta: i64,
    /// The period it applies to (Unix ms): from its start to its end, when
    /// the quota resets by itself.
    pub period_start: i64,
    pub period_end: i64,
}

impl From<&QuotaAdjustment> for QuotaAdjusted {
    fn from(a: &QuotaAdjustment) -> Self {
        Self {
            adjustment: a.id,
            quota: a.quota.clone(),
            reset: a.change == QuotaChange::Reset,
            used_delta: a.change.used_delta(),
            period_start: a.period.start_us.div_euclid(1_000),
            period_end: a.period.end_us.div_euclid(1_000),
        }
    }
}

fn api_error(e: AdjustError) -> ApiError {
    match e {
        AdjustError::NoKey(_)
        | AdjustError::NoIdentity(_)
        | AdjustError::Find(FindQuotaError::Missing(_)) => ApiError::not_found(e.to_string()),
        AdjustError::BadName(m) => ApiError::malformed(Some("name"), m),
        AdjustError::Find(FindQuotaError::NotAQuota(_))
        | AdjustError::Shared { .. }
        | AdjustError::PerKey(_)
        | AdjustError::NoPeriod(_) => ApiError::Conflict(e.to_string()),
        AdjustError::Db(e) => e.into(),
    }
}

async fn adjust(
    auth: &RequireAdmin,
    state: &AppState,
    kind: SubjectKind,
    id: i64,
    name: &str,
    req: QuotaAdjustRequest,
) -> ApiResult<(StatusCode, Json<QuotaAdjusted>)> {
    let change = QuotaChange::from_fields(req.reset, req.used_delta)
        .map_err(|(field, m)| ApiError::validation(field, m))?;
    let actor = format!("admin:{}", auth.username);
    let now_us = tollgate_core::now_ms().saturating_mul(1_000);
    let a = state
        .db()
        .adjust_quota(
            &state.config().plans,
            kind,
            id,
            name,
            change,
            &actor,
            now_us,
        )
        .await
        .map_err(api_error)?;
    let view = QuotaAdjusted::from(&a);
    tracing::info!(by = %auth.username, kind = kind.as_str(), id, quota = name, "quota adjusted");
    audit(
        state,
        auth.event(&format!("{}.quota", kind.as_str()))
            .target(kind.as_str(), id)
            .changes(serde_json::json!({
                "quota": view.quota,
                "reset": view.reset,
                "used_delta": view.used_delta,
                "adjustment": view.adjustment,
                "period_start": view.period_start,
            })),
    )
    .await;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Reset or adjust the current period of one of a key's quotas.
#[utoipa::path(
    post,
    path = "/api/keys/{id}/quotas/{name}",
    tag = "keys",
    params(
        ("id" = i64, Path, minimum = 1, description = "Key id"),
        ("name" = String, Path, description = "The quota limit's name"),
    ),
    request_body = QuotaAdjustRequest,
    responses(
        (status = 201, description = "Recorded; every proxy applies it once", body = QuotaAdjusted),
        (status = 404, description = "No such key, or no quota of that name applies to it", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The limit is a token bucket, or the quota is shared by the key's identity (change it there)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Neither or both of reset and used_delta, or used_delta 0 or out of range", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn adjust_key_quota(
    auth: RequireAdmin,
    State(state): State<AppState>,
    IdAndName(id, name): IdAndName,
    ApiJson(req): ApiJson<QuotaAdjustRequest>,
) -> ApiResult<(StatusCode, Json<QuotaAdjusted>)> {
    adjust(&auth, &state, SubjectKind::Key, id, &name, req).await
}

/// Reset or adjust the current period of an identity's shared quota
/// (`scope: identity`: one count for all its keys).
#[utoipa::path(
    post,
    path = "/api/identities/{id}/quotas/{name}",
    tag = "identities",
    params(
        ("id" = i64, Path, minimum = 1, description = "Identity id"),
        ("name" = String, Path, description = "The quota limit's name"),
    ),
    request_body = QuotaAdjustRequest,
    responses(
        (status = 201, description = "Recorded; every proxy applies it once", body = QuotaAdjusted),
        (status = 404, description = "No such identity, or no quota of that name in its limits or plan", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The limit is a token bucket, or the quota counts per key (change it on each key)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Neither or both of reset and used_delta, or used_delta 0 or out of range", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn adjust_identity_quota(
    auth: RequireAdmin,
    State(state): State<AppState>,
    IdAndName(id, name): IdAndName,
    ApiJson(req): ApiJson<QuotaAdjustRequest>,
) -> ApiResult<(StatusCode, Json<QuotaAdjusted>)> {
    adjust(&auth, &state, SubjectKind::Identity, id, &name, req).await
}
