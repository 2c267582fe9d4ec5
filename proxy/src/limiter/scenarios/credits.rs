//! The shared scenario table's credit rows (see [`super::scenarios`]):
//! spending, exhaustion, top-ups, an identity's balance shared by its keys,
//! and refills at period boundaries. The same rows run against the local
//! [`CreditBook`] ([`run_local`]) and against Redis ([`run_redis`], from
//! `proxy/tests/redis_credits.rs`), and both must agree exactly.
//!
//! The refill's clock is injected the same way in both: each step names
//! its wall-clock instant, which picks the refill's period (locally the
//! instant given to [`CreditBook::spend_local_at`]; in Redis the period
//! start sent to the script). Buckets take hours to refill, so Redis' own
//! clock moving on between steps changes nothing.
//!
//! Test support only: not used by the proxy itself.

use std::sync::Arc;
use std::time::Duration;

use tollgate_core::credits::SubjectKind;
use tollgate_core::db::credits::CreditAdjustment;
use tollgate_core::limits::Limit;
use tollgate_core::refill::{Refill, RefillSpec};

use super::{Outcome, SubjectSpec};
use crate::limiter::credits::{holder, refill, CreditBook, Spent};
use crate::limiter::redis::credits::holder_balance_key;
use crate::limiter::redis::RedisLimiter;
use crate::limiter::{Bucket, LocalLimiter, Scope, Subject};

/// Who a top-up or a refill is for; a request's subject is a
/// [`SubjectSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// A key without an identity (or a request of one).
    Key(i64),
    /// Key `key` of identity `identity`: its own balance.
    Member { key: i64, identity: i64 },
    /// An identity's balance, spent by all its keys.
    Identity(i64),
}

impl Who {
    /// The limiter's subject for it in run `base` (see
    /// [`SubjectSpec::subject`]).
    pub fn subject(self, base: i64) -> Subject {
        match self {
            Who::Key(k) => SubjectSpec::Key(k).subject(base),
            Who::Member { key, identity } => SubjectSpec::Member { key, identity }.subject(base),
            Who::Identity(i) => Subject::Identity(base.wrapping_add(i)),
        }
    }

    /// The `credit_adjustments` row of a top-up (`id`: its id) made at
    /// `at_ms` (a
    /// refilled balance counts only the rows of its current period).
    fn adjustment(self, base: i64, id: i64, delta: i64, at_ms: i64) -> CreditAdjustment {
        let (subject_kind, subject_id) = match self.subject(base) {
            Subject::Identity(i) => (SubjectKind::Identity, i),
            Subject::Member { key, .. } => (SubjectKind::Key, key),
            Subject::Key(k) => (SubjectKind::Key, k),
            Subject::Ip(_) => (SubjectKind::Key, 0),
        };
        CreditAdjustment {
            id,
            subject_kind,
            subject_id,
            delta,
            created_at: at_ms,
            actor: String::new(),
            spent_by: None,
            spent_at: None,
        }
    }
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Op {
    /// A request of `subject` costing `cost` credits with these buckets
    /// (indices into [`CreditScenario::buckets`]).
    Spend {
        subject: SubjectSpec,
        buckets: Vec<usize>,
        cost: u64,
    },
    /// A top-up (or a negative adjustment).
    TopUp { who: Who, delta: i64 },
}

/// What a step must come to (anchors the table itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Admitted; the balance after.
    Admitted(i64),
    /// The buckets refused: nothing spent; the balance.
    Refused(i64),
    /// The balance is short of the cost (`credits-exhausted`).
    Exhausted(i64),
    /// A top-up: the balance after.
    Balance(i64),
}

#[derive(Debug, Clone)]
pub struct CreditStep {
    /// The wall clock, in seconds after the scenario's [`CreditScenario::wall_start`].
    pub at_s: i64,
    pub op: Op,
    pub expect: Expect,
}

#[derive(Debug, Clone)]
pub struct CreditScenario {
    pub name: &'static str,
    /// The wall clock of the first step (µs since the Unix epoch).
    pub wall_start: i64,
    pub buckets: Vec<Bucket>,
    pub refills: Vec<(Who, RefillSpec)>,
    pub steps: Vec<CreditStep>,
}

/// One step's result, as both backends must report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditOutcome {
    pub expect: Expect,
    /// The buckets' decision (requests that reached them).
    pub buckets: Option<Outcome>,
}

