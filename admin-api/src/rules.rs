//! What more than one resource needs: a list of limits read from a body
//! (plans and keys' own limits) and whether a plan exists (a key's plan).
//! The rules themselves are `tollgate_core::rules`.

use tollgate_core::duration;
use tollgate_core::limits::Limit;
use tollgate_core::rules::limits::is_plan_name;

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
            let per = duration::parse(&b.per)
                .map_err(|e| ApiError::validation(format!("{field}[{i}].per"), e.to_string()))?;
            Ok(Limit {
                name: b.name.clone(),
                rate: b.rate,
                per,
                burst: b.burst,
                cost: b.cost,
                quota: None,
                scope: b.scope,
            })
        })
        .collect()
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
