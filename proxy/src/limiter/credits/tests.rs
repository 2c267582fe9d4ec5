use super::*;
use crate::limiter::Scope;
use std::time::Duration;
use tollgate_core::limits::Limit;

fn adj(id: i64, key: i64, delta: i64) -> CreditAdjustment {
    CreditAdjustment {
        id,
        subject_kind: SubjectKind::Key,
        subject_id: key,
        delta,
        created_at: 0,
        actor: String::new(),
        spent_by: None,
        spent_at: None,
    }
}

fn spent(id: i64, key: i64, delta: i64, by: &str) -> CreditAdjustment {
    CreditAdjustment {
        spent_by: Some(by.to_string()),
        spent_at: Some(0),
        ..adj(id, key, delta)
    }
}

/// Black-box round 4, C5: the balance built from a fold row is the one
/// built from the rows it replaced; a book built before the fold (its
/// rows applied one by one) does not apply the fold again; a refund or
/// a fold is never taken for a top-up.
#[test]
fn a_fold_row_counts_only_for_a_balance_built_after_it() {
    use tollgate_core::credits::fold::FOLDED_BY;
    let k = Subject::Key(1);
    let running = CreditBook::new();
    running.apply_local(&[adj(1, 1, 100), spent(2, 1, -7, "a"), spent(3, 1, -5, "b")]);
    running.set_read_at(1, 3);
    assert_eq!(running.local_balance(&k), 88);
    // Rows 2 and 3 are folded into row 5 while it runs; row 4 is new.
    let later = [spent(4, 1, -1, "a"), spent(5, 1, -12, FOLDED_BY)];
    assert_eq!(running.apply_local(&later), 1);
    assert_eq!(
        running.local_balance(&k),
        87,
        "the fold is not applied again"
    );
    // A proxy starting now reads the top-up, the new row and the fold.
    let fresh = CreditBook::new();
    fresh.apply_local(&[
        adj(1, 1, 100),
        spent(4, 1, -1, "a"),
        spent(5, 1, -12, FOLDED_BY),
    ]);
    fresh.set_read_at(1, 5);
    assert_eq!(fresh.local_balance(&k), 87);
    // Its start-up read failed: the first background read builds it.
    let late = CreditBook::new();
    late.apply_local(&[adj(1, 1, 100), spent(5, 1, -12, FOLDED_BY)]);
    late.mark_built();
    late.apply_local(&[spent(6, 1, -3, FOLDED_BY)]);
    assert_eq!(late.local_balance(&k), 88);
    // Positive spend rows (refunds, folds of refunds) are no top-ups.
    fresh.apply_local(&[spent(7, 1, 4, "a"), spent(8, 1, 9, FOLDED_BY)]);
    assert_eq!(fresh.last_top_up(&k), Some((1, 100)));
}

#[test]
fn adjustments_apply_once_and_spending_is_all_or_nothing() {
    let book = CreditBook::new();
    let k = Subject::Key(1);
    assert!(!book.holds(&k));
    assert_eq!(book.apply_local(&[adj(1, 1, 3), adj(2, 1, 2)]), 2);
    // Read again: nothing applied twice.
    assert_eq!(book.apply_local(&[adj(1, 1, 3), adj(2, 1, 2)]), 0);
    assert!(book.holds(&k) && !book.holds(&Subject::Key(2)));
    assert_eq!(book.local_balance(&k), 5);
    let l = LocalLimiter::new(2);
    let b = Bucket::new(
        Scope::Key,
        Limit::new("hour", 3, Duration::from_secs(3600), None, None),
    );
    // Credits 5, bucket 3: the bucket refuses the 4th, which spends nothing.
    for left in [4, 3, 2] {
        match book.spend_local(&l, &k, &[&b], 1) {
            Spent::Decided(d, after) => assert!(d.allowed && after == left),
            other => panic!("{other:?}"),
        }
    }
    match book.spend_local(&l, &k, &[&b], 1) {
        Spent::Decided(d, after) => assert!(!d.allowed && after == 2),
        other => panic!("{other:?}"),
    }
    // A cost above the balance: refused, and the bucket is not asked.
    let fresh = Bucket::new(
        Scope::Route("r"),
        Limit::new("r", 10, Duration::from_secs(3600), None, None),
    );
    assert_eq!(book.spend_local(&l, &k, &[&fresh], 3), Spent::Exhausted(2));
    assert_eq!(l.check(&k, &[&fresh]).limits[0].remaining, 9);
    // Exactly the balance: admitted, 0 left, then exhausted.
    match book.spend_local(&l, &k, &[&fresh], 2) {
        Spent::Decided(d, 0) => assert!(d.allowed),
        other => panic!("{other:?}"),
    }
    assert_eq!(book.spend_local(&l, &k, &[], 1), Spent::Exhausted(0));
    // A top-up of 50 admits exactly 50 more (no buckets at all).
    book.apply_local(&[adj(3, 1, 50)]);
    let admitted = (0..60)
        .filter(|_| matches!(book.spend_local(&l, &k, &[], 1), Spent::Decided(..)))
        .count();
    assert_eq!(admitted, 50);
    // A negative adjustment can leave a debt: refused until topped up.
    book.apply_local(&[adj(4, 1, -5), adj(5, 1, 4)]);
    assert_eq!(book.spend_local(&l, &k, &[], 0), Spent::Exhausted(-1));
}

