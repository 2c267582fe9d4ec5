//! The `webhook-events` task: hands the quota and credit events the request
//! path noticed ([`crate::limiter::events`]) to the database's webhook outbox
//! (`tollgate_core::webhooks::enqueue_event`), off the request path. The
//! outbox's UNIQUE dedup key makes the same occurrence from several
//! proxies one event; one the database does not take after a few tries is
//! forgotten by [`Notices`], so the next request past its threshold offers
//! it again.

use std::sync::Arc;
use std::time::Duration;

use tollgate_core::db::Db;
use tollgate_core::webhooks::enqueue_event;

use crate::limiter::backends::Limiters;
use crate::limiter::events::{Notice, Notices};
use crate::metrics;

/// Tries per event before it is given up (and forgotten).
const ATTEMPTS: u32 = 5;
/// The wait after the first failed try, doubled after each.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// How long one connection or insert may take.
const DB_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn send_events(limiters: Arc<Limiters>, url: String) {
    let mut db: Option<Db> = None;
    loop {
        let batch = limiters.events.next_batch().await;
        for notice in batch {
            send(&mut db, &url, &notice, &limiters.events).await;
        }
    }
}

async fn send(db: &mut Option<Db>, url: &str, n: &Notice, notices: &Notices) {
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        if db.is_none() {
            *db = tokio::time::timeout(DB_TIMEOUT, Db::connect(url))
                .await
                .ok()
                .and_then(Result::ok);
        }
        if let Some(d) = db.as_ref() {
            let enqueue = enqueue_event(d, n.event_type, &n.subject, &n.period, n.data.clone());
            match tokio::time::timeout(DB_TIMEOUT, enqueue).await {
                Ok(Ok(Some(_))) => {
                    metrics::WEBHOOK_EVENTS
                        .with_label_values(&["enqueued"])
                        .inc();
                    return;
                }
                Ok(Ok(None)) => {
                    metrics::WEBHOOK_EVENTS
                        .with_label_values(&["duplicate"])
                        .inc();
                    return;
                }
                Ok(Err(e)) => tracing::debug!(attempt, "webhook event {}: {e}", n.event_type),
                Err(_) => tracing::debug!(attempt, "webhook event {}: timed out", n.event_type),
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::warn!(
        "webhook event {} of {} not enqueued; sent again by the next request past it",
        n.event_type,
        n.subject
    );
    metrics::WEBHOOK_EVENTS.with_label_values(&["failed"]).inc();
    notices.forget(&n.key);
}
