//! `audit_events`: the append-only record of who changed what.
//!
//! Every admin mutation (API or `tollgate keys …`) and every login, failed or
//! not, lands here: who (an admin, or `cli` with the OS user), when, from
//! which address, the action, its target and the changed fields before and
//! after. [`redact_changes`] keeps keys, hashes and passwords out; the
//! table's triggers refuse updates and the deletion of rows younger than a
//! day, so only retention ([`Db::prune_audit`]) removes rows.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::Row;

use super::stmt::{Arg, Stmt};
use super::{Db, DbError};
use crate::now_ms;

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Actor {
    /// An admin of the API, by id and username.
    Admin { id: i64, username: String },
    /// The `tollgate` command line, run by this OS user.
    Cli { os_user: String },
    /// Nobody authenticated (a failed login).
    Anonymous,
}

impl Actor {
    fn parts(&self) -> (&'static str, String, Option<i64>) {
        match self {
            Actor::Admin { id, username } => ("admin", username.clone(), Some(*id)),
            Actor::Cli { os_user } => ("cli", format!("cli:{os_user}"), None),
            Actor::Anonymous => ("anonymous", "anonymous".to_string(), None),
        }
    }
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub actor: Actor,
    pub client_ip: Option<String>,
    /// e.g. `key.create`, `login.failure`.
    pub action: String,
    /// e.g. `key`, `admin`, `plan`.
    pub target_type: Option<String>,
    /// The target's id or name.
    pub target: Option<String>,
    /// `{field: {before, after}}` (or any JSON object); redacted on write.
    pub changes: Option<Value>,
}

impl NewAuditEvent {
    pub fn new(actor: Actor, action: impl Into<String>) -> Self {
        Self {
            actor,
            client_ip: None,
            action: action.into(),
            target_type: None,
            target: None,
            changes: None,
        }
    }

    pub fn target(mut self, kind: &str, id: impl ToString) -> Self {
        self.target_type = Some(kind.to_string());
        self.target = Some(id.to_string());
        self
    }

    pub fn ip(mut self, ip: Option<String>) -> Self {
        self.client_ip = ip;
        self
    }

    pub fn changes(mut self, changes: Value) -> Self {
        self.changes = Some(changes);
        self
    }
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: i64,
    /// Unix ms.
    pub at: i64,
    /// `admin`, `cli` or `anonymous`.
    pub actor_kind: String,
    /// The admin's username, `cli:<os user>`, or `anonymous`.
    pub actor: String,
    pub actor_id: Option<i64>,
    pub client_ip: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target: Option<String>,
    /// `{field: {before, after}}`, `null` when nothing is recorded.
    pub changes: Option<Value>,
}

/// Which events to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exact actor (`alice`, `cli:root`).
    pub actor: Option<String>,
    /// Exact action, or a prefix ending in `.` (`key.` = every key action).
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target: Option<String>,
    /// Unix ms, inclusive.
    pub from: Option<i64>,
    /// Unix ms, exclusive.
    pub to: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

/// Field names whose values are never written to the audit log.
const SECRET_FIELDS: [&str; 8] = [
    "key",
    "key_hash",
    "prev_key_hash",
    "password",
    "password_hash",
    "old_password",
    "new_password",
    "token",
];

fn is_secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_FIELDS.contains(&n.as_str()) || n.contains("secret") || n.contains("password")
}

/// `changes` without secret fields, at any depth.
pub fn redact_changes(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !is_secret_field(k))
                .map(|(k, v)| (k.clone(), redact_changes(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact_changes).collect()),
        other => other.clone(),
    }
}

/// `{field: {before, after}}` for every top-level field that differs
/// between two JSON objects (secret fields left out).
pub fn diff(before: &Value, after: &Value) -> Value {
    let empty = Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let mut out = Map::new();
    let mut names: Vec<&String> = b.keys().chain(a.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        if is_secret_field(name) {
            continue;
        }
        let (x, y) = (
            b.get(name).unwrap_or(&Value::Null),
            a.get(name).unwrap_or(&Value::Null),
        );
        if x != y {
            out.insert(name.clone(), serde_json::json!({ "before": x, "after": y }));
        }
    }
    Value::Object(out)
}

impl AuditFilter {
    /// The `WHERE` clause, onto `stmt`.
    fn condition<'a>(&'a self, stmt: &mut Stmt<'a>) {
        if let Some(a) = &self.actor {
            stmt.and_where().push("actor = ").text(a);
        }
        if let Some(a) = &self.action {
            match a.strip_suffix('.') {
                Some(prefix) if !prefix.is_empty() => {
                    let p = format!("{prefix}.");
                    stmt.and_where()
                        .push("substr(action, 1, CAST(")
                        .int(i64::try_from(p.len()).unwrap_or(i64::MAX))
                        .push(" AS INTEGER)) = ")
                        .bind(Arg::Owned(Some(p)));
                }
                _ => {
                    stmt.and_where().push("action = ").text(a);
                }
            }
        }
        if let Some(t) = &self.target_type {
            stmt.and_where().push("target_type = ").text(t);
        }
        if let Some(t) = &self.target {
            stmt.and_where().push("target = ").text(t);
        }
        if let Some(f) = self.from {
            stmt.and_where().push("at >= ").int(f);
        }
        if let Some(t) = self.to {
            stmt.and_where().push("at < ").int(t);
        }
    }
}

