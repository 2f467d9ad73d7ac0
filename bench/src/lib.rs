//! `tesoro-bench`: the load benchmark of tesoro-webhooks, against the real broker and database.
//! A crate of its own, so that the worker's dependencies are what it runs.
//!
//! It creates its own prefix, events exchange and database, starts a receiver on 127.0.0.1,
//! runs the worker binary (`tesoro-webhooks`, found beside this one unless `--worker` names
//! it) as a child process (so its CPU and memory are measured alone),
//! publishes `--events` envelopes (as fast as confirms allow, or at `--rate` per second, open
//! loop), and reports deliveries/s at steady state, publish→receive latency, worker CPU per
//! 1,000 deliveries and peak RSS. `--baseline` repeats the run with a bare consume → POST → ack
//! loop in place of the worker: the ceiling of this machine, measured in the same run. With
//! `--dead-webhooks`, the worker first runs with the dead webhooks disabled, so the healthy
//! webhooks' deliveries/s with and without them come from the same run.

mod preload;
mod process;
mod reads;
mod report;

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytesize::ByteSize;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use testkit::{
    amqp::{Client, RawPublisher},
    receiver::{self, Arrivals},
};

use process::Measured;
use reads::{ReadTimes, Reader};
pub use report::Report;
use report::{Neighbour, Phase, Preloading, Pruning};
use tesoro_webhooks::{
    broker::Broker,
    config::Config,
    domain::{CompanyId, EndpointUrl, SigningKey, SigningSecret, WebhookId},
    storage::{self, NewWebhook, Storage, WebhookChanges},
};

const EVENT_TYPE: &str = "deal.won";
const COMPANY: &str = "cmp_bench";
/// Confirms kept outstanding while publishing as fast as possible.
const CONFIRM_WINDOW: usize = 1000;
/// A run with no new delivery for this long is reported as stalled.
const STALL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Events to publish.
    #[arg(long, default_value_t = 20_000)]
    pub events: u32,
    /// Healthy webhooks subscribed to the event type: the fan-out.
    #[arg(long, default_value_t = 1)]
    pub webhooks: u32,
    /// Extra webhooks whose endpoint never answers (each attempt hits the timeout).
    #[arg(long, default_value_t = 0)]
    pub dead_webhooks: u32,
    /// Extra webhooks whose endpoint answers 500 at once, retried after 1, 2, 3 and 4 s (a
    /// short schedule, so the retry flow reaches its steady state within the run): the
    /// healthy webhooks' latency and the deliveries queue's depth are measured beside them.
    #[arg(long, default_value_t = 0)]
    pub failing_webhooks: u32,
    /// Publish at this many events per second (open loop) instead of as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Approximate size of each envelope.
    #[arg(long, default_value = "1KiB")]
    pub payload_bytes: ByteSize,
    /// Also measure a bare consume → POST → ack loop in the same run.
    #[arg(long)]
    pub baseline: bool,
    /// Measure the worker while it prunes: it keeps deliveries for 1 s only (retention), so
    /// pruning runs throughout, against a run of the same worker without pruning.
    #[arg(long)]
    pub prune: bool,
    /// Measure the worker with a full log: first on the empty database, then again after
    /// writing this many deliveries of other companies (with their attempts and events,
    /// spread over the retention window), with the dashboard's reads timed during both.
    #[arg(long, value_name = "DELIVERIES")]
    pub preload: Option<u64>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Names and settings of one benchmark run, and the environment its children get.
struct Setup {
    config: Config,
    env: Vec<(String, String)>,
    /// The run's own database, as named in `config.database.url`.
    database: String,
    baseline_exchange: String,
    baseline_queue: String,
    /// The worker's API, and the admin token it is started with.
    api_base: String,
    admin_token: String,
}

