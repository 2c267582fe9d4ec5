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
//! - **Whose balance**: an identity that holds credits (an adjustment of
//!   its own, or a refill from its plan) pays for all its keys: a key of
//!   it spends the identity's one balance, whatever the key holds itself.
//!   Otherwise a key spends its own ([`CreditBook::holder_of`]).
//! - **Refill** (`plans.*.credits.refill`, rules in
//!   `tollgate_core::refill`): the balance is set to the amount once per
//!   period, by the first spend or top-up of that period (locally under
//!   the balance's lock, in Redis in the same script call); see
//!   [`refill`].

mod rebuild;
pub mod refill;

pub use rebuild::{fold_age_here, needs_rebuild, FOLD_AGE_ENV};
pub mod spends;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tollgate_core::credits::{self, fold, SubjectKind};
use tollgate_core::db::credits::CreditAdjustment;
use tollgate_core::limits::{Decision, LimitState};
use tollgate_core::refill::Refill;

use super::sharded::ShardedMap;
use super::{Bucket, LocalLimiter, Subject};

/// The name of the credits member of the `RateLimit` header (core's: no
/// limit may have it).
pub use tollgate_core::credits::HEADER_MEMBER as MEMBER;

/// A decision that also spent (or was refused) credits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spent {
    /// The buckets decided (admitted: credits spent); the balance after.
    Decided(Decision, i64),
    /// The balance is short of the cost: nothing taken anywhere.
    Exhausted(i64),
}

/// The key's side of a request's subject: a key's own balance, also when
/// the key acts for its identity. (Which balance a request really spends
/// is [`CreditBook::holder_of`]: the identity's when it holds one.)
pub fn holder(subject: &Subject) -> Subject {
    match *subject {
        Subject::Member { key, .. } => Subject::Key(key),
        other => other,
    }
}

/// The subject a `credit_adjustments` row is about, as the limiter keys it.
pub fn subject_of(a: &CreditAdjustment) -> Option<Subject> {
    match a.subject_kind {
        SubjectKind::Key => Some(Subject::Key(a.subject_id)),
        SubjectKind::Identity => Some(Subject::Identity(a.subject_id)),
    }
}

/// One local balance: the credits, and the start (µs) of the period it was
/// last refilled for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balance {
    pub credits: i64,
    pub refilled: Option<i64>,
}

/// The credit balances and holders of one proxy.
pub struct CreditBook {
    /// Subjects that hold credits (have at least one adjustment).
    holders: RwLock<HashSet<Subject>>,
    /// The refill of each holder with one (its plan's); these hold credits
    /// too. Replaced as a whole by [`Self::set_refills`].
    refills: RwLock<Arc<HashMap<Subject, Arc<Refill>>>>,
    /// Local balances.
    local: ShardedMap<Subject, Balance>,
    /// Adjustments applied to the local balances, by id.
    applied_local: Mutex<HashSet<i64>>,
    /// Adjustments this proxy saw applied in Redis, by id, with the
    /// balance's Redis instance it applied them to (its URL).
    applied_redis: Mutex<HashMap<i64, String>>,
    /// Each holder's last top-up (positive adjustment) seen: `(id,
    /// amount)`, for the `credits.*` webhook events (`crate::limiter::events`).
    top_ups: RwLock<HashMap<Subject, (i64, i64)>>,
    /// The local spends not yet written to the database ([`spends`]).
    pub spends: spends::SpendLog,
    /// When the adjustments applied at start were read (Unix ms; 0: none
    /// were): the background reads go on from there, not from the first
    /// row (black-box round 4, C5).
    read_at: std::sync::atomic::AtomicI64,
    /// The highest adjustment id read at start (0: none): the background
    /// reads find every later row by its id (black-box round 5, N2).
    read_upto: std::sync::atomic::AtomicI64,
    /// The balances were built from a read of every row (at start, or by
    /// the first background read when the start's failed): from then on a
    /// fold row holds only rows already applied, and is not applied
    /// ([`tollgate_core::credits::fold`]).
    built: std::sync::atomic::AtomicBool,
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
            refills: RwLock::default(),
            local: ShardedMap::new(64),
            applied_local: Mutex::default(),
            applied_redis: Mutex::default(),
            top_ups: RwLock::default(),
            spends: spends::SpendLog::new(),
            read_at: std::sync::atomic::AtomicI64::new(0),
            read_upto: std::sync::atomic::AtomicI64::new(0),
            built: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Every adjustment made before `at_ms` (Unix ms) was read and applied
    /// (at start), the highest of them `upto` (0: none).
    pub fn set_read_at(&self, at_ms: i64, upto: i64) {
        self.read_upto
            .store(upto, std::sync::atomic::Ordering::Release);
        self.read_at
            .store(at_ms, std::sync::atomic::Ordering::Release);
        self.mark_built();
    }

