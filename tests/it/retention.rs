//! Retention: old succeeded deliveries go with their attempts, Failed ones by their own longer
//! age, an event with its last delivery; pending work and newer rows stay. One worker prunes at
//! a time.

use std::time::{Duration, Instant};

use serde_json::json;
use tesoro_webhooks::{config::RetentionConfig, storage::Pruner};

use crate::harness::{TestReceiver, TestWorker, test_config, wait_until};

/// (deliveries, attempts) of `event_id`, and whether its event row is kept.
async fn kept(worker: &TestWorker, event_id: &str) -> (i64, i64, bool) {
    let row = worker
        .db
        .query_one(
            "SELECT (SELECT count(*) FROM deliveries WHERE event_id = $1),
                (SELECT count(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
                 WHERE d.event_id = $1),
                EXISTS (SELECT 1 FROM events WHERE id = $1)",
            &[&event_id],
        )
        .await
        .expect("query");
    (row.get(0), row.get(1), row.get(2))
}

async fn sleep_until(instant: Instant) {
    tokio::time::sleep_until(instant.into()).await;
}

#[tokio::test]
async fn old_deliveries_go_failed_ones_by_their_own_age_and_newer_ones_stay() {
    let mut config = test_config();
    config.retention = RetentionConfig {
        max_age: Duration::from_secs(5),
        failed_max_age: Duration::from_secs(8),
        // The test prunes by hand.
        interval: Duration::from_secs(3600),
    };
    let worker = TestWorker::start_with(config).await;
    let ends = worker.healthy_and_failing("cmp_ret", 500).await;
    let started = Instant::now();
    let (old, _) = worker.publish("deal.won", "cmp_ret", json!({})).await;
    worker.wait_for_status(&old, &ends.ok, "succeeded").await;
    worker.wait_for_status(&old, &ends.bad, "failed").await;
    assert_eq!(kept(&worker, &old).await, (2, 6, true));

    sleep_until(started + Duration::from_millis(5300)).await;
    let (new, _) = worker.publish("deal.won", "cmp_ret", json!({})).await;
    worker.wait_for_status(&new, &ends.ok, "succeeded").await;
    let dry = worker.cli(&["prune", "--dry-run"]).await;
    assert!(dry.success, "{}", dry.stderr);
    assert!(
        dry.stdout
            .contains("would remove 1 deliveries (1 attempts, 0 events)"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        kept(&worker, &old).await,
        (2, 6, true),
        "a dry run changes nothing"
    );

    let pruned = worker.cli(&["prune"]).await;
    assert!(pruned.success, "{}", pruned.stderr);
    assert!(
        pruned
            .stdout
            .contains("removed 1 deliveries (1 attempts, 0 events)"),
        "{}",
        pruned.stdout
    );
    // The Failed delivery is younger than its own limit; its event stays with it.
    assert_eq!(kept(&worker, &old).await, (1, 5, true));
    assert_eq!(kept(&worker, &new).await, (2, 2, true), "new rows stay");

    sleep_until(started + Duration::from_millis(8300)).await;
    let pruned = worker.cli(&["prune"]).await;
    assert!(
        pruned
            .stdout
            .contains("removed 1 deliveries (5 attempts, 1 events)"),
        "{}",
        pruned.stdout
    );
    assert_eq!(kept(&worker, &old).await, (0, 0, false));
    assert!(
        kept(&worker, &new).await.0 >= 1,
        "the new event's deliveries stay"
    );
}

#[tokio::test]
async fn the_workers_prune_on_their_own_one_at_a_time() {
    let mut config = test_config();
    config.retention = RetentionConfig {
        max_age: Duration::from_secs(1),
        failed_max_age: Duration::from_secs(1),
        interval: Duration::from_millis(300),
    };
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_auto", &receiver.url(), &["deal.won"])
        .await;

    // While another process holds the pruning lock, nobody else prunes.
    let holder = Pruner::lock(&worker.config.database.url)
        .await
        .expect("connect")
        .expect("the lock is free");
    let (event, _) = worker.publish("deal.won", "cmp_auto", json!({})).await;
    worker
        .wait_for_status(&event, webhook["id"].as_str().expect("id"), "succeeded")
        .await;
    let busy = worker.cli(&["prune"]).await;
    assert!(
        busy.stdout.contains("another worker is pruning now"),
        "{}",
        busy.stdout
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        kept(&worker, &event).await.0,
        1,
        "kept while the lock is held"
    );

    drop(holder);
    wait_until("the worker to prune the delivery", || async {
        (kept(&worker, &event).await == (0, 0, false)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_webhook_takes_the_events_only_it_needed() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let only = worker
        .create_webhook("cmp_del", &receiver.url(), &["deal.won"])
        .await;
    let shared = worker
        .create_webhook("cmp_del", &receiver.url(), &["deal.lost"])
        .await;
    let also_shared = worker
        .create_webhook("cmp_del", &receiver.url(), &["deal.lost"])
        .await;
    let (alone, _) = worker.publish("deal.won", "cmp_del", json!({})).await;
    let (together, _) = worker.publish("deal.lost", "cmp_del", json!({})).await;
    for (event, webhook) in [
        (&alone, &only),
        (&together, &shared),
        (&together, &also_shared),
    ] {
        worker
            .wait_for_status(event, webhook["id"].as_str().expect("id"), "succeeded")
            .await;
    }
    for webhook in [&only, &shared] {
        let id = webhook["id"].as_str().expect("id");
        let (status, _) = worker
            .api("DELETE", &format!("/v1/webhooks/{id}"), None)
            .await;
        assert_eq!(status, 204);
    }
    assert_eq!(
        kept(&worker, &alone).await,
        (0, 0, false),
        "its last delivery went"
    );
    assert_eq!(
        kept(&worker, &together).await,
        (1, 1, true),
        "another webhook's delivery still needs it"
    );
}

/// A round's batches go forward from the last delivery deleted: what stays before it is not
/// read again, and nothing after it is skipped.
#[tokio::test]
async fn a_prune_batch_starts_after_the_last_one() {
    use tesoro_webhooks::domain::DeliveryId;
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_cursor", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    for _ in 0..3 {
        let (event, _) = worker.publish("deal.won", "cmp_cursor", json!({})).await;
        worker
            .wait_for_status(&event, webhook_id, "succeeded")
            .await;
    }
    let ids: Vec<DeliveryId> = worker
        .db
        .query("SELECT id FROM deliveries ORDER BY id", &[])
        .await
        .expect("ids")
        .iter()
        .map(|row| DeliveryId(row.get(0)))
        .collect();
    assert_eq!(ids.len(), 3);
    let pruner = Pruner::lock(&worker.config.database.url)
        .await
        .expect("connect")
        .expect("the lock is free");
    // Everything counts as old.
    let before = DeliveryId::lowest_at(time::OffsetDateTime::now_utc() + time::Duration::MINUTE);
    let start = DeliveryId(uuid::Uuid::nil());

    let (counts, last) = pruner
        .prune_batch(before, before, start, 1)
        .await
        .expect("batch");
    assert_eq!((counts.deliveries, last), (1, Some(ids[0])));
    let (counts, last) = pruner
        .prune_batch(before, before, ids[2], 10)
        .await
        .expect("batch");
    assert_eq!(
        (counts.deliveries, last),
        (0, None),
        "nothing before the cursor"
    );
    let (counts, last) = pruner
        .prune_batch(before, before, ids[0], 10)
        .await
        .expect("batch");
    assert_eq!((counts.deliveries, last), (2, Some(ids[2])));
}
