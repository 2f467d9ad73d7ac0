//! Upgrading a database of the unpartitioned layout (migrations up to V15): its rows become
//! one partition, stay readable and writable, and retire like any other.

use serde_json::json;
use tesoro_webhooks::{
    domain::DeliveryId,
    storage::{self, migrate_to},
};

use crate::harness::{TestReceiver, TestWorker, connect_db, test_config};

/// The last migration of the unpartitioned layout.
const UNPARTITIONED: i32 = 15;

#[tokio::test]
async fn a_database_of_the_unpartitioned_layout_upgrades_with_its_rows() {
    let config = test_config();
    let url = config.database.url.clone();
    storage::ensure_database(&url).await.expect("database");
    migrate_to(&url, UNPARTITIONED)
        .await
        .expect("migrations up to V15");
    let receiver = TestReceiver::start().await;
    let (succeeded, failed) = (DeliveryId::new(), DeliveryId::new());
    let webhook = uuid::Uuid::now_v7();
    let old = connect_db(&url).await;
    old.batch_execute(&format!(
        "INSERT INTO webhooks (id, company_id, name, url, events)
             VALUES ('{webhook}', 'cmp_up', 'before', '{url}', ARRAY['deal.won']);
         INSERT INTO events (id, company_id, event_type, body)
             VALUES ('evt_up_1', 'cmp_up', 'deal.won', '{{\"id\":\"evt_up_1\"}}'),
                    ('evt_up_2', 'cmp_up', 'deal.won', '{{\"id\":\"evt_up_2\"}}');
         INSERT INTO deliveries (id, event_id, webhook_id, company_id, event_type, status,
                 attempt_count, last_status)
             VALUES ('{succeeded}', 'evt_up_1', '{webhook}', 'cmp_up', 'deal.won', 'succeeded',
                     1, 200),
                    ('{failed}', 'evt_up_2', '{webhook}', 'cmp_up', 'deal.won', 'failed', 2, 500);
         INSERT INTO attempts (delivery_id, webhook_id, attempt_number, trigger, attempted_at,
                 duration_ms, request_headers, response_status)
             VALUES ('{succeeded}', '{webhook}', 1, 'automatic', now(), 3, '[]', 200),
                    ('{failed}', '{webhook}', 1, 'automatic', now(), 3, '[]', 500),
                    ('{failed}', '{webhook}', 2, 'automatic', now(), 3, '[]', 500);",
        url = receiver.url()
    ))
    .await
    .expect("rows of the old layout");
    drop(old);

    // The worker's start applies V16 and creates the partitions ahead.
    let worker = TestWorker::start_with(config).await;
    let (status, body) = worker
        .api("GET", &format!("/v1/deliveries/{succeeded}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "succeeded", "{body}");
    assert_eq!(body["attempts"].as_array().map(Vec::len), Some(1), "{body}");
    let (status, body) = worker
        .api("GET", &format!("/v1/deliveries?webhook_id={webhook}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2), "{body}");
    let (status, body) = worker
        .api("GET", &format!("/v1/webhooks/{webhook}/attempts"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(3), "{body}");
    let holder: String = worker
        .db
        .query_one(
            "SELECT tableoid::regclass::text FROM deliveries WHERE id = $1",
            &[&failed.0],
        )
        .await
        .expect("the old row")
        .get(0);
    assert_eq!(holder, "deliveries_legacy");

    // A retry by hand of an old Failed delivery is logged on it, where it is.
    let (status, body) = worker
        .api("POST", &format!("/v1/deliveries/{failed}/retry"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let webhook_id = webhook.to_string();
    let attempts = worker
        .wait_for_status("evt_up_2", &webhook_id, "succeeded")
        .await;
    assert_eq!(attempts, 3);
    assert_eq!(worker.attempts("evt_up_2").await.len(), 3);

    // New events go to the new partitions; attempt ids go on from the old ones.
    let (event, _) = worker.publish("deal.won", "cmp_up", json!({})).await;
    worker
        .wait_for_status(&event, &webhook_id, "succeeded")
        .await;
    let row = worker
        .db
        .query_one(
            "SELECT d.tableoid::regclass::text, a.id FROM deliveries d
             JOIN attempts a ON a.delivery_id = d.id WHERE d.event_id = $1",
            &[&event],
        )
        .await
        .expect("the new row");
    assert!(row.get::<_, String>(0).starts_with("deliveries_p"));
    assert!(row.get::<_, i64>(1) > 3, "attempt ids carry on");
}
