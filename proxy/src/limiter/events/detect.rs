//! When a decision crosses a webhook event's threshold: plain functions of
//! a decision's results, no I/O (the rules, documented in the README's
//! webhooks section):
//!
//! - `quota.warning`: a quota's use in its period is at least 80 % of its
//!   amount (`used × 5 ≥ amount × 4`) after the request was decided;
//! - `quota.exhausted`: nothing is left of it (0 remaining) or it refused
//!   the request;
//! - `credits.low`: the balance after the request is at or below 10 % of
//!   the holder's last top-up (rounded down);
//! - `credits.exhausted`: the balance is 0 or less, or too short for the
//!   request.
//!
//! Each crossing names its occurrence ([`DedupKey`]): the subject, the
//! quota and the period's start, or the last top-up's id. A threshold is
//! noticed by every request past it, so a crossing is seen again however
//! requests interleave across proxies; the caller remembers what it sent
//! and the outbox's UNIQUE dedup key makes it one event.

use smallvec::SmallVec;
use std::sync::Arc;

use tollgate_core::limits::Decision;
use tollgate_core::quota::PeriodBounds;

use crate::limiter::{quota, Bucket, Subject};

/// `quota.warning` fires at this share of a quota used, in percent.
pub const QUOTA_WARNING_PERCENT: u64 = 80;
/// `credits.low` fires at or below this share of the last top-up, in percent.
pub const CREDITS_LOW_PERCENT: i64 = 10;

/// The four event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    QuotaWarning,
    QuotaExhausted,
    CreditsLow,
    CreditsExhausted,
}

impl Kind {
    /// The event type, as `tollgate_core::webhooks::EVENT_TYPES` names it.
    pub fn event_type(self) -> &'static str {
        match self {
            Kind::QuotaWarning => "quota.warning",
            Kind::QuotaExhausted => "quota.exhausted",
            Kind::CreditsLow => "credits.low",
            Kind::CreditsExhausted => "credits.exhausted",
        }
    }
}

/// Whom an event is about: a key, or an identity (its shared quotas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum About {
    Key(i64),
    Identity(i64),
}

impl About {
    pub fn kind(self) -> &'static str {
        match self {
            About::Key(_) => "key",
            About::Identity(_) => "identity",
        }
    }

    pub fn id(self) -> i64 {
        match self {
            About::Key(id) | About::Identity(id) => id,
        }
    }

    /// The subject part of the outbox's dedup key: `key:42`, `identity:7`.
    pub fn subject(self) -> String {
        format!("{}:{}", self.kind(), self.id())
    }
}

/// One occurrence of an event: at most one event per value, ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey {
    pub kind: Kind,
    pub about: About,
    /// The quota's bucket id (its name), 0 for credits.
    pub item: u64,
    /// The quota period's start (µs), or the last top-up's id (0: none seen).
    pub period: i64,
}

/// A quota past a threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaCrossing {
    pub kind: Kind,
    pub about: About,
    /// The key whose request noticed it (also for an identity's quota).
    pub key_id: Option<i64>,
    pub identity_id: Option<i64>,
    pub bucket_id: u64,
    pub quota: Arc<str>,
    pub amount: u64,
    pub remaining: u64,
    pub period: PeriodBounds,
}

/// A balance past a threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct CreditCrossing {
    pub kind: Kind,
    pub about: About,
    pub balance: i64,
    /// The last top-up `(id, amount)` this proxy saw.
    pub top_up: Option<(i64, i64)>,
}

/// Who owns a quota bucket of a request of `subject`: a member's
/// identity-scoped quotas are the identity's. `None` for a client address
/// (`auth: none` routes): no customer to tell, and addresses are unbounded.
pub fn owner(subject: &Subject, b: &Bucket) -> Option<About> {
    match *subject {
        Subject::Key(k) => Some(About::Key(k)),
        Subject::Identity(i) => Some(About::Identity(i)),
        Subject::Member { identity, .. } if b.identity_scope => Some(About::Identity(identity)),
        Subject::Member { key, .. } => Some(About::Key(key)),
        Subject::Ip(_) => None,
    }
}

fn key_and_identity(subject: &Subject) -> (Option<i64>, Option<i64>) {
    match *subject {
        Subject::Key(k) => (Some(k), None),
        Subject::Identity(i) => (None, Some(i)),
        Subject::Member { key, identity } => (Some(key), Some(identity)),
        Subject::Ip(_) => (None, None),
    }
}

/// Whether `remaining` of `amount` is at least [`QUOTA_WARNING_PERCENT`] used.
pub fn past_warning(amount: u64, remaining: u64) -> bool {
    let used = u128::from(amount.saturating_sub(remaining));
    amount > 0 && used * 100 >= u128::from(amount) * u128::from(QUOTA_WARNING_PERCENT)
}

