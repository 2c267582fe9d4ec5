//! `tollgate`: the command line. Dispatch only; the work lives in the crates.

mod cli;
mod logging;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate_core::config::{self, Config};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONFIG: &str = "config/tollgate.yaml";

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "API-key and rate-limiting gateway on Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: proxy, demo upstream, SQLite, local limiter.
    Dev {
        /// Config file; without it `config/tollgate.yaml` if present, else the embedded default.
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Also send a realistic trickle of requests through the proxy (two keys, some 401/403, bursts that hit 429).
        #[arg(long, env = "TOLLGATE_DEMO_TRAFFIC", value_parser = clap::builder::BoolishValueParser::new())]
        demo_traffic: bool,
        /// Reset the admin password and rotate the demo key even in a database `dev` did not create (never without this flag).
        #[arg(long)]
        reset: bool,
    },
    /// Run the proxy (production role).
    Proxy {
        #[arg(long, env = "TOLLGATE_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Run the admin API (production role).
    Admin {
        #[arg(long, env = "TOLLGATE_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file, the TLS certificate, key and CA files it names and its plan names against the database's: a summary and exit 0, or FILE:LINE:COLUMN: reason lines and exit 1 (a database that cannot be read is a warning).
    CheckConfig {
        file: PathBuf,
        /// Check the YAML only, not the files nor the database it names (e.g. a production config checked on another machine).
        #[arg(long)]
        skip_files: bool,
    },
    /// Manage API keys in the configured database.
    Keys {
        #[arg(long, env = "TOLLGATE_CONFIG", default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: cli::keys::KeysCommand,
    },
    /// Manage the verify API's service tokens in the configured database.
    ServiceTokens {
        #[arg(long, env = "TOLLGATE_CONFIG", default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: cli::service_tokens::ServiceTokensCommand,
    },
    /// Manage identities (customers owning several keys) in the configured database.
    Identities {
        #[arg(long, env = "TOLLGATE_CONFIG", default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: cli::identities::IdentitiesCommand,
    },
    /// Read the audit log (who changed what) in the configured database.
    Audit {
        #[arg(long, env = "TOLLGATE_CONFIG", default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: cli::audit::AuditCommand,
    },
    /// Export recorded usage (the billing feed) from the configured database.
    Usage {
        #[arg(long, env = "TOLLGATE_CONFIG", default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: cli::usage::UsageCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { file, skip_files } => return cli::check::run(&file, skip_files),
        Command::Proxy { config } => serving_or_exit(&config).and_then(cli::run::proxy),
        Command::Admin { config } => load_or_exit(&config).and_then(cli::run::admin),
        Command::Dev {
            config,
            demo_traffic,
            reset,
        } => dev_config(config.as_deref()).and_then(|c| cli::run::dev(c, demo_traffic, reset)),
        Command::Keys { config, command } => load_or_exit(&config).and_then(|c| {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                cli::keys::check(&command, &c).await?;
                cli::keys::run(command, &c).await
            })
        }),
        Command::ServiceTokens { config, command } => load_or_exit(&config).and_then(|c| {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(cli::service_tokens::run(command, &c.storage.database_url))
        }),
        Command::Identities { config, command } => load_or_exit(&config).and_then(|c| {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                cli::identities::check(&command, &c).await?;
                cli::identities::run(command, &c).await
            })
        }),
        Command::Audit { config, command } => load_or_exit(&config).and_then(|c| {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(cli::audit::run(command, &c.storage.database_url))
        }),
        Command::Usage { config, command } => load_or_exit(&config).and_then(|c| {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(cli::usage::run(command, &c.storage.database_url))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`… | head`): nothing to report.
        Err(e)
            if e.chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .any(cli::out::is_closed_pipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_or_exit(path: &Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))
}

/// A config the proxy serves: also refused without routes (unless `routes: []`).
fn serving_or_exit(path: &Path) -> anyhow::Result<Config> {
    config::load_for_serving(path).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))
}

fn dev_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => serving_or_exit(p),
        None if Path::new(DEFAULT_CONFIG).exists() => serving_or_exit(Path::new(DEFAULT_CONFIG)),
        None => config::parse_for_serving(config::DEFAULT_YAML, "<embedded config/tollgate.yaml>")
            .map_err(|e| anyhow::anyhow!("invalid embedded config:\n{e}")),
    }
}
