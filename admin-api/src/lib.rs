//! Tollgate's admin API: an Axum service over the shared database that
//! manages admins, API keys and plans, reports health and serves its own
//! OpenAPI document. Everything is under `/api`, JSON in and out, with a JWT
//! (HS256, `admin.session_ttl`, default 12 h) in `Authorization: Bearer`
//! except for login, the health summary and the OpenAPI document. Every
//! handler states the role it needs (`viewer`, `admin`, `owner`) through its
//! extractor, and every change is written to the audit log. Errors are RFC
//! 9457 problem+json ([`error::ApiError`]).
//!
//! Start it with [`bootstrap`] (connect, first admin, JWT secret) and
//! [`serve`]; [`app`] is the bare router.

pub mod admins;
pub mod analytics;
pub mod audit;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod health;
pub mod keys;
pub mod listener;
pub mod login_guard;
pub mod metrics;
pub mod openapi;
pub mod password;
pub mod plans;

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use tollgate_core::config::Config;
use tollgate_core::db::{settings, Db, DbError};
use tower_http::trace::TraceLayer;

use crate::auth::JwtKeys;
use crate::error::ApiError;
use crate::login_guard::LoginGuard;
use crate::password::Argon2Gate;

/// The environment variable that sets the first admin's password.
pub const ADMIN_PASSWORD_ENV: &str = "TOLLGATE_ADMIN_PASSWORD";
/// The username of the admin created on first start.
pub const INITIAL_ADMIN: &str = "admin";
/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

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
    health: health::HealthCache,
    started_at: i64,
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
        Self {
            inner: Arc::new(Inner {
                db,
                config: ArcSwap::from_pointee(config),
                jwt: JwtKeys::new(jwt_secret, ttl),
                login_guard: LoginGuard::default(),
                argon2,
                health: health::HealthCache::default(),
                started_at: tollgate_core::now_ms(),
            }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The current config (YAML plans, upstreams, limiter backend).
    pub fn config(&self) -> Arc<Config> {
        self.inner.config.load_full()
    }

    /// Swap in a reloaded config (hot reload of the YAML file).
    pub fn set_config(&self, config: Config) {
        self.inner.config.store(Arc::new(config));
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

    pub fn health_cache(&self) -> &health::HealthCache {
        &self.inner.health
    }

    /// Unix ms this state was created (the admin API's start).
    pub fn started_at(&self) -> i64 {
        self.inner.started_at
    }
}

/// The whole admin API router (every `/api` route, problem+json fallbacks).
pub fn app(state: AppState) -> Router {
    api_router()
        .merge(dashboard::router())
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(no_store))
        .layer(TraceLayer::new_for_http())
}

/// Every `/api` route without state, so other routers (the dashboard) can be
/// merged in before [`Router::with_state`].
pub fn api_router() -> Router<AppState> {
    Router::new()
        .merge(auth::router())
        .merge(admins::router())
        .merge(keys::router())
        .merge(plans::router())
        .merge(analytics::router())
        .merge(health::router())
        .merge(audit::router())
        .merge(openapi::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(deadline))
}

/// `Cache-Control: no-store` on every `/api` answer: tokens, new keys and
/// admin data must never sit in a browser or proxy cache.
async fn no_store(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let api = req.uri().path().starts_with("/api");
    let mut res = next.run(req).await;
    if api {
        res.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
    }
    res
}

/// How long an `/api` request may take. Handlers wait on nothing but the
/// database (and argon2, well under a second), so a request past this is a
/// database that does not answer: a refused or black-holed connection the
/// pool keeps retrying for its 10 s acquire timeout, or a query on a
/// connection that went silent (which nothing else would ever end). Longer
/// than SQLite's 5 s busy timeout (a legitimate wait for another writer)
/// plus argon2 on a loaded machine.
pub const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(9);

/// Answer 503 `database-unavailable` (with `Retry-After`) instead of hanging
/// when a request outlives [`REQUEST_DEADLINE`]. Dropping the handler rolls
/// back whatever transaction it had open.
async fn deadline(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = req.uri().path().to_string();
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!(%path, "request timed out waiting for the database");
            ApiError::DatabaseUnavailable(format!(
                "the database did not answer within {} s",
                REQUEST_DEADLINE.as_secs()
            ))
            .into_response()
        }
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// Serve the admin API on `listener` until `shutdown` completes, then finish
/// the requests in flight: header and idle timeouts, `admin.max_connections`,
/// the `Host` allow-list (see [`listener`]) and the audit retention task.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = state.config();
    let local = listener.local_addr()?;
    let opts = listener::Options::from_config(&config.admin, local);
    let retention = audit::spawn_retention(state.clone());
    // The hash unknown usernames are checked against: computed once, off
    // the async workers, before the first login needs it.
    tokio::task::spawn_blocking(|| {
        let _ = password::dummy_hash();
    });
    let app = app(state).layer(axum::middleware::from_fn_with_state(
        std::sync::Arc::new(opts.hosts.clone()),
        listener::check_host,
    ));
    let result = listener::serve(listener, app, opts, shutdown).await;
    retention.abort();
    result
}

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("database: {0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Setup(String),
    /// The JWT secret in the environment is refused: the admin role must not
    /// start (exit 2).
    #[error("{var} {reason}")]
    WeakSecret { var: String, reason: String },
}

