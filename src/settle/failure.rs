//! What becomes of a message whose handling failed, decided from the failure and the count of
//! the message's own failures so far. Pure: the pipeline carries the decision out.
//!
//! "The world is down" (the database or the broker) is not the message's fault: it is handed
//! back at once, uncounted, and the consumers pause until the dependency answers. A failure of
//! its own (a value the database refuses, a job ahead of its delivery's record, a handler
//! panic) is tried again after a growing pause, at most `amqp.delivery_limit` times in all,
//! then quarantined with its reason while everything behind it flows.

use std::time::Duration;

use crate::{backoff, domain::QuarantineReason, readiness::Dependency};

/// Why handling a message failed, in the terms that decide its fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Outage(Dependency),
    /// The message's own; `reason` labels its quarantine if it comes to that.
    Own {
        reason: QuarantineReason,
        detail: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Hand it back to the broker now, and pause the consumers until `0` answers.
    HandBack(Dependency),
    /// Try it again after `after`, carrying `failures` so far.
    RetryLater { after: Duration, failures: u32 },
    /// Its last try failed: move it to quarantine for `reason`, with `detail` (the count and
    /// the last failure's detail).
    Quarantine {
        reason: QuarantineReason,
        detail: String,
    },
}

/// Pause before the first retry of a failing message; it doubles up to `MAX_PAUSE`. A job that
/// outran its delivery's commit (the common own failure) is due after one batch, ~20-50 ms.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// With the default limit of 10, a message that always fails reaches quarantine about 11 s
/// after its first try.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// `failures_before`: the message's own failures before this one; `limit`: tries in all.
pub fn fate(failure: &Failure, failures_before: u32, limit: u32) -> Fate {
    match failure {
        Failure::Outage(dependency) => Fate::HandBack(*dependency),
        Failure::Own { reason, detail } => {
            let failures = failures_before.saturating_add(1);
            if failures >= limit {
                Fate::Quarantine {
                    reason: *reason,
                    detail: format!("failed {failures} times; the last: {detail}"),
                }
            } else {
                Fate::RetryLater {
                    after: backoff::step(FIRST_PAUSE, MAX_PAUSE, failures),
                    failures,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Failure {
        Failure::Own {
            reason: QuarantineReason::RefusedByDatabase,
            detail: "invalid byte sequence".into(),
        }
    }

    fn quarantine(failures: u32) -> Fate {
        Fate::Quarantine {
            reason: QuarantineReason::RefusedByDatabase,
            detail: format!("failed {failures} times; the last: invalid byte sequence"),
        }
    }

    #[test]
    fn each_failure_meets_its_fate() {
        let ms = Duration::from_millis;
        let cases = [
            // An outage is never counted, however often it came before.
            (
                Failure::Outage(Dependency::Database),
                0,
                Fate::HandBack(Dependency::Database),
            ),
            (
                Failure::Outage(Dependency::Broker),
                9,
                Fate::HandBack(Dependency::Broker),
            ),
            (
                own(),
                0,
                Fate::RetryLater {
                    after: ms(100),
                    failures: 1,
                },
            ),
            (
                own(),
                1,
                Fate::RetryLater {
                    after: ms(200),
                    failures: 2,
                },
            ),
            (
                own(),
                5,
                Fate::RetryLater {
                    after: ms(2000),
                    failures: 6,
                },
            ),
            (
                own(),
                8,
                Fate::RetryLater {
                    after: ms(2000),
                    failures: 9,
                },
            ),
            (own(), 9, quarantine(10)),
            // A count past the limit (the limit was lowered meanwhile) quarantines at once.
            (own(), 40, quarantine(41)),
            (own(), u32::MAX, quarantine(u32::MAX)),
        ];
        for (failure, before, expected) in cases {
            assert_eq!(
                fate(&failure, before, 10),
                expected,
                "{failure:?} after {before}"
            );
        }
    }

    #[test]
    fn a_limit_of_one_quarantines_the_first_failure() {
        assert_eq!(fate(&own(), 0, 1), quarantine(1));
    }
}
