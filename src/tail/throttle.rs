//! `max_bytes_per_s`: a token bucket shared by every file of an entry. Reads wait for tokens; nothing
//! is ever dropped: unread bytes wait in the file (the lag gauge shows them) and the time spent
//! waiting is counted (`logagent_throttled_seconds_total{topic}`).
//!
//! The bucket holds at most one second of the rate, so after an idle spell a burst reads at most one
//! second's worth before the rate applies again.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::telemetry::RecordCounters;

#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    bucket: Mutex<Bucket>,
    counters: RecordCounters,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Throttle {
    pub fn new(bytes_per_s: u64, counters: RecordCounters) -> Throttle {
        Throttle {
            rate: bytes_per_s.max(1) as f64,
            bucket: Mutex::new(Bucket {
                tokens: bytes_per_s.max(1) as f64,
                at: Instant::now(),
            }),
            counters,
        }
    }

    /// Waits until at least one byte may be read, then grants up to `want` bytes (0 only when
    /// `want` is 0 or `cancel` fired). Bytes granted but not read go back with [`Throttle::refund`].
    pub async fn take(&self, want: u64, cancel: &CancellationToken) -> u64 {
        if want == 0 {
            return 0;
        }
        let mut waited = Duration::ZERO;
        let granted = loop {
            let wait = {
                let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                b.tokens =
                    (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.rate);
                b.at = now;
                if b.tokens >= 1.0 {
                    let granted = (b.tokens.floor() as u64).min(want);
                    b.tokens -= granted as f64;
                    break granted;
                }
                // Until a useful amount (a read's worth, at most a tenth of a second's) is back:
                // waking per byte would cost more than the reading.
                let need = (want as f64).min(self.rate / 10.0).max(1.0) - b.tokens;
                Duration::from_secs_f64(need / self.rate)
            };
            tokio::select! {
                _ = cancel.cancelled() => break 0,
                _ = tokio::time::sleep(wait) => waited += wait,
            }
        };
        if !waited.is_zero() {
            self.counters.throttled_seconds.inc_by(waited.as_secs_f64());
        }
        granted
    }

    /// Returns tokens granted by [`Throttle::take`] that the read did not use.
    pub fn refund(&self, unused: u64) {
        if unused > 0 {
            let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
            b.tokens = (b.tokens + unused as f64).min(self.rate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On virtual time: 10 KiB/s lets 50 KiB through in about 4 s (the first second's worth is
    /// the full bucket), and the wait is counted.
    #[tokio::test(start_paused = true)]
    async fn reads_are_paced_to_the_rate_and_the_wait_is_counted() {
        let counters = RecordCounters::default();
        let t = Throttle::new(10 * 1024, counters.clone());
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let mut got = 0;
        while got < 50 * 1024 {
            got += t.take(4096, &cancel).await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!((3.9..=4.2).contains(&elapsed), "took {elapsed}s");
        let waited = counters.throttled_seconds.get();
        assert!((3.8..=4.2).contains(&waited), "counted {waited}s");
        t.refund(100_000);
        assert_eq!(
            t.take(1 << 30, &cancel).await,
            10 * 1024,
            "the bucket holds one second"
        );
        assert_eq!(t.take(0, &cancel).await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_grants_nothing() {
        let t = Throttle::new(1024, RecordCounters::default());
        let cancel = CancellationToken::new();
        assert_eq!(t.take(1024, &cancel).await, 1024);
        cancel.cancel();
        assert_eq!(t.take(1024, &cancel).await, 0);
    }
}
