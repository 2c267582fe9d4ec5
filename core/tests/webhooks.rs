//! The webhook outbox on both databases, as several admin processes use it:
//! two connection pools (two processes) claiming at once never take the
//! same delivery, a claimed delivery is not claimed again until its attempt
//! is recorded or its lease runs out, and the attempt log and retries are
//! kept per delivery.

use std::collections::BTreeSet;

use tollgate_core::db::Db;
use tollgate_core::webhooks::endpoints::NewWebhook;
use tollgate_core::webhooks::enqueue_event;
use tollgate_core::webhooks::outbox::{Attempt, Recorded};

both!(two_processes_never_claim_the_same_delivery, claims_body);
both!(attempts_release_or_finish_a_delivery, attempts_body);
both!(
    one_endpoint_has_at_most_four_deliveries_under_way,
    per_endpoint_body
);
both!(
    a_free_slot_goes_to_the_least_busy_endpoint,
    least_busy_first_body
);

async fn endpoint(db: &Db, events: &[&str]) -> i64 {
    db.create_webhook(&NewWebhook {
        url: "http://127.0.0.1:9/hook".into(),
        description: None,
        events: events.iter().map(|e| e.to_string()).collect(),
        enabled: true,
    })
    .await
    .expect("endpoint")
    .id
}

/// `n` distinct `quota.warning` events.
async fn warnings(db: &Db, n: usize) {
    for i in 0..n {
        let id = enqueue_event(
            db,
            "quota.warning",
            &format!("key:{i}"),
            "2026-12",
            serde_json::json!({ "i": i }),
        )
        .await
        .expect("enqueue");
        assert!(id.is_some());
    }
}

