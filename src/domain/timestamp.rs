//! Times given by users (API filters, CLI flags): RFC 3339, normalised to UTC.

use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};

/// Parses an RFC 3339 time and normalises it to UTC. `None` for text that is not RFC 3339,
/// and for a time whose UTC form is past the year 9999 (`9999-12-31T23:59:59-01:00` is in
/// 10000): PostgreSQL's driver panics encoding it.
pub fn parse_utc(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()?
        .checked_to_offset(UtcOffset::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_time_becomes_utc() {
        let utc = parse_utc("2026-11-27T08:00:00+01:00").expect("valid");
        assert_eq!(utc.offset(), UtcOffset::UTC);
        assert_eq!(utc.hour(), 7);
    }

    #[test]
    fn a_time_whose_utc_form_is_past_the_year_9999_is_refused() {
        assert!(parse_utc("9999-12-31T23:59:59-01:00").is_none());
        assert!(parse_utc("9999-12-31T23:59:59-00:01").is_none());
        assert!(parse_utc("9999-12-31T23:59:59Z").is_some());
    }

    #[test]
    fn text_that_is_not_rfc_3339_is_refused() {
        for text in ["", "yesterday", "2026-11-27", "2026-11-27 08:00:00"] {
            assert!(parse_utc(text).is_none(), "{text:?}");
        }
    }
}
