//! Schemathesis against a running worker: every check, on every operation of `/openapi.json`,
//! with the settings of `tests/contract/schemathesis.toml`. A 5xx, a response outside the
//! document, or a request the document forbids yet the API accepts fails the test.
//! Needs schemathesis in `target/schemathesis-venv` (`.ci/run` creates it), or its path in
//! `SCHEMATHESIS`.

use std::{path::PathBuf, sync::Arc};

use serde_json::json;

use crate::harness::{
    Reply, ScriptedResolver, TOKEN, TestReceiver, TestWorker, test_config, wait_until,
};

/// The company whose deliveries schemathesis lists (the config names it), so the operations
/// on one delivery have a real one to reach.
const COMPANY: &str = "cmp_contract";

fn schemathesis() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/schemathesis-venv/bin/schemathesis"));
    assert!(
        path.exists(),
        "needs schemathesis at {} (.ci/run creates the venv)",
        path.display()
    );
    path
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let schemathesis = schemathesis();
    // Webhooks schemathesis creates name made-up hosts: they resolve to a public address,
    // so creation succeeds and the operations linked from it are reached. No event names
    // their company, so nothing is sent there.
    let resolver = ScriptedResolver::default().otherwise(&["93.184.215.14"]);
    let worker = TestWorker::start_resolving(test_config(), Arc::new(resolver)).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    let webhook = worker
        .create_webhook(COMPANY, &receiver.url(), &["deal.won"])
        .await;
    let (event_id, _) = worker
        .publish("deal.won", COMPANY, json!({"id": "deal_1"}))
        .await;
    let webhook_id = webhook["id"].as_str().expect("id");
    wait_until("a delivery to list", || async {
        worker.delivery(&event_id, webhook_id).await
    })
    .await;

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(schemathesis)
        .arg("--config-file")
        .arg(root.join("tests/contract/schemathesis.toml"))
        .args(["run", &worker.url("/openapi.json"), "--checks", "all"])
        .args(["--max-examples", "30", "--no-color"])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .current_dir(root.join("target"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed"), "{stdout}");
    assert!(!stdout.contains("Server error"), "{stdout}");
}
