//! What more than one resource needs: a list of limits read from a body
//! (plans and keys' own limits) and whether a plan exists (a key's plan).
//! The rules themselves are `tollgate_core::rules`.

use tollgate_core::duration;
use tollgate_core::limits::Limit;
use tollgate_core::rules::limits::is_plan_name;
use tollgate_core::rules::quotas as quota_rules;

use crate::bodies::LimitBody;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The limits of a request body, `per` parsed (errors name the field, e.g.
/// `limits[1].per`); the rules are checked by `tollgate_core::rules`.
pub fn limits_from_body(field: &str, bodies: &[LimitBody]) -> ApiResult<Vec<Limit>> {
    bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let at = |f: &str| format!("{field}[{i}].{f}");
            if b.quota.is_some() || b.period.is_some() {
                return quota_from_body(b)
                    .map(|q| Limit {
                        scope: b.scope,
                        ..q
                    })
                    .map_err(|(f, m)| ApiError::validation(at(f), m));
            }
            let required = |f: &str| {
                ApiError::validation(
                    at(f),
                    "required for a rate limit (or give quota and period)",
                )
            };
            let rate = b.rate.ok_or_else(|| required("rate"))?;
            let per = b.per.as_deref().ok_or_else(|| required("per"))?;
            let per =
                duration::parse(per).map_err(|e| ApiError::validation(at("per"), e.to_string()))?;
            Ok(Limit {
                name: b.name.clone(),
                rate,
                per,
                burst: b.burst,
                cost: b.cost,
                quota: None,
                scope: b.scope,
            })
        })
        .collect()
}

/// A quota limit from a body: `quota`, `period`, `anchor`, `time_zone`,
/// `cost`, checked by `tollgate_core::rules::quotas` (the YAML's rule).
fn quota_from_body(b: &LimitBody) -> Result<Limit, (&'static str, String)> {
    for (f, given) in [
        ("rate", b.rate.is_some()),
        ("per", b.per.is_some()),
        ("burst", b.burst.is_some()),
    ] {
        if given {
            return Err((f, quota_rules::exclusive(f)));
        }
    }
    let amount = b
        .quota
        .ok_or(("quota", "required with period".to_string()))?;
    let period = b
        .period
        .as_deref()
        .ok_or(("period", "required with quota".to_string()))?;
    quota_rules::quota_limit(
        b.name.clone(),
        amount,
        period,
        b.anchor.clone(),
        b.time_zone.clone(),
        b.cost,
    )
}

/// Whether a plan of that name exists in the config or the plans table.
pub async fn plan_exists(state: &AppState, name: &str) -> ApiResult<bool> {
    if state.config().plans.contains_key(name) {
        return Ok(true);
    }
    if !is_plan_name(name) {
        return Ok(false);
    }
    Ok(state.db().get_plan(name).await?.is_some())
}

/// 422 naming `identity_id` unless that identity exists.
pub(crate) async fn check_identity_exists(state: &AppState, id: i64) -> ApiResult<()> {
    if id > 0 && state.db().get_identity(id).await?.is_some() {
        return Ok(());
    }
    Err(ApiError::validation(
        "identity_id",
        format!("unknown identity {id}"),
    ))
}
