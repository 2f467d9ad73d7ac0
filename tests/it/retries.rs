//! Failed attempts go through the retry tiers: five attempts in all with the schedule's gaps,
//! then Failed through the dead-letter queue. Redirects and timeouts are failures.

use std::time::Duration;

use serde_json::json;

use tesoro_webhooks::domain::{DeliveryId, EventId, Job, Trigger, WebhookId};

use crate::harness::{
    Reply, SHORTEST_RETRY, TestReceiver, TestWorker, metric, test_config, wait_until,
};

#[tokio::test]
async fn a_dead_endpoint_gets_five_attempts_then_the_delivery_is_failed() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    let webhook = worker
        .create_webhook("cmp_r", &receiver.url(), &["deal.lost"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    let (event_id, published) = worker
        .publish("deal.lost", "cmp_r", json!({"id": "d"}))
        .await;

    assert_eq!(
        worker
            .wait_for_status(&event_id, webhook_id, "failed")
            .await,
        5
    );
    let requests = receiver.received();
    assert_eq!(requests.len(), 5, "exactly five attempts");
    for (n, request) in requests.iter().enumerate() {
        assert_eq!(
            request.body.as_ref(),
            published.as_slice(),
            "attempt {}",
            n + 1
        );
        assert_eq!(request.header("webhook-id"), event_id);
        assert_eq!(request.header("x-tesoro-attempt"), (n + 1).to_string());
    }
    // The schedule is 4 x 200 ms (± 10 %); a tier returns its message shortly after the TTL.
    for pair in requests.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= SHORTEST_RETRY, "gap {gap:?} shorter than the tier");
        assert!(
            gap < Duration::from_secs(5),
            "gap {gap:?} far longer than the tier"
        );
    }
    let attempts = worker.attempts(&event_id).await;
    let statuses: Vec<Option<i32>> = attempts.iter().map(|a| a.get("response_status")).collect();
    assert_eq!(statuses, vec![Some(500); 5]);
    let numbers: Vec<i32> = attempts.iter().map(|a| a.get("attempt_number")).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5]);

    // Nothing more arrives once Failed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.received().len(), 5);
}

#[tokio::test]
async fn a_recovering_endpoint_succeeds_on_a_retry() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    receiver.script([Reply::Status(503), Reply::Status(429)]);
    let webhook = worker
        .create_webhook("cmp_r2", &receiver.url(), &["lead.*"])
        .await;
    let (event_id, _) = worker.publish("lead.created", "cmp_r2", json!({})).await;
    let attempts = worker
        .wait_for_status(&event_id, webhook["id"].as_str().expect("id"), "succeeded")
        .await;
    assert_eq!(attempts, 3);
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let elsewhere = TestReceiver::start().await;
    receiver.script([Reply::Redirect(elsewhere.url())]);
    let webhook = worker
        .create_webhook("cmp_redir", &receiver.url(), &["deal.won"])
        .await;
    let (event_id, _) = worker.publish("deal.won", "cmp_redir", json!({})).await;
    let attempts = worker
        .wait_for_status(&event_id, webhook["id"].as_str().expect("id"), "succeeded")
        .await;
    assert_eq!(attempts, 2, "the 302 failed the first attempt");
    let first = worker.attempts(&event_id).await.remove(0);
    assert_eq!(first.get::<_, Option<i32>>("response_status"), Some(302));
    assert!(
        elsewhere.received().is_empty(),
        "the redirect was not followed"
    );
}

#[tokio::test]
async fn a_timeout_is_a_failure() {
    let mut config = crate::harness::test_config();
    config.delivery.timeout = Duration::from_millis(300);
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    receiver.script([Reply::Slow(Duration::from_secs(2), 200)]);
    let webhook = worker
        .create_webhook("cmp_slow", &receiver.url(), &["deal.won"])
        .await;
    let (event_id, _) = worker.publish("deal.won", "cmp_slow", json!({})).await;
    let attempts = worker
        .wait_for_status(&event_id, webhook["id"].as_str().expect("id"), "succeeded")
        .await;
    assert_eq!(attempts, 2);
    let first = worker.attempts(&event_id).await.remove(0);
    assert_eq!(
        first.get::<_, Option<String>>("error_kind").as_deref(),
        Some("timeout")
    );
    assert_eq!(first.get::<_, Option<i32>>("response_status"), None);
    let duration: i32 = first.get("duration_ms");
    assert!(
        (300..2000).contains(&duration),
        "gave up after {duration} ms"
    );
}

