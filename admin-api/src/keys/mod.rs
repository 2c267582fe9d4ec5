//! `/api/keys`: create (the only time the full key is shown), list (paged,
//! filtered), read, patch, rotate and delete API keys.

mod credits;
mod requests;

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use tollgate_core::db::{ApiKey, KeyFilter, KeyPatch, NewApiKey};

use crate::auth::{audit, audit_changes, AuthAdmin, RequireAdmin};
use crate::bodies::KeyView;
use crate::error::{ApiError, ApiResult, ProblemDoc};
use crate::extract::{
    parse_id, text_filter, ApiJson, ApiQuery, MaybeJson, Paging, PathParam, QueryInt,
};
use crate::rules::limits_from_body;
use crate::state::AppState;

pub use requests::{
    CreateKey, KeyListQuery, KeyPage, KeyState, KeyWithSecret, PatchKeyRequest, RotateKey,
    DEFAULT_PER_PAGE, MAX_PER_PAGE,
};
use tollgate_core::db::audit::diff;
use tollgate_core::rules::keys as key_rules;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/keys", get(list_keys).post(create_key))
        .route(
            "/api/keys/{id}",
            get(get_key).patch(patch_key).delete(delete_key),
        )
        .route("/api/keys/{id}/rotate", post(rotate_key))
        .route("/api/keys/{id}/credits", post(credits::add_credits))
}

pub use credits::*;

/// List keys, paged and filtered.
#[utoipa::path(
    get,
    path = "/api/keys",
    tag = "keys",
    params(KeyListQuery),
    responses(
        (status = 200, description = "One page of keys, newest first", body = KeyPage),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn list_keys(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<KeyListQuery>,
) -> ApiResult<Json<KeyPage>> {
    let (filter, page, per_page) = key_filter(q)?;
    list_page(&state, &filter, page, per_page).await
}

/// The filter and page of a key list query, checked (the keys list and an
/// identity's keys both take it).
pub(crate) fn key_filter(q: KeyListQuery) -> ApiResult<(KeyFilter, i64, i64)> {
    let Paging {
        page,
        per_page,
        offset,
    } = Paging::new(q.page, q.per_page, DEFAULT_PER_PAGE);
    let mut enabled = q.enabled.map(|b| b.0);
    if let Some(s) = q.state {
        let from_state = s == KeyState::Enabled;
        if enabled.is_some_and(|e| e != from_state) {
            return Err(ApiError::validation(
                "state",
                "contradicts the enabled parameter",
            ));
        }
        enabled = Some(from_state);
    }
    // Filters are text like the names they match: no control characters
    // (PostgreSQL cannot even compare a NUL), no longer than a name.
    let filter = KeyFilter {
        name: text_filter("name", q.name, key_rules::MAX_TEXT)?,
        plan: text_filter("plan", q.plan, key_rules::MAX_TEXT)?,
        enabled,
        identity_id: q.identity_id.map(QueryInt::get),
        limit: per_page,
        offset,
    };
    Ok((filter, page, per_page))
}

/// One page of keys.
pub(crate) async fn list_page(
    state: &AppState,
    filter: &KeyFilter,
    page: i64,
    per_page: i64,
) -> ApiResult<Json<KeyPage>> {
    let (items, total) = state.db().list_keys(filter).await?;
    Ok(Json(KeyPage {
        items: items.into_iter().map(KeyView::from).collect(),
        total,
        page,
        per_page,
    }))
}

/// 422 naming `plan` unless the plan is in the YAML config or the plans table.
pub(crate) async fn check_plan(state: &AppState, plan: &str) -> ApiResult<()> {
    if crate::rules::plan_exists(state, plan).await? {
        return Ok(());
    }
    let stored = state.db().list_plans().await?;
    let config = state.config();
    let message = key_rules::unknown_key_plan(
        plan,
        config.plans.keys(),
        stored.iter().map(|p| p.name.as_str()),
    );
    Err(ApiError::validation("plan", message))
}

/// Create a key. The response is the only place the full key ever appears.
#[utoipa::path(
    post,
    path = "/api/keys",
    tag = "keys",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created; `key` holds the full key, shown only this once", body = KeyWithSecret,
            headers(("Location" = String, description = "/api/keys/{id}"))),
        (status = 422, description = "A field is missing, unknown or invalid, or the plan does not exist (named in `field`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn create_key(
    auth: RequireAdmin,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    let limits = match &req.limits {
        Some(ls) => Some(limits_from_body("limits", ls)?),
        None => None,
    };
    let mut new = NewApiKey {
        name: req.name,
        owner: req.owner,
        metadata: req.metadata,
        plan: req.plan,
        limits,
        concurrency: req.concurrency,
        expires_at: req.expires_at,
        scopes: req.scopes.map(Into::into),
        allowed_ips: req.allowed_ips,
        identity_id: req.identity_id,
    };
    key_rules::normalise_access(&mut new.scopes, &mut new.allowed_ips)?;
    key_rules::check_new_key(&new, tollgate_core::now_ms())?;
    if let Some(plan) = &new.plan {
        check_plan(&state, plan).await?;
    }
    if let Some(identity) = new.identity_id {
        crate::rules::check_identity_exists(&state, identity).await?;
    }
    new.name = key_rules::normalise_name(&new.name);
    let (key, plain) = state.db().create_key(&new).await?;
    tracing::info!(by = %auth.username, key_id = key.id, "API key created");
    audit(
        &state,
        auth.event("key.create")
            .target("key", key.id)
            .changes(diff(&Value::Null, &audit_view(&key))),
    )
    .await;
    let location = format!("/api/keys/{}", key.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(KeyWithSecret {
            record: key.into(),
            key: plain,
        }),
    ))
}

