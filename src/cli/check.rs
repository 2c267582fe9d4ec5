//! `tollgate check-config FILE`: the YAML (core's validation, every problem
//! with its `FILE:LINE:COLUMN`), then the TLS files it names — the listener's
//! certificate and key (`proxy.tls.*`), every upstream's `tls.ca_file` and
//! `limiter.redis_ca_file` —
//! read and parsed as the proxy will, each problem reported at the setting
//! that names the file — and the plans of `storage.database_url`: a YAML plan
//! of the same name as a database plan is refused as a start or reload
//! refuses it (the same rule, `reload::plan_conflicts`). The database is
//! read without being changed; one that cannot be read is a warning (one
//! whose TLS connection is refused says that a start is refused too).
//!
//! Positions come from core's index of the YAML, the same one validation
//! uses.

use std::path::Path;
use std::process::ExitCode;

use std::time::Duration;

use tollgate_core::config::position::{self, Position, PositionIndex};
use tollgate_core::config::{self, reload, Config};
use tollgate_core::db::{plans, DbError};
use tollgate_proxy::tls;

/// How long `check-config` waits for the database before warning.
const DATABASE_WAIT: Duration = Duration::from_secs(5);

/// Validate `file`; unless `skip_files`, also the TLS files and the
/// database it names.
pub fn run(file: &Path, skip_files: bool) -> ExitCode {
    // As served: a config without routes is refused unless it says `routes: []`.
    let config = match config::load_for_serving(file) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let mut problems = Vec::new();
    if !skip_files {
        // `load` just read it; a file replaced in between only loses positions.
        let src = config::read_file(file).unwrap_or_default();
        problems = tls_file_problems(&config, &src, &file.display().to_string());
        match database_plan_conflict(&config) {
            Ok(None) => {}
            Ok(Some(msg)) => problems.push(format!("{}: {msg}", file.display())),
            Err(e) => eprintln!("warning: database not checked: {e}"),
        }
    }
    if problems.is_empty() {
        outln!("{}: {}", file.display(), config.summary());
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        ExitCode::FAILURE
    }
}

/// The message a start or reload would refuse this config with because one
/// of its plans is also a database plan, or because the database's schema is
/// not this binary's (`None`: neither), or why the database could not be
/// read.
fn database_plan_conflict(config: &Config) -> Result<Option<String>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let url = &config.storage.database_url;
    let names = rt
        .block_on(async {
            tokio::time::timeout(DATABASE_WAIT, plans::plan_names_read_only(url)).await
        })
        .map_err(|_| format!("no answer within {}s", DATABASE_WAIT.as_secs()))?;
    let names = match names {
        Ok(names) => names,
        // A schema start would refuse is a problem, not "not checked".
        Err(DbError::Schema(why)) => return Ok(Some(format!("storage.database_url: {why}"))),
        // The pinned TLS connection failed (a refused certificate, …): a
        // start connects the same way, so it would be refused too.
        Err(DbError::Tls(reason)) => {
            return Err(format!(
                "{reason}; a start is refused the same way while this is so"
            ))
        }
        Err(e) => return Err(e.to_string()),
    };
    let both = reload::plan_conflicts(config, names.iter().map(String::as_str));
    Ok(reload::plan_conflict_message(&both))
}

/// One `FILE:LINE:COLUMN: setting (path): reason` line per unusable TLS file,
/// positioned by core's index of the YAML (the setting, or its nearest
/// written parent).
pub fn tls_file_problems(config: &Config, src: &str, file: &str) -> Vec<String> {
    let mut found: Vec<(String, tls::TlsError)> = Vec::new();
    if let Some(listener) = &config.proxy.tls {
        for e in tls::check_listener_files(listener) {
            let leaf = e.setting.rsplit('.').next().unwrap_or("cert").to_string();
            found.push((position::child("proxy.tls", &leaf), e));
        }
    }
    for (name, upstream) in &config.upstreams {
        if let Some(path) = &upstream.tls.ca_file {
            let setting = format!("upstreams.{name}.tls.ca_file");
            if let Err(e) = tls::load_ca_file(&setting, path) {
                let at = position::child(&position::child("upstreams", name), "tls.ca_file");
                found.push((at, e));
            }
        }
    }
    if let Some(path) = &config.limiter.redis_ca_file {
        if let Err(e) = tls::load_ca_file("limiter.redis_ca_file", path) {
            found.push(("limiter.redis_ca_file".to_string(), e));
        }
    }
    let index = PositionIndex::build(src);
    let mut lines: Vec<(Position, String)> = found
        .into_iter()
        .map(|(path, e)| {
            let pos = index.locate(&path);
            (pos, format!("{file}:{}:{}: {e}", pos.line, pos.column))
        })
        .collect();
    lines.sort();
    lines.into_iter().map(|(_, l)| l).collect()
}
