//! The shutdown protocol of usage, in one place. Pingora stops a proxy
//! in one of two ways, and usage held in memory must reach the database in
//! both:
//!
//! - graceful (SIGTERM, or a test's/`dev`'s handle): Pingora's
//!   `ShutdownWatch` fires; [`UsageService`] stops the flusher, which then
//!   keeps flushing what in-flight requests add for most of
//!   `proxy.grace_period`, flushes once more, removes this instance's
//!   heartbeat row and leaves ([`UsageFlusher::finish`]);
//! - fast (SIGINT, Ctrl-C): Pingora drops every runtime at once without
//!   telling background services, so [`Signals`] first sets the flusher's
//!   fast-stop flag and stops it through [`UsageStop::flush_now`]: it
//!   flushes once, with no grace period, and the signal waits for that at
//!   most [`FAST_STOP_FLUSH`];
//! - graceful, then fast (SIGTERM, then SIGINT during the grace period):
//!   Pingora would sleep out the grace period whatever comes, so [`Signals`]
//!   keeps listening for SIGINT and then does what a fast stop does (the
//!   flusher stops waiting and writes once), shuts down the connections
//!   still open so that their requests end and record themselves, runs the
//!   [`LastWrite`] and ends the process (black-box round 13; round 15: the
//!   requests it cut were not recorded).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use super::buffer::bounded;
use super::flusher::{Run, UsageFlusher};

/// How long a fast stop (SIGINT, Ctrl-C) waits for the usage flusher to
/// write what it holds before the runtimes are dropped.
pub const FAST_STOP_FLUSH: Duration = Duration::from_secs(3);

/// How long the runtimes may take to stop after a fast stop's usage flush.
pub const FAST_STOP_RUNTIMES: Duration = Duration::from_secs(1);

/// After a fast stop's usage flush the runtimes get [`FAST_STOP_RUNTIMES`]
/// to stop. Pingora 0.9.1's no-steal runtime (`proxy.work_stealing:
/// false`) joins its threads without a timeout, and on a fast stop an
/// accept loop can be left polling a listener whose runtime is shutting
/// down ("A Tokio 1.x context was found, but it is being shutdown"): the
/// call fails at once, the loop never yields, the join never returns. Then
/// `last_write` (the [`LastWrite`]: what the stop cut, recorded as the
/// runtimes dropped its requests) is run here, or waited for when it is
/// already running, so the process never ends in the middle of it (on a box
/// busy with I/O that write alone can take longer than the bound), and the
/// process ends.
fn bound_fast_stop(last_write: Arc<dyn Fn() + Send + Sync>) {
    let spawned = std::thread::Builder::new()
        .name("tollgate-fast-stop".into())
        .spawn(move || {
            std::thread::sleep(FAST_STOP_RUNTIMES);
            last_write();
            tracing::warn!(
                "fast stop: the runtimes did not stop within {FAST_STOP_RUNTIMES:?} of the usage flush; exiting"
            );
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        tracing::warn!("fast stop: no deadline thread ({e})");
    }
}

/// Pingora's Unix signals (SIGQUIT upgrade, SIGTERM graceful, SIGINT fast),
/// except that before a fast stop the usage flusher writes what it holds:
/// Pingora drops every runtime at once on SIGINT without telling background
/// services, which would lose up to `usage.flush_interval` of usage. A
/// SIGINT during a graceful stop makes it a fast one ([`cut_short`]).
pub(crate) struct Signals {
    pub(crate) usage: Arc<UsageStop>,
    /// Before a stop cut short ends the process: shut down the connections
    /// still open (their requests end and record their usage), then the
    /// [`LastWrite`] of this server.
    pub(crate) cut_then_write: Arc<dyn Fn() + Send + Sync>,
    /// The [`LastWrite`] of this server alone (run, or waited for when it
    /// runs already): what a fast stop's deadline does before it ends the
    /// process.
    pub(crate) last_write: Arc<dyn Fn() + Send + Sync>,
}

/// A signal stream, or none (logged) if the signal cannot be listened for.
fn listen(kind: SignalKind) -> Option<Signal> {
    signal(kind)
        .map_err(|e| tracing::error!("cannot listen for signal {kind:?}: {e}"))
        .ok()
}

/// The next signal of `s`; never without one.
async fn next(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        // One SIGINT stream for the whole run: one sent during a graceful
        // stop is not lost between two listeners.
        let mut interrupt = listen(SignalKind::interrupt());
        let (mut quit, mut term) = (listen(SignalKind::quit()), listen(SignalKind::terminate()));
        let signal = tokio::select! {
            _ = next(&mut quit) => ShutdownSignal::GracefulUpgrade,
            _ = next(&mut term) => ShutdownSignal::GracefulTerminate,
            _ = next(&mut interrupt) => ShutdownSignal::FastShutdown,
        };
        if matches!(signal, ShutdownSignal::FastShutdown) {
            tracing::info!("SIGINT: fast stop, flushing usage first");
            self.usage.flush_now(FAST_STOP_FLUSH).await;
            bound_fast_stop(self.last_write.clone());
        } else {
            // The server's own runtime keeps running while Pingora sleeps
            // out the grace period.
            tokio::spawn(cut_short(
                interrupt,
                self.usage.clone(),
                self.cut_then_write.clone(),
                self.last_write.clone(),
            ));
        }
        signal
    }
}

