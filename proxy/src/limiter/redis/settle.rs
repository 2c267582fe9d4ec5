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
use crate::limiter::quota::{key_ttl_ms, period_suffix, settle_period, wall_now_us};
use crate::limiter::{Bucket, Subject};
use tollgate_core::quota::PeriodBounds;

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

/// One call of the settlement script on `buckets` (`now_us` only in
/// tests). A quota's key names the period of the admission at
/// `admitted_us`; a quota whose period ended by `wall_us` must not be
/// among `buckets` ([`settled_here`]).
pub fn invocation(
    subject: &Subject,
    buckets: &[&Bucket],
    s: Settle,
    now_us: Option<u64>,
    admitted_us: i64,
    wall_us: i64,
) -> ScriptInvocation<'static> {
    let mut inv = SETTLE.prepare_invoke();
    let periods: SmallVec<[Option<PeriodBounds>; 4]> = buckets
        .iter()
        .map(|b| settle_period(b, admitted_us, wall_us))
        .collect();
    for (b, p) in buckets.iter().zip(&periods) {
        match p {
            Some(p) => inv.key(format!("{}{}", bucket_key(subject, b), period_suffix(p))),
            None => inv.key(bucket_key(subject, b)),
        };
    }
    let d = delta(s);
    for (b, p) in buckets.iter().zip(&periods) {
        let a = ScriptArgs::new(&b.limit);
        match p {
            Some(p) => {
                let ttl = i64::try_from(key_ttl_ms(p, wall_us)).unwrap_or(i64::MAX);
                inv.arg(-ttl).arg(b.policy.quota).arg(b.limit.cost()).arg(d)
            }
            None => inv.arg(a.interval_us).arg(a.burst).arg(a.cost).arg(d),
        };
    }
    if let Some(now) = now_us {
        inv.arg(now);
    }
    inv
}

/// Which of `buckets` a settlement reaches: every bucket, and the quotas
/// whose admission period (`admitted_us`) still lasts at `wall_us`.
pub fn settled_here(buckets: &[&Bucket], admitted_us: i64, wall_us: i64) -> Vec<usize> {
    buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| {
            b.policy.calendar.is_none() || settle_period(b, admitted_us, wall_us).is_some()
        })
        .map(|(i, _)| i)
        .collect()
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
    /// buckets, [`crate::limiter::cost::reserving`]) at `admitted_us` (wall
    /// clock µs: its quotas' period), waiting for Redis until `deadline`.
    /// Returns one [`Settled`] per bucket (nothing applied to a quota whose
    /// period is over). On an error nothing is known to have changed: the
    /// reservation stays (fewer admissions, never more). The breaker is not
    /// consulted: a settlement that gives tokens back is worth one try.
    pub async fn settle_by(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        s: Settle,
        admitted_us: i64,
        deadline: Instant,
    ) -> Result<Vec<Settled>, RedisLimitError> {
        self.settle_call(subject, buckets, s, None, admitted_us, deadline)
            .await
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
        let wall = wall_now_us();
        self.settle_call(subject, buckets, s, Some(now_us), wall, self.deadline())
            .await
    }

    async fn settle_call(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        s: Settle,
        now_us: Option<u64>,
        admitted_us: i64,
        deadline: Instant,
    ) -> Result<Vec<Settled>, RedisLimitError> {
        let untouched = Settled {
            applied: 0,
            remaining: 0,
        };
        let wall_us = wall_now_us();
        let here = settled_here(buckets, admitted_us, wall_us);
        if here.is_empty() || s == Settle::Keep {
            return Ok(vec![untouched; buckets.len()]);
        }
        let refs: SmallVec<[&Bucket; 4]> = here.iter().map(|&i| buckets[i]).collect();
        let inv = invocation(subject, &refs, s, now_us, admitted_us, wall_us);
        let reply = self
            .run(
                deadline,
                move |mut conn| async move { conn.invoke(&inv).await },
            )
            .await?;
        let settled = parse(&reply, refs.len())?;
        if settled.iter().any(|s| s.applied < 0) {
            // A refusal cached before the tokens came back may be wrong now.
            self.over_limit.forget(subject);
        }
        let mut out = vec![untouched; buckets.len()];
        for (i, one) in here.into_iter().zip(settled) {
            out[i] = one;
        }
        Ok(out)
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
