//! What an operator's Prometheus sees: counters at 0 from the start, the counts a known
//! sequence of events leaves, histograms with buckets, queue and database gauges.

use serde_json::json;

use crate::harness::{TestWorker, metric, test_config, wait_until};

#[tokio::test]
async fn metrics_follow_a_known_sequence_of_events() {
    // The worker binary: its /metrics are its own, not shared with other tests' workers.
    let worker = TestWorker::start_process(test_config()).await;
    let at_start = worker.metrics().await;
    for series in [
        "tesoro_webhooks_events_received_total",
        "tesoro_webhooks_deliveries_succeeded_total",
        "tesoro_webhooks_deliveries_failed_total",
        "tesoro_webhooks_retries_scheduled_total",
        "tesoro_webhooks_attempts_total{result=\"timeout\"}",
        "tesoro_webhooks_quarantined_total{reason=\"not_json\"}",
        "tesoro_webhooks_handler_errors_total{stage=\"fanout\"}",
        "tesoro_webhooks_pruned_total{table=\"deliveries\"}",
    ] {
        assert_eq!(metric(&at_start, series), Some(0.0), "{series} at start");
    }

    let ends = worker.healthy_and_failing("cmp_m", 500).await;
    let (_, disabled) = worker
        .api(
            "POST",
            "/v1/webhooks",
            Some(
                json!({"company_id": "cmp_m", "name": "off", "url": ends.healthy.url(),
                        "events": ["deal.won"], "enabled": false}),
            ),
        )
        .await;
    assert_eq!(disabled["enabled"], false);
    let (event_id, _) = worker.publish("deal.won", "cmp_m", json!({})).await;
    worker
        .wait_for_status(&event_id, &ends.ok, "succeeded")
        .await;
    worker.wait_for_status(&event_id, &ends.bad, "failed").await;
    worker.publish_raw("deal.won", b"not json").await;

    // The queue gauges are sampled every few seconds.
    let metrics = wait_until("the quarantine's depth sampled", || async {
        let metrics = worker.metrics().await;
        let quarantined = "tesoro_webhooks_queue_messages_ready{queue=\"quarantine\"}";
        let failed = "tesoro_webhooks_deliveries_failed_total";
        (metric(&metrics, quarantined) == Some(1.0) && metric(&metrics, failed) == Some(1.0))
            .then_some(metrics)
    })
    .await;
    let expected = [
        ("tesoro_webhooks_events_received_total", 1.0),
        ("tesoro_webhooks_deliveries_succeeded_total", 1.0),
        ("tesoro_webhooks_deliveries_failed_total", 1.0),
        ("tesoro_webhooks_retries_scheduled_total", 4.0),
        ("tesoro_webhooks_attempts_total{result=\"delivered\"}", 1.0),
        ("tesoro_webhooks_attempts_total{result=\"status\"}", 5.0),
        (
            "tesoro_webhooks_quarantined_total{reason=\"not_json\"}",
            1.0,
        ),
        // Six attempts; every one well under the 5 s bucket.
        ("tesoro_webhooks_attempt_duration_seconds_count", 6.0),
        (
            "tesoro_webhooks_attempt_duration_seconds_bucket{le=\"5\"}",
            6.0,
        ),
        (
            "tesoro_webhooks_attempt_duration_seconds_bucket{le=\"+Inf\"}",
            6.0,
        ),
        // One delivery got its 2xx, within a minute of the event's timestamp.
        ("tesoro_webhooks_delivery_latency_seconds_count", 1.0),
        (
            "tesoro_webhooks_delivery_latency_seconds_bucket{le=\"60\"}",
            1.0,
        ),
        (
            "tesoro_webhooks_queue_messages_ready{queue=\"events\"}",
            0.0,
        ),
        (
            "tesoro_webhooks_queue_messages_ready{queue=\"retry.200ms\"}",
            0.0,
        ),
        ("tesoro_webhooks_queue_messages_ready{queue=\"dead\"}", 0.0),
        (
            "tesoro_webhooks_queue_messages_unacked{queue=\"events\"}",
            0.0,
        ),
        ("tesoro_webhooks_deliveries_in_flight", 0.0),
        ("tesoro_webhooks_webhooks_disabled", 1.0),
        ("tesoro_webhooks_deliveries_parked", 0.0),
        ("tesoro_webhooks_oldest_overdue_delivery_seconds", 0.0),
        ("tesoro_webhooks_workers", 1.0),
        (
            "tesoro_webhooks_dependency_up{dependency=\"database\"}",
            1.0,
        ),
        ("tesoro_webhooks_dependency_up{dependency=\"broker\"}", 1.0),
    ];
    for (series, value) in expected {
        assert_eq!(
            metric(&metrics, series),
            Some(value),
            "{series} in:\n{metrics}"
        );
    }
    let batches = metric(&metrics, "tesoro_webhooks_record_batch_size_count").expect("batches");
    assert!(
        batches >= 2.0,
        "outcomes were recorded in batches: {batches}"
    );
    assert!(
        metric(
            &metrics,
            "tesoro_webhooks_record_commit_duration_seconds_count"
        ) == Some(batches),
        "each batch's commit is timed"
    );
    assert!(metrics.contains("# TYPE tesoro_webhooks_attempt_duration_seconds histogram"));

    // A delivery whose attempt is due but not made shows as overdue.
    worker
        .db
        .execute(
            "UPDATE deliveries SET status = 'retrying', next_attempt_at = now() - interval '90 seconds'
             WHERE event_id = $1 AND webhook_id = $2",
            &[&event_id, &uuid::Uuid::parse_str(&ends.bad).expect("uuid")],
        )
        .await
        .expect("update");
    let overdue = metric(
        &worker.metrics().await,
        "tesoro_webhooks_oldest_overdue_delivery_seconds",
    )
    .expect("overdue gauge");
    assert!((90.0..120.0).contains(&overdue), "{overdue}");
}
