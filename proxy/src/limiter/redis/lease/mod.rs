//! Token leases: a proxy takes more than one request's tokens from a Redis
//! bucket in one script call and spends them locally, so a hot key far below
//! its limit costs one Redis call per many requests.
//!
//! - A lease is taken from the bucket (the script moves the bucket's TAT by
//!   every leased token), so the tokens every proxy spends were all taken
//!   from Redis: admissions never exceed `burst + rate × t`.
//! - Its size adapts ([`grant`], [`next_want`]): a proxy asks for twice what
//!   it spent when its lease ran out before expiring, half when it expired
//!   unused; Redis grants at most a quarter of what the bucket holds, and
//!   exactly the request's cost when little is left. Near the limit every
//!   request asks Redis, as without leases.
//! - Unspent tokens go back to the bucket (the TAT moves back, never below
//!   now): with the next call for the same buckets once the lease expired
//!   (`lease_ttl`), or from the background ([`Leases::drain_expired`]) when
//!   the subject went idle. Tokens held in leases are the only
//!   under-admission; [`Leases::outstanding`] counts them.
//!
//! The store is keyed by subject (all its buckets in one entry of one shard,
//! as in the local limiter), so a request is served from its leases under
//! one short lock, all buckets or none.

pub mod model;
mod returns;

pub(super) use returns::spawn_returns;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use tollgate_core::limits::{ceil_secs, Decision, LimitState};

pub use super::script::LeaseArgs;
use super::script::{BucketReply, ScriptArgs};
use crate::limiter::sharded::ShardedMap;
use crate::limiter::{Bucket, Subject};

/// Redis grants at most this fraction (1 / SHARE) of the tokens a bucket
/// holds to one lease, so several proxies find tokens left, and a bucket
/// with fewer than `2 × SHARE × cost` tokens grants exactly `cost`.
pub const SHARE: u64 = 4;

/// The tokens Redis grants a request of `cost` that wants `want`, when the
/// bucket holds `avail` whole tokens; `None`: refused (fewer than `cost`).
/// Never more than `avail`; a multiple of `cost` (a remainder could not be
/// spent). The same rule is in `lua/token_bucket.lua`.
pub fn grant(avail: u64, cost: u64, want: u64) -> Option<u64> {
    if avail < cost {
        return None;
    }
    if want <= cost || cost == 0 {
        return Some(cost);
    }
    let g = want.min(avail / SHARE);
    if g <= cost {
        return Some(cost);
    }
    Some(g - g % cost)
}

/// The next lease a proxy asks for: twice the last one if it ran out before
/// expiring (demand is higher), half if it expired (demand is lower); never
/// below `cost` nor above `cap`.
pub fn next_want(prev: u64, cost: u64, cap: u64, ran_out_early: bool) -> u64 {
    let w = if ran_out_early {
        prev.saturating_mul(2)
    } else {
        prev / 2
    };
    w.min(cap).max(cost)
}

/// The largest lease a proxy asks for: the burst (Redis grants at most a
/// quarter of what is left anyway), never below `cost`.
pub fn cap(args: &ScriptArgs) -> u64 {
    args.burst.max(args.cost)
}

/// One bucket's lease held by this proxy.
#[derive(Debug, Clone)]
struct Slot {
    id: u64,
    fingerprint: u64,
    /// Unspent tokens.
    tokens: u64,
    /// After this instant the tokens are not spent any more; they go back.
    expires: Instant,
    /// What the next lease asks for.
    want: u64,
    /// When the Redis bucket is full again as of the grant (its TAT, with
    /// the leased tokens counted as taken), on this process' clock.
    full_at: Instant,
    /// For returning tokens from the background (key, interval).
    bucket: Bucket,
}

type Slots = SmallVec<[Slot; 2]>;

/// Unspent tokens of one bucket to give back (see [`Leases::drain_expired`]).
#[derive(Debug, Clone)]
pub struct Returned {
    pub bucket: Bucket,
    pub tokens: u64,
}