impl Setup {
    fn new(mut config: Config) -> anyhow::Result<Self> {
        let suffix = format!("{:012x}", rand::rng().random::<u64>() >> 16);
        let prefix = format!("bench_{suffix}");
        config.amqp.prefix = prefix.clone();
        config.amqp.events_exchange = format!("{prefix}.crm-events");
        let database = format!("tw_bench_{suffix}");
        let mut db = url::Url::parse(&config.database.url).context("database.url")?;
        db.set_path(&format!("/{database}"));
        config.database.url = db.to_string();
        config.delivery.allow_private_targets = true;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // Its own token, not guessable from the names the run prints: the default one makes
        // the worker warn, and its API accepts internal webhook targets.
        let admin_token = format!("{:032x}", rand::rng().random::<u128>());
        let env = [
            ("AMQP__PREFIX", config.amqp.prefix.clone()),
            ("AMQP__EVENTS_EXCHANGE", config.amqp.events_exchange.clone()),
            ("AMQP__URL", config.amqp.url.clone()),
            ("DATABASE__URL", config.database.url.clone()),
            ("DELIVERY__ALLOW_PRIVATE_TARGETS", "true".into()),
            ("API__LISTEN", format!("127.0.0.1:{port}")),
            ("API__ADMIN_TOKEN", admin_token.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{}{k}", tesoro_webhooks::config::ENV_PREFIX), v))
        .collect();
        Ok(Self {
            database,
            baseline_exchange: format!("{prefix}.baseline-events"),
            baseline_queue: format!("{prefix}.baseline"),
            api_base: format!("http://127.0.0.1:{port}"),
            admin_token,
            config,
            env,
        })
    }
}

/// The binaries a run starts, and the configuration file both are given.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The worker under test (`tesoro-webhooks`).
    pub worker: PathBuf,
    /// This benchmark's own binary, whose `baseline` command is the bare loop.
    pub bench: PathBuf,
    pub config: Option<PathBuf>,
}

/// A run stopped by SIGINT or SIGTERM before it had figures. The binary exits with 130, as a
/// shell reports a command ended by Ctrl-C, so scripts can tell it from a failed run.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; no figures ({cleanup})")]
pub struct Interrupted {
    cleanup: String,
}

/// How long removing a run's queues, exchanges and database may take before the bench gives
/// up and names what it left behind.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the benchmark and removes what it created, however it ends: with figures, with an
/// error, or when `interrupted` (SIGINT, SIGTERM) fires first. A run left behind would keep its
/// quorum queues, their messages and its database.
pub async fn run(
    config: Config,
    programs: Programs,
    args: BenchArgs,
    interrupted: CancellationToken,
) -> anyhow::Result<()> {
    if args.events == 0 || args.webhooks == 0 {
        bail!("--events and --webhooks must be at least 1");
    }
    if args.preload.is_some() && (args.prune || args.dead_webhooks > 0) {
        bail!("--preload measures the worker alone: leave out --prune and --dead-webhooks");
    }
    if args.failing_webhooks > 0 && (args.preload.is_some() || args.prune) {
        bail!("--failing-webhooks measures the worker alone: leave out --preload and --prune");
    }
    if args.preload == Some(0) {
        bail!("--preload must be at least 1");
    }
    // The envelope is the padding plus ~170 bytes of fields.
    let envelope_bytes = args.payload_bytes.as_u64().saturating_add(256);
    if envelope_bytes > config.delivery.max_event_size.as_u64() {
        bail!(
            "--payload-bytes {}: the events would be over delivery.max_event_size ({}), and \
             the worker would quarantine them; raise it with --config",
            args.payload_bytes,
            config.delivery.max_event_size
        );
    }
    let setup = Setup::new(config)?;
    eprintln!(
        "bench: queues and exchanges {}.*, database {} (removed at the end, also on Ctrl-C or \
         SIGTERM)",
        setup.config.amqp.prefix, setup.database
    );
    let mut opened = Opened::default();
    // Dropping the measurement on an interrupt kills and reaps its children (`Measured`'s
    // Drop) before `remove` deletes what they consumed from.
    let result = tokio::select! {
        biased;
        () = interrupted.cancelled() => None,
        result = connect_and_measure(&setup, &programs, &args, &mut opened) => Some(result),
    };
    let left_behind = tokio::time::timeout(CLEANUP_TIMEOUT, remove(&setup, opened))
        .await
        .unwrap_or_else(|_| vec![format!("(removal timed out after {CLEANUP_TIMEOUT:?})")]);
    let cleanup = if left_behind.is_empty() {
        format!(
            "removed {}.* and database {}",
            setup.config.amqp.prefix, setup.database
        )
    } else {
        format!("could not remove: {}", left_behind.join("; "))
    };
    let report = match result {
        Some(Ok(report)) => report,
        Some(Err(e)) => bail!("{e:#}; no figures ({cleanup})"),
        None => return Err(Interrupted { cleanup }.into()),
    };
    if !left_behind.is_empty() {
        eprintln!("bench: {cleanup}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// The connections a run opened, kept outside the measurement so they outlive an interrupt.
#[derive(Default)]
struct Opened {
    storage: Option<Storage>,
    broker: Option<Broker>,
    /// For what is not the worker's: the baseline's tap and the run's publisher.
    client: Option<Client>,
}

async fn connect_and_measure(
    setup: &Setup,
    programs: &Programs,
    args: &BenchArgs,
    opened: &mut Opened,
) -> anyhow::Result<Report> {
    // Creates and migrates the run's database.
    let storage = opened.storage.insert(
        Storage::connect(
            &setup.config.database,
            setup.config.security.secret_keys.clone(),
        )
        .await?,
    );
    let broker = opened.broker.insert(
        Broker::connect(
            &setup.config.amqp,
            tesoro_webhooks::app::topology(&setup.config),
        )
        .await?,
    );
    let client = opened
        .client
        .insert(Client::connect(&setup.config.amqp.url).await?);
    measure(setup, programs, args, storage, broker, client).await
}

/// Removes the run's queues, exchanges and database; returns what could not be removed.
async fn remove(setup: &Setup, opened: Opened) -> Vec<String> {
    let mut left_behind = Vec::new();
    // Without a connection of ours the run declared nothing (its worker starts after it).
    if let Some(client) = opened.client {
        if let Err(e) = client
            .delete_tap(&setup.baseline_exchange, &setup.baseline_queue)
            .await
        {
            left_behind.push(format!("{}: {e}", setup.baseline_queue));
        }
        client.close().await;
    }
    if let Some(broker) = opened.broker {
        if let Err(e) = broker.delete_topology(true).await {
            left_behind.push(format!("{}.*: {e}", setup.config.amqp.prefix));
        }
        broker.close().await;
    }
    if let Some(storage) = opened.storage {
        storage.close();
    }
    // Also when connecting failed half-way: the database may exist already.
    if let Err(e) = storage::drop_database(&setup.config.database.url).await {
        left_behind.push(format!("database {}: {e}", setup.database));
    }
    left_behind
}

async fn measure(
    setup: &Setup,
    programs: &Programs,
    args: &BenchArgs,
    storage: &Storage,
    broker: &Broker,
    client: &Client,
) -> anyhow::Result<Report> {
    let secret = SigningSecret::generate();
    let (addr, arrivals) = receiver::start(Some(secret.expose().to_owned())).await?;
    let (dead_addr, black_hole) = receiver::black_hole().await?;
    let healthy_url = format!("http://{addr}/hook");
    let company = CompanyId::parse(COMPANY).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut healthy = Vec::new();
    for n in 0..args.webhooks {
        let id = create_webhook(storage, &company, n, &healthy_url, &secret, true).await?;
        healthy.push((id, company.clone()));
    }
    // Dead webhooks start disabled: the reference run measures the healthy ones alone.
    let mut dead = Vec::new();
    for n in 0..args.dead_webhooks {
        let url = format!("http://{dead_addr}/dead");
        dead.push(create_webhook(storage, &company, n, &url, &secret, false).await?);
    }
    let (failing_addr, failures) = receiver::failing().await?;
    for n in 0..args.failing_webhooks {
        let url = format!("http://{failing_addr}/failing");
        create_webhook(storage, &company, n, &url, &secret, true).await?;
    }
    broker.declare_topology().await?;
    let publisher = client.publisher().await?;
    let events_queue = broker.topology().events_queues[0].clone();
    let healthy_deliveries = u64::from(args.events) * u64::from(args.webhooks);

    let run_worker = async |run: Run, env: &[(String, String)]| {
        let worker = Measured::spawn(&programs.worker, &["run"], env, programs.config.as_deref())?;
        run_phase(
            worker,
            broker,
            &events_queue,
            &publisher,
            &setup.config.amqp.events_exchange,
            args,
            run,
            &arrivals,
            healthy_deliveries,
        )
        .await
    };

    let without_dead = if dead.is_empty() {
        None
    } else {
        let phase = run_worker(Run::WithoutDead, &setup.env).await?;
        for id in &dead {
            let enable = WebhookChanges {
                enabled: Some(true),
                ..WebhookChanges::default()
            };
            storage.update_webhook(*id, enable).await?;
        }
        Some(phase)
    };
    let (worker_phase, preloading) = match args.preload {
        Some(deliveries) => {
            let home = healthy[0].0;
            let with_reads = async |run: Run, targets: Vec<(WebhookId, CompanyId)>| {
                let (base, token) = (setup.api_base.clone(), setup.admin_token.clone());
                let reader = Reader::new(base, token, targets, home)?;
                while_reading(&reader, run_worker(run, &setup.env)).await
            };
            let (empty, empty_reads) = with_reads(Run::WithoutPreload, healthy.clone()).await?;
            let mut db = preload::connect(&setup.config.database.url).await?;
            let preloaded =
                preload::preload(&mut db, storage, deliveries, &setup.config.retention).await?;
            let mut targets = preloaded.webhooks.clone();
            targets.extend(healthy);
            let before = preload::database_bytes(&db).await?;
            let (phase, reads) = with_reads(Run::Worker, targets).await?;
            let growth = preload::database_bytes(&db).await?.saturating_sub(before);
            let preloading = Preloading {
                bytes_per_delivery: growth as f64 / phase.deliveries.max(1) as f64,
                preloaded,
                empty,
                empty_reads,
                reads,
            };
            (Some(phase), Some(preloading))
        }
        None => (None, None),
    };
    let mut neighbour = None;
    let (worker_phase, pruning) = if let Some(phase) = worker_phase {
        (phase, None)
    } else if args.failing_webhooks > 0 {
        let deliveries_queue = &broker.topology().deliveries_queue;
        let env = failing_env(&setup.env);
        let started = Instant::now();
        let (phase, depths) =
            while_sampling(broker, deliveries_queue, run_worker(Run::Worker, &env)).await?;
        neighbour = Some(Neighbour::measure(
            args.failing_webhooks,
            &failures,
            started,
            Instant::now(),
            depths,
        ));
        (phase, None)
    } else if args.prune {
        let without = run_worker(Run::WithoutPruning, &retention_env(&setup.env, false)).await?;
        let before = storage.count_deliveries().await?;
        let phase = run_worker(Run::Worker, &retention_env(&setup.env, true)).await?;
        let after = storage.count_deliveries().await?;
        let pruned_deliveries = (before + phase.deliveries as u64).saturating_sub(after);
        (
            phase,
            Some(Pruning {
                without,
                pruned_deliveries,
            }),
        )
    } else {
        (run_worker(Run::Worker, &setup.env).await?, None)
    };
    black_hole.abort();

    let baseline = if args.baseline {
        arrivals
            .verify
            .store(false, std::sync::atomic::Ordering::Relaxed);
        client
            .declare_tap(&setup.baseline_exchange, &setup.baseline_queue)
            .await?;
        let loop_process = Measured::spawn(
            &programs.bench,
            &[
                "baseline",
                "--queue",
                &setup.baseline_queue,
                "--url",
                &healthy_url,
            ],
            &setup.env,
            programs.config.as_deref(),
        )?;
        // As many deliveries as the worker made: one event per delivery for the bare loop.
        let same_deliveries = BenchArgs {
            events: args.events.saturating_mul(args.webhooks),
            ..args.clone()
        };
        Some(
            run_phase(
                loop_process,
                broker,
                &setup.baseline_queue,
                &publisher,
                &setup.baseline_exchange,
                &same_deliveries,
                Run::Baseline,
                &arrivals,
                u64::from(same_deliveries.events),
            )
            .await?,
        )
    } else {
        None
    };
    Ok(Report {
        args: args.clone(),
        worker: worker_phase,
        baseline,
        without_dead,
        pruning,
        preloading,
        neighbour,
        signatures_checked: arrivals
            .signatures_checked
            .load(std::sync::atomic::Ordering::Relaxed),
        signatures_bad: arrivals
            .signatures_bad
            .load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// Runs `phase` while `reader` makes the dashboard's reads against the worker's API, from when
/// the API answers until the phase ends.
async fn while_reading(
    reader: &Reader,
    phase: impl Future<Output = anyhow::Result<Phase>>,
) -> anyhow::Result<(Phase, ReadTimes)> {
    beside(phase, async |stop| {
        reader.wait_until_up(&stop).await?;
        reader.run(stop).await
    })
    .await
}

/// Runs `phase` while sampling `queue`'s depth every second; returns the phase and the depths.
async fn while_sampling(
    broker: &Broker,
    queue: &str,
    phase: impl Future<Output = anyhow::Result<Phase>>,
) -> anyhow::Result<(Phase, Vec<u32>)> {
    beside(phase, async |stop| {
        let mut depths = Vec::new();
        while !stop.is_cancelled() {
            depths.push(broker.depth(queue).await?);
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        Ok(depths)
    })
    .await
}

/// Runs `phase`, and `work` until the phase ends (the token it is given is cancelled then).
async fn beside<T>(
    phase: impl Future<Output = anyhow::Result<Phase>>,
    work: impl AsyncFnOnce(CancellationToken) -> anyhow::Result<T>,
) -> anyhow::Result<(Phase, T)> {
    let stop = CancellationToken::new();
    let measured = async {
        let phase = phase.await;
        stop.cancel();
        phase
    };
    let (phase, other) = tokio::join!(measured, work(stop.clone()));
    Ok((phase?, other?))
}

/// `env` with the short retry schedule of `--failing-webhooks`.
fn failing_env(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push((
        format!(
            "{}DELIVERY__RETRY_SCHEDULE",
            tesoro_webhooks::config::ENV_PREFIX
        ),
        r#"["1s", "2s", "3s", "4s"]"#.to_owned(),
    ));
    env
}

/// The measured runs of one benchmark; each publishes its own event ids.
#[derive(Debug, Clone, Copy)]
enum Run {
    Worker = 0,
    Baseline = 1,
    /// The worker with the dead webhooks disabled: what the healthy ones get without them.
    WithoutDead = 2,
    /// The worker without pruning: what it delivers when retention has nothing to do.
    WithoutPruning = 3,
    /// The worker on an empty database, before `--preload` fills it.
    WithoutPreload = 4,
}

/// `env` with the log in partitions of a second, kept five times a second; with `prune`,
/// retained one second, so the worker retires what it delivered a second or two earlier, all
/// through the run. Both runs of `--prune` use the same partitions (a partition holds the
/// span it was created for, so the second run must not inherit the first one's), and differ
/// by the retiring alone.
fn retention_env(env: &[(String, String)], prune: bool) -> Vec<(String, String)> {
    let prefix = tesoro_webhooks::config::ENV_PREFIX;
    let mut env = env.to_vec();
    let mut settings = vec![
        ("RETENTION__INTERVAL", "200ms"),
        ("RETENTION__PARTITION", "1s"),
    ];
    if prune {
        settings.extend([
            ("RETENTION__MAX_AGE", "1s"),
            ("RETENTION__FAILED_MAX_AGE", "1s"),
        ]);
    }
    for (key, value) in settings {
        env.push((format!("{prefix}{key}"), value.to_owned()));
    }
    env
}

async fn create_webhook(
    storage: &Storage,
    company: &CompanyId,
    n: u32,
    url: &str,
    secret: &SigningSecret,
    enabled: bool,
) -> anyhow::Result<WebhookId> {
    let webhook = storage
        .create_webhook(NewWebhook {
            company_id: company.clone(),
            name: format!("bench {n}"),
            url: EndpointUrl::parse_stored(url)?,
            events: vec![tesoro_webhooks::domain::EventFilter::Exact(
                EVENT_TYPE.to_owned(),
            )],
            signing_key: Some(SigningKey::Hmac(secret.clone())),
            headers: Default::default(),
            rate_limit: None,
            enabled,
        })
        .await?;
    Ok(webhook.id)
}

/// Waits for `process` to consume `queue`, publishes the events, waits for `expected`
/// deliveries at the receiver, and measures.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
async fn run_phase(
    mut process: Measured,
    broker: &Broker,
    queue: &str,
    publisher: &RawPublisher,
    exchange: &str,
    args: &BenchArgs,
    run: Run,
    arrivals: &Arc<Arrivals>,
    expected: u64,
) -> anyhow::Result<Phase> {
    let start_wait = Instant::now();
    while broker.consumers(queue).await? == 0 {
        if !process.is_running() || start_wait.elapsed() > Duration::from_secs(60) {
            bail!("the process under test did not start consuming {queue}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    arrivals.start_run(run as u32);
    let cpu_before = process.cpu_seconds()?;
    let (published_at, publish_time) = publish(publisher, exchange, args, run).await?;
    let complete = wait_for(arrivals, expected, &mut process).await;
    let cpu = process.cpu_seconds()? - cpu_before;
    let peak_rss_mb = process.peak_rss_mb()?;
    process.stop().await;
    let received = arrivals.take();
    if !complete {
        eprintln!(
            "warning: only {} of {expected} deliveries arrived (stalled); figures cover those",
            received.len()
        );
    }
    Ok(Phase::measure(
        &received,
        &published_at,
        publish_time,
        cpu,
        peak_rss_mb,
    ))
}

/// Publishes `args.events` envelopes; returns each one's publish instant and the total time.
async fn publish(
    publisher: &RawPublisher,
    exchange: &str,
    args: &BenchArgs,
    run: Run,
) -> anyhow::Result<(Vec<Instant>, Duration)> {
    let pad = "x".repeat(usize::try_from(args.payload_bytes.as_u64())?.saturating_sub(160));
    let mut published_at = Vec::with_capacity(args.events as usize);
    let mut pending = VecDeque::with_capacity(CONFIRM_WINDOW);
    let start = Instant::now();
    for n in 0..args.events {
        if let Some(rate) = args.rate {
            let due = start + Duration::from_secs_f64(f64::from(n) / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let id = receiver::event_id(run as u32, n);
        // Stamped as a CRM service stamps its events: when each happens.
        let timestamp = tesoro_webhooks::envelope::rfc3339(time::OffsetDateTime::now_utc());
        let body = format!(
            r#"{{"id":"{id}","event":"{EVENT_TYPE}","timestamp":"{timestamp}","company_id":"{COMPANY}","data":{{"id":"deal_{n}","pad":"{pad}"}},"previous_data":null}}"#
        );
        published_at.push(Instant::now());
        pending.push_back(
            publisher
                .send(exchange, EVENT_TYPE, Some(&id), body.as_bytes())
                .await?,
        );
        if pending.len() >= CONFIRM_WINDOW
            && let Some(confirm) = pending.pop_front()
        {
            confirm.await?;
        }
    }
    for confirm in pending {
        confirm.await?;
    }
    Ok((published_at, start.elapsed()))
}

/// Waits until `expected` deliveries arrived; false when progress stalls or the process died.
async fn wait_for(arrivals: &Arrivals, expected: u64, process: &mut Measured) -> bool {
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    loop {
        let count = arrivals.count() as u64;
        if count >= expected {
            return true;
        }
        if count > last_count {
            last_count = count;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > STALL || !process.is_running() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
