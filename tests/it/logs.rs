//! `log.format = "json"`: one JSON object per line, and every line about a delivery names its
//! event, webhook, delivery and attempt.

use serde_json::{Value, json};

use crate::harness::{TestWorker, test_config};

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_name_the_delivery() {
    let mut worker = TestWorker::start_process_with_env(
        test_config(),
        &[
            ("TESORO_WEBHOOKS__LOG__FORMAT", "json"),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let ends = worker.healthy_and_failing("cmp_log", 503).await;
    let (event_id, _) = worker.publish("deal.won", "cmp_log", json!({})).await;
    worker
        .wait_for_status(&event_id, &ends.ok, "succeeded")
        .await;
    worker.wait_for_status(&event_id, &ends.bad, "failed").await;
    let (status, log) = worker.terminate_process().await;
    assert!(status.success());

    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    let about = |message: &str| -> Vec<&Value> {
        lines.iter().filter(|l| l["message"] == message).collect()
    };
    let attempts = about("attempt made");
    assert_eq!(attempts.len(), 6, "one success and five failures:\n{log}");
    for line in attempts
        .iter()
        .chain(&about("delivery failed after its last retry"))
    {
        for field in ["event_id", "webhook_id", "delivery_id", "attempt"] {
            assert!(!line[field].is_null(), "{field} missing from {line}");
        }
        assert_eq!(line["event_id"], event_id.as_str());
    }
}
