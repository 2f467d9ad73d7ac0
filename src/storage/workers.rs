//! The live workers: each beats every few seconds, and they split each webhook's rate limit
//! between them by their number and order.

use std::time::Duration;

use uuid::Uuid;

use super::{Storage, StorageError};
use crate::domain::Membership;

impl Storage {
    /// Records that worker `id` is alive, forgets workers silent for a minute, and returns
    /// how many beat within `alive_within` (this one included) and how many of those come
    /// before this one in id order.
    pub async fn heartbeat(
        &self,
        id: Uuid,
        alive_within: Duration,
    ) -> Result<Membership, StorageError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO workers (id, heartbeat_at) VALUES ($1, now())
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
                &[&id],
            )
            .await?;
        client
            .execute(
                "DELETE FROM workers WHERE heartbeat_at < now() - interval '1 minute'",
                &[],
            )
            .await?;
        let row = client
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE id < $2) FROM workers
                 WHERE heartbeat_at > now() - make_interval(secs => $1)",
                &[&alive_within.as_secs_f64(), &id],
            )
            .await?;
        let (live, before): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok(Membership {
            live: usize::try_from(live).unwrap_or(1).max(1),
            rank: usize::try_from(before).unwrap_or(0),
        })
    }

    /// Worker `id` stops: the others take its share at their next beat.
    pub async fn leave(&self, id: Uuid) -> Result<(), StorageError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM workers WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }
}
