//! The one error type of the admin API and its problem+json rendering.
//!
//! Every failure a handler can report is an [`ApiError`]; each variant maps to
//! one HTTP status and one stable `type` suffix under
//! [`tollgate_core::problem::TYPE_BASE`] (see [`ApiError::kind`]). Bad input is
//! always 400/422 with the offending field named in the `field` member, never 500.
//! How these errors appear in the OpenAPI document: [`ProblemDoc`] (the
//! problem schema) and [`ProblemResponses`] (the one set of error responses
//! every operation lists).

mod doc;

use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tollgate_core::db::DbError;
use tollgate_core::problem::{Problem, CONTENT_TYPE};

pub use doc::{ProblemDoc, ProblemResponses};

/// Every error the admin API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `malformed-request`: the request cannot be parsed at all (invalid
    /// JSON, a path parameter of the wrong type).
    #[error("{detail}")]
    Malformed {
        field: Option<String>,
        detail: String,
    },
    /// 422 `validation-error`: well-formed, but a field's value is refused.
    #[error("{field}: {detail}")]
    Validation { field: String, detail: String },
    /// 401 `unauthorized`: no, or no valid, bearer token / wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `insufficient-role`: logged in, but the admin's role may not do this.
    #[error("{0}")]
    InsufficientRole(String),
    /// 421 `host-not-allowed`: the `Host` header is not one this listener
    /// answers (DNS rebinding).
    #[error("{0}")]
    HostNotAllowed(String),
    /// 404 `not-found`.
    #[error("{0}")]
    NotFound(String),
    /// 408 `request-timeout`: the client did not send its whole request
    /// body in time (its fault, not the database's).
    #[error("{0}")]
    RequestTimeout(String),
    /// 405 `method-not-allowed`.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409 `conflict`: duplicate name, plan in use, last admin.
    #[error("{0}")]
    Conflict(String),
    /// 409 `read-only`: the resource is defined in the YAML config.
    #[error("{0}")]
    ReadOnly(String),
    /// 413 `payload-too-large`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415 `unsupported-media-type`: a body that is not JSON, or is sent in
    /// a content coding (with `Accept-Encoding: identity`: none is decoded).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 `rate-limited`, with `Retry-After`.
    #[error("{detail}")]
    RateLimited {
        retry_after_secs: u64,
        detail: String,
    },
    /// 503 `busy`: too much work of one kind in progress (password checks),
    /// with `Retry-After: 1`.
    #[error("{0}")]
    Busy(String),
    /// 503 `database-unavailable`: the database cannot be reached right now.
    #[error("{0}")]
    DatabaseUnavailable(String),
    /// 500 `internal-error`: a bug or an unexpected failure (logged, not detailed).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub fn malformed(field: Option<&str>, detail: impl Into<String>) -> Self {
        Self::Malformed {
            field: field.map(str::to_string),
            detail: detail.into(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound(detail.into())
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::Unauthorized(detail.into())
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::Internal(detail.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed { .. } => StatusCode::BAD_REQUEST,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::InsufficientRole(_) => StatusCode::FORBIDDEN,
            Self::HostNotAllowed(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) | Self::ReadOnly(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::DatabaseUnavailable(_) | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable suffix of the problem `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed-request",
            Self::Validation { .. } => "validation-error",
            Self::Unauthorized(_) => "unauthorized",
            Self::InsufficientRole(_) => "insufficient-role",
            Self::HostNotAllowed(_) => "host-not-allowed",
            Self::NotFound(_) => "not-found",
            Self::RequestTimeout(_) => "request-timeout",
            Self::MethodNotAllowed(_) => "method-not-allowed",
            Self::Conflict(_) => "conflict",
            Self::ReadOnly(_) => "read-only",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::RateLimited { .. } => "rate-limited",
            Self::DatabaseUnavailable(_) => "database-unavailable",
            Self::Busy(_) => "busy",
            Self::Internal(_) => "internal-error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "Malformed request",
            Self::Validation { .. } => "Invalid field value",
            Self::Unauthorized(_) => "Unauthorized",
            Self::InsufficientRole(_) => "Insufficient role",
            Self::HostNotAllowed(_) => "Host not allowed",
            Self::NotFound(_) => "Not found",
            Self::RequestTimeout(_) => "Request Timeout",
            Self::MethodNotAllowed(_) => "Method not allowed",
            Self::Conflict(_) => "Conflict",
            Self::ReadOnly(_) => "Read-only resource",
            Self::PayloadTooLarge(_) => "Payload too large",
            Self::UnsupportedMediaType(_) => "Unsupported media type",
            Self::RateLimited { .. } => "Too many requests",
            Self::DatabaseUnavailable(_) => "Database unavailable",
            Self::Busy(_) => "Busy",
            Self::Internal(_) => "Internal error",
        }
    }

    /// The problem details this error is rendered as.
    pub fn to_problem(&self) -> Problem {
        let mut p = Problem::new(self.kind(), self.title(), self.status().as_u16());
        match self {
            Self::Malformed { field, detail } => {
                p = p.detail(detail.clone());
                if let Some(f) = field {
                    p = p.with("field", f.clone());
                }
            }
            Self::Validation { field, detail } => {
                p = p
                    .detail(format!("{field}: {detail}"))
                    .with("field", field.clone());
            }
            Self::RateLimited {
                retry_after_secs,
                detail,
            } => {
                p = p
                    .detail(detail.clone())
                    .with("retry_after", *retry_after_secs);
            }
            // Never leak internals to the client; they are logged instead.
            Self::Internal(_) => {
                p = p.detail("an unexpected error occurred; see the admin API log");
            }
            Self::Unauthorized(d)
            | Self::InsufficientRole(d)
            | Self::HostNotAllowed(d)
            | Self::Busy(d)
            | Self::NotFound(d)
            | Self::RequestTimeout(d)
            | Self::MethodNotAllowed(d)
            | Self::Conflict(d)
            | Self::ReadOnly(d)
            | Self::PayloadTooLarge(d)
            | Self::UnsupportedMediaType(d)
            | Self::DatabaseUnavailable(d) => p = p.detail(d.clone()),
        }
        p
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(msg) => tracing::error!(error = %msg, "admin API internal error"),
            Self::DatabaseUnavailable(msg) => tracing::warn!(error = %msg, "database unavailable"),
            _ => {}
        }
        let mut res = (self.status(), self.to_problem().to_json()).into_response();
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        match &self {
            Self::RateLimited {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tollgate-admin\""),
                );
            }
            Self::UnsupportedMediaType(_) => {
                // RFC 9110 §15.5.16: which request content codings would do.
                headers.insert(
                    header::ACCEPT_ENCODING,
                    HeaderValue::from_static("identity"),
                );
            }
            Self::DatabaseUnavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::Busy(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        res
    }
}

/// A broken rule of `tollgate_core::rules`: 422 naming the field.
impl From<tollgate_core::rules::FieldError> for ApiError {
    fn from(e: tollgate_core::rules::FieldError) -> Self {
        Self::validation(e.field, e.message)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict(msg) => Self::Conflict(msg),
            DbError::OutOfRange { field, message } => Self::validation(field, message),
            DbError::Sqlx(e) => from_sqlx(e),
            DbError::Migrate(e) => Self::DatabaseUnavailable(format!("migration failed: {e}")),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        from_sqlx(e)
    }
}

fn from_sqlx(e: sqlx::Error) -> ApiError {
    use sqlx::Error as E;
    match &e {
        E::Io(_)
        | E::Tls(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::Protocol(_) => ApiError::DatabaseUnavailable(format!("database unreachable: {e}")),
        E::Database(db) => {
            if db.is_unique_violation() {
                return ApiError::Conflict(
                    "a record with the same unique value already exists".into(),
                );
            }
            if db.is_foreign_key_violation() {
                return ApiError::Conflict("the record is referenced by another record".into());
            }
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let sqlite = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some();
            // SQLite: BUSY (5) and LOCKED (6) with their extended codes.
            // PostgreSQL (a five-character SQLSTATE, which may look like a
            // number: 22021 must not read as SQLite's 5): connection exceptions
            // (08…), operator intervention (57…, e.g. shutdown), insufficient
            // resources (53…).
            let transient = if sqlite {
                matches!(code.parse::<i64>(), Ok(n) if n & 0xff == 5 || n & 0xff == 6)
            } else {
                code.starts_with("08") || code.starts_with("57") || code.starts_with("53")
            };
            if transient {
                ApiError::DatabaseUnavailable(format!("database unavailable: {e}"))
            } else if !sqlite && code.starts_with("22") {
                // Data exception: a value the handlers let through that the
                // database cannot store or compare (e.g. NUL in text). The
                // client's input, not an outage; the detail stays in the log.
                tracing::warn!(error = %e, "the database refused a value");
                ApiError::malformed(
                    None,
                    "a value in the request cannot be stored or compared by the database",
                )
            } else {
                ApiError::Internal(e.to_string())
            }
        }
        _ => ApiError::Internal(e.to_string()),
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;

/// The fallback of every path no route serves: 404 `not-found`.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

/// The fallback of a served path asked with another method: 405.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let p = ApiError::validation("limits[0].rate", "must be at least 1").to_problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.kind(), "validation-error");
        assert_eq!(p.extensions["field"], "limits[0].rate");
    }

    #[test]
    fn internal_details_are_not_leaked() {
        let p = ApiError::internal("secret connection string").to_problem();
        assert!(!p.detail.unwrap_or_default().contains("secret"));
    }

    #[test]
    fn pool_timeout_is_503() {
        let e: ApiError = DbError::Sqlx(sqlx::Error::PoolTimedOut).into();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.kind(), "database-unavailable");
    }
}
