//! The delivery worker: a background task of every admin process. It
//! claims due deliveries from the outbox (safe with several admin
//! processes, see `tollgate_core::webhooks::outbox`) and sends them
//! concurrently in up to [`BATCH`] slots, each refilled as its delivery
//! ends, signed (Standard Webhooks); it records each attempt with the next
//! retry. Once a minute it enqueues `key.expiring` events (once per key and
//! expiry, whichever process sees it first), and once an hour it drops
//! events older than [`EVENT_RETENTION`].

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;
use tollgate_core::db::Db;
use tollgate_core::db::DbError;
use tollgate_core::webhooks::outbox::{Attempt, Claimed, Recorded};
use tollgate_core::webhooks::{backoff, enqueue_event, sign, EXPIRING_WITHIN, KEY_EXPIRING};

use crate::state::AppState;

/// How often due deliveries are looked for (sooner after [`super::wake`]).
pub const TICK: Duration = Duration::from_secs(1);
/// Deliveries claimed per tick.
const BATCH: i64 = 16;
/// An HTTP attempt's whole deadline.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A claim's lease: longer than an attempt can take.
const LEASE: Duration = Duration::from_secs(60);
/// How often `key.expiring` is checked.
const EXPIRY_CHECK: Duration = Duration::from_secs(60);
/// How long delivered (or given up) events are kept.
pub const EVENT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
const PURGE_EVERY: Duration = Duration::from_secs(3600);

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Start the worker; abort the handle to stop it.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhook delivery disabled: no HTTP client");
                return;
            }
        };
        let db = state.db().clone();
        let mut last_expiry_check: Option<Instant> = None;
        let mut last_purge: Option<Instant> = None;
        // Deliveries under way: at most BATCH. A slow endpoint holds its
        // own slot for up to ATTEMPT_TIMEOUT, not the others' deliveries.
        // (Each logs its own outcome.)
        let mut in_flight: JoinSet<Result<Recorded, DbError>> = JoinSet::new();
        loop {
            if last_expiry_check.is_none_or(|t| t.elapsed() >= EXPIRY_CHECK) {
                last_expiry_check = Some(Instant::now());
                if let Err(e) = enqueue_expiring(&db, millis(EXPIRING_WITHIN)).await {
                    tracing::warn!(error = %e, "cannot check for expiring keys");
                }
            }
            if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                last_purge = Some(Instant::now());
                let before = tollgate_core::now_ms() - millis(EVENT_RETENTION);
                if let Err(e) = db.purge_webhook_events(before).await {
                    tracing::warn!(error = %e, "cannot purge old webhook events");
                }
            }
            while in_flight.try_join_next().is_some() {}
            let room = BATCH - i64::try_from(in_flight.len()).unwrap_or(BATCH);
            if room > 0 {
                match db.claim_webhook_deliveries(room, millis(LEASE)).await {
                    Ok(claimed) => {
                        let all_room = i64::try_from(claimed.len()).unwrap_or(0) == room;
                        for c in claimed {
                            in_flight.spawn(deliver(client.clone(), db.clone(), c));
                        }
                        if all_room {
                            // There may be more due: look again at once.
                            continue;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot claim webhook deliveries"),
                }
            }
            // The next tick, a wake-up, or a freed slot.
            tokio::select! {
                _ = tokio::time::timeout(TICK, super::notify().notified()) => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
    })
}

