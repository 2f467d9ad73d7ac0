//! `tesoro-bench` as its users run it: it removes what it created however it ends, and
//! refuses a run whose events the worker would quarantine. It measures the `tesoro-webhooks`
//! binary beside it, which `cargo test` at the workspace's root builds.

use std::{process::Stdio, time::Duration};

use tesoro_webhooks::{app, broker::Broker, config::Config};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

/// The worker's defaults: the services at their usual addresses.
fn test_config() -> Config {
    Config::defaults().expect("defaults load")
}

/// `tesoro-bench`, told where the services are.
fn bench(config: &Config) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tesoro-bench"));
    command
        .env("TESORO_WEBHOOKS__AMQP__URL", &config.amqp.url)
        .env("TESORO_WEBHOOKS__DATABASE__URL", &config.database.url)
        .env("RUST_LOG", "warn");
    command
}

/// Polls `check` every 50 ms until it returns `Some`, for at most 30 s.
async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `bench` with `args`, which it must refuse: exit status 1 and `why` on stderr.
async fn refused(args: &[&str], why: &str) -> String {
    let output = bench(&test_config())
        .args(args)
        .output()
        .await
        .expect("run the bench");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(why), "{stderr}");
    stderr
}

#[tokio::test]
async fn a_payload_over_the_event_size_limit_is_refused_before_anything_is_created() {
    let stderr = refused(
        &["--events", "10", "--payload-bytes", "2MiB"],
        "over delivery.max_event_size (1.0 MiB)",
    )
    .await;
    assert!(
        !stderr.contains("bench: queues and exchanges"),
        "refused before naming (and creating) a run: {stderr}"
    );
}

