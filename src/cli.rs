//! The command line: argument parsing and the commands other than `run`'s wiring.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::{
    app,
    config::Config,
    domain::{Catalog, KeyRing},
};

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
    /// Re-enqueue Failed deliveries of a webhook or a company; prints how many.
    Replay(ReplayArgs),
    /// Inspect and clear messages that could not be processed.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Print a fresh key for `security.secret_keys` (it encrypts webhook secrets at rest).
    Keygen,
    /// Exit 0 when the worker at `api.listen` answers /healthz (a container's HEALTHCHECK).
    Healthcheck,
    /// Apply the retention policy now (`retention.*`); with --dry-run, report what would go.
    Prune {
        /// Count what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["webhook", "company"])))]
pub struct ReplayArgs {
    /// Replay Failed deliveries (the only kind replayed; required for clarity).
    #[arg(long, required = true)]
    pub failed: bool,
    /// Only this webhook's deliveries.
    #[arg(long, value_name = "ID")]
    pub webhook: Option<String>,
    /// Every webhook of this company.
    #[arg(long, value_name = "ID")]
    pub company: Option<String>,
    /// Deliveries created at or after this RFC 3339 time.
    #[arg(long, value_name = "RFC3339")]
    pub since: Option<String>,
    /// Deliveries created before this RFC 3339 time.
    #[arg(long, value_name = "RFC3339")]
    pub until: Option<String>,
    /// Print what would be re-enqueued, per webhook, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Show quarantined messages with their reasons (they stay in the queue).
    List {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Delete quarantined messages.
    Drop(QuarantineSelection),
    /// Publish quarantined messages back where they came from (after a fix).
    Requeue(QuarantineSelection),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["all", "count"])))]
pub struct QuarantineSelection {
    /// Every message in the queue now.
    #[arg(long)]
    pub all: bool,
    /// The first N messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u32>,
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
        if let Command::Keygen = self.command {
            // Needs no configuration: it makes the key one is about to write.
            println!(
                "{}",
                KeyRing::generate_entry(OffsetDateTime::now_utc().date())
            );
            return Ok(());
        }
        let config = Config::load(self.config.as_deref())?;
        crate::telemetry::init_logging(config.log.format);
        match self.command {
            Command::Keygen => unreachable!("handled before the configuration is read"),
            Command::Run => run(config).await,
            Command::Migrate => {
                app::prepare(&config).await?;
                println!("database migrated and broker topology declared");
                Ok(())
            }
            Command::Publish(args) => publish(&config, args).await,
            Command::Replay(args) => replay(&config, args).await,
            Command::Prune { dry_run } => prune(&config, dry_run).await,
            Command::Healthcheck => healthcheck(&config).await,
            Command::Quarantine(command) => quarantine(&config, command).await,
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
    if config.security.secret_keys.seals_with_development_key() {
        tracing::warn!(
            "security.secret_keys seals webhook secrets with the development key, which anyone \
             with the source holds; put a key from `tesoro-webhooks keygen` first"
        );
    }
    if config.delivery.allow_private_targets {
        tracing::warn!(
            "delivery.allow_private_targets is on: the SSRF guard lets webhooks reach loopback, \
             private and link-local addresses (this machine, its network, cloud metadata); \
             for local testing only"
        );
    }
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            stop_signal().await;
            tracing::info!("shutting down: finishing in-flight deliveries");
            shutdown.cancel();
        }
    });
    app::run(config, listener, shutdown).await?;
    Ok(())
}

/// Returns on SIGINT or SIGTERM.
pub async fn stop_signal() {
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
}

