//! Start-up: connect the database, create the first admin and settle the
//! JWT secret ([`bootstrap`], [`bootstrap_dev`], [`bootstrap_with_db`]).

use tollgate_core::config::Config;
use tollgate_core::db::{settings, Db, DbError};

use crate::error::ApiError;
use crate::password::{self, Argon2Gate};
use crate::state::AppState;

/// The environment variable that sets the first admin's password.
pub const ADMIN_PASSWORD_ENV: &str = "TOLLGATE_ADMIN_PASSWORD";
/// The username of the admin created on first start.
pub const INITIAL_ADMIN: &str = "admin";

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
    if let Some(s) = env_secret(env_name)? {
        return Ok(s.into_bytes());
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

/// The secret in the variable named `env_name`, if it is set and non-empty;
/// refused when weak ([`BootstrapError::WeakSecret`]; a reload naming
/// another variable is checked by the same rule:
/// `tollgate_core::config::restart::restart_problem`).
fn env_secret(env_name: &str) -> Result<Option<String>, BootstrapError> {
    if env_name.is_empty() {
        return Ok(None);
    }
    let Some(s) = std::env::var(env_name).ok().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    match password::weak_secret_reason(&s) {
        Some(reason) => Err(BootstrapError::WeakSecret {
            var: env_name.to_string(),
            reason,
        }),
        None => Ok(Some(s)),
    }
}
