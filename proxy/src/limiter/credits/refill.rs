//! Refills in the limiter (rules in `tollgate_core::refill`): which holder
//! refills how ([`refills_of`], from the key set and the YAML plans), and
//! applying a due refill to a local balance ([`apply_due`]). The Redis
//! side is the credits scripts' (`lua/credits.lua`,
//! `lua/credits_adjust.lua`), given [`args`].

use std::collections::HashMap;
use std::sync::Arc;

use tollgate_core::config::Plan;
use tollgate_core::credits::SubjectKind;
use tollgate_core::db::refills::StoredRefill;
use tollgate_core::refill::{due, Refill};

use super::Balance;
use crate::keyset::KeySet;
use crate::limiter::Subject;

/// Set `b` to the refill's amount if its period started after the last
/// refill (`wall_us`: the wall clock in µs). Returns whether it refilled.
pub fn apply_due(b: &mut Balance, refill: Option<&Refill>, wall_us: i64) -> bool {
    let Some(r) = refill else {
        return false;
    };
    let Some(start) = r.period_start_us(wall_us) else {
        return false;
    };
    if !due(b.refilled, start) {
        return false;
    }
    b.credits = r.amount;
    b.refilled = Some(start);
    true
}

/// The Redis scripts' refill arguments: the amount (`-1`: none) and the
/// current period's start in seconds.
pub fn args(refill: Option<&Refill>, wall_us: i64) -> (i64, i64) {
    refill
        .and_then(|r| Some((r.amount, r.period_start_secs(wall_us)?)))
        .unwrap_or((-1, 0))
}

/// Every holder's refill: a key's or an identity's own (`credit_refills`)
/// if it has one, else its plan's (only YAML plans declare refills). A key
/// of an identity that holds credits spends the identity's balance, so the
/// key's refill then goes unused.
pub fn refills_of(
    keys: &KeySet,
    plans: &std::collections::BTreeMap<String, Plan>,
    own: &[StoredRefill],
) -> HashMap<Subject, Arc<Refill>> {
    let mut by_plan: HashMap<&str, Arc<Refill>> = HashMap::new();
    for (name, p) in plans {
        if let Some(r) = &p.credits_refill {
            by_plan.insert(name, Arc::new(r.clone()));
        }
    }
    let mut out = HashMap::new();
    for r in own {
        // Checked when written; one that is not (edited around the API) is
        // skipped rather than guessed.
        let Ok(refill) = Refill::new(&r.spec) else {
            tracing::debug!(
                "invalid credit refill of {} {}: ignored",
                r.subject_kind.as_str(),
                r.subject_id
            );
            continue;
        };
        let subject = match r.subject_kind {
            SubjectKind::Key => Subject::Key(r.subject_id),
            SubjectKind::Identity => Subject::Identity(r.subject_id),
        };
        out.insert(subject, Arc::new(refill));
    }
    if by_plan.is_empty() {
        return out;
    }
    for key in keys.keys() {
        if let Some(r) = key.plan.as_deref().and_then(|p| by_plan.get(p)) {
            out.entry(Subject::Key(key.id)).or_insert_with(|| r.clone());
        }
    }
    for identity in keys.identities() {
        if let Some(r) = identity.plan.as_deref().and_then(|p| by_plan.get(p)) {
            out.entry(Subject::Identity(identity.id))
                .or_insert_with(|| r.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::refill::RefillSpec;

    #[test]
    fn a_refill_sets_the_balance_once_per_period() {
        let r = Refill::new(&RefillSpec {
            amount: Some(5),
            every: Some("1h".into()),
            ..Default::default()
        })
        .expect("valid");
        let hour = 3_600_000_000;
        let mut b = Balance::default();
        assert!(apply_due(&mut b, Some(&r), hour + 10));
        assert_eq!(b.credits, 5);
        b.credits = 1;
        assert!(!apply_due(&mut b, Some(&r), 2 * hour - 1));
        assert_eq!(b.credits, 1, "the same period: not again");
        assert!(!apply_due(&mut b, Some(&r), hour - 1), "a lagging clock");
        assert!(apply_due(&mut b, Some(&r), 2 * hour));
        assert_eq!(b.credits, 5, "set, not added");
        assert!(!apply_due(&mut b, None, 9 * hour));
        assert_eq!(args(Some(&r), 2 * hour + 5), (5, 7_200));
        assert_eq!(args(None, 2 * hour), (-1, 0));
    }
}