/// During a graceful stop: on SIGINT, stop as a fast stop does (the usage
/// flusher stops waiting for requests in flight and writes once, at most
/// [`FAST_STOP_FLUSH`]), cut the requests still in flight (their
/// connections are shut down: they end and record themselves), run the last
/// write and end the process, at most [`FAST_STOP_RUNTIMES`] after the
/// flush.
async fn cut_short(
    mut interrupt: Option<Signal>,
    usage: Arc<UsageStop>,
    cut_then_write: Arc<dyn Fn() + Send + Sync>,
    last_write: Arc<dyn Fn() + Send + Sync>,
) {
    next(&mut interrupt).await;
    tracing::warn!("SIGINT during the graceful stop: fast stop, flushing usage first");
    usage.flush_now(FAST_STOP_FLUSH).await;
    bound_fast_stop(last_write);
    // Its own thread: the last write blocks on a runtime of its own.
    let spawned = std::thread::Builder::new()
        .name("tollgate-cut-short".into())
        .spawn(move || {
            cut_then_write();
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        tracing::warn!("fast stop: no thread for the last write ({e}); exiting");
        std::process::exit(0);
    }
}

/// Stops the usage flusher on either kind of shutdown and tells when it is done.
pub(crate) struct UsageStop {
    stop: watch::Sender<bool>,
    done: watch::Sender<bool>,
    /// The flusher's fast-stop flag (`UsageFlusher::fast_stop_flag`).
    fast: Arc<std::sync::atomic::AtomicBool>,
}

impl UsageStop {
    pub(crate) fn new(fast: Arc<std::sync::atomic::AtomicBool>) -> Self {
        Self {
            stop: watch::channel(false).0,
            done: watch::channel(false).0,
            fast,
        }
    }

    /// A fast stop: the flusher writes what it holds once, with no grace
    /// period to wait for in-flight requests, and leaves; wait for it at
    /// most `limit`.
    async fn flush_now(&self, limit: Duration) {
        self.fast.store(true, std::sync::atomic::Ordering::Release);
        let mut done = self.done.subscribe();
        self.stop.send_replace(true);
        let started = std::time::Instant::now();
        let flushed = tokio::time::timeout(limit, done.wait_for(|d| *d))
            .await
            .is_ok();
        if flushed {
            tracing::info!(took = ?started.elapsed(), "fast stop: usage flushed");
        } else {
            tracing::warn!(
                "fast stop: usage not flushed within {limit:?}; what is unwritten is lost"
            );
        }
    }
}

/// The usage flusher, stopped by Pingora's graceful shutdown or by a fast stop.
pub(crate) struct UsageService {
    pub(crate) flusher: UsageFlusher,
    pub(crate) stop: Arc<UsageStop>,
}

#[async_trait]
impl BackgroundService for UsageService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let inner = self.stop.stop.subscribe();
        let graceful = async {
            if shutdown.changed().await.is_ok() {
                self.stop.stop.send_replace(true);
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = self.flusher.start(inner) => {}
            _ = graceful => {}
        }
        self.stop.done.send_replace(true);
    }
}

impl UsageFlusher {
    /// After the flusher was stopped: flush through the grace period (none
    /// on a fast stop), once more, then remove this instance's row.
    pub(super) async fn finish(&self, run: &mut Run) {
        // Graceful shutdown: requests in flight finish during the grace
        // period (after which Pingora drops this runtime), so keep flushing
        // what they add for most of it, then once more and leave.
        let cfg = self.state.config.load_full();
        let grace = if self.fast_stop.load(Ordering::Acquire) {
            Duration::ZERO
        } else {
            cfg.config.proxy.grace_period
        };
        let every = cfg
            .config
            .usage
            .flush_interval
            .min(Duration::from_millis(500));
        // The last write must end before Pingora drops this runtime at the
        // end of the grace period: it starts `margin` before (1 s, or a
        // quarter of a shorter grace period). What a request in flight adds
        // (usage, a cost settled from its response) after that is lost.
        let margin = Duration::from_secs(1).min(grace / 4);
        let until = Instant::now() + grace.saturating_sub(margin);
        // Each database step of a write is bounded by what is left of the
        // margin (a fast stop, with no grace period: by FAST_STOP_FLUSH).
        let short = if grace.is_zero() {
            FAST_STOP_FLUSH
        } else {
            FAST_STOP_FLUSH.min(margin.max(Duration::from_millis(200)))
        };
        self.tick(run, short).await;
        // A SIGINT during the grace period ends the wait (`cut_short`).
        while !self.fast_stop.load(Ordering::Acquire) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(every.min(left)).await;
            if self.recorder.held_rows() > 0 || !run.pending.is_empty() {
                self.tick(run, short).await;
            }
        }
        self.tick(run, short).await;
        if let Some(db) = &run.db {
            if let Err(e) = bounded(short, db.delete_instance(&self.id)).await {
                tracing::debug!("could not remove this instance's row: {e}");
            }
            // Its quota-count name is free for the next start at once.
            if let Some((_, name)) = &self.quotas {
                if let Err(e) = bounded(short, db.release_name(name, &self.id)).await {
                    tracing::debug!("could not release the name {name:?}: {e}");
                }
            }
        }
        if !run.pending.is_empty() {
            tracing::warn!(
                rows = run.pending.rows(),
                "usage flush at shutdown failed: unwritten usage is lost"
            );
        }
    }
}

