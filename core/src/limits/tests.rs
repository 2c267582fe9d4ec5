use super::*;

fn limit(rate: u64, per_s: u64, burst: Option<u64>, cost: Option<u64>) -> Limit {
    Limit::new("l", rate, Duration::from_secs(per_s), burst, cost)
}

const S: u64 = 1_000_000_000;

#[test]
fn peeking_reports_without_taking() {
    let l = limit(10, 1, Some(5), None);
    assert_eq!(peek_bucket(&Policy::new(&l), 0).remaining, 5);
    assert_eq!(peek_bucket(&Policy::new(&l), 0).reset_secs, 0);
    // Two tokens spent (200 ms until full): 3 left.
    let p = peek_bucket(&Policy::new(&l), 2 * S / 10);
    assert_eq!(
        (p.remaining, p.reset_secs, p.quota, p.window_secs),
        (3, 1, 10, 1)
    );
    // Past the capacity (a stored TAT of an older, bigger limit): 0, bounded reset.
    let p = peek_bucket(&Policy::new(&l), 100 * S);
    assert_eq!((p.remaining, p.reset_secs), (0, 1));
}

#[test]
fn burst_then_refuse_then_refill() {
    let l = limit(10, 1, Some(5), None);
    let mut tat = 0;
    let now = 100 * S;
    for i in 0..5 {
        let c = check_bucket(&l, tat, now);
        assert!(c.allowed, "request {i}");
        assert_eq!(c.remaining, 4 - i);
        tat = c.new_tat;
    }
    let c = check_bucket(&l, tat, now);
    assert!(!c.allowed);
    assert_eq!(c.remaining, 0);
    assert_eq!(c.retry_after_ns, S / 10);
    // One token back after 100 ms.
    let c = check_bucket(&l, tat, now + S / 10);
    assert!(c.allowed);
    assert_eq!(c.remaining, 0);
}

#[test]
fn one_clamp_in_both_units() {
    // Whole microseconds per token: the units agree exactly.
    for l in [
        limit(10, 1, Some(5), None),
        limit(1, 100 * 365 * 86_400, None, None),
        limit(1, 1, Some(u64::MAX), Some(u64::MAX)),
        limit(2, 1, Some(1), Some(3)),
    ] {
        let (ns, us) = (clamp_ns(&l), clamp_us(&l));
        assert_eq!(ns.interval, us.interval * 1_000, "{l:?}");
        assert_eq!((ns.burst, ns.cost), (us.burst, us.cost), "{l:?}");
        assert!(ns.burst * ns.interval <= MAX_SPAN_NS, "{l:?}");
    }
    // A cost above the burst stays above it after the clamp.
    let c = clamp_ns(&limit(2, 1, Some(1), Some(3)));
    assert_eq!(c.cost, c.burst + 1);
}

#[test]
fn cost_above_burst_never_fits() {
    let l = limit(10, 1, Some(5), Some(6));
    assert!(l.never_fits() && !limit(10, 1, Some(5), Some(5)).never_fits());
    let c = check_bucket(&l, 0, S);
    assert!(!c.allowed);
    assert_eq!(c.retry_after_ns, NEVER);
}

/// Black-box round 10: a cost above the burst was answered
/// `Retry-After: 18446744074` (`u64::MAX` ns rounded up to seconds).
#[test]
fn a_cost_above_the_burst_is_refused_for_ever_not_for_584_years() {
    let never = Policy::new(&limit(10, 1, Some(5), Some(6)));
    let slow = Policy::new(&limit(1, 60, Some(1), None));
    let (d, _) = decide(&[&never], &[0], S);
    assert!(!d.allowed);
    assert_eq!(d.limits[0].retry_after_secs, NEVER);
    assert_eq!(d.retry_after(), RetryAfter::Never);
    // The bucket is untouched and full: its reset stays sane.
    assert_eq!((d.limits[0].remaining, d.limits[0].reset_secs), (5, 0));
    // Beside a limit that only needs a wait: still never.
    let (_, tats) = decide(&[&slow], &[0], S);
    let tat = tats.expect("admitted")[0];
    let (d, _) = decide(&[&slow, &never], &[tat, 0], S);
    assert_eq!(d.retry_after(), RetryAfter::Never);
    let (d, _) = decide(&[&slow], &[tat], S);
    assert_eq!(d.retry_after(), RetryAfter::Secs(60));
    assert_eq!(retry_secs(NEVER), NEVER);
    assert_eq!(retry_secs(1), 1);
}

#[test]
fn cost_takes_several_tokens() {
    let l = limit(10, 1, None, Some(4));
    let c = check_bucket(&l, 0, S);
    assert!(c.allowed);
    assert_eq!(c.remaining, 6);
}

#[test]
fn multi_limit_refusal_takes_nothing() {
    let a = limit(100, 1, None, None);
    let b = limit(1, 60, Some(1), None);
    let now = 10 * S;
    let (a, b) = (Policy::new(&a), Policy::new(&b));
    let (d, tats) = decide(&[&a, &b], &[0, 0], now);
    assert!(d.allowed);
    let tats = tats.expect("admitted");
    let (d2, none) = decide(&[&a, &b], &tats, now);
    assert!(!d2.allowed);
    assert!(none.is_none());
    assert_eq!(d2.violated_names(), vec!["l"]);
    assert!(!d2.limits[0].violated);
    assert_eq!(
        d2.limits[0].remaining, 99,
        "refused request took nothing from a"
    );
    assert_eq!(d2.retry_after_secs(), 60);
}

#[test]
fn admitted_never_exceeds_burst_plus_rate_times_t() {
    let l = limit(7, 3, Some(4), Some(1));
    let mut tat = 0;
    let mut admitted = 0u64;
    let start = 50 * S;
    // A request every 13 ms for 20 s.
    let mut now = start;
    while now < start + 20 * S {
        let c = check_bucket(&l, tat, now);
        if c.allowed {
            admitted += 1;
            tat = c.new_tat;
        }
        now += 13_000_000;
    }
    let bound = 4 + 7 * 20 / 3;
    assert!(admitted <= bound, "{admitted} > {bound}");
    assert!(admitted + 1 >= bound, "{admitted} much less than {bound}");
}
