//! The sweeper: publishes the jobs of parked deliveries (parked by `settle::settle` when their
//! endpoint's attempts run into the timeout or its circuit is open; written with
//! `parked_until`) once they are due, and unparks them.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::future::try_join_all;
use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::{
    broker::BrokerError,
    domain::{DisabledReason, Job, Trigger, WebhookId},
    endpoint_health::Verdict,
    metrics,
    settle::Counted,
    storage::{ParkedDelivery, StorageError},
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
        probe_open_circuits(&pipeline, delay).await?;
        // Probes per hanging webhook for this whole sweep, not per batch: the jobs of one
        // batch have not taken their slots yet when the next is claimed.
        let mut allowances = Allowances::default();
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
            let sorted = allowances.sort(&due, hold_at_most, |webhook| {
                // An open circuit's deliveries wait for its close; its probes are released
                // apart, above.
                let circuit_open = pipeline.circuits.is_open(webhook);
                Allowance {
                    left: match circuit_open {
                        true => 0,
                        false => pipeline.limiter.release_budget(webhook),
                    },
                    circuit_open,
                }
            });
            release(&pipeline, &sorted.released).await?;
            hold(&pipeline, &sorted.held).await;
            expire(&pipeline, &sorted.expired).await;
            if due.len() < SWEEP_BATCH as usize {
                break;
            }
        }
    }
}

/// Releases one parked delivery of each webhook whose open circuit wants a probe, whenever
/// it is due: its job is admitted as the probe. Claimed for `lease`, like any release.
async fn probe_open_circuits(pipeline: &Pipeline, lease: Duration) -> Result<(), BrokerError> {
    for webhook in pipeline.circuits.probes_wanted(PROBE_LEASE) {
        match pipeline.storage.claim_parked_of(webhook, lease).await {
            Ok(Some(parked)) => release(pipeline, &[&parked]).await?,
            // Nothing parked: new work, if any comes, is the probe.
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read parked deliveries; next sweep retries");
                return Ok(());
            }
        }
    }
    Ok(())
}

/// How long a delivery released as a probe has to reach its attempt before another is
/// released (its job goes through the deliveries queue, perhaps to another worker).
const PROBE_LEASE: Duration = Duration::from_secs(2);

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

/// Marks Failed, untried, the deliveries whose endpoint's circuit stayed open for as long as
/// their whole retry schedule would have taken.
async fn expire(pipeline: &Pipeline, expired: &[&ParkedDelivery]) {
    if expired.is_empty() {
        return;
    }
    let ids: Vec<_> = expired
        .iter()
        .map(|parked| parked.delivery.delivery_id)
        .collect();
    let failed = match pipeline.storage.fail_parked(&ids, NOT_ATTEMPTED).await {
        Ok(failed) => failed,
        Err(e) => {
            tracing::warn!(error = %e, "expired deliveries stay parked; next sweep");
            return;
        }
    };
    // Like deliveries that exhausted their retries: counted as Failed, told at info, and in
    // their webhook's failing streak (which may warn its owner or disable it).
    for (webhook_id, count) in failed {
        for _ in 0..count {
            metrics::settled(Counted::Failed);
        }
        tracing::info!(%webhook_id, failed = count,
            "deliveries Failed untried: their endpoint's circuit stayed open past their \
             retry schedule");
        if let Err(e) = note_failures(pipeline, webhook_id, count).await {
            tracing::warn!(%webhook_id, error = %e, "expired deliveries not counted in the \
                webhook's failing streak");
        }
    }
}

async fn note_failures(
    pipeline: &Pipeline,
    webhook_id: WebhookId,
    count: u32,
) -> Result<(), StorageError> {
    if let Some(webhook) = pipeline.storage.webhook(webhook_id).await? {
        let policy = &pipeline.endpoint_health;
        if pipeline
            .storage
            .note_failures(&webhook, count, policy)
            .await?
            == Verdict::Disable
        {
            tracing::warn!(%webhook_id, company_id = %webhook.company_id,
                reason = DisabledReason::FailingTooLong.as_str(), "webhook disabled");
        }
    }
    Ok(())
}

/// The reason an expired delivery shows.
const NOT_ATTEMPTED: &str =
    "not attempted: the endpoint's circuit stayed open for the whole retry schedule";

