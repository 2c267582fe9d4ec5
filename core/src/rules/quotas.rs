//! Calendar quotas as limits: the one rule the YAML config, the admin API
//! and the CLI share (see [`crate::quota`] for the counting).
//!
//! - a quota limit has `quota` (its amount, 1 to [`MAX_QUOTA`]) and
//!   `period` (`day`, `week`, `month`, `year`), optionally `anchor`,
//!   `time_zone` and `cost`; it has no `rate`, `per` or `burst` (those make
//!   a token bucket);
//! - `anchor` and `time_zone` are checked by [`crate::quota::Calendar::new`]
//!   (a day of month 1–31, a weekday, `MM-DD`; an IANA zone name);
//! - the cost is at most the quota.

use crate::limits::Limit;
use crate::quota::{Calendar, Period, QuotaSpec};

use super::{check_tokens, in_range};

/// The largest quota: 2^50, so the Redis script's counts (Lua doubles)
/// stay exact.
pub const MAX_QUOTA: u64 = 1 << 50;

pub fn check_amount(n: u64) -> Result<(), String> {
    in_range(n, 1, MAX_QUOTA)
}

/// One quota limit, field by field; the error names the field.
pub fn check_quota_limit(limit: &Limit) -> Result<(), (&'static str, String)> {
    let Some(spec) = &limit.quota else {
        return Ok(());
    };
    check_amount(limit.rate).map_err(|m| ("quota", m))?;
    if limit.burst.is_some() {
        return Err(("burst", exclusive("burst")));
    }
    if limit.per != spec.period.nominal() {
        return Err(("per", exclusive("per")));
    }
    Calendar::new(spec)?;
    if let Some(c) = limit.cost {
        check_tokens(c).map_err(|m| ("cost", m))?;
        check_cost_fits(limit).map_err(|m| ("cost", m))?;
    }
    Ok(())
}

/// A request costing more than a quota's amount could never be admitted
/// (`rules::limits::check_cost_fits` for a quota).
pub fn check_cost_fits(limit: &Limit) -> Result<(), String> {
    if !limit.never_fits() {
        return Ok(());
    }
    Err(format!(
        "cost {} is more than quota {}: no request could ever be admitted",
        limit.cost(),
        limit.rate
    ))
}

/// The message for `rate`, `per` or `burst` on a quota.
pub fn exclusive(field: &str) -> String {
    format!("a quota (quota, period) has no {field}: use either quota/period or rate/per/burst")
}

/// A quota limit from its fields as read from YAML or a request body,
/// checked; the error names the field.
pub fn quota_limit(
    name: String,
    amount: u64,
    period: &str,
    anchor: Option<String>,
    time_zone: Option<String>,
    cost: Option<u64>,
) -> Result<Limit, (&'static str, String)> {
    let period = Period::parse(period).map_err(|m| ("period", m))?;
    let limit = Limit::new_quota(
        name,
        amount,
        QuotaSpec {
            period,
            anchor,
            time_zone,
        },
        cost,
    );
    check_quota_limit(&limit)?;
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn q(
        amount: u64,
        period: &str,
        anchor: Option<&str>,
        tz: Option<&str>,
        cost: Option<u64>,
    ) -> Result<Limit, &'static str> {
        quota_limit(
            "m".into(),
            amount,
            period,
            anchor.map(Into::into),
            tz.map(Into::into),
            cost,
        )
        .map_err(|e| e.0)
    }

    #[test]
    fn fields() {
        let l = q(100, "month", Some("15"), Some("Europe/Paris"), None).expect("valid");
        assert!(l.is_quota());
        assert_eq!((l.rate, l.per), (100, Duration::from_secs(31 * 86_400)));
        assert!(q(1, "day", None, None, Some(1)).is_ok());
        assert!(q(MAX_QUOTA, "year", Some("02-29"), None, None).is_ok());
        assert_eq!(q(0, "month", None, None, None).err(), Some("quota"));
        assert_eq!(
            q(MAX_QUOTA + 1, "month", None, None, None).err(),
            Some("quota")
        );
        assert_eq!(q(1, "fortnight", None, None, None).err(), Some("period"));
        assert_eq!(q(1, "Month", None, None, None).err(), Some("period"));
        assert_eq!(q(1, "month", Some("0"), None, None).err(), Some("anchor"));
        assert_eq!(
            q(1, "month", None, Some("Nowhere/City"), None).err(),
            Some("time_zone")
        );
        assert_eq!(q(5, "month", None, None, Some(6)).err(), Some("cost"));
        assert_eq!(q(5, "month", None, None, Some(0)).err(), Some("cost"));
        let mut l = q(5, "week", None, None, None).expect("valid");
        l.burst = Some(3);
        assert_eq!(check_quota_limit(&l).map_err(|e| e.0), Err("burst"));
        l.burst = None;
        l.per = Duration::from_secs(1);
        assert_eq!(check_quota_limit(&l).map_err(|e| e.0), Err("per"));
    }
}
