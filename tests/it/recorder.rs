//! The recorder's group commit: one write PostgreSQL refuses fails alone, never its batch.

use std::time::Duration;

use tesoro_webhooks::{
    config::DatabaseConfig,
    domain::{CompanyId, DeliveryId, DeliveryStatus, EventId, WebhookId},
    storage::{DeliveryWrite, EventRow, RecordError, Recorder},
};

use crate::harness::TestDatabase;

fn write(event_id: &str, event_type: &str) -> DeliveryWrite {
    let event_id = EventId::parse(event_id).expect("event id");
    let company_id = CompanyId::parse("cmp_rec").expect("company id");
    let delivery_id = DeliveryId::new();
    DeliveryWrite {
        event: Some(EventRow {
            id: event_id.clone(),
            company_id: company_id.clone(),
            event_type: event_type.to_owned(),
            body: bytes::Bytes::from_static(b"{}"),
            event_at: delivery_id.time(),
        }),
        delivery_id,
        event_id,
        webhook_id: WebhookId::new(),
        company_id,
        event_type: event_type.to_owned(),
        event_at: delivery_id.time(),
        status: DeliveryStatus::Succeeded,
        attempt_count: 1,
        next_attempt_at: None,
        parked_until: None,
        attempt: None,
    }
}

#[tokio::test]
async fn a_refused_write_fails_alone_and_its_batch_commits() {
    let db = TestDatabase::create().await;
    let recorder = Recorder::start(
        &db.storage,
        &DatabaseConfig {
            url: db.url.clone(),
            pool_size: 2,
            pool_timeout: Duration::from_secs(5),
        },
    )
    .expect("recorder");
    // Sent together, so they gather into one batch; PostgreSQL refuses a NUL in text.
    let events: Vec<String> = (0..7).map(|i| format!("evt_rec_{i}")).collect();
    let results = futures_util::future::join_all(events.iter().enumerate().map(|(i, id)| {
        let event_type = if i == 3 { "deal\0won" } else { "deal.won" };
        recorder.write(write(id, event_type))
    }))
    .await;
    for (i, result) in results.iter().enumerate() {
        match (i, result) {
            (3, Err(RecordError::Storage(e))) => {
                assert!(!e.is_outage(), "a refused value is not an outage: {e}");
            }
            (3, other) => panic!("the bad write should fail, got {other:?}"),
            (_, result) => assert!(result.is_ok(), "write {i} failed: {result:?}"),
        }
    }
    let committed: i64 = db
        .db
        .query_one("SELECT count(*) FROM deliveries", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(committed, 6, "every write but the bad one committed");
}
