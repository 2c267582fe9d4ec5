//! Authentication: HS256 session tokens, the extractors every protected
//! handler takes ([`AuthAdmin`] for any role, [`RequireAdmin`],
//! [`RequireOwner`]), login, logout and the password change.
//!
//! A token carries `sub` (admin id), `name`, `iat`, `exp`, `jti` and `gen`
//! (the admin's session generation). It is accepted only if its signature is
//! right, it has not expired, `exp − iat` is within `admin.session_ttl`, its
//! `jti` was not revoked (logout) and `gen` is the admin's current one (a
//! password or role change ends every older session).

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tollgate_core::db::admins::{Admin, Role};
use tollgate_core::db::audit::{Actor, NewAuditEvent};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ClientIp};
use crate::openapi::ProblemDoc;
use crate::AppState;

pub use crate::password::{
    generate_secret, hash_password, random_password, verify_password, MAX_PASSWORD_LEN,
};

/// Tokens whose `iat` lies further in the future than this are refused.
const CLOCK_SKEW_SECS: u64 = 60;

// ---------------------------------------------------------------------------
// Tokens

/// The claims of a session token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The admin's id.
    pub sub: String,
    /// The admin's username (checked too, so a token never outlives its admin).
    pub name: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// This token's id (hex), what logout revokes. Required (a token
    /// without one is refused after decoding).
    #[serde(default)]
    pub jti: String,
    /// The admin's session generation when the token was issued.
    #[serde(default)]
    pub gen: i64,
}

/// The HS256 signing and verification keys, and the session lifetime.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(HS256, secret hidden)")
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `admin`, and when it expires (Unix ms).
    pub fn issue(&self, admin: &Admin) -> ApiResult<(String, i64)> {
        let now = unix_secs();
        let exp = now + self.ttl.as_secs();
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| ApiError::internal(format!("OS RNG failed: {e}")))?;
        let claims = Claims {
            sub: admin.id.to_string(),
            name: admin.username.clone(),
            iat: now,
            exp,
            jti: hex::encode(jti),
            gen: admin.session_gen,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("signing a token: {e}")))?;
        let exp_ms = i64::try_from(exp).unwrap_or(i64::MAX / 1000) * 1000;
        Ok((token, exp_ms))
    }

    /// Verify signature (HS256 only: `none` and every other algorithm are
    /// refused), expiry, lifetime and shape.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        use jsonwebtoken::errors::ErrorKind;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| {
                ApiError::unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired: log in again",
                    ErrorKind::InvalidSignature => "the token's signature is invalid",
                    ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted",
                    _ => "the token is malformed",
                })
            })?;
        if claims.exp.saturating_sub(claims.iat) > self.ttl.as_secs() + 5 {
            return Err(ApiError::unauthorized(
                "the token's lifetime is longer than admin.session_ttl",
            ));
        }
        if claims.iat > unix_secs() + CLOCK_SKEW_SECS {
            return Err(ApiError::unauthorized("the token was issued in the future"));
        }
        if claims.jti.is_empty() || claims.jti.len() > 64 {
            return Err(ApiError::unauthorized("the token is malformed"));
        }
        Ok(claims)
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Extractors

/// The authenticated admin of a request, any role: extracting it checks
/// `Authorization: Bearer <jwt>`, that the token is not revoked and that the
/// admin still exists with the same session generation.
#[derive(Debug, Clone)]
pub struct AuthAdmin {
    pub id: i64,
    pub username: String,
    pub role: Role,
    /// The token's id and expiry (Unix ms), for logout.
    pub jti: String,
    pub expires_at: i64,
    /// The TCP peer.
    pub ip: Option<IpAddr>,
}

impl AuthAdmin {
    pub fn actor(&self) -> Actor {
        Actor::Admin {
            id: self.id,
            username: self.username.clone(),
        }
    }

    /// An audit event by this admin, from its address.
    pub fn event(&self, action: &str) -> NewAuditEvent {
        NewAuditEvent::new(self.actor(), action).ip(self.ip.map(|i| i.to_string()))
    }

    fn require(self, role: Role) -> Result<Self, ApiError> {
        if self.role.allows(role) {
            Ok(self)
        } else {
            Err(ApiError::InsufficientRole(format!(
                "this needs the {role} role; {} is {}",
                self.username, self.role
            )))
        }
    }
}

