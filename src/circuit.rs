//! An endpoint's circuit breaker, decided from values: when a run of failed attempts opens it,
//! what may be attempted while it is open (one probe per interval, the interval doubling while
//! the probes fail), and what closes it (any delivered attempt). The pipeline keeps one per
//! webhook (`pipeline::circuits`) and parks what the breaker keeps from the endpoint.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// `[circuit_breaker]`: when an endpoint's circuit opens and how often it is probed.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Off: circuits never open.
    pub enabled: bool,
    /// Consecutive failed attempts that open the circuit.
    pub failures: u32,
    /// Or: the share of failed attempts in one `window` that opens it...
    pub failure_ratio: f64,
    /// ...once the window holds at least this many attempts.
    pub min_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The wait before the first probe of an open circuit.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// The wait between probes doubles with each failed one, up to this.
    #[serde(with = "humantime_serde")]
    pub max_probe_interval: Duration,
}

/// What may be done with work for the endpoint now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The circuit is closed: attempt it.
    Attempt,
    /// The circuit is open and a probe is due: attempt it, as the probe.
    Probe,
    /// The circuit is open: park it, untried.
    Park,
}

/// A change of the circuit's state that an attempt's result caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

impl Transition {
    pub const ALL: [Transition; 2] = [Transition::Opened, Transition::Closed];

    /// The state entered, as metrics and logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Opened => "open",
            Transition::Closed => "closed",
        }
    }
}

/// One endpoint's circuit.
#[derive(Debug, Clone)]
pub struct Breaker {
    /// Failed attempts since the last delivered one.
    consecutive: u32,
    /// The current window of the failure ratio: when it began, its attempts, its failures.
    window_start: Instant,
    attempts: u32,
    failures: u32,
    open: Option<Open>,
    /// When it was last asked or told anything: an idle closed circuit may be forgotten.
    last_used: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    /// When the next probe may go.
    probe_at: Instant,
    /// The wait after the next probe, should it fail.
    interval: Duration,
    /// Until when a parked delivery released as the probe is on its way: no other is
    /// released meanwhile.
    released_until: Option<Instant>,
}

