//! `tollgate keys quota <id> <name> --reset | --used-delta N` and
//! `tollgate identities quota <identity> <name> …`: reset or adjust a
//! quota's current period, written to the database (the proxies apply it
//! exactly once) and to the audit log. The same rules and messages as
//! `POST /api/keys/{id}/quotas/{name}` (`tollgate_core::db::quota_adjustments`).

use std::collections::BTreeMap;

use anyhow::bail;
use serde_json::json;
use tollgate_core::config::Plan;
use tollgate_core::credits::SubjectKind;
use tollgate_core::db::Db;
use tollgate_core::quota::adjust::QuotaChange;

use super::audit::{cli_event, os_user, record};

/// `--reset` / `--used-delta N` of both commands.
#[derive(Debug, Default, clap::Args)]
pub struct ChangeArgs {
    /// Set the current period's count back to 0.
    #[arg(long)]
    reset: bool,
    /// Uses to add to the current period's count (negative: to give back;
    /// never below 0), e.g. `--used-delta -10`.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    used_delta: Option<i64>,
}

fn flag(field: &str) -> &str {
    match field {
        "reset" => "--reset",
        _ => "--used-delta",
    }
}

pub async fn adjust(
    db: &Db,
    plans: &BTreeMap<String, Plan>,
    kind: SubjectKind,
    id: i64,
    name: &str,
    args: &ChangeArgs,
) -> anyhow::Result<()> {
    let change = match QuotaChange::from_fields(args.reset.then_some(true), args.used_delta) {
        Ok(c) => c,
        Err((field, why)) => bail!("{}: {why}", flag(field)),
    };
    let actor = format!("cli:{}", os_user());
    let now_us = tollgate_core::now_ms().saturating_mul(1_000);
    let a = db
        .adjust_quota(plans, kind, id, name, change, &actor, now_us)
        .await?;
    let event = cli_event(&format!("{}.quota", kind.as_str()))
        .target(kind.as_str(), id)
        .changes(json!({
            "quota": a.quota,
            "reset": change == QuotaChange::Reset,
            "used_delta": change.used_delta(),
            "adjustment": a.id,
            "period_start": a.period.start_us.div_euclid(1_000),
        }));
    record(db, event).await;
    let what = match change {
        QuotaChange::Reset => "reset".to_string(),
        QuotaChange::Delta(d) => format!("used {d:+}"),
    };
    let end_s = a.period.end_us.div_euclid(1_000_000);
    outln!(
        "{} {id}: quota {name} {what} for the current period (adjustment {}; the period ends at {end_s}, Unix seconds)",
        kind.as_str(),
        a.id
    );
    Ok(())
}
