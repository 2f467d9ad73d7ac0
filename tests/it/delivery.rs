//! The core path: routing by company and event type, and the signed request a subscriber gets.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::harness::{TestReceiver, TestWorker};

#[tokio::test]
async fn an_event_reaches_every_matching_webhook_of_its_company_and_no_other() {
    let worker = TestWorker::start().await;
    let exact = TestReceiver::start().await;
    let wildcard = TestReceiver::start().await;
    let other_type = TestReceiver::start().await;
    let disabled = TestReceiver::start().await;
    let other_company = TestReceiver::start().await;
    let exact_id = worker
        .create_webhook("cmp_a", &exact.url(), &["deal.won"])
        .await["id"]
        .clone();
    let wild_id = worker
        .create_webhook("cmp_a", &wildcard.url(), &["deal.*"])
        .await["id"]
        .clone();
    worker
        .create_webhook("cmp_a", &other_type.url(), &["lead.*", "deal.lost"])
        .await;
    let off = worker
        .create_webhook("cmp_a", &disabled.url(), &["deal.won"])
        .await;
    let off_id = off["id"].as_str().expect("id");
    worker.set_enabled(off_id, false).await;
    worker
        .create_webhook("cmp_b", &other_company.url(), &["deal.won"])
        .await;

    let (event_id, _) = worker
        .publish("deal.won", "cmp_a", json!({"id": "deal_7"}))
        .await;

    for (receiver, id) in [(&exact, &exact_id), (&wildcard, &wild_id)] {
        let id = id.as_str().expect("id");
        assert_eq!(worker.wait_for_status(&event_id, id, "succeeded").await, 1);
        assert_eq!(receiver.received().len(), 1);
    }
    // Deliveries are created for the whole fan-out before any POST, so these counts are final.
    let rows = worker
        .db
        .query("SELECT 1 FROM deliveries WHERE event_id = $1", &[&event_id])
        .await
        .expect("query");
    assert_eq!(rows.len(), 2);
    for receiver in [&other_type, &disabled, &other_company] {
        assert!(receiver.received().is_empty());
    }
}

#[tokio::test]
async fn requests_carry_standard_webhooks_headers_and_the_published_bytes() {
    let worker = TestWorker::start().await;
    let signed = TestReceiver::start().await;
    let unsigned = TestReceiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (status, _) = worker
        .api(
            "POST",
            "/v1/webhooks",
            Some(
                json!({"company_id": "cmp_s", "name": "signed", "url": signed.url(),
                        "events": ["contact.created"], "secret": secret}),
            ),
        )
        .await;
    assert_eq!(status, 201);
    worker
        .create_webhook("cmp_s", &unsigned.url(), &["contact.*"])
        .await;

    let (event_id, published) = worker
        .publish(
            "contact.created",
            "cmp_s",
            json!({"id": "c_1", "name": "Ada"}),
        )
        .await;
    let request = signed.wait_for(1).await.remove(0);
    assert_eq!(
        request.body.as_ref(),
        published.as_slice(),
        "byte-identical body"
    );
    assert_eq!(request.header("webhook-id"), event_id);
    assert_eq!(request.header("content-type"), "application/json");
    assert!(request.header("user-agent").starts_with("tesoro-webhooks/"));
    assert_eq!(request.header("x-tesoro-event"), "contact.created");
    assert_eq!(request.header("x-tesoro-attempt"), "1");
    let timestamp = request.header("webhook-timestamp");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let sent: u64 = timestamp.parse().expect("unix seconds");
    assert!(now.abs_diff(sent) <= 5, "timestamp {sent} vs now {now}");
    let signature = request.header("webhook-signature");
    assert!(
        testkit::signature::verify(secret, &event_id, timestamp, &request.body, signature),
        "{signature} verifies as the specification says"
    );

    let request = unsigned.wait_for(1).await.remove(0);
    assert!(request.headers.get("webhook-signature").is_none());
    assert_eq!(request.header("webhook-id"), event_id);
    assert_eq!(request.body.as_ref(), published.as_slice());
}

