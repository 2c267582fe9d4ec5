//! The limiter step of a credit holder ([`crate::limiter::credits`]) with
//! the configured backend, and applying top-ups to every backend.

use std::collections::HashMap;
use std::time::Instant;

use tollgate_core::config::LimiterConfig;
use tollgate_core::db::credits::CreditAdjustment;

use super::Limiters;
use crate::limiter::credits::{subject_of, Spent};
use crate::limiter::{Bucket, Subject};
use crate::metrics;

pub use crate::limiter::credits::CreditVerdict;

impl Limiters {
    /// Decide a credit holder's request: `cost` credits and its buckets in
    /// one all-or-nothing step, with the configured backend; a Redis failure
    /// refuses it (503 `limiter-unavailable`) whatever `on_redis_error`
    /// says: no credit is ever spent twice.
    pub async fn decide_credits(
        &self,
        cfg: &LimiterConfig,
        subject: &Subject,
        buckets: &[&Bucket],
        cost: u64,
        deadline: Instant,
    ) -> CreditVerdict {
        let wall = crate::limiter::quota::wall_now_us();
        let local = |backend| match self.credits.spend_local_at(
            &self.local,
            subject,
            buckets,
            cost,
            |l, s, b| l.check(s, b),
            wall,
        ) {
            Spent::Decided(d, b) => CreditVerdict::Decided(d, backend, Some(b)),
            Spent::Exhausted(b) => CreditVerdict::Exhausted(b),
        };
        let result = match self.redis_limiter(cfg) {
            None => return local("local"),
            Some(Err(e)) => Err(e),
            Some(Ok(redis)) => {
                let holder = self
                    .credits
                    .holder_of(subject)
                    .unwrap_or_else(|| crate::limiter::credits::holder(subject));
                let refill = self.credits.refill_of(&holder);
                let refill = crate::limiter::credits::refill::args(refill.as_deref(), wall);
                let key = crate::limiter::redis::credits::holder_balance_key(subject, &holder);
                redis
                    .spend_from(subject, &key, refill, buckets, cost, deadline)
                    .await
            }
        };
        match result {
            Ok(Spent::Decided(d, b)) => CreditVerdict::Decided(d, "redis", Some(b)),
            Ok(Spent::Exhausted(b)) => CreditVerdict::Exhausted(b),
            Err(e) => {
                metrics::REDIS_ERRORS.with_label_values(&[e.kind()]).inc();
                tracing::debug!("redis limiter (credits): {e}");
                // Credits are money: Redis holds the one balance, so a
                // request that would spend from it is refused (503) while
                // Redis fails, whatever `on_redis_error` says (a fallback
                // would spend from a balance that does not know what was
                // already spent through Redis: finding B7).
                CreditVerdict::Unavailable
            }
        }
    }

    /// Give back the `credits` a request of `subject` spent from the
    /// balance in `held` (a status in the route's `refund_on`), waiting for
    /// Redis no longer than `redis_timeout`. Never fails: an error keeps
    /// the credits spent (logged; `tollgate_cost_settlements_total`
    /// counts `credits_refunded` or `error`).
    pub async fn refund_credits(
        &self,
        cfg: &LimiterConfig,
        held: super::Held,
        subject: &Subject,
        credits: u64,
    ) {
        use super::{Held, SETTLEMENTS};
        match held {
            Held::Local => {
                self.credits.refund_local(subject, credits);
                SETTLEMENTS.with_label_values(&["credits_refunded"]).inc();
            }
            Held::Redis => {
                let Some(redis) = self.redis_for(cfg) else {
                    return;
                };
                let holder = self
                    .credits
                    .holder_of(subject)
                    .unwrap_or_else(|| crate::limiter::credits::holder(subject));
                let refill = self.credits.refill_of(&holder);
                let refill = crate::limiter::credits::refill::args(
                    refill.as_deref(),
                    crate::limiter::quota::wall_now_us(),
                );
                let key = crate::limiter::redis::credits::holder_balance_key(subject, &holder);
                let deadline = super::redis_deadline(cfg);
                match redis.refund_to(&key, credits, refill, deadline).await {
                    Ok(_) => SETTLEMENTS.with_label_values(&["credits_refunded"]).inc(),
                    Err(e) => {
                        metrics::REDIS_ERRORS.with_label_values(&[e.kind()]).inc();
                        SETTLEMENTS.with_label_values(&["error"]).inc();
                        tracing::debug!("refunding {credits} credits: {e}");
                    }
                }
            }
        }
    }

    /// Apply adjustments read from the database: to this proxy's local
    /// balances always (the local backend, and the `local` fallback), and
    /// to Redis when it is the backend (each once; one that fails is
    /// tried again with the next read).
    ///
    /// `identities` maps a key to its identity: a key of an identity keeps
    /// its balance under the identity's hash tag (the slot of the buckets it
    /// is spent with, see `redis::credits::balance_key`).
    pub async fn apply_adjustments(
        &self,
        cfg: &LimiterConfig,
        adjustments: &[CreditAdjustment],
        identities: &HashMap<i64, i64>,
    ) {
        self.credits.apply_local(adjustments);
        self.apply_in_redis(cfg, adjustments, identities).await;
    }

    /// Rebuild the local balances from `all` (every row; see
    /// [`crate::limiter::credits::CreditBook::rebuild_local`]) and apply
    /// what Redis lacks, as [`Self::apply_adjustments`] does.
    pub async fn rebuild_from(
        &self,
        cfg: &LimiterConfig,
        all: &[CreditAdjustment],
        identities: &HashMap<i64, i64>,
    ) {
        self.credits
            .rebuild_local(all, crate::limiter::quota::wall_now_us());
        self.apply_in_redis(cfg, all, identities).await;
    }

    /// The top-ups and adjustments among `adjustments` not yet applied to
    /// the Redis backend (when it is the backend), each once.
    async fn apply_in_redis(
        &self,
        cfg: &LimiterConfig,
        adjustments: &[CreditAdjustment],
        identities: &HashMap<i64, i64>,
    ) {
        let Some(redis) = self.redis_for(cfg) else {
            return;
        };
        let target = redis.target().to_string();
        for a in self.credits.pending_redis(adjustments, &target) {
            let Some(subject) = subject_of(a) else {
                continue;
            };
            let subject = match subject {
                Subject::Key(key) => {
                    crate::limiter::identity::subject_for(key, identities.get(&key).copied())
                }
                other => other,
            };
            let refill = self
                .credits
                .refill_of(&crate::limiter::credits::holder(&subject));
            let refill = crate::limiter::credits::refill::args(
                refill.as_deref(),
                crate::limiter::quota::wall_now_us(),
            );
            match redis.apply_adjustment_refilling(&subject, a, refill).await {
                Ok(_) => self.credits.applied_in_redis(a.id, &target),
                Err(e) => tracing::debug!("credit adjustment {} not applied yet: {e}", a.id),
            }
        }
    }
}
