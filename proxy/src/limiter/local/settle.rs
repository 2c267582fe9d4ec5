//! Settling a cost reservation in the in-process limiter: the same
//! arithmetic as the Redis script (`tollgate_core::cost::settle`; quotas:
//! `tollgate_core::quota::settle_quota`, see `quota::settle`), on the
//! subject's entry under its shard's lock.

use std::hash::Hash;

use tollgate_core::cost::{self, Settle};

use super::{shared, Entry, LocalLimiter, ShardedMap};
use crate::limiter::quota::wall_now_us;
use crate::limiter::{Bucket, Subject};

/// Buckets with their index in the request's list.
type Indexed<'a> = Vec<(usize, &'a Bucket)>;

impl LocalLimiter {
    /// Settle a reservation taken from `buckets` (the request's reserving
    /// buckets) at `admitted_us` (wall clock µs: its quotas' period) now.
    /// Returns, per bucket, the tokens or quota units taken (> 0) or given
    /// back (< 0).
    pub fn settle(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        s: Settle,
        admitted_us: i64,
    ) -> Vec<i64> {
        self.settle_at(subject, buckets, s, self.now(), admitted_us, wall_now_us())
    }

    /// [`Self::settle`] at time `now` (ns on this limiter's clock, for the
    /// buckets) and `wall_us` (µs since the epoch, for the quotas).
    pub fn settle_at(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        s: Settle,
        now: u64,
        admitted_us: i64,
        wall_us: i64,
    ) -> Vec<i64> {
        if s == Settle::Keep {
            return vec![0; buckets.len()];
        }
        let (quotas, plain): (Indexed, Indexed) = buckets
            .iter()
            .copied()
            .enumerate()
            .partition(|(_, b)| b.policy.calendar.is_some());
        let refs: Vec<&Bucket> = plain.iter().map(|&(_, b)| b).collect();
        let applied = match subject {
            _ if refs.is_empty() => Vec::new(),
            Subject::Key(id) => self.settle_in(&self.keys, id, subject, &refs, s, now),
            Subject::Ip(ip) => self.settle_in(&self.ips, ip, subject, &refs, s, now),
            Subject::Identity(id) => self.settle_shared(None, *id, &refs, s, now),
            Subject::Member { key, identity } => {
                self.settle_shared(Some(*key), *identity, &refs, s, now)
            }
        };
        let mut out = vec![0; buckets.len()];
        for (&(i, _), n) in plain.iter().zip(applied) {
            out[i] = n;
        }
        if !quotas.is_empty() {
            let refs: Vec<&Bucket> = quotas.iter().map(|&(_, b)| b).collect();
            let applied = self.settle_quotas(subject, &refs, s, admitted_us, wall_us);
            for (&(i, _), n) in quotas.iter().zip(applied) {
                out[i] = n;
            }
        }
        out
    }

    /// [`Self::settle_at`] for a subject with identity-scoped buckets: the
    /// same lock order as its check (the identity's shard, then the key's).
    fn settle_shared(
        &self,
        key: Option<i64>,
        identity: i64,
        buckets: &[&Bucket],
        s: Settle,
        now: u64,
    ) -> Vec<i64> {
        let mut ids = self.identities.lock(&identity);
        let mut out = vec![0; buckets.len()];
        let own: Vec<(usize, &Bucket)> = match key {
            Some(_) => buckets
                .iter()
                .enumerate()
                .filter(|(_, b)| !b.identity_scope)
                .map(|(i, b)| (i, *b))
                .collect(),
            None => Vec::new(),
        };
        if let Some(k) = key {
            let refs: Vec<&Bucket> = own.iter().map(|&(_, b)| b).collect();
            let taken = self.settle_in(&self.keys, &k, &Subject::Key(k), &refs, s, now);
            for (&(i, _), n) in own.iter().zip(taken) {
                out[i] = n;
            }
        }
        for (i, b) in buckets.iter().enumerate() {
            if key.is_some() && !b.identity_scope {
                continue;
            }
            let tat = shared::find(ids.get(&identity), b.slot).unwrap_or(0);
            let ns = b.policy.ns;
            let (new_tat, n) = cost::settle(tat, now, ns.interval, ns.burst, ns.cost, s);
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            out[i] = match s {
                Settle::Return(_) => -n,
                _ => n,
            };
            if n != 0 {
                shared::put(ids.entry(identity).or_default(), b.slot, new_tat);
            }
        }
        out
    }

    fn settle_in<K: Hash + Eq + Copy>(
        &self,
        inline: &ShardedMap<K, Entry>,
        key: &K,
        subject: &Subject,
        buckets: &[&Bucket],
        s: Settle,
        now: u64,
    ) -> Vec<i64> {
        // The same lock order as a check: the inline shard, then the overflow.
        let mut map = inline.lock(key);
        let mut more = self.more.lock(subject);
        let mut out = Vec::with_capacity(buckets.len());
        for b in buckets {
            let held_more = more
                .get(subject)
                .and_then(|m| m.iter().find(|(slot, _)| *slot == b.slot))
                .map(|&(_, tat)| tat);
            let tat = map
                .get(key)
                .and_then(|e| e.get(b.slot))
                .or(held_more)
                .unwrap_or(0);
            let ns = b.policy.ns;
            let (new_tat, n) = cost::settle(tat, now, ns.interval, ns.burst, ns.cost, s);
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            out.push(match s {
                Settle::Return(_) => -n,
                _ => n,
            });
            if n == 0 {
                continue;
            }
            if held_more.is_none() && map.entry(*key).or_default().set(b.slot, new_tat) {
                continue;
            }
            let m = more.entry(*subject).or_default();
            match m.iter_mut().find(|(slot, _)| *slot == b.slot) {
                Some(held) => held.1 = new_tat,
                None => m.push((b.slot, new_tat)),
            }
        }
        out
    }
}
