//! One attempt, and its settlement: record it, and publish what comes next, in the order that
//! keeps every outcome durable before the input message is acked.

use bytes::Bytes;
use time::OffsetDateTime;

use super::{Pipeline, PipelineError};
use crate::{
    broker::Job,
    metrics,
    outcome::{self, NextStep, Outcome},
    sender::{AttemptRequest, AttemptResult},
    storage::{AttemptRecord, DeliveryState, DeliveryStatus, Webhook},
};

/// Attempts `job` against `webhook` and settles it:
/// - delivered: record it (Succeeded);
/// - failed with tiers left: publish the next job to its tier (confirmed), then record;
/// - failed on the last tier: publish to the dead-letter queue (confirmed), then record it
///   Failed (the dead-letter consumer marks it Failed as well, whichever comes first).
///
/// Publishing before recording means a crash in between repeats the attempt rather than
/// losing the retry; the duplicate job that may leave behind is skipped by its attempt number.
pub async fn attempt_and_settle(
    pipeline: &Pipeline,
    job: &Job,
    webhook: &Webhook,
    body: Bytes,
) -> Result<(), PipelineError> {
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
    let failure_kind = result.failure.as_ref().map(|(kind, _)| *kind);
    let outcome = outcome::classify(result.status(), failure_kind);
    metrics::attempt(
        match outcome {
            Outcome::Delivered => "delivered",
            Outcome::Failed(kind) => kind.as_str(),
        },
        result.duration,
    );
    let state = match outcome::next_step(outcome, &pipeline.schedule, job.series_attempt) {
        NextStep::Done => {
            metrics::count(metrics::DELIVERIES_SUCCEEDED);
            DeliveryState {
                status: DeliveryStatus::Succeeded,
                next_attempt_at: None,
            }
        }
        NextStep::Retry {
            after,
            next_attempt,
        } => {
            let next = Job {
                attempt: job.attempt + 1,
                series_attempt: next_attempt,
                trigger: crate::storage::Trigger::Automatic,
                ..job.clone()
            };
            pipeline
                .publisher
                .schedule_retry(&next, after, &body)
                .await?;
            metrics::count(metrics::RETRIES_SCHEDULED);
            DeliveryState {
                status: DeliveryStatus::Retrying,
                next_attempt_at: Some(OffsetDateTime::now_utc() + after),
            }
        }
        NextStep::GiveUp => {
            let reason = describe_failure(&result);
            pipeline.publisher.dead_letter(job, &body, &reason).await?;
            // Recorded as Failed here too: the dead-letter consumer may mark it before this
            // commits, and recording anything else would undo that.
            DeliveryState {
                status: DeliveryStatus::Failed,
                next_attempt_at: None,
            }
        }
    };
    pipeline
        .storage
        .record_attempt(&to_record(job, webhook, result), state)
        .await?;
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
    let response = result.response;
    AttemptRecord {
        delivery_id: job.delivery_id,
        webhook_id: webhook.id,
        attempt_number: job.attempt,
        trigger: job.trigger,
        attempted_at: result.started_at,
        duration: result.duration,
        request_headers: result.request_headers,
        response_status: response.as_ref().map(|r| r.status),
        response_body_truncated: response.as_ref().is_some_and(|r| r.truncated),
        response_headers: response.as_ref().map(|r| r.headers.clone()),
        response_body: response.map(|r| r.body),
        error_kind,
        error_message,
    }
}
