//! `amqp.event_queues`: events spread over several quorum queues by RabbitMQ's
//! consistent-hash exchange on their message_id, and a changed count drained without loss.

use std::time::Duration;

use serde_json::json;

use crate::harness::{
    Prepared, TestReceiver, TestWorker, every_event_received_none_quarantined, test_config,
    wait_until, wait_until_within,
};

fn spread_config(queues: u16) -> tesoro_webhooks::config::Config {
    let mut config = test_config();
    config.amqp.event_queues = queues;
    config
}

/// Publishes deal.won events numbered `numbers` for `company`; returns their ids.
async fn publish_deals(
    worker: &TestWorker,
    company: &str,
    numbers: std::ops::Range<u32>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in numbers {
        ids.push(worker.publish("deal.won", company, json!({"n": n})).await.0);
    }
    ids
}

/// Waits until none of `queues` exists any more (drained and removed).
async fn wait_removed(queues: &[String]) {
    wait_until_within(
        Duration::from_secs(30),
        "the old queues removed",
        || async {
            for queue in queues {
                if queue_exists(queue).await {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// Ready messages in each of `queues`.
async fn depths(prepared: &Prepared, queues: &[String]) -> Vec<u32> {
    let mut depths = Vec::new();
    for queue in queues {
        depths.push(prepared.broker.depth(queue).await.expect("depth"));
    }
    depths
}

/// Whether `rabbitmqctl list_<what>` (queues, exchanges) names `name`.
async fn listed(what: &'static str, name: &str) -> bool {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("rabbitmqctl")
            .args([
                &format!("list_{what}"),
                "--no-table-headers",
                "--silent",
                "name",
            ])
            .output()
            .expect("rabbitmqctl");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|line| line.trim() == name)
    })
    .await
    .expect("rabbitmqctl")
}

async fn queue_exists(name: &str) -> bool {
    listed("queues", name).await
}

async fn exchange_exists(name: &str) -> bool {
    listed("exchanges", name).await
}

#[tokio::test]
async fn every_copy_of_an_event_goes_to_the_same_one_of_three_queues() {
    let prepared = Prepared::create_with(spread_config(3)).await;
    let queues = prepared.broker.topology().events_queues.clone();
    let publisher = prepared.broker.publisher().await.expect("publisher");
    let publish = async |id: &str| {
        let body = json!({"id": id}).to_string();
        publisher
            .publish_event("deal.won", id, body.as_bytes())
            .await
            .expect("confirmed");
    };
    for n in 0..300 {
        publish(&format!("evt_spread_{n}")).await;
    }
    let spread = wait_until("300 events in the queues", || async {
        let depths = depths(&prepared, &queues).await;
        (depths.iter().sum::<u32>() == 300).then_some(depths)
    })
    .await;
    assert!(
        spread.iter().all(|&n| n > 0),
        "every queue has events: {spread:?}"
    );

    publish("evt_repeated").await;
    let once = wait_until("the first copy", || async {
        let depths = depths(&prepared, &queues).await;
        (depths.iter().sum::<u32>() == 301).then_some(depths)
    })
    .await;
    let chosen = (0..3)
        .find(|&i| once[i] > spread[i])
        .expect("a queue took it");
    for _ in 0..4 {
        publish("evt_repeated").await;
    }
    let after = wait_until("the copies", || async {
        let depths = depths(&prepared, &queues).await;
        (depths.iter().sum::<u32>() == 305).then_some(depths)
    })
    .await;
    for i in 0..3 {
        let expected = if i == chosen { once[i] + 4 } else { once[i] };
        assert_eq!(
            after[i], expected,
            "queue {i}: {spread:?} {once:?} {after:?}"
        );
    }
}

#[tokio::test]
async fn a_worker_consumes_every_one_of_three_event_queues() {
    let worker = TestWorker::start_with(spread_config(3)).await;
    let receiver = TestReceiver::start().await;
    worker
        .create_webhook("cmp_spread", &receiver.url(), &["deal.won"])
        .await;
    for queue in &worker.broker.topology().events_queues {
        assert_eq!(
            worker.broker.consumers(queue).await.expect("queue"),
            1,
            "{queue}"
        );
    }
    let ids = publish_deals(&worker, "cmp_spread", 0..150).await;
    receiver.wait_for(ids.len()).await;
    every_event_received_none_quarantined(&worker, &receiver, &ids).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), ids.len(), "each event once");
}

