//! Limiter scenarios shared by the backends' tests: the same table runs
//! against the local limiter (explicit times) and against Redis (real time,
//! in `proxy/tests/redis_limiter.rs`), and both must decide identically.
//!
//! Redis takes its time from its own clock, so every scenario but the
//! real-time one uses refill rates per hour: a few ms (or seconds) of elapsed
//! time change nothing. The real-time scenario uses a 500 ms emission
//! interval and schedules its requests half an interval away from every
//! boundary, so it tolerates ±250 ms of scheduling jitter.
//!
//! Test support only: not used by the proxy itself.

mod cost;
pub mod credits;
pub mod quota;

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use tollgate_core::cost::Settle;
use tollgate_core::limits::{Decision, Limit};

use super::{Bucket, LocalLimiter, Scope, Subject};

/// Which subject a step speaks for; the runner maps it to a real [`Subject`]
/// that is unique to the run (see [`SubjectSpec::subject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectSpec {
    Key(i64),
    Ip(u16),
    /// Key `key` of identity `identity` ([`Subject::Member`]).
    Member {
        key: i64,
        identity: i64,
    },
}

impl SubjectSpec {
    /// The real subject for this spec in the run `base` (distinct bases give
    /// distinct subjects, so runs against a shared Redis never collide).
    pub fn subject(self, base: i64) -> Subject {
        match self {
            SubjectSpec::Key(n) => Subject::Key(base.wrapping_add(n)),
            SubjectSpec::Member { key, identity } => Subject::Member {
                key: base.wrapping_add(key),
                identity: base.wrapping_add(identity),
            },
            SubjectSpec::Ip(n) => {
                let b = base.to_be_bytes();
                let segs = [
                    0xfd00,
                    u16::from_be_bytes([b[0], b[1]]),
                    u16::from_be_bytes([b[2], b[3]]),
                    u16::from_be_bytes([b[4], b[5]]),
                    u16::from_be_bytes([b[6], b[7]]),
                    0,
                    0,
                    n,
                ];
                Subject::Ip(IpAddr::V6(Ipv6Addr::new(
                    segs[0], segs[1], segs[2], segs[3], segs[4], segs[5], segs[6], segs[7],
                )))
            }
        }
    }
}

/// One request of a scenario.
#[derive(Debug, Clone)]
pub struct Step {
    /// When, in ms after the scenario starts.
    pub at_ms: u64,
    pub subject: SubjectSpec,
    /// Indices into [`Scenario::buckets`].
    pub buckets: Vec<usize>,
    /// The expected admission (anchors the table itself).
    pub allowed: bool,
    /// Not a request: settle a cost reservation on these buckets
    /// (`routes[].cost`); its outcome lists the tokens applied.
    pub settle: Option<Settle>,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub buckets: Vec<Bucket>,
    pub steps: Vec<Step>,
}

impl Scenario {
    /// Whether the outcome depends on real elapsed time (Redis runners must
    /// then sleep until each step's `at_ms`).
    pub fn is_realtime(&self) -> bool {
        self.steps.iter().any(|s| s.at_ms > 0)
    }

    pub fn step_buckets(&self, step: &Step) -> Vec<&Bucket> {
        step.buckets.iter().map(|&i| &self.buckets[i]).collect()
    }
}

/// What a backend decided for one step, reduced to what the backends must
/// agree on exactly (admission, per-limit violation and remaining tokens)
/// and on within a second (reset and retry-after).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// (name, violated, remaining, reset_secs, retry_after_secs) per limit.
    pub limits: Vec<(String, bool, u64, u64, u64)>,
}

impl From<&Decision> for Outcome {
    fn from(d: &Decision) -> Self {
        Self {
            allowed: d.allowed,
            limits: d
                .limits
                .iter()
                .map(|l| {
                    (
                        l.name.to_string(),
                        l.violated,
                        l.remaining,
                        l.reset_secs,
                        l.retry_after_secs,
                    )
                })
                .collect(),
        }
    }
}

