//! The limiter step of a credit holder ([`crate::limiter::credits`]) with
//! the configured backend, and applying top-ups to every backend.

use std::collections::HashMap;
use std::time::Instant;

use tollgate_core::config::{LimiterConfig, OnRedisError};
use tollgate_core::db::credits::CreditAdjustment;
use tollgate_core::limits::Decision;

use super::Limiters;
use crate::limiter::credits::{subject_of, Spent};
use crate::limiter::{Bucket, Subject};
use crate::metrics;

/// What the limiter step concluded for a credit holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditVerdict {
    /// The buckets decided (credits spent if admitted), by this backend;
    /// the balance after (`None`: not counted, the `allow` policy).
    Decided(Decision, &'static str, Option<i64>),
    /// The balance is short of the cost.
    Exhausted(i64),
    /// Redis failed and the policy is `deny`.
    Unavailable,
}

impl Limiters {
    /// Decide a credit holder's request: `cost` credits and its buckets in
    /// one all-or-nothing step, with the configured backend; a Redis failure
    /// follows `on_redis_error` (`local`: this proxy's own balance and
    /// buckets, `allow`: admitted uncounted, `deny`: 503).
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
                match cfg.on_redis_error {
                    OnRedisError::Local => local("fallback"),
                    OnRedisError::Allow => CreditVerdict::Decided(
                        Decision {
                            allowed: true,
                            limits: Default::default(),
                        },
                        "allow",
                        None,
                    ),
                    OnRedisError::Deny => CreditVerdict::Unavailable,
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
