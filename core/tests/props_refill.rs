//! Property tests of credit refills (`tollgate_core::refill`): every
//! instant lies in exactly one period, periods are contiguous, calendar
//! refills use exactly the quota calendar's periods, and a sequence of
//! instants refills exactly once per period it touches.

use proptest::prelude::*;
use tollgate_core::quota::{Calendar, Period, QuotaSpec};
use tollgate_core::refill::{due, Refill, RefillSpec};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Instants between 1970 and 2100, in µs.
fn instant() -> impl Strategy<Value = i64> {
    0i64..4_102_444_800_000_000
}

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
];

fn calendar_spec() -> impl Strategy<Value = (Period, Option<String>, &'static str)> {
    (0usize..4, 1i8..=31, 0usize..7, 0usize..ZONES.len()).prop_map(|(p, day, wd, z)| {
        let period = [Period::Day, Period::Week, Period::Month, Period::Year][p];
        let anchor = match period {
            Period::Day => None,
            Period::Week => Some(
                [
                    "monday",
                    "tuesday",
                    "wednesday",
                    "thursday",
                    "friday",
                    "saturday",
                    "sunday",
                ][wd]
                    .to_string(),
            ),
            Period::Month => Some(day.to_string()),
            Period::Year => Some(format!("{:02}-{:02}", wd + 1, day.min(28))),
        };
        (period, anchor, ZONES[z])
    })
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn fixed_periods_contain_their_instant(now in instant(), secs in 1u64..=366 * 86_400) {
        let r = Refill::new(&RefillSpec {
            amount: Some(1),
            every: Some(format!("{secs}s")),
            ..RefillSpec::default()
        }).expect("valid");
        let len = i64::try_from(secs).expect("small") * 1_000_000;
        let start = r.period_start_us(now).expect("start");
        prop_assert!(start <= now && now < start + len);
        prop_assert_eq!(start % len, 0);
        // The next period starts where this one ends.
        prop_assert_eq!(r.period_start_us(start + len), Some(start + len));
        prop_assert_eq!(r.period_start_us(start + len - 1), Some(start));
    }

    #[test]
    fn calendar_refills_are_the_quota_periods(now in instant(), (period, anchor, tz) in calendar_spec()) {
        let spec = RefillSpec {
            amount: Some(1),
            period: Some(period.as_str().into()),
            anchor: anchor.clone(),
            time_zone: Some(tz.into()),
            ..RefillSpec::default()
        };
        let r = Refill::new(&spec).expect("valid");
        let cal = Calendar::new(&QuotaSpec { period, anchor, time_zone: Some(tz.into()) })
            .expect("valid");
        let b = cal.bounds(now).expect("bounds");
        prop_assert_eq!(r.period_start_us(now), Some(b.start_us));
        prop_assert_eq!(r.period_start_us(b.end_us), Some(b.end_us));
        prop_assert_eq!(r.period_start_us(b.end_us - 1), Some(b.start_us));
    }

    #[test]
    fn a_sequence_refills_once_per_period_touched(
        start in instant(),
        steps in prop::collection::vec(0i64..7_200_000_000, 1..60),
        secs in 60u64..=86_400,
    ) {
        let r = Refill::new(&RefillSpec {
            amount: Some(1),
            every: Some(format!("{secs}s")),
            ..RefillSpec::default()
        }).expect("valid");
        let mut now = start;
        let mut last = None;
        let mut refills = 0;
        let mut periods = std::collections::BTreeSet::new();
        for step in steps {
            now += step;
            let p = r.period_start_us(now).expect("start");
            periods.insert(p);
            if due(last, p) {
                refills += 1;
                last = Some(p);
            }
        }
        prop_assert_eq!(refills, periods.len());
    }
}
