//! The command line: argument parsing and the commands other than `run`'s wiring.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio_util::sync::CancellationToken;

use crate::{app, config::Config, domain::Catalog};

#[derive(Debug, Parser)]
#[command(
    name = "tesoro-webhooks",
    version,
    about = "Delivers Tesoro CRM events as signed webhooks"
)]
pub struct Cli {
    /// Configuration file layered over the built-in defaults (see config/default.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker (all consumers) and the admin HTTP server.
    Run,
    /// Create the database if missing, apply migrations, declare the broker topology; exit.
    Migrate,
    /// Publish one event envelope to the events exchange, as a CRM service would.
    Publish(PublishArgs),
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Event type, e.g. deal.won (see GET /v1/event-types).
    #[arg(long)]
    pub event: String,
    /// Company (tenant) id.
    #[arg(long)]
    pub company: String,
    /// The record as JSON, or @file to read it from a file.
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// The previous values as JSON, or @file; omitted means null.
    #[arg(long)]
    pub previous: Option<String>,
}

impl Cli {
    pub async fn execute(self) -> anyhow::Result<()> {
        let config = Config::load(self.config.as_deref())?;
        match self.command {
            Command::Run => run(config).await,
            Command::Migrate => {
                app::prepare(&config).await?;
                println!("database migrated and broker topology declared");
                Ok(())
            }
            Command::Publish(args) => publish(&config, args).await,
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen on {} (api.listen)", config.api.listen))?;
    if config.api.admin_token == "change-me" {
        tracing::warn!("api.admin_token is the default; set TESORO_WEBHOOKS__API__ADMIN_TOKEN");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    app::run(config, listener, shutdown).await?;
    Ok(())
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing in-flight deliveries");
    shutdown.cancel();
}

/// Builds the envelope of DESIGN §2 with a fresh event id.
pub fn envelope(
    event: &str,
    company: &str,
    data: Value,
    previous: Option<Value>,
) -> anyhow::Result<(String, Vec<u8>)> {
    let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
    let timestamp = OffsetDateTime::now_utc().format(&Rfc3339)?;
    let body = json!({
        "id": id, "event": event, "timestamp": timestamp, "company_id": company,
        "data": data, "previous_data": previous,
    });
    Ok((id, serde_json::to_vec(&body)?))
}

fn json_argument(name: &str, value: &str) -> anyhow::Result<Value> {
    let text = match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("--{name}: cannot read {path}"))?,
        None => value.to_owned(),
    };
    serde_json::from_str(&text).with_context(|| format!("--{name} is not valid JSON"))
}

async fn publish(config: &Config, args: PublishArgs) -> anyhow::Result<()> {
    if !Catalog::builtin().contains(&args.event) {
        bail!(
            "--event: unknown event type {:?} (see config/event-types.toml)",
            args.event
        );
    }
    if crate::domain::CompanyId::parse(args.company.as_str()).is_err() {
        bail!("--company must be a non-empty id");
    }
    let data = json_argument("data", &args.data)?;
    let previous = args
        .previous
        .as_deref()
        .map(|p| json_argument("previous", p))
        .transpose()?;
    let (id, body) = envelope(&args.event, &args.company, data, previous)?;
    let broker = crate::broker::Broker::connect(&config.amqp.url, app::topology(config)).await?;
    // Declaring first means an event published before any worker ran waits in its queue.
    broker.declare_topology().await?;
    broker
        .publisher()
        .await?
        .publish_event(&args.event, &id, &body)
        .await?;
    broker.close().await;
    println!("{id}");
    Ok(())
}
