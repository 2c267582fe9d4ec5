//! The limiter step of the request filter: the limits that apply (plan,
//! route, key, identity), the key's concurrency hold, credits and a
//! `routes[].cost` reservation, then the limiter's decision. It fills the
//! context with what the later steps report (plan, policy, decision,
//! backend, time in the limiter) and answers a refusal.

use std::time::Instant;

use crate::answer::{self, Answer};
use crate::limiter::backends::{self, Concurrency, Verdict};
use crate::limiter::{identity, Subject};
use crate::metrics::outcome;
use crate::state::{self, CompiledRoute, ConfigState, DbState};

use super::{Ctx, Gateway};

impl Gateway {
    /// Decide `subject`'s request on `route`; `Some(answer)` when it is
    /// refused (or the limiter cannot decide).
    pub(super) async fn limit(
        &self,
        route: &CompiledRoute,
        subject: Subject,
        cfg: &ConfigState,
        db: &DbState,
        ctx: &mut Ctx,
    ) -> Option<Answer> {
        let applicable = state::applicable(route, ctx.key.as_deref(), cfg, db);
        if let (Some(plan), Some(key)) = (applicable.unknown_plan, &ctx.key) {
            self.state.note_unknown_plan(key.id, plan);
            ctx.outcome = Some(outcome::FORBIDDEN);
            return Some(answer::unknown_plan());
        }
        ctx.plan = applicable.plan.cloned();
        ctx.policy = applicable.policy;
        // One Redis deadline for the hold and the buckets together.
        let deadline = backends::redis_deadline(&cfg.config.limiter);
        // Timed for the request's span only (the limiter's own histogram
        // times each backend call): no clock reads without spans.
        let limiter_start = self.spans.is_some().then(Instant::now);
        if let (Some(max), Some(key)) = (applicable.concurrency, &ctx.key) {
            match self
                .limiters
                .acquire(&cfg.config.limiter, key.id, max, deadline)
                .await
            {
                Concurrency::Held(hold) => ctx._inflight = Some(hold),
                Concurrency::Full if route.route.shadow => {}
                Concurrency::Full => {
                    ctx.outcome = Some(outcome::LIMITED);
                    return Some(answer::concurrency_exceeded(max));
                }
                Concurrency::Unavailable => {
                    ctx.outcome = Some(outcome::UNAVAILABLE);
                    ctx.backend = "redis";
                    return Some(answer::limiter_unavailable());
                }
            }
        }

        let identity = ctx.key.as_ref().and_then(|k| k.identity_id());
        let subject = identity::member_subject(subject, identity);
        let reservation = crate::cost::Reservation::for_route(route, &applicable.buckets);
        let reserving = reservation.as_ref().map(|r| r.refs());
        let buckets = reserving.as_deref().unwrap_or(&applicable.buckets);
        let credits = crate::credits::decide(
            &self.limiters,
            &cfg.config.limiter,
            &subject,
            buckets,
            route,
            deadline,
        )
        .await;
        let verdict = match credits {
            Some(Ok(verdict)) => verdict,
            Some(Err(exhausted)) => {
                ctx.outcome = Some(outcome::LIMITED);
                return Some(exhausted);
            }
            None => {
                self.limiters
                    .decide(&cfg.config.limiter, &subject, buckets, deadline)
                    .await
            }
        };
        ctx.limiter_time = limiter_start.map(|t| t.elapsed());
        drop(reserving);
        let (decision, backend) = match verdict {
            Verdict::Decided(d, backend) => (d, backend),
            Verdict::Unavailable => {
                ctx.outcome = Some(outcome::UNAVAILABLE);
                ctx.backend = "redis";
                return Some(answer::limiter_unavailable());
            }
        };
        ctx.backend = backend;
        if backend == "fallback" {
            // The fallback decided on this proxy's share of the limits:
            // `RateLimit-Policy` says so (rendered from the decision).
            ctx.policy = None;
        }
        if !decision.allowed {
            if route.route.shadow {
                ctx.outcome = Some(outcome::SHADOW_LIMITED);
            } else {
                ctx.outcome = Some(outcome::LIMITED);
                let a = answer::limited(&applicable.buckets, &decision);
                ctx.decision = Some(decision);
                return Some(a);
            }
        }
        ctx.cost = reservation.and_then(|r| r.admitted(subject, &decision, backend));
        ctx.decision = Some(decision);
        None
    }
}
