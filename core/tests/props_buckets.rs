//! Property tests (issue #9, item 5) of the token-bucket arithmetic (GCRA):
//! it admits at most `burst + rate × window`, equals a plain token-bucket
//! model in exact integers, `decide` is all or nothing over several limits,
//! and absurd policies never become unlimited. Each property states what it
//! checks; the case counts keep the file to a few seconds.

use std::time::Duration;

use proptest::prelude::*;
use tollgate_core::limits::{self, check_bucket, decide, Limit, Policy};

use crate::common::config;

const MS: u64 = 1_000_000;

const S: u64 = 1_000_000_000;

/// The longest span core's arithmetic works with (as the Redis script does):
/// slower policies are clamped to it. 2^50 µs, 35.7 years.
const MAX_SPAN_NS: u64 = (1 << 50) * 1_000;

/// A bucket's parameters as the arithmetic uses them: emission interval `t`
/// (ns), capacity in tokens, and the cost of a request (`burst + 1` for a
/// request that never fits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Effective {
    t: u64,
    burst: u64,
    cost: u64,
}

fn effective(l: &Limit) -> Effective {
    let t = l.emission_interval_ns().min(MAX_SPAN_NS);
    let burst = l.burst().min(MAX_SPAN_NS / t);
    let cost = if l.cost() > l.burst() {
        burst + 1
    } else {
        l.cost().min(burst)
    };
    Effective { t, burst, cost }
}

/// A plain token bucket, in exact integer "token × T" units: `level` ns worth
/// of tokens (`capacity` = burst × T), refilled one ns per ns. The reference
/// the GCRA arithmetic must equal.
#[derive(Debug, Clone)]
struct Model {
    level: u128,
    last: u64,
}

impl Model {
    fn full(e: Effective) -> Self {
        Model {
            level: u128::from(e.burst) * u128::from(e.t),
            last: 0,
        }
    }

    fn refill(&mut self, e: Effective, now: u64) {
        let cap = u128::from(e.burst) * u128::from(e.t);
        self.level = (self.level + u128::from(now.saturating_sub(self.last))).min(cap);
        self.last = self.last.max(now);
    }

    fn tokens(&self, e: Effective) -> u64 {
        u64::try_from(self.level / u128::from(e.t)).expect("≤ burst")
    }

    /// Whether a request fits now (after `refill`).
    fn fits(&self, e: Effective, cost: u64) -> bool {
        cost <= e.burst && self.level >= u128::from(cost) * u128::from(e.t)
    }

    fn take(&mut self, e: Effective, cost: u64) {
        self.level -= u128::from(cost) * u128::from(e.t);
    }

    /// ns until a request of `cost` fits.
    fn wait(&self, e: Effective, cost: u64) -> u64 {
        let need = u128::from(cost) * u128::from(e.t);
        u64::try_from(need.saturating_sub(self.level)).expect("fits")
    }
}

/// Policies: everyday ones (a per of ms to days, burst around the rate,
/// costs around 1) and absurd ones (a per of centuries or more, bursts of
/// millions), where overflow would show.
fn policy() -> impl Strategy<Value = (u64, Duration, u64)> {
    prop_oneof![
        4 => (
            1..=1_000u64,
            prop_oneof![
                (1..=2_000u64).prop_map(Duration::from_millis),
                (1..=86_400u64).prop_map(Duration::from_secs),
            ],
            1..=200u64,
        ),
        1 => (
            1..=10u64,
            prop_oneof![
                (1..=100_000u64).prop_map(|d| Duration::from_secs(d * 86_400)),
                Just(Duration::from_millis(u64::MAX)),
            ],
            prop_oneof![1..=20u64, 1_000..=2_000_000u64, Just(u64::MAX)],
        ),
    ]
}

fn limit_with(rate: u64, per: Duration, burst: u64, cost: u64) -> Limit {
    Limit {
        name: "l".into(),
        rate,
        per,
        burst: Some(burst),
        cost: Some(cost),
        quota: None,
        scope: Default::default(),
    }
}

/// One request: time since the previous one, and its cost.
fn requests(max_gap: u64) -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec(
        (
            prop_oneof![3 => Just(0u64), 4 => 0..=max_gap, 1 => any::<u64>().prop_map(|g| g >> 2)],
            prop_oneof![6 => Just(1u64), 3 => 1..=8u64, 1 => 1..=300u64],
        ),
        1..120,
    )
}

/// Times stay below 2^62 ns (146 years): the local limiter's clock counts
/// from process start.
const MAX_NOW: u64 = 1 << 62;

fn times(start: u64, gaps: &[(u64, u64)]) -> Vec<u64> {
    let mut now = start;
    gaps.iter()
        .map(|&(gap, _)| {
            now = now.saturating_add(gap).min(MAX_NOW);
            now
        })
        .collect()
}