/// The HTTP client deliveries are sent with: the attempt's deadlines, no
/// redirects, no proxy, and the resolver that never connects to a
/// link-local address.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        // A redirect is a failed attempt: never follow one elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        // Never to a link-local address, whatever the name resolves to.
        .dns_resolver(super::resolve::GuardedResolver::shared())
        // Straight to the endpoint: through an `HTTP_PROXY` the proxy
        // would resolve the name, out of the resolver's reach.
        .no_proxy()
        .user_agent(concat!("Tollgate-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Send one claimed delivery and record the attempt; what recording did.
/// An endpoint deleted while the attempt was under way took the delivery
/// with it: that is an expected end ([`Recorded::Gone`], logged at debug
/// level), not an error, and nothing is retried.
pub async fn deliver(client: reqwest::Client, db: Db, c: Claimed) -> Result<Recorded, DbError> {
    let attempt = send(&client, &c).await;
    let retry_at = if attempt.succeeded {
        None
    } else {
        backoff(c.attempts + 1).map(|d| tollgate_core::now_ms() + millis(d))
    };
    let recorded = db
        .record_webhook_attempt(c.delivery_id, &attempt, retry_at)
        .await;
    match &recorded {
        Ok(Recorded::Logged) => {
            if !attempt.succeeded {
                tracing::info!(
                    delivery = c.delivery_id,
                    event = %c.event_type,
                    status = ?attempt.status_code,
                    error = ?attempt.error,
                    "webhook attempt failed"
                );
            }
        }
        Ok(Recorded::Gone) => tracing::debug!(
            delivery = c.delivery_id,
            event = %c.event_type,
            "webhook endpoint deleted during the attempt: the delivery ended with it"
        ),
        // The lease runs out and the delivery is tried again.
        Err(e) => {
            tracing::warn!(error = %e, delivery = c.delivery_id, "cannot record a webhook attempt")
        }
    }
    recorded
}

async fn send(client: &reqwest::Client, c: &Claimed) -> Attempt {
    // The URL's own rules once more, at the moment of sending: a row
    // written past the API (an older version, a restored or shared
    // database) must not reach a link-local literal, which the resolver
    // never sees.
    if let Err(e) = tollgate_core::webhooks::check_url(&c.url) {
        return Attempt {
            status_code: None,
            error: Some(format!("not delivered: the url {}", e.message)),
            duration_ms: 0,
            succeeded: false,
        };
    }
    let started = Instant::now();
    let timestamp = tollgate_core::now_ms() / 1000;
    let elapsed = |s: Instant| millis(s.elapsed());
    let signature = match sign(&c.secret, &c.msg_id, timestamp, c.payload.as_bytes()) {
        Ok(s) => s,
        Err(e) => {
            return Attempt {
                status_code: None,
                error: Some(e.to_string()),
                duration_ms: 0,
                succeeded: false,
            }
        }
    };
    let result = client
        .post(&c.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &c.msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(c.payload.clone())
        .send()
        .await;
    match result {
        Ok(res) => {
            let status = res.status();
            Attempt {
                status_code: Some(i64::from(status.as_u16())),
                error: (!status.is_success()).then(|| format!("answered {status}")),
                duration_ms: elapsed(started),
                succeeded: status.is_success(),
            }
        }
        Err(e) => Attempt {
            status_code: None,
            // Without the URL: its query may hold a token.
            error: Some(error_chain(&e.without_url())),
            duration_ms: elapsed(started),
            succeeded: false,
        },
    }
}

/// An error and its causes, `: `-separated ("error sending request: client
/// error (Connect): … resolves only to link-local or cloud metadata addresses …").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Enqueue `key.expiring` for every key expiring within `within_ms`: once
/// per key and expiry instant (a new expiry is a new event). Returns how
/// many were new.
pub async fn enqueue_expiring(db: &Db, within_ms: i64) -> Result<usize, DbError> {
    let mut new = 0;
    for (id, name, expires_at) in db.keys_expiring(tollgate_core::now_ms(), within_ms).await? {
        let data = json!({ "key_id": id, "name": name, "expires_at": expires_at });
        if enqueue_event(
            db,
            KEY_EXPIRING,
            &id.to_string(),
            &expires_at.to_string(),
            data,
        )
        .await?
        .is_some()
        {
            new += 1;
        }
    }
    if new > 0 {
        super::wake();
    }
    Ok(new)
}
