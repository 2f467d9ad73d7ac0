//! Each endpoint's circuit breaker (`circuit::Breaker`), kept for the process like the
//! limiter's slots: each worker opens, probes and closes its own, so an endpoint sees at most
//! one probe per interval from each worker. What it opens and closes is written to the
//! endpoint's health by the pipeline, for the API, the dashboard and the operational events.

use std::time::{Duration, Instant};

use super::endpoints::{EndpointMap, IDLE_FOR};
use crate::{
    circuit::{Admit, Breaker, Policy, Transition},
    domain::WebhookId,
    metrics,
};

pub struct Circuits {
    policy: Policy,
    breakers: EndpointMap<Breaker>,
}

impl Circuits {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            breakers: EndpointMap::default(),
        }
    }

    /// Whether work for `webhook` may be attempted now.
    pub fn admit(&self, webhook: WebhookId) -> Admit {
        let now = Instant::now();
        self.breakers.with(
            webhook,
            || Breaker::new(now),
            |breaker| breaker.forgettable(now, IDLE_FOR),
            |breaker| breaker.admit(now),
        )
    }

    /// Counts an attempt's result; a transition is counted in the metrics here, and the
    /// caller writes it to the endpoint's health.
    pub fn record(&self, webhook: WebhookId, delivered: bool, probe: bool) -> Option<Transition> {
        let now = Instant::now();
        let transition = self.breakers.with(
            webhook,
            || Breaker::new(now),
            |breaker| breaker.forgettable(now, IDLE_FOR),
            |breaker| breaker.record(&self.policy, delivered, probe, now),
        );
        if let Some(transition) = transition {
            metrics::circuit_changed(transition);
        }
        transition
    }

    /// The webhooks with an open circuit whose probe is due and should come from a parked
    /// delivery, each marked as having one released for `lease`.
    pub fn probes_wanted(&self, lease: Duration) -> Vec<WebhookId> {
        let now = Instant::now();
        self.breakers.select(|breaker| {
            let wanted = breaker.wants_probe(now);
            if wanted {
                breaker.probe_released(now, lease);
            }
            wanted
        })
    }

    /// Whether `webhook`'s circuit is open in this worker.
    pub fn is_open(&self, webhook: WebhookId) -> bool {
        self.breakers
            .get(webhook, Breaker::is_open)
            .unwrap_or(false)
    }
}
