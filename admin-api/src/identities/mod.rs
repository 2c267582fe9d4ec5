//! `/api/identities`: identities (a customer, a tenant) owning any number of
//! keys; create, list (paged, searched), read, patch, delete, and their keys.
//! A key joins one with `identity_id` on `POST`/`PATCH /api/keys`.

mod credits;
mod requests;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use tollgate_core::db::{Identity, IdentityFilter, IdentityPatch, NewIdentity};
use tollgate_core::rules::identities as identity_rules;

use crate::auth::{audit, audit_changes, AuthAdmin, RequireAdmin};
use crate::error::{ApiError, ApiResult, ProblemDoc};
use crate::extract::{parse_id, text_filter, ApiJson, ApiQuery, Paging, PathParam};
use crate::keys::{check_plan, KeyListQuery, KeyPage};
use crate::rules::limits_from_body;
use crate::state::AppState;
use tollgate_core::db::audit::diff;

pub use credits::*;
pub use requests::{
    CreateIdentity, IdentityListQuery, IdentityPage, IdentityView, PatchIdentity, DEFAULT_PER_PAGE,
    MAX_PER_PAGE,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/identities",
            get(list_identities).post(create_identity),
        )
        .route(
            "/api/identities/{id}",
            get(get_identity)
                .patch(patch_identity)
                .delete(delete_identity),
        )
        .route("/api/identities/{id}/keys", get(identity_keys))
        .route(
            "/api/identities/{id}/credits",
            post(credits::add_identity_credits),
        )
}

fn no_identity(id: i64) -> ApiError {
    ApiError::not_found(format!("no identity with id {id}"))
}

fn audit_view(i: &Identity) -> Value {
    let mut v = serde_json::to_value(IdentityView::from(i.clone())).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.remove("updated_at");
    }
    v
}

