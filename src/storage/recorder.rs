//! Group commit for delivery outcomes. Writers hand a [`DeliveryWrite`] to the recorder and
//! wait for its commit; the recorder gathers whatever is waiting into one transaction. Under
//! load batches grow to `MAX_BATCH`; at a trickle each write commits at once, with no timer.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Storage, StorageError, batch::DeliveryWrite};

/// Writes per transaction at most.
const MAX_BATCH: usize = 512;
/// Transactions in flight at once: one commits while the next batch gathers and encodes.
const CONCURRENT_FLUSHES: usize = 4;

type Done = oneshot::Sender<Result<(), Arc<StorageError>>>;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("recording failed: {0}")]
    Storage(#[from] Arc<StorageError>),
    #[error("the recorder has stopped")]
    Stopped,
}

/// Handle to the background recorder; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::UnboundedSender<(DeliveryWrite, Done)>,
}

impl Recorder {
    /// Starts the recorder task; it ends when every handle is dropped.
    pub fn start(storage: Storage) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(storage, pending));
        Self { queue }
    }

    /// Records `write` and returns once it is committed.
    pub async fn write(&self, write: DeliveryWrite) -> Result<(), RecordError> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send((write, done))
            .map_err(|_| RecordError::Stopped)?;
        committed.await.map_err(|_| RecordError::Stopped)??;
        Ok(())
    }
}

async fn run(storage: Storage, mut pending: mpsc::UnboundedReceiver<(DeliveryWrite, Done)>) {
    let flushes = Arc::new(Semaphore::new(CONCURRENT_FLUSHES));
    loop {
        // Wait for a free flush slot first: writes arriving meanwhile join the next batch.
        let Ok(slot) = flushes.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = pending.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let storage = storage.clone();
        tokio::spawn(async move {
            let (writes, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let result = storage.write_batch(&writes).await.map_err(Arc::new);
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
            drop(slot);
        });
    }
}