/// One key.
#[utoipa::path(
    get,
    path = "/api/keys/{id}",
    tag = "keys",
    params(("id" = i64, Path, minimum = 1, description = "Key id")),
    responses(
        (status = 200, description = "The key record", body = KeyView),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn get_key(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<Json<KeyView>> {
    let id = parse_id(&id)?;
    match state.db().get_key(id).await? {
        Some(k) => Ok(Json(k.into())),
        None => Err(no_key(id)),
    }
}

/// A key as the audit log compares it: its record without the fields that
/// change by themselves (`updated_at`, `last_used_at`).
fn audit_view(k: &ApiKey) -> Value {
    let mut v = serde_json::to_value(KeyView::from(k.clone())).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.remove("updated_at");
        m.remove("last_used_at");
    }
    v
}

/// Enqueue a webhook event about a key (the admin process's delivery
/// worker picks it up within its tick). A failure is logged: the change
/// it reports stands.
async fn key_event(state: &AppState, event_type: &str, key: &ApiKey) {
    if let Err(e) = tollgate_core::webhooks::enqueue_key_event(state.db(), event_type, key).await {
        tracing::error!(event = event_type, key_id = key.id, error = %e, "cannot enqueue a webhook event");
    }
}

fn no_key(id: i64) -> ApiError {
    ApiError::not_found(format!("no API key with id {id}"))
}

/// Change a key: rename, owner, metadata, plan or limits, concurrency,
/// enable/disable, expiry. A running proxy applies the change within 1 s.
#[utoipa::path(
    patch,
    path = "/api/keys/{id}",
    tag = "keys",
    params(("id" = i64, Path, minimum = 1, description = "Key id")),
    request_body = PatchKeyRequest,
    responses(
        (status = 200, description = "The updated key record", body = KeyView),
        (status = 422, description = "A field is unknown or invalid, or the plan does not exist (named in `field`)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The key holds credits of its own and cannot change identity (`conflict`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn patch_key(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    ApiJson(req): ApiJson<PatchKeyRequest>,
) -> ApiResult<Json<KeyView>> {
    let id = parse_id(&id)?;
    let mut patch = KeyPatch {
        name: req.name,
        enabled: req.enabled,
        ..KeyPatch::default()
    };
    patch.owner = req.owner;
    patch.metadata = req
        .metadata
        .map(|m| m.unwrap_or_else(|| Value::Object(Default::default())));
    if let Some(limits) = req.limits {
        patch.limits = Some(match limits {
            Some(ls) => Some(limits_from_body("limits", &ls)?),
            None => None,
        });
    }
    patch.concurrency = req.concurrency;
    patch.expires_at = req.expires_at;
    patch.plan = req.plan;
    if let Some(scopes) = req.scopes {
        let mut scopes = scopes.map(Into::into);
        key_rules::normalise_access(&mut scopes, &mut None)?;
        patch.scopes = Some(scopes);
    }
    if let Some(mut ips) = req.allowed_ips {
        key_rules::normalise_access(&mut None, &mut ips)?;
        patch.allowed_ips = Some(ips);
    }
    key_rules::check_patch(&patch)?;
    if let Some(Some(p)) = &patch.plan {
        check_plan(&state, p).await?;
    }
    if let Some(identity) = req.identity_id {
        if let Some(i) = identity {
            crate::rules::check_identity_exists(&state, i).await?;
        }
        patch.identity_id = Some(identity);
    }
    patch.name = patch.name.as_deref().map(key_rules::normalise_name);
    let Some(before) = state.db().get_key(id).await? else {
        return Err(no_key(id));
    };
    if patch.changes_nothing(&before) {
        return Ok(Json(before.into()));
    }
    if patch
        .identity_id
        .is_some_and(|identity| identity != before.identity_id)
    {
        check_no_own_credits(&state, id).await?;
    }
    match state.db().update_key(id, &patch).await? {
        Some(k) => {
            tracing::info!(by = %auth.username, key_id = id, "API key updated");
            let changes = diff(&audit_view(&before), &audit_view(&k));
            let only_enabled = changes
                .as_object()
                .is_some_and(|m| m.len() == 1 && m.contains_key("enabled"));
            let action = match (only_enabled, k.enabled) {
                (true, true) => "key.enable",
                (true, false) => "key.disable",
                _ => "key.update",
            };
            audit_changes(&state, auth.event(action).target("key", id), changes).await;
            if before.enabled && !k.enabled {
                key_event(&state, tollgate_core::webhooks::KEY_DISABLED, &k).await;
            }
            Ok(Json(k.into()))
        }
        None => Err(no_key(id)),
    }
}

/// Delete a key; the proxy refuses it within 1 s.
#[utoipa::path(
    delete,
    path = "/api/keys/{id}",
    tag = "keys",
    params(("id" = i64, Path, minimum = 1, description = "Key id")),
    responses(
        (status = 204, description = "Deleted"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn delete_key(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    let before = state.db().get_key(id).await?;
    if state.db().delete_key(id).await? {
        tracing::info!(by = %auth.username, key_id = id, "API key deleted");
        if let Some(b) = &before {
            key_event(&state, tollgate_core::webhooks::KEY_DELETED, b).await;
        }
        let changes = before
            .map(|b| diff(&audit_view(&b), &Value::Null))
            .unwrap_or(Value::Null);
        audit(
            &state,
            auth.event("key.delete").target("key", id).changes(changes),
        )
        .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_key(id))
    }
}

/// Issue a new secret for the same key id. The old secret stays valid for
/// `grace_seconds` (default 0: refused at once). The body may be omitted.
#[utoipa::path(
    post,
    path = "/api/keys/{id}/rotate",
    tag = "keys",
    params(("id" = i64, Path, minimum = 1, description = "Key id")),
    request_body(content = Option<RotateKey>, description = "Optional; `{}` or no body means no grace period"),
    responses(
        (status = 200, description = "The key record and its new full key, shown only this once", body = KeyWithSecret),
        (status = 422, description = "grace_seconds is invalid", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn rotate_key(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    MaybeJson(req): MaybeJson<RotateKey>,
) -> ApiResult<Json<KeyWithSecret>> {
    let id = parse_id(&id)?;
    let grace = req.and_then(|r| r.grace_seconds).unwrap_or(0);
    key_rules::check_grace(Duration::from_secs(grace))
        .map_err(|m| ApiError::validation("grace_seconds", m))?;
    let before_prefix = state.db().get_key(id).await?.map(|k| k.key_prefix);
    match state
        .db()
        .rotate_key(id, Duration::from_secs(grace))
        .await?
    {
        Some((key, plain)) => {
            tracing::info!(by = %auth.username, key_id = id, grace_seconds = grace, "API key rotated");
            audit(
                &state,
                auth.event("key.rotate")
                    .target("key", id)
                    .changes(serde_json::json!({
                        "key_prefix": {"before": before_prefix, "after": key.key_prefix},
                        "grace_seconds": {"before": null, "after": grace},
                    })),
            )
            .await;
            key_event(&state, tollgate_core::webhooks::KEY_ROTATED, &key).await;
            Ok(Json(KeyWithSecret {
                record: key.into(),
                key: plain,
            }))
        }
        None => Err(no_key(id)),
    }
}

/// 409 if the key holds credits of its own. Its balance is kept with its
/// identity's (one Redis hash tag, so one script spends both): moving the key
/// would start a fresh balance elsewhere and apply its top-ups again
/// (black-box round 3, B14). Create a new key in the other identity instead.
async fn check_no_own_credits(state: &AppState, id: i64) -> ApiResult<()> {
    let held = state
        .db()
        .credits_granted(tollgate_core::credits::SubjectKind::Key, id)
        .await?;
    match held {
        None => Ok(()),
        Some(_) => Err(ApiError::Conflict(format!(
            "key {id} holds credits of its own: it cannot change identity \
             (its balance stays where its top-ups were applied); create a new key instead"
        ))),
    }
}
