//! One attempt, and its settlement: record it, and publish what comes next, in the order that
//! keeps every outcome durable before the input message is acked.

use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;

use super::{
    Pipeline, PipelineError,
    limiter::{Acquired, Slot, Work},
};
use crate::{
    broker::Job,
    metrics,
    outcome::{self, NextStep, Outcome},
    sender::{AttemptRequest, AttemptResult},
    storage::{AttemptRecord, DeliveryStatus, DeliveryWrite, EventRow, Trigger, Webhook},
};

/// One delivery about to be attempted.
pub struct Attempt<'a> {
    pub job: Job,
    pub webhook: &'a Webhook,
    pub body: Bytes,
    /// The event row, for a delivery the fan-out creates; `None` when it is already stored.
    pub event: Option<EventRow>,
    /// What to do when the endpoint has its fill of attempts in flight.
    pub when_saturated: Saturated,
}

/// Where work for a saturated endpoint goes, after waiting for a free slot (a slow
/// endpoint's work waits only briefly: see the limiter).
#[derive(Debug, Clone, Copy)]
pub enum Saturated {
    /// The fan-out: hand the delivery to the deliveries queue, so the event (and its healthy
    /// deliveries) need not wait on a slow endpoint.
    HandOff,
    /// The job consumer: park the job in the first tier.
    Defer,
}

impl Saturated {
    fn patience(self) -> Duration {
        match self {
            Saturated::HandOff => Duration::from_millis(500),
            Saturated::Defer => Duration::from_secs(1),
        }
    }

    /// The fan-out's deliveries are new work; the job consumer's are jobs.
    fn work(self) -> Work {
        match self {
            Saturated::HandOff => Work::New,
            Saturated::Defer => Work::Job,
        }
    }
}

/// Attempts and settles one delivery:
/// - delivered: record it (Succeeded);
/// - failed with tiers left: publish the next job to its tier (confirmed), then record;
/// - failed on the last tier: publish to the dead-letter queue (confirmed), then record it
///   Failed (the dead-letter consumer marks it Failed as well, whichever comes first);
/// - endpoint saturated: hand the job off or park it, untried (see `park`).
///
/// Publishing before recording means a crash in between repeats the attempt rather than
/// losing the retry; the duplicate job that may leave behind is skipped by its attempt number.
pub async fn attempt_and_settle(
    pipeline: &Pipeline,
    attempt: Attempt<'_>,
) -> Result<(), PipelineError> {
    // Never closed, so acquiring only waits.
    let _in_flight = pipeline.in_flight.acquire().await.ok();
    let saturated = attempt.when_saturated;
    let slot = match pipeline
        .limiter
        .acquire_within(attempt.webhook.id, saturated.patience(), saturated.work())
        .await
    {
        Acquired::Slot(slot) => slot,
        Acquired::Busy => return Box::pin(park(pipeline, attempt)).await,
        // A hanging endpoint's work is parked at once: handing it off would only meet the
        // same full slots again.
        Acquired::Stuck => return Box::pin(park(pipeline, defer(attempt))).await,
    };
    // Boxed: a fan-out creates every delivery's future up front, and most wait above; only
    // the ones with a slot should pay for the (large) HTTP and recording state.
    Box::pin(send_and_settle(pipeline, attempt, slot)).await
}

