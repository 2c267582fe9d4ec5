//! Credit refill (issue #20 item 2): a prepaid balance that is **set back
//! to `amount` at the start of every period** (a plan's monthly allowance:
//! unused credits do not roll over; a top-up made during a period adds to
//! that period's balance until the next refill).
//!
//! Two ways to write the period, one rule for YAML, the API and the CLI
//! ([`Refill::new`]):
//!
//! - `{ amount: 1000, every: 1d }`: fixed periods of `every` (1 s to 366 d)
//!   counted from the Unix epoch in UTC (`every: 1h` starts each hour);
//! - `{ amount: 1000, period: month, anchor: 15, time_zone: Europe/Paris }`:
//!   calendar periods, exactly those of a quota ([`crate::quota::Calendar`]:
//!   month ends, leap years and DST included).
//!
//! A refill is applied once per period across proxies: each balance
//! remembers the start of the last period it was refilled for, and a refill
//! is due when the current period starts later ([`due`]). In Redis the
//! credits script compares and sets that start in the same call that spends
//! (so two proxies never both refill); locally the balance's lock does.

use std::time::Duration;

use crate::credits::MAX_DELTA;
use crate::quota::{Calendar, Period, QuotaSpec};

/// The shortest `every`.
pub const MIN_EVERY: Duration = Duration::from_secs(1);
/// The longest `every` (a leap year).
pub const MAX_EVERY: Duration = Duration::from_secs(366 * 86_400);

/// When a refill's periods start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every `secs` seconds from the Unix epoch.
    Every { secs: i64 },
    /// Calendar periods, like a quota's.
    Calendar(Calendar),
}

/// A checked refill: the balance is set to `amount` at each period start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refill {
    pub amount: i64,
    pub schedule: Schedule,
}

/// A refill as written, before checking (`every` or `period` with
/// optional `anchor` and `time_zone`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefillSpec {
    pub amount: Option<u64>,
    pub every: Option<String>,
    pub period: Option<String>,
    pub anchor: Option<String>,
    pub time_zone: Option<String>,
}

impl Refill {
    /// The one check of a refill (the error names the field).
    pub fn new(spec: &RefillSpec) -> Result<Self, (&'static str, String)> {
        let max = MAX_DELTA.unsigned_abs();
        let amount = match spec.amount {
            None => return Err(("amount", "is required".into())),
            Some(a) if a == 0 || a > max => {
                return Err(("amount", format!("must be between 1 and {max}, got {a}")))
            }
            Some(a) => i64::try_from(a).map_err(|_| ("amount", "too large".to_string()))?,
        };
        let schedule = match (&spec.every, &spec.period) {
            (Some(_), Some(_)) => {
                return Err(("every", "give either every or period, not both".into()))
            }
            (None, None) => {
                return Err((
                    "every",
                    "a refill needs every (e.g. 1d) or period (day, week, month, year)".into(),
                ))
            }
            (Some(every), None) => {
                if spec.anchor.is_some() || spec.time_zone.is_some() {
                    let field = if spec.anchor.is_some() {
                        "anchor"
                    } else {
                        "time_zone"
                    };
                    return Err((field, "only with period, not with every".into()));
                }
                let d = crate::duration::parse(every).map_err(|e| ("every", e.to_string()))?;
                if d < MIN_EVERY || d > MAX_EVERY || d.subsec_nanos() != 0 {
                    return Err((
                        "every",
                        format!("must be whole seconds from 1s to 366d, got {every:?}"),
                    ));
                }
                Schedule::Every {
                    secs: i64::try_from(d.as_secs()).map_err(|_| ("every", "too long".into()))?,
                }
            }
            (None, Some(period)) => {
                let period = Period::parse(period).map_err(|m| ("period", m))?;
                Schedule::Calendar(Calendar::new(&QuotaSpec {
                    period,
                    anchor: spec.anchor.clone(),
                    time_zone: spec.time_zone.clone(),
                })?)
            }
        };
        Ok(Self { amount, schedule })
    }

    /// The start (µs since the Unix epoch) of the period containing
    /// `now_us`; `None` only for instants no calendar covers.
    pub fn period_start_us(&self, now_us: i64) -> Option<i64> {
        match &self.schedule {
            Schedule::Every { secs } => {
                let len = secs.checked_mul(1_000_000)?;
                Some(now_us.div_euclid(len) * len)
            }
            Schedule::Calendar(c) => c.bounds(now_us).map(|b| b.start_us),
        }
    }

    /// The period start in whole seconds, as the Redis script compares it.
    pub fn period_start_secs(&self, now_us: i64) -> Option<i64> {
        self.period_start_us(now_us)
            .map(|us| us.div_euclid(1_000_000))
    }
}

