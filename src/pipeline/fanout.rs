//! The events queue: route an envelope to its company's matching webhooks and make each first
//! attempt inline, so the happy path costs one broker round trip whatever the fan-out.

use std::sync::Arc;

use futures_util::future::join_all;
use time::OffsetDateTime;

use super::{
    Pipeline, PipelineError,
    attempt::{self, Attempt},
    guarded,
};
use crate::{
    broker::{Disposition, Message},
    domain::{DeliveryId, Job, Source, event_time, trusted_timestamp},
    envelope::{self, EnvelopeHead},
    metrics,
    storage::{EventRow, Webhook},
};

pub async fn handle_event(pipeline: Arc<Pipeline>, message: Message) -> Disposition {
    let head = match envelope::parse(&message.body, &pipeline.catalog, pipeline.max_event_size) {
        Ok(head) => head,
        Err(invalid) => {
            let reason = invalid.to_string();
            return pipeline
                .quarantine(&message, invalid.reason(), &reason)
                .await;
        }
    };
    metrics::count(metrics::EVENTS_RECEIVED);
    let result = guarded(fan_out(&pipeline, &head, &message)).await;
    pipeline.dispose(&message, Source::Fanout, result).await
}

/// The company's enabled webhooks whose filters match `event_type`.
pub fn matching<'a>(webhooks: &'a [Webhook], event_type: &str) -> Vec<&'a Webhook> {
    webhooks
        .iter()
        .filter(|w| w.enabled)
        .filter(|w| w.events.iter().any(|filter| filter.matches(event_type)))
        .collect()
}

async fn fan_out(
    pipeline: &Pipeline,
    head: &EnvelopeHead,
    message: &Message,
) -> Result<(), PipelineError> {
    let webhooks = pipeline.subscriptions.of_company(&head.company_id).await?;
    let targets = matching(&webhooks, &head.event_type);
    if targets.is_empty() {
        metrics::count(metrics::EVENTS_UNMATCHED);
        return Ok(());
    }
    // Only a redelivered message can find its deliveries already made, or a copy of an event
    // whose dedupe key cannot meet the first copy's (filed under its receipt, for want of a
    // timestamp); a first delivery goes straight to the POSTs, and its rows are written with
    // the outcomes.
    let received_at = OffsetDateTime::now_utc();
    let filed_by_timestamp = trusted_timestamp(head.occurred_at, received_at).is_some();
    let existing = if message.redelivered || !filed_by_timestamp {
        let ids: Vec<_> = targets.iter().map(|w| w.id).collect();
        pipeline.storage.existing_deliveries(&head.id, &ids).await?
    } else {
        Vec::new()
    };
    let event_at = event_time(head.occurred_at, received_at);
    let event = EventRow {
        id: head.id.clone(),
        company_id: head.company_id.clone(),
        event_type: head.event_type.clone(),
        body: message.body.clone(),
        event_at,
    };
    let attempts = targets.into_iter().filter_map(|webhook| {
        let (delivery_id, event_at) = match existing.iter().find(|d| d.webhook_id == webhook.id) {
            // A redelivery: what was done is not done again; an untried delivery keeps its id.
            Some(done) if message.redelivered && !done.needs_first_attempt() => return None,
            Some(pending) if message.redelivered => (pending.delivery_id, pending.event_at),
            // Another publish of the event: filed with the first, it meets it in the dedupe
            // key and goes on as a duplicate publish does.
            Some(first) => (DeliveryId::at(first.event_at), first.event_at),
            None => (DeliveryId::at(event_at), event_at),
        };
        let attempt = Attempt {
            job: Job::first(
                delivery_id,
                webhook.id,
                head.id.clone(),
                head.event_type.clone(),
                head.occurred_at,
            ),
            webhook,
            body: message.body.clone(),
            event: Some(EventRow {
                event_at,
                ..event.clone()
            }),
            event_at,
        };
        Some(attempt::run(pipeline, attempt))
    });
    // Every delivery settles before the event is acked; one failure hands the event back, and
    // the redelivery skips the deliveries that did settle.
    join_all(attempts).await.into_iter().collect()
}
