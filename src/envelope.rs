//! The event envelope CRM services publish, checked without re-encoding: the bytes that arrived
//! are the bytes every subscriber receives.

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, SeqAccess, Visitor},
};

use time::OffsetDateTime;

use crate::domain::{Catalog, CompanyId, EventId, QuarantineReason};

/// Why a message on the bus is not a deliverable event. Its `code` travels with the quarantined
/// message and labels the metric, so the set is small and fixed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidEnvelope {
    #[error("body is not a JSON object: {0}")]
    NotJson(String),
    #[error("missing or invalid field {0:?}")]
    MissingField(&'static str),
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    #[error("the event is {size} bytes, over delivery.max_event_size ({max} bytes)")]
    TooLarge { size: usize, max: usize },
}

impl InvalidEnvelope {
    pub fn reason(&self) -> QuarantineReason {
        match self {
            InvalidEnvelope::NotJson(_) => QuarantineReason::NotJson,
            InvalidEnvelope::MissingField(_) => QuarantineReason::MissingField,
            InvalidEnvelope::UnknownEventType(_) => QuarantineReason::UnknownEventType,
            InvalidEnvelope::TooLarge { .. } => QuarantineReason::TooLarge,
        }
    }
}

/// An envelope as the CRM publishes it (README, "What a subscriber receives"): `{"id",
/// "event", "timestamp", "company_id", "data", "previous_data"}`, with `evt_` + the simple
/// form of `id` as its id. Returns that id and the body.
pub fn compose(
    id: uuid::Uuid,
    event: &str,
    company: &str,
    data: serde_json::Value,
    previous: Option<serde_json::Value>,
    at: OffsetDateTime,
) -> (String, Vec<u8>) {
    let id = format!("evt_{}", id.simple());
    let timestamp = rfc3339(at);
    let body = serde_json::json!({
        "id": id, "event": event, "timestamp": timestamp, "company_id": company,
        "data": data, "previous_data": previous,
    });
    // Serializing a `Value` cannot fail.
    let body = serde_json::to_vec(&body).unwrap_or_default();
    (id, body)
}

/// `at` as RFC 3339, as envelopes and events carry times.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The routing facts of a valid envelope; the payload itself stays as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHead {
    pub id: EventId,
    pub event_type: String,
    pub company_id: CompanyId,
    /// Its `timestamp`, when it holds an RFC 3339 time (optional in the contract): where the
    /// delivery latency is measured from.
    pub occurred_at: Option<OffsetDateTime>,
}

/// Parses and checks an envelope. It must be at most `max_bytes` long (each copy in flight and
/// each stored event costs its size), and valid JSON as a whole: every string UTF-8 with valid
/// escapes, nested at most [`MAX_NESTING`] deep, each member named once. `id`, `company_id`
/// and `event` must be non-empty strings, `event` in the catalog. The payload is checked in the
/// same pass that finds those three, and thrown away: the bytes are what subscribers receive.
pub fn parse(
    body: &[u8],
    catalog: &Catalog,
    max_bytes: usize,
) -> Result<EnvelopeHead, InvalidEnvelope> {
    if body.len() > max_bytes {
        return Err(InvalidEnvelope::TooLarge {
            size: body.len(),
            max: max_bytes,
        });
    }
    let raw: RawHead =
        serde_json::from_slice(body).map_err(|e| InvalidEnvelope::NotJson(e.to_string()))?;
    let text = |v: Option<serde_json::Value>, field| match v {
        Some(serde_json::Value::String(s)) => Ok(s),
        _ => Err(InvalidEnvelope::MissingField(field)),
    };
    let id =
        EventId::parse(text(raw.id, "id")?).map_err(|_| InvalidEnvelope::MissingField("id"))?;
    let company_id = CompanyId::parse(text(raw.company_id, "company_id")?)
        .map_err(|_| InvalidEnvelope::MissingField("company_id"))?;
    let event_type = text(raw.event, "event")?;
    if event_type.is_empty() {
        return Err(InvalidEnvelope::MissingField("event"));
    }
    if !catalog.contains(&event_type) {
        return Err(InvalidEnvelope::UnknownEventType(event_type));
    }
    let occurred_at = match raw.timestamp {
        Some(serde_json::Value::String(text)) => crate::domain::parse_utc(&text),
        _ => None,
    };
    Ok(EnvelopeHead {
        id,
        event_type,
        company_id,
        occurred_at,
    })
}

