//! `/api/admins`: list, add, change the role of and remove admins (role
//! `owner`; never the last owner), `GET /api/admins/me` and
//! `POST /api/admins/me/password` (any role).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tollgate_core::db::admins::Role;
use utoipa::ToSchema;

use crate::auth::{audit, AuthAdmin, RequireOwner};
use crate::bodies::AdminView;
use crate::error::{ApiError, ApiResult, ProblemDoc};
use crate::extract::{parse_id, ApiJson, PathParam};
use crate::password::{validate_password, validate_username};
use crate::state::AppState;

pub use crate::password::{MAX_PASSWORD_LEN, MIN_PASSWORD_LEN};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdmin {
    /// 1–64 characters of `A-Z a-z 0-9 . _ @ -`, unique regardless of case.
    #[schema(
        example = "alice",
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._@-]+$"
    )]
    pub username: String,
    /// 12–1024 characters, not weak or common.
    #[schema(min_length = 12, max_length = 1024)]
    pub password: String,
    /// `owner`, `admin` (default) or `viewer`.
    #[schema(value_type = Option<String>, example = "viewer")]
    pub role: Option<Role>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchAdmin {
    /// `owner`, `admin` or `viewer`. Ends the admin's sessions.
    #[schema(value_type = String, example = "viewer")]
    pub role: Role,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[schema(min_length = 1)]
    pub old_password: String,
    /// 12–1024 characters, not weak or common.
    #[schema(min_length = 12, max_length = 1024)]
    pub new_password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordChanged {
    /// A new token for this session: every other session has ended.
    pub token: String,
    /// Unix ms.
    pub expires_at: i64,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admins", get(list_admins).post(create_admin))
        .route("/api/admins/me", get(me))
        .route("/api/admins/me/password", post(change_password))
        .route(
            "/api/admins/{id}",
            get(get_admin).patch(patch_admin).delete(delete_admin),
        )
}

/// List every admin.
#[utoipa::path(
    get,
    path = "/api/admins",
    tag = "admins",
    responses(
        (status = 200, description = "Every admin, oldest first", body = Vec<AdminView>),
    ),
    security(("bearer" = ["owner"]))
)]
pub async fn list_admins(
    _auth: RequireOwner,
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
        (status = 409, description = "The username is taken (in any case)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["owner"]))
)]
pub async fn create_admin(
    auth: RequireOwner,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateAdmin>,
) -> ApiResult<impl IntoResponse> {
    validate_username(&req.username)?;
    validate_password(&req.password, &req.username)?;
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
    let role = req.role.unwrap_or(Role::Admin);
    let phc = state.argon2().hash(req.password).await?;
    let admin = state
        .db()
        .create_admin_with_role(&req.username, &phc, role)
        .await?;
    tracing::info!(by = %auth.username, admin = %admin.username, role = %admin.role, "admin created");
    audit(
        &state,
        auth.event("admin.create")
            .target("admin", admin.id)
            .changes(serde_json::json!({
                "username": {"before": null, "after": admin.username},
                "role": {"before": null, "after": admin.role},
            })),
    )
    .await;
    let location = format!("/api/admins/{}", admin.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(AdminView::from(admin)),
    ))
}

