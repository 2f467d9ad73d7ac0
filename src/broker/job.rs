//! A delivery job ([`Job`]) on the wire: carried in headers of our own, the message body being
//! the envelope, unchanged.

use lapin::types::{AMQPValue, FieldTable};

use super::topology::long_string;
use time::OffsetDateTime;

use crate::domain::{DeliveryId, EventId, Job, Trigger, WebhookId, is_short_text};

const DELIVERY_ID: &str = "x-tesoro-delivery-id";
const WEBHOOK_ID: &str = "x-tesoro-webhook-id";
const EVENT_ID: &str = "x-tesoro-event-id";
const EVENT_TYPE: &str = "x-tesoro-event-type";
const ATTEMPT: &str = "x-tesoro-attempt";
const SERIES_ATTEMPT: &str = "x-tesoro-series-attempt";
const TRIGGER: &str = "x-tesoro-trigger";
/// The event's timestamp, Unix milliseconds; absent when unknown.
const EVENT_TIME: &str = "x-tesoro-event-time";
/// On a message republished to be tried again: how often its handling failed so far.
pub const FAILURES: &str = "x-tesoro-failures";
/// On dead-lettered and quarantined messages: why.
pub const REASON: &str = "x-tesoro-reason";
/// On quarantined messages: where they were published, so `quarantine requeue` can send them
/// back.
pub const ORIGINAL_EXCHANGE: &str = "x-tesoro-original-exchange";
pub const ORIGINAL_ROUTING_KEY: &str = "x-tesoro-original-routing-key";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("delivery job header {0} is missing or invalid")]
pub struct JobError(pub &'static str);

/// The headers that carry `job`.
pub fn to_headers(job: &Job) -> FieldTable {
    let mut headers = FieldTable::default();
    let mut text = |key: &str, value: &str| {
        headers.insert(key.into(), long_string(value));
    };
    text(DELIVERY_ID, &job.delivery_id.to_string());
    text(WEBHOOK_ID, &job.webhook_id.to_string());
    text(EVENT_ID, job.event_id.as_str());
    text(EVENT_TYPE, &job.event_type);
    text(TRIGGER, job.trigger.as_str());
    headers.insert(ATTEMPT.into(), AMQPValue::LongUInt(job.attempt));
    headers.insert(
        SERIES_ATTEMPT.into(),
        AMQPValue::LongUInt(job.series_attempt),
    );
    if let Some(at) = job.occurred_at {
        let millis = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        headers.insert(EVENT_TIME.into(), AMQPValue::LongLongInt(millis));
    }
    headers
}

/// The job that `headers` carry; the first header missing or invalid is named.
pub fn from_headers(headers: Option<&FieldTable>) -> Result<Job, JobError> {
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty).inner();
    let text = |key: &'static str| -> Result<String, JobError> {
        match headers.get(key) {
            Some(AMQPValue::LongString(s)) => {
                String::from_utf8(s.as_bytes().to_vec()).map_err(|_| JobError(key))
            }
            Some(AMQPValue::ShortString(s)) => Ok(s.as_str().to_owned()),
            _ => Err(JobError(key)),
        }
    };
    let number = |key: &'static str| -> Result<u32, JobError> {
        headers
            .get(key)
            .and_then(integer)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n >= 1)
            .ok_or(JobError(key))
    };
    Ok(Job {
        delivery_id: DeliveryId::parse(&text(DELIVERY_ID)?).map_err(|_| JobError(DELIVERY_ID))?,
        webhook_id: WebhookId::parse(&text(WEBHOOK_ID)?).map_err(|_| JobError(WEBHOOK_ID))?,
        event_id: EventId::parse(text(EVENT_ID)?).map_err(|_| JobError(EVENT_ID))?,
        event_type: Some(text(EVENT_TYPE)?)
            .filter(|t| is_short_text(t))
            .ok_or(JobError(EVENT_TYPE))?,
        attempt: number(ATTEMPT)?,
        series_attempt: number(SERIES_ATTEMPT)?,
        trigger: Trigger::parse(&text(TRIGGER)?).ok_or(JobError(TRIGGER))?,
        // Optional (older jobs lack it), and only a measuring point: an unreadable one is none.
        occurred_at: headers
            .get(EVENT_TIME)
            .and_then(integer)
            .and_then(|millis| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()
            }),
    })
}

/// An integer header value of any AMQP integer width.
pub fn integer(value: &AMQPValue) -> Option<i64> {
    Some(match value {
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        _ => return None,
    })
}

/// A text header of a message, if present.
pub fn header_text(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            delivery_id: DeliveryId::new(),
            webhook_id: WebhookId::new(),
            event_id: EventId::parse("evt_1").expect("valid"),
            event_type: "deal.won".into(),
            attempt: 3,
            series_attempt: 2,
            trigger: Trigger::Manual,
            occurred_at: Some(time::macros::datetime!(2026-11-27 08:00:00.123 UTC)),
        }
    }

    #[test]
    fn headers_round_trip() {
        let job = job();
        assert_eq!(from_headers(Some(&to_headers(&job))), Ok(job.clone()));
        let untimed = Job {
            occurred_at: None,
            ..job
        };
        assert_eq!(from_headers(Some(&to_headers(&untimed))), Ok(untimed));
    }

    #[test]
    fn missing_or_bad_headers_are_named() {
        assert_eq!(from_headers(None), Err(JobError(DELIVERY_ID)));
        let mut headers = to_headers(&job());
        headers.insert(ATTEMPT.into(), AMQPValue::LongUInt(0));
        assert_eq!(from_headers(Some(&headers)), Err(JobError(ATTEMPT)));
        headers.insert(ATTEMPT.into(), long_string("three"));
        assert_eq!(from_headers(Some(&headers)), Err(JobError(ATTEMPT)));
    }

    /// Every text header reaches PostgreSQL or a request header: one it would refuse (a NUL)
    /// or that is no event type at all must stop here, not fail the write on every try.
    #[test]
    fn text_headers_are_checked_like_the_api_checks_them() {
        for (key, value) in [
            (EVENT_TYPE, "deal\0won"),
            (EVENT_TYPE, ""),
            (EVENT_TYPE, &"x".repeat(256)),
            (EVENT_ID, "evt\u{1}"),
            (DELIVERY_ID, "not-a-uuid"),
            (TRIGGER, "sometimes"),
        ] {
            let mut headers = to_headers(&job());
            headers.insert(key.into(), long_string(value));
            assert_eq!(
                from_headers(Some(&headers)),
                Err(JobError(key)),
                "{key} = {value:?}"
            );
        }
    }
}
