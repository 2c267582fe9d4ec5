//! The request path's part of prepaid credits (rules in
//! `tollgate_core::credits`, balances in [`crate::limiter::credits`]): a
//! request of a credit holder spends its cost (the route's
//! `cost.reserve`, else 1) in the same step as its buckets; a short balance
//! is answered 429 `credits-exhausted` (on a `shadow` route: counted and
//! let through, nothing spent). The balance left is the `credits` member of
//! the `RateLimit` header.

use std::time::Instant;

use tollgate_core::config::LimiterConfig;
use tollgate_core::limits::Decision;

use crate::answer::{self, Answer};
use crate::limiter::backends::credits::CreditVerdict;
use crate::limiter::backends::{Limiters, Verdict};
use crate::limiter::credits::state;
use crate::limiter::{Bucket, Subject};
use crate::state::CompiledRoute;

/// The credits a request of `route` costs.
pub fn cost_of(route: &CompiledRoute) -> u64 {
    route.route.cost.as_ref().map_or(1, |c| c.reserve)
}

/// Decide a request with credits if its subject holds any: `None` when it
/// does not (the ordinary limiter step decides), `Err` with the answer when
/// its credits are exhausted.
pub async fn decide(
    limiters: &Limiters,
    cfg: &LimiterConfig,
    subject: &Subject,
    buckets: &[&Bucket],
    route: &CompiledRoute,
    deadline: Instant,
) -> Option<Result<Verdict, Answer>> {
    let cost = cost_of(route);
    let shadow = route.route.shadow;
    decide_costing(limiters, cfg, subject, buckets, cost, shadow, deadline)
        .await
        .map(|r| r.map_err(|balance| answer::credits_exhausted(balance, cost)))
}

/// [`decide`] for a request costing `cost` credits (the verify API's
/// too): `Err` with the balance when it is short.
pub async fn decide_costing(
    limiters: &Limiters,
    cfg: &LimiterConfig,
    subject: &Subject,
    buckets: &[&Bucket],
    cost: u64,
    shadow: bool,
    deadline: Instant,
) -> Option<Result<Verdict, i64>> {
    if !limiters.credits.holds(subject) {
        return None;
    }
    let verdict = limiters
        .decide_credits(cfg, subject, buckets, cost, deadline)
        .await;
    limiters
        .events
        .credit_verdict(&limiters.credits, subject, buckets, &verdict);
    Some(match verdict {
        CreditVerdict::Decided(mut d, backend, balance) => {
            if let Some(b) = balance {
                d.limits.push(state(b, false));
            }
            Ok(Verdict::Decided(d, backend))
        }
        CreditVerdict::Exhausted(b) if shadow => Ok(Verdict::Decided(
            Decision {
                allowed: false,
                limits: [state(b, true)].into_iter().collect(),
            },
            "credits",
        )),
        CreditVerdict::Exhausted(b) => Err(b),
        CreditVerdict::Unavailable => Ok(Verdict::Unavailable),
    })
}
