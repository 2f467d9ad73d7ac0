//! The dashboard users read their webhooks' log in, at `/ui/`: three static files embedded in
//! the binary (no build step), served with a strict Content-Security-Policy. The page talks to
//! `/v1` with the token the user signs in with, which it keeps in session storage, never in a
//! URL.

use std::sync::Arc;

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Redirect},
    routing::get,
};

use super::ApiState;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// Only the page's own script, style and API; no inline code, no framing, no forms posted
/// elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; \
    frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<Arc<ApiState>> {
    let headers = SecurityHeaders;
    Router::new()
        // The listener's root is where a user looks first.
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| file("text/html; charset=utf-8", INDEX)))
        .route(
            "/ui/app.js",
            get(|| file("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/ui/app.css",
            get(|| file("text/css; charset=utf-8", STYLE)),
        )
        .layer(axum::middleware::map_response(move |response| {
            headers.apply(response)
        }))
}

async fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

#[derive(Clone, Copy)]
struct SecurityHeaders;

impl SecurityHeaders {
    async fn apply(self, mut response: axum::response::Response) -> axum::response::Response {
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        response
    }
}
