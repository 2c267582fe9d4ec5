//! Settling a cost reservation in Redis (`lua/settle.lua`): the tokens a
//! route's response says were not used go back, the ones used beyond the
//! reservation are taken (within one reservation of debt), on the same keys
//! the token-bucket script uses, in one atomic call: exact across proxies.

use std::sync::LazyLock;
use std::time::Instant;

use ::redis::{Script, ScriptInvocation};
use smallvec::SmallVec;
use tollgate_core::cost::Settle;

use super::script::{bucket_key, LeaseArgs, ScriptArgs};
use super::{RedisLimitError, RedisLimiter};
use crate::limiter::{Bucket, Subject};

/// The Lua source, loaded at build time.
pub const SETTLE_SOURCE: &str = include_str!("../../../../lua/settle.lua");

static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE_SOURCE));

/// Lease arguments that take exactly the cost and give nothing back: a cost
/// reservation holds no lease.
pub(super) fn exact(args: &[ScriptArgs]) -> SmallVec<[LeaseArgs; 4]> {
    args.iter()
        .map(|a| LeaseArgs {
            ret: 0,
            want: a.cost,
        })
        .collect()
}

/// What the settlement did to one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Tokens taken (> 0) or given back (< 0).
    pub applied: i64,
    /// Tokens left after it (0 while in debt).
    pub remaining: u64,
}

/// The signed token count the script gets.
fn delta(s: Settle) -> i64 {
    match s {
        Settle::Keep => 0,
        Settle::Return(n) => -i64::try_from(n).unwrap_or(i64::MAX),
        Settle::Take(n) => i64::try_from(n).unwrap_or(i64::MAX),
    }
}

/// One call of the settlement script; `now_us` only in tests.
pub fn invocation(
    subject: &Subject,
    buckets: &[&Bucket],
    s: Settle,
    now_us: Option<u64>,
) -> ScriptInvocation<'static> {
    let mut inv = SETTLE.prepare_invoke();
    for b in buckets {
        inv.key(bucket_key(subject, b));
    }
    let d = delta(s);
    for b in buckets {
        let a = ScriptArgs::new(&b.limit);
        inv.arg(a.interval_us).arg(a.burst).arg(a.cost).arg(d);
    }
    if let Some(now) = now_us {
        inv.arg(now);
    }
    inv
}

fn parse(reply: &[i64], n: usize) -> Result<Vec<Settled>, RedisLimitError> {
    if reply.len() != 2 * n {
        return Err(RedisLimitError::Script(format!(
            "unexpected settlement reply: {} integers for {n} limits",
            reply.len()
        )));
    }
    Ok(reply
        .chunks_exact(2)
        .map(|c| Settled {
            applied: c[0],
            remaining: u64::try_from(c[1]).unwrap_or(0),
        })
        .collect())
}

impl RedisLimiter {
    /// Settle a reservation taken from `buckets` (the request's reserving
    /// buckets, [`crate::limiter::cost::reserving`]), waiting for Redis until
    /// `deadline`. On an error nothing is known to have changed: the
    /// reservation stays (fewer admissions, never more). The breaker is not
    /// consulted: a settlement that gives tokens back is worth one try.
    pub async fn settle_by(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        s: Settle,
        deadline: Instant,
    ) -> Result<Vec<Settled>, RedisLimitError> {
        self.settle_call(subject, buckets, s, None, deadline).await
    }

    /// Tests only: [`Self::settle_by`] at an explicit instant (µs).
    #[doc(hidden)]
    pub async fn settle_at_us(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        s: Settle,
        now_us: u64,
    ) -> Result<Vec<Settled>, RedisLimitError> {
        self.settle_call(subject, buckets, s, Some(now_us), self.deadline())
            .await
    }

    async fn settle_call(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        s: Settle,
        now_us: Option<u64>,
        deadline: Instant,
    ) -> Result<Vec<Settled>, RedisLimitError> {
        if buckets.is_empty() || s == Settle::Keep {
            return Ok(Vec::new());
        }
        let inv = invocation(subject, buckets, s, now_us);
        let reply = self
            .run(
                deadline,
                move |mut conn| async move { conn.invoke(&inv).await },
            )
            .await?;
        let settled = parse(&reply, buckets.len())?;
        if settled.iter().any(|s| s.applied < 0) {
            // A refusal cached before the tokens came back may be wrong now.
            self.over_limit.forget(subject);
        }
        Ok(settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_checked() {
        assert!(parse(&[1, 2, 3], 2).is_err());
        let s = parse(&[-3, 4, 2, 0], 2).expect("two");
        assert_eq!(
            s[0],
            Settled {
                applied: -3,
                remaining: 4
            }
        );
        assert_eq!(parse(&[1, -1], 1).expect("one")[0].remaining, 0);
        assert_eq!(delta(Settle::Return(u64::MAX)), -i64::MAX);
        assert_eq!(delta(Settle::Take(5)), 5);
    }
}