#[tokio::test]
async fn attempts_log_request_and_response() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_log", &receiver.url(), &["meeting.completed"])
        .await;
    let (event_id, published) = worker
        .publish("meeting.completed", "cmp_log", json!({}))
        .await;
    worker
        .wait_for_status(&event_id, webhook["id"].as_str().expect("id"), "succeeded")
        .await;
    let attempts = worker.attempts(&event_id).await;
    assert_eq!(attempts.len(), 1);
    let attempt = &attempts[0];
    assert_eq!(attempt.get::<_, i32>("attempt_number"), 1);
    assert_eq!(attempt.get::<_, Option<i32>>("response_status"), Some(200));
    assert_eq!(attempt.get::<_, String>("trigger"), "automatic");
    assert_eq!(
        attempt
            .get::<_, Option<Vec<u8>>>("response_body")
            .as_deref(),
        Some(&b"receiver says hello"[..])
    );
    let request_headers: serde_json::Value = attempt.get("request_headers");
    assert!(request_headers.to_string().contains(&event_id));
    let stored: Vec<u8> = worker
        .db
        .query_one("SELECT body FROM events WHERE id = $1", &[&event_id])
        .await
        .expect("event")
        .get(0);
    assert_eq!(
        stored, published,
        "the request body is kept once, with the event"
    );

    // Deleting the webhook takes its deliveries and attempts with it.
    let id = webhook["id"].as_str().expect("id");
    let (status, _) = worker
        .api("DELETE", &format!("/v1/webhooks/{id}"), None)
        .await;
    assert_eq!(status, 204);
    assert!(worker.attempts(&event_id).await.is_empty());
    let left = worker
        .db
        .query("SELECT 1 FROM deliveries WHERE event_id = $1", &[&event_id])
        .await
        .expect("query");
    assert!(left.is_empty());
}

#[tokio::test]
async fn response_bodies_are_capped() {
    let mut config = crate::harness::test_config();
    config.delivery.max_response_body = bytesize::ByteSize::b(8);
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_cap", &receiver.url(), &["deal.won"])
        .await;
    let (event_id, _) = worker.publish("deal.won", "cmp_cap", json!({})).await;
    worker
        .wait_for_status(&event_id, webhook["id"].as_str().expect("id"), "succeeded")
        .await;
    let attempt = worker.attempts(&event_id).await.remove(0);
    assert_eq!(
        attempt
            .get::<_, Option<Vec<u8>>>("response_body")
            .as_deref(),
        Some(&b"receiver"[..])
    );
    assert!(attempt.get::<_, bool>("response_body_truncated"));
}

