//! Per-webhook rate limits (`rate_limit`, attempts per second), held for the endpoint as a
//! whole: the live workers ([`crate::workers`]) split the limit between them, and each
//! spaces its part evenly.
//!
//! Evenly, not in bursts: an endpoint counts arrivals, and a burst's arrivals spread by a few
//! milliseconds of network timing land in the next second's count. Spaced starts stay within
//! the limit however the network delays each by up to `ARRIVAL_TOLERANCE`.
//!
//! Work asks for a start time first: reserved if it is within the caller's patience, refused
//! otherwise (the work is then deferred like a saturated endpoint's), so the waiters are few
//! and each waits a known time. Just before its request goes out, the attempt checks the
//! previous start actually made, which a late wake-up cannot bring closer than the spacing.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::endpoints::{EndpointMap, IDLE_FOR};
use crate::{
    domain::{Membership, WebhookId},
    workers::SharedMembership,
};

/// How much later than the next one an attempt may arrive at the endpoint and still not make
/// any second hold more than the limit: spaced by `(1 s + ARRIVAL_TOLERANCE) / share`, a
/// worker's `share + 1` starts span more than a second by this much.
const ARRIVAL_TOLERANCE: Duration = Duration::from_millis(50);

/// This worker's part of a limit: starts at least `spacing` apart, or none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    Spaced(Duration),
    /// The limit is smaller than the number of workers and the others hold all of it.
    Nothing,
}

/// This worker's part of `webhook`'s `limit` attempts per second: the limit split in whole
/// attempts, `limit % live` of the workers taking one more (20 among 3: 7, 7 and 6), so the
/// parts add up to the limit exactly. Which ones turns with the webhook (every worker counts
/// the same), so that webhooks limited below the number of workers spread over all of them.
pub fn share(webhook: WebhookId, limit: u32, membership: Membership) -> Share {
    let limit = limit.max(1) as usize;
    let live = membership.live.max(1);
    let turn = usize::try_from(webhook.0.as_u128() % live as u128).unwrap_or(0);
    let place = (membership.rank + turn) % live;
    let per_second = limit / live + usize::from(place < limit % live);
    if per_second == 0 {
        return Share::Nothing;
    }
    let per_second = u32::try_from(per_second).unwrap_or(u32::MAX);
    Share::Spaced((Duration::from_secs(1) + ARRIVAL_TOLERANCE) / per_second)
}

struct Endpoint {
    share: Share,
    /// When the next reservation may start.
    next_reserved: Option<Instant>,
    /// The last start actually made.
    last_started: Option<Instant>,
    last_used: Instant,
}

/// The rate-limited webhooks this worker sends to.
pub struct RateLimits {
    endpoints: EndpointMap<Endpoint>,
    membership: Arc<SharedMembership>,
}

/// The answer to a request for a start.
#[derive(Debug, PartialEq, Eq)]
pub enum Reservation {
    /// Start at this time.
    At(Instant),
    /// Not within the patience, or no share here: defer the work.
    Refused,
}

impl RateLimits {
    pub fn new(membership: Arc<SharedMembership>) -> Self {
        Self {
            endpoints: EndpointMap::default(),
            membership,
        }
    }

    /// Runs `f` on the webhook's state under its current share (the limit or the workers may
    /// have changed since; the starts already made still count).
    fn with<T>(&self, webhook: WebhookId, limit: u32, f: impl FnOnce(&mut Endpoint) -> T) -> T {
        let share = share(webhook, limit, self.membership.get());
        let now = Instant::now();
        let new = || Endpoint {
            share,
            next_reserved: None,
            last_started: None,
            last_used: now,
        };
        let idle = |endpoint: &Endpoint| now.duration_since(endpoint.last_used) >= IDLE_FOR;
        self.endpoints.with(webhook, new, idle, |endpoint| {
            endpoint.share = share;
            endpoint.last_used = now;
            f(endpoint)
        })
    }

