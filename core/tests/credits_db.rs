//! `credit_adjustments` on both databases (issue #20 item 2).

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

/// `credit_refills`: one own refill per subject, replaced, cleared, read
/// back; an invalid one is refused and nothing is written.
async fn own_refills_are_set_replaced_and_cleared(db: &Db) {
    use tollgate_core::db::refills::StoredRefill;
    use tollgate_core::refill::RefillSpec;
    let daily = RefillSpec {
        amount: Some(100),
        every: Some("1d".into()),
        ..RefillSpec::default()
    };
    db.set_credit_refill(SubjectKind::Key, 7, &daily)
        .await
        .expect("set");
    let monthly = RefillSpec {
        amount: Some(MAX_DELTA.unsigned_abs()),
        period: Some("month".into()),
        anchor: Some("15".into()),
        time_zone: Some("Europe/Paris".into()),
        ..RefillSpec::default()
    };
    db.set_credit_refill(SubjectKind::Identity, 7, &monthly)
        .await
        .expect("set");
    assert_eq!(
        db.credit_refill(SubjectKind::Key, 7).await.expect("read"),
        Some(StoredRefill {
            subject_kind: SubjectKind::Key,
            subject_id: 7,
            spec: daily.clone()
        })
    );
    // Replaced, not added.
    let hourly = RefillSpec {
        amount: Some(5),
        every: Some("1h".into()),
        ..RefillSpec::default()
    };
    db.set_credit_refill(SubjectKind::Key, 7, &hourly)
        .await
        .expect("replace");
    let all = db.credit_refills().await.expect("all");
    assert_eq!(all.len(), 2);
    // By kind ("identity" < "key"), then id.
    assert_eq!(all[0].spec, monthly);
    assert_eq!(all[1].spec, hourly);
    for bad in [
        RefillSpec {
            amount: Some(0),
            ..hourly.clone()
        },
        RefillSpec {
            every: None,
            ..hourly.clone()
        },
        RefillSpec {
            time_zone: Some("Nowhere/Land".into()),
            ..monthly.clone()
        },
    ] {
        let e = db
            .set_credit_refill(SubjectKind::Key, 8, &bad)
            .await
            .expect_err("refused");
        assert!(matches!(e, DbError::Conflict(_)), "{bad:?}: {e}");
    }
    assert!(db
        .clear_credit_refill(SubjectKind::Key, 7)
        .await
        .expect("clear"));
    assert!(!db
        .clear_credit_refill(SubjectKind::Key, 7)
        .await
        .expect("again"));
    assert_eq!(db.credit_refills().await.expect("all").len(), 1);
}

both!(own_refills, own_refills_are_set_replaced_and_cleared);

/// Spends of local proxies (finding B13) are rows too: read back with
/// their instance, left out of `granted`, and counted in the total that
/// must stay in the 64-bit range (finding B1).
async fn spends_are_rows_outside_granted(db: &Db) {
    use tollgate_core::db::credits::NewSpend;
    db.add_credits(SubjectKind::Key, 3, 10, "x")
        .await
        .expect("add");
    let spend = |delta| NewSpend {
        subject_kind: SubjectKind::Key,
        subject_id: 3,
        delta,
        spent_at: 1234,
    };
    db.record_spends("p-1", &[spend(-4), spend(0), spend(1)])
        .await
        .expect("spends");
    let rows = db.credit_adjustments_since(0).await.expect("rows");
    assert_eq!(rows.len(), 3, "a zero spend is no row: {rows:?}");
    assert_eq!(rows[0].spent_by, None);
    assert_eq!(
        (rows[1].spent_by.as_deref(), rows[1].spent_at, rows[1].delta),
        (Some("p-1"), Some(1234), -4)
    );
    assert_eq!(rows[1].actor, "proxy:p-1");
    assert_eq!(
        db.credits_granted(SubjectKind::Key, 3).await.expect("sum"),
        Some(10)
    );
    // The running total (7) counts the spends: up to i64::MAX, not beyond.
    let mut total: i64 = 7;
    while i64::MAX - total >= MAX_DELTA {
        db.add_credits(SubjectKind::Key, 3, MAX_DELTA, "x")
            .await
            .expect("in range");
        total += MAX_DELTA;
    }
    let room = i64::MAX - total;
    let e = db
        .add_credits(SubjectKind::Key, 3, room + 1, "x")
        .await
        .expect_err("beyond i64::MAX");
    assert!(
        matches!(e, DbError::OutOfRange { field: "delta", .. }),
        "{e}"
    );
    let n = db.credit_adjustments_since(0).await.expect("rows").len();
    db.add_credits(SubjectKind::Key, 3, room, "x")
        .await
        .expect("exactly i64::MAX");
    assert_eq!(
        db.credit_adjustments_since(0).await.expect("rows").len(),
        n + 1
    );
    // The top-ups alone sum to i64::MAX + 3 (3 were spent): summed
    // exactly, shown at the bound.
    assert_eq!(
        db.credits_granted(SubjectKind::Key, 3).await.expect("sum"),
        Some(i64::MAX)
    );
}