/// The quota events a decision shows (`buckets` and `decision.limits` in
/// the same order, as every backend answers), at `now_us` on the wall clock.
pub fn quota_crossings(
    subject: &Subject,
    buckets: &[&Bucket],
    decision: &Decision,
    now_us: i64,
) -> SmallVec<[QuotaCrossing; 2]> {
    let mut out = SmallVec::new();
    for (b, s) in buckets.iter().zip(&decision.limits) {
        if b.policy.calendar.is_none() || s.quota == 0 {
            continue;
        }
        let (Some(about), Some(period)) = (owner(subject, b), quota::bounds(b, now_us)) else {
            continue;
        };
        let (key_id, identity_id) = key_and_identity(subject);
        let mut add = |kind| {
            out.push(QuotaCrossing {
                kind,
                about,
                key_id,
                identity_id,
                bucket_id: b.id,
                quota: s.name.clone(),
                amount: s.quota,
                remaining: s.remaining,
                period,
            })
        };
        if past_warning(s.quota, s.remaining) {
            add(Kind::QuotaWarning);
        }
        if s.remaining == 0 || s.violated {
            add(Kind::QuotaExhausted);
        }
    }
    out
}

/// The credit events of a balance after a request (`refused`: it was too
/// short for the request). `holder` owns the balance.
pub fn credit_crossings(
    holder: About,
    balance: i64,
    refused: bool,
    top_up: Option<(i64, i64)>,
) -> SmallVec<[CreditCrossing; 2]> {
    let mut out = SmallVec::new();
    let mut add = |kind| {
        out.push(CreditCrossing {
            kind,
            about: holder,
            balance,
            top_up,
        })
    };
    if let Some((_, amount)) = top_up {
        if balance <= low_threshold(amount) {
            add(Kind::CreditsLow);
        }
    }
    if refused || balance <= 0 {
        add(Kind::CreditsExhausted);
    }
    out
}

/// The balance at or below which `credits.low` fires after a top-up of `amount`.
pub fn low_threshold(amount: i64) -> i64 {
    amount.max(0) / (100 / CREDITS_LOW_PERCENT)
}

impl QuotaCrossing {
    pub fn dedup(&self) -> DedupKey {
        DedupKey {
            kind: self.kind,
            about: self.about,
            item: self.bucket_id,
            period: self.period.start_us,
        }
    }

    /// The outbox's period: the quota's name and its period's start (s).
    pub fn period_name(&self) -> String {
        format!(
            "{}:{}",
            self.quota,
            self.period.start_us.div_euclid(1_000_000)
        )
    }

    /// The event's `data` (documented in the README).
    pub fn data(&self) -> serde_json::Value {
        serde_json::json!({
            "subject": self.about.kind(),
            "subject_id": self.about.id(),
            "key_id": self.key_id,
            "identity_id": self.identity_id,
            "quota": &*self.quota,
            "limit": self.amount,
            "used": self.amount.saturating_sub(self.remaining),
            "remaining": self.remaining,
            "threshold_percent": match self.kind {
                Kind::QuotaWarning => QUOTA_WARNING_PERCENT,
                _ => 100,
            },
            "period_start": rfc3339(self.period.start_us),
            "period_end": rfc3339(self.period.end_us),
        })
    }
}

impl CreditCrossing {
    pub fn dedup(&self) -> DedupKey {
        DedupKey {
            kind: self.kind,
            about: self.about,
            item: 0,
            period: self.top_up.map_or(0, |(id, _)| id),
        }
    }

    /// The outbox's period: the last top-up's id (a new top-up starts a
    /// new one).
    pub fn period_name(&self) -> String {
        format!("top-up:{}", self.top_up.map_or(0, |(id, _)| id))
    }

    /// The event's `data` (documented in the README).
    pub fn data(&self) -> serde_json::Value {
        serde_json::json!({
            "subject": self.about.kind(),
            "subject_id": self.about.id(),
            "balance": self.balance,
            "low_threshold": self.top_up.map(|(_, a)| low_threshold(a)),
            "top_up": self.top_up.map(|(id, amount)| serde_json::json!({
                "adjustment_id": id,
                "amount": amount,
            })),
        })
    }
}