impl Outcome {
    /// A settlement step's outcome: per bucket its name, whether tokens
    /// went back, and how many were applied.
    pub fn settled(buckets: &[&Bucket], applied: &[i64]) -> Self {
        Self {
            allowed: true,
            limits: buckets
                .iter()
                .zip(applied)
                .map(|(b, &a)| (b.limit.name.clone(), a < 0, a.unsigned_abs(), 0, 0))
                .collect(),
        }
    }
}

/// Compare two backends' outcomes of one scenario: identical admissions,
/// violations and remaining counts; reset and retry-after within 1 s
/// (Redis' clock moves on between requests).
pub fn compare(scenario: &Scenario, local: &[Outcome], other: &[Outcome]) -> Result<(), String> {
    if local.len() != other.len() {
        return Err(format!(
            "{}: {} vs {} outcomes",
            scenario.name,
            local.len(),
            other.len()
        ));
    }
    for (i, ((a, b), step)) in local.iter().zip(other).zip(&scenario.steps).enumerate() {
        let fail = |what: &str| {
            Err(format!(
                "{} step {i} ({step:?}): {what}\n local: {a:?}\n other: {b:?}",
                scenario.name
            ))
        };
        if a.allowed != step.allowed {
            return fail("local backend disagrees with the table");
        }
        if a.allowed != b.allowed || a.limits.len() != b.limits.len() {
            return fail("different admission");
        }
        for (la, lb) in a.limits.iter().zip(&b.limits) {
            if la.0 != lb.0 || la.1 != lb.1 || la.2 != lb.2 {
                return fail("different limit state");
            }
            if la.3.abs_diff(lb.3) > 1 || la.4.abs_diff(lb.4) > 1 {
                return fail("reset / retry-after differ by more than 1 s");
            }
        }
    }
    Ok(())
}

/// Run a scenario against a fresh local limiter with explicit times.
pub fn run_local(scenario: &Scenario, base: i64) -> Vec<Outcome> {
    const START_NS: u64 = 1_000_000_000_000;
    let limiter = LocalLimiter::new(16);
    scenario
        .steps
        .iter()
        .map(|step| {
            let buckets = scenario.step_buckets(step);
            let now = START_NS + step.at_ms * 1_000_000;
            let subject = step.subject.subject(base);
            // Quotas' periods on the wall clock, as Redis runners take them.
            let wall = super::quota::wall_now_us();
            if let Some(settle) = step.settle {
                let applied = limiter.settle_at(&subject, &buckets, settle, now, wall, wall);
                return Outcome::settled(&buckets, &applied);
            }
            Outcome::from(&limiter.check_at_wall(&subject, &buckets, now, wall))
        })
        .collect()
}

fn limit(name: &str, rate: u64, per: Duration, burst: u64, cost: u64) -> Limit {
    Limit::new(name, rate, per, Some(burst), Some(cost))
}

/// [`limit`] with `scope: identity`.
fn shared(name: &str, rate: u64, per: Duration, burst: u64, cost: u64) -> Limit {
    Limit {
        scope: tollgate_core::limits::LimitScope::Identity,
        ..limit(name, rate, per, burst, cost)
    }
}

pub(super) const HOUR: Duration = Duration::from_secs(3600);

fn step(subject: SubjectSpec, buckets: &[usize], allowed: bool) -> Step {
    Step {
        at_ms: 0,
        subject,
        buckets: buckets.to_vec(),
        allowed,
        settle: None,
    }
}

fn member(key: i64, identity: i64) -> SubjectSpec {
    SubjectSpec::Member { key, identity }
}

fn at(at_ms: u64, subject: SubjectSpec, buckets: &[usize], allowed: bool) -> Step {
    Step {
        at_ms,
        ..step(subject, buckets, allowed)
    }
}

