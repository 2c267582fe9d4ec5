//! The protocol of `lua/token_bucket.lua`: bucket keys, the arguments sent
//! per limit, the reply, and the request's [`Decision`] built from it.

use std::sync::LazyLock;
use std::time::Duration;

use ::redis::{Script, ScriptInvocation};
use tollgate_core::limits::{ceil_secs, retry_secs, Decision, Limit, LimitState, NEVER};

use smallvec::SmallVec;
use tollgate_core::quota::PeriodBounds;

use super::RedisLimitError;
use crate::limiter::{quota, Bucket, Subject};

/// What a proxy asks Redis for, per bucket of a request: tokens it returns
/// first (unspent tokens of an expired or replaced lease) and tokens it
/// wants (≥ the request's cost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseArgs {
    pub ret: u64,
    pub want: u64,
}

/// The Lua source, loaded at build time.
pub const SCRIPT_SOURCE: &str = include_str!("../../../../lua/token_bucket.lua");

pub(super) static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SCRIPT_SOURCE));

/// Integers returned per limit by the script: allowed, remaining, reset,
/// retry, granted.
const REPLY_STRIDE: usize = 5;

/// The longest span (µs) the script handles: "now" (~2^50.6 µs since the
/// epoch) plus a stored TAT's lead plus a cost, each ≤ 2^50 (+ one interval),
/// stays below 2^53, exact in Lua's doubles, until the year 2100 and beyond.
/// 2^50 µs is 35 years; only absurd policies are clamped, as the local
/// arithmetic clamps them (`tollgate_core::limits::MAX_SPAN_NS`).
pub const MAX_SPAN_US: u64 = tollgate_core::limits::MAX_SPAN_NS / 1_000;

/// The Redis key of one bucket of one subject, e.g. `tg:{k42}:p:minute` or
/// `tg:{ip10.0.0.1}:r:users:route`. The hash tag `{subject}` puts every bucket
/// of a subject in the same cluster slot. The only place the key format lives.
///
/// A [`Subject::Member`]'s buckets all carry its identity's tag (one script
/// call, one slot): its identity-scoped ones are the identity's
/// (`tg:{i7}:p:monthly`), its others its key's (`tg:{i7}:k42:p:second`).
pub fn bucket_key(subject: &Subject, bucket: &Bucket) -> String {
    match subject {
        Subject::Member { key, .. } if !bucket.identity_scope => {
            format!("tg:{{{subject}}}:k{key}:{}", bucket.name)
        }
        _ => format!("tg:{{{subject}}}:{}", bucket.name),
    }
}

/// The limit's numbers the script gets (the first three of its five ARGV
/// per limit; the lease's two are [`LeaseArgs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptArgs {
    /// µs for one token to come back, ≥ 1.
    pub interval_us: u64,
    pub burst: u64,
    pub cost: u64,
}

impl ScriptArgs {
    /// The limit's parameters in µs, clamped so that `interval × burst` and
    /// `interval × cost` are ≤ [`MAX_SPAN_US`] (+ one interval); a cost above
    /// the burst stays above it (never admitted). The interval is
    /// `per / rate` truncated to whole µs (core truncates to whole ns): the
    /// backends agree exactly whenever `per / rate` is a whole number of µs,
    /// and otherwise differ by less than 1 µs per token.
    pub fn new(limit: &Limit) -> Self {
        if limit.is_quota() {
            // A quota: no interval; its "burst" is the quota (see the script).
            return Self {
                interval_us: 0,
                burst: limit.rate,
                cost: limit.cost(),
            };
        }
        let c = tollgate_core::limits::clamp_us(limit);
        Self {
            interval_us: c.interval,
            burst: c.burst,
            cost: c.cost,
        }
    }
}

/// One call of the script: per bucket its key, the limit's numbers and what
/// the proxy gives back and wants; `now_us` only in tests (else Redis' TIME).
pub fn invocation(
    subject: &Subject,
    buckets: &[&Bucket],
    args: &[ScriptArgs],
    asked: &[LeaseArgs],
    now_us: Option<u64>,
) -> ScriptInvocation<'static> {
    let wall_us = now_us.map_or_else(quota::wall_now_us, |n| i64::try_from(n).unwrap_or(i64::MAX));
    invocation_at(subject, buckets, args, asked, now_us, wall_us)
}

