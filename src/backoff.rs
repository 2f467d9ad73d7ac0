//! Capped exponential backoff with jitter, for probing a dependency that is down (the broker,
//! the database) and for spacing the tries of a message that keeps failing. Pure: the caller
//! sleeps.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `first` up to `cap`, each drawn from its upper half ("equal
/// jitter"), so that workers that lost a dependency together do not all come back to it in
/// the same instant, and no delay falls below half its step.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    step: Duration,
}

impl Backoff {
    /// `first` must be non-zero and at most `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        assert!(
            !first.is_zero() && first <= cap,
            "backoff from {first:?} to {cap:?}"
        );
        Self {
            first,
            cap,
            step: first,
        }
    }

    /// Probing a dependency: 100 ms doubling to 30 s.
    pub fn for_outages() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(30))
    }

    /// The next delay, in `[step / 2, step]`; the step doubles after each call, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(self.cap);
        jittered(step, rand::rng().random())
    }

    /// Back to the first step, after the dependency answered.
    pub fn reset(&mut self) {
        self.step = self.first;
    }
}

/// The `n`th delay (1-based) of a backoff from `first` to `cap`, without jitter.
pub fn step(first: Duration, cap: Duration, n: u32) -> Duration {
    let doublings = n.saturating_sub(1).min(31);
    first.saturating_mul(1 << doublings).min(cap)
}

/// `step` scaled into its upper half by `unit` in `[0, 1)`.
fn jittered(step: Duration, unit: f64) -> Duration {
    step / 2 + step.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_within_their_upper_half_up_to_the_cap() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS);
        for step in [100, 200, 400, 800, 1000, 1000, 1000] {
            let delay = backoff.next_delay();
            let step = step * MS;
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= 100 * MS, "reset starts over");
    }

    #[test]
    fn jitter_spans_the_upper_half() {
        assert_eq!(jittered(100 * MS, 0.0), 50 * MS);
        assert_eq!(jittered(100 * MS, 0.5), 75 * MS);
        assert_eq!(jittered(100 * MS, 1.0), 100 * MS);
        assert_eq!(jittered(100 * MS, 7.0), 100 * MS, "clamped");
    }

    #[test]
    fn steps_without_jitter_never_overflow() {
        assert_eq!(step(100 * MS, 5000 * MS, 1), 100 * MS);
        assert_eq!(step(100 * MS, 5000 * MS, 3), 400 * MS);
        assert_eq!(step(100 * MS, 5000 * MS, 10), 5000 * MS);
        assert_eq!(step(100 * MS, 5000 * MS, u32::MAX), 5000 * MS);
        assert_eq!(step(100 * MS, 5000 * MS, 0), 100 * MS);
    }

    #[test]
    #[should_panic(expected = "backoff from")]
    fn a_zero_first_step_is_refused() {
        let _ = Backoff::new(Duration::ZERO, MS);
    }
}
