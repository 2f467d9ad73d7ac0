//! How the worker treats an endpoint's health: a 410 Gone disables its webhook at once; a
//! webhook failing past the thresholds is warned about, then disabled; a success after
//! failures ends the streak. Each step publishes its operational event, which the tests read
//! from the operational exchange as the CRM would.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Reply, TestReceiver, TestWorker, test_config, wait_until};

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
    worker.tap_operational().await;

    let (waiting, _) = worker.publish("deal.won", "cmp_gone", json!({})).await;
    worker.wait_for_status(&waiting, id, "retrying").await;
    let (gone, _) = worker.publish("deal.lost", "cmp_gone", json!({})).await;
    assert_eq!(worker.wait_for_status(&gone, id, "failed").await, 1);

    // Disabled right after the attempt is recorded.
    let body = wait_until("the webhook disabled", || async {
        let (_, body) = worker.api("GET", &format!("/v1/webhooks/{id}"), None).await;
        (body["enabled"] == false).then_some(body)
    })
    .await;
    assert_eq!(body["disabled_reason"], "gone", "{body}");
    assert!(body["disabled_at"].is_string(), "{body}");
    let event = worker.next_operational().await;
    assert_eq!(event["_type"], "webhook.disabled", "{event}");
    assert_eq!(event["event"], "webhook.disabled", "{event}");
    assert_eq!(event["company_id"], "cmp_gone", "{event}");
    assert_eq!(event["data"]["webhook_id"], id, "{event}");
    assert_eq!(event["data"]["reason"], "gone", "{event}");
    assert_eq!(event["data"]["url"], receiver.url(), "{event}");

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
    let body = worker.set_enabled(id, true).await;
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
    worker.tap_operational().await;
    let body = worker.set_enabled(id, false).await;
    assert_eq!(body["disabled_reason"], "manual", "{body}");
    let event = worker.next_operational().await;
    assert_eq!(event["_type"], "webhook.disabled", "{event}");
    assert_eq!(event["data"]["reason"], "manual", "{event}");
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
    assert_eq!(body["name"], "renamed", "{body}");
    assert!(
        worker
            .no_operational_within(Duration::from_millis(700))
            .await
    );
}

/// Thresholds small enough to cross in a test: disabled after 2 s and 3 Failed deliveries;
/// one retry 200 ms after the first attempt.
fn quick_to_disable() -> tesoro_webhooks::config::Config {
    let mut config = test_config();
    config.delivery.retry_schedule =
        tesoro_webhooks::retry::RetrySchedule::new(vec![Duration::from_millis(200)])
            .expect("valid");
    config.endpoint_health.disable_after = Duration::from_secs(2);
    config.endpoint_health.min_failures = 3;
    config
}

