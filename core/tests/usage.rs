//! Usage read back for several keys at once, against both databases: the
//! one statement of `usage_totals_of_keys` gives each key what
//! `usage_totals` gives it alone.

use tollgate_core::db::usage::{
    Counts, UsageFilter, UsageRow, HOUR_MS, KEYS_PER_STATEMENT, MINUTE_MS,
};
use tollgate_core::db::Db;

both!(batch_totals_equal_per_key_totals, batch_totals_body);
both!(batch_totals_of_no_or_unknown_keys, batch_edges_body);

/// 10:00 UTC on some day, an hour boundary.
const T0: i64 = 1_700_002_800_000;

fn counts(allowed: i64, limited: i64, latency_bucket: usize) -> Counts {
    let mut c = Counts {
        allowed,
        limited,
        upstream_errors: allowed % 3,
        latency_sum_us: 1_000 * (allowed + limited),
        ..Counts::default()
    };
    c.latency_buckets[latency_bucket] = allowed + limited;
    c
}

/// Keys 0 (no key) to 4 on two routes, over three hours with ragged ends, so
/// that reads take both the hourly rollup and minutes.
async fn seed(db: &Db) {
    let mut rows = Vec::new();
    for key_id in 0..5i64 {
        for m in (0..200).step_by(7) {
            let i = key_id + m;
            rows.push(UsageRow {
                minute: T0 + m * MINUTE_MS,
                key_id,
                route: if i % 2 == 0 { "users" } else { "orders" }.into(),
                counts: counts(1 + i % 5, i % 4, (i % 12) as usize),
            });
        }
    }
    db.upsert_usage(&rows).await.expect("upsert usage");
}

async fn per_key(db: &Db, filter: &UsageFilter, key_id: i64) -> Counts {
    let one = UsageFilter {
        key_id: Some(key_id),
        ..filter.clone()
    };
    db.usage_totals(&one).await.expect("usage totals").counts
}

async fn batch_totals_body(db: &Db) {
    seed(db).await;
    let ranges = [
        (T0, T0 + 200 * MINUTE_MS),
        (
            T0 + 5 * MINUTE_MS + 30_000,
            T0 + 2 * HOUR_MS + 7 * MINUTE_MS,
        ),
        (T0 + HOUR_MS, T0 + 2 * HOUR_MS),
        (T0 + 3 * MINUTE_MS, T0 + 4 * MINUTE_MS),
    ];
    for (from, to) in ranges {
        for route in [None, Some("users".to_string())] {
            let filter = UsageFilter {
                from,
                to,
                key_id: None,
                route,
            };
            // Unknown (99) and repeated ids, not in order.
            let ids = [3, 0, 1, 99, 4, 2, 3];
            let batch = db
                .usage_totals_of_keys(&filter, &ids)
                .await
                .expect("batch totals");
            for id in ids {
                let want = per_key(db, &filter, id).await;
                let got = batch.get(&id).copied().unwrap_or_default();
                assert_eq!(got, want, "key {id} in {filter:?}");
            }
            // Only keys with rows, only the keys asked for.
            assert!(
                batch.keys().all(|k| ids.contains(k) && *k != 99),
                "{batch:?}"
            );
            assert!(batch.values().all(|c| c.total() > 0), "{batch:?}");
            // A key alone gives the same as in the batch.
            let alone = db
                .usage_totals_of_keys(&filter, &[2])
                .await
                .expect("one key");
            assert_eq!(alone.get(&2), batch.get(&2));
        }
    }
    // Something was read: not every comparison was of zeros.
    let all = UsageFilter {
        from: T0,
        to: T0 + 200 * MINUTE_MS,
        ..UsageFilter::default()
    };
    let batch = db
        .usage_totals_of_keys(&all, &[1, 2])
        .await
        .expect("batch totals");
    assert_eq!(batch.len(), 2);
    assert!(batch
        .values()
        .all(|c| c.allowed > 10 && c.latency_buckets.iter().sum::<i64>() > 10));
}

async fn batch_edges_body(db: &Db) {
    seed(db).await;
    let all = UsageFilter {
        from: T0,
        to: T0 + 200 * MINUTE_MS,
        ..UsageFilter::default()
    };
    // No keys asked: no rows (not every key's).
    let none = db.usage_totals_of_keys(&all, &[]).await.expect("no keys");
    assert!(none.is_empty(), "{none:?}");
    // Only unknown, negative and extreme ids: no rows, no error.
    let unknown = db
        .usage_totals_of_keys(&all, &[99, -1, i64::MAX, i64::MIN])
        .await
        .expect("unknown keys");
    assert!(unknown.is_empty(), "{unknown:?}");
    // An empty or reversed range: no rows.
    for (from, to) in [(T0, T0), (T0 + MINUTE_MS, T0)] {
        let empty = UsageFilter {
            from,
            to,
            ..UsageFilter::default()
        };
        let got = db
            .usage_totals_of_keys(&empty, &[1, 2])
            .await
            .expect("empty range");
        assert!(got.is_empty(), "{got:?}");
    }
    // More keys than one statement holds: the same as per key.
    let many: Vec<i64> = (0..KEYS_PER_STATEMENT as i64 + 5).rev().collect();
    let got = db
        .usage_totals_of_keys(&all, &many)
        .await
        .expect("many keys");
    assert_eq!(got.len(), 5, "{got:?}");
    for id in 0..5 {
        assert_eq!(
            got.get(&id).copied(),
            Some(per_key(db, &all, id).await),
            "key {id}"
        );
    }
}
