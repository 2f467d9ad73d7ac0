//! The HTTP side: the one module that speaks reqwest. Builds the signed Standard Webhooks
//! request, sends it with a whole-request deadline and no redirects, and captures the response
//! up to a size cap.

mod resolver;

use std::{error::Error as _, sync::Arc, time::Duration};

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use time::OffsetDateTime;

use crate::{
    config::DeliveryConfig,
    domain::{CustomHeaders, EndpointUrl, EventId, Signing, is_sensitive},
    outcome::{self, FailureKind},
    signing,
};
pub use resolver::{BlockedTarget, HostResolver, SystemResolver, TargetGuard};

pub const USER_AGENT_VALUE: &str = concat!("tesoro-webhooks/", env!("CARGO_PKG_VERSION"));

/// Everything that goes into one POST.
#[derive(Debug, Clone)]
pub struct AttemptRequest<'a> {
    pub url: &'a EndpointUrl,
    pub event_id: &'a EventId,
    pub event_type: &'a str,
    pub attempt_number: u32,
    pub signing: Option<&'a Signing>,
    /// The webhook's own headers, sent first (they cannot name ours).
    pub headers: &'a CustomHeaders,
    /// The envelope exactly as published; `Bytes` so every attempt shares one buffer.
    pub body: Bytes,
}

/// What came back, as far as it got.
#[derive(Debug, Clone)]
pub struct AttemptResponse {
    pub status: u16,
    /// As the attempt log keeps them: see `headers_json`.
    pub headers: String,
    pub body: Vec<u8>,
    pub truncated: bool,
    /// What its `Retry-After` header asks, when it has a readable one.
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub started_at: OffsetDateTime,
    pub duration: Duration,
    /// As the attempt log keeps them: see `headers_json`.
    pub request_headers: String,
    pub response: Option<AttemptResponse>,
    /// Set when no response status arrived in time; the message is the cause chain.
    pub failure: Option<(FailureKind, String)>,
}

impl AttemptResult {
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }
}

/// One shared client: keep-alive pools per host, no redirects, the SSRF resolver.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    max_response_body: usize,
    /// Checks IP-literal hosts, which bypass the resolver (names are checked as they resolve).
    targets: TargetGuard,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct SenderError(#[from] reqwest::Error);

impl Sender {
    /// A sender that reaches only what `targets` permits.
    pub fn new(config: &DeliveryConfig, targets: TargetGuard) -> Result<Self, SenderError> {
        // reqwest is built without a bundled crypto provider; ring is the one we ship. A second
        // install (another Sender in the same process) is a harmless no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(3)))
            // Redirects are failures: following them would turn POSTs into GETs and could
            // lead to internal addresses.
            .redirect(reqwest::redirect::Policy::none())
            // Shorter than most servers' keep-alive, so we rarely write to a socket the server
            // just closed.
            .pool_idle_timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .no_proxy()
            .user_agent(USER_AGENT_VALUE)
            .dns_resolver(Arc::new(targets.clone()));
        Ok(Self {
            client: builder.build()?,
            max_response_body: usize::try_from(config.max_response_body.as_u64())
                .unwrap_or(usize::MAX),
            targets,
        })
    }

    /// Sends one attempt. Never fails: every problem is a typed failure in the result.
    pub async fn send(&self, request: AttemptRequest<'_>) -> AttemptResult {
        let started_at = OffsetDateTime::now_utc();
        let clock = std::time::Instant::now();
        let headers = signed_headers(&request, started_at.unix_timestamp());
        // Only a webhook's own headers can carry a credential.
        let request_headers = if request.headers.is_empty() {
            headers_json(&headers)
        } else {
            headers_json_masked(&headers)
        };
        let mut result = AttemptResult {
            started_at,
            duration: Duration::ZERO,
            request_headers,
            response: None,
            failure: None,
        };
        // IP literals bypass the resolver; check them here.
        if let Some(refusal) = self.targets.policy().refuses_host(request.url.as_url()) {
            let blocked = BlockedTarget(refusal);
            result.failure = Some((FailureKind::BlockedTarget, blocked.to_string()));
            return result;
        }
        let sent = self
            .client
            .post(request.url.as_url().clone())
            .headers(headers)
            .body(request.body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let (response, cut_short) = self.capture(response).await;
                result.response = Some(response);
                // The deadline is for the whole request: a body still arriving when it ends
                // fails the attempt, whatever the status said.
                if let Some(e) = cut_short.filter(reqwest::Error::is_timeout) {
                    result.failure = Some((FailureKind::Timeout, error_chain(&e)));
                }
            }
            Err(e) => result.failure = Some((classify_error(&e), error_chain(&e))),
        }
        result.duration = clock.elapsed();
        result
    }

    /// Reads the response body up to the cap; the rest is discarded unread. Returns what
    /// arrived, and the error that cut it short, if one did (the client's deadline covers the
    /// body too).
    async fn capture(
        &self,
        mut response: reqwest::Response,
    ) -> (AttemptResponse, Option<reqwest::Error>) {
        let status = response.status().as_u16();
        let headers = headers_json(response.headers());
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| outcome::retry_after(value, std::time::SystemTime::now()));
        let mut body = Vec::new();
        let mut truncated = false;
        let mut cut_short = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.max_response_body - body.len();
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    truncated = true;
                    cut_short = Some(e);
                    break;
                }
            }
        }
        let response = AttemptResponse {
            status,
            headers,
            body,
            truncated,
            retry_after,
        };
        (response, cut_short)
    }
}

