//! Authentication: argon2id passwords, HS256 JWTs valid for 24 h, the
//! [`AuthAdmin`] extractor every protected handler takes, the login endpoint
//! and its failure limiter (per client IP and per username).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::extract::{FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tollgate_core::limits::{check_bucket, Limit};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ClientIp};
use crate::openapi::ProblemDoc;
use crate::AppState;

/// How long a session token is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Failed logins allowed per minute, per client IP and per username.
pub const LOGIN_FAILURES_PER_MINUTE: u64 = 5;

// ---------------------------------------------------------------------------
// Passwords

/// Hash a password with argon2id (default parameters: 19 MiB, 2 passes) and a
/// random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ApiError::internal(format!("OS RNG failed: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(format!("argon2: {e}")))
}

/// Check a password against a stored PHC string (`false` on any mismatch or
/// an unparseable hash).
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the username does not exist, so that an
/// unknown user takes as long to refuse as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("tollgate-dummy-password").unwrap_or_default())
}

/// Argon2 is deliberately slow: keep it off the async workers.
async fn verify_blocking(password: String, phc: String) -> ApiResult<bool> {
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .map_err(|e| ApiError::internal(format!("password check task: {e}")))
}

pub(crate) async fn hash_blocking(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::internal(format!("password hash task: {e}")))?
}

/// A random password of `len` base62 characters (≈ 5.95 bits each).
pub fn random_password(len: usize) -> Result<String, ApiError> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| ApiError::internal(format!("OS RNG failed: {e}")))?;
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[usize::from(b % 62)] as char);
        }
    }
    Ok(out)
}

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
}

/// The HS256 signing and verification keys.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(HS256, secret hidden)")
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A token for `admin`, and when it expires (Unix ms).
    pub fn issue(&self, admin_id: i64, username: &str) -> ApiResult<(String, i64)> {
        let now = unix_secs();
        let exp = now + TOKEN_TTL.as_secs();
        let claims = Claims {
            sub: admin_id.to_string(),
            name: username.to_string(),
            iat: now,
            exp,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("signing a token: {e}")))?;
        let exp_ms = i64::try_from(exp).unwrap_or(i64::MAX / 1000) * 1000;
        Ok((token, exp_ms))
    }

    /// Verify signature (HS256 only: `none` and every other algorithm are
    /// refused), expiry and shape.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| {
                ApiError::unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired: log in again",
                    ErrorKind::InvalidSignature => "the token's signature is invalid",
                    ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted",
                    _ => "the token is malformed",
                })
            })
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A generated JWT secret: 32 random bytes, hex.
pub fn generate_secret() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("OS RNG failed: {e}")))?;
    Ok(hex::encode(bytes))
}

/// The authenticated admin of a request: extracting it checks
/// `Authorization: Bearer <jwt>` and that the admin still exists.
#[derive(Debug, Clone)]
pub struct AuthAdmin {
    pub id: i64,
    pub username: String,
}

impl FromRequestParts<AppState> for AuthAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing Authorization: Bearer <token> header")
        })?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(ApiError::unauthorized(
                    "expected Authorization: Bearer <token>",
                ))
            }
        };
        let claims = state.jwt().verify(token)?;
        let id: i64 = claims
            .sub
            .parse()
            .map_err(|_| ApiError::unauthorized("the token is malformed"))?;
        match state.db().get_admin(id).await? {
            Some(admin) if admin.username == claims.name => Ok(AuthAdmin {
                id,
                username: admin.username,
            }),
            _ => Err(ApiError::unauthorized("the token's admin no longer exists")),
        }
    }
}

// ---------------------------------------------------------------------------
// Login limiter

/// Counts failed logins in token buckets (5 per minute, burst 5) per client IP
/// and per username; while either bucket is empty, logins are refused with 429.
#[derive(Debug)]
pub struct LoginLimiter {
    limit: Limit,
    epoch: Instant,
    inner: Mutex<LimiterMaps>,
}

#[derive(Debug, Default)]
struct LimiterMaps {
    ips: HashMap<IpAddr, u64>,
    users: HashMap<String, u64>,
}

const MAX_TRACKED: usize = 100_000;

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(LOGIN_FAILURES_PER_MINUTE, Duration::from_secs(60))
    }
}

