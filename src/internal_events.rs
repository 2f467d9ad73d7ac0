//! The worker's notable events, each one value that both logs and counts it, so that a log
//! line and its metric cannot drift apart (vector's `internal_events` are the model). Metric
//! names, and the label values each starts with, are in [`crate::metrics`].

use std::time::Duration;

use metrics::{counter, histogram};

use crate::{
    broker::{BrokerError, Message},
    domain::{Job, QuarantineReason, Source, WebhookId},
    metrics::{ATTEMPT_DURATION, ATTEMPTS, HANDLER_ERRORS, QUARANTINED, STALE_JOBS},
    settle::failure::{Failure, Fate},
};

/// The `stage` label of a failure to move a message to quarantine.
pub const QUARANTINE_STAGE: &str = "quarantine";

/// An HTTP attempt was made: `result` is `delivered` or the failure kind.
pub struct AttemptMade<'a> {
    pub job: &'a Job,
    pub webhook_id: WebhookId,
    pub result: &'static str,
    pub status: Option<u16>,
    pub duration: Duration,
}

impl AttemptMade<'_> {
    pub fn emit(&self) {
        counter!(ATTEMPTS, "result" => self.result).increment(1);
        histogram!(ATTEMPT_DURATION).record(self.duration.as_secs_f64());
        tracing::debug!(
            event_id = %self.job.event_id,
            webhook_id = %self.webhook_id,
            delivery_id = %self.job.delivery_id,
            attempt = self.job.attempt,
            result = self.result,
            status = self.status,
            duration_ms = u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            "attempt made"
        );
    }
}

/// Handling a message failed, and `fate` is what becomes of it.
pub struct HandlingFailed<'a> {
    pub source: Source,
    pub message: &'a Message,
    pub failure: &'a Failure,
    pub fate: &'a Fate,
}

impl HandlingFailed<'_> {
    /// Counts every failure; logs the ones tried again (an outage is logged once by the
    /// supervisor, a quarantine by [`Quarantined`]).
    pub fn emit(&self) {
        counter!(HANDLER_ERRORS, "stage" => self.source.as_str()).increment(1);
        if let Fate::RetryLater { after, failures } = self.fate {
            tracing::warn!(stage = self.source.as_str(),
                message_id = self.message.message_id().unwrap_or("(none)"),
                failure = ?self.failure, failures, retry_in = ?after,
                "handling failed; the message will be tried again");
        }
    }
}

/// A message was moved to the quarantine queue.
pub struct Quarantined<'a> {
    pub message: &'a Message,
    pub reason: QuarantineReason,
    pub detail: &'a str,
}

impl Quarantined<'_> {
    pub fn emit(&self) {
        counter!(QUARANTINED, "reason" => self.reason.as_str()).increment(1);
        // Named by what an operator can find it by in the quarantine listing.
        let (exchange, routing_key) = self.message.published_to();
        tracing::warn!(
            reason = self.reason.as_str(),
            detail = self.detail,
            message_id = self.message.message_id().unwrap_or("(none)"),
            exchange,
            routing_key,
            "quarantined an unprocessable message"
        );
    }
}

/// A message could not be moved to quarantine (the broker is down): it is handed back.
pub struct QuarantineFailed<'a> {
    pub error: &'a BrokerError,
}

impl QuarantineFailed<'_> {
    pub fn emit(&self) {
        counter!(HANDLER_ERRORS, "stage" => QUARANTINE_STAGE).increment(1);
        tracing::warn!(error = %self.error, "cannot quarantine the message");
    }
}

/// A redelivered or duplicate job was skipped: its attempt is already recorded.
pub struct StaleJobSkipped<'a> {
    pub job: &'a Job,
    pub recorded: u32,
}

impl StaleJobSkipped<'_> {
    pub fn emit(&self) {
        counter!(STALE_JOBS).increment(1);
        tracing::debug!(
            event_id = %self.job.event_id,
            webhook_id = %self.job.webhook_id,
            delivery_id = %self.job.delivery_id,
            attempt = self.job.attempt,
            recorded = self.recorded,
            "stale job skipped"
        );
    }
}
