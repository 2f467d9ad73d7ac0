//! Per-webhook rate limits (`rate_limit`, attempts per second), held for the endpoint as a
//! whole: each of the `n` live workers (`storage::heartbeat`) takes `1/n` of the limit.
//!
//! A worker's share is "at most `per_window` attempts in any `window`". Work asks for a start
//! time first: reserved if it is within the caller's patience, refused otherwise (the work is
//! then deferred like a saturated endpoint's), so the waiters are few and each waits a known
//! time. Just before its request goes out, the attempt checks the starts actually made, which
//! late wake-ups cannot push over the share.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::domain::WebhookId;

/// Added to each window, so that what arrives at the endpoint (network timing varies by a few
/// milliseconds) still holds to the limit over any second.
const WINDOW_SLACK: Duration = Duration::from_millis(20);
/// Webhooks tracked before idle ones are forgotten (see the endpoint limiter).
const PRUNE_FROM: usize = 1024;

/// At most `per_window` attempts in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub per_window: usize,
    pub window: Duration,
}

/// One worker's share of `limit` attempts per second among `workers`: whole attempts per
/// second when the share is one or more, else one attempt per `workers / limit` seconds.
pub fn share(limit: u32, workers: usize) -> Share {
    let limit = limit.max(1) as usize;
    let workers = workers.max(1);
    let per_second = limit / workers;
    if per_second >= 1 {
        Share {
            per_window: per_second,
            window: Duration::from_secs(1) + WINDOW_SLACK,
        }
    } else {
        let seconds = workers as f64 / limit as f64;
        Share {
            per_window: 1,
            window: Duration::from_secs_f64(seconds) + WINDOW_SLACK,
        }
    }
}

/// Start times, oldest first, at most `share.per_window` of them.
#[derive(Debug, Default)]
struct Log(VecDeque<Instant>);

impl Log {
    /// The earliest start at or after `now` that keeps any window within the share.
    fn next_free(&self, share: Share, now: Instant) -> Instant {
        if self.0.len() < share.per_window {
            return self.0.back().map_or(now, |last| now.max(*last));
        }
        let oldest = self.0[self.0.len() - share.per_window];
        now.max(oldest + share.window)
    }

    fn push(&mut self, at: Instant, share: Share) {
        self.0.push_back(at);
        while self.0.len() > share.per_window {
            self.0.pop_front();
        }
    }
}

struct Endpoint {
    share: Share,
    reserved: Log,
    started: Log,
    last_used: Instant,
}

/// The rate-limited webhooks this worker sends to.
pub struct RateLimits {
    endpoints: Mutex<HashMap<WebhookId, Endpoint>>,
    /// Live workers, kept by the heartbeat.
    workers: Arc<AtomicUsize>,
}

/// The answer to a request for a start.
#[derive(Debug, PartialEq, Eq)]
pub enum Reservation {
    /// Start at this time.
    At(Instant),
    /// Not within the patience: defer the work.
    Refused,
}

impl RateLimits {
    pub fn new(workers: Arc<AtomicUsize>) -> Self {
        Self {
            endpoints: Mutex::new(HashMap::new()),
            workers,
        }
    }

    /// Runs `f` on the webhook's state under its current share (the limit or the number of
    /// workers may have changed since: the logs are kept, trimmed to the new share).
    fn with<T>(&self, webhook: WebhookId, limit: u32, f: impl FnOnce(&mut Endpoint) -> T) -> T {
        let share = share(limit, self.workers.load(Ordering::Relaxed));
        let now = Instant::now();
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if endpoints.len() >= PRUNE_FROM && !endpoints.contains_key(&webhook) {
            let idle = Duration::from_secs(600);
            endpoints.retain(|_, endpoint| now.duration_since(endpoint.last_used) < idle);
        }
        let endpoint = endpoints.entry(webhook).or_insert_with(|| Endpoint {
            share,
            reserved: Log::default(),
            started: Log::default(),
            last_used: now,
        });
        if endpoint.share != share {
            endpoint.share = share;
            while endpoint.reserved.0.len() > share.per_window {
                endpoint.reserved.0.pop_front();
            }
            while endpoint.started.0.len() > share.per_window {
                endpoint.started.0.pop_front();
            }
        }
        endpoint.last_used = now;
        f(endpoint)
    }

