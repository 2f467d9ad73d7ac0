//! The retry schedule: the delays between attempts, validated once at config load.

use std::time::Duration;

use serde::Deserialize;

/// Delays before attempts 2, 3, ...: `delays[i]` is the wait after the failure of attempt `i + 1`.
/// Guaranteed non-empty, non-zero (at millisecond precision, RabbitMQ's TTL unit), at most
/// `MAX_DELAY` and non-decreasing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<humantime_serde::Serde<Duration>>")]
pub struct RetrySchedule(Vec<Duration>);

/// The longest delay a schedule may hold. A retry weeks later helps nobody, and RabbitMQ
/// refuses a queue TTL somewhere past a year (10,000 h declares, 100,000 h does not), which
/// would surface only at start as a broker error about a queue.
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("retry_schedule must have at least one delay")]
    Empty,
    #[error("retry_schedule delay {0} is shorter than 1ms")]
    TooShort(usize),
    #[error("retry_schedule delay {0} is longer than 30 days")]
    TooLong(usize),
    #[error("retry_schedule must not decrease (delay {0} is shorter than the one before)")]
    Decreasing(usize),
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Result<Self, ScheduleError> {
        if delays.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if let Some(i) = delays.iter().position(|d| d.as_millis() == 0) {
            return Err(ScheduleError::TooShort(i + 1));
        }
        if let Some(i) = delays.iter().position(|d| *d > MAX_DELAY) {
            return Err(ScheduleError::TooLong(i + 1));
        }
        if let Some(i) = delays.windows(2).position(|w| w[1] < w[0]) {
            return Err(ScheduleError::Decreasing(i + 2));
        }
        Ok(Self(delays))
    }

    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// The wait after attempt `attempt` (1-based) of a series failed, or `None` when that was
    /// the last attempt and the delivery is Failed.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        self.0.get(index).copied()
    }

    /// The shortest delay of the schedule that waits at least `wait`, or its longest.
    pub fn tier_at_least(&self, wait: Duration) -> Duration {
        let longest = self.0[self.0.len() - 1];
        self.0
            .iter()
            .copied()
            .find(|d| *d >= wait)
            .unwrap_or(longest)
    }

    /// The distinct delays: one broker queue each.
    pub fn tiers(&self) -> Vec<Duration> {
        let mut tiers = self.0.clone();
        tiers.dedup();
        tiers
    }
}

impl TryFrom<Vec<humantime_serde::Serde<Duration>>> for RetrySchedule {
    type Error = ScheduleError;

    fn try_from(delays: Vec<humantime_serde::Serde<Duration>>) -> Result<Self, Self::Error> {
        Self::new(delays.into_iter().map(|d| d.into_inner()).collect())
    }
}

/// How far retries are spread around each delay, as a fraction of it: a delay `d` becomes one
/// of [`SPREAD_STEPS`] delays evenly spaced from `d × (1 − jitter)` to `d × (1 + jitter)`, so
/// deliveries that failed together do not all come back in the same second. 0 to 0.5; 0 keeps
/// each delay exact.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Jitter(f64);

/// Delays each retry delay is spread over (one broker queue each): the more, the smoother a
/// burst's return, at a quorum queue per step and tier.
pub const SPREAD_STEPS: u32 = 5;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("retry_jitter must be between 0 and 0.5, not {0}")]
pub struct JitterError(f64);

impl Jitter {
    pub const NONE: Jitter = Jitter(0.0);

    pub fn new(fraction: f64) -> Result<Self, JitterError> {
        if (0.0..=0.5).contains(&fraction) {
            Ok(Self(fraction))
        } else {
            Err(JitterError(fraction))
        }
    }

    /// The delays `delay` is spread over, ascending and distinct (at millisecond precision,
    /// RabbitMQ's TTL unit), never below 1 ms.
    pub fn spread(self, delay: Duration) -> Vec<Duration> {
        let steps = SPREAD_STEPS - 1;
        let mut delays: Vec<Duration> = (0..=steps)
            .map(|step| {
                let factor = 1.0 - self.0 + 2.0 * self.0 * f64::from(step) / f64::from(steps);
                let millis = (delay.as_secs_f64() * 1000.0 * factor).round().max(1.0);
                Duration::from_millis(millis as u64)
            })
            .collect();
        delays.dedup();
        delays
    }
}

impl TryFrom<f64> for Jitter {
    type Error = JitterError;

