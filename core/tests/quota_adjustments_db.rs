//! `quota_adjustments` on both databases (issue #20, reset / adjust a quota).

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

/// `quota_counts`: the local limiter's counts, written whole (the last
/// writer wins), read while their period runs, dropped once it ended.
async fn quota_counts_are_replaced_and_read_while_their_period_runs(db: &Db) {
    use tollgate_core::db::quota_counts::QuotaCount;
    let day = |n: i64| PeriodBounds {
        start_us: n * DAY_US,
        end_us: (n + 1) * DAY_US,
    };
    let count = |holder: &str, owner_key, bucket: &str, period, used, through| QuotaCount {
        holder: holder.into(),
        owner_key,
        bucket: bucket.into(),
        period,
        used,
        adjusted_through: through,
    };
    let mut rows = vec![
        count("k7", 0, "p:daily", day(10), 3, 0),
        count("i3", 9, "p:daily", day(10), 1, 4),
        count("k9", 0, "r:open:daily", day(10), 2, 0),
        count("k7", 0, "p:daily", day(9), 5, 0),
    ];
    db.save_quota_counts("a@127.0.0.1:1", &rows, 10 * DAY_US)
        .await
        .expect("written");
    // Another proxy's count of the same key: its own row.
    db.save_quota_counts("b@127.0.0.1:2", &rows[..1], 10 * DAY_US)
        .await
        .expect("written");
    let sorted = |mut v: Vec<QuotaCount>| {
        v.sort_by(|a, b| (&a.holder, a.owner_key).cmp(&(&b.holder, b.owner_key)));
        v
    };
    // Day 9 ended when it was written: dropped.
    let read = db
        .quota_counts_running("a@127.0.0.1:1", 10 * DAY_US)
        .await
        .expect("read");
    assert_eq!(sorted(read), sorted(rows[..3].to_vec()));
    // Written again: replaced, not added.
    rows[0].used = 4;
    rows[0].adjusted_through = 12;
    rows[0].period.end_us += 1;
    db.save_quota_counts("a@127.0.0.1:1", &rows[..1], 10 * DAY_US)
        .await
        .expect("replaced");
    let read = db
        .quota_counts_running("a@127.0.0.1:1", 10 * DAY_US)
        .await
        .expect("read");
    assert_eq!(read.len(), 3);
    assert_eq!(read.iter().find(|c| c.holder == "k7"), Some(&rows[0]));
    // The other proxy's row is untouched; the admin view sums them.
    let other = db
        .quota_counts_running("b@127.0.0.1:2", 10 * DAY_US)
        .await
        .expect("read");
    assert_eq!(other[0].used, 3);
    let k7 = tollgate_core::db::quota_counts::CountHolder::Key(7);
    assert_eq!(
        db.quota_count(k7, 0, "p:daily", 10 * DAY_US)
            .await
            .expect("sum"),
        Some(4 + 3)
    );
    assert_eq!(
        db.quota_count(k7, 0, "p:other", 10 * DAY_US)
            .await
            .expect("none"),
        None
    );
    // An unreadable row (a negative count, written around Tollgate) is
    // left out alone: the others are still read.
    sqlx::query(
        "INSERT INTO quota_counts (instance, holder, owner_key, bucket, period_start, \
         period_end, used, adjusted_through, updated_at) VALUES ('a@127.0.0.1:1', 'k66', 0, \
         'p:daily', $1, $2, -5, 0, 0)",
    )
    .bind(10 * DAY_US)
    .bind(11 * DAY_US)
    .execute(db.pool())
    .await
    .expect("hostile row");
    let read = db
        .quota_counts_running("a@127.0.0.1:1", 10 * DAY_US)
        .await
        .expect("read");
    assert_eq!(read.len(), 3);
    // More rows than one statement holds: all written, in one transaction.
    let many: Vec<QuotaCount> = (0..1_100)
        .map(|k| count(&format!("k{}", 1_000 + k), 0, "p:daily", day(10), k, 0))
        .collect();
    db.save_quota_counts("a@127.0.0.1:1", &many, 10 * DAY_US)
        .await
        .expect("many");
    let read = db
        .quota_counts_running("a@127.0.0.1:1", 10 * DAY_US)
        .await
        .expect("read");
    assert_eq!(read.len(), 3 + 1_100);
    // u64 used beyond i64 is stored as the largest i64; nothing breaks.
    db.save_quota_counts(
        "a@127.0.0.1:1",
        &[count("k8", 0, "p:daily", day(10), u64::MAX, 0)],
        0,
    )
    .await
    .expect("huge");
    // The next day: everything of day 10 is over.
    db.save_quota_counts("a@127.0.0.1:1", &[], 11 * DAY_US + 1)
        .await
        .expect("purge");
    for instance in ["a@127.0.0.1:1", "b@127.0.0.1:2"] {
        let read = db.quota_counts_running(instance, 0).await.expect("read");
        assert!(read.iter().all(|c| c.period.end_us > 11 * DAY_US + 1));
    }
}

both!(
    counts,
    quota_counts_are_replaced_and_read_while_their_period_runs
);
