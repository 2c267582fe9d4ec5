//! `GET /api/usage/export`: the billing feed. Requests per key, route or
//! identity over
//! a closed range of whole minutes, hours or UTC days, streamed as CSV or
//! NDJSON straight from the database (`tollgate_core::db::usage::export`):
//! rows go out as they are read, never the whole export in memory.
//!
//! Every parameter error is a 400 `malformed-request` naming the field. At
//! most [`MAX_CONCURRENT_EXPORTS`] exports run at once (each
//! holds a database connection while its client reads); more get 503 `busy`.
//! An admin runs one export at a time (a second is 429 `rate-limited`), and
//! an export whose client takes nothing for [`EXPORT_STALL_DEADLINE`], or
//! that runs longer than [`EXPORT_DEADLINE`], is cut (the transfer ends
//! broken, never as a short export that looks whole): a slow reader cannot
//! hold a slot ([`crate::export_slots`]).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tollgate_core::db::usage::export::{
    parse_instant, ExportError, ExportFormat, ExportGroup, ExportQuery, ExportRow, ExportStep,
};
use tollgate_core::db::DbError;
use utoipa::IntoParams;

use crate::auth::AuthAdmin;
use crate::error::{ApiError, ApiResult};
pub use crate::export_slots::MAX_CONCURRENT_EXPORTS;
use crate::export_slots::{NoSlot, Slot};
use crate::extract::parse_query;
use crate::state::AppState;

/// The longest an export's client may take nothing (well below
/// `admin.idle_timeout`, 60 s by default).
pub const EXPORT_STALL_DEADLINE: Duration = Duration::from_secs(10);
/// The longest one export may run (larger feeds: split the range, or
/// `tollgate usage export`, which reads the database directly).
pub const EXPORT_DEADLINE: Duration = Duration::from_secs(300);
/// Rows sent per body chunk, at most (when they are already read).
const ROWS_PER_CHUNK: usize = 64;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/usage/export", get(export))
}

/// The query of `GET /api/usage/export`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// Start of the range, inclusive: Unix ms, an RFC 3339 time or a date
    /// (midnight UTC). A whole minute (`step=total`), hour (`step=hour`) or
    /// UTC day (`step=day`).
    #[param(example = "2026-11-01")]
    pub from: Option<String>,
    /// End of the range, exclusive, in the same forms; after `from`, at most
    /// 400 days later.
    #[param(example = "2026-12-01")]
    pub to: Option<String>,
    /// `key` (one row per key; key 0: requests without a known key),
    /// `route`, or `identity` (the identity each key belongs to at export time).
    #[param(example = "key")]
    pub group_by: Option<String>,
    /// `csv` (default; with a header row) or `json` (NDJSON: one object per
    /// line, `application/x-ndjson`).
    #[param(example = "csv")]
    pub format: Option<String>,
    /// `total` (default: one row per group for the whole range), `hour` or
    /// `day` (one row per group and period).
    #[param(example = "total")]
    pub step: Option<String>,
}

fn bad(e: ExportError) -> ApiError {
    match e {
        ExportError::Invalid { field, message } => ApiError::malformed(Some(field), message),
    }
}

fn required<'a>(field: &'static str, v: &'a Option<String>) -> ApiResult<&'a str> {
    v.as_deref()
        .ok_or_else(|| ApiError::malformed(Some(field), format!("{field}: is required")))
}

