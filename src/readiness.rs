//! What the worker depends on and whether it is working: the state `/readyz` reports, and the
//! signal with which a handler that met an outage pauses the consumers.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A service the worker cannot work without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dependency {
    Database,
    Broker,
}

impl Dependency {
    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::Database => "database",
            Dependency::Broker => "broker",
        }
    }
}

/// The worker's side of readiness (the API adds a database ping of its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerState {
    /// Every consumer is subscribed.
    pub consuming: bool,
    /// The consumers are paused until this answers again.
    pub outage: Option<Dependency>,
}

/// Shared by the supervisor, which writes it, and the API, which reads it.
#[derive(Debug, Clone)]
pub struct Readiness {
    state: Arc<watch::Sender<WorkerState>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            state: Arc::new(watch::Sender::new(WorkerState::default())),
        }
    }
}

impl Readiness {
    pub fn state(&self) -> WorkerState {
        *self.state.borrow()
    }

    pub fn set_consuming(&self, consuming: bool) {
        self.state.send_modify(|s| s.consuming = consuming);
    }

    pub fn set_outage(&self, outage: Option<Dependency>) {
        self.state.send_modify(|s| s.outage = outage);
        crate::metrics::dependencies_up(outage);
    }
}

/// One consuming session's alarm: the first handler that meets an outage reports it, which
/// stops the session's consumers; the supervisor then reads which dependency failed.
#[derive(Debug)]
pub struct OutageSignal {
    stop: CancellationToken,
    first: OnceLock<Dependency>,
}

impl OutageSignal {
    /// `stop` ends the session's consumers: a child of the shutdown token.
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            stop,
            first: OnceLock::new(),
        }
    }

    pub fn report(&self, dependency: Dependency) {
        if self.first.set(dependency).is_ok() {
            tracing::warn!(
                dependency = dependency.as_str(),
                "dependency unavailable; pausing the consumers until it answers"
            );
        }
        self.stop.cancel();
    }

    /// The dependency whose outage stopped the session, if one did.
    pub fn reported(&self) -> Option<Dependency> {
        self.first.get().copied()
    }

    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }
}
