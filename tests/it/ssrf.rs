//! The SSRF guard: names resolved and checked when a webhook is saved, addresses checked again
//! at every connection (DNS rebinding), every internal range refused, and
//! `delivery.allowed_targets` opening one range without turning the guard off.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::harness::{ScriptedResolver, TestReceiver, TestWorker, test_config, wait_until};

fn guarded() -> tesoro_webhooks::config::Config {
    let mut config = test_config();
    config.delivery.allow_private_targets = false;
    config
}

async fn create(worker: &TestWorker, url: &str) -> (u16, Value) {
    worker
        .api(
            "POST",
            "/v1/webhooks",
            Some(json!({"company_id": "cmp_ssrf", "name": "x", "url": url,
                        "events": ["deal.won"]})),
        )
        .await
}

#[tokio::test]
async fn urls_that_reach_only_internal_addresses_are_refused_when_saved() {
    let resolver = ScriptedResolver::default()
        .answer("internal.test", &[&["10.1.2.3", "fd00::7"]])
        .answer("mixed.test", &[&["10.1.2.3", "93.184.216.34"]]);
    let worker = TestWorker::start_resolving(guarded(), Arc::new(resolver)).await;
    let refused = [
        ("http://internal.test/hook", "10.1.2.3, a private address"),
        (
            "http://internal.test/hook",
            "fd00::7, a unique local address",
        ),
        ("http://[::ffff:10.0.0.1]/", "IPv4-mapped internal"),
        ("http://[::10.0.0.1]/", "IPv4-compatible internal"),
        ("http://[2002:c0a8:101::1]/", "6to4 internal"),
        ("http://[2001:0:5db8:d822::f5ff:fffe]/", "Teredo internal"),
        ("http://[fec0::1]/", "site-local"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
    ];
    for (url, class) in refused {
        let (status, error) = create(&worker, url).await;
        assert_eq!(status, 422, "{url}: {error}");
        assert_eq!(error["error"]["field"], "url");
        let message = error["error"]["message"].as_str().expect("message");
        assert!(message.contains(class), "{url}: {message}");
    }
    for url in [
        // Some address is public: the connection goes only there.
        "http://mixed.test/hook",
        "http://[2002:5db8:d822::1]/",
        // Does not resolve (yet): saved, and every attempt checks it again.
        "http://unknown.test/hook",
    ] {
        let (status, body) = create(&worker, url).await;
        assert_eq!(status, 201, "{url}: {body}");
    }
}

#[tokio::test]
async fn a_name_that_turns_internal_after_it_was_saved_is_refused_at_connect_time() {
    let receiver = TestReceiver::start().await;
    let port = receiver.url().rsplit(':').next().expect("port").to_owned();
    // Public when saved; the receiver's address (loopback) when the worker connects.
    let resolver =
        ScriptedResolver::default().answer("rebind.test", &[&["93.184.216.34"], &["127.0.0.1"]]);
    let worker = TestWorker::start_resolving(guarded(), Arc::new(resolver)).await;
    let (status, webhook) = create(&worker, &format!("http://rebind.test:{port}")).await;
    assert_eq!(status, 201, "{webhook}");
    let (event_id, _) = worker.publish("deal.won", "cmp_ssrf", json!({})).await;
    let attempt = wait_until("the first attempt to be logged", || async {
        worker.attempts(&event_id).await.into_iter().next()
    })
    .await;
    assert_eq!(
        attempt.get::<_, Option<String>>("error_kind").as_deref(),
        Some("blocked_target")
    );
    let message: String = attempt.get("error_message");
    assert!(
        message.contains("127.0.0.1, a loopback address"),
        "{message}"
    );
    assert!(
        receiver.received().is_empty(),
        "nothing reached the internal address"
    );
}

#[tokio::test]
async fn allowed_targets_open_one_range_and_no_other() {
    let mut config = guarded();
    config.delivery.allowed_targets = vec!["127.0.0.1/32".parse().expect("cidr")];
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    let (status, webhook) = create(&worker, &receiver.url()).await;
    assert_eq!(status, 201, "{webhook}");
    let (event_id, _) = worker.publish("deal.won", "cmp_ssrf", json!({})).await;
    let webhook_id = webhook["id"].as_str().expect("id");
    worker
        .wait_for_status(&event_id, webhook_id, "succeeded")
        .await;
    assert_eq!(receiver.received().len(), 1);
    let (status, error) = create(&worker, "http://127.0.0.2:9/").await;
    assert_eq!(status, 422, "outside the opened range: {error}");
    let (status, _) = create(&worker, "http://10.0.0.1/").await;
    assert_eq!(status, 422);
}
