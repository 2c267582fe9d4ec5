//! `credit_adjustments` on both databases (issue #20 item 2).

#[macro_use]
mod common;

use tollgate_core::credits::{SubjectKind, MAX_DELTA};
use tollgate_core::db::{Db, DbError};

async fn adjustments_are_recorded_and_read_back(db: &Db) {
    assert_eq!(
        db.credits_granted(SubjectKind::Key, 7).await.expect("sum"),
        None
    );
    let a = db
        .add_credits(SubjectKind::Key, 7, 50, "cli:test")
        .await
        .expect("add");
    assert_eq!(
        (a.subject_kind, a.subject_id, a.delta),
        (SubjectKind::Key, 7, 50)
    );
    assert_eq!(a.actor, "cli:test");
    let b = db
        .add_credits(SubjectKind::Key, 7, -20, "admin:root")
        .await
        .expect("add");
    assert!(b.id > a.id);
    db.add_credits(SubjectKind::Identity, 7, MAX_DELTA, "x")
        .await
        .expect("identity");
    assert_eq!(
        db.credits_granted(SubjectKind::Key, 7).await.expect("sum"),
        Some(30)
    );
    assert_eq!(
        db.credits_granted(SubjectKind::Identity, 7)
            .await
            .expect("sum"),
        Some(MAX_DELTA)
    );
    let all = db.credit_adjustments_since(0).await.expect("all");
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], a);
    let none = db
        .credit_adjustments_since(a.created_at + 86_400_000)
        .await
        .expect("none");
    assert!(none.is_empty());
    for bad in [0, MAX_DELTA + 1, i64::MIN] {
        let e = db
            .add_credits(SubjectKind::Key, 7, bad, "x")
            .await
            .expect_err("refused");
        assert!(matches!(e, DbError::Conflict(_)), "{bad}: {e}");
    }
    assert_eq!(db.credit_adjustments_since(0).await.expect("all").len(), 3);
}

both!(adjustments, adjustments_are_recorded_and_read_back);
