//! A write that must not be lost to a dropped connection: tried again on a
//! fresh one.
//!
//! A connection the server closed (a terminated backend, a failover, a
//! restart) fails the statement in flight; the pool replaces the connection
//! at the next acquire, so the same write passes a moment later. Only such
//! losses are retried: a statement the database refused fails at once. The
//! writes retried here are the ones recorded after a change is done (its
//! audit row, its webhook event); each is safe to repeat (an audit row at
//! worst twice, a webhook event deduplicated by its key).

use std::future::Future;
use std::time::Duration;

use super::DbError;

/// How often such a write is tried: the first try and two more.
pub const TRIES: u32 = 3;
/// The pause before the second try; doubled before the third.
pub const PAUSE: Duration = Duration::from_millis(250);

/// Whether `e` may pass on another connection: the connection was lost or
/// closed by the server, not the statement refused.
pub fn is_lost_connection(e: &DbError) -> bool {
    let DbError::Sqlx(e) = e else {
        return false;
    };
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
        // Class 08: connection exception; 57P: operator intervention
        // (admin shutdown, crash shutdown, cannot connect now).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// Run `write` until it succeeds, fails other than by a lost connection,
/// or has been tried [`TRIES`] times; `what` names it in the warning of a
/// retry.
pub async fn on_lost_connection<T, F, Fut>(what: &str, mut write: F) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DbError>>,
{
    let mut pause = PAUSE;
    let mut tries = 0;
    loop {
        tries += 1;
        match write().await {
            Err(e) if tries < TRIES && is_lost_connection(&e) => {
                tracing::warn!(error = %e, "{what}: the connection was lost, trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            done => return done,
        }
    }
}
