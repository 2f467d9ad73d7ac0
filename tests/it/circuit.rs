//! Endpoint circuit breakers: an endpoint that keeps failing has its work parked, untried,
//! with one probe per interval, and gets what waited once a probe is delivered.

use std::time::Duration;

use serde_json::{Value, json};
use tesoro_webhooks::{circuit::Policy, config::Config, retry::RetrySchedule};

use crate::harness::{Reply, TestReceiver, TestWorker, metric, test_config, wait_until};

const SECOND: Duration = Duration::from_secs(1);

/// Opens after 3 failed attempts in a row (the ratio out of reach), probes after 1 s, then
/// every 2 s; retries after 1 s, then 30 s.
fn quick_to_open(schedule: Vec<Duration>) -> Config {
    let mut config = test_config();
    config.delivery.retry_schedule = RetrySchedule::new(schedule).expect("valid schedule");
    config.circuit_breaker = Policy {
        enabled: true,
        failures: 3,
        failure_ratio: 1.0,
        min_attempts: 1000,
        window: 60 * SECOND,
        probe_interval: SECOND,
        max_probe_interval: 2 * SECOND,
    };
    config
}

async fn circuit(worker: &TestWorker, webhook: &str) -> Value {
    let (status, body) = worker
        .api("GET", &format!("/v1/webhooks/{webhook}/health"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["circuit"].clone()
}

/// Publishes `n` deal.won events for `company`; returns their ids.
async fn publish(worker: &TestWorker, company: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(worker.publish("deal.won", company, json!({})).await.0);
    }
    ids
}

/// How many deliveries of `events` are parked, and how many of those are untried.
async fn parked(worker: &TestWorker, events: &[String]) -> (i64, i64) {
    let row = worker
        .db
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE attempt_count = 0) FROM deliveries
             WHERE event_id = ANY($1) AND parked_until IS NOT NULL",
            &[&events],
        )
        .await
        .expect("query");
    (row.get(0), row.get(1))
}

/// Waits for `worker` to open `webhook`'s circuit: three events fail once each.
async fn open_circuit(
    worker: &TestWorker,
    receiver: &TestReceiver,
    company: &str,
    webhook: &str,
) -> Vec<String> {
    let failed = publish(worker, company, 3).await;
    receiver.wait_for(3).await;
    let opened = worker.next_operational().await;
    assert_eq!(opened["_type"], "webhook.circuit_opened", "{opened}");
    assert_eq!(opened["data"]["webhook_id"], webhook, "{opened}");
    assert_eq!(circuit(worker, webhook).await["state"], "open");
    failed
}

#[tokio::test]
async fn an_open_circuit_parks_probes_and_on_success_delivers_what_waited() {
    let worker = TestWorker::start_with(quick_to_open(vec![SECOND, 30 * SECOND])).await;
    worker.tap_operational().await;
    let (receiver, webhook) = worker
        .webhook_answering("cmp_circuit", &["deal.won"], Reply::Status(500))
        .await;
    let mut events = open_circuit(&worker, &receiver, "cmp_circuit", &webhook).await;
    let opened_at = circuit(&worker, &webhook).await["opened_at"].clone();
    assert!(opened_at.is_string(), "{opened_at}");

    // New events wait untried (but one, should it come as a probe is due: its retry waits
    // parked too); so do the retries, but for one probe per interval.
    let waiting = publish(&worker, "cmp_circuit", 5).await;
    wait_until("the new deliveries parked", || async {
        let (parked, untried) = parked(&worker, &waiting).await;
        (parked == 5 && untried >= 4).then_some(())
    })
    .await;
    tokio::time::sleep(4 * SECOND).await;
    let probes = receiver.received().len() - 3;
    // After 1 s, then 2 s later (the interval doubled, capped): two, three at the edges.
    assert!((1..=3).contains(&probes), "{probes} probes in 4 s");
    // The test process's workers share one metrics registry: at least this one is open.
    let open = metric(&worker.metrics().await, "tesoro_webhooks_circuits_open");
    assert!(open.is_some_and(|open| open >= 1.0), "{open:?}");

    receiver.set_default(Reply::Status(200));
    events.extend(waiting);
    for event in &events {
        worker.wait_for_status(event, &webhook, "succeeded").await;
    }
    let closed = worker.next_operational().await;
    assert_eq!(closed["_type"], "webhook.circuit_closed", "{closed}");
    assert_eq!(closed["data"]["opened_at"], opened_at, "{closed}");
    assert_eq!(
        circuit(&worker, &webhook).await,
        json!({"state": "closed", "opened_at": null})
    );
    // Every delivery has each of its attempts logged once, its last one delivered: what was
    // parked kept its attempts, and only the failed probes were spent.
    let failed_probes = probes as i64;
    let row = worker
        .db
        .query_one(
            "SELECT count(*) FILTER (WHERE a.response_status = 500),
                 count(*) FILTER (WHERE a.response_status = 200),
                 bool_and(d.attempt_count = (SELECT count(*) FROM attempts x
                     WHERE x.delivery_id = d.id))
             FROM deliveries d JOIN attempts a ON a.delivery_id = d.id
             WHERE d.event_id = ANY($1)",
            &[&events],
        )
        .await
        .expect("query");
    assert_eq!(row.get::<_, i64>(1), 8, "one success each");
    let failed: i64 = row.get(0);
    assert!(
        (3..=3 + failed_probes + 1).contains(&failed),
        "{failed} failed attempts: 3 before it opened, then only probes"
    );
    assert!(row.get::<_, bool>(2), "attempt counts match the log");
    let metrics = worker.metrics().await;
    for to in ["open", "closed"] {
        let series = format!("tesoro_webhooks_circuit_transitions_total{{to=\"{to}\"}}");
        let times = metric(&metrics, &series);
        assert!(
            times.is_some_and(|times| times >= 1.0),
            "{series} {times:?}"
        );
    }
}

