//! The parking lot's storage: claiming due deliveries under a lease, holding the ones whose
//! endpoint still hangs with an age-based backoff, and unparking released ones.

use std::time::Duration;

use tesoro_webhooks::domain::DeliveryId;

use crate::harness::TestDatabase;

/// A pending delivery parked until a second ago, created `age_s` seconds ago.
async fn park(db: &TestDatabase, event: &str, age_s: f64) -> DeliveryId {
    let id = DeliveryId::new();
    db.db
        .execute(
            "INSERT INTO events (id, company_id, event_type, body)
             VALUES ($1, 'cmp_1', 'deal.won', '{}') ON CONFLICT DO NOTHING",
            &[&event],
        )
        .await
        .expect("event");
    db.db
        .execute(
            "INSERT INTO deliveries (id, event_id, webhook_id, company_id, event_type,
                 next_attempt_at, parked_until, created_at)
             VALUES ($1, $2, gen_random_uuid(), 'cmp_1', 'deal.won',
                 now() - interval '1 second', now() - interval '1 second',
                 now() - make_interval(secs => $3))",
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
