//! Plans and limits: names, numbers and lists, one rule for the YAML config,
//! the admin API and the CLI.
//!
//! - a plan or limit name is a [`check_name`]: 1–64 characters of
//!   `A-Z a-z 0-9 . _ -` (it is sent in `RateLimit` headers and used in Redis
//!   keys and URLs); a limit is never named `credits`, the `RateLimit`
//!   member that reports a key's credits;
//! - `rate` is 1 to [`MAX_RATE`]; `per` is 1 ms to 366 days;
//! - `burst` and `cost` are 1 to [`MAX_TOKENS`] (they fit `int64`), a burst
//!   refills from empty within 2^50 µs ([`check_burst_fits`]: no clamp), and the
//!   cost is at most the burst (the rate when no burst is set);
//! - a list holds at most [`MAX_LIMITS`] limits with distinct names; a plan
//!   may have none (only a concurrency cap, or nothing: unlimited), a key's
//!   own list has at least one (no list means "the plan's");
//! - a concurrency cap is 1 to `i32::MAX` (the OpenAPI `int32`).

use std::collections::HashMap;
use std::time::Duration;

use super::{in_range, FieldError};
use crate::limits::Limit;

pub use super::{check_name, MAX_NAME_LEN};
/// The name no limit may have ([`check_limit_name`]).
pub use crate::credits::HEADER_MEMBER as RESERVED_LIMIT_NAME;
/// The most limits one plan, key or route may have.
pub const MAX_LIMITS: usize = 16;
/// The largest `rate`.
pub const MAX_RATE: u64 = 1_000_000_000;
/// The largest `burst` and `cost` (`i64::MAX`, so they fit `int64`).
pub use super::{check_tokens, MAX_TOKENS};
/// The shortest `per`.
pub const MIN_PER: Duration = Duration::from_millis(1);
/// The longest `per`: 366 days.
pub const MAX_PER: Duration = Duration::from_secs(366 * 86_400);
/// The largest concurrency cap.
pub const MAX_CONCURRENCY: u64 = i32::MAX as u64;

/// Whether a list of limits may be empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// A plan's or a route's limits: none is allowed.
    Plan,
    /// A key's own limits: at least one (no list at all means the plan's).
    Key,
}

/// A limit's name: a [`check_name`], other than [`RESERVED_LIMIT_NAME`].
pub fn check_limit_name(name: &str) -> Result<(), String> {
    check_name("limit", name)?;
    if name == RESERVED_LIMIT_NAME {
        return Err(format!(
            "{name:?} is reserved: it is the member of the RateLimit header that reports a key's credits; choose another limit name"
        ));
    }
    Ok(())
}

/// Whether `name` could be a plan's name: anything else (NUL bytes, quotes,
/// 10 KB of text) need not be looked up at all.
pub fn is_plan_name(name: &str) -> bool {
    check_name("plan", name).is_ok()
}

pub fn check_rate(rate: u64) -> Result<(), String> {
    in_range(rate, 1, MAX_RATE)
}

pub fn check_per(per: Duration) -> Result<(), String> {
    if per < MIN_PER {
        return Err("must be at least 1ms".into());
    }
    if per > MAX_PER {
        return Err("must be at most 366d".into());
    }
    Ok(())
}

pub fn check_concurrency(n: u64) -> Result<(), String> {
    in_range(n, 1, MAX_CONCURRENCY)
}

/// A request costing more than the bucket (or calendar quota) holds could
/// never be admitted.
pub fn check_cost_fits(limit: &Limit) -> Result<(), String> {
    if limit.is_quota() {
        return super::quotas::check_cost_fits(limit);
    }
    if !limit.never_fits() {
        return Ok(());
    }
    let of = if limit.burst.is_some() {
        format!("burst {}", limit.burst())
    } else {
        format!("burst {} (the rate, as burst is not set)", limit.burst())
    };
    Err(format!(
        "cost {} is more than {of}: no request could ever be admitted",
        limit.cost()
    ))
}