impl LoginLimiter {
    pub fn new(failures: u64, per: Duration) -> Self {
        Self {
            limit: Limit {
                name: "login".into(),
                rate: failures.max(1),
                per,
                burst: None,
                cost: None,
            },
            epoch: Instant::now(),
            inner: Mutex::new(LimiterMaps::default()),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// `Err(seconds to wait)` while the IP or the username may not try again.
    pub fn check(&self, ip: Option<IpAddr>, username: &str) -> Result<(), u64> {
        let now = self.now();
        let maps = self.inner.lock();
        let mut wait = 0;
        let tats = [
            ip.and_then(|ip| maps.ips.get(&ip).copied()),
            maps.users.get(username).copied(),
        ];
        for tat in tats.into_iter().flatten() {
            let c = check_bucket(&self.limit, tat, now);
            if !c.allowed {
                wait = wait.max(tollgate_core::limits::ceil_secs(c.retry_after_ns).max(1));
            }
        }
        if wait > 0 {
            Err(wait)
        } else {
            Ok(())
        }
    }

    /// Take one token from the IP's and the username's buckets.
    pub fn record_failure(&self, ip: Option<IpAddr>, username: &str) {
        let now = self.now();
        let limit = &self.limit;
        let mut maps = self.inner.lock();
        if maps.ips.len() + maps.users.len() > MAX_TRACKED {
            // Forget buckets that have refilled completely.
            maps.ips.retain(|_, tat| *tat > now);
            maps.users.retain(|_, tat| *tat > now);
        }
        let take = |tat: &mut u64| {
            let c = check_bucket(limit, *tat, now);
            if c.allowed {
                *tat = c.new_tat;
            }
        };
        if let Some(ip) = ip {
            take(maps.ips.entry(ip).or_insert(0));
        }
        if maps.users.len() < MAX_TRACKED || maps.users.contains_key(username) {
            take(maps.users.entry(username.to_string()).or_insert(0));
        }
    }
}

// ---------------------------------------------------------------------------
// Login endpoint

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
    Router::new().route("/api/auth/login", post(login))
}

/// Log in: exchange a username and password for a 24 h session token.
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
        (status = 429, description = "Too many failed logins from this IP or for this username; see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = ProblemDoc, content_type = "application/problem+json"),
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
    if req.username.len() > 256 || req.password.chars().count() > crate::admins::MAX_PASSWORD_LEN {
        return Err(ApiError::unauthorized("wrong username or password"));
    }
    let limiter = state.login_limiter();
    if let Err(wait) = limiter.check(ip, &req.username) {
        return Err(ApiError::RateLimited {
            retry_after_secs: wait,
            detail: format!("too many failed logins; try again in {wait} s"),
        });
    }
    // A name no admin can have (NUL bytes, quotes, …) is not looked up; it
    // fails like an unknown one, after the same password check.
    let found = if crate::admins::validate_username(&req.username).is_ok() {
        state.db().get_admin_by_username(&req.username).await?
    } else {
        None
    };
    let (admin, phc) = match found {
        Some((admin, phc)) => (Some(admin), phc),
        None => (None, dummy_hash().to_string()),
    };
    let ok = verify_blocking(req.password, phc).await?;
    match admin {
        Some(admin) if ok => {
            let (token, expires_at) = state.jwt().issue(admin.id, &admin.username)?;
            tracing::info!(admin = %admin.username, "admin logged in");
            Ok(Json(LoginResponse {
                token,
                token_type: "Bearer",
                expires_at,
                admin: admin.into(),
            }))
        }
        _ => {
            limiter.record_failure(ip, &req.username);
            tracing::info!(ip = ?ip, "failed admin login");
            Err(ApiError::unauthorized("wrong username or password"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_round_trip() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn tokens_verify_only_with_the_same_key() {
        let a = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let b = JwtKeys::new(b"another secret, also 32 bytes...");
        let (t, exp) = a.issue(7, "root").expect("issue");
        assert!(exp > tollgate_core::now_ms());
        let c = a.verify(&t).expect("valid");
        assert_eq!(c.sub, "7");
        assert!(b.verify(&t).is_err());
    }

    #[test]
    fn limiter_blocks_after_five_failures() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..5 {
            assert!(l.check(Some(ip), "bob").is_ok());
            l.record_failure(Some(ip), "bob");
        }
        let wait = l.check(Some(ip), "bob").expect_err("blocked");
        assert!((1..=12).contains(&wait), "{wait}");
        // Another username from the same IP is blocked too (per IP) …
        assert!(l.check(Some(ip), "alice").is_err());
        // … and the same username from another IP (per username).
        assert!(l
            .check(Some("10.0.0.2".parse().expect("ip")), "bob")
            .is_err());
        assert!(l
            .check(Some("10.0.0.2".parse().expect("ip")), "carol")
            .is_ok());
    }

    #[test]
    fn random_passwords_are_long_and_distinct() {
        let a = random_password(20).expect("rng");
        assert_eq!(a.len(), 20);
        assert_ne!(a, random_password(20).expect("rng"));
    }
}
