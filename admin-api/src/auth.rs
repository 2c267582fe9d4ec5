//! Authentication of a request: the extractors every protected handler
//! takes ([`AuthAdmin`] for any role, [`RequireAdmin`], [`RequireOwner`]),
//! which check the bearer token ([`crate::jwt`]) and that its session is
//! still valid in the database; and [`audit`], how a handler records what an
//! admin did.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tollgate_core::db::admins::Role;
use tollgate_core::db::audit::{Actor, NewAuditEvent};

use crate::error::ApiError;
use crate::state::AppState;

pub use crate::jwt::{Claims, JwtKeys};
pub use crate::password::{
    generate_secret, hash_password, random_password, verify_password, MAX_PASSWORD_LEN,
};

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
///
/// More than one `Authorization` field line is 400 `malformed-request`,
/// whichever of them would be valid: the field is a singleton (RFC 9110
/// §11.6.2, not a list), and RFC 6750 §3.1 answers a request that carries
/// more than one access token with 400 `invalid_request`. A 401 would ask
/// for credentials the client already sent.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let mut headers = parts.headers.get_all(AUTHORIZATION).iter();
    let header = headers
        .next()
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token> header"))?;
    if headers.next().is_some() {
        return Err(ApiError::malformed(
            None,
            "more than one Authorization header: send exactly one credential",
        ));
    }
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

/// Record an audit event; a failure is logged, never shown to the client
/// (the change itself is done).
pub async fn audit(state: &AppState, event: NewAuditEvent) {
    let action = event.action.clone();
    if let Err(e) = state.db().record_audit(event).await {
        tracing::error!(%action, error = %e, "cannot write the audit event");
        crate::metrics::audit_failed();
    }
}

/// Record an update's event with its `changes` (the `diff` of before and
/// after), unless there are none: a PATCH that changes nothing leaves no
/// audit row.
pub async fn audit_changes(state: &AppState, event: NewAuditEvent, changes: serde_json::Value) {
    if changes.as_object().is_some_and(serde_json::Map::is_empty) {
        return;
    }
    audit(state, event.changes(changes)).await;
}
