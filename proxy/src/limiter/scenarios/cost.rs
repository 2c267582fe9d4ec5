//! Rows of the shared scenario table ([`super::scenarios`]) for costs
//! settled from the response (`routes[].cost`): reservations and their
//! settlement must leave the same buckets in the local limiter and in Redis.

use tollgate_core::cost::Settle;

use super::quota::monthly_from_today;
use super::{hourly, member, request, settle, Scenario, SubjectSpec};
use crate::limiter::cost::reserving;
use crate::limiter::{Bucket, Scope};
use tollgate_core::limits::{Limit, LimitScope};

/// One hourly bucket of burst 20 (36 s per token at 100/h), as three
/// buckets of the table: the plain one (index 0, cost 1), a reservation of
/// 10 (index 1) and a reservation of 1 (index 2: reads the bucket exactly,
/// as Redis serves reservations without leases).
fn llm() -> Vec<Bucket> {
    let b = Bucket::new(Scope::Key, hourly("hour", 100, 20));
    vec![reserving(&b, 10), reserving(&b, 1), b]
}

pub(super) fn scenarios() -> Vec<Scenario> {
    use SubjectSpec::Key;
    let k0 = Key(0);
    vec![
        Scenario {
            name: "cost: a lower actual cost gives the difference back",
            buckets: llm(),
            steps: vec![
                request(k0, &[0], true),
                // Actual cost 4: 6 back.
                settle(k0, &[0], Settle::Return(6)),
                // 20 − 4 − 1 left.
                request(k0, &[1], true),
                request(k0, &[0], true),
                // Actual cost 10: nothing to do.
                settle(k0, &[0], Settle::Keep),
                request(k0, &[1], true),
            ],
        },
        Scenario {
            name: "cost: a higher actual cost takes more, at most one reservation into debt",
            buckets: llm(),
            steps: vec![
                request(k0, &[0], true),
                // Actual cost 15: 5 more (5 left).
                settle(k0, &[0], Settle::Take(5)),
                request(k0, &[0], false),
                request(k0, &[1], true),
                // 4 left; a reservation of 10 fits nowhere, the plain bucket
                // still serves 4 more.
                request(k0, &[1], true),
                request(k0, &[0], false),
            ],
        },
        Scenario {
            name: "cost: debt is capped at one reservation",
            buckets: llm(),
            steps: vec![
                request(k0, &[0], true),
                request(k0, &[0], true),
                // Empty; actual cost 1000 instead of 10: only 10 more taken.
                settle(k0, &[0], Settle::Take(990)),
                request(k0, &[1], false),
                // A refund of the other reservation: 10 back, out of debt
                // but still empty.
                settle(k0, &[0], Settle::Return(10)),
                request(k0, &[1], false),
                settle(k0, &[0], Settle::Return(10)),
                request(k0, &[1], true),
            ],
        },
        Scenario {
            name: "cost: a refund gives everything back",
            buckets: llm(),
            steps: vec![
                request(k0, &[0], true),
                request(k0, &[0], true),
                request(k0, &[0], false),
                settle(k0, &[0], Settle::Return(10)),
                request(k0, &[0], true),
                // Nothing held: a settlement changes nothing.
                settle(Key(1), &[0], Settle::Return(10)),
                request(Key(1), &[1], true),
            ],
        },
        Scenario {
            name: "cost: every bucket of the request is settled",
            buckets: {
                let plan = Bucket::new(Scope::Key, hourly("hour", 100, 30));
                let route = Bucket::new(Scope::Route("llm"), hourly("route", 100, 12));
                vec![
                    reserving(&plan, 10),
                    reserving(&route, 10),
                    reserving(&plan, 1),
                    reserving(&route, 1),
                ]
            },
            steps: vec![
                request(k0, &[0, 1], true),
                // The route has 2 left: a second reservation is refused and
                // takes nothing from the plan.
                request(k0, &[0, 1], false),
                // Actual cost 3: 7 back to both.
                settle(k0, &[0, 1], Settle::Return(7)),
                request(k0, &[2], true),
                request(k0, &[3], true),
                request(k0, &[0, 1], false),
                // Actual cost 30 of the admitted one (20 more): the plan
                // (26 left) takes 20, the route (8 left) 18: 10 into debt.
                settle(k0, &[0, 1], Settle::Take(20)),
                request(k0, &[2, 3], false),
                request(k0, &[2], true),
            ],
        },
        Scenario {
            name: "cost: a quota is settled like a bucket, within one reservation",
            buckets: {
                let q = Bucket::new(Scope::Key, monthly_from_today("monthly", 30, "UTC", None));
                vec![reserving(&q, 10), reserving(&q, 1), q]
            },
            steps: vec![
                request(k0, &[0], true),
                // Actual cost 4: 6 back (26 left), then one more use.
                settle(k0, &[0], Settle::Return(6)),
                request(k0, &[1], true),
                // Actual cost 1000: only up to 30 + 10 used.
                settle(k0, &[0], Settle::Take(990)),
                request(k0, &[2], false),
                // A refund: 30 used, still nothing left; another: 20 left.
                settle(k0, &[0], Settle::Return(10)),
                request(k0, &[2], false),
                settle(k0, &[0], Settle::Return(10)),
                request(k0, &[0], true),
                request(k0, &[1], false),
                // Nothing counted for another key: nothing to settle.
                settle(Key(1), &[0], Settle::Take(5)),
                request(Key(1), &[2], true),
            ],
        },
        Scenario {
            name: "cost: an identity's shared quota and a member's own settle apart",
            buckets: {
                let shared = Limit {
                    scope: LimitScope::Identity,
                    ..monthly_from_today("team", 50, "Europe/Paris", None)
                };
                let shared = Bucket::new(Scope::Key, shared);
                let own = Bucket::new(Scope::Key, monthly_from_today("own", 20, "UTC", None));
                vec![
                    reserving(&shared, 10),
                    reserving(&own, 10),
                    shared,
                    own,
                    Bucket::new(Scope::Key, hourly("hour", 100, 100)),
                ]
            },
            steps: vec![
                request(member(0, 7), &[0, 1, 4], true),
                request(member(1, 7), &[0, 1], true),
                // Key 0's request cost 3: 7 back to the team and to key 0.
                settle(member(0, 7), &[0, 1], Settle::Return(7)),
                // The team has 37 left, key 1's own quota 10: one more of 10.
                request(member(1, 7), &[0, 1], true),
                request(member(1, 7), &[0, 1], false),
                // Key 0's own quota has 17 left.
                request(member(0, 7), &[3, 4], true),
            ],
        },
    ]
}
