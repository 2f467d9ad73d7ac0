//! Test harness: `TestWorker` (a whole worker on fresh broker names and a fresh database, torn
//! down on drop), `TestReceiver` (a webhook endpoint whose replies are scripted), and
//! `wait_until` (poll a condition against a deadline instead of sleeping a fixed time).

#![allow(
    dead_code,
    reason = "shared by the it, outage and cluster test binaries; each uses part of it"
)]

use std::{
    collections::VecDeque,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header::LOCATION},
    response::{IntoResponse, Response},
};
use rand::Rng;
use serde_json::{Value, json};
use tesoro_webhooks::{
    app,
    broker::{Broker, Message, Publisher},
    config::Config,
    retry::RetrySchedule,
    sender::{HostResolver, SystemResolver},
    storage,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-admin-token";
/// Long enough for a loaded CI machine, short enough that a hang fails the test soon.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` at the deadline.
pub async fn wait_until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until_within(DEADLINE, what, check).await
}

/// `wait_until` with a deadline of its own, for waits that are long by design.
pub async fn wait_until_within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample `series` (a metric name with its labels, as /metrics prints it:
/// `tesoro_webhooks_attempts_total{result="delivered"}`) in a /metrics text.
pub fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// One of `rabbitmqctl list_queues`' counters for `queue`: `messages` (ready plus
/// unacknowledged), `messages_ready` or `messages_unacknowledged`. rabbitmqctl blocks for a
/// second or so, so it runs off the runtime's threads.
pub async fn queue_count(queue: &str, counter: &'static str) -> u64 {
    let queue = queue.to_owned();
    tokio::task::spawn_blocking(move || rabbitmqctl_queue_count(&queue, counter))
        .await
        .expect("rabbitmqctl")
}

fn rabbitmqctl_queue_count(queue: &str, counter: &str) -> u64 {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "--no-table-headers",
            "--silent",
            "name",
            counter,
        ])
        .output()
        .expect("rabbitmqctl list_queues");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(queue)).then(|| fields.next()?.parse().ok())?
        })
        .expect("queue listed")
}

fn random_suffix() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// A connection of the test's own to the database at `url`, with the TLS its sslmode asks
/// for, as the worker connects.
pub async fn connect_db(url: &str) -> tokio_postgres::Client {
    let target = storage::database_target(url).expect("database url");
    let (client, connection) = target
        .config
        .connect(target.tls)
        .await
        .expect("test db connection");
    tokio::spawn(connection);
    client
}

