//! Outages of the services themselves: each test stops PostgreSQL or RabbitMQ under load and
//! restores it even when it fails. Its own test binary, run after the others by `cargo test`,
//! and its tests one at a time (`SERIAL`): a stopped service breaks every test beside it.

#[path = "it/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{TestReceiver, TestWorker, wait_until};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the worker may take to resume once the service answers again: its probes back off
/// up to 30 s apart (`Backoff::for_outages`), so the one after the service returns may come
/// that late; the rest is margin for a loaded machine.
const RESUMES_WITHIN: Duration = Duration::from_secs(50);

/// Runs `ctl` with `args`, panicking if it fails.
fn run(ctl: &str, args: &[&str]) {
    let status = std::process::Command::new(ctl)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{ctl}: {e}"));
    assert!(status.success(), "{ctl} {args:?} failed");
}

fn postgres_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .next()
        .expect("a PostgreSQL cluster")
}

/// PostgreSQL stopped until dropped, which starts it again (also when the test panics).
struct StoppedDatabase {
    version: String,
}

impl StoppedDatabase {
    fn stop() -> Self {
        let version = postgres_version();
        run(
            "pg_ctlcluster",
            &[
                "--skip-systemctl-redirect",
                &version,
                "main",
                "stop",
                "-m",
                "fast",
            ],
        );
        Self { version }
    }
}

impl Drop for StoppedDatabase {
    fn drop(&mut self) {
        run(
            "pg_ctlcluster",
            &["--skip-systemctl-redirect", &self.version, "main", "start"],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_pauses_the_worker_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    const EVENTS: usize = 3000;
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    worker
        .create_webhook("cmp_outage", &receiver.url(), &["deal.won"])
        .await;

    // 300 events/s for 10 s; the database goes down 2 s in, for 30 s.
    let publishing = harness::publish_at_300_per_second(&worker.config, "cmp_outage", EVENTS);
    let outage = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let stopped = StoppedDatabase::stop();
        let started = Instant::now();
        let down = wait_until("/readyz to report the database down", || worker.not_ready()).await;
        assert!(down.contains(&"database".to_owned()), "{down:?}");
        tokio::time::sleep(Duration::from_secs(30).saturating_sub(started.elapsed())).await;
        let down = worker
            .not_ready()
            .await
            .expect("not ready while the database is down");
        assert_eq!(down, ["consumers", "database"], "paused for the database");
        let events_queue = &worker.broker.topology().events_queues[0];
        assert_eq!(
            harness::queue_count(events_queue, "messages_unacknowledged").await,
            0,
            "paused: nothing taken, nothing looping"
        );
        drop(stopped);
    };
    let (ids, ()) = tokio::join!(publishing, outage);
    assert_eq!(ids.len(), EVENTS);
    worker.wait_ready_within(RESUMES_WITHIN).await;

    // The test's own connection died with the server.
    let db = harness::connect_db(&worker.config.database.url).await;
    let succeeded = wait_until("every event delivered and recorded", || async {
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FROM deliveries",
                &[],
            )
            .await
            .ok()?;
        let (succeeded, all): (i64, i64) = (row.get(0), row.get(1));
        (succeeded == EVENTS as i64).then_some(all)
    })
    .await;
    assert_eq!(succeeded, EVENTS as i64, "one delivery per event");
    harness::every_event_received_none_quarantined(&worker, &receiver, &ids).await;
}

/// RabbitMQ's application stopped until dropped, which starts it again and waits for it.
struct StoppedBroker;

impl StoppedBroker {
    fn stop() -> Self {
        run("rabbitmqctl", &["stop_app"]);
        Self
    }
}

impl Drop for StoppedBroker {
    fn drop(&mut self) {
        run("rabbitmqctl", &["start_app"]);
        run("rabbitmqctl", &["await_startup", "--timeout", "60"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_under_load_is_reconnected_and_loses_no_confirmed_event() {
    let _serial = SERIAL.lock().await;
    const EVENTS: usize = 3000;
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_brk", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id").to_owned();

    let publishing = harness::publish_at_300_per_second(&worker.config, "cmp_brk", EVENTS);
    let outage = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let stopped = StoppedBroker::stop();
        let down = wait_until("/readyz to report the broker down", || worker.not_ready()).await;
        assert!(down.contains(&"consumers".to_owned()), "{down:?}");
        tokio::time::sleep(Duration::from_secs(10)).await;
        let down = worker
            .not_ready()
            .await
            .expect("not ready while the broker is down");
        assert_eq!(down, ["consumers", "broker"], "waiting for the broker");
        drop(stopped);
    };
    let (ids, ()) = tokio::join!(publishing, outage);
    worker.wait_ready_within(RESUMES_WITHIN).await;
    for id in &ids {
        worker.wait_for_status(id, &webhook_id, "succeeded").await;
    }
    harness::every_event_received_none_quarantined(&worker, &receiver, &ids).await;
}
