//! Coalesced acks. A consumer's handlers finish out of order; instead of one `basic.ack` per
//! message (for a quorum queue, one Raft command each), the coalescer sends one
//! `basic.ack(multiple)` for every delivery of the channel that has settled in order, a few
//! milliseconds at a time. An ack that cannot join such a run (an earlier delivery is still being
//! worked on) goes out on its own after `HOLD`, so a slow delivery never holds back the
//! acks, and so the prefetch window, of the ones behind it.
//!
//! A message is still acked only after its handler reported a durable outcome; coalescing only
//! delays the frame. A nack (hand the message back) is sent by its handler at once and only
//! reported here, so a later `multiple` ack can never cover it first.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use lapin::{Acker, options::BasicAckOptions};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::task::TaskTracker;

/// How long the first undecided ack waits for others to join it.
const LINGER: Duration = Duration::from_millis(2);
/// How long an ack may wait for the deliveries before it to settle before it is sent alone.
/// Bounds the unacked messages it adds to the prefetch window: 10k messages/s x 20 ms = 200.
const HOLD: Duration = Duration::from_millis(20);

/// How a handler's message was settled.
enum Settled {
    /// Its outcome is durable: ack it.
    Ack(u64, Acker),
    /// Its handler already sent a nack for it.
    Nacked(u64),
}

/// Hands settled deliveries of one channel to its coalescer; cheap to clone.
#[derive(Clone)]
pub(super) struct Acks {
    queue: mpsc::UnboundedSender<Settled>,
}

impl Acks {
    /// Starts the coalescer of one channel, whose delivery tags start at 1: a channel opened
    /// once and never recovered in place (lapin's auto-recover, which would restart the tags
    /// under the same channel, is off; a lost connection means a new channel and a new
    /// coalescer). It runs (on `tracker`, so shutdown waits for it) until every `Acks` handle
    /// is dropped, then sends what is left, keeping `channel` open until it has.
    pub(super) fn start(tracker: &TaskTracker, channel: lapin::Channel) -> Self {
        let (queue, settled) = mpsc::unbounded_channel();
        tracker.spawn(async move {
            run(settled).await;
            drop(channel);
        });
        Self { queue }
    }

    pub(super) fn ack(&self, tag: u64, acker: Acker) {
        // Only fails once the coalescer is gone, which it is not while a handle lives.
        let _ = self.queue.send(Settled::Ack(tag, acker));
    }

    pub(super) fn nacked(&self, tag: u64) {
        let _ = self.queue.send(Settled::Nacked(tag));
    }
}

async fn run(mut settled: mpsc::UnboundedReceiver<Settled>) {
    let mut window = AckWindow::new(1);
    // Idle until a delivery settles; then flush every LINGER while any ack is pending. In
    // between it sleeps on the timer, not on the channel, so the deliveries settling meanwhile
    // queue up without waking it one by one (at moderate rates, a wake-up per message).
    while let Some(first) = settled.recv().await {
        apply(&mut window, first);
        let mut flush_at = Instant::now() + LINGER;
        loop {
            tokio::time::sleep_until(flush_at).await;
            let open = drain(&mut settled, &mut window);
            send(window.flush(Instant::now())).await;
            if !open {
                send(window.flush_all()).await;
                return;
            }
            match window.oldest() {
                Some(since) => flush_at = (since + HOLD).min(Instant::now() + LINGER),
                None => break,
            }
        }
    }
    send(window.flush_all()).await;
}

fn apply(window: &mut AckWindow<Acker>, settled: Settled) {
    match settled {
        Settled::Ack(tag, acker) => window.ack(tag, acker, Instant::now()),
        Settled::Nacked(tag) => window.nacked(tag),
    }
}

