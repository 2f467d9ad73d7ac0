//! A delivery (one event to one webhook, across its attempts), its states, and the job that
//! asks for its next attempt. Shared by the broker (jobs travel as headers), storage (rows)
//! and the pipeline, which depend on these and not on each other.

use time::OffsetDateTime;

use super::{DeliveryId, EventId, WebhookId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Created; its first attempt has not been recorded yet.
    Pending,
    Succeeded,
    /// Failed at least once; a job waits in a retry tier (or the dead-letter queue).
    Retrying,
    /// Every attempt of its series failed. Only an operator or tenant retries it now.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [Self; 4] = [Self::Pending, Self::Succeeded, Self::Retrying, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
    }

    /// Waiting for an attempt whose job already exists (or is about to): a second job for the
    /// same attempt would race it.
    pub fn awaits_attempt(self) -> bool {
        matches!(self, DeliveryStatus::Pending | DeliveryStatus::Retrying)
    }
}

/// What started an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The event itself or a retry tier.
    Automatic,
    /// An operator or tenant asked for it.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Automatic => "automatic",
            Trigger::Manual => "manual",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "automatic" => Some(Trigger::Automatic),
            "manual" => Some(Trigger::Manual),
            _ => None,
        }
    }
}

/// One pending attempt of one delivery: what the fan-out attempts inline, and what a delivery
/// job carries through the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub event_type: String,
    /// The delivery's attempt number this job makes (1-based, over the delivery's life). A job
    /// runs only when exactly `attempt - 1` attempts are recorded: that tells a redelivered or
    /// duplicated job from the live one.
    pub attempt: u32,
    /// The attempt within the current series, which picks the retry tier. Equal to `attempt`
    /// until a manual retry starts a new series.
    pub series_attempt: u32,
    pub trigger: Trigger,
    /// The event's timestamp, carried through the automatic series that started with it: the
    /// delivery latency is measured from it. `None` for a new series (a manual retry, a parked
    /// delivery's release), whose latency says nothing about the pipeline.
    pub occurred_at: Option<OffsetDateTime>,
}

impl Job {
    /// The first attempt of a fresh delivery, made by the fan-out.
    pub fn first(
        delivery_id: DeliveryId,
        webhook_id: WebhookId,
        event_id: EventId,
        event_type: String,
        occurred_at: Option<OffsetDateTime>,
    ) -> Self {
        Self {
            delivery_id,
            webhook_id,
            event_id,
            event_type,
            attempt: 1,
            series_attempt: 1,
            trigger: Trigger::Automatic,
            occurred_at,
        }
    }

    /// The attempt after `attempts_made`, at the start of a new series (a manual retry, or a
    /// parked delivery's release): its failure goes to the first tier again.
    pub fn new_series(delivery: &StoredDelivery, attempts_made: u32, trigger: Trigger) -> Self {
        Self {
            delivery_id: delivery.delivery_id,
            webhook_id: delivery.webhook_id,
            event_id: delivery.event_id.clone(),
            event_type: delivery.event_type.clone(),
            attempt: attempts_made + 1,
            series_attempt: 1,
            trigger,
            occurred_at: None,
        }
    }

    /// The automatic retry that follows this attempt, as attempt `series_attempt` of the
    /// series.
    pub fn retry(&self, series_attempt: u32) -> Self {
        Self {
            attempt: self.attempt + 1,
            series_attempt,
            trigger: Trigger::Automatic,
            ..self.clone()
        }
    }
}

/// What identifies a stored delivery's event and target: enough to build its next job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDelivery {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event_id: EventId,
    pub event_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> StoredDelivery {
        StoredDelivery {
            delivery_id: DeliveryId::new(),
            webhook_id: WebhookId::new(),
            event_id: EventId::parse("evt_1").expect("valid"),
            event_type: "deal.won".into(),
        }
    }

    #[test]
    fn a_retry_counts_on_and_is_automatic() {
        let manual = Job::new_series(&stored(), 5, Trigger::Manual);
        assert_eq!((manual.attempt, manual.series_attempt), (6, 1));
        let retry = manual.retry(2);
        assert_eq!(
            (retry.attempt, retry.series_attempt, retry.trigger),
            (7, 2, Trigger::Automatic)
        );
        assert_eq!(retry.delivery_id, manual.delivery_id);
    }

    #[test]
    fn statuses_round_trip_and_say_which_await_an_attempt() {
        use DeliveryStatus::*;
        for status in [Pending, Succeeded, Retrying, Failed] {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
        }
        assert!(Pending.awaits_attempt() && Retrying.awaits_attempt());
        assert!(!Succeeded.awaits_attempt() && !Failed.awaits_attempt());
        assert_eq!(DeliveryStatus::parse("done"), None);
    }
}
