//! A graceful stop: on SIGTERM the worker binary finishes its work and exits 0, logging nothing
//! at error level, so a routine deploy never looks like an incident. Its log, written to a
//! file, is plain text. An interrupted benchmark still removes what it created.

use std::process::Stdio;

use serde_json::json;
use tesoro_webhooks::{app, broker::Broker};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{TestReceiver, TestWorker, test_config, wait_until};

#[tokio::test]
async fn sigterm_ends_the_worker_with_success_and_no_error_logged() {
    let mut worker = TestWorker::start_process(test_config()).await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_stop", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    // One delivery first, so the consumers, the ack coalescer and the publisher are all in use.
    let (event_id, _) = worker.publish("deal.won", "cmp_stop", json!({})).await;
    worker
        .wait_for_status(&event_id, webhook_id, "succeeded")
        .await;

    let (status, log) = worker.terminate_process().await;
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(log.contains("worker stopped"), "log:\n{log}");
    assert!(
        !log.contains("ERROR"),
        "a graceful stop logged an error:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "terminal colour codes in a log file:\n{log}"
    );
}

#[tokio::test]
async fn an_interrupted_bench_removes_its_queues_and_database() {
    // Long enough (1,000 s at 100/s) that only the interrupt can end it.
    let mut bench = tokio::process::Command::new(env!("CARGO_BIN_EXE_tesoro-webhooks"))
        .args(["bench", "--events", "100000", "--rate", "100"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the bench");
    let mut stderr = BufReader::new(bench.stderr.take().expect("stderr")).lines();
    let first = stderr
        .next_line()
        .await
        .expect("read")
        .expect("a first line");
    // "bench: prefix bench_<suffix>, database tw_bench_<suffix> (...)"
    let prefix = first
        .split_whitespace()
        .find(|word| word.starts_with("bench_"))
        .unwrap_or_else(|| panic!("no prefix in {first:?}"))
        .trim_end_matches(',')
        .to_owned();
    let database = format!("tw_{prefix}");
    let events_queue = format!("{prefix}.events");

    let config = test_config();
    let broker = Broker::connect(&config.amqp.url, app::topology(&config))
        .await
        .expect("broker");
    wait_until("the bench's worker to consume", || async {
        (broker.consumers(&events_queue).await.ok()? > 0).then_some(())
    })
    .await;

    let signalled = std::process::Command::new("kill")
        .args(["-INT", &bench.id().expect("pid").to_string()])
        .status()
        .expect("run kill");
    assert!(signalled.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), bench.wait())
        .await
        .expect("the bench exits after an interrupt")
        .expect("wait");
    // Its children share the pipe: were they orphaned, it would never close. Read to the
    // bench's last line, or give up after a while.
    let mut rest = String::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(line)) = stderr.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
            if line.starts_with("error:") {
                break;
            }
        }
    })
    .await;
    assert!(!status.success(), "an interrupted run is not a success");
    assert!(rest.contains("interrupted"), "stderr:\n{rest}");

    assert!(
        broker.consumers(&events_queue).await.is_err(),
        "{events_queue} still exists"
    );
    let mut admin_url = url::Url::parse(&config.database.url).expect("database.url");
    admin_url.set_path("/postgres");
    let (admin, connection) = tokio_postgres::connect(admin_url.as_str(), tokio_postgres::NoTls)
        .await
        .expect("postgres");
    tokio::spawn(connection);
    let left = admin
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .expect("query");
    assert!(left.is_empty(), "database {database} still exists");
    broker.close().await;
}
