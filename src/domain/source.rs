//! Where a piece of work comes from: the queue its message was consumed from. One name for
//! what the pipeline, the settlement, the endpoint limiter and the metrics each need to know.

/// The consumer a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A fresh event from an events queue, fanned out to its deliveries; their first attempts
    /// are made inline, and their rows (and the event's) are written with the outcome.
    Fanout,
    /// A delivery job from the deliveries queue (a retry, a manual retry, a handed-off or
    /// released parked delivery): its delivery's row exists.
    Job,
    /// A job that gave up, from the dead-letter queue: it only confirms the Failed state.
    Dead,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Fanout, Source::Job, Source::Dead];

    /// The `stage` label of `handler_errors_total`, and the `stage` field of log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Fanout => "fanout",
            Source::Job => "job",
            Source::Dead => "dead",
        }
    }
}
