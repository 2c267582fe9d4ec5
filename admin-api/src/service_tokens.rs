//! `/api/service-tokens`: the credentials of services that call the verify
//! API (`verify.listen`, `POST /v1/verify`). Create (the only time the
//! token is shown), list, delete. The proxies reload the set every
//! `storage.key_refresh`: a deleted token stops working within that.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tollgate_core::db::audit::diff;
use tollgate_core::db::service_tokens::ServiceToken;
use tollgate_core::service_tokens::check_name;
use utoipa::ToSchema;

use crate::auth::{audit, AuthAdmin, RequireAdmin};
use crate::error::{ApiError, ApiResult, ProblemDoc};
use crate::extract::{parse_id, ApiJson, PathParam};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/service-tokens",
            get(list_service_tokens).post(create_service_token),
        )
        .route("/api/service-tokens/{id}", delete(delete_service_token))
}

/// A service token as listed: never its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceTokenView {
    pub id: i64,
    #[schema(example = "billing service")]
    pub name: String,
    /// The token's first characters (`tgs_` + 6).
    #[schema(example = "tgs_4fQ2aZ")]
    pub prefix: String,
    /// Unix ms.
    pub created_at: i64,
    /// The admin who created it (null: the CLI).
    pub created_by: Option<String>,
}

impl From<ServiceToken> for ServiceTokenView {
    fn from(t: ServiceToken) -> Self {
        Self {
            id: t.id,
            name: t.name,
            prefix: t.prefix,
            created_at: t.created_at,
            created_by: t.created_by,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceToken {
    /// What the token is for (1 to 200 characters).
    #[schema(example = "billing service")]
    pub name: String,
}

/// A new token: `token` is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceTokenWithSecret {
    #[serde(flatten)]
    pub record: ServiceTokenView,
    /// The full token, for `Authorization: Bearer` on the verify listener.
    #[schema(example = "tgs_4fQ2aZ…")]
    pub token: String,
}

fn audit_view(t: &ServiceTokenView) -> serde_json::Value {
    serde_json::to_value(t).unwrap_or_default()
}

/// List the service tokens, oldest first.
#[utoipa::path(
    get,
    path = "/api/service-tokens",
    tag = "service-tokens",
    responses((status = 200, description = "Every service token (no secrets)", body = [ServiceTokenView])),
    security(("bearer" = ["viewer"]))
)]
pub async fn list_service_tokens(
    _auth: AuthAdmin,
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<ServiceTokenView>>> {
    let tokens = state.db().list_service_tokens().await?;
    Ok(Json(tokens.into_iter().map(Into::into).collect()))
}

/// Create a service token. The response is the only place it appears.
#[utoipa::path(
    post,
    path = "/api/service-tokens",
    tag = "service-tokens",
    request_body = CreateServiceToken,
    responses(
        (status = 201, description = "Created; `token` is shown only this once", body = ServiceTokenWithSecret),
        (status = 422, description = "The name is missing or invalid", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn create_service_token(
    auth: RequireAdmin,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateServiceToken>,
) -> ApiResult<impl IntoResponse> {
    let name = check_name(&req.name).map_err(|m| ApiError::validation("name", m))?;
    let (token, plain) = state
        .db()
        .create_service_token(&name, Some(&auth.username))
        .await?;
    tracing::info!(by = %auth.username, token_id = token.id, "service token created");
    let view = ServiceTokenView::from(token);
    audit(
        &state,
        auth.event("service_token.create")
            .target("service_token", view.id)
            .changes(diff(&serde_json::Value::Null, &audit_view(&view))),
    )
    .await;
    let location = format!("/api/service-tokens/{}", view.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(ServiceTokenWithSecret {
            record: view,
            token: plain,
        }),
    ))
}

/// Delete a service token: the verify listeners refuse it within
/// `storage.key_refresh`.
#[utoipa::path(
    delete,
    path = "/api/service-tokens/{id}",
    tag = "service-tokens",
    params(("id" = i64, Path, minimum = 1, description = "Service token id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such token", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn delete_service_token(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    match state.db().delete_service_token(id).await? {
        Some(t) => {
            tracing::info!(by = %auth.username, token_id = id, "service token deleted");
            let view = ServiceTokenView::from(t);
            audit(
                &state,
                auth.event("service_token.delete")
                    .target("service_token", id)
                    .changes(diff(&audit_view(&view), &serde_json::Value::Null)),
            )
            .await;
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::not_found(format!(
            "no service token with id {id}"
        ))),
    }
}
