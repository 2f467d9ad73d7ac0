//! The delivery log, manual retry, recover and replay.

use std::{collections::HashSet, time::Duration};

use serde_json::{Value, json};

use crate::harness::{Reply, TestReceiver, TestWorker};

/// A webhook whose endpoint fails every attempt, and one event that ends Failed.
async fn failed_delivery(worker: &TestWorker, company: &str) -> (TestReceiver, String, String) {
    let (receiver, webhook_id) = worker
        .webhook_answering(company, &["deal.won"], Reply::Status(500))
        .await;
    let (event_id, _) = worker
        .publish("deal.won", company, json!({"id": "d1"}))
        .await;
    worker
        .wait_for_status(&event_id, &webhook_id, "failed")
        .await;
    (receiver, webhook_id, event_id)
}

async fn only_delivery(worker: &TestWorker, webhook_id: &str) -> Value {
    let (status, list) = worker
        .api(
            "GET",
            &format!("/v1/deliveries?webhook_id={webhook_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let data = list["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{list}");
    data[0].clone()
}

#[tokio::test]
async fn a_failed_delivery_is_visible_and_a_manual_retry_delivers_it() {
    let worker = TestWorker::start().await;
    let (receiver, webhook_id, event_id) = failed_delivery(&worker, "cmp_m").await;

    let (status, attempts) = worker
        .api("GET", &format!("/v1/webhooks/{webhook_id}/attempts"), None)
        .await;
    assert_eq!(status, 200);
    let attempts = attempts["data"].as_array().expect("attempts").clone();
    assert_eq!(attempts.len(), 5);
    let numbers: Vec<i64> = attempts
        .iter()
        .map(|a| a["attempt_number"].as_i64().expect("n"))
        .collect();
    assert_eq!(numbers, [5, 4, 3, 2, 1], "newest first");
    let newest = &attempts[0];
    assert_eq!(newest["event_type"], "deal.won");
    assert_eq!(newest["event_id"], event_id.as_str());
    assert_eq!(newest["response_status"], 500);
    assert_eq!(newest["retries"], 4);
    assert_eq!(newest["delivery_status"], "failed");
    assert!(
        newest["request_body"]
            .as_str()
            .expect("body")
            .contains(&event_id)
    );
    assert_eq!(newest["response_body"], "receiver says hello");
    assert!(newest["attempted_at"].as_str().is_some());
    assert!(newest["duration_ms"].as_i64().is_some());

    let delivery = only_delivery(&worker, &webhook_id).await;
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["attempt_count"], 5);
    assert_eq!(delivery["last_status"], 500);
    let delivery_id = delivery["id"].as_str().expect("id").to_owned();
    let (status, failed) = worker
        .api(
            "GET",
            &format!("/v1/deliveries?webhook_id={webhook_id}&status=failed"),
            None,
        )
        .await;
    assert_eq!(
        (status, failed["data"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (_, succeeded) = worker
        .api(
            "GET",
            &format!("/v1/deliveries?webhook_id={webhook_id}&status=succeeded"),
            None,
        )
        .await;
    assert_eq!(succeeded["data"], json!([]));

    receiver.set_default(Reply::Status(200));
    let (status, body) = worker
        .api("POST", &format!("/v1/deliveries/{delivery_id}/retry"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["enqueued"], true);
    assert_eq!(
        worker
            .wait_for_status(&event_id, &webhook_id, "succeeded")
            .await,
        6
    );

    let requests = receiver.received();
    assert_eq!(requests.len(), 6);
    let last = &requests[5];
    assert_eq!(last.header("webhook-id"), event_id, "same event id");
    assert_eq!(last.body, requests[0].body, "same body bytes");
    let first_ts: u64 = requests[0].header("webhook-timestamp").parse().expect("ts");
    let last_ts: u64 = last.header("webhook-timestamp").parse().expect("ts");
    assert!(last_ts >= first_ts, "a fresh timestamp");
    let (status, detail) = worker
        .api("GET", &format!("/v1/deliveries/{delivery_id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(detail["status"], "succeeded");
    let attempts = detail["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 6);
    assert_eq!(attempts[5]["trigger"], "manual");
    assert_eq!(attempts[0]["trigger"], "automatic");

    // Retrying a succeeded delivery is allowed and logged as manual.
    let (status, _) = worker
        .api("POST", &format!("/v1/deliveries/{delivery_id}/retry"), None)
        .await;
    assert_eq!(status, 202);
    receiver.wait_for(7).await;
    crate::harness::wait_until("the seventh attempt to be logged", || async {
        (worker.attempts(&event_id).await.len() == 7).then_some(())
    })
    .await;
}

/// A retrying delivery's next attempt already has its job in a tier: a manual retry adds no
/// second job for the same attempt.
#[tokio::test]
async fn a_manual_retry_of_a_retrying_delivery_enqueues_nothing() {
    let mut config = crate::harness::test_config();
    config.delivery.retry_schedule =
        tesoro_webhooks::retry::RetrySchedule::new(vec![Duration::from_secs(60)])
            .expect("schedule");
    let worker = TestWorker::start_with(config).await;
    let (receiver, webhook_id) = worker
        .webhook_answering("cmp_retrying", &["deal.won"], Reply::Status(500))
        .await;
    let (event_id, _) = worker.publish("deal.won", "cmp_retrying", json!({})).await;
    worker
        .wait_for_status(&event_id, &webhook_id, "retrying")
        .await;
    let delivery = only_delivery(&worker, &webhook_id).await;
    let id = delivery["id"].as_str().expect("id");

    let (status, body) = worker
        .api("POST", &format!("/v1/deliveries/{id}/retry"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["enqueued"], false, "{body}");
    let topology = worker.broker.topology();
    let tier = &topology.tiers[0].queues;
    crate::harness::wait_until("the retry job in its tier", || async {
        let mut waiting = 0;
        for queue in tier {
            waiting += crate::harness::queue_count(&queue.queue, "messages").await;
        }
        (waiting == 1).then_some(())
    })
    .await;
    assert_eq!(
        crate::harness::queue_count(&topology.deliveries_queue, "messages").await,
        0,
        "no manual job beside it"
    );
    assert_eq!(receiver.received().len(), 1, "no attempt made out of turn");
}

#[tokio::test]
async fn a_manual_retry_that_fails_starts_the_tiers_again() {
    let worker = TestWorker::start().await;
    let (receiver, webhook_id, event_id) = failed_delivery(&worker, "cmp_again").await;
    let delivery_id = only_delivery(&worker, &webhook_id).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, _) = worker
        .api("POST", &format!("/v1/deliveries/{delivery_id}/retry"), None)
        .await;
    assert_eq!(status, 202);
    receiver.wait_for(10).await;
    assert_eq!(
        worker
            .wait_for_status(&event_id, &webhook_id, "failed")
            .await,
        10
    );
    let attempts = worker.attempts(&event_id).await;
    let triggers: Vec<String> = attempts.iter().map(|a| a.get("trigger")).collect();
    assert_eq!(triggers[5], "manual");
    assert!(triggers[6..].iter().all(|t| t == "automatic"));
    let requests = receiver.received();
    let headers: Vec<&str> = requests
        .iter()
        .map(|r| r.header("x-tesoro-attempt"))
        .collect();
    assert_eq!(headers, ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
    // The second series waits the tier gaps again.
    for pair in requests[5..].windows(2) {
        assert!(pair[1].at - pair[0].at >= crate::harness::SHORTEST_RETRY);
    }
}

#[tokio::test]
async fn recover_resends_only_the_failed_deliveries_in_the_window() {
    let worker = TestWorker::start().await;
    let (receiver, webhook_id) = worker
        .webhook_answering("cmp_rec", &["lead.*"], Reply::Status(500))
        .await;
    let webhook_id = webhook_id.as_str();
    let (old_event, _) = worker.publish("lead.created", "cmp_rec", json!({})).await;
    worker
        .wait_for_status(&old_event, webhook_id, "failed")
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let (new_event, _) = worker.publish("lead.updated", "cmp_rec", json!({})).await;
    worker
        .wait_for_status(&new_event, webhook_id, "failed")
        .await;

    receiver.set_default(Reply::Status(200));
    let (status, body) = worker
        .api(
            "POST",
            &format!("/v1/webhooks/{webhook_id}/recover"),
            Some(json!({"since": since})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["enqueued"], 1);
    worker
        .wait_for_status(&new_event, webhook_id, "succeeded")
        .await;
    assert_eq!(
        worker
            .delivery(&old_event, webhook_id)
            .await
            .expect("old")
            .0,
        "failed"
    );

    // Nothing Failed is left in the window: a second recover enqueues nothing.
    let (_, again) = worker
        .api(
            "POST",
            &format!("/v1/webhooks/{webhook_id}/recover"),
            Some(json!({"since": since})),
        )
        .await;
    assert_eq!(again["enqueued"], 0);
}

#[tokio::test]
async fn replay_dry_run_changes_nothing_and_a_second_run_enqueues_nothing_more() {
    let mut worker = TestWorker::start().await;
    let (_receiver, webhook_id, event_id) = failed_delivery(&worker, "cmp_replay").await;

    let dry = worker
        .cli(&["replay", "--failed", "--webhook", &webhook_id, "--dry-run"])
        .await;
    assert!(dry.success, "{dry:?}");
    assert!(
        dry.stdout
            .contains(&format!("webhook {webhook_id}: 1 failed")),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("nothing changed"));
    assert_eq!(
        worker
            .delivery(&event_id, &webhook_id)
            .await
            .expect("row")
            .0,
        "failed"
    );

    // With the worker stopped, the jobs stay queued: the second run must not add one.
    worker.stop().await;
    let first = worker
        .cli(&["replay", "--failed", "--company", "cmp_replay"])
        .await;
    assert!(first.success, "{first:?}");
    assert!(
        first.stdout.contains("re-enqueued 1 failed"),
        "{}",
        first.stdout
    );
    let second = worker
        .cli(&["replay", "--failed", "--company", "cmp_replay"])
        .await;
    assert!(
        second.stdout.contains("re-enqueued 0 failed"),
        "{}",
        second.stdout
    );
    let queue = worker.broker.topology().deliveries_queue.clone();
    assert_eq!(worker.broker.depth(&queue).await.expect("depth"), 1);
    assert_eq!(
        worker
            .delivery(&event_id, &webhook_id)
            .await
            .expect("row")
            .0,
        "pending"
    );
}

#[tokio::test]
async fn replay_rejects_bad_arguments_with_one_line() {
    let worker = TestWorker::start().await;
    for args in [
        vec!["replay", "--failed"],
        vec!["replay", "--failed", "--webhook", "nope"],
        vec![
            "replay",
            "--failed",
            "--company",
            "c",
            "--since",
            "yesterday",
        ],
        // RFC 3339, but in the year 10000 once in UTC.
        vec![
            "replay",
            "--failed",
            "--company",
            "c",
            "--since",
            "9999-12-31T23:59:59-01:00",
            "--dry-run",
        ],
        vec![
            "replay",
            "--failed",
            "--company",
            "c",
            "--since",
            "2026-02-01T00:00:00Z",
            "--until",
            "2026-01-01T00:00:00Z",
        ],
    ] {
        let output = worker.cli(&args).await;
        assert!(!output.success, "{args:?}");
        assert!(
            !output.stderr.contains("panicked"),
            "{args:?}: {}",
            output.stderr
        );
        assert!(!output.stderr.trim().is_empty());
    }
}

#[tokio::test]
async fn attempt_pages_return_every_attempt_exactly_once() {
    let worker = TestWorker::start().await;
    let (_receiver, webhook_id, _) = failed_delivery(&worker, "cmp_page").await;
    let mut seen = Vec::new();
    let mut path = format!("/v1/webhooks/{webhook_id}/attempts?limit=2");
    loop {
        let (status, page) = worker.api("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        for attempt in page["data"].as_array().expect("data") {
            seen.push(attempt["id"].as_i64().expect("id"));
        }
        match page["next_before"].as_i64() {
            Some(cursor) => {
                path = format!("/v1/webhooks/{webhook_id}/attempts?limit=2&before={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5);
}

#[tokio::test]
async fn recovery_endpoints_validate_and_scope_their_input() {
    let worker = TestWorker::start().await;
    let (_receiver, webhook_id, _) = failed_delivery(&worker, "cmp_scope").await;
    let delivery_id = only_delivery(&worker, &webhook_id).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let unknown = "01a21c87-7c61-70e5-9538-01191939832a";
    // (method, path, body, expected status, expected error field)
    type Case<'a> = (&'a str, String, Option<Value>, u16, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "POST",
            format!("/v1/deliveries/{unknown}/retry"),
            None,
            404,
            None,
        ),
        (
            "POST",
            "/v1/deliveries/not-an-id/retry".into(),
            None,
            404,
            None,
        ),
        (
            "POST",
            format!("/v1/deliveries/{delivery_id}/retry?company_id=cmp_other"),
            None,
            404,
            None,
        ),
        (
            "GET",
            format!("/v1/deliveries/{delivery_id}?company_id=cmp_other"),
            None,
            404,
            None,
        ),
        ("GET", format!("/v1/deliveries/{unknown}"), None, 404, None),
        (
            "POST",
            format!("/v1/webhooks/{webhook_id}/recover"),
            Some(json!({})),
            422,
            Some("since"),
        ),
        (
            "POST",
            format!("/v1/webhooks/{webhook_id}/recover"),
            Some(json!({"since": "last week"})),
            422,
            Some("since"),
        ),
        (
            "POST",
            format!("/v1/webhooks/{webhook_id}/recover"),
            Some(json!({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"})),
            422,
            Some("until"),
        ),
        (
            "POST",
            format!("/v1/webhooks/{unknown}/recover"),
            Some(json!({"since": "2026-01-01T00:00:00Z"})),
            404,
            None,
        ),
        (
            "GET",
            format!("/v1/webhooks/{webhook_id}/attempts?limit=0"),
            None,
            422,
            Some("limit"),
        ),
        (
            "GET",
            format!("/v1/webhooks/{webhook_id}/attempts?limit=501"),
            None,
            422,
            Some("limit"),
        ),
        (
            "GET",
            format!("/v1/webhooks/{webhook_id}/attempts?before=x"),
            None,
            422,
            Some("before"),
        ),
        (
            "GET",
            format!("/v1/webhooks/{unknown}/attempts"),
            None,
            404,
            None,
        ),
        (
            "GET",
            format!("/v1/deliveries?webhook_id={webhook_id}&status=lost"),
            None,
            422,
            Some("status"),
        ),
        (
            "GET",
            "/v1/deliveries?company_id=cmp_scope&since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z".to_string(),
            None,
            422,
            Some("until"),
        ),
        ("GET", "/v1/deliveries".into(), None, 400, None),
    ];
    for (method, path, body, status, field) in cases {
        let (got, error) = worker.api(method, &path, body).await;
        assert_eq!(got, status, "{method} {path}: {error}");
        assert!(
            error["error"]["code"].is_string(),
            "{method} {path}: {error}"
        );
        if let Some(field) = field {
            assert_eq!(error["error"]["field"], field, "{method} {path}");
        }
    }
    // Scoped to the right company, the delivery is found.
    let (status, _) = worker
        .api(
            "GET",
            &format!("/v1/deliveries/{delivery_id}?company_id=cmp_scope"),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

/// Listings show previews of the bodies, with their sizes, so a page of large events stays
/// small; one attempt, asked for by its number, shows them whole.
#[tokio::test]
async fn attempt_listings_show_previews_and_one_attempt_shows_its_bodies_whole() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_big", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    let mut bodies = Vec::new();
    for n in 0..3 {
        let (event_id, body) = worker
            .publish(
                "deal.won",
                "cmp_big",
                json!({"n": n, "blob": "x".repeat(200_000)}),
            )
            .await;
        worker
            .wait_for_status(&event_id, webhook_id, "succeeded")
            .await;
        bodies.push(body);
    }

    let response = worker
        .http
        .get(worker.url(&format!("/v1/webhooks/{webhook_id}/attempts?limit=500")))
        .bearer_auth(crate::harness::TOKEN)
        .send()
        .await
        .expect("list");
    let text = response.text().await.expect("body");
    assert!(
        text.len() < 30_000,
        "a page of 3 attempts of 200 KB events is {} bytes",
        text.len()
    );
    let page: Value = serde_json::from_str(&text).expect("json");
    let attempts = page["data"].as_array().expect("data");
    assert_eq!(attempts.len(), 3);
    for attempt in attempts {
        let preview = attempt["request_body"].as_str().expect("preview");
        assert_eq!(preview.len(), 4096, "a preview of the first 4 KiB");
        assert!(bodies.iter().any(|b| b.starts_with(preview.as_bytes())));
        assert!(attempt["request_body_size"].as_i64().expect("size") > 200_000);
        assert_eq!(attempt["body_preview"], true);
    }
    let delivery = attempts[0]["delivery_id"].as_str().expect("delivery id");
    let (status, whole) = worker
        .api(
            "GET",
            &format!("/v1/deliveries/{delivery}/attempts/1"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{whole}");
    let request_body = whole["request_body"].as_str().expect("body");
    assert!(
        bodies
            .iter()
            .any(|b| b.as_slice() == request_body.as_bytes()),
        "whole"
    );
    assert_eq!(whole["body_preview"], false);
    assert_eq!(whole["response_body"], "receiver says hello");

    let (status, body) = worker
        .api(
            "GET",
            &format!("/v1/deliveries/{delivery}/attempts/2"),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = worker
        .api(
            "GET",
            &format!("/v1/deliveries/{delivery}/attempts/1?company_id=cmp_other"),
            None,
        )
        .await;
    assert_eq!(status, 404, "another company's attempt: {body}");
}