/// [`invocation`] with the wall clock (µs) the quotas' periods are taken at.
pub fn invocation_at(
    subject: &Subject,
    buckets: &[&Bucket],
    args: &[ScriptArgs],
    asked: &[LeaseArgs],
    now_us: Option<u64>,
    wall_us: i64,
) -> ScriptInvocation<'static> {
    let mut inv = buckets_invocation(&SCRIPT, subject, buckets, args, asked, wall_us);
    if let Some(now) = now_us {
        inv.arg(now);
    }
    inv
}

/// `script` invoked with the keys and per-limit arguments of `buckets`
/// (the admission script, or a script that embeds it): a quota's key names
/// its period and its interval is minus the key's TTL.
pub fn buckets_invocation(
    script: &'static Script,
    subject: &Subject,
    buckets: &[&Bucket],
    args: &[ScriptArgs],
    asked: &[LeaseArgs],
    wall_us: i64,
) -> ScriptInvocation<'static> {
    let mut inv = script.prepare_invoke();
    // A quota's key names its period; its interval is minus the key's TTL.
    let periods: SmallVec<[Option<PeriodBounds>; 4]> =
        buckets.iter().map(|b| quota::bounds(b, wall_us)).collect();
    for (b, p) in buckets.iter().zip(&periods) {
        match p {
            Some(p) => inv.key(format!(
                "{}{}",
                bucket_key(subject, b),
                quota::period_suffix(p)
            )),
            None => inv.key(bucket_key(subject, b)),
        };
    }
    for ((a, l), (b, p)) in args.iter().zip(asked).zip(buckets.iter().zip(&periods)) {
        if b.policy.calendar.is_some() {
            // No period (beyond the calendar): a quota of 0, never admits.
            let ttl = p.map_or(1, |p| quota::key_ttl_ms(&p, wall_us));
            let amount = if p.is_some() { a.burst } else { 0 };
            inv.arg(-i64::try_from(ttl).unwrap_or(i64::MAX))
                .arg(amount)
                .arg(a.cost)
                .arg(0)
                .arg(a.cost);
            continue;
        }
        inv.arg(a.interval_us)
            .arg(a.burst)
            .arg(a.cost)
            .arg(l.ret)
            .arg(l.want);
    }
    inv
}

/// What the script answered for one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketReply {
    pub allowed: bool,
    pub remaining: u64,
    pub reset_us: u64,
    /// µs until this bucket admits the request; `None`: never (cost > burst).
    pub retry_us: Option<u64>,
    /// Tokens granted: the cost, or a lease; 0 if this bucket refuses.
    /// `remaining` and `reset_us` count them all as taken.
    pub granted: u64,
}

/// Tokens left in each Redis bucket after the call that gave `replies`
/// (leases granted counted as taken): a call that some bucket refused took
/// nothing from the others (the script takes all or nothing).
pub fn left_in_redis(replies: &[BucketReply]) -> SmallVec<[u64; 4]> {
    let allowed = replies.iter().all(|r| r.allowed);
    replies
        .iter()
        .map(|r| match (r.allowed, allowed) {
            (true, false) => r.remaining.saturating_add(r.granted),
            _ => r.remaining,
        })
        .collect()
}

/// Parse the script's flat reply (see `lua/token_bucket.lua`).
pub fn parse_reply(reply: &[i64], limits: usize) -> Result<Vec<BucketReply>, RedisLimitError> {
    if reply.len() != limits * REPLY_STRIDE {
        return Err(RedisLimitError::Script(format!(
            "unexpected reply: {} integers for {limits} limits",
            reply.len()
        )));
    }
    let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(reply
        .chunks_exact(REPLY_STRIDE)
        .map(|c| BucketReply {
            allowed: c[0] == 1,
            remaining: non_negative(c[1]),
            reset_us: non_negative(c[2]),
            retry_us: (c[3] >= 0).then(|| non_negative(c[3])),
            granted: non_negative(c[4]),
        })
        .collect())
}