impl CreditScenario {
    /// The book of one run: its refills set (holders come with top-ups).
    fn book(&self, base: i64) -> CreditBook {
        let book = CreditBook::new();
        let refills = self
            .refills
            .iter()
            .filter_map(|(who, spec)| {
                let r = Refill::new(spec).ok()?;
                Some((holder(&who.subject(base)), Arc::new(r)))
            })
            .collect();
        book.set_refills(refills);
        book
    }

    fn wall(&self, step: &CreditStep) -> i64 {
        self.wall_start + step.at_s * 1_000_000
    }

    fn step_buckets(&self, idx: &[usize]) -> Vec<&Bucket> {
        idx.iter().map(|&i| &self.buckets[i]).collect()
    }
}

fn outcome(spent: Spent) -> CreditOutcome {
    match spent {
        Spent::Decided(d, b) => CreditOutcome {
            expect: if d.allowed {
                Expect::Admitted(b)
            } else {
                Expect::Refused(b)
            },
            buckets: Some(Outcome::from(&d)),
        },
        Spent::Exhausted(b) => CreditOutcome {
            expect: Expect::Exhausted(b),
            buckets: None,
        },
    }
}

/// Run a scenario against the local backend.
pub fn run_local(s: &CreditScenario, base: i64) -> Vec<CreditOutcome> {
    const START_NS: u64 = 1_000_000_000_000;
    let book = s.book(base);
    let limiter = LocalLimiter::new(16);
    s.steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let wall = s.wall(step);
            match &step.op {
                Op::TopUp { who, delta } => {
                    let a = who.adjustment(base, i as i64 + 1, *delta, wall / 1_000);
                    book.apply_local_at(&[a], wall);
                    let h = holder(&who.subject(base));
                    CreditOutcome {
                        expect: Expect::Balance(book.local_balance(&h)),
                        buckets: None,
                    }
                }
                Op::Spend {
                    subject,
                    buckets,
                    cost,
                } => {
                    let b = s.step_buckets(buckets);
                    let check = |l: &LocalLimiter, sub: &Subject, b: &[&Bucket]| {
                        l.check_at_wall(sub, b, START_NS, wall)
                    };
                    outcome(book.spend_local_at(
                        &limiter,
                        &subject.subject(base),
                        &b,
                        *cost,
                        check,
                        wall,
                    ))
                }
            }
        })
        .collect()
}

/// Run a scenario against Redis: the same book decides who holds which
/// balance and refill; Redis keeps and spends the balances.
pub async fn run_redis(
    limiter: &RedisLimiter,
    s: &CreditScenario,
    base: i64,
) -> Result<Vec<CreditOutcome>, String> {
    let book = s.book(base);
    let mut out = Vec::new();
    for (i, step) in s.steps.iter().enumerate() {
        let wall = s.wall(step);
        let fail = |e: &dyn std::fmt::Display| format!("{} step {i}: {e}", s.name);
        match &step.op {
            Op::TopUp { who, delta } => {
                let a = who.adjustment(base, i as i64 + 1, *delta, wall / 1_000);
                // Holders are known to the book as in the proxy.
                book.apply_local_at(std::slice::from_ref(&a), wall);
                let subject = who.subject(base);
                let r = book.refill_of(&holder(&subject));
                let args = refill::args(r.as_deref(), wall);
                let balance = limiter
                    .apply_adjustment_refilling(&subject, &a, args)
                    .await
                    .map_err(|e| fail(&e))?;
                out.push(CreditOutcome {
                    expect: Expect::Balance(balance),
                    buckets: None,
                });
            }
            Op::Spend {
                subject,
                buckets,
                cost,
            } => {
                let subject = subject.subject(base);
                let h = book
                    .holder_of(&subject)
                    .ok_or_else(|| fail(&"not a credit holder"))?;
                let r = book.refill_of(&h);
                let args = refill::args(r.as_deref(), wall);
                let key = holder_balance_key(&subject, &h);
                let b = s.step_buckets(buckets);
                let spent = limiter
                    .spend_from(&subject, &key, args, &b, *cost, limiter.deadline())
                    .await
                    .map_err(|e| fail(&e))?;
                out.push(outcome(spent));
            }
        }
    }
    Ok(out)
}