/// How many levels deep arrays and objects may nest in an envelope, the envelope object itself
/// counting as one: serde_json's recursion limit, which every value below is parsed under.
/// Deeper documents are refused as not JSON (many receivers' parsers would refuse them too, or
/// overflow their stack).
pub const MAX_NESTING: usize = 127;

/// The routing fields of an envelope object and its timestamp; every other member is checked
/// and dropped.
struct RawHead {
    id: Option<serde_json::Value>,
    event: Option<serde_json::Value>,
    company_id: Option<serde_json::Value>,
    timestamp: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for RawHead {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `deserialize_map`, not a struct: serde would also map a JSON array onto a struct,
        // field by field, and an envelope is an object.
        deserializer.deserialize_map(HeadVisitor)
    }
}

struct HeadVisitor;

impl<'de> Visitor<'de> for HeadVisitor {
    type Value = RawHead;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHead, A::Error> {
        let mut head = RawHead {
            id: None,
            event: None,
            company_id: None,
            timestamp: None,
        };
        while let Some(key) = map.next_key::<HeadKey>()? {
            let (slot, name) = match key {
                HeadKey::Id => (&mut head.id, "id"),
                HeadKey::Event => (&mut head.event, "event"),
                HeadKey::CompanyId => (&mut head.company_id, "company_id"),
                // Not a routing field: a repeated one is kept as first given, as before it
                // was read at all.
                HeadKey::Timestamp if head.timestamp.is_some() => {
                    map.next_value::<Checked>()?;
                    continue;
                }
                HeadKey::Timestamp => (&mut head.timestamp, "timestamp"),
                HeadKey::Other => {
                    map.next_value::<Checked>()?;
                    continue;
                }
            };
            // Two ids would leave it to each reader which one counts.
            if slot.is_some() {
                return Err(de::Error::duplicate_field(name));
            }
            *slot = Some(map.next_value()?);
        }
        Ok(head)
    }
}

/// A member name of the envelope, parsed (and so checked) like any string.
enum HeadKey {
    Id,
    Event,
    CompanyId,
    Timestamp,
    Other,
}

