//! Background work of one proxy, off the request path: refreshing the key set
//! and database plans, reloading the config file, watching the listener's
//! certificate, running upstream health checks, re-resolving upstream host
//! names, sweeping the local limiter and watching Redis.
//!
//! Each is its own supervised task ([`supervise`]): a task that panics or
//! stops is counted (`tollgate_background_restarts_total{task}`), logged and
//! started again after its own backoff, and never takes the others with it.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tollgate_core::config::reload::{self, FileWatch, WatchEvent, RELOAD_POLL, RELOAD_SETTLE};
use tollgate_core::config::restart;
use tollgate_core::db::{Db, Fingerprint};

use crate::keyset::KeySet;
use crate::limiter::backends::Limiters;
use crate::limiter::LocalLimiter;
use crate::metrics;
use crate::state::{ConfigState, DbState, State};
use crate::tls::{self, ListenerCert};
use crate::upstreams;

pub mod credit_folds;
mod credits;
mod events;
mod quota_adjust;
mod supervise;

pub use supervise::{supervise, Backoff};

/// The supervised tasks, by the name their metrics and logs use.
pub const TASKS: [&str; 7] = [
    "key-refresh",
    "config-reload",
    "cert-watch",
    "health-checks",
    "upstream-resolve",
    "limiter-sweep",
    "redis-watch",
];

/// List every task's restart counter in `/metrics` before its first restart.
pub fn init_metrics() {
    for task in TASKS {
        metrics::BACKGROUND_RESTARTS.with_label_values(&[task]);
    }
}

/// Test hook: a comma-separated list of [`TASKS`] that panic at each start,
/// for tests of the supervision with the real binary (no real fault makes a
/// task panic on demand). Unset in production.
pub const FAULT_PANIC_ENV: &str = "TOLLGATE_FAULT_PANIC";

/// Connect a task's database handle if it has none yet (at most 5 s; a
/// failure leaves it `None`, tried again on the task's next beat).
async fn connect_once(db: &mut Option<Db>, url: &str) {
    if db.is_none() {
        *db = tokio::time::timeout(Duration::from_secs(5), Db::connect(url))
            .await
            .ok()
            .and_then(Result::ok);
    }
}

/// Load keys and database plans once (also used at start-up).
pub async fn load_db_state(db: &Db) -> Result<DbState, tollgate_core::db::DbError> {
    let records = db.load_key_records().await?;
    let identities = db.load_identities().await?;
    let plans = db.list_plans().await?;
    let keys = KeySet::from_records_with(records, identities);
    metrics::KEYS_LOADED.set(keys.len() as i64);
    metrics::KEYS_LAST_REFRESH.set(tollgate_core::now_ms() as f64 / 1000.0);
    Ok(DbState::new(keys, plans))
}

