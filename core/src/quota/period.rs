//! Period arithmetic: which calendar period contains an instant. Pure, no
//! I/O: the tz database is bundled into the binary (jiff's
//! `tzdb-bundle-always`), so every proxy computes the same boundaries.
//!
//! A period starts at local midnight of its anchor day in its time zone:
//!
//! - `day`: every day (no anchor);
//! - `week`: the anchor weekday (default Monday);
//! - `month`: the anchor day of month `1..=31` (default 1), clamped to the
//!   month's last day (anchor 31: Jan 31, Feb 28/29, Mar 31, Apr 30);
//! - `year`: the anchor `MM-DD` (default `01-01`), clamped the same way
//!   (`02-29`: Feb 28 in common years).
//!
//! Where local midnight does not exist (a DST gap at midnight), the period
//! starts at the first instant of that day. The end of a period is the
//! start of the next, so periods are contiguous and never overlap; a DST
//! day is 23 or 25 hours long.

use std::fmt;
use std::time::Duration;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::{Deserialize, Serialize};

use super::QuotaSpec;

/// How long a quota's period is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            "month" => Ok(Self::Month),
            "year" => Ok(Self::Year),
            other => Err(format!(
                "unknown period {other:?} (known: day, week, month, year)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Year => "year",
        }
    }

    /// A whole number of days at least as long as any period of this kind,
    /// stored as a quota limit's `per` (the counting never uses it).
    pub fn nominal(self) -> Duration {
        let days = match self {
            Self::Day => 1,
            Self::Week => 7,
            Self::Month => 31,
            Self::Year => 366,
        };
        Duration::from_secs(days * 86_400)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a period starts, parsed from `anchor` for its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Daily,
    Weekday(Weekday),
    /// Day of month, `1..=31`.
    DayOfMonth(i8),
    /// Month `1..=12` and day `1..=31` (at most the month's longest).
    MonthDay(i8, i8),
}

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("monday", Weekday::Monday),
    ("tuesday", Weekday::Tuesday),
    ("wednesday", Weekday::Wednesday),
    ("thursday", Weekday::Thursday),
    ("friday", Weekday::Friday),
    ("saturday", Weekday::Saturday),
    ("sunday", Weekday::Sunday),
];

impl Anchor {
    /// The 1st, Monday, `01-01`.
    pub fn default_for(period: Period) -> Self {
        match period {
            Period::Day => Self::Daily,
            Period::Week => Self::Weekday(Weekday::Monday),
            Period::Month => Self::DayOfMonth(1),
            Period::Year => Self::MonthDay(1, 1),
        }
    }

    /// `anchor` for `period`; `None` is the default (1st, Monday, `01-01`).
    pub fn parse(period: Period, anchor: Option<&str>) -> Result<Self, String> {
        let Some(text) = anchor.map(str::trim) else {
            return Ok(Self::default_for(period));
        };
        match period {
            Period::Day => Err("a daily quota has no anchor (it starts every midnight)".into()),
            Period::Week => {
                let lower = text.to_ascii_lowercase();
                WEEKDAYS
                    .iter()
                    .find(|(name, _)| {
                        *name == lower || (lower.len() == 3 && name.starts_with(&lower))
                    })
                    .map(|&(_, d)| Self::Weekday(d))
                    .ok_or_else(|| format!("expected a weekday (monday … sunday), got {text:?}"))
            }
            Period::Month => match text.parse::<i8>() {
                Ok(d) if (1..=31).contains(&d) => Ok(Self::DayOfMonth(d)),
                _ => Err(format!(
                    "expected a day of month from 1 to 31, got {text:?}"
                )),
            },
            Period::Year => {
                let bad =
                    || format!("expected a month and day as MM-DD (e.g. 03-15), got {text:?}");
                let (m, d) = text.split_once('-').ok_or_else(bad)?;
                let (m, d) = (
                    m.parse::<i8>().map_err(|_| bad())?,
                    d.parse::<i8>().map_err(|_| bad())?,
                );
                // The month's longest length (a leap year's February).
                let longest = Date::new(2000, m.clamp(1, 12), 1).map_or(0, |x| x.days_in_month());
                if !(1..=12).contains(&m) || d < 1 || d > longest {
                    return Err(bad());
                }
                Ok(Self::MonthDay(m, d))
            }
        }
    }
}

/// A quota's calendar, checked and compiled: find the period of an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    pub period: Period,
    pub anchor: Anchor,
    pub tz: TimeZone,
    /// The time zone's name as written (`UTC` by default).
    pub tz_name: String,
}

/// One period: `[start, end)` in µs since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeriodBounds {
    pub start_us: i64,
    pub end_us: i64,
}

