//! Checks more than one resource makes: a list of limits (plans and keys'
//! own limits), a plan name, and whether a plan exists (a key's plan).

use std::collections::HashSet;

use tollgate_core::duration;
use tollgate_core::limits::Limit;

use crate::bodies::LimitBody;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The most limits one plan or key may have.
pub const MAX_LIMITS: usize = 16;
/// The largest `rate` accepted.
pub const MAX_RATE: u64 = 1_000_000_000;
/// The largest `burst` and `cost` accepted (`i64::MAX`, so they fit `int64`).
pub const MAX_TOKENS: u64 = i64::MAX as u64;

/// Validate a list of limits; errors name the field, e.g. `limits[1].per`.
pub fn limits_from_body(field: &str, bodies: &[LimitBody]) -> ApiResult<Vec<Limit>> {
    if bodies.is_empty() {
        return Err(ApiError::validation(
            field,
            "must contain at least one limit",
        ));
    }
    if bodies.len() > MAX_LIMITS {
        return Err(ApiError::validation(
            field,
            format!("at most {MAX_LIMITS} limits"),
        ));
    }
    let mut names = HashSet::new();
    bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let f = |name: &str| format!("{field}[{i}].{name}");
            check_name(&f("name"), &b.name)?;
            if !names.insert(b.name.as_str()) {
                return Err(ApiError::validation(
                    f("name"),
                    format!("duplicate limit name {:?}", b.name),
                ));
            }
            if b.rate == 0 || b.rate > MAX_RATE {
                return Err(ApiError::validation(
                    f("rate"),
                    format!("must be from 1 to {MAX_RATE}"),
                ));
            }
            let per = duration::parse(&b.per)
                .map_err(|e| ApiError::validation(f("per"), e.to_string()))?;
            if per.is_zero() {
                return Err(ApiError::validation(f("per"), "must be longer than 0"));
            }
            if per > std::time::Duration::from_secs(366 * 86_400) {
                return Err(ApiError::validation(f("per"), "must be at most 366d"));
            }
            // Every number the API returns fits a signed 64-bit integer
            // (`int64`, as documented), whatever reads it back.
            for (name, v) in [("burst", b.burst), ("cost", b.cost)] {
                if v.is_some_and(|v| v == 0 || v > MAX_TOKENS) {
                    return Err(ApiError::validation(
                        f(name),
                        format!("must be from 1 to {MAX_TOKENS}"),
                    ));
                }
            }
            let limit = Limit {
                name: b.name.clone(),
                rate: b.rate,
                per,
                burst: b.burst,
                cost: b.cost,
            };
            if limit.cost() > limit.burst() {
                return Err(ApiError::validation(
                    f("cost"),
                    "must not exceed burst (such a request could never be admitted)",
                ));
            }
            Ok(limit)
        })
        .collect()
}

pub fn check_name(field: &str, name: &str) -> ApiResult<()> {
    if name.is_empty() {
        return Err(ApiError::validation(field, "must not be empty"));
    }
    if name.len() > 64 {
        return Err(ApiError::validation(field, "must be at most 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(ApiError::validation(
            field,
            "may only contain A-Z, a-z, 0-9, '.', '_' and '-'",
        ));
    }
    Ok(())
}

/// Whether a plan of that name exists in the config or the plans table.
pub async fn plan_exists(state: &AppState, name: &str) -> ApiResult<bool> {
    if state.config().plans.contains_key(name) {
        return Ok(true);
    }
    if !valid_name(name) {
        return Ok(false);
    }
    Ok(state.db().get_plan(name).await?.is_some())
}

/// Whether an API plan could have this name: anything else (NUL bytes,
/// quotes, 10 KB of text) is not looked up at all.
pub fn valid_name(name: &str) -> bool {
    check_name("name", name).is_ok()
}