/// The last write, once the server stopped (every runtime is gone, so no
/// request is in flight any more) or a SIGINT cut its graceful stop short
/// (every connection still open was shut down): the local quota counts and credit
/// spends changed since the flusher's last write, and the usage recorded
/// since, including the requests the stop cut (recorded as they ended or
/// their contexts were dropped with the runtimes: [`super::open`]; it
/// waits for those at most [`CUT_REQUESTS_WAIT`]). A request that finished in the last part of
/// the grace period (after the flusher's final tick) is settled in these
/// (black-box round 5: its cost and refunds were lost; round 13: its usage).
/// One connection, at most [`FAST_STOP_FLUSH`]; once, whether the server
/// stopped or a SIGINT cut its graceful stop short.
pub(crate) struct LastWrite {
    pub(crate) limiters: Arc<crate::limiter::backends::Limiters>,
    pub(crate) recorder: Arc<super::UsageRecorder>,
    pub(crate) database_url: String,
    pub(crate) counter: String,
    pub(crate) taken: std::sync::atomic::AtomicBool,
    /// Set once the write that took it is over.
    pub(crate) finished: std::sync::atomic::AtomicBool,
}

/// How long the last write waits for the contexts of requests a stop cut
/// to be dropped (their runtimes' threads drop them as they stop, or they
/// end as their connections are shut down). Only a request that never
/// reports (a runtime that does not stop) waits it out; on a box whose
/// cores are busy 500 ms lost a cut request once (a CI run), so 2 s.
pub const CUT_REQUESTS_WAIT: Duration = Duration::from_secs(2);

/// The longest a [`LastWrite`] takes: its wait for cut requests, then one
/// bounded write.
pub const LAST_WRITE_BOUND: Duration = Duration::from_millis(
    CUT_REQUESTS_WAIT.as_millis() as u64 + FAST_STOP_FLUSH.as_millis() as u64,
);

impl LastWrite {
    /// Write once; a second caller (the fast stop's deadline, or the server
    /// once it stopped) waits for the first to finish, at most
    /// [`LAST_WRITE_BOUND`], so that neither ends the process in the middle
    /// of it.
    pub(crate) fn run(&self, state: &crate::state::State) {
        if self.taken.swap(true, Ordering::AcqRel) {
            let until = Instant::now() + LAST_WRITE_BOUND;
            while !self.finished.load(Ordering::Acquire) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
        self.write(state);
        self.finished.store(true, Ordering::Release);
    }

    fn write(&self, state: &crate::state::State) {
        let backend = state.config.load().config.limiter.backend;
        let writes_quotas = backend == tollgate_core::config::LimiterBackend::Local;
        if !self.recorder.wait_reported(CUT_REQUESTS_WAIT) {
            tracing::warn!(
                open = self.recorder.open_requests(),
                "requests cut by the stop not reported within {CUT_REQUESTS_WAIT:?}: their usage is lost"
            );
        }
        let mut usage = super::Pending::default();
        let max_rows = state.config.load().config.usage.buffer_rows.max(1);
        let (lost, _) = usage.absorb(self.recorder.drain(), max_rows);
        if lost > 0 {
            tracing::warn!(
                requests = lost,
                "usage beyond usage.buffer_rows at the last write is lost"
            );
        }
        if !writes_quotas && self.limiters.credits.spends.pending_len() == 0 && usage.is_empty() {
            return;
        }
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!("the last usage write could not start: {e}");
                return;
            }
        };
        rt.block_on(async {
            let write = async {
                let db = tollgate_core::db::Db::connect(&self.database_url).await?;
                super::buffer::write_pending(&db, &mut usage, FAST_STOP_FLUSH).await?;
                super::spends::write_spends(&db, &self.limiters.credits, FAST_STOP_FLUSH).await?;
                super::quota_counts::write_quota_counts(
                    &db,
                    &self.limiters.local,
                    &self.counter,
                    backend,
                    FAST_STOP_FLUSH,
                )
                .await?;
                db.close().await;
                Ok::<(), super::buffer::FlushError>(())
            };
            match tokio::time::timeout(FAST_STOP_FLUSH, write).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("the last usage write failed: {e}"),
                Err(_) => tracing::warn!("the last usage write timed out"),
            }
        });
    }
}