pub struct Maintenance {
    pub state: Arc<State>,
    pub limiter: Arc<LocalLimiter>,
    pub limiters: Arc<Limiters>,
    pub database_url: String,
    pub config_path: Option<PathBuf>,
    /// The HTTPS listener's certificate, re-read on reload and on file change.
    pub listener_cert: Option<Arc<ListenerCert>>,
}

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = tokio::task::JoinSet::new();
        let backoff = Backoff::default();
        let (state, url) = (self.state.clone(), self.database_url.clone());
        tasks.spawn(supervise("key-refresh", backoff, move || {
            refresh_keys(state.clone(), url.clone())
        }));
        let (state, path, cert) = (
            self.state.clone(),
            self.config_path.clone(),
            self.listener_cert.clone(),
        );
        tasks.spawn(supervise("config-reload", backoff, move || {
            reload_config(state.clone(), path.clone(), cert.clone())
        }));
        let (state, cert) = (self.state.clone(), self.listener_cert.clone());
        tasks.spawn(supervise("cert-watch", backoff, move || {
            watch_certificate(cert.clone(), state.clone())
        }));
        let state = self.state.clone();
        tasks.spawn(supervise("health-checks", backoff, move || {
            health_checks(state.clone())
        }));
        let state = self.state.clone();
        tasks.spawn(supervise("upstream-resolve", backoff, move || {
            resolve_upstreams(state.clone())
        }));
        let limiter = self.limiter.clone();
        tasks.spawn(supervise("limiter-sweep", backoff, move || {
            sweep_limiter(limiter.clone())
        }));
        let (state, limiters) = (self.state.clone(), self.limiters.clone());
        tasks.spawn(supervise("redis-watch", backoff, move || {
            watch_redis(state.clone(), limiters.clone())
        }));
        let (state, limiters, url) = (
            self.state.clone(),
            self.limiters.clone(),
            self.database_url.clone(),
        );
        tasks.spawn(supervise("credits", backoff, move || {
            credits::apply_credits(state.clone(), limiters.clone(), url.clone())
        }));
        let (state, limiters, url) = (
            self.state.clone(),
            self.limiters.clone(),
            self.database_url.clone(),
        );
        tasks.spawn(supervise("credit-folds", backoff, move || {
            credit_folds::fold_credits(state.clone(), limiters.clone(), url.clone())
        }));
        let (limiters, url) = (self.limiters.clone(), self.database_url.clone());
        tasks.spawn(supervise("webhook-events", backoff, move || {
            events::send_events(limiters.clone(), url.clone())
        }));
        let (state, limiters, url) = (
            self.state.clone(),
            self.limiters.clone(),
            self.database_url.clone(),
        );
        tasks.spawn(supervise("quota-adjustments", backoff, move || {
            quota_adjust::apply_quota_adjustments(state.clone(), limiters.clone(), url.clone())
        }));
        let state = self.state.clone();
        tasks.spawn(supervise("websocket-keys", backoff, move || {
            close_revoked_websockets(state.clone())
        }));
        let _ = shutdown.changed().await;
        // Dropping the set aborts the supervisors, and each its task.
        tasks.abort_all();
    }
}

// ---------------------------------------------------------------------------
// WebSockets

/// Every `proxy.websocket_key_check`, close the open WebSockets whose key
/// the (refreshed) key set no longer accepts.
async fn close_revoked_websockets(state: Arc<State>) {
    loop {
        crate::period::wait(|| state.config.load().config.proxy.edge.websocket_key_check).await;
        if state.websockets.is_empty() {
            continue;
        }
        let db = state.db.load();
        let cfg = state.config.load();
        let now = tollgate_core::now_ms();
        let closed = state.websockets.close_revoked(|open| {
            // The upgrade's checks as of now: the key still valid, the
            // route still a WebSocket route whose address rules, and the
            // key's scopes, addresses and plan, still let it through
            // (key changes and config reloads alike).
            db.keys.lookup(&open.key, now).is_ok_and(|key| {
                crate::access::websocket_allowed(key, &open.route, open.client, &cfg, &db)
            })
        });
        if closed > 0 {
            tracing::info!("closed {closed} WebSocket(s) whose key no longer allows them");
        }
    }
}

// ---------------------------------------------------------------------------
// Key refresh

/// How long the key refresh waits for its fingerprint query.
const FINGERPRINT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the key refresh waits to (re)connect.
const REFRESH_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long loading the whole key set and the plans may take.
const REFRESH_LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between attempts while the refresh fails.
const REFRESH_MAX_BACKOFF: Duration = Duration::from_secs(5);

async fn refresh_keys(state: Arc<State>, url: String) {
    let mut db: Option<Db> = None;
    let mut last = None;
    let mut failures = 0u32;
    loop {
        match refresh_once(&state, &url, &mut db, &mut last).await {
            Ok(()) => {
                failures = 0;
                metrics::KEYS_LAST_REFRESH.set(tollgate_core::now_ms() as f64 / 1000.0);
            }
            Err(e) => {
                metrics::KEY_REFRESH_ERRORS.inc();
                if failures == 0 {
                    tracing::warn!("key refresh failed, the last key set stays: {e}");
                } else {
                    tracing::debug!("key refresh failed again: {e}");
                }
                failures = failures.saturating_add(1);
            }
        }
        // The interval as reloaded meanwhile, too.
        crate::period::wait(|| {
            refresh_wait(state.config.load().config.storage.key_refresh, failures)
        })
        .await;
    }
}

