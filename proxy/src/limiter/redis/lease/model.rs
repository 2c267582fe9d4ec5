//! `lua/token_bucket.lua` in Rust: the same integer arithmetic on TATs in
//! µs, for property tests of leases without a socket, and compared with the
//! script itself against a real Redis (`proxy/tests/redis_leases.rs`).

use super::{grant, LeaseArgs};
use crate::limiter::redis::script::{BucketReply, ScriptArgs};

/// One script call at `now` (µs) on the buckets' stored TATs (0: full),
/// updating `tats` as the script updates Redis. Returns the per-limit
/// replies the script would give.
pub fn script(
    tats: &mut [u64],
    now: u64,
    args: &[ScriptArgs],
    leases: &[LeaseArgs],
) -> Vec<BucketReply> {
    let mut replies = Vec::with_capacity(args.len());
    let mut new_tats = Vec::with_capacity(args.len());
    let mut given_back = vec![false; args.len()];
    for (i, (a, l)) in args.iter().zip(leases).enumerate() {
        let t = a.interval_us.max(1);
        let mut tat = tats[i];
        let ret = l.ret.min(a.burst);
        if ret > 0 && tat > now {
            tat = tat.saturating_sub(ret * t).max(now);
            given_back[i] = true;
            tats[i] = tat;
        }
        let capacity = a.burst * t;
        let base = tat.max(now);
        let used = base - now;
        let needed = used + a.cost * t;
        if a.cost <= a.burst && needed <= capacity {
            let avail = (capacity - used) / t;
            let g = grant(avail, a.cost, l.want).unwrap_or(a.cost);
            let new_tat = base + g * t;
            replies.push(BucketReply {
                allowed: true,
                remaining: (capacity - (new_tat - now)) / t,
                reset_us: new_tat - now,
                retry_us: Some(0),
                granted: g,
            });
            new_tats.push(new_tat);
        } else {
            replies.push(BucketReply {
                allowed: false,
                remaining: capacity.saturating_sub(used) / t,
                reset_us: used,
                retry_us: (a.cost <= a.burst).then(|| needed - capacity),
                granted: 0,
            });
            new_tats.push(tat);
        }
    }
    if replies.iter().all(|r| r.allowed) {
        tats.copy_from_slice(&new_tats);
    }
    // Expired keys are full buckets: store "full" as 0, as a missing key.
    for tat in tats.iter_mut() {
        if *tat <= now {
            *tat = 0;
        }
    }
    replies
}
