//! Property tests (issue #9, item 5) of the proxy's rate-limit pieces: the
//! `RateLimit-Policy` / `RateLimit` header values, the in-process limiter
//! (`LocalLimiter`), and the Redis limiter against the local one (real Redis,
//! `TOLLGATE_TEST_REDIS_URL`; skipped with a notice when unset, failing
//! instead under `CI` / `TOLLGATE_REQUIRE_SERVICES`).

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use sfv::{BareItem, ListEntry, Parser};
use tollgate_core::limits::{Limit, LimitState};
use tollgate_proxy::headers;
use tollgate_proxy::limiter::redis::RedisLimiterOptions;
use tollgate_proxy::limiter::{Bucket, LocalLimiter, Scope, Subject};

mod common;

use common::redis::service_url;

/// `cases` cases, no regression files written next to the sources (failing
/// cases worth keeping become plain tests).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// --- headers -------------------------------------------------------------------

/// The largest sf-integer (RFC 8941: at most 15 digits).
const SF_MAX: u64 = 999_999_999_999_999;

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..=100_000u64,
        1 => 0..=SF_MAX,
        1 => SF_MAX - 3..=SF_MAX + 3,
        1 => any::<u64>(),
        1 => Just(u64::MAX),
    ]
}

fn limit_state() -> impl Strategy<Value = LimitState> {
    (
        prop_oneof![
            3 => "[a-z0-9_-]{1,16}",
            1 => "[ -~]{0,12}",
            1 => any::<String>(),
        ],
        (number(), number(), number(), number()),
        any::<bool>(),
        number(),
    )
        .prop_map(
            |(name, (quota, window_secs, remaining, reset_secs), violated, retry)| LimitState {
                name: name.into(),
                quota,
                window_secs,
                remaining,
                reset_secs,
                violated,
                retry_after_secs: retry,
            },
        )
}

/// The name as an sf-string holds it: printable ASCII kept, anything else `?`.
fn shown_name(name: &str) -> String {
    name.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

/// Parse a rendered field value as an sf-list and check it member by member:
/// one item per limit, in order, an sf-string of the (sanitised) name with
/// exactly the two integer parameters `keys`, of the expected values (capped
/// at the largest sf-integer).
fn check_list(
    field: &str,
    value: &str,
    limits: &[LimitState],
    keys: [&str; 2],
    numbers: impl Fn(&LimitState) -> [u64; 2],
) -> Result<(), TestCaseError> {
    prop_assert!(value.is_ascii(), "{}: {:?}", field, value);
    if limits.is_empty() {
        prop_assert_eq!(value, "");
        return Ok(());
    }
    let list = Parser::parse_list(value.as_bytes())
        .map_err(|e| TestCaseError::fail(format!("{field}: {value:?} is not an sf-list: {e}")))?;
    prop_assert_eq!(list.len(), limits.len(), "{}", value);
    for (entry, l) in list.iter().zip(limits) {
        let ListEntry::Item(item) = entry else {
            return Err(TestCaseError::fail(format!(
                "{field}: inner list in {value:?}"
            )));
        };
        prop_assert_eq!(&item.bare_item, &BareItem::String(shown_name(&l.name)));
        let got: Vec<(&str, Option<i64>)> = item
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_int()))
            .collect();
        let want: Vec<(&str, Option<i64>)> = keys
            .iter()
            .zip(numbers(l))
            .map(|(k, n)| (*k, i64::try_from(n.min(SF_MAX)).ok()))
            .collect();
        prop_assert_eq!(got, want, "{}: {}", field, value);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    /// For any limit states, both header values parse as sf-lists with one
    /// member per limit carrying the limit's numbers: `q` = quota and
    /// `w` = window in `RateLimit-Policy`, `r` = remaining and `t` = reset in
    /// `RateLimit`.
    #[test]
    fn headers_are_structured_fields(limits in prop::collection::vec(limit_state(), 0..6)) {
        let policy = headers::policy(&limits);
        check_list(headers::POLICY, &policy, &limits, ["q", "w"], |l| [l.quota, l.window_secs])?;
        let rl = headers::ratelimit(&limits);
        check_list(headers::RATELIMIT, &rl, &limits, ["r", "t"], |l| [l.remaining, l.reset_secs])?;
        // Each value is also a valid field line for `http`.
        prop_assert!(http::HeaderValue::from_str(&policy).is_ok());
        prop_assert!(http::HeaderValue::from_str(&rl).is_ok());
    }
}

