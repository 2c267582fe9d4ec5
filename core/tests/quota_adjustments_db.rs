//! `quota_adjustments` on both databases (issue #20, reset / adjust a quota).

#[macro_use]
mod common;

use tollgate_core::credits::SubjectKind;
use tollgate_core::db::quota_adjustments::NewQuotaAdjustment;
use tollgate_core::db::{Db, DbError};
use tollgate_core::quota::adjust::{QuotaChange, MAX_USED_DELTA};
use tollgate_core::quota::PeriodBounds;

const DAY_US: i64 = 86_400_000_000;

async fn adjustments_are_recorded_and_read_while_their_period_runs(db: &Db) {
    let today = PeriodBounds {
        start_us: 10 * DAY_US,
        end_us: 11 * DAY_US,
    };
    let new = |kind, id, change| NewQuotaAdjustment {
        subject_kind: kind,
        subject_id: id,
        quota: "daily",
        period: today,
        change,
        actor: "cli:test",
    };
    let a = db
        .add_quota_adjustment(&new(SubjectKind::Key, 7, QuotaChange::Reset))
        .await
        .expect("reset");
    assert_eq!(
        (a.subject_kind, a.subject_id, a.quota.as_str(), a.period),
        (SubjectKind::Key, 7, "daily", today)
    );
    assert_eq!(
        (a.change, a.actor.as_str()),
        (QuotaChange::Reset, "cli:test")
    );
    let b = db
        .add_quota_adjustment(&new(
            SubjectKind::Identity,
            3,
            QuotaChange::Delta(-MAX_USED_DELTA),
        ))
        .await
        .expect("delta");
    assert!(b.id > a.id);
    assert_eq!(b.change, QuotaChange::Delta(-MAX_USED_DELTA));
    let running = db
        .quota_adjustments_running(11 * DAY_US - 1)
        .await
        .expect("running");
    assert_eq!(running, vec![a.clone(), b]);
    // Once the period has ended, nothing is read.
    assert!(db
        .quota_adjustments_running(11 * DAY_US)
        .await
        .expect("ended")
        .is_empty());
    for bad in [0, MAX_USED_DELTA + 1, i64::MIN] {
        let e = db
            .add_quota_adjustment(&new(SubjectKind::Key, 7, QuotaChange::Delta(bad)))
            .await
            .expect_err("refused");
        assert!(matches!(e, DbError::Conflict(_)), "{bad}: {e}");
    }
    let mut empty = new(SubjectKind::Key, 7, QuotaChange::Reset);
    empty.period.end_us = empty.period.start_us;
    assert!(matches!(
        db.add_quota_adjustment(&empty).await,
        Err(DbError::Conflict(_))
    ));
    assert_eq!(db.quota_adjustments_running(0).await.expect("all").len(), 2);
}

both!(
    adjustments,
    adjustments_are_recorded_and_read_while_their_period_runs
);