/// The webhook's health as the API reports it: its last success (null without one) and its
/// failing streak.
async fn health(worker: &TestWorker, id: &str) -> (serde_json::Value, u64) {
    let (status, body) = worker
        .api("GET", &format!("/v1/webhooks/{id}/health"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let streak = body["failing_streak"].as_u64().expect("streak");
    (body["last_success_at"].clone(), streak)
}

/// A worker quick to disable, a webhook of `company` whose receiver answers 500, and the
/// operational exchange tapped. Returns the webhook's id.
async fn failing_webhook_with_a_tap(company: &str) -> (TestWorker, TestReceiver, String) {
    let worker = TestWorker::start_with(quick_to_disable()).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    let webhook = worker
        .create_webhook(company, &receiver.url(), &["deal.*"])
        .await;
    let id = webhook["id"].as_str().expect("id").to_owned();
    worker.tap_operational().await;
    (worker, receiver, id)
}

#[tokio::test]
async fn a_webhook_failing_too_long_is_warned_then_disabled_and_recovers_when_enabled() {
    let (worker, receiver, id) = failing_webhook_with_a_tap("cmp_failing").await;
    let id = id.as_str();

    let (first, _) = worker.publish("deal.won", "cmp_failing", json!({})).await;
    worker.wait_for_status(&first, id, "failed").await;
    // The streak started before this instant: 2 s from here, it has lasted 2 s.
    let failing_since = std::time::Instant::now();
    let warning = worker.next_operational().await;
    assert_eq!(warning["_type"], "webhook.failing", "{warning}");
    assert_eq!(warning["company_id"], "cmp_failing", "{warning}");
    assert_eq!(warning["data"]["webhook_id"], id, "{warning}");
    assert_eq!(warning["data"]["failed_deliveries"], 1, "{warning}");
    assert_eq!(warning["data"]["disabled_after_failures"], 3, "{warning}");

    // Within the hour: counted, not warned again.
    let (second, _) = worker.publish("deal.lost", "cmp_failing", json!({})).await;
    worker.wait_for_status(&second, id, "failed").await;
    assert!(
        worker
            .no_operational_within(Duration::from_millis(700))
            .await
    );
    let (_, body) = worker.api("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(body["enabled"], true, "two failures in under 2 s: {body}");

    // Past both thresholds: disabled.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(failing_since.elapsed())).await;
    let (third, _) = worker.publish("deal.won", "cmp_failing", json!({})).await;
    worker.wait_for_status(&third, id, "failed").await;
    let disabled = worker.next_operational().await;
    assert_eq!(disabled["_type"], "webhook.disabled", "{disabled}");
    assert_eq!(disabled["data"]["reason"], "failing_too_long", "{disabled}");
    assert_eq!(disabled["data"]["failed_deliveries"], 3, "{disabled}");
    let (_, body) = worker.api("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(body["enabled"], false, "{body}");
    assert_eq!(body["disabled_reason"], "failing_too_long", "{body}");

    assert_eq!(health(&worker, id).await, (serde_json::Value::Null, 3));

    // Fixed and enabled again: recover sends what failed meanwhile.
    receiver.set_default(Reply::Status(200));
    worker.set_enabled(id, true).await;
    assert_eq!(
        health(&worker, id).await,
        (serde_json::Value::Null, 0),
        "enabling starts a new streak"
    );
    let (status, body) = worker
        .api(
            "POST",
            &format!("/v1/webhooks/{id}/recover"),
            Some(json!({"since": "2000-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(
        (status, body["enqueued"].clone()),
        (202, json!(3)),
        "{body}"
    );
    for event in [&first, &second, &third] {
        worker.wait_for_status(event, id, "succeeded").await;
    }
    // Enabling cleared the streak: those successes end nothing, and announce nothing.
    assert!(
        worker
            .no_operational_within(Duration::from_millis(700))
            .await
    );
}

#[tokio::test]
async fn a_success_after_failures_ends_the_streak_and_says_so() {
    let (worker, receiver, id) = failing_webhook_with_a_tap("cmp_recovering").await;
    let id = id.as_str();

    let (failed, _) = worker
        .publish("deal.won", "cmp_recovering", json!({}))
        .await;
    worker.wait_for_status(&failed, id, "failed").await;
    assert_eq!(worker.next_operational().await["_type"], "webhook.failing");
    assert_eq!(health(&worker, id).await, (serde_json::Value::Null, 1));

    receiver.set_default(Reply::Status(200));
    let (delivered, _) = worker
        .publish("deal.won", "cmp_recovering", json!({}))
        .await;
    worker.wait_for_status(&delivered, id, "succeeded").await;
    let recovered = worker.next_operational().await;
    assert_eq!(recovered["_type"], "webhook.recovered", "{recovered}");
    assert_eq!(recovered["data"]["webhook_id"], id, "{recovered}");
    assert_eq!(recovered["data"]["failed_deliveries"], 1, "{recovered}");
    assert!(recovered["data"]["recovered_at"].is_string(), "{recovered}");
    let (last_success, streak) = health(&worker, id).await;
    assert!(
        last_success.is_string() && streak == 0,
        "{last_success} {streak}"
    );

    // The streak is over: a further success announces nothing, a further failure warns anew.
    let (again, _) = worker
        .publish("deal.won", "cmp_recovering", json!({}))
        .await;
    worker.wait_for_status(&again, id, "succeeded").await;
    assert!(
        worker
            .no_operational_within(Duration::from_millis(700))
            .await
    );
    receiver.set_default(Reply::Status(500));
    let (failed_again, _) = worker
        .publish("deal.won", "cmp_recovering", json!({}))
        .await;
    worker.wait_for_status(&failed_again, id, "failed").await;
    let warning = worker.next_operational().await;
    assert_eq!(warning["_type"], "webhook.failing", "{warning}");
    assert_eq!(warning["data"]["failed_deliveries"], 1, "{warning}");
    // Failing again, the last success is still the one before the streak.
    let (during, streak) = health(&worker, id).await;
    assert_eq!(streak, 1);
    assert!(
        during.as_str() >= last_success.as_str(),
        "{during} {last_success}"
    );
}

/// The most requests the receiver got within any one second.
fn busiest_second(receiver: &TestReceiver) -> usize {
    let mut times: Vec<std::time::Instant> = receiver.received().iter().map(|r| r.at).collect();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Publishes `events` to a webhook limited to `limit` attempts a second and waits for all of
/// them.
async fn deliver_under_a_limit(
    worker: &TestWorker,
    company: &str,
    limit: u32,
    events: usize,
) -> TestReceiver {
    let receiver = TestReceiver::start().await;
    let (status, webhook) = worker
        .api(
            "POST",
            "/v1/webhooks",
            Some(
                json!({"company_id": company, "name": "limited", "url": receiver.url(),
                "events": ["deal.won"], "rate_limit": limit}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    assert_eq!(webhook["rate_limit"], limit);
    for n in 0..events {
        worker.publish("deal.won", company, json!({ "n": n })).await;
    }
    let id = webhook["id"].as_str().expect("id").to_owned();
    crate::harness::wait_until_within(Duration::from_secs(60), "every delivery", || async {
        let row = worker
            .db
            .query_one(
                "SELECT count(*) FROM deliveries WHERE webhook_id = $1 AND status = 'succeeded'",
                &[&uuid::Uuid::parse_str(&id).expect("uuid")],
            )
            .await
            .expect("count");
        (row.get::<_, i64>(0) == events as i64).then_some(())
    })
    .await;
    receiver
}

#[tokio::test]
async fn a_rate_limit_holds_with_one_worker() {
    let worker = TestWorker::start().await;
    let receiver = deliver_under_a_limit(&worker, "cmp_rate_one", 20, 100).await;
    let busiest = busiest_second(&receiver);
    eprintln!("one worker, limit 20/s: busiest second held {busiest} requests");
    assert!(busiest <= 20, "{busiest} requests in one second");
    assert!(busiest >= 15, "the limit is used, not undercut: {busiest}");
    assert_eq!(receiver.received().len(), 100, "each delivered once");
}

/// A worker and a sibling process, each counting the other.
async fn two_counted_workers() -> (TestWorker, crate::harness::WorkerProcess) {
    let worker = TestWorker::start().await;
    let sibling = worker.start_sibling().await;
    // Both beat, and the first has counted the second (it beats every 2 s).
    wait_until("two live workers", || async {
        let row = worker
            .db
            .query_one(
                "SELECT count(*) FROM workers WHERE heartbeat_at > now() - interval '6 seconds'",
                &[],
            )
            .await
            .expect("count");
        (row.get::<_, i64>(0) == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    (worker, sibling)
}

#[tokio::test]
async fn a_rate_limit_holds_across_two_workers() {
    let (worker, _sibling) = two_counted_workers().await;
    let receiver = deliver_under_a_limit(&worker, "cmp_rate_two", 20, 100).await;
    let busiest = busiest_second(&receiver);
    eprintln!("two workers, limit 20/s: busiest second held {busiest} requests");
    assert!(busiest <= 20, "{busiest} requests in one second");
    // Each worker's share is 10 a second: more than that in a second means both sent.
    assert!(busiest >= 15, "both workers used their share: {busiest}");
    assert_eq!(receiver.received().len(), 100, "each delivered once");
}

#[tokio::test]
async fn a_limit_below_the_number_of_workers_is_held_by_one_of_them() {
    let (worker, _sibling) = two_counted_workers().await;
    let receiver = deliver_under_a_limit(&worker, "cmp_rate_low", 1, 4).await;
    let busiest = busiest_second(&receiver);
    assert_eq!(
        busiest, 1,
        "1 a second among two workers: {busiest} in one second"
    );
    assert_eq!(receiver.received().len(), 4, "each delivered once");
}

/// An attempt in flight when its webhook is disabled still ends Failed: that failure warns
/// about, counts for and disables nothing.
#[tokio::test]
async fn a_failure_of_a_webhook_disabled_meanwhile_changes_nothing() {
    use tesoro_webhooks::{
        domain::{CompanyId, CustomHeaders, DisabledReason, EndpointUrl},
        endpoint_health::{Policy, Verdict},
        storage::NewWebhook,
    };
    let db = crate::harness::TestDatabase::create().await;
    let webhook = db
        .storage
        .create_webhook(NewWebhook {
            company_id: CompanyId::parse("cmp_late").expect("id"),
            name: "late".into(),
            url: EndpointUrl::parse_stored("https://example.com/hook").expect("url"),
            events: vec![tesoro_webhooks::domain::EventFilter::Exact(
                "deal.won".into(),
            )],
            signing_key: None,
            headers: CustomHeaders::default(),
            rate_limit: None,
            enabled: true,
        })
        .await
        .expect("created");
    db.storage
        .disable_webhook(webhook.id, DisabledReason::Manual)
        .await
        .expect("disabled")
        .expect("it was enabled");

    for min_failures in [1, 5] {
        // Past the thresholds (disable), then short of them (warn): neither happens.
        let policy = Policy {
            disable_after: Duration::ZERO,
            min_failures,
            failing_event_interval: Duration::from_secs(3600),
        };
        let verdict = db
            .storage
            .note_failed(&webhook, &policy)
            .await
            .expect("noted");
        assert_eq!(verdict, Verdict::Nothing, "min_failures {min_failures}");
    }
    let events: Vec<String> = db
        .db
        .query("SELECT event_type FROM operational_events", &[])
        .await
        .expect("events")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(events, ["webhook.disabled"], "only the manual disable's");
    let streaks = db
        .db
        .query_one("SELECT count(*) FROM webhook_health", &[])
        .await
        .expect("count")
        .get::<_, i64>(0);
    assert_eq!(streaks, 0);
}
