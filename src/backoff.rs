//! The retry schedule of every reconnect and retry loop (etcd watch, status lease, Kafka metadata):
//! exponential from `min` to `max`, each wait drawn between half the step and the step, so that a
//! fleet whose etcd or Kafka comes back does not reconnect in lockstep, and no wait exceeds `max`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

pub struct Backoff {
    min: Duration,
    max: Duration,
    steps: ExponentialBackoff,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            steps: Self::steps(min, max),
        }
    }

    // backon's jitter adds up to one more step: halving both ends keeps each wait in [step/2, step).
    fn steps(min: Duration, max: Duration) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(min / 2)
            .with_max_delay((max / 2).max(min / 2))
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// How long to wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        self.steps.next().unwrap_or(self.max).min(self.max)
    }

    /// Back to `min`: the last attempt worked.
    pub fn reset(&mut self) {
        self.steps = Self::steps(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_max_with_jitter_and_reset_to_the_min() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(min, max);
        let first = b.next_wait();
        assert!(first >= min / 2 && first <= min, "{first:?}");
        let waits: Vec<Duration> = (0..20).map(|_| b.next_wait()).collect();
        assert!(waits.iter().all(|w| *w <= max), "{waits:?}");
        assert!(waits[10..].iter().all(|w| *w >= max / 2), "{waits:?}");
        b.reset();
        assert!(b.next_wait() <= min);
    }

    #[test]
    fn waits_are_jittered() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let waits: std::collections::HashSet<Duration> = (0..10).map(|_| b.next_wait()).collect();
        assert!(waits.len() > 1, "ten equal waits: {waits:?}");
    }
}
