//! How the worker treats an endpoint's health: a 410 Gone disables its webhook at once.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Reply, TestReceiver, TestWorker, test_config};

/// A worker whose one retry waits 3 s: long enough to act while a delivery waits for it.
async fn worker_with_a_slow_retry() -> TestWorker {
    let mut config = test_config();
    config.delivery.retry_schedule =
        tesoro_webhooks::retry::RetrySchedule::new(vec![Duration::from_secs(3)]).expect("valid");
    TestWorker::start_with(config).await
}

#[tokio::test]
async fn a_410_disables_the_webhook_and_ends_its_waiting_retries() {
    let worker = worker_with_a_slow_retry().await;
    let receiver = TestReceiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(410)]);
    let webhook = worker
        .create_webhook("cmp_gone", &receiver.url(), &["deal.*"])
        .await;
    let id = webhook["id"].as_str().expect("id");

    let (waiting, _) = worker.publish("deal.won", "cmp_gone", json!({})).await;
    worker.wait_for_status(&waiting, id, "retrying").await;
    let (gone, _) = worker.publish("deal.lost", "cmp_gone", json!({})).await;
    assert_eq!(worker.wait_for_status(&gone, id, "failed").await, 1);

    let (status, body) = worker.api("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], false, "{body}");
    assert_eq!(body["disabled_reason"], "gone", "{body}");
    assert!(body["disabled_at"].is_string(), "{body}");

    // The retry that was waiting ends Failed when due, unsent, naming why.
    assert_eq!(worker.wait_for_status(&waiting, id, "failed").await, 1);
    let reason: String = worker
        .db
        .query_one(
            "SELECT last_error FROM deliveries WHERE event_id = $1",
            &[&waiting],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(reason, "webhook disabled: gone");
    // New events reach it no more.
    worker.publish("deal.won", "cmp_gone", json!({})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 2);

    // Enabled again by hand, it receives events; the reason is cleared.
    let (status, body) = worker
        .api(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disabled_reason"], serde_json::Value::Null, "{body}");
    assert_eq!(body["disabled_at"], serde_json::Value::Null, "{body}");
    let (again, _) = worker.publish("deal.won", "cmp_gone", json!({})).await;
    assert_eq!(worker.wait_for_status(&again, id, "succeeded").await, 1);
}

#[tokio::test]
async fn disabling_by_hand_is_recorded_as_manual() {
    let worker = TestWorker::start().await;
    let webhook = worker
        .create_webhook("cmp_manual", "https://example.com/hook", &["deal.won"])
        .await;
    let id = webhook["id"].as_str().expect("id");
    let (status, body) = worker
        .api(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disabled_reason"], "manual", "{body}");
    let since = body["disabled_at"].clone();
    assert!(since.is_string(), "{body}");
    // Disabling what is disabled keeps the first reason and time.
    let (_, body) = worker
        .api(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"enabled": false, "name": "renamed"})),
        )
        .await;
    assert_eq!(body["disabled_at"], since, "{body}");
}
