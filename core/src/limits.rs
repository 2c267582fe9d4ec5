//! Limit policies and the token-bucket arithmetic every limiter backend shares.
//!
//! A bucket has capacity `burst` and refills continuously at `rate` tokens per
//! `per`. It is stored as a single number, the *theoretical arrival time* (TAT,
//! as in GCRA): the instant at which the bucket would be full again. With an
//! emission interval `T = per / rate`, a bucket holds `(burst·T − (tat − now)) / T`
//! tokens. This is exactly a token bucket, but needs one integer of state and no
//! floating point. `lua/token_bucket.lua` implements the same arithmetic.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::duration;
pub use crate::limit_scope::LimitScope;
use crate::quota::{Calendar, QuotaSpec};

mod share;
pub use share::{seed_tat, seeded_level, share};

/// One token bucket policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub name: String,
    pub rate: u64,
    #[serde(with = "duration::serde_str")]
    pub per: Duration,
    #[serde(default)]
    pub burst: Option<u64>,
    #[serde(default)]
    pub cost: Option<u64>,
    /// A calendar quota instead of a token bucket ([`crate::quota`]): `rate`
    /// is then the quota's amount and `per` the period's longest length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSpec>,
    /// Who shares the bucket: each key (the default) or all keys of the
    /// key's identity (`scope: identity`).
    #[serde(default, skip_serializing_if = "LimitScope::is_key")]
    pub scope: LimitScope,
}

impl Limit {
    /// A limit of `rate` per `per` (`burst` defaults to `rate`, `cost` to 1);
    /// not validated (see `rules::limits`).
    pub fn new(
        name: impl Into<String>,
        rate: u64,
        per: Duration,
        burst: Option<u64>,
        cost: Option<u64>,
    ) -> Self {
        Self {
            name: name.into(),
            rate,
            per,
            burst,
            cost,
            quota: None,
            scope: LimitScope::Key,
        }
    }

    /// A calendar quota of `amount` uses per period (see [`crate::quota`]).
    pub fn new_quota(
        name: impl Into<String>,
        amount: u64,
        spec: QuotaSpec,
        cost: Option<u64>,
    ) -> Self {
        Self {
            name: name.into(),
            rate: amount,
            per: spec.period.nominal(),
            burst: None,
            cost,
            quota: Some(spec),
            scope: LimitScope::Key,
        }
    }

    /// This limit with its defaults left out (a `burst` equal to the rate,
    /// a `cost` of 1): two limits that mean the same have the same
    /// canonical form, so a PATCH that only spells a default changes nothing.
    pub fn canonical(&self) -> Limit {
        Limit {
            burst: self.burst.filter(|b| *b != self.rate || self.is_quota()),
            cost: self.cost.filter(|c| *c != 1),
            ..self.clone()
        }
    }

    /// Whether this limit is a calendar quota rather than a token bucket.
    pub fn is_quota(&self) -> bool {
        self.quota.is_some()
    }

    pub fn burst(&self) -> u64 {
        self.burst.unwrap_or(self.rate)
    }

    pub fn cost(&self) -> u64 {
        self.cost.unwrap_or(1)
    }

    /// This limit for requests that take `cost` tokens each (a route's
    /// `cost.reserve`, the verify API's `cost`): the same rate, period and
    /// burst.
    pub fn at_cost(&self, cost: u64) -> Limit {
        Limit {
            cost: Some(cost),
            ..self.clone()
        }
    }

    /// Whether a request costs more than the bucket holds (its cost above
    /// its burst, or a quota's amount): no wait ever admits it.
    pub fn never_fits(&self) -> bool {
        self.cost() > self.burst()
    }

    /// Nanoseconds for one token to come back.
    pub fn emission_interval_ns(&self) -> u64 {
        emission_ns(self.per, self.rate)
    }

    /// The window in whole seconds, as the `w` parameter of `RateLimit-Policy`.
    pub fn window_secs(&self) -> u64 {
        self.per.as_secs().max(1)
    }
}

/// The outcome of checking one bucket at one instant, before anything is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketCheck {
    pub allowed: bool,
    /// The TAT to store if the whole request is admitted.
    pub new_tat: u64,
    /// Tokens left after this request (if admitted) or now (if refused).
    pub remaining: u64,
    /// Nanoseconds until enough tokens for this request are back (0 if
    /// allowed, [`NEVER`] if no wait is enough).
    pub retry_after_ns: u64,
    /// Nanoseconds until the bucket is full again.
    pub reset_ns: u64,
}

/// The longest span, in nanoseconds, the arithmetic works with: 2^50 µs
/// (35.7 years), the same clamp as the Redis script's `MAX_SPAN_US`. A
/// policy whose emission interval or capacity (`burst × interval`) is longer
/// is clamped to it: one token per 35.7 years at the slowest, and at most
/// that span's worth of tokens in the bucket. This keeps every TAT within
/// `now + 3 × MAX_SPAN_NS`, far from `u64::MAX` (584 years of nanoseconds), so
/// nothing saturates (a saturated TAT would stop counting: an absurd policy
/// such as one token per century would admit everything).
pub const MAX_SPAN_NS: u64 = (1 << 50) * 1_000;

