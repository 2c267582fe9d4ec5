//! `POST /api/keys/{id}/credits`: top up (or take away) a key's prepaid
//! credits. One immutable adjustment row; every proxy applies it exactly
//! once within `storage.key_refresh` (issue #20 item 2).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tollgate_core::credits::{check_delta, SubjectKind};
use utoipa::ToSchema;

use super::no_key;
use crate::auth::{audit, RequireAdmin};
use crate::error::{ApiError, ApiResult, ProblemDoc};
use crate::extract::{parse_id, ApiJson, PathParam};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsRequest {
    /// Credits to add (negative: to take away); not 0, at most 2^53 − 1 either way.
    pub delta: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditsAdjusted {
    /// The adjustment's id (proxies apply each id once).
    pub adjustment: i64,
    pub delta: i64,
    /// Every credit ever granted to the key (the sum of its adjustments);
    /// the live balance is that minus what requests spent.
    pub granted: i64,
}

/// Top up (or take away) a key's prepaid credits.
#[utoipa::path(
    post,
    path = "/api/keys/{id}/credits",
    tag = "keys",
    params(("id" = i64, Path, minimum = 1, description = "Key id")),
    request_body = CreditsRequest,
    responses(
        (status = 201, description = "Recorded; every proxy applies it once", body = CreditsAdjusted),
        (status = 404, description = "No such key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "delta is 0 or out of range", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn add_credits(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    ApiJson(req): ApiJson<CreditsRequest>,
) -> ApiResult<(StatusCode, Json<CreditsAdjusted>)> {
    let id = parse_id(&id)?;
    check_delta(req.delta).map_err(|m| ApiError::validation("delta", m))?;
    if state.db().get_key(id).await?.is_none() {
        return Err(no_key(id));
    }
    record(&state, &auth, SubjectKind::Key, id, req.delta).await
}

/// Record one adjustment of `kind` `id` (the caller checked that it
/// exists), audit it as `<kind>.credits`, and answer 201 with the total
/// granted. One path for keys and identities.
pub(crate) async fn record(
    state: &AppState,
    auth: &RequireAdmin,
    kind: SubjectKind,
    id: i64,
    delta: i64,
) -> ApiResult<(StatusCode, Json<CreditsAdjusted>)> {
    let actor = format!("admin:{}", auth.username);
    let adj = state.db().add_credits(kind, id, delta, &actor).await?;
    let granted = state.db().credits_granted(kind, id).await?.unwrap_or(0);
    let subject = kind.as_str();
    tracing::info!(by = %auth.username, subject, id, delta, "credits adjusted");
    audit(
        state,
        auth.event(&format!("{subject}.credits"))
            .target(subject, id)
            .changes(serde_json::json!({ "delta": delta, "adjustment": adj.id })),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(CreditsAdjusted {
            adjustment: adj.id,
            delta,
            granted,
        }),
    ))
}
