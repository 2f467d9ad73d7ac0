//! Crashes and redeliveries: nothing is lost, and a delivery that succeeded is not sent again.

use std::{process::Stdio, time::Duration};

use serde_json::json;

use tesoro_webhooks::retry::RetrySchedule;

use crate::harness::{Reply, TestReceiver, TestWorker, queue_count, wait_until};

#[tokio::test]
async fn a_duplicate_publish_is_sent_with_the_same_webhook_id_on_the_same_delivery() {
    // A CRM service that publishes the same event twice (say, after a lost publisher confirm)
    // is not the worker's redelivery: the subscriber gets it again with the same `webhook-id`,
    // its idempotency key, and the log keeps one delivery with both attempts.
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_dup", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    let (event_id, body) = worker.publish("deal.won", "cmp_dup", json!({})).await;
    worker
        .wait_for_status(&event_id, webhook_id, "succeeded")
        .await;

    worker.publish_raw("deal.won", &body).await;
    let requests = receiver.wait_for(2).await;
    assert!(requests.iter().all(|r| r.header("webhook-id") == event_id));
    // A later event shows the duplicate's outcome was written before this check.
    let (later, _) = worker.publish("deal.won", "cmp_dup", json!({})).await;
    worker
        .wait_for_status(&later, webhook_id, "succeeded")
        .await;
    assert_eq!(worker.attempts(&event_id).await.len(), 2);
    let deliveries = worker
        .db
        .query("SELECT 1 FROM deliveries WHERE event_id = $1", &[&event_id])
        .await
        .expect("query");
    assert_eq!(deliveries.len(), 1);
}

/// Closes every broker connection whose name carries `prefix`, as a network failure would.
fn close_connections(prefix: &str) {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "--no-table-headers",
            "--silent",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl list_connections");
    let listing = String::from_utf8_lossy(&output.stdout);
    let pids: Vec<&str> = listing
        .lines()
        .filter(|line| line.contains(prefix))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        !pids.is_empty(),
        "no connection found for {prefix}:\n{listing}"
    );
    for pid in pids {
        let status = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test: simulated crash"])
            .stdout(Stdio::null())
            .status()
            .expect("rabbitmqctl close_connection");
        assert!(status.success());
    }
}

#[tokio::test]
async fn a_connection_lost_before_the_ack_redelivers_without_a_second_post() {
    let mut config = crate::harness::test_config();
    config.delivery.timeout = Duration::from_secs(15);
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    // Holds the response while the test cuts the connection under the worker.
    receiver.script([Reply::Slow(Duration::from_secs(4), 200)]);
    let webhook = worker
        .create_webhook("cmp_crash", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    let (event_id, _) = worker.publish("deal.won", "cmp_crash", json!({})).await;
    receiver.wait_for(1).await;

    let prefix = worker.config.amqp.prefix.clone();
    tokio::task::spawn_blocking(move || close_connections(&prefix))
        .await
        .expect("close connections");
    // The attempt completes and is recorded; its ack fails on the dead channel, so the broker
    // redelivers the event to the reconnected worker, which finds the delivery done.
    worker
        .wait_for_status(&event_id, webhook_id, "succeeded")
        .await;
    worker.wait_ready().await;
    let events_queue = worker.broker.topology().events_queues[0].clone();
    wait_until("the redelivered event to be consumed", || {
        let queue = events_queue.clone();
        async move { (queue_count(&queue, "messages").await == 0).then_some(()) }
    })
    .await;
    assert_eq!(receiver.received().len(), 1, "no second POST");
    assert_eq!(worker.attempts(&event_id).await.len(), 1);
}

#[tokio::test]
async fn kill_dash_nine_mid_stream_then_restart_delivers_every_event() {
    let mut worker = TestWorker::start_process(crate::harness::test_config()).await;
    let receiver = TestReceiver::start().await;
    // Latency per request keeps deliveries in flight when the process dies, and keeps the
    // worker (32 attempts in flight to one endpoint: at most 128 deliveries/s) well behind the
    // publishing of 400 events, however slowly a loaded machine confirms those publishes.
    receiver.set_default(Reply::Slow(Duration::from_millis(250), 200));
    let webhook = worker
        .create_webhook("cmp_kill", &receiver.url(), &["deal.*"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id").to_owned();

    let mut event_ids = Vec::new();
    for n in 0..400 {
        let (id, _) = worker
            .publish("deal.created", "cmp_kill", json!({"n": n}))
            .await;
        event_ids.push(id);
    }
    receiver.wait_for(30).await;
    worker.kill_process();
    let before_restart = receiver.received().len();
    assert!(before_restart < event_ids.len(), "killed mid-stream");

    worker.restart_process().await;
    wait_until("every event to arrive at least once", || async {
        let seen: std::collections::HashSet<String> = receiver
            .received()
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        event_ids.iter().all(|id| seen.contains(id)).then_some(())
    })
    .await;
    for id in &event_ids {
        worker.wait_for_status(id, &webhook_id, "succeeded").await;
    }
}

/// What the worker learned of an endpoint outlives its broker connection: after a reconnect,
/// a hanging endpoint's new deliveries are still parked at once, not attempted into the
/// timeout as if it were new.
#[tokio::test]
async fn what_was_learned_of_an_endpoint_survives_a_reconnect() {
    let mut config = crate::harness::test_config();
    config.delivery.timeout = Duration::from_secs(1);
    config.delivery.max_in_flight_per_endpoint = 16;
    // No retry comes back during the test.
    config.delivery.retry_schedule =
        RetrySchedule::new(vec![Duration::from_secs(60); 4]).expect("valid schedule");
    let worker = TestWorker::start_with(config).await;
    let hanging = TestReceiver::start().await;
    hanging.set_default(Reply::Slow(Duration::from_secs(3), 200));
    let webhook = worker
        .create_webhook("cmp_learned", &hanging.url(), &["deal.won"])
        .await;
    let webhook_id = uuid::Uuid::parse_str(webhook["id"].as_str().expect("id")).expect("uuid");
    // Eight attempts that run into the timeout: on average the endpoint hangs.
    for n in 0..8 {
        worker
            .publish("deal.won", "cmp_learned", json!({ "n": n }))
            .await;
    }
    wait_until("eight attempts timed out", || async {
        let row = worker
            .db
            .query_one(
                "SELECT count(*) FROM deliveries WHERE webhook_id = $1 AND status = 'retrying'",
                &[&webhook_id],
            )
            .await
            .expect("count");
        (row.get::<_, i64>(0) == 8).then_some(())
    })
    .await;

    let prefix = worker.config.amqp.prefix.clone();
    tokio::task::spawn_blocking(move || close_connections(&prefix))
        .await
        .expect("close connections");
    // Consumed once the worker has reconnected, whenever it notices the lost connection;
    // published on the test's other connection, which the close left open.
    let (event_id, body) =
        tesoro_webhooks::cli::envelope("deal.won", "cmp_learned", json!({}), None);
    worker.publish_raw("deal.won", &body).await;
    let (status, attempts, parked) = wait_until("the new delivery recorded", || async {
        let row = worker
            .db
            .query_opt(
                "SELECT status, attempt_count, parked_until IS NOT NULL FROM deliveries
                 WHERE event_id = $1",
                &[&event_id],
            )
            .await
            .expect("query");
        row.map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, i32>(1),
                r.get::<_, bool>(2),
            )
        })
    })
    .await;
    assert_eq!(
        (status.as_str(), attempts, parked),
        ("pending", 0, true),
        "parked untried, as before the reconnect"
    );
}