/// A limit's numbers as a backend's arithmetic uses them, in that backend's
/// time unit (ns here, µs in the Redis script), clamped to its longest span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clamped {
    /// Time for one token to come back, in `1..=max_span`.
    pub interval: u64,
    /// Capacity in tokens, `burst × interval ≤ max_span`.
    pub burst: u64,
    /// Tokens this request takes; `burst + 1` (never fits) if the configured
    /// cost is above the configured burst.
    pub cost: u64,
}

/// The one clamp both backends use: `interval` is the limit's emission
/// interval in the backend's unit (`per / rate`, truncated), `max_span` the
/// longest span in that unit. A cost above the burst stays above it.
pub fn clamp(limit: &Limit, interval: u64, max_span: u64) -> Clamped {
    clamp_values(limit.burst(), limit.cost(), interval, max_span)
}

/// Nanoseconds for one token of `rate` per `per` to come back (at least 1).
fn emission_ns(per: Duration, rate: u64) -> u64 {
    let per = u64::try_from(per.as_nanos()).unwrap_or(u64::MAX);
    (per / rate.max(1)).max(1)
}

/// [`clamp`] of a limit's configured `burst` and `cost` (a cost above the
/// burst never fits, whatever the clamp).
fn clamp_values(burst: u64, cost: u64, interval: u64, max_span: u64) -> Clamped {
    let interval = interval.clamp(1, max_span.max(1));
    let never_fits = cost > burst;
    let burst = burst.min(max_span / interval);
    let cost = if never_fits {
        burst + 1
    } else {
        cost.min(burst)
    };
    Clamped {
        interval,
        burst,
        cost,
    }
}

/// [`clamp`] in nanoseconds, for the arithmetic here.
pub fn clamp_ns(limit: &Limit) -> Clamped {
    clamp(limit, limit.emission_interval_ns(), MAX_SPAN_NS)
}

/// [`clamp`] in microseconds, for the Redis script (`lua/token_bucket.lua`).
pub fn clamp_us(limit: &Limit) -> Clamped {
    let per_us = u64::try_from(limit.per.as_micros()).unwrap_or(u64::MAX);
    clamp(limit, per_us / limit.rate.max(1), MAX_SPAN_NS / 1_000)
}

/// A limit prepared once when its config or plan is compiled: what the
/// arithmetic and the reported [`LimitState`] need, with the clamp (two
/// divisions) done and the name shared instead of copied per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: Arc<str>,
    /// The limit's `rate`, reported as the quota.
    pub quota: u64,
    pub window_secs: u64,
    /// [`clamp_ns`] of the limit.
    pub ns: Clamped,
    /// A quota's calendar (`None`: a token bucket).
    pub calendar: Option<Calendar>,
}

impl Policy {
    pub fn new(limit: &Limit) -> Self {
        Self {
            name: limit.name.as_str().into(),
            quota: limit.rate,
            window_secs: limit.window_secs(),
            ns: clamp_ns(limit),
            calendar: limit.quota.as_ref().map(Calendar::compile),
        }
    }
}

/// Check one bucket: `tat` is the stored TAT (0 for a new, full bucket), `now`
/// the current time in nanoseconds on the same clock.
pub fn check_bucket(limit: &Limit, tat: u64, now: u64) -> BucketCheck {
    check_clamped(clamp_ns(limit), tat, now)
}

/// [`check_bucket`] with the limit already clamped ([`Policy::ns`]).
pub fn check_clamped(clamped: Clamped, tat: u64, now: u64) -> BucketCheck {
    let Clamped {
        interval: t,
        burst,
        cost,
    } = clamped;
    let capacity_ns = burst * t;
    let base = tat.max(now);
    let used = base - now;
    // ≤ 2 × MAX_SPAN_NS; `None` only for a clock past ~500 years.
    let new_tat = base.checked_add(cost * t);
    let needed = used.saturating_add(cost * t);
    match new_tat {
        Some(new_tat) if cost <= burst && needed <= capacity_ns => {
            let remaining = (capacity_ns - needed) / t;
            BucketCheck {
                allowed: true,
                new_tat,
                remaining,
                retry_after_ns: 0,
                reset_ns: needed,
            }
        }
        _ => {
            let remaining = capacity_ns.saturating_sub(used) / t;
            // The request fits once `needed - capacity` more time has passed; a
            // request costing more than the burst never fits.
            let retry_after_ns = if cost > burst || new_tat.is_none() {
                NEVER
            } else {
                needed - capacity_ns
            };
            BucketCheck {
                allowed: false,
                new_tat: tat,
                remaining,
                retry_after_ns,
                reset_ns: used,
            }
        }
    }
}

