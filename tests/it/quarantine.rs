//! Messages that are not valid envelopes are moved aside with their reason, acked, and never
//! block the valid events behind them.

use serde_json::json;
use tesoro_webhooks::domain::{DeliveryId, EventId, Job, Trigger, WebhookId};

use crate::harness::{TestReceiver, TestWorker, test_config, wait_until};

#[tokio::test]
async fn malformed_messages_are_quarantined_with_their_reason() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_q", &receiver.url(), &["deal.won"])
        .await;

    let deep = format!(
        r#"{{"id":"evt_q5","event":"deal.won","company_id":"cmp_q","data":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let bad: [(&[u8], &str); 6] = [
        (b"this is not json", "not_json"),
        (
            b"{\"id\":\"evt_q4\",\"event\":\"deal.won\",\"company_id\":\"cmp_q\",\"data\":\"caf\xe9\"}",
            "not_json",
        ),
        (deep.as_bytes(), "not_json"),
        (
            br#"{"id":"evt_q1","event":"deal.won","data":{}}"#,
            "missing_field",
        ),
        (
            br#"{"company_id":"cmp_q","event":"deal.won"}"#,
            "missing_field",
        ),
        (
            br#"{"id":"evt_q3","event":"deal.sunk","company_id":"cmp_q"}"#,
            "unknown_event_type",
        ),
    ];
    for (body, _) in &bad {
        worker.publish_raw("deal.won", body).await;
    }
    let (event_id, _) = worker
        .publish("deal.won", "cmp_q", json!({"after": "bad ones"}))
        .await;
    worker
        .wait_for_status(&event_id, webhook["id"].as_str().expect("id"), "succeeded")
        .await;

    let queue = &worker.broker.topology().quarantine_queue;
    let mut parked = Vec::new();
    for _ in &bad {
        let message = wait_until("a quarantined message", || worker.fetch(queue)).await;
        parked.push(message);
    }
    assert!(
        worker.fetch(queue).await.is_none(),
        "nothing else quarantined"
    );
    // Handled concurrently, so quarantined in any order; each with its original bytes.
    for (body, code) in &bad {
        let message = parked
            .iter()
            .find(|m| m.body.as_ref() == *body)
            .expect("quarantined with its original bytes");
        let reason = message.reason().expect("reason header");
        assert!(
            reason.starts_with(code),
            "{reason} should start with {code}"
        );
    }
    assert_eq!(
        receiver.received().len(),
        1,
        "only the valid event was delivered"
    );
    // Acked, not looping: the events queue is empty.
    assert!(
        worker
            .fetch(&worker.broker.topology().events_queues[0])
            .await
            .is_none()
    );
}

#[tokio::test]
async fn events_over_the_size_limit_are_quarantined_not_delivered() {
    let mut config = test_config();
    config.delivery.max_event_size = bytesize::ByteSize::kib(4);
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_big", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");

    let (too_big, too_big_body) = worker
        .publish(
            "deal.won",
            "cmp_big",
            json!({"notes": "n".repeat(5 * 1024)}),
        )
        .await;
    let (fits, _) = worker
        .publish(
            "deal.won",
            "cmp_big",
            json!({"notes": "n".repeat(3 * 1024)}),
        )
        .await;
    worker.wait_for_status(&fits, webhook_id, "succeeded").await;

    let queue = &worker.broker.topology().quarantine_queue;
    let message = wait_until("the oversized event in quarantine", || worker.fetch(queue)).await;
    assert_eq!(message.body.as_ref(), too_big_body.as_slice(), "kept whole");
    let reason = message.reason().expect("reason header");
    assert!(reason.starts_with("too_large: the event is "), "{reason}");
    assert!(reason.contains("(4096 bytes)"), "{reason}");
    let delivered = receiver.received();
    assert_eq!(delivered.len(), 1, "only the event within the limit");
    let envelope: serde_json::Value = serde_json::from_slice(&delivered[0].body).expect("json");
    assert_eq!(envelope["id"], fits.as_str());
    let deliveries: i64 = worker
        .db
        .query_one(
            "SELECT count(*) FROM deliveries WHERE event_id = $1",
            &[&too_big],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(deliveries, 0, "no delivery made of the oversized event");

    // `publish` applies the same limit instead of handing the worker an event to quarantine.
    let data = json!({"notes": "n".repeat(5 * 1024)}).to_string();
    let refused = worker
        .cli(&[
            "publish",
            "--event",
            "deal.won",
            "--company",
            "cmp_big",
            "--data",
            &data,
        ])
        .await;
    assert!(!refused.success, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("over delivery.max_event_size (4096 bytes); not published"),
        "{}",
        refused.stderr
    );
}

/// The warning an operator sees names the message, so it can be found among the quarantined.
#[tokio::test]
async fn the_quarantine_warning_names_the_message() {
    let mut worker = TestWorker::start_process(test_config()).await;
    worker
        .publisher()
        .publish_event(
            "deal.won",
            "evt_unknown_kind",
            br#"{"id":"evt_unknown_kind"}"#,
        )
        .await
        .expect("publish");
    let queue = worker.broker.topology().quarantine_queue.clone();
    wait_for_one_queued(&worker, &queue, "the message to be quarantined").await;
    let (_, log) = worker.terminate_process().await;
    let warning = log
        .lines()
        .find(|line| line.contains("quarantined an unprocessable message"))
        .unwrap_or_else(|| panic!("no quarantine warning in:\n{log}"));
    for part in [
        "reason=\"missing_field\"",
        "message_id=\"evt_unknown_kind\"",
        "routing_key=\"deal.won\"",
    ] {
        assert!(warning.contains(part), "{part} missing from: {warning}");
    }
}

