//! `/api/admins`: list, add and remove the admins (never the last one).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tollgate_core::db::admins::Admin;
use utoipa::ToSchema;

use crate::auth::{hash_blocking, AuthAdmin};
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_id, ApiJson, PathParam};
use crate::openapi::ProblemDoc;
use crate::AppState;

pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 1024;

/// An admin (the password hash is never shown).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminView {
    pub id: i64,
    pub username: String,
    /// Unix ms.
    pub created_at: i64,
}

impl From<Admin> for AdminView {
    fn from(a: Admin) -> Self {
        Self {
            id: a.id,
            username: a.username,
            created_at: a.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdmin {
    /// 1–64 characters of `A-Z a-z 0-9 . _ @ -`.
    #[schema(
        example = "alice",
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._@-]+$"
    )]
    pub username: String,
    /// 8–1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admins", get(list_admins).post(create_admin))
        .route("/api/admins/{id}", get(get_admin).delete(delete_admin))
}

pub fn validate_username(username: &str) -> ApiResult<()> {
    if username.is_empty() {
        return Err(ApiError::validation("username", "must not be empty"));
    }
    if username.len() > 64 {
        return Err(ApiError::validation(
            "username",
            "must be at most 64 characters",
        ));
    }
    if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
    {
        return Err(ApiError::validation(
            "username",
            "may only contain A-Z, a-z, 0-9, '.', '_', '@' and '-'",
        ));
    }
    Ok(())
}

pub fn validate_password(password: &str) -> ApiResult<()> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(ApiError::validation(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if n > MAX_PASSWORD_LEN {
        return Err(ApiError::validation(
            "password",
            format!("must be at most {MAX_PASSWORD_LEN} characters"),
        ));
    }
    Ok(())
}

/// List every admin.
#[utoipa::path(
    get,
    path = "/api/admins",
    tag = "admins",
    responses(
        (status = 200, description = "Every admin, oldest first", body = Vec<AdminView>),
        (status = 401, description = "Missing or invalid token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn list_admins(
    _auth: AuthAdmin,
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<AdminView>>> {
    let admins = state.db().list_admins().await?;
    Ok(Json(admins.into_iter().map(AdminView::from).collect()))
}

/// Add an admin.
#[utoipa::path(
    post,
    path = "/api/admins",
    tag = "admins",
    request_body = CreateAdmin,
    responses(
        (status = 201, description = "Created; `Location` names the new admin", body = AdminView,
            headers(("Location" = String, description = "/api/admins/{id}"))),
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The username is taken", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing, unknown or invalid (named in `field`)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn create_admin(
    auth: AuthAdmin,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateAdmin>,
) -> ApiResult<impl IntoResponse> {
    validate_username(&req.username)?;
    validate_password(&req.password)?;
    if state
        .db()
        .get_admin_by_username(&req.username)
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "an admin named {:?} already exists",
            req.username
        )));
    }
    let phc = hash_blocking(req.password).await?;
    let admin = state.db().create_admin(&req.username, &phc).await?;
    tracing::info!(by = %auth.username, admin = %admin.username, "admin created");
    let location = format!("/api/admins/{}", admin.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(AdminView::from(admin)),
    ))
}

/// One admin.
#[utoipa::path(
    get,
    path = "/api/admins/{id}",
    tag = "admins",
    params(("id" = i64, Path, minimum = 1, description = "Admin id")),
    responses(
        (status = 200, description = "The admin", body = AdminView),
        (status = 400, description = "The id is not a positive integer", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such admin", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn get_admin(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<Json<AdminView>> {
    let id = parse_id(&id)?;
    match state.db().get_admin(id).await? {
        Some(a) => Ok(Json(a.into())),
        None => Err(ApiError::not_found(format!("no admin with id {id}"))),
    }
}

/// Remove an admin. The last admin cannot be removed. Tokens of a removed
/// admin stop working at once.
#[utoipa::path(
    delete,
    path = "/api/admins/{id}",
    tag = "admins",
    params(("id" = i64, Path, minimum = 1, description = "Admin id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a positive integer", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such admin", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "It is the last admin", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn delete_admin(
    auth: AuthAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    if state.db().delete_admin(id).await? {
        tracing::info!(by = %auth.username, admin_id = id, "admin deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no admin with id {id}")))
    }
}
