//! The parking lot: deliveries whose endpoint is stuck wait here, as rows with `parked_until`,
//! instead of as messages in a retry tier. The sweeper claims the due ones, publishes their
//! jobs, and unparks them.

use std::time::Duration;

use bytes::Bytes;

use super::{
    Storage, StorageError,
    deliveries::{stored_delivery, to_u32},
    delivery_uuids,
};
use crate::domain::{DeliveryId, StoredDelivery};

/// A parked delivery whose time has come, with what its job needs.
#[derive(Debug, Clone)]
pub struct ParkedDelivery {
    pub delivery: StoredDelivery,
    pub attempt_count: u32,
    pub body: Bytes,
    /// How long ago the delivery was created.
    pub age: Duration,
}

/// Claims up to `$1` due rows by moving their `parked_until` `$2` seconds ahead: a sweeper
/// that dies before publishing leaves them to be claimed again then, and concurrent sweepers
/// (other workers) skip rows another one holds.
const CLAIM_DUE: &str = "
WITH claimed AS (
    UPDATE deliveries SET parked_until = now() + make_interval(secs => $2)
    WHERE (id, event_at) IN (
        SELECT id, event_at FROM deliveries
        WHERE parked_until <= now()
        ORDER BY parked_until
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, webhook_id, event_id, event_type, attempt_count, created_at, event_at
)
SELECT c.id, c.webhook_id, c.event_id, c.event_type, c.attempt_count, e.body,
    extract(epoch FROM now() - c.created_at)::float8 AS age_s
FROM claimed c JOIN events e ON e.id = c.event_id AND e.event_at = c.event_at";

impl Storage {
    /// Claims up to `limit` due parked deliveries for `lease`: they are not due again before
    /// it ends, unless unparked.
    pub async fn claim_parked(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<ParkedDelivery>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(CLAIM_DUE, &[&limit, &lease.as_secs_f64()])
            .await?;
        let mut due = Vec::with_capacity(rows.len());
        for row in &rows {
            let delivery = match stored_delivery(row) {
                Ok(delivery) => delivery,
                // Claimed for the lease like the rest, so it is logged once per lease, and
                // the others are not held back by it.
                Err(e @ StorageError::Corrupt(_)) => {
                    tracing::error!(error = %e, "a parked delivery cannot be read; left parked");
                    continue;
                }
                Err(e) => return Err(e),
            };
            due.push(ParkedDelivery {
                delivery,
                attempt_count: to_u32(row.try_get("attempt_count")?),
                body: Bytes::from(row.try_get::<_, Vec<u8>>("body")?),
                age: Duration::from_secs_f64(row.try_get::<_, f64>("age_s")?.max(0.0)),
            });
        }
        Ok(due)
    }

    /// Keeps claimed deliveries parked (their endpoint still hangs) for as long again as they
    /// have existed, between `min` and `max`: a long outage costs a few rewrites of each row,
    /// not one per sweep.
    pub async fn hold_parked(
        &self,
        ids: &[DeliveryId],
        min: Duration,
        max: Duration,
    ) -> Result<(), StorageError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = delivery_uuids(ids);
        let client = self.client().await?;
        client
            .execute(
                "UPDATE deliveries SET
                     parked_until = now() + LEAST(GREATEST(make_interval(secs => $2),
                         now() - created_at), make_interval(secs => $3)),
                     next_attempt_at = now() + LEAST(GREATEST(make_interval(secs => $2),
                         now() - created_at), make_interval(secs => $3))
                 WHERE id = ANY($1) AND parked_until IS NOT NULL",
                &[&ids, &min.as_secs_f64(), &max.as_secs_f64()],
            )
            .await?;
        Ok(())
    }

    /// Unparks deliveries whose jobs are published.
    pub async fn unpark(&self, ids: &[DeliveryId]) -> Result<(), StorageError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = delivery_uuids(ids);
        let client = self.client().await?;
        client
            .execute(
                "UPDATE deliveries SET parked_until = NULL WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        Ok(())
    }
}