/// The leases of one proxy (one [`super::RedisLimiter`]).
pub struct Leases {
    map: ShardedMap<Subject, Slots>,
    ttl: Duration,
    /// Tokens held in leases, unspent.
    outstanding: AtomicI64,
    /// Requests served from a lease without asking Redis.
    hits: AtomicI64,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("ttl", &self.ttl)
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What this proxy reports for a bucket it holds `tokens` of: the bucket
/// as it was at the grant, with this proxy's unspent tokens counted as still
/// in it and refilled since on this process' clock. It cannot know what
/// other proxies took or hold since (no more than a decision without leases
/// knows what other proxies take after it).
fn state(b: &Bucket, a: &ScriptArgs, tokens: u64, full_at: Instant, now: Instant) -> LimitState {
    let held = Duration::from_micros(tokens.saturating_mul(a.interval_us));
    let full_us = us(full_at
        .checked_sub(held)
        .unwrap_or(now)
        .saturating_duration_since(now));
    let capacity = a.burst.saturating_mul(a.interval_us);
    LimitState {
        name: b.policy.name.clone(),
        quota: b.policy.quota,
        window_secs: b.policy.window_secs,
        remaining: capacity.saturating_sub(full_us) / a.interval_us.max(1),
        reset_secs: ceil_secs(full_us.saturating_mul(1_000)),
        violated: false,
        retry_after_secs: 0,
    }
}

impl Leases {
    /// `ttl`: how long a lease's tokens may be spent (zero: no leases).
    pub fn new(ttl: Duration) -> Self {
        Self {
            map: ShardedMap::new(64),
            ttl,
            outstanding: AtomicI64::new(0),
            hits: AtomicI64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Admit the request from this proxy's leases if every one of its
    /// buckets has an unexpired lease with at least its cost, taking the
    /// cost from each; `None` (nothing taken) otherwise.
    pub fn try_take(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        now: Instant,
    ) -> Option<Decision> {
        if !self.enabled() || !subject.leased() || buckets.is_empty() {
            return None;
        }
        let args: SmallVec<[ScriptArgs; 4]> =
            buckets.iter().map(|b| ScriptArgs::new(&b.limit)).collect();
        let mut map = self.map.lock(subject);
        let slots = map.get_mut(subject)?;
        let mut at: SmallVec<[usize; 4]> = SmallVec::new();
        for (b, a) in buckets.iter().zip(&args) {
            let i = slots.iter().position(|s| {
                s.id == b.id
                    && s.fingerprint == b.fingerprint
                    && s.expires > now
                    && s.tokens >= a.cost
            })?;
            at.push(i);
        }
        let mut taken = 0u64;
        let limits = buckets
            .iter()
            .zip(&args)
            .zip(&at)
            .map(|((b, a), &i)| {
                let s = &mut slots[i];
                s.tokens -= a.cost;
                taken = taken.saturating_add(a.cost);
                state(b, a, s.tokens, s.full_at, now)
            })
            .collect();
        drop(map);
        self.outstanding
            .fetch_sub(i64::try_from(taken).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(Decision {
            allowed: true,
            limits,
        })
    }

    /// Before a script call for these buckets: take this proxy's leases of
    /// them out of the store (their unspent tokens go back with the call)
    /// and say how many tokens to ask for. Without leases: return nothing,
    /// ask for the cost.
    pub fn checkout(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        args: &[ScriptArgs],
        now: Instant,
    ) -> SmallVec<[LeaseArgs; 4]> {
        let exact = || LeaseArgs { ret: 0, want: 0 };
        if !self.enabled() || !subject.leased() {
            return args
                .iter()
                .map(|a| LeaseArgs {
                    want: a.cost,
                    ..exact()
                })
                .collect();
        }
        let mut map = self.map.lock(subject);
        let mut returned = 0u64;
        let out = match map.get_mut(subject) {
            None => args
                .iter()
                .map(|a| LeaseArgs {
                    want: a.cost,
                    ..exact()
                })
                .collect(),
            Some(slots) => {
                let out = buckets
                    .iter()
                    .zip(args)
                    .map(|(b, a)| match slots.iter().position(|s| s.id == b.id) {
                        None => LeaseArgs {
                            want: a.cost,
                            ..exact()
                        },
                        Some(i) => {
                            let s = slots.swap_remove(i);
                            returned = returned.saturating_add(s.tokens);
                            if s.fingerprint != b.fingerprint {
                                // The limit changed: its tokens were counted
                                // in other units; they are dropped (fewer
                                // admissions, never more).
                                return LeaseArgs {
                                    want: a.cost,
                                    ..exact()
                                };
                            }
                            let ran_out_early = s.expires > now;
                            LeaseArgs {
                                ret: s.tokens,
                                want: next_want(s.want, a.cost, cap(a), ran_out_early),
                            }
                        }
                    })
                    .collect();
                if slots.is_empty() {
                    map.remove(subject);
                }
                out
            }
        };
        drop(map);
        self.outstanding.fetch_sub(
            i64::try_from(returned).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        out
    }

    /// After an admitted script call taken at `now`: keep what was granted
    /// beyond the request's cost as this proxy's lease of each bucket. A
    /// lease another call of the same subject stored meanwhile is merged
    /// (its expiry kept while it has tokens: no token outlives its lease).
    pub fn store(
        &self,
        subject: &Subject,
        buckets: &[&Bucket],
        args: &[ScriptArgs],
        asked: &[LeaseArgs],
        replies: &[BucketReply],
        now: Instant,
    ) {
        if !self.enabled() || !subject.leased() {
            return;
        }
        let mut added = 0u64;
        let mut map = self.map.lock(subject);
        let slots = map.entry(*subject).or_default();
        for (((b, a), ask), r) in buckets.iter().zip(args).zip(asked).zip(replies) {
            let extra = r.granted.saturating_sub(a.cost);
            added = added.saturating_add(extra);
            let full_at = now + Duration::from_micros(r.reset_us);
            match slots.iter_mut().find(|s| s.id == b.id) {
                Some(s) if s.fingerprint == b.fingerprint => {
                    if s.tokens == 0 {
                        s.expires = now + self.ttl;
                    }
                    s.tokens = s.tokens.saturating_add(extra);
                    s.want = s.want.max(ask.want);
                    s.full_at = s.full_at.max(full_at);
                }
                stale => {
                    let fresh = Slot {
                        id: b.id,
                        fingerprint: b.fingerprint,
                        tokens: extra,
                        expires: now + self.ttl,
                        want: ask.want.max(a.cost),
                        full_at,
                        bucket: (*b).clone(),
                    };
                    match stale {
                        // Stored under older limit values: replaced (its tokens dropped).
                        Some(s) => {
                            added = added.saturating_sub(s.tokens);
                            *s = fresh;
                        }
                        None => slots.push(fresh),
                    }
                }
            }
        }
        drop(map);
        self.outstanding
            .fetch_add(i64::try_from(added).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Take out every lease that expired at least `grace` before `now` (an
    /// idle subject: an active one returns its tokens with its next call),
    /// and return the unspent tokens to give back, by subject.
    pub fn drain_expired(&self, now: Instant, grace: Duration) -> Vec<(Subject, Vec<Returned>)> {
        let mut out: Vec<(Subject, Vec<Returned>)> = Vec::new();
        let mut returned = 0u64;
        self.map.retain(|subject, slots| {
            let mut back = Vec::new();
            slots.retain(|s| {
                if s.expires + grace > now {
                    return true;
                }
                if s.tokens > 0 {
                    returned = returned.saturating_add(s.tokens);
                    back.push(Returned {
                        bucket: s.bucket.clone(),
                        tokens: s.tokens,
                    });
                }
                false
            });
            if !back.is_empty() {
                out.push((*subject, back));
            }
            !slots.is_empty()
        });
        self.outstanding.fetch_sub(
            i64::try_from(returned).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        out
    }

    /// Tokens held in this proxy's leases, unspent (the bound on how many
    /// admissions leases can hold back).
    pub fn outstanding(&self) -> u64 {
        u64::try_from(self.outstanding.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Unspent tokens this proxy holds of one bucket of a subject.
    pub fn held(&self, subject: &Subject, bucket_id: u64) -> u64 {
        self.map
            .lock(subject)
            .get(subject)
            .and_then(|slots| slots.iter().find(|s| s.id == bucket_id))
            .map_or(0, |s| s.tokens)
    }

    /// Requests served from a lease so far.
    pub fn hits(&self) -> u64 {
        u64::try_from(self.hits.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Subjects holding leases.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
