//! A limit written as a calendar quota (`quota`, `period`, `anchor`,
//! `time_zone`), by the rules of [`crate::rules::quotas`].

use super::*;
use crate::rules::quotas as quota_rules;

/// Whether a raw limit is written as a quota (it has `quota` or `period`).
pub(super) fn is_quota(l: &RawLimit) -> bool {
    given(&l.quota).is_some() || given(&l.period).is_some()
}

impl Validator<'_> {
    /// A quota limit at `lp` (its name already checked: `None` if bad);
    /// every problem is reported with its field.
    pub(super) fn quota_limit(
        &mut self,
        lp: &str,
        name: Option<String>,
        l: &RawLimit,
    ) -> Option<Limit> {
        for (field, v) in [("rate", &l.rate), ("per", &l.per), ("burst", &l.burst)] {
            if given(v).is_some() {
                self.error(&child(lp, field), quota_rules::exclusive(field));
            }
        }
        let amount = match given(&l.quota) {
            Some(s) => self.number(&child(lp, "quota"), s, 1, quota_rules::MAX_QUOTA),
            None => {
                self.missing(&child(lp, "quota"), "");
                None
            }
        };
        let period = self.required_text(&child(lp, "period"), &l.period);
        let cost = match given(&l.cost) {
            None => Some(None),
            Some(s) => self
                .number(&child(lp, "cost"), s, 1, limit_rules::MAX_TOKENS)
                .map(Some),
        };
        let (anchor, time_zone) = (self.text(&l.anchor), self.text(&l.time_zone));
        let (Some(name), Some(amount), Some(period), Some(cost)) = (name, amount, period, cost)
        else {
            return None;
        };
        if [&l.rate, &l.per, &l.burst]
            .iter()
            .any(|v| given(v).is_some())
        {
            return None;
        }
        match quota_rules::quota_limit(name, amount, &period, anchor, time_zone, cost) {
            Ok(limit) => Some(limit),
            Err((field, message)) => {
                self.error(&child(lp, field), message);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    fn errors(limit: &str) -> Result<(), String> {
        let yaml = format!("plans:\n  p:\n    limits:\n      - {limit}\n");
        crate::config::parse(&yaml, "q.yaml")
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn quotas_in_yaml() {
        errors("{ name: monthly, quota: 100000, period: month, anchor: 1, time_zone: UTC }")
            .expect("the DESIGN example");
        errors("{ name: w, quota: 5, period: week, anchor: friday, cost: 2 }").expect("week");
        errors("{ name: y, quota: 5, period: year, anchor: \"02-29\" }").expect("year");
        for (bad, field) in [
            (
                "{ name: m, quota: 5, period: month, rate: 5 }",
                "limits[0].rate",
            ),
            (
                "{ name: m, quota: 5, period: month, per: 1s }",
                "limits[0].per",
            ),
            (
                "{ name: m, quota: 5, period: month, burst: 5 }",
                "limits[0].burst",
            ),
            ("{ name: m, period: month }", "limits[0].quota"),
            ("{ name: m, quota: 5 }", "limits[0].period"),
            ("{ name: m, quota: 0, period: month }", "limits[0].quota"),
            ("{ name: m, quota: -5, period: month }", "limits[0].quota"),
            ("{ name: m, quota: five, period: month }", "limits[0].quota"),
            (
                "{ name: m, quota: 5, period: fortnight }",
                "limits[0].period",
            ),
            (
                "{ name: m, quota: 5, period: month, anchor: 32 }",
                "limits[0].anchor",
            ),
            (
                "{ name: m, quota: 5, period: day, anchor: 1 }",
                "limits[0].anchor",
            ),
            (
                "{ name: m, quota: 5, period: month, time_zone: Mars/Base }",
                "limits[0].time_zone",
            ),
            (
                "{ name: m, quota: 5, period: month, cost: 6 }",
                "limits[0].cost",
            ),
        ] {
            let e = errors(bad).expect_err(bad);
            assert!(e.contains(field), "{bad}: {e}");
        }
    }
}
