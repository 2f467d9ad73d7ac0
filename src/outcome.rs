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
}

/// Success is any 2xx within the timeout; a transport error is a failure of its kind.
pub fn classify(status: Option<u16>, transport_error: Option<FailureKind>) -> Outcome {
    match (transport_error, status) {
        (Some(kind), _) => Outcome::Failed(kind),
        (None, Some(200..=299)) => Outcome::Delivered,
        (None, Some(_)) => Outcome::Failed(FailureKind::Status),
        (None, None) => Outcome::Failed(FailureKind::Other),
    }
}

/// What the worker does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Record success; the delivery is done.
    Done,
    /// Publish a job to the tier that waits `after`, carrying attempt `next_attempt`.
    Retry { after: Duration, next_attempt: u32 },
    /// The series is exhausted: publish to the dead-letter queue, which marks it Failed.
    GiveUp,
}

/// `series_attempt` is the 1-based attempt within the current series (a manual retry starts a
/// new series, back at the first tier).
pub fn next_step(outcome: Outcome, schedule: &RetrySchedule, series_attempt: u32) -> NextStep {
    match outcome {
        Outcome::Delivered => NextStep::Done,
        Outcome::Failed(_) => match schedule.delay_after(series_attempt) {
            Some(after) => NextStep::Retry {
                after,
                next_attempt: series_attempt + 1,
            },
            None => NextStep::GiveUp,
        },
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
            (Some(429), None, Outcome::Failed(Status)),
            (Some(500), None, Outcome::Failed(Status)),
            (Some(200), Some(Timeout), Outcome::Failed(Timeout)),
            (None, Some(Connect), Outcome::Failed(Connect)),
            (None, Some(Tls), Outcome::Failed(Tls)),
            (None, Some(BlockedTarget), Outcome::Failed(BlockedTarget)),
            (None, None, Outcome::Failed(Other)),
        ];
        for (status, error, expected) in cases {
            assert_eq!(classify(status, error), expected, "{status:?} {error:?}");
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
                    next_attempt: 2
                },
                NextStep::Retry {
                    after: Duration::from_secs(300),
                    next_attempt: 3
                },
                NextStep::Retry {
                    after: Duration::from_secs(1800),
                    next_attempt: 4
                },
                NextStep::Retry {
                    after: Duration::from_secs(7200),
                    next_attempt: 5
                },
                NextStep::GiveUp,
            ]
        );
        assert_eq!(next_step(Outcome::Delivered, &schedule, 3), NextStep::Done);
    }
}
