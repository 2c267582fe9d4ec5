//! Supervision: each background task runs as its own tokio task, started
//! again (after a backoff) whenever it panics or returns, without taking the
//! others with it.

use std::future::Future;
use std::time::{Duration, Instant};

use super::FAULT_PANIC_ENV;
use crate::metrics;

/// How long a supervised task waits before it is started again.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A task that ran at least this long restarts after `initial` again.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// Aborts the task when dropped (the supervisor was stopped).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether the [`FAULT_PANIC_ENV`] test hook names `task`.
fn fault_injected(task: &str) -> bool {
    std::env::var(FAULT_PANIC_ENV).is_ok_and(|v| v.split(',').any(|t| t.trim() == task))
}

/// Run the future `make` builds as its own tokio task, forever: whenever it
/// ends — a panic (caught as the task's `JoinError`) or a return — count a
/// restart of `name`, log it, wait (doubling from `backoff.initial` up to
/// `backoff.max`) and start a fresh one.
pub async fn supervise<F, Fut>(name: &'static str, backoff: Backoff, make: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut delay = backoff.initial;
    loop {
        let started = Instant::now();
        let inject = fault_injected(name);
        let work = make();
        let handle = tokio::spawn(async move {
            if inject {
                tokio::time::sleep(Duration::from_millis(50)).await;
                panic!("{FAULT_PANIC_ENV}: injected panic in {name}");
            }
            work.await;
        });
        let _guard = AbortOnDrop(handle.abort_handle());
        let why = match handle.await {
            Ok(()) => "stopped".to_string(),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                format!("panicked: {msg}")
            }
            Err(_) => "was cancelled".to_string(),
        };
        if started.elapsed() >= backoff.reset_after {
            delay = backoff.initial;
        }
        metrics::BACKGROUND_RESTARTS
            .with_label_values(&[name])
            .inc();
        tracing::error!(
            task = name,
            "background task {why}; starting it again in {delay:?} (the other tasks go on)"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(backoff.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn restarts(task: &str) -> u64 {
        metrics::BACKGROUND_RESTARTS
            .with_label_values(&[task])
            .get()
    }

    /// One task panics at every run, another fails (returns) at every run;
    /// a third keeps working all along, and the first two keep being
    /// started again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_or_failing_task_stops_none_of_the_others() {
        let fast = Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(40),
            reset_after: Duration::from_secs(60),
        };
        let ticks = Arc::new(AtomicU64::new(0));
        let runs = Arc::new(AtomicU64::new(0));
        let mut set = tokio::task::JoinSet::new();
        let r = runs.clone();
        set.spawn(supervise("test-panics", fast, move || {
            r.fetch_add(1, Ordering::Relaxed);
            async { panic!("boom") }
        }));
        set.spawn(supervise("test-returns", fast, || async {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }));
        let t = ticks.clone();
        set.spawn(supervise("test-works", fast, move || {
            let t = t.clone();
            async move {
                loop {
                    t.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
        let deadline = Instant::now() + Duration::from_secs(20);
        while restarts("test-panics") < 5 || restarts("test-returns") < 5 {
            assert!(Instant::now() < deadline, "tasks were not restarted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = ticks.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(20);
        while ticks.load(Ordering::Relaxed) < before + 20 {
            assert!(Instant::now() < deadline, "the working task stopped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(restarts("test-works"), 0);
        assert!(runs.load(Ordering::Relaxed) >= 5);
        // Stopping the supervisors stops their tasks too.
        set.abort_all();
        while set.join_next().await.is_some() {}
        let stopped = ticks.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(ticks.load(Ordering::Relaxed), stopped);
    }

    #[test]
    fn the_backoff_doubles_up_to_its_maximum() {
        let b = Backoff::default();
        let mut d = b.initial;
        for _ in 0..20 {
            d = (d * 2).min(b.max);
        }
        assert_eq!(d, b.max);
        assert!(b.initial < b.max);
    }
}