#[test]
fn huge_numbers_stay_valid_structured_fields() {
    // Found by `headers_are_structured_fields`: a config may say
    // `rate: 10000000000000000` (any u64 is accepted), and the quota was
    // rendered as it is, 17 digits, which no Structured Fields parser accepts.
    assert!(Parser::parse_list(br#""big";q=10000000000000000;w=1"#).is_err());
    let l = LimitState {
        name: "big".into(),
        quota: 10_000_000_000_000_000,
        window_secs: 1,
        remaining: u64::MAX,
        reset_secs: 0,
        violated: false,
        retry_after_secs: 0,
    };
    let policy = headers::policy(std::slice::from_ref(&l));
    assert_eq!(policy, r#""big";q=999999999999999;w=1"#);
    assert!(Parser::parse_list(policy.as_bytes()).is_ok());
    let rl = headers::ratelimit(&[l]);
    assert_eq!(rl, r#""big";r=999999999999999;t=0"#);
    assert!(Parser::parse_list(rl.as_bytes()).is_ok());
}

// --- the local limiter -----------------------------------------------------------

const S: u64 = 1_000_000_000;

/// A plain token bucket in exact "ns worth of tokens" units: `level` out of
/// `burst × t`, refilled one ns per ns. The reference for each bucket.
#[derive(Debug, Clone, Copy)]
struct Model {
    level: u128,
    last: u64,
}

/// The numbers the arithmetic uses: core clamps absurd policies to 2^50 µs
/// (as the Redis script does); the policies here stay far below.
#[derive(Debug, Clone, Copy)]
struct Params {
    t: u64,
    burst: u64,
    cost: u64,
}

fn params(l: &Limit) -> Params {
    let p = Params {
        t: l.emission_interval_ns(),
        burst: l.burst(),
        cost: l.cost(),
    };
    assert!(u128::from(p.t) * u128::from(p.burst) < 1 << 60, "{l:?}");
    p
}

impl Model {
    fn new(p: Params, now: u64) -> Self {
        Model {
            level: u128::from(p.burst) * u128::from(p.t),
            last: now,
        }
    }

    fn refill(&mut self, p: Params, now: u64) {
        let cap = u128::from(p.burst) * u128::from(p.t);
        self.level = (self.level + u128::from(now - self.last)).min(cap);
        self.last = now;
    }

    fn fits(&self, p: Params) -> bool {
        p.cost <= p.burst && self.level >= u128::from(p.cost) * u128::from(p.t)
    }

    fn tokens(&self, p: Params) -> u64 {
        u64::try_from(self.level / u128::from(p.t)).expect("≤ burst")
    }
}

/// Everyday policies: a per of ms to an hour, costs mostly small, sometimes
/// above the burst (never admitted).
fn limit(name: String) -> impl Strategy<Value = Limit> {
    (
        1..=500u64,
        prop_oneof![
            (1..=5_000u64).prop_map(Duration::from_millis),
            (1..=3_600u64).prop_map(Duration::from_secs),
        ],
        1..=50u64,
        prop_oneof![8 => 1..=3u64, 2 => 1..=50u64, 1 => 51..=60u64],
    )
        .prop_map(move |(rate, per, burst, cost)| Limit {
            name: name.clone(),
            rate,
            per,
            burst: Some(burst),
            cost: Some(cost),
            quota: None,
            scope: Default::default(),
        })
}

fn pool() -> impl Strategy<Value = Vec<Bucket>> {
    (limit("a".into()), limit("b".into()), limit("c".into())).prop_map(|(a, b, c)| {
        vec![
            Bucket::new(Scope::Key, a),
            Bucket::new(Scope::Key, b),
            Bucket::new(Scope::Route("r"), c),
        ]
    })
}

#[derive(Debug, Clone)]
struct Step {
    gap_ns: u64,
    subject: usize,
    /// Which of the pool's buckets (bit i: bucket i), never none.
    buckets: u8,
    /// If refused: wait `Retry-After` and send the same request again.
    retry: bool,
    /// Sweep full buckets before this request.
    sweep: bool,
}

fn steps(max_gap: u64, n: usize) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (
            prop_oneof![3 => Just(0u64), 3 => 0..=max_gap, 1 => 0..=20 * max_gap],
            0..2usize,
            1..8u8,
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(gap_ns, subject, buckets, retry, sweep)| Step {
                gap_ns,
                subject,
                buckets,
                retry,
                sweep,
            }),
        1..n,
    )
}

/// Tokens taken from one bucket of one subject: `(time, cost)` of each
/// admitted request.
type Takes = HashMap<(usize, usize), Vec<(u64, u64)>>;

/// Drive a `LocalLimiter` and a model side by side; check every decision
/// against the model and return what was taken.
fn run_local(pool: &[Bucket], steps: &[Step]) -> Result<(Takes, u32, u32), TestCaseError> {
    let limiter = LocalLimiter::new(4);
    let subjects = [Subject::Key(1), Subject::Key(2)];
    let mut models: HashMap<(usize, usize), Model> = HashMap::new();
    let mut takes: Takes = HashMap::new();
    let (mut admitted, mut refused) = (0u32, 0u32);
    let mut now = 1u64;
    // (gap, subject, buckets, retry if refused, sweep first, must be admitted)
    let mut queue: Vec<(u64, usize, u8, bool, bool, bool)> = steps
        .iter()
        .rev()
        .map(|s| (s.gap_ns, s.subject, s.buckets, s.retry, s.sweep, false))
        .collect();
    while let Some((gap, who, mask, retry, sweep, must)) = queue.pop() {
        now += gap;
        if sweep {
            limiter.sweep_at(now);
        }
        let chosen: Vec<usize> = (0..pool.len()).filter(|i| mask & (1 << i) != 0).collect();
        let buckets: Vec<&Bucket> = chosen.iter().map(|&i| &pool[i]).collect();
        let d = limiter.check_at(&subjects[who], &buckets, now);
        prop_assert!(
            d.allowed || !must,
            "refused again after Retry-After: {:?}",
            d
        );
        let fits: Vec<bool> = chosen
            .iter()
            .map(|&i| {
                let p = params(&pool[i].limit);
                let m = models.entry((who, i)).or_insert_with(|| Model::new(p, now));
                m.refill(p, now);
                m.fits(p)
            })
            .collect();
        let all = fits.iter().all(|&f| f);
        prop_assert_eq!(d.allowed, all, "at {}: {:?}", now, d);
        prop_assert_eq!(d.limits.len(), chosen.len());
        for ((s, &i), &fit) in d.limits.iter().zip(&chosen).zip(&fits) {
            let p = params(&pool[i].limit);
            let m = models.get_mut(&(who, i)).expect("entered above");
            prop_assert_eq!(&*s.name, pool[i].limit.name.as_str());
            prop_assert_eq!(s.violated, !fit);
            if all {
                m.level -= u128::from(p.cost) * u128::from(p.t);
                takes.entry((who, i)).or_default().push((now, p.cost));
            }
            // A refusal takes nothing: each bucket reports what it holds.
            prop_assert_eq!(s.remaining, m.tokens(p), "{} at {}: {:?}", s.name, now, d);
        }
        if all {
            admitted += 1;
        } else {
            refused += 1;
            let never = buckets.iter().any(|b| b.limit.cost() > b.limit.burst());
            if retry && !never {
                // Nothing else happens until Retry-After has passed; then the
                // same request must be admitted.
                let wait = d.retry_after_secs();
                prop_assert!(wait > 0);
                queue.push((wait * S, who, mask, false, false, true));
            }
        }
    }
    Ok((takes, admitted, refused))
}

proptest! {
    #![proptest_config(config(256))]

    /// The local limiter, several subjects and buckets, requests at
    /// non-decreasing times, sweeps in between:
    ///
    /// - every decision equals a plain token-bucket model per (subject,
    ///   bucket): admitted iff every chosen bucket holds the cost;
    /// - a refusal takes nothing from any bucket (each reports what it holds);
    /// - a refused request sent again after its `Retry-After` (nothing else in
    ///   between) is admitted (the model says so, and the limiter is then
    ///   checked against the model on that retry);
    /// - sweeping (dropping full buckets) changes no decision;
    /// - for every bucket and window [t0, t1] (ends at request times) the
    ///   tokens taken are ≤ burst + ⌊(t1 − t0) / T⌋, T = ⌊per / rate⌋ ns: at
    ///   most a full bucket at t0, plus one token per T after.
    #[test]
    fn local_limiter_is_a_token_bucket(pool in pool(), steps in steps(S / 2, 80)) {
        let (takes, _, _) = run_local(&pool, &steps)?;
        for ((_, i), taken) in &takes {
            let p = params(&pool[*i].limit);
            for a in 0..taken.len() {
                let t0 = taken[a].0;
                let mut sum = 0u64;
                for &(t1, cost) in &taken[a..] {
                    sum += cost;
                    let bound = p.burst + (t1 - t0) / p.t;
                    prop_assert!(sum <= bound, "bucket {}: {} taken in [{}, {}] > {}", i, sum, t0, t1, bound);
                }
            }
        }
    }
}

#[test]
fn local_limiter_properties_are_not_vacuous() {
    // A run with a tight bucket both admits and refuses, and its bound is
    // reached exactly: a full bucket of 5 at one instant, then 1 per 100 ms.
    let pool = vec![Bucket::new(
        Scope::Key,
        Limit {
            name: "a".into(),
            rate: 10,
            per: Duration::from_secs(1),
            burst: Some(5),
            cost: None,
            quota: None,
            scope: Default::default(),
        },
    )];
    let step = |gap_ns| Step {
        gap_ns,
        subject: 0,
        buckets: 1,
        retry: false,
        sweep: false,
    };
    let mut steps: Vec<Step> = (0..8).map(|_| step(0)).collect();
    steps.extend((0..10).map(|_| step(S / 10)));
    let (takes, admitted, refused) = run_local(&pool, &steps).expect("consistent");
    assert_eq!((admitted, refused), (15, 3));
    let taken = &takes[&(0, 0)];
    assert_eq!(taken.len(), 15);
    // Window [first, last]: 5 + 1 s / 100 ms = 15, the bound exactly.
    assert_eq!(taken.last().expect("some").0 - taken[0].0, S);
}

// --- Redis against local ---------------------------------------------------------

/// Policies the two backends must agree on exactly: the emission interval a
/// whole number of seconds ≥ 60 (whole µs, so the script's µs and core's ns
/// agree; and long enough that Redis' real-time key expiry, set from the
/// simulated TATs, cannot fire during the test), plus an absurd one (one
/// token per century, bursts in the millions) where both clamp to 2^50 µs.
fn redis_limit(name: &'static str) -> impl Strategy<Value = Limit> {
    prop_oneof![
        4 => (60..=7 * 86_400u64, 1..=60u64, 1..=40u64, prop_oneof![6 => 1..=3u64, 2 => 1..=40u64, 1 => 41..=45u64]),
        1 => (
            Just(100 * 365 * 86_400u64),
            1..=2u64,
            prop_oneof![1..=5u64, 1_000_000..=5_000_000u64],
            1..=3u64,
        ),
    ]
    .prop_map(move |(interval_s, rate, burst, cost)| Limit {
        name: name.into(),
        rate,
        per: Duration::from_secs(interval_s * rate),
        burst: Some(burst),
        cost: Some(cost),
        quota: None,
        scope: Default::default(),
    })
}

/// The Redis script decides every request exactly like the local limiter,
/// field by field (allowed, remaining, reset, retry-after of every limit), at
/// the same instants (`check_at_us`), for random policies (several buckets
/// per request, costs above the burst, absurd policies) and request
/// sequences. 64 cases.
#[test]
fn redis_equals_local() {
    let (mut admitted, mut refused) = (0u32, 0u32);
    let strategy = common::model::cases(
        (redis_limit("a"), redis_limit("b"), redis_limit("c")),
        prop_oneof![3 => Just(0u64), 2 => 0..=120_000_000u64, 1 => 0..=3_600_000_000u64],
    );
    common::model::script_equals_model(RedisLimiterOptions::default(), 64, 1, strategy, |d| {
        if d.allowed {
            admitted += 1;
        } else {
            refused += 1;
        }
    });
    if service_url("TOLLGATE_TEST_REDIS_URL").is_none() {
        return;
    }
    eprintln!("redis == local over 64 random cases: {admitted} admitted, {refused} refused");
    assert!(admitted > 50 && refused > 50, "{admitted} / {refused}");
}
