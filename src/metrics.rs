//! Every metric in one place: its name, kind, help text, histogram buckets and the label values
//! it starts with, and the helpers that record them. Labels stay low in cardinality: outcome
//! kinds, reason codes and queue roles, never a URL, an event id or a company. Durations are
//! histograms (buckets sum across workers; a summary's quantiles do not). Every counter exists
//! at 0 from the start, so `rate()` and ratios work before the first event.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::{
    circuit::Transition,
    domain::{QuarantineReason, Source},
    internal_events::QUARANTINE_STAGE,
    outcome::FailureKind,
};

pub const EVENTS_RECEIVED: &str = "tesoro_webhooks_events_received_total";
pub const EVENTS_UNMATCHED: &str = "tesoro_webhooks_events_unmatched_total";
pub const QUARANTINED: &str = "tesoro_webhooks_quarantined_total";
pub const ATTEMPTS: &str = "tesoro_webhooks_attempts_total";
pub const ATTEMPT_DURATION: &str = "tesoro_webhooks_attempt_duration_seconds";
pub const DELIVERY_LATENCY: &str = "tesoro_webhooks_delivery_latency_seconds";
pub const DELIVERIES_SUCCEEDED: &str = "tesoro_webhooks_deliveries_succeeded_total";
pub const DELIVERIES_FAILED: &str = "tesoro_webhooks_deliveries_failed_total";
pub const RETRIES_SCHEDULED: &str = "tesoro_webhooks_retries_scheduled_total";
pub const STALE_JOBS: &str = "tesoro_webhooks_stale_jobs_total";
pub const DEFERRED: &str = "tesoro_webhooks_deferred_total";
pub const HANDLER_ERRORS: &str = "tesoro_webhooks_handler_errors_total";
pub const PRUNED: &str = "tesoro_webhooks_pruned_total";
pub const OPERATIONAL_EVENTS: &str = "tesoro_webhooks_operational_events_total";
pub const CIRCUIT_TRANSITIONS: &str = "tesoro_webhooks_circuit_transitions_total";
pub const RECORD_BATCH_SIZE: &str = "tesoro_webhooks_record_batch_size";
pub const RECORD_COMMIT_DURATION: &str = "tesoro_webhooks_record_commit_duration_seconds";
pub const QUEUE_READY: &str = "tesoro_webhooks_queue_messages_ready";
pub const QUEUE_UNACKED: &str = "tesoro_webhooks_queue_messages_unacked";
pub const DELIVERIES_IN_FLIGHT: &str = "tesoro_webhooks_deliveries_in_flight";
pub const DELIVERIES_PARKED: &str = "tesoro_webhooks_deliveries_parked";
pub const CIRCUITS_OPEN: &str = "tesoro_webhooks_circuits_open";
pub const WEBHOOKS_DISABLED: &str = "tesoro_webhooks_webhooks_disabled";
pub const OLDEST_OVERDUE: &str = "tesoro_webhooks_oldest_overdue_delivery_seconds";
pub const OPERATIONAL_WAITING: &str = "tesoro_webhooks_operational_events_waiting";
pub const WORKERS: &str = "tesoro_webhooks_workers";
pub const DEPENDENCY_UP: &str = "tesoro_webhooks_dependency_up";
pub const BUILD_INFO: &str = "tesoro_webhooks_build_info";

/// What retention removes (`pruned_total{table}`).
pub const PRUNED_TABLES: &[&str] = &["deliveries", "attempts", "events"];

/// Seconds, from a fast local endpoint to the 5 s timeout and past it (a slow body).
const ATTEMPT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Seconds from the event's timestamp to its 2xx: a first attempt's milliseconds, a retry's
/// minutes or hours (the default schedule's last attempt comes about 2.6 h after the event).
const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
    3600.0, 7200.0, 14400.0, 86400.0,
];
/// Writes per batch: the recorder takes at most 512.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 512.0];
/// Seconds one batch statement takes to commit.
const COMMIT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The histograms and their buckets, for the exporter.
pub fn histogram_buckets() -> [(&'static str, &'static [f64]); 4] {
    [
        (ATTEMPT_DURATION, ATTEMPT_BUCKETS),
        (DELIVERY_LATENCY, LATENCY_BUCKETS),
        (RECORD_BATCH_SIZE, BATCH_SIZE_BUCKETS),
        (RECORD_COMMIT_DURATION, COMMIT_BUCKETS),
    ]
}