/// The checked query and format of a raw query string.
pub fn parse_params(raw: &str) -> ApiResult<(ExportQuery, ExportFormat)> {
    // Every parameter error of this endpoint is a 400 (the query string is
    // what the export is, not a record's field).
    let p: ExportParams = parse_query(raw).map_err(|e| match e {
        ApiError::Validation { field, detail } => {
            ApiError::malformed(Some(&field), format!("{field}: {detail}"))
        }
        other => other,
    })?;
    let group = ExportGroup::parse(required("group_by", &p.group_by)?).map_err(bad)?;
    let from = parse_instant("from", required("from", &p.from)?).map_err(bad)?;
    let to = parse_instant("to", required("to", &p.to)?).map_err(bad)?;
    let format = p
        .format
        .as_deref()
        .map_or(Ok(ExportFormat::Csv), ExportFormat::parse)
        .map_err(bad)?;
    let step = p
        .step
        .as_deref()
        .map_or(Ok(ExportStep::Total), ExportStep::parse)
        .map_err(bad)?;
    let query = ExportQuery::new(from, to, group, step).map_err(bad)?;
    Ok((query, format))
}

/// Requests per key or route over a closed range, streamed as CSV or NDJSON
/// (the billing feed). The same range always gives the same rows, sorted by
/// period then key id or route, once the proxies have flushed it.
#[utoipa::path(
    get,
    path = "/api/usage/export",
    tag = "analytics",
    params(ExportParams),
    responses(
        (status = 200, description = "The export: CSV with a header row `start,end,key_id,key_name,key_prefix|route,requests,allowed,limited,unauthorized,forbidden,upstream_errors`, or NDJSON with the same fields; `start`/`end` are RFC 3339 UTC",
            content((String = "text/csv"), (String = "application/x-ndjson"))),
        (status = 429, description = "This admin already runs an export (`rate-limited`)", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or too many exports running (`busy`)", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["viewer"]))
)]
pub async fn export(
    auth: AuthAdmin,
    State(state): State<AppState>,
    uri: axum::http::Uri,
) -> ApiResult<Response> {
    let (query, format) = parse_params(uri.query().unwrap_or(""))?;
    let slot = state.exports().acquire(auth.id).map_err(|e| match e {
        NoSlot::Yours => ApiError::RateLimited {
            retry_after_secs: 1,
            detail: "you already run an export: one at a time per admin".into(),
        },
        NoSlot::Full => ApiError::Busy(format!(
            "{MAX_CONCURRENT_EXPORTS} exports are running: retry when one is done"
        )),
    })?;
    let filename = format!(
        "usage-by-{}-{}-{}.{}",
        query.group().name(),
        query.from(),
        query.to(),
        match format {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "ndjson",
        }
    );
    let header_line = format.header(query.group());
    let mut rx = state.db().export_usage(query);
    // The first row (or the end) before the status: a database that fails
    // at once is a 503 problem, not a 200 with a broken body.
    let first = rx.recv().await;
    if let Some(Err(e)) = first {
        return Err(e.into());
    }
    let (tx, body_rx) = mpsc::channel(ROWS_PER_CHUNK);
    let cut = Arc::new(AtomicBool::new(false));
    tokio::spawn(forward(rx, tx, cut.clone(), slot));
    let body = Stream {
        rx: body_rx,
        first,
        header: Some(header_line),
        format,
        done: false,
        cut,
    };
    let stream = futures_util::stream::unfold(body, |mut s| async move {
        let chunk = s.next().await?;
        Some((chunk, s))
    });
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Pass the database's rows on to the body while the client takes them.
/// When it takes nothing for [`EXPORT_STALL_DEADLINE`] or the export passes
/// [`EXPORT_DEADLINE`], stop: the database read ends (its receiver is
/// dropped), the slot is given back, and the body ends broken (`cut`).
async fn forward(
    mut rx: mpsc::Receiver<Result<ExportRow, DbError>>,
    tx: mpsc::Sender<Result<ExportRow, DbError>>,
    cut: Arc<AtomicBool>,
    slot: Slot,
) {
    let _slot = slot;
    let end = tokio::time::Instant::now() + EXPORT_DEADLINE;
    loop {
        let item = match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => return,
            Err(_) => break,
        };
        let stall = (tokio::time::Instant::now() + EXPORT_STALL_DEADLINE).min(end);
        match tokio::time::timeout_at(stall, tx.send(item)).await {
            Ok(Ok(())) => {}
            // The client left: the body is gone.
            Ok(Err(_)) => return,
            Err(_) => break,
        }
    }
    tracing::info!("usage export cut: its client stalled or it ran past its deadline");
    cut.store(true, Ordering::Release);
}

