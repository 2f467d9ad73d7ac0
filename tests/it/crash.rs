//! Crashes and redeliveries: nothing is lost, and a delivery that succeeded is not sent again.

use std::{process::Stdio, time::Duration};

use serde_json::json;

use crate::harness::{Reply, TestReceiver, TestWorker, wait_until};

#[tokio::test]
async fn a_redelivered_event_is_not_sent_again_after_success() {
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

    // The broker hands the same envelope over again, as after a lost ack.
    worker.publish_raw("deal.won", &body).await;
    // A second event behind it shows the first was processed.
    let (later, _) = worker.publish("deal.won", "cmp_dup", json!({})).await;
    worker
        .wait_for_status(&later, webhook_id, "succeeded")
        .await;
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(
        ids.iter().filter(|id| **id == event_id).count(),
        1,
        "{ids:?}"
    );
    assert_eq!(worker.attempts(&event_id).await.len(), 1);
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

/// Ready plus unacknowledged messages in `queue`.
fn queue_depth(queue: &str) -> u64 {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "--no-table-headers",
            "--silent",
            "name",
            "messages",
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
    let events_queue = worker.broker.topology().events_queue.clone();
    wait_until("the redelivered event to be consumed", || {
        let queue = events_queue.clone();
        async move {
            let depth = tokio::task::spawn_blocking(move || queue_depth(&queue))
                .await
                .expect("queue depth");
            (depth == 0).then_some(())
        }
    })
    .await;
    assert_eq!(receiver.received().len(), 1, "no second POST");
    assert_eq!(worker.attempts(&event_id).await.len(), 1);
}
