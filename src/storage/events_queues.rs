//! Which events queues the workers have declared, so that a changed `amqp.event_queues`
//! finds the queues of the layout before it (see `Broker::drain`).

use super::{Storage, StorageError};

impl Storage {
    /// Records `current` (this worker's events queues) as declared, and returns the declared
    /// ones that are not among them: queues of another `amqp.event_queues`, still to be
    /// drained. `single` is the one queue of earlier versions, which the upgrade recorded
    /// without its name.
    pub async fn record_events_queues(
        &self,
        current: &[String],
        single: &str,
    ) -> Result<Vec<String>, StorageError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        transaction
            .execute(
                "WITH unnamed AS (DELETE FROM declared_events_queues WHERE name = '' RETURNING 1)
                 INSERT INTO declared_events_queues (name) SELECT $1 FROM unnamed
                 ON CONFLICT (name) DO NOTHING",
                &[&single],
            )
            .await?;
        transaction
            .execute(
                "INSERT INTO declared_events_queues (name) SELECT unnest($1::text[])
                 ON CONFLICT (name) DO NOTHING",
                &[&current],
            )
            .await?;
        let rows = transaction
            .query(
                "SELECT name FROM declared_events_queues WHERE name <> ALL($1::text[])
                 ORDER BY name",
                &[&current],
            )
            .await?;
        transaction.commit().await?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(StorageError::from))
            .collect()
    }

    /// `queue` was drained and removed: it is no longer looked for.
    pub async fn forget_events_queue(&self, queue: &str) -> Result<(), StorageError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM declared_events_queues WHERE name = $1",
                &[&queue],
            )
            .await?;
        Ok(())
    }
}
