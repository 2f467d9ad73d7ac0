//! The live workers: each beats every few seconds, and they share each webhook's rate limit
//! by their number.

use std::time::Duration;

use uuid::Uuid;

use super::{Storage, StorageError};

impl Storage {
    /// Records that worker `id` is alive, forgets workers silent for a minute, and returns
    /// how many beat within `alive_within` (this one included).
    pub async fn heartbeat(&self, id: Uuid, alive_within: Duration) -> Result<usize, StorageError> {
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
        let live: i64 = client
            .query_one(
                "SELECT count(*) FROM workers
                 WHERE heartbeat_at > now() - make_interval(secs => $1)",
                &[&alive_within.as_secs_f64()],
            )
            .await?
            .try_get(0)?;
        Ok(usize::try_from(live).unwrap_or(1).max(1))
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