/// The shared table.
pub fn scenarios() -> Vec<Scenario> {
    let mut table = base_scenarios();
    table.extend(cost::scenarios());
    table
}

/// A settlement step (see [`Step::settle`]).
pub(super) fn settle(subject: SubjectSpec, buckets: &[usize], s: Settle) -> Step {
    Step {
        settle: Some(s),
        ..step(subject, buckets, true)
    }
}

pub(super) fn request(subject: SubjectSpec, buckets: &[usize], allowed: bool) -> Step {
    step(subject, buckets, allowed)
}

pub(super) fn hourly(name: &str, rate: u64, burst: u64) -> Limit {
    limit(name, rate, HOUR, burst, 1)
}

fn base_scenarios() -> Vec<Scenario> {
    use SubjectSpec::{Ip, Key};
    let k0 = Key(0);
    vec![
        Scenario {
            name: "burst then refuse",
            buckets: vec![Bucket::new(Scope::Key, limit("hour", 10, HOUR, 3, 1))],
            steps: vec![
                step(k0, &[0], true),
                step(k0, &[0], true),
                step(k0, &[0], true),
                step(k0, &[0], false),
                step(k0, &[0], false),
            ],
        },
        Scenario {
            name: "default burst is the rate",
            buckets: vec![Bucket::new(
                Scope::Key,
                Limit {
                    name: "hour".into(),
                    rate: 2,
                    per: HOUR,
                    burst: None,
                    cost: None,
                    quota: None,
                    scope: Default::default(),
                },
            )],
            steps: vec![
                step(k0, &[0], true),
                step(k0, &[0], true),
                step(k0, &[0], false),
            ],
        },
        Scenario {
            name: "cost takes several tokens",
            buckets: vec![Bucket::new(Scope::Key, limit("hour", 10, HOUR, 10, 4))],
            steps: vec![
                step(k0, &[0], true),
                step(k0, &[0], true),
                step(k0, &[0], false),
            ],
        },
        Scenario {
            name: "cost above burst never fits",
            buckets: vec![
                Bucket::new(Scope::Key, limit("hour", 10, HOUR, 5, 6)),
                Bucket::new(Scope::Key, limit("other", 100, HOUR, 100, 1)),
            ],
            steps: vec![
                step(k0, &[0], false),
                step(k0, &[0, 1], false),
                // The refused request took nothing from "other".
                step(k0, &[1], true),
            ],
        },
        Scenario {
            name: "multi-limit refusal takes nothing",
            buckets: vec![
                Bucket::new(Scope::Key, limit("big", 100, HOUR, 100, 1)),
                Bucket::new(Scope::Route("users"), limit("small", 1, HOUR, 1, 1)),
            ],
            steps: vec![
                step(k0, &[0, 1], true),
                step(k0, &[0, 1], false),
                step(k0, &[0, 1], false),
                step(k0, &[0, 1], false),
                // "big" lost one token, not four.
                step(k0, &[0], true),
            ],
        },
        Scenario {
            name: "per-route and per-key buckets",
            buckets: vec![
                Bucket::new(Scope::Key, limit("hour", 5, HOUR, 3, 1)),
                Bucket::new(Scope::Route("users"), limit("route", 2, HOUR, 2, 1)),
                Bucket::new(Scope::Route("orders"), limit("route", 10, HOUR, 10, 1)),
            ],
            steps: vec![
                step(k0, &[0, 1], true),
                step(k0, &[0, 1], true),
                // The users route is spent; the key still has one token.
                step(k0, &[0, 1], false),
                step(k0, &[0, 2], true),
                // Now the key is spent on every route.
                step(k0, &[0, 2], false),
                step(k0, &[0, 1], false),
            ],
        },
        Scenario {
            name: "several subjects are independent",
            buckets: vec![Bucket::new(Scope::Key, limit("hour", 10, HOUR, 2, 1))],
            steps: vec![
                step(Key(0), &[0], true),
                step(Key(1), &[0], true),
                step(Key(0), &[0], true),
                step(Key(0), &[0], false),
                step(Key(1), &[0], true),
                step(Key(1), &[0], false),
                step(Ip(1), &[0], true),
                step(Ip(2), &[0], true),
                step(Ip(1), &[0], true),
                step(Ip(1), &[0], false),
                step(Key(2), &[0], true),
            ],
        },
        Scenario {
            name: "identity buckets are shared by its keys",
            buckets: vec![
                Bucket::new(Scope::Key, limit("own", 10, HOUR, 10, 1)),
                Bucket::new(Scope::Key, shared("shared", 3, HOUR, 3, 1)),
            ],
            steps: vec![
                step(member(0, 100), &[0, 1], true),
                step(member(1, 100), &[0, 1], true),
                step(member(0, 100), &[0, 1], true),
                // Spent, whichever key asks; the refusal takes nothing from
                // the key's own bucket (its remaining count shows it).
                step(member(1, 100), &[0, 1], false),
                step(member(0, 100), &[0, 1], false),
                step(member(0, 100), &[0], true),
                // Another identity has its own.
                step(member(2, 101), &[0, 1], true),
                // A key without an identity: the limit is its own bucket.
                step(Key(3), &[0, 1], true),
                step(Key(3), &[0, 1], true),
                step(Key(3), &[0, 1], true),
                step(Key(3), &[0, 1], false),
                step(Key(4), &[0, 1], true),
            ],
        },
        Scenario {
            name: "a member's own buckets stay its own",
            buckets: vec![
                Bucket::new(Scope::Key, limit("own", 1, HOUR, 1, 1)),
                Bucket::new(Scope::Key, shared("shared", 10, HOUR, 10, 2)),
                Bucket::new(Scope::Route("users"), shared("route", 10, HOUR, 3, 1)),
            ],
            steps: vec![
                step(member(0, 200), &[0, 1], true),
                // Its own is spent: refused, the shared bucket keeps its 8.
                step(member(0, 200), &[0, 1], false),
                step(member(1, 200), &[0, 1], true),
                // A route's identity-scoped limit is shared too.
                step(member(0, 200), &[1, 2], true),
                step(member(1, 200), &[1, 2], true),
                step(member(2, 200), &[2], true),
                step(member(0, 200), &[2], false),
                // 10 - 2 × 4 = 2 shared tokens left: one more request of cost 2.
                step(member(2, 200), &[1], true),
                step(member(3, 200), &[1], false),
            ],
        },
        Scenario {
            // 2 per second: one token per 500 ms, burst 2.
            name: "real-time refill",
            buckets: vec![Bucket::new(
                Scope::Key,
                limit("second", 2, Duration::from_secs(1), 2, 1),
            )],
            steps: vec![
                at(0, k0, &[0], true),
                at(0, k0, &[0], true),
                at(0, k0, &[0], false),
                // 1.5 tokens back: one request fits, the next does not.
                at(750, k0, &[0], true),
                at(750, k0, &[0], false),
                // Full again (the bucket emptied at 1000 ms + 500 ms).
                at(2_500, k0, &[0], true),
                at(2_500, k0, &[0], true),
                at(2_500, k0, &[0], false),
            ],
        },
    ]
    .into_iter()
    .chain(quota::scenarios())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_backend_matches_the_table() {
        for (i, s) in scenarios().iter().enumerate() {
            let base = 1_000 * i as i64;
            let outcomes = run_local(s, base);
            compare(s, &outcomes, &outcomes).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn subjects_are_distinct_per_base() {
        assert_ne!(SubjectSpec::Ip(1).subject(1), SubjectSpec::Ip(1).subject(2));
        assert_ne!(SubjectSpec::Ip(1).subject(1), SubjectSpec::Ip(2).subject(1));
        assert_eq!(SubjectSpec::Key(3).subject(10), Subject::Key(13));
    }
}
