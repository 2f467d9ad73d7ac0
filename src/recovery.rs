//! Manual retry of one delivery, and replay (recover) of Failed deliveries: the one place both
//! the admin API and the CLI go through.
//!
//! A manual job is published (confirmed) before the delivery is marked pending: a crash in
//! between leaves a job that runs anyway, never a pending delivery without a job.

use crate::{
    broker::{BrokerError, Publisher},
    domain::{DeliveryStatus, Job, Trigger},
    storage::{ReplayScope, RetryTarget, Storage, StorageError, Window},
};

/// Deliveries read and re-enqueued per round of a replay.
const REPLAY_BATCH: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryResult {
    /// A manual job is on its way.
    Enqueued,
    /// The delivery is already waiting for an attempt (pending, or retrying with its job in a
    /// tier); nothing was added, so no attempt is ever enqueued twice.
    AlreadyPending,
}

/// The job that re-sends `target` now: the next attempt number, a new series from the first
/// tier, marked manual.
fn manual_job(target: &RetryTarget) -> Job {
    Job::new_series(&target.delivery, target.attempt_count, Trigger::Manual)
}

/// Re-sends one delivery (Succeeded or Failed), unless it is already waiting for an attempt:
/// a retrying delivery's next job is in its tier, and a second job for the same attempt would
/// race it (one of the two skipped as stale).
pub async fn retry_delivery(
    storage: &Storage,
    publisher: &Publisher,
    target: &RetryTarget,
) -> Result<RetryResult, RecoveryError> {
    if target.status.awaits_attempt() {
        return Ok(RetryResult::AlreadyPending);
    }
    publisher.enqueue(&manual_job(target), &target.body).await?;
    storage
        .mark_requeued(&[target.delivery.delivery_id], target.status)
        .await?;
    Ok(RetryResult::Enqueued)
}

/// Re-enqueues every Failed delivery in scope and window, in batches, calling `progress` with
/// the running total. Returns how many were enqueued. Deliveries marked pending by a previous
/// run are no longer Failed, so running it twice does not enqueue them twice.
pub async fn replay_failed(
    storage: &Storage,
    publisher: &Publisher,
    scope: &ReplayScope,
    window: Window,
    mut progress: impl FnMut(u64),
) -> Result<u64, RecoveryError> {
    let mut enqueued = 0;
    let mut cursor = None;
    loop {
        let batch = storage
            .failed_deliveries(scope, window, cursor, REPLAY_BATCH)
            .await?;
        let Some(last) = batch.last() else { break };
        cursor = Some(last.delivery.delivery_id);
        for target in &batch {
            publisher.enqueue(&manual_job(target), &target.body).await?;
        }
        let ids: Vec<_> = batch.iter().map(|t| t.delivery.delivery_id).collect();
        storage.mark_requeued(&ids, DeliveryStatus::Failed).await?;
        enqueued += ids.len() as u64;
        progress(enqueued);
    }
    Ok(enqueued)
}
