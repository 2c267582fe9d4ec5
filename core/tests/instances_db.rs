//! `instances` liveness on both databases (black-box round 17, finding 1):
//! each row is judged by its own heartbeat period, not by the period of the
//! proxy counting.

use std::time::Duration;

use tollgate_core::db::instances::{Heartbeat, LIVE_BEATS};
use tollgate_core::db::Db;

fn beat(id: &str, every: Duration) -> Heartbeat {
    Heartbeat {
        id: id.into(),
        address: "127.0.0.1:1".into(),
        version: "test".into(),
        started_at: 0,
        stats: serde_json::json!({}),
        upstream_health: Vec::new(),
        counter: None,
        beat_every: every,
    }
}

async fn each_instance_is_live_for_three_of_its_own_periods(db: &Db) {
    let now = 10_000_000;
    let secs = Duration::from_secs;
    // (id, its period, ms since its last beat, live?)
    let rows = [
        ("fast-live", secs(1), 2_500, true),
        ("fast-dead", secs(1), 3_500, false),
        // A 20 s proxy between its beats: live, though more than three
        // periods of a 1 s proxy counting have passed (it was counted dead).
        ("slow-live", secs(20), 15_000, true),
        ("slow-late", secs(20), 59_000, true),
        ("slow-dead", secs(20), 61_000, false),
    ];
    for (id, every, ago, _) in rows {
        db.upsert_instance_at(&beat(id, every), now - ago)
            .await
            .expect("heartbeat");
    }
    let live = rows.iter().filter(|r| r.3).count() as u64;
    assert_eq!(db.count_live_instances(now).await.expect("count"), live);
    assert_eq!(LIVE_BEATS, 3);

    // A beat with another period replaces the row's (a reload).
    db.upsert_instance_at(&beat("slow-live", secs(1)), now - 15_000)
        .await
        .expect("heartbeat");
    assert_eq!(db.count_live_instances(now).await.expect("count"), live - 1);

    // A row of an older proxy (no period written) is judged by the default
    // flush interval, 5 s.
    sqlx::query(
        "INSERT INTO instances (id, address, version, started_at, last_seen) \
         VALUES ('old-live', 'a', 'v', 0, $1), ('old-dead', 'a', 'v', 0, $2)",
    )
    .bind(now - 14_000)
    .bind(now - 16_000)
    .execute(db.pool())
    .await
    .expect("old rows");
    assert_eq!(db.count_live_instances(now).await.expect("count"), live);
}
both!(liveness, each_instance_is_live_for_three_of_its_own_periods);
