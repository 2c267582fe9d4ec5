//! `tollgate check-config FILE`: the YAML (core's validation, every problem
//! with its `FILE:LINE:COLUMN`), then the TLS files it names — the listener's
//! certificate and key (`proxy.tls.*`), every upstream's `tls.ca_file` and
//! `limiter.redis_ca_file` —
//! read and parsed as the proxy will, each problem reported at the setting
//! that names the file.
//!
//! Positions come from core's index of the YAML, the same one validation
//! uses.

use std::path::Path;
use std::process::ExitCode;

use tollgate_core::config::position::{self, Position, PositionIndex};
use tollgate_core::config::{self, Config};
use tollgate_proxy::tls;

/// Validate `file`; unless `skip_files`, also the TLS files it names.
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
    let problems = if skip_files {
        Vec::new()
    } else {
        // `load` just read it; a file replaced in between only loses positions.
        let src = config::read_file(file).unwrap_or_default();
        tls_file_problems(&config, &src, &file.display().to_string())
    };
    if problems.is_empty() {
        println!("{}: {}", file.display(), config.summary());
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        ExitCode::FAILURE
    }
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
