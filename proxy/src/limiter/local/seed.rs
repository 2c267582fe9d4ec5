//! Moving buckets' TATs later from outside a check: the `on_redis_error:
//! local` fallback lowers its shares to what Redis last reported left
//! (`limiter::backends::fallback`). Same locks, same lock order and same
//! placement (inline or overflow) as a check; nothing is allocated unless a
//! bucket is stored for the first time.

use std::hash::Hash;

use super::{shared, Entry, LocalLimiter, ShardedMap};
use crate::limiter::{Bucket, Subject};

impl LocalLimiter {
    /// Set bucket `i`'s TAT to `to(i, tat, now)` where that lowers the
    /// bucket (a TAT later than both the stored one and `now`); a bucket
    /// `to` would refill, or leave full, is not touched (nothing stored).
    pub fn lower(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        to: impl Fn(usize, u64, u64) -> u64,
    ) {
        self.lower_at(subject, buckets, self.now(), to);
    }

    /// [`Self::lower`] at `now` (ns on this limiter's clock).
    pub fn lower_at(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        now: u64,
        to: impl Fn(usize, u64, u64) -> u64,
    ) {
        let all = |_: &Bucket| true;
        match subject {
            Subject::Key(id) => self.lower_in(&self.keys, id, subject, buckets, now, all, &to),
            Subject::Ip(ip) => self.lower_in(&self.ips, ip, subject, buckets, now, all, &to),
            Subject::Identity(id) => self.lower_shared(None, *id, buckets, now, &to),
            Subject::Member { key, identity } => {
                self.lower_shared(Some(*key), *identity, buckets, now, &to)
            }
        }
    }

    /// The identity's buckets in its list, a member's own in its key's
    /// entry: the identity's shard locked first, as a check does.
    fn lower_shared(
        &self,
        key: Option<i64>,
        identity: i64,
        buckets: &[&Bucket],
        now: u64,
        to: &impl Fn(usize, u64, u64) -> u64,
    ) {
        let identity_bucket = |b: &Bucket| b.identity_scope || key.is_none();
        let mut ids = self.identities.lock(&identity);
        for (i, b) in buckets.iter().enumerate() {
            if !identity_bucket(b) {
                continue;
            }
            let tat = shared::find(ids.get(&identity), b.slot).unwrap_or(0);
            let new = to(i, tat, now);
            if new > tat.max(now) {
                shared::put(ids.entry(identity).or_default(), b.slot, new);
            }
        }
        if let Some(k) = key {
            let own = |b: &Bucket| !identity_bucket(b);
            self.lower_in(&self.keys, &k, &Subject::Key(k), buckets, now, own, to);
        }
    }

    /// The buckets `mine` picks of a key or IP subject.
    #[allow(clippy::too_many_arguments)]
    fn lower_in<K: Hash + Eq + Copy>(
        &self,
        inline: &ShardedMap<K, Entry>,
        key: &K,
        subject: &Subject,
        buckets: &[&Bucket],
        now: u64,
        mine: impl Fn(&Bucket) -> bool,
        to: &impl Fn(usize, u64, u64) -> u64,
    ) {
        let mut map = inline.lock(key);
        let mut more = None;
        for (i, b) in buckets.iter().enumerate() {
            if !mine(b) {
                continue;
            }
            let held = map.get(key).and_then(|e| e.get(b.slot));
            let tat = match held {
                Some(tat) => tat,
                None => {
                    let more = more.get_or_insert_with(|| self.more.lock(subject));
                    shared::find(more.get(subject), b.slot).unwrap_or(0)
                }
            };
            let new = to(i, tat, now);
            if new <= tat.max(now) {
                continue;
            }
            // Where a check would put it: inline if it is there or (not in
            // the overflow) there is room, else the overflow.
            if held.is_some() {
                if let Some(e) = map.get_mut(key) {
                    e.set(b.slot, new);
                }
                continue;
            }
            let more = more.get_or_insert_with(|| self.more.lock(subject));
            let in_more = shared::find(more.get(subject), b.slot).is_some();
            if !in_more && map.entry(*key).or_default().set(b.slot, new) {
                continue;
            }
            shared::put(more.entry(*subject).or_default(), b.slot, new);
        }
    }
}