/// `(now, tokens taken, admitted)` of each request, on one bucket starting
/// full. The tokens taken are the request's cost, clamped with the burst for
/// absurd policies.
fn run_bucket(
    rate: u64,
    per: Duration,
    burst: u64,
    reqs: &[(u64, u64)],
    start: u64,
) -> Vec<(u64, u64, bool)> {
    let mut tat = 0;
    times(start, reqs)
        .into_iter()
        .zip(reqs)
        .map(|(now, &(_, cost))| {
            let l = limit_with(rate, per, burst, cost);
            let c = check_bucket(&l, tat, now);
            if c.allowed {
                tat = c.new_tat;
            }
            (now, effective(&l).cost, c.allowed)
        })
        .collect()
}

proptest! {
    #![proptest_config(config(512))]

    /// The bound: for every window [t0, t1] whose ends are request times,
    ///
    ///   Σ cost of admitted requests with t0 ≤ time ≤ t1  ≤  B + ⌊(t1 − t0) / T⌋
    ///
    /// where T = ⌊per / rate⌋ ns (the emission interval) and B = burst: the
    /// bucket holds at most B tokens at t0 (the "start-of-window full
    /// bucket") and earns one per T after. As T ≤ per / rate, this is at most
    /// B + rate × (t1 − t0) / per rounded down plus the truncation, and
    /// exactly B + ⌊rate × (t1 − t0) / per⌋ when rate divides per; that form
    /// is checked too. For absurd policies (B × T beyond 2^50 µs) B and T are
    /// the clamped values, as in the Redis script.
    #[test]
    fn bucket_admits_at_most_burst_plus_rate_times_window(
        (rate, per, burst) in policy(),
        reqs in requests(5 * S),
        start in prop_oneof![Just(1u64), 1..MAX_NOW / 2],
    ) {
        let e = effective(&limit_with(rate, per, burst, 1));
        let run = run_bucket(rate, per, burst, &reqs, start);
        let per_ns = per.as_nanos();
        let exact = per_ns % u128::from(rate) == 0 && e.t < MAX_SPAN_NS;
        for i in 0..run.len() {
            let t0 = run[i].0;
            let mut admitted = 0u128;
            for &(t1, cost, ok) in &run[i..] {
                if ok {
                    admitted += u128::from(cost);
                }
                let bound = u128::from(e.burst) + u128::from((t1 - t0) / e.t);
                prop_assert!(
                    admitted <= bound,
                    "[{}, {}]: admitted {} > {} (T {}, B {})", t0, t1, admitted, bound, e.t, e.burst
                );
                if exact {
                    let by_rate = u128::from(burst)
                        + u128::from(rate) * u128::from(t1 - t0) / per_ns;
                    prop_assert!(admitted <= by_rate, "{} > {}", admitted, by_rate);
                }
            }
        }
    }

    /// GCRA is exactly a token bucket: every decision, `remaining`,
    /// `retry_after` and `reset` equal a plain token-bucket model's; a refusal
    /// leaves the stored TAT as it was (takes nothing); and a refused request
    /// is admitted once its `retry_after` has passed (and not 1 ns before).
    #[test]
    fn bucket_equals_token_bucket_model(
        (rate, per, burst) in policy(),
        reqs in requests(3 * S),
        start in prop_oneof![Just(1u64), 1..MAX_NOW / 2],
    ) {
        let mut tat = 0u64;
        let base = limit_with(rate, per, burst, 1);
        let e0 = effective(&base);
        let mut model = Model::full(e0);
        model.last = start;
        let (mut admitted, mut refused) = (0, 0);
        for (now, &(_, cost)) in times(start, &reqs).into_iter().zip(&reqs) {
            let l = limit_with(rate, per, burst, cost);
            let e = effective(&l);
            model.refill(e, now);
            let c = check_bucket(&l, tat, now);
            let fits = model.fits(e, e.cost);
            prop_assert_eq!(c.allowed, fits, "now {}, cost {}, {:?}, {:?}", now, cost, e, model);
            if fits {
                admitted += 1;
                model.take(e, e.cost);
                prop_assert_eq!(c.remaining, model.tokens(e));
                prop_assert_eq!(c.retry_after_ns, 0);
                prop_assert!(c.new_tat >= now);
                tat = c.new_tat;
            } else {
                refused += 1;
                prop_assert_eq!(c.new_tat, tat, "a refusal takes nothing");
                prop_assert_eq!(c.remaining, model.tokens(e));
                if e.cost > e.burst {
                    prop_assert_eq!(c.retry_after_ns, u64::MAX);
                } else {
                    prop_assert_eq!(c.retry_after_ns, model.wait(e, e.cost));
                    prop_assert!(c.retry_after_ns > 0);
                    let later = now + c.retry_after_ns;
                    prop_assert!(check_bucket(&l, tat, later).allowed, "not admitted after retry_after");
                    prop_assert!(!check_bucket(&l, tat, later - 1).allowed, "retry_after longer than needed");
                }
            }
            // Reset: the bucket is full again after `reset_ns`, not before.
            let full = u128::from(e.burst) * u128::from(e.t);
            prop_assert_eq!(
                u128::from(c.reset_ns),
                full - model.level,
                "reset of {:?} at {}", c, now
            );
        }
        prop_assert_eq!(admitted + refused, reqs.len());
    }

    /// A whole request against several limits (`decide`): admitted only if
    /// each limit alone would admit it; a refusal returns no new TATs and
    /// reports every bucket as it stays (a non-violated one shows the tokens
    /// it has now, not minus the request); `Retry-After` is the longest wait
    /// of the violated limits, and waiting that long admits the request.
    #[test]
    fn decide_is_all_or_nothing(
        policies in prop::collection::vec((policy(), 1..=5u64), 1..4),
        reqs in requests(2 * S),
    ) {
        let limits: Vec<Limit> = policies
            .iter()
            .enumerate()
            .map(|(i, &((rate, per, burst), cost))| Limit {
                name: format!("l{i}"),
                rate,
                per,
                burst: Some(burst),
                cost: Some(cost),
                quota: None,
                scope: Default::default(),
            })
            .collect();
        let prepared: Vec<Policy> = limits.iter().map(Policy::new).collect();
        let refs: Vec<&Policy> = prepared.iter().collect();
        let mut tats = vec![0u64; limits.len()];
        let mut models: Vec<Model> = limits.iter().map(|l| Model::full(effective(l))).collect();
        for (now, _) in times(1, &reqs).into_iter().zip(&reqs) {
            let (d, new) = decide(&refs, &tats, now);
            for (m, l) in models.iter_mut().zip(&limits) {
                m.refill(effective(l), now);
            }
            let each: Vec<bool> = limits
                .iter()
                .zip(&models)
                .map(|(l, m)| m.fits(effective(l), effective(l).cost))
                .collect();
            prop_assert_eq!(d.allowed, each.iter().all(|&b| b));
            prop_assert_eq!(d.limits.len(), limits.len());
            for ((s, l), &fit) in d.limits.iter().zip(&limits).zip(&each) {
                prop_assert_eq!(&*s.name, l.name.as_str());
                prop_assert_eq!(s.quota, l.rate);
                prop_assert_eq!(s.violated, !fit);
            }
            match new {
                Some(new) => {
                    prop_assert!(d.allowed);
                    for ((m, l), s) in models.iter_mut().zip(&limits).zip(&d.limits) {
                        let e = effective(l);
                        m.take(e, e.cost);
                        prop_assert_eq!(s.remaining, m.tokens(e));
                    }
                    tats = new.to_vec();
                }
                None => {
                    prop_assert!(!d.allowed);
                    for ((m, l), s) in models.iter().zip(&limits).zip(&d.limits) {
                        prop_assert_eq!(s.remaining, m.tokens(effective(l)), "{:?}", s);
                    }
                    let retry = d.retry_after_secs();
                    let never = limits.iter().any(|l| l.cost() > l.burst());
                    let expected = limits
                        .iter()
                        .zip(&models)
                        .zip(&each)
                        .filter(|(_, &fit)| !fit)
                        .map(|((l, m), _)| {
                            let e = effective(l);
                            if e.cost > e.burst { limits::NEVER }
                            else { limits::ceil_secs(m.wait(e, e.cost)) }
                        })
                        .max()
                        .expect("a violated limit");
                    prop_assert_eq!(retry, expected);
                    if !never {
                        let later = now.saturating_add(retry.saturating_mul(S));
                        if later < MAX_NOW {
                            let (d2, _) = decide(&refs, &tats, later);
                            prop_assert!(d2.allowed, "refused again after Retry-After {}s", retry);
                        }
                    }
                }
            }
        }
    }
}

