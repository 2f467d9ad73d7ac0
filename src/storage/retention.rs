//! Retention: succeeded deliveries older than `retention.max_age` and Failed ones older than
//! `retention.failed_max_age` are deleted with their attempts, and an event goes with its last
//! delivery. Delivery ids are UUID v7, ordered by creation time, so "older than" is a range of
//! the primary key: each batch reads the oldest rows off the index, no extra index is needed.
//! (Range partitions by day would drop old days whole, but PostgreSQL wants the partition key
//! in every unique key, and the dedupe on (event id, webhook id) must hold across days.)

use tokio_postgres::Client;

use super::{Storage, StorageError, migrate};
use crate::domain::DeliveryId;

/// Rows removed, or that would be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCounts {
    pub deliveries: u64,
    pub attempts: u64,
    pub events: u64,
}

impl PruneCounts {
    pub fn add(&mut self, other: PruneCounts) {
        self.deliveries += other.deliveries;
        self.attempts += other.attempts;
        self.events += other.events;
    }
}

/// One worker at a time prunes: the lock is held by a session of its own, so it goes away with
/// the session however the pruning ends.
const PRUNING_LOCK: i64 = 0x7e50_0002;

/// The deliveries a prune removes: succeeded ones created before `$1`, Failed ones created
/// before `$2` (which is not later than `$1`). Pending and retrying ones stay, whatever their
/// age: their next attempt is under way.
const DOOMED: &str = "
    SELECT id, event_id FROM deliveries
    WHERE id < $1 AND (status = 'succeeded' OR (status = 'failed' AND id < $2))";

/// A connection holding the pruning lock.
pub struct Pruner {
    client: Client,
}

impl Pruner {
    /// Takes the pruning lock on a connection of its own; `None` when another process has it.
    pub async fn lock(url: &str) -> Result<Option<Self>, StorageError> {
        let client = migrate::connect(url).await?;
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&PRUNING_LOCK])
            .await?;
        Ok(row.try_get::<_, bool>(0)?.then_some(Self { client }))
    }

    /// Deletes up to `limit` of the oldest prunable deliveries after `after`, their attempts,
    /// and the events left without a delivery, in one statement; returns the counts and the
    /// last delivery deleted, where the next batch of the round starts (the rows before it
    /// that stay, younger Failed ones and those under way, are not read again). Rows another
    /// transaction holds are skipped.
    pub async fn prune_batch(
        &self,
        succeeded_before: DeliveryId,
        failed_before: DeliveryId,
        after: DeliveryId,
        limit: i64,
    ) -> Result<(PruneCounts, Option<DeliveryId>), StorageError> {
        let statement = format!(
            "WITH doomed AS (
                {DOOMED} AND id > $4 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED
            ),
            gone AS (
                DELETE FROM deliveries d USING doomed WHERE d.id = doomed.id
                RETURNING d.id, d.event_id
            ),
            gone_attempts AS (
                DELETE FROM attempts a USING gone WHERE a.delivery_id = gone.id RETURNING 1
            ),
            gone_events AS (
                -- Every part of one statement sees the same snapshot: the deliveries deleted
                -- above still show, so they are left out by hand.
                DELETE FROM events e
                WHERE e.id IN (SELECT event_id FROM gone)
                  AND NOT EXISTS (
                      SELECT 1 FROM deliveries d
                      WHERE d.event_id = e.id AND d.id NOT IN (SELECT id FROM gone))
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM gone_attempts),
                (SELECT count(*) FROM gone_events),
                (SELECT id FROM gone ORDER BY id DESC LIMIT 1)"
        );
        let row = self
            .client
            .query_one(
                &statement,
                &[&succeeded_before.0, &failed_before.0, &limit, &after.0],
            )
            .await?;
        let last = row.try_get::<_, Option<uuid::Uuid>>(3)?.map(DeliveryId);
        Ok((counts(&row)?, last))
    }
}

fn counts(row: &tokio_postgres::Row) -> Result<PruneCounts, StorageError> {
    let count = |i| -> Result<u64, StorageError> {
        Ok(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0))
    };
    Ok(PruneCounts {
        deliveries: count(0)?,
        attempts: count(1)?,
        events: count(2)?,
    })
}

impl Storage {
    /// Every delivery stored (the benchmark counts what pruning removed with it).
    pub async fn count_deliveries(&self) -> Result<u64, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM deliveries", &[])
            .await?;
        Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0))
    }

    /// What a prune with these boundaries would remove now (`prune --dry-run`).
    pub async fn prunable(
        &self,
        succeeded_before: DeliveryId,
        failed_before: DeliveryId,
    ) -> Result<PruneCounts, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "WITH doomed AS ({DOOMED})
                    SELECT (SELECT count(*) FROM doomed),
                        (SELECT count(*) FROM attempts a JOIN doomed ON a.delivery_id = doomed.id),
                        (SELECT count(*) FROM events e
                         WHERE e.id IN (SELECT event_id FROM doomed)
                           AND NOT EXISTS (
                               SELECT 1 FROM deliveries d
                               WHERE d.event_id = e.id AND d.id NOT IN (SELECT id FROM doomed)))"
                ),
                &[&succeeded_before.0, &failed_before.0],
            )
            .await?;
        counts(&row)
    }
}