#[tokio::test]
async fn routing_follows_webhook_changes_made_by_the_api_and_by_other_processes() {
    let worker = TestWorker::start().await;
    let changing = TestReceiver::start().await;
    let steady = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_cache", &changing.url(), &["deal.won"])
        .await;
    let id = webhook["id"].as_str().expect("id").to_owned();
    worker
        .create_webhook("cmp_cache", &steady.url(), &["deal.won"])
        .await;
    worker.publish("deal.won", "cmp_cache", json!({})).await;
    changing.wait_for(1).await;

    // Through this worker's API: applies to the very next event.
    worker.set_enabled(&id, false).await;
    worker.publish("deal.won", "cmp_cache", json!({})).await;
    steady.wait_for(2).await;
    assert_eq!(changing.received().len(), 1, "disabled at once");

    // Behind its back, as another process would: NOTIFY brings it in shortly.
    worker
        .db
        .execute(
            "UPDATE webhooks SET enabled = true WHERE id = $1",
            &[&uuid::Uuid::parse_str(&id).expect("uuid")],
        )
        .await
        .expect("update");
    let mut sent = 2;
    crate::harness::wait_until("the re-enabled webhook to receive again", || {
        sent += 1;
        let expect = sent;
        let worker = &worker;
        let steady = &steady;
        let changing = &changing;
        async move {
            worker.publish("deal.won", "cmp_cache", json!({})).await;
            steady.wait_for(expect).await;
            (changing.received().len() > 1).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_saturated_endpoint_defers_its_work_and_does_not_hold_back_others() {
    let mut config = crate::harness::test_config();
    config.delivery.max_in_flight_per_endpoint = 1;
    let worker = TestWorker::start_with(config).await;
    let slow = TestReceiver::start().await;
    let fast = TestReceiver::start().await;
    slow.set_default(crate::harness::Reply::Slow(
        std::time::Duration::from_millis(700),
        200,
    ));
    let slow_hook = worker
        .create_webhook("cmp_sat", &slow.url(), &["deal.won"])
        .await;
    worker
        .create_webhook("cmp_sat", &fast.url(), &["deal.won"])
        .await;
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(worker.publish("deal.won", "cmp_sat", json!({})).await.0);
    }
    fast.wait_for(3).await;
    assert!(
        slow.received().len() <= 1,
        "one attempt at a time to the slow endpoint"
    );
    let slow_id = slow_hook["id"].as_str().expect("id");
    // The deferred ones come back from the first tier and are delivered in turn.
    for event in &events {
        assert_eq!(worker.wait_for_status(event, slow_id, "succeeded").await, 1);
    }
    assert_eq!(slow.received().len(), 3);
}

#[tokio::test]
async fn a_stuck_endpoints_new_deliveries_wait_in_the_database_then_are_delivered() {
    use std::time::Duration;

    use crate::harness::{Reply, wait_until};
    use tesoro_webhooks::retry::RetrySchedule;

    let mut config = crate::harness::test_config();
    config.delivery.max_in_flight_per_endpoint = 1;
    config.delivery.timeout = Duration::from_secs(5);
    // Long enough to see the delivery parked before the sweeper releases it.
    config.delivery.retry_schedule =
        RetrySchedule::new(vec![Duration::from_secs(2); 4]).expect("valid schedule");
    let worker = TestWorker::start_with(config).await;
    let hanging = TestReceiver::start().await;
    hanging.script([Reply::Slow(Duration::from_millis(2500), 200)]);
    let hook = worker
        .create_webhook("cmp_stuck", &hanging.url(), &["deal.won"])
        .await;
    let hook_id = hook["id"].as_str().expect("id");
    let webhook = uuid::Uuid::parse_str(hook_id).expect("uuid");
    let (first, _) = worker.publish("deal.won", "cmp_stuck", json!({})).await;
    hanging.wait_for(1).await;
    // The only slot has been held, freeing nothing, for over a second: the endpoint is stuck.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (second, _) = worker.publish("deal.won", "cmp_stuck", json!({})).await;

    let (status, attempts) = wait_until("the delivery parked", || async {
        let row = worker
            .db
            .query_opt(
                "SELECT status, attempt_count FROM deliveries
                 WHERE event_id = $1 AND webhook_id = $2 AND parked_until IS NOT NULL",
                &[&second, &webhook],
            )
            .await
            .expect("query");
        row.map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1)))
    })
    .await;
    assert_eq!(
        (status.as_str(), attempts),
        ("pending", 0),
        "parked untried"
    );

    // The sweeper publishes its job after the first tier's delay; by then the endpoint is free.
    assert_eq!(
        worker.wait_for_status(&second, hook_id, "succeeded").await,
        1
    );
    assert_eq!(
        worker.wait_for_status(&first, hook_id, "succeeded").await,
        1
    );
    let still_parked = worker
        .db
        .query_one(
            "SELECT count(*) FROM deliveries WHERE parked_until IS NOT NULL",
            &[],
        )
        .await
        .expect("query")
        .get::<_, i64>(0);
    assert_eq!(still_parked, 0, "unparked once released");
    assert_eq!(hanging.received().len(), 2, "each delivered once");
}
