//! The parking lot's storage: claiming due deliveries under a lease, holding the ones whose
//! endpoint still hangs with an age-based backoff, and unparking released ones.

use std::time::Duration;

use bytes::Bytes;
use tesoro_webhooks::{
    domain::{CompanyId, DeliveryId, DeliveryStatus, EventId, WebhookId},
    storage::{DeliveryWrite, EventRow},
};
use time::OffsetDateTime;

use crate::harness::{TestDatabase, TestWorker, test_config};

/// A pending delivery parked until a second ago, created `age_s` seconds ago.
async fn park(db: &TestDatabase, event: &str, age_s: f64) -> DeliveryId {
    let id = DeliveryId::new();
    db.db
        .execute(
            "INSERT INTO events (id, company_id, event_type, body, event_at)
             VALUES ($1, 'cmp_1', 'deal.won', '{}', tesoro_log_time($2))
             ON CONFLICT DO NOTHING",
            &[&event, &id.0],
        )
        .await
        .expect("event");
    db.db
        .execute(
            "INSERT INTO deliveries (id, event_id, webhook_id, company_id, event_type,
                 next_attempt_at, parked_until, created_at, event_at)
             VALUES ($1, $2, gen_random_uuid(), 'cmp_1', 'deal.won',
                 now() - interval '1 second', now() - interval '1 second',
                 now() - make_interval(secs => $3), tesoro_log_time($1))",
            &[&id.0, &event, &age_s],
        )
        .await
        .expect("delivery");
    id
}

/// Seconds until the delivery's `parked_until`, `None` when it is not parked.
async fn parked_for(db: &TestDatabase, id: DeliveryId) -> Option<f64> {
    db.db
        .query_one(
            "SELECT extract(epoch FROM parked_until - now())::float8 FROM deliveries
             WHERE id = $1",
            &[&id.0],
        )
        .await
        .expect("query")
        .get(0)
}

#[tokio::test]
async fn due_deliveries_are_claimed_once_then_held_or_unparked() {
    let db = TestDatabase::create().await;
    let old = park(&db, "evt_old", 600.0).await;
    let new = park(&db, "evt_new", 0.0).await;

    let claimed = db
        .storage
        .claim_parked(10, Duration::from_secs(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|parked| parked.body.as_ref() == b"{}"));
    let again = db
        .storage
        .claim_parked(10, Duration::from_secs(30))
        .await
        .expect("claim");
    assert!(again.is_empty(), "leased rows are not claimed twice");

    let (min, max) = (Duration::from_secs(60), Duration::from_secs(7200));
    db.storage
        .hold_parked(&[old], min, max)
        .await
        .expect("hold");
    let held = parked_for(&db, old).await.expect("still parked");
    assert!(
        (590.0..610.0).contains(&held),
        "held as long as it existed: {held}"
    );

    db.storage.unpark(&[new]).await.expect("unpark");
    assert_eq!(parked_for(&db, new).await, None);
}

/// What the fan-out writes for an untried delivery: pending, parked until `parked_until`.
fn untried(
    delivery_id: DeliveryId,
    webhook_id: WebhookId,
    parked_until: Option<OffsetDateTime>,
) -> DeliveryWrite {
    let event_id = EventId::parse("evt_redelivered").expect("event id");
    let company_id = CompanyId::parse("cmp_1").expect("company id");
    DeliveryWrite {
        event: Some(EventRow {
            id: event_id.clone(),
            company_id: company_id.clone(),
            event_type: "deal.won".to_owned(),
            body: Bytes::from_static(b"{}"),
            event_at: delivery_id.time(),
        }),
        delivery_id,
        event_id,
        webhook_id,
        company_id,
        event_type: "deal.won".to_owned(),
        event_at: delivery_id.time(),
        status: DeliveryStatus::Pending,
        attempt_count: 0,
        next_attempt_at: Some(OffsetDateTime::now_utc()),
        parked_until,
        attempt: None,
    }
}

#[tokio::test]
async fn a_pending_untried_delivery_can_be_parked_and_failing_it_unparks_it() {
    let db = TestDatabase::create().await;
    let (delivery, webhook) = (DeliveryId::new(), WebhookId::new());
    // A hand-off recorded the delivery pending, then its publish failed: the event comes back
    // and finds the endpoint hanging.
    db.storage
        .write_batch(&[untried(delivery, webhook, None)])
        .await
        .expect("pending row");
    let until = OffsetDateTime::now_utc() + time::Duration::minutes(1);
    db.storage
        .write_batch(&[untried(delivery, webhook, Some(until))])
        .await
        .expect("parked");
    let parked = parked_for(&db, delivery)
        .await
        .expect("parked, so a job will come");
    assert!((50.0..70.0).contains(&parked), "{parked}");

    assert!(
        db.storage
            .mark_failed(delivery, 0, None)
            .await
            .expect("failed")
    );
    assert_eq!(
        parked_for(&db, delivery).await,
        None,
        "a Failed delivery is not parked"
    );
}

/// The `tesoro_webhooks_deliveries_parked` line of the worker's /metrics.
async fn parked_gauge(worker: &TestWorker) -> String {
    let metrics = worker.metrics().await;
    metrics
        .lines()
        .find(|line| line.starts_with("tesoro_webhooks_deliveries_parked "))
        .unwrap_or_else(|| panic!("no parked gauge in:\n{metrics}"))
        .to_owned()
}

#[tokio::test]
async fn metrics_count_the_parked_deliveries_at_each_scrape() {
    // The worker binary: its /metrics are its own, not shared with other tests' workers.
    let worker = TestWorker::start_process(test_config()).await;
    assert_eq!(
        parked_gauge(&worker).await,
        "tesoro_webhooks_deliveries_parked 0"
    );

    // Parked for an hour, so the sweeper leaves them where they are.
    for event in ["evt_p1", "evt_p2", "evt_p3"] {
        worker
            .db
            .execute(
                "INSERT INTO events (id, company_id, event_type, body, event_at)
                 VALUES ($1, 'cmp_1', 'deal.won', '{}', now())",
                &[&event],
            )
            .await
            .expect("event");
        worker
            .db
            .execute(
                "INSERT INTO deliveries (id, event_id, webhook_id, company_id, event_type,
                     next_attempt_at, parked_until, event_at)
                 VALUES ($2, $1, gen_random_uuid(), 'cmp_1', 'deal.won',
                     now() + interval '1 hour', now() + interval '1 hour', tesoro_log_time($2))",
                &[&event, &DeliveryId::new().0],
            )
            .await
            .expect("delivery");
    }
    assert_eq!(
        parked_gauge(&worker).await,
        "tesoro_webhooks_deliveries_parked 3"
    );
}
