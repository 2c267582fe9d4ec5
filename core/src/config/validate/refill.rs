//! A plan's `credits: { refill: ... }`, by the rule of [`crate::refill`].

use super::*;
use crate::config::raw::RawCredits;
use crate::refill::{Refill, RefillSpec};

impl Validator<'_> {
    /// `credits.refill` of the plan at `path`; every problem is reported
    /// with its field.
    pub(super) fn plan_refill(&mut self, path: &str, c: Option<&RawCredits>) -> Option<Refill> {
        let r = c?.refill.as_ref()?;
        let rp = child(&child(path, "credits"), "refill");
        let amount = match given(&r.amount) {
            Some(s) => Some(self.number(
                &child(&rp, "amount"),
                s,
                1,
                crate::credits::MAX_DELTA.unsigned_abs(),
            )?),
            None => None,
        };
        let spec = RefillSpec {
            amount,
            every: self.text(&r.every),
            period: self.text(&r.period),
            anchor: self.text(&r.anchor),
            time_zone: self.text(&r.time_zone),
        };
        match Refill::new(&spec) {
            Ok(refill) => Some(refill),
            Err((field, message)) => {
                self.error(&child(&rp, field), message);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::refill::Schedule;

    fn parse(refill: &str) -> Result<crate::config::Config, String> {
        let yaml = format!("plans:\n  p:\n    credits:\n      refill: {refill}\n");
        crate::config::parse(&yaml, "r.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn refills_in_yaml() {
        let c = parse("{ amount: 1000, every: 1d }").expect("every");
        let r = c.plans["p"].credits_refill.clone().expect("refill");
        assert_eq!(
            (r.amount, r.schedule),
            (1000, Schedule::Every { secs: 86_400 })
        );
        parse("{ amount: 5, period: month, anchor: 15, time_zone: Europe/Paris }")
            .expect("calendar");
        let none =
            crate::config::parse("plans:\n  p:\n    credits: {}\n", "r.yaml").expect("no refill");
        assert!(none.plans["p"].credits_refill.is_none());
        for (bad, field) in [
            ("{ every: 1d }", "refill.amount"),
            ("{ amount: 0, every: 1d }", "refill.amount"),
            ("{ amount: -5, every: 1d }", "refill.amount"),
            ("{ amount: 9007199254740992, every: 1d }", "refill.amount"),
            ("{ amount: \"5\", every: 1d }", "refill.amount"),
            ("{ amount: 5 }", "refill.every"),
            ("{ amount: 5, every: 0s }", "refill.every"),
            ("{ amount: 5, every: 1d, period: month }", "refill.every"),
            ("{ amount: 5, every: 1d, anchor: 3 }", "refill.anchor"),
            ("{ amount: 5, period: month, anchor: 0 }", "refill.anchor"),
            (
                "{ amount: 5, period: month, time_zone: Nowhere/Land }",
                "refill.time_zone",
            ),
            ("{ amount: 5, period: hourly }", "refill.period"),
            ("{ amount: 5, every: 1d, extra: 1 }", "extra"),
            ("[1, 2]", "refill"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(field), "{bad}: {e}");
        }
    }
}
