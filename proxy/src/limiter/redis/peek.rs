//! Reading a subject's buckets in Redis without taking tokens
//! (`lua/peek.lua`, read-only), for `proxy.usage_path`.

use std::sync::LazyLock;
use std::time::Instant;

use ::redis::Script;
use tollgate_core::limits::{self, LimitState};

use super::{bucket_key, RedisLimitError, RedisLimiter};
use crate::limiter::{quota, Bucket, Subject};

/// The Lua source, loaded at build time.
pub const PEEK_SOURCE: &str = include_str!("../../../../lua/peek.lua");

static PEEK: LazyLock<Script> = LazyLock::new(|| Script::new(PEEK_SOURCE));

impl RedisLimiter {
    /// The buckets as they stand in Redis, nothing taken; bounded by
    /// `deadline` and the circuit breaker like an admission.
    pub async fn peek(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        deadline: Instant,
    ) -> Result<Vec<LimitState>, RedisLimitError> {
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        if Instant::now() >= deadline {
            return Err(RedisLimitError::Timeout(self.timeout));
        }
        if !self.breaker.allow() {
            return Err(RedisLimitError::CircuitOpen);
        }
        let mut inv = PEEK.prepare_invoke();
        let wall_us = quota::wall_now_us();
        for b in buckets {
            match quota::bounds(b, wall_us) {
                Some(p) => inv
                    .key(format!(
                        "{}{}",
                        bucket_key(subject, b),
                        quota::period_suffix(&p)
                    ))
                    .arg("q"),
                None => inv.key(bucket_key(subject, b)).arg("b"),
            };
        }
        let result = self
            .run(
                deadline,
                move |mut conn| async move { conn.invoke(&inv).await },
            )
            .await;
        match &result {
            Ok(_) => self.breaker.success(),
            Err(_) => self.failed(),
        }
        let used: Vec<i64> = result?;
        if used.len() != buckets.len() {
            return Err(RedisLimitError::Other(format!(
                "peek script returned {} values for {} buckets",
                used.len(),
                buckets.len()
            )));
        }
        Ok(buckets
            .iter()
            .zip(used)
            .map(|(b, us)| {
                if b.policy.calendar.is_some() {
                    let used = u64::try_from(us).unwrap_or(0);
                    let left = b.policy.quota.saturating_sub(used);
                    return quota::state(b, quota::bounds(b, wall_us), left, false, wall_us);
                }
                let ns = u64::try_from(us).unwrap_or(0).saturating_mul(1_000);
                limits::peek_bucket(&b.policy, ns)
            })
            .collect())
    }
}
