//! `PUT`/`DELETE /api/keys/{id}/credits/refill` and
//! `/api/identities/{id}/credits/refill`: a key's or an identity's own
//! credit refill (it wins over its plan's `credits.refill`). At each period
//! start every proxy sets the balance to `amount`, once per period across
//! proxies (issue #20 item 2; one rule, `tollgate_core::refill`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_core::credits::SubjectKind;
use tollgate_core::refill::{Refill, RefillSpec};
use utoipa::ToSchema;

use crate::auth::{audit, RequireAdmin};
use crate::error::{ApiError, ApiResult, ProblemDoc};
use crate::extract::{parse_id, ApiJson, PathParam};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/keys/{id}/credits/refill",
            put(put_key_refill).delete(delete_key_refill),
        )
        .route(
            "/api/identities/{id}/credits/refill",
            put(put_identity_refill).delete(delete_identity_refill),
        )
}

/// A refill: `amount` and either `every` (fixed periods from the Unix
/// epoch, `1s` to `366d`) or `period` (`day`, `week`, `month`, `year`)
/// with optional `anchor` and `time_zone`, like a quota's.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillBody {
    /// The balance set at each period start: 1 to 2^53 − 1.
    #[schema(minimum = 1, example = 1000)]
    pub amount: u64,
    /// Fixed periods, e.g. `1d`, `12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// Calendar periods: `day`, `week`, `month` or `year`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// Day of month (`1`-`31`), weekday, or `MM-DD`; a number or a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "15")]
    pub anchor: Option<Value>,
    /// IANA time zone (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

impl RefillBody {
    /// The spec, checked by the one rule (422 naming the field).
    fn spec(&self) -> ApiResult<RefillSpec> {
        let anchor = match &self.anchor {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) if n.is_u64() => Some(n.to_string()),
            Some(other) => {
                return Err(ApiError::validation(
                    "anchor",
                    format!("expected a day number or text, got {other}"),
                ))
            }
        };
        let spec = RefillSpec {
            amount: Some(self.amount),
            every: self.every.clone(),
            period: self.period.clone(),
            anchor,
            time_zone: self.time_zone.clone(),
        };
        Refill::new(&spec).map_err(|(field, m)| ApiError::validation(field, m))?;
        Ok(spec)
    }
}

async fn exists(state: &AppState, kind: SubjectKind, id: i64) -> ApiResult<()> {
    let found = match kind {
        SubjectKind::Key => state.db().get_key(id).await?.is_some(),
        SubjectKind::Identity => state.db().get_identity(id).await?.is_some(),
    };
    if found {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no {} with id {id}",
            kind.as_str()
        )))
    }
}

async fn set(
    auth: RequireAdmin,
    state: AppState,
    kind: SubjectKind,
    id: &str,
    body: RefillBody,
) -> ApiResult<Json<RefillBody>> {
    let id = parse_id(id)?;
    let spec = body.spec()?;
    exists(&state, kind, id).await?;
    state.db().set_credit_refill(kind, id, &spec).await?;
    tracing::info!(by = %auth.username, kind = kind.as_str(), id, "credit refill set");
    audit(
        &state,
        auth.event(&format!("{}.credits_refill", kind.as_str()))
            .target(kind.as_str(), id)
            .changes(serde_json::to_value(&body).unwrap_or(Value::Null)),
    )
    .await;
    Ok(Json(body))
}

async fn clear(
    auth: RequireAdmin,
    state: AppState,
    kind: SubjectKind,
    id: &str,
) -> ApiResult<StatusCode> {
    let id = parse_id(id)?;
    exists(&state, kind, id).await?;
    if !state.db().clear_credit_refill(kind, id).await? {
        return Err(ApiError::not_found(format!(
            "{} {id} has no refill of its own",
            kind.as_str()
        )));
    }
    audit(
        &state,
        auth.event(&format!("{}.credits_refill", kind.as_str()))
            .target(kind.as_str(), id)
            .changes(serde_json::json!({ "removed": true })),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Set (or replace) a key's own credit refill.
#[utoipa::path(
    put,
    path = "/api/keys/{id}/credits/refill",
    tag = "keys",
    params(("id" = i64, Path, minimum = 1, description = "Key id")),
    request_body = RefillBody,
    responses(
        (status = 200, description = "Set; every proxy applies it within storage.key_refresh", body = RefillBody),
        (status = 404, description = "No such key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or invalid (named in `field`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn put_key_refill(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    ApiJson(body): ApiJson<RefillBody>,
) -> ApiResult<Json<RefillBody>> {
    set(auth, state, SubjectKind::Key, &id, body).await
}

/// Remove a key's own credit refill (its plan's applies again, if any).
#[utoipa::path(
    delete,
    path = "/api/keys/{id}/credits/refill",
    tag = "keys",
    params(("id" = i64, Path, minimum = 1, description = "Key id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such key, or no refill of its own", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn delete_key_refill(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<StatusCode> {
    clear(auth, state, SubjectKind::Key, &id).await
}

/// Set (or replace) an identity's own credit refill (its shared balance).
#[utoipa::path(
    put,
    path = "/api/identities/{id}/credits/refill",
    tag = "identities",
    params(("id" = i64, Path, minimum = 1, description = "Identity id")),
    request_body = RefillBody,
    responses(
        (status = 200, description = "Set; every proxy applies it within storage.key_refresh", body = RefillBody),
        (status = 404, description = "No such identity", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or invalid (named in `field`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn put_identity_refill(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    ApiJson(body): ApiJson<RefillBody>,
) -> ApiResult<Json<RefillBody>> {
    set(auth, state, SubjectKind::Identity, &id, body).await
}

/// Remove an identity's own credit refill (its plan's applies again, if any).
#[utoipa::path(
    delete,
    path = "/api/identities/{id}/credits/refill",
    tag = "identities",
    params(("id" = i64, Path, minimum = 1, description = "Identity id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such identity, or no refill of its own", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn delete_identity_refill(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<StatusCode> {
    clear(auth, state, SubjectKind::Identity, &id).await
}
