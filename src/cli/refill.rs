//! `tollgate keys refill <id> ...` and `tollgate identities refill
//! <identity> ...`: set, replace or remove a key's or an identity's own
//! credit refill (one rule: `tollgate_core::refill`), written to the
//! database and the audit log; the proxies apply it within
//! `storage.key_refresh`.

use anyhow::bail;
use serde_json::json;
use tollgate_core::credits::SubjectKind;
use tollgate_core::db::Db;
use tollgate_core::refill::{Refill, RefillSpec};

use super::audit::{cli_event, record};

/// The refill options.
#[derive(Debug, Clone, clap::Args)]
pub struct RefillArgs {
    /// The balance set at each period start (1 to 2^53 − 1).
    #[arg(long, value_name = "N")]
    pub amount: Option<u64>,
    /// Fixed periods from the Unix epoch, e.g. `1d`, `12h`.
    #[arg(long, value_name = "DURATION")]
    pub every: Option<String>,
    /// Calendar periods: day, week, month or year.
    #[arg(long)]
    pub period: Option<String>,
    /// Day of month (1-31), weekday, or MM-DD (with --period).
    #[arg(long)]
    pub anchor: Option<String>,
    /// IANA time zone (with --period; default UTC).
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Remove the refill of its own (its plan's applies again, if any).
    #[arg(long, conflicts_with_all = ["amount", "every", "period", "anchor", "time_zone"])]
    pub remove: bool,
}

/// Apply `args` to the subject `id` of `kind`, named `label` in messages.
pub async fn refill(
    db: &Db,
    kind: SubjectKind,
    id: i64,
    label: &str,
    args: RefillArgs,
) -> anyhow::Result<()> {
    let event = cli_event(&format!("{}.credits_refill", kind.as_str())).target(kind.as_str(), id);
    let changes = if args.remove {
        if !db.clear_credit_refill(kind, id).await? {
            bail!("{label} has no refill of its own");
        }
        outln!("{label}: refill removed");
        json!({ "removed": true })
    } else {
        let spec = RefillSpec {
            amount: args.amount,
            every: args.every,
            period: args.period,
            anchor: args.anchor,
            time_zone: args.time_zone,
        };
        if let Err((field, why)) = Refill::new(&spec) {
            bail!("--{}: {why}", field.replace('_', "-"));
        }
        db.set_credit_refill(kind, id, &spec).await?;
        let when = match (&spec.every, &spec.period) {
            (Some(e), _) => format!("every {e}"),
            (None, Some(p)) => format!(
                "each {p}{}{}",
                spec.anchor
                    .as_deref()
                    .map(|a| format!(" from {a}"))
                    .unwrap_or_default(),
                spec.time_zone
                    .as_deref()
                    .map(|z| format!(" ({z})"))
                    .unwrap_or_default()
            ),
            (None, None) => String::new(),
        };
        outln!(
            "{label}: credits set to {} {when}",
            spec.amount.unwrap_or(0)
        );
        json!({
            "amount": spec.amount, "every": spec.every, "period": spec.period,
            "anchor": spec.anchor, "time_zone": spec.time_zone,
        })
    };
    let event = event.changes(changes);
    record(db, event).await;
    Ok(())
}

/// `tollgate keys refill <id>`.
pub async fn key_refill(db: &Db, id: i64, args: RefillArgs) -> anyhow::Result<()> {
    let Some(key) = db.get_key(id).await? else {
        bail!("no key with id {id}");
    };
    refill(
        db,
        SubjectKind::Key,
        id,
        &format!("key {} ({})", key.id, key.name),
        args,
    )
    .await
}

/// `tollgate identities refill <identity>`.
pub async fn identity_refill(db: &Db, which: &str, args: RefillArgs) -> anyhow::Result<()> {
    let i = super::identity_arg::find(db, which).await?;
    refill(
        db,
        SubjectKind::Identity,
        i.id,
        &format!("identity {} ({})", i.id, i.external_id),
        args,
    )
    .await
}
