//! Trickle batching: small batches wait up to `kafka.idle_flush_ms` and go to librdkafka together.
//!
//! librdkafka sends one produce request per partition per `linger.ms`. A host whose files trickle
//! (a line here and there, at their own moments) would send one request per partition every linger
//! (20 ms): dozens per second per host, multiplied by the fleet, for a few lines each. A long linger
//! would fix that but also holds big batches back while the queue fills (and the queue bounds the
//! memory). So the long wait is the agent's, and only for small batches: a batch of fewer than
//! [`SMALL_BATCH_LINES`] lines is held; held lines go out together when the oldest has waited
//! `idle_flush`, when [`HOLD_MAX_LINES`] or [`HOLD_MAX_BYTES`] are held, or before any big batch
//! (so one file's lines stay in order). A trickling host then sends about one request per partition per `idle_flush`, and a
//! line waits at most `idle_flush` + linger more than it would otherwise.

use tokio::time::{Duration, Instant};

use super::Batch;

/// Batches with fewer lines than this are trickle: held (a busy file's batches are thousands).
pub const SMALL_BATCH_LINES: usize = 256;
/// Held lines that make the held batches go at once.
pub const HOLD_MAX_LINES: usize = 8_192;
/// Held bytes that make the held batches go at once: a batch of few lines may carry long ones
/// (up to `max_line_bytes` each), and the lines bound alone would let 8,192 of them wait.
pub const HOLD_MAX_BYTES: usize = 4 << 20;

/// The small batches waiting, oldest first.
#[derive(Default)]
pub struct Held {
    batches: Vec<Batch>,
    lines: usize,
    bytes: usize,
    since: Option<Instant>,
}

impl Held {
    /// Takes `batch`; returns what must be produced now, in order (empty when `batch` is held).
    pub fn offer(&mut self, batch: Batch, idle_flush: Duration) -> Vec<Batch> {
        if idle_flush.is_zero() || batch.lines.len() >= SMALL_BATCH_LINES {
            let mut out = self.take();
            out.push(batch);
            return out;
        }
        self.lines += batch.lines.len();
        self.bytes += batch.lines.iter().map(|l| l.len()).sum::<usize>();
        self.batches.push(batch);
        self.since.get_or_insert_with(Instant::now);
        if self.lines >= HOLD_MAX_LINES || self.bytes >= HOLD_MAX_BYTES {
            return self.take();
        }
        Vec::new()
    }

    /// When the held batches are due (`None`: nothing held).
    pub fn due(&self, idle_flush: Duration) -> Option<Instant> {
        self.since.map(|s| s + idle_flush)
    }

    /// Everything held, oldest first.
    pub fn take(&mut self) -> Vec<Batch> {
        self.lines = 0;
        self.bytes = 0;
        self.since = None;
        // The next hold is sized like this one: growing the list batch by batch from empty was a
        // realloc every few batches (2 % of idle10000's samples, ~250 batches held per flush).
        let next = Vec::with_capacity(self.batches.len());
        std::mem::replace(&mut self.batches, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Route;
    use crate::state::progress::{FileProgress, Mark};
    use bytes::Bytes;
    use std::sync::Arc;

    fn batch(lines: usize) -> Batch {
        let progress = FileProgress::new(Mark::default());
        let file = Arc::new(tempfile::tempfile().unwrap());
        Batch {
            route: Arc::new(Route {
                topic: "t".into(),
                key: None,
                headers: vec![],
                partition_seed: 0,
                path: "/x".into(),
                counters: Default::default(),
            }),
            ticket: progress.issue(
                Mark {
                    offset: lines as u64 * 2,
                    tail_hash: Default::default(),
                },
                vec![],
                file,
                lines as u64 * 2,
            ),
            lines: vec![Bytes::from_static(b"x\n"); lines],
            headers: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn small_batches_wait_for_the_idle_flush_and_go_together() {
        let flush = Duration::from_secs(1);
        let mut held = Held::default();
        let start = Instant::now();
        assert!(held.offer(batch(1), flush).is_empty());
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(held.offer(batch(3), flush).is_empty());
        // Due one idle flush after the *first* held batch, not the last.
        assert_eq!(held.due(flush), Some(start + flush));
        let out = held.take();
        assert_eq!(
            out.iter().map(|b| b.lines.len()).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(held.due(flush), None);
    }

    #[test]
    fn a_big_batch_goes_at_once_after_what_was_held() {
        let flush = Duration::from_secs(1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _g = rt.enter();
        let mut held = Held::default();
        assert!(held.offer(batch(2), flush).is_empty());
        let out = held.offer(batch(SMALL_BATCH_LINES), flush);
        assert_eq!(
            out.iter().map(|b| b.lines.len()).collect::<Vec<_>>(),
            [2, SMALL_BATCH_LINES],
            "held lines go first: one file's lines stay in order"
        );
        assert_eq!(held.due(flush), None);
    }

    /// One long line per batch (a logger of big JSON documents): few lines, many bytes. Held by the
    /// line count alone, 8,192 lines of 1 MiB would sit in memory.
    #[tokio::test]
    async fn held_batches_go_once_their_bytes_reach_the_bound() {
        let flush = Duration::from_secs(1);
        let mut held = Held::default();
        let big = Bytes::from(vec![b'x'; 1 << 20]);
        let mut most = 0;
        for _ in 0..64 {
            let mut b = batch(1);
            b.lines = vec![big.clone()];
            held.offer(b, flush);
            most = most.max(held.bytes);
        }
        assert!(
            most <= HOLD_MAX_BYTES,
            "{most} bytes held, more than the {HOLD_MAX_BYTES} bound"
        );
    }

    #[test]
    fn held_lines_go_once_enough_are_held_and_a_zero_flush_holds_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _g = rt.enter();
        let flush = Duration::from_secs(1);
        let mut held = Held::default();
        let per = SMALL_BATCH_LINES - 1;
        let mut sent = 0;
        for _ in 0..HOLD_MAX_LINES / per + 1 {
            sent += held.offer(batch(per), flush).len();
        }
        assert!(sent > 0, "{HOLD_MAX_LINES} held lines did not go out");
        let out = held.offer(batch(1), Duration::ZERO);
        assert_eq!(out.last().map(|b| b.lines.len()), Some(1));
        assert!(held.take().is_empty(), "a zero idle flush held a batch");
    }
}