    fn try_from(fraction: f64) -> Result<Self, Self::Error> {
        Self::new(fraction)
    }
}

/// Name of the queue holding jobs that wait `delay`, e.g. `1m`, `2h`, `200ms`. Named after the
/// TTL so that a changed schedule declares new queues instead of clashing with old arguments.
pub fn tier_label(delay: Duration) -> String {
    humantime::format_duration(delay)
        .to_string()
        .replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().copied().map(Duration::from_millis).collect()
    }

    #[test]
    fn rejects_a_delay_past_thirty_days() {
        assert!(RetrySchedule::new(vec![MAX_DELAY]).is_ok());
        assert_eq!(
            RetrySchedule::new(vec![
                Duration::from_secs(60),
                MAX_DELAY + Duration::from_secs(1)
            ]),
            Err(ScheduleError::TooLong(2))
        );
    }

    #[test]
    fn rejects_empty_zero_and_decreasing() {
        assert_eq!(RetrySchedule::new(vec![]), Err(ScheduleError::Empty));
        assert_eq!(
            RetrySchedule::new(ms(&[100, 0])),
            Err(ScheduleError::TooShort(2))
        );
        assert_eq!(
            RetrySchedule::new(vec![Duration::from_micros(500)]),
            Err(ScheduleError::TooShort(1))
        );
        assert_eq!(
            RetrySchedule::new(ms(&[100, 300, 200])),
            Err(ScheduleError::Decreasing(3))
        );
    }

    #[test]
    fn default_schedule_gives_five_attempts() {
        let s = RetrySchedule::new(ms(&[60_000, 300_000, 1_800_000, 7_200_000])).expect("valid");
        assert_eq!(s.delay_after(1), Some(Duration::from_secs(60)));
        assert_eq!(s.delay_after(4), Some(Duration::from_secs(7200)));
        assert_eq!(s.delay_after(5), None);
        assert_eq!(s.delay_after(0), None);
    }

    #[test]
    fn equal_delays_share_a_tier() {
        let s = RetrySchedule::new(ms(&[200, 200, 400])).expect("valid");
        assert_eq!(s.tiers(), ms(&[200, 400]));
    }

    #[test]
    fn every_valid_schedule_walks_its_delays_in_order() {
        // Exhaustive over small schedules: a property test without a framework.
        for a in 1..4u64 {
            for b in a..5 {
                for c in b..6 {
                    let s = RetrySchedule::new(ms(&[a, b, c])).expect("valid");
                    let walked: Vec<_> = (1..).map_while(|n| s.delay_after(n)).collect();
                    assert_eq!(walked, ms(&[a, b, c]));
                    assert!(s.tiers().windows(2).all(|w| w[0] < w[1]));
                }
            }
        }
    }

    #[test]
    fn jitter_spreads_a_delay_evenly_within_its_bounds() {
        let jitter = Jitter::new(0.1).expect("valid");
        assert_eq!(
            jitter.spread(Duration::from_secs(60)),
            [54, 57, 60, 63, 66].map(Duration::from_secs)
        );
        assert_eq!(
            jitter.spread(Duration::from_millis(200)),
            ms(&[180, 190, 200, 210, 220])
        );
        // Steps that round to the same millisecond are one queue; none is below 1 ms.
        assert_eq!(jitter.spread(Duration::from_millis(1)), ms(&[1]));
        assert_eq!(Jitter::NONE.spread(Duration::from_secs(60)), ms(&[60_000]));
        assert_eq!(
            Jitter::new(0.5)
                .expect("valid")
                .spread(Duration::from_secs(4)),
            ms(&[2000, 3000, 4000, 5000, 6000])
        );
    }

    #[test]
    fn jitter_is_a_fraction_up_to_a_half() {
        assert!(Jitter::new(0.0).is_ok());
        assert!(Jitter::new(0.5).is_ok());
        for bad in [-0.1, 0.51, f64::NAN, f64::INFINITY] {
            assert!(Jitter::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tier_labels_read_like_the_design() {
        assert_eq!(tier_label(Duration::from_secs(60)), "1m");
        assert_eq!(tier_label(Duration::from_secs(1800)), "30m");
        assert_eq!(tier_label(Duration::from_secs(7200)), "2h");
        assert_eq!(tier_label(Duration::from_millis(200)), "200ms");
        assert_eq!(tier_label(Duration::from_millis(1500)), "1s500ms");
    }
}
