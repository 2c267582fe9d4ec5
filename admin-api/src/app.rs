//! The admin app: every route (one `router()` per resource), the
//! problem+json fallbacks, `Cache-Control: no-store`, the request and body
//! deadlines ([`crate::deadline`]),
//! and [`serve`], which runs it on a listener.

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::error::{method_not_allowed, not_found};
use crate::state::AppState;
use crate::{
    admins, analytics, audit, dashboard, deadline, health, identities, keys, listener, login,
    openapi, password, plans, query_guard, quotas, refills, service_tokens, usage_export, webhooks,
};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The whole admin API router (every `/api` route, problem+json fallbacks).
pub fn app(state: AppState) -> Router {
    api_router()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            deadline::deadline,
        ))
        .merge(dashboard::router())
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(no_store))
        .layer(TraceLayer::new_for_http())
}

/// Every `/api` route without state, so other routers (the dashboard) can be
/// merged in before [`Router::with_state`]; [`app`] puts the request and body
/// deadlines ([`deadline`]) around them.
pub fn api_router() -> Router<AppState> {
    Router::new()
        .merge(login::router())
        .merge(admins::router())
        .merge(keys::router())
        .merge(identities::router())
        .merge(refills::router())
        .merge(quotas::router())
        .merge(plans::router())
        .merge(service_tokens::router())
        .merge(analytics::router())
        .merge(usage_export::router())
        .merge(webhooks::router())
        .merge(health::router())
        .merge(audit::router())
        .merge(openapi::router())
        // After every route is merged: a new endpoint gets it too.
        .route_layer(axum::middleware::from_fn(query_guard::refuse_unknown))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// `Cache-Control: no-store` on every `/api` answer: tokens, new keys and
/// admin data must never sit in a browser or proxy cache.
async fn no_store(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let api = req.uri().path().starts_with("/api");
    let mut res = next.run(req).await;
    if api {
        res.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
    }
    res
}

/// Serve the admin API on `listener` until `shutdown` completes, then finish
/// the requests in flight: header and idle timeouts, `admin.max_connections`
/// and `max_connections_per_ip`,
/// the `Host` allow-list (see [`listener`]) and the audit retention task.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = state.config();
    let live = state.listener_options();
    let retention = audit::spawn_retention(state.clone());
    let deliveries = webhooks::worker::spawn(state.clone());
    // The hash unknown usernames are checked against: computed once, off
    // the async workers, before the first login needs it.
    tokio::task::spawn_blocking(|| {
        let _ = password::dummy_hash();
    });
    let spans = tollgate_telemetry::from_config(&config.telemetry, "tollgate-admin");
    let mut app = app(state);
    if let Some(spans) = &spans {
        app = app.layer(axum::middleware::from_fn_with_state(
            spans.clone(),
            crate::spans::record,
        ));
    }
    let app = app.layer(axum::middleware::from_fn_with_state(
        live.clone(),
        listener::check_host,
    ));
    let result = listener::serve(listener, app, live, shutdown).await;
    retention.abort();
    deliveries.abort();
    if spans.is_some() {
        let _ = tokio::task::spawn_blocking(move || tollgate_telemetry::stop(spans.as_ref())).await;
    }
    result
}
