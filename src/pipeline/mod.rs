//! The delivery pipeline: plain async functions over storage, the HTTP sender and the publisher.
//!
//! - [`fanout`]: an event from the events queue → its deliveries → the first attempts, inline.
//! - [`jobs`]: a retry or manual job from the deliveries queue → one attempt; and the
//!   dead-letter queue → the Failed state.
//! - [`attempt`]: the one place that makes an attempt and settles its outcome, shared by both.
//! - [`parking`]: the sweeper that turns parked deliveries (stuck endpoints) back into jobs.
//!
//! Every handler returns a [`Disposition`]: `Ack` only once the outcome is durable.

mod attempt;
pub mod fanout;
pub mod jobs;
mod limiter;
pub mod parking;
pub mod subscriptions;

pub use limiter::EndpointLimiter;
pub use subscriptions::Subscriptions;

use std::sync::Arc;

use crate::{
    broker::{BrokerError, Disposition, Message, Publisher},
    domain::Catalog,
    retry::RetrySchedule,
    sender::Sender,
    storage::{RecordError, Recorder, Storage, StorageError},
};

/// What the handlers share. Cloned into each handler task behind an `Arc`.
pub struct Pipeline {
    pub storage: Storage,
    /// Batched, group-committed writes of delivery outcomes.
    pub recorder: Recorder,
    /// Routing: each company's webhooks, cached.
    pub subscriptions: Arc<Subscriptions>,
    pub limiter: EndpointLimiter,
    /// Deliveries in progress at once (attempt and record), whatever the fan-out: bounds memory.
    pub in_flight: tokio::sync::Semaphore,
    pub sender: Sender,
    pub publisher: Publisher,
    pub schedule: RetrySchedule,
    pub catalog: Catalog,
    /// Events longer than this are quarantined (`delivery.max_event_size`).
    pub max_event_size: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A job arrived before its delivery's row, or the attempt before its own, was committed;
    /// it is handed back to wait.
    #[error("the delivery of this job is not recorded yet")]
    NotYetRecorded,
}

impl Pipeline {
    /// Moves an unprocessable message to the quarantine queue with its reason, then acks it:
    /// it is kept for an operator, never lost and never looping.
    async fn quarantine(&self, message: &Message, code: &'static str, reason: &str) -> Disposition {
        // Named by what an operator can find it by in the quarantine listing.
        let (exchange, routing_key) = message.origin();
        tracing::warn!(
            code,
            reason,
            message_id = message.message_id().unwrap_or("(none)"),
            exchange,
            routing_key,
            "quarantining an unprocessable message"
        );
        match self
            .publisher
            .quarantine(message, &format!("{code}: {reason}"))
            .await
        {
            Ok(()) => {
                crate::metrics::quarantined(code);
                Disposition::Ack
            }
            Err(e) => disposition("quarantine", Err(e.into())),
        }
    }
}

/// Turns a handler's result into the message's fate, logging a failure once with its cause.
fn disposition(stage: &'static str, result: Result<(), PipelineError>) -> Disposition {
    match result {
        Ok(()) => Disposition::Ack,
        Err(PipelineError::NotYetRecorded) => Disposition::Retry,
        Err(error) => {
            tracing::warn!(stage, error = %error, "handling failed; message will be retried");
            crate::metrics::handler_error(stage);
            Disposition::Retry
        }
    }
}
