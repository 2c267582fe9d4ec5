//! [`UsageFlusher`], a background service with its own database pool: every
//! `usage.flush_interval` it takes what the recorder holds, writes it as
//! batches that count once ([`super::buffer`]), heartbeats this instance's
//! row ([`super::heartbeat`]) and runs retention when due
//! ([`super::retention`]). A database outage only fills the bounded buffer.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tollgate_core::db::Db;

use super::buffer::{bounded, write_pending, FlushError, Pending};
use super::heartbeat::{self, RequestRate};
use super::recorder::UsageRecorder;
use super::retention::Retention;
use crate::metrics;
use crate::state::State;

/// How long one database step (connect, one batch…) may take before the tick
/// gives up and keeps what it holds for the next one.
const DB_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the round trip that opens each tick may take: an unreachable
/// database is noticed this fast (the pool would otherwise wait for a
/// connection for its whole acquire timeout), without cutting short a slow
/// but working write.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The background service that writes usage, violations, keys' last use and
/// this instance's heartbeat, and purges old data.
pub struct UsageFlusher {
    pub(super) recorder: Arc<UsageRecorder>,
    pub(super) state: Arc<State>,
    database_url: String,
    address: String,
    pub(super) id: String,
    started_at: i64,
    /// Set before a fast stop: no grace period to keep flushing through.
    pub(super) fast_stop: Arc<AtomicBool>,
    /// The credit balances whose local spends are written with each flush.
    credits: Option<Arc<crate::limiter::credits::CreditBook>>,
    /// The local limiter whose quota counts are written with each flush,
    /// and the name they are written under.
    pub(super) quotas: Option<(Arc<crate::limiter::LocalLimiter>, String)>,
    /// Where the live proxies counted at each heartbeat go (the `local`
    /// fallback's share, Redis backend only).
    peers: Option<Arc<crate::limiter::backends::fallback::Peers>>,
}

impl UsageFlusher {
    /// `address` is where this proxy listens (reported in its heartbeat).
    pub fn new(
        recorder: Arc<UsageRecorder>,
        state: Arc<State>,
        database_url: String,
        address: String,
    ) -> Self {
        Self {
            recorder,
            state,
            database_url,
            address,
            id: heartbeat::instance_id(),
            started_at: tollgate_core::now_ms(),
            fast_stop: Arc::new(AtomicBool::new(false)),
            credits: None,
            quotas: None,
            peers: None,
        }
    }

    /// Write `book`'s local credit spends with each flush.
    pub fn with_credits(mut self, book: Arc<crate::limiter::credits::CreditBook>) -> Self {
        self.credits = Some(book);
        self
    }

    /// Write `local`'s quota counts with each flush (local backend), as
    /// `counter` (`super::quota_counts::counter_name`).
    pub fn with_quotas(
        mut self,
        local: Arc<crate::limiter::LocalLimiter>,
        counter: String,
    ) -> Self {
        self.quotas = Some((local, counter));
        self
    }

    /// Count the live proxies into `peers` at each heartbeat.
    pub fn with_peers(mut self, peers: Arc<crate::limiter::backends::fallback::Peers>) -> Self {
        self.peers = Some(peers);
        self
    }

    /// Heartbeat as `instance` (the row a local proxy claimed at start).
    pub fn with_instance(mut self, instance: super::heartbeat::Instance) -> Self {
        self.id = instance.id;
        self.started_at = instance.started_at;
        self
    }

    /// Set it, then stop the flusher, for a fast stop: it writes what it
    /// holds once and leaves instead of flushing through the grace period.
    pub fn fast_stop_flag(&self) -> Arc<AtomicBool> {
        self.fast_stop.clone()
    }

    /// This instance's id in the `instances` table.
    pub fn instance_id(&self) -> &str {
        &self.id
    }

    /// One tick: take what the recorder holds, write it (keeping what fails
    /// within the bounds), heartbeat, purge when due.
    pub(super) async fn tick(&self, run: &mut Run, limit: Duration) {
        let usage = self.state.config.load().config.usage.clone();
        self.recorder.set_max_rows(usage.buffer_rows);
        let (requests, refusals) = run
            .pending
            .absorb(self.recorder.drain(), usage.buffer_rows.max(1));
        if requests > 0 {
            metrics::USAGE_DROPPED
                .with_label_values(&["requests"])
                .inc_by(requests);
        }
        if refusals > 0 {
            metrics::USAGE_DROPPED
                .with_label_values(&["violations"])
                .inc_by(refusals);
        }
        metrics::USAGE_BUFFERED_ROWS.set(run.pending.rows() as i64);

        match self.write(run, limit, &usage).await {
            Ok(()) => {
                if run.failing {
                    tracing::info!("usage flush: the database is reachable again");
                }
                run.failing = false;
            }
            Err(e) => {
                metrics::USAGE_FLUSH_ERRORS.inc();
                if !run.failing {
                    tracing::warn!(
                        held_rows = run.pending.rows(),
                        "usage flush failed, keeping what is held for the next attempt: {e}"
                    );
                }
                run.failing = true;
            }
        }
        metrics::USAGE_BUFFERED_ROWS.set(run.pending.rows() as i64);
    }