    /// Every row was read and applied once: later fold rows add nothing.
    pub fn mark_built(&self) {
        self.built.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The highest adjustment id applied at start (0: none, or not read).
    pub fn read_upto(&self) -> i64 {
        self.read_upto.load(std::sync::atomic::Ordering::Acquire)
    }

    /// When the adjustments applied at start were read; `None` if they
    /// were not.
    pub fn read_at(&self) -> Option<i64> {
        let at = self.read_at.load(std::sync::atomic::Ordering::Acquire);
        (at > 0).then_some(at)
    }

    /// The last top-up of `holder` seen by this proxy: `(id, amount)`.
    pub fn last_top_up(&self, holder: &Subject) -> Option<(i64, i64)> {
        self.top_ups.read().get(holder).copied()
    }

    /// Remember `a` as its holder's last top-up if it is a later one.
    fn note_top_up(&self, holder: Subject, a: &CreditAdjustment) {
        // A proxy's refunds and folds are spend rows, not top-ups.
        if a.delta <= 0
            || a.spent_by.is_some()
            || self.last_top_up(&holder).is_some_and(|(id, _)| id >= a.id)
        {
            return;
        }
        self.top_ups.write().insert(holder, (a.id, a.delta));
    }

    /// Whether `subject` holds credits (a request of a key of an identity:
    /// whether the identity or the key does).
    pub fn holds(&self, subject: &Subject) -> bool {
        self.holder_of(subject).is_some()
    }

    /// Whether this very subject (a key or an identity) holds a balance.
    fn is_holder(&self, subject: &Subject) -> bool {
        {
            let holders = self.holders.read();
            if !holders.is_empty() && holders.contains(subject) {
                return true;
            }
        }
        let refills = self.refills.read();
        !refills.is_empty() && refills.contains_key(subject)
    }

    /// Whose balance a request of `subject` spends: the identity's when it
    /// holds credits, else the key's own; `None` when neither holds any.
    pub fn holder_of(&self, subject: &Subject) -> Option<Subject> {
        if let Subject::Member { identity, .. } = *subject {
            let identity = Subject::Identity(identity);
            if self.is_holder(&identity) {
                return Some(identity);
            }
        }
        let own = holder(subject);
        self.is_holder(&own).then_some(own)
    }

    /// Replace the refills (holder → its plan's refill).
    pub fn set_refills(&self, refills: HashMap<Subject, Arc<Refill>>) {
        *self.refills.write() = Arc::new(refills);
    }

    /// Every holder's refill, as last set.
    pub fn refills(&self) -> Arc<HashMap<Subject, Arc<Refill>>> {
        self.refills.read().clone()
    }

    /// The refill of a holder, if it has one.
    pub fn refill_of(&self, holder: &Subject) -> Option<Arc<Refill>> {
        let refills = self.refills.read();
        refills.get(holder).cloned()
    }

    /// Apply adjustments to the local balances, each once: top-ups, and
    /// the spends other proxies (or earlier runs of this one) wrote, not
    /// this process's own ([`spends`]); of a balance with a refill, only
    /// rows of its current period. Every subject named becomes a holder.
    /// Returns how many were new.
    pub fn apply_local(&self, adjustments: &[CreditAdjustment]) -> usize {
        self.apply_local_at(adjustments, super::quota::wall_now_us())
    }

    /// [`Self::apply_local`] at wall-clock time `wall_us` (a refill due in
    /// its period is applied before the adjustment, so the top-up counts).
    pub fn apply_local_at(&self, adjustments: &[CreditAdjustment], wall_us: i64) -> usize {
        let built = self.built.load(std::sync::atomic::Ordering::Acquire);
        let mut new = 0;
        for a in adjustments {
            let Some(subject) = subject_of(a) else {
                continue;
            };
            self.holders.write().insert(subject);
            self.note_top_up(subject, a);
            if !self.applied_local.lock().insert(a.id) || self.spends.is_own(a) {
                continue;
            }
            if built && fold::is_fold(a.spent_by.as_deref()) {
                // Its rows were applied one by one before they were folded.
                continue;
            }
            let refill = self.refill_of(&subject);
            let period = refill.as_deref().and_then(|r| r.period_start_us(wall_us));
            if period.is_some_and(|start| fold::before_period(spends::moved_at_ms(a), start)) {
                // Set back to the refill's amount since: spent or given
                // in a period that is over.
                continue;
            }
            let mut map = self.local.lock(&subject);
            let b = map.entry(subject).or_default();
            refill::apply_due(b, refill.as_deref(), wall_us);
            b.credits = credits::apply(b.credits, a.delta);
            new += 1;
        }
        new
    }

    /// The adjustments not yet applied to the Redis at `target` (spends of
    /// local proxies never are: Redis keeps its own).
    pub fn pending_redis<'a>(
        &self,
        adjustments: &'a [CreditAdjustment],
        target: &str,
    ) -> Vec<&'a CreditAdjustment> {
        let applied = self.applied_redis.lock();
        adjustments
            .iter()
            .filter(|a| subject_of(a).is_some() && a.spent_by.is_none())
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
        self.local
            .lock(subject)
            .get(subject)
            .map_or(0, |b| b.credits)
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
        let wall = super::quota::wall_now_us();
        self.spend_local_at(
            limiter,
            subject,
            buckets,
            cost,
            |l, s, b| l.check(s, b),
            wall,
        )
    }

    /// [`Self::spend_local`] with the buckets decided by `check` and the
    /// refill's period taken at `wall_us` (the scenario table's clocks).
    pub fn spend_local_at(
        &self,
        limiter: &LocalLimiter,
        subject: &Subject,
        buckets: &[&Bucket],
        cost: u64,
        check: impl FnOnce(&LocalLimiter, &Subject, &[&Bucket]) -> Decision,
        wall_us: i64,
    ) -> Spent {
        let holder = self.holder_of(subject).unwrap_or_else(|| holder(subject));
        let refill = self.refill_of(&holder);
        let mut map = self.local.lock(&holder);
        let b = map.entry(holder).or_default();
        refill::apply_due(b, refill.as_deref(), wall_us);
        let balance = b.credits;
        let Some(after) = credits::spend(balance, cost) else {
            return Spent::Exhausted(balance);
        };
        let decision = check(limiter, subject, buckets);
        if !decision.allowed {
            return Spent::Decided(decision, balance);
        }
        b.credits = after;
        let period = refill.as_deref().and_then(|r| r.period_start_us(wall_us));
        self.spends
            .record(holder, period, after - balance, wall_us.div_euclid(1000));
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

/// What the limiter step concluded for a credit holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditVerdict {
    /// The buckets decided (credits spent if admitted), by this backend;
    /// the balance after (`None`: not counted, the `allow` policy).
    Decided(Decision, &'static str, Option<i64>),
    /// The balance is short of the cost.
    Exhausted(i64),
    /// Redis (the balance's one home) failed: refused with 503, whatever
    /// `on_redis_error` says.
    Unavailable,
}
#[cfg(test)]
mod tests;
