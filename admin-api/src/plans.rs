//! `/api/plans`: plans from the YAML config (read-only, `source: "config"`)
//! and plans created through the API (stored in the `plans` table,
//! `source: "api"`, editable; one in use by a key cannot be deleted).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tollgate_core::db::plans::StoredPlan;
use tollgate_core::rules::limits::{self as limit_rules, is_plan_name};
use utoipa::ToSchema;

use crate::auth::{audit, audit_changes, AuthAdmin, RequireAdmin};
use crate::bodies::LimitBody;
use crate::error::{ApiError, ApiResult, ProblemDoc};
use crate::extract::{not_null, present, ApiJson, PathParam};
use crate::rules::limits_from_body;
use crate::state::AppState;
use tollgate_core::db::audit::diff;

/// Where a plan is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlanSource {
    /// The YAML config: read-only here.
    Config,
    /// Created through this API: editable.
    Api,
}

/// A plan as the audit log compares it (without `updated_at`).
fn audit_view(p: &PlanView) -> serde_json::Value {
    let mut v = serde_json::to_value(p).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("updated_at");
    }
    v
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanView {
    #[schema(example = "free")]
    pub name: String,
    pub limits: Vec<LimitBody>,
    /// Maximum in-flight requests per key.
    pub concurrency: Option<u32>,
    pub source: PlanSource,
    /// `true` for plans from the config.
    pub read_only: bool,
    /// Unix ms (API plans only).
    pub created_at: Option<i64>,
    /// Unix ms (API plans only).
    pub updated_at: Option<i64>,
}

impl PlanView {
    fn from_config(p: &tollgate_core::config::Plan) -> Self {
        Self {
            name: p.name.clone(),
            limits: p.limits.iter().map(LimitBody::from).collect(),
            concurrency: p.concurrency,
            source: PlanSource::Config,
            read_only: true,
            created_at: None,
            updated_at: None,
        }
    }

    fn from_stored(p: StoredPlan) -> Self {
        Self {
            limits: p.limits.iter().map(LimitBody::from).collect(),
            name: p.name,
            concurrency: p.concurrency,
            source: PlanSource::Api,
            read_only: false,
            created_at: Some(p.created_at),
            updated_at: Some(p.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    /// 1–64 characters of `A-Z a-z 0-9 . _ -`, not a name the config uses.
    #[schema(
        example = "partner",
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._-]+$"
    )]
    pub name: String,
    /// At most 16; none for a plan with only a concurrency cap (or none).
    #[schema(max_items = 16)]
    pub limits: Vec<LimitBody>,
    #[schema(minimum = 1)]
    pub concurrency: Option<u32>,
}

/// A partial update of an API plan: absent fields stay, `null` clears
/// `concurrency`. Plans cannot be renamed.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchPlan {
    /// Cannot be null.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Vec<LimitBody>, max_items = 16)]
    pub limits: Option<Vec<LimitBody>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, nullable, minimum = 1)]
    pub concurrency: Option<Option<u32>>,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/plans", get(list_plans).post(create_plan))
        .route(
            "/api/plans/{name}",
            get(get_plan).patch(patch_plan).delete(delete_plan),
        )
}

fn read_only(name: &str) -> ApiError {
    ApiError::ReadOnly(format!(
        "plan {name:?} is defined in the YAML config; edit the config file instead"
    ))
}

fn no_plan(name: &str) -> ApiError {
    ApiError::not_found(format!("no plan named {name:?}"))
}

