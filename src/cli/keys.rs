//! `tollgate keys …`: manage API keys in the configured database directly.
//! Every change is written to the audit log as `cli:<OS user>`.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use tollgate_core::db::{ApiKey, Db, KeyFilter, KeyPatch, NewApiKey};
use tollgate_core::rules::access::Scopes;
use tollgate_core::rules::keys as key_rules;
use tollgate_core::{duration, now_ms};

use super::audit::record_key;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it: the only time the full key is shown.
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// The plan whose limits apply (from the YAML config or the API).
        #[arg(long)]
        plan: Option<String>,
        /// Who the key belongs to.
        #[arg(long)]
        owner: Option<String>,
        /// Expire the key after this long (e.g. 30d, 12h).
        #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
        expires_in: Option<Duration>,
        /// The identity the key belongs to (its id, external id, `id:N` or `ext:X`).
        #[arg(long)]
        identity: Option<String>,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Change a key's scopes or client networks.
    Update {
        id: i64,
        #[command(flatten)]
        access: AccessArgs,
        /// Remove the key's own scopes (its plan's apply, else none).
        #[arg(long, conflicts_with_all = ["routes", "methods"])]
        clear_scopes: bool,
        /// Let the key be used from any address.
        #[arg(long, conflicts_with = "allowed_ips")]
        clear_allowed_ips: bool,
    },
    /// List keys (only their prefixes, never the secrets).
    List {
        /// Only keys whose name contains this (case-insensitive).
        #[arg(long)]
        name: Option<String>,
        /// Only keys on this plan.
        #[arg(long)]
        plan: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Refuse a key (403) until it is enabled again.
    Disable { id: i64 },
    /// Accept a disabled key again.
    Enable { id: i64 },
    /// Issue a new secret for a key and print it.
    Rotate {
        id: i64,
        /// Keep the old secret valid this long (e.g. 1h); without it the old
        /// secret stops working at once.
        #[arg(long, value_name = "DURATION", value_parser = any_duration)]
        grace: Option<Duration>,
    },
    /// Delete a key for good.
    Delete { id: i64 },
    /// Top up (or, with a negative number, take away) a key's prepaid
    /// credits. Reaches every proxy within a second; applied exactly once.
    Credits {
        id: i64,
        /// Credits to add (negative: to take away), e.g. `--add 50`.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        add: i64,
    },
    /// Set (or --remove) the key's own credit refill: its balance is set to
    /// --amount at each period start (--every 1d, or --period month
    /// [--anchor 15] [--time-zone Europe/Paris]); wins over its plan's.
    Refill {
        id: i64,
        #[command(flatten)]
        refill: super::refill::RefillArgs,
    },
    /// Reset (or adjust) the current period of one of a key's quotas.
    /// Reaches every proxy within a second; applied exactly once.
    Quota {
        id: i64,
        /// The quota limit's name.
        name: String,
        #[command(flatten)]
        change: super::quotas::ChangeArgs,
    },
}

/// `--routes`, `--methods`, `--allowed-ips` (comma-separated or repeated).
#[derive(Debug, Default, clap::Args)]
pub struct AccessArgs {
    /// Routes the key may use, by name; `*` matches any run of characters
    /// (e.g. `users,billing-*`). Anything else is 403 `scope-denied`.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    routes: Option<Vec<String>>,
    /// HTTP methods the key may use (e.g. `GET,HEAD`).
    #[arg(long, value_name = "METHOD", value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Client networks the key may be used from (e.g. `203.0.113.0/24`);
    /// from elsewhere it is 403 `ip-not-allowed`.
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    allowed_ips: Option<Vec<String>>,
}

impl AccessArgs {
    /// Scopes from the flags on top of `current` (a list not given stays).
    fn scopes(&self, current: Option<Scopes>) -> Option<Scopes> {
        if self.routes.is_none() && self.methods.is_none() {
            return current;
        }
        let current = current.unwrap_or_default();
        Some(Scopes {
            routes: self.routes.clone().or(current.routes),
            methods: self.methods.clone().or(current.methods),
        })
    }
}

fn any_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match any_duration(s)? {
        d if d.is_zero() => Err("must be longer than 0".to_string()),
        d => Ok(d),
    }
}

/// The command-line flag of a key field, for messages.
fn flag(field: &str) -> &str {
    match field {
        "expires_at" => "--expires-in",
        "name" => "--name",
        "owner" => "--owner",
        "plan" => "--plan",
        f if f.starts_with("scopes.routes") => "--routes",
        f if f.starts_with("scopes.methods") => "--methods",
        f if f.starts_with("allowed_ips") => "--allowed-ips",
        other => other,
    }
}

