//! How the errors of [`ApiError`](super::ApiError) appear in the OpenAPI document: the
//! problem+json schema ([`ProblemDoc`]) and the one set of error responses
//! every operation documents ([`ProblemResponses`]).

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{Content, Ref, ResponseBuilder};
use utoipa::{Modify, ToSchema};

/// An RFC 9457 problem details object (`application/problem+json`), the body
/// of every error. `type` ends in a stable suffix: `malformed-request` (400),
/// `unauthorized` (401), `not-found` (404), `method-not-allowed` (405),
/// `request-timeout` (408),
/// `conflict` (409), `read-only` (409), `payload-too-large` (413),
/// `unsupported-media-type` (415), `validation-error` (422),
/// `insufficient-role` (403), `host-not-allowed` (421), `rate-limited`
/// (429), `internal-error` (500), `database-unavailable` (503), `busy` (503).
#[derive(Debug, serde::Serialize, ToSchema)]
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

/// The error responses of every operation, added to the document from what
/// each operation is, so that no handler repeats them:
///
/// | status | when |
/// | --- | --- |
/// | 400 `malformed-request` | always: a query parameter it does not take (`query_guard`); also a bad path parameter, JSON body, or more than one `Authorization` header |
/// | 401 `unauthorized` | it accepts a bearer token |
/// | 403 `insufficient-role` | its least role is `admin` or `owner` |
/// | 404 `not-found` | it has a path parameter |
/// | 408 `request-timeout` | it reads a JSON body (not received within `admin.header_timeout`) |
/// | 415 `unsupported-media-type` | it reads a JSON body (another `Content-Type`, or a `Content-Encoding`) |
/// | 422 `validation-error` | it reads a query parameter or a JSON body |
/// | 503 `database-unavailable` | always, except for this document itself |
///
/// A status the operation documents itself (a 409, a more precise 404 or
/// 422, the login's 429) keeps its own description. Every one is
/// problem+json.
#[derive(Debug, Clone, Copy)]
pub struct ProblemResponses;

/// The path of the document, which reads no database.
const DOCUMENT_PATH: &str = "/api/openapi.json";

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                add_problems(op, path != DOCUMENT_PATH);
            }
        }
    }
}

fn add_problems(op: &mut Operation, uses_db: bool) {
    let params = op.parameters.as_deref().unwrap_or_default();
    let in_path = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Path));
    let in_query = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query));
    let body = op.request_body.is_some();
    let roles = bearer_roles(op);
    let mut add = |status: &str, description: &str| {
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                tollgate_core::problem::CONTENT_TYPE,
                Content::new(Some(Ref::from_schema_name("Problem"))),
            )
            .build();
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| response.into());
    };
    // Every operation refuses a query parameter it does not take.
    add(
        "400",
        "Malformed request: invalid JSON, a query parameter the operation does not take (named in `field`), a value the database cannot store, or more than one Authorization header",
    );
    if let Some(roles) = &roles {
        add("401", "Missing or invalid token");
        if roles.iter().any(|r| r == "admin" || r == "owner") {
            add("403", "The admin's role is too low: `insufficient-role`");
        }
    }
    if in_path {
        add("404", "Nothing has this id or name");
    }
    if body {
        add(
            "408",
            "The request body did not arrive within `admin.header_timeout` (`request-timeout`; the connection is closed)",
        );
        add(
            "415",
            "The body is not JSON, or is sent with a Content-Encoding (none is decoded; see Accept-Encoding)",
        );
    }
    if in_query || body {
        add(
            "422",
            "A field is missing, unknown or invalid, or a query parameter is repeated or invalid (named in `field`)",
        );
    }
    if uses_db {
        add("503", "Database unavailable; see Retry-After");
    }
}

/// The roles of the operation's `bearer` requirement, if it accepts one (an
/// operation without its own requirement has the document's: `viewer`).
fn bearer_roles(op: &Operation) -> Option<Vec<String>> {
    let Some(security) = &op.security else {
        return Some(vec!["viewer".to_string()]);
    };
    let security = serde_json::to_value(security).ok()?;
    security
        .as_array()?
        .iter()
        .find_map(|req| req.get("bearer"))
        .and_then(|roles| serde_json::from_value(roles.clone()).ok())
}
