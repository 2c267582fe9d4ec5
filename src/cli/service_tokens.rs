//! `tollgate service-tokens …`: manage the verify API's service tokens in
//! the configured database directly. Every change is written to the audit
//! log as `cli:<OS user>`.

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::Value;
use tollgate_core::db::audit::diff;
use tollgate_core::db::service_tokens::ServiceToken;
use tollgate_core::db::Db;
use tollgate_core::service_tokens::check_name;

use super::audit::{self, cli_event};

#[derive(Debug, Subcommand)]
pub enum ServiceTokensCommand {
    /// Create a token and print it: the only time it is shown.
    Create {
        /// What the token is for.
        #[arg(long)]
        name: String,
    },
    /// List tokens (only their prefixes).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a token: the verify listeners refuse it within storage.key_refresh.
    Delete { id: i64 },
}

/// Run one `service-tokens` subcommand against `database_url`.
pub async fn run(cmd: ServiceTokensCommand, database_url: &str) -> anyhow::Result<()> {
    super::with_db(database_url, |db| async move { execute(&db, cmd).await }).await
}

async fn record(
    db: &Db,
    action: &str,
    id: i64,
    before: Option<&ServiceToken>,
    after: Option<&ServiceToken>,
) {
    let view = |t: Option<&ServiceToken>| {
        t.map_or(Value::Null, |t| {
            serde_json::to_value(t).unwrap_or(Value::Null)
        })
    };
    let event = cli_event(action)
        .target("service_token", id)
        .changes(diff(&view(before), &view(after)));
    audit::record(db, event).await;
}

async fn execute(db: &Db, cmd: ServiceTokensCommand) -> anyhow::Result<()> {
    match cmd {
        ServiceTokensCommand::Create { name } => {
            let name = match check_name(&name) {
                Ok(n) => n,
                Err(e) => bail!("--name: {e}"),
            };
            let (token, plain) = db
                .create_service_token(&name, None)
                .await
                .context("cannot create the service token")?;
            record(db, "service_token.create", token.id, None, Some(&token)).await;
            outln!("created service token {}", token.id);
            outln!("name:    {}", token.name);
            outln!("token:   {plain}");
            eprintln!("This is the only time the token is shown: store it now.");
        }
        ServiceTokensCommand::List { json } => {
            let tokens = db.list_service_tokens().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&tokens)?);
            } else if tokens.is_empty() {
                outln!("no service tokens");
            } else {
                outln!("{:>6}  {:<10}  {:<20}  name", "id", "prefix", "created");
                for t in tokens {
                    let created = when(t.created_at);
                    outln!("{:>6}  {:<10}  {:<20}  {}", t.id, t.prefix, created, t.name);
                }
            }
        }
        ServiceTokensCommand::Delete { id } => match db.delete_service_token(id).await? {
            Some(t) => {
                record(db, "service_token.delete", id, Some(&t), None).await;
                outln!("deleted service token {id}");
            }
            None => bail!("no service token with id {id}"),
        },
    }
    Ok(())
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}
