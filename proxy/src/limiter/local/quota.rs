//! Calendar quotas in the in-process limiter (see [`crate::limiter::quota`]).
//!
//! A subject's quota counts live in their own sharded map beside its
//! buckets: per quota its slot, its period and the uses counted in it. A
//! request with a quota locks the subject's quota shard first and holds it
//! while its buckets are decided (their own atomic step, under their own
//! shard's lock): the quotas are charged only if the buckets admitted, so
//! the whole request is all-or-nothing. Lock order: quotas, then buckets;
//! no path locks them the other way round.

use smallvec::SmallVec;
use std::sync::LazyLock;
use std::time::Duration;

use tollgate_core::limits::{self, Decision, Limit, LimitState, Policy};
use tollgate_core::quota::check_quota;

use super::LocalLimiter;
use crate::limiter::quota::{bounds, state};
use crate::limiter::{Bucket, Subject};

mod adjust;
pub mod checkpoint;
mod settle;
#[cfg(test)]
mod test_support;

/// One quota's count: its slot ([`Bucket::slot`]), the key it belongs to
/// (0: the whole subject, e.g. an identity's shared quota), its period and
/// its uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Count {
    slot: u32,
    key: i64,
    start_us: i64,
    end_us: i64,
    used: u64,
    /// The last quota adjustment folded into `used` (0: none): a count
    /// read back at start is not adjusted twice ([`checkpoint`]).
    adjusted_through: i64,
    /// Changed since it was last written ([`checkpoint`]).
    dirty: bool,
}

/// A subject's quota counts.
pub(super) type Counts = SmallVec<[Count; 2]>;

/// Where a subject's quota counts live: all keys of an identity count
/// under the identity (so one lock makes a request's quotas atomic, shared
/// or not); any other subject under itself.
fn holder(subject: &Subject) -> Subject {
    match *subject {
        Subject::Member { identity, .. } => Subject::Identity(identity),
        other => other,
    }
}

/// The key a quota's count belongs to within its holder: a member's own
/// (key-scoped) quota is its key's; an identity-scoped one is shared (0).
fn owner_key(subject: &Subject, b: &Bucket) -> i64 {
    match *subject {
        Subject::Member { key, .. } if !b.identity_scope => key,
        _ => 0,
    }
}

