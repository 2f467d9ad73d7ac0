//! Keeps the delivery log bounded: every `retention.interval`, one worker (whichever takes the
//! pruning lock) deletes what `retention` says is old enough, in batches, pausing after each
//! for four times as long as it took, so the recorder and the API keep the database. `tesoro-webhooks prune` does the same
//! once, or with `--dry-run` reports what would go.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::{
    config::RetentionConfig,
    domain::DeliveryId,
    metrics,
    storage::{PruneCounts, Pruner, Storage, StorageError},
};

/// Deliveries deleted per statement.
const BATCH: i64 = 1000;
/// After each batch, pruning waits this many times as long as the batch took, so it takes at
/// most a fifth of one connection's time, and less when the database is busy (the batches
/// take longer, and so do the pauses): deliveries keep their share of the database.
const PAUSE_FACTOR: u32 = 4;
/// The shortest pause between two batches.
const MIN_PAUSE: Duration = Duration::from_millis(20);

/// The ids below which succeeded and Failed deliveries are old enough to go, at `now`.
pub fn boundaries(config: &RetentionConfig, now: OffsetDateTime) -> (DeliveryId, DeliveryId) {
    (
        DeliveryId::lowest_at(now - config.max_age),
        DeliveryId::lowest_at(now - config.failed_max_age),
    )
}

/// Prunes everything old enough now, unless `stop` fires first. `None` when another process
/// holds the pruning lock (it is pruning).
pub async fn prune_once(
    database_url: &str,
    config: &RetentionConfig,
    stop: &CancellationToken,
) -> Result<Option<PruneCounts>, StorageError> {
    let Some(pruner) = Pruner::lock(database_url).await? else {
        return Ok(None);
    };
    let (succeeded_before, failed_before) = boundaries(config, OffsetDateTime::now_utc());
    let mut total = PruneCounts::default();
    let mut after = DeliveryId(uuid::Uuid::nil());
    while !stop.is_cancelled() {
        let started = std::time::Instant::now();
        let (batch, last) = pruner
            .prune_batch(succeeded_before, failed_before, after, BATCH)
            .await?;
        after = last.unwrap_or(after);
        let took = started.elapsed();
        metrics::pruned("deliveries", batch.deliveries);
        metrics::pruned("attempts", batch.attempts);
        metrics::pruned("events", batch.events);
        total.add(batch);
        if batch.deliveries < BATCH.unsigned_abs() {
            break;
        }
        tokio::time::sleep((took * PAUSE_FACTOR).max(MIN_PAUSE)).await;
    }
    Ok(Some(total))
}

/// Prunes every `config.interval` until `stop`. A failed round is logged and tried again at
/// the next. Each round also seals again under the first key of `security.secret_keys` what
/// a worker on an older key list sealed under another meanwhile (during a key rotation).
pub async fn run(
    storage: Storage,
    database_url: String,
    config: RetentionConfig,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(config.interval) => {}
        }
        if let Err(e) = storage.seal_under_first_key().await {
            tracing::warn!(error = %e, "cannot seal signing keys again; the next round tries");
        }
        let pruned = tokio::select! {
            // Stopping: the batch under way is rolled back with the session.
            () = stop.cancelled() => return,
            pruned = prune_once(&database_url, &config, &stop) => pruned,
        };
        match pruned {
            Ok(Some(pruned)) if pruned.deliveries > 0 => tracing::info!(
                deliveries = pruned.deliveries,
                attempts = pruned.attempts,
                events = pruned.events,
                "pruned the delivery log"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning failed; the next round tries again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_deliveries_have_the_earlier_boundary() {
        let config = RetentionConfig {
            max_age: Duration::from_secs(30 * 86_400),
            failed_max_age: Duration::from_secs(90 * 86_400),
            interval: Duration::from_secs(600),
        };
        let now = OffsetDateTime::now_utc();
        let (succeeded, failed) = boundaries(&config, now);
        assert!(failed < succeeded);
        assert_eq!(succeeded, DeliveryId::lowest_at(now - config.max_age));
        assert!(succeeded < DeliveryId::new(), "today's deliveries stay");
    }
}
