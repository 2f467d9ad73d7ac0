//! `TestWorker`: a whole worker (in process, or as a child process) on fresh broker names and
//! a fresh database, torn down on drop; `Prepared`, the same names with no worker; a
//! scripted resolver for webhook host names.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tesoro_webhooks::{
    app,
    broker::{Broker, Message, Publisher},
    config::Config,
    sender::{HostResolver, SystemResolver},
    storage,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::*;

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
        self.api_as(TOKEN, method, path, body).await
    }

    /// An API call with `token`; returns status and JSON body (Null when empty).
    pub async fn api_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
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
        self.create_webhook_with(company, url, events, json!({}))
            .await
    }

    /// `create_webhook` with more members in its body (`{"secret": ...}`, `{"signature":
    /// "ed25519"}`).
    pub async fn create_webhook_with(
        &self,
        company: &str,
        url: &str,
        events: &[&str],
        more: Value,
    ) -> Value {
        let mut webhook =
            json!({"company_id": company, "name": "test", "url": url, "events": events});
        for (member, value) in more.as_object().expect("an object") {
            webhook[member] = value.clone();
        }
        let (status, body) = self.api("POST", "/v1/webhooks", Some(webhook)).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// A webhook of `company` for `events` on a new receiver that answers `reply`: the
    /// receiver and the webhook's id.
    pub async fn webhook_answering(
        &self,
        company: &str,
        events: &[&str],
        reply: Reply,
    ) -> (TestReceiver, String) {
        let receiver = TestReceiver::start().await;
        receiver.set_default(reply);
        let webhook = self.create_webhook(company, &receiver.url(), events).await;
        let id = webhook["id"].as_str().expect("id").to_owned();
        (receiver, id)
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
