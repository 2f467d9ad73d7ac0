//! What the database knows that operators graph: read once per scrape, each from an index.

use std::time::Duration;

use super::{Storage, StorageError};

/// The database's side of the worker's gauges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DatabaseGauges {
    /// Deliveries waiting in the parking lot, due or not.
    pub parked: u64,
    pub disabled_webhooks: u64,
    /// How long the oldest delivery whose attempt is due has waited; zero when none is.
    pub oldest_overdue: Duration,
    /// Operational events not yet published (the broker is down, or the relay behind).
    pub operational_waiting: u64,
}

impl Storage {
    pub async fn gauges(&self) -> Result<DatabaseGauges, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT
                    (SELECT count(*) FROM deliveries WHERE parked_until IS NOT NULL),
                    (SELECT count(*) FROM webhooks WHERE NOT enabled),
                    (SELECT COALESCE(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8
                     FROM deliveries
                     WHERE status IN ('pending', 'retrying') AND next_attempt_at < now()),
                    (SELECT count(*) FROM operational_events)",
                &[],
            )
            .await?;
        let count = |i| -> Result<u64, StorageError> {
            Ok(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0))
        };
        Ok(DatabaseGauges {
            parked: count(0)?,
            disabled_webhooks: count(1)?,
            oldest_overdue: Duration::from_secs_f64(row.try_get::<_, f64>(2)?.max(0.0)),
            operational_waiting: count(3)?,
        })
    }
}
