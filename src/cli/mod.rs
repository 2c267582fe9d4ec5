//! The subcommands that do more than dispatch.

#[macro_use]
pub mod out;

pub mod audit;
pub mod check;
pub mod credits;
pub mod demo_traffic;
pub mod identities;
pub mod identity_arg;
pub mod keys;
pub mod quotas;
pub mod refill;
pub mod run;
pub mod service_tokens;
pub mod usage;

use std::future::Future;

use anyhow::Context;
use tollgate_core::db::Db;

/// Open the database at `database_url`, run `f` on it and close it again,
/// whatever `f` answered (the `keys` and `audit` subcommands).
pub async fn with_db<T, F, Fut>(database_url: &str, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let db = Db::connect(database_url)
        .await
        .context("cannot open the database")?;
    let result = f(db.clone()).await;
    db.close().await;
    result
}

/// `--plan NAME` names a YAML plan of `config` or a plan in its database.
pub async fn check_plan_exists(
    plan: &str,
    config: &tollgate_core::config::Config,
) -> anyhow::Result<()> {
    if config.plans.contains_key(plan) {
        return Ok(());
    }
    let db = Db::connect(&config.storage.database_url)
        .await
        .context("cannot open the database")?;
    let stored = db.list_plans().await;
    db.close().await;
    let stored = stored.context("cannot read the plans")?;
    if stored.iter().any(|p| p.name == plan) {
        return Ok(());
    }
    anyhow::bail!(
        "--plan: {}",
        tollgate_core::rules::keys::unknown_key_plan(
            plan,
            config.plans.keys(),
            stored.iter().map(|p| p.name.as_str()),
        )
    )
}
