//! The time the delivery log files an event under (`event_at`): its partition, and the time
//! in its deliveries' ids. A redelivered or republished event must be filed under the same
//! time as before, so the dedupe on (event id, webhook id, `event_at`) catches it: that is
//! the envelope's own timestamp, which every copy repeats. Clocks disagree and publishers
//! err, so a timestamp far from the receipt is not trusted with the log's layout: a day old
//! at most (an outbox catching up), an hour ahead at most; past that, and without one, the
//! event is filed under the time it was received, and the fan-out looks up a first copy's
//! deliveries to file another copy with them.

use std::time::Duration;

use time::OffsetDateTime;

/// How far before its receipt an event's timestamp may lie and still file it.
pub const TRUSTED_PAST: Duration = Duration::from_secs(24 * 3600);
/// How far after its receipt.
pub const TRUSTED_FUTURE: Duration = Duration::from_secs(3600);

/// The time to file an event under, in whole milliseconds (what a UUID v7 holds).
pub fn event_time(
    occurred_at: Option<OffsetDateTime>,
    received_at: OffsetDateTime,
) -> OffsetDateTime {
    whole_millis(trusted_timestamp(occurred_at, received_at).unwrap_or(received_at))
}

/// The event's timestamp, if it is close enough to its receipt to file the event: without
/// one, another copy of the event is filed elsewhere, and only a look-up finds the first.
pub fn trusted_timestamp(
    occurred_at: Option<OffsetDateTime>,
    received_at: OffsetDateTime,
) -> Option<OffsetDateTime> {
    occurred_at
        .filter(|at| *at >= received_at - TRUSTED_PAST && *at <= received_at + TRUSTED_FUTURE)
}

fn whole_millis(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const RECEIVED: OffsetDateTime = datetime!(2026-12-07 10:00:00.123456 UTC);

    #[test]
    fn a_plausible_timestamp_files_the_event() {
        let at = datetime!(2026-12-07 09:59:58.5 UTC);
        assert_eq!(event_time(Some(at), RECEIVED), at);
        let a_day_old = RECEIVED - TRUSTED_PAST;
        assert_eq!(
            event_time(Some(a_day_old), RECEIVED),
            whole_millis(a_day_old)
        );
        let an_hour_ahead = RECEIVED + TRUSTED_FUTURE;
        assert_eq!(
            event_time(Some(an_hour_ahead), RECEIVED),
            whole_millis(an_hour_ahead)
        );
    }

    #[test]
    fn without_a_plausible_timestamp_the_receipt_files_it() {
        let filed = datetime!(2026-12-07 10:00:00.123 UTC);
        assert_eq!(event_time(None, RECEIVED), filed);
        let too_old = RECEIVED - TRUSTED_PAST - Duration::from_millis(1);
        assert_eq!(event_time(Some(too_old), RECEIVED), filed);
        let too_far_ahead = RECEIVED + TRUSTED_FUTURE + Duration::from_millis(1);
        assert_eq!(event_time(Some(too_far_ahead), RECEIVED), filed);
        assert_eq!(
            event_time(Some(datetime!(1970-01-01 0:00 UTC)), RECEIVED),
            filed
        );
    }

    #[test]
    fn the_time_is_cut_to_whole_milliseconds() {
        let at = datetime!(2026-12-07 09:59:59.999999999 UTC);
        assert_eq!(
            event_time(Some(at), RECEIVED),
            datetime!(2026-12-07 09:59:59.999 UTC)
        );
    }
}
