//! When a failing webhook warns its owner and when it is disabled, decided from values. The
//! pipeline records each Failed delivery in the webhook's streak (`storage::health`), then
//! carries out what [`after_failure`] decides.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::{CompanyId, DisabledReason, WebhookId},
    envelope::rfc3339,
};

/// `[endpoint_health]`: the thresholds of auto-disable and of its warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// A webhook whose deliveries have all failed for this long (from the first Failed one
    /// after its last success) is disabled...
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
    /// ...once at least this many of them are Failed.
    pub min_failures: u32,
    /// `webhook.failing` is published at most this often per webhook.
    #[serde(with = "humantime_serde")]
    pub failing_event_interval: Duration,
}

/// A webhook's failures since its last success, as the Failed delivery just counted left them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    /// Failed deliveries since the last success, this one included.
    pub failed: u32,
    /// When the first of them failed.
    pub since: OffsetDateTime,
    /// When `webhook.failing` was last published for this streak.
    pub warned_at: Option<OffsetDateTime>,
}

/// What a Failed delivery leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing more: warned recently.
    Nothing,
    /// Publish `webhook.failing`.
    Warn,
    /// Disable the webhook (`failing_too_long`) and publish `webhook.disabled`.
    Disable,
}

impl Policy {
    /// When a webhook failing since `since` is disabled if it keeps failing.
    pub fn disables_at(&self, since: OffsetDateTime) -> OffsetDateTime {
        since + self.disable_after
    }
}

/// After a Failed delivery: disable once the streak is long enough in both time and count;
/// otherwise warn, unless a warning went out within the interval.
pub fn after_failure(streak: Streak, now: OffsetDateTime, policy: &Policy) -> Verdict {
    let failing_for = now - streak.since;
    if streak.failed >= policy.min_failures && failing_for >= policy.disable_after {
        return Verdict::Disable;
    }
    match streak.warned_at {
        Some(at) if now - at < policy.failing_event_interval => Verdict::Nothing,
        _ => Verdict::Warn,
    }
}

/// An event about a webhook, for the CRM to tell its owner (an email, a banner): published on
/// `{prefix}.operational` with its type as the routing key, in the envelope CRM events use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationalEvent {
    /// The outbox row's key, in publish order; the envelope's id is `evt_` + its simple form.
    pub id: Uuid,
    pub event_type: &'static str,
    pub body: Vec<u8>,
}

pub const FAILING: &str = "webhook.failing";
pub const DISABLED: &str = "webhook.disabled";
pub const RECOVERED: &str = "webhook.recovered";
pub const CIRCUIT_OPENED: &str = "webhook.circuit_opened";
pub const CIRCUIT_CLOSED: &str = "webhook.circuit_closed";

pub const EVENT_TYPES: [&str; 5] = [FAILING, DISABLED, RECOVERED, CIRCUIT_OPENED, CIRCUIT_CLOSED];

/// The type of a stored event, as the constant it was written from.
pub fn event_type(text: &str) -> Option<&'static str> {
    EVENT_TYPES.into_iter().find(|t| *t == text)
}

/// The webhook an event is about.
#[derive(Debug, Clone, Copy)]
pub struct About<'a> {
    pub webhook_id: WebhookId,
    pub company_id: &'a CompanyId,
    pub name: &'a str,
    pub url: &'a str,
}

fn event(
    about: About<'_>,
    event_type: &'static str,
    mut data: Value,
    now: OffsetDateTime,
) -> OperationalEvent {
    data["webhook_id"] = json!(about.webhook_id.to_string());
    data["name"] = json!(about.name);
    data["url"] = json!(about.url);
    let id = Uuid::now_v7();
    let (_, body) =
        crate::envelope::compose(id, event_type, about.company_id.as_str(), data, None, now);
    OperationalEvent {
        id,
        event_type,
        body,
    }
}

/// `webhook.failing`: a delivery of the webhook became Failed.
pub fn failing(
    about: About<'_>,
    streak: Streak,
    policy: &Policy,
    now: OffsetDateTime,
) -> OperationalEvent {
    let data = json!({
        "failed_deliveries": streak.failed,
        "failing_since": rfc3339(streak.since),
        "last_failure_at": rfc3339(now),
        // If every delivery keeps failing: disabled once both are reached.
        "disabled_after": rfc3339(policy.disables_at(streak.since)),
        "disabled_after_failures": policy.min_failures,
    });
    event(about, FAILING, data, now)
}

/// `webhook.disabled`: it receives no more deliveries until enabled again. `streak` is its
/// failing streak, if it has one.
pub fn disabled(
    about: About<'_>,
    reason: DisabledReason,
    streak: Option<(u32, OffsetDateTime)>,
    now: OffsetDateTime,
) -> OperationalEvent {
    let data = json!({
        "reason": reason.as_str(),
        "disabled_at": rfc3339(now),
        "failed_deliveries": streak.map_or(0, |(failed, _)| failed),
        "failing_since": streak.map(|(_, since)| rfc3339(since)),
    });
    event(about, DISABLED, data, now)
}

/// `webhook.recovered`: the first success after a failing streak of `failed` deliveries
/// since `since`.
pub fn recovered(
    about: About<'_>,
    failed: u32,
    since: OffsetDateTime,
    now: OffsetDateTime,
) -> OperationalEvent {
    let data = json!({
        "failed_deliveries": failed,
        "failing_since": rfc3339(since),
        "recovered_at": rfc3339(now),
    });
    event(about, RECOVERED, data, now)
}