both!(spends, spends_are_rows_outside_granted);

/// Rows written around Tollgate that cannot be read (an unknown subject
/// kind, an unknown quota change, a refill of an unknown kind) are left out
/// one by one: every other row is still read and applied (black-box round
/// 4, C3: one bogus credit row made a proxy drop every top-up and spend).
async fn an_unreadable_row_is_left_out_alone(db: &Db) {
    let good = db
        .add_credits(SubjectKind::Key, 7, 20, "test")
        .await
        .expect("top-up");
    for sql in [
        "INSERT INTO credit_adjustments (subject_kind, subject_id, delta, created_at, actor) \
         VALUES ('bogus', 1, 5, 0, 'x')",
        "INSERT INTO quota_adjustments (subject_kind, subject_id, quota, period_start, \
         period_end, kind, used_delta, created_at, actor) VALUES ('key', 7, 'daily', 0, \
         9223372036854775807, 'explode', 0, 0, 'x')",
        "INSERT INTO quota_adjustments (subject_kind, subject_id, quota, period_start, \
         period_end, kind, used_delta, created_at, actor) VALUES ('key', 7, 'daily', 0, \
         9223372036854775807, 'reset', 0, 0, 'x')",
    ] {
        sqlx::query(sql)
            .execute(db.pool())
            .await
            .expect("hostile row");
    }
    assert_eq!(
        db.credit_adjustments_since(0).await.expect("read"),
        vec![good]
    );
    let running = db.quota_adjustments_running(0).await.expect("read");
    assert_eq!(running.len(), 1, "{running:?}");
}

both!(unreadable, an_unreadable_row_is_left_out_alone);

/// A delta that is no integer (SQLite keeps what it is given: text, a
/// float) is left out of the admin's totals as the proxies leave it out,
/// instead of failing every total of that holder (black-box round 5, N3).
/// PostgreSQL's BIGINT column refuses such a row, so there only the
/// readable rows are summed.
async fn a_total_leaves_an_unreadable_delta_out(db: &Db) {
    db.add_credits(SubjectKind::Key, 9, 20, "test")
        .await
        .expect("top-up");
    if db.kind() == tollgate_core::db::DbKind::Sqlite {
        for delta in ["'abc'", "2.5", "X'00'"] {
            sqlx::query(&format!(
                "INSERT INTO credit_adjustments (subject_kind, subject_id, delta, created_at, actor) \
                 VALUES ('key', 9, {delta}, 0, 'x')"
            ))
            .execute(db.pool())
            .await
            .expect("hostile row");
        }
    }
    let total = |db: &Db| {
        let db = db.clone();
        async move {
            (
                db.credits_granted(SubjectKind::Key, 9)
                    .await
                    .expect("granted"),
                db.credits_balance_written(SubjectKind::Key, 9)
                    .await
                    .expect("balance"),
            )
        }
    };
    assert_eq!(total(db).await, (Some(20), Some(20)));
    db.add_credits(SubjectKind::Key, 9, -5, "test")
        .await
        .expect("an adjustment is still checked and stored");
    assert_eq!(total(db).await, (Some(15), Some(15)));
    let read: Vec<i64> = db
        .credit_adjustments_since(0)
        .await
        .expect("read")
        .iter()
        .map(|a| a.delta)
        .collect();
    assert_eq!(read, vec![20, -5], "the proxies read the same rows");
}

both!(unreadable_delta, a_total_leaves_an_unreadable_delta_out);

