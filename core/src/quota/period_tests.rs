use super::*;
use proptest::prelude::*;

fn cal(period: Period, anchor: Option<&str>, tz: &str) -> Calendar {
    Calendar::new(&QuotaSpec {
        period,
        anchor: anchor.map(Into::into),
        time_zone: Some(tz.into()),
    })
    .expect("valid calendar")
}

fn us(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<Timestamp>()
        .expect("timestamp")
        .as_microsecond()
}

fn bounds(c: &Calendar, at: &str) -> (i64, i64) {
    let b = c.bounds(us(at)).expect("bounds");
    (b.start_us, b.end_us)
}

#[test]
fn month_ends_clamp_the_anchor() {
    let c = cal(Period::Month, Some("31"), "UTC");
    assert_eq!(
        bounds(&c, "2026-02-15T12:00:00Z"),
        (us("2026-01-31T00:00:00Z"), us("2026-02-28T00:00:00Z"))
    );
    assert_eq!(
        bounds(&c, "2026-02-28T00:00:00Z"),
        (us("2026-02-28T00:00:00Z"), us("2026-03-31T00:00:00Z"))
    );
    assert_eq!(
        bounds(&c, "2026-04-30T23:59:59Z"),
        (us("2026-04-30T00:00:00Z"), us("2026-05-31T00:00:00Z"))
    );
    // Leap year: Feb 29.
    let c = cal(Period::Month, Some("30"), "UTC");
    assert_eq!(
        bounds(&c, "2028-03-01T00:00:00Z"),
        (us("2028-02-29T00:00:00Z"), us("2028-03-30T00:00:00Z"))
    );
    let c = cal(Period::Month, Some("29"), "UTC");
    assert_eq!(
        bounds(&c, "2027-03-01T00:00:00Z"),
        (us("2027-02-28T00:00:00Z"), us("2027-03-29T00:00:00Z"))
    );
    // The default anchor: the 1st, December to January.
    let c = cal(Period::Month, None, "UTC");
    assert_eq!(
        bounds(&c, "2026-12-31T23:59:59.999999Z"),
        (us("2026-12-01T00:00:00Z"), us("2027-01-01T00:00:00Z"))
    );
}

#[test]
fn years_and_feb_29() {
    let c = cal(Period::Year, Some("02-29"), "UTC");
    assert_eq!(
        bounds(&c, "2027-06-01T00:00:00Z"),
        (us("2027-02-28T00:00:00Z"), us("2028-02-29T00:00:00Z"))
    );
    assert_eq!(
        bounds(&c, "2028-02-28T12:00:00Z"),
        (us("2027-02-28T00:00:00Z"), us("2028-02-29T00:00:00Z"))
    );
    let c = cal(Period::Year, None, "UTC");
    assert_eq!(
        bounds(&c, "2026-12-01T00:00:00Z"),
        (us("2026-01-01T00:00:00Z"), us("2027-01-01T00:00:00Z"))
    );
}

#[test]
fn weeks_start_on_the_anchor_weekday() {
    // 2026-12-01 is a Tuesday.
    let c = cal(Period::Week, None, "UTC");
    assert_eq!(
        bounds(&c, "2026-12-01T10:00:00Z"),
        (us("2026-11-30T00:00:00Z"), us("2026-12-07T00:00:00Z"))
    );
    let c = cal(Period::Week, Some("Wed"), "UTC");
    assert_eq!(
        bounds(&c, "2026-12-01T10:00:00Z"),
        (us("2026-11-25T00:00:00Z"), us("2026-12-02T00:00:00Z"))
    );
}