fn defer(attempt: Attempt<'_>) -> Attempt<'_> {
    Attempt {
        when_saturated: Saturated::Defer,
        ..attempt
    }
}

async fn send_and_settle(
    pipeline: &Pipeline,
    attempt: Attempt<'_>,
    slot: Slot,
) -> Result<(), PipelineError> {
    let Attempt {
        job,
        webhook,
        body,
        event,
        ..
    } = attempt;
    let result = pipeline
        .sender
        .send(AttemptRequest {
            url: &webhook.url,
            event_id: &job.event_id,
            event_type: &job.event_type,
            attempt_number: job.attempt,
            secret: webhook.secret.as_ref(),
            body: body.clone(),
        })
        .await;
    drop(slot);
    let failure_kind = result.failure.as_ref().map(|(kind, _)| *kind);
    let outcome = outcome::classify(result.status(), failure_kind);
    metrics::attempt(
        match outcome {
            Outcome::Delivered => "delivered",
            Outcome::Failed(kind) => kind.as_str(),
        },
        result.duration,
    );
    let step = outcome::next_step(outcome, &pipeline.schedule, job.series_attempt);
    let (status, next_attempt_at, counter) = match step {
        NextStep::Done => (
            DeliveryStatus::Succeeded,
            None,
            metrics::DELIVERIES_SUCCEEDED,
        ),
        NextStep::Retry {
            after,
            next_attempt,
        } => {
            let next = Job {
                attempt: job.attempt + 1,
                series_attempt: next_attempt,
                trigger: Trigger::Automatic,
                ..job.clone()
            };
            pipeline
                .publisher
                .schedule_retry(&next, after, &body)
                .await?;
            let at = OffsetDateTime::now_utc() + after;
            (
                DeliveryStatus::Retrying,
                Some(at),
                metrics::RETRIES_SCHEDULED,
            )
        }
        NextStep::GiveUp => {
            let reason = describe_failure(&result);
            pipeline.publisher.dead_letter(&job, &body, &reason).await?;
            (DeliveryStatus::Failed, None, metrics::DELIVERIES_FAILED)
        }
    };
    let record = to_record(&job, webhook, result);
    pipeline
        .recorder
        .write(DeliveryWrite {
            next_attempt_at,
            attempt: Some(record),
            ..delivery_write(&job, webhook, event, status)
        })
        .await?;
    // Counted once the outcome is durable: a write that failed is tried again, and its
    // redelivery would count the same outcome twice.
    metrics::count(counter);
    Ok(())
}

/// The write that moves `job`'s delivery to `status` with `job.attempt` attempts made.
fn delivery_write(
    job: &Job,
    webhook: &Webhook,
    event: Option<EventRow>,
    status: DeliveryStatus,
) -> DeliveryWrite {
    DeliveryWrite {
        event,
        delivery_id: job.delivery_id,
        event_id: job.event_id.to_string(),
        webhook_id: webhook.id,
        company_id: webhook.company_id.to_string(),
        event_type: job.event_type.clone(),
        status,
        attempt_count: job.attempt,
        next_attempt_at: None,
        parked_until: None,
        attempt: None,
    }
}

/// The endpoint has its fill of attempts in flight: the job, untried and unchanged, goes
/// - `HandOff`: to the deliveries queue, its fresh delivery first recorded as pending (so the
///   job always finds its row, and a crash before the publish leaves the event unacked);
/// - `Defer`, a fresh delivery: to the parking lot, a pending row that the sweeper turns
///   into a job after the first tier's delay; one batched write, no publish;
/// - `Defer`, a job: to the first retry tier.
async fn park(pipeline: &Pipeline, attempt: Attempt<'_>) -> Result<(), PipelineError> {
    let Attempt {
        job,
        webhook,
        body,
        event,
        when_saturated,
    } = attempt;
    match (when_saturated, event) {
        (Saturated::HandOff, event) => {
            if event.is_some() {
                pipeline
                    .recorder
                    .write(DeliveryWrite {
                        attempt_count: job.attempt - 1,
                        next_attempt_at: Some(OffsetDateTime::now_utc()),
                        ..delivery_write(&job, webhook, event, DeliveryStatus::Pending)
                    })
                    .await?;
            }
            pipeline.publisher.enqueue(&job, &body).await?;
        }
        (Saturated::Defer, Some(event)) => {
            let until = OffsetDateTime::now_utc() + pipeline.schedule.delays()[0];
            pipeline
                .recorder
                .write(DeliveryWrite {
                    attempt_count: job.attempt - 1,
                    next_attempt_at: Some(until),
                    parked_until: Some(until),
                    ..delivery_write(&job, webhook, Some(event), DeliveryStatus::Pending)
                })
                .await?;
        }
        (Saturated::Defer, None) => {
            let delay = pipeline.schedule.delays()[0];
            pipeline
                .publisher
                .schedule_retry(&job, delay, &body)
                .await?;
        }
    }
    metrics::count(metrics::DEFERRED);
    Ok(())
}

fn describe_failure(result: &AttemptResult) -> String {
    match (&result.failure, result.status()) {
        (Some((kind, message)), _) => format!("{}: {message}", kind.as_str()),
        (None, Some(status)) => format!("status {status}"),
        (None, None) => "no response".to_owned(),
    }
}

fn to_record(job: &Job, webhook: &Webhook, result: AttemptResult) -> AttemptRecord {
    let (error_kind, error_message) = match result.failure {
        Some((kind, message)) => (Some(kind), Some(message)),
        None => (None, None),
    };
    let (response_status, response_headers, response_body, response_body_truncated) =
        match result.response {
            Some(r) => (Some(r.status), Some(r.headers), Some(r.body), r.truncated),
            None => (None, None, None, false),
        };
    AttemptRecord {
        delivery_id: job.delivery_id,
        webhook_id: webhook.id,
        attempt_number: job.attempt,
        trigger: job.trigger,
        attempted_at: result.started_at,
        duration: result.duration,
        request_headers: result.request_headers,
        response_status,
        response_body_truncated,
        response_headers,
        response_body,
        error_kind,
        error_message,
    }
}
