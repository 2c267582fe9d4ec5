//! Which credit holder refills how: a key's or an identity's own refill
//! (`credit_refills`) over its plan's (YAML plans), from the key set.
//! Applying them is the limiter's (`limiter::credits::refill`).

use std::collections::HashMap;
use std::sync::Arc;

use tollgate_core::config::Plan;
use tollgate_core::credits::SubjectKind;
use tollgate_core::db::refills::StoredRefill;
use tollgate_core::refill::Refill;

use crate::keyset::KeySet;
use crate::limiter::Subject;

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
