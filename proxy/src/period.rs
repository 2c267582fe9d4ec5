//! Waiting out a background task's period when the period comes from the
//! hot-reloadable config (`storage.key_refresh`, `usage.flush_interval`,
//! `proxy.websocket_key_check`): the period is read again at least every
//! [`RECHECK`], so a reload that shortens it takes effect within a second
//! rather than after the old sleep (black-box round 12: key refresh set to
//! 60 s and reverted to 500 ms still slept 56 s before a disabled key was
//! refused). Health checks and re-resolution need none: they beat every
//! 250 ms and 1 s and compare each pool's current interval then.

use std::time::{Duration, Instant};

/// How often a waiting task reads its period again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Wait until the current `period()` has passed since now. `period` is
/// called again at least every [`RECHECK`] (it should be a cheap read of
/// the live config); a shorter period ends the wait at once if it has
/// already passed, a longer one makes it last longer.
pub async fn wait(period: impl Fn() -> Duration) {
    let since = Instant::now();
    loop {
        let left = period().saturating_sub(since.elapsed());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(RECHECK)).await;
    }
}

/// Wait until `period()` is longer than `than` (read every [`RECHECK`]):
/// a reload that lengthens the heartbeat period must be announced at once,
/// or the other proxies, expecting the old period, count this one dead
/// until its next, later beat (black-box round 17 re-check).
pub async fn longer_than(period: impl Fn() -> Duration, than: Duration) {
    while period() <= than {
        tokio::time::sleep(RECHECK).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    fn ms(v: &AtomicU64) -> Duration {
        Duration::from_millis(v.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_lengthened_period_is_seen_within_a_recheck() {
        let period = Arc::new(AtomicU64::new(1_000));
        let p = period.clone();
        let waiting = tokio::spawn(async move { longer_than(|| ms(&p), ms(&p)).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the same period is no change");
        period.store(30_000, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the longer period was not seen")
            .expect("the wait panicked");
    }

    #[tokio::test]
    async fn a_shorter_period_ends_a_long_wait_within_a_recheck() {
        let period = Arc::new(AtomicU64::new(3_600_000));
        let p = period.clone();
        let started = Instant::now();
        let waiting = tokio::spawn(async move { wait(|| ms(&p)).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        period.store(50, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the wait did not see the shorter period")
            .expect("the wait panicked");
        // Generous: a busy machine may be slow, but never an hour.
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn the_period_is_waited_out_and_a_longer_one_extends_it() {
        let period = Arc::new(AtomicU64::new(150));
        let started = Instant::now();
        wait(|| ms(&period)).await;
        assert!(started.elapsed() >= Duration::from_millis(150));

        let p = period.clone();
        period.store(1_000, Ordering::Relaxed);
        let started = Instant::now();
        let waiting = tokio::spawn(async move { wait(|| ms(&p)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        period.store(1_300, Ordering::Relaxed);
        waiting.await.expect("the wait panicked");
        assert!(started.elapsed() >= Duration::from_millis(1_300));
    }
}
