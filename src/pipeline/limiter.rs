//! Per-endpoint bound on attempts in flight, so a slow or dead endpoint cannot take every
//! broker prefetch slot: past the bound, work for it is deferred instead of waited on.
//!
//! Only a slow endpoint's work is deferred quickly. A fast endpoint with full slots is merely
//! busy (the worker, not the endpoint, is the bottleneck): handing its work off would cost a
//! publish, a consume and a query more per delivery and slow everything down, so its work
//! waits for a slot, up to the caller's patience.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::endpoints::{EndpointMap, IDLE_FOR};
use crate::domain::{Source, WebhookId};

/// An endpoint whose slots are all taken and none of which freed for this long is stuck (its
/// attempts are running into the timeout): new work for it is parked at once, without waiting.
const STUCK_AFTER: Duration = Duration::from_secs(1);
/// An endpoint whose attempts take this long on average is slow: at 64 in flight it takes
/// fewer than 320 deliveries a second, and events waiting for it would hold prefetch slots.
/// Far above what a saturated worker adds to a fast endpoint's attempts (tens of ms).
const SLOW_AFTER: Duration = Duration::from_millis(200);
/// How long work for a slow endpoint waits for a slot before it is deferred.
const SLOW_PATIENCE: Duration = Duration::from_millis(50);
/// Weight of the newest attempt in an endpoint's average duration: 1/8.
const AVERAGE_SHIFT: u32 = 3;
pub struct EndpointLimiter {
    per_endpoint: usize,
    /// Attempts averaging half the request timeout or more are hanging.
    hanging_after: Duration,
    /// An endpoint with no attempt in flight and none finished for this long is forgotten:
    /// its pace is learned anew if it is attempted again.
    endpoints: EndpointMap<Arc<Endpoint>>,
    /// The clock `Endpoint::last_freed_ms` counts from.
    epoch: Instant,
    idle_for: Duration,
}

struct Endpoint {
    slots: Arc<Semaphore>,
    /// When a slot was last freed (or the endpoint first seen), in ms since the epoch.
    last_freed_ms: AtomicU64,
    /// Moving average of how long the endpoint's slots are held, in µs.
    average_us: AtomicU64,
}

impl Endpoint {
    fn record_duration(&self, held: Duration) {
        let sample = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .average_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |average| {
                Some(average - (average >> AVERAGE_SHIFT) + (sample >> AVERAGE_SHIFT))
            });
    }

    fn average(&self) -> Duration {
        Duration::from_micros(self.average_us.load(Ordering::Relaxed))
    }
}

/// One attempt's right to run; freeing it records the time, which tells busy from stuck.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    endpoint: Arc<Endpoint>,
    epoch: Instant,
    taken: Instant,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let now = millis_since(self.epoch);
        self.endpoint.last_freed_ms.store(now, Ordering::Relaxed);
        self.endpoint.record_duration(self.taken.elapsed());
    }
}

/// The answer to a request for a slot.
pub enum Acquired {
    Slot(Slot),
    /// Every slot is taken and none freed up within the patience (a slow endpoint's work
    /// waits only briefly).
    Busy,
    /// Every slot is taken and none has freed for a while, or the endpoint's attempts run
    /// into the timeout: it is hanging.
    Stuck,
}

