//! The deliveries queue (retry and manual jobs) and the dead-letter queue (Failed state).

use std::sync::Arc;

use super::{
    Pipeline, PipelineError,
    attempt::{self, Attempt},
    guarded,
};
use crate::{
    broker::{Disposition, Message},
    domain::{Job, QuarantineReason, Source},
    internal_events::StaleJobSkipped,
    settle::{self, Admission},
};

pub async fn handle_job(pipeline: Arc<Pipeline>, message: Message) -> Disposition {
    let job = match message.job() {
        Ok(job) => job,
        Err(e) => {
            return pipeline
                .quarantine(&message, QuarantineReason::InvalidJob, &e.to_string())
                .await;
        }
    };
    // A job whose delivery row, or the attempt before its own, is still missing after its
    // tries is not waiting for a batch commit: it ends in quarantine as `unknown_delivery`.
    let result = guarded(run_job(&pipeline, &job, message.body.clone())).await;
    pipeline.dispose(&message, Source::Job, result).await
}

async fn run_job(pipeline: &Pipeline, job: &Job, body: bytes::Bytes) -> Result<(), PipelineError> {
    let Some(target) = pipeline.storage.job_target(job.delivery_id).await? else {
        // The delivery row is written in a batch after its retry job is confirmed; a job that
        // outruns it (a short tier under load) waits for it. Without its webhook, the delivery
        // was deleted with it.
        if pipeline.storage.webhook(job.webhook_id).await?.is_some() {
            return Err(PipelineError::NotYetRecorded);
        }
        tracing::info!(event_id = %job.event_id, webhook_id = %job.webhook_id,
            delivery_id = %job.delivery_id, attempt = job.attempt,
            "job for a deleted webhook dropped");
        return Ok(());
    };
    // A job of a duplicate publish names its alias, and numbers its attempts from there.
    let aliased;
    let job = match target.alias_offset {
        Some(offset) => {
            aliased = Job {
                delivery_id: target.delivery_id,
                attempt: offset + job.attempt,
                ..job.clone()
            };
            &aliased
        }
        None => job,
    };
    match settle::admit(job.attempt, target.attempt_count, target.webhook.enabled) {
        Admission::Run => {}
        Admission::Wait => return Err(PipelineError::NotYetRecorded),
        Admission::Stale => {
            StaleJobSkipped {
                job,
                recorded: target.attempt_count,
            }
            .emit();
            return Ok(());
        }
        Admission::Disabled => {
            let reason = match target.webhook.disabled {
                Some((reason, _)) => format!("webhook disabled: {}", reason.as_str()),
                None => "webhook disabled".to_owned(),
            };
            pipeline
                .storage
                .mark_failed(job.delivery_id, target.attempt_count, Some(&reason))
                .await?;
            return Ok(());
        }
    }
    let attempt = Attempt {
        job: job.clone(),
        webhook: &target.webhook,
        body,
        event: None,
        event_at: target.event_at,
    };
    attempt::run(pipeline, attempt).await
}

pub async fn handle_dead(pipeline: Arc<Pipeline>, message: Message) -> Disposition {
    let job = match message.job() {
        Ok(job) => job,
        Err(e) => {
            return pipeline
                .quarantine(&message, QuarantineReason::InvalidJob, &e.to_string())
                .await;
        }
    };
    let result = guarded(confirm_failed(&pipeline, &job, message.reason())).await;
    pipeline.dispose(&message, Source::Dead, result).await
}

/// The attempt that gave up counted the failure and records Failed itself; this is the
/// confirmation, so a redelivered or stray dead job changes no count.
async fn confirm_failed(
    pipeline: &Pipeline,
    job: &Job,
    reason: Option<String>,
) -> Result<(), PipelineError> {
    let marked = pipeline
        .storage
        .mark_failed(job.delivery_id, job.attempt, reason.as_deref())
        .await?;
    if marked {
        tracing::info!(event_id = %job.event_id, webhook_id = %job.webhook_id,
            delivery_id = %job.delivery_id, attempt = job.attempt,
            "delivery failed after its last retry");
    } else {
        tracing::debug!(event_id = %job.event_id, webhook_id = %job.webhook_id,
            delivery_id = %job.delivery_id, attempt = job.attempt,
            "dead job for a delivery not at that attempt (recorded later, or unknown)");
    }
    Ok(())
}
