//! Prepaid credits in the limiter (issue #20 item 2; rules in
//! `tollgate_core::credits`): which subjects hold credits, their balances
//! in this process (local backend), the adjustments applied, and spending
//! in the same all-or-nothing step as the buckets.
//!
//! - **Local**: the balance is in a [`ShardedMap`]; a request locks its
//!   subject's balance, checks it, decides the buckets under that lock
//!   ([`LocalLimiter::check`]) and spends only if everything admits (lock
//!   order: balance, then buckets; nothing locks the buckets first and then
//!   a balance).
//! - **Redis** ([`super::redis::credits`]): the balance is a Redis key with
//!   the subject's hash tag, checked and spent by the bucket script's
//!   credits wrapper in the same call.
//! - **Adjustments** (top-ups) are applied exactly once: locally by id in
//!   this process, in Redis by an idempotent script (`SADD` of the id).

use std::collections::{HashMap, HashSet};

use parking_lot::{Mutex, RwLock};
use tollgate_core::credits::{self, SubjectKind};
use tollgate_core::db::credits::CreditAdjustment;
use tollgate_core::limits::{Decision, LimitState};

use super::sharded::ShardedMap;
use super::{Bucket, LocalLimiter, Subject};

/// The name of the credits member of the `RateLimit` header.
pub const MEMBER: &str = "credits";

/// A decision that also spent (or was refused) credits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spent {
    /// The buckets decided (admitted: credits spent); the balance after.
    Decided(Decision, i64),
    /// The balance is short of the cost: nothing taken anywhere.
    Exhausted(i64),
}

/// The subject a `credit_adjustments` row is about, as the limiter keys it
/// (`None`: a kind this proxy does not limit by yet).
/// Who holds the balance a request of `subject` spends: a key's, also when
/// the key acts for its identity (its buckets are then the identity's).
pub fn holder(subject: &Subject) -> Subject {
    match *subject {
        Subject::Member { key, .. } => Subject::Key(key),
        other => other,
    }
}

pub fn subject_of(a: &CreditAdjustment) -> Option<Subject> {
    match a.subject_kind {
        SubjectKind::Key => Some(Subject::Key(a.subject_id)),
        SubjectKind::Identity => None,
    }
}

/// The credit balances and holders of one proxy.
pub struct CreditBook {
    /// Subjects that hold credits (have at least one adjustment).
    holders: RwLock<HashSet<Subject>>,
    /// Local balances.
    local: ShardedMap<Subject, i64>,
    /// Adjustments applied to the local balances, by id.
    applied_local: Mutex<HashSet<i64>>,
    /// Adjustments this proxy saw applied in Redis, by id, with the
    /// balance's Redis instance it applied them to (its URL).
    applied_redis: Mutex<HashMap<i64, String>>,
    /// Each holder's last top-up (positive adjustment) seen: `(id,
    /// amount)`, for the `credits.*` webhook events (`crate::events`).
    top_ups: RwLock<HashMap<Subject, (i64, i64)>>,
}

impl std::fmt::Debug for CreditBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreditBook")
            .field("holders", &self.holders.read().len())
            .finish_non_exhaustive()
    }
}

impl Default for CreditBook {
    fn default() -> Self {
        Self::new()
    }
}

impl CreditBook {
    pub fn new() -> Self {
        Self {
            holders: RwLock::default(),
            local: ShardedMap::new(64),
            applied_local: Mutex::default(),
            applied_redis: Mutex::default(),
            top_ups: RwLock::default(),
        }
    }

    /// The last top-up of `holder` seen by this proxy: `(id, amount)`.
    pub fn last_top_up(&self, holder: &Subject) -> Option<(i64, i64)> {
        self.top_ups.read().get(holder).copied()
    }

    /// Remember `a` as its holder's last top-up if it is a later one.
    fn note_top_up(&self, holder: Subject, a: &CreditAdjustment) {
        if a.delta <= 0 || self.last_top_up(&holder).is_some_and(|(id, _)| id >= a.id) {
            return;
        }
        self.top_ups.write().insert(holder, (a.id, a.delta));
    }