#[test]
fn dst_days_in_paris_and_new_york() {
    // Paris springs forward on 2026-03-29 (23 h day), back on 2026-10-25 (25 h).
    let c = cal(Period::Day, None, "Europe/Paris");
    let b = c.bounds(us("2026-03-29T12:00:00Z")).expect("bounds");
    assert_eq!(
        (b.start_us, b.end_us),
        (us("2026-03-28T23:00:00Z"), us("2026-03-29T22:00:00Z"))
    );
    assert_eq!(b.len_secs(), 23 * 3600);
    let b = c.bounds(us("2026-10-25T12:00:00Z")).expect("bounds");
    assert_eq!(b.len_secs(), 25 * 3600);
    // A monthly boundary at local midnight on the DST day.
    let c = cal(Period::Month, Some("29"), "Europe/Paris");
    assert_eq!(
        bounds(&c, "2026-03-28T23:00:00Z"),
        (us("2026-03-28T23:00:00Z"), us("2026-04-28T22:00:00Z"))
    );
    assert_eq!(
        bounds(&c, "2026-03-28T22:59:59.999999Z"),
        // February has no 29th in 2026: that period began on the 28th.
        (us("2026-02-27T23:00:00Z"), us("2026-03-28T23:00:00Z"))
    );
    // New York: 2026-03-08 (23 h), 2026-11-01 (25 h).
    let c = cal(Period::Day, None, "America/New_York");
    assert_eq!(
        c.bounds(us("2026-03-08T12:00:00Z"))
            .expect("bounds")
            .len_secs(),
        23 * 3600
    );
    assert_eq!(
        bounds(&c, "2026-11-01T12:00:00Z"),
        (us("2026-11-01T04:00:00Z"), us("2026-11-02T05:00:00Z"))
    );
    let c = cal(Period::Month, Some("1"), "America/New_York");
    assert_eq!(
        bounds(&c, "2026-11-01T03:59:59Z"),
        (us("2026-10-01T04:00:00Z"), us("2026-11-01T04:00:00Z"))
    );
}

#[test]
fn a_missing_midnight_starts_the_day_after_the_gap() {
    // São Paulo skipped 00:00–01:00 on 2018-11-04 (UTC-3 to UTC-2).
    let c = cal(Period::Day, None, "America/Sao_Paulo");
    assert_eq!(
        bounds(&c, "2018-11-04T12:00:00Z"),
        (us("2018-11-04T03:00:00Z"), us("2018-11-05T02:00:00Z"))
    );
}

#[test]
fn hostile_specs_are_refused_with_the_field() {
    let spec = |period, anchor: Option<&str>, tz: Option<&str>| QuotaSpec {
        period,
        anchor: anchor.map(Into::into),
        time_zone: tz.map(Into::into),
    };
    for (s, field) in [
        (spec(Period::Month, Some("0"), None), "anchor"),
        (spec(Period::Month, Some("32"), None), "anchor"),
        (spec(Period::Month, Some("-1"), None), "anchor"),
        (spec(Period::Month, Some("1e3"), None), "anchor"),
        (
            spec(Period::Month, Some("99999999999999999999"), None),
            "anchor",
        ),
        (spec(Period::Day, Some("1"), None), "anchor"),
        (spec(Period::Week, Some("funday"), None), "anchor"),
        (spec(Period::Week, Some("mo"), None), "anchor"),
        (spec(Period::Year, Some("02-30"), None), "anchor"),
        (spec(Period::Year, Some("13-01"), None), "anchor"),
        (spec(Period::Year, Some("0-1"), None), "anchor"),
        (spec(Period::Year, Some("15"), None), "anchor"),
        (spec(Period::Month, None, Some("Mars/Olympus")), "time_zone"),
        (spec(Period::Month, None, Some("")), "time_zone"),
        (
            spec(Period::Month, None, Some("../../etc/passwd")),
            "time_zone",
        ),
        (
            spec(Period::Month, None, Some(&"A".repeat(10_000))),
            "time_zone",
        ),
        (
            spec(Period::Month, None, Some("Europe/Paris\0")),
            "time_zone",
        ),
    ] {
        let e = Calendar::new(&s).expect_err(&format!("{s:?}"));
        assert_eq!(e.0, field, "{s:?}: {}", e.1);
    }
    assert!(Calendar::new(&spec(Period::Week, Some("sunday"), Some("Asia/Kolkata"))).is_ok());
    assert!(Calendar::new(&spec(Period::Year, Some("12-31"), Some("UTC"))).is_ok());
    assert_eq!(
        Period::parse("fortnight").map_err(|e| e.contains("known")),
        Err(true)
    );
}

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];