/// What an endpoint's average attempt says about it.
#[derive(Debug, PartialEq, Eq)]
enum Pace {
    Fast,
    /// Slow but answering: its excess work is handed off, to be fed to it at its own pace.
    Slow,
    /// Its attempts run into the timeout: its excess work is parked.
    Hanging,
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl EndpointLimiter {
    /// `timeout` is the attempts' request timeout.
    pub fn new(per_endpoint: usize, timeout: Duration) -> Self {
        Self::forgetting_after(per_endpoint, timeout, IDLE_FOR)
    }

    fn forgetting_after(per_endpoint: usize, timeout: Duration, idle_for: Duration) -> Self {
        Self {
            per_endpoint,
            hanging_after: timeout / 2,
            endpoints: EndpointMap::default(),
            epoch: Instant::now(),
            idle_for,
        }
    }

    fn endpoint(&self, webhook: WebhookId) -> Arc<Endpoint> {
        let now = millis_since(self.epoch);
        let idle_ms = u64::try_from(self.idle_for.as_millis()).unwrap_or(u64::MAX);
        self.endpoints.with(
            webhook,
            || {
                Arc::new(Endpoint {
                    slots: Arc::new(Semaphore::new(self.per_endpoint)),
                    last_freed_ms: AtomicU64::new(now),
                    average_us: AtomicU64::new(0),
                })
            },
            // Nobody holds it (no slot taken, no caller waiting) and it freed no slot lately.
            |endpoint| {
                let idle = now.saturating_sub(endpoint.last_freed_ms.load(Ordering::Relaxed));
                Arc::strong_count(endpoint) == 1 && idle >= idle_ms
            },
            |endpoint| endpoint.clone(),
        )
    }

    /// How many parked deliveries for `webhook` may be released now: all of them, unless the
    /// endpoint is hanging; then only as many as it has free slots, as probes: their attempts
    /// tell when it answers again, and the rest wait in the database meanwhile.
    pub fn release_budget(&self, webhook: WebhookId) -> usize {
        let Some(endpoint) = self.known(webhook) else {
            return usize::MAX;
        };
        match self.pace(&endpoint) {
            Pace::Hanging => endpoint.slots.available_permits(),
            Pace::Slow | Pace::Fast => usize::MAX,
        }
    }

    fn known(&self, webhook: WebhookId) -> Option<Arc<Endpoint>> {
        self.endpoints.get(webhook, Arc::clone)
    }

    fn pace(&self, endpoint: &Endpoint) -> Pace {
        match endpoint.average() {
            average if average >= self.hanging_after => Pace::Hanging,
            average if average >= SLOW_AFTER => Pace::Slow,
            _ => Pace::Fast,
        }
    }

    fn slot(&self, endpoint: &Arc<Endpoint>, permit: OwnedSemaphorePermit) -> Acquired {
        Acquired::Slot(Slot {
            _permit: permit,
            endpoint: endpoint.clone(),
            epoch: self.epoch,
            taken: Instant::now(),
        })
    }

    /// A slot for one attempt to `webhook`, waiting up to `patience` for one to free up (a
    /// slow endpoint, up to `SLOW_PATIENCE`): a busy but fast endpoint frees slots within
    /// milliseconds, a dead one holds them until its timeouts, and is reported stuck at once.
    pub async fn acquire_within(
        &self,
        webhook: WebhookId,
        patience: Duration,
        source: Source,
    ) -> Acquired {
        let endpoint = self.endpoint(webhook);
        // A hanging endpoint gets no new event's delivery at all, even with a slot free: its
        // free slots go to the oldest parked deliveries, which the sweeper releases as
        // probes, so new work cannot starve old.
        if source == Source::Fanout && self.pace(&endpoint) == Pace::Hanging {
            return Acquired::Stuck;
        }
        if let Ok(permit) = endpoint.slots.clone().try_acquire_owned() {
            return self.slot(&endpoint, permit);
        }
        let idle =
            millis_since(self.epoch).saturating_sub(endpoint.last_freed_ms.load(Ordering::Relaxed));
        if Duration::from_millis(idle) >= STUCK_AFTER {
            return Acquired::Stuck;
        }
        let patience = match self.pace(&endpoint) {
            Pace::Hanging => return Acquired::Stuck,
            Pace::Slow => patience.min(SLOW_PATIENCE),
            Pace::Fast => patience,
        };
        match tokio::time::timeout(patience, endpoint.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => self.slot(&endpoint, permit),
            _ => Acquired::Busy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::endpoints::SWEEP_FROM;

    fn slot(acquired: Acquired) -> Option<Slot> {
        match acquired {
            Acquired::Slot(slot) => Some(slot),
            Acquired::Busy | Acquired::Stuck => None,
        }
    }

    const NO_WAIT: Duration = Duration::from_millis(1);
    const TIMEOUT: Duration = Duration::from_secs(5);

    /// Webhooks come and go (deleted, or thousands of one company's attempted once): the map
    /// forgets the idle ones, never one with an attempt in flight.
    #[tokio::test]
    async fn idle_endpoints_are_forgotten_busy_ones_kept() {
        let limiter = EndpointLimiter::forgetting_after(1, TIMEOUT, Duration::ZERO);
        let busy = WebhookId::new();
        let held = slot(limiter.acquire_within(busy, NO_WAIT, Source::Job).await).expect("slot");
        for _ in 0..10 * SWEEP_FROM {
            let once = WebhookId::new();
            drop(slot(
                limiter.acquire_within(once, NO_WAIT, Source::Job).await,
            ));
            let tracked = limiter.endpoints.len();
            assert!(tracked <= 2 * SWEEP_FROM, "{tracked} endpoints tracked");
        }
        assert!(
            slot(limiter.acquire_within(busy, NO_WAIT, Source::Job).await).is_none(),
            "the busy endpoint kept its state: its one slot is still taken"
        );
        drop(held);
    }

    #[tokio::test]
    async fn bounds_each_endpoint_separately() {
        let limiter = EndpointLimiter::new(2, TIMEOUT);
        let busy = WebhookId::new();
        let other = WebhookId::new();
        let a = slot(limiter.acquire_within(busy, NO_WAIT, Source::Job).await).expect("first slot");
        let _b =
            slot(limiter.acquire_within(busy, NO_WAIT, Source::Job).await).expect("second slot");
        assert!(matches!(
            limiter.acquire_within(busy, NO_WAIT, Source::Job).await,
            Acquired::Busy
        ));
        assert!(slot(limiter.acquire_within(other, NO_WAIT, Source::Job).await).is_some());
        drop(a);
        assert!(
            slot(limiter.acquire_within(busy, NO_WAIT, Source::Job).await).is_some(),
            "freed slot reused"
        );
    }

    #[tokio::test]
    async fn waits_a_bounded_time_for_a_slot() {
        let limiter = EndpointLimiter::new(1, TIMEOUT);
        let busy = WebhookId::new();
        let held = slot(limiter.acquire_within(busy, NO_WAIT, Source::Job).await).expect("slot");
        let patience = Duration::from_millis(20);
        assert!(matches!(
            limiter.acquire_within(busy, patience, Source::Job).await,
            Acquired::Busy
        ));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(held);
        });
        let waited = limiter
            .acquire_within(busy, Duration::from_millis(500), Source::Job)
            .await;
        assert!(slot(waited).is_some(), "gets the slot freed meanwhile");
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_slow_endpoint_runs_out_of_patience_early() {
        let limiter = EndpointLimiter::new(1, TIMEOUT);
        let fast = WebhookId::new();
        let held = slot(limiter.acquire_within(fast, NO_WAIT, Source::Job).await).expect("slot");
        tokio::spawn(async move {
            tokio::time::sleep(SLOW_PATIENCE * 4).await;
            drop(held);
        });
        let patience = Duration::from_secs(1);
        assert!(
            slot(limiter.acquire_within(fast, patience, Source::Job).await).is_some(),
            "a fast endpoint's work waits for its slot"
        );

        let slow = WebhookId::new();
        let held = slot(limiter.acquire_within(slow, NO_WAIT, Source::Job).await).expect("slot");
        let endpoint = limiter.endpoint(slow);
        for _ in 0..16 {
            // As if each earlier attempt had held its slot for 4 * SLOW_AFTER.
            endpoint.record_duration(SLOW_AFTER * 4);
        }
        tokio::spawn(async move {
            tokio::time::sleep(SLOW_PATIENCE * 4).await;
            drop(held);
        });
        assert!(
            matches!(
                limiter.acquire_within(slow, patience, Source::Job).await,
                Acquired::Busy
            ),
            "a slow endpoint's work is deferred after SLOW_PATIENCE"
        );
    }

    #[tokio::test]
    async fn an_endpoint_whose_attempts_run_into_the_timeout_is_stuck_at_once() {
        let limiter = EndpointLimiter::new(1, TIMEOUT);
        let hanging = WebhookId::new();
        let _held =
            slot(limiter.acquire_within(hanging, NO_WAIT, Source::Job).await).expect("slot");
        let endpoint = limiter.endpoint(hanging);
        for _ in 0..32 {
            endpoint.record_duration(TIMEOUT);
        }
        assert!(matches!(
            limiter
                .acquire_within(hanging, Duration::from_secs(1), Source::Job)
                .await,
            Acquired::Stuck
        ));
    }

    #[tokio::test]
    async fn a_hanging_endpoint_gets_only_probes_released() {
        let limiter = EndpointLimiter::new(3, TIMEOUT);
        let hanging = WebhookId::new();
        assert_eq!(
            limiter.release_budget(hanging),
            usize::MAX,
            "unknown: no limit"
        );
        let _held =
            slot(limiter.acquire_within(hanging, NO_WAIT, Source::Job).await).expect("slot");
        assert_eq!(
            limiter.release_budget(hanging),
            usize::MAX,
            "fast: no limit"
        );
        let endpoint = limiter.endpoint(hanging);
        for _ in 0..32 {
            endpoint.record_duration(TIMEOUT);
        }
        assert_eq!(limiter.release_budget(hanging), 2, "its free slots");
        assert!(
            matches!(
                limiter
                    .acquire_within(hanging, NO_WAIT, Source::Fanout)
                    .await,
                Acquired::Stuck
            ),
            "no slot for new work, free ones notwithstanding"
        );
        assert!(
            slot(limiter.acquire_within(hanging, NO_WAIT, Source::Job).await).is_some(),
            "a job (a probe) gets one"
        );
    }

    #[tokio::test]
    async fn an_endpoint_that_frees_nothing_for_a_while_is_stuck() {
        let limiter = EndpointLimiter::new(1, TIMEOUT);
        let hanging = WebhookId::new();
        let _held =
            slot(limiter.acquire_within(hanging, NO_WAIT, Source::Job).await).expect("slot");
        assert!(matches!(
            limiter.acquire_within(hanging, NO_WAIT, Source::Job).await,
            Acquired::Busy
        ));
        std::thread::sleep(STUCK_AFTER + Duration::from_millis(10));
        assert!(matches!(
            limiter.acquire_within(hanging, NO_WAIT, Source::Job).await,
            Acquired::Stuck
        ));
    }
}