/// What the sweeper may do with one webhook's due deliveries in one sweep.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    /// Releases left.
    left: usize,
    /// Its circuit is open here: what waited for its whole schedule ends Failed, untried,
    /// rather than released into an endpoint known to fail.
    circuit_open: bool,
}

/// Each webhook's allowance in one sweep.
#[derive(Default)]
struct Allowances(HashMap<WebhookId, Allowance>);

/// Due deliveries, by what becomes of them.
#[derive(Default)]
struct Sorted<'a> {
    released: Vec<&'a ParkedDelivery>,
    held: Vec<&'a ParkedDelivery>,
    expired: Vec<&'a ParkedDelivery>,
}

impl Allowances {
    /// Sorts `due`: at most `allowance(webhook).left` released per webhook in this sweep; any
    /// parked for `hold_at_most` already released anyway, or, behind an open circuit,
    /// expired; the rest held.
    fn sort<'a>(
        &mut self,
        due: &'a [ParkedDelivery],
        hold_at_most: Duration,
        allowance: impl Fn(WebhookId) -> Allowance,
    ) -> Sorted<'a> {
        let mut sorted = Sorted::default();
        for parked in due {
            let webhook = parked.delivery.webhook_id;
            let allowance = self.0.entry(webhook).or_insert_with(|| allowance(webhook));
            let to = match allowance.left.checked_sub(1) {
                Some(rest) => {
                    allowance.left = rest;
                    &mut sorted.released
                }
                None if parked.age < hold_at_most => &mut sorted.held,
                None if allowance.circuit_open => &mut sorted.expired,
                None => &mut sorted.released,
            };
            to.push(parked);
        }
        sorted
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

    fn allowance(left: usize) -> Allowance {
        Allowance {
            left,
            circuit_open: false,
        }
    }

    #[test]
    fn releases_at_most_each_webhooks_allowance() {
        let hanging = WebhookId::new();
        let healthy = WebhookId::new();
        let due: Vec<_> = (0..3)
            .map(|_| parked(hanging))
            .chain((0..3).map(|_| parked(healthy)))
            .collect();
        let allowed = |webhook| allowance(if webhook == hanging { 2 } else { usize::MAX });
        let mut allowances = Allowances::default();
        let sorted = allowances.sort(&due, HOLD_AT_MOST, allowed);
        assert_eq!(sorted.released.len(), 5, "two probes and every healthy one");
        assert_eq!(sorted.held.len(), 1);
        assert!(
            sorted
                .held
                .iter()
                .all(|parked| parked.delivery.webhook_id == hanging)
        );
        let more = [parked(hanging)];
        let sorted = allowances.sort(&more, HOLD_AT_MOST, allowed);
        assert!(
            sorted.released.is_empty(),
            "the allowance is per sweep, not per batch"
        );
    }

    #[test]
    fn a_delivery_held_for_its_whole_schedule_is_released_anyway() {
        let hanging = WebhookId::new();
        let due = [parked(hanging), parked_for(hanging, HOLD_AT_MOST)];
        let sorted = Allowances::default().sort(&due, HOLD_AT_MOST, |_| allowance(0));
        assert_eq!(sorted.released.len(), 1);
        assert_eq!(sorted.released[0].age, HOLD_AT_MOST);
        assert_eq!(sorted.held.len(), 1);
        assert!(sorted.expired.is_empty());
    }

    #[test]
    fn behind_an_open_circuit_it_expires_instead() {
        let failing = WebhookId::new();
        let due = [
            parked(failing),
            parked_for(failing, HOLD_AT_MOST),
            parked_for(failing, HOLD_AT_MOST),
        ];
        let probe_due = |_| Allowance {
            left: 1,
            circuit_open: true,
        };
        let sorted = Allowances::default().sort(&due, HOLD_AT_MOST, probe_due);
        assert_eq!(sorted.released.len(), 1, "the probe");
        assert_eq!(sorted.released[0].age, Duration::ZERO);
        assert_eq!(sorted.held.len(), 0);
        assert_eq!(
            sorted.expired.len(),
            2,
            "the two parked for their whole schedule"
        );
    }
}