/// When a limit is full again and when it admits the request, for the
/// [`OverLimitCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitTimes {
    pub reset: Duration,
    /// `None`: never (cost > burst). Zero for limits that did not refuse.
    pub retry: Option<Duration>,
}

fn us_to_ns(us: u64) -> u64 {
    us.saturating_mul(1_000)
}

/// Build the request's [`Decision`] from the script's per-limit replies,
/// exactly as `tollgate_core::limits::decide` does from `check_bucket`.
/// Tokens granted beyond the cost (a lease held by this proxy) are reported
/// as still in the bucket: the request itself took only its cost.
pub fn decide_from_replies(
    buckets: &[&Bucket],
    args: &[ScriptArgs],
    replies: &[BucketReply],
) -> (Decision, Vec<LimitTimes>) {
    let allowed = replies.iter().all(|r| r.allowed);
    let mut times = Vec::with_capacity(replies.len());
    let limits = buckets
        .iter()
        .zip(args)
        .zip(replies)
        .map(|((b, a), r)| {
            let back = match (r.allowed, allowed) {
                // Refused by another limit: report this bucket as it stays.
                (true, false) => r.granted,
                // Admitted: the lease beyond the cost is this proxy's.
                (true, true) => r.granted.saturating_sub(a.cost),
                (false, _) => 0,
            };
            let remaining = r.remaining.saturating_add(back);
            let reset_us = r
                .reset_us
                .saturating_sub(back.saturating_mul(a.interval_us));
            let retry = if r.allowed {
                Some(Duration::ZERO)
            } else {
                r.retry_us.map(Duration::from_micros)
            };
            times.push(LimitTimes {
                reset: Duration::from_micros(reset_us),
                retry,
            });
            LimitState {
                name: b.policy.name.clone(),
                quota: b.limit.rate,
                window_secs: b.limit.window_secs(),
                remaining,
                reset_secs: ceil_secs(us_to_ns(reset_us)),
                violated: !r.allowed,
                retry_after_secs: if r.allowed {
                    0
                } else {
                    // Like core: no wait admits it (cost > burst) is NEVER.
                    retry_secs(r.retry_us.map_or(NEVER, us_to_ns))
                },
            }
        })
        .collect();
    (Decision { allowed, limits }, times)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Scope;
    use tollgate_core::limits::check_bucket;

    /// What Redis holds after a call: a lease granted counts as taken; a
    /// call another bucket refused took nothing.
    #[test]
    fn left_in_redis_counts_only_what_the_script_took() {
        let reply = |allowed, remaining, granted| BucketReply {
            allowed,
            remaining,
            reset_us: 0,
            retry_us: Some(0),
            granted,
        };
        let admitted = [reply(true, 3, 4), reply(true, 7, 1)];
        assert_eq!(left_in_redis(&admitted).as_slice(), &[3, 7]);
        let refused = [reply(true, 3, 4), reply(false, 0, 0)];
        assert_eq!(left_in_redis(&refused).as_slice(), &[7, 0]);
    }

    #[test]
    fn key_format_shares_the_subject_hash_tag() {
        let b = Bucket::new(
            Scope::Key,
            Limit::new("minute", 60, Duration::from_secs(60), None, None),
        );
        let r = Bucket::new(
            Scope::Route("users"),
            Limit::new("route", 10, Duration::from_secs(1), None, None),
        );
        assert_eq!(bucket_key(&Subject::Key(42), &b), "tg:{k42}:p:minute");
        assert_eq!(bucket_key(&Subject::Key(42), &r), "tg:{k42}:r:users:route");
        let ip = Subject::Ip("10.0.0.1".parse().expect("ip"));
        assert_eq!(bucket_key(&ip, &b), "tg:{ip10.0.0.1}:p:minute");
        let v6 = Subject::Ip("::1".parse().expect("ip"));
        assert_eq!(bucket_key(&v6, &r), "tg:{ip::1}:r:users:route");
    }

    #[test]
    fn script_args_in_microseconds_and_clamped() {
        let a = ScriptArgs::new(&Limit::new(
            "m",
            60,
            Duration::from_secs(60),
            Some(10),
            None,
        ));
        assert_eq!(
            a,
            ScriptArgs {
                interval_us: 1_000_000,
                burst: 10,
                cost: 1
            }
        );
        // 1 per day with a burst of a million: 2700 years, clamped to 2^50 µs.
        let a = ScriptArgs::new(&Limit::new(
            "d",
            1,
            Duration::from_secs(86_400),
            Some(1_000_000),
            Some(2),
        ));
        assert_eq!(a.interval_us, 86_400_000_000);
        assert!(a.burst * a.interval_us <= MAX_SPAN_US);
        assert_eq!(a.cost, 2);
        // Cost above burst stays above.
        let a = ScriptArgs::new(&Limit::new(
            "c",
            10,
            Duration::from_secs(1),
            Some(5),
            Some(6),
        ));
        assert_eq!((a.burst, a.cost), (5, 6));
        let a = ScriptArgs::new(&Limit::new(
            "c",
            1,
            Duration::from_secs(86_400),
            Some(u64::MAX - 1),
            Some(u64::MAX),
        ));
        assert!(a.cost > a.burst);
        // Sub-microsecond intervals become 1 µs.
        let a = ScriptArgs::new(&Limit::new(
            "f",
            10_000_000,
            Duration::from_secs(1),
            None,
            None,
        ));
        assert_eq!(a.interval_us, 1);
    }

    #[test]
    fn reply_parsing() {
        let r = parse_reply(&[1, 4, 100, 0, 3, 0, 0, 7, -1, 0], 2).expect("parse");
        assert_eq!(
            r,
            vec![
                BucketReply {
                    allowed: true,
                    remaining: 4,
                    reset_us: 100,
                    retry_us: Some(0),
                    granted: 3,
                },
                BucketReply {
                    allowed: false,
                    remaining: 0,
                    reset_us: 7,
                    retry_us: None,
                    granted: 0,
                }
            ]
        );
        let e = parse_reply(&[1, 2, 3, 4], 1).expect_err("short");
        assert_eq!(e.kind(), "script");
    }

    /// The script's per-bucket values (simulated here with core's
    /// `check_bucket` in µs-exact units) turn into core's `decide` output.
    #[test]
    fn decision_matches_core_decide() {
        use tollgate_core::limits::decide;
        let a = Bucket::new(
            Scope::Key,
            Limit::new("a", 100, Duration::from_secs(1), None, None),
        );
        let b = Bucket::new(
            Scope::Route("r"),
            Limit::new("b", 1, Duration::from_secs(60), Some(1), None),
        );
        let c = Bucket::new(
            Scope::Key,
            Limit::new("c", 10, Duration::from_secs(1), Some(5), Some(6)),
        );
        let now = 1_000_000_000_000u64; // ns, a whole number of µs
        for (buckets, tats) in [
            (vec![&a, &b], vec![0, 0]),
            (vec![&a, &b], vec![now + 10_000_000, now + 60_000_000_000]),
            (vec![&a, &c], vec![now + 500_000_000, 0]),
        ] {
            let limits: Vec<&Limit> = buckets.iter().map(|b| &*b.limit).collect();
            let policies: Vec<_> = buckets.iter().map(|b| &b.policy).collect();
            let (want, _) = decide(&policies, &tats, now);
            let args: Vec<ScriptArgs> = buckets.iter().map(|b| ScriptArgs::new(&b.limit)).collect();
            let replies: Vec<BucketReply> = limits
                .iter()
                .zip(&tats)
                .map(|(l, &tat)| {
                    let c = check_bucket(l, tat, now);
                    BucketReply {
                        allowed: c.allowed,
                        remaining: c.remaining,
                        reset_us: c.reset_ns / 1_000,
                        retry_us: (c.retry_after_ns != u64::MAX)
                            .then_some(c.retry_after_ns / 1_000),
                        granted: if c.allowed { l.cost() } else { 0 },
                    }
                })
                .collect();
            let (got, _) = decide_from_replies(&buckets, &args, &replies);
            assert_eq!(got, want);
        }
    }
}