fn calendars() -> impl Strategy<Value = Calendar> {
    let zone = || prop::sample::select(&ZONES[..]);
    prop_oneof![
        zone().prop_map(|z| cal(Period::Day, None, z)),
        (zone(), 0..7usize).prop_map(|(z, w)| cal(Period::Week, Some(WEEKDAYS[w].0), z)),
        (zone(), 1..=31i8).prop_map(|(z, d)| cal(Period::Month, Some(&d.to_string()), z)),
        (zone(), 1..=12i8, 1..=31i8).prop_map(|(z, m, d)| {
            let longest = Date::new(2000, m, 1).expect("month").days_in_month();
            cal(
                Period::Year,
                Some(&format!("{m:02}-{:02}", d.min(longest))),
                z,
            )
        }),
    ]
}

/// 1970 to 2100, in µs.
fn instants() -> impl Strategy<Value = i64> {
    0..4_102_444_800_000_000i64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// The period contains the instant; the next period starts where this
    /// one ends and the previous ends where it starts (contiguity).
    #[test]
    fn contains_and_is_contiguous(c in calendars(), now in instants()) {
        let b = c.bounds(now).expect("bounds");
        prop_assert!(b.start_us <= now && now < b.end_us);
        let next = c.bounds(b.end_us).expect("next");
        prop_assert_eq!(next.start_us, b.end_us);
        let prev = c.bounds(b.start_us - 1).expect("prev");
        prop_assert_eq!(prev.end_us, b.start_us);
        // Every instant of the period is in the same one.
        prop_assert_eq!(c.bounds(b.end_us - 1), Some(b));
        prop_assert_eq!(c.bounds(b.start_us), Some(b));
    }

    /// Later instants never get an earlier period.
    #[test]
    fn monotonic(c in calendars(), a in instants(), d in 0..40_000_000_000_000i64) {
        let (x, y) = (c.bounds(a).expect("a"), c.bounds(a + d).expect("b"));
        prop_assert!(x.start_us <= y.start_us && x.end_us <= y.end_us);
    }

    /// Lengths stay within the calendar's (± DST hours), and a period starts
    /// at the anchor day's local midnight (the day's first instant).
    #[test]
    fn lengths_and_anchors(c in calendars(), now in instants()) {
        let b = c.bounds(now).expect("bounds");
        let len = b.end_us - b.start_us;
        let h = 3_600_000_000i64;
        let (lo, hi) = match c.period {
            Period::Day => (22 * h, 26 * h),
            Period::Week => (7 * 24 * h - 2 * h, 7 * 24 * h + 2 * h),
            Period::Month => (28 * 24 * h - 2 * h, 31 * 24 * h + 2 * h),
            Period::Year => (365 * 24 * h - 2 * h, 366 * 24 * h + 2 * h),
        };
        prop_assert!(lo <= len && len <= hi, "{len}");
        let start = Timestamp::from_microsecond(b.start_us).expect("ts").to_zoned(c.tz.clone());
        prop_assert_eq!(start.start_of_day().expect("day").timestamp().as_microsecond(), b.start_us);
        let d = start.date();
        match c.anchor {
            Anchor::Daily => {}
            Anchor::Weekday(w) => prop_assert_eq!(d.weekday(), w),
            Anchor::DayOfMonth(a) => prop_assert_eq!(d.day(), a.min(d.days_in_month())),
            Anchor::MonthDay(m, a) => {
                prop_assert_eq!(d.month(), m);
                prop_assert_eq!(d.day(), a.min(d.days_in_month()));
            }
        }
    }
}
