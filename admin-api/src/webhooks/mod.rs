//! `/api/webhooks`: the endpoints signed events are delivered to (list,
//! create — the only time the signing secret is shown —, read, patch,
//! delete), each endpoint's delivery log, and "send test event". The
//! delivery itself is [`worker`], a background task of every admin process
//! (which also enqueues `key.expiring`); the key handlers enqueue the other
//! key events through `tollgate_core::webhooks::enqueue_key_event`.

pub mod resolve;
mod views;
pub mod worker;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use tollgate_core::db::audit::diff;
use tollgate_core::webhooks::endpoints::{NewWebhook, WebhookPatch};
use tollgate_core::webhooks::{
    check_description, check_events, check_url, new_msg_id, WebhookFieldError, WEBHOOK_TEST,
};

use crate::auth::{audit, audit_changes, AuthAdmin, RequireAdmin};
use crate::error::{ApiError, ApiResult, ProblemDoc};
use crate::extract::{parse_id, ApiJson, ApiQuery, Paging, PathParam};
use crate::state::AppState;

pub use views::{
    AttemptView, CreateWebhook, DeliveryPage, DeliveryQuery, DeliveryView, PatchWebhook, TestEvent,
    WebhookView, WebhookWithSecret, DEFAULT_PER_PAGE, MAX_PER_PAGE,
};

fn notify() -> &'static tokio::sync::Notify {
    static N: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();
    N.get_or_init(tokio::sync::Notify::new)
}

/// Have the worker look for due deliveries now (an event was just
/// enqueued by this process).
pub fn wake() {
    notify().notify_one();
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/webhooks", get(list_webhooks).post(create_webhook))
        .route(
            "/api/webhooks/{id}",
            get(get_webhook).patch(patch_webhook).delete(delete_webhook),
        )
        .route("/api/webhooks/{id}/deliveries", get(list_deliveries))
        .route("/api/webhooks/{id}/test", post(send_test))
}

impl From<WebhookFieldError> for ApiError {
    fn from(e: WebhookFieldError) -> Self {
        ApiError::validation(e.field, e.message)
    }
}

fn no_webhook(id: i64) -> ApiError {
    ApiError::not_found(format!("no webhook endpoint with id {id}"))
}

fn audit_view(w: &WebhookView) -> Value {
    let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.remove("updated_at");
    }
    v
}

/// Every webhook endpoint (secrets are never listed).
#[utoipa::path(
    get,
    path = "/api/webhooks",
    tag = "webhooks",
    responses((status = 200, description = "Every endpoint, oldest first", body = Vec<WebhookView>)),
    security(("bearer" = ["viewer"]))
)]
pub async fn list_webhooks(
    auth: AuthAdmin,
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<WebhookView>>> {
    let all = state.db().list_webhooks().await?;
    Ok(Json(
        all.into_iter()
            .map(|e| WebhookView::for_role(e, auth.role))
            .collect(),
    ))
}

/// Add an endpoint. The response holds its signing secret (`whsec_…`), shown
/// only this once.
#[utoipa::path(
    post,
    path = "/api/webhooks",
    tag = "webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Created; `secret` is shown only this once", body = WebhookWithSecret,
            headers(("Location" = String, description = "/api/webhooks/{id}"))),
        (status = 422, description = "The URL or event filter is refused (named in `field`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn create_webhook(
    auth: RequireAdmin,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateWebhook>,
) -> ApiResult<impl IntoResponse> {
    let new = NewWebhook {
        url: check_url(&req.url)?,
        description: check_description(req.description)?,
        events: match req.events {
            // Left out: every event.
            None => vec!["*".to_string()],
            Some(events) => check_events(&events)?,
        },
        enabled: req.enabled.unwrap_or(true),
    };
    let created = state.db().create_webhook(&new).await?;
    let secret = created.secret.clone();
    let view = WebhookView::from(created);
    tracing::info!(by = %auth.username, webhook_id = view.id, "webhook endpoint created");
    audit(
        &state,
        auth.event("webhook.create")
            .target("webhook", view.id)
            .changes(diff(&Value::Null, &audit_view(&view))),
    )
    .await;
    let location = format!("/api/webhooks/{}", view.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(WebhookWithSecret {
            record: view,
            secret,
        }),
    ))
}

