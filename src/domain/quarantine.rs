//! Why a message is moved to the quarantine queue.

/// The reason a message was quarantined: the `reason` label of `quarantined_total`, and the
/// code that starts the reason the quarantined message carries (`not_json: ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineReason {
    /// An event whose body is not a JSON object.
    NotJson,
    /// An event without a field the envelope requires, or with one of the wrong type.
    MissingField,
    /// An event of a type the catalog does not know.
    UnknownEventType,
    /// An event over `delivery.max_event_size`.
    TooLarge,
    /// A job whose headers do not name a delivery and attempt.
    InvalidJob,
    /// The database refused a value of the message (and not for an outage).
    RefusedByDatabase,
    /// A job whose delivery, or the attempt before its own, never got recorded.
    UnknownDelivery,
    /// Its handler panicked: a bug, kept for an operator rather than looping.
    HandlerPanicked,
    /// Handling failed for another reason of its own.
    HandlingFailed,
}

impl QuarantineReason {
    pub const ALL: [QuarantineReason; 9] = [
        QuarantineReason::NotJson,
        QuarantineReason::MissingField,
        QuarantineReason::UnknownEventType,
        QuarantineReason::TooLarge,
        QuarantineReason::InvalidJob,
        QuarantineReason::RefusedByDatabase,
        QuarantineReason::UnknownDelivery,
        QuarantineReason::HandlerPanicked,
        QuarantineReason::HandlingFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::NotJson => "not_json",
            QuarantineReason::MissingField => "missing_field",
            QuarantineReason::UnknownEventType => "unknown_event_type",
            QuarantineReason::TooLarge => "too_large",
            QuarantineReason::InvalidJob => "invalid_job",
            QuarantineReason::RefusedByDatabase => "refused_by_database",
            QuarantineReason::UnknownDelivery => "unknown_delivery",
            QuarantineReason::HandlerPanicked => "handler_panicked",
            QuarantineReason::HandlingFailed => "handling_failed",
        }
    }
}

impl std::fmt::Display for QuarantineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
