//! [`AppState`]: what every handler shares (database, config, JWT keys,
//! login guard, argon2 gate, health cache).

use std::sync::Arc;

use arc_swap::ArcSwap;
use tollgate_core::config::Config;
use tollgate_core::db::Db;

use crate::health_report::HealthCache;
use crate::jwt::JwtKeys;
use crate::login_guard::LoginGuard;
use crate::password::Argon2Gate;

/// Everything the handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    config: ArcSwap<Config>,
    jwt: JwtKeys,
    login_guard: LoginGuard,
    argon2: Argon2Gate,
    health: HealthCache,
    started_at: i64,
    exports: Arc<crate::export_slots::ExportSlots>,
    /// The listener's options (`admin.*`), swapped with the config.
    listener: crate::listener::Live,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("db", &self.inner.db.kind())
            .field("started_at", &self.inner.started_at)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a connected database, a validated config and the JWT secret.
    pub fn new(db: Db, config: Config, jwt_secret: &[u8]) -> Self {
        Self::with_argon2(db, config, jwt_secret, Argon2Gate::default())
    }

    /// [`AppState::new`] with a given argon2 gate (tests size it).
    pub fn with_argon2(db: Db, config: Config, jwt_secret: &[u8], argon2: Argon2Gate) -> Self {
        let ttl = config.admin.session_ttl;
        let listener = crate::listener::Options::from_config(&config.admin);
        Self {
            inner: Arc::new(Inner {
                db,
                config: ArcSwap::from_pointee(config),
                jwt: JwtKeys::new(jwt_secret, ttl),
                login_guard: LoginGuard::default(),
                argon2,
                health: HealthCache::default(),
                started_at: tollgate_core::now_ms(),
                exports: Arc::default(),
                listener: Arc::new(ArcSwap::from_pointee(listener)),
            }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The usage export slots (one per admin, a few per process).
    pub fn exports(&self) -> &Arc<crate::export_slots::ExportSlots> {
        &self.inner.exports
    }

    /// The current config (YAML plans, upstreams, limiter backend).
    pub fn config(&self) -> Arc<Config> {
        self.inner.config.load_full()
    }

    /// Swap in a reloaded config (hot reload of the YAML file): the plans,
    /// `admin.session_ttl` (tokens issued for longer are refused from now
    /// on) and the listener's `admin.*` options apply at once. What needs a
    /// restart (`admin.listen`, `admin.jwt_secret_env`,
    /// `storage.database_url`) is the caller's to report
    /// (`tollgate_core::config::restart::needs_restart`).
    pub fn set_config(&self, config: Config) {
        self.inner.jwt.set_ttl(config.admin.session_ttl);
        self.inner
            .listener
            .store(Arc::new(crate::listener::Options::from_config(
                &config.admin,
            )));
        self.inner.config.store(Arc::new(config));
    }

    /// The admin listener's current options (read per accept and request).
    pub fn listener_options(&self) -> crate::listener::Live {
        self.inner.listener.clone()
    }

    pub fn jwt(&self) -> &JwtKeys {
        &self.inner.jwt
    }

    pub fn login_guard(&self) -> &LoginGuard {
        &self.inner.login_guard
    }

    /// Every argon2 run (login, password set) goes through this gate.
    pub fn argon2(&self) -> &Argon2Gate {
        &self.inner.argon2
    }

    pub fn health_cache(&self) -> &HealthCache {
        &self.inner.health
    }

    /// Unix ms this state was created (the admin API's start).
    pub fn started_at(&self) -> i64 {
        self.inner.started_at
    }
}