/// The background read: rows above an id, and rows created since a time,
/// each once and by id (black-box round 5, N2: a row stamped by a clock
/// that is behind is found by its id).
async fn rows_are_read_after_an_id_or_since_a_time(db: &Db) {
    let a = db
        .add_credits(SubjectKind::Key, 7, 20, "test")
        .await
        .expect("a");
    let b = db
        .add_credits(SubjectKind::Key, 7, 5, "test")
        .await
        .expect("b");
    // A spend stamped an hour before the others.
    let behind = a.created_at - 3_600_000;
    sqlx::query(
        "INSERT INTO credit_adjustments (subject_kind, subject_id, delta, created_at, actor, \
         spent_by, spent_at) VALUES ('key', 7, -3, $1, 'proxy:behind', 'behind', $1)",
    )
    .bind(behind)
    .execute(db.pool())
    .await
    .expect("row");
    let ids = |rows: Vec<tollgate_core::db::credits::CreditAdjustment>| {
        rows.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let all = ids(db
        .credit_adjustments_after(0, i64::MAX)
        .await
        .expect("read"));
    assert_eq!(all.len(), 3);
    let c = all[2];
    // Above b's id: the late-stamped row only, though no time matches it.
    assert_eq!(
        ids(db
            .credit_adjustments_after(b.id, i64::MAX)
            .await
            .expect("read")),
        vec![c]
    );
    // Nothing above c, but b again by its time (and a, in the same ms).
    let by_time: Vec<i64> = [&a, &b]
        .iter()
        .filter(|r| r.created_at >= b.created_at)
        .map(|r| r.id)
        .collect();
    assert_eq!(
        ids(db
            .credit_adjustments_after(c, b.created_at)
            .await
            .expect("read")),
        by_time
    );
    // A row matched both ways comes once.
    assert_eq!(
        ids(db
            .credit_adjustments_after(a.id, a.created_at)
            .await
            .expect("read")),
        vec![a.id, b.id, c]
    );
}

both!(after_id_or_time, rows_are_read_after_an_id_or_since_a_time);

/// Write one spend row of `kind` `id` directly, `created_at` and `spent_at`
/// at `at` (Unix ms): as a proxy would have long ago.
async fn old_spend(db: &Db, kind: SubjectKind, id: i64, delta: i64, at: i64) {
    sqlx::query(
        "INSERT INTO credit_adjustments \
         (subject_kind, subject_id, delta, created_at, actor, spent_by, spent_at) \
         VALUES ($1, $2, $3, $4, 'proxy:p', 'p', $4)",
    )
    .bind(kind.as_str())
    .bind(id)
    .bind(delta)
    .bind(at)
    .execute(db.pool())
    .await
    .expect("spend row");
}

/// Black-box round 4, C5: old spend rows fold into one row per balance (two
/// across a refill's period start) with the same sums; top-ups, recent rows
/// and single rows stay; a second pass changes nothing; paging by id
/// reaches every row.
async fn old_spend_rows_fold_with_their_sums(db: &Db) {
    use tollgate_core::credits::fold::{FOLDED_BY, FOLD_ACTOR};
    let (key, identity) = (SubjectKind::Key, SubjectKind::Identity);
    let top_up = db
        .add_credits(key, 7, 1_000, "admin")
        .await
        .expect("top-up");
    db.add_credits(identity, 3, 500, "admin")
        .await
        .expect("top-up");
    let hour_ago = tollgate_core::now_ms() - 3_600_000;
    for i in 0..25 {
        old_spend(db, key, 7, -2, hour_ago + i).await;
    }
    for i in 0..5 {
        old_spend(db, identity, 3, -1, hour_ago + 100 + i).await;
    }
    // Key 9: one old row (stays as it is).
    old_spend(db, key, 9, -4, hour_ago).await;
    // Recent rows are never folded.
    db.record_spends(
        "live",
        &[tollgate_core::db::credits::NewSpend {
            subject_kind: key,
            subject_id: 7,
            delta: -3,
            spent_at: tollgate_core::now_ms(),
        }],
    )
    .await
    .expect("recent spend");
    let sums = || async {
        (
            db.credits_balance_written(key, 7).await.expect("sum"),
            db.credits_balance_written(identity, 3).await.expect("sum"),
            db.credits_balance_written(key, 9).await.expect("sum"),
            db.credits_granted(key, 7).await.expect("granted"),
        )
    };
    let before = sums().await;
    assert_eq!(
        before,
        (Some(1_000 - 50 - 3), Some(495), Some(-4), Some(1_000))
    );
    // Identity 3's refill period started 2 rows in: its rows fold apart.
    let period_start = |kind: SubjectKind, id: i64| {
        (kind == identity && id == 3).then_some((hour_ago + 102) * 1000)
    };
    let older_than = tollgate_core::now_ms() - 60_000;
    let (mut after, mut passes, mut folded) = (0, 0, 0);
    loop {
        let pass = db
            .fold_credit_spends(older_than, after, 7, period_start)
            .await
            .expect("fold");
        assert!(!pass.busy);
        passes += 1;
        folded += pass.folded;
        match pass.last_id {
            Some(id) => after = id,
            None => break,
        }
    }
    assert_eq!(passes, 6, "31 old rows paged in batches of 7");
    assert_eq!(sums().await, before, "the sums are the same");
    let rows = db.credit_adjustments_since(0).await.expect("rows");
    assert!(rows.contains(&top_up), "top-ups stay");
    let spends: Vec<_> = rows.iter().filter(|r| r.spent_by.is_some()).collect();
    // Key 7's 25 rows: one fold per batch (7, 7, 7, 4). Identity 3's 5
    // rows (batches 4 and 5): the two before its refill's start fold
    // together, the three after it in batch 5 (two) and alone (one). Key
    // 9's single row and the recent one stay: 9 rows.
    assert_eq!(spends.len(), 9, "{spends:?}");
    assert_eq!(folded, 25 + 2 + 2);
    let folds: Vec<_> = spends
        .iter()
        .filter(|r| r.spent_by.as_deref() == Some(FOLDED_BY))
        .collect();
    assert_eq!(folds.len(), 6);
    assert!(folds.iter().all(|f| f.actor == FOLD_ACTOR));
    let of_identity: Vec<_> = folds
        .iter()
        .filter(|f| f.subject_kind == identity)
        .map(|f| (f.delta, f.spent_at))
        .collect();
    // Each side of the refill's start keeps its own rows, dated on its side.
    assert_eq!(
        of_identity,
        vec![(-2, Some(hour_ago + 101)), (-2, Some(hour_ago + 103))]
    );
    assert!(spends
        .iter()
        .any(|r| r.subject_id == 9 && r.spent_by.as_deref() == Some("p")));
    assert!(spends.iter().any(|r| r.spent_by.as_deref() == Some("live")));

    // Again from the start: the folds fold together (key 7's four into
    // one), and a third pass has nothing left to do.
    for round in 0..2 {
        let pass = db
            .fold_credit_spends(tollgate_core::now_ms() + 1, 0, 1_000, |_, _| None)
            .await
            .expect("fold");
        let n = db
            .credit_adjustments_since(0)
            .await
            .expect("rows")
            .iter()
            .filter(|r| r.spent_by.is_some())
            .count();
        if round == 1 {
            assert_eq!(pass.folded, 0, "nothing left: {pass:?}");
        }
        assert_eq!(n, 3, "one row per balance");
    }
    assert_eq!(sums().await, before);
}

both!(folds, old_spend_rows_fold_with_their_sums);

/// Two processes folding at once never fold a row twice: the sums hold.
async fn concurrent_folds_keep_the_sums(db: &Db) {
    let key = SubjectKind::Key;
    db.add_credits(key, 7, 1_000, "admin")
        .await
        .expect("top-up");
    let hour_ago = tollgate_core::now_ms() - 3_600_000;
    for i in 0..200 {
        old_spend(db, key, 7 + i % 3, -1, hour_ago + i).await;
    }
    let before: Vec<_> = [7, 8, 9]
        .into_iter()
        .map(|id| async move { db.credits_balance_written(key, id).await.expect("sum") })
        .collect();
    let before = futures_util::future::join_all(before).await;
    let fold = || db.fold_credit_spends(tollgate_core::now_ms(), 0, 1_000, |_, _| None);
    let (a, b) = tokio::join!(fold(), fold());
    // Each either folded, found the other folding, or failed on SQLite's
    // single writer; never both folded the same rows.
    let folded = [a, b]
        .into_iter()
        .filter_map(Result::ok)
        .map(|p| p.folded)
        .sum::<usize>();
    assert!(folded <= 200, "{folded}");
    let after: Vec<_> = [7, 8, 9]
        .into_iter()
        .map(|id| async move { db.credits_balance_written(key, id).await.expect("sum") })
        .collect();
    assert_eq!(futures_util::future::join_all(after).await, before);
}

both!(concurrent_folds, concurrent_folds_keep_the_sums);
