//! Poison is bounded: a message whose handling fails for a reason of its own is tried
//! `amqp.delivery_limit` times, then quarantined, while everything behind it flows; the broker's
//! own delivery limit catches what the worker cannot count.

use std::collections::HashMap;

use lapin::{
    options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
};
use serde_json::json;
use tesoro_webhooks::broker::Publisher;

use crate::harness::{Prepared, TestReceiver, TestWorker, metric, test_config, wait_until};

/// As if PostgreSQL refused the rows of one event (a value it cannot store): every write of
/// its delivery fails, for that event alone.
const REFUSE_ONE_EVENT: &str = "
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.event_id = 'evt_poison' THEN
        RAISE EXCEPTION 'this row is refused' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON deliveries
    FOR EACH ROW EXECUTE FUNCTION refuse_poison();";

const POISON: &[u8] =
    br#"{"id":"evt_poison","event":"deal.won","company_id":"cmp_poison","data":{}}"#;

/// A webhook of cmp_poison on a receiver that answers 200, and the event whose rows
/// PostgreSQL refuses, published; returns the receiver and the webhook's id.
async fn publish_refused_event(worker: &TestWorker) -> (TestReceiver, String) {
    worker
        .db
        .batch_execute(REFUSE_ONE_EVENT)
        .await
        .expect("trigger");
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_poison", &receiver.url(), &["deal.won"])
        .await;
    worker.publish_raw("deal.won", POISON).await;
    (receiver, webhook["id"].as_str().expect("id").to_owned())
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_quarantined_and_its_neighbours_flow() {
    let worker = TestWorker::start().await;
    let (receiver, webhook_id) = publish_refused_event(&worker).await;
    let webhook_id = webhook_id.as_str();
    let mut valid = Vec::new();
    for i in 0..200 {
        let (id, _) = worker
            .publish("deal.won", "cmp_poison", json!({ "n": i }))
            .await;
        valid.push(id);
    }

    let queue = &worker.broker.topology().quarantine_queue;
    let quarantined = wait_until("the poison event in quarantine", || worker.fetch(queue)).await;
    assert_eq!(quarantined.body.as_ref(), POISON, "its bytes kept");
    let reason = quarantined.reason().expect("reason");
    assert!(
        reason.starts_with("refused_by_database: failed 5 times"),
        "{reason}"
    );
    assert!(reason.contains("this row is refused"), "{reason}");
    assert_eq!(
        quarantined.published_to(),
        (
            worker.config.amqp.events_exchange.clone(),
            "deal.won".to_owned()
        ),
        "requeue sends it back where the CRM published it"
    );
    for id in &valid {
        worker.wait_for_status(id, webhook_id, "succeeded").await;
    }
    let mut received: HashMap<String, usize> = HashMap::new();
    for request in receiver.received() {
        *received
            .entry(request.header("webhook-id").to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        received.get("evt_poison"),
        Some(&5),
        "one POST per try, and no more"
    );
    for id in &valid {
        assert_eq!(
            received.get(id),
            Some(&1),
            "{id} delivered once, no neighbour's retry"
        );
    }
    assert!(
        worker.fetch(queue).await.is_none(),
        "nothing else quarantined"
    );
}

/// An outcome is counted once it is durable: each try of the refused event made a successful
/// POST, and none of them could be recorded.
#[tokio::test]
async fn an_outcome_whose_write_failed_is_not_counted() {
    let worker = TestWorker::start_process(test_config()).await;
    publish_refused_event(&worker).await;
    let queue = &worker.broker.topology().quarantine_queue;
    wait_until("the refused event in quarantine", || worker.fetch(queue)).await;

    let metrics = worker.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "tesoro_webhooks_attempts_total{result=\"delivered\"}"
        ),
        Some(5.0),
        "every POST is an attempt"
    );
    assert_eq!(
        metric(&metrics, "tesoro_webhooks_deliveries_succeeded_total"),
        Some(0.0),
        "no delivery succeeded durably"
    );
}

#[tokio::test]
async fn the_broker_moves_a_message_returned_too_often_to_quarantine() {
    let prepared = Prepared::create().await;
    let topology = prepared.broker.topology().clone();
    let publisher: Publisher = prepared.broker.publisher().await.expect("publisher");
    let body = br#"{"id":"evt_crashy","event":"deal.won","company_id":"cmp_x"}"#;
    publisher
        .publish_event("deal.won", "evt_crashy", body)
        .await
        .expect("publish");

    // As a worker that dies while handling it would, over and over.
    let connection = lapin::Connection::connect(
        &prepared.config.amqp.url,
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let mut returns = 0;
    loop {
        let got = channel
            .basic_get(
                topology.events_queues[0].as_str().into(),
                BasicGetOptions::default(),
            )
            .await
            .expect("get");
        let Some(got) = got else { break };
        got.delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .expect("nack");
        returns += 1;
        assert!(returns <= 60, "the broker never stopped redelivering");
    }
    assert_eq!(returns, 51, "delivered once, then 50 redeliveries");

    let quarantined = wait_until("the message in quarantine", || async {
        prepared
            .broker
            .fetch(&topology.quarantine_queue)
            .await
            .expect("fetch")
    })
    .await;
    assert_eq!(quarantined.body.as_ref(), body.as_slice());
    let reason = quarantined.reason().expect("reason");
    assert!(reason.starts_with("delivery_limit"), "{reason}");
    assert_eq!(
        quarantined.published_to(),
        (topology.events_exchange.clone(), "deal.won".to_owned())
    );
    let _ = connection.close(200, "done".into()).await;
}

/// A queue declared by an older version, without the delivery limit and dead-letter target
/// (arguments a queue cannot change), is kept as it is: the worker starts and delivers.
#[tokio::test]
async fn queues_declared_without_the_safety_net_are_kept() {
    let config = test_config();
    let connection =
        lapin::Connection::connect(&config.amqp.url, lapin::ConnectionProperties::default())
            .await
            .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let mut legacy = FieldTable::default();
    legacy.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(
            format!("{}.events", config.amqp.prefix).as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            legacy,
        )
        .await
        .expect("legacy declare");
    let _ = connection.close(200, "done".into()).await;

    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_legacy", &receiver.url(), &["deal.won"])
        .await;
    let (event_id, _) = worker.publish("deal.won", "cmp_legacy", json!({})).await;
    worker
        .wait_for_status(&event_id, webhook["id"].as_str().expect("id"), "succeeded")
        .await;
}
