//! A consumed message, free of lapin types for the pipeline.

use bytes::Bytes;
use lapin::BasicProperties;

use super::job::{self, Job, JobError};

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
        Self {
            body: Bytes::from(delivery.data),
            properties: delivery.properties,
            redelivered: delivery.redelivered,
            exchange: delivery.exchange.to_string(),
            routing_key: delivery.routing_key.to_string(),
        }
    }
}

impl Message {
    /// Times the broker delivered this message before (quorum queues count them in
    /// `x-delivery-count`); 0 on the first delivery.
    pub fn delivery_count(&self) -> u32 {
        self.properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-delivery-count"))
            .and_then(job::integer)
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    pub fn job(&self) -> Result<Job, JobError> {
        Job::from_headers(self.properties.headers().as_ref())
    }

    pub fn reason(&self) -> Option<String> {
        job::header_text(self.properties.headers().as_ref(), job::REASON)
    }

    /// The AMQP `message_id` property (publishers set it to the event id).
    pub fn message_id(&self) -> Option<&str> {
        self.properties.message_id().as_ref().map(|id| id.as_str())
    }

    /// The exchange and routing key it was first published with (for quarantined messages,
    /// as recorded when they were moved aside).
    pub fn origin(&self) -> (String, String) {
        let headers = self.properties.headers().as_ref();
        match (
            job::header_text(headers, job::ORIGINAL_EXCHANGE),
            job::header_text(headers, job::ORIGINAL_ROUTING_KEY),
        ) {
            (Some(exchange), Some(key)) => (exchange, key),
            _ => (self.exchange.clone(), self.routing_key.clone()),
        }
    }
}