/// The body of one export: the header line, then the rows a few dozen per
/// chunk. A database error after the first row ends the body with an error
/// (the client sees a cut transfer, never a short export that looks whole).
struct Stream {
    rx: mpsc::Receiver<Result<ExportRow, DbError>>,
    first: Option<Result<ExportRow, DbError>>,
    header: Option<String>,
    format: ExportFormat,
    done: bool,
    /// Set when the export was cut ([`forward`]).
    cut: Arc<AtomicBool>,
}

impl Stream {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        let mut out = self.header.take().unwrap_or_default();
        let mut item = match self.first.take() {
            Some(r) => Some(r),
            None => self.rx.recv().await,
        };
        let mut rows = 0;
        loop {
            match item {
                Some(Ok(row)) => {
                    out.push_str(&self.format.line(&row));
                    rows += 1;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "usage export failed part way");
                    self.done = true;
                    return Some(Err(std::io::Error::other(e.to_string())));
                }
                None if self.cut.load(Ordering::Acquire) => {
                    self.done = true;
                    return Some(Err(std::io::Error::other("usage export cut")));
                }
                None => {
                    self.done = true;
                    break;
                }
            }
            if rows >= ROWS_PER_CHUNK {
                break;
            }
            item = match self.rx.try_recv() {
                Ok(r) => Some(r),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            };
        }
        if out.is_empty() {
            None
        } else {
            Some(Ok(Bytes::from(out)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(raw: &str) -> (u16, String, Option<String>) {
        match parse_params(raw) {
            Ok(_) => (200, String::new(), None),
            Err(e) => {
                let p = e.to_problem();
                let field = p
                    .extensions
                    .get("field")
                    .and_then(|f| f.as_str())
                    .map(str::to_string);
                (p.status, e.kind().to_string(), field)
            }
        }
    }

    #[test]
    fn hostile_parameters_are_400_naming_the_field() {
        let ok = "from=2026-11-01&to=2026-12-01&group_by=key";
        assert_eq!(status(ok).0, 200);
        assert_eq!(status(&format!("{ok}&format=json&step=day")).0, 200);
        for (raw, field) in [
            ("to=2026-12-01&group_by=key", "from"),
            ("from=2026-11-01&group_by=key", "to"),
            ("from=2026-11-01&to=2026-12-01", "group_by"),
            ("from=yesterday&to=2026-12-01&group_by=key", "from"),
            ("from=2026-12-01&to=2026-11-01&group_by=key", "to"),
            ("from=2026-12-01&to=2026-12-01&group_by=key", "to"),
            ("from=2020-01-01&to=2026-12-01&group_by=key", "to"),
            ("from=2026-11-01&to=2026-12-01&group_by=plan", "group_by"),
            (
                "from=2026-11-01&to=2026-12-01&group_by=key&format=xml",
                "format",
            ),
            (
                "from=2026-11-01&to=2026-12-01&group_by=key&step=week",
                "step",
            ),
            ("from=1&to=120000&group_by=key", "from"),
            (
                "from=2026-11-01T00:30:00Z&to=2026-12-01&group_by=key&step=hour",
                "from",
            ),
            (
                "from=2026-11-01&to=2026-12-01&group_by=key&extra=1",
                "extra",
            ),
            (
                "from=2026-11-01&from=2026-11-02&to=2026-12-01&group_by=key",
                "from",
            ),
            ("from=%00&to=2026-12-01&group_by=key", "from"),
        ] {
            let (s, kind, f) = status(raw);
            assert_eq!(s, 400, "{raw}");
            assert_eq!(kind, "malformed-request", "{raw}");
            assert_eq!(f.as_deref(), Some(field), "{raw}");
        }
    }
}