#[test]
fn a_key_of_an_identity_spends_its_own_credits_with_the_identitys_buckets() {
    let book = CreditBook::new();
    book.apply_local(&[adj(1, 1, 10)]);
    let member = Subject::Member {
        key: 1,
        identity: 7,
    };
    let other = Subject::Member {
        key: 2,
        identity: 7,
    };
    assert!(book.holds(&member), "the key's balance");
    assert!(!book.holds(&other), "another key of the identity has none");
    let l = LocalLimiter::new(2);
    let mut shared = Limit::new("hour", 2, Duration::from_secs(3600), None, None);
    shared.scope = tollgate_core::limits::LimitScope::Identity;
    let shared = Bucket::new(Scope::Key, shared);
    // The identity's bucket: key 2 takes one token, key 1 the last.
    assert!(l.check(&other, &[&shared]).allowed);
    match book.spend_local(&l, &member, &[&shared], 1) {
        Spent::Decided(d, 9) => assert!(d.allowed),
        x => panic!("{x:?}"),
    }
    match book.spend_local(&l, &member, &[&shared], 1) {
        Spent::Decided(d, 9) => assert!(!d.allowed, "the shared bucket is empty"),
        x => panic!("{x:?}"),
    }
    assert_eq!(book.local_balance(&Subject::Key(1)), 9);
}

fn id_adj(id: i64, identity: i64, delta: i64) -> CreditAdjustment {
    CreditAdjustment {
        subject_kind: SubjectKind::Identity,
        ..adj(id, identity, delta)
    }
}

#[test]
fn an_identitys_balance_is_spent_by_all_its_keys_first() {
    let book = CreditBook::new();
    let (k1, k2) = (
        Subject::Member {
            key: 1,
            identity: 7,
        },
        Subject::Member {
            key: 2,
            identity: 7,
        },
    );
    // Key 1 holds 10 of its own; the identity nothing yet.
    book.apply_local(&[adj(1, 1, 10)]);
    assert_eq!(book.holder_of(&k1), Some(Subject::Key(1)));
    assert_eq!(book.holder_of(&k2), None);
    // The identity gets 3: both keys now spend it, key 1's stays put.
    book.apply_local(&[id_adj(2, 7, 3)]);
    assert_eq!(book.holder_of(&k1), Some(Subject::Identity(7)));
    assert_eq!(book.holder_of(&k2), Some(Subject::Identity(7)));
    assert_eq!(book.holder_of(&Subject::Key(1)), Some(Subject::Key(1)));
    let l = LocalLimiter::new(2);
    let admitted = [&k1, &k2, &k1, &k2, &k1]
        .into_iter()
        .filter(|s| matches!(book.spend_local(&l, s, &[], 1), Spent::Decided(..)))
        .count();
    assert_eq!(admitted, 3);
    assert_eq!(book.spend_local(&l, &k2, &[], 1), Spent::Exhausted(0));
    assert_eq!(book.local_balance(&Subject::Key(1)), 10);
    // Another identity's key is not a holder.
    let other = Subject::Member {
        key: 3,
        identity: 8,
    };
    assert!(!book.holds(&other));
}

#[test]
fn a_refill_makes_a_holder_and_a_top_up_adds_to_the_new_period() {
    use tollgate_core::refill::RefillSpec;
    let book = CreditBook::new();
    let r = Refill::new(&RefillSpec {
        amount: Some(2),
        every: Some("1h".into()),
        ..Default::default()
    })
    .expect("valid");
    let id = Subject::Identity(7);
    book.set_refills([(id, Arc::new(r))].into_iter().collect());
    let k = Subject::Member {
        key: 1,
        identity: 7,
    };
    assert_eq!(book.holder_of(&k), Some(id));
    let l = LocalLimiter::new(2);
    let hour = 3_600_000_000i64;
    let spend = |wall: i64| book.spend_local_at(&l, &k, &[], 1, |l, s, b| l.check(s, b), wall);
    assert!(matches!(spend(hour), Spent::Decided(_, 1)));
    assert!(matches!(spend(hour + 1), Spent::Decided(_, 0)));
    assert_eq!(spend(2 * hour - 1), Spent::Exhausted(0));
    // A top-up in the next period: the refill first, then the top-up.
    let top_up = CreditAdjustment {
        created_at: 2 * hour / 1000,
        ..id_adj(1, 7, 3)
    };
    book.apply_local_at(&[top_up], 2 * hour + 5);
    assert_eq!(book.local_balance(&id), 5);
    assert!(matches!(spend(3 * hour - 1), Spent::Decided(_, 4)));
    // The period after: set back to 2, unused credits do not roll over.
    assert!(matches!(spend(3 * hour), Spent::Decided(_, 1)));
}
