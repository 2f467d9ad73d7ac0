//! The tests' side of the broker: queue counts, and a publisher that keeps an event until it
//! is confirmed, as a CRM service does.

use std::time::{Duration, Instant};

use serde_json::json;
use tesoro_webhooks::{
    app,
    broker::{Broker, Publisher},
    config::Config,
};

/// One of `rabbitmqctl list_queues`' counters for `queue`: `messages` (ready plus
/// unacknowledged), `messages_ready` or `messages_unacknowledged`. rabbitmqctl blocks for a
/// second or so, so it runs off the runtime's threads.
pub async fn queue_count(queue: &str, counter: &'static str) -> u64 {
    let queue = queue.to_owned();
    tokio::task::spawn_blocking(move || rabbitmqctl_queue_count(&queue, counter))
        .await
        .expect("rabbitmqctl")
}

fn rabbitmqctl_queue_count(queue: &str, counter: &str) -> u64 {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "--no-table-headers",
            "--silent",
            "name",
            counter,
        ])
        .output()
        .expect("rabbitmqctl list_queues");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(queue)).then(|| fields.next()?.parse().ok())?
        })
        .expect("queue listed")
}

/// Publishes `body` with a confirm, reconnecting (to the nodes of `amqp.url` in order) until
/// the broker takes it: a CRM service that keeps an event until it is confirmed.
pub async fn publish_until_confirmed(
    config: &Config,
    connection: &mut Option<(Broker, Publisher)>,
    id: &str,
    body: &[u8],
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if connection.is_none()
            && let Ok(broker) = Broker::connect(&config.amqp, app::topology(config)).await
            && let Ok(publisher) = broker.publisher().await
        {
            *connection = Some((broker, publisher));
        }
        if let Some((_, publisher)) = connection.as_ref() {
            if publisher.publish_event("deal.won", id, body).await.is_ok() {
                return;
            }
            *connection = None;
        }
        assert!(Instant::now() < deadline, "the broker never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes `events` deal.won envelopes for `company` at 300 a second, each kept until the
/// broker confirms it (through outages and node failures); returns their ids in order.
pub async fn publish_at_300_per_second(
    config: &Config,
    company: &str,
    events: usize,
) -> Vec<String> {
    let mut connection = None;
    let mut ids = Vec::with_capacity(events);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 0..events {
        if n % 3 == 0 {
            tick.tick().await;
        }
        let (id, body) =
            tesoro_webhooks::cli::envelope("deal.won", company, json!({ "n": n }), None);
        publish_until_confirmed(config, &mut connection, &id, &body).await;
        ids.push(id);
    }
    ids
}
