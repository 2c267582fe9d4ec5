//! `GET /api/openapi.json`: the OpenAPI 3.1 document, generated from the
//! handlers' annotations (utoipa).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ProblemDoc, ProblemResponses};
use crate::state::AppState;

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
        crate::login::login,
        crate::login::logout,
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
        crate::identities::list_identities,
        crate::identities::create_identity,
        crate::identities::get_identity,
        crate::identities::patch_identity,
        crate::identities::delete_identity,
        crate::identities::identity_keys,
        crate::analytics::identity::identity_usage,
        crate::keys::add_credits,
        crate::identities::add_identity_credits,
        crate::refills::put_key_refill,
        crate::refills::delete_key_refill,
        crate::refills::put_identity_refill,
        crate::refills::delete_identity_refill,
        crate::quotas::adjust_key_quota,
        crate::quotas::adjust_identity_quota,
        crate::quotas::usage::key_quotas,
        crate::quotas::usage::identity_quotas,
        crate::plans::list_plans,
        crate::plans::create_plan,
        crate::plans::get_plan,
        crate::plans::patch_plan,
        crate::plans::delete_plan,
        crate::service_tokens::list_service_tokens,
        crate::service_tokens::create_service_token,
        crate::service_tokens::delete_service_token,
        crate::health::health,
        crate::analytics::summary,
        crate::analytics::timeseries,
        crate::analytics::keys_usage,
        crate::analytics::key_analytics,
        crate::analytics::top_keys,
        crate::analytics::violations,
        crate::usage_export::export,
        crate::webhooks::list_webhooks,
        crate::webhooks::create_webhook,
        crate::webhooks::get_webhook,
        crate::webhooks::patch_webhook,
        crate::webhooks::delete_webhook,
        crate::webhooks::list_deliveries,
        crate::webhooks::send_test,
        crate::audit::list_audit,
        openapi_json,
    ),
    components(schemas(ProblemDoc)),
    modifiers(&BearerAuth, &ProblemResponses),
    security(("bearer" = ["viewer"])),
    tags(
        (name = "auth", description = "Log in and out"),
        (name = "audit", description = "Who changed what"),
        (name = "admins", description = "The people who may use this API"),
        (name = "keys", description = "API keys"),
        (name = "plans", description = "Named sets of limits"),
        (name = "service-tokens", description = "Credentials of the services that call the verify API (POST /v1/verify on verify.listen)"),
        (name = "health", description = "Health of every part"),
        (name = "analytics", description = "Usage, latency and violations the proxies recorded"),
        (name = "webhooks", description = "Signed event deliveries (Standard Webhooks) and their log"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(doc: &serde_json::Value, path: &str, method: &str) -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn every_operation_gets_the_error_responses_it_can_answer() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("JSON");
        let s = |path, method| statuses(&doc, path, method);
        // A viewer read with a path id; an admin write with one; a query.
        assert_eq!(
            s("/api/keys/{id}", "get"),
            ["200", "400", "401", "404", "503"]
        );
        // 408: a body that does not arrive in time.
        assert_eq!(
            s("/api/keys/{id}", "patch"),
            ["200", "400", "401", "403", "404", "408", "409", "415", "422", "503"]
        );
        assert_eq!(
            s("/api/analytics/summary", "get"),
            ["200", "400", "401", "422", "503"]
        );
        // 400: two Authorization headers (every operation with a token).
        assert_eq!(s("/api/plans", "get"), ["200", "400", "401", "503"]);
        assert_eq!(s("/api/openapi.json", "get"), ["200", "400"]);
        // An unknown query parameter is a 400 naming it.
        let summary = &doc["paths"]["/api/analytics/summary"]["get"]["responses"];
        assert!(summary["400"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("query parameter the operation does not take")));
        // An operation's own descriptions are kept.
        let login = &doc["paths"]["/api/auth/login"]["post"]["responses"];
        assert_eq!(login["401"]["description"], "Wrong username or password");
        assert!(login["429"].is_object());
        let keys = &doc["paths"]["/api/keys"]["post"]["responses"];
        assert!(keys["422"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("plan does not exist")));
        assert_eq!(
            keys["403"]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
    }
}
