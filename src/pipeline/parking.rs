//! The sweeper: publishes the jobs of parked deliveries (see `attempt::park`) once they are
//! due, and unparks them.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::future::try_join_all;
use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::{
    broker::{BrokerError, Job},
    domain::{EventId, WebhookId},
    storage::{ParkedDelivery, Trigger},
};

/// Parked deliveries claimed and published per round.
const SWEEP_BATCH: i64 = 500;

/// Sweeps until `stop`; fails only when publishing fails (the broker connection is gone).
pub async fn sweep_parked(
    pipeline: Arc<Pipeline>,
    stop: CancellationToken,
) -> Result<(), BrokerError> {
    let delay = pipeline.schedule.delays()[0];
    // Due rows wait at most a quarter of their delay (and at most a second) for a sweep.
    let every = (delay / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
        loop {
            // Claimed for one more delay: if this worker dies before publishing, they come
            // due again then.
            let due = match pipeline.storage.claim_parked(SWEEP_BATCH, delay).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read parked deliveries; next sweep retries");
                    break;
                }
            };
            release(&pipeline, &due).await?;
            if due.len() < SWEEP_BATCH as usize {
                break;
            }
        }
    }
}

/// Publishes the jobs of `due` (confirmed), then unparks them; those of hanging endpoints,
/// beyond a few probes, stay parked. A crash in between publishes them again after the
/// claim's lease; the duplicate jobs are skipped by attempt number.
async fn release(pipeline: &Pipeline, due: &[ParkedDelivery]) -> Result<(), BrokerError> {
    let (released, held) = partition(due, |webhook| pipeline.limiter.release_budget(webhook));
    let jobs: Vec<_> = released.into_iter().filter_map(job_of).collect();
    try_join_all(
        jobs.iter()
            .map(|(job, parked)| pipeline.publisher.enqueue(job, &parked.body)),
    )
    .await?;
    let released: Vec<_> = jobs.iter().map(|(job, _)| job.delivery_id).collect();
    if let Err(e) = pipeline.storage.unpark(&released).await {
        tracing::warn!(error = %e, "released deliveries stay parked; their jobs may repeat");
    }
    let held: Vec<_> = held.iter().map(|parked| parked.delivery_id).collect();
    let delays = pipeline.schedule.delays();
    let (min, max) = (delays[0], delays[delays.len() - 1]);
    if let Err(e) = pipeline.storage.hold_parked(&held, min, max).await {
        tracing::warn!(error = %e, "held deliveries come due again after one delay");
    }
    Ok(())
}

/// Splits `due` into the deliveries to release and those to hold, releasing at most
/// `budget(webhook)` per webhook.
fn partition(
    due: &[ParkedDelivery],
    budget: impl Fn(WebhookId) -> usize,
) -> (Vec<&ParkedDelivery>, Vec<&ParkedDelivery>) {
    let mut left: HashMap<WebhookId, usize> = HashMap::new();
    due.iter().partition(|parked| {
        let left = left
            .entry(parked.webhook_id)
            .or_insert_with(|| budget(parked.webhook_id));
        match left.checked_sub(1) {
            Some(rest) => {
                *left = rest;
                true
            }
            None => false,
        }
    })
}

/// The next attempt of a parked delivery, untried until now: a new automatic series.
fn job_of(parked: &ParkedDelivery) -> Option<(Job, &ParkedDelivery)> {
    let Ok(event_id) = EventId::parse(&parked.event_id) else {
        tracing::error!(delivery = %parked.delivery_id, event = %parked.event_id,
            "parked delivery has an invalid event id; left parked");
        return None;
    };
    let job = Job {
        delivery_id: parked.delivery_id,
        webhook_id: parked.webhook_id,
        event_id,
        event_type: parked.event_type.clone(),
        attempt: parked.attempt_count + 1,
        series_attempt: 1,
        trigger: Trigger::Automatic,
    };
    Some((job, parked))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::domain::DeliveryId;

    fn parked(webhook: WebhookId) -> ParkedDelivery {
        ParkedDelivery {
            delivery_id: DeliveryId::new(),
            webhook_id: webhook,
            event_id: "evt_1".to_owned(),
            event_type: "deal.won".to_owned(),
            attempt_count: 0,
            body: Bytes::new(),
        }
    }

    #[test]
    fn releases_at_most_each_webhooks_budget() {
        let hanging = WebhookId::new();
        let healthy = WebhookId::new();
        let due: Vec<_> = (0..3)
            .map(|_| parked(hanging))
            .chain((0..3).map(|_| parked(healthy)))
            .collect();
        let (released, held) = partition(
            &due,
            |webhook| {
                if webhook == hanging { 1 } else { usize::MAX }
            },
        );
        assert_eq!(released.len(), 4, "one probe and every healthy one");
        assert_eq!(held.len(), 2);
        assert!(held.iter().all(|parked| parked.webhook_id == hanging));
    }
}