/// The deadline is for the whole request: a 2xx whose body is still arriving when it ends is a
/// timeout, with what arrived kept in the log.
#[tokio::test]
async fn a_body_that_trickles_past_the_deadline_is_a_timeout() {
    let mut config = crate::harness::test_config();
    config.delivery.timeout = Duration::from_millis(500);
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    receiver.script([Reply::Trickle {
        status: 200,
        first: "partial",
        pause: Duration::from_secs(2),
    }]);
    let webhook = worker
        .create_webhook("cmp_trickle", &receiver.url(), &["deal.won"])
        .await;
    let (event_id, _) = worker.publish("deal.won", "cmp_trickle", json!({})).await;
    let attempts = worker
        .wait_for_status(&event_id, webhook["id"].as_str().expect("id"), "succeeded")
        .await;
    assert_eq!(attempts, 2, "the trickled 200 was not a success");
    let first = worker.attempts(&event_id).await.remove(0);
    assert_eq!(
        first.get::<_, Option<String>>("error_kind").as_deref(),
        Some("timeout")
    );
    assert_eq!(first.get::<_, Option<i32>>("response_status"), Some(200));
    assert_eq!(
        first.get::<_, Option<Vec<u8>>>("response_body").as_deref(),
        Some(b"partial".as_slice()),
        "the part received is kept"
    );
    assert!(first.get::<_, bool>("response_body_truncated"));
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_failure() {
    let worker = TestWorker::start().await;
    // Bind then drop a listener: nothing listens on this port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}/gone");
    let webhook = worker
        .create_webhook("cmp_refused", &url, &["deal.won"])
        .await;
    let (event_id, _) = worker.publish("deal.won", "cmp_refused", json!({})).await;
    worker
        .wait_for_status(&event_id, webhook["id"].as_str().expect("id"), "failed")
        .await;
    let attempts = worker.attempts(&event_id).await;
    assert_eq!(attempts.len(), 5);
    for attempt in attempts {
        assert_eq!(
            attempt.get::<_, Option<String>>("error_kind").as_deref(),
            Some("connect")
        );
    }
}

#[tokio::test]
async fn an_internal_address_is_refused_when_the_guard_is_on() {
    let receiver = TestReceiver::start().await;
    // Created while private targets were allowed, delivered by a worker that refuses them.
    let open = TestWorker::start().await;
    let webhook = open
        .create_webhook("cmp_ssrf", &receiver.url(), &["deal.won"])
        .await;
    let mut config = open.config.clone();
    config.delivery.allow_private_targets = false;
    let mut open = open;
    open.stop().await;
    let guarded = TestWorker::start_with(config).await;
    let (event_id, _) = guarded.publish("deal.won", "cmp_ssrf", json!({})).await;
    guarded
        .wait_for_status(&event_id, webhook["id"].as_str().expect("id"), "failed")
        .await;
    assert!(receiver.received().is_empty());
    let first = guarded.attempts(&event_id).await.remove(0);
    assert_eq!(
        first.get::<_, Option<String>>("error_kind").as_deref(),
        Some("blocked_target")
    );
}

#[tokio::test]
async fn a_failed_delivery_counts_once_whatever_reaches_the_dead_queue() {
    // The worker binary, so its /metrics count only this test's deliveries.
    let worker = TestWorker::start_process(test_config()).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    let webhook = worker
        .create_webhook("cmp_failed_count", &receiver.url(), &["deal.lost"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    let (event_id, body) = worker
        .publish("deal.lost", "cmp_failed_count", json!({}))
        .await;
    let attempts = worker
        .wait_for_status(&event_id, webhook_id, "failed")
        .await;

    // Its dead job once more, as a redelivery would bring it back.
    let row = worker
        .db
        .query_one(
            "SELECT id FROM deliveries WHERE event_id = $1",
            &[&event_id],
        )
        .await
        .expect("delivery id");
    let attempt = u32::try_from(attempts).expect("attempts");
    let job = Job {
        delivery_id: DeliveryId(row.get(0)),
        webhook_id: WebhookId::parse(webhook_id).expect("uuid"),
        event_id: EventId::parse(&event_id).expect("id"),
        event_type: "deal.lost".into(),
        attempt,
        series_attempt: attempt,
        trigger: Trigger::Automatic,
        occurred_at: None,
    };
    worker
        .publisher()
        .dead_letter(&job, &body, "test: the same dead job again")
        .await
        .expect("dead letter");
    // A second delivery fails through all its tiers meanwhile (about a second): by then the
    // duplicate, handled in milliseconds, has been counted if it ever is. This one counts at
    // its last attempt, once its status is written.
    let (second, _) = worker
        .publish("deal.lost", "cmp_failed_count", json!({}))
        .await;
    worker.wait_for_status(&second, webhook_id, "failed").await;

    let failed = wait_until("the second failure counted", || async {
        let metrics = worker.metrics().await;
        metric(&metrics, "tesoro_webhooks_deliveries_failed_total").filter(|n| *n >= 2.0)
    })
    .await;
    assert_eq!(failed, 2.0, "counted once per delivery");
    let streak: i32 = worker
        .db
        .query_one(
            "SELECT failed_streak FROM webhook_health WHERE webhook_id = $1",
            &[&uuid::Uuid::parse_str(webhook_id).expect("uuid")],
        )
        .await
        .expect("streak")
        .get(0);
    assert_eq!(streak, 2, "and once in the webhook's failing streak");
}

/// A CRM service that publishes an event again while its delivery is retrying: the second
/// publish's attempt is logged on the existing delivery as its next one, and the retry it
/// scheduled continues that delivery (neither skipped nor quarantined).
#[tokio::test]
async fn a_duplicate_publish_continues_the_existing_delivery() {
    let mut config = test_config();
    config.delivery.retry_schedule =
        tesoro_webhooks::retry::RetrySchedule::new(vec![Duration::from_secs(2); 2])
            .expect("schedule");
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(500)]);
    let webhook = worker
        .create_webhook("cmp_dup", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    let body = br#"{"id":"evt_dup","event":"deal.won","company_id":"cmp_dup","data":{}}"#;
    worker.publish_raw("deal.won", body).await;
    worker
        .wait_for_status("evt_dup", webhook_id, "retrying")
        .await;
    worker.publish_raw("deal.won", body).await;

    let attempts = worker
        .wait_for_status("evt_dup", webhook_id, "succeeded")
        .await;
    assert_eq!(attempts, 3, "first publish, second publish, its retry");
    let numbers: Vec<i32> = worker
        .attempts("evt_dup")
        .await
        .iter()
        .map(|a| a.get("attempt_number"))
        .collect();
    assert_eq!(
        numbers,
        [1, 2, 3],
        "every attempt logged on the one delivery"
    );
    let deliveries: i64 = worker
        .db
        .query_one(
            "SELECT count(*) FROM deliveries WHERE event_id = 'evt_dup'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(deliveries, 1);
    assert_eq!(
        receiver.received().len(),
        3,
        "the first publish's own retry was skipped"
    );
    let quarantine = &worker.broker.topology().quarantine_queue;
    assert!(
        worker.fetch(quarantine).await.is_none(),
        "nothing quarantined"
    );
}

/// 200 deliveries that fail together are scheduled to come back spread over the tier's
/// jitter window, not all at once: with a 20 s tier and 10 % jitter, in its five delay
/// queues of 18 to 22 s. Read from each delivery's `next_attempt_at` against its first
/// attempt, not from arrival times, which a busy machine delays unevenly.
#[tokio::test]
async fn retries_of_deliveries_that_failed_together_are_spread() {
    let mut config = test_config();
    config.delivery.retry_schedule =
        tesoro_webhooks::retry::RetrySchedule::new(vec![Duration::from_secs(20)]).expect("valid");
    config.delivery.max_in_flight_per_endpoint = 256;
    // Every delivery's first attempt fails: the endpoint's circuit would open after ten and
    // park the rest untried (tests/it/circuit.rs). The tiers are measured here.
    config.circuit_breaker.enabled = false;
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    worker
        .create_webhook("cmp_jitter", &receiver.url(), &["deal.won"])
        .await;
    const DELIVERIES: usize = 200;
    for n in 0..DELIVERIES {
        worker
            .publish("deal.won", "cmp_jitter", json!({ "n": n }))
            .await;
    }
    // Seconds from the end of each first attempt to its scheduled second one.
    let waits: Vec<f64> = wait_until("every delivery scheduled for a retry", || async {
        let rows = worker
            .db
            .query(
                "SELECT extract(epoch FROM d.next_attempt_at - a.attempted_at)::float8
                        - a.duration_ms / 1000.0
                 FROM deliveries d
                 JOIN attempts a ON a.delivery_id = d.id AND a.attempt_number = 1
                 WHERE d.company_id = 'cmp_jitter' AND d.status = 'retrying'",
                &[],
            )
            .await
            .ok()?;
        (rows.len() == DELIVERIES).then(|| rows.iter().map(|row| row.get(0)).collect())
    })
    .await;
    // Per delay queue, 18 s to 22 s.
    let mut queues = [0usize; 5];
    for wait in &waits {
        let second = wait.round() as i64;
        assert!((18..=22).contains(&second), "a wait of {wait} s");
        queues[usize::try_from(second - 18).expect("in range")] += 1;
    }
    eprintln!("retries per delay queue, 18 s to 22 s: {queues:?}");
    assert!(
        queues.iter().all(|&n| n >= DELIVERIES / 10),
        "every delay queue takes its share: {queues:?}"
    );
    assert!(
        queues.iter().all(|&n| n <= DELIVERIES / 2),
        "clumped: {queues:?}"
    );
}

/// A 429 or 503 with `Retry-After` delays the next attempt at least that long, rounded up to a
/// tier; a wait past the last tier is capped there, not ignored.
#[tokio::test]
async fn retry_after_is_honoured_up_to_the_last_tier() {
    let mut config = test_config();
    let schedule = [500, 3000, 6000].map(Duration::from_millis).to_vec();
    config.delivery.retry_schedule =
        tesoro_webhooks::retry::RetrySchedule::new(schedule).expect("valid");
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    let a_day_on =
        httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(86_400));
    receiver.script([
        // Due after 500 ms, asked 2 s: the 3 s tier.
        Reply::RetryAfter(429, "2".into()),
        // Due after 3 s, asked a day (as a date): capped at the 6 s tier.
        Reply::RetryAfter(503, a_day_on),
        Reply::Status(200),
    ]);
    let webhook = worker
        .create_webhook("cmp_throttled", &receiver.url(), &["deal.won"])
        .await;
    let (event_id, _) = worker
        .publish("deal.won", "cmp_throttled", json!({"id": "d"}))
        .await;
    let attempts = worker
        .wait_for_status(&event_id, webhook["id"].as_str().expect("id"), "succeeded")
        .await;
    assert_eq!(attempts, 3);
    let requests = receiver.received();
    let gaps: Vec<Duration> = requests.windows(2).map(|p| p[1].at - p[0].at).collect();
    // At least what was asked, at most the tier's longest queue (+10 %) and some slack.
    assert!(gaps[0] >= Duration::from_secs(2), "{gaps:?}");
    assert!(gaps[0] < Duration::from_millis(3300 + 1000), "{gaps:?}");
    // Capped: the last tier's longest queue, for the wait is longer than all of them.
    assert!(
        gaps[1] >= Duration::from_millis(6600),
        "capped, not ignored: {gaps:?}"
    );
    assert!(gaps[1] < Duration::from_millis(6600 + 1000), "{gaps:?}");
    let statuses: Vec<Option<i32>> = worker
        .attempts(&event_id)
        .await
        .iter()
        .map(|a| a.get("response_status"))
        .collect();
    assert_eq!(statuses, [Some(429), Some(503), Some(200)]);
}

/// A retry's `next_attempt_at` is when the delay queue picked (the jitter) brings it back, not
/// the tier's nominal delay: what the API shows and the overdue gauge goes by.
#[tokio::test]
async fn a_retry_records_when_its_jittered_delay_brings_it_back() {
    let mut config = test_config();
    // Queues of 2, 3, 4, 5 and 6 s.
    config.delivery.retry_schedule =
        tesoro_webhooks::retry::RetrySchedule::new(vec![Duration::from_secs(4)]).expect("schedule");
    config.delivery.retry_jitter = tesoro_webhooks::retry::Jitter::new(0.5).expect("jitter");
    // Sixteen failed attempts in a row would open the endpoint's circuit and park the
    // retries (tests/it/circuit.rs); the tiers are measured here.
    config.circuit_breaker.enabled = false;
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    let webhook = worker
        .create_webhook("cmp_jitter_due", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    let mut events = Vec::new();
    for _ in 0..8 {
        events.push(
            worker
                .publish("deal.won", "cmp_jitter_due", json!({}))
                .await
                .0,
        );
    }
    let mut due = Vec::new();
    for event in &events {
        worker.wait_for_status(event, webhook_id, "retrying").await;
        let row = worker
            .db
            .query_one(
                "SELECT next_attempt_at FROM deliveries WHERE event_id = $1",
                &[event],
            )
            .await
            .expect("delivery");
        due.push(row.get::<_, time::OffsetDateTime>(0));
    }
    for (event, due) in events.iter().zip(due) {
        worker.wait_for_status(event, webhook_id, "failed").await;
        let retried: time::OffsetDateTime = worker.attempts(event).await[1].get("attempted_at");
        let off = (retried - due).abs();
        assert!(
            off < time::Duration::milliseconds(500),
            "recorded due at {due}, tried at {retried}"
        );
    }
}