/// Compare a run with the table and with the local run: the same
/// admissions, balances and bucket states (reset and retry-after within
/// 1 s, Redis' clock moving on).
pub fn compare(
    s: &CreditScenario,
    local: &[CreditOutcome],
    other: &[CreditOutcome],
) -> Result<(), String> {
    if local.len() != s.steps.len() || other.len() != s.steps.len() {
        return Err(format!("{}: step counts differ", s.name));
    }
    for (i, ((a, b), step)) in local.iter().zip(other).zip(&s.steps).enumerate() {
        let fail = |what: &str| {
            Err(format!(
                "{} step {i} ({step:?}): {what}\n local: {a:?}\n other: {b:?}",
                s.name
            ))
        };
        if a.expect != step.expect {
            return fail("the local backend disagrees with the table");
        }
        if a.expect != b.expect {
            return fail("different outcome");
        }
        match (&a.buckets, &b.buckets) {
            (None, None) => {}
            (Some(x), Some(y)) if x.allowed == y.allowed && x.limits.len() == y.limits.len() => {
                for (la, lb) in x.limits.iter().zip(&y.limits) {
                    if la.0 != lb.0 || la.1 != lb.1 || la.2 != lb.2 {
                        return fail("different bucket state");
                    }
                    if la.3.abs_diff(lb.3) > 1 || la.4.abs_diff(lb.4) > 1 {
                        return fail("reset / retry-after differ by more than 1 s");
                    }
                }
            }
            _ => return fail("different bucket decision"),
        }
    }
    Ok(())
}

fn spend(subject: SubjectSpec, buckets: &[usize], cost: u64, expect: Expect) -> CreditStep {
    spend_at(0, subject, buckets, cost, expect)
}

fn spend_at(
    at_s: i64,
    subject: SubjectSpec,
    buckets: &[usize],
    cost: u64,
    expect: Expect,
) -> CreditStep {
    CreditStep {
        at_s,
        op: Op::Spend {
            subject,
            buckets: buckets.to_vec(),
            cost,
        },
        expect,
    }
}

fn top_up(who: Who, delta: i64, expect: i64) -> CreditStep {
    top_up_at(0, who, delta, expect)
}

fn top_up_at(at_s: i64, who: Who, delta: i64, expect: i64) -> CreditStep {
    CreditStep {
        at_s,
        op: Op::TopUp { who, delta },
        expect: Expect::Balance(expect),
    }
}

const HOUR: Duration = Duration::from_secs(3600);

fn hourly(name: &str, rate: u64, burst: u64) -> Bucket {
    Bucket::new(Scope::Key, Limit::new(name, rate, HOUR, Some(burst), None))
}

fn ts(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>()
        .map_or(0, |t| t.as_microsecond())
}