    /// A start for one attempt to `webhook` (limited to `limit` per second), at most
    /// `patience` from now.
    pub fn reserve(&self, webhook: WebhookId, limit: u32, patience: Duration) -> Reservation {
        self.with(webhook, limit, |endpoint| {
            let Share::Spaced(spacing) = endpoint.share else {
                return Reservation::Refused;
            };
            let now = Instant::now();
            // Never before the spacing after the last actual start, so that late wake-ups
            // cannot let the reservations run ahead of the starts.
            let at = [
                Some(now),
                endpoint.next_reserved,
                endpoint.last_started.map(|last| last + spacing),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(now);
            if at.duration_since(now) > patience {
                return Reservation::Refused;
            }
            endpoint.next_reserved = Some(at + spacing);
            Reservation::At(at)
        })
    }

    /// Waits until the attempt may go out: the spacing after the last start actually made (a
    /// late wake-up of an earlier one may have moved it), then records its start.
    pub async fn start(&self, webhook: WebhookId, limit: u32) {
        loop {
            let wait = self.with(webhook, limit, |endpoint| {
                let now = Instant::now();
                // With no share left (workers joined), the reservations made go out one a
                // second, the least any share spaces them.
                let spacing = match endpoint.share {
                    Share::Spaced(spacing) => spacing,
                    Share::Nothing => Duration::from_secs(1) + ARRIVAL_TOLERANCE,
                };
                let at = endpoint
                    .last_started
                    .map_or(now, |last| now.max(last + spacing));
                if at <= now {
                    endpoint.last_started = Some(now);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::endpoints::SWEEP_FROM;

    fn of(live: usize, rank: usize) -> Membership {
        Membership { live, rank }
    }

    fn spaced(per_second: u32) -> Share {
        Share::Spaced((Duration::from_secs(1) + ARRIVAL_TOLERANCE) / per_second)
    }

    #[test]
    fn the_workers_parts_add_up_to_the_limit() {
        // A webhook whose turn puts the first worker first.
        let first = WebhookId(uuid::Uuid::from_u128(0));
        assert_eq!(share(first, 20, Membership::ALONE), spaced(20));
        assert_eq!(share(first, 20, of(2, 0)), spaced(10));
        assert_eq!(share(first, 20, of(2, 1)), spaced(10));
        // 20 among 3: 7, 7 and 6.
        let parts: Vec<Share> = (0..3).map(|rank| share(first, 20, of(3, rank))).collect();
        assert_eq!(parts, [spaced(7), spaced(7), spaced(6)]);
        // Fewer than one a second each: one worker sends, the others defer to it.
        assert_eq!(share(first, 1, of(2, 0)), spaced(1));
        assert_eq!(share(first, 1, of(2, 1)), Share::Nothing);
    }

    #[test]
    fn low_limits_are_spread_over_the_workers() {
        let mut held = [0; 3];
        for _ in 0..300 {
            let webhook = WebhookId::new();
            let holders: Vec<usize> = (0..3)
                .filter(|&rank| share(webhook, 1, of(3, rank)) != Share::Nothing)
                .collect();
            assert_eq!(holders.len(), 1, "one worker holds a limit of 1");
            held[holders[0]] += 1;
        }
        assert!(
            held.iter().all(|&n| n > 50),
            "each worker holds some: {held:?}"
        );
    }

    #[test]
    fn the_membership_is_read_as_it_was_written() {
        let shared = SharedMembership::default();
        assert_eq!(shared.get(), Membership::ALONE);
        shared.set(of(3, 2));
        assert_eq!(shared.get(), of(3, 2));
        // A rank past the end (the table changed between two reads) is the last place.
        shared.set(of(2, 5));
        assert_eq!(shared.get(), of(2, 1));
        shared.set(of(0, 0));
        assert_eq!(shared.get(), Membership::ALONE);
    }

    /// Reserved back to back, as a queue of waiting work is, no second plus the arrival
    /// tolerance holds more than the share: the property the limit rests on.
    #[test]
    fn no_second_ever_holds_more_than_the_share() {
        for limit in [1, 3, 20, 1_000] {
            let limits = RateLimits::new(Arc::new(SharedMembership::default()));
            let webhook = WebhookId::new();
            let starts: Vec<Instant> = (0..3 * limit)
                .map(|_| match limits.reserve(webhook, limit, Duration::MAX) {
                    Reservation::At(at) => at,
                    Reservation::Refused => panic!("refused with all the patience there is"),
                })
                .collect();
            let window = Duration::from_secs(1) + ARRIVAL_TOLERANCE;
            for (i, start) in starts.iter().enumerate() {
                let in_window = starts[i..]
                    .iter()
                    .take_while(|later| later.duration_since(*start) < window)
                    .count();
                assert!(
                    in_window <= limit as usize,
                    "{in_window} starts in one window"
                );
            }
        }
    }

    #[test]
    fn a_reservation_past_the_patience_is_refused() {
        let limits = RateLimits::new(Arc::new(SharedMembership::default()));
        let webhook = WebhookId::new();
        let patience = Duration::from_millis(600);
        // 2 a second: one now, one 525 ms from now, the third past the patience.
        for _ in 0..2 {
            assert!(matches!(
                limits.reserve(webhook, 2, patience),
                Reservation::At(_)
            ));
        }
        assert_eq!(limits.reserve(webhook, 2, patience), Reservation::Refused);
        // Another webhook is not held up.
        assert!(matches!(
            limits.reserve(WebhookId::new(), 2, patience),
            Reservation::At(_)
        ));
        // More workers: a smaller share at once.
        let membership = Arc::new(SharedMembership::default());
        membership.set(of(2, 0));
        let shared = RateLimits::new(membership.clone());
        assert!(matches!(
            shared.reserve(webhook, 2, patience),
            Reservation::At(_)
        ));
        assert_eq!(shared.reserve(webhook, 2, patience), Reservation::Refused);
        // No share at all (2 among 3, and this webhook's turn leaves the third without):
        // every reservation is refused, and the work deferred.
        membership.set(of(3, 2));
        assert_eq!(
            shared.reserve(WebhookId(uuid::Uuid::from_u128(0)), 2, Duration::MAX),
            Reservation::Refused
        );
    }

    #[test]
    fn busy_webhooks_are_kept() {
        let limits = RateLimits::new(Arc::new(SharedMembership::default()));
        for _ in 0..=SWEEP_FROM {
            limits.reserve(WebhookId::new(), 1000, Duration::MAX);
        }
        assert_eq!(
            limits.endpoints.len(),
            SWEEP_FROM + 1,
            "none idle, none forgotten"
        );
    }

    #[tokio::test]
    async fn starts_keep_the_spacing_when_a_wake_up_is_late() {
        let limits = RateLimits::new(Arc::new(SharedMembership::default()));
        let webhook = WebhookId::new();
        let spacing = (Duration::from_secs(1) + ARRIVAL_TOLERANCE) / 20;
        limits.start(webhook, 20).await;
        let first = Instant::now();
        // As when the previous attempt woke late and this one is on time: it waits.
        limits.start(webhook, 20).await;
        assert!(first.elapsed() >= spacing - Duration::from_millis(1));
    }
}