/// Takes in what has queued; false once every handle is gone.
fn drain(settled: &mut mpsc::UnboundedReceiver<Settled>, window: &mut AckWindow<Acker>) -> bool {
    loop {
        match settled.try_recv() {
            Ok(next) => apply(window, next),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
}

async fn send(flush: Flush<Acker>) {
    if let Some(acker) = flush.multiple {
        report(acker.ack(BasicAckOptions { multiple: true }).await);
    }
    for acker in flush.singles {
        report(acker.ack(BasicAckOptions::default()).await);
    }
}

pub(super) fn report(sent: Result<bool, lapin::Error>) {
    // A lost ack is safe: the broker redelivers and the dedupe check skips finished work.
    match sent {
        Ok(true) => {}
        Ok(false) => tracing::debug!("ack not sent: channel gone, message will be redelivered"),
        Err(e) => tracing::debug!(error = %e, "ack failed, message will be redelivered"),
    }
}

/// The frames one flush sends: one `multiple` ack (on the highest tag of the in-order run),
/// then single acks.
#[derive(Debug)]
struct Flush<A> {
    multiple: Option<A>,
    singles: Vec<A>,
}

/// Settlement of one channel's delivery tags, apart from the I/O.
struct AckWindow<A> {
    /// Every tag below this one is settled on the wire.
    next: u64,
    /// Acks decided but not sent, with when they were decided.
    pending: BTreeMap<u64, (A, Instant)>,
    /// Tags at or above `next` already settled on the wire (single acks, nacks).
    settled_ahead: BTreeSet<u64>,
}

impl<A> AckWindow<A> {
    fn new(first_tag: u64) -> Self {
        Self {
            next: first_tag,
            pending: BTreeMap::new(),
            settled_ahead: BTreeSet::new(),
        }
    }

    fn ack(&mut self, tag: u64, acker: A, now: Instant) {
        self.pending.insert(tag, (acker, now));
    }

    fn nacked(&mut self, tag: u64) {
        self.settled_ahead.insert(tag);
        self.advance_over_settled();
    }

    /// When the oldest unsent ack was decided.
    fn oldest(&self) -> Option<Instant> {
        self.pending.values().map(|(_, since)| *since).min()
    }

    /// The in-order run as one `multiple` ack, and every other ack decided `HOLD` ago alone.
    fn flush(&mut self, now: Instant) -> Flush<A> {
        let multiple = self.take_in_order_run();
        let overdue: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (_, since))| now.duration_since(*since) >= HOLD)
            .map(|(tag, _)| *tag)
            .collect();
        let mut singles = Vec::with_capacity(overdue.len());
        for tag in overdue {
            if let Some((acker, _)) = self.pending.remove(&tag) {
                singles.push(acker);
                self.settled_ahead.insert(tag);
            }
        }
        Flush { multiple, singles }
    }

    /// Everything still unsent (the channel's handlers are done).
    fn flush_all(&mut self) -> Flush<A> {
        let multiple = self.take_in_order_run();
        let singles = std::mem::take(&mut self.pending)
            .into_values()
            .map(|(acker, _)| acker)
            .collect();
        Flush { multiple, singles }
    }

    /// Moves `next` past every settled or pending tag in order; the last pending one's acker
    /// acks them all (`multiple` covers only messages still unacked, so tags settled alone
    /// in between are skipped by the broker).
    fn take_in_order_run(&mut self) -> Option<A> {
        let mut last = None;
        loop {
            if let Some((acker, _)) = self.pending.remove(&self.next) {
                last = Some(acker);
            } else if !self.settled_ahead.remove(&self.next) {
                return last;
            }
            self.next += 1;
        }
    }

    fn advance_over_settled(&mut self) {
        while self.settled_ahead.remove(&self.next) {
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> AckWindow<u64> {
        AckWindow::new(1)
    }

    fn flush(window: &mut AckWindow<u64>, at: Instant) -> (Option<u64>, Vec<u64>) {
        let flush = window.flush(at);
        (flush.multiple, flush.singles)
    }

    #[test]
    fn an_in_order_run_is_one_multiple_ack_on_its_last_tag() {
        let now = Instant::now();
        let mut w = window();
        for tag in [3, 1, 2] {
            w.ack(tag, tag, now);
        }
        assert_eq!(flush(&mut w, now), (Some(3), vec![]));
        assert_eq!(w.next, 4);
        assert!(w.oldest().is_none());
    }

    #[test]
    fn acks_behind_an_unsettled_delivery_wait_then_go_alone() {
        let now = Instant::now();
        let mut w = window();
        w.ack(2, 2, now);
        w.ack(3, 3, now);
        // Tag 1 is still being worked on: nothing may cover it.
        assert_eq!(flush(&mut w, now + LINGER), (None, vec![]));
        assert_eq!(flush(&mut w, now + HOLD), (None, vec![2, 3]));
        // Once 1 settles, the run moves past the tags already acked alone.
        w.ack(1, 1, now + HOLD);
        w.ack(4, 4, now + HOLD);
        assert_eq!(flush(&mut w, now + HOLD), (Some(4), vec![]));
        assert_eq!(w.next, 5);
    }

    #[test]
    fn a_nacked_tag_is_never_covered_by_a_multiple_ack() {
        let now = Instant::now();
        let mut w = window();
        w.ack(2, 2, now);
        // 1 has failed and waits to be handed back; 2 must not be acked with `multiple`.
        assert_eq!(flush(&mut w, now), (None, vec![]));
        w.nacked(1);
        // After the nack is on the wire, the run starts past it, on an ack of its own.
        assert_eq!(flush(&mut w, now), (Some(2), vec![]));
        w.nacked(3);
        assert_eq!(w.next, 4);
        assert_eq!(flush(&mut w, now), (None, vec![]));
    }

    #[test]
    fn the_last_flush_sends_everything() {
        let now = Instant::now();
        let mut w = window();
        w.ack(1, 1, now);
        w.ack(3, 3, now);
        let last = w.flush_all();
        assert_eq!((last.multiple, last.singles), (Some(1), vec![3]));
    }
}