/// A bucket the arithmetic can count exactly: its capacity as time
/// (`burst × per / rate`) within the longest span both backends work with
/// ([`crate::limits::MAX_SPAN_NS`], 2^50 µs ≈ 35.7 years; the Redis script
/// counts in whole µs). Beyond it the backends would clamp the burst (and
/// `RateLimit` report the clamped number), so such a burst is refused.
pub fn check_burst_fits(limit: &Limit) -> Result<(), String> {
    let held = crate::limits::clamp_ns(limit)
        .burst
        .min(crate::limits::clamp_us(limit).burst);
    if held >= limit.burst() {
        return Ok(());
    }
    Err(format!(
        "burst {} at rate {} per {} is more than a bucket can count: at most {held} (a bucket refills from empty within 2^50 µs, about 35.7 years)",
        limit.burst(),
        limit.rate,
        crate::duration::format(limit.per),
    ))
}

/// How many limits a list may hold.
pub fn check_count(n: usize, kind: ListKind) -> Result<(), String> {
    if n == 0 && kind == ListKind::Key {
        return Err("must contain at least one limit".into());
    }
    if n > MAX_LIMITS {
        return Err(format!("at most {MAX_LIMITS} limits, got {n}"));
    }
    Ok(())
}

/// `field[i]`, as lists are named in messages.
pub fn item(field: &str, i: usize) -> String {
    format!("{field}[{i}]")
}

/// The message for the second use of a limit name in a list.
pub fn duplicate_name(name: &str, first: &str) -> String {
    format!("duplicate limit name {name:?} (also {first})")
}

/// One limit, field by field; the error names the field inside the limit.
pub fn check_limit(limit: &Limit) -> Result<(), (&'static str, String)> {
    check_limit_name(&limit.name).map_err(|m| ("name", m))?;
    if limit.is_quota() {
        return super::quotas::check_quota_limit(limit);
    }
    check_rate(limit.rate).map_err(|m| ("rate", m))?;
    check_per(limit.per).map_err(|m| ("per", m))?;
    if let Some(b) = limit.burst {
        check_tokens(b).map_err(|m| ("burst", m))?;
    }
    if let Some(c) = limit.cost {
        check_tokens(c).map_err(|m| ("cost", m))?;
    }
    check_burst_fits(limit).map_err(|m| ("burst", m))?;
    check_cost_fits(limit).map_err(|m| ("cost", m))
}

/// A whole list of limits called `field` (`limits`); the first problem,
/// naming its field (`limits[1].per`).
pub fn check_limits(field: &str, limits: &[Limit], kind: ListKind) -> Result<(), FieldError> {
    check_count(limits.len(), kind).map_err(|m| FieldError::new(field, m))?;
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, l) in limits.iter().enumerate() {
        let at = item(field, i);
        check_limit(l).map_err(|(f, m)| FieldError::new(format!("{at}.{f}"), m))?;
        if let Some(first) = names.get(l.name.as_str()) {
            return Err(FieldError::new(
                format!("{at}.name"),
                duplicate_name(&l.name, &item(field, *first)),
            ));
        }
        names.insert(&l.name, i);
    }
    Ok(())
}

