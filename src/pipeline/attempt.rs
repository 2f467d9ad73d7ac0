//! One attempt, and the execution of its settlement: what [`settle::settle`] decides, carried
//! out in the one order that keeps every outcome durable before the input message is acked.

use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;

use super::{
    Pipeline, PipelineError,
    limiter::{Acquired, Slot},
    rate::Reservation,
};
use crate::{
    circuit::{Admit, Transition},
    domain::{DisabledReason, Job, Source, Trigger},
    endpoint_health::Verdict,
    internal_events::AttemptMade,
    metrics,
    outcome::{self, FailureKind, Outcome},
    sender::{AttemptRequest, AttemptResult},
    settle::{self, Change, Counted, Publish, Settlement, Step},
    storage::{AttemptRecord, DeliveryWrite, EventRow, Webhook},
};

/// One delivery about to be attempted.
pub struct Attempt<'a> {
    pub job: Job,
    pub webhook: &'a Webhook,
    pub body: Bytes,
    /// The event row, for a delivery the fan-out creates; `None` when it is already stored
    /// (a delivery job).
    pub event: Option<EventRow>,
    /// The time the delivery is filed under in the log (`domain::event_time`).
    pub event_at: OffsetDateTime,
}

impl Attempt<'_> {
    fn source(&self) -> Source {
        match self.event {
            Some(_) => Source::Fanout,
            None => Source::Job,
        }
    }
}

/// How long work waits for a slot of a saturated endpoint before it is handed off or
/// deferred (a slow endpoint's work waits only briefly: see the limiter).
fn patience(source: Source) -> Duration {
    match source {
        Source::Fanout => Duration::from_millis(500),
        Source::Job | Source::Dead => Duration::from_secs(1),
    }
}

/// Attempts one delivery, or defers it when its endpoint has its fill of attempts in flight,
/// and carries out its settlement.
pub async fn run(pipeline: &Pipeline, attempt: Attempt<'_>) -> Result<(), PipelineError> {
    // Never closed, so acquiring only waits.
    let _in_flight = pipeline.in_flight.acquire().await.ok();
    let source = attempt.source();
    let probe = match pipeline.circuits.admit(attempt.webhook.id) {
        Admit::Attempt => false,
        Admit::Probe => true,
        // Someone asked for this attempt, likely after fixing the endpoint: it probes.
        Admit::Park if attempt.job.trigger == Trigger::Manual => true,
        Admit::Park => return defer(pipeline, attempt, Step::CircuitOpen).await,
    };
    if let Some(limit) = attempt.webhook.rate_limit {
        match pipeline
            .rates
            .reserve(attempt.webhook.id, limit, patience(source))
        {
            Reservation::At(at) => tokio::time::sleep_until(at.into()).await,
            Reservation::Refused => return defer(pipeline, attempt, Step::Busy).await,
        }
    }
    let acquired = pipeline
        .limiter
        .acquire_within(attempt.webhook.id, patience(source), source)
        .await;
    let untried = match acquired {
        Acquired::Slot(slot) => {
            // Boxed: a fan-out creates every delivery's future up front, and most wait above;
            // only the ones with a slot should pay for the (large) HTTP and recording state.
            return Box::pin(send(pipeline, attempt, slot, probe)).await;
        }
        Acquired::Busy => Step::Busy,
        Acquired::Stuck => Step::Stuck,
    };
    defer(pipeline, attempt, untried).await
}

/// Settles a delivery that was not attempted (`step`: busy, stuck or circuit open).
async fn defer(pipeline: &Pipeline, attempt: Attempt<'_>, step: Step) -> Result<(), PipelineError> {
    let settlement = settle::settle(
        &attempt.job,
        attempt.source(),
        step,
        &pipeline.schedule,
        OffsetDateTime::now_utc(),
    );
    Box::pin(execute(pipeline, settlement, attempt, None)).await
}

/// Makes the attempt in `slot` (`probe`: as its open circuit's probe), then carries out its
/// settlement.
async fn send(
    pipeline: &Pipeline,
    attempt: Attempt<'_>,
    slot: Slot,
    probe: bool,
) -> Result<(), PipelineError> {
    if let Some(limit) = attempt.webhook.rate_limit {
        pipeline.rates.start(attempt.webhook.id, limit).await;
    }
    let result = pipeline
        .sender
        .send(AttemptRequest {
            url: &attempt.webhook.url,
            event_id: &attempt.job.event_id,
            event_type: &attempt.job.event_type,
            attempt_number: attempt.job.attempt,
            signing: attempt.webhook.signing.as_ref(),
            headers: &attempt.webhook.headers,
            body: attempt.body.clone(),
        })
        .await;
    drop(slot);
    let failure_kind = result.failure.as_ref().map(|(kind, _)| *kind);
    let retry_after = result.response.as_ref().and_then(|r| r.retry_after);
    let outcome = outcome::classify(result.status(), failure_kind, retry_after);
    if let (Outcome::Delivered, Some(occurred_at)) = (outcome, attempt.job.occurred_at) {
        let received = result.started_at + result.duration;
        let latency = (received - occurred_at).try_into().unwrap_or_default();
        metrics::delivered_after(latency);
    }
    AttemptMade {
        job: &attempt.job,
        webhook_id: attempt.webhook.id,
        result: outcome
            .failure_kind()
            .map_or("delivered", FailureKind::as_str),
        status: result.status(),
        duration: result.duration,
    }
    .emit();
    let delivered = outcome == Outcome::Delivered;
    let circuit = pipeline
        .circuits
        .record(attempt.webhook.id, delivered, probe);
    let step = match probe && !delivered {
        true => Step::ProbeFailed(outcome),
        false => Step::Attempted(outcome),
    };
    let settlement = settle::settle(
        &attempt.job,
        attempt.source(),
        step,
        &pipeline.schedule,
        OffsetDateTime::now_utc(),
    );
    let webhook = attempt.webhook;
    execute(pipeline, settlement, attempt, Some(result)).await?;
    if let Some(transition) = circuit {
        note_circuit(pipeline, webhook, transition).await;
    }
    Ok(())
}

