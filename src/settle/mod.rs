//! How work settles, decided from values: what to publish, what to record, what to count.
//! Pure; the pipeline carries each decision out (`pipeline::attempt::execute`).
//!
//! - [`settle`]: a delivery after its attempt (delivered, retry, give up), or instead of one
//!   when its endpoint has its fill of attempts in flight (hand-off, park, defer);
//! - [`admit`]: whether a delivery job may attempt now (run, wait, stale, disabled);
//! - [`failure::fate`]: a message whose handling failed (an outage, or poison).
//!
//! At-least-once rests on the order a [`Settlement`] is carried out in, the same for every
//! branch: its `prepare` write, its `publish` (confirmed by the broker), its `record` write,
//! its count; the message that caused it is acked after all of them. A crash anywhere before
//! the ack redelivers the message, and the dedupe check (attempt numbers, see [`admit`])
//! skips what already settled.

pub mod failure;

use std::time::Duration;

use time::OffsetDateTime;

use crate::{
    domain::{DeliveryStatus, DisabledReason, Job, Source},
    outcome::{self, NextStep, Outcome},
    retry::RetrySchedule,
};

/// What became of the attempt a job asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It was made.
    Attempted(Outcome),
    /// It was not: the endpoint had its fill of attempts in flight and none came free in time.
    Busy,
    /// It was not: the endpoint hangs (no slot freed for a while, or attempts near the
    /// timeout), so waiting for a slot is pointless.
    Stuck,
    /// It was not: the endpoint's circuit is open (it kept failing), and this was not its
    /// probe.
    CircuitOpen,
    /// It was made as the probe of an open circuit, and failed: the circuit stays open.
    ProbeFailed(Outcome),
}

/// The steps that settle one delivery, in the order the pipeline carries them out. The event
/// row (for a fresh delivery) goes with the first write; the attempt, if one was made, with
/// `record`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// Written before the publish: the row that the published job must find.
    pub prepare: Option<Change>,
    /// A job, confirmed by the broker before anything after it.
    pub publish: Option<Publish>,
    /// The delivery's new state, with the attempt that led to it.
    pub record: Option<Change>,
    /// Counted once all of the above is durable: a write that fails is tried again, and would
    /// count the same outcome twice.
    pub count: Counted,
    /// The webhook to disable after the record, and why (its endpoint answered 410). Should
    /// the worker stop in between, the next 410 disables it.
    pub disable: Option<DisabledReason>,
}

/// A delivery's new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempt_count: u32,
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Set for a delivery parked in the database: its job is published when this passes.
    pub parked_until: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// To the retry tier that waits `after`, in one of its queues that waits at least
    /// `at_least` (what a throttling endpoint asked); it comes back on the deliveries queue.
    Tier {
        job: Job,
        after: Duration,
        at_least: Duration,
    },
    /// To the deliveries queue, at once.
    Now(Job),
    /// To the dead-letter queue, with the last attempt's failure as its reason.
    DeadLetter(Job),
}

/// The counter a settlement adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Succeeded,
    RetryScheduled,
    Failed,
    /// Handed off or parked, untried.
    Deferred,
}