impl PeriodBounds {
    /// Whole seconds (rounded up) from `now_us` until the period ends.
    pub fn secs_to_end(&self, now_us: i64) -> u64 {
        let us = u64::try_from(self.end_us.saturating_sub(now_us)).unwrap_or(0);
        us.div_ceil(1_000_000)
    }

    /// The period's length in whole seconds (rounded up), at least 1.
    pub fn len_secs(&self) -> u64 {
        let us = u64::try_from(self.end_us.saturating_sub(self.start_us)).unwrap_or(0);
        us.div_ceil(1_000_000).max(1)
    }
}

impl Calendar {
    /// The one check of a quota's `period`, `anchor` and `time_zone`
    /// (the error names the field).
    pub fn new(spec: &QuotaSpec) -> Result<Self, (&'static str, String)> {
        let anchor =
            Anchor::parse(spec.period, spec.anchor.as_deref()).map_err(|m| ("anchor", m))?;
        let tz_name = spec.time_zone.clone().unwrap_or_else(|| "UTC".into());
        if tz_name.is_empty() || tz_name.len() > 64 {
            return Err(("time_zone", format!("unknown time zone {tz_name:?}")));
        }
        let tz = TimeZone::get(&tz_name).map_err(|_| {
            (
                "time_zone",
                format!(
                    "unknown time zone {tz_name:?} (use an IANA name such as Europe/Paris or UTC)"
                ),
            )
        })?;
        Ok(Self {
            period: spec.period,
            anchor,
            tz,
            tz_name,
        })
    }

    /// [`Self::new`] for a spec already checked (config load, admin API);
    /// one that is not (never after validation) counts in its period's
    /// default calendar in UTC rather than not at all.
    pub fn compile(spec: &QuotaSpec) -> Self {
        Self::new(spec).unwrap_or_else(|_| Self {
            period: spec.period,
            anchor: Anchor::default_for(spec.period),
            tz: TimeZone::UTC,
            tz_name: "UTC".into(),
        })
    }

    /// The period containing `now_us` (µs since the Unix epoch): `start ≤
    /// now < end`. `None` only for instants outside years 1..9998.
    pub fn bounds(&self, now_us: i64) -> Option<PeriodBounds> {
        let now = Timestamp::from_microsecond(now_us).ok()?;
        let today = now.to_zoned(self.tz.clone()).date();
        let start = self.start_on_or_before(today)?;
        let end = self.next_start(start)?;
        let (start_us, end_us) = (self.midnight(start)?, self.midnight(end)?);
        (start_us <= now_us && now_us < end_us).then_some(PeriodBounds { start_us, end_us })
    }

    /// The first instant of local date `d`, in µs.
    fn midnight(&self, d: Date) -> Option<i64> {
        Some(
            d.to_zoned(self.tz.clone())
                .ok()?
                .start_of_day()
                .ok()?
                .timestamp()
                .as_microsecond(),
        )
    }

    /// The date the period containing local date `d` starts on.
    fn start_on_or_before(&self, d: Date) -> Option<Date> {
        match self.anchor {
            Anchor::Daily => Some(d),
            Anchor::Weekday(w) => {
                let back =
                    (d.weekday().to_monday_zero_offset() - w.to_monday_zero_offset()).rem_euclid(7);
                d.checked_sub(Span::new().days(back)).ok()
            }
            Anchor::DayOfMonth(a) => {
                let this = clamped(d.year(), d.month(), a)?;
                if this <= d {
                    Some(this)
                } else {
                    let prev = d.first_of_month().yesterday().ok()?;
                    clamped(prev.year(), prev.month(), a)
                }
            }
            Anchor::MonthDay(m, a) => {
                let this = clamped(d.year(), m, a)?;
                if this <= d {
                    Some(this)
                } else {
                    clamped(d.year().checked_sub(1)?, m, a)
                }
            }
        }
    }

    /// The start date of the period after the one starting on `start`.
    fn next_start(&self, start: Date) -> Option<Date> {
        match self.anchor {
            Anchor::Daily => start.tomorrow().ok(),
            Anchor::Weekday(_) => start.checked_add(Span::new().days(7)).ok(),
            Anchor::DayOfMonth(a) => {
                let next = start
                    .first_of_month()
                    .checked_add(Span::new().months(1))
                    .ok()?;
                clamped(next.year(), next.month(), a)
            }
            Anchor::MonthDay(m, a) => clamped(start.year().checked_add(1)?, m, a),
        }
    }
}

/// Day `day` of a month, or its last day if the month is shorter.
fn clamped(year: i16, month: i8, day: i8) -> Option<Date> {
    let first = Date::new(year, month, 1).ok()?;
    Date::new(year, month, day.min(first.days_in_month())).ok()
}

#[cfg(test)]
#[path = "period_tests.rs"]
mod tests;
