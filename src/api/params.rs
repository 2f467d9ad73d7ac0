//! The API's typed values, parsed where a body or query string is read: each deserializes
//! only from a valid value, with the message a client sees, and its OpenAPI schema states
//! the same bounds from the same constant the parse reads.

use std::fmt;

use serde::{Deserialize, Deserializer, de};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{ObjectBuilder, RefOr, Schema, SchemaFormat, Type},
};

use crate::domain::{DeliveryId, DeliveryStatus, EndpointUrl, WebhookId, is_short_text, parse_utc};

/// A label for people (a webhook's or a token's name): 1 to `MAX_LEN` characters as sent,
/// not all blank, none of them control characters (PostgreSQL refuses NUL in text, and a
/// newline or escape in a name breaks every list that shows it). Stored trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub const MAX_LEN: usize = 200;

    pub fn parse(text: String) -> Result<Self, String> {
        let too_long = text.chars().count() > Self::MAX_LEN;
        let trimmed = text.trim();
        if trimmed.is_empty() || too_long || trimmed.chars().any(char::is_control) {
            return Err(format!(
                "must be 1 to {} characters, none of them control characters",
                Self::MAX_LEN
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Name::parse(String::deserialize(deserializer)?).map_err(de::Error::custom)
    }
}

impl PartialSchema for Name {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(Self::MAX_LEN))
            .into()
    }
}

impl ToSchema for Name {}

/// A webhook's endpoint as sent: parsed into an [`EndpointUrl`] against the SSRF policy by
/// the handler, which holds the policy; the schema states its documented bounds.
pub struct UrlText;

impl PartialSchema for UrlText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uri".into())))
            .max_length(Some(EndpointUrl::MAX_LEN))
            .into()
    }
}

impl ToSchema for UrlText {}

/// A webhook's own limit on attempts per second, across all workers: 1 to `MAX`. Any JSON
/// number with an integer value is taken (`6193.0` is an integer to JSON Schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit(pub u32);

impl RateLimit {
    pub const MAX: u32 = 10_000;

    fn message() -> String {
        format!("must be 1 to {} attempts per second", Self::MAX)
    }

    fn from_f64(value: f64) -> Option<Self> {
        let whole = value.fract() == 0.0 && (1.0..=f64::from(Self::MAX)).contains(&value);
        // Only used when a whole number within 1..=MAX, which the cast keeps exactly.
        whole.then_some(RateLimit(value as u32))
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = RateLimit;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an integer from 1 to {}", RateLimit::MAX)
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RateLimit, E> {
                u32::try_from(value)
                    .ok()
                    .filter(|limit| (1..=RateLimit::MAX).contains(limit))
                    .map(RateLimit)
                    .ok_or_else(|| E::custom(RateLimit::message()))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RateLimit, E> {
                let value = u64::try_from(value).map_err(|_| E::custom(RateLimit::message()))?;
                self.visit_u64(value)
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<RateLimit, E> {
                RateLimit::from_f64(value).ok_or_else(|| E::custom(RateLimit::message()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl PartialSchema for RateLimit {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(Self::MAX))
            .into()
    }
}

impl ToSchema for RateLimit {}

/// Items per page of a listing: 1 to `MAX`, `DEFAULT` when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(pub i64);

impl PageLimit {
    pub const DEFAULT: PageLimit = PageLimit(50);
    pub const MAX: i64 = 500;
}

impl<'de> Deserialize<'de> for PageLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<i64>()
            .ok()
            .filter(|n| (1..=Self::MAX).contains(n))
            .map(PageLimit)
            .ok_or_else(|| de::Error::custom(format!("limit must be 1 to {}", Self::MAX)))
    }
}

impl PartialSchema for PageLimit {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(Self::MAX))
            .default(Some(Self::DEFAULT.0.into()))
            .into()
    }
}

impl ToSchema for PageLimit {}

/// Defines a query value parsed from its text by `$parse`, refused with `$message`.
macro_rules! query_value {
    ($(#[$doc:meta])* $name:ident($inner:ty), $parse:expr, $message:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                let parse: fn(&str) -> Option<$inner> = $parse;
                parse(&text).map($name).ok_or_else(|| de::Error::custom($message))
            }
        }
    };
}

query_value!(
    /// An RFC 3339 time, up to the year 9999, in UTC.
    Time(time::OffsetDateTime),
    parse_utc,
    "must be an RFC 3339 time, at most the year 9999 in UTC"
);
query_value!(
    /// A delivery status.
    StatusName(DeliveryStatus),
    DeliveryStatus::parse,
    "status must be pending, succeeded, retrying or failed"
);
query_value!(
    /// An event type as stored: 1 to 255 visible ASCII characters. Not checked against
    /// today's catalog: deliveries of a type since retired stay listable.
    EventTypeText(String),
    |text| is_short_text(text).then(|| text.to_owned()),
    "event_type must be 1 to 255 visible ASCII characters"
);
query_value!(
    /// A webhook to filter by. A filter, not a resource: a malformed id is a bad field, not
    /// a missing webhook.
    WebhookFilter(WebhookId),
    |text| WebhookId::parse(text).ok(),
    "webhook_id must be a webhook id (a UUID)"
);
query_value!(
    /// The `next_before` of a page of deliveries.
    DeliveryCursor(DeliveryId),
    |text| DeliveryId::parse(text).ok(),
    "before must be a delivery id"
);
query_value!(
    /// The `next_before` of a page of attempts.
    AttemptCursor(i64),
    |text| text.parse().ok(),
    "before must be an attempt id"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn rate_limit(json: &str) -> Result<RateLimit, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_rate_limit_is_any_json_number_with_an_integer_value_in_range() {
        assert_eq!(rate_limit("6193"), Ok(RateLimit(6193)));
        assert_eq!(rate_limit("6193.0"), Ok(RateLimit(6193)));
        assert_eq!(rate_limit("1e3"), Ok(RateLimit(1000)));
        assert_eq!(rate_limit("10000"), Ok(RateLimit(RateLimit::MAX)));
        for refused in ["0", "-1", "10001", "1.5", "1e10", "\"5\"", "true"] {
            assert!(rate_limit(refused).is_err(), "{refused}");
        }
        assert!(
            rate_limit("0")
                .expect_err("0")
                .starts_with("must be 1 to 10000 attempts per second")
        );
    }

    #[test]
    fn schemas_state_the_bounds_the_parse_reads() {
        let json = |schema: RefOr<Schema>| serde_json::to_value(schema).expect("json");
        assert_eq!(json(RateLimit::schema())["maximum"], RateLimit::MAX);
        assert_eq!(json(PageLimit::schema())["maximum"], PageLimit::MAX);
        assert_eq!(json(Name::schema())["maxLength"], Name::MAX_LEN);
        assert_eq!(json(UrlText::schema())["maxLength"], EndpointUrl::MAX_LEN);
    }

    #[test]
    fn names_are_trimmed_and_bounded_as_sent() {
        assert_eq!(
            Name::parse("  Zapier ".into()).map(Name::into_inner),
            Ok("Zapier".into())
        );
        assert!(Name::parse("   ".into()).is_err());
        assert!(Name::parse("a\nb".into()).is_err());
        assert!(Name::parse("é".repeat(Name::MAX_LEN)).is_ok());
        assert!(Name::parse("é".repeat(Name::MAX_LEN + 1)).is_err());
    }
}