/// Writes that `webhook`'s circuit opened or closed (a close releases what is parked). The
/// delivery that caused it is settled already: should the write fail, this worker's breaker
/// still acts, and the next transition writes again.
async fn note_circuit(pipeline: &Pipeline, webhook: &Webhook, transition: Transition) {
    match pipeline.storage.note_circuit(webhook, transition).await {
        Ok(changed) => tracing::info!(webhook_id = %webhook.id, company_id = %webhook.company_id,
            circuit = transition.as_str(), first = changed, "endpoint circuit changed"),
        Err(e) => tracing::warn!(webhook_id = %webhook.id, company_id = %webhook.company_id,
            circuit = transition.as_str(), error = %e,
            "cannot record the endpoint's circuit change"),
    }
}

/// Carries out `settlement` in its fixed order: the `prepare` write, the publish (confirmed),
/// the `record` write, the count. The event row goes with the first write, the attempt's
/// result with `record`. Any step that fails ends it there, and the message is not acked.
async fn execute(
    pipeline: &Pipeline,
    settlement: Settlement,
    attempt: Attempt<'_>,
    result: Option<AttemptResult>,
) -> Result<(), PipelineError> {
    let Attempt {
        job,
        webhook,
        body,
        mut event,
        event_at,
    } = attempt;
    let Settlement {
        prepare,
        publish,
        record,
        count,
        disable,
    } = settlement;
    if let Some(change) = prepare {
        let write = delivery_write(&job, webhook, event_at, event.take(), change);
        pipeline.recorder.write(write).await?;
    }
    // When a retry's job comes back: the delay queue picked (the jitter) decides it.
    let mut comes_back = None;
    if let Some(publish) = publish {
        let publisher = &pipeline.publisher;
        match publish {
            Publish::Tier {
                job,
                after,
                at_least,
            } => {
                let waits = publisher
                    .schedule_retry(&job, after, at_least, &body)
                    .await?;
                comes_back = Some(OffsetDateTime::now_utc() + waits);
            }
            Publish::Now(job) => publisher.enqueue(&job, &body).await?,
            Publish::DeadLetter(job) => {
                let reason = result.as_ref().map_or_else(String::new, describe_failure);
                publisher.dead_letter(&job, &body, &reason).await?;
            }
        }
    }
    if let Some(mut change) = record {
        if change.next_attempt_at.is_some() {
            change.next_attempt_at = comes_back.or(change.next_attempt_at);
        }
        let write = DeliveryWrite {
            attempt: result.map(|result| to_record(&job, webhook, result)),
            ..delivery_write(&job, webhook, event_at, event.take(), change)
        };
        pipeline.recorder.write(write).await?;
    }
    if let Some(reason) = disable
        && pipeline
            .storage
            .disable_webhook(webhook.id, reason)
            .await?
            .is_some()
    {
        tracing::warn!(webhook_id = %webhook.id, company_id = %webhook.company_id,
            reason = reason.as_str(), "webhook disabled");
    }
    match count {
        Counted::Failed if disable.is_none() => note_failed(pipeline, webhook).await?,
        Counted::Succeeded if webhook.failing => note_recovered(pipeline, webhook).await?,
        _ => {}
    }
    metrics::settled(count);
    Ok(())
}

/// Counts a Failed delivery in its webhook's streak, which may warn its owner or disable it.
/// After the outcome is recorded: should the worker stop in between, that one failure goes
/// uncounted (the redelivered job finds its attempt recorded).
async fn note_failed(pipeline: &Pipeline, webhook: &Webhook) -> Result<(), PipelineError> {
    let verdict = pipeline
        .storage
        .note_failed(webhook, &pipeline.endpoint_health)
        .await?;
    if verdict == Verdict::Disable {
        tracing::warn!(webhook_id = %webhook.id, company_id = %webhook.company_id,
            reason = DisabledReason::FailingTooLong.as_str(), "webhook disabled");
    }
    Ok(())
}

/// Ends the failing streak of a webhook that just delivered.
async fn note_recovered(pipeline: &Pipeline, webhook: &Webhook) -> Result<(), PipelineError> {
    if pipeline.storage.note_recovered(webhook).await? {
        tracing::info!(webhook_id = %webhook.id, company_id = %webhook.company_id,
            "webhook recovered");
    }
    Ok(())
}

/// The write that applies `change` to `job`'s delivery.
fn delivery_write(
    job: &Job,
    webhook: &Webhook,
    event_at: OffsetDateTime,
    event: Option<EventRow>,
    change: Change,
) -> DeliveryWrite {
    DeliveryWrite {
        event,
        delivery_id: job.delivery_id,
        event_id: job.event_id.clone(),
        webhook_id: webhook.id,
        company_id: webhook.company_id.clone(),
        event_type: job.event_type.clone(),
        event_at,
        status: change.status,
        attempt_count: change.attempt_count,
        next_attempt_at: change.next_attempt_at,
        parked_until: change.parked_until,
        attempt: None,
    }
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