/// The wait after a key refresh: `every`, or while the database is in
/// trouble a backoff, never slower than REFRESH_MAX_BACKOFF (or `every` if
/// longer).
fn refresh_wait(every: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return every;
    }
    let factor = 1u32 << failures.min(6);
    every
        .saturating_mul(factor)
        .min(REFRESH_MAX_BACKOFF.max(every))
}

/// The key set's, the plans' and the identities' fingerprints.
type Fingerprints = (Fingerprint, Fingerprint, Fingerprint);

/// One check: connect if needed, compare the fingerprints, reload on
/// change. Every step has a deadline.
async fn refresh_once(
    state: &State,
    url: &str,
    db: &mut Option<Db>,
    last: &mut Option<Fingerprints>,
) -> Result<(), String> {
    if db.is_none() {
        let connected = tokio::time::timeout(REFRESH_CONNECT_TIMEOUT, Db::connect(url))
            .await
            .map_err(|_| format!("connecting timed out after {REFRESH_CONNECT_TIMEOUT:?}"))?
            .map_err(|e| format!("cannot connect to the database: {e}"))?;
        *db = Some(connected);
    }
    let Some(d) = db.as_ref() else {
        return Ok(());
    };
    let fp = tokio::time::timeout(FINGERPRINT_TIMEOUT, fingerprints(d))
        .await
        .map_err(|_| format!("no answer from the database within {FINGERPRINT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    if *last == Some(fp) {
        return Ok(());
    }
    let new = tokio::time::timeout(REFRESH_LOAD_TIMEOUT, load_db_state(d))
        .await
        .map_err(|_| format!("loading keys took longer than {REFRESH_LOAD_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    tracing::debug!(keys = new.keys.len(), "key set refreshed");
    report_plan_conflicts(&state.config.load().config, &new);
    state.db.store(Arc::new(new));
    *last = Some(fp);
    Ok(())
}

async fn fingerprints(db: &Db) -> Result<Fingerprints, tollgate_core::db::DbError> {
    Ok((
        db.keys_fingerprint().await?,
        db.plans_fingerprint().await?,
        db.identities_fingerprint().await?,
    ))
}

/// Log (and count in a gauge) plan names defined both in the YAML and in the
/// database: the YAML plan is enforced, the database plan is shadowed.
pub fn report_plan_conflicts(config: &tollgate_core::config::Config, db: &DbState) -> usize {
    let both = reload::plan_conflicts(config, db.plans.keys().map(String::as_str));
    let before = metrics::PLAN_CONFLICTS.get();
    metrics::PLAN_CONFLICTS.set(both.len() as i64);
    if let Some(msg) = reload::plan_conflict_message(&both) {
        if before != both.len() as i64 {
            tracing::error!("{msg}; the YAML plan is used");
        }
    }
    both.len()
}

// ---------------------------------------------------------------------------
// Config reload

async fn reload_config(
    state: Arc<State>,
    path: Option<PathBuf>,
    listener_cert: Option<Arc<ListenerCert>>,
) {
    let Some(path) = path else {
        std::future::pending::<()>().await;
        return;
    };
    let mut watch =
        FileWatch::for_running(path.clone(), RELOAD_SETTLE, &state.config.load().config);
    loop {
        tokio::time::sleep(RELOAD_POLL).await;
        match watch.poll(Instant::now()) {
            WatchEvent::Nothing => {}
            WatchEvent::Readable => {
                tracing::info!(file = %path.display(), "config file readable again");
            }
            WatchEvent::Unreadable(e) => {
                metrics::CONFIG_RELOADS
                    .with_label_values(&["unreadable"])
                    .inc();
                tracing::error!(
                    file = %path.display(),
                    "config file unreadable, the running config stays: {e}"
                );
            }
            WatchEvent::Changed(text) => {
                match apply_config(&state, &path, &text, listener_cert.as_deref()).await {
                    Ok(()) => {
                        metrics::CONFIG_RELOADS.with_label_values(&["ok"]).inc();
                        tracing::info!(file = %path.display(), "config reloaded");
                    }
                    Err(e) => {
                        metrics::CONFIG_RELOADS.with_label_values(&["failed"]).inc();
                        tracing::error!("config reload refused, the running config stays:\n{e}");
                        watch.refused(Instant::now());
                    }
                }
            }
            // Checked again quietly: counted and logged only once it passes.
            WatchEvent::Retry(text) => {
                match apply_config(&state, &path, &text, listener_cert.as_deref()).await {
                    Ok(()) => {
                        metrics::CONFIG_RELOADS.with_label_values(&["ok"]).inc();
                        tracing::info!(file = %path.display(), "config reloaded (what refused it is gone)");
                    }
                    Err(e) => {
                        tracing::debug!("config still refused:\n{e}");
                        watch.refused(Instant::now());
                    }
                }
            }
        }
    }
}

/// Validate `text` as a served config (routes present, plan names not also
/// in the database, TLS files usable) and swap it in.
async fn apply_config(
    state: &Arc<State>,
    path: &std::path::Path,
    text: &str,
    listener_cert: Option<&ListenerCert>,
) -> Result<(), String> {
    // Parsing is CPU work on operator input: off the async workers, so that a
    // slow document never holds up key refresh or health checks.
    let (src, name) = (text.to_string(), path.display().to_string());
    let mut new = tokio::task::spawn_blocking(move || reload::parse_for_serving(&src, &name))
        .await
        .map_err(|e| format!("parsing the config failed: {e}"))?
        .map_err(|e| e.to_string())?;
    new.source = Some(path.to_path_buf());
    let both = reload::plan_conflicts(&new, state.db.load().plans.keys().map(String::as_str));
    if let Some(msg) = reload::plan_conflict_message(&both) {
        return Err(format!("{}: {msg}", path.display()));
    }
    let old = state.config.load_full();
    // As the admin role does (`dev` runs both on one file).
    restart::settle(&old.config, &mut new, restart::Role::Proxy)
        .map_err(|problem| format!("{}: {problem}", path.display()))?;
    // Certificate, key and CA files are re-read with every reload.
    let files = tls::prepare_reload(&new).map_err(|e| e.to_string())?;
    let compiled = tokio::task::spawn_blocking(move || ConfigState::compile(new, Some(&old)))
        .await
        .map_err(|e| format!("compiling the config failed: {e}"))?;
    state.config.store(Arc::new(compiled));
    files.apply(listener_cert);
    Ok(())
}

// ---------------------------------------------------------------------------
// Upstreams

async fn health_checks(state: Arc<State>) {
    let mut last_run: HashMap<String, Instant> = HashMap::new();
    loop {
        let cfg = state.config.load_full();
        let mut healthy = 0usize;
        for (name, pool) in &cfg.upstreams {
            let Some(hc) = &pool.config.health_check else {
                healthy += pool.health().iter().filter(|h| h.healthy).count();
                continue;
            };
            let due = last_run
                .get(name)
                .is_none_or(|t| t.elapsed() >= hc.interval);
            if due {
                pool.run_health_check().await;
                last_run.insert(name.clone(), Instant::now());
            }
            healthy += pool.health().iter().filter(|h| h.healthy).count();
        }
        metrics::UPSTREAM_HEALTHY.set(healthy as f64);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Resolve the host names among upstream targets again every
/// `resolve_interval`; a pool whose addresses changed is rebuilt (and the
/// config state swapped, unless a reload swapped it meanwhile: the reload
/// resolved afresh anyway). A failed resolution keeps the old addresses.
async fn resolve_upstreams(state: Arc<State>) {
    let mut last_run: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cfg = state.config.load_full();
        let mut changed: BTreeSet<String> = BTreeSet::new();
        for (name, pool) in &cfg.upstreams {
            if !pool.has_host_names() {
                continue;
            }
            let due = last_run
                .get(name)
                .is_none_or(|t| t.elapsed() >= pool.config.resolve_interval);
            if !due {
                continue;
            }
            last_run.insert(name.clone(), Instant::now());
            let config = pool.config.clone();
            let fresh = tokio::task::spawn_blocking(move || upstreams::resolve(&config)).await;
            match fresh {
                Ok(Ok(addrs)) if addrs != pool.addresses() => {
                    tracing::info!(upstream = %name, "upstream addresses changed: {addrs:?}");
                    changed.insert(name.clone());
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    metrics::UPSTREAM_RESOLVE_ERRORS.inc();
                    tracing::warn!(upstream = %name, "cannot resolve upstream targets, keeping the previous addresses: {e}");
                }
                Err(e) => {
                    metrics::UPSTREAM_RESOLVE_ERRORS.inc();
                    tracing::warn!(upstream = %name, "resolving upstream targets failed: {e}");
                }
            }
        }
        if changed.is_empty() {
            continue;
        }
        let old = cfg.clone();
        let rebuilt =
            tokio::task::spawn_blocking(move || old.with_upstreams_rebuilt(&changed)).await;
        match rebuilt {
            Ok(new) => {
                let prev = state.config.compare_and_swap(&cfg, Arc::new(new));
                if !Arc::ptr_eq(&prev, &cfg) {
                    tracing::debug!(
                        "config reloaded while re-resolving; the reload's addresses stay"
                    );
                }
            }
            Err(e) => tracing::warn!("rebuilding upstream pools failed: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Limiter

async fn sweep_limiter(limiter: Arc<LocalLimiter>) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let removed = limiter.sweep();
        metrics::LIMITER_SUBJECTS.set(limiter.len() as i64);
        tracing::trace!(removed, "limiter swept");
    }
}

/// Create the Redis limiter as soon as the config asks for one (so it is
/// connected before the first request) and publish its breaker state,
/// over-limit cache and lease figures.
async fn watch_redis(state: Arc<State>, limiters: Arc<Limiters>) {
    loop {
        let cfg = state.config.load_full();
        match limiters.redis_for(&cfg.config.limiter) {
            Some(redis) => {
                metrics::REDIS_BREAKER_STATE.set(redis.breaker_state().as_i64());
                metrics::REDIS_UP.set(i64::from(redis.reachable()));
                metrics::OVER_LIMIT_CACHE_HITS.set(redis.over_limit_cache().hits() as i64);
                let leases = redis.leases();
                metrics::LEASED_TOKENS.set(i64::try_from(leases.outstanding()).unwrap_or(i64::MAX));
                metrics::LEASE_HITS.set(i64::try_from(leases.hits()).unwrap_or(i64::MAX));
                redis.over_limit_cache().sweep(Instant::now());
            }
            None => {
                metrics::REDIS_BREAKER_STATE.set(0);
                metrics::REDIS_UP.set(0);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------
// Listener certificate

/// Re-read the listener certificate every second when its files change.
async fn watch_certificate(cert: Option<Arc<ListenerCert>>, state: Arc<State>) {
    let Some(cert) = cert else {
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cfg = state.config.load_full();
        let Some(tls) = &cfg.config.proxy.tls else {
            continue;
        };
        match cert.refresh(tls) {
            Ok(false) => {}
            Ok(true) => {
                metrics::CONFIG_RELOADS.with_label_values(&["ok"]).inc();
                tracing::info!(cert = %tls.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                metrics::CONFIG_RELOADS.with_label_values(&["failed"]).inc();
                tracing::error!("TLS certificate not reloaded, the current one stays: {e}");
            }
        }
    }
}
