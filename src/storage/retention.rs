//! Retention of the delivery log: partitions retired whole once past `retention.max_age`
//! (Failed deliveries by `retention.failed_max_age`, pending and retrying ones whatever their
//! age), and created ahead of need, by one worker at a time. See `partitions`.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::Client;

use super::{Storage, StorageError, migrate, partitions};
use crate::config::RetentionConfig;

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

    /// The count of the log's table `table` (`deliveries`, `attempts` or `events`).
    pub fn of_table(&mut self, table: &str) -> &mut u64 {
        match table {
            "attempts" => &mut self.attempts,
            "events" => &mut self.events,
            _ => &mut self.deliveries,
        }
    }

    /// These counts less `other`'s (none below zero).
    pub fn less(self, other: PruneCounts) -> PruneCounts {
        PruneCounts {
            deliveries: self.deliveries.saturating_sub(other.deliveries),
            attempts: self.attempts.saturating_sub(other.attempts),
            events: self.events.saturating_sub(other.events),
        }
    }
}

/// One worker at a time keeps the partitions: the lock is held by a session of its own, so it
/// goes away with the session however the work ends.
const PRUNING_LOCK: i64 = 0x7e50_0002;

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
        if !row.try_get::<_, bool>(0)? {
            return Ok(None);
        }
        partitions::bound_lock_waits(&client).await?;
        Ok(Some(Self { client }))
    }

    /// Creates the partitions of the next `retention.partition`s that are missing; returns
    /// how many it created.
    pub async fn create_ahead(
        &self,
        config: &RetentionConfig,
        now: OffsetDateTime,
    ) -> Result<usize, StorageError> {
        partitions::ensure(
            &self.client,
            config.partition,
            &partitions::ahead(now, config.partition),
        )
        .await
    }

    /// Retires the partitions past retention at `now`; returns what went.
    pub async fn retire(
        &self,
        config: &RetentionConfig,
        now: OffsetDateTime,
    ) -> Result<PruneCounts, StorageError> {
        partitions::retire(&self.client, config, now, false).await
    }

    /// What `retire` would remove at `now`.
    pub async fn prunable(
        &self,
        config: &RetentionConfig,
        now: OffsetDateTime,
    ) -> Result<PruneCounts, StorageError> {
        partitions::retire(&self.client, config, now, true).await
    }
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

    /// Creates partitions that hold each of `times` where none does: the writes of the log
    /// call it when PostgreSQL found no partition for a row (the worker that keeps them ahead
    /// has not run yet, or an event is filed in the past).
    pub async fn create_partitions_for(
        &self,
        partition: Duration,
        times: &[OffsetDateTime],
    ) -> Result<usize, StorageError> {
        let client = migrate::connect(&self.url).await?;
        partitions::bound_lock_waits(&client).await?;
        partitions::ensure(&client, partition, times).await
    }

    /// Creates the partitions of the next `partition`s that are missing, without the pruning
    /// lock (a race with another worker is harmless): what a start does, so the first events
    /// after an upgrade or a long stop find their partition.
    pub async fn create_partitions_ahead(
        &self,
        partition: Duration,
    ) -> Result<usize, StorageError> {
        let times = partitions::ahead(OffsetDateTime::now_utc(), partition);
        self.create_partitions_for(partition, &times).await
    }
}
