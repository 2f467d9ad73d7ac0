//! The parking lot: deliveries whose endpoint is stuck or whose circuit is open wait here, as
//! rows with `parked_until`, instead of as messages in a retry tier. The sweeper claims the due
//! ones (and an open circuit's probe), publishes their jobs, and unparks them.

use std::time::Duration;

use bytes::Bytes;

use super::{
    Storage, StorageError,
    deliveries::{stored_delivery, to_u32},
    delivery_uuids,
};
use tokio_postgres::Row;

use crate::domain::{DeliveryId, StoredDelivery, WebhookId};

/// A parked delivery whose time has come, with what its job needs.
#[derive(Debug, Clone)]
pub struct ParkedDelivery {
    pub delivery: StoredDelivery,
    pub attempt_count: u32,
    pub body: Bytes,
    /// How long ago the delivery was created.
    pub age: Duration,
}

/// Claims the rows `picked` selects (id and event_at, `FOR UPDATE SKIP LOCKED`) by moving
/// their `parked_until` `$2` seconds ahead: a sweeper that dies before publishing leaves them
/// to be claimed again then, and concurrent sweepers (other workers) skip rows another one
/// holds.
macro_rules! claim {
    ($picked:literal) => {
        concat!(
            "WITH claimed AS (
                UPDATE deliveries SET parked_until = now() + make_interval(secs => $2)
                WHERE (id, event_at) IN (",
            $picked,
            ")
                RETURNING id, webhook_id, event_id, event_type, attempt_count, created_at,
                    event_at
            )
            SELECT c.id, c.webhook_id, c.event_id, c.event_type, c.attempt_count, e.body,
                extract(epoch FROM now() - c.created_at)::float8 AS age_s
            FROM claimed c JOIN events e ON e.id = c.event_id AND e.event_at = c.event_at"
        )
    };
}

/// Up to `$1` due rows, the longest due first.
const CLAIM_DUE: &str = claim!(
    "SELECT id, event_at FROM deliveries WHERE parked_until <= now()
     ORDER BY parked_until LIMIT $1 FOR UPDATE SKIP LOCKED"
);

/// Webhook `$1`'s parked row that comes due first, due or not (a probe).
const CLAIM_ONE_OF: &str = claim!(
    "SELECT id, event_at FROM deliveries WHERE webhook_id = $1 AND parked_until IS NOT NULL
     ORDER BY parked_until LIMIT 1 FOR UPDATE SKIP LOCKED"
);

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
        parked_deliveries(&rows)
    }

    /// Claims `webhook`'s parked delivery that comes due first, due or not, for `lease`.
    pub async fn claim_parked_of(
        &self,
        webhook: WebhookId,
        lease: Duration,
    ) -> Result<Option<ParkedDelivery>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(CLAIM_ONE_OF, &[&webhook.0, &lease.as_secs_f64()])
            .await?;
        Ok(parked_deliveries(&rows)?.into_iter().next())
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

    /// Marks parked deliveries Failed, untried, with `reason`, while their webhook's circuit is
    /// recorded open; returns how many of each webhook's were still parked (unparked
    /// meanwhile by a circuit's close, they are left to their jobs; the others come due again
    /// after their claim's lease).
    pub async fn fail_parked(
        &self,
        ids: &[DeliveryId],
        reason: &str,
    ) -> Result<Vec<(WebhookId, u32)>, StorageError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = delivery_uuids(ids);
        let client = self.client().await?;
        let rows = client
            .query(
                "WITH failed AS (
                    UPDATE deliveries SET status = 'failed', parked_until = NULL,
                        next_attempt_at = NULL, last_error = $2, updated_at = now()
                    WHERE id = ANY($1) AND parked_until > now()
                        AND status IN ('pending', 'retrying')
                        -- Still open as the workers wrote it: a worker whose own breaker
                        -- has not closed yet must not fail what another one's close released.
                        AND EXISTS (SELECT 1 FROM webhook_health h
                            WHERE h.webhook_id = deliveries.webhook_id
                                AND h.circuit_opened_at IS NOT NULL)
                    RETURNING webhook_id
                 )
                 SELECT webhook_id, count(*)::int4 FROM failed GROUP BY webhook_id",
                &[&ids, &reason],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((WebhookId(row.try_get(0)?), to_u32(row.try_get(1)?))))
            .collect()
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

/// The claimed rows, but any that cannot be read.
fn parked_deliveries(rows: &[Row]) -> Result<Vec<ParkedDelivery>, StorageError> {
    let mut due = Vec::with_capacity(rows.len());
    for row in rows {
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