/// `webhook.circuit_opened`: its endpoint kept failing, so its deliveries wait (parked,
/// untried) while one probe per interval tries it.
pub fn circuit_opened(about: About<'_>, now: OffsetDateTime) -> OperationalEvent {
    let data = json!({ "opened_at": rfc3339(now) });
    event(about, CIRCUIT_OPENED, data, now)
}

/// `webhook.circuit_closed`: an attempt was delivered again after the circuit opened at
/// `opened_at`; what waited is released.
pub fn circuit_closed(
    about: About<'_>,
    opened_at: OffsetDateTime,
    now: OffsetDateTime,
) -> OperationalEvent {
    let data = json!({ "opened_at": rfc3339(opened_at), "closed_at": rfc3339(now) });
    event(about, CIRCUIT_CLOSED, data, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn policy() -> Policy {
        Policy {
            disable_after: 5 * DAY,
            min_failures: 20,
            failing_event_interval: HOUR,
        }
    }

    #[test]
    fn a_failing_webhook_is_warned_hourly_then_disabled() {
        let start = OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let streak = |failed, failing_for: Duration, warned: Option<Duration>| Streak {
            failed,
            since: start,
            warned_at: warned.map(|ago| start + failing_for - ago),
        };
        let at = |failing_for: Duration| start + failing_for;
        let cases = [
            (
                "the first failure warns",
                streak(1, Duration::ZERO, None),
                Duration::ZERO,
                Verdict::Warn,
            ),
            (
                "warned 10 min ago",
                streak(2, HOUR, Some(HOUR / 6)),
                HOUR,
                Verdict::Nothing,
            ),
            (
                "warned an hour ago",
                streak(3, 2 * HOUR, Some(HOUR)),
                2 * HOUR,
                Verdict::Warn,
            ),
            (
                "long enough, too few",
                streak(19, 6 * DAY, Some(HOUR / 6)),
                6 * DAY,
                Verdict::Nothing,
            ),
            (
                "many, not long enough",
                streak(500, 4 * DAY, None),
                4 * DAY,
                Verdict::Warn,
            ),
            (
                "both: disabled",
                streak(20, 5 * DAY, Some(HOUR / 6)),
                5 * DAY,
                Verdict::Disable,
            ),
        ];
        for (case, streak, failing_for, expected) in cases {
            assert_eq!(
                after_failure(streak, at(failing_for), &policy()),
                expected,
                "{case}"
            );
        }
        assert_eq!(policy().disables_at(start), start + 5 * DAY);
    }

    #[test]
    fn events_carry_the_webhook_counts_and_times_in_an_envelope() {
        let company = CompanyId::parse("cmp_1".to_owned()).expect("valid");
        let about = About {
            webhook_id: WebhookId(Uuid::from_u128(7)),
            company_id: &company,
            name: "Accounting",
            url: "https://example.com/hooks",
        };
        let since = OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let now = since + HOUR;
        let streak = Streak {
            failed: 3,
            since,
            warned_at: None,
        };
        let event = failing(about, streak, &policy(), now);
        assert_eq!(event.event_type, "webhook.failing");
        let body: Value = serde_json::from_slice(&event.body).expect("json");
        assert_eq!(body["id"], format!("evt_{}", event.id.simple()));
        assert_eq!(body["event"], "webhook.failing");
        assert_eq!(body["company_id"], "cmp_1");
        assert_eq!(body["timestamp"], "2027-01-15T09:00:00Z");
        let data = &body["data"];
        assert_eq!(data["webhook_id"], "00000000-0000-0000-0000-000000000007");
        assert_eq!(data["name"], "Accounting");
        assert_eq!(data["url"], "https://example.com/hooks");
        assert_eq!(data["failed_deliveries"], 3);
        assert_eq!(data["failing_since"], "2027-01-15T08:00:00Z");
        assert_eq!(data["disabled_after"], "2027-01-20T08:00:00Z");

        let gone = disabled(about, DisabledReason::Gone, None, now);
        let body: Value = serde_json::from_slice(&gone.body).expect("json");
        assert_eq!(body["event"], "webhook.disabled");
        assert_eq!(body["data"]["reason"], "gone");
        assert_eq!(body["data"]["failing_since"], Value::Null);

        let back = recovered(about, 3, since, now);
        let body: Value = serde_json::from_slice(&back.body).expect("json");
        assert_eq!(body["data"]["recovered_at"], "2027-01-15T09:00:00Z");
        assert!(gone.id < back.id, "ids follow publish order");

        let closed = circuit_closed(about, since, now);
        let body: Value = serde_json::from_slice(&closed.body).expect("json");
        assert_eq!(body["event"], "webhook.circuit_closed");
        assert_eq!(body["data"]["opened_at"], "2027-01-15T08:00:00Z");
        assert_eq!(body["data"]["closed_at"], "2027-01-15T09:00:00Z");
        let opened = circuit_opened(about, since);
        let body: Value = serde_json::from_slice(&opened.body).expect("json");
        assert_eq!(body["data"]["opened_at"], "2027-01-15T08:00:00Z");
    }
}