/// Header names built once: a name made from a `&str` is copied into a fresh buffer on every
/// insert, a static one is not.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const TESORO_EVENT: HeaderName = HeaderName::from_static("x-tesoro-event");
const TESORO_ATTEMPT: HeaderName = HeaderName::from_static("x-tesoro-attempt");

/// The webhook's own headers, the Standard Webhooks headers and our informational ones.
fn signed_headers(request: &AttemptRequest<'_>, timestamp: i64) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(7);
    for (name, value) in request.headers.iter() {
        // Checked when set, so these parse; one that still does not is skipped, not sent bent.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    put_text(&mut headers, WEBHOOK_ID, request.event_id.as_str());
    headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
    if let Some(keys) = request.signing {
        let signature = signing::header(keys, request.event_id.as_str(), timestamp, &request.body);
        put_text(&mut headers, WEBHOOK_SIGNATURE, &signature);
    }
    put_text(&mut headers, TESORO_EVENT, request.event_type);
    headers.insert(TESORO_ATTEMPT, HeaderValue::from(request.attempt_number));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    headers
}

/// Ids were validated as printable when parsed; a value that still fails is skipped rather than
/// sent malformed.
fn put_text(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Headers as the attempt log keeps them: a JSON array of `[name, value]` pairs, in order,
/// written straight from the map (no string pair per header on the way). A value that is not
/// UTF-8 is kept lossily.
fn headers_json(headers: &HeaderMap) -> String {
    pairs_json(headers, false)
}

/// `headers_json`, with the value of each credential-bearing header (a webhook's
/// `Authorization`, say) as `***`: the log shows it was sent, not what it was.
fn headers_json_masked(headers: &HeaderMap) -> String {
    pairs_json(headers, true)
}

fn pairs_json(headers: &HeaderMap, mask: bool) -> String {
    struct Pairs<'a>(&'a HeaderMap, bool);
    impl serde::Serialize for Pairs<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(self.0.iter().map(|(name, value)| {
                let value = if self.1 && is_sensitive(name.as_str()) {
                    crate::domain::HIDDEN.into()
                } else {
                    String::from_utf8_lossy(value.as_bytes())
                };
                (name.as_str(), value)
            }))
        }
    }
    // Serializing strings into a String cannot fail.
    serde_json::to_string(&Pairs(headers, mask)).unwrap_or_else(|_| "[]".to_owned())
}

/// Maps a transport error to its kind by type, walking the cause chain.
fn classify_error(error: &reqwest::Error) -> FailureKind {
    if error.is_timeout() {
        return FailureKind::Timeout;
    }
    let mut source = error.source();
    while let Some(cause) = source {
        if cause.is::<BlockedTarget>() {
            return FailureKind::BlockedTarget;
        }
        if cause.is::<rustls::Error>() {
            return FailureKind::Tls;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return FailureKind::Tls;
            }
            if io.kind() == std::io::ErrorKind::TimedOut {
                return FailureKind::Timeout;
            }
        }
        source = cause.source();
    }
    if error.is_connect() {
        FailureKind::Connect
    } else {
        FailureKind::Other
    }
}

/// "what failed: cause: root cause", without the URL (the delivery names its webhook).
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = String::from(if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() {
        "body error"
    } else {
        "request failed"
    });
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_json_is_an_array_of_name_value_pairs_in_order() {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_static("evt_1"));
        headers.append("x-quoted", HeaderValue::from_static("say \"hi\""));
        headers.append("x-quoted", HeaderValue::from_static("twice"));
        headers.insert(
            "x-binary",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is a valid header value"),
        );
        let json: serde_json::Value =
            serde_json::from_str(&headers_json(&headers)).expect("valid JSON");
        assert_eq!(
            json,
            serde_json::json!([
                ["webhook-id", "evt_1"],
                ["x-quoted", "say \"hi\""],
                ["x-quoted", "twice"],
                ["x-binary", "caf\u{fffd}"],
            ])
        );
    }
}
