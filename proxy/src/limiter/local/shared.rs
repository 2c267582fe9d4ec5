//! The in-process limiter's identity-scoped buckets ([`Subject::Identity`],
//! [`Subject::Member`]; see `limiter::identity`).
//!
//! An identity's buckets live in their own map, a short list of (slot, TAT)
//! per identity. A member's request locks its identity's shard first, then
//! its key's (then the key's overflow shard, as a key's own check does):
//! the order is the same everywhere, and no other path takes the identity
//! lock, so there is no deadlock and the whole request is one atomic step.

use smallvec::SmallVec;
use tollgate_core::limits::{self, Decision, LimitState, Policy};

use super::{LocalLimiter, More};
use crate::limiter::{Bucket, Subject};

pub(super) fn find(list: Option<&More>, slot: u32) -> Option<u64> {
    list.and_then(|m| m.iter().find(|(s, _)| *s == slot).map(|&(_, t)| t))
}

pub(super) fn put(list: &mut More, slot: u32, tat: u64) {
    match list.iter_mut().find(|(s, _)| *s == slot) {
        Some(held) => held.1 = tat,
        None => list.push((slot, tat)),
    }
}

impl LocalLimiter {
    /// Decide for an identity's buckets and, with `key`, the key's other
    /// buckets, all or nothing. Without `key` every bucket is the identity's.
    pub(super) fn check_shared(
        &self,
        key: Option<i64>,
        identity: i64,
        buckets: &[&Bucket],
        now: u64,
    ) -> Decision {
        if buckets.is_empty() {
            return Decision {
                allowed: true,
                limits: Default::default(),
            };
        }
        let shared_bucket = |b: &Bucket| b.identity_scope || key.is_none();
        let policies: SmallVec<[&Policy; 4]> = buckets.iter().map(|b| &b.policy).collect();
        let mut ids = self.identities.lock(&identity);
        let mut keys = key.map(|k| (k, self.keys.lock(&k)));
        let key_subject = key.map(Subject::Key);
        let entry = keys.as_ref().and_then(|(k, map)| map.get(k).copied());
        let mut more = None;
        let mut tats: SmallVec<[u64; 4]> = SmallVec::with_capacity(buckets.len());
        for b in buckets {
            let tat = if shared_bucket(b) {
                find(ids.get(&identity), b.slot)
            } else {
                entry.and_then(|e| e.get(b.slot)).or_else(|| {
                    let s = key_subject.as_ref()?;
                    let more = more.get_or_insert_with(|| self.more.lock(s));
                    find(more.get(s), b.slot)
                })
            };
            tats.push(tat.unwrap_or(0));
        }
        let (decision, new_tats) = limits::decide(&policies, &tats, now);
        if let Some(new_tats) = new_tats {
            for (b, tat) in buckets.iter().zip(new_tats) {
                if shared_bucket(b) {
                    put(ids.entry(identity).or_default(), b.slot, tat);
                    continue;
                }
                let (Some((k, map)), Some(s)) = (keys.as_mut(), key_subject.as_ref()) else {
                    continue;
                };
                let in_more = more
                    .as_ref()
                    .and_then(|m| m.get(s))
                    .is_some_and(|m| m.iter().any(|(slot, _)| *slot == b.slot));
                if !in_more && map.entry(*k).or_default().set(b.slot, tat) {
                    continue;
                }
                let more = more.get_or_insert_with(|| self.more.lock(s));
                put(more.entry(*s).or_default(), b.slot, tat);
            }
        }
        decision
    }

    /// [`Self::peek`] for a subject with identity-scoped buckets.
    pub(super) fn peek_shared(
        &self,
        key: Option<i64>,
        identity: i64,
        buckets: &[&Bucket],
    ) -> Vec<LimitState> {
        let now = self.now();
        buckets
            .iter()
            .map(|b| match key {
                Some(k) if !b.identity_scope => self
                    .peek(&Subject::Key(k), &[b])
                    .pop()
                    .unwrap_or_else(|| limits::peek_bucket(&b.policy, 0)),
                _ => {
                    let tat = find(self.identities.lock(&identity).get(&identity), b.slot);
                    limits::peek_bucket(&b.policy, tat.unwrap_or(0).saturating_sub(now))
                }
            })
            .collect()
    }
}
