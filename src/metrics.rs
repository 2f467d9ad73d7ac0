//! Every metric name in one place, with the helpers that record them. Labels stay low in
//! cardinality: outcome kinds and reason codes, never a URL, an event id or a company.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

pub const EVENTS_RECEIVED: &str = "tesoro_webhooks_events_received_total";
pub const EVENTS_UNMATCHED: &str = "tesoro_webhooks_events_unmatched_total";
pub const QUARANTINED: &str = "tesoro_webhooks_quarantined_total";
pub const ATTEMPTS: &str = "tesoro_webhooks_attempts_total";
pub const ATTEMPT_DURATION: &str = "tesoro_webhooks_attempt_duration_seconds";
pub const DELIVERIES_SUCCEEDED: &str = "tesoro_webhooks_deliveries_succeeded_total";
pub const DELIVERIES_FAILED: &str = "tesoro_webhooks_deliveries_failed_total";
pub const RETRIES_SCHEDULED: &str = "tesoro_webhooks_retries_scheduled_total";
pub const STALE_JOBS: &str = "tesoro_webhooks_stale_jobs_total";
pub const DEFERRED: &str = "tesoro_webhooks_deferred_total";
pub const HANDLER_ERRORS: &str = "tesoro_webhooks_handler_errors_total";
pub const RECORD_BATCH_SIZE: &str = "tesoro_webhooks_record_batch_size";
pub const DELIVERIES_PARKED: &str = "tesoro_webhooks_deliveries_parked";
pub const WORKERS: &str = "tesoro_webhooks_workers";

/// Registers descriptions (the `# HELP` lines). Called once by the exporter's owner.
pub fn describe() {
    describe_counter!(
        EVENTS_RECEIVED,
        "Valid envelopes consumed from the events queue."
    );
    describe_counter!(
        EVENTS_UNMATCHED,
        "Valid envelopes that matched no enabled webhook."
    );
    describe_counter!(
        QUARANTINED,
        "Messages moved to the quarantine queue, by reason."
    );
    describe_counter!(
        ATTEMPTS,
        "HTTP attempts, by result (delivered, or the failure kind)."
    );
    describe_histogram!(ATTEMPT_DURATION, "Duration of HTTP attempts.");
    describe_counter!(DELIVERIES_SUCCEEDED, "Deliveries that got a 2xx.");
    describe_counter!(
        DELIVERIES_FAILED,
        "Deliveries that exhausted their retries (Failed)."
    );
    describe_counter!(RETRIES_SCHEDULED, "Failed attempts sent to a retry tier.");
    describe_counter!(
        STALE_JOBS,
        "Redelivered or duplicate jobs skipped by the dedupe check."
    );
    describe_counter!(
        HANDLER_ERRORS,
        "Handlings that failed: handed back for an outage, or tried again later."
    );
    describe_counter!(
        DEFERRED,
        "Deliveries handed off or parked untried because their endpoint was saturated."
    );
    describe_gauge!(
        DELIVERIES_PARKED,
        "Deliveries parked in the database while their endpoint hangs (the database's count, \
         the same on every worker), read at each scrape."
    );
    describe_gauge!(
        WORKERS,
        "Worker processes consuming the events queue (its consumer count, sampled every few \
         seconds; the same on every worker). Each holds up to max_in_flight_per_endpoint \
         attempts per endpoint."
    );
    describe_histogram!(
        RECORD_BATCH_SIZE,
        "Delivery outcomes written per PostgreSQL transaction."
    );
}

pub fn attempt(result: &'static str, duration: Duration) {
    counter!(ATTEMPTS, "result" => result).increment(1);
    histogram!(ATTEMPT_DURATION).record(duration.as_secs_f64());
}

pub fn parked(deliveries: u64) {
    gauge!(DELIVERIES_PARKED).set(deliveries as f64);
}

pub fn workers(count: u32) {
    gauge!(WORKERS).set(f64::from(count));
}

pub fn quarantined(reason: &'static str) {
    counter!(QUARANTINED, "reason" => reason).increment(1);
}

pub fn handler_error(stage: &'static str) {
    counter!(HANDLER_ERRORS, "stage" => stage).increment(1);
}

/// Counts a delivery's settlement, once it is durable.
pub fn settled(counted: crate::settle::Counted) {
    use crate::settle::Counted;
    count(match counted {
        Counted::Succeeded => DELIVERIES_SUCCEEDED,
        Counted::RetryScheduled => RETRIES_SCHEDULED,
        Counted::Failed => DELIVERIES_FAILED,
        Counted::Deferred => DEFERRED,
    });
}

pub fn count(name: &'static str) {
    counter!(name).increment(1);
}

pub fn record_batch(writes: usize) {
    histogram!(RECORD_BATCH_SIZE).record(writes as f64);
}
