//! The event envelope CRM services publish, checked without re-encoding: the bytes that arrived
//! are the bytes every subscriber receives.

use serde::Deserialize;

use crate::domain::{Catalog, CompanyId, EventId};

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
    pub fn code(&self) -> &'static str {
        match self {
            InvalidEnvelope::NotJson(_) => "not_json",
            InvalidEnvelope::MissingField(_) => "missing_field",
            InvalidEnvelope::UnknownEventType(_) => "unknown_event_type",
            InvalidEnvelope::TooLarge { .. } => "too_large",
        }
    }
}

/// The routing facts of a valid envelope; the payload itself stays as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHead {
    pub id: EventId,
    pub event_type: String,
    pub company_id: CompanyId,
}

#[derive(Deserialize)]
struct RawHead {
    id: Option<serde_json::Value>,
    event: Option<serde_json::Value>,
    company_id: Option<serde_json::Value>,
}

/// Parses and checks an envelope. It must be at most `max_bytes` long (each copy in flight and
/// each stored event costs its size), and valid JSON as a whole (serde reads past the fields we
/// ignore), with `id`, `company_id` and `event` non-empty strings, `event` in the catalog.
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
    // serde also maps a JSON array onto a struct, field by field; an envelope is an object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(InvalidEnvelope::NotJson("expected a JSON object".into()));
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
    Ok(EnvelopeHead {
        id,
        event_type,
        company_id,
    })
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
            (r#"{"id":"e","event":"deal.won"}"#, "missing_field"),
            (r#"{"id":"e","company_id":"c"}"#, "missing_field"),
            (
                r#"{"id":"e","event":"deal.exploded","company_id":"c"}"#,
                "unknown_event_type",
            ),
        ];
        for (body, code) in cases {
            assert_eq!(check(body).expect_err(body).code(), code, "{body}");
        }
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
        assert_eq!(over.code(), "too_large");
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
                .code(),
            "too_large"
        );
    }
}
