//! The usage export (the billing feed): requests per key or per route over a
//! closed range, optionally per hour or per UTC day, read as a stream so that
//! no export is ever held in memory whole.
//!
//! Ranges are whole periods of the usage tables: `from` and `to` (exclusive)
//! must fall on whole minutes (`step=total`), whole hours (`step=hour`) or
//! whole UTC days (`step=day`). The numbers come from `usage_minute` and its
//! hourly rollup `usage_hour`, which hold the same requests, and the rows are
//! sorted (period, then key id or route): the same range therefore always
//! gives the same rows and numbers, once the proxies have flushed it (their
//! `flush_interval`, plus retries of a batch the database refused).
//!
//! Both the admin API (`GET /api/usage/export`) and the CLI
//! (`tollgate usage export`) use [`ExportQuery`], [`Db::export_usage`] and
//! [`ExportFormat`], so their output is byte for byte the same.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use futures_util::TryStreamExt;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;
use tokio::sync::mpsc;

use super::{columns, sum_select, Counts, UsageFilter, HOUR_MS, MINUTE_MS};
use crate::db::stmt::Stmt;
use crate::db::{Db, DbError};

/// Milliseconds in a UTC day.
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// The longest range one export covers (400 days): a year of monthly
/// invoices with room to spare; longer ranges are exported in parts.
pub const MAX_EXPORT_RANGE_MS: i64 = 400 * DAY_MS;
/// The latest instant accepted (the end of the year 9999).
pub const MAX_INSTANT_MS: i64 = 253_402_300_800_000;
/// How long an export waits for its reader to take the next row before it
/// gives up (and frees its database connection).
pub const EXPORT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Rows read ahead of the reader.
const READ_AHEAD: usize = 256;

/// What the rows of an export are per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportGroup {
    /// One row per key (`key_id` 0: requests without a known key).
    Key,
    /// One row per route.
    Route,
    /// One row per identity, by the identity each key belonged to when its
    /// usage was stored (`identity_id` 0: keys of no identity and requests
    /// without a known key).
    Identity,
}

/// How the range is cut: one row per group for the whole range, or per hour,
/// or per UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExportStep {
    #[default]
    Total,
    Hour,
    Day,
}

/// The output format: CSV with a header row, or NDJSON (one JSON object per
/// line, no header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExportFormat {
    #[default]
    Csv,
    Json,
}

/// A refused export parameter: which one and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ExportError {
    ExportError::Invalid {
        field,
        message: message.into(),
    }
}

impl ExportGroup {
    pub fn parse(s: &str) -> Result<Self, ExportError> {
        match s {
            "key" => Ok(Self::Key),
            "route" => Ok(Self::Route),
            "identity" => Ok(Self::Identity),
            _ => Err(invalid("group_by", "must be one of key, identity, route")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Route => "route",
            Self::Identity => "identity",
        }
    }
}

impl ExportStep {
    pub fn parse(s: &str) -> Result<Self, ExportError> {
        match s {
            "total" => Ok(Self::Total),
            "hour" => Ok(Self::Hour),
            "day" => Ok(Self::Day),
            _ => Err(invalid("step", "must be one of total, hour, day")),
        }
    }

    /// The period `from` and `to` must be whole multiples of.
    fn unit_ms(self) -> i64 {
        match self {
            Self::Total => MINUTE_MS,
            Self::Hour => HOUR_MS,
            Self::Day => DAY_MS,
        }
    }

    fn unit_name(self) -> &'static str {
        match self {
            Self::Total => "minute",
            Self::Hour => "hour",
            Self::Day => "UTC day",
        }
    }
}

impl ExportFormat {
    pub fn parse(s: &str) -> Result<Self, ExportError> {
        match s {
            "csv" => Ok(Self::Csv),
            "json" | "ndjson" => Ok(Self::Json),
            _ => Err(invalid("format", "must be one of csv, json")),
        }
    }