/// How `job`, made (or not) from `source` (the fan-out, or a job), settles after `step`, at
/// `now`.
///
/// - delivered: record Succeeded;
/// - failed with tiers left (retry): publish the next job to its tier, then record Retrying;
/// - failed on the last tier (give up): publish to the dead-letter queue, then record Failed
///   (the dead-letter consumer marks it Failed as well, whichever comes first);
/// - gone (410): give up at once, and disable the webhook after the record;
/// - busy, fresh (hand-off): record the delivery pending, then publish its job to the
///   deliveries queue, so the event and its healthy deliveries need not wait;
/// - stuck, fresh (park): record it pending and parked for the first tier's delay, no
///   publish: the sweeper publishes its job when due;
/// - busy or stuck, a job (defer): publish it unchanged to the first tier;
/// - circuit open, fresh or a job (park): record it parked for the first tier's delay, its
///   attempts unchanged, no publish: what waits for an open circuit waits in the database,
///   not in the queues, and the circuit's close releases it;
/// - a failed probe: like any failed attempt, but a retry waits parked (until its tier's
///   delay, or the circuit's close) rather than in the tier.
///
/// Publishing before recording means a crash in between repeats the attempt rather than
/// losing the retry; the duplicate job that may leave behind is skipped by its attempt number.
pub fn settle(
    job: &Job,
    source: Source,
    step: Step,
    schedule: &RetrySchedule,
    now: OffsetDateTime,
) -> Settlement {
    let first_delay = schedule.delays()[0];
    let untried = |next_attempt_at, parked_until| Change {
        status: DeliveryStatus::Pending,
        attempt_count: job.attempt - 1,
        next_attempt_at: Some(next_attempt_at),
        parked_until,
    };
    let attempted = |status, next_attempt_at| Change {
        status,
        attempt_count: job.attempt,
        next_attempt_at,
        parked_until: None,
    };
    let give_up = |disable| Settlement {
        prepare: None,
        publish: Some(Publish::DeadLetter(job.clone())),
        record: Some(attempted(DeliveryStatus::Failed, None)),
        count: Counted::Failed,
        disable,
    };
    match (step, source) {
        (Step::ProbeFailed(outcome), _) => {
            match outcome::next_step(outcome, schedule, job.series_attempt) {
                NextStep::Retry { after, .. } => {
                    let until = now + after;
                    Settlement {
                        prepare: None,
                        publish: None,
                        record: Some(Change {
                            parked_until: Some(until),
                            ..attempted(DeliveryStatus::Retrying, Some(until))
                        }),
                        count: Counted::RetryScheduled,
                        disable: None,
                    }
                }
                _ => settle(job, source, Step::Attempted(outcome), schedule, now),
            }
        }
        (Step::Attempted(outcome), _) => {
            match outcome::next_step(outcome, schedule, job.series_attempt) {
                NextStep::Done => Settlement {
                    prepare: None,
                    publish: None,
                    record: Some(attempted(DeliveryStatus::Succeeded, None)),
                    count: Counted::Succeeded,
                    disable: None,
                },
                NextStep::Retry {
                    after,
                    at_least,
                    next_attempt,
                } => Settlement {
                    prepare: None,
                    publish: Some(Publish::Tier {
                        job: job.retry(next_attempt),
                        after,
                        at_least,
                    }),
                    record: Some(attempted(DeliveryStatus::Retrying, Some(now + after))),
                    count: Counted::RetryScheduled,
                    disable: None,
                },
                NextStep::GiveUp => give_up(None),
                NextStep::GiveUpAndDisable => give_up(Some(DisabledReason::Gone)),
            }
        }
        (Step::Busy, Source::Fanout) => Settlement {
            prepare: Some(untried(now, None)),
            publish: Some(Publish::Now(job.clone())),
            record: None,
            count: Counted::Deferred,
            disable: None,
        },
        (Step::Stuck, Source::Fanout) | (Step::CircuitOpen, Source::Fanout) => {
            let until = now + first_delay;
            Settlement {
                prepare: None,
                publish: None,
                record: Some(untried(until, Some(until))),
                count: Counted::Deferred,
                disable: None,
            }
        }
        (Step::CircuitOpen, Source::Job | Source::Dead) => {
            let until = now + first_delay;
            let status = match job.attempt {
                1 => DeliveryStatus::Pending,
                _ => DeliveryStatus::Retrying,
            };
            Settlement {
                prepare: None,
                publish: None,
                record: Some(Change {
                    status,
                    ..untried(until, Some(until))
                }),
                count: Counted::Deferred,
                disable: None,
            }
        }
        (Step::Busy | Step::Stuck, Source::Job | Source::Dead) => Settlement {
            prepare: None,
            publish: Some(Publish::Tier {
                job: job.clone(),
                after: first_delay,
                at_least: Duration::ZERO,
            }),
            record: None,
            count: Counted::Deferred,
            disable: None,
        },
    }
}

/// Whether a delivery job may make its attempt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It is the very next attempt: make it.
    Run,
    /// Attempts before it are not recorded yet: a failed attempt publishes the next job before
    /// its own outcome commits, and a job can outrun that commit (a tier shorter than a batch's
    /// gathering and commit). It waits; skipping it as stale would lose the retry.
    Wait,
    /// Its attempt is recorded already: a redelivered or duplicated job, or one overtaken by
    /// another. Nothing to do.
    Stale,
    /// It is due, but its webhook was disabled meanwhile: the delivery ends Failed.
    Disabled,
}

