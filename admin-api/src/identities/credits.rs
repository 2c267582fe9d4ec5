//! `POST /api/identities/{id}/credits`: top up (or take away) an
//! identity's prepaid credits, the one balance all its keys spend (an
//! identity holding credits pays for its keys, whatever they hold
//! themselves). One immutable adjustment row, applied exactly once by
//! every proxy within `storage.key_refresh` (issue #20 item 2).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use tollgate_core::credits::{check_delta, SubjectKind};

use super::no_identity;
use crate::auth::RequireAdmin;
use crate::error::{ApiError, ApiResult, ProblemDoc};
use crate::extract::{parse_id, ApiJson, PathParam};
use crate::keys::{CreditsAdjusted, CreditsRequest};
use crate::state::AppState;

/// Top up (or take away) an identity's prepaid credits, shared by its keys.
#[utoipa::path(
    post,
    path = "/api/identities/{id}/credits",
    tag = "identities",
    params(("id" = i64, Path, minimum = 1, description = "Identity id")),
    request_body = CreditsRequest,
    responses(
        (status = 201, description = "Recorded; every proxy applies it once", body = CreditsAdjusted),
        (status = 404, description = "No such identity", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "delta is 0 or out of range", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn add_identity_credits(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    ApiJson(req): ApiJson<CreditsRequest>,
) -> ApiResult<(StatusCode, Json<CreditsAdjusted>)> {
    let id = parse_id(&id)?;
    check_delta(req.delta).map_err(|m| ApiError::validation("delta", m))?;
    if state.db().get_identity(id).await?.is_none() {
        return Err(no_identity(id));
    }
    crate::keys::record(&state, &auth, SubjectKind::Identity, id, req.delta).await
}