    /// The media type of the whole export.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Json => "application/x-ndjson",
        }
    }

    /// What comes before the first row (the CSV header line).
    pub fn header(self, group: ExportGroup) -> String {
        match self {
            Self::Csv => {
                let who = match group {
                    ExportGroup::Key => "key_id,key_name,key_prefix",
                    ExportGroup::Route => "route",
                    ExportGroup::Identity => "identity_id,external_id,identity_name",
                };
                format!("start,end,{who},{}\n", COUNT_NAMES.join(","))
            }
            Self::Json => String::new(),
        }
    }

    /// One row as a line (with its `\n`).
    pub fn line(self, row: &ExportRow) -> String {
        let start = rfc3339(row.start);
        let end = rfc3339(row.end);
        let counts = count_values(&row.counts);
        match self {
            Self::Csv => {
                let mut fields = vec![start, end];
                match &row.group {
                    GroupValue::Key { id, name, prefix } => {
                        fields.push(id.to_string());
                        fields.push(csv_field(name.as_deref().unwrap_or("")));
                        fields.push(csv_field(prefix.as_deref().unwrap_or("")));
                    }
                    GroupValue::Route(r) => fields.push(csv_field(r)),
                    GroupValue::Identity {
                        id,
                        external_id,
                        name,
                    } => {
                        fields.push(id.to_string());
                        fields.push(csv_field(external_id.as_deref().unwrap_or("")));
                        fields.push(csv_field(name.as_deref().unwrap_or("")));
                    }
                }
                fields.extend(counts.iter().map(i64::to_string));
                let mut line = fields.join(",");
                line.push('\n');
                line
            }
            Self::Json => {
                let mut v = json!({ "start": start, "end": end });
                match &row.group {
                    GroupValue::Key { id, name, prefix } => {
                        v["key_id"] = json!(id);
                        v["key_name"] = json!(name);
                        v["key_prefix"] = json!(prefix);
                    }
                    GroupValue::Route(r) => v["route"] = json!(r),
                    GroupValue::Identity {
                        id,
                        external_id,
                        name,
                    } => {
                        v["identity_id"] = json!(id);
                        v["external_id"] = json!(external_id);
                        v["identity_name"] = json!(name);
                    }
                }
                for (name, value) in COUNT_NAMES.iter().zip(counts) {
                    v[*name] = json!(value);
                }
                let mut line = v.to_string();
                line.push('\n');
                line
            }
        }
    }
}

/// The counted columns of every row, in order: `requests` is the sum of
/// the five outcomes.
pub const COUNT_NAMES: [&str; 6] = [
    "requests",
    "allowed",
    "limited",
    "unauthorized",
    "forbidden",
    "upstream_errors",
];

fn count_values(c: &Counts) -> [i64; 6] {
    [
        c.total(),
        c.allowed,
        c.limited,
        c.unauthorized,
        c.forbidden,
        c.upstream_errors,
    ]
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// A CSV field (RFC 4180): quoted when it holds a comma, quote or line
/// break; and a text starting with `=`, `+`, `-`, `@`, tab or carriage
/// return gets a leading `'`, so that a spreadsheet never runs a key name
/// as a formula.
pub fn csv_field(s: &str) -> String {
    let guarded = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// An instant given as Unix milliseconds, an RFC 3339 time
/// (`2026-12-01T00:00:00Z`) or a date (`2026-12-01`, midnight UTC).
pub fn parse_instant(field: &'static str, s: &str) -> Result<i64, ExportError> {
    let s = s.trim();
    let ms = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<i64>().ok()
    } else if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        // A leap second (`:60`) would silently become the next minute.
        use chrono::Timelike;
        (t.nanosecond() < 1_000_000_000).then(|| t.timestamp_millis())
    } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
    } else {
        None
    };
    match ms {
        Some(ms) if (0..=MAX_INSTANT_MS).contains(&ms) => Ok(ms),
        _ => Err(invalid(
            field,
            "must be Unix milliseconds, an RFC 3339 time (2026-12-01T00:00:00Z) or a date (2026-12-01) between 1970 and 9999",
        )),
    }
}

/// A checked export: `from..to` whole periods of `step`, at most
/// [`MAX_EXPORT_RANGE_MS`] long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportQuery {
    from: i64,
    to: i64,
    group: ExportGroup,
    step: ExportStep,
}

impl ExportQuery {
    pub fn new(
        from: i64,
        to: i64,
        group: ExportGroup,
        step: ExportStep,
    ) -> Result<Self, ExportError> {
        let unit = step.unit_ms();
        for (field, v) in [("from", from), ("to", to)] {
            if !(0..=MAX_INSTANT_MS).contains(&v) {
                return Err(invalid(field, "is out of range"));
            }
            if v % unit != 0 {
                return Err(invalid(
                    field,
                    format!(
                        "must be a whole {} (step={}): usage is exported by whole periods",
                        step.unit_name(),
                        step.name()
                    ),
                ));
            }
        }
        if to <= from {
            return Err(invalid("to", "must be after from"));
        }
        if to - from > MAX_EXPORT_RANGE_MS {
            return Err(invalid(
                "to",
                "the range is longer than 400 days: export it in parts",
            ));
        }
        Ok(Self {
            from,
            to,
            group,
            step,
        })
    }

    pub fn from(&self) -> i64 {
        self.from
    }

    pub fn to(&self) -> i64 {
        self.to
    }

    pub fn group(&self) -> ExportGroup {
        self.group
    }

    /// The statement: the rows of both tables in the range, summed per
    /// period and group, sorted.
    fn filter(&self) -> UsageFilter {
        UsageFilter {
            from: self.from,
            to: self.to,
            key_id: None,
            route: None,
        }
    }

