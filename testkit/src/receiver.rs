//! The benchmark's webhook receivers: one that answers 200 and records arrivals, a black hole
//! that accepts connections and never answers (a dead endpoint), and one that answers 500 at
//! once and records when (a failing endpoint).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Instant,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use tokio::net::TcpListener;

use crate::signature;

/// Every this many requests, the signature is checked.
const SIGNATURE_SAMPLE: u64 = 50;

pub struct Arrivals {
    /// (event number, arrival time) of the current run's events; the number is parsed from
    /// `webhook-id` (`evt_bench_<n>_<run>`).
    pub received: Mutex<Vec<(u32, Instant)>>,
    /// The run whose deliveries count: a straggler of an earlier run is ignored.
    run: AtomicU32,
    pub signatures_checked: AtomicU64,
    pub signatures_bad: AtomicU64,
    requests: AtomicU64,
    /// The webhooks' `whsec_` secret.
    secret: Option<String>,
    /// Off while the unsigned baseline loop runs.
    pub verify: AtomicBool,
}

impl Arrivals {
    pub fn count(&self) -> usize {
        self.received.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Counts `run`'s deliveries from now on.
    pub fn start_run(&self, run: u32) {
        self.run.store(run, Ordering::Relaxed);
        self.take();
    }

    pub fn take(&self) -> Vec<(u32, Instant)> {
        self.received
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

/// Event `n` of run `run`: each run of one benchmark publishes fresh ids, so no run meets
/// another's deliveries (dedupe would turn its inserts into conflicts).
pub fn event_id(run: u32, n: u32) -> String {
    format!("evt_bench_{n}_{run}")
}

/// (event number, run) of a bench event id.
fn event_number(id: &str) -> Option<(u32, u32)> {
    let (n, run) = id.strip_prefix("evt_bench_")?.split_once('_')?;
    Some((n.parse().ok()?, run.parse().ok()?))
}

/// Starts the healthy receiver; signatures are checked on a sample when `secret` (`whsec_...`)
/// is given.
pub async fn start(secret: Option<String>) -> std::io::Result<(SocketAddr, Arc<Arrivals>)> {
    let arrivals = Arc::new(Arrivals {
        received: Mutex::new(Vec::new()),
        run: AtomicU32::new(0),
        signatures_checked: AtomicU64::new(0),
        signatures_bad: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        secret,
        verify: AtomicBool::new(true),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, arrivals))
}

async fn receive(State(arrivals): State<Arc<Arrivals>>, headers: HeaderMap, body: Bytes) {
    let at = Instant::now();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some((id, (n, run))) = text("webhook-id").and_then(|id| Some((id, event_number(id)?)))
    else {
        return;
    };
    if run != arrivals.run.load(Ordering::Relaxed) {
        return;
    }
    let seq = arrivals.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(secret) = &arrivals.secret
        && seq % SIGNATURE_SAMPLE == 0
        && arrivals.verify.load(Ordering::Relaxed)
    {
        let ok = match (text("webhook-timestamp"), text("webhook-signature")) {
            (Some(timestamp), Some(signature)) => {
                signature::verify(secret, id, timestamp, &body, signature)
            }
            _ => false,
        };
        arrivals.signatures_checked.fetch_add(1, Ordering::Relaxed);
        if !ok {
            arrivals.signatures_bad.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Ok(mut received) = arrivals.received.lock() {
        received.push((n, at));
    }
}

/// Accepts connections and holds them open without reading or answering, until dropped.
pub async fn black_hole() -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Ok((addr, task))
}

/// When each request reached the failing endpoint.
#[derive(Default)]
pub struct Failures {
    at: Mutex<Vec<Instant>>,
}

impl Failures {
    /// The requests received in `[from, to)`.
    pub fn between(&self, from: Instant, to: Instant) -> usize {
        self.at
            .lock()
            .map(|at| at.iter().filter(|t| **t >= from && **t < to).count())
            .unwrap_or(0)
    }
}

/// Answers every request with a 500 at once, recording its arrival.
pub async fn failing() -> std::io::Result<(SocketAddr, Arc<Failures>)> {
    let failures = Arc::new(Failures::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/failing", post(fail))
        .with_state(failures.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, failures))
}

async fn fail(State(failures): State<Arc<Failures>>) -> axum::http::StatusCode {
    if let Ok(mut at) = failures.at.lock() {
        at.push(Instant::now());
    }
    axum::http::StatusCode::INTERNAL_SERVER_ERROR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_has_its_own_ids_with_the_event_number_inside() {
        assert_ne!(event_id(0, 17), event_id(2, 17));
        assert_eq!(event_number(&event_id(2, 17)), Some((17, 2)));
        assert_eq!(event_number("evt_other_17"), None);
    }
}
