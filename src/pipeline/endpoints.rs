//! Per-endpoint state kept in memory (the limiter's slots, the rate limits' spacing), in a map
//! bounded by forgetting idle endpoints: webhooks come and go, and a company may have
//! thousands.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use crate::domain::WebhookId;

/// An endpoint left alone this long is forgotten; what was learned of it is learned anew if
/// it is attempted again.
pub const IDLE_FOR: Duration = Duration::from_secs(600);
/// Endpoints tracked before idle ones are swept out.
pub const SWEEP_FROM: usize = 1024;

pub struct EndpointMap<V> {
    inner: Mutex<Inner<V>>,
}

struct Inner<V> {
    map: HashMap<WebhookId, V>,
    /// The map is swept when it reaches this size, then at twice what is left: sweeping costs
    /// O(1) per new endpoint however many are busy.
    sweep_at: usize,
}

impl<V> Default for EndpointMap<V> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                sweep_at: SWEEP_FROM,
            }),
        }
    }
}

impl<V> EndpointMap<V> {
    /// Runs `f` on `webhook`'s state, made by `new` if it has none. Before a new one is
    /// added to a map at its sweep size, the entries `idle` picks are forgotten.
    pub fn with<T>(
        &self,
        webhook: WebhookId,
        new: impl FnOnce() -> V,
        mut idle: impl FnMut(&V) -> bool,
        f: impl FnOnce(&mut V) -> T,
    ) -> T {
        let mut inner = self.lock();
        if inner.map.len() >= inner.sweep_at && !inner.map.contains_key(&webhook) {
            inner.map.retain(|_, state| !idle(state));
            inner.sweep_at = SWEEP_FROM.max(inner.map.len() * 2);
        }
        f(inner.map.entry(webhook).or_insert_with(new))
    }

    /// Runs `f` on `webhook`'s state, if it has one.
    pub fn get<T>(&self, webhook: WebhookId, f: impl FnOnce(&V) -> T) -> Option<T> {
        self.lock().map.get(&webhook).map(f)
    }

    /// The endpoints whose state `pick` picks (it may change the state it sees).
    pub fn select(&self, mut pick: impl FnMut(&mut V) -> bool) -> Vec<WebhookId> {
        self.lock()
            .map
            .iter_mut()
            .filter_map(|(webhook, state)| pick(state).then_some(*webhook))
            .collect()
    }

    /// The state is plain values, each change complete under the lock: a panic elsewhere
    /// while it was held leaves it usable.
    fn lock(&self) -> MutexGuard<'_, Inner<V>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(n: u128) -> WebhookId {
        WebhookId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn idle_endpoints_are_forgotten_when_the_map_is_full() {
        let map = EndpointMap::<bool>::default();
        // Even endpoints are idle.
        for n in 0..SWEEP_FROM as u128 {
            map.with(webhook(n), || n % 2 == 0, |idle| *idle, |_| ());
        }
        assert_eq!(map.len(), SWEEP_FROM);
        // Known endpoints never sweep.
        map.with(webhook(0), || true, |idle| *idle, |_| ());
        assert_eq!(map.len(), SWEEP_FROM);
        map.with(webhook(u128::MAX), || false, |idle| *idle, |_| ());
        assert_eq!(map.len(), SWEEP_FROM / 2 + 1);
        assert_eq!(map.get(webhook(0), |idle| *idle), None);
        assert_eq!(map.get(webhook(1), |idle| *idle), Some(false));
    }

    #[test]
    fn a_busy_map_sweeps_again_only_once_it_has_doubled() {
        let map = EndpointMap::<bool>::default();
        for n in 0..=SWEEP_FROM as u128 {
            map.with(webhook(n), || false, |idle| *idle, |_| ());
        }
        // Nothing was idle: the next sweep waits for twice as many.
        assert_eq!(map.lock().sweep_at, 2 * (SWEEP_FROM));
    }

    #[test]
    fn a_poisoned_map_stays_usable() {
        let map = std::sync::Arc::new(EndpointMap::<u32>::default());
        let poisoner = map.clone();
        let _ = std::thread::spawn(move || {
            poisoner.with(webhook(1), || 1, |_| false, |_| panic!("poisoning"));
        })
        .join();
        assert_eq!(map.get(webhook(1), |n| *n), Some(1));
        assert_eq!(map.with(webhook(1), || 0, |_| false, |n| *n + 1), 2);
    }
}
