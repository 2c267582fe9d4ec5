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
use crate::limiter::backends::{Limiters, Verdict};
use crate::limiter::credits::state;
use crate::limiter::credits::CreditVerdict;
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

#[cfg(test)]
mod tests {
    use tollgate_core::db::credits::CreditAdjustment;
    use tollgate_core::limits::Limit;
    use tollgate_core::quota::{Period, QuotaSpec};

    use crate::limiter::{Bucket, LocalLimiter, Scope, Subject};

    /// The limiter step itself notices, with the local backend, for an
    /// identity's shared quota and a member key's balance; the
    /// `on_redis_error` fallback's decisions do not count.
    #[tokio::test]
    async fn the_local_limiter_step_notices_identity_quotas_and_balances() {
        use crate::limiter::backends::Limiters;
        use std::sync::Arc;
        use std::time::{Duration, Instant};
        use tollgate_core::config::LimiterBackend;

        let cfg = crate::limiter::fallback_only;
        let limiters = Limiters::new(Arc::new(LocalLimiter::new(1)));
        let spec = QuotaSpec {
            period: Period::Day,
            anchor: None,
            time_zone: None,
        };
        let mut shared = Limit::new_quota("daily", 2, spec, None);
        shared.scope = tollgate_core::limits::LimitScope::Identity;
        let shared = Bucket::new(Scope::Key, shared);
        let deadline = || Instant::now() + Duration::from_secs(1);
        // Redis without a URL: every decision is the fallback's.
        let member = |key| Subject::Member { key, identity: 3 };
        let redis = cfg(LimiterBackend::Redis);
        for _ in 0..3 {
            let _ = limiters
                .decide(&redis, &member(1), &[&shared], deadline())
                .await;
        }
        assert_eq!(
            limiters.events.queued(),
            0,
            "fallback decisions count for nothing"
        );
        let local = cfg(LimiterBackend::Local);
        let _ = limiters
            .decide(&local, &member(1), &[&shared], deadline())
            .await;
        let batch = limiters.events.next_batch().await;
        let types: Vec<&str> = batch.iter().map(|e| e.event_type).collect();
        assert_eq!(types, ["quota.warning", "quota.exhausted"]);
        assert!(batch.iter().all(|e| e.subject == "identity:3"));
        // A credit holder's step: balance and quota in one decision.
        limiters.credits.apply_local(&[CreditAdjustment {
            id: 1,
            subject_kind: tollgate_core::credits::SubjectKind::Key,
            subject_id: 2,
            delta: 1,
            created_at: 0,
            actor: String::new(),
            spent_by: None,
            spent_at: None,
        }]);
        for _ in 0..2 {
            let _ = crate::credits::decide_costing(
                &limiters,
                &local,
                &member(2),
                &[],
                1,
                false,
                deadline(),
            )
            .await;
        }
        let batch = limiters.events.next_batch().await;
        let types: Vec<&str> = batch.iter().map(|e| e.event_type).collect();
        assert_eq!(types, ["credits.low", "credits.exhausted"]);
        assert!(batch.iter().all(|e| e.subject == "key:2"));
        // The usage path's balance, read without spending.
        assert_eq!(
            limiters.balance(&local, &member(2), deadline()).await,
            Some(0)
        );
        assert_eq!(limiters.balance(&local, &member(1), deadline()).await, None);
    }
}