impl LocalLimiter {
    /// Decide a request with at least one quota at `now` (this limiter's
    /// clock, for the buckets) and `wall_us` (µs since the epoch, for the
    /// periods).
    pub(super) fn check_quotas_at(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        now: u64,
        wall_us: i64,
    ) -> Decision {
        let holder = holder(subject);
        let mut map = self.quotas.lock(&holder);
        let held = map.get(&holder);
        // Per quota: (index in `buckets`, period, check).
        let mut quotas: SmallVec<[_; 2]> = SmallVec::new();
        let mut plain: SmallVec<[&Bucket; 4]> = SmallVec::new();
        for (i, b) in buckets.iter().enumerate() {
            if b.policy.calendar.is_none() {
                plain.push(*b);
                continue;
            }
            let period = bounds(b, wall_us);
            let used = match (period, held) {
                (Some(p), Some(h)) => h
                    .iter()
                    .find(|c| {
                        c.slot == b.slot
                            && c.key == owner_key(subject, b)
                            && c.start_us == p.start_us
                    })
                    .map_or(0, |c| c.used),
                _ => 0,
            };
            let mut c = check_quota(b.policy.quota, used, b.limit.cost());
            // No period (an instant beyond the calendar): refused.
            c.allowed &= period.is_some();
            quotas.push((i, period, used, c));
        }
        let quotas_allow = quotas.iter().all(|q| q.3.allowed);
        // The buckets: taken only if every quota has room; else reported
        // as they stand.
        let (allowed, bucket_states): (bool, Vec<LimitState>) = if quotas_allow {
            let d = self.check_at(subject, &plain, now);
            (d.allowed, d.limits.into_vec())
        } else {
            (false, self.dry_run(subject, &plain, now).limits.into_vec())
        };
        if allowed {
            let counts = map.entry(holder).or_default();
            for &(i, period, _, c) in &quotas {
                let (Some(p), b) = (period, buckets[i]) else {
                    continue;
                };
                let key = owner_key(subject, b);
                let fresh = Count {
                    slot: b.slot,
                    key,
                    start_us: p.start_us,
                    end_us: p.end_us,
                    used: c.new_used,
                    adjusted_through: 0,
                    dirty: true,
                };
                match counts.iter_mut().find(|x| x.slot == b.slot && x.key == key) {
                    Some(x) if x.start_us == p.start_us => {
                        x.used = c.new_used;
                        x.dirty = true;
                    }
                    Some(x) => *x = fresh,
                    None => counts.push(fresh),
                }
            }
        }
        drop(map);
        let mut bucket_states = bucket_states.into_iter();
        let mut quotas = quotas.into_iter().peekable();
        let limits = buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match quotas.peek() {
                Some(&(qi, period, used, c)) if qi == i => {
                    quotas.next();
                    let remaining = if allowed {
                        c.remaining
                    } else {
                        b.policy.quota.saturating_sub(used)
                    };
                    Some(state(b, period, remaining, !c.allowed, wall_us))
                }
                _ => bucket_states.next(),
            })
            .collect();
        Decision { allowed, limits }
    }

    /// The buckets' decision at `now` with nothing taken (a quota refused
    /// the request): each bucket reports whether it, too, would refuse, as
    /// the Redis script does.
    fn dry_run(&self, subject: &Subject, buckets: &[&Bucket], now: u64) -> Decision {
        let tat = |b: &Bucket| -> u64 {
            let slot = b.slot;
            // A member's key-scoped buckets are its key's; shared ones the
            // identity's.
            let owner = match *subject {
                Subject::Member { identity, .. } | Subject::Identity(identity)
                    if b.identity_scope || matches!(subject, Subject::Identity(_)) =>
                {
                    return super::shared::find(
                        self.identities.lock(&identity).get(&identity),
                        slot,
                    )
                    .unwrap_or(0);
                }
                Subject::Member { key, .. } => Subject::Key(key),
                other => other,
            };
            // Each guard is dropped at the end of its statement (as in `peek`).
            let inline = match owner {
                Subject::Key(id) => self.keys.lock(&id).get(&id).and_then(|e| e.get(slot)),
                Subject::Ip(ip) => self.ips.lock(&ip).get(&ip).and_then(|e| e.get(slot)),
                Subject::Identity(_) | Subject::Member { .. } => None,
            };
            inline
                .or_else(|| {
                    self.more
                        .lock(&owner)
                        .get(&owner)
                        .and_then(|m| m.iter().find(|(s, _)| *s == slot).map(|&(_, t)| t))
                })
                .unwrap_or(0)
        };
        // A policy that never admits (cost above burst) stands for the
        // refusing quota: `decide` then reports the other buckets as they
        // stay, exactly as for a request another bucket refused.
        static REFUSING: LazyLock<Policy> = LazyLock::new(|| {
            Policy::new(&Limit::new("", 1, Duration::from_secs(1), Some(1), Some(2)))
        });
        let mut policies: SmallVec<[&Policy; 4]> = buckets.iter().map(|b| &b.policy).collect();
        let mut tats: SmallVec<[u64; 4]> = buckets.iter().map(|b| tat(b)).collect();
        policies.push(&REFUSING);
        tats.push(0);
        let mut d = limits::decide(&policies, &tats, now).0;
        d.limits.pop();
        d
    }

    /// A quota as it stands, nothing taken (`proxy.usage_path`).
    pub(super) fn peek_quota(&self, subject: &Subject, b: &Bucket, wall_us: i64) -> LimitState {
        let period = bounds(b, wall_us);
        let used = period.map_or(0, |p| {
            let holder = holder(subject);
            let key = owner_key(subject, b);
            self.quotas
                .lock(&holder)
                .get(&holder)
                .and_then(|h| {
                    h.iter()
                        .find(|c| c.slot == b.slot && c.key == key && c.start_us == p.start_us)
                })
                .map_or(0, |c| c.used)
        });
        state(
            b,
            period,
            b.policy.quota.saturating_sub(used),
            false,
            wall_us,
        )
    }

    /// Drop the counts of periods that ended by `wall_us`.
    pub(super) fn sweep_quotas(&self, wall_us: i64) -> usize {
        self.quotas.retain(|_, counts| {
            counts.retain(|c| c.end_us > wall_us);
            !counts.is_empty()
        })
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::quota::{Period, QuotaSpec};

    use super::*;
    use crate::limiter::Scope;

    const S: u64 = 1_000_000_000;
    /// 2026-12-01T00:00:00Z in µs.
    const DEC_1: i64 = 1_796_083_200_000_000;

    fn quota(name: &str, amount: u64, period: Period, cost: Option<u64>) -> Bucket {
        let spec = QuotaSpec {
            period,
            anchor: None,
            time_zone: None,
        };
        Bucket::new(Scope::Key, Limit::new_quota(name, amount, spec, cost))
    }

    fn bucket(name: &str, rate: u64, per_s: u64) -> Bucket {
        Bucket::new(
            Scope::Key,
            Limit::new(name, rate, Duration::from_secs(per_s), None, None),
        )
    }

    #[test]
    fn a_quota_admits_its_amount_per_period_then_resets() {
        let l = LocalLimiter::new(4);
        let q = quota("daily", 3, Period::Day, None);
        let k = Subject::Key(1);
        let noon = DEC_1 + 12 * 3_600_000_000;
        for left in [2, 1, 0] {
            let d = l.check_quotas_at(&k, &[&q], S, noon);
            assert!(d.allowed);
            assert_eq!(d.limits[0].remaining, left);
            assert_eq!(d.limits[0].window_secs, 86_400);
            assert_eq!(d.limits[0].reset_secs, 12 * 3_600);
        }
        let d = l.check_quotas_at(&k, &[&q], S, noon);
        assert!(!d.allowed);
        assert_eq!(d.violated_names(), vec!["daily"]);
        assert_eq!(d.retry_after_secs(), 12 * 3_600);
        assert_eq!(l.peek_quota(&k, &q, noon).remaining, 0);
        // Another subject has its own count.
        assert!(l.check_quotas_at(&Subject::Key(2), &[&q], S, noon).allowed);
        // The next day: full again; the old period is swept.
        let tomorrow = DEC_1 + 86_400_000_000;
        assert_eq!(l.sweep_quotas(tomorrow), 2);
        let d = l.check_quotas_at(&k, &[&q], S, tomorrow);
        assert!(d.allowed);
        assert_eq!(d.limits[0].remaining, 2);
    }

    #[test]
    fn all_or_nothing_with_buckets() {
        let l = LocalLimiter::new(4);
        let q = quota("monthly", 2, Period::Month, None);
        let b = bucket("second", 1, 1);
        let k = Subject::Key(1);
        // The bucket refuses the second request: the quota is not charged.
        assert!(l.check_quotas_at(&k, &[&b, &q], S, DEC_1).allowed);
        let d = l.check_quotas_at(&k, &[&b, &q], S, DEC_1);
        assert!(!d.allowed);
        assert_eq!(d.violated_names(), vec!["second"]);
        assert_eq!(d.limits[1].remaining, 1, "the quota kept its use");
        // A second later the bucket has room: the quota's last use goes.
        assert!(l.check_quotas_at(&k, &[&b, &q], 2 * S, DEC_1).allowed);
        // The quota refuses: the bucket is not charged.
        let d = l.check_quotas_at(&k, &[&b, &q], 10 * S, DEC_1);
        assert_eq!(d.violated_names(), vec!["monthly"]);
        assert_eq!(d.limits[0].remaining, 1, "the bucket kept its token");
        assert!(l.check_at(&k, &[&b], 10 * S).allowed);
    }

    #[test]
    fn costs_count_and_a_cost_that_does_not_fit_takes_nothing() {
        let l = LocalLimiter::new(4);
        let q = quota("w", 10, Period::Week, Some(4));
        let k = Subject::Key(3);
        assert!(l.check_quotas_at(&k, &[&q], S, DEC_1).allowed);
        assert!(l.check_quotas_at(&k, &[&q], S, DEC_1).allowed);
        let d = l.check_quotas_at(&k, &[&q], S, DEC_1);
        assert!(!d.allowed);
        assert_eq!(d.limits[0].remaining, 2);
    }

    #[test]
    fn an_identity_quota_is_shared_by_its_keys_and_a_key_quota_is_not() {
        let l = LocalLimiter::new(4);
        let mut shared = Limit::new_quota(
            "monthly",
            3,
            QuotaSpec {
                period: Period::Month,
                anchor: None,
                time_zone: None,
            },
            None,
        );
        shared.scope = tollgate_core::limits::LimitScope::Identity;
        let shared = Bucket::new(Scope::Key, shared);
        let own = quota("daily", 2, Period::Day, None);
        let a = Subject::Member {
            key: 1,
            identity: 9,
        };
        let b = Subject::Member {
            key: 2,
            identity: 9,
        };
        let noon = DEC_1 + 12 * 3_600_000_000;
        // Key 1 spends its own 2; key 2 then has the identity's last one.
        assert!(l.check_quotas_at(&a, &[&shared, &own], S, noon).allowed);
        assert!(l.check_quotas_at(&a, &[&shared, &own], S, noon).allowed);
        assert!(!l.check_quotas_at(&a, &[&shared, &own], S, noon).allowed);
        let d = l.check_quotas_at(&b, &[&shared, &own], S, noon);
        assert!(d.allowed);
        assert_eq!(d.limits[0].remaining, 0, "the identity's quota is spent");
        assert_eq!(d.limits[1].remaining, 1, "key 2's own quota is its own");
        let d = l.check_quotas_at(&b, &[&shared, &own], S, noon);
        assert!(!d.allowed);
        assert_eq!(d.violated_names(), vec!["monthly"]);
        assert_eq!(l.peek_quota(&a, &shared, noon).remaining, 0);
        assert_eq!(l.peek_quota(&a, &own, noon).remaining, 0);
        assert_eq!(l.peek_quota(&b, &own, noon).remaining, 1);
        // Another identity has its own.
        let c = Subject::Member {
            key: 3,
            identity: 10,
        };
        assert!(l.check_quotas_at(&c, &[&shared, &own], S, noon).allowed);
    }
}
