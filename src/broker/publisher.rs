//! Publishing with publisher confirms: every republish (retry tiers, dead letters, quarantine,
//! manual jobs) is confirmed by the broker before the message that caused it is acked.

use std::{sync::Arc, time::Duration};

use lapin::{
    BasicProperties, Channel, Confirmation,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable},
};

use super::{
    BrokerError, Message, Topology, job,
    topology::{DEAD_KEY, DELIVERIES_KEY, QUARANTINE_KEY, long_string, short},
};
use crate::domain::Job;

const PERSISTENT: u8 = 2;

/// Publishes with confirms on one channel; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Publisher {
    pub(super) channel: Channel,
    pub(super) topology: Arc<Topology>,
}

impl Publisher {
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Publishes and waits for the broker's confirm; an unroutable or refused message is an
    /// error, so the caller never acks its input on a publish that did not land.
    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        self.publish_with(exchange, routing_key, body, properties, true)
            .await
    }

    /// `publish`; with `mandatory` false, a message no queue is bound for is dropped by the
    /// broker and confirmed.
    async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), BrokerError> {
        let confirm = self
            .channel
            .basic_publish(
                short(exchange),
                short(routing_key),
                BasicPublishOptions {
                    mandatory,
                    ..Default::default()
                },
                body,
                properties.with_delivery_mode(PERSISTENT),
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => {
                Err(BrokerError::Unroutable(format!("{exchange}/{routing_key}")))
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                Err(BrokerError::Nacked(format!("{exchange}/{routing_key}")))
            }
        }
    }

    fn job_properties(job: &Job) -> BasicProperties {
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(short(job.event_id.as_str()))
            .with_headers(job::to_headers(job))
    }

    /// Parks `job` in the tier that waits `delay`, in one of its queues chosen at random
    /// among those that wait at least `at_least` (the jitter); it comes back on the
    /// deliveries queue after the returned wait.
    pub async fn schedule_retry(
        &self,
        job: &Job,
        delay: Duration,
        at_least: Duration,
        body: &[u8],
    ) -> Result<Duration, BrokerError> {
        let tier = self
            .topology
            .tier_for(delay)
            .ok_or(BrokerError::NoTier(delay))?;
        let queue = tier.pick(at_least, rand::random());
        let exchange = &self.topology.work_exchange;
        self.publish(
            exchange,
            &queue.routing_key,
            body,
            Self::job_properties(job),
        )
        .await?;
        Ok(queue.ttl)
    }

    /// Publishes an operational event to the operational exchange under its type, confirmed.
    /// Who listens is the CRM's choice: with no queue bound it is dropped, not refused.
    pub async fn publish_operational(
        &self,
        event_type: &str,
        message_id: &str,
        body: &[u8],
    ) -> Result<(), BrokerError> {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(short(message_id));
        let exchange = &self.topology.operational_exchange;
        self.publish_with(exchange, event_type, body, properties, false)
            .await
    }

    /// Puts `job` on the deliveries queue now (manual retries and replays).
    pub async fn enqueue(&self, job: &Job, body: &[u8]) -> Result<(), BrokerError> {
        let exchange = &self.topology.work_exchange;
        self.publish(exchange, DELIVERIES_KEY, body, Self::job_properties(job))
            .await
    }

    /// Moves a job whose series is exhausted to the dead-letter queue.
    pub async fn dead_letter(
        &self,
        job: &Job,
        body: &[u8],
        reason: &str,
    ) -> Result<(), BrokerError> {
        let mut properties = Self::job_properties(job);
        let mut headers = job::to_headers(job);
        headers.insert(job::REASON.into(), long_string(reason));
        properties = properties.with_headers(headers);
        let exchange = &self.topology.work_exchange;
        self.publish(exchange, DEAD_KEY, body, properties).await
    }

    /// Moves an unprocessable message aside with its reason and origin, keeping its body and
    /// headers.
    pub async fn quarantine(&self, message: &Message, reason: &str) -> Result<(), BrokerError> {
        let mut headers = message.properties.headers().clone().unwrap_or_default();
        let (exchange, routing_key) = message.published_to();
        headers.insert(job::REASON.into(), long_string(reason));
        headers.insert(job::ORIGINAL_EXCHANGE.into(), long_string(&exchange));
        headers.insert(job::ORIGINAL_ROUTING_KEY.into(), long_string(&routing_key));
        let properties = message.properties.clone().with_headers(headers);
        let exchange = &self.topology.work_exchange;
        self.publish(exchange, QUARANTINE_KEY, &message.body, properties)
            .await
    }

    /// Republishes `message` to the tail of its queue, through `(exchange, routing_key)`
    /// which reach that queue alone (see `pipeline::retry_route`), with `failures` counted in a
    /// header, so the next try knows how many came before: the broker's own count also rises
    /// on outages and lost connections, and not on every version alike. Its origin is kept
    /// for quarantine.
    pub async fn retry_later(
        &self,
        message: &Message,
        (to_exchange, to_key): (&str, &str),
        failures: u32,
    ) -> Result<(), BrokerError> {
        let mut headers = message.properties.headers().clone().unwrap_or_default();
        let (exchange, routing_key) = message.published_to();
        headers.insert(job::FAILURES.into(), AMQPValue::LongUInt(failures));
        headers.insert(job::ORIGINAL_EXCHANGE.into(), long_string(&exchange));
        headers.insert(job::ORIGINAL_ROUTING_KEY.into(), long_string(&routing_key));
        let properties = message.properties.clone().with_headers(headers);
        self.publish(to_exchange, to_key, &message.body, properties)
            .await
    }

    /// Publishes a quarantined message back to where it came from, without our bookkeeping
    /// headers (its failure count starts again).
    pub(super) async fn republish_original(&self, message: &Message) -> Result<(), BrokerError> {
        let (exchange, routing_key) = message.published_to();
        let mut headers = message.properties.headers().clone().unwrap_or_default();
        let mut kept = FieldTable::default();
        for (key, value) in headers.inner() {
            if ![
                job::REASON,
                job::ORIGINAL_EXCHANGE,
                job::ORIGINAL_ROUTING_KEY,
                job::FAILURES,
            ]
            .contains(&key.as_str())
            {
                kept.insert(key.clone(), value.clone());
            }
        }
        headers = kept;
        let properties = message.properties.clone().with_headers(headers);
        self.publish(&exchange, &routing_key, &message.body, properties)
            .await
    }

    /// Publishes an envelope to the events exchange, as a CRM service does.
    pub async fn publish_event(
        &self,
        event_type: &str,
        event_id: &str,
        body: &[u8],
    ) -> Result<(), BrokerError> {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(short(event_id));
        let exchange = &self.topology.events_exchange;
        self.publish(exchange, event_type, body, properties).await
    }
}
