//! `POST /api/auth/login` (a username and password for a session token)
//! and `POST /api/auth/logout` (revoke this session's token).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tollgate_core::db::audit::{Actor, NewAuditEvent};
use utoipa::ToSchema;

use crate::auth::{audit, AuthAdmin};
use crate::bodies::AdminView;
use crate::error::{ApiError, ApiResult, ProblemDoc};
use crate::extract::{ApiJson, ClientIp};
use crate::password::{validate_username, MAX_PASSWORD_LEN};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "admin", min_length = 1)]
    pub username: String,
    #[schema(min_length = 1)]
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// The JWT to send as `Authorization: Bearer <token>`.
    pub token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// When the token expires, Unix ms.
    pub expires_at: i64,
    pub admin: AdminView,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
}

/// Log in: exchange a username and password for a session token valid for
/// `admin.session_ttl` (default 12 h).
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 401, description = "Wrong username or password", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this address or for this username; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Too many password checks in progress, or the database is unavailable; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(())
)]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    if req.username.is_empty() {
        return Err(ApiError::validation("username", "must not be empty"));
    }
    if req.password.is_empty() {
        return Err(ApiError::validation("password", "must not be empty"));
    }
    // Bound the work an attacker can make argon2 and the limiter's map do
    // (no admin has a longer name or password).
    if req.username.len() > 64 || req.password.chars().count() > MAX_PASSWORD_LEN {
        return Err(ApiError::unauthorized("wrong username or password"));
    }
    let name = req.username.to_ascii_lowercase();
    // Counted before the password is checked, so concurrent attempts cannot
    // slip through; refunded below when it was right.
    let attempt = state.login_guard().begin(ip, &name).map_err(|wait| {
        crate::metrics::login("throttled");
        ApiError::RateLimited {
            retry_after_secs: wait,
            detail: format!("too many login attempts; try again in {wait} s"),
        }
    })?;
    // A name no admin can have (NUL bytes, quotes, …) is not looked up; it
    // fails like an unknown one, after the same password check.
    let found = if validate_username(&req.username).is_ok() {
        state.db().get_admin_by_username(&req.username).await?
    } else {
        None
    };
    let (admin, phc) = match found {
        Some((admin, phc)) => (Some(admin), phc),
        None => (None, crate::password::dummy_hash().to_string()),
    };
    let ok = match state.argon2().verify(req.password, phc).await {
        Ok(ok) => ok,
        Err(e) => {
            // Not checked: not counted against anyone.
            state.login_guard().succeed(attempt);
            if matches!(e, ApiError::Busy(_)) {
                crate::metrics::login("busy");
            }
            return Err(e);
        }
    };
    let ip_text = ip.map(|i| i.to_string());
    match admin {
        Some(admin) if ok => {
            state.login_guard().succeed(attempt);
            let (token, expires_at) = state.jwt().issue(&admin)?;
            tracing::info!(admin = %admin.username, "admin logged in");
            crate::metrics::login("success");
            audit(
                &state,
                NewAuditEvent::new(
                    Actor::Admin {
                        id: admin.id,
                        username: admin.username.clone(),
                    },
                    "login.success",
                )
                .ip(ip_text)
                .target("admin", admin.id),
            )
            .await;
            Ok(Json(LoginResponse {
                token,
                token_type: "Bearer",
                expires_at,
                admin: admin.into(),
            }))
        }
        other => {
            tracing::info!(ip = ?ip, "failed admin login");
            crate::metrics::login("failure");
            // The name is recorded only when it is an admin's: what someone
            // typed into the username field may be a password.
            let mut event = NewAuditEvent::new(Actor::Anonymous, "login.failure").ip(ip_text);
            if let Some(a) = other {
                event = event.target("admin", a.id).changes(serde_json::json!({
                    "username": a.username
                }));
            }
            audit(&state, event).await;
            Err(ApiError::unauthorized("wrong username or password"))
        }
    }
}

/// Log out: revoke the token of this request at once (other sessions of the
/// admin stay valid).
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    responses(
        (status = 204, description = "The token is revoked"),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn logout(auth: AuthAdmin, State(state): State<AppState>) -> ApiResult<StatusCode> {
    state
        .db()
        .revoke_token(&auth.jti, auth.id, auth.expires_at)
        .await?;
    audit(&state, auth.event("logout").target("admin", auth.id)).await;
    Ok(StatusCode::NO_CONTENT)
}