impl Breaker {
    pub fn new(now: Instant) -> Self {
        Self {
            consecutive: 0,
            window_start: now,
            attempts: 0,
            failures: 0,
            open: None,
            last_used: now,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Whether work for the endpoint may be attempted now. Admitting a probe moves the next
    /// one an interval on, so each interval lets one through.
    pub fn admit(&mut self, now: Instant) -> Admit {
        self.last_used = now;
        match &mut self.open {
            None => Admit::Attempt,
            Some(open) if now >= open.probe_at => {
                open.probe_at = now + open.interval;
                Admit::Probe
            }
            Some(_) => Admit::Park,
        }
    }

    /// Whether a parked delivery should be released to serve as the probe: the circuit is
    /// open, a probe is due, and none was released for it lately. It is admitted as the
    /// probe when its job runs, unless other work took the probe first.
    pub fn wants_probe(&self, now: Instant) -> bool {
        self.open.is_some_and(|open| {
            now >= open.probe_at && open.released_until.is_none_or(|until| now >= until)
        })
    }

    /// A parked delivery was released as the probe; its job should arrive within `lease`.
    pub fn probe_released(&mut self, now: Instant, lease: Duration) {
        if let Some(open) = &mut self.open {
            open.released_until = Some(now + lease);
        }
    }

    /// Counts an attempt's result (`probe`: it was admitted as the probe). A delivered attempt
    /// closes an open circuit, whatever let it through: the endpoint answers.
    pub fn record(
        &mut self,
        policy: &Policy,
        delivered: bool,
        probe: bool,
        now: Instant,
    ) -> Option<Transition> {
        self.last_used = now;
        if now.saturating_duration_since(self.window_start) >= policy.window {
            self.restart_window(now);
        }
        self.attempts += 1;
        if delivered {
            self.consecutive = 0;
            return self.open.take().map(|_| {
                self.restart_window(now);
                Transition::Closed
            });
        }
        self.failures += 1;
        self.consecutive = self.consecutive.saturating_add(1);
        if let Some(open) = &mut self.open {
            if probe {
                open.interval = (open.interval * 2).min(policy.max_probe_interval);
                open.probe_at = now + open.interval;
            }
            // Otherwise an attempt already in flight when it opened: the probes tell, not it.
            return None;
        }
        if !self.trips(policy) {
            return None;
        }
        self.open = Some(Open {
            probe_at: now + policy.probe_interval,
            interval: policy.probe_interval,
            released_until: None,
        });
        self.restart_window(now);
        Some(Transition::Opened)
    }

    fn trips(&self, policy: &Policy) -> bool {
        let ratio_reached = self.attempts >= policy.min_attempts
            && f64::from(self.failures) >= policy.failure_ratio * f64::from(self.attempts);
        policy.enabled && (self.consecutive >= policy.failures || ratio_reached)
    }

    fn restart_window(&mut self, now: Instant) {
        self.window_start = now;
        self.attempts = 0;
        self.failures = 0;
    }

    /// Closed and unused for `idle_for`: nothing is lost by forgetting it. An open circuit is
    /// never forgotten.
    pub fn forgettable(&self, now: Instant, idle_for: Duration) -> bool {
        self.open.is_none() && now.saturating_duration_since(self.last_used) >= idle_for
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn policy() -> Policy {
        Policy {
            enabled: true,
            failures: 5,
            failure_ratio: 0.5,
            min_attempts: 10,
            window: 60 * SECOND,
            probe_interval: 5 * SECOND,
            max_probe_interval: 20 * SECOND,
        }
    }

    fn fail(breaker: &mut Breaker, times: u32, now: Instant) -> Vec<Transition> {
        (0..times)
            .filter_map(|_| breaker.record(&policy(), false, false, now))
            .collect()
    }

    #[test]
    fn consecutive_failures_open_it_and_a_delivery_resets_the_run() {
        let start = Instant::now();
        let mut breaker = Breaker::new(start);
        assert!(fail(&mut breaker, 4, start).is_empty());
        assert_eq!(breaker.record(&policy(), true, false, start), None);
        assert!(
            fail(&mut breaker, 4, start).is_empty(),
            "the run began again"
        );
        assert_eq!(fail(&mut breaker, 1, start), [Transition::Opened]);
        assert!(breaker.is_open());
        assert_eq!(breaker.admit(start), Admit::Park);
    }

    #[test]
    fn a_failure_ratio_over_a_window_opens_it() {
        let start = Instant::now();
        let mut breaker = Breaker::new(start);
        // Alternating: never five in a row, but half of them failed.
        let mut transitions = Vec::new();
        for i in 0..10 {
            transitions.extend(breaker.record(&policy(), i % 2 == 0, false, start));
        }
        assert_eq!(
            transitions,
            [Transition::Opened],
            "the tenth attempt makes the minimum"
        );

        let mut breaker = Breaker::new(start);
        for i in 0..9 {
            breaker.record(&policy(), i % 2 == 0, false, start);
        }
        let later = start + 61 * SECOND;
        assert_eq!(
            breaker.record(&policy(), false, false, later),
            None,
            "the window restarted: one attempt in it"
        );
    }

    #[test]
    fn an_open_circuit_lets_one_probe_through_per_interval_and_backs_off() {
        let start = Instant::now();
        let mut breaker = Breaker::new(start);
        fail(&mut breaker, 5, start);
        assert!(!breaker.wants_probe(start));
        assert_eq!(breaker.admit(start + 4 * SECOND), Admit::Park);
        let first = start + 5 * SECOND;
        assert!(breaker.wants_probe(first));
        breaker.probe_released(first, SECOND);
        assert!(!breaker.wants_probe(first), "one on its way");
        assert!(
            breaker.wants_probe(first + SECOND),
            "it did not come here (another worker took it): another"
        );
        assert_eq!(breaker.admit(first), Admit::Probe);
        assert_eq!(breaker.admit(first), Admit::Park, "one probe per interval");
        // An attempt in flight before it opened fails: no effect on the probes.
        assert_eq!(breaker.record(&policy(), false, false, first), None);
        // The probe fails: the next one waits twice as long.
        assert_eq!(breaker.record(&policy(), false, true, first), None);
        assert_eq!(breaker.admit(first + 9 * SECOND), Admit::Park);
        let second = first + 10 * SECOND;
        assert_eq!(breaker.admit(second), Admit::Probe);
        breaker.record(&policy(), false, true, second);
        let third = second + 20 * SECOND;
        assert_eq!(breaker.admit(third), Admit::Probe);
        breaker.record(&policy(), false, true, third);
        assert_eq!(
            breaker.admit(third + 20 * SECOND),
            Admit::Probe,
            "capped at max_probe_interval"
        );
    }

    #[test]
    fn a_delivered_probe_closes_it_with_a_fresh_count() {
        let start = Instant::now();
        let mut breaker = Breaker::new(start);
        fail(&mut breaker, 5, start);
        let probe = start + 5 * SECOND;
        assert_eq!(breaker.admit(probe), Admit::Probe);
        assert_eq!(
            breaker.record(&policy(), true, true, probe),
            Some(Transition::Closed)
        );
        assert_eq!(breaker.admit(probe), Admit::Attempt);
        assert!(!breaker.wants_probe(probe));
        assert!(fail(&mut breaker, 4, probe).is_empty(), "counted anew");
    }

    #[test]
    fn a_disabled_breaker_never_opens() {
        let start = Instant::now();
        let mut breaker = Breaker::new(start);
        let off = Policy {
            enabled: false,
            ..policy()
        };
        for _ in 0..100 {
            assert_eq!(breaker.record(&off, false, false, start), None);
        }
        assert_eq!(breaker.admit(start), Admit::Attempt);
    }

    #[test]
    fn only_an_idle_closed_circuit_is_forgettable() {
        let start = Instant::now();
        let idle = 600 * SECOND;
        let mut breaker = Breaker::new(start);
        assert!(!breaker.forgettable(start, idle));
        assert!(breaker.forgettable(start + idle, idle));
        fail(&mut breaker, 5, start);
        assert!(!breaker.forgettable(start + 10 * idle, idle));
    }
}