/// Events waiting in the queues of one count are delivered by a worker started with another,
/// and those queues removed once empty; both ways.
#[tokio::test]
async fn a_changed_number_of_event_queues_drains_the_old_ones_and_loses_nothing() {
    let spread = spread_config(3);
    let mut single = spread.clone();
    single.amqp.event_queues = 1;
    let receiver = TestReceiver::start().await;

    let mut first = TestWorker::start_with(spread.clone()).await;
    first
        .create_webhook("cmp_resize", &receiver.url(), &["deal.won"])
        .await;
    first.stop().await;
    let mut ids = publish_deals(&first, "cmp_resize", 0..150).await;

    let mut second = TestWorker::start_with(single.clone()).await;
    receiver.wait_for(ids.len()).await;
    let topology = first.broker.topology();
    wait_removed(&topology.events_queues).await;
    assert!(!exchange_exists(&topology.events_hash_exchange).await);
    second.stop().await;

    // And back: events waiting in the single queue, taken up by a worker on three.
    ids.extend(publish_deals(&second, "cmp_resize", 150..250).await);
    let third = TestWorker::start_with(spread).await;
    receiver.wait_for(ids.len()).await;
    wait_removed(&second.broker.topology().events_queues).await;
    every_event_received_none_quarantined(&third, &receiver, &ids).await;
    assert_eq!(receiver.received().len(), ids.len(), "each event once");
}

/// A database upgraded from a version before the setting records its single queue without
/// a name; a worker started with three queues still finds it and drains it.
#[tokio::test]
async fn the_single_queue_of_an_upgraded_deployment_is_drained_into_three() {
    let spread = spread_config(3);
    let mut single = spread.clone();
    single.amqp.event_queues = 1;
    let receiver = TestReceiver::start().await;
    let mut before = TestWorker::start_with(single).await;
    before
        .create_webhook("cmp_upgrade", &receiver.url(), &["deal.won"])
        .await;
    before.stop().await;
    before
        .db
        .batch_execute(
            "DELETE FROM declared_events_queues;
             INSERT INTO declared_events_queues (name) VALUES ('')",
        )
        .await
        .expect("the upgrade's record");
    let ids = publish_deals(&before, "cmp_upgrade", 0..50).await;
    let after = TestWorker::start_with(spread).await;
    receiver.wait_for(ids.len()).await;
    wait_removed(&before.broker.topology().events_queues).await;
    every_event_received_none_quarantined(&after, &receiver, &ids).await;
    let names = declared_events_queues(&after).await;
    assert_eq!(
        names,
        after.broker.topology().events_queues,
        "the drained one forgotten"
    );
}

/// The events queues the workers of `worker`'s database have recorded, by name.
async fn declared_events_queues(worker: &TestWorker) -> Vec<String> {
    worker
        .db
        .query("SELECT name FROM declared_events_queues ORDER BY name", &[])
        .await
        .expect("declared")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A recorded queue that no longer exists (removed by a worker that could not record it) is
/// forgotten at the next start, not looked for at every one.
#[tokio::test]
async fn a_recorded_events_queue_that_is_gone_is_forgotten() {
    let config = spread_config(3);
    let mut before = TestWorker::start_with(config.clone()).await;
    before.stop().await;
    let gone = format!("{}.events.7", config.amqp.prefix);
    before
        .db
        .execute(
            "INSERT INTO declared_events_queues (name) VALUES ($1)",
            &[&gone],
        )
        .await
        .expect("a stale record");
    let after = TestWorker::start_with(config).await;
    let names = declared_events_queues(&after).await;
    assert_eq!(names, after.broker.topology().events_queues);
}