fn event_from_row(row: &sqlx::any::AnyRow) -> Result<AuditEvent, DbError> {
    let changes: Option<String> = row.try_get("changes")?;
    let changes = changes
        .map(|c| serde_json::from_str(&c))
        .transpose()
        .map_err(|e| DbError::Corrupt(format!("audit changes: {e}")))?;
    Ok(AuditEvent {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor_kind: row.try_get("actor_kind")?,
        actor: row.try_get("actor")?,
        actor_id: row.try_get("actor_id")?,
        client_ip: row.try_get("client_ip")?,
        action: row.try_get("action")?,
        target_type: row.try_get("target_type")?,
        target: row.try_get("target")?,
        changes,
    })
}

/// Text columns are bounded so one event stays small whatever a client sent.
fn bounded(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Db {
    /// Append one event (secret fields removed from `changes`). A lost
    /// connection is retried on a fresh one ([`super::retry`]); an event that
    /// still cannot be written is logged whole (redacted) at error level, so
    /// the record survives in the logs.
    pub async fn record_audit(&self, e: NewAuditEvent) -> Result<(), DbError> {
        let (kind, actor, actor_id) = e.actor.parts();
        let changes = e
            .changes
            .as_ref()
            .map(|c| serde_json::to_string(&redact_changes(c)))
            .transpose()
            .map_err(|e| DbError::Corrupt(format!("audit changes: {e}")))?;
        let at = now_ms();
        let actor = bounded(actor, 128);
        let client_ip = e.client_ip.map(|s| bounded(s, 64));
        let action = bounded(e.action, 64);
        let target_type = e.target_type.map(|s| bounded(s, 64));
        let target = e.target.map(|s| bounded(s, 256));
        let written = super::retry::on_lost_connection("audit event", || async {
            sqlx::query(
                "INSERT INTO audit_events \
                 (at, actor_kind, actor, actor_id, client_ip, action, target_type, target, changes) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(at)
            .bind(kind)
            .bind(&actor)
            .bind(actor_id)
            .bind(&client_ip)
            .bind(&action)
            .bind(&target_type)
            .bind(&target)
            .bind(&changes)
            .execute(self.pool())
            .await
            .map_err(DbError::from)
        })
        .await;
        if let Err(err) = &written {
            tracing::error!(
                at,
                actor_kind = kind,
                %actor,
                actor_id,
                client_ip = client_ip.as_deref().unwrap_or(""),
                %action,
                target_type = target_type.as_deref().unwrap_or(""),
                target = target.as_deref().unwrap_or(""),
                changes = changes.as_deref().unwrap_or(""),
                error = %err,
                "audit event NOT written to the database (the change is done): this line is its record"
            );
        }
        written.map(|_| ())
    }

    /// Matching events, newest first, and how many match in all.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<(Vec<AuditEvent>, i64), DbError> {
        let mut count = Stmt::new(self.kind());
        count.push("SELECT COUNT(*) FROM audit_events");
        f.condition(&mut count);
        let total: i64 = count.query().fetch_one(self.pool()).await?.try_get(0)?;
        let limit = if f.limit <= 0 { i64::MAX } else { f.limit };
        let mut page = Stmt::new(self.kind());
        page.push(
            "SELECT id, at, actor_kind, actor, actor_id, client_ip, action, target_type, target, \
             changes FROM audit_events",
        );
        f.condition(&mut page);
        page.push(" ORDER BY id DESC LIMIT ")
            .int(limit)
            .push(" OFFSET ")
            .int(f.offset.max(0));
        let rows = page.query().fetch_all(self.pool()).await?;
        let events = rows.iter().map(event_from_row).collect::<Result<_, _>>()?;
        Ok((events, total))
    }

    /// Delete events older than `before` (Unix ms); returns how many. The
    /// table refuses to delete events younger than a day.
    pub async fn prune_audit(&self, before: i64) -> Result<u64, DbError> {
        let cutoff = before.min(now_ms() - 86_400_000);
        let done = sqlx::query("DELETE FROM audit_events WHERE at < $1")
            .bind(cutoff)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_changed_fields_and_never_secrets() {
        let before =
            serde_json::json!({"name": "a", "enabled": true, "key_hash": "x", "plan": null});
        let after =
            serde_json::json!({"name": "a", "enabled": false, "key_hash": "y", "key": "tg_1"});
        let d = diff(&before, &after);
        assert_eq!(
            d,
            serde_json::json!({"enabled": {"before": true, "after": false}})
        );
        let r = redact_changes(
            &serde_json::json!({"new_password": "p", "x": {"jwt_secret": 1, "y": 2}}),
        );
        assert_eq!(r, serde_json::json!({"x": {"y": 2}}));
    }

    #[test]
    fn action_prefix_filters_use_two_placeholders() {
        let f = AuditFilter {
            action: Some("key.".into()),
            actor: Some("bob".into()),
            ..AuditFilter::default()
        };
        let mut stmt = crate::db::stmt::Stmt::new(crate::db::DbKind::Postgres);
        f.condition(&mut stmt);
        let sql = stmt.sql();
        assert!(sql.contains("actor = $1"), "{sql}");
        assert!(
            sql.contains("substr(action, 1, CAST($2 AS INTEGER)) = $3"),
            "{sql}"
        );
    }
}