/// Publishes `body` with a confirm, reconnecting (to the nodes of `amqp.url` in order) until
/// the broker takes it: a CRM service that keeps an event until it is confirmed.
pub async fn publish_until_confirmed(
    config: &Config,
    connection: &mut Option<(Broker, Publisher)>,
    id: &str,
    body: &[u8],
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if connection.is_none()
            && let Ok(broker) = Broker::connect(&config.amqp, app::topology(config)).await
            && let Ok(publisher) = broker.publisher().await
        {
            *connection = Some((broker, publisher));
        }
        if let Some((_, publisher)) = connection.as_ref() {
            if publisher.publish_event("deal.won", id, body).await.is_ok() {
                return;
            }
            *connection = None;
        }
        assert!(Instant::now() < deadline, "the broker never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes `events` deal.won envelopes for `company` at 300 a second, each kept until the
/// broker confirms it (through outages and node failures); returns their ids in order.
pub async fn publish_at_300_per_second(
    config: &Config,
    company: &str,
    events: usize,
) -> Vec<String> {
    let mut connection = None;
    let mut ids = Vec::with_capacity(events);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 0..events {
        if n % 3 == 0 {
            tick.tick().await;
        }
        let (id, body) =
            tesoro_webhooks::cli::envelope("deal.won", company, json!({ "n": n }), None);
        publish_until_confirmed(config, &mut connection, &id, &body).await;
        ids.push(id);
    }
    ids
}

/// The shortest wait of the tests' retry tier: 200 ms less its 10 % jitter.
pub const SHORTEST_RETRY: Duration = Duration::from_millis(180);

/// A config on fresh names: prefix, events exchange, database; a 200 ms retry schedule.
pub fn test_config() -> Config {
    let suffix = random_suffix();
    let mut config = Config::defaults().expect("defaults load");
    config.amqp.prefix = format!("test_{suffix}");
    config.amqp.events_exchange = format!("test_{suffix}.crm-events");
    config.amqp.prefetch = 64;
    // Few tries, so a failing message reaches quarantine within about 1.5 s.
    config.amqp.delivery_limit = 5;
    config.database.url = format!("postgres://postgres@127.0.0.1:5432/tw_test_{suffix}");
    config.api.admin_token = TOKEN.into();
    config.delivery.retry_schedule =
        RetrySchedule::new(vec![Duration::from_millis(200); 4]).expect("valid schedule");
    config.delivery.timeout = Duration::from_secs(2);
    config.delivery.allow_private_targets = true;
    config
}

pub struct TestWorker {
    pub config: Config,
    pub base_url: String,
    pub http: reqwest::Client,
    pub db: tokio_postgres::Client,
    pub broker: Broker,
    publisher: Publisher,
    /// For what the worker's own API does not send: raw bytes, taps.
    pub amqp: testkit::amqp::Client,
    raw: testkit::amqp::RawPublisher,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), app::AppError>>>,
    /// Set when the worker runs as the real binary in a child process (`start_process`).
    process: Option<WorkerProcess>,
}

/// The worker binary in a child process, for tests that kill or stop it.
/// See `TestWorker::healthy_and_failing`.
pub struct TwoEndpoints {
    pub healthy: TestReceiver,
    pub failing: TestReceiver,
    pub ok: String,
    pub bad: String,
}

pub struct WorkerProcess {
    child: std::process::Child,
    /// Deleted when dropped, so it lives as long as the process that reads it.
    _config_file: tempfile::TempPath,
    /// Its stderr (the log, at info level): a file, which never blocks the writer as an
    /// unread pipe would.
    log: tempfile::NamedTempFile,
}

impl TestWorker {
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> Self {
        Self::start_resolving(config, Arc::new(SystemResolver)).await
    }

    /// A worker that resolves webhook host names with `resolver`.
    pub async fn start_resolving(config: Config, resolver: Arc<dyn HostResolver>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        // `prepare` first, so the database and queues exist before the test publishes.
        app::prepare(&config).await.expect("prepare");
        let shutdown = CancellationToken::new();
        let run = app::run_with_resolver(config.clone(), listener, shutdown.clone(), resolver);
        let handle = tokio::spawn(run);
        Self::attach(config, base_url, shutdown, Some(handle), None).await
    }

    /// Runs the real `tesoro-webhooks run` binary in a child process.
    pub async fn start_process(config: Config) -> Self {
        Self::start_process_with_env(config, &[]).await
    }

    /// `start_process`, with environment variables of its own (keys the config file the
    /// harness writes leaves at their defaults).
    pub async fn start_process_with_env(config: Config, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        app::prepare(&config).await.expect("prepare");
        let process = WorkerProcess::spawn(&config, port, env);
        let base_url = format!("http://127.0.0.1:{port}");
        Self::attach(
            config,
            base_url,
            CancellationToken::new(),
            None,
            Some(process),
        )
        .await
    }

    async fn attach(
        config: Config,
        base_url: String,
        shutdown: CancellationToken,
        handle: Option<JoinHandle<Result<(), app::AppError>>>,
        process: Option<WorkerProcess>,
    ) -> Self {
        // The test's own HTTP client needs the crypto provider the worker installs too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let broker = Broker::connect(&config.amqp, app::topology(&config))
            .await
            .expect("test broker connection");
        let publisher = broker.publisher().await.expect("publisher");
        let amqp = testkit::amqp::Client::connect(&config.amqp.url)
            .await
            .expect("test amqp connection");
        let raw = amqp.publisher().await.expect("raw publisher");
        let db = connect_db(&config.database.url).await;
        let worker = Self {
            config,
            base_url,
            http: reqwest::Client::new(),
            db,
            broker,
            publisher,
            amqp,
            raw,
            shutdown,
            handle,
            process,
        };
        worker.wait_ready().await;
        worker
    }

    pub async fn wait_ready(&self) {
        self.wait_ready_within(DEADLINE).await;
    }

    pub async fn wait_ready_within(&self, deadline: Duration) {
        wait_until_within(deadline, "the worker to be ready", || async {
            let response = self.http.get(self.url("/readyz")).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The readiness body's `down` list, or `None` when ready (or unreachable).
    pub async fn not_ready(&self) -> Option<Vec<String>> {
        let response = self.http.get(self.url("/readyz")).send().await.ok()?;
        if response.status() != 503 {
            return None;
        }
        let body: serde_json::Value = response.json().await.ok()?;
        Some(
            body["down"]
                .as_array()?
                .iter()
                .filter_map(|v| Some(v.as_str()?.to_owned()))
                .collect(),
        )
    }

    /// The text of /metrics. In-process workers share one recorder: only a process worker's
    /// figures are its own.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// An admin API call with the token; returns status and JSON body (Null when empty).
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("api call");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a webhook for `company` pointing at `url`; returns its JSON.
    pub async fn create_webhook(&self, company: &str, url: &str, events: &[&str]) -> Value {
        let (status, body) = self
            .api(
                "POST",
                "/v1/webhooks",
                Some(json!({"company_id": company, "name": "test", "url": url, "events": events})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Two webhooks of `company` for deal.won: `ok` on a receiver that answers 200, `bad` on
    /// one that answers `failing_status`.
    pub async fn healthy_and_failing(&self, company: &str, failing_status: u16) -> TwoEndpoints {
        let healthy = TestReceiver::start().await;
        let failing = TestReceiver::start().await;
        failing.set_default(Reply::Status(failing_status));
        let ok = self
            .create_webhook(company, &healthy.url(), &["deal.won"])
            .await;
        let bad = self
            .create_webhook(company, &failing.url(), &["deal.won"])
            .await;
        let id = |webhook: &Value| webhook["id"].as_str().expect("id").to_owned();
        TwoEndpoints {
            ok: id(&ok),
            bad: id(&bad),
            healthy,
            failing,
        }
    }

    /// Enables or disables a webhook through the API; returns its JSON.
    pub async fn set_enabled(&self, webhook_id: &str, enabled: bool) -> Value {
        let (status, body) = self
            .api(
                "PATCH",
                &format!("/v1/webhooks/{webhook_id}"),
                Some(json!({"enabled": enabled})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Publishes an envelope as a CRM service would; returns its event id and exact bytes.
    pub async fn publish(&self, event: &str, company: &str, data: Value) -> (String, Vec<u8>) {
        let (id, body) = tesoro_webhooks::cli::envelope(event, company, data, None);
        self.publisher
            .publish_event(event, &id, &body)
            .await
            .expect("publish");
        (id, body)
    }

    /// Publishes raw bytes to the events exchange.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        self.publish_raw_to(&self.config.amqp.events_exchange, routing_key, body)
            .await;
    }

    /// Publishes raw bytes, no properties, to `exchange`.
    pub async fn publish_raw_to(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        self.raw
            .publish(exchange, routing_key, None, body)
            .await
            .expect("publish raw");
    }

    /// The test's own publisher (to put hand-made messages on the worker's queues).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    pub async fn fetch(&self, queue: &str) -> Option<Message> {
        self.broker.fetch(queue).await.expect("fetch")
    }

    /// Binds a queue to every operational event the worker publishes from now on; read them
    /// with `next_operational`. Removed with the worker's queues.
    pub async fn tap_operational(&self) {
        let client = testkit::amqp::Client::connect(&self.config.amqp.url)
            .await
            .expect("connect");
        let exchange = &self.broker.topology().operational_exchange;
        client
            .bind_queue(exchange, &operational_tap(&self.config))
            .await
            .expect("bind the tap");
        client.close().await;
    }

    /// The next operational event on the tap, as JSON, with its routing key in `"_type"`.
    pub async fn next_operational(&self) -> Value {
        let queue = operational_tap(&self.config);
        wait_until("an operational event", || async {
            let message = self.fetch(&queue).await?;
            let mut event: Value = serde_json::from_slice(&message.body).expect("json");
            event["_type"] = json!(message.published_to().1);
            Some(event)
        })
        .await
    }

    /// Whether the tap holds no event (after waiting `settle` for a late one).
    pub async fn no_operational_within(&self, settle: Duration) -> bool {
        tokio::time::sleep(settle).await;
        self.fetch(&operational_tap(&self.config)).await.is_none()
    }

    /// (status, attempt_count) of the delivery of `event_id` to `webhook_id`.
    pub async fn delivery(&self, event_id: &str, webhook_id: &str) -> Option<(String, i32)> {
        let webhook = uuid::Uuid::parse_str(webhook_id).expect("uuid");
        let row = self
            .db
            .query_opt(
                "SELECT status, attempt_count FROM deliveries WHERE event_id = $1 AND webhook_id = $2",
                &[&event_id, &webhook],
            )
            .await
            .expect("query");
        row.map(|r| (r.get(0), r.get(1)))
    }

    /// Waits until the delivery reaches `status`, returning its attempt count.
    pub async fn wait_for_status(&self, event_id: &str, webhook_id: &str, status: &str) -> i32 {
        wait_until(&format!("delivery status {status}"), || async {
            let (current, attempts) = self.delivery(event_id, webhook_id).await?;
            (current == status).then_some(attempts)
        })
        .await
    }

    pub async fn attempts(&self, event_id: &str) -> Vec<tokio_postgres::Row> {
        self.db
            .query(
                "SELECT a.* FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
                 WHERE d.event_id = $1 ORDER BY a.attempt_number",
                &[&event_id],
            )
            .await
            .expect("query attempts")
    }

    /// Stops the worker and waits for it to exit.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            let result = tokio::time::timeout(DEADLINE, handle).await;
            result
                .expect("worker stops in time")
                .expect("join")
                .expect("worker result");
        }
    }
}

/// A config file for the worker binary with the keys tests change.
fn config_file(config: &Config, port: u16) -> tempfile::TempPath {
    let delays: Vec<String> = config
        .delivery
        .retry_schedule
        .delays()
        .iter()
        .map(|d| format!("\"{}ms\"", d.as_millis()))
        .collect();
    let toml = format!(
        "[amqp]\nurl = \"{}\"\nprefix = \"{}\"\nevents_exchange = \"{}\"\ndelivery_limit = {}\n\
         connect_timeout = \"{}ms\"\nevent_queues = {}\n\
         [database]\nurl = \"{}\"\n\
         [api]\nlisten = \"127.0.0.1:{port}\"\nadmin_token = \"{TOKEN}\"\n\
         [delivery]\nretry_schedule = [{}]\nallow_private_targets = true\nmax_event_size = {}\n\
         [retention]\nmax_age = \"{}ms\"\nfailed_max_age = \"{}ms\"\ninterval = \"{}ms\"\n\
         partition = \"{}s\"\n",
        config.amqp.url,
        config.amqp.prefix,
        config.amqp.events_exchange,
        config.amqp.delivery_limit,
        config.amqp.connect_timeout.as_millis(),
        config.amqp.event_queues,
        config.database.url,
        delays.join(", "),
        config.delivery.max_event_size.as_u64(),
        config.retention.max_age.as_millis(),
        config.retention.failed_max_age.as_millis(),
        config.retention.interval.as_millis(),
        config.retention.partition.as_secs(),
    );
    let mut file = tempfile::NamedTempFile::new().expect("config file");
    std::io::Write::write_all(&mut file, toml.as_bytes()).expect("write config");
    file.into_temp_path()
}

/// Output of one CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl WorkerProcess {
    fn spawn(config: &Config, port: u16, env: &[(&str, &str)]) -> Self {
        let config_file = config_file(config, port);
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tesoro-webhooks"))
            .arg("run")
            .arg("--config")
            .arg(&config_file)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().expect("log file handle"))
            .spawn()
            .expect("spawn worker binary");
        Self {
            child,
            _config_file: config_file,
            log,
        }
    }

    /// Whether the process is still running (it was not restarted, nor did it exit).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestWorker {
    /// Runs the binary with `args` and this worker's configuration.
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_as(&self.config, args).await
    }

    /// Runs the binary with `args` and `config`.
    pub async fn cli_as(&self, config: &Config, args: &[&str]) -> CliOutput {
        let file = config_file(config, 0);
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tesoro-webhooks"))
            .args(args)
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("run the CLI");
        CliOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// SIGKILL the worker process: no shutdown, no acks, nothing flushed.
    pub fn kill_process(&mut self) {
        let process = self.process.as_mut().expect("a process worker");
        process.child.kill().expect("kill -9");
        process.child.wait().expect("reap");
    }

    /// SIGTERM the worker process, as a deploy does; waits for it to exit. Returns its exit
    /// status and what it logged.
    pub async fn terminate_process(&mut self) -> (std::process::ExitStatus, String) {
        let process = self.process.as_mut().expect("a process worker");
        let signalled = std::process::Command::new("kill")
            .args(["-TERM", &process.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(signalled.success(), "kill -TERM failed");
        let status = wait_until("the worker process to exit", || {
            let exited = process.child.try_wait().expect("poll the worker process");
            async move { exited }
        })
        .await;
        let log = std::fs::read_to_string(process.log.path()).expect("read the worker log");
        (status, log)
    }

    /// Another worker binary on the same configuration (its own admin port), sharing the
    /// work with this one; stopped when dropped.
    pub async fn start_sibling(&self) -> WorkerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let sibling = WorkerProcess::spawn(&self.config, port, &[]);
        wait_until("the sibling worker to be ready", || async {
            let url = format!("http://127.0.0.1:{port}/readyz");
            let response = self.http.get(url).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        sibling
    }

    /// The worker process, for tests that watch it.
    pub fn process(&mut self) -> &mut WorkerProcess {
        self.process.as_mut().expect("a process worker")
    }

    /// Starts the binary again with the same configuration and port.
    pub async fn restart_process(&mut self) {
        let process = self.process.as_mut().expect("a process worker");
        let port: u16 = self
            .base_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        *process = WorkerProcess::spawn(&self.config, port, &[]);
        self.wait_ready().await;
    }
}

impl Drop for TestWorker {
    /// Removes the queues, exchanges and database this test created, even when it panicked.
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(process) = self.process.as_mut() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
        remove_everything(self.config.clone());
    }
}

/// The queue a test binds to the worker's operational events (`TestWorker::tap_operational`).
fn operational_tap(config: &Config) -> String {
    format!("{}.test-tap.operational", config.amqp.prefix)
}

/// Deletes the queues, exchanges and database of `config`.
fn remove_everything(config: Config) {
    clean_up(async move {
        if let Ok(client) = testkit::amqp::Client::connect(&config.amqp.url).await {
            let _ = client.delete_queue(&operational_tap(&config)).await;
            client.close().await;
        }
        if let Ok(broker) = Broker::connect(&config.amqp, app::topology(&config)).await {
            let _ = broker.delete_topology(true).await;
            broker.close().await;
        }
        let _ = storage::drop_database(&config.database.url).await;
    });
}

/// The topology and database of a fresh config, declared and migrated, with no worker
/// consuming: for tests that play the consumer themselves. Removed on drop.
pub struct Prepared {
    pub config: Config,
    pub broker: Broker,
}

impl Prepared {
    pub async fn create() -> Self {
        Self::create_with(test_config()).await
    }

    pub async fn create_with(config: Config) -> Self {
        let (storage, broker) = app::prepare(&config).await.expect("prepare");
        storage.close();
        Self { config, broker }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        remove_everything(self.config.clone());
    }
}

/// Answers host names from a script, without the system resolver: each lookup of a name takes
/// its next answer, the last one repeating (so a name can answer differently the second
/// time, as in DNS rebinding). Unknown names resolve to the `otherwise` answer, or not at all.
#[derive(Default)]
pub struct ScriptedResolver {
    answers: Mutex<std::collections::HashMap<String, VecDeque<Vec<std::net::IpAddr>>>>,
    otherwise: Option<Vec<std::net::IpAddr>>,
}

impl ScriptedResolver {
    pub fn otherwise(mut self, ips: &[&str]) -> Self {
        self.otherwise = Some(ips.iter().map(|ip| ip.parse().expect("ip")).collect());
        self
    }

    pub fn answer(self, host: &str, answers: &[&[&str]]) -> Self {
        let answers = answers
            .iter()
            .map(|ips| ips.iter().map(|ip| ip.parse().expect("ip")).collect())
            .collect();
        self.answers
            .lock()
            .expect("lock")
            .insert(host.to_owned(), answers);
        self
    }
}

impl HostResolver for ScriptedResolver {
    fn lookup(
        &self,
        host: &str,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<std::net::IpAddr>>> {
        let mut answers = self.answers.lock().expect("lock");
        let answer = answers.get_mut(host).and_then(|queue| {
            if queue.len() > 1 {
                queue.pop_front()
            } else {
                queue.front().cloned()
            }
        });
        let answer = answer.or_else(|| self.otherwise.clone());
        Box::pin(std::future::ready(answer.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")
        })))
    }
}

/// How a `TestReceiver` answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// Answer `status` after `delay`.
    Slow(Duration, u16),
    /// A 302 to this location.
    Redirect(String),
    /// `status` with a `Retry-After` header of this value.
    RetryAfter(u16, String),
    /// `status` and the start of the body at once, the rest of the body after `pause`.
    Trickle {
        status: u16,
        first: &'static str,
        pause: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
}

/// A webhook endpoint on 127.0.0.1: records every request, answers from its script, then
/// with its default reply (200 unless changed).
#[derive(Clone)]
pub struct TestReceiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl TestReceiver {
    pub async fn start() -> Self {
        let state = Arc::new(ReceiverState {
            received: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::Status(200)),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(receive).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Replies for the next requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().expect("lock").extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().expect("lock") = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// How many of the events `ids` never arrived (by their `webhook-id`).
    pub fn missing(&self, ids: &[String]) -> usize {
        let received: std::collections::HashSet<String> = self
            .received()
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        ids.iter().filter(|id| !received.contains(*id)).count()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        wait_until(&format!("{n} requests at {}", self.url()), || async {
            let received = self.received();
            (received.len() >= n).then_some(received)
        })
        .await
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.received.lock().expect("lock").push(Received {
        at: Instant::now(),
        headers,
        body,
    });
    let scripted = state.script.lock().expect("lock").pop_front();
    let reply = scripted.unwrap_or_else(|| state.default.lock().expect("lock").clone());
    match reply {
        Reply::Status(code) => status(code).into_response(),
        Reply::Slow(delay, code) => {
            tokio::time::sleep(delay).await;
            status(code).into_response()
        }
        Reply::Redirect(location) => {
            (StatusCode::FOUND, [(LOCATION, location)], "moved").into_response()
        }
        Reply::RetryAfter(code, wait) => {
            let code = StatusCode::from_u16(code).expect("valid status");
            (code, [(axum::http::header::RETRY_AFTER, wait)], "later").into_response()
        }
        Reply::Trickle {
            status,
            first,
            pause,
        } => {
            use futures_util::StreamExt;
            let head =
                futures_util::stream::once(async move { Bytes::from_static(first.as_bytes()) });
            let rest = futures_util::stream::once(async move {
                tokio::time::sleep(pause).await;
                Bytes::from_static(b" and the rest")
            });
            let body = axum::body::Body::from_stream(
                head.chain(rest).map(Ok::<_, std::convert::Infallible>),
            );
            (StatusCode::from_u16(status).expect("valid status"), body).into_response()
        }
    }
}

fn status(code: u16) -> (StatusCode, &'static str) {
    (
        StatusCode::from_u16(code).expect("valid status"),
        "receiver says hello",
    )
}

/// A fresh, migrated database and no worker: for storage-level tests. Dropped on drop.
pub struct TestDatabase {
    pub storage: storage::Storage,
    pub db: tokio_postgres::Client,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let config = test_config();
        let storage = storage::Storage::connect(&config.database, config.security.secret_keys)
            .await
            .expect("database created");
        storage
            .create_partitions_ahead(config.retention.partition)
            .await
            .expect("partitions");
        let db = connect_db(&config.database.url).await;
        Self {
            storage,
            db,
            url: config.database.url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let url = self.url.clone();
        clean_up(async move {
            let _ = storage::drop_database(&url).await;
        });
    }
}

/// Runs `work` to completion from `Drop`, which may run inside the test's runtime (where
/// blocking on it is not allowed): on a thread of its own, with a runtime of its own.
fn clean_up(work: impl Future<Output = ()> + Send + 'static) {
    let cleanup = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime")
            .block_on(work);
    });
    let _ = cleanup.join();
}

/// Every event of `ids` reached the receiver, and nothing was quarantined.
pub async fn every_event_received_none_quarantined(
    worker: &TestWorker,
    receiver: &TestReceiver,
    ids: &[String],
) {
    let missing = receiver.missing(ids);
    assert_eq!(missing, 0, "events that never reached the receiver");
    let quarantine = &worker.broker.topology().quarantine_queue;
    assert_eq!(
        queue_count(quarantine, "messages").await,
        0,
        "no valid event quarantined"
    );
}