    /// A start for one attempt to `webhook` (limited to `limit` per second), at most
    /// `patience` from now.
    pub fn reserve(&self, webhook: WebhookId, limit: u32, patience: Duration) -> Reservation {
        self.with(webhook, limit, |endpoint| {
            let now = Instant::now();
            let at = endpoint.reserved.next_free(endpoint.share, now);
            if at.duration_since(now) > patience {
                return Reservation::Refused;
            }
            endpoint.reserved.push(at, endpoint.share);
            Reservation::At(at)
        })
    }

    /// Waits until the attempt may go out by the starts actually made (a late wake-up of an
    /// earlier one may have moved them), then records its start.
    pub async fn start(&self, webhook: WebhookId, limit: u32) {
        loop {
            let wait = self.with(webhook, limit, |endpoint| {
                let now = Instant::now();
                let at = endpoint.started.next_free(endpoint.share, now);
                if at <= now {
                    endpoint.started.push(now, endpoint.share);
                }
                at.saturating_duration_since(now)
            });
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// How often a worker beats; one silent for three beats no longer counts.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Beats until `stop`, keeping `workers` at the number of live workers; then leaves, so the
/// others take its share at their next beat.
pub async fn heartbeat(
    storage: crate::storage::Storage,
    workers: Arc<AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
) {
    let id = uuid::Uuid::now_v7();
    loop {
        match storage.heartbeat(id, 3 * HEARTBEAT_EVERY).await {
            Ok(live) => workers.store(live, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "heartbeat failed; keeping the last count"),
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
        }
    }
    if let Err(e) = storage.leave(id).await {
        tracing::debug!(error = %e, "cannot leave the workers table; the row ages out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_takes_its_share_of_the_limit() {
        let second = Duration::from_secs(1) + WINDOW_SLACK;
        assert_eq!(
            share(20, 1),
            Share {
                per_window: 20,
                window: second
            }
        );
        assert_eq!(
            share(20, 2),
            Share {
                per_window: 10,
                window: second
            }
        );
        // Whole attempts per second, rounded down: 3 workers share 20 as 6 each.
        assert_eq!(
            share(20, 3),
            Share {
                per_window: 6,
                window: second
            }
        );
        // Under one per second each: one per `workers / limit` seconds.
        assert_eq!(
            share(1, 2),
            Share {
                per_window: 1,
                window: Duration::from_secs(2) + WINDOW_SLACK
            }
        );
        assert_eq!(
            share(5, 0),
            share(5, 1),
            "no heartbeat yet: this worker alone"
        );
    }

    /// However reservations and starts come, no window holds more than the share: the
    /// property the limit rests on, over random arrivals.
    #[test]
    fn no_window_ever_holds_more_than_the_share() {
        use rand::Rng;
        let mut rng = rand::rng();
        for per_window in [1, 3, 10] {
            let share = Share {
                per_window,
                window: Duration::from_millis(100),
            };
            let origin = Instant::now();
            let mut log = Log::default();
            let mut now = origin;
            let mut starts = Vec::new();
            for _ in 0..500 {
                now += Duration::from_micros(rng.random_range(0..30_000));
                let at = log.next_free(share, now);
                assert!(at >= now);
                log.push(at, share);
                starts.push(at);
            }
            for (i, start) in starts.iter().enumerate() {
                let in_window = starts[i..]
                    .iter()
                    .take_while(|later| later.duration_since(*start) < share.window)
                    .count();
                assert!(in_window <= per_window, "{in_window} starts in one window");
            }
        }
    }

    #[test]
    fn a_reservation_past_the_patience_is_refused() {
        let limits = RateLimits::new(Arc::new(AtomicUsize::new(1)));
        let webhook = WebhookId::new();
        let patience = Duration::from_millis(500);
        for _ in 0..2 {
            assert!(matches!(
                limits.reserve(webhook, 2, patience),
                Reservation::At(_)
            ));
        }
        // The third of 2 per second would start a second from now.
        assert_eq!(limits.reserve(webhook, 2, patience), Reservation::Refused);
        // Another webhook is not held up.
        assert!(matches!(
            limits.reserve(WebhookId::new(), 2, patience),
            Reservation::At(_)
        ));
        // More workers: a smaller share at once.
        let shared = RateLimits::new(Arc::new(AtomicUsize::new(2)));
        assert!(matches!(
            shared.reserve(webhook, 2, patience),
            Reservation::At(_)
        ));
        assert_eq!(shared.reserve(webhook, 2, patience), Reservation::Refused);
    }
}
