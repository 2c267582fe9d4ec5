//! Property test of the settlement bound (`routes[].cost`, issue #20 item 4):
//! however admissions (reservations) and settlements (any actual cost,
//! returned or taken, in any order, several requests in flight) interleave
//! on one bucket, the tokens charged over any window of length `w` never
//! exceed `burst + reserve + w / T`: one reservation above what the bucket
//! alone admits.
//!
//! Proof sketch (the test checks it on random schedules): every operation
//! moves the TAT from `max(tat, now)` to `tat'` and charges exactly
//! `(tat' − max(tat, now)) / T` tokens (negative for a return, fractional
//! when part of a token refilled meanwhile); the charges of the operations
//! in a window telescope to at most `tat_last − start`; and no operation
//! leaves `tat' > now + (burst + reserve) × T` (admission stops at `burst`,
//! a take at `burst + reserve`, a return moves back). The test counts
//! charges in time (token × T) to stay exact.

use proptest::prelude::*;
use tollgate_core::cost::{settle, Settle};
use tollgate_core::limits::{check_clamped, Clamped};
use tollgate_core::quota::{check_quota, settle_quota};

#[derive(Debug, Clone)]
enum Op {
    /// Time passes (in units of T / 4).
    Wait(u64),
    /// A request arrives and reserves.
    Admit,
    /// The in-flight request at this index (mod the number in flight) is
    /// answered with this actual cost.
    Answer(usize, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..12).prop_map(Op::Wait),
        Just(Op::Admit),
        Just(Op::Admit),
        (
            any::<usize>(),
            prop_oneof![0u64..40, Just(0), Just(u64::MAX / 4)]
        )
            .prop_map(|(i, a)| Op::Answer(i, a)),
    ]
}

/// What answering a request that reserved `reserved` with `actual` settles.
fn settlement(reserved: u64, actual: u64) -> Settle {
    match actual.cmp(&reserved) {
        std::cmp::Ordering::Less => Settle::Return(reserved - actual),
        std::cmp::Ordering::Greater => Settle::Take(actual - reserved),
        std::cmp::Ordering::Equal => Settle::Keep,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn settlement_never_exceeds_one_reservation_over_the_limit(
        burst in 1u64..30,
        reserve in 1u64..15,
        ops in prop::collection::vec(op(), 1..300),
    ) {
        const T: u64 = 1_000;
        let clamped = Clamped { interval: T, burst, cost: reserve.min(burst + 1) };
        let reserve = clamped.cost;
        let mut now = 1_000_000u64;
        let mut tat = 0u64;
        let mut in_flight: Vec<u64> = Vec::new();
        // (time, charge in token × T: + taken, − given back) of every operation.
        let mut charges: Vec<(u64, i128)> = Vec::new();
        for op in ops {
            match op {
                Op::Wait(q) => now += q * T / 4,
                Op::Admit => {
                    let c = check_clamped(clamped, tat, now);
                    if c.allowed {
                        tat = c.new_tat;
                        in_flight.push(reserve);
                        charges.push((now, i128::from(reserve * T)));
                    }
                }
                Op::Answer(i, actual) => {
                    if in_flight.is_empty() {
                        continue;
                    }
                    let reserved = in_flight.swap_remove(i % in_flight.len());
                    let s = settlement(reserved, actual);
                    let (new_tat, n) = settle(tat, now, T, burst, reserve, s);
                    // What the TAT moved, counted from max(tat, now).
                    let moved = i128::from(new_tat) - i128::from(tat.max(now));
                    match s {
                        Settle::Take(want) => {
                            prop_assert_eq!(moved, i128::from(n * T));
                            prop_assert!(n <= want);
                        }
                        Settle::Return(want) => {
                            prop_assert!(n <= want);
                            prop_assert!(new_tat >= now.min(tat));
                        }
                        Settle::Keep => prop_assert_eq!(n, 0),
                    }
                    if n > 0 {
                        charges.push((now, moved));
                    }
                    tat = new_tat;
                }
            }
            // The debt is never more than one reservation.
            prop_assert!(tat <= now + (burst + reserve) * T, "tat {} now {}", tat, now);
        }
        // Every window [a, b] starting at an operation.
        for (i, &(a, _)) in charges.iter().enumerate() {
            let mut sum: i128 = 0;
            for &(b, c) in &charges[i..] {
                sum += c;
                let bound = i128::from((burst + reserve) * T + (b - a));
                prop_assert!(sum <= bound, "window {}..{}: {} > {}", a, b, sum, bound);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// The same bound for a calendar quota in one period: however
    /// reservations and settlements interleave, the count never passes
    /// `amount + reserve`, and it is exactly the reservations admitted plus
    /// what the settlements applied.
    #[test]
    fn a_quota_is_charged_at_most_one_reservation_over_its_amount(
        amount in 0u64..200,
        reserve in 1u64..40,
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let mut used = 0u64;
        let mut ledger: i128 = 0;
        let mut in_flight: Vec<u64> = Vec::new();
        for op in ops {
            match op {
                Op::Wait(_) => {}
                Op::Admit => {
                    let c = check_quota(amount, used, reserve);
                    if c.allowed {
                        prop_assert_eq!(c.new_used, used + reserve);
                        used = c.new_used;
                        ledger += i128::from(reserve);
                        in_flight.push(reserve);
                    }
                }
                Op::Answer(i, actual) => {
                    if in_flight.is_empty() {
                        continue;
                    }
                    let reserved = in_flight.swap_remove(i % in_flight.len());
                    let s = settlement(reserved, actual);
                    let (new_used, n) = settle_quota(amount, used, reserve, s);
                    match s {
                        Settle::Return(want) => {
                            prop_assert!(n <= want);
                            ledger -= i128::from(n);
                        }
                        Settle::Take(want) => {
                            prop_assert!(n <= want);
                            ledger += i128::from(n);
                        }
                        Settle::Keep => prop_assert_eq!(n, 0),
                    }
                    used = new_used;
                }
            }
            prop_assert!(used <= amount + reserve, "used {} of {}", used, amount);
            prop_assert_eq!(i128::from(used), ledger);
        }
    }
}
