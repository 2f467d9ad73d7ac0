//! Why a webhook stopped receiving deliveries.

use serde::Serialize;

/// Why a webhook is disabled: kept with it, shown in the API, and named by the
/// `webhook.disabled` operational event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisabledReason {
    /// Its endpoint answered 410 Gone: it asks to be called no more.
    Gone,
    /// Every delivery failed for `endpoint_health.disable_after`.
    FailingTooLong,
    /// Someone set `enabled: false`.
    Manual,
}

impl DisabledReason {
    pub const ALL: [Self; 3] = [Self::Gone, Self::FailingTooLong, Self::Manual];

    pub fn as_str(self) -> &'static str {
        match self {
            DisabledReason::Gone => "gone",
            DisabledReason::FailingTooLong => "failing_too_long",
            DisabledReason::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_as_text() {
        for reason in [
            DisabledReason::Gone,
            DisabledReason::FailingTooLong,
            DisabledReason::Manual,
        ] {
            assert_eq!(DisabledReason::parse(reason.as_str()), Some(reason));
            assert_eq!(serde_json::to_value(reason).expect("json"), reason.as_str());
        }
        assert_eq!(DisabledReason::parse("tired"), None);
    }
}
