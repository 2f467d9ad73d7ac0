//! Company-scoped tokens: issued, listed and revoked by the admin; a company token acts only
//! inside its company, and another company's ids are not found.

use reqwest::Method;
use serde_json::{Value, json};
use tesoro_webhooks::api::v1_route_table;

use crate::harness::{TestReceiver, TestWorker, wait_until};

/// An API call with `token`; returns status and body (Null when empty).
async fn call(
    worker: &TestWorker,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    worker.api_as(token, method, path, body).await
}

async fn issue(worker: &TestWorker, company: &str, body: Value) -> Value {
    let (status, token) = worker
        .api(
            "POST",
            &format!("/v1/companies/{company}/tokens"),
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{token}");
    token
}

/// Company A's ids that company B's token probes.
struct Theirs {
    webhook: String,
    delivery: String,
    token: String,
}

impl Theirs {
    fn path(&self, template: &str) -> String {
        let id = if template.starts_with("/deliveries/") {
            &self.delivery
        } else {
            &self.webhook
        };
        format!(
            "/v1{}",
            template
                .replace("{id}", id)
                .replace("{number}", "1")
                .replace("{company_id}", "cmp_a")
                .replace("{token_id}", &self.token)
        )
    }
}

/// What company B's token gets on each route when it names company A's things.
fn expected_for_another_company(method: &Method, path: &str) -> (u16, Option<Value>) {
    let post = |body: Value| Some(body);
    match (method.as_str(), path) {
        ("GET", "/event-types") | ("GET", "/session") => (200, None),
        // Naming another company outright is forbidden; its ids are simply not found.
        ("GET", "/webhooks") => (403, None),
        ("POST", "/webhooks") => (
            403,
            post(
                json!({"company_id": "cmp_a", "name": "x", "url": "http://127.0.0.1:9/",
                        "events": ["deal.won"]}),
            ),
        ),
        ("GET", "/webhooks/{id}") | ("DELETE", "/webhooks/{id}") => (404, None),
        ("PATCH", "/webhooks/{id}") => (404, post(json!({"name": "taken over"}))),
        ("GET", "/webhooks/{id}/attempts")
        | ("GET", "/webhooks/{id}/public-key")
        | ("GET", "/webhooks/{id}/health") => (404, None),
        ("POST", "/webhooks/{id}/recover") => (404, post(json!({"since": "2020-01-01T00:00:00Z"}))),
        ("POST", "/webhooks/{id}/secret/rotate") => (404, None),
        ("GET", "/deliveries") => (403, None),
        ("GET", "/deliveries/{id}")
        | ("POST", "/deliveries/{id}/retry")
        | ("GET", "/deliveries/{id}/attempts/{number}") => (404, None),
        // Tokens are the admin's alone.
        ("POST", "/companies/{company_id}/tokens")
        | ("GET", "/companies/{company_id}/tokens")
        | ("DELETE", "/companies/{company_id}/tokens/{token_id}") => (403, None),
        (method, path) => {
            panic!("{method} {path} is not covered: add what another company's token gets there")
        }
    }
}

#[tokio::test]
async fn a_company_token_acts_only_inside_its_company_on_every_route() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let webhook = worker
        .create_webhook("cmp_a", &receiver.url(), &["deal.won"])
        .await;
    let webhook_id = webhook["id"].as_str().expect("id").to_owned();
    let (event_id, _) = worker.publish("deal.won", "cmp_a", json!({})).await;
    worker
        .wait_for_status(&event_id, &webhook_id, "succeeded")
        .await;
    let (_, deliveries) = worker
        .api(
            "GET",
            &format!("/v1/deliveries?webhook_id={webhook_id}"),
            None,
        )
        .await;
    let delivery_id = deliveries["data"][0]["id"]
        .as_str()
        .expect("delivery")
        .to_owned();
    let theirs_token = issue(&worker, "cmp_a", json!({"name": "dashboard"})).await;
    let theirs = Theirs {
        webhook: webhook_id.clone(),
        delivery: delivery_id.clone(),
        token: theirs_token["id"].as_str().expect("token id").to_owned(),
    };
    let mine = issue(&worker, "cmp_b", json!({})).await;
    let mine = mine["token"].as_str().expect("token").to_owned();

    for (method, template) in v1_route_table() {
        let template = template.as_str();
        let (expected, body) = expected_for_another_company(&method, template);
        let mut path = theirs.path(template);
        if template == "/webhooks" && method == Method::GET || template == "/deliveries" {
            path.push_str("?company_id=cmp_a");
        }
        let (status, response) = call(&worker, &mine, method.clone(), &path, body).await;
        assert_eq!(status, expected, "{method} {path}: {response}");
        let text = response.to_string();
        for theirs in [&webhook_id, &delivery_id, &event_id, "cmp_a"] {
            assert!(
                !text.contains(theirs),
                "{method} {path} shows {theirs}: {text}"
            );
        }
    }

    // Nothing the walk sent changed company A's things.
    let (_, webhook) = worker
        .api("GET", &format!("/v1/webhooks/{webhook_id}"), None)
        .await;
    assert_eq!(webhook["name"], "test", "not renamed");
    assert_eq!(
        webhook["secret_rotation_ends_at"],
        Value::Null,
        "no key rotated"
    );
    let (_, delivery) = worker
        .api("GET", &format!("/v1/deliveries/{delivery_id}"), None)
        .await;
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["attempt_count"], 1, "not retried");
    let (_, tokens) = worker.api("GET", "/v1/companies/cmp_a/tokens", None).await;
    assert_eq!(
        tokens["data"].as_array().map(Vec::len),
        Some(1),
        "not revoked"
    );

    // Unscoped listings show its own company only; a filter on another's webhook finds nothing.
    let (status, listed) = call(&worker, &mine, Method::GET, "/v1/webhooks", None).await;
    assert_eq!(
        (status, listed["data"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let path = format!("/v1/deliveries?webhook_id={webhook_id}");
    let (status, listed) = call(&worker, &mine, Method::GET, &path, None).await;
    assert_eq!(
        (status, listed["data"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    // It creates webhooks for its own company without naming it.
    let (status, created) = call(
        &worker,
        &mine,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "mine", "url": receiver.url(), "events": ["deal.*"]})),
    )
    .await;
    assert_eq!(
        (status, &created["company_id"]),
        (201, &json!("cmp_b")),
        "{created}"
    );

    // Company A's own token sees what B's could not.
    let theirs_secret = theirs_token["token"].as_str().expect("token");
    let (status, seen) = call(
        &worker,
        theirs_secret,
        Method::GET,
        &format!("/v1/webhooks/{webhook_id}"),
        None,
    )
    .await;
    assert_eq!((status, &seen["id"]), (200, &json!(webhook_id)));
    let path = format!("/v1/deliveries/{delivery_id}/attempts/1");
    assert_eq!(
        call(&worker, theirs_secret, Method::GET, &path, None)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn tokens_are_shown_once_expire_and_are_revoked() {
    let worker = TestWorker::start().await;
    let issued = issue(&worker, "cmp_t", json!({"name": "zapier"})).await;
    let token = issued["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("twk_"), "{issued}");
    assert_eq!(issued["company_id"], "cmp_t");
    let (status, listed) = worker.api("GET", "/v1/companies/cmp_t/tokens", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["name"], "zapier");
    assert!(
        !listed.to_string().contains(&token[4..]),
        "listed without the token: {listed}"
    );
    let stored = worker
        .db
        .query_one("SELECT t::text FROM api_tokens t", &[])
        .await
        .expect("row");
    assert!(
        !stored.get::<_, &str>(0).contains(&token[4..]),
        "stored as a hash only"
    );

    let (status, _) = call(&worker, &token, Method::GET, "/v1/webhooks", None).await;
    assert_eq!(status, 200);
    let id = issued["id"].as_str().expect("id");
    let (status, _) = worker
        .api("DELETE", &format!("/v1/companies/cmp_t/tokens/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = call(&worker, &token, Method::GET, "/v1/webhooks", None).await;
    assert_eq!(status, 401, "a revoked token no longer works");
    let (status, _) = worker
        .api("DELETE", &format!("/v1/companies/cmp_t/tokens/{id}"), None)
        .await;
    assert_eq!(status, 404);

    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let expiring = issue(&worker, "cmp_t", json!({"expires_at": soon})).await;
    let expiring = expiring["token"].as_str().expect("token").to_owned();
    assert_eq!(
        call(&worker, &expiring, Method::GET, "/v1/webhooks", None)
            .await
            .0,
        200
    );
    wait_until("the token to expire", || async {
        let (status, _) = call(&worker, &expiring, Method::GET, "/v1/webhooks", None).await;
        (status == 401).then_some(())
    })
    .await;

    for (body, field) in [
        (json!({"expires_at": "2000-01-01T00:00:00Z"}), "expires_at"),
        (json!({"expires_at": "tomorrow"}), "expires_at"),
        (json!({"name": ""}), "name"),
        (json!({"scope": "all"}), "scope"),
    ] {
        let (status, error) = worker
            .api("POST", "/v1/companies/cmp_t/tokens", Some(body.clone()))
            .await;
        assert_eq!(
            (status, &error["error"]["field"]),
            (422, &json!(field)),
            "{body}"
        );
    }
    let (status, _) = call(&worker, "twk_made_up", Method::GET, "/v1/webhooks", None).await;
    assert_eq!(status, 401);
}