/// Regressions found by the properties above (kept as plain tests).
#[test]
fn absurd_policies_never_become_unlimited() {
    // One token per 100 years with a burst of 10: once the stored TAT passed
    // u64::MAX ns (584 years) it saturated, and from then on every request
    // was admitted.
    let l = limit_with(1, Duration::from_secs(36_500 * 86_400), 10, 1);
    let mut tat = 0;
    let admitted = (0..50)
        .filter(|_| {
            let c = check_bucket(&l, tat, S);
            if c.allowed {
                tat = c.new_tat;
            }
            c.allowed
        })
        .count();
    assert!(
        admitted <= 10,
        "{admitted} admitted at one instant, burst 10"
    );
    // One a day, a burst of a million (the Redis test's `huge`): clamped to
    // 2^50 µs worth of tokens, like the script, not unlimited.
    let l = limit_with(1, Duration::from_secs(86_400), 1_000_000, 1);
    let e = effective(&l);
    let c = check_bucket(&l, 0, S);
    assert!(c.allowed);
    assert_eq!(c.remaining, e.burst - 1);
    // A per of u64::MAX ms, burst 2.
    let l = limit_with(1, Duration::from_millis(u64::MAX), 2, 1);
    let mut tat = 0;
    let admitted = (0..10)
        .filter(|_| {
            let c = check_bucket(&l, tat, MS);
            if c.allowed {
                tat = c.new_tat;
            }
            c.allowed
        })
        .count();
    assert!(admitted <= 2, "{admitted}");
}
