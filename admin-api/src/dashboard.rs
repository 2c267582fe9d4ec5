//! The browser dashboard and the admin `/metrics` endpoint.
//!
//! The files of `dashboard/` are embedded in the binary (rust-embed) and
//! served at `/`:
//! - `GET /` and the dashboard's own page paths (`/login`, `/keys`,
//!   `/monitoring`, …: any extension-less path a browser navigates to) answer
//!   `index.html`; the page script routes on the path (SPA fallback).
//! - Every other path is a file of `dashboard/`, or the API's problem+json 404.
//!   Nothing under `/api` is ever answered here.
//! - Caching: `vendor/` holds third-party files in version-named folders, so
//!   they are `immutable` for a year; everything else is `no-cache` (always
//!   revalidated) with a strong `ETag` from the file's SHA-256, answered with
//!   304 when unchanged.
//! - Every answer carries a Content-Security-Policy that allows only this
//!   origin's scripts and styles (no inline script, no inline event handlers,
//!   no `eval`), `frame-ancestors 'none'`, `X-Frame-Options: DENY`,
//!   `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use rust_embed::RustEmbed;

use crate::error::{method_not_allowed, not_found, ApiError};
use crate::state::AppState;

#[derive(RustEmbed)]
#[folder = "../dashboard/"]
struct Assets;

/// The Content-Security-Policy of every dashboard response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Cache lifetime of files under `vendor/` (version-named, never change).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else: cache, but revalidate (ETag) before every use.
const REVALIDATE: &str = "no-cache";

/// The dashboard's page registry, the one place a page is added.
const PAGE_REGISTRY: &str = "js/pages/index.js";

/// Client-side routes that always answer `index.html`, whatever `Accept`
/// says: the first segment of every `path: '/…'` of [`PAGE_REGISTRY`].
fn pages() -> &'static [String] {
    static PAGES: OnceLock<Vec<String>> = OnceLock::new();
    PAGES.get_or_init(|| {
        Assets::get(PAGE_REGISTRY)
            .map(|f| page_paths(&String::from_utf8_lossy(&f.data)))
            .unwrap_or_default()
    })
}

/// The first segments of the `path: '/…'` values of the registry's source
/// (not the root).
fn page_paths(js: &str) -> Vec<String> {
    js.split("path: '/")
        .skip(1)
        .filter_map(|rest| rest.split(['\'', '/']).next())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// `/`, `/metrics` and every non-`/api` path. Merge into the API router
/// before `with_state` (it sets no fallback of its own).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/{*path}", any(asset_or_page))
}

async fn index(headers: HeaderMap) -> Response {
    serve_file("index.html", &headers).unwrap_or_else(missing_index)
}

async fn asset_or_page(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path == "api" || path.starts_with("api/") {
        return not_found(uri).await.into_response();
    }
    let is_file = Assets::get(path).is_some();
    let is_page = is_page_path(path, &headers);
    if !is_file && !is_page {
        return not_found(uri).await.into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed(method, uri).await.into_response();
    }
    let file = if is_file { path } else { "index.html" };
    serve_file(file, &headers).unwrap_or_else(missing_index)
}

/// A path the page script handles: one of [`pages`] (optionally with more
/// segments, e.g. `keys/12`), or any extension-less path a browser asks an
/// HTML page for.
fn is_page_path(path: &str, headers: &HeaderMap) -> bool {
    let first = path.split('/').next().unwrap_or("");
    if pages().iter().any(|p| p == first) {
        return true;
    }
    let last = path.rsplit('/').next().unwrap_or("");
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    wants_html && !last.contains('.')
}

fn missing_index() -> Response {
    ApiError::internal("the dashboard's index.html is not embedded in this build").into_response()
}

/// The embedded file at `path` with its headers, or 304 if the client's
/// `If-None-Match` names the current version. `None` if there is no such file.
fn serve_file(path: &str, headers: &HeaderMap) -> Option<Response> {
    let file = Assets::get(path)?;
    let hash = file.metadata.sha256_hash();
    let etag = format!("\"{}\"", hex::encode(&hash[..16]));
    let cache = if path.starts_with("vendor/") {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Body::empty())
    } else {
        (StatusCode::OK, Body::from(file.data.into_owned()))
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    if !not_modified {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    security_headers(h);
    Some(res)
}

/// The headers every dashboard answer carries.
fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

/// The content type of an embedded file, by extension.
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" | "md" => "text/plain; charset=utf-8",
        // LICENSE, README
        "" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

// ---------------------------------------------------------------------------
// /metrics

/// `tollgate_admin_build_info{version}` (always 1) and the admin API's start
/// time, registered once in the default registry.
fn register_admin_metrics(started_at_ms: i64) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let info = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "tollgate_admin_build_info",
                "The admin API's version (always 1)",
            ),
            &["version"],
        );
        let start = prometheus::Gauge::new(
            "tollgate_admin_start_time_seconds",
            "When the admin API started, Unix seconds",
        );
        match (info, start) {
            (Ok(info), Ok(start)) => {
                info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
                #[allow(clippy::cast_precision_loss)]
                start.set(started_at_ms as f64 / 1000.0);
                for c in [
                    Box::new(info) as Box<dyn prometheus::core::Collector>,
                    Box::new(start),
                ] {
                    if let Err(e) = prometheus::register(c) {
                        tracing::debug!(error = %e, "admin metric already registered");
                    }
                }
            }
            (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "cannot create admin metrics"),
        }
    });
}

/// `GET /metrics`: every metric of the process's default Prometheus registry
/// (in `tollgate dev` that includes the proxy's), in the text format.
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    use prometheus::Encoder;
    register_admin_metrics(state.started_at());
    let encoder = prometheus::TextEncoder::new();
    let mut buf = Vec::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut buf) {
        return ApiError::internal(format!("encoding metrics: {e}")).into_response();
    }
    let mut res = Response::new(Body::from(buf));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_is_embedded() {
        assert!(Assets::get("index.html").is_some());
        assert!(Assets::iter().any(|p| p.starts_with("vendor/")));
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("a/b.CSS"), "text/css; charset=utf-8");
        assert_eq!(
            content_type("vendor/x/LICENSE"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type("x.bin"), "application/octet-stream");
    }

    #[test]
    fn the_pages_come_from_the_registry() {
        for page in [
            "login",
            "overview",
            "keys",
            "monitoring",
            "audit",
            "webhooks",
            "identities",
        ] {
            assert!(pages().iter().any(|p| p == page), "{page}: {:?}", pages());
        }
        assert_eq!(
            super::page_paths("{ path: '/', x }, { path: '/a' }, {path: '/b/c'}"),
            ["a", "b"]
        );
    }

    #[test]
    fn page_paths() {
        let none = HeaderMap::new();
        let mut html = HeaderMap::new();
        html.insert(header::ACCEPT, HeaderValue::from_static("text/html,*/*"));
        assert!(is_page_path("keys", &none));
        assert!(is_page_path("keys/3", &none));
        assert!(!is_page_path("whatever", &none));
        assert!(is_page_path("whatever", &html));
        assert!(!is_page_path("missing.js", &html));
    }
}
