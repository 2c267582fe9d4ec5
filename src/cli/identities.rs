//! `tollgate identities …`: manage identities (a customer owning several
//! keys) in the configured database directly. Every change is written to
//! the audit log as `cli:<OS user>`.

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::Value;
use tollgate_core::db::audit::diff;
use tollgate_core::db::{Db, Identity, IdentityFilter, KeyFilter, NewIdentity};
use tollgate_core::rules::identities as identity_rules;

use super::audit::{self, cli_event};
use super::identity_arg::find;

#[derive(Debug, Subcommand)]
pub enum IdentitiesCommand {
    /// Create an identity.
    Create {
        /// Your own id for it (e.g. a customer id): 1-128 of A-Z a-z 0-9 . _ - : @.
        #[arg(long)]
        external_id: String,
        /// A name to recognise it by.
        #[arg(long)]
        name: String,
        /// The plan its keys use when they name none.
        #[arg(long)]
        plan: Option<String>,
        /// Metadata: a JSON object (at most 4 KiB).
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
    },
    /// List identities.
    List {
        /// Only identities whose external id or name contains this.
        #[arg(long)]
        search: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one identity (by id, external id, `id:N` or `ext:X`) and its keys.
    Show {
        identity: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete an identity (by id, external id, `id:N` or `ext:X`); its keys stay, detached.
    Delete { identity: String },
    /// Top up (or, with a negative number, take away) an identity's prepaid
    /// credits: one balance all its keys spend. Reaches every proxy within
    /// `storage.key_refresh`; applied exactly once.
    Credits {
        /// The identity, by id or external id.
        identity: String,
        /// Credits to add (negative: to take away), e.g. `--add 50`.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        add: i64,
    },
    /// Set (or --remove) the identity's own credit refill: its shared
    /// balance is set to --amount at each period start (--every 1d, or
    /// --period month [--anchor 15] [--time-zone Europe/Paris]).
    Refill {
        /// The identity, by id or external id.
        identity: String,
        #[command(flatten)]
        refill: super::refill::RefillArgs,
    },
    /// Reset (or adjust) the current period of an identity's shared quota
    /// (`scope: identity`). Reaches every proxy within a second; applied
    /// exactly once.
    Quota {
        /// Its id or external id.
        identity: String,
        /// The quota limit's name.
        name: String,
        #[command(flatten)]
        change: super::quotas::ChangeArgs,
    },
}

async fn record(
    db: &Db,
    action: &str,
    id: i64,
    before: Option<&Identity>,
    after: Option<&Identity>,
) {
    let view = |i: Option<&Identity>| {
        i.and_then(|i| serde_json::to_value(i).ok())
            .map(|mut v| {
                if let Some(m) = v.as_object_mut() {
                    m.remove("updated_at");
                }
                v
            })
            .unwrap_or(Value::Null)
    };
    let event = cli_event(action)
        .target("identity", id)
        .changes(diff(&view(before), &view(after)));
    audit::record(db, event).await;
}

/// Refuse `identities create --plan NAME` when the plan exists nowhere.
pub async fn check(
    cmd: &IdentitiesCommand,
    config: &tollgate_core::config::Config,
) -> anyhow::Result<()> {
    let IdentitiesCommand::Create {
        plan: Some(plan), ..
    } = cmd
    else {
        return Ok(());
    };
    super::check_plan_exists(plan, config).await
}

pub async fn run(
    cmd: IdentitiesCommand,
    config: &tollgate_core::config::Config,
) -> anyhow::Result<()> {
    let plans = config.plans.clone();
    super::with_db(&config.storage.database_url, |db| async move {
        execute(&db, cmd, &plans).await
    })
    .await
}

async fn execute(
    db: &Db,
    cmd: IdentitiesCommand,
    plans: &std::collections::BTreeMap<String, tollgate_core::config::Plan>,
) -> anyhow::Result<()> {
    match cmd {
        IdentitiesCommand::Quota {
            identity,
            name,
            change,
        } => {
            let i = find(db, &identity).await?;
            let kind = tollgate_core::credits::SubjectKind::Identity;
            super::quotas::adjust(db, plans, kind, i.id, &name, &change).await?;
        }
        IdentitiesCommand::Create {
            external_id,
            name,
            plan,
            metadata,
        } => {
            let metadata = metadata
                .map(|m| serde_json::from_str::<Value>(&m))
                .transpose()
                .context("--metadata: not JSON")?;
            let mut new = NewIdentity {
                external_id,
                name,
                metadata,
                plan,
                limits: None,
            };
            if let Err(e) = identity_rules::check_new_identity(&new) {
                bail!("--{}: {}", e.field.replace('_', "-"), e.message);
            }
            new.name = identity_rules::normalise_name(&new.name);
            let i = db.create_identity(&new).await?;
            record(db, "identity.create", i.id, None, Some(&i)).await;
            outln!("created identity {} ({})", i.id, i.external_id);
        }
        IdentitiesCommand::List { search, json } => {
            let (all, _) = db
                .list_identities(&IdentityFilter {
                    search,
                    ..IdentityFilter::default()
                })
                .await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                outln!("no identities");
            } else {
                outln!("{:>6}  {:<32}  {:<24}  PLAN", "ID", "EXTERNAL ID", "NAME");
                for i in &all {
                    outln!(
                        "{:>6}  {:<32}  {:<24}  {}",
                        i.id,
                        i.external_id,
                        i.name,
                        i.plan.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        IdentitiesCommand::Show { identity, json } => {
            let i = find(db, &identity).await?;
            let (keys, _) = db
                .list_keys(&KeyFilter {
                    identity_id: Some(i.id),
                    ..KeyFilter::default()
                })
                .await?;
            if json {
                let out = serde_json::json!({ "identity": i, "keys": keys });
                outln!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                outln!("id:          {}", i.id);
                outln!("external id: {}", i.external_id);
                outln!("name:        {}", i.name);
                outln!("plan:        {}", i.plan.as_deref().unwrap_or("-"));
                outln!("metadata:    {}", i.metadata);
                let granted = db
                    .credits_granted(tollgate_core::credits::SubjectKind::Identity, i.id)
                    .await?;
                if let Some(g) = granted {
                    outln!("credits:     {g} granted in all");
                }
                outln!("keys:        {}", keys.len());
                for k in &keys {
                    outln!("  {:>6}  {}  {}", k.id, k.key_prefix, k.name);
                }
            }
        }
        IdentitiesCommand::Delete { identity } => {
            let i = find(db, &identity).await?;
            let holding = db.identity_keys_with_own_credits(i.id).await?;
            if !holding.is_empty() {
                bail!(tollgate_core::credits::identity_in_use_by_credits(
                    i.id, &holding
                ));
            }
            if !db.delete_identity(i.id).await? {
                bail!("no identity {identity:?}");
            }
            record(db, "identity.delete", i.id, Some(&i), None).await;
            outln!("deleted identity {} ({})", i.id, i.external_id);
        }
        IdentitiesCommand::Credits { identity, add } => {
            super::credits::top_up_identity(db, &identity, add).await?
        }
        IdentitiesCommand::Refill { identity, refill } => {
            super::refill::identity_refill(db, &identity, refill).await?
        }
    }
    Ok(())
}
