//! The delivery pipeline: plain async functions over storage, the HTTP sender and the publisher.
//!
//! - [`fanout`]: an event from the events queue → its deliveries → the first attempts, inline.
//! - [`jobs`]: a retry or manual job from the deliveries queue → one attempt; and the
//!   dead-letter queue → the Failed state.
//! - [`attempt`]: the one place that makes an attempt and carries out its settlement (decided
//!   by [`crate::settle`]), shared by both.
//! - [`parking`]: the sweeper that turns parked deliveries (stuck endpoints) back into jobs.
//!
//! Every handler returns a [`Disposition`]: `Ack` only once the outcome is durable (or the
//! message was moved aside, or republished to be tried again; see [`crate::settle::failure`]).

mod attempt;
pub mod fanout;
pub mod jobs;
mod limiter;
pub mod parking;
pub mod rate;
pub mod subscriptions;

pub use limiter::EndpointLimiter;
pub use subscriptions::Subscriptions;

use std::{future::Future, sync::Arc};

use crate::{
    broker::{BrokerError, Disposition, Message, Publisher},
    domain::Catalog,
    endpoint_health::Policy,
    health::{Dependency, OutageSignal},
    retry::RetrySchedule,
    sender::Sender,
    settle::failure::{self, Failure, Fate},
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
    /// Webhooks' own limits on attempts per second, shared among the live workers.
    pub rates: rate::RateLimits,
    /// Deliveries in progress at once (attempt and record), whatever the fan-out: bounds memory.
    pub in_flight: tokio::sync::Semaphore,
    pub sender: Sender,
    pub publisher: Publisher,
    pub schedule: RetrySchedule,
    /// When a failing webhook is warned about and disabled.
    pub endpoint_health: Policy,
    pub catalog: Catalog,
    /// Events longer than this are quarantined (`delivery.max_event_size`).
    pub max_event_size: usize,
    /// Tries of a message whose handling fails for a reason of its own (`amqp.delivery_limit`).
    pub delivery_limit: u32,
    /// This consuming session's alarm: a handler that meets an outage pauses the consumers.
    pub outage: OutageSignal,
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

/// The consumer a message came from: which queue a retry of it goes back to.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Events,
    Jobs,
    Dead,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::Events => "fanout",
            Stage::Jobs => "job",
            Stage::Dead => "dead",
        }
    }

    /// Where a message of this stage is published to be tried again (exchange, routing
    /// key): an event through the events queues' entry (the one this layout routes to, also
    /// for one drained from a queue of another), a job straight to its queue.
    fn retry_route(self, topology: &crate::broker::Topology) -> (&str, &str) {
        match self {
            Stage::Events => topology.events_entry(),
            Stage::Jobs => ("", &topology.deliveries_queue),
            Stage::Dead => ("", &topology.dead_queue),
        }
    }
}

impl From<PipelineError> for Failure {
    fn from(error: PipelineError) -> Self {
        let storage = |e: &StorageError| {
            if e.is_outage() {
                Failure::Outage(Dependency::Database)
            } else {
                Failure::Own {
                    code: "refused_by_database",
                    reason: e.to_string(),
                }
            }
        };
        match error {
            PipelineError::Storage(e) => storage(&e),
            PipelineError::Record(RecordError::Storage(e)) => storage(&e),
            // Only a stopping worker stops its recorder.
            PipelineError::Record(RecordError::Stopped) => Failure::Outage(Dependency::Database),
            PipelineError::Broker(BrokerError::NoTier(delay)) => Failure::Own {
                code: "handling_failed",
                reason: format!("no retry tier for a delay of {delay:?}"),
            },
            PipelineError::Broker(_) => Failure::Outage(Dependency::Broker),
            PipelineError::NotYetRecorded => Failure::Own {
                code: "unknown_delivery",
                reason: error.to_string(),
            },
        }
    }
}

/// Runs a handler's work, turning its error, or its panic (a bug, which must not leave the
/// message looping unseen), into a [`Failure`]. A plain function returning the future: an
/// `async fn` would keep `work` as its argument beside the future that moved it, doubling the
/// size of every handler's task (kilobytes, a thousand of them per consumer).
fn guarded(
    work: impl Future<Output = Result<(), PipelineError>>,
) -> impl Future<Output = Result<(), Failure>> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .map(|caught| match caught {
            Ok(result) => result.map_err(Failure::from),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "message handler panicked");
                Err(Failure::Own {
                    code: "handler_panicked",
                    reason: format!("the handler panicked: {what}"),
                })
            }
        })
}

impl Pipeline {
    /// Settles a handled message: acked once its outcome is durable, otherwise as
    /// [`failure::fate`] decides.
    async fn settle(
        &self,
        message: &Message,
        stage: Stage,
        result: Result<(), Failure>,
    ) -> Disposition {
        match result {
            Ok(()) => Disposition::Ack,
            // Boxed: the failure path's publishes and pause would otherwise enlarge every
            // handler's future, a thousand of which are in flight per consumer.
            Err(failure) => Box::pin(self.settle_failure(message, stage, failure)).await,
        }
    }

    async fn settle_failure(
        &self,
        message: &Message,
        stage: Stage,
        failure: Failure,
    ) -> Disposition {
        crate::metrics::handler_error(stage.label());
        match failure::fate(&failure, message.failures(), self.delivery_limit) {
            Fate::HandBack(dependency) => {
                self.outage.report(dependency);
                Disposition::HandBack
            }
            Fate::RetryLater { after, failures } => {
                tracing::warn!(stage = stage.label(),
                    message_id = message.message_id().unwrap_or("(none)"), failure = ?failure,
                    failures, retry_in = ?after,
                    "handling failed; the message will be tried again");
                tokio::select! {
                    () = tokio::time::sleep(after) => {}
                    // Stopping, or pausing for an outage: handed back, not counted.
                    () = self.outage.stop_token().cancelled() => return Disposition::HandBack,
                }
                let route = stage.retry_route(self.publisher.topology());
                match self.publisher.retry_later(message, route, failures).await {
                    Ok(()) => Disposition::Ack,
                    Err(_) => self.broker_down(),
                }
            }
            Fate::Quarantine { code, reason } => self.quarantine(message, code, &reason).await,
        }
    }

    fn broker_down(&self) -> Disposition {
        self.outage.report(Dependency::Broker);
        Disposition::HandBack
    }

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
            Err(e) => {
                tracing::warn!(error = %e, "cannot quarantine the message");
                crate::metrics::handler_error("quarantine");
                self.broker_down()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bug in a handler must not leave its message handed back and looping unseen: the
    /// panic is a failure of the message's own, counted against the delivery limit.
    #[tokio::test]
    async fn a_panicking_handler_is_a_failure_of_its_own() {
        let panicking = async {
            if true {
                panic!("index out of bounds");
            }
            Ok(())
        };
        match guarded(panicking).await {
            Err(Failure::Own { code, reason }) => {
                assert_eq!(code, "handler_panicked");
                assert!(reason.contains("index out of bounds"), "{reason}");
            }
            other => panic!("expected a failure of its own, got {other:?}"),
        }
        let refused = async { Err(PipelineError::NotYetRecorded) };
        assert!(matches!(
            guarded(refused).await,
            Err(Failure::Own {
                code: "unknown_delivery",
                ..
            })
        ));
        assert_eq!(guarded(async { Ok(()) }).await, Ok(()));
    }
}