/// Every plan: the config's (read-only) first, then the API's.
#[utoipa::path(
    get,
    path = "/api/plans",
    tag = "plans",
    responses(
        (status = 200, description = "Every plan", body = Vec<PlanView>),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn list_plans(
    _auth: AuthAdmin,
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<PlanView>>> {
    let config = state.config();
    let mut out: Vec<PlanView> = config.plans.values().map(PlanView::from_config).collect();
    for p in state.db().list_plans().await? {
        // A config plan of the same name takes precedence.
        if !config.plans.contains_key(&p.name) {
            out.push(PlanView::from_stored(p));
        }
    }
    Ok(Json(out))
}

/// One plan.
#[utoipa::path(
    get,
    path = "/api/plans/{name}",
    tag = "plans",
    params(("name" = String, Path, description = "Plan name")),
    responses(
        (status = 200, description = "The plan", body = PlanView),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn get_plan(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    PathParam(name): PathParam,
) -> ApiResult<Json<PlanView>> {
    if let Some(p) = state.config().plans.get(&name) {
        return Ok(Json(PlanView::from_config(p)));
    }
    if !is_plan_name(&name) {
        return Err(no_plan(&name));
    }
    match state.db().get_plan(&name).await? {
        Some(p) => Ok(Json(PlanView::from_stored(p))),
        None => Err(no_plan(&name)),
    }
}

/// Create a plan (stored in the database).
#[utoipa::path(
    post,
    path = "/api/plans",
    tag = "plans",
    request_body = CreatePlan,
    responses(
        (status = 201, description = "Created", body = PlanView,
            headers(("Location" = String, description = "/api/plans/{name}"))),
        (status = 409, description = "A plan of that name exists (in the config or the database)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn create_plan(
    auth: RequireAdmin,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreatePlan>,
) -> ApiResult<impl IntoResponse> {
    let limits = limits_from_body("limits", &req.limits)?;
    limit_rules::check_plan(&req.name, &limits, req.concurrency)?;
    if state.config().plans.contains_key(&req.name) {
        return Err(ApiError::Conflict(format!(
            "plan {:?} is already defined in the YAML config",
            req.name
        )));
    }
    if state.db().get_plan(&req.name).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "plan {:?} already exists",
            req.name
        )));
    }
    let plan = state
        .db()
        .create_plan(&req.name, &limits, req.concurrency)
        .await?;
    tracing::info!(by = %auth.username, plan = %plan.name, "plan created");
    let view = PlanView::from_stored(plan.clone());
    audit(
        &state,
        auth.event("plan.create")
            .target("plan", &view.name)
            .changes(diff(&serde_json::Value::Null, &audit_view(&view))),
    )
    .await;
    let location = format!("/api/plans/{}", plan.name);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(PlanView::from_stored(plan)),
    ))
}

/// Change an API plan's limits or concurrency; the proxy applies it within 1 s.
#[utoipa::path(
    patch,
    path = "/api/plans/{name}",
    tag = "plans",
    params(("name" = String, Path, description = "Plan name")),
    request_body = PatchPlan,
    responses(
        (status = 200, description = "The updated plan", body = PlanView),
        (status = 409, description = "The plan is defined in the YAML config (type `read-only`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn patch_plan(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(name): PathParam,
    ApiJson(req): ApiJson<PatchPlan>,
) -> ApiResult<Json<PlanView>> {
    if state.config().plans.contains_key(&name) {
        return Err(read_only(&name));
    }
    if !is_plan_name(&name) {
        return Err(no_plan(&name));
    }
    let limits = match &req.limits {
        Some(ls) => Some(limits_from_body("limits", ls)?),
        None => None,
    };
    if let Some(ls) = &limits {
        limit_rules::check_limits("limits", ls, limit_rules::ListKind::Plan)?;
    }
    if let Some(Some(c)) = req.concurrency {
        limit_rules::check_concurrency(u64::from(c))
            .map_err(|m| ApiError::validation("concurrency", m))?;
    }
    let stored = state.db().get_plan(&name).await?;
    if let Some(p) = stored.as_ref() {
        if p.changes_nothing(limits.as_deref(), req.concurrency) {
            return Ok(Json(PlanView::from_stored(p.clone())));
        }
    }
    let before = stored.map(PlanView::from_stored);
    match state
        .db()
        .update_plan(&name, limits.as_deref(), req.concurrency)
        .await?
    {
        Some(p) => {
            tracing::info!(by = %auth.username, plan = %name, "plan updated");
            let after = PlanView::from_stored(p);
            let before = before.as_ref().map(audit_view).unwrap_or_default();
            audit_changes(
                &state,
                auth.event("plan.update").target("plan", &name),
                diff(&before, &audit_view(&after)),
            )
            .await;
            Ok(Json(after))
        }
        None => Err(no_plan(&name)),
    }
}

/// Delete an API plan; refused while a key uses it.
#[utoipa::path(
    delete,
    path = "/api/plans/{name}",
    tag = "plans",
    params(("name" = String, Path, description = "Plan name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "The plan is in use by a key (`conflict`) or defined in the YAML config (`read-only`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn delete_plan(
    auth: RequireAdmin,
    State(state): State<AppState>,
    PathParam(name): PathParam,
) -> ApiResult<StatusCode> {
    if state.config().plans.contains_key(&name) {
        return Err(read_only(&name));
    }
    if !is_plan_name(&name) {
        return Err(no_plan(&name));
    }
    let before = state.db().get_plan(&name).await?.map(PlanView::from_stored);
    if state.db().delete_plan(&name).await? {
        tracing::info!(by = %auth.username, plan = %name, "plan deleted");
        let before = before.as_ref().map(audit_view).unwrap_or_default();
        audit(
            &state,
            auth.event("plan.delete")
                .target("plan", &name)
                .changes(diff(&before, &serde_json::Value::Null)),
        )
        .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_plan(&name))
    }
}
