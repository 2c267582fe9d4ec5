//! `GET /api/analytics/identities/{id}`: one identity's usage, over all its
//! keys and per key.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use tollgate_core::db::usage::{Counts, UsageFilter};
use tollgate_core::db::KeyFilter;
use utoipa::ToSchema;

use super::query::range;
use super::views::{KeyCounts, UsageStats};
use super::RangeQuery;
use crate::auth::AuthAdmin;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_id, ApiQuery, PathParam};
use crate::state::AppState;

/// The most keys of one identity read per call (the rest are left out and
/// `keys_truncated` says so).
pub const MAX_IDENTITY_KEYS: i64 = 10_000;

/// One key of the identity and its requests.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IdentityKeyUsage {
    pub key_id: i64,
    pub name: String,
    #[serde(flatten)]
    pub counts: KeyCounts,
}

/// An identity's usage over a range.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IdentityUsage {
    pub identity_id: i64,
    pub external_id: String,
    pub from: i64,
    pub to: i64,
    /// All its keys together.
    pub usage: UsageStats,
    /// Its keys with at least one request in the range, busiest first.
    pub keys: Vec<IdentityKeyUsage>,
    /// More than [`MAX_IDENTITY_KEYS`] keys: only the first ones were read.
    pub keys_truncated: bool,
}

/// One identity's usage: totals over all its keys, and per key.
#[utoipa::path(
    get,
    path = "/api/analytics/identities/{id}",
    tag = "analytics",
    params(("id" = i64, Path, minimum = 1, description = "Identity id"), RangeQuery),
    responses(
        (status = 200, description = "The identity's usage", body = IdentityUsage),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn identity_usage(
    _auth: AuthAdmin,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<IdentityUsage>> {
    let id = parse_id(&id)?;
    let (from, to) = range(q.from, q.to)?;
    let Some(identity) = state.db().get_identity(id).await? else {
        return Err(ApiError::not_found(format!("no identity with id {id}")));
    };
    let (keys, total) = state
        .db()
        .list_keys(&KeyFilter {
            identity_id: Some(id),
            limit: MAX_IDENTITY_KEYS,
            ..KeyFilter::default()
        })
        .await?;
    let ids: Vec<i64> = keys.iter().map(|k| k.id).collect();
    let filter = UsageFilter {
        from,
        to,
        key_id: None,
        route: None,
    };
    let per_key = state.db().usage_totals_of_keys(&filter, &ids).await?;
    let mut all = Counts::default();
    let mut rows: Vec<(Counts, IdentityKeyUsage)> = Vec::new();
    for k in &keys {
        if let Some(c) = per_key.get(&k.id) {
            all.add(c);
            rows.push((
                *c,
                IdentityKeyUsage {
                    key_id: k.id,
                    name: k.name.clone(),
                    counts: KeyCounts::new(c),
                },
            ));
        }
    }
    rows.sort_by_key(|(c, u)| (std::cmp::Reverse(c.total()), u.key_id));
    Ok(Json(IdentityUsage {
        identity_id: id,
        external_id: identity.external_id,
        from,
        to,
        usage: UsageStats::new(&all, from, to),
        keys: rows.into_iter().map(|(_, u)| u).collect(),
        keys_truncated: total > MAX_IDENTITY_KEYS,
    }))
}