/// Whether a balance last refilled for the period starting at `last`
/// (`None`: never) is due a refill in the period starting at `start`.
/// A proxy whose clock lags (an earlier `start`) never refills again.
pub fn due(last: Option<i64>, start: i64) -> bool {
    last.is_none_or(|l| l < start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(amount: u64, e: &str) -> RefillSpec {
        RefillSpec {
            amount: Some(amount),
            every: Some(e.into()),
            ..Default::default()
        }
    }

    fn cal(period: &str, anchor: Option<&str>, tz: Option<&str>) -> RefillSpec {
        RefillSpec {
            amount: Some(10),
            period: Some(period.into()),
            anchor: anchor.map(Into::into),
            time_zone: tz.map(Into::into),
            ..Default::default()
        }
    }

    fn us(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>()
            .map(|t| t.as_microsecond())
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn hostile_refills_are_refused_with_their_field() {
        for (spec, field) in [
            (
                RefillSpec {
                    every: Some("1d".into()),
                    ..Default::default()
                },
                "amount",
            ),
            (every(0, "1d"), "amount"),
            (every(u64::MAX, "1d"), "amount"),
            (every(1 << 53, "1d"), "amount"),
            (every(5, "0s"), "every"),
            (every(5, "500ms"), "every"),
            (every(5, "1500ms"), "every"),
            (every(5, "367d"), "every"),
            (every(5, "-1d"), "every"),
            (every(5, "soon"), "every"),
            (every(5, ""), "every"),
            (
                RefillSpec {
                    amount: Some(5),
                    ..Default::default()
                },
                "every",
            ),
            (
                RefillSpec {
                    period: Some("month".into()),
                    ..every(5, "1d")
                },
                "every",
            ),
            (
                RefillSpec {
                    anchor: Some("3".into()),
                    ..every(5, "1d")
                },
                "anchor",
            ),
            (
                RefillSpec {
                    time_zone: Some("UTC".into()),
                    ..every(5, "1d")
                },
                "time_zone",
            ),
            (cal("fortnight", None, None), "period"),
            (cal("month", Some("32"), None), "anchor"),
            (cal("day", Some("1"), None), "anchor"),
            (cal("month", None, Some("Mars/Olympus")), "time_zone"),
            (cal("month", None, Some("")), "time_zone"),
        ] {
            match Refill::new(&spec) {
                Err((f, _)) => assert_eq!(f, field, "{spec:?}"),
                Ok(r) => panic!("{spec:?} accepted: {r:?}"),
            }
        }
        let max = every((1 << 53) - 1, "366d");
        assert!(Refill::new(&max).is_ok());
    }

    #[test]
    fn fixed_periods_count_from_the_epoch() {
        let r = Refill::new(&every(100, "1d")).expect("valid");
        assert_eq!(r.amount, 100);
        let day = 86_400 * 1_000_000;
        assert_eq!(r.period_start_us(0), Some(0));
        assert_eq!(r.period_start_us(day - 1), Some(0));
        assert_eq!(r.period_start_us(day), Some(day));
        assert_eq!(r.period_start_us(-1), Some(-day));
        let h = Refill::new(&every(1, "1h")).expect("valid");
        assert_eq!(
            h.period_start_secs(us("2026-12-01T19:59:59.999Z")),
            Some(us("2026-12-01T19:00:00Z") / 1_000_000)
        );
    }

    #[test]
    fn calendar_periods_are_the_quotas() {
        // Anchor 31: February ends early, March starts on the 31st.
        let r = Refill::new(&cal("month", Some("31"), None)).expect("valid");
        assert_eq!(
            r.period_start_us(us("2028-03-01T00:00:00Z")),
            Some(us("2028-02-29T00:00:00Z"))
        );
        assert_eq!(
            r.period_start_us(us("2028-03-31T00:00:00Z")),
            Some(us("2028-03-31T00:00:00Z"))
        );
        // Paris: the period starts at local midnight, across DST.
        let p = Refill::new(&cal("month", Some("1"), Some("Europe/Paris"))).expect("valid");
        assert_eq!(
            p.period_start_us(us("2026-04-15T12:00:00Z")),
            Some(us("2026-03-31T22:00:00Z"))
        );
        assert_eq!(
            p.period_start_us(us("2026-03-31T21:59:59Z")),
            Some(us("2026-02-28T23:00:00Z"))
        );
    }

    #[test]
    fn a_refill_is_due_once_per_period() {
        let r = Refill::new(&every(5, "1h")).expect("valid");
        let hour = 3_600 * 1_000_000;
        let mut last = None;
        let mut refills = 0;
        // Every minute for five hours starting mid-hour: 6 periods touched.
        for minute in 0..300 {
            let now = hour / 2 + minute * 60 * 1_000_000;
            let start = r.period_start_us(now).expect("start");
            if due(last, start) {
                refills += 1;
                last = Some(start);
            }
            // A lagging clock (the previous period) is never due again.
            assert!(!due(last, start - hour));
        }
        assert_eq!(refills, 6);
    }
}