#[tokio::test]
async fn what_waits_past_its_schedule_behind_an_open_circuit_ends_failed_untried() {
    // Probes far apart: none comes within the schedule's 4 s.
    let mut config = quick_to_open(vec![SECOND; 4]);
    config.circuit_breaker.probe_interval = 60 * SECOND;
    config.circuit_breaker.max_probe_interval = 60 * SECOND;
    let worker = TestWorker::start_with(config).await;
    worker.tap_operational().await;
    let (receiver, webhook) = worker
        .webhook_answering("cmp_expiring", &["deal.won"], Reply::Status(500))
        .await;
    let tried = open_circuit(&worker, &receiver, "cmp_expiring", &webhook).await;
    let untried = publish(&worker, "cmp_expiring", 2).await;

    for (events, attempts) in [(&tried, 1), (&untried, 0)] {
        for event in events {
            let count = worker.wait_for_status(event, &webhook, "failed").await;
            assert_eq!(count, attempts, "{event}");
        }
    }
    assert_eq!(receiver.received().len(), 3, "nothing sent after it opened");
    // Counted in the webhook's failing streak like any Failed delivery (after their status
    // is written).
    wait_until("all five in the failing streak", || async {
        let (_, health) = worker
            .api("GET", &format!("/v1/webhooks/{webhook}/health"), None)
            .await;
        (health["failing_streak"] == 5).then_some(())
    })
    .await;
    let failing = worker.next_operational().await;
    assert_eq!(failing["_type"], "webhook.failing", "{failing}");
    let (status, body) = worker
        .api("GET", &format!("/v1/deliveries?webhook_id={webhook}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let expired: Vec<_> = body["data"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter(|delivery| delivery["attempt_count"] == 0)
        .collect();
    assert_eq!(expired.len(), 2, "{body}");
    for delivery in &expired {
        let error = delivery["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("circuit stayed open"), "{delivery}");
    }

    // A manual retry goes through the open circuit, as a probe; delivered, it closes it.
    receiver.set_default(Reply::Status(200));
    let retried = &expired[0];
    let (status, body) = worker
        .api(
            "POST",
            &format!(
                "/v1/deliveries/{}/retry",
                retried["id"].as_str().expect("id")
            ),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let event = retried["event_id"].as_str().expect("event id");
    assert_eq!(
        worker.wait_for_status(event, &webhook, "succeeded").await,
        1
    );
    let told: Vec<_> = [
        worker.next_operational().await,
        worker.next_operational().await,
    ]
    .iter()
    .map(|event| event["_type"].as_str().unwrap_or_default().to_owned())
    .collect();
    assert_eq!(told, ["webhook.recovered", "webhook.circuit_closed"]);
}