/// A job for attempt `job_attempt`, with `recorded` attempts in the delivery's log.
pub fn admit(job_attempt: u32, recorded: u32, webhook_enabled: bool) -> Admission {
    use std::cmp::Ordering;
    match (recorded.saturating_add(1)).cmp(&job_attempt) {
        Ordering::Less => Admission::Wait,
        Ordering::Greater => Admission::Stale,
        Ordering::Equal if webhook_enabled => Admission::Run,
        Ordering::Equal => Admission::Disabled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{DeliveryId, EventId, Trigger, WebhookId},
        outcome::FailureKind,
    };

    const MINUTE: Duration = Duration::from_secs(60);

    fn schedule() -> RetrySchedule {
        RetrySchedule::new([1, 5, 30, 120].map(|m| m * MINUTE).to_vec()).expect("valid")
    }

    /// Attempt `attempt` of the one delivery these tests settle, `series_attempt` of its series.
    fn job(attempt: u32, series_attempt: u32) -> Job {
        Job {
            attempt,
            series_attempt,
            ..Job::first(
                DeliveryId(uuid::Uuid::from_u128(1)),
                WebhookId(uuid::Uuid::from_u128(2)),
                EventId::parse("evt_1").expect("valid"),
                "deal.won".into(),
                None,
            )
        }
    }

    fn change(
        status: DeliveryStatus,
        attempt_count: u32,
        next_attempt_at: Option<OffsetDateTime>,
        parked_until: Option<OffsetDateTime>,
    ) -> Change {
        Change {
            status,
            attempt_count,
            next_attempt_at,
            parked_until,
        }
    }

    #[test]
    fn every_branch_settles_in_its_own_way() {
        use DeliveryStatus::*;
        let now = OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let failed = Step::Attempted(Outcome::Failed(FailureKind::Status));
        let delivered = Step::Attempted(Outcome::Delivered);
        let second = job(2, 2);
        let last = job(5, 5);
        let fresh = job(1, 1);
        let manual = Job {
            trigger: Trigger::Manual,
            ..job(7, 1)
        };
        let cases = [
            (
                "delivered",
                &second,
                Source::Job,
                delivered,
                Settlement {
                    prepare: None,
                    publish: None,
                    record: Some(change(Succeeded, 2, None, None)),
                    count: Counted::Succeeded,
                    disable: None,
                },
            ),
            (
                "retry: the next attempt goes to the tier after this one",
                &second,
                Source::Job,
                failed,
                Settlement {
                    prepare: None,
                    publish: Some(Publish::Tier {
                        job: job(3, 3),
                        after: 5 * MINUTE,
                        at_least: Duration::ZERO,
                    }),
                    record: Some(change(Retrying, 2, Some(now + 5 * MINUTE), None)),
                    count: Counted::RetryScheduled,
                    disable: None,
                },
            ),
            (
                "retry of a manual attempt: automatic, from the first tier",
                &manual,
                Source::Job,
                failed,
                Settlement {
                    prepare: None,
                    publish: Some(Publish::Tier {
                        job: Job {
                            trigger: Trigger::Automatic,
                            ..job(8, 2)
                        },
                        after: MINUTE,
                        at_least: Duration::ZERO,
                    }),
                    record: Some(change(Retrying, 7, Some(now + MINUTE), None)),
                    count: Counted::RetryScheduled,
                    disable: None,
                },
            ),
            (
                "give up after the last tier",
                &last,
                Source::Job,
                failed,
                Settlement {
                    prepare: None,
                    publish: Some(Publish::DeadLetter(last.clone())),
                    record: Some(change(Failed, 5, None, None)),
                    count: Counted::Failed,
                    disable: None,
                },
            ),
            (
                "gone: give up at any attempt, and disable the webhook",
                &second,
                Source::Job,
                Step::Attempted(Outcome::Gone),
                Settlement {
                    prepare: None,
                    publish: Some(Publish::DeadLetter(second.clone())),
                    record: Some(change(Failed, 2, None, None)),
                    count: Counted::Failed,
                    disable: Some(DisabledReason::Gone),
                },
            ),
            (
                "hand-off: the row first, so the job finds it",
                &fresh,
                Source::Fanout,
                Step::Busy,
                Settlement {
                    prepare: Some(change(Pending, 0, Some(now), None)),
                    publish: Some(Publish::Now(fresh.clone())),
                    record: None,
                    count: Counted::Deferred,
                    disable: None,
                },
            ),
            (
                "park: a row due after the first tier, no publish",
                &fresh,
                Source::Fanout,
                Step::Stuck,
                Settlement {
                    prepare: None,
                    publish: None,
                    record: Some(change(Pending, 0, Some(now + MINUTE), Some(now + MINUTE))),
                    count: Counted::Deferred,
                    disable: None,
                },
            ),
            (
                "defer a busy endpoint's job, unchanged, to the first tier",
                &second,
                Source::Job,
                Step::Busy,
                Settlement {
                    prepare: None,
                    publish: Some(Publish::Tier {
                        job: second.clone(),
                        after: MINUTE,
                        at_least: Duration::ZERO,
                    }),
                    record: None,
                    count: Counted::Deferred,
                    disable: None,
                },
            ),
            (
                "defer a stuck endpoint's job the same way",
                &last,
                Source::Job,
                Step::Stuck,
                Settlement {
                    prepare: None,
                    publish: Some(Publish::Tier {
                        job: last.clone(),
                        after: MINUTE,
                        at_least: Duration::ZERO,
                    }),
                    record: None,
                    count: Counted::Deferred,
                    disable: None,
                },
            ),
            (
                "circuit open, fresh: parked like a stuck endpoint's",
                &fresh,
                Source::Fanout,
                Step::CircuitOpen,
                Settlement {
                    prepare: None,
                    publish: None,
                    record: Some(change(Pending, 0, Some(now + MINUTE), Some(now + MINUTE))),
                    count: Counted::Deferred,
                    disable: None,
                },
            ),
            (
                "circuit open, a retry: parked too, its attempts unchanged",
                &last,
                Source::Job,
                Step::CircuitOpen,
                Settlement {
                    prepare: None,
                    publish: None,
                    record: Some(change(Retrying, 4, Some(now + MINUTE), Some(now + MINUTE))),
                    count: Counted::Deferred,
                    disable: None,
                },
            ),
            (
                "a failed probe: its retry waits parked, not in the tier",
                &second,
                Source::Job,
                Step::ProbeFailed(Outcome::Failed(FailureKind::Status)),
                Settlement {
                    prepare: None,
                    publish: None,
                    record: Some(change(
                        Retrying,
                        2,
                        Some(now + 5 * MINUTE),
                        Some(now + 5 * MINUTE),
                    )),
                    count: Counted::RetryScheduled,
                    disable: None,
                },
            ),
            (
                "a failed probe on the last tier gives up like any attempt",
                &last,
                Source::Job,
                Step::ProbeFailed(Outcome::Failed(FailureKind::Status)),
                Settlement {
                    prepare: None,
                    publish: Some(Publish::DeadLetter(last.clone())),
                    record: Some(change(Failed, 5, None, None)),
                    count: Counted::Failed,
                    disable: None,
                },
            ),
            (
                "circuit open, a hand-off's job: parked, still pending",
                &fresh,
                Source::Job,
                Step::CircuitOpen,
                Settlement {
                    prepare: None,
                    publish: None,
                    record: Some(change(Pending, 0, Some(now + MINUTE), Some(now + MINUTE))),
                    count: Counted::Deferred,
                    disable: None,
                },
            ),
        ];
        for (branch, job, source, step, expected) in cases {
            assert_eq!(
                settle(job, source, step, &schedule(), now),
                expected,
                "{branch}"
            );
        }
    }

    #[test]
    fn a_fresh_delivery_settles_like_a_job_once_attempted() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let fresh = job(1, 1);
        for step in [
            Step::Attempted(Outcome::Delivered),
            Step::Attempted(Outcome::Failed(FailureKind::Timeout)),
        ] {
            assert_eq!(
                settle(&fresh, Source::Fanout, step, &schedule(), now),
                settle(&fresh, Source::Job, step, &schedule(), now),
                "{step:?}"
            );
        }
    }

    #[test]
    fn a_job_runs_only_as_the_very_next_attempt() {
        use Admission::*;
        let cases = [
            (3, 2, true, Run),
            (1, 0, true, Run),
            (3, 1, true, Wait),
            (3, 0, false, Wait),
            (3, 3, true, Stale),
            (2, 5, false, Stale),
            (3, 2, false, Disabled),
            (1, u32::MAX, true, Stale),
        ];
        for (attempt, recorded, enabled, expected) in cases {
            assert_eq!(
                admit(attempt, recorded, enabled),
                expected,
                "job {attempt} after {recorded} recorded, enabled {enabled}"
            );
        }
    }
}