    /// Refresh this proxy's hold on its quota-count name. Another holder
    /// (this proxy was frozen past a flush interval and another started
    /// under its name) means both overwrite the same counts: logged and
    /// counted (`tollgate_instance_name_conflicts`) while it lasts.
    async fn check_name(&self, db: &Db, name: &str, limit: Duration) {
        let now = tollgate_core::now_ms();
        let Ok(Ok(mut held)) = tokio::time::timeout(limit, db.beat_name(name, &self.id, now)).await
        else {
            return;
        };
        if !held {
            // Nobody's (e.g. the limiter became local by a reload): claim it.
            if let Ok(Ok((holder, _))) =
                tokio::time::timeout(limit, db.claim_name(name, &self.id, now)).await
            {
                held = holder == self.id;
            }
        }
        let was = metrics::INSTANCE_NAME_CONFLICTS.get();
        metrics::INSTANCE_NAME_CONFLICTS.set(i64::from(!held));
        if !held && was == 0 {
            let other = db
                .name_holder(name)
                .await
                .ok()
                .flatten()
                .map_or_else(|| "none".to_string(), |(id, _)| id);
            tracing::error!(
                "this proxy no longer holds its quota-count name {name:?} (now: {other}): \
                 another proxy writes the same counts; stop or rename one \
                 (proxy.instance_name)"
            );
        }
    }

    /// The heartbeat (and, for a local proxy, the hold on its quota-count
    /// name), on `db`.
    async fn beat(&self, db: &Db, run: &mut Run, limit: Duration) -> Result<(), FlushError> {
        let rate = run.rate.update(self.recorder.totals().requests);
        // Only a local-backend proxy writes quota counts (Redis holds them).
        let local = self.state.config.load().config.limiter.backend
            == tollgate_core::config::LimiterBackend::Local;
        let counter = self
            .quotas
            .as_ref()
            .filter(|_| local)
            .map(|(_, name)| name.as_str());
        let hb = heartbeat::heartbeat(
            &self.id,
            counter,
            &self.address,
            self.started_at,
            &self.recorder,
            &self.state,
            rate,
            run.pending.rows(),
        );
        bounded(limit, db.upsert_instance(&hb)).await?;
        if let Some(name) = counter {
            self.check_name(db, name, limit).await;
        }
        if !local {
            self.count_peers(db, limit).await;
        }
        Ok(())
    }

    /// Count the live proxies (this one included: it has just beaten) for
    /// the `local` fallback's share, each judged by its own heartbeat
    /// period; an error keeps the last count.
    async fn count_peers(&self, db: &Db, limit: Duration) {
        let Some(peers) = &self.peers else { return };
        match bounded(limit, db.count_live_instances(tollgate_core::now_ms())).await {
            Ok(n) => peers.set(n),
            Err(e) => tracing::debug!("counting live proxies (the last count stays): {e}"),
        }
    }

    /// At start: connect and beat once, writing nothing else (what the
    /// first requests record waits for the first tick).
    async fn first_beat(&self, run: &mut Run, limit: Duration) {
        let connected = match &run.db {
            Some(db) => Ok(db.clone()),
            None => bounded(limit, Db::connect(&self.database_url)).await,
        };
        match connected {
            Ok(db) => {
                run.db = Some(db.clone());
                if let Err(e) = self.beat(&db, run, limit).await {
                    tracing::debug!("first heartbeat failed (retried with the first flush): {e}");
                }
            }
            Err(e) => tracing::debug!("first heartbeat: no database yet: {e}"),
        }
    }

    async fn write(
        &self,
        run: &mut Run,
        limit: Duration,
        usage: &tollgate_core::config::UsageConfig,
    ) -> Result<(), FlushError> {
        if run.db.is_none() {
            run.db = Some(bounded(limit, Db::connect(&self.database_url)).await?);
        }
        let Some(db) = run.db.clone() else {
            return Ok(());
        };
        bounded(PING_TIMEOUT.min(limit), db.ping()).await?;
        write_pending(&db, &mut run.pending, limit).await?;
        if let Some(book) = &self.credits {
            super::spends::write_spends(&db, book, limit).await?;
        }
        if let Some((local, counter)) = &self.quotas {
            let backend = self.state.config.load().config.limiter.backend;
            super::quota_counts::write_quota_counts(&db, local, counter, backend, limit).await?;
        }

        self.beat(&db, run, limit).await?;
        run.retention.run_if_due(&db, usage, limit).await
    }
}

/// The flusher's state across ticks.
#[derive(Default)]
pub(super) struct Run {
    pub(super) db: Option<Db>,
    pub(super) pending: Pending,
    failing: bool,
    retention: Retention,
    rate: RequestRate,
}

#[async_trait]
impl BackgroundService for UsageFlusher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut run = Run::default();
        // A heartbeat at once: it tells a proxy starting under the same
        // name that this one is live (`server::claim_name`).
        self.first_beat(&mut run, DB_TIMEOUT).await;
        loop {
            // The interval as reloaded meanwhile, too; a longer one is
            // announced at once (the beat carries it): the other proxies
            // judge this one live by the period its last beat announced.
            let every = || self.state.config.load().config.usage.flush_interval;
            let announced = every();
            tokio::select! {
                _ = crate::period::wait(every) => {}
                _ = crate::period::longer_than(every, announced) => {}
                _ = shutdown.changed() => break,
            }
            self.tick(&mut run, DB_TIMEOUT).await;
        }

        self.finish(&mut run).await;
    }
}