impl<'de> Deserialize<'de> for HeadKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = HeadKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<HeadKey, E> {
                Ok(match key {
                    "id" => HeadKey::Id,
                    "event" => HeadKey::Event,
                    "company_id" => HeadKey::CompanyId,
                    "timestamp" => HeadKey::Timestamp,
                    _ => HeadKey::Other,
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Any JSON value, parsed in full and dropped: strings are decoded (UTF-8, escapes, no lone
/// surrogates) and arrays and objects count against the recursion limit, which serde_json's
/// skipping of unknown members checks neither of.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str) -> Result<EnvelopeHead, InvalidEnvelope> {
        parse(body.as_bytes(), &Catalog::builtin(), 1 << 20)
    }

    #[test]
    fn accepts_the_design_example() {
        let head = check(
            r#"{"id":"evt_1","event":"deal.won","timestamp":"2026-11-27T08:00:00Z",
                "company_id":"cmp_42","data":{"id":"deal_7"},"previous_data":{"status":"x"}}"#,
        )
        .expect("valid");
        assert_eq!(head.id.as_str(), "evt_1");
        assert_eq!(head.event_type, "deal.won");
        assert_eq!(head.company_id.as_str(), "cmp_42");
        assert_eq!(
            head.occurred_at,
            Some(time::macros::datetime!(2026-11-27 08:00:00 UTC))
        );
    }

    /// The timestamp is optional in the contract: without a readable one, the envelope is
    /// still delivered, and no latency is measured for it.
    #[test]
    fn a_missing_or_unreadable_timestamp_is_no_timestamp() {
        for body in [
            r#"{"id":"e","event":"deal.won","company_id":"c"}"#,
            r#"{"id":"e","event":"deal.won","company_id":"c","timestamp":"yesterday"}"#,
            r#"{"id":"e","event":"deal.won","company_id":"c","timestamp":1764230400}"#,
        ] {
            assert_eq!(check(body).expect(body).occurred_at, None, "{body}");
        }
        let offset = r#"{"id":"e","event":"deal.won","company_id":"c","timestamp":"2026-11-27T09:00:00+01:00","timestamp":"x"}"#;
        assert_eq!(
            check(offset).expect("valid").occurred_at,
            Some(time::macros::datetime!(2026-11-27 08:00:00 UTC))
        );
    }

    #[test]
    fn rejects_each_kind_of_bad_message() {
        let cases = [
            ("not json", "not_json"),
            ("[1,2]", "not_json"),
            (r#"["e","deal.won","c"]"#, "not_json"),
            (
                r#"{"id":"e","event":"deal.won","company_id":"c""#,
                "not_json",
            ),
            (r#"{"event":"deal.won","company_id":"c"}"#, "missing_field"),
            (
                r#"{"id":"","event":"deal.won","company_id":"c"}"#,
                "missing_field",
            ),
            (
                r#"{"id":5,"event":"deal.won","company_id":"c"}"#,
                "missing_field",
            ),
            // An id a `webhook-id` header could not carry.
            (
                r#"{"id":"évt 1","event":"deal.won","company_id":"c"}"#,
                "missing_field",
            ),
            (r#"{"id":"e","event":"deal.won"}"#, "missing_field"),
            (r#"{"id":"e","company_id":"c"}"#, "missing_field"),
            (
                r#"{"id":"e","event":"deal.exploded","company_id":"c"}"#,
                "unknown_event_type",
            ),
        ];
        for (body, code) in cases {
            assert_eq!(
                check(body).expect_err(body).reason().as_str(),
                code,
                "{body}"
            );
        }
    }

    /// serde_json skips unknown members without decoding their strings or counting their
    /// depth; the payload must be valid JSON all the same.
    #[test]
    fn the_payload_is_checked_in_full() {
        let catalog = Catalog::builtin();
        let envelope = |data: &[u8]| {
            let mut body = br#"{"id":"e","event":"deal.won","company_id":"c","data":"#.to_vec();
            body.extend_from_slice(data);
            body.push(b'}');
            body
        };
        let bad_utf8 = envelope(b"{\"name\":\"caf\xe9\"}");
        let deep = envelope(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).as_bytes());
        let lone_surrogate = envelope(br#""\ud800""#);
        let bad_key = envelope(b"{\"\xff\":1}");
        for (body, what) in [
            (&bad_utf8, "invalid UTF-8 in a string"),
            (&deep, "arrays nested 10,000 deep"),
            (&lone_surrogate, "a lone surrogate escape"),
            (&bad_key, "invalid UTF-8 in a member name"),
        ] {
            let error = parse(body, &catalog, 1 << 20).expect_err(what);
            assert_eq!(error.reason().as_str(), "not_json", "{what}: {error}");
        }
        let nested = |depth: usize| {
            envelope(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).as_bytes())
        };
        assert!(
            parse(&nested(MAX_NESTING - 1), &catalog, 1 << 20).is_ok(),
            "within the bound"
        );
        assert!(
            parse(&nested(MAX_NESTING), &catalog, 1 << 20).is_err(),
            "past the bound"
        );
        let escaped = envelope(br#"{"caf\u00e9":"\ud83d\ude00 ok","n":[1,-2.5e3,true,null]}"#);
        assert!(
            parse(&escaped, &catalog, 1 << 20).is_ok(),
            "escapes and every kind of value"
        );
    }

    #[test]
    fn a_routing_field_given_twice_is_refused() {
        let error = check(r#"{"id":"e1","event":"deal.won","company_id":"c","id":"e2"}"#)
            .expect_err("two ids");
        assert_eq!(error.reason().as_str(), "not_json");
        assert!(
            error.to_string().contains("duplicate field `id`"),
            "{error}"
        );
    }

    #[test]
    fn the_size_limit_counts_the_whole_body_and_comes_first() {
        let valid = r#"{"id":"e","event":"deal.won","company_id":"c"}"#;
        let catalog = Catalog::builtin();
        assert!(
            parse(valid.as_bytes(), &catalog, valid.len()).is_ok(),
            "at the limit"
        );
        let over = parse(valid.as_bytes(), &catalog, valid.len() - 1).expect_err("over");
        assert_eq!(over.reason().as_str(), "too_large");
        assert_eq!(
            over.to_string(),
            format!(
                "the event is {} bytes, over delivery.max_event_size ({} bytes)",
                valid.len(),
                valid.len() - 1
            )
        );
        // Not parsed at all: an oversized body is refused for its size whatever it holds.
        let junk = "x".repeat(64);
        assert_eq!(
            parse(junk.as_bytes(), &catalog, 32)
                .expect_err("junk")
                .reason()
                .as_str(),
            "too_large"
        );
    }
}
