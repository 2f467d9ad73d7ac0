//! What one attempt's result means: delivered, or failed with a typed reason; and what happens
//! next. Pure functions, decided from values, never from error text.

use std::time::Duration;

use serde::Serialize;

use crate::retry::RetrySchedule;

/// Why an attempt did not get its 2xx. Stored as the attempt's `error_kind` and used as a metric
/// label, so the set is small and fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The endpoint answered with a status other than 2xx (3xx included: redirects are not
    /// followed, so a moved endpoint is seen and fixed instead of silently chased).
    Status,
    /// No complete response within `delivery.timeout`.
    Timeout,
    /// DNS, TCP connect or connection reset before a response.
    Connect,
    /// TLS handshake or certificate failure.
    Tls,
    /// The URL resolves to an address the SSRF guard refuses.
    BlockedTarget,
    /// The request could not be sent for another reason (malformed response, protocol error).
    Other,
}

impl FailureKind {
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Status,
        FailureKind::Timeout,
        FailureKind::Connect,
        FailureKind::Tls,
        FailureKind::BlockedTarget,
        FailureKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Status => "status",
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::BlockedTarget => "blocked_target",
            FailureKind::Other => "other",
        }
    }
}

/// The result of one attempt in the fewest terms that decide what happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Failed(FailureKind),
    /// A 429 or 503 that says when to come back (`Retry-After`): a failure whose retry waits
    /// at least this long.
    Throttled(Duration),
    /// 410 Gone: the endpoint asks to be called no more. The delivery fails at once and its
    /// webhook is disabled.
    Gone,
}

impl Outcome {
    /// Why the attempt failed, as the attempt log and the metrics name it; `None` when it
    /// delivered.
    pub fn failure_kind(self) -> Option<FailureKind> {
        match self {
            Outcome::Delivered => None,
            Outcome::Failed(kind) => Some(kind),
            Outcome::Throttled(_) | Outcome::Gone => Some(FailureKind::Status),
        }
    }
}

/// Success is any 2xx within the timeout; a transport error is a failure of its kind. A 429
/// or 503 with a readable `Retry-After` (`retry_after`) is throttled; without one it is an
/// ordinary failure.
pub fn classify(
    status: Option<u16>,
    transport_error: Option<FailureKind>,
    retry_after: Option<Duration>,
) -> Outcome {
    match (transport_error, status, retry_after) {
        (Some(kind), _, _) => Outcome::Failed(kind),
        (None, Some(200..=299), _) => Outcome::Delivered,
        (None, Some(410), _) => Outcome::Gone,
        (None, Some(429 | 503), Some(wait)) => Outcome::Throttled(wait),
        (None, Some(_), _) => Outcome::Failed(FailureKind::Status),
        (None, None, _) => Outcome::Failed(FailureKind::Other),
    }
}

/// A `Retry-After` value: delay-seconds, or an HTTP date (how long from `now`; a past date is
/// no wait). `None` when it is neither (the header is then ignored). Seconds past any
/// schedule saturate rather than overflow: the schedule caps the wait anyway.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What the worker does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Record success; the delivery is done.
    Done,
    /// Publish a job to the tier that waits `after`, carrying attempt `next_attempt`, in one
    /// of the tier's queues that waits at least `at_least`.
    Retry {
        after: Duration,
        at_least: Duration,
        next_attempt: u32,
    },
    /// The series is exhausted: publish to the dead-letter queue, which marks it Failed.
    GiveUp,
    /// The endpoint is gone: give up now, and disable the webhook.
    GiveUpAndDisable,
}

