//! `TestReceiver`: a webhook endpoint on 127.0.0.1 whose replies are scripted, recording
//! what it received.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header::LOCATION},
    response::{IntoResponse, Response},
};
use tokio::net::TcpListener;

use super::*;

/// How a `TestReceiver` answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// Answer `status` after `delay`.
    Slow(Duration, u16),
    /// A 302 to this location.
    Redirect(String),
    /// `status` with a `Retry-After` header of this value.
    RetryAfter(u16, String),
    /// `status` and the start of the body at once, the rest of the body after `pause`.
    Trickle {
        status: u16,
        first: &'static str,
        pause: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
}

/// A webhook endpoint on 127.0.0.1: records every request, answers from its script, then
/// with its default reply (200 unless changed).
#[derive(Clone)]
pub struct TestReceiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl TestReceiver {
    pub async fn start() -> Self {
        let state = Arc::new(ReceiverState {
            received: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::Status(200)),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(receive).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Replies for the next requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().expect("lock").extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().expect("lock") = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// How many of the events `ids` never arrived (by their `webhook-id`).
    pub fn missing(&self, ids: &[String]) -> usize {
        let received: std::collections::HashSet<String> = self
            .received()
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        ids.iter().filter(|id| !received.contains(*id)).count()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        wait_until(&format!("{n} requests at {}", self.url()), || async {
            let received = self.received();
            (received.len() >= n).then_some(received)
        })
        .await
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.received.lock().expect("lock").push(Received {
        at: Instant::now(),
        headers,
        body,
    });
    let scripted = state.script.lock().expect("lock").pop_front();
    let reply = scripted.unwrap_or_else(|| state.default.lock().expect("lock").clone());
    match reply {
        Reply::Status(code) => status(code).into_response(),
        Reply::Slow(delay, code) => {
            tokio::time::sleep(delay).await;
            status(code).into_response()
        }
        Reply::Redirect(location) => {
            (StatusCode::FOUND, [(LOCATION, location)], "moved").into_response()
        }
        Reply::RetryAfter(code, wait) => {
            let code = StatusCode::from_u16(code).expect("valid status");
            (code, [(axum::http::header::RETRY_AFTER, wait)], "later").into_response()
        }
        Reply::Trickle {
            status,
            first,
            pause,
        } => {
            use futures_util::StreamExt;
            let head =
                futures_util::stream::once(async move { Bytes::from_static(first.as_bytes()) });
            let rest = futures_util::stream::once(async move {
                tokio::time::sleep(pause).await;
                Bytes::from_static(b" and the rest")
            });
            let body = axum::body::Body::from_stream(
                head.chain(rest).map(Ok::<_, std::convert::Infallible>),
            );
            (StatusCode::from_u16(status).expect("valid status"), body).into_response()
        }
    }
}

fn status(code: u16) -> (StatusCode, &'static str) {
    (
        StatusCode::from_u16(code).expect("valid status"),
        "receiver says hello",
    )
}