impl From<ApiError> for BootstrapError {
    fn from(e: ApiError) -> Self {
        Self::Setup(e.to_string())
    }
}

/// Connect the configured database (running migrations), then [`bootstrap_with_db`].
pub async fn bootstrap(config: &Config) -> Result<(AppState, Option<String>), BootstrapError> {
    let db = Db::connect(&config.storage.database_url).await?;
    bootstrap_with_db(db, config).await
}

/// [`bootstrap`] for `tollgate dev`, a local first look: a password from
/// `TOLLGATE_ADMIN_PASSWORD` only needs to be long enough, not strong.
pub async fn bootstrap_dev(config: &Config) -> Result<(AppState, Option<String>), BootstrapError> {
    let db = Db::connect(&config.storage.database_url).await?;
    bootstrap_inner(db, config, PasswordPolicy::LengthOnly).await
}

/// How strictly the first admin's password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordPolicy {
    /// Length and strength (production).
    Full,
    /// Length only (`tollgate dev`).
    LengthOnly,
}

/// Prepare an already connected database:
/// - when there is no admin yet, create `admin` (an owner) with the password
///   from `TOLLGATE_ADMIN_PASSWORD`, or a random one, which is returned
///   (print it once; it is never stored in clear). `None`: no admin was
///   created, or its password came from the environment.
/// - the JWT secret is the value of the env var named by
///   `admin.jwt_secret_env` if set and non-empty (refused when shorter than 32
///   bytes or a placeholder: [`BootstrapError::WeakSecret`]), else a secret
///   generated once and kept in the `settings` table, so restarts keep
///   sessions valid.
pub async fn bootstrap_with_db(
    db: Db,
    config: &Config,
) -> Result<(AppState, Option<String>), BootstrapError> {
    bootstrap_inner(db, config, PasswordPolicy::Full).await
}

async fn bootstrap_inner(
    db: Db,
    config: &Config,
    policy: PasswordPolicy,
) -> Result<(AppState, Option<String>), BootstrapError> {
    let env_password = std::env::var(ADMIN_PASSWORD_ENV)
        .ok()
        .filter(|p| !p.is_empty());
    // The secret first: a refused secret must not leave an admin behind.
    let secret = resolve_jwt_secret(&db, &config.admin.jwt_secret_env).await?;
    let initial = ensure_first_admin_with(&db, env_password, policy).await?;
    Ok((AppState::new(db, config.clone(), &secret), initial))
}

/// Create the first admin (an owner) if there is none. Returns the generated
/// password, if one was generated.
pub async fn ensure_first_admin(
    db: &Db,
    password: Option<String>,
) -> Result<Option<String>, BootstrapError> {
    ensure_first_admin_with(db, password, PasswordPolicy::Full).await
}

async fn ensure_first_admin_with(
    db: &Db,
    password: Option<String>,
    policy: PasswordPolicy,
) -> Result<Option<String>, BootstrapError> {
    if db.count_admins().await? > 0 {
        return Ok(None);
    }
    let (password, generated) = match password {
        Some(p) => {
            let checked = match policy {
                PasswordPolicy::Full => password::validate_password(&p, INITIAL_ADMIN),
                PasswordPolicy::LengthOnly if p.chars().count() < password::MIN_PASSWORD_LEN => {
                    Err(ApiError::validation(
                        "password",
                        format!("must be at least {} characters", password::MIN_PASSWORD_LEN),
                    ))
                }
                PasswordPolicy::LengthOnly => Ok(()),
            };
            checked.map_err(|e| {
                BootstrapError::Setup(format!("{ADMIN_PASSWORD_ENV} is unusable: {e}"))
            })?;
            (p, false)
        }
        None => (password::random_password(20)?, true),
    };
    let phc = Argon2Gate::new(1, 0).hash(password.clone()).await?;
    match db
        .create_admin_with_role(INITIAL_ADMIN, &phc, tollgate_core::db::admins::Role::Owner)
        .await
    {
        Ok(_) => {
            tracing::info!("created the first admin, {INITIAL_ADMIN:?} (owner)");
            Ok(generated.then_some(password))
        }
        // Another instance created it at the same moment.
        Err(DbError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The JWT secret: `$env_name` if set, else the one kept in the database
/// (generated on first use).
pub async fn resolve_jwt_secret(db: &Db, env_name: &str) -> Result<Vec<u8>, BootstrapError> {
    if !env_name.is_empty() {
        if let Some(s) = std::env::var(env_name).ok().filter(|s| !s.is_empty()) {
            if let Some(reason) = password::weak_secret_reason(&s) {
                return Err(BootstrapError::WeakSecret {
                    var: env_name.to_string(),
                    reason,
                });
            }
            return Ok(s.into_bytes());
        }
    }
    if let Some(s) = db.get_setting(settings::JWT_SECRET).await? {
        return Ok(s.into_bytes());
    }
    let generated = password::generate_secret()?;
    let stored = db
        .put_setting_if_absent(settings::JWT_SECRET, &generated)
        .await?;
    tracing::info!(
        "generated a JWT secret and stored it in the database (set {env_name} to provide your own)"
    );
    Ok(stored.into_bytes())
}
