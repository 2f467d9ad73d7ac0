//! Publishes the operational events (`webhook.failing`, `webhook.disabled`,
//! `webhook.recovered`) waiting in the database, oldest first, each confirmed by the broker
//! before it is deleted. It runs beside the consumers: an outage of either dependency delays
//! the events, never a delivery, and loses none.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{broker::Publisher, storage::Storage};

/// How often the waiting events are looked for when there were none.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Events published per transaction.
const BATCH: usize = 100;

/// Publishes waiting events until `stop`, through the worker's current publisher (none while
/// the broker is down).
pub async fn relay(
    storage: Storage,
    publisher: watch::Receiver<Option<Publisher>>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let current = publisher.borrow().clone();
        let published = match current {
            Some(publisher) => drain(&storage, &publisher).await,
            None => 0,
        };
        if published < BATCH {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
    }
}

/// One batch; how many were published.
async fn drain(storage: &Storage, publisher: &Publisher) -> usize {
    let limit = i64::try_from(BATCH).unwrap_or(i64::MAX);
    let drained = storage
        .drain_operational(limit, |event| async move {
            let message_id = format!("evt_{}", event.id.simple());
            match publisher
                .publish_operational(event.event_type, &message_id, &event.body)
                .await
            {
                Ok(()) => {
                    crate::metrics::operational_event(event.event_type);
                    true
                }
                Err(e) => {
                    tracing::debug!(error = %e, event = event.event_type,
                        "cannot publish an operational event; it waits");
                    false
                }
            }
        })
        .await;
    drained.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "cannot read the operational events waiting");
        0
    })
}
