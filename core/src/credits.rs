//! Prepaid credits (issue #20 item 2): the rules every way of changing or
//! spending a balance shares.
//!
//! A subject (a key; an identity once they exist) holds credits once it has
//! an adjustment (`db::credits`). Its live balance is kept by the limiter:
//! the sum of its adjustments, each applied exactly once, minus what its
//! admitted requests spent. A request spends its cost (the route's
//! `cost.reserve`, else 1) in the same all-or-nothing step as the buckets: a
//! balance short of the cost refuses it (429 `credits-exhausted`) and
//! nothing is taken anywhere.

pub mod fold;

/// The member of the `RateLimit` header that reports a key's credits: no
/// limit may have this name (`rules::limits::check_limit_name`).
pub const HEADER_MEMBER: &str = "credits";

/// The largest adjustment, either way: 2^53 − 1, exact in the Redis
/// script's doubles. Balances are 64-bit in Redis (`INCRBY`).
pub const MAX_DELTA: i64 = (1 << 53) - 1;

/// Whose balance: the kind stored in `credit_adjustments.subject_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    Key,
    Identity,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Identity => "identity",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "key" => Some(Self::Key),
            "identity" => Some(Self::Identity),
            _ => None,
        }
    }
}

/// Check an adjustment's delta: a whole number, not 0, at most
/// [`MAX_DELTA`] either way.
pub fn check_delta(delta: i64) -> Result<(), String> {
    if delta == 0 {
        return Err("delta must not be 0".into());
    }
    if delta.unsigned_abs() > MAX_DELTA.unsigned_abs() {
        return Err(format!(
            "delta must be between -{MAX_DELTA} and {MAX_DELTA}"
        ));
    }
    Ok(())
}

/// Spend `cost` from `balance`: the new balance, or `None` (refused,
/// nothing spent) when the balance is short.
pub fn spend(balance: i64, cost: u64) -> Option<i64> {
    let cost = i64::try_from(cost).ok()?;
    (balance >= cost).then(|| balance - cost)
}

/// Apply an adjustment to a balance, saturating (a balance never wraps).
pub fn apply(balance: i64, delta: i64) -> i64 {
    balance.saturating_add(delta)
}

/// Why an identity whose keys hold credits of their own cannot be deleted:
/// a key's own balance is kept under its identity's (one Redis hash tag),
/// and detaching the key would start it afresh elsewhere with its top-ups
/// applied again. The same words for the admin API (409) and the CLI.
pub fn identity_in_use_by_credits(identity: i64, keys: &[i64]) -> String {
    let list = keys
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "identity {identity} cannot be deleted: its keys {list} hold credits of their own \
         (their balances are kept with the identity's); delete those keys first"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_checked() {
        assert!(check_delta(50).is_ok());
        assert!(check_delta(-50).is_ok());
        assert!(check_delta(MAX_DELTA).is_ok());
        assert!(check_delta(-MAX_DELTA).is_ok());
        for bad in [0, MAX_DELTA + 1, -MAX_DELTA - 1, i64::MIN, i64::MAX] {
            assert!(check_delta(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spending_is_all_or_nothing() {
        assert_eq!(spend(10, 10), Some(0));
        assert_eq!(spend(10, 11), None);
        assert_eq!(spend(-5, 0), None);
        assert_eq!(spend(3, 0), Some(3));
        assert_eq!(spend(i64::MAX, u64::MAX), None);
        assert_eq!(apply(i64::MAX, 1), i64::MAX);
        assert_eq!(SubjectKind::parse("key"), Some(SubjectKind::Key));
        assert_eq!(SubjectKind::parse("Key"), None);
        assert_eq!(SubjectKind::Identity.as_str(), "identity");
    }
}
