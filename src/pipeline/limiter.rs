//! Per-endpoint bound on attempts in flight, so a slow or dead endpoint cannot take every
//! broker prefetch slot: past the bound, work for it is deferred instead of waited on.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::WebhookId;

pub struct EndpointLimiter {
    per_endpoint: usize,
    slots: Mutex<HashMap<WebhookId, Arc<Semaphore>>>,
}

impl EndpointLimiter {
    pub fn new(per_endpoint: usize) -> Self {
        Self {
            per_endpoint,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn semaphore(&self, webhook: WebhookId) -> Option<Arc<Semaphore>> {
        let mut slots = self.slots.lock().ok()?;
        Some(
            slots
                .entry(webhook)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_endpoint)))
                .clone(),
        )
    }

    /// A slot for one attempt to `webhook`, or `None` when it already has `per_endpoint`
    /// attempts in flight. The slot is freed when the permit drops.
    #[cfg(test)]
    pub fn try_acquire(&self, webhook: WebhookId) -> Option<OwnedSemaphorePermit> {
        self.semaphore(webhook)?.try_acquire_owned().ok()
    }

    /// A slot, waiting up to `patience` for one to free up: a busy but healthy endpoint frees
    /// slots within milliseconds, a dead one holds them until its timeouts.
    pub async fn acquire_within(
        &self,
        webhook: WebhookId,
        patience: Duration,
    ) -> Option<OwnedSemaphorePermit> {
        let semaphore = self.semaphore(webhook)?;
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Some(permit);
        }
        tokio::time::timeout(patience, semaphore.acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_each_endpoint_separately() {
        let limiter = EndpointLimiter::new(2);
        let busy = WebhookId::new();
        let other = WebhookId::new();
        let a = limiter.try_acquire(busy).expect("first slot");
        let _b = limiter.try_acquire(busy).expect("second slot");
        assert!(limiter.try_acquire(busy).is_none(), "third is refused");
        assert!(
            limiter.try_acquire(other).is_some(),
            "other endpoints are unaffected"
        );
        drop(a);
        assert!(
            limiter.try_acquire(busy).is_some(),
            "a freed slot is reusable"
        );
    }
}