/// Refuse `keys create --plan NAME` when NAME is neither a YAML plan of
/// `config` nor a plan in its database (such a key would be refused with
/// 403 `unknown-plan` on every request), with the admin API's message.
pub async fn check(
    cmd: &KeysCommand,
    config: &tollgate_core::config::Config,
) -> anyhow::Result<()> {
    let KeysCommand::Create { plan, .. } = cmd else {
        return Ok(());
    };
    let Some(plan) = plan else {
        return Ok(());
    };
    super::check_plan_exists(plan, config).await
}

/// Run one `keys` subcommand against `database_url`.
pub async fn run(cmd: KeysCommand, config: &tollgate_core::config::Config) -> anyhow::Result<()> {
    let plans = config.plans.clone();
    super::with_db(&config.storage.database_url, |db| async move {
        execute(&db, cmd, &plans).await
    })
    .await
}

async fn execute(
    db: &Db,
    cmd: KeysCommand,
    plans: &std::collections::BTreeMap<String, tollgate_core::config::Plan>,
) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create {
            name,
            plan,
            owner,
            expires_in,
            identity,
            access,
        } => {
            let identity_id = match identity {
                Some(which) => Some(super::identity_arg::find(db, &which).await?.id),
                None => None,
            };
            let mut new = NewApiKey {
                identity_id,
                name,
                owner,
                plan,
                scopes: access.scopes(None),
                allowed_ips: access.allowed_ips.clone(),
                expires_at: expires_in.map(|d| {
                    now_ms().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                }),
                ..NewApiKey::default()
            };
            // What the admin API refuses, with its messages.
            if let Err(e) = key_rules::normalise_access(&mut new.scopes, &mut new.allowed_ips)
                .and_then(|()| key_rules::check_new_key(&new, now_ms()))
            {
                bail!("{}: {}", flag(&e.field), e.message);
            }
            new.name = key_rules::normalise_name(&new.name);
            let (key, plain) = db.create_key(&new).await.context("cannot create the key")?;
            record_key(db, "key.create", key.id, None, Some(&key)).await;
            outln!("created key {}", key.id);
            print_details(&key);
            outln!("key:     {plain}");
            eprintln!("This is the only time the full key is shown: store it now.");
        }
        KeysCommand::Update {
            id,
            access,
            clear_scopes,
            clear_allowed_ips,
        } => {
            let before = db.get_key(id).await?.ok_or_else(|| no_key(id))?;
            let mut scopes = if clear_scopes {
                None
            } else {
                access.scopes(before.scopes.clone())
            };
            let mut ips = if clear_allowed_ips {
                None
            } else {
                access.allowed_ips.clone().or(before.allowed_ips.clone())
            };
            if let Err(e) = key_rules::normalise_access(&mut scopes, &mut ips) {
                bail!("{}: {}", flag(&e.field), e.message);
            }
            let patch = KeyPatch {
                scopes: Some(scopes),
                allowed_ips: Some(ips),
                ..KeyPatch::default()
            };
            let key = db.update_key(id, &patch).await?.ok_or_else(|| no_key(id))?;
            record_key(db, "key.update", id, Some(&before), Some(&key)).await;
            outln!("updated key {} ({})", key.id, key.name);
            print_details(&key);
        }
        KeysCommand::List { name, plan, json } => {
            let keys = list_all(db, name, plan).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&keys)?);
            } else if keys.is_empty() {
                outln!("no keys");
            } else {
                out!("{}", table(&keys, now_ms()));
            }
        }
        KeysCommand::Credits { id, add } => super::credits::top_up(db, id, add).await?,
        KeysCommand::Refill { id, refill } => super::refill::key_refill(db, id, refill).await?,
        KeysCommand::Quota { id, name, change } => {
            let kind = tollgate_core::credits::SubjectKind::Key;
            super::quotas::adjust(db, plans, kind, id, &name, &change).await?;
        }
        KeysCommand::Disable { id } => {
            let before = db.get_key(id).await?;
            let key = db
                .set_key_enabled(id, false)
                .await?
                .ok_or_else(|| no_key(id))?;
            record_key(db, "key.disable", id, before.as_ref(), Some(&key)).await;
            outln!("disabled key {} ({})", key.id, key.name);
        }
        KeysCommand::Enable { id } => {
            let before = db.get_key(id).await?;
            let key = db
                .set_key_enabled(id, true)
                .await?
                .ok_or_else(|| no_key(id))?;
            record_key(db, "key.enable", id, before.as_ref(), Some(&key)).await;
            outln!("enabled key {} ({})", key.id, key.name);
        }
        KeysCommand::Rotate { id, grace } => {
            let grace = grace.unwrap_or(Duration::ZERO);
            if let Err(m) = key_rules::check_grace(grace) {
                bail!("--grace: {m}");
            }
            let before = db.get_key(id).await?;
            let (key, plain) = db.rotate_key(id, grace).await?.ok_or_else(|| no_key(id))?;
            record_key(db, "key.rotate", id, before.as_ref(), Some(&key)).await;
            outln!("rotated key {} ({})", key.id, key.name);
            outln!("prefix:  {}", key.key_prefix);
            outln!("key:     {plain}");
            if grace.is_zero() {
                outln!("the previous secret no longer works");
            } else {
                let until =
                    now_ms().saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
                outln!("the previous secret works until {}", when(until));
            }
            eprintln!("This is the only time the new key is shown: store it now.");
        }
        KeysCommand::Delete { id } => {
            let before = db.get_key(id).await?;
            let name = before.as_ref().map(|k| k.name.clone());
            if !db.delete_key(id).await? {
                return Err(no_key(id));
            }
            record_key(db, "key.delete", id, before.as_ref(), None).await;
            match name {
                Some(n) => outln!("deleted key {id} ({n})"),
                None => outln!("deleted key {id}"),
            }
        }
    }
    Ok(())
}