/// Registers descriptions (the `# HELP` lines) and every counter at 0. Called once by the
/// exporter's owner.
pub fn describe() {
    let counters: [(&str, &str); 13] = [
        (
            EVENTS_RECEIVED,
            "Valid envelopes consumed from the events queue.",
        ),
        (
            EVENTS_UNMATCHED,
            "Valid envelopes that matched no enabled webhook.",
        ),
        (
            QUARANTINED,
            "Messages moved to the quarantine queue, by reason.",
        ),
        (
            ATTEMPTS,
            "HTTP attempts, by result (delivered, or the failure kind).",
        ),
        (DELIVERIES_SUCCEEDED, "Deliveries that got a 2xx."),
        (
            DELIVERIES_FAILED,
            "Deliveries that exhausted their retries (Failed).",
        ),
        (RETRIES_SCHEDULED, "Failed attempts sent to a retry tier."),
        (
            STALE_JOBS,
            "Redelivered or duplicate jobs skipped by the dedupe check.",
        ),
        (
            HANDLER_ERRORS,
            "Handlings that failed: handed back for an outage, or tried again later.",
        ),
        (
            DEFERRED,
            "Deliveries handed off or parked untried: their endpoint was saturated, or its \
             rate limit had no start free in time.",
        ),
        (
            PRUNED,
            "Rows removed by retention, by table (deliveries, attempts, events).",
        ),
        (
            OPERATIONAL_EVENTS,
            "Operational events published (confirmed by the broker), by event.",
        ),
        (
            CIRCUIT_TRANSITIONS,
            "Endpoint circuits this worker opened or closed, by the state entered (open, \
             closed).",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, help);
    }
    let gauges = [
        (
            QUEUE_READY,
            "Messages ready in each queue (events, deliveries, retry tiers, dead, quarantine), \
             sampled every 5 s; the broker's count, the same on every worker: aggregate with max.",
        ),
        (
            QUEUE_UNACKED,
            "Messages this worker holds unacknowledged, per consumed queue: aggregate with sum.",
        ),
        (
            DELIVERIES_IN_FLIGHT,
            "Deliveries this worker is attempting or recording (bounded by max_in_flight).",
        ),
        (
            DELIVERIES_PARKED,
            "Deliveries parked in the database while their endpoint hangs or its circuit is \
             open (the database's count, the same on every worker), read at each scrape.",
        ),
        (
            CIRCUITS_OPEN,
            "Endpoints whose circuit is open in this worker: their work is parked, and one \
             probe per interval tries them.",
        ),
        (
            WEBHOOKS_DISABLED,
            "Webhooks that are disabled (the database's count), read at each scrape.",
        ),
        (
            OLDEST_OVERDUE,
            "How long the oldest delivery whose attempt is due has waited (0 when none), read \
             at each scrape.",
        ),
        (
            OPERATIONAL_WAITING,
            "Operational events not yet published (the database's count), read at each scrape.",
        ),
        (
            WORKERS,
            "Worker processes consuming the events queue (its consumer count, sampled every \
             few seconds; the same on every worker). Each holds up to \
             max_in_flight_per_endpoint attempts per endpoint.",
        ),
        (
            DEPENDENCY_UP,
            "0 while this worker waits out an outage of the dependency (database, broker) with \
             its consumers paused, else 1.",
        ),
        (
            BUILD_INFO,
            "Always 1; the version label names the running build.",
        ),
    ];
    for (name, help) in gauges {
        describe_gauge!(name, help);
    }
    describe_histogram!(
        ATTEMPT_DURATION,
        metrics::Unit::Seconds,
        "Duration of HTTP attempts."
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        metrics::Unit::Seconds,
        "From the event's timestamp to the 2xx that delivered it, retries included."
    );
    describe_histogram!(
        RECORD_BATCH_SIZE,
        "Delivery outcomes written per PostgreSQL transaction."
    );
    describe_histogram!(
        RECORD_COMMIT_DURATION,
        metrics::Unit::Seconds,
        "Time one batch of delivery outcomes takes to commit."
    );
    start_at_zero();
}

