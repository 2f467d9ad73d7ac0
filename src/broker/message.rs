//! A consumed message, free of lapin types for the pipeline.

use bytes::Bytes;
use lapin::{
    BasicProperties,
    types::{AMQPValue, ShortString},
};

use super::job::{self, JobError};
use crate::domain::Job;

/// A consumed message, free of lapin types for the pipeline.
#[derive(Debug)]
pub struct Message {
    pub body: Bytes,
    pub(super) properties: BasicProperties,
    pub redelivered: bool,
    /// Where it was published: quarantine keeps these so `requeue` can send it back.
    exchange: String,
    routing_key: String,
}

impl From<lapin::message::Delivery> for Message {
    fn from(delivery: lapin::message::Delivery) -> Self {
        let mut message = Self {
            body: Bytes::from(delivery.data),
            properties: delivery.properties,
            redelivered: delivery.redelivered,
            exchange: delivery.exchange.to_string(),
            routing_key: delivery.routing_key.to_string(),
        };
        // A copy republished after a failure of its own may have made deliveries before.
        message.redelivered |= message.failures() > 0;
        message
    }
}

impl Message {
    /// Times its handling failed for a reason of its own (counted by the worker in a header of
    /// its republished copy; see `Publisher::retry_later`); 0 at first.
    pub fn failures(&self) -> u32 {
        self.properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(job::FAILURES))
            .and_then(job::integer)
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    pub fn job(&self) -> Result<Job, JobError> {
        job::from_headers(self.properties.headers().as_ref())
    }

    /// Why it was moved aside: our reason header, or for a message the broker dead-lettered
    /// into quarantine (its delivery limit), the broker's reason.
    pub fn reason(&self) -> Option<String> {
        let headers = self.properties.headers().as_ref();
        job::header_text(headers, job::REASON).or_else(|| {
            let death = self.last_death()?;
            let reason = text_of(death.get("reason")?)?;
            let queue = death.get("queue").and_then(text_of).unwrap_or_default();
            Some(format!(
                "{reason}: dead-lettered by the broker from {queue}"
            ))
        })
    }

    /// The AMQP `message_id` property (publishers set it to the event id).
    pub fn message_id(&self) -> Option<&str> {
        self.properties.message_id().as_ref().map(|id| id.as_str())
    }

    /// The exchange and routing key it was first published with (for quarantined messages,
    /// as recorded when they were moved aside, or for one the broker dead-lettered, as the
    /// broker recorded it).
    pub fn published_to(&self) -> (String, String) {
        let headers = self.properties.headers().as_ref();
        match (
            job::header_text(headers, job::ORIGINAL_EXCHANGE),
            job::header_text(headers, job::ORIGINAL_ROUTING_KEY),
        ) {
            (Some(exchange), Some(key)) => (exchange, key),
            _ => self
                .dead_lettered_from()
                .unwrap_or_else(|| (self.exchange.clone(), self.routing_key.clone())),
        }
    }

    /// The newest entry of the broker's `x-death` header, which it adds on dead-lettering.
    fn last_death(&self) -> Option<&std::collections::BTreeMap<ShortString, AMQPValue>> {
        match self.properties.headers().as_ref()?.inner().get("x-death")? {
            AMQPValue::FieldArray(deaths) => match deaths.as_slice().first()? {
                AMQPValue::FieldTable(death) => Some(death.inner()),
                _ => None,
            },
            _ => None,
        }
    }

    fn dead_lettered_from(&self) -> Option<(String, String)> {
        let death = self.last_death()?;
        let exchange = text_of(death.get("exchange")?)?;
        let key = match death.get("routing-keys")? {
            AMQPValue::FieldArray(keys) => text_of(keys.as_slice().first()?)?,
            _ => return None,
        };
        Some((exchange, key))
    }
}

fn text_of(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}