/// The admin of this token.
#[utoipa::path(
    get,
    path = "/api/admins/me",
    tag = "admins",
    responses(
        (status = 200, description = "The logged-in admin, with its role", body = AdminView),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn me(auth: AuthAdmin, State(state): State<AppState>) -> ApiResult<Json<AdminView>> {
    match state.db().get_admin(auth.id).await? {
        Some(a) => Ok(Json(a.into())),
        None => Err(ApiError::unauthorized("the admin no longer exists")),
    }
}

/// Change the own password (the old one is required). Every other session
/// of the admin ends; the answer carries a new token for this one.
#[utoipa::path(
    post,
    path = "/api/admins/me/password",
    tag = "admins",
    request_body = ChangePassword,
    responses(
        (status = 200, description = "Changed; other sessions have ended", body = PasswordChanged),
        (status = 422, description = "The old password is wrong (`field`: `old_password`) or the new one is refused (`new_password`)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong old passwords; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn change_password(
    auth: AuthAdmin,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChangePassword>,
) -> ApiResult<Json<PasswordChanged>> {
    if req.old_password.is_empty() || req.old_password.chars().count() > MAX_PASSWORD_LEN {
        return Err(ApiError::validation("old_password", "is wrong"));
    }
    validate_password(&req.new_password, &auth.username)
        .map_err(|e| rename_field(e, "new_password"))?;
    if req.new_password == req.old_password {
        return Err(ApiError::validation(
            "new_password",
            "must differ from the old password",
        ));
    }
    // A stolen token must not be a way around the login limiter.
    let attempt = state
        .login_guard()
        .begin(auth.ip, &auth.username.to_ascii_lowercase())
        .map_err(|wait| ApiError::RateLimited {
            retry_after_secs: wait,
            detail: format!("too many wrong passwords; try again in {wait} s"),
        })?;
    let phc = state
        .db()
        .get_admin_password_hash(auth.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the admin no longer exists"))?;
    if !state.argon2().verify(req.old_password, phc).await? {
        audit(
            &state,
            auth.event("admin.password.failure")
                .target("admin", auth.id),
        )
        .await;
        return Err(ApiError::validation("old_password", "is wrong"));
    }
    state.login_guard().succeed(attempt);
    let phc = state.argon2().hash(req.new_password).await?;
    let admin = state
        .db()
        .change_admin_password(auth.id, &phc)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the admin no longer exists"))?;
    let (token, expires_at) = state.jwt().issue(&admin)?;
    audit(
        &state,
        auth.event("admin.password").target("admin", auth.id),
    )
    .await;
    tracing::info!(admin = %auth.username, "admin changed its password; other sessions ended");
    Ok(Json(PasswordChanged { token, expires_at }))
}

fn rename_field(e: ApiError, to: &str) -> ApiError {
    match e {
        ApiError::Validation { detail, .. } => ApiError::validation(to, detail),
        other => other,
    }
}

/// One admin.
#[utoipa::path(
    get,
    path = "/api/admins/{id}",
    tag = "admins",
    params(("id" = i64, Path, minimum = 1, description = "Admin id")),
    responses(
        (status = 200, description = "The admin", body = AdminView),
    ),
    security(("bearer" = ["owner"]))
)]
pub async fn get_admin(
    _auth: RequireOwner,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<Json<AdminView>> {
    let id = parse_id(&id)?;
    match state.db().get_admin(id).await? {
        Some(a) => Ok(Json(a.into())),
        None => Err(ApiError::not_found(format!("no admin with id {id}"))),
    }
}

/// Change an admin's role. The last owner cannot be demoted. The admin's
/// sessions end, so the new role applies at once.
#[utoipa::path(
    patch,
    path = "/api/admins/{id}",
    tag = "admins",
    params(("id" = i64, Path, minimum = 1, description = "Admin id")),
    request_body = PatchAdmin,
    responses(
        (status = 200, description = "The admin as it is now", body = AdminView),
        (status = 409, description = "It is the last owner", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["owner"]))
)]
pub async fn patch_admin(
    auth: RequireOwner,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    ApiJson(req): ApiJson<PatchAdmin>,
) -> ApiResult<Json<AdminView>> {
    let id = parse_id(&id)?;
    let (before, after) = state
        .db()
        .set_admin_role(id, req.role)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no admin with id {id}")))?;
    if before.role != after.role {
        tracing::info!(by = %auth.username, admin = %after.username, role = %after.role, "admin role changed");
        audit(
            &state,
            auth.event("admin.role")
                .target("admin", id)
                .changes(serde_json::json!({
                    "role": {"before": before.role, "after": after.role}
                })),
        )
        .await;
    }
    Ok(Json(after.into()))
}

/// Remove an admin. The last owner cannot be removed. Tokens of a removed
/// admin stop working at once.
#[utoipa::path(
    delete,
    path = "/api/admins/{id}",
    tag = "admins",
    params(("id" = i64, Path, minimum = 1, description = "Admin id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "It is the last owner", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["owner"]))
)]
pub async fn delete_admin(
    auth: RequireOwner,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    match state.db().delete_admin(id).await? {
        Some(gone) => {
            tracing::info!(by = %auth.username, admin_id = id, "admin deleted");
            audit(
                &state,
                auth.event("admin.delete")
                    .target("admin", id)
                    .changes(serde_json::json!({
                        "username": {"before": gone.username, "after": null},
                        "role": {"before": gone.role, "after": null},
                    })),
            )
            .await;
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::not_found(format!("no admin with id {id}"))),
    }
}