/// Every counter, with each label value it can take, at 0.
fn start_at_zero() {
    for name in [
        EVENTS_RECEIVED,
        EVENTS_UNMATCHED,
        DELIVERIES_SUCCEEDED,
        DELIVERIES_FAILED,
        RETRIES_SCHEDULED,
        STALE_JOBS,
        DEFERRED,
    ] {
        counter!(name).increment(0);
    }
    let results = std::iter::once("delivered").chain(FailureKind::ALL.iter().map(|k| k.as_str()));
    for result in results {
        counter!(ATTEMPTS, "result" => result).increment(0);
    }
    for reason in QuarantineReason::ALL {
        counter!(QUARANTINED, "reason" => reason.as_str()).increment(0);
    }
    let stages = Source::ALL.map(Source::as_str);
    for stage in stages.into_iter().chain([QUARANTINE_STAGE]) {
        counter!(HANDLER_ERRORS, "stage" => stage).increment(0);
    }
    for table in PRUNED_TABLES {
        counter!(PRUNED, "table" => *table).increment(0);
    }
    for transition in Transition::ALL {
        counter!(CIRCUIT_TRANSITIONS, "to" => transition.as_str()).increment(0);
    }
    gauge!(CIRCUITS_OPEN).set(0.0);
    for event in crate::endpoint_health::EVENT_TYPES {
        counter!(OPERATIONAL_EVENTS, "event" => event).increment(0);
    }
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    dependencies_up(None);
    // Registered, so their (empty) buckets are exported before the first observation.
    for (name, _) in histogram_buckets() {
        let _ = histogram!(name);
    }
}

/// An operational event of type `event` was published.
pub fn operational_event(event: &'static str) {
    counter!(OPERATIONAL_EVENTS, "event" => event).increment(1);
}

/// This worker opened or closed an endpoint's circuit.
pub fn circuit_changed(transition: Transition) {
    counter!(CIRCUIT_TRANSITIONS, "to" => transition.as_str()).increment(1);
    match transition {
        Transition::Opened => gauge!(CIRCUITS_OPEN).increment(1.0),
        Transition::Closed => gauge!(CIRCUITS_OPEN).decrement(1.0),
    }
}

/// A delivery got its 2xx `latency` after its event's timestamp.
pub fn delivered_after(latency: Duration) {
    histogram!(DELIVERY_LATENCY).record(latency.as_secs_f64());
}

/// The database's gauges, read at each scrape.
pub fn database_gauges(gauges: &crate::storage::DatabaseGauges) {
    gauge!(DELIVERIES_PARKED).set(gauges.parked as f64);
    gauge!(WEBHOOKS_DISABLED).set(gauges.disabled_webhooks as f64);
    gauge!(OLDEST_OVERDUE).set(gauges.oldest_overdue.as_secs_f64());
    gauge!(OPERATIONAL_WAITING).set(gauges.operational_waiting as f64);
}

/// Every dependency up but `outage`.
pub fn dependencies_up(outage: Option<crate::readiness::Dependency>) {
    use crate::readiness::Dependency;
    for dependency in [Dependency::Database, Dependency::Broker] {
        let up = if outage == Some(dependency) { 0.0 } else { 1.0 };
        gauge!(DEPENDENCY_UP, "dependency" => dependency.as_str()).set(up);
    }
}

pub fn workers(count: u32) {
    gauge!(WORKERS).set(f64::from(count));
}

/// `queue` is the queue's role (`events`, `retry_1m`, ...), not its full name.
pub fn queue_ready(queue: &str, messages: u32) {
    gauge!(QUEUE_READY, "queue" => queue.to_owned()).set(f64::from(messages));
}

pub fn queue_unacked(queue: &str, messages: usize) {
    gauge!(QUEUE_UNACKED, "queue" => queue.to_owned()).set(messages as f64);
}

pub fn deliveries_in_flight(deliveries: usize) {
    gauge!(DELIVERIES_IN_FLIGHT).set(deliveries as f64);
}

pub fn pruned(table: &'static str, rows: u64) {
    counter!(PRUNED, "table" => table).increment(rows);
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

/// One recorder batch of `writes`, committed (or not) in `took`.
pub fn record_batch(writes: usize, took: Duration) {
    histogram!(RECORD_BATCH_SIZE).record(writes as f64);
    histogram!(RECORD_COMMIT_DURATION).record(took.as_secs_f64());
}