/// A bucket as it stands, nothing taken: `used_ns` is how long until it is
/// full again (its TAT minus now, 0 for a full or unknown bucket). For
/// callers that read their own state (`proxy.usage_path`).
pub fn peek_bucket(policy: &Policy, used_ns: u64) -> LimitState {
    let Clamped {
        interval: t, burst, ..
    } = policy.ns;
    let capacity_ns = burst * t;
    LimitState {
        name: policy.name.clone(),
        quota: policy.quota,
        window_secs: policy.window_secs,
        remaining: capacity_ns.saturating_sub(used_ns) / t,
        reset_secs: ceil_secs(used_ns.min(capacity_ns)),
        violated: false,
        retry_after_secs: 0,
    }
}

/// What a limiter reports for one limit of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitState {
    /// Shared with the compiled limit: reporting it copies no string.
    pub name: Arc<str>,
    pub quota: u64,
    pub window_secs: u64,
    pub remaining: u64,
    /// Seconds (rounded up) until the bucket is full again.
    pub reset_secs: u64,
    /// Whether this limit refused the request.
    pub violated: bool,
    /// Seconds (rounded up) until this limit would admit the request;
    /// [`NEVER`] when no wait would ([`retry_secs`]).
    pub retry_after_secs: u64,
}

/// The wait (`retry_after_ns`, `retry_after_secs`) of a refusal that no wait
/// ends: the request costs more than the limit's burst
/// ([`Limit::never_fits`]). Kept as is through [`retry_secs`]: never
/// rendered as a number of seconds ([`Decision::retry_after`]).
pub const NEVER: u64 = u64::MAX;

/// The problem `reason` (and usage reason suffix) of a refusal that no wait
/// ends ([`RetryAfter::Never`]): the proxy's 429 and the verify API's.
pub const COST_OVER_BURST: &str = "cost-over-burst";

/// A refusal's wait in whole seconds (rounded up: a request waiting `t`
/// seconds must succeed) from nanoseconds, [`NEVER`] kept. Every backend
/// reports its waits through this.
pub fn retry_secs(ns: u64) -> u64 {
    if ns == NEVER {
        NEVER
    } else {
        ceil_secs(ns)
    }
}

/// When a refused request could be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// After this many seconds (at least 1): `Retry-After`.
    Secs(u64),
    /// Never: a limit's burst is below the request's cost. No `Retry-After`.
    Never,
}

/// A limiter's answer for a whole request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub allowed: bool,
    pub limits: LimitStates,
}

/// The limits of one decision: inline for up to two (no allocation on the
/// request path for the common one or two limits).
pub type LimitStates = SmallVec<[LimitState; 2]>;

impl Decision {
    /// `Retry-After` in seconds: the longest wait among violated limits.
    pub fn retry_after_secs(&self) -> u64 {
        self.limits
            .iter()
            .filter(|l| l.violated)
            .map(|l| l.retry_after_secs)
            .max()
            .unwrap_or(0)
    }

    /// When this refused request could be admitted: the longest wait among
    /// violated limits, at least 1 s, or never ([`NEVER`]). The one answer
    /// of the proxy's 429 and the verify API.
    pub fn retry_after(&self) -> RetryAfter {
        match self.retry_after_secs() {
            NEVER => RetryAfter::Never,
            s => RetryAfter::Secs(s.max(1)),
        }
    }

    pub fn violated_names(&self) -> Vec<&str> {
        self.limits
            .iter()
            .filter(|l| l.violated)
            .map(|l| &*l.name)
            .collect()
    }
}

/// Round nanoseconds up to whole seconds (a request waiting `t` seconds must succeed).
pub fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// The TATs to store after an admitted request, one per limit (no allocation
/// for up to four limits).
pub type NewTats = SmallVec<[u64; 4]>;

/// Decide a whole request against the buckets' current TATs: admitted only if
/// every bucket admits it (nothing is taken otherwise). Returns the decision and,
/// if admitted, the TATs to store, in the order of `policies`. No allocation
/// for up to two limits (four TATs).
pub fn decide(policies: &[&Policy], tats: &[u64], now: u64) -> (Decision, Option<NewTats>) {
    let checks: SmallVec<[BucketCheck; 4]> = policies
        .iter()
        .zip(tats)
        .map(|(p, &tat)| check_clamped(p.ns, tat, now))
        .collect();
    let allowed = checks.iter().all(|c| c.allowed);
    let states = policies
        .iter()
        .zip(&checks)
        .map(|(p, c)| {
            let (remaining, reset_ns) = if c.allowed && !allowed {
                // Refused by another limit: report this bucket as it stays.
                (
                    c.remaining + p.ns.cost,
                    c.reset_ns - p.ns.cost * p.ns.interval,
                )
            } else {
                (c.remaining, c.reset_ns)
            };
            LimitState {
                name: p.name.clone(),
                quota: p.quota,
                window_secs: p.window_secs,
                remaining,
                reset_secs: ceil_secs(reset_ns),
                violated: !c.allowed,
                retry_after_secs: if c.allowed {
                    0
                } else {
                    retry_secs(c.retry_after_ns)
                },
            }
        })
        .collect();
    let new_tats = allowed.then(|| checks.iter().map(|c| c.new_tat).collect());
    (
        Decision {
            allowed,
            limits: states,
        },
        new_tats,
    )
}
#[cfg(test)]
mod tests;
