//! Endpoint circuits across two worker processes. Its own test binary, run after the `it`
//! suite by `cargo test`: a second worker process beside the suite's parallel tests loads the
//! machine enough to move the timing that its rate-limit tests measure.

#[path = "it/harness/mod.rs"]
mod harness;

use std::time::Duration;

use harness::{Reply, TestWorker, test_config, wait_until_within};
use serde_json::json;
use tesoro_webhooks::{circuit::Policy, retry::RetrySchedule};

const SECOND: Duration = Duration::from_secs(1);

/// Publishes `n` deal.won events for `company`; returns their ids.
async fn publish(worker: &TestWorker, company: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(worker.publish("deal.won", company, json!({})).await.0);
    }
    ids
}

/// Each worker keeps its own circuit: an endpoint gets at most one probe per interval from
/// each, and the state they write is told once.
#[tokio::test]
async fn two_workers_probe_at_most_once_each_per_interval_and_tell_each_change_once() {
    // Opens after 3 failed attempts in a row, probes every second; retries after 1 s, then
    // 30 s.
    let mut config = test_config();
    config.delivery.retry_schedule =
        RetrySchedule::new(vec![SECOND, 30 * SECOND]).expect("valid schedule");
    config.circuit_breaker = Policy {
        enabled: true,
        failures: 3,
        failure_ratio: 1.0,
        min_attempts: 1000,
        window: 60 * SECOND,
        probe_interval: SECOND,
        max_probe_interval: SECOND,
    };
    let worker = TestWorker::start_with(config).await;
    let _sibling = worker.start_sibling().await;
    worker.tap_operational().await;
    let (receiver, webhook) = worker
        .webhook_answering("cmp_two_circuits", &["deal.won"], Reply::Status(500))
        .await;
    // Enough failures that both workers see three in a row, fresh or retried.
    let mut events = publish(&worker, "cmp_two_circuits", 12).await;
    let opened = worker.next_operational().await;
    assert_eq!(opened["_type"], "webhook.circuit_opened", "{opened}");
    tokio::time::sleep(3 * SECOND).await;
    let before = receiver.received().len();
    tokio::time::sleep(5 * SECOND).await;
    let probes = receiver.received().len() - before;
    assert!(probes <= 2 * 6, "{probes} attempts in 5 s with two workers");
    events.extend(publish(&worker, "cmp_two_circuits", 3).await);

    receiver.set_default(Reply::Status(200));
    // A worker that had not opened its circuit yet sent some retries, whose next attempt
    // waits in the 30 s tier like any failed attempt's.
    wait_until_within(60 * SECOND, "every delivery succeeded", || async {
        let row = worker
            .db
            .query_one(
                "SELECT count(*) FROM deliveries
                 WHERE event_id = ANY($1) AND webhook_id = $2 AND status = 'succeeded'",
                &[&events, &uuid::Uuid::parse_str(&webhook).expect("uuid")],
            )
            .await
            .ok()?;
        (row.get::<_, i64>(0) == 15).then_some(())
    })
    .await;
    let closed = worker.next_operational().await;
    assert_eq!(closed["_type"], "webhook.circuit_closed", "{closed}");
    assert!(
        worker.no_operational_within(SECOND).await,
        "each change told once, whichever worker made it"
    );
}
