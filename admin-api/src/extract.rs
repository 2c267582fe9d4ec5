//! Request extractors whose rejections are [`ApiError`]s (problem+json), so
//! that malformed input is always a 400/415/422 naming the field, never axum's
//! plain-text rejection.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use utoipa::openapi::path::ParameterIn;
use utoipa::IntoParams;

use crate::error::ApiError;

/// A JSON request body. Unknown fields are refused by the target types
/// (`deny_unknown_fields`), which is how mass assignment is prevented.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// An optional JSON body: an empty body is `None`.
#[derive(Debug, Clone)]
pub struct MaybeJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match read_json::<S, T>(req, state).await? {
            Body::Value(v) => Ok(ApiJson(v)),
            Body::Empty => Err(ApiError::malformed(
                None,
                "the request body is empty: expected a JSON object",
            )),
            Body::Null => Err(ApiError::validation("body", "must be a JSON object")),
        }
    }
}

impl<S, T> FromRequest<S> for MaybeJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    /// No body, an empty one or JSON `null` (what the OpenAPI document calls
    /// an optional, nullable body) is `None`.
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match read_json::<S, T>(req, state).await? {
            Body::Value(v) => Ok(MaybeJson(Some(v))),
            Body::Empty | Body::Null => Ok(MaybeJson(None)),
        }
    }
}

enum Body<T> {
    Empty,
    Null,
    Value(T),
}

async fn read_json<S: Send + Sync, T: DeserializeOwned>(
    req: Request,
    state: &S,
) -> Result<Body<T>, ApiError> {
    check_content_type(req.headers())?;
    if let Some(coding) = tollgate_core::headers::content_coding(
        req.headers()
            .get_all(CONTENT_ENCODING)
            .iter()
            .map(|v| v.as_bytes()),
    ) {
        // Never decoded (no decompression layer: no zip bombs either), so
        // never parsed as if it were plain JSON.
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body is sent with Content-Encoding {coding:?}; this API reads request bodies as sent: send plain JSON without Content-Encoding"
        )));
    }
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(body_rejection)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Body::Empty);
    }
    // Every body of this API is an object (serde would also accept an
    // array for a struct, field by position).
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Tell malformed JSON (400) from a well-formed non-object (422).
        return match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Null) => Ok(Body::Null),
            Ok(_) => Err(ApiError::validation("body", "must be a JSON object")),
            Err(e) => Err(ApiError::malformed(None, format!("invalid JSON: {e}"))),
        };
    }
    parse_json(&bytes).map(Body::Value)
}

/// A body without `Content-Type` is read as JSON; any other type is refused.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "expected Content-Type: application/json, got {essence:?}"
        )))
    }
}

fn body_rejection(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(r.body_text())
    } else {
        ApiError::malformed(None, r.body_text())
    }
}

/// Deserialize JSON, turning serde's errors into 400 (syntax) or 422 (a field's
/// value, type, a missing or an unknown field), with the field's path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        json_error(&path, &inner)
    })?;
    de.end()
        .map_err(|e| ApiError::malformed(None, format!("invalid JSON: {e}")))?;
    Ok(value)
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::malformed(None, format!("invalid JSON: {e}"))
        }
        Category::Data => {
            let msg = strip_position(&e.to_string());
            let parent = if path == "." { "" } else { path };
            // Missing fields are reported at the parent's path: name the
            // field itself.
            let named = backticked(&msg)
                .filter(|_| msg.starts_with("unknown field") || msg.starts_with("missing field"));
            let field = match named {
                // serde_path_to_error already ends the path with an unknown key.
                Some(name) if parent == name || parent.ends_with(&format!(".{name}")) => {
                    parent.to_string()
                }
                Some(name) if parent.is_empty() => name.to_string(),
                Some(name) => format!("{parent}.{name}"),
                None if parent.is_empty() => "body".to_string(),
                None => parent.to_string(),
            };
            let detail = if msg.starts_with("unknown field") {
                match msg.split_once(", expected") {
                    Some((head, tail)) => {
                        format!(
                            "{head}: this field cannot be set (accepted: {})",
                            tail.trim_start_matches(" one of ").trim()
                        )
                    }
                    None => format!("{msg}: this field cannot be set"),
                }
            } else {
                msg
            };
            ApiError::validation(field, detail)
        }
    }
}

