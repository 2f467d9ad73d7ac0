//! The delivery pipeline: plain async functions over storage, the HTTP sender and the publisher.
//!
//! - [`fanout`]: an event from the events queue → its deliveries → the first attempts, inline.
//! - [`jobs`]: a retry or manual job from the deliveries queue → one attempt; and the
//!   dead-letter queue → the Failed state.
//! - [`attempt`]: the one place that makes an attempt and carries out its settlement (decided
//!   by [`crate::settle`]), shared by both.
//! - [`parking`]: the sweeper that turns parked deliveries (stuck endpoints, open circuits)
//!   back into jobs.
//!
//! Every handler returns a [`Disposition`]: `Ack` only once the outcome is durable (or the
//! message was moved aside, or republished to be tried again; see [`crate::settle::failure`]).

mod attempt;
mod circuits;
mod endpoints;
pub mod fanout;
pub mod jobs;
mod limiter;
pub mod parking;
pub mod rate;
pub mod subscriptions;

pub use circuits::Circuits;
pub use limiter::EndpointLimiter;
pub use subscriptions::Subscriptions;

use std::{future::Future, sync::Arc};

use crate::{
    broker::{BrokerError, Disposition, Message, Publisher},
    domain::{Catalog, QuarantineReason, Source},
    endpoint_health::Policy,
    internal_events::{HandlingFailed, QuarantineFailed, Quarantined},
    readiness::{Dependency, OutageSignal},
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
    /// Outlive a broker session: what they learned of each endpoint still holds after a
    /// reconnect.
    pub limiter: Arc<EndpointLimiter>,
    /// Each endpoint's circuit breaker, likewise kept for the process.
    pub circuits: Arc<Circuits>,
    /// Webhooks' own limits on attempts per second, shared among the live workers.
    pub rates: Arc<rate::RateLimits>,
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

/// Where a message of `source` is published to be tried again (exchange, routing key): an
/// event through the events queues' entry (the one this layout routes to, also for one
/// drained from a queue of another), a job straight back to its queue.
fn retry_route(source: Source, topology: &crate::broker::Topology) -> (&str, &str) {
    match source {
        Source::Fanout => topology.events_entry(),
        Source::Job => ("", &topology.deliveries_queue),
        Source::Dead => ("", &topology.dead_queue),
    }
}

impl From<PipelineError> for Failure {
    fn from(error: PipelineError) -> Self {
        let storage = |e: &StorageError| {
            if e.is_outage() {
                Failure::Outage(Dependency::Database)
            } else {
                Failure::Own {
                    reason: QuarantineReason::RefusedByDatabase,
                    detail: e.to_string(),
                }
            }
        };
        match error {
            PipelineError::Storage(e) => storage(&e),
            PipelineError::Record(RecordError::Storage(e)) => storage(&e),
            // Only a stopping worker stops its recorder.
            PipelineError::Record(RecordError::Stopped) => Failure::Outage(Dependency::Database),
            PipelineError::Broker(BrokerError::NoTier(delay)) => Failure::Own {
                reason: QuarantineReason::HandlingFailed,
                detail: format!("no retry tier for a delay of {delay:?}"),
            },
            PipelineError::Broker(_) => Failure::Outage(Dependency::Broker),
            PipelineError::NotYetRecorded => Failure::Own {
                reason: QuarantineReason::UnknownDelivery,
                detail: error.to_string(),
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
                    reason: QuarantineReason::HandlerPanicked,
                    detail: format!("the handler panicked: {what}"),
                })
            }
        })
}

impl Pipeline {
    /// What becomes of a handled message: acked once its outcome is durable, otherwise as
    /// [`failure::fate`] decides.
    async fn dispose(
        &self,
        message: &Message,
        source: Source,
        result: Result<(), Failure>,
    ) -> Disposition {
        match result {
            Ok(()) => Disposition::Ack,
            // Boxed: the failure path's publishes and pause would otherwise enlarge every
            // handler's future, a thousand of which are in flight per consumer.
            Err(failure) => Box::pin(self.dispose_of_failure(message, source, failure)).await,
        }
    }

    async fn dispose_of_failure(
        &self,
        message: &Message,
        source: Source,
        failure: Failure,
    ) -> Disposition {
        let fate = failure::fate(&failure, message.failures(), self.delivery_limit);
        HandlingFailed {
            source,
            message,
            failure: &failure,
            fate: &fate,
        }
        .emit();
        match fate {
            Fate::HandBack(dependency) => {
                self.outage.report(dependency);
                Disposition::HandBack
            }
            Fate::RetryLater { after, failures } => {
                tokio::select! {
                    () = tokio::time::sleep(after) => {}
                    // Stopping, or pausing for an outage: handed back, not counted.
                    () = self.outage.stop_token().cancelled() => return Disposition::HandBack,
                }
                let route = retry_route(source, self.publisher.topology());
                match self.publisher.retry_later(message, route, failures).await {
                    Ok(()) => Disposition::Ack,
                    Err(_) => self.broker_down(),
                }
            }
            Fate::Quarantine { reason, detail } => self.quarantine(message, reason, &detail).await,
        }
    }

    fn broker_down(&self) -> Disposition {
        self.outage.report(Dependency::Broker);
        Disposition::HandBack
    }

    /// Moves an unprocessable message to the quarantine queue with its reason, then acks it:
    /// it is kept for an operator, never lost and never looping.
    async fn quarantine(
        &self,
        message: &Message,
        reason: QuarantineReason,
        detail: &str,
    ) -> Disposition {
        match self
            .publisher
            .quarantine(message, &format!("{reason}: {detail}"))
            .await
        {
            Ok(()) => {
                Quarantined {
                    message,
                    reason,
                    detail,
                }
                .emit();
                Disposition::Ack
            }
            Err(e) => {
                QuarantineFailed { error: &e }.emit();
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
            Err(Failure::Own { reason, detail }) => {
                assert_eq!(reason, QuarantineReason::HandlerPanicked);
                assert!(detail.contains("index out of bounds"), "{detail}");
            }
            other => panic!("expected a failure of its own, got {other:?}"),
        }
        let refused = async { Err(PipelineError::NotYetRecorded) };
        assert!(matches!(
            guarded(refused).await,
            Err(Failure::Own {
                reason: QuarantineReason::UnknownDelivery,
                ..
            })
        ));
        assert_eq!(guarded(async { Ok(()) }).await, Ok(()));
    }
}