#[tokio::test]
async fn an_interrupted_bench_removes_its_queues_exchanges_and_database() {
    let config = test_config();
    // Long enough (1,000 s at 100/s) that only the interrupt can end it.
    let mut bench = Bench(
        bench(&config)
            .args(["--events", "100000", "--rate", "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the bench"),
    );
    let mut stderr = BufReader::new(bench.0.stderr.take().expect("stderr")).lines();
    let first = stderr
        .next_line()
        .await
        .expect("read")
        .expect("a first line");
    // "bench: queues and exchanges bench_<suffix>.*, database tw_bench_<suffix> (...)"
    let prefix = first
        .split_whitespace()
        .find_map(|word| word.strip_suffix(".*,"))
        .unwrap_or_else(|| panic!("no prefix in {first:?}"))
        .to_owned();
    let database = format!("tw_{prefix}");
    let events_queue = format!("{prefix}.events");

    let broker = Broker::connect(&config.amqp, app::topology(&config))
        .await
        .expect("broker");
    wait_until("the bench's worker to consume", || {
        if let Some(status) = bench.0.try_wait().expect("poll the bench") {
            panic!("the bench ended early ({status})");
        }
        let (broker, queue) = (&broker, &events_queue);
        async move { (broker.consumers(queue).await.ok()? > 0).then_some(()) }
    })
    .await;
    assert!(
        !broker_objects(&prefix).await.is_empty(),
        "the listing sees the run's queues"
    );

    bench.interrupt();
    let status = tokio::time::timeout(Duration::from_secs(60), bench.0.wait())
        .await
        .expect("the bench exits after an interrupt")
        .expect("wait");
    // Its children share the pipe, so it closes only once none is left running.
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = stderr.next_line().await.expect("read") {
            rest.push_str(&line);
            rest.push('\n');
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a child of the bench outlived it; stderr:\n{rest}"));
    assert_eq!(status.code(), Some(130), "an interrupt's exit status");
    assert!(
        rest.contains("interrupted; no figures (removed"),
        "stderr:\n{rest}"
    );

    let left = broker_objects(&prefix).await;
    assert!(left.is_empty(), "left behind: {left:?}");
    let mut admin_url = url::Url::parse(&config.database.url).expect("database.url");
    admin_url.set_path("/postgres");
    let (admin, connection) = tokio_postgres::connect(admin_url.as_str(), tokio_postgres::NoTls)
        .await
        .expect("postgres");
    tokio::spawn(connection);
    let databases = admin
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .expect("query");
    assert!(databases.is_empty(), "database {database} still exists");
    broker.close().await;
}

/// Runs `bench` with `args` and `--json` to its end; returns its report and its stderr.
async fn report(args: &[&str]) -> (serde_json::Value, String) {
    let output = bench(&test_config())
        .args(args)
        .args(["--json"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the bench");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let report = serde_json::from_slice(&output.stdout).expect("JSON");
    (report, stderr)
}

#[tokio::test]
async fn a_preloaded_run_reports_the_log_it_wrote_and_the_dashboard_reads_during_it() {
    let (report, stderr) = report(&["--events", "300", "--rate", "150", "--preload", "2000"]).await;
    assert!(
        stderr.contains("bench: preloaded 2000 of 2000 deliveries"),
        "{stderr}"
    );
    assert_eq!(report["preload"], 2000, "{report}");
    assert_eq!(report["deliveries"], 300, "{report}");
    // Each delivery written costs its event's kilobyte and more: the rows are really there.
    for size in ["preload_bytes_per_delivery", "bytes_per_delivery"] {
        let bytes = report[size].as_f64().unwrap_or_default();
        assert!(bytes > 1000.0, "{size}: {report}");
    }
    assert!(
        report["ratio_to_empty"].as_f64().unwrap_or_default() > 0.0,
        "{report}"
    );
    for reads in ["api_latency_ms", "empty_api_latency_ms"] {
        for read in [
            "webhook_deliveries",
            "webhook_attempts",
            "company_failed",
            "webhook_health",
            "delivery",
        ] {
            let timed = &report[reads][read];
            assert!(
                timed["count"].as_u64().unwrap_or_default() > 0,
                "{reads}.{read}: {report}"
            );
            assert!(
                timed["p99"].as_f64().unwrap_or_default() > 0.0,
                "{reads}.{read}: {report}"
            );
        }
    }
}

#[tokio::test]
async fn a_failing_neighbour_is_measured_beside_the_healthy_webhooks() {
    let (report, _) = report(&[
        "--events",
        "400",
        "--rate",
        "100",
        "--failing-webhooks",
        "1",
    ])
    .await;
    assert_eq!(
        report["deliveries"], 400,
        "every healthy delivery: {report}"
    );
    let failing = &report["failing"];
    assert_eq!(failing["webhooks"], 1, "{report}");
    // Its first attempts at least, until its circuit opens.
    assert!(
        failing["attempts"].as_u64().unwrap_or_default() >= 10,
        "{report}"
    );
    assert!(
        failing["deliveries_queue_every_10s"]
            .as_array()
            .is_some_and(|depths| !depths.is_empty()),
        "sampled over the 4 s run: {report}"
    );
    assert!(failing["deliveries_queue_max"].is_u64(), "{report}");
}

#[tokio::test]
async fn a_preload_with_pruning_or_dead_webhooks_is_refused() {
    for extra in [&["--prune"][..], &["--dead-webhooks", "1"]] {
        let args = [&["--events", "10", "--preload", "10"][..], extra].concat();
        refused(&args, "--preload measures the worker alone").await;
    }
    for extra in [&["--prune"][..], &["--preload", "10"]] {
        let args = [&["--events", "10", "--failing-webhooks", "1"][..], extra].concat();
        refused(&args, "--failing-webhooks measures the worker alone").await;
    }
}

/// The bench process; interrupted if the test ends first, so that it still cleans up.
struct Bench(tokio::process::Child);

impl Bench {
    fn interrupt(&self) {
        let pid = self.0.id().expect("pid").to_string();
        let signalled = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("run kill");
        assert!(signalled.success(), "kill -INT failed");
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.interrupt();
        }
    }
}

/// Queues and exchanges whose names start with `prefix`.
async fn broker_objects(prefix: &str) -> Vec<String> {
    let prefix = prefix.to_owned();
    tokio::task::spawn_blocking(move || {
        ["list_queues", "list_exchanges"]
            .into_iter()
            .flat_map(|listing| {
                let output = std::process::Command::new("rabbitmqctl")
                    .args([listing, "--no-table-headers", "--silent", "name"])
                    .output()
                    .expect("rabbitmqctl");
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter(|name| name.starts_with(&prefix))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    })
    .await
    .expect("rabbitmqctl")
}