fn backticked(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

/// serde_json appends " at line L column C"; it means nothing to a client
/// that is told the field.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// A query string, deserialized into `T`. A parameter `T` does not document
/// (its [`IntoParams`]: the OpenAPI document's list) is a 400
/// `malformed-request` naming it, so a misspelt filter is never silently
/// "no filter"; any other problem is a 422 `validation-error` naming the
/// parameter: a value of the wrong type, out of range or empty where a
/// value is needed (the typed parameters are [`QueryInt`], [`QueryBool`]
/// and enums; an empty value is never taken as absent for them), or a
/// parameter given more than once. Text filters stay `Option<String>`: for
/// them an empty value means "no filter" (see [`text_filter`]).
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + IntoParams> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or("")).map(ApiQuery)
    }
}

/// Deserialize a raw query string (see [`ApiQuery`]).
pub fn parse_query<T: DeserializeOwned + IntoParams>(raw: &str) -> Result<T, ApiError> {
    let accepted: Vec<String> = T::into_params(|| Some(ParameterIn::Query))
        .into_iter()
        .map(|p| p.name)
        .collect();
    let mut seen = std::collections::HashSet::new();
    for (name, _) in form_urlencoded::parse(raw.as_bytes()) {
        if !accepted.iter().any(|a| *a == name) {
            return Err(unknown_parameter(&name, &accepted));
        }
        if !seen.insert(name.clone()) {
            return Err(ApiError::validation(
                name.into_owned(),
                "must be given at most once",
            ));
        }
    }
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        let field = match backticked(&msg) {
            Some(name) if path == "." || path.is_empty() => name.to_string(),
            _ if path == "." || path.is_empty() => "query".to_string(),
            _ => path,
        };
        let detail = match msg.split_once("expected one of ") {
            Some((head, tail)) if head.starts_with("unknown variant") => {
                format!("must be one of {}", tail.replace('`', ""))
            }
            _ => msg,
        };
        ApiError::validation(field, detail)
    })
}

/// A query parameter the endpoint does not take: 400 naming it (cut to 64
/// characters) with the ones it takes.
pub(crate) fn unknown_parameter(name: &str, accepted: &[String]) -> ApiError {
    let shown: String = name.chars().take(64).collect();
    let list = if accepted.is_empty() {
        "none".to_string()
    } else {
        accepted.join(", ")
    };
    ApiError::malformed(
        Some(&shown),
        format!("{shown}: unknown query parameter (this endpoint takes: {list})"),
    )
}

/// An integer query parameter from `MIN` to `MAX`: anything else, the empty
/// value included, is refused with "must be an integer from MIN to MAX".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryInt<const MIN: i64, const MAX: i64>(pub i64);

impl<const MIN: i64, const MAX: i64> QueryInt<MIN, MAX> {
    pub fn get(self) -> i64 {
        self.0
    }
}

impl<'de, const MIN: i64, const MAX: i64> serde::Deserialize<'de> for QueryInt<MIN, MAX> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<'de, str>::deserialize(d)?;
        match raw.parse::<i64>() {
            Ok(n) if (MIN..=MAX).contains(&n) => Ok(Self(n)),
            _ => Err(serde::de::Error::custom(format!(
                "must be an integer from {MIN} to {MAX}"
            ))),
        }
    }
}

/// One page of a list: `page` (1-based) of `per_page` rows, after `offset`
/// rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page: i64,
    pub per_page: i64,
    pub offset: i64,
}

impl Paging {
    /// From the `page` and `per_page` query parameters (defaults: the first
    /// page, `default_per_page` rows).
    pub fn new<const MAX_PAGE: i64, const MAX: i64>(
        page: Option<QueryInt<1, MAX_PAGE>>,
        per_page: Option<QueryInt<1, MAX>>,
        default_per_page: i64,
    ) -> Self {
        let page = page.map_or(1, QueryInt::get);
        let per_page = per_page.map_or(default_per_page, QueryInt::get);
        Self {
            page,
            per_page,
            offset: (page - 1) * per_page,
        }
    }
}

