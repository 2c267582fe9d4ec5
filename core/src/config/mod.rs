//! Configuration: the YAML file operators edit.
//!
//! Three steps, each in its own module: [`raw`] is the serde model of the file
//! (`deny_unknown_fields`, everything optional where the file may omit it);
//! [`validate`] turns it into the internal [`model`], collecting *every*
//! problem with its `file:line:column`; [`position`] maps a path inside the
//! document (`routes[2].upstream`) back to where it is written.

pub mod bounds;
pub mod depth;
pub mod model;
pub mod position;
mod raw;
pub mod reload;
pub mod restart;
#[cfg(test)]
mod tuning_tests;
mod validate;

use std::fmt;
use std::path::Path;

pub use model::*;
pub use reload::{load_for_serving, parse_for_serving};

/// The quick-start config, embedded so `tollgate dev` runs from any directory.
pub const DEFAULT_YAML: &str = include_str!("../../../config/tollgate.yaml");

/// One problem found in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in one file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let src = read_file(path).map_err(|message| {
        ConfigErrors(vec![ConfigError {
            file: name.clone(),
            line: 1,
            column: 1,
            message,
        }])
    })?;
    let mut config = parse(&src, &name)?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// The text of a config file, as every reader takes it (start, reload,
/// `check-config`): a regular file of at most [`reload::MAX_CONFIG_BYTES`],
/// read without blocking (a FIFO in its place is an error, not a stalled
/// reload), UTF-8, without a leading byte order mark (editors on Windows
/// write one; YAML allows it).
pub fn read_file(path: &Path) -> Result<String, String> {
    let text = crate::files::read_regular_text(path, reload::MAX_CONFIG_BYTES)
        .map_err(|e| format!("cannot read file: {e}"))?;
    Ok(without_bom(text))
}

/// `text` without one leading UTF-8 byte order mark.
fn without_bom(text: String) -> String {
    match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

/// Validate YAML text; `file` names it in error messages.
/// Text nested deeper than [`depth::MAX_DEPTH`] is refused before any YAML
/// parser sees it (parsers take quadratic time in the depth).
pub fn parse(src: &str, file: &str) -> Result<Config, ConfigErrors> {
    if let Some((line, column)) = depth::too_deep(src) {
        return Err(ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line,
            column,
            message: format!(
                "nested more than {} levels deep; a Tollgate config needs fewer than ten",
                depth::MAX_DEPTH
            ),
        }]));
    }
    validate::parse_and_validate(src, file)
}

impl Config {
    /// The one-line summary `check-config` prints.
    pub fn summary(&self) -> String {
        format!(
            "ok: {} routes, {} upstreams, {} plans, limiter {}, storage {}",
            self.routes.len(),
            self.upstreams.len(),
            self.plans.len(),
            match self.limiter.backend {
                LimiterBackend::Local => "local",
                LimiterBackend::Redis => "redis",
            },
            self.storage.database_url.split(':').next().unwrap_or("?"),
        )
    }
}