#[tokio::test]
async fn quarantine_commands_list_requeue_and_drop() {
    let worker = TestWorker::start().await;
    worker
        .publisher()
        .publish_event("deal.won", "evt_broken_1", b"{broken")
        .await
        .expect("publish");
    let queue = worker.broker.topology().quarantine_queue.clone();
    wait_for_one_queued(&worker, &queue, "the message to be quarantined").await;

    let list = worker.cli(&["quarantine", "list"]).await;
    assert!(list.success, "{list:?}");
    assert!(list.stdout.contains("1 message(s)"), "{}", list.stdout);
    assert!(list.stdout.contains("not_json"), "{}", list.stdout);
    assert!(list.stdout.contains("{broken"), "{}", list.stdout);
    assert!(
        list.stdout.contains("deal.won"),
        "origin routing key shown: {}",
        list.stdout
    );
    assert!(
        list.stdout.contains("message id evt_broken_1"),
        "message id shown: {}",
        list.stdout
    );
    // Peeked messages are handed back when the CLI's channel closes; the quorum queue's
    // count follows shortly after.
    wait_for_one_queued(&worker, &queue, "list to leave the message queued").await;

    // Still invalid: requeued to the events exchange, it comes back to quarantine once.
    let requeue = worker.cli(&["quarantine", "requeue", "--all"]).await;
    assert!(requeue.stdout.contains("requeued 1"), "{requeue:?}");
    wait_for_one_queued(&worker, &queue, "the message to return to quarantine").await;

    let dropped = worker.cli(&["quarantine", "drop", "--all"]).await;
    assert!(dropped.stdout.contains("dropped 1"), "{dropped:?}");
    assert_eq!(worker.broker.depth(&queue).await.expect("depth"), 0);
}

#[tokio::test]
async fn unusable_delivery_jobs_are_quarantined() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_job", &receiver.url(), &["deal.won"])
        .await;
    let topology = worker.broker.topology().clone();

    // No job headers at all.
    worker
        .publish_raw_to(&topology.work_exchange, "deliveries", b"{}")
        .await;
    // Well-formed, for a real webhook, but naming a delivery that was never recorded: it waits
    // a few rounds for a batch commit, then is moved aside instead of looping.
    let job = Job {
        delivery_id: DeliveryId::new(),
        webhook_id: WebhookId::parse(webhook["id"].as_str().expect("id")).expect("uuid"),
        event_id: EventId::parse("evt_never").expect("id"),
        event_type: "deal.won".into(),
        attempt: 1,
        series_attempt: 1,
        trigger: Trigger::Automatic,
        occurred_at: None,
    };
    worker
        .publisher()
        .enqueue(&job, b"{}")
        .await
        .expect("enqueue");

    let mut reasons = Vec::new();
    for _ in 0..2 {
        let message = wait_until("a quarantined job", || {
            worker.fetch(&topology.quarantine_queue)
        })
        .await;
        reasons.push(message.reason().expect("reason"));
    }
    reasons.sort();
    assert!(reasons[0].starts_with("invalid_job"), "{reasons:?}");
    assert!(reasons[1].starts_with("unknown_delivery"), "{reasons:?}");
    assert!(receiver.received().is_empty());
}

/// A failed attempt publishes its next job before its own outcome is committed. A job that
/// finds fewer attempts recorded than it follows must wait for them (and be moved aside if they
/// never come), not be acked as a stale duplicate: that would lose the retry for good.
#[tokio::test]
async fn a_job_ahead_of_the_recorded_attempts_waits_instead_of_being_dropped() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_ahead", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    let (event_id, body) = worker
        .publish("deal.won", "cmp_ahead", json!({"id": "deal_1"}))
        .await;
    let recorded = worker
        .wait_for_status(&event_id, webhook_id, "succeeded")
        .await;
    assert_eq!(recorded, 1);
    let delivery_id: uuid::Uuid = worker
        .db
        .query_one(
            "SELECT id FROM deliveries WHERE event_id = $1",
            &[&event_id],
        )
        .await
        .expect("delivery")
        .get(0);

    // As if attempt 2 had been made and had published its job for attempt 3, with attempt 2's
    // outcome not committed yet (here it never will be).
    let job = Job {
        delivery_id: DeliveryId(delivery_id),
        webhook_id: WebhookId::parse(webhook_id).expect("uuid"),
        event_id: EventId::parse(&event_id).expect("id"),
        event_type: "deal.won".into(),
        attempt: 3,
        series_attempt: 3,
        trigger: Trigger::Automatic,
        occurred_at: None,
    };
    worker
        .publisher()
        .enqueue(&job, &body)
        .await
        .expect("enqueue");

    let quarantine = worker.broker.topology().quarantine_queue.clone();
    let message = wait_until("the waiting job to be moved aside", || {
        worker.fetch(&quarantine)
    })
    .await;
    let reason = message.reason().expect("reason");
    assert!(reason.starts_with("unknown_delivery"), "{reason}");
    assert_eq!(receiver.received().len(), 1, "no attempt made out of turn");
}

/// Waits until `queue` holds exactly one message (quorum queue counts lag a little).
async fn wait_for_one_queued(worker: &TestWorker, queue: &str, what: &str) {
    wait_until(what, || async {
        (worker.broker.depth(queue).await.ok()? == 1).then_some(())
    })
    .await;
}
