use super::*;

#[test]
fn ranges_read_whole_hours_from_the_rollup() {
    let h = HOUR_MS;
    let m = MINUTE_MS;
    // Within one hour: minutes only.
    assert_eq!(
        split(10 * h + 5 * m, 10 * h + 50 * m, true),
        Split {
            hours: None,
            minutes: vec![(10 * h + 5 * m, 10 * h + 50 * m)]
        }
    );
    // Ragged ends: minutes, whole hours between.
    assert_eq!(
        split(10 * h + 5 * m + 30_000, 13 * h + 7 * m + 1, true),
        Split {
            hours: Some((11 * h, 13 * h)),
            minutes: vec![(10 * h + 5 * m, 11 * h), (13 * h, 13 * h + 7 * m + 1)]
        }
    );
    // Aligned: hours only.
    assert_eq!(
        split(10 * h, 12 * h, true),
        Split {
            hours: Some((10 * h, 12 * h)),
            minutes: vec![]
        }
    );
    // An hour-aligned range of less than an hour, or minutes asked for.
    assert_eq!(split(10 * h, 10 * h + m, true).hours, None);
    assert_eq!(split(10 * h, 12 * h, false).minutes, vec![(10 * h, 12 * h)]);
    assert_eq!(split(m, m, true).minutes, vec![]);
    assert!(split(m + 5, m, true).minutes.is_empty());
}

#[test]
fn minutes_round_down() {
    assert_eq!(minute_of(0), 0);
    assert_eq!(minute_of(59_999), 0);
    assert_eq!(minute_of(60_000), 60_000);
    assert_eq!(minute_of(-1), -60_000);
}

#[test]
fn duplicate_rows_are_merged_and_sorted() {
    let row = |minute, key_id, route: &str, allowed| UsageRow {
        minute,
        key_id,
        route: route.into(),
        counts: Counts {
            allowed,
            ..Counts::default()
        },
    };
    let rows = [
        row(60_000, 2, "b", 1),
        row(0, 1, "a", 2),
        row(60_000, 2, "b", 3),
        row(HOUR_MS + 60_000, 2, "b", 5),
    ];
    let allowed = |n| Counts {
        allowed: n,
        ..Counts::default()
    };
    assert_eq!(
        merged(&rows, |m| m),
        vec![
            (0, 1, "a", allowed(2)),
            (60_000, 2, "b", allowed(4)),
            (HOUR_MS + 60_000, 2, "b", allowed(5)),
        ]
    );
    assert_eq!(
        merged(&rows, hour_of),
        vec![
            (0, 1, "a", allowed(2)),
            (0, 2, "b", allowed(4)),
            (HOUR_MS, 2, "b", allowed(5)),
        ]
    );
    // The hourly rows of merged minutes are the rows merged per hour.
    assert_eq!(hourly(&merged(&rows, |m| m)), merged(&rows, hour_of));
}

/// Every analytics query is answered from an index on SQLite (the
/// PostgreSQL plans are shown in benches/RESULTS.md).
#[tokio::test]
async fn analytics_queries_use_indexes() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let db = crate::db::testing::fresh_sqlite(dir.path()).await;
    let plan = |sql: String| {
        let db = db.clone();
        async move {
            let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(db.pool())
                .await
                .unwrap_or_else(|e| panic!("explain {sql}: {e}"));
            rows.iter()
                .map(|r| r.try_get::<String, _>("detail").unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" | ")
        }
    };
    let sums = sum_select(true);
    let cases = [
        (
            format!("SELECT {sums} FROM usage_minute WHERE minute >= 1 AND minute < 2"),
            "INDEX sqlite_autoindex_usage_minute_1",
        ),
        (
            format!("SELECT {sums} FROM usage_minute WHERE minute >= 1 AND minute < 2 AND key_id = 3"),
            "INDEX usage_minute_key",
        ),
        (
            format!("SELECT {sums} FROM usage_minute WHERE minute >= 1 AND minute < 2 AND route = 'x'"),
            "INDEX usage_minute_route",
        ),
        (
            format!("SELECT {sums} FROM usage_hour WHERE hour >= 1 AND hour < 2"),
            "SEARCH usage_hour USING PRIMARY KEY",
        ),
        (
            format!("SELECT {sums} FROM usage_hour WHERE hour >= 1 AND hour < 2 AND key_id = 3"),
            "INDEX usage_hour_key",
        ),
        (
            format!("SELECT {sums} FROM usage_hour WHERE hour >= 1 AND hour < 2 AND route = 'x'"),
            "INDEX usage_hour_route",
        ),
        (
            "SELECT id FROM violations WHERE at >= 1 AND at < 2 ORDER BY at DESC, id DESC LIMIT 5"
                .to_string(),
            "INDEX violations_at",
        ),
        (
            "SELECT id FROM violations WHERE at >= 1 AND at < 2 AND key_id = 4 ORDER BY at DESC, id DESC LIMIT 5"
                .to_string(),
            "INDEX violations_key_at",
        ),
        (
            "SELECT id FROM violations WHERE at >= 1 AND at < 2 AND route = 'x' ORDER BY at DESC, id DESC LIMIT 5"
                .to_string(),
            "INDEX violations_route_at",
        ),
    ];
    for (sql, want) in cases {
        let got = plan(sql.clone()).await;
        assert!(got.contains(want), "{sql}\nplan: {got}\nwant: {want}");
    }
    db.close().await;
}
