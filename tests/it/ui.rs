//! The dashboard end to end in headless Chromium (`tests/ui/dashboard.mjs`, driven by
//! playwright-core): a real worker, broker and database, a receiver that fails until told
//! otherwise, and a control server the browser script calls to publish an event and to make
//! the receiver answer 200. Screenshots of each page go to `target/ui-screenshots/`.
//! Needs Debian's `chromium` and `npm ci` in `tests/ui` (`.ci/run` installs both).

use std::{path::PathBuf, sync::Arc};

use axum::{Router, extract::State, routing::post};
use serde_json::json;
use tokio::net::TcpListener;

use crate::harness::{Reply, TOKEN, TestReceiver, TestWorker, test_config};

struct Control {
    worker: TestWorker,
    receiver: TestReceiver,
}

async fn publish(State(control): State<Arc<Control>>) -> String {
    let (id, _) = control
        .worker
        .publish(
            "deal.won",
            "cmp_ui",
            json!({"id": "deal_7", "status": "won"}),
        )
        .await;
    id
}

async fn receiver_ok(State(control): State<Arc<Control>>) {
    control.receiver.set_default(Reply::Status(200));
}

async fn token(worker: &TestWorker, company: &str) -> String {
    let (status, body) = worker
        .api(
            "POST",
            &format!("/v1/companies/{company}/tokens"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn the_dashboard_end_to_end_in_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tests = root.join("tests/ui");
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists()
            && tests.join("node_modules/playwright-core").exists(),
        "needs /usr/bin/chromium and `npm ci` in tests/ui (.ci/run installs both)"
    );
    let mut config = test_config();
    // The failing delivery's five attempts open the endpoint's circuit, which the page shows.
    config.circuit_breaker.failures = 5;
    let worker = TestWorker::start_with(config).await;
    let receiver = TestReceiver::start().await;
    receiver.set_default(Reply::Status(500));
    let company_token = token(&worker, "cmp_ui").await;
    let other_token = token(&worker, "cmp_ui_other").await;
    let base_url = worker.base_url.clone();
    let receiver_url = receiver.url();
    let control = Arc::new(Control { worker, receiver });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let control_url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/publish", post(publish))
        .route("/receiver/ok", post(receiver_ok))
        .with_state(control.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let output = tokio::process::Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(&tests)
        .env("BASE_URL", &base_url)
        .env("CONTROL_URL", &control_url)
        .env("RECEIVER_URL", &receiver_url)
        .env("COMPANY", "cmp_ui")
        .env("COMPANY_TOKEN", &company_token)
        .env("OTHER_COMPANY_TOKEN", &other_token)
        .env("ADMIN_TOKEN", TOKEN)
        .env("SCREENSHOTS", root.join("target/ui-screenshots"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("run node");
    server.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("every step passed"), "{stdout}");
    // The browser saw it; the database agrees.
    let deliveries = control
        .worker
        .db
        .query(
            "SELECT status FROM deliveries WHERE company_id = 'cmp_ui'",
            &[],
        )
        .await
        .expect("query");
    let statuses: Vec<String> = deliveries.iter().map(|row| row.get(0)).collect();
    assert_eq!(statuses, ["succeeded"]);
    let (status, listed) = control
        .worker
        .api("GET", "/v1/webhooks?company_id=cmp_ui", None)
        .await;
    assert_eq!(status, 200, "{listed}");
    let webhook = &listed["data"][0];
    assert_eq!(webhook["rate_limit"], 20, "{webhook}");
    assert_eq!(webhook["headers"], json!({"x-tenant": "acme"}), "{webhook}");
}

#[tokio::test]
async fn the_listeners_root_leads_to_the_dashboard() {
    let worker = TestWorker::start().await;
    let response = worker
        .http
        .get(worker.url("/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(response.status(), 200);
    assert_eq!(response.url().path(), "/ui/", "redirected to the dashboard");
    let page = response.text().await.expect("page");
    assert!(page.contains("<html"), "{page}");
}
