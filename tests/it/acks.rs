//! Coalesced acks, against the real broker: every settled message is acked, and a slow
//! delivery does not hold back the acks of the messages behind it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use tesoro_webhooks::broker::Disposition;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::harness::{Reply, TestReceiver, TestWorker, queue_count, test_config, wait_until};

#[tokio::test]
async fn every_settled_message_is_acked_and_the_queue_drains() {
    let mut worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_acks", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    let mut events = Vec::new();
    for _ in 0..40 {
        events.push(worker.publish("deal.won", "cmp_acks", json!({})).await.0);
    }
    for event in &events {
        worker.wait_for_status(event, webhook_id, "succeeded").await;
    }
    let queue = worker.broker.topology().events_queues[0].clone();
    // A `multiple` ack on a wrong tag would close the channel and hand the messages back.
    wait_until("every event acked", || async {
        (queue_count(&queue, "messages").await == 0).then_some(())
    })
    .await;
    worker.stop().await;
    // rabbitmqctl's counters lag; a basic.get does not.
    assert!(
        worker.fetch(&queue).await.is_none(),
        "nothing handed back at stop"
    );
    assert_eq!(receiver.received().len(), 40, "no event delivered twice");
}

#[tokio::test]
async fn acks_behind_a_slow_delivery_go_out_while_it_is_in_flight() {
    let mut config = test_config();
    config.delivery.timeout = Duration::from_secs(15);
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    receiver.script([Reply::Slow(Duration::from_secs(8), 200)]);
    worker
        .create_webhook("cmp_acks_slow", &receiver.url(), &["deal.won"])
        .await;
    worker.publish("deal.won", "cmp_acks_slow", json!({})).await;
    receiver.wait_for(1).await;
    for _ in 0..20 {
        worker.publish("deal.won", "cmp_acks_slow", json!({})).await;
    }
    receiver.wait_for(21).await;
    let queue = worker.broker.topology().events_queues[0].clone();
    // The first message's tag is still open, so no `multiple` ack can cover the twenty
    // behind it; they are acked one by one instead of waiting the eight seconds.
    wait_until("only the slow delivery unacked", || async {
        (queue_count(&queue, "messages_unacknowledged").await == 1).then_some(())
    })
    .await;
    wait_until("the slow delivery acked too", || async {
        (queue_count(&queue, "messages").await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_panicking_handler_hands_its_message_back() {
    let worker = TestWorker::start().await;
    let name = format!("{}.panic-tap", worker.config.amqp.prefix);
    worker.amqp.declare_tap(&name, &name).await.expect("tap");
    for body in [&b"first"[..], b"second"] {
        worker.publish_raw_to(&name, "test", body).await;
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = {
        let calls = calls.clone();
        move |_message| {
            let calls = calls.clone();
            async move {
                // A bug on the first message only.
                assert_ne!(calls.fetch_add(1, Ordering::SeqCst), 0, "handler bug");
                Disposition::Ack
            }
        }
    };
    let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
    let consuming = worker
        .broker
        .consume(&name, 10, &stop, &tracker, || {}, handler);
    // Unsettled, the first message would stay unacked until the channel closed, and never
    // come back.
    let settled = async {
        wait_until("the first message handed back and redelivered", || async {
            (calls.load(Ordering::SeqCst) >= 3).then_some(())
        })
        .await;
        wait_until("both messages acked", || async {
            (queue_count(&name, "messages").await == 0).then_some(())
        })
        .await;
    };
    tokio::select! {
        ended = consuming => panic!("consumer ended: {ended:?}"),
        () = settled => {}
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "handled once more, no more"
    );
    worker
        .amqp
        .delete_tap(&name, &name)
        .await
        .expect("delete tap");
}

#[tokio::test]
async fn messages_in_flight_at_a_graceful_stop_are_acked_not_handed_back() {
    let mut worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Slow(Duration::from_millis(1500), 200));
    worker
        .create_webhook("cmp_acks_stop", &receiver.url(), &["deal.won"])
        .await;
    for _ in 0..5 {
        worker.publish("deal.won", "cmp_acks_stop", json!({})).await;
    }
    receiver.wait_for(5).await;
    // Every attempt is in flight: the stop lets them finish, record, and ack.
    worker.stop().await;
    let queue = worker.broker.topology().events_queues[0].clone();
    // The worker's connection is closed: anything it left unacked is back in the queue.
    assert!(
        worker.fetch(&queue).await.is_none(),
        "a message was handed back"
    );
}