/// List identities, paged, optionally searched.
#[utoipa::path(
    get,
    path = "/api/identities",
    tag = "identities",
    params(IdentityListQuery),
    responses(
        (status = 200, description = "One page of identities, by id", body = IdentityPage),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn list_identities(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<IdentityListQuery>,
) -> ApiResult<Json<IdentityPage>> {
    let Paging {
        page,
        per_page,
        offset,
    } = Paging::new(q.page, q.per_page, DEFAULT_PER_PAGE);
    let filter = IdentityFilter {
        search: text_filter("search", q.search, 200)?,
        limit: per_page,
        offset,
    };
    let (items, total) = state.db().list_identities(&filter).await?;
    Ok(Json(IdentityPage {
        items: items.into_iter().map(IdentityView::from).collect(),
        total,
        page,
        per_page,
    }))
}

/// Create an identity.
#[utoipa::path(
    post,
    path = "/api/identities",
    tag = "identities",
    request_body = CreateIdentity,
    responses(
        (status = 201, description = "Created", body = IdentityView,
            headers(("Location" = String, description = "/api/identities/{id}"))),
        (status = 409, description = "The external_id is taken", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing, unknown or invalid, or the plan does not exist (named in `field`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn create_identity(
    auth: RequireAdmin,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateIdentity>,
) -> ApiResult<impl IntoResponse> {
    let limits = match &req.limits {
        Some(ls) => Some(limits_from_body("limits", ls)?),
        None => None,
    };
    let mut new = NewIdentity {
        external_id: req.external_id,
        name: req.name,
        metadata: req.metadata,
        plan: req.plan,
        limits,
    };
    identity_rules::check_new_identity(&new)?;
    new.name = identity_rules::normalise_name(&new.name);
    if let Some(plan) = &new.plan {
        check_plan(&state, plan).await?;
    }
    let identity = state.db().create_identity(&new).await?;
    tracing::info!(by = %auth.username, identity_id = identity.id, "identity created");
    audit(
        &state,
        auth.event("identity.create")
            .target("identity", identity.id)
            .changes(diff(&Value::Null, &audit_view(&identity))),
    )
    .await;
    let location = format!("/api/identities/{}", identity.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(IdentityView::from(identity)),
    ))
}

/// One identity.
#[utoipa::path(
    get,
    path = "/api/identities/{id}",
    tag = "identities",
    params(("id" = i64, Path, minimum = 1, description = "Identity id")),
    responses(
        (status = 200, description = "The identity", body = IdentityView),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn get_identity(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<Json<IdentityView>> {
    let id = parse_id(&id)?;
    let Some(identity) = state.db().get_identity(id).await? else {
        return Err(no_identity(id));
    };
    let mut view = IdentityView::from(identity);
    view.credits_granted = state
        .db()
        .credits_granted(tollgate_core::credits::SubjectKind::Identity, id)
        .await?;
    Ok(Json(view))
}

/// Change an identity. Running proxies apply the change within 1 s.
#[utoipa::path(
    patch,
    path = "/api/identities/{id}",
    tag = "identities",
    params(("id" = i64, Path, minimum = 1, description = "Identity id")),
    request_body = PatchIdentity,
    responses(
        (status = 200, description = "The updated identity", body = IdentityView),
        (status = 409, description = "The external_id is taken", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is unknown or invalid, or the plan does not exist (named in `field`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn patch_identity(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    ApiJson(req): ApiJson<PatchIdentity>,
) -> ApiResult<Json<IdentityView>> {
    let id = parse_id(&id)?;
    let mut patch = IdentityPatch {
        external_id: req.external_id,
        name: req.name,
        ..IdentityPatch::default()
    };
    patch.metadata = req
        .metadata
        .map(|m| m.unwrap_or_else(|| Value::Object(Default::default())));
    patch.plan = req.plan;
    if let Some(limits) = req.limits {
        patch.limits = Some(match limits {
            Some(ls) => Some(limits_from_body("limits", &ls)?),
            None => None,
        });
    }
    identity_rules::check_identity_patch(&patch)?;
    patch.name = patch.name.as_deref().map(identity_rules::normalise_name);
    if let Some(Some(p)) = &patch.plan {
        check_plan(&state, p).await?;
    }
    let Some(before) = state.db().get_identity(id).await? else {
        return Err(no_identity(id));
    };
    if patch.changes_nothing(&before) {
        return Ok(Json(before.into()));
    }
    match state.db().update_identity(id, &patch).await? {
        Some(i) => {
            tracing::info!(by = %auth.username, identity_id = id, "identity updated");
            audit_changes(
                &state,
                auth.event("identity.update").target("identity", id),
                diff(&audit_view(&before), &audit_view(&i)),
            )
            .await;
            Ok(Json(i.into()))
        }
        None => Err(no_identity(id)),
    }
}

/// Delete an identity; its keys stay, detached (their own or plan limits apply).
#[utoipa::path(
    delete,
    path = "/api/identities/{id}",
    tag = "identities",
    params(("id" = i64, Path, minimum = 1, description = "Identity id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "Keys of the identity hold credits of their own (`conflict`)", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn delete_identity(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    let before = state.db().get_identity(id).await?;
    let holding = state.db().identity_keys_with_own_credits(id).await?;
    if !holding.is_empty() {
        return Err(ApiError::Conflict(
            tollgate_core::credits::identity_in_use_by_credits(id, &holding),
        ));
    }
    if state.db().delete_identity(id).await? {
        tracing::info!(by = %auth.username, identity_id = id, "identity deleted");
        let changes = before
            .map(|b| diff(&audit_view(&b), &Value::Null))
            .unwrap_or(Value::Null);
        audit(
            &state,
            auth.event("identity.delete")
                .target("identity", id)
                .changes(changes),
        )
        .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_identity(id))
    }
}

/// The keys of one identity, paged like `GET /api/keys`.
#[utoipa::path(
    get,
    path = "/api/identities/{id}/keys",
    tag = "identities",
    params(("id" = i64, Path, minimum = 1, description = "Identity id"), KeyListQuery),
    responses(
        (status = 200, description = "One page of its keys", body = KeyPage),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn identity_keys(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    ApiQuery(q): ApiQuery<KeyListQuery>,
) -> ApiResult<Json<KeyPage>> {
    let id = parse_id(&id)?;
    if state.db().get_identity(id).await?.is_none() {
        return Err(no_identity(id));
    }
    // The keys list's filters, checked the same way, within this identity.
    let (mut filter, page, per_page) = crate::keys::key_filter(q)?;
    filter.identity_id = Some(id);
    crate::keys::list_page(&state, &filter, page, per_page).await
}
