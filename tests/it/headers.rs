//! A webhook's own headers: checked when set, sent with every attempt, hidden in the API and
//! the attempt log when they carry a credential, replaced or removed by PATCH.

use serde_json::{Value, json};

use crate::harness::{TestReceiver, TestWorker, wait_until};

#[tokio::test]
async fn custom_headers_are_sent_logged_and_replaced() {
    let worker = TestWorker::start().await;
    let receiver = TestReceiver::start().await;
    let (status, webhook) = worker
        .api(
            "POST",
            "/v1/webhooks",
            Some(json!({"company_id": "cmp_headers", "name": "with headers",
                "url": receiver.url(), "events": ["deal.won"],
                "headers": {"X-Tenant": "t-1", "Authorization": "Bearer abc"}})),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    assert_eq!(
        webhook["headers"],
        json!({"x-tenant": "t-1", "authorization": "***"}),
        "a credential is sent, never shown"
    );
    let id = webhook["id"].as_str().expect("id");
    let (_, shown) = worker.api("GET", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(shown["headers"], webhook["headers"]);

    worker.publish("deal.won", "cmp_headers", json!({})).await;
    let request = receiver.wait_for(1).await.remove(0);
    assert_eq!(request.header("x-tenant"), "t-1");
    assert_eq!(request.header("authorization"), "Bearer abc");

    let logged = wait_until("the attempt logged", || async {
        let (_, attempts) = worker
            .api("GET", &format!("/v1/webhooks/{id}/attempts"), None)
            .await;
        let logged = attempts["data"][0]["request_headers"].clone();
        (!logged.is_null()).then_some(logged)
    })
    .await;
    let pairs = logged.as_array().expect("pairs");
    assert!(pairs.contains(&json!(["x-tenant", "t-1"])), "{logged}");
    assert!(pairs.contains(&json!(["authorization", "***"])), "{logged}");

    // What GET showed, edited and sent back: *** keeps the stored credential.
    let (status, body) = worker
        .api(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"headers": {"X-Tenant": "t-2", "Authorization": "***"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    worker.publish("deal.won", "cmp_headers", json!({})).await;
    let edited = receiver.wait_for(2).await.remove(1);
    assert_eq!(edited.header("x-tenant"), "t-2");
    assert_eq!(edited.header("authorization"), "Bearer abc");

    // PATCH replaces the set; null removes it.
    let (status, body) = worker
        .api(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"headers": {"X-Other": "2"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"], json!({"x-other": "2"}));
    let (_, body) = worker
        .api(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(json!({"headers": null})),
        )
        .await;
    assert_eq!(body["headers"], json!({}));
    worker.publish("deal.won", "cmp_headers", json!({})).await;
    let last = receiver.wait_for(3).await.remove(2);
    assert_eq!(last.header("x-other"), "");
    assert_eq!(last.header("authorization"), "");
}

#[tokio::test]
async fn bad_headers_are_refused_naming_the_field() {
    let worker = TestWorker::start().await;
    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    let cases = [
        json!({"Host": "evil.example"}),
        json!({"Content-Type": "text/plain"}),
        json!({"Transfer-Encoding": "chunked"}),
        json!({"webhook-id": "forged"}),
        json!({"X-Tesoro-Attempt": "1"}),
        json!({"x-a": "one\r\nx-b: two"}),
        json!({"bad name": "v"}),
        json!({"x-a": ""}),
        json!({"x-a": 1}),
        // Hidden, with no stored value to keep.
        json!({"Authorization": "***"}),
        json!(["x-a", "v"]),
        Value::Object(many),
    ];
    for headers in cases {
        let (status, body) = worker
            .api(
                "POST",
                "/v1/webhooks",
                Some(json!({"company_id": "cmp_headers", "name": "bad",
                    "url": "https://example.com/hook", "events": ["deal.won"],
                    "headers": headers})),
            )
            .await;
        assert_eq!(
            (status, body["error"]["field"].clone()),
            (422, json!("headers")),
            "{headers} -> {body}"
        );
    }
}
