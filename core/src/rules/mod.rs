//! The rules every way of changing the configuration shares: the YAML file
//! (`config::validate`), the admin API and the `tollgate` CLI all call these
//! functions, so a plan, a limit or a key refused by one is refused by all,
//! with the same message.
//!
//! Each check returns the message alone (`Err(String)`) when the caller knows
//! the field, or a [`FieldError`] naming it (`limits[1].per`) when the check
//! walks a list.

pub mod access;
#[cfg(any(test, feature = "testing"))]
pub mod cases;
pub mod effective;
pub mod identities;
pub mod keys;
pub mod limits;
pub mod quota_adjust;
pub mod quotas;

use std::fmt::Display;

/// A value that breaks a rule: which field (`limits[1].per`, `name`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The longest name ([`check_name`]).
pub const MAX_NAME_LEN: usize = 64;

/// The one rule for names the rest of the system carries around — plans,
/// limits, routes, upstreams (`what`: `"plan"`, `"route"`…): 1 to
/// [`MAX_NAME_LEN`] characters of `A-Z a-z 0-9 . _ -`. Such a name fits a
/// `RateLimit` header, a Redis key, a URL, a metrics label, a usage row and
/// a key's scope pattern (`billing-*` names routes; a route named `a*` or
/// `a b` could not be named there).
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("must be at most {MAX_NAME_LEN} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "invalid {what} name {name:?}: use only A-Z, a-z, 0-9, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// The most a `burst` or `cost` may be (fits `int64`).
pub const MAX_TOKENS: u64 = i64::MAX as u64;

/// A `burst` or a `cost` (of a bucket or a quota).
pub fn check_tokens(n: u64) -> Result<(), String> {
    in_range(n, 1, MAX_TOKENS)
}

/// A whole number in `min..=max`; the message every checker uses.
pub fn in_range(n: impl Into<i128> + Display + Copy, min: u64, max: u64) -> Result<(), String> {
    let v: i128 = n.into();
    if v < i128::from(min) {
        return Err(if min == 1 {
            format!("must be greater than 0, got {n}")
        } else {
            format!("must be at least {min}, got {n}")
        });
    }
    if v > i128::from(max) {
        return Err(format!("must be at most {max}, got {n}"));
    }
    Ok(())
}

/// The sorted, de-duplicated list of names for "unknown …" messages.
pub fn known(names: &[&str], what: &str) -> String {
    if names.is_empty() {
        format!("no {what} are defined")
    } else {
        let mut sorted = names.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        format!("known: {}", sorted.join(", "))
    }
}

/// The message for a reference to a plan that exists nowhere.
pub fn unknown_plan(name: &str, known_plans: &[&str]) -> String {
    format!("unknown plan {name:?} ({})", known(known_plans, "plans"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_name_the_bound_and_the_value() {
        assert_eq!(in_range(5u64, 1, 10), Ok(()));
        assert_eq!(
            in_range(0u64, 1, 10),
            Err("must be greater than 0, got 0".into())
        );
        assert_eq!(
            in_range(-3i64, 2, 10),
            Err("must be at least 2, got -3".into())
        );
        assert_eq!(
            in_range(11u64, 1, 10),
            Err("must be at most 10, got 11".into())
        );
        assert_eq!(in_range(u64::MAX, 1, u64::MAX), Ok(()));
    }

    #[test]
    fn unknown_plans_list_the_known_ones_sorted() {
        assert_eq!(
            unknown_plan("gold", &["pro", "free", "pro"]),
            "unknown plan \"gold\" (known: free, pro)"
        );
        assert_eq!(
            unknown_plan("gold", &[]),
            "unknown plan \"gold\" (no plans are defined)"
        );
    }
}
