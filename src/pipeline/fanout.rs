//! The events queue: route an envelope to its company's matching webhooks and make each first
//! attempt inline, so the happy path costs one broker round trip whatever the fan-out.

use std::sync::Arc;

use futures_util::future::join_all;

use super::{Pipeline, PipelineError, attempt::attempt_and_settle, disposition};
use crate::{
    broker::{Disposition, Job, Message},
    domain::EventFilter,
    envelope::{self, EnvelopeHead},
    metrics,
    storage::{Trigger, Webhook},
};

pub async fn handle_event(pipeline: Arc<Pipeline>, message: Message) -> Disposition {
    let head = match envelope::parse(&message.body, &pipeline.catalog) {
        Ok(head) => head,
        Err(invalid) => {
            let reason = invalid.to_string();
            return pipeline.quarantine(&message, invalid.code(), &reason).await;
        }
    };
    metrics::count(metrics::EVENTS_RECEIVED);
    disposition("fanout", fan_out(&pipeline, &head, message).await)
}

/// The company's enabled webhooks whose filters match `event_type`.
pub fn matching<'a>(webhooks: &'a [Webhook], event_type: &str) -> Vec<&'a Webhook> {
    webhooks
        .iter()
        .filter(|w| w.enabled)
        .filter(|w| {
            w.events
                .iter()
                .any(|entry| EventFilter::from_stored(entry).matches(event_type))
        })
        .collect()
}

async fn fan_out(
    pipeline: &Pipeline,
    head: &EnvelopeHead,
    message: Message,
) -> Result<(), PipelineError> {
    let webhooks = pipeline.storage.company_webhooks(&head.company_id).await?;
    let targets = matching(&webhooks, &head.event_type);
    if targets.is_empty() {
        metrics::count(metrics::EVENTS_UNMATCHED);
        return Ok(());
    }
    let ids: Vec<_> = targets.iter().map(|w| w.id).collect();
    let deliveries = pipeline
        .storage
        .prepare_event(head, &message.body, &ids)
        .await?;
    let attempts = deliveries
        .iter()
        .filter(|d| d.needs_first_attempt())
        .filter_map(|d| {
            let webhook = targets.iter().find(|w| w.id == d.webhook_id)?;
            let job = Job {
                delivery_id: d.delivery_id,
                webhook_id: d.webhook_id,
                event_id: head.id.clone(),
                event_type: head.event_type.clone(),
                attempt: 1,
                series_attempt: 1,
                trigger: Trigger::Automatic,
            };
            let body = message.body.clone();
            Some(async move { attempt_and_settle(pipeline, &job, webhook, body).await })
        });
    // Every delivery settles before the event is acked; one failure hands the event back, and
    // the redelivery skips the deliveries that did settle.
    join_all(attempts).await.into_iter().collect()
}
