//! The sweeper: publishes the jobs of parked deliveries (parked by `settle::settle` when their
//! endpoint's attempts run into the timeout; written with `parked_until`) once they are due,
//! and unparks them.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::future::try_join_all;
use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::{
    broker::BrokerError,
    domain::{Job, Trigger, WebhookId},
    storage::ParkedDelivery,
};

/// Parked deliveries claimed and published per round.
const SWEEP_BATCH: i64 = 500;

/// Sweeps until `stop`; fails only when publishing fails (the broker connection is gone).
pub async fn sweep_parked(
    pipeline: Arc<Pipeline>,
    stop: CancellationToken,
) -> Result<(), BrokerError> {
    let delays = pipeline.schedule.delays();
    let delay = delays[0];
    // Due rows wait at most a quarter of their delay (and at most a second) for a sweep.
    let every = (delay / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    // A delivery parked this long is released whatever its endpoint's state: the time its
    // whole retry schedule would have taken.
    let hold_at_most: Duration = delays.iter().sum();
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
        // Probes per hanging webhook for this whole sweep, not per batch: the jobs of one
        // batch have not taken their slots yet when the next is claimed.
        let mut budgets = Budgets::default();
        while !stop.is_cancelled() {
            // Claimed for one more delay: if this worker dies before publishing, they come
            // due again then.
            let due = match pipeline.storage.claim_parked(SWEEP_BATCH, delay).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read parked deliveries; next sweep retries");
                    break;
                }
            };
            let (released, held) = budgets.partition(&due, hold_at_most, |webhook| {
                pipeline.limiter.release_budget(webhook)
            });
            release(&pipeline, &released).await?;
            hold(&pipeline, &held).await;
            if due.len() < SWEEP_BATCH as usize {
                break;
            }
        }
    }
}

/// Publishes the jobs of `due` (confirmed), then unparks them. A crash in between publishes
/// them again after the claim's lease; the duplicate jobs are skipped by attempt number.
async fn release(pipeline: &Pipeline, due: &[&ParkedDelivery]) -> Result<(), BrokerError> {
    try_join_all(due.iter().map(|parked| {
        // Untried until now: a new automatic series.
        let job = Job::new_series(&parked.delivery, parked.attempt_count, Trigger::Automatic);
        async move { pipeline.publisher.enqueue(&job, &parked.body).await }
    }))
    .await?;
    let released: Vec<_> = due
        .iter()
        .map(|parked| parked.delivery.delivery_id)
        .collect();
    if let Err(e) = pipeline.storage.unpark(&released).await {
        tracing::warn!(error = %e, "released deliveries stay parked; their jobs may repeat");
    }
    Ok(())
}

/// Keeps `held` (their endpoint still hangs) parked, with a backoff by age.
async fn hold(pipeline: &Pipeline, held: &[&ParkedDelivery]) {
    let ids: Vec<_> = held
        .iter()
        .map(|parked| parked.delivery.delivery_id)
        .collect();
    let delays = pipeline.schedule.delays();
    let (min, max) = (delays[0], delays[delays.len() - 1]);
    if let Err(e) = pipeline.storage.hold_parked(&ids, min, max).await {
        tracing::warn!(error = %e, "held deliveries come due again after one delay");
    }
}

/// Releases left per webhook in one sweep.
#[derive(Default)]
struct Budgets(HashMap<WebhookId, usize>);

impl Budgets {
    /// Splits `due` into the deliveries to release and those to hold: at most `budget(webhook)`
    /// per webhook in this sweep, and any parked for `hold_at_most` already.
    fn partition<'a>(
        &mut self,
        due: &'a [ParkedDelivery],
        hold_at_most: Duration,
        budget: impl Fn(WebhookId) -> usize,
    ) -> (Vec<&'a ParkedDelivery>, Vec<&'a ParkedDelivery>) {
        due.iter().partition(|parked| {
            let left = self
                .0
                .entry(parked.delivery.webhook_id)
                .or_insert_with(|| budget(parked.delivery.webhook_id));
            match left.checked_sub(1) {
                Some(rest) => {
                    *left = rest;
                    true
                }
                None => parked.age >= hold_at_most,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::domain::{DeliveryId, EventId, StoredDelivery};

    const HOLD_AT_MOST: Duration = Duration::from_secs(3600);

    fn parked(webhook: WebhookId) -> ParkedDelivery {
        parked_for(webhook, Duration::ZERO)
    }

    fn parked_for(webhook: WebhookId, age: Duration) -> ParkedDelivery {
        ParkedDelivery {
            delivery: StoredDelivery {
                delivery_id: DeliveryId::new(),
                webhook_id: webhook,
                event_id: EventId::parse("evt_1").expect("valid"),
                event_type: "deal.won".to_owned(),
            },
            attempt_count: 0,
            body: Bytes::new(),
            age,
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
        let budget = |webhook| if webhook == hanging { 2 } else { usize::MAX };
        let mut budgets = Budgets::default();
        let (released, held) = budgets.partition(&due, HOLD_AT_MOST, budget);
        assert_eq!(released.len(), 5, "two probes and every healthy one");
        assert_eq!(held.len(), 1);
        assert!(
            held.iter()
                .all(|parked| parked.delivery.webhook_id == hanging)
        );
        let more = [parked(hanging)];
        let (released, _) = budgets.partition(&more, HOLD_AT_MOST, budget);
        assert!(
            released.is_empty(),
            "the budget is per sweep, not per batch"
        );
    }

    #[test]
    fn a_delivery_held_for_its_whole_schedule_is_released_anyway() {
        let hanging = WebhookId::new();
        let due = [parked(hanging), parked_for(hanging, HOLD_AT_MOST)];
        let (released, held) = Budgets::default().partition(&due, HOLD_AT_MOST, |_| 0);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].age, HOLD_AT_MOST);
        assert_eq!(held.len(), 1);
    }
}