    /// Whether `subject` holds credits.
    pub fn holds(&self, subject: &Subject) -> bool {
        let subject = &holder(subject);
        let holders = self.holders.read();
        !holders.is_empty() && holders.contains(subject)
    }

    /// Apply adjustments to the local balances, each once. Every subject
    /// named becomes a holder. Returns how many were new.
    pub fn apply_local(&self, adjustments: &[CreditAdjustment]) -> usize {
        let mut new = 0;
        for a in adjustments {
            let Some(subject) = subject_of(a) else {
                continue;
            };
            self.holders.write().insert(subject);
            self.note_top_up(subject, a);
            if !self.applied_local.lock().insert(a.id) {
                continue;
            }
            let mut map = self.local.lock(&subject);
            let b = map.entry(subject).or_insert(0);
            *b = credits::apply(*b, a.delta);
            new += 1;
        }
        new
    }

    /// The adjustments not yet applied to the Redis at `target`.
    pub fn pending_redis<'a>(
        &self,
        adjustments: &'a [CreditAdjustment],
        target: &str,
    ) -> Vec<&'a CreditAdjustment> {
        let applied = self.applied_redis.lock();
        adjustments
            .iter()
            .filter(|a| subject_of(a).is_some())
            .filter(|a| applied.get(&a.id).is_none_or(|t| t != target))
            .collect()
    }

    /// Remember that Redis at `target` has adjustment `id` applied.
    pub fn applied_in_redis(&self, id: i64, target: &str) {
        self.applied_redis.lock().insert(id, target.to_string());
    }

    /// Forget adjustments older than the window the proxy re-reads (their
    /// ids never come back), keeping memory bounded.
    pub fn forget_applied(&self, ids_still_read: &HashSet<i64>) {
        self.applied_redis
            .lock()
            .retain(|id, _| ids_still_read.contains(id));
        self.applied_local
            .lock()
            .retain(|id| ids_still_read.contains(id));
    }

    /// The local balance of a subject (0 if none).
    pub fn local_balance(&self, subject: &Subject) -> i64 {
        self.local.lock(subject).get(subject).copied().unwrap_or(0)
    }

    /// Decide a request locally: spend `cost` credits and the buckets'
    /// tokens together, or nothing.
    pub fn spend_local(
        &self,
        limiter: &LocalLimiter,
        subject: &Subject,
        buckets: &[&Bucket],
        cost: u64,
    ) -> Spent {
        let holder = holder(subject);
        let mut map = self.local.lock(&holder);
        let balance = map.get(&holder).copied().unwrap_or(0);
        let Some(after) = credits::spend(balance, cost) else {
            return Spent::Exhausted(balance);
        };
        let decision = limiter.check(subject, buckets);
        if !decision.allowed {
            return Spent::Decided(decision, balance);
        }
        map.insert(holder, after);
        Spent::Decided(decision, after)
    }
}

