//! A graceful stop: on SIGTERM the worker binary finishes its work and exits 0, logging nothing
//! at error level, so a routine deploy never looks like an incident. Its log, written to a
//! file, is plain text.

use serde_json::json;

use crate::harness::{TestReceiver, TestWorker, test_config};

#[tokio::test]
async fn sigterm_ends_the_worker_with_success_and_no_error_logged() {
    let mut worker = TestWorker::start_process(test_config()).await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_stop", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    // One delivery first, so the consumers, the ack coalescer and the publisher are all in use.
    let (event_id, _) = worker.publish("deal.won", "cmp_stop", json!({})).await;
    worker
        .wait_for_status(&event_id, webhook_id, "succeeded")
        .await;

    let (status, log) = worker.terminate_process().await;
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(log.contains("worker stopped"), "log:\n{log}");
    assert!(
        !log.contains("ERROR"),
        "a graceful stop logged an error:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "terminal colour codes in a log file:\n{log}"
    );
}

#[tokio::test]
async fn a_start_warns_of_private_targets_and_logs_no_notices() {
    // The tests' workers allow private targets (their receivers are on 127.0.0.1); the
    // database exists and is migrated already, so the start's idempotent DDL answers NOTICEs.
    let mut worker = TestWorker::start_process(test_config()).await;
    let log = worker.process().log();
    assert!(
        log.contains("delivery.allow_private_targets is on"),
        "{log}"
    );
    assert!(!log.contains("NOTICE"), "{log}");
}
