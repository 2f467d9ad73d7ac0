//! The OpenAPI document is generated from the handlers: every documented operation is served,
//! and every `/v1` route is documented. The dashboard's files carry strict security headers.

use reqwest::Method;
use serde_json::Value;
use tesoro_webhooks::api::v1_route_table;

use crate::harness::{TOKEN, TestWorker};

const NIL: &str = "00000000-0000-0000-0000-000000000000";

#[tokio::test]
async fn every_documented_operation_is_served_and_every_route_documented() {
    let worker = TestWorker::start().await;
    let document: Value = worker
        .http
        .get(worker.url("/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(
        document["openapi"]
            .as_str()
            .expect("version")
            .starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("paths");
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "patch", "put", "delete"] {
            if item.get(method).is_some() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    // The /v1 routes the router is built from are exactly the documented ones under /v1.
    let mut served: Vec<(String, String)> = v1_route_table()
        .into_iter()
        .map(|(method, path)| (method.to_string(), format!("/v1{path}")))
        .collect();
    let mut documented_v1: Vec<_> = documented
        .iter()
        .filter(|(_, path)| path.starts_with("/v1/"))
        .cloned()
        .collect();
    served.sort();
    documented_v1.sort();
    assert_eq!(served, documented_v1);
    assert!(
        documented.len() > documented_v1.len(),
        "/healthz and friends too"
    );

    // Each documented operation reaches its handler: not the router's "route not found",
    // not a 405.
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", NIL)
            .replace("{number}", "1")
            .replace("{company_id}", "cmp_doc")
            .replace("{token_id}", NIL);
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let response = worker
            .http
            .request(method.clone(), worker.url(&concrete))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_ne!(status, 405, "{method} {concrete}: {body}");
        assert!(
            !body.contains("route not found"),
            "{method} {concrete} is documented but not served"
        );
    }
}

#[tokio::test]
async fn the_dashboard_is_served_with_strict_security_headers() {
    let worker = TestWorker::start().await;
    for (path, content_type) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let response = worker
            .http
            .get(worker.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        assert!(header("content-type").starts_with(content_type), "{path}");
        let policy = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
    }
    let page = worker
        .http
        .get(worker.url("/ui/"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(!page.contains("<script>"), "no inline script");
    assert!(!page.contains(" style="), "no inline style");
}