/// The `RateLimit` member reporting a balance (`r` = credits left; a
/// balance has no window: `w` and `t` are 0). `violated` when exhausted.
pub fn state(balance: i64, violated: bool) -> LimitState {
    LimitState {
        name: MEMBER.into(),
        quota: u64::try_from(balance).unwrap_or(0),
        window_secs: 0,
        remaining: u64::try_from(balance).unwrap_or(0),
        reset_secs: 0,
        violated,
        retry_after_secs: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Scope;
    use std::time::Duration;
    use tollgate_core::limits::Limit;

    fn adj(id: i64, key: i64, delta: i64) -> CreditAdjustment {
        CreditAdjustment {
            id,
            subject_kind: SubjectKind::Key,
            subject_id: key,
            delta,
            created_at: 0,
            actor: String::new(),
        }
    }

    #[test]
    fn adjustments_apply_once_and_spending_is_all_or_nothing() {
        let book = CreditBook::new();
        let k = Subject::Key(1);
        assert!(!book.holds(&k));
        assert_eq!(book.apply_local(&[adj(1, 1, 3), adj(2, 1, 2)]), 2);
        // Read again: nothing applied twice.
        assert_eq!(book.apply_local(&[adj(1, 1, 3), adj(2, 1, 2)]), 0);
        assert!(book.holds(&k) && !book.holds(&Subject::Key(2)));
        assert_eq!(book.local_balance(&k), 5);
        let l = LocalLimiter::new(2);
        let b = Bucket::new(
            Scope::Key,
            Limit::new("hour", 3, Duration::from_secs(3600), None, None),
        );
        // Credits 5, bucket 3: the bucket refuses the 4th, which spends nothing.
        for left in [4, 3, 2] {
            match book.spend_local(&l, &k, &[&b], 1) {
                Spent::Decided(d, after) => assert!(d.allowed && after == left),
                other => panic!("{other:?}"),
            }
        }
        match book.spend_local(&l, &k, &[&b], 1) {
            Spent::Decided(d, after) => assert!(!d.allowed && after == 2),
            other => panic!("{other:?}"),
        }
        // A cost above the balance: refused, and the bucket is not asked.
        let fresh = Bucket::new(
            Scope::Route("r"),
            Limit::new("r", 10, Duration::from_secs(3600), None, None),
        );
        assert_eq!(book.spend_local(&l, &k, &[&fresh], 3), Spent::Exhausted(2));
        assert_eq!(l.check(&k, &[&fresh]).limits[0].remaining, 9);
        // Exactly the balance: admitted, 0 left, then exhausted.
        match book.spend_local(&l, &k, &[&fresh], 2) {
            Spent::Decided(d, 0) => assert!(d.allowed),
            other => panic!("{other:?}"),
        }
        assert_eq!(book.spend_local(&l, &k, &[], 1), Spent::Exhausted(0));
        // A top-up of 50 admits exactly 50 more (no buckets at all).
        book.apply_local(&[adj(3, 1, 50)]);
        let admitted = (0..60)
            .filter(|_| matches!(book.spend_local(&l, &k, &[], 1), Spent::Decided(..)))
            .count();
        assert_eq!(admitted, 50);
        // A negative adjustment can leave a debt: refused until topped up.
        book.apply_local(&[adj(4, 1, -5), adj(5, 1, 4)]);
        assert_eq!(book.spend_local(&l, &k, &[], 0), Spent::Exhausted(-1));
    }

    #[test]
    fn a_key_of_an_identity_spends_its_own_credits_with_the_identitys_buckets() {
        let book = CreditBook::new();
        book.apply_local(&[adj(1, 1, 10)]);
        let member = Subject::Member {
            key: 1,
            identity: 7,
        };
        let other = Subject::Member {
            key: 2,
            identity: 7,
        };
        assert!(book.holds(&member), "the key's balance");
        assert!(!book.holds(&other), "another key of the identity has none");
        let l = LocalLimiter::new(2);
        let mut shared = Limit::new("hour", 2, Duration::from_secs(3600), None, None);
        shared.scope = tollgate_core::limits::LimitScope::Identity;
        let shared = Bucket::new(Scope::Key, shared);
        // The identity's bucket: key 2 takes one token, key 1 the last.
        assert!(l.check(&other, &[&shared]).allowed);
        match book.spend_local(&l, &member, &[&shared], 1) {
            Spent::Decided(d, 9) => assert!(d.allowed),
            x => panic!("{x:?}"),
        }
        match book.spend_local(&l, &member, &[&shared], 1) {
            Spent::Decided(d, 9) => assert!(!d.allowed, "the shared bucket is empty"),
            x => panic!("{x:?}"),
        }
        assert_eq!(book.local_balance(&Subject::Key(1)), 9);
    }
}
