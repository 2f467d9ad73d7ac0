//! Keeps the delivery log bounded: every `retention.interval`, one worker (whichever takes the
//! pruning lock) creates the log's next partitions and retires those past retention, whole
//! (`storage::partitions`). `tesoro-webhooks prune` does the same once, or with `--dry-run`
//! reports what would go.

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::{
    config::RetentionConfig,
    metrics,
    storage::{PruneCounts, Pruner, Storage, StorageError},
};

/// Keeps the partitions once now. `None` when another process holds the pruning lock (it is
/// keeping them).
pub async fn prune_once(
    database_url: &str,
    config: &RetentionConfig,
) -> Result<Option<PruneCounts>, StorageError> {
    let Some(pruner) = Pruner::lock(database_url).await? else {
        return Ok(None);
    };
    let now = OffsetDateTime::now_utc();
    pruner.create_ahead(config, now).await?;
    let pruned = pruner.retire(config, now).await?;
    metrics::pruned("deliveries", pruned.deliveries);
    metrics::pruned("attempts", pruned.attempts);
    metrics::pruned("events", pruned.events);
    Ok(Some(pruned))
}

/// What `prune_once` would remove now, or `None` while another process holds the lock.
pub async fn prunable(
    database_url: &str,
    config: &RetentionConfig,
) -> Result<Option<PruneCounts>, StorageError> {
    let Some(pruner) = Pruner::lock(database_url).await? else {
        return Ok(None);
    };
    Ok(Some(
        pruner.prunable(config, OffsetDateTime::now_utc()).await?,
    ))
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
            // Stopping: the transaction under way is rolled back with the session.
            () = stop.cancelled() => return,
            pruned = prune_once(&database_url, &config) => pruned,
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