/// A plan: its name, its limits, its concurrency cap.
pub fn check_plan(
    name: &str,
    limits: &[Limit],
    concurrency: Option<u32>,
) -> Result<(), FieldError> {
    check_name("plan", name).map_err(|m| FieldError::new("name", m))?;
    check_limits("limits", limits, ListKind::Plan)?;
    if let Some(c) = concurrency {
        check_concurrency(u64::from(c)).map_err(|m| FieldError::new("concurrency", m))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(name: &str, rate: u64, per: Duration) -> Limit {
        Limit::new(name, rate, per, None, None)
    }

    #[test]
    fn names() {
        assert!(check_name("limit", "minute").is_ok());
        assert!(check_name("limit", "a.b_c-D9").is_ok());
        assert!(check_name("limit", &"x".repeat(64)).is_ok());
        assert_eq!(check_name("plan", ""), Err("must not be empty".into()));
        assert_eq!(
            check_name("plan", &"x".repeat(65)),
            Err("must be at most 64 characters".into())
        );
        for bad in ["a b", "a\"b", "a\\b", "é", "a\0", "a/b", "a:b", "{x}"] {
            let e = check_name("limit", bad).expect_err(bad);
            assert!(e.starts_with(&format!("invalid limit name {bad:?}")), "{e}");
        }
        // Round 12: `credits` is the RateLimit member of a key's credits.
        let e = check_limit_name("credits").expect_err("reserved");
        assert!(e.contains("\"credits\" is reserved"), "{e}");
        assert!(check_limit_name("Credits").is_ok() && check_name("plan", "credits").is_ok());
        let e = check_limit(&limit("credits", 1, Duration::from_secs(1))).expect_err("reserved");
        assert_eq!(e.0, "name");
    }

    #[test]
    fn numbers_and_durations() {
        assert!(check_rate(1).is_ok() && check_rate(MAX_RATE).is_ok());
        assert!(check_rate(0).is_err() && check_rate(MAX_RATE + 1).is_err());
        assert!(check_per(MIN_PER).is_ok() && check_per(MAX_PER).is_ok());
        assert_eq!(
            check_per(Duration::ZERO),
            Err("must be at least 1ms".into())
        );
        assert_eq!(
            check_per(MAX_PER + Duration::from_millis(1)),
            Err("must be at most 366d".into())
        );
        assert!(check_tokens(MAX_TOKENS).is_ok() && check_tokens(MAX_TOKENS + 1).is_err());
        assert!(check_concurrency(0).is_err() && check_concurrency(MAX_CONCURRENCY).is_ok());
    }

    #[test]
    fn lists() {
        let s = Duration::from_secs(1);
        assert!(check_limits("limits", &[], ListKind::Plan).is_ok());
        assert_eq!(
            check_limits("limits", &[], ListKind::Key),
            Err(FieldError::new("limits", "must contain at least one limit"))
        );
        let many: Vec<Limit> = (0..17).map(|i| limit(&format!("l{i}"), 1, s)).collect();
        assert_eq!(
            check_limits("limits", &many, ListKind::Plan).map_err(|e| e.field),
            Err("limits".into())
        );
        assert!(check_limits("limits", &many[..16], ListKind::Key).is_ok());
        let dup = [limit("m", 1, s), limit("n", 1, s), limit("m", 2, s)];
        assert_eq!(
            check_limits("limits", &dup, ListKind::Plan),
            Err(FieldError::new(
                "limits[2].name",
                "duplicate limit name \"m\" (also limits[0])"
            ))
        );
        let mut costly = limit("m", 3, s);
        costly.cost = Some(4);
        let e = check_limits("limits", &[costly], ListKind::Plan).expect_err("cost > burst");
        assert_eq!(e.field, "limits[0].cost");
        assert!(e.message.contains("(the rate, as burst is not set)"), "{e}");
        let slow = limit("m", 1, MAX_PER * 2);
        assert_eq!(
            check_limits("l", &[slow], ListKind::Plan).map_err(|e| e.field),
            Err("l[0].per".into())
        );
    }

    /// The YAML config accepts exactly the plans of the shared table that
    /// the rules accept (the admin API's tests run the same table).
    #[test]
    fn yaml_follows_the_plan_rules() {
        let mut wrong = Vec::new();
        for c in crate::rules::cases::plan_cases() {
            let yaml = crate::rules::cases::as_yaml(&c);
            let got = crate::config::parse(&yaml, "case.yaml");
            if got.is_ok() != c.valid {
                wrong.push(format!(
                    "{}: expected valid={}, got {got:?}",
                    c.what, c.valid
                ));
            }
        }
        assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    }

    #[test]
    fn plans() {
        assert!(check_plan("free", &[], None).is_ok());
        assert_eq!(
            check_plan("free", &[], Some(0)).map_err(|e| e.field),
            Err("concurrency".into())
        );
        assert_eq!(
            check_plan("a b", &[], None).map_err(|e| e.field),
            Err("name".into())
        );
    }
}