    fn statement<'a>(&self, filter: &'a UsageFilter, stmt: &mut Stmt<'a>) {
        // The period of a row: validated integers, written as literals so
        // that the grouping expression holds no parameter.
        let (period, by_period) = match self.step {
            ExportStep::Total => (format!("CAST({} AS BIGINT)", self.from), ""),
            s => (format!("CAST(t - (t % {}) AS BIGINT)", s.unit_ms()), "1, "),
        };
        let sums = sum_select(false);
        let outer = columns(false)
            .iter()
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        match self.group {
            ExportGroup::Key => {
                stmt.push(&format!(
                    "SELECT r.p, r.key_id, k.name AS key_name, k.key_prefix, {outer} FROM (\
                     SELECT {period} AS p, key_id, {sums} FROM ("
                ));
                // A valid query always has a non-empty range: a source.
                filter.source(stmt, true, false, false, &[]);
                stmt.push(&format!(
                    ") u GROUP BY {by_period}key_id) r \
                     LEFT JOIN api_keys k ON k.id = r.key_id ORDER BY r.p, r.key_id"
                ));
            }
            ExportGroup::Route => {
                stmt.push(&format!(
                    "SELECT r.p, r.route, {outer} FROM (SELECT {period} AS p, route, {sums} FROM ("
                ));
                filter.source(stmt, true, false, false, &[]);
                stmt.push(&format!(
                    ") u GROUP BY {by_period}route) r ORDER BY r.p, r.route"
                ));
            }
            ExportGroup::Identity => {
                // Each stored row (a minute, or a whole hour) goes to the
                // identity its key had at the row's start (`key_identities`,
                // written by a trigger on every change): moving a key later
                // never moves usage already made (black-box round 3, B3).
                let outer = outer.replace("r.", "g.");
                stmt.push(&format!(
                    "SELECT g.p, g.identity_id, i.external_id, i.name AS identity_name, {outer} \
                     FROM (SELECT {period} AS p, identity_id, {sums} FROM (\
                     SELECT u.*, COALESCE((SELECT h.identity_id FROM key_identities h \
                     WHERE h.key_id = u.key_id AND h.since <= u.t \
                     ORDER BY h.since DESC, h.seq DESC LIMIT 1), 0) AS identity_id FROM ("
                ));
                filter.source(stmt, true, false, false, &[]);
                stmt.push(&format!(
                    ") u) a GROUP BY {by_period}identity_id) g \
                     LEFT JOIN identities i ON i.id = g.identity_id \
                     ORDER BY g.p, g.identity_id"
                ));
            }
        }
    }

    fn row(&self, row: &AnyRow) -> Result<ExportRow, DbError> {
        let start: i64 = row.try_get("p")?;
        let end = match self.step {
            ExportStep::Total => self.to,
            s => (start + s.unit_ms()).min(self.to),
        };
        let group = match self.group {
            ExportGroup::Key => GroupValue::Key {
                id: row.try_get("key_id")?,
                name: row.try_get("key_name")?,
                prefix: row.try_get("key_prefix")?,
            },
            ExportGroup::Route => GroupValue::Route(row.try_get("route")?),
            ExportGroup::Identity => GroupValue::Identity {
                id: row.try_get("identity_id")?,
                external_id: row.try_get("external_id")?,
                name: row.try_get("identity_name")?,
            },
        };
        Ok(ExportRow {
            start: start.max(self.from),
            end,
            group,
            counts: super::counts_from_row(row, false)?,
        })
    }
}

impl ExportStep {
    pub fn name(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

/// Who a row is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupValue {
    /// A key (0: no known key); its name and prefix if it still exists.
    Key {
        id: i64,
        name: Option<String>,
        prefix: Option<String>,
    },
    Route(String),
    /// An identity (0: none); its external id and name if it still exists.
    Identity {
        id: i64,
        external_id: Option<String>,
        name: Option<String>,
    },
}

/// One row of an export: a period, a key or route, its counts (the latency
/// fields are not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRow {
    /// Unix ms, inclusive.
    pub start: i64,
    /// Unix ms, exclusive.
    pub end: i64,
    pub group: GroupValue,
    pub counts: Counts,
}

impl Db {
    /// Run `query` and hand its rows, in order, to the returned receiver as
    /// they are read (at most a few hundred ahead of the reader). A database
    /// error ends the stream with that error. Dropping the receiver, or not
    /// reading for [`EXPORT_IDLE_TIMEOUT`], stops the query and frees its
    /// connection.
    pub fn export_usage(&self, query: ExportQuery) -> mpsc::Receiver<Result<ExportRow, DbError>> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let db = self.clone();
        tokio::spawn(async move {
            if let Err(e) = db.export_into(&query, &tx).await {
                let _ = tx.send_timeout(Err(e), EXPORT_IDLE_TIMEOUT).await;
            }
        });
        rx
    }

    async fn export_into(
        &self,
        query: &ExportQuery,
        tx: &mpsc::Sender<Result<ExportRow, DbError>>,
    ) -> Result<(), DbError> {
        let filter = query.filter();
        let mut stmt = Stmt::new(self.kind());
        query.statement(&filter, &mut stmt);
        let q = stmt.query();
        let mut rows = q.fetch(self.pool());
        while let Some(row) = rows.try_next().await? {
            let row = query.row(&row)?;
            if tx.send_timeout(Ok(row), EXPORT_IDLE_TIMEOUT).await.is_err() {
                // The reader left or stalled: stop reading.
                return Ok(());
            }
        }
        Ok(())
    }
}
#[cfg(test)]
mod tests;