/// The credit rows.
pub fn scenarios() -> Vec<CreditScenario> {
    use Expect::{Admitted, Exhausted, Refused};
    use SubjectSpec::Key;
    let k0 = Key(0);
    let m = |key, identity| SubjectSpec::Member { key, identity };
    // Half past an hour: the next hourly refill is 1800 s later.
    let half_past = ts("2026-06-01T10:30:00Z");
    vec![
        CreditScenario {
            name: "credits: spend, exhaust, top up",
            wall_start: half_past,
            buckets: vec![],
            refills: vec![],
            steps: vec![
                top_up(Who::Key(0), 3, 3),
                spend(k0, &[], 1, Admitted(2)),
                spend(k0, &[], 2, Admitted(0)),
                spend(k0, &[], 1, Exhausted(0)),
                spend(k0, &[], 1, Exhausted(0)),
                // A top-up admits exactly its amount.
                top_up(Who::Key(0), 2, 2),
                spend(k0, &[], 1, Admitted(1)),
                spend(k0, &[], 2, Exhausted(1)),
                spend(k0, &[], 1, Admitted(0)),
                spend(k0, &[], 1, Exhausted(0)),
                // A negative adjustment leaves a debt: refused until paid.
                top_up(Who::Key(0), -2, -2),
                spend(k0, &[], 0, Exhausted(-2)),
                top_up(Who::Key(0), 3, 1),
                spend(k0, &[], 1, Admitted(0)),
            ],
        },
        CreditScenario {
            name: "credits and buckets are all-or-nothing",
            wall_start: half_past,
            buckets: vec![hourly("small", 10, 2), hourly("big", 100, 100)],
            refills: vec![],
            steps: vec![
                top_up(Who::Key(0), 5, 5),
                spend(k0, &[0, 1], 1, Admitted(4)),
                spend(k0, &[0, 1], 1, Admitted(3)),
                // The bucket refuses: no credit spent, "big" keeps its tokens.
                spend(k0, &[0, 1], 1, Refused(3)),
                // Short of credits: no bucket asked ("big" stays at 98).
                spend(k0, &[1], 4, Exhausted(3)),
                spend(k0, &[1], 3, Admitted(0)),
            ],
        },
        CreditScenario {
            name: "an identity's balance is spent by all its keys",
            wall_start: half_past,
            buckets: vec![hourly("hour", 100, 100)],
            refills: vec![],
            steps: vec![
                // Key 0 holds 10 of its own; the identity's 3 come first.
                top_up(
                    Who::Member {
                        key: 0,
                        identity: 100,
                    },
                    10,
                    10,
                ),
                spend(m(0, 100), &[0], 1, Admitted(9)),
                top_up(Who::Identity(100), 3, 3),
                spend(m(0, 100), &[0], 1, Admitted(2)),
                spend(m(1, 100), &[0], 1, Admitted(1)),
                spend(m(0, 100), &[0], 1, Admitted(0)),
                spend(m(1, 100), &[0], 1, Exhausted(0)),
                spend(m(0, 100), &[0], 1, Exhausted(0)),
                // Another identity's key, and a key alone: their own.
                top_up(Who::Identity(101), 1, 1),
                spend(m(2, 101), &[0], 1, Admitted(0)),
                top_up(Who::Key(3), 1, 1),
                spend(Key(3), &[0], 1, Admitted(0)),
                // The identity's top-up: exactly that many more, any key.
                top_up(Who::Identity(100), 2, 2),
                spend(m(1, 100), &[0], 1, Admitted(1)),
                spend(m(0, 100), &[0], 1, Admitted(0)),
                spend(m(1, 100), &[0], 1, Exhausted(0)),
            ],
        },
        CreditScenario {
            name: "an hourly refill sets the balance at the boundary",
            wall_start: half_past,
            buckets: vec![],
            refills: vec![(
                Who::Key(0),
                RefillSpec {
                    amount: Some(2),
                    every: Some("1h".into()),
                    ..Default::default()
                },
            )],
            steps: vec![
                // The first request of the period refills (no top-up needed).
                spend(k0, &[], 1, Admitted(1)),
                spend(k0, &[], 1, Admitted(0)),
                spend_at(1_799, k0, &[], 1, Exhausted(0)),
                // A top-up within the period adds to it.
                top_up_at(1_799, Who::Key(0), 1, 1),
                // The next hour: set back to 2 (the 1 left does not roll over).
                spend_at(1_800, k0, &[], 1, Admitted(1)),
                spend_at(1_801, k0, &[], 1, Admitted(0)),
                spend_at(5_399, k0, &[], 1, Exhausted(0)),
                // A top-up first in a period: refill, then the top-up.
                top_up_at(5_400, Who::Key(0), 5, 7),
                spend_at(5_401, k0, &[], 3, Admitted(4)),
                // A late step with a lagging clock (the previous hour)
                // never refills again.
                spend_at(5_399, k0, &[], 4, Admitted(0)),
            ],
        },
        CreditScenario {
            name: "a monthly identity refill at a DST month end",
            // Europe/Paris, anchor 31: the period from Feb 28 ends at
            // Mar 31 00:00 CEST = Mar 30 22:00 UTC (DST began Mar 28).
            wall_start: ts("2027-03-30T21:59:58Z"),
            buckets: vec![hourly("hour", 100, 100)],
            refills: vec![(
                Who::Identity(300),
                RefillSpec {
                    amount: Some(2),
                    period: Some("month".into()),
                    anchor: Some("31".into()),
                    time_zone: Some("Europe/Paris".into()),
                    ..Default::default()
                },
            )],
            steps: vec![
                spend(m(0, 300), &[0], 1, Admitted(1)),
                spend_at(1, m(1, 300), &[0], 1, Admitted(0)),
                spend_at(1, m(0, 300), &[0], 1, Exhausted(0)),
                spend_at(2, m(1, 300), &[0], 2, Admitted(0)),
                spend_at(3, m(0, 300), &[0], 1, Exhausted(0)),
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_backend_matches_the_credit_table() {
        for (i, s) in scenarios().iter().enumerate() {
            let out = run_local(s, 1_000 * i as i64);
            compare(s, &out, &out).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