/// A boolean query parameter: `true`/`1` or `false`/`0`, nothing else (not
/// the empty value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryBool(pub bool);

impl<'de> serde::Deserialize<'de> for QueryBool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match &*std::borrow::Cow::<'de, str>::deserialize(d)? {
            "true" | "1" => Ok(Self(true)),
            "false" | "0" => Ok(Self(false)),
            _ => Err(serde::de::Error::custom("must be true or false")),
        }
    }
}

/// Up to `MAX` comma-separated positive ids (`1,2,3`), each once (a repeated
/// id is dropped), in the order given. Empty, anything but positive
/// integers, or more than `MAX` ids is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryIds<const MAX: usize>(pub Vec<i64>);

impl<'de, const MAX: usize> serde::Deserialize<'de> for QueryIds<MAX> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<'de, str>::deserialize(d)?;
        let refused =
            || serde::de::Error::custom(format!("must be 1 to {MAX} comma-separated positive ids"));
        let mut ids = Vec::new();
        for part in raw.split(',') {
            let id = part
                .parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(refused)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
            if ids.len() > MAX {
                return Err(refused());
            }
        }
        Ok(Self(ids))
    }
}

/// A free-text filter: empty is no filter; longer than `max` characters or
/// holding a control character (PostgreSQL cannot even compare a NUL) is a
/// 422 naming `field`.
pub fn text_filter(field: &str, v: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.chars().count() > max => Err(ApiError::validation(
            field,
            format!("must be at most {max} characters"),
        )),
        Some(s) if s.chars().any(char::is_control) => Err(ApiError::validation(
            field,
            "must not contain control characters",
        )),
        Some(s) if s.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// For `#[serde(default, deserialize_with = "present")]` on an
/// `Option<Option<T>>` field of a PATCH body: a field that is present
/// (possibly `null`) becomes `Some(…)`; an absent one stays `None`.
pub fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// For `#[serde(default, deserialize_with = "not_null")]` on an `Option<T>`
/// field of a PATCH body that cannot be cleared (a URL, a name, a flag): an
/// absent field stays `None` (unchanged), a value is `Some(…)`, and `null`
/// is refused (a 422 naming the field: "cannot be null"), never read as
/// "leave it alone". The field's schema must then not be nullable
/// (`#[schema(value_type = T)]`).
pub fn not_null<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    match <Option<T> as serde::Deserialize>::deserialize(d)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom("cannot be null")),
    }
}

/// The single path parameter of a route, as text (problem+json on rejection,
/// e.g. invalid percent-encoding): percent-decoded, except an `{id}`, which
/// is the segment as sent ([`id_as_sent`]).
#[derive(Debug, Clone)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let decoded = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| p.0)
            .map_err(|r| ApiError::malformed(None, r.body_text()))?;
        Ok(PathParam(id_as_sent(parts).unwrap_or(decoded)))
    }
}

/// The `{id}` segment of the request's path as sent, not percent-decoded
/// (an id is canonical decimal: `%31` is not `1`); `None` when the route
/// has no `{id}`.
pub fn id_as_sent(parts: &Parts) -> Option<String> {
    let route = parts.extensions.get::<axum::extract::MatchedPath>()?;
    let at = route.as_str().split('/').position(|s| s == "{id}")?;
    parts.uri.path().split('/').nth(at).map(str::to_string)
}

/// Parse an id from a path segment: canonical decimal (digits only, no
/// sign, no leading zero, no percent-encoding), from 1 to `i64::MAX`; a 400
/// naming `id` otherwise, so `+1`, `01` and `%31` never mean key 1.
pub fn parse_id(raw: &str) -> Result<i64, ApiError> {
    Some(raw)
        .filter(|r| !r.starts_with('0') && r.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|r| r.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            let shown: String = raw.chars().take(64).collect();
            ApiError::malformed(Some("id"), format!("{shown:?} is not a valid id"))
        })
}

/// The TCP peer's address (no forwarded headers are trusted), when the server
/// was started with connect info (as [`crate::serve`] does).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ci| ci.0.ip()),
        ))
    }
}
#[cfg(test)]
mod tests;
