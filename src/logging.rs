//! Logging set-up: `tracing` with the level and format from the config
//! (`RUST_LOG` overrides the level), written by a non-blocking writer so the
//! request path never waits on stdout. Access lines, when the config's own
//! level applies, take a faster writer of the same lines
//! (`tollgate_proxy::access_log`).

use tollgate_core::config::{LogConfig, LogFormat};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Flushes the log writers when dropped: keep it alive until exit.
pub struct Guard {
    // Dropped in this order: access lines, then the rest.
    _access: Option<tollgate_proxy::access_log::sink::Guard>,
    _tracing: WorkerGuard,
}

/// Install the global subscriber.
pub fn init(log: &LogConfig) -> Guard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let from_env = EnvFilter::try_from_default_env().ok();
    let own_level = from_env.is_none();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(format!("{},pingora=warn", log.level)));
    // What the fmt layer would choose by itself (NO_COLOR), said to both
    // writers so their lines look the same.
    // Colour only on a terminal (black-box round 15: escape codes in log
    // files).
    let ansi = !std::env::var("NO_COLOR").is_ok_and(|v| !v.is_empty())
        && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let result = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
    // RUST_LOG's filters may look at more than a target's level: then every
    // access line goes through the subscriber.
    let access = if own_level {
        tollgate_proxy::access_log::install(log.format, ansi)
    } else {
        None
    };
    Guard {
        _access: access,
        _tracing: guard,
    }
}