/// `series_attempt` is the 1-based attempt within the current series (a manual retry starts a
/// new series, back at the first tier). A throttled attempt's retry waits at least what the
/// endpoint asked, in the first tier that long or the last one: never past the schedule,
/// and it still counts as one attempt of the series.
pub fn next_step(outcome: Outcome, schedule: &RetrySchedule, series_attempt: u32) -> NextStep {
    let at_least = match outcome {
        Outcome::Delivered => return NextStep::Done,
        Outcome::Gone => return NextStep::GiveUpAndDisable,
        Outcome::Failed(_) => Duration::ZERO,
        Outcome::Throttled(wait) => wait,
    };
    match schedule.delay_after(series_attempt) {
        Some(delay) => NextStep::Retry {
            after: schedule.tier_at_least(delay.max(at_least)),
            at_least,
            next_attempt: series_attempt + 1,
        },
        None => NextStep::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        use FailureKind::*;
        let cases = [
            (Some(200), None, Outcome::Delivered),
            (Some(204), None, Outcome::Delivered),
            (Some(299), None, Outcome::Delivered),
            (Some(199), None, Outcome::Failed(Status)),
            (Some(301), None, Outcome::Failed(Status)),
            (Some(302), None, Outcome::Failed(Status)),
            (Some(404), None, Outcome::Failed(Status)),
            (Some(410), None, Outcome::Gone),
            (Some(410), Some(Timeout), Outcome::Failed(Timeout)),
            (Some(429), None, Outcome::Failed(Status)),
            (Some(500), None, Outcome::Failed(Status)),
            (Some(200), Some(Timeout), Outcome::Failed(Timeout)),
            (None, Some(Connect), Outcome::Failed(Connect)),
            (None, Some(Tls), Outcome::Failed(Tls)),
            (None, Some(BlockedTarget), Outcome::Failed(BlockedTarget)),
            (None, None, Outcome::Failed(Other)),
        ];
        for (status, error, expected) in cases {
            assert_eq!(
                classify(status, error, None),
                expected,
                "{status:?} {error:?}"
            );
        }
    }

    #[test]
    fn a_retry_after_throttles_only_a_429_or_503() {
        let wait = Some(Duration::from_secs(2));
        let throttled = Outcome::Throttled(Duration::from_secs(2));
        assert_eq!(classify(Some(429), None, wait), throttled);
        assert_eq!(classify(Some(503), None, wait), throttled);
        assert_eq!(
            classify(Some(500), None, wait),
            Outcome::Failed(FailureKind::Status)
        );
        assert_eq!(classify(Some(200), None, wait), Outcome::Delivered);
        let timeout = Some(FailureKind::Timeout);
        assert_eq!(
            classify(Some(429), timeout, wait),
            Outcome::Failed(FailureKind::Timeout)
        );
        assert_eq!(throttled.failure_kind(), Some(FailureKind::Status));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let in_90s = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        let cases = [
            ("120", Some(Duration::from_secs(120))),
            (" 0 ", Some(Duration::ZERO)),
            (
                "99999999999999999999999",
                Some(Duration::from_secs(u64::MAX)),
            ),
            (in_90s.as_str(), Some(Duration::from_secs(90))),
            (past.as_str(), Some(Duration::ZERO)),
            ("-5", None),
            ("1.5", None),
            ("soon", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(retry_after(value, now), expected, "{value:?}");
        }
    }

    #[test]
    fn a_throttled_retry_waits_at_least_as_asked_within_the_schedule() {
        let schedule = RetrySchedule::new(
            [1, 5, 30, 120]
                .map(|m| Duration::from_secs(m * 60))
                .to_vec(),
        )
        .expect("valid");
        let minutes = |m: u64| Duration::from_secs(m * 60);
        let throttled = |secs: u64| Outcome::Throttled(Duration::from_secs(secs));
        let retry = |after: Duration, at_least: u64, next_attempt: u32| NextStep::Retry {
            after,
            at_least: Duration::from_secs(at_least),
            next_attempt,
        };
        let cases = [
            // Shorter than the due delay: the due tier, at least as long as asked.
            (throttled(30), 1, retry(minutes(1), 30, 2)),
            // Longer: rounded up to the next tier that long.
            (throttled(120), 1, retry(minutes(5), 120, 2)),
            (throttled(600), 1, retry(minutes(30), 600, 2)),
            // Past the last tier: capped there, not ignored.
            (throttled(86_400), 1, retry(minutes(120), 86_400, 2)),
            (throttled(86_400), 3, retry(minutes(120), 86_400, 4)),
            // The last attempt gives up whatever the endpoint asks.
            (throttled(10), 5, NextStep::GiveUp),
            // A gone endpoint ends the series at any attempt.
            (Outcome::Gone, 1, NextStep::GiveUpAndDisable),
            (Outcome::Gone, 5, NextStep::GiveUpAndDisable),
        ];
        for (outcome, attempt, expected) in cases {
            assert_eq!(
                next_step(outcome, &schedule, attempt),
                expected,
                "{outcome:?} {attempt}"
            );
        }
    }

    #[test]
    fn five_attempts_then_give_up() {
        let schedule = RetrySchedule::new(
            [1, 5, 30, 120]
                .map(|m| Duration::from_secs(m * 60))
                .to_vec(),
        )
        .expect("valid");
        let failed = Outcome::Failed(FailureKind::Status);
        let steps: Vec<_> = (1..=5).map(|n| next_step(failed, &schedule, n)).collect();
        assert_eq!(
            steps,
            vec![
                NextStep::Retry {
                    after: Duration::from_secs(60),
                    at_least: Duration::ZERO,
                    next_attempt: 2
                },
                NextStep::Retry {
                    after: Duration::from_secs(300),
                    at_least: Duration::ZERO,
                    next_attempt: 3
                },
                NextStep::Retry {
                    after: Duration::from_secs(1800),
                    at_least: Duration::ZERO,
                    next_attempt: 4
                },
                NextStep::Retry {
                    after: Duration::from_secs(7200),
                    at_least: Duration::ZERO,
                    next_attempt: 5
                },
                NextStep::GiveUp,
            ]
        );
        assert_eq!(next_step(Outcome::Delivered, &schedule, 3), NextStep::Done);
    }
}