fn no_key(id: i64) -> anyhow::Error {
    anyhow::anyhow!("no key with id {id} (see `tollgate keys list`)")
}

/// Every matching key, page by page.
async fn list_all(
    db: &Db,
    name: Option<String>,
    plan: Option<String>,
) -> anyhow::Result<Vec<ApiKey>> {
    const PAGE: i64 = 500;
    let mut filter = KeyFilter {
        name,
        plan,
        enabled: None,
        identity_id: None,
        limit: PAGE,
        offset: 0,
    };
    let mut out = Vec::new();
    loop {
        let (page, total) = db.list_keys(&filter).await?;
        let n = page.len() as i64;
        out.extend(page);
        filter.offset += n;
        if n < PAGE || filter.offset >= total {
            return Ok(out);
        }
    }
}

fn print_details(key: &ApiKey) {
    outln!("name:    {}", key.name);
    if let Some(owner) = &key.owner {
        outln!("owner:   {owner}");
    }
    outln!("plan:    {}", key.plan.as_deref().unwrap_or("-"));
    if let Some(at) = key.expires_at {
        outln!("expires: {}", when(at));
    }
    if let Some(s) = &key.scopes {
        if let Some(r) = &s.routes {
            outln!("routes:  {}", r.join(","));
        }
        if let Some(m) = &s.methods {
            outln!("methods: {}", m.join(","));
        }
    }
    if let Some(ips) = &key.allowed_ips {
        outln!("from:    {}", ips.join(","));
    }
    outln!("prefix:  {}", key.key_prefix);
}

/// Unix ms as `2025-01-31 12:00 UTC`.
fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn state(key: &ApiKey, now: i64) -> &'static str {
    if !key.enabled {
        "disabled"
    } else if key.expires_at.is_some_and(|at| now >= at) {
        "expired"
    } else {
        "active"
    }
}

/// An aligned table, the id first on every line.
fn table(keys: &[ApiKey], now: i64) -> String {
    let header = [
        "ID",
        "NAME",
        "PLAN",
        "STATE",
        "PREFIX",
        "EXPIRES",
        "LAST USED",
    ];
    let rows: Vec<[String; 7]> = keys
        .iter()
        .map(|k| {
            [
                k.id.to_string(),
                k.name.clone(),
                k.plan.clone().unwrap_or_else(|| "-".into()),
                state(k, now).to_string(),
                format!("{}…", k.key_prefix),
                k.expires_at.map(when).unwrap_or_else(|| "never".into()),
                k.last_used_at.map(when).unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&header.map(String::from));
    for row in &rows {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: i64, name: &str, enabled: bool, expires_at: Option<i64>) -> ApiKey {
        ApiKey {
            id,
            name: name.into(),
            owner: None,
            metadata: serde_json::json!({}),
            plan: Some("pro".into()),
            limits: None,
            concurrency: None,
            scopes: None,
            allowed_ips: None,
            enabled,
            expires_at,
            created_at: 0,
            updated_at: 0,
            last_used_at: None,
            key_prefix: "tg_abcdefgh".into(),
            identity_id: None,
        }
    }

    #[test]
    fn table_lines_start_with_the_id_and_show_the_state() {
        let keys = [
            key(1, "one", true, None),
            key(22, "two", false, None),
            key(3, "three", true, Some(5)),
        ];
        let text = table(&keys, 10);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID"));
        assert_eq!(lines[1].split_whitespace().next(), Some("1"));
        assert!(lines[1].contains("active") && lines[1].contains("tg_abcdefgh"));
        assert!(lines[2].starts_with("22") && lines[2].contains("disabled"));
        assert!(lines[3].contains("expired"));
        // Columns line up.
        let col = lines[0].find("NAME").expect("NAME column");
        assert!(lines
            .iter()
            .skip(1)
            .all(|l| l[col..].starts_with(['o', 't'])));
    }

    #[test]
    fn durations_are_checked() {
        assert_eq!(
            positive_duration("30d"),
            Ok(Duration::from_secs(30 * 86400))
        );
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("soon").is_err());
        assert_eq!(any_duration("0s"), Ok(Duration::ZERO));
    }
}