async fn claims_body(db: &Db) {
    // Ten endpoints × four events: forty deliveries, four per endpoint
    // (PER_ENDPOINT), so every one of them may be under way at once.
    assert_eq!(tollgate_core::webhooks::outbox::PER_ENDPOINT, 4);
    for _ in 0..10 {
        endpoint(db, &["*"]).await;
    }
    // Not delivered to a disabled endpoint, nor to one whose filter leaves
    // the event out.
    let off = endpoint(db, &["*"]).await;
    db.update_webhook(
        off,
        &tollgate_core::webhooks::endpoints::WebhookPatch {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .await
    .expect("disable");
    endpoint(db, &["key.deleted"]).await;
    warnings(db, 4).await;
    let other = Db::connect(db.url()).await.expect("a second pool");
    let claim = |db: Db| async move {
        let mut mine = Vec::new();
        loop {
            let batch = db.claim_webhook_deliveries(3, 60_000).await.expect("claim");
            if batch.is_empty() {
                return mine;
            }
            mine.extend(batch.into_iter().map(|c| c.delivery_id));
        }
    };
    let (a, b, c, d) = tokio::join!(
        tokio::spawn(claim(db.clone())),
        tokio::spawn(claim(other.clone())),
        tokio::spawn(claim(db.clone())),
        tokio::spawn(claim(other.clone())),
    );
    let all: Vec<i64> = [a, b, c, d]
        .into_iter()
        .flat_map(|r| r.expect("task"))
        .collect();
    let unique: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "one delivery per event, each claimed once");
    assert_eq!(unique.len(), 40);
    // Leased: nothing is due again.
    assert!(db
        .claim_webhook_deliveries(100, 60_000)
        .await
        .expect("claim")
        .is_empty());
    other.close().await;
}

/// A busy endpoint (`quota.warning`) with 20 deliveries due, then a quiet
/// one (`key.disabled`) with one, due last.
async fn busy_and_quiet(db: &Db) {
    endpoint(db, &["quota.warning"]).await;
    warnings(db, 20).await;
    endpoint(db, &["key.disabled"]).await;
    enqueue_event(db, "key.disabled", "7", "1", serde_json::json!({}))
        .await
        .expect("enqueue");
}

/// One endpoint with many deliveries due gets at most PER_ENDPOINT of them
/// under way; another endpoint's are claimed beside them (an endpoint that
/// never answers cannot take every slot).
async fn per_endpoint_body(db: &Db) {
    use tollgate_core::webhooks::outbox::PER_ENDPOINT;
    busy_and_quiet(db).await;
    let first = db
        .claim_webhook_deliveries(16, 60_000)
        .await
        .expect("claim");
    let of = |event: &str| first.iter().filter(|c| c.event_type == event).count();
    assert_eq!(of("quota.warning") as i64, PER_ENDPOINT, "{first:?}");
    assert_eq!(of("key.disabled"), 1, "{first:?}");
    // The busy endpoint's slots stay taken while its deliveries are under way.
    assert!(db
        .claim_webhook_deliveries(16, 60_000)
        .await
        .expect("claim")
        .is_empty());
}

/// A free slot goes to the least busy endpoint first: an endpoint's older
/// backlog does not keep another endpoint's newer delivery waiting.
async fn least_busy_first_body(db: &Db) {
    busy_and_quiet(db).await;
    let two = db.claim_webhook_deliveries(2, 60_000).await.expect("claim");
    let mut events: Vec<&str> = two.iter().map(|c| c.event_type.as_str()).collect();
    events.sort_unstable();
    assert_eq!(events, ["key.disabled", "quota.warning"], "{two:?}");
}

async fn attempts_body(db: &Db) {
    let hook = endpoint(db, &["key.disabled"]).await;
    enqueue_event(db, "key.disabled", "7", "1", serde_json::json!({}))
        .await
        .expect("enqueue");
    // A lease of 0 ms runs out at once: the delivery is claimable again.
    let first = db.claim_webhook_deliveries(10, 0).await.expect("claim");
    assert_eq!(first.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let again = db
        .claim_webhook_deliveries(10, 60_000)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1, "an expired lease is claimed again");
    let c = &again[0];
    assert_eq!((c.attempts, c.event_type.as_str()), (0, "key.disabled"));
    assert!(c.secret.starts_with("whsec_") && c.msg_id.starts_with("msg_"));
    let failed = Attempt {
        status_code: Some(503),
        error: Some("answered 503".into()),
        duration_ms: 12,
        succeeded: false,
    };
    // Retry due at once: claimable again, one attempt recorded.
    let r = db.record_webhook_attempt(c.delivery_id, &failed, Some(0));
    assert_eq!(r.await.expect("record"), Recorded::Logged);
    let retry = db
        .claim_webhook_deliveries(10, 60_000)
        .await
        .expect("claim");
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].attempts, 1);
    let ok = Attempt {
        status_code: Some(204),
        error: None,
        duration_ms: 3,
        succeeded: true,
    };
    let r = db.record_webhook_attempt(c.delivery_id, &ok, None);
    assert_eq!(r.await.expect("record"), Recorded::Logged);
    assert!(db
        .claim_webhook_deliveries(10, 60_000)
        .await
        .expect("claim")
        .is_empty());
    let (log, total) = db.list_webhook_deliveries(hook, 10, 0).await.expect("log");
    assert_eq!(total, 1);
    assert_eq!(log[0].status, "succeeded");
    assert_eq!(log[0].attempts, 2);
    assert_eq!(log[0].next_attempt_at, None);
    assert_eq!(
        log[0]
            .log
            .iter()
            .map(|a| (a.status_code, a.succeeded))
            .collect::<Vec<_>>(),
        [(Some(204), true), (Some(503), false)]
    );
    // Given up: a failed attempt without a retry finishes the delivery.
    enqueue_event(db, "key.disabled", "8", "1", serde_json::json!({}))
        .await
        .expect("enqueue");
    let c = db
        .claim_webhook_deliveries(10, 60_000)
        .await
        .expect("claim");
    let r = db.record_webhook_attempt(c[0].delivery_id, &failed, None);
    assert_eq!(r.await.expect("record"), Recorded::Logged);
    let (log, _) = db.list_webhook_deliveries(hook, 10, 0).await.expect("log");
    assert_eq!(log[0].status, "failed");
    // Old finished events are purged with their deliveries; none pending.
    assert_eq!(
        db.purge_webhook_events(tollgate_core::now_ms() + 1)
            .await
            .expect("purge"),
        2
    );
    assert_eq!(
        db.list_webhook_deliveries(hook, 10, 0)
            .await
            .expect("log")
            .1,
        0
    );
    // Deleting an endpoint takes its deliveries with it, also one under
    // way: its attempt then records nothing (no foreign-key error, no orphan
    // attempt) and leaves nothing to retry (round 7).
    enqueue_event(db, "key.disabled", "9", "1", serde_json::json!({}))
        .await
        .expect("enqueue");
    let c = db.claim_webhook_deliveries(10, 0).await.expect("claim");
    assert_eq!(c.len(), 1);
    assert!(db.delete_webhook(hook).await.expect("delete"));
    let r = db.record_webhook_attempt(c[0].delivery_id, &failed, Some(0));
    assert_eq!(r.await.expect("record"), Recorded::Gone);
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM webhook_deliveries) + (SELECT COUNT(*) FROM webhook_attempts)",
    )
    .fetch_one(db.pool())
    .await
    .expect("count");
    assert_eq!(rows, 0);
    // The 0 ms lease has run out: a delivery left behind would be claimed.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(db
        .claim_webhook_deliveries(10, 60_000)
        .await
        .expect("claim")
        .is_empty());
    assert!(!db.delete_webhook(hook).await.expect("delete"));
}
