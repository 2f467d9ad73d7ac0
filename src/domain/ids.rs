//! Identifiers. Event and company ids come from the CRM and are opaque strings; webhook and
//! delivery ids are ours (UUID v7, so they sort by creation time).

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("must be 1 to 255 visible ASCII characters (no spaces)")]
    Malformed,
    #[error("must be a UUID")]
    NotUuid,
}

/// 1 to 255 visible ASCII characters (`!` to `~`, no spaces): what an opaque id or type from
/// outside must be to travel in an HTTP header value (the `webhook-id` a receiver dedupes on;
/// other bytes are obsolete there, and the header could not be sent) and an AMQP short
/// string, and to be stored as text. The API documents it as `^[!-~]{1,255}$`.
pub fn is_short_text(value: &str) -> bool {
    (1..=255).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
}

/// An opaque id from the CRM: see `is_short_text`.
fn check_external(value: &str) -> Result<(), IdError> {
    if is_short_text(value) {
        Ok(())
    } else {
        Err(IdError::Malformed)
    }
}

macro_rules! external_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_external(&value)?;
                Ok(Self(value))
            }

            /// A value the database holds. It was checked when it came in, under the rule of
            /// its time; a later, stricter rule applies to new input, not to stored rows.
            pub fn from_stored(value: String) -> Self {
                Self(value)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

external_id!(
    /// The CRM's event id: the receiver's idempotency key (`webhook-id` header).
    EventId
);
external_id!(
    /// The tenant: an event of one company never reaches another company's webhook.
    CompanyId
);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn parse(value: &str) -> Result<Self, IdError> {
                Uuid::parse_str(value).map(Self).map_err(|_| IdError::NotUuid)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A subscription.
    WebhookId
);
uuid_id!(
    /// One event going to one webhook, across all its attempts.
    DeliveryId
);
uuid_id!(
    /// A company-scoped API token (its id, not the token).
    TokenId
);

impl DeliveryId {
    /// A fresh id for a delivery of an event filed under `event_at` (see `event_time`): a
    /// UUID v7 of that time, so the id alone says which partition of the log holds it.
    pub fn at(event_at: time::OffsetDateTime) -> Self {
        let nanos = event_at.unix_timestamp_nanos();
        let seconds = u64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(0);
        let subsec = u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
        Self(Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            seconds,
            subsec,
        )))
    }

    /// The time a UUID v7 id holds, to the millisecond: the `event_at` of the delivery.
    pub fn time(&self) -> time::OffsetDateTime {
        let millis = i128::try_from(self.0.as_u128() >> 80).unwrap_or(0);
        time::OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    /// The lowest id a delivery created at `time` or later can have: ids are UUID v7, whose
    /// first 48 bits are the creation time in Unix milliseconds, and UUIDs compare bytewise,
    /// so "created before `time`" is "id below this".
    pub fn lowest_at(time: time::OffsetDateTime) -> Self {
        let millis = u128::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        Self(Uuid::from_u128((millis & 0xffff_ffff_ffff) << 80))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_reject_empty_control_and_huge() {
        assert!(EventId::parse("evt_1").is_ok());
        assert_eq!(EventId::parse(""), Err(IdError::Malformed));
        assert_eq!(EventId::parse("  "), Err(IdError::Malformed));
        assert_eq!(EventId::parse("a\nb"), Err(IdError::Malformed));
        assert_eq!(CompanyId::parse("x".repeat(256)), Err(IdError::Malformed));
        assert!(CompanyId::parse("x".repeat(255)).is_ok());
        for not_ascii in ["cmp é", "évt", "a b", "tab\there"] {
            assert_eq!(
                EventId::parse(not_ascii),
                Err(IdError::Malformed),
                "{not_ascii}"
            );
        }
    }

    #[test]
    fn delivery_ids_order_by_creation_time() {
        let now = time::OffsetDateTime::now_utc();
        let id = DeliveryId::new();
        assert!(DeliveryId::lowest_at(now - time::Duration::milliseconds(2)) < id);
        assert!(DeliveryId::lowest_at(now + time::Duration::milliseconds(2)) > id);
        assert!(DeliveryId::lowest_at(time::OffsetDateTime::UNIX_EPOCH) <= id);
    }

    #[test]
    fn an_id_made_for_a_time_holds_that_time() {
        let at = time::macros::datetime!(2026-12-07 10:00:00.123 UTC);
        let id = DeliveryId::at(at);
        assert!(DeliveryId::lowest_at(at) <= id);
        assert!(id < DeliveryId::lowest_at(at + time::Duration::milliseconds(1)));
        assert_ne!(id, DeliveryId::at(at), "two deliveries at one time differ");
        assert_eq!(id.time(), at);
    }

    #[test]
    fn uuid_ids_round_trip() {
        let id = WebhookId::new();
        assert_eq!(WebhookId::parse(&id.to_string()), Ok(id));
        assert_eq!(DeliveryId::parse("nope"), Err(IdError::NotUuid));
        assert_eq!(IdError::NotUuid.to_string(), "must be a UUID");
    }
}
