//! `GET /api/openapi.json`: the OpenAPI 3.1 document, generated from the
//! handlers' annotations (utoipa).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::AppState;

/// An RFC 9457 problem details object (`application/problem+json`), the body
/// of every error. `type` ends in a stable suffix: `malformed-request` (400),
/// `unauthorized` (401), `not-found` (404), `method-not-allowed` (405),
/// `conflict` (409), `read-only` (409), `payload-too-large` (413),
/// `unsupported-media-type` (415), `validation-error` (422),
/// `insufficient-role` (403), `host-not-allowed` (421), `rate-limited`
/// (429), `internal-error` (500), `database-unavailable` (503), `busy` (503).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem, title = "Problem")]
pub struct ProblemDoc {
    #[serde(rename = "type")]
    #[schema(example = "https://tollgate.dev/problems/validation-error")]
    pub type_uri: String,
    #[schema(example = "Invalid field value")]
    pub title: String,
    #[schema(example = 422)]
    pub status: u16,
    #[schema(example = "limits[0].rate: must be at least 1")]
    pub detail: Option<String>,
    /// The offending field (400/422), as a path such as `limits[0].rate`.
    #[schema(example = "limits[0].rate")]
    pub field: Option<String>,
    /// Seconds to wait (429), also sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The token from POST /api/auth/login (HS256, valid admin.session_ttl, default 12 h). \
                         Each operation lists the least role it needs: viewer < admin < owner.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate admin API",
        description = "Manage admins, API keys and plans of a Tollgate gateway, and read its health. \
            Every route except login, the health summary and this document needs `Authorization: Bearer <token>`; \
            each operation's security requirement names the least role it needs (`viewer`, `admin` or `owner`), \
            a lower role gets 403 `insufficient-role`. \
            Timestamps are Unix milliseconds. Errors are RFC 9457 problem+json.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        crate::auth::login,
        crate::auth::logout,
        crate::admins::list_admins,
        crate::admins::create_admin,
        crate::admins::me,
        crate::admins::change_password,
        crate::admins::get_admin,
        crate::admins::patch_admin,
        crate::admins::delete_admin,
        crate::keys::list_keys,
        crate::keys::create_key,
        crate::keys::get_key,
        crate::keys::patch_key,
        crate::keys::delete_key,
        crate::keys::rotate_key,
        crate::plans::list_plans,
        crate::plans::create_plan,
        crate::plans::get_plan,
        crate::plans::patch_plan,
        crate::plans::delete_plan,
        crate::health::health,
        crate::analytics::summary,
        crate::analytics::timeseries,
        crate::analytics::keys_usage,
        crate::analytics::key_analytics,
        crate::analytics::top_keys,
        crate::analytics::violations,
        crate::audit::list_audit,
        openapi_json,
    ),
    components(schemas(ProblemDoc)),
    modifiers(&BearerAuth),
    security(("bearer" = ["viewer"])),
    tags(
        (name = "auth", description = "Log in and out"),
        (name = "audit", description = "Who changed what"),
        (name = "admins", description = "The people who may use this API"),
        (name = "keys", description = "API keys"),
        (name = "plans", description = "Named sets of limits"),
        (name = "health", description = "Health of every part"),
        (name = "analytics", description = "Usage, latency and violations the proxies recorded"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// The document, as JSON.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| {
            format!("{{\"error\":\"cannot render the OpenAPI document: {e}\"}}")
        })
    })
}

pub fn router() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(openapi_json))
}

/// This OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")),
    security(())
)]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}