/// Builds an envelope as the CRM publishes it (see `envelope::compose`) with a fresh event id.
pub fn envelope(
    event: &str,
    company: &str,
    data: Value,
    previous: Option<Value>,
) -> (String, Vec<u8>) {
    crate::envelope::compose(
        uuid::Uuid::now_v7(),
        event,
        company,
        data,
        previous,
        OffsetDateTime::now_utc(),
    )
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
    let (id, body) = envelope(&args.event, &args.company, data, previous);
    // The worker's own check: what it would quarantine is refused here.
    crate::envelope::parse(
        &body,
        &Catalog::builtin(),
        config.delivery.max_event_bytes(),
    )
    .map_err(|invalid| anyhow::anyhow!("{invalid}; not published"))?;
    let broker = crate::broker::Broker::connect(&config.amqp, app::topology(config)).await?;
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

fn parse_time(flag: &str, value: Option<&str>) -> anyhow::Result<Option<OffsetDateTime>> {
    value
        .map(|v| {
            crate::domain::parse_utc(v).with_context(|| {
                format!(
                    "--{flag} must be an RFC 3339 time, at most the year 9999 in UTC, got {v:?}"
                )
            })
        })
        .transpose()
}

async fn healthcheck(config: &Config) -> anyhow::Result<()> {
    let mut address = config.api.listen;
    // Listening on every address: ask on loopback.
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .no_proxy()
        .build()?
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .with_context(|| format!("no answer from {address}"))?;
    if !response.status().is_success() {
        bail!("/healthz answered {}", response.status());
    }
    Ok(())
}

async fn prune(config: &Config, dry_run: bool) -> anyhow::Result<()> {
    use crate::retention;
    let retention = &config.retention;
    let describe = |counts: crate::storage::PruneCounts| {
        format!(
            "{} deliveries ({} attempts, {} events): succeeded ones older than {}, failed ones \
             older than {}",
            counts.deliveries,
            counts.attempts,
            counts.events,
            humantime::format_duration(retention.max_age),
            humantime::format_duration(retention.failed_max_age),
        )
    };
    if dry_run {
        match retention::prunable(&config.database.url, retention).await? {
            Some(counts) => println!(
                "dry run: would remove {}; nothing changed",
                describe(counts)
            ),
            None => println!("another worker is pruning now; nothing done"),
        }
        return Ok(());
    }
    match retention::prune_once(&config.database.url, retention).await? {
        Some(counts) => println!("removed {}", describe(counts)),
        None => println!("another worker is pruning now; nothing done"),
    }
    Ok(())
}

async fn replay(config: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    use crate::storage::{ReplayScope, Window};
    let window = Window {
        since: parse_time("since", args.since.as_deref())?,
        until: parse_time("until", args.until.as_deref())?,
    };
    if let (Some(since), Some(until)) = (window.since, window.until)
        && until < since
    {
        bail!("--until must not be before --since");
    }
    let scope = match (&args.webhook, &args.company) {
        (Some(id), _) => ReplayScope::Webhook(
            crate::domain::WebhookId::parse(id).context("--webhook must be a webhook id")?,
        ),
        (None, Some(company)) => ReplayScope::Company(
            crate::domain::CompanyId::parse(company.as_str())
                .map_err(|_| anyhow::anyhow!("--company must be a non-empty id"))?,
        ),
        (None, None) => bail!("give --webhook or --company"),
    };
    // A maintenance command: it changes no schema and no stored key (`run` and `migrate` do).
    let storage =
        crate::storage::Storage::open(&config.database, config.security.secret_keys.clone())?;
    let broker = crate::broker::Broker::connect(&config.amqp, app::topology(config)).await?;
    broker.declare_topology().await?;
    let counts = storage.count_failed(&scope, window).await?;
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    if args.dry_run {
        for (webhook, count) in &counts {
            println!("webhook {webhook}: {count} failed deliveries would be re-enqueued");
        }
        println!("dry run: {total} failed deliveries would be re-enqueued; nothing changed");
        broker.close().await;
        return Ok(());
    }
    let publisher = broker.publisher().await?;
    let enqueued = crate::recovery::replay_failed(&storage, &publisher, &scope, window, |done| {
        eprintln!("re-enqueued {done}/{total}");
    })
    .await?;
    broker.close().await;
    println!("re-enqueued {enqueued} failed deliveries");
    Ok(())
}

async fn quarantine(config: &Config, command: QuarantineCommand) -> anyhow::Result<()> {
    let broker = crate::broker::Broker::connect(&config.amqp, app::topology(config)).await?;
    broker.declare_topology().await?;
    let queue = broker.topology().quarantine_queue.clone();
    let selected = |selection: &QuarantineSelection, depth: u32| match selection.count {
        Some(n) => n.min(depth),
        None => depth,
    };
    match command {
        QuarantineCommand::List { limit } => {
            let depth = broker.depth(&queue).await?;
            let messages = broker.peek(&queue, limit).await?;
            println!("{depth} message(s) in {queue}");
            for (n, message) in messages.iter().enumerate() {
                let (exchange, key) = message.published_to();
                let reason = message.reason().unwrap_or_else(|| "(no reason)".into());
                let id = message.message_id().unwrap_or("(none)");
                let body = String::from_utf8_lossy(&message.body);
                let preview: String = body.chars().take(300).collect();
                println!(
                    "#{}  {reason}\n    from {exchange}/{key}, message id {id}\n    {preview}",
                    n + 1
                );
            }
        }
        QuarantineCommand::Drop(selection) => {
            let count = selected(&selection, broker.depth(&queue).await?);
            let mut dropped = 0;
            while dropped < count && broker.fetch(&queue).await?.is_some() {
                dropped += 1;
            }
            println!("dropped {dropped} message(s)");
        }
        QuarantineCommand::Requeue(selection) => {
            // Bounded by the depth now: a message that fails again returns to the queue and
            // must not be requeued in a loop.
            let count = selected(&selection, broker.depth(&queue).await?);
            let publisher = broker.publisher().await?;
            let moved = broker.requeue_quarantined(&publisher, count).await?;
            println!("requeued {moved} message(s)");
        }
    }
    broker.close().await;
    Ok(())
}
