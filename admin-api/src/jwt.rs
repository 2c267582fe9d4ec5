//! HS256 session tokens ([`JwtKeys`]). A token carries `sub` (admin id),
//! `name`, `iat`, `exp`, `jti` and `gen` (the admin's session generation).
//! Its signature, expiry, lifetime and shape are checked here; that its
//! `jti` was not revoked (logout) and `gen` is the admin's current one (a
//! password or role change ends every older session) is checked by
//! [`crate::auth::authenticate`] against the database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tollgate_core::db::admins::Admin;

use crate::error::{ApiError, ApiResult};

/// Tokens whose `iat` lies further in the future than this are refused.
const CLOCK_SKEW_SECS: u64 = 60;

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

/// The HS256 signing and verification keys, and the session lifetime
/// (`admin.session_ttl`, followed on reload: [`Self::set_ttl`]).
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Seconds; shared by the clones.
    ttl_secs: Arc<AtomicU64>,
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
            ttl_secs: Arc::new(AtomicU64::new(ttl.as_secs())),
        }
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs.load(Ordering::Relaxed))
    }

    /// A reloaded `admin.session_ttl`: new tokens live that long, and a
    /// token whose lifetime is longer is refused from now on (as after a
    /// restart with it).
    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_secs.store(ttl.as_secs(), Ordering::Relaxed);
    }

    /// A token for `admin`, and when it expires (Unix ms).
    pub fn issue(&self, admin: &Admin) -> ApiResult<(String, i64)> {
        let now = unix_secs();
        let exp = now + self.ttl().as_secs();
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
        if claims.exp.saturating_sub(claims.iat) > self.ttl().as_secs() + 5 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::db::admins::Role;

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
