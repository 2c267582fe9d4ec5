//! `tollgate usage export`: the usage export of the admin API
//! (`GET /api/usage/export`) read straight from the configured database and
//! written to stdout, row by row, byte for byte the same output.

use std::io::Write;

use anyhow::Context;
use clap::Subcommand;
use tollgate_core::db::usage::export::{
    parse_instant, ExportFormat, ExportGroup, ExportQuery, ExportStep,
};

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Requests per key or route over a closed range, as CSV or NDJSON on stdout (the billing feed).
    Export {
        /// Start, inclusive: Unix ms, an RFC 3339 time or a date (midnight UTC); a whole minute, hour (--step hour) or UTC day (--step day).
        #[arg(long)]
        from: String,
        /// End, exclusive, in the same forms; at most 400 days after --from.
        #[arg(long)]
        to: String,
        /// key, route or identity (each key's identity at export time).
        #[arg(long)]
        group_by: String,
        /// csv (with a header row) or json (NDJSON, one object per line).
        #[arg(long, default_value = "csv")]
        format: String,
        /// total (one row per group), hour or day.
        #[arg(long, default_value = "total")]
        step: String,
    },
}

/// The checked query and format of the arguments.
fn query(cmd: &UsageCommand) -> anyhow::Result<(ExportQuery, ExportFormat)> {
    let UsageCommand::Export {
        from,
        to,
        group_by,
        format,
        step,
    } = cmd;
    let group = ExportGroup::parse(group_by)?;
    let step = ExportStep::parse(step)?;
    let format = ExportFormat::parse(format)?;
    let query = ExportQuery::new(
        parse_instant("from", from)?,
        parse_instant("to", to)?,
        group,
        step,
    )?;
    Ok((query, format))
}

/// Run one `usage` subcommand against `database_url`. The arguments are
/// checked before the database is opened.
pub async fn run(cmd: UsageCommand, database_url: &str) -> anyhow::Result<()> {
    let (query, format) = query(&cmd)?;
    super::with_db(database_url, |db| async move {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        out.write_all(format.header(query.group()).as_bytes())?;
        let mut rows = db.export_usage(query);
        while let Some(row) = rows.recv().await {
            let row = row.context("the export failed part way")?;
            out.write_all(format.line(&row).as_bytes())?;
        }
        out.flush()?;
        Ok(())
    })
    .await
}