/// One endpoint.
#[utoipa::path(
    get,
    path = "/api/webhooks/{id}",
    tag = "webhooks",
    params(("id" = i64, Path, minimum = 1, description = "Endpoint id")),
    responses((status = 200, description = "The endpoint", body = WebhookView)),
    security(("bearer" = ["viewer"]))
)]
pub async fn get_webhook(
    auth: AuthAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<Json<WebhookView>> {
    let id = parse_id(&id)?;
    match state.db().get_webhook(id).await? {
        Some(w) => Ok(Json(WebhookView::for_role(w, auth.role))),
        None => Err(no_webhook(id)),
    }
}

/// Change an endpoint's URL, description, event filter or enabled flag.
#[utoipa::path(
    patch,
    path = "/api/webhooks/{id}",
    tag = "webhooks",
    params(("id" = i64, Path, minimum = 1, description = "Endpoint id")),
    request_body = PatchWebhook,
    responses(
        (status = 200, description = "The updated endpoint", body = WebhookView),
        (status = 422, description = "A field is refused (named in `field`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn patch_webhook(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    ApiJson(req): ApiJson<PatchWebhook>,
) -> ApiResult<Json<WebhookView>> {
    let id = parse_id(&id)?;
    let patch = WebhookPatch {
        url: req.url.as_deref().map(check_url).transpose()?,
        description: match req.description {
            Some(d) => Some(check_description(d)?),
            None => None,
        },
        events: req.events.as_deref().map(check_events).transpose()?,
        enabled: req.enabled,
    };
    let Some(before) = state.db().get_webhook(id).await? else {
        return Err(no_webhook(id));
    };
    let Some(after) = state.db().update_webhook(id, &patch).await? else {
        return Err(no_webhook(id));
    };
    let (before, after) = (WebhookView::from(before), WebhookView::from(after));
    audit_changes(
        &state,
        auth.event("webhook.update").target("webhook", id),
        diff(&audit_view(&before), &audit_view(&after)),
    )
    .await;
    Ok(Json(after))
}

/// Delete an endpoint with its delivery log; pending deliveries to it stop.
#[utoipa::path(
    delete,
    path = "/api/webhooks/{id}",
    tag = "webhooks",
    params(("id" = i64, Path, minimum = 1, description = "Endpoint id")),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = ["admin"]))
)]
pub async fn delete_webhook(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    let before = state.db().get_webhook(id).await?;
    if !state.db().delete_webhook(id).await? {
        return Err(no_webhook(id));
    }
    let changes = before
        .map(|b| diff(&audit_view(&WebhookView::from(b)), &Value::Null))
        .unwrap_or(Value::Null);
    audit(
        &state,
        auth.event("webhook.delete")
            .target("webhook", id)
            .changes(changes),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The delivery log of an endpoint: its deliveries, newest first, each with
/// its attempts (status code or error, duration).
#[utoipa::path(
    get,
    path = "/api/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = i64, Path, minimum = 1, description = "Endpoint id"), DeliveryQuery),
    responses((status = 200, description = "One page of deliveries", body = DeliveryPage)),
    security(("bearer" = ["viewer"]))
)]
pub async fn list_deliveries(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> ApiResult<Json<DeliveryPage>> {
    let id = parse_id(&id)?;
    if state.db().get_webhook(id).await?.is_none() {
        return Err(no_webhook(id));
    }
    let Paging {
        page,
        per_page,
        offset,
    } = Paging::new(q.page, q.per_page, DEFAULT_PER_PAGE);
    let (items, total) = state
        .db()
        .list_webhook_deliveries(id, per_page, offset)
        .await?;
    Ok(Json(DeliveryPage {
        items: items.into_iter().map(DeliveryView::from).collect(),
        total,
        page,
        per_page,
    }))
}

/// Send a `webhook.test` event to this endpoint (whatever its filter); it
/// shows in the delivery log like any other.
#[utoipa::path(
    post,
    path = "/api/webhooks/{id}/test",
    tag = "webhooks",
    params(("id" = i64, Path, minimum = 1, description = "Endpoint id")),
    responses(
        (status = 202, description = "Enqueued", body = TestEvent),
        (status = 409, description = "The endpoint is disabled", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn send_test(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<(StatusCode, Json<TestEvent>)> {
    let id = parse_id(&id)?;
    let Some(endpoint) = state.db().get_webhook(id).await? else {
        return Err(no_webhook(id));
    };
    if !endpoint.enabled {
        return Err(ApiError::Conflict(format!(
            "webhook endpoint {id} is disabled: enable it to send a test event"
        )));
    }
    // Each press is an event of its own.
    let occurrence = new_msg_id().map_err(|e| ApiError::internal(e.to_string()))?;
    let event_id = state
        .db()
        .enqueue_webhook_event(
            WEBHOOK_TEST,
            &id.to_string(),
            &occurrence,
            serde_json::json!({ "endpoint_id": id, "sent_by": auth.username }),
            Some(id),
        )
        .await?;
    wake();
    Ok((StatusCode::ACCEPTED, Json(TestEvent { event_id })))
}
