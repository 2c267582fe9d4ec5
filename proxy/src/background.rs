//! Background work of one proxy, off the request path: refreshing the key set
//! and database plans, reloading the config file, running upstream health
//! checks and sweeping full buckets out of the local limiter.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tollgate_core::config;
use tollgate_core::db::Db;

use crate::keyset::KeySet;
use crate::limiter::backends::Limiters;
use crate::limiter::LocalLimiter;
use crate::metrics;
use crate::state::{ConfigState, DbState, State};
use crate::tls::{self, ListenerCert};

/// Load keys and database plans once (also used at start-up).
pub async fn load_db_state(db: &Db) -> Result<DbState, tollgate_core::db::DbError> {
    let records = db.load_key_records().await?;
    let plans = db.list_plans().await?;
    let keys = KeySet::from_records(records);
    metrics::KEYS_LOADED.set(keys.len() as i64);
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
        let keys = refresh_keys(self.state.clone(), self.database_url.clone());
        let reload = reload_config(
            self.state.clone(),
            self.config_path.clone(),
            self.listener_cert.clone(),
        );
        let certs = tls::watch(self.listener_cert.clone(), self.state.clone());
        let health = health_checks(self.state.clone());
        let sweep = sweep_limiter(self.limiter.clone());
        let redis = watch_redis(self.state.clone(), self.limiters.clone());
        tokio::select! {
            _ = keys => {}
            _ = reload => {}
            _ = certs => {}
            _ = health => {}
            _ = sweep => {}
            _ = redis => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// How long the key refresh waits for its fingerprint query.
const FINGERPRINT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long the key refresh waits to (re)connect.
const REFRESH_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn refresh_keys(state: Arc<State>, url: String) {
    let mut db: Option<Db> = None;
    let mut last = None;
    loop {
        let every = state.config.load().config.storage.key_refresh;
        if db.is_none() {
            match tokio::time::timeout(REFRESH_CONNECT_TIMEOUT, Db::connect(&url)).await {
                Ok(Ok(d)) => db = Some(d),
                Ok(Err(e)) => {
                    metrics::KEY_REFRESH_ERRORS.inc();
                    tracing::warn!("key refresh: cannot connect to the database: {e}");
                }
                Err(_) => {
                    metrics::KEY_REFRESH_ERRORS.inc();
                    tracing::warn!("key refresh: connecting to the database timed out");
                }
            }
        }
        if let Some(d) = &db {
            // Bounded: a database that is down would otherwise hold this
            // check for the pool's whole acquire timeout (10 s) and the
            // failure would show in the metric only then.
            let Ok(checked) = tokio::time::timeout(FINGERPRINT_TIMEOUT, fingerprint(d)).await
            else {
                metrics::KEY_REFRESH_ERRORS.inc();
                tracing::warn!(
                    "key refresh: no answer from the database within {FINGERPRINT_TIMEOUT:?}"
                );
                tokio::time::sleep(every).await;
                continue;
            };
            match checked {
                Ok(fp) if Some(fp) == last => {}
                Ok(fp) => match load_db_state(d).await {
                    Ok(new) => {
                        tracing::debug!(keys = new.keys.len(), "key set refreshed");
                        state.db.store(Arc::new(new));
                        last = Some(fp);
                    }
                    Err(e) => {
                        metrics::KEY_REFRESH_ERRORS.inc();
                        tracing::warn!("key refresh failed: {e}");
                    }
                },
                Err(e) => {
                    metrics::KEY_REFRESH_ERRORS.inc();
                    tracing::warn!("key refresh failed: {e}");
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

async fn fingerprint(
    db: &Db,
) -> Result<(impl PartialEq + Copy, impl PartialEq + Copy), tollgate_core::db::DbError> {
    Ok((db.keys_fingerprint().await?, db.plans_fingerprint().await?))
}

/// What identifies a version of the config file without reading it.
fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

async fn reload_config(
    state: Arc<State>,
    path: Option<PathBuf>,
    listener_cert: Option<Arc<ListenerCert>>,
) {
    let Some(path) = path else {
        std::future::pending::<()>().await;
        return;
    };
    let mut last_stamp = stamp(&path);
    let mut last_text = std::fs::read_to_string(&path).ok();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stamp(&path);
        if now == last_stamp {
            continue;
        }
        last_stamp = now;
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if Some(&text) == last_text.as_ref() {
            continue;
        }
        last_text = Some(text.clone());
        match config::parse(&text, &path.display().to_string()) {
            Ok(mut new) => {
                new.source = Some(path.clone());
                let old = state.config.load_full();
                if new.proxy.listen != old.config.proxy.listen
                    || new.proxy.metrics_listen != old.config.proxy.metrics_listen
                    || new.proxy.tls.as_ref().map(|t| t.listen)
                        != old.config.proxy.tls.as_ref().map(|t| t.listen)
                {
                    tracing::warn!("listen addresses changed: they take effect after a restart");
                }
                // Certificate, key and CA files are re-read with every reload.
                let files = match tls::prepare_reload(&new) {
                    Ok(files) => files,
                    Err(e) => {
                        metrics::CONFIG_RELOADS.with_label_values(&["failed"]).inc();
                        tracing::error!("config reload refused, the running config stays: {e}");
                        continue;
                    }
                };
                let compiled =
                    tokio::task::spawn_blocking(move || ConfigState::compile(new, Some(&old)))
                        .await;
                match compiled {
                    Ok(c) => {
                        state.config.store(Arc::new(c));
                        files.apply(listener_cert.as_deref());
                        metrics::CONFIG_RELOADS.with_label_values(&["ok"]).inc();
                        tracing::info!(file = %path.display(), "config reloaded");
                    }
                    Err(e) => {
                        metrics::CONFIG_RELOADS.with_label_values(&["failed"]).inc();
                        tracing::error!("config reload failed: {e}");
                    }
                }
            }
            Err(errors) => {
                metrics::CONFIG_RELOADS.with_label_values(&["failed"]).inc();
                tracing::error!("config reload refused, the running config stays:\n{errors}");
            }
        }
    }
}

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

async fn sweep_limiter(limiter: Arc<LocalLimiter>) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let removed = limiter.sweep();
        metrics::LIMITER_SUBJECTS.set(limiter.len() as i64);
        tracing::trace!(removed, "limiter swept");
    }
}

/// Create the Redis limiter as soon as the config asks for one (so it is
/// connected before the first request) and publish its breaker state and
/// over-limit cache figures.
async fn watch_redis(state: Arc<State>, limiters: Arc<Limiters>) {
    loop {
        let cfg = state.config.load_full();
        match limiters.redis_for(&cfg.config.limiter) {
            Some(redis) => {
                metrics::REDIS_BREAKER_STATE.set(redis.breaker_state().as_i64());
                metrics::OVER_LIMIT_CACHE_HITS.set(redis.over_limit_cache().hits() as i64);
                redis.over_limit_cache().sweep(Instant::now());
            }
            None => metrics::REDIS_BREAKER_STATE.set(0),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
