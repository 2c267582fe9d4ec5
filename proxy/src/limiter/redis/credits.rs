//! Credits in Redis (see [`crate::limiter::credits`]): the bucket script
//! wrapped by `lua/credits.lua` (balance checked and spent in the same
//! call as the buckets), and `lua/credits_adjust.lua` (top-ups applied
//! exactly once across proxies). A request of a credit holder asks Redis
//! every time (no token leases): each one spends from the one balance.

use std::sync::LazyLock;
use std::time::Instant;

use ::redis::Script;
use smallvec::SmallVec;
use tollgate_core::db::credits::CreditAdjustment;

use super::script::{
    buckets_invocation, decide_from_replies, parse_reply, ScriptArgs, SCRIPT_SOURCE,
};
use super::settle::exact;
use super::{RedisLimitError, RedisLimiter};
use crate::limiter::credits::Spent;
use crate::limiter::{Bucket, Subject};

/// The bucket script as a local function, then the credits wrapper.
static SPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "local function buckets(KEYS, ARGV)\n{SCRIPT_SOURCE}\nend\n{}",
        include_str!("../../../../lua/credits.lua")
    ))
});

static REFUND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../../lua/credits_refund.lua")));

static ADJUST: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../../lua/credits_adjust.lua")));

/// The balance key of a subject (its hash tag: the same slot as its
/// buckets). A key of an identity spends with the identity's tag, so its
/// balance is `tg:{i7}:credits:k42`: still the key's own.
pub fn balance_key(subject: &Subject) -> String {
    match subject {
        Subject::Member { key, .. } => format!("tg:{{{subject}}}:credits:k{key}"),
        _ => format!("tg:{{{subject}}}:credits"),
    }
}

fn applied_key(subject: &Subject) -> String {
    format!("{}:applied", balance_key(subject))
}

/// The key remembering the start of the period a balance was last
/// refilled for (next to the balance: same slot).
fn refilled_key(balance_key: &str) -> String {
    format!("{balance_key}:refilled")
}

/// The balance key a request of `subject` spends when `holder` holds the
/// balance ([`crate::limiter::credits::CreditBook::holder_of`]): the
/// identity's own (`tg:{i7}:credits`), else the key's (see
/// [`balance_key`]).
pub fn holder_balance_key(subject: &Subject, holder: &Subject) -> String {
    match holder {
        Subject::Identity(_) => balance_key(holder),
        _ => balance_key(subject),
    }
}

/// A balance's refill, as the scripts take it (see
/// `crate::limiter::credits::refill::args`): the amount (`-1`: none) and
/// the current period's start in seconds.
pub type RefillArgs = (i64, i64);

impl RedisLimiter {
    /// Decide a request of a credit holder: its buckets and `cost` credits
    /// in one script call, all or nothing, bounded by `deadline`.
    pub async fn spend_by(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        cost: u64,
        deadline: Instant,
    ) -> Result<Spent, RedisLimitError> {
        let key = balance_key(subject);
        self.spend_from(subject, &key, (-1, 0), buckets, cost, deadline)
            .await
    }

    /// [`Self::spend_by`] from the balance at `balance_key` (the request's
    /// holder's, see [`holder_balance_key`]), refilled first if `refill`
    /// is due.
    pub async fn spend_from(
        &self,
        subject: &Subject,
        balance_key: &str,
        refill: RefillArgs,
        buckets: &[&Bucket],
        cost: u64,
        deadline: Instant,
    ) -> Result<Spent, RedisLimitError> {
        if Instant::now() >= deadline {
            return Err(RedisLimitError::Timeout(self.timeout));
        }
        let args: SmallVec<[ScriptArgs; 4]> =
            buckets.iter().map(|b| ScriptArgs::new(&b.limit)).collect();
        let asked = exact(&args);
        let wall_us = crate::limiter::quota::wall_now_us();
        // The admission script's keys and arguments (quotas included), then
        // the balance and the cost.
        let mut inv = buckets_invocation(&SPEND, subject, buckets, &args, &asked, wall_us);
        inv.key(balance_key).key(refilled_key(balance_key));
        inv.arg(cost).arg(refill.0).arg(refill.1);
        let reply = self
            .run(
                deadline,
                move |mut conn| async move { conn.invoke(&inv).await },
            )
            .await;
        let reply = match reply {
            Ok(r) => {
                self.breaker.success();
                r
            }
            Err(e) => {
                self.failed();
                return Err(e);
            }
        };
        if let [-1, balance] = reply.as_slice() {
            return Ok(Spent::Exhausted(*balance));
        }
        let Some((&balance, rest)) = reply.split_last() else {
            return Err(RedisLimitError::Script("empty credits reply".into()));
        };
        let replies = parse_reply(rest, buckets.len())?;
        let (mut decision, mut times) = decide_from_replies(buckets, &args, &replies);
        super::calendar::redis_calendar(buckets, &mut decision, &mut times, wall_us);
        if decision.allowed {
            self.over_limit.forget(subject);
        }
        Ok(Spent::Decided(decision, balance))
    }

    /// Give `credits` back to the balance at `balance_key` (a refund on
    /// `refund_on`), unless `refill` is due (the period they were spent in
    /// is over). Returns the balance after.
    pub async fn refund_to(
        &self,
        balance_key: &str,
        credits: u64,
        refill: RefillArgs,
        deadline: Instant,
    ) -> Result<i64, RedisLimitError> {
        let mut inv = REFUND.prepare_invoke();
        inv.key(balance_key)
            .key(refilled_key(balance_key))
            .arg(credits)
            .arg(refill.0)
            .arg(refill.1);
        self.run(deadline, move |mut conn| async move {
            conn.invoke_i64(&inv).await
        })
        .await
    }

    /// Apply one adjustment to its subject's balance, once across every
    /// proxy (idempotent by id). Returns the balance after.
    pub async fn apply_adjustment(
        &self,
        subject: &Subject,
        a: &CreditAdjustment,
    ) -> Result<i64, RedisLimitError> {
        self.apply_adjustment_refilling(subject, a, (-1, 0)).await
    }

    /// [`Self::apply_adjustment`], a due `refill` of the balance applied
    /// first (so the top-up adds to the new period's balance).
    pub async fn apply_adjustment_refilling(
        &self,
        subject: &Subject,
        a: &CreditAdjustment,
        refill: RefillArgs,
    ) -> Result<i64, RedisLimitError> {
        let balance = balance_key(subject);
        let mut inv = ADJUST.prepare_invoke();
        inv.key(&balance)
            .key(applied_key(subject))
            .key(refilled_key(&balance))
            .arg(a.id)
            .arg(a.delta)
            .arg(refill.0)
            .arg(refill.1);
        self.run(self.deadline(), move |mut conn| async move {
            conn.invoke_i64(&inv).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_balance_is_its_keys_in_its_identitys_slot() {
        assert_eq!(balance_key(&Subject::Key(42)), "tg:{k42}:credits");
        let m = Subject::Member {
            key: 42,
            identity: 7,
        };
        assert_eq!(balance_key(&m), "tg:{i7}:credits:k42");
        assert_eq!(applied_key(&m), "tg:{i7}:credits:k42:applied");
        // An identity's balance, spent by all its keys, in the same slot.
        assert_eq!(
            holder_balance_key(&m, &Subject::Key(42)),
            "tg:{i7}:credits:k42"
        );
        assert_eq!(
            holder_balance_key(&m, &Subject::Identity(7)),
            "tg:{i7}:credits"
        );
        assert_eq!(refilled_key("tg:{i7}:credits"), "tg:{i7}:credits:refilled");
    }
}
