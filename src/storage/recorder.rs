//! Group commit for delivery outcomes. Writers hand a [`DeliveryWrite`] to the recorder and
//! wait for its commit; the recorder gathers writes for up to `LINGER` (or `MAX_BATCH` of
//! them) into one transaction.
//!
//! The wait costs no delivery latency: a write is the last step of an attempt, after the POST,
//! and only holds back the ack of the message. It buys PostgreSQL CPU: without it, under load
//! most batches held a handful of writes (median 6) and the per-statement costs (round trip,
//! executor start, commit) dominated.

use std::{sync::Arc, time::Duration};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Storage, StorageError, batch::DeliveryWrite};
use crate::config::DatabaseConfig;

/// Writes per transaction at most.
const MAX_BATCH: usize = 512;
/// How long the first write of a batch waits for others to join it. Each statement costs
/// PostgreSQL a fixed share (round trip, executor start for three tables and their indexes,
/// commit) on top of its rows, so the fuller the batch the cheaper each outcome (the batch
/// sizes and costs of each wait tried are in docs/performance.md). The wait comes after the
/// POST, so it delays acks; but a delivery keeps its `max_in_flight` permit until its outcome
/// commits, so it also caps deliveries/s at about `max_in_flight / (attempt + wait +
/// commit)`, and a handed-off delivery's pending row commits before its job is published.
const LINGER: Duration = Duration::from_millis(20);
/// Transactions in flight at once: one commits while the next batch gathers and encodes.
/// Also the size of the recorder's own connection pool.
const CONCURRENT_FLUSHES: usize = 2;

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
    /// Starts the recorder task, with connections of its own to `database` beside `storage`'s
    /// (so API load cannot starve it of connections, nor it the API); it ends when every
    /// handle is dropped.
    pub fn start(storage: &Storage, database: &DatabaseConfig) -> Result<Self, StorageError> {
        let storage = storage.open_for_batches(database, CONCURRENT_FLUSHES)?;
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(storage, pending));
        Ok(Self { queue })
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
        let batch = gather(first, &mut pending).await;
        let storage = storage.clone();
        tokio::spawn(async move {
            let size = batch.len();
            let started = std::time::Instant::now();
            let (writes, waiters) = batch.into_iter().unzip();
            commit_isolating(&storage, writes, waiters).await;
            crate::metrics::record_batch(size, started.elapsed());
            drop(slot);
        });
    }
}

/// Commits `writes` as one batch and tells each waiter. When PostgreSQL rejects the batch for
/// what is in it (a value it refuses, a constraint), the batch is split in halves, each
/// committed or split again, until only the writes at fault are left to fail: one bad row
/// never fails its neighbours, at the cost of about two statements per halving. A failure of
/// the database itself (unreachable, shutting down) fails the whole batch at once.
async fn commit_isolating(storage: &Storage, writes: Vec<DeliveryWrite>, waiters: Vec<Done>) {
    let mut parts = vec![(writes, waiters)];
    while let Some((mut writes, mut waiters)) = parts.pop() {
        let result = match storage.write_batch(&writes).await {
            Err(e) if writes.len() > 1 && !e.is_outage() => {
                let half = writes.len() / 2;
                let (later_writes, later_waiters) =
                    (writes.split_off(half), waiters.split_off(half));
                parts.push((later_writes, later_waiters));
                parts.push((writes, waiters));
                continue;
            }
            Err(e) => {
                if let ([write], false) = (writes.as_slice(), e.is_outage()) {
                    tracing::warn!(event_id = %write.event_id, webhook_id = %write.webhook_id,
                        delivery_id = %write.delivery_id, attempt = write.attempt_count,
                        error = %e,
                        "the database refused one delivery's write; the rest of its batch committed");
                }
                Err(Arc::new(e))
            }
            Ok(()) => Ok(()),
        };
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

/// `first` and the writes that arrive within `LINGER` of it, up to `MAX_BATCH`. It sleeps
/// through the linger and then takes what queued meanwhile, instead of waking for each write
/// as it arrives: at moderate rates that was a task wake-up per delivery. A backlog that
/// already fills the batch goes at once.
async fn gather(
    first: (DeliveryWrite, Done),
    pending: &mut mpsc::UnboundedReceiver<(DeliveryWrite, Done)>,
) -> Vec<(DeliveryWrite, Done)> {
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut batch = vec![first];
    loop {
        while batch.len() < MAX_BATCH {
            // Empty, or closed: what is here goes, and `run` sees the close next.
            let Ok(next) = pending.try_recv() else { break };
            batch.push(next);
        }
        if batch.len() >= MAX_BATCH || tokio::time::Instant::now() >= deadline {
            return batch;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CompanyId, DeliveryId, DeliveryStatus, EventId, WebhookId};

    fn enqueue(queue: &mpsc::UnboundedSender<(DeliveryWrite, Done)>) {
        let (done, _committed) = oneshot::channel();
        let write = DeliveryWrite {
            event: None,
            delivery_id: DeliveryId::new(),
            event_id: EventId::parse("evt_1").expect("valid"),
            webhook_id: WebhookId::new(),
            company_id: CompanyId::parse("cmp_1").expect("valid"),
            event_type: "deal.won".to_owned(),
            event_at: time::OffsetDateTime::now_utc(),
            status: DeliveryStatus::Succeeded,
            attempt_count: 1,
            next_attempt_at: None,
            parked_until: None,
            attempt: None,
        };
        queue.send((write, done)).expect("recorder queue open");
    }

    async fn next_batch(
        pending: &mut mpsc::UnboundedReceiver<(DeliveryWrite, Done)>,
    ) -> Vec<(DeliveryWrite, Done)> {
        let first = pending.recv().await.expect("a write");
        gather(first, pending).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_gathers_the_writes_that_arrive_within_the_linger() {
        let (queue, mut pending) = mpsc::unbounded_channel();
        enqueue(&queue);
        enqueue(&queue);
        let late = queue.clone();
        // Runs once the batch has drained the queue and waits: its first write arrives then.
        tokio::spawn(async move {
            enqueue(&late);
            tokio::time::sleep(LINGER * 2).await;
            enqueue(&late);
        });
        assert_eq!(
            next_batch(&mut pending).await.len(),
            3,
            "two queued, one while lingering"
        );
        assert_eq!(
            next_batch(&mut pending).await.len(),
            1,
            "the late one starts a batch"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_stops_at_its_maximum() {
        let (queue, mut pending) = mpsc::unbounded_channel();
        for _ in 0..MAX_BATCH + 1 {
            enqueue(&queue);
        }
        assert_eq!(next_batch(&mut pending).await.len(), MAX_BATCH);
        assert_eq!(next_batch(&mut pending).await.len(), 1);
    }
}