fn rfc3339(us: i64) -> Option<String> {
    jiff::Timestamp::from_microsecond(us)
        .ok()
        .map(|t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::{LocalLimiter, Scope};
    use tollgate_core::limits::{Limit, LimitScope};
    use tollgate_core::quota::{Period, QuotaSpec};

    fn daily(n: u64, scope: LimitScope) -> Bucket {
        let spec = QuotaSpec {
            period: Period::Day,
            anchor: None,
            time_zone: None,
        };
        let mut l = Limit::new_quota("daily", n, spec, None);
        l.scope = scope;
        Bucket::new(Scope::Key, l)
    }

    fn kinds(c: &[QuotaCrossing]) -> Vec<Kind> {
        c.iter().map(|c| c.kind).collect()
    }

    #[test]
    fn a_quota_of_ten_warns_from_the_eighth_use_and_is_exhausted_at_the_tenth() {
        let l = LocalLimiter::new(1);
        let b = daily(10, LimitScope::Key);
        let s = Subject::Key(42);
        let now = quota::wall_now_us();
        let mut seen = Vec::new();
        for _ in 0..12 {
            let d = l.check(&s, &[&b]);
            seen.push(kinds(&quota_crossings(&s, &[&b], &d, now)));
        }
        let none: Vec<Kind> = Vec::new();
        for (i, k) in seen.iter().enumerate().take(7) {
            assert_eq!(*k, none, "use {}", i + 1);
        }
        assert_eq!(seen[7], [Kind::QuotaWarning]);
        assert_eq!(seen[8], [Kind::QuotaWarning]);
        // The tenth use leaves nothing; each refusal after it says so again.
        for k in &seen[9..] {
            assert_eq!(*k, [Kind::QuotaWarning, Kind::QuotaExhausted]);
        }
        let d = l.check(&s, &[&b]);
        let c = &quota_crossings(&s, &[&b], &d, now)[1];
        assert_eq!(c.about, About::Key(42));
        let data = c.data();
        assert_eq!(data["quota"], "daily");
        assert_eq!(
            (data["limit"].as_u64(), data["used"].as_u64()),
            (Some(10), Some(10))
        );
        assert!(data["period_start"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        // One occurrence per quota and period, whatever the request.
        assert_eq!(c.dedup().period, c.period.start_us);
        assert!(c.period_name().starts_with("daily:"));
    }

    #[test]
    fn an_identitys_quota_is_the_identitys_and_an_address_has_none() {
        let l = LocalLimiter::new(1);
        let shared = daily(1, LimitScope::Identity);
        let own = daily(1, LimitScope::Key);
        let m = Subject::Member {
            key: 5,
            identity: 9,
        };
        let now = quota::wall_now_us();
        let d = l.check(&m, &[&shared]);
        let c = quota_crossings(&m, &[&shared], &d, now);
        assert_eq!(c[0].about, About::Identity(9));
        assert_eq!((c[0].key_id, c[0].identity_id), (Some(5), Some(9)));
        let d = l.check(&m, &[&own]);
        assert_eq!(
            quota_crossings(&m, &[&own], &d, now)[0].about,
            About::Key(5)
        );
        let ip = Subject::Ip("192.0.2.1".parse().expect("ip"));
        let d = l.check(&ip, &[&own]);
        assert!(quota_crossings(&ip, &[&own], &d, now).is_empty());
        // Buckets are not quotas.
        let bucket = Bucket::new(
            Scope::Key,
            Limit::new("s", 1, std::time::Duration::from_secs(60), None, None),
        );
        let d = l.check(&Subject::Key(1), &[&bucket]);
        assert!(quota_crossings(&Subject::Key(1), &[&bucket], &d, now).is_empty());
        assert!(!past_warning(0, 0) && past_warning(5, 1) && !past_warning(5, 2));
        assert!(past_warning(u64::MAX, 0) && !past_warning(u64::MAX, u64::MAX / 2));
    }

    #[test]
    fn credits_are_low_at_a_tenth_of_the_last_top_up_and_exhausted_at_zero() {
        let k = About::Key(3);
        let kinds = |balance, refused, top_up| -> Vec<Kind> {
            credit_crossings(k, balance, refused, top_up)
                .iter()
                .map(|c| c.kind)
                .collect()
        };
        let top = Some((7, 100));
        assert!(kinds(11, false, top).is_empty());
        assert_eq!(kinds(10, false, top), [Kind::CreditsLow]);
        assert_eq!(
            kinds(0, false, top),
            [Kind::CreditsLow, Kind::CreditsExhausted]
        );
        assert_eq!(
            kinds(3, true, top),
            [Kind::CreditsLow, Kind::CreditsExhausted]
        );
        // A top-up of 5: a tenth rounds down to 0.
        assert!(kinds(1, false, Some((1, 5))).is_empty());
        assert_eq!(kinds(0, false, Some((1, 5))).len(), 2);
        // No top-up seen: never low, exhausted still.
        assert_eq!(kinds(0, false, None), [Kind::CreditsExhausted]);
        assert_eq!(kinds(-4, false, None), [Kind::CreditsExhausted]);
        assert_eq!(low_threshold(-5), 0);
        assert_eq!(low_threshold(i64::MAX), i64::MAX / 10);
        // A new top-up is a new occurrence.
        let a = credit_crossings(k, 0, false, Some((1, 5)))[1].dedup();
        let b = credit_crossings(k, 0, false, Some((2, 5)))[1].dedup();
        assert_ne!(a, b);
        let c = &credit_crossings(k, 0, true, Some((2, 5)))[1];
        assert_eq!(c.dedup(), b);
        assert_eq!(c.period_name(), "top-up:2");
        assert_eq!(c.data()["top_up"]["amount"], 5);
        assert_eq!(c.data()["subject"], "key");
    }
}
