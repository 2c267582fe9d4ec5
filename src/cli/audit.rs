//! `tollgate audit list`: read the audit log; and the audit records that
//! `tollgate keys …` writes for every change it makes (actor `cli:<OS user>`).

use clap::Subcommand;
use serde_json::Value;
use tollgate_core::db::audit::{diff, Actor, AuditEvent, AuditFilter, NewAuditEvent};
use tollgate_core::db::{ApiKey, Db};
use tollgate_core::duration;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show audit events, newest first.
    List {
        /// Only this actor: a username or `cli:<OS user>`.
        #[arg(long)]
        actor: Option<String>,
        /// Only this action (`key.create`), or every action with a prefix ending in `.` (`key.`).
        #[arg(long)]
        action: Option<String>,
        /// Only events about this target (a key id, a plan name, an admin id).
        #[arg(long)]
        target: Option<String>,
        /// Only events of the last DURATION (e.g. 24h, 7d).
        #[arg(long, value_name = "DURATION", value_parser = since)]
        since: Option<std::time::Duration>,
        /// At most this many events, 1 to 100000 (0 is refused, as the
        /// admin API refuses `per_page=0`).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=MAX_LIMIT))]
        limit: i64,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

/// The most events one `audit list` shows.
const MAX_LIMIT: i64 = 100_000;

fn since(s: &str) -> Result<std::time::Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
}

/// The OS user running this command: `$USER`, `$LOGNAME`, else `uid N`.
pub fn os_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(var) {
            if !u.is_empty() {
                return u;
            }
        }
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(|uid| format!("uid {uid}")))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// An event by the command line's user.
pub fn cli_event(action: &str) -> NewAuditEvent {
    NewAuditEvent::new(Actor::Cli { os_user: os_user() }, action)
}

/// A key as the audit log compares it (no times that change by themselves).
pub fn key_view(k: Option<&ApiKey>) -> Value {
    let Some(k) = k else {
        return Value::Null;
    };
    let mut v = serde_json::to_value(k).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.remove("updated_at");
        m.remove("last_used_at");
    }
    v
}

/// Record a change of the command line's; a failure is reported (and logged
/// whole by [`Db::record_audit`]) but does not undo the change.
pub async fn record(db: &Db, event: NewAuditEvent) {
    if let Err(e) = db.record_audit(event).await {
        eprintln!("warning: the change is done but could not be written to the audit log: {e}");
    }
}

/// Record a key change; a failure is reported but does not undo the change.
pub async fn record_key(
    db: &Db,
    action: &str,
    id: i64,
    before: Option<&ApiKey>,
    after: Option<&ApiKey>,
) {
    let event = cli_event(action)
        .target("key", id)
        .changes(diff(&key_view(before), &key_view(after)));
    record(db, event).await;
    // The same webhook events as the admin API's (delivered by the admin
    // process's worker).
    use tollgate_core::webhooks::{enqueue_key_event, KEY_DELETED, KEY_DISABLED, KEY_ROTATED};
    let event = match (action, before, after) {
        ("key.disable", Some(b), Some(a)) if b.enabled && !a.enabled => Some((KEY_DISABLED, a)),
        ("key.rotate", _, Some(a)) => Some((KEY_ROTATED, a)),
        ("key.delete", Some(b), _) => Some((KEY_DELETED, b)),
        _ => None,
    };
    if let Some((event_type, key)) = event {
        if let Err(e) = enqueue_key_event(db, event_type, key).await {
            eprintln!(
                "warning: the change is done but its webhook event could not be enqueued: {e}"
            );
        }
    }
}

/// Run one `audit` subcommand against `database_url`.
pub async fn run(cmd: AuditCommand, database_url: &str) -> anyhow::Result<()> {
    super::with_db(database_url, |db| async move { execute(&db, cmd).await }).await
}

async fn execute(db: &Db, cmd: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::List {
        actor,
        action,
        target,
        since,
        limit,
        json,
    } = cmd;
    let from = since
        .map(|d| tollgate_core::now_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2));
    let filter = AuditFilter {
        actor,
        action,
        target,
        from,
        limit,
        ..AuditFilter::default()
    };
    let (events, total) = db.list_audit(&filter).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&events)?);
    } else if events.is_empty() {
        outln!("no audit events");
    } else {
        for e in &events {
            outln!("{}", line(e));
        }
        if total > i64::try_from(events.len()).unwrap_or(i64::MAX) {
            eprintln!("({} of {total} shown; use --limit)", events.len());
        }
    }
    Ok(())
}

/// `2025-01-31 12:00:00 UTC  alice  key.create  key 3  from 10.0.0.1  {changes}`
fn line(e: &AuditEvent) -> String {
    let when = chrono::DateTime::from_timestamp_millis(e.at)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| e.at.to_string());
    let mut out = format!("{when}  {}  {}", e.actor, e.action);
    if let Some(t) = &e.target {
        out.push_str(&format!("  {} {t}", e.target_type.as_deref().unwrap_or("")));
    }
    if let Some(ip) = &e.client_ip {
        out.push_str(&format!("  from {ip}"));
    }
    if let Some(c) = &e.changes {
        if c.as_object().is_some_and(|m| !m.is_empty()) {
            out.push_str(&format!("  {c}"));
        }
    }
    out
}
