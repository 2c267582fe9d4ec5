//! `GET /api/audit`: the audit log, newest first, filtered and paged (role
//! `admin` or `owner`), and the task that applies `admin.audit_retention`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tollgate_core::db::audit::{AuditEvent, AuditFilter};
use utoipa::{IntoParams, ToSchema};

use crate::auth::RequireAdmin;
use crate::error::ApiResult;
use crate::extract::{text_filter, ApiQuery, Paging, QueryInt};
use crate::state::AppState;

const DEFAULT_PER_PAGE: i64 = 50;
const MAX_PER_PAGE: i64 = 200;
const MAX_FILTER_LEN: usize = 256;
/// The latest instant accepted in `from`/`to`.
const MAX_MS: i64 = i64::MAX / 2;

/// One audit event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEventView {
    pub id: i64,
    /// Unix ms.
    pub at: i64,
    /// `admin`, `cli` or `anonymous`.
    #[schema(example = "admin")]
    pub actor_kind: String,
    /// The admin's username, `cli:<OS user>`, or `anonymous`.
    #[schema(example = "alice")]
    pub actor: String,
    pub actor_id: Option<i64>,
    /// The client's address (API) — `null` for the CLI.
    pub client_ip: Option<String>,
    /// e.g. `key.create`, `key.rotate`, `admin.role`, `login.failure`.
    #[schema(example = "key.create")]
    pub action: String,
    /// `key`, `plan`, `admin`.
    pub target_type: Option<String>,
    /// The target's id or name.
    pub target: Option<String>,
    /// `{field: {before, after}}` (never a key, hash or password).
    #[schema(value_type = Option<Object>)]
    pub changes: Option<serde_json::Value>,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        Self {
            id: e.id,
            at: e.at,
            actor_kind: e.actor_kind,
            actor: e.actor,
            actor_id: e.actor_id,
            client_ip: e.client_ip,
            action: e.action,
            target_type: e.target_type,
            target: e.target,
            changes: e.changes,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEventView>,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}

/// Query parameters of `GET /api/audit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Exact actor: a username or `cli:<OS user>`.
    #[param(max_length = 256)]
    pub actor: Option<String>,
    /// Exact action (`key.create`), or a prefix ending in `.` (`key.`).
    #[param(max_length = 256)]
    pub action: Option<String>,
    /// Target type: `key`, `plan`, `admin`.
    #[param(max_length = 256)]
    pub target_type: Option<String>,
    /// Target id or name.
    #[param(max_length = 256)]
    pub target: Option<String>,
    /// Unix ms, inclusive.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub from: Option<QueryInt<0, MAX_MS>>,
    /// Unix ms, exclusive.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub to: Option<QueryInt<0, MAX_MS>>,
    /// 1-based page number (default 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    pub page: Option<QueryInt<1, 1_000_000>>,
    /// Events per page (default 50, at most 200).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub per_page: Option<QueryInt<1, MAX_PER_PAGE>>,
}

pub fn router() -> Router<AppState> {
    Router::new().route("/api/audit", get(list_audit))
}

/// The audit log, newest first.
#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of events, newest first", body = AuditPage),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn list_audit(
    _auth: RequireAdmin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let Paging {
        page,
        per_page,
        offset,
    } = Paging::new(q.page, q.per_page, DEFAULT_PER_PAGE);
    let filter = AuditFilter {
        actor: text_filter("actor", q.actor, MAX_FILTER_LEN)?,
        action: text_filter("action", q.action, MAX_FILTER_LEN)?,
        target_type: text_filter("target_type", q.target_type, MAX_FILTER_LEN)?,
        target: text_filter("target", q.target, MAX_FILTER_LEN)?,
        from: q.from.map(QueryInt::get),
        to: q.to.map(QueryInt::get),
        limit: per_page,
        offset,
    };
    let (items, total) = state.db().list_audit(&filter).await?;
    Ok(Json(AuditPage {
        items: items.into_iter().map(AuditEventView::from).collect(),
        total,
        page,
        per_page,
    }))
}

/// Delete events older than `admin.audit_retention`, now and then hourly.
pub fn spawn_retention(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let keep = state.config().admin.audit_retention;
            let before =
                tollgate_core::now_ms() - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX / 2);
            match state.db().prune_audit(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "audit events past retention deleted"),
                Err(e) => tracing::warn!(error = %e, "audit retention failed"),
            }
        }
    })
}