/// An admin with role `admin` or `owner` (keys, plans).
#[derive(Debug, Clone)]
pub struct RequireAdmin(pub AuthAdmin);

/// An admin with role `owner` (admins, settings).
#[derive(Debug, Clone)]
pub struct RequireOwner(pub AuthAdmin);

impl std::ops::Deref for RequireAdmin {
    type Target = AuthAdmin;
    fn deref(&self) -> &AuthAdmin {
        &self.0
    }
}

impl std::ops::Deref for RequireOwner {
    type Target = AuthAdmin;
    fn deref(&self) -> &AuthAdmin {
        &self.0
    }
}

/// The bearer token of a request, if it has a well-formed header.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token> header"))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(ApiError::unauthorized(
            "expected Authorization: Bearer <token>",
        )),
    }
}

/// Check a token against the keys and the database.
pub async fn authenticate(
    state: &AppState,
    token: &str,
    ip: Option<IpAddr>,
) -> Result<AuthAdmin, ApiError> {
    let claims = state.jwt().verify(token)?;
    let id: i64 = claims
        .sub
        .parse()
        .map_err(|_| ApiError::unauthorized("the token is malformed"))?;
    match state.db().session_admin(id, &claims.jti).await? {
        Some(admin) if admin.username == claims.name && admin.session_gen == claims.gen => {
            Ok(AuthAdmin {
                id,
                username: admin.username,
                role: admin.role,
                jti: claims.jti,
                expires_at: i64::try_from(claims.exp).unwrap_or(i64::MAX / 1000) * 1000,
                ip,
            })
        }
        Some(_) => Err(ApiError::unauthorized(
            "the session has ended (password or role changed): log in again",
        )),
        None => Err(ApiError::unauthorized(
            "the session has ended or its admin no longer exists: log in again",
        )),
    }
}

fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|ci| ci.0.ip())
}

impl FromRequestParts<AppState> for AuthAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        authenticate(state, token, peer(parts)).await
    }
}

impl FromRequestParts<AppState> for RequireAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let a = AuthAdmin::from_request_parts(parts, state).await?;
        a.require(Role::Admin).map(RequireAdmin)
    }
}

impl FromRequestParts<AppState> for RequireOwner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let a = AuthAdmin::from_request_parts(parts, state).await?;
        a.require(Role::Owner).map(RequireOwner)
    }
}

// ---------------------------------------------------------------------------
// Login, logout

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
    pub admin: crate::admins::AdminView,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
}

/// Record an audit event; a failure is logged, never shown to the client
/// (the change itself is done).
pub async fn audit(state: &AppState, event: NewAuditEvent) {
    let action = event.action.clone();
    if let Err(e) = state.db().record_audit(event).await {
        tracing::error!(%action, error = %e, "cannot write the audit event");
        crate::metrics::audit_failed();
    }
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
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Wrong username or password", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or invalid", body = ProblemDoc, content_type = "application/problem+json"),
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
    let found = if crate::admins::validate_username(&req.username).is_ok() {
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
        (status = 401, description = "Missing or invalid token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = ProblemDoc, content_type = "application/problem+json"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(gen: i64) -> Admin {
        Admin {
            id: 7,
            username: "root".into(),
            role: Role::Owner,
            created_at: 0,
            session_gen: gen,
        }
    }

    #[test]
    fn tokens_verify_only_with_the_same_key() {
        let ttl = Duration::from_secs(3600);
        let a = JwtKeys::new(b"0123456789abcdef0123456789abcdef", ttl);
        let b = JwtKeys::new(b"another secret, also 32 bytes...", ttl);
        let (t, exp) = a.issue(&admin(3)).expect("issue");
        assert!(exp > tollgate_core::now_ms());
        let c = a.verify(&t).expect("valid");
        assert_eq!(c.sub, "7");
        assert_eq!(c.gen, 3);
        assert_eq!(c.jti.len(), 32);
        assert!(b.verify(&t).is_err());
    }

    #[test]
    fn a_lifetime_beyond_the_session_ttl_is_refused() {
        let long = JwtKeys::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(365 * 86400),
        );
        let short = JwtKeys::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(3600),
        );
        let (t, _) = long.issue(&admin(0)).expect("issue");
        assert!(long.verify(&t).is_ok());
        let e = short.verify(&t).expect_err("too long");
        assert!(e.to_string().contains("session_ttl"), "{e}");
    }
}
