//! Acknowledged progress of one file: the contiguous prefix of delivered batches.
//!
//! A tailer registers every batch it sends with the batch's end offset; the Kafka delivery callback
//! completes batches in whatever order the partitions answer. The acknowledged offset only moves over a
//! prefix of completed batches, so it never passes a line that Kafka has not confirmed (vector#13714).
//!
//! Each claim of a file gets its own `FileProgress` (a generation): after a truncation or a restart of an
//! entry, late completions of the old generation cannot move the new one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// A position the checkpoint may record: an offset and the hash of the bytes just before it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    pub offset: u64,
    pub tail_hash: String,
}

#[derive(Debug)]
struct Pending {
    mark: Mark,
    done: bool,
}

#[derive(Debug, Default)]
struct State {
    acked: Mark,
    first_seq: u64,
    pending: VecDeque<Pending>,
}

#[derive(Debug, Default)]
pub struct FileProgress {
    state: Mutex<State>,
    changed: Notify,
    /// Last size the tailer saw, for the lag metric (size − acknowledged offset).
    size: AtomicU64,
}

impl FileProgress {
    pub fn new(start: Mark) -> Arc<FileProgress> {
        Arc::new(FileProgress {
            state: Mutex::new(State {
                acked: start,
                ..State::default()
            }),
            changed: Notify::new(),
            size: AtomicU64::new(0),
        })
    }

    pub fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Relaxed);
    }

    /// Bytes in the file not yet acknowledged.
    pub fn lag(&self) -> u64 {
        self.size
            .load(Ordering::Relaxed)
            .saturating_sub(self.acked_offset())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue half-updated in a way that matters more
        // than losing the agent, so poisoning is ignored rather than propagated into every tailer.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a batch ending at `mark`; returns its sequence number for [`FileProgress::complete`].
    pub fn register(&self, mark: Mark) -> u64 {
        let mut st = self.lock();
        let seq = st.first_seq + st.pending.len() as u64;
        st.pending.push_back(Pending { mark, done: false });
        seq
    }

    /// Marks batch `seq` delivered and advances the acknowledged prefix.
    pub fn complete(&self, seq: u64) {
        let mut st = self.lock();
        let Some(idx) = seq.checked_sub(st.first_seq) else {
            return;
        };
        if let Some(p) = st.pending.get_mut(idx as usize) {
            p.done = true;
        }
        let mut advanced = false;
        while st.pending.front().is_some_and(|p| p.done) {
            let p = st.pending.pop_front().expect("front exists");
            st.first_seq += 1;
            // Marks are registered in file order; should one ever come out of order, the recorded
            // offset still never moves back over bytes already acknowledged.
            if p.mark.offset >= st.acked.offset {
                st.acked = p.mark;
            }
            advanced = true;
        }
        let drained = st.pending.is_empty();
        drop(st);
        if advanced || drained {
            self.changed.notify_waiters();
        }
    }

    /// Advances directly when nothing is in flight (bytes consumed without records, e.g. skipped lines).
    /// With batches in flight the mark is queued behind them like any batch.
    pub fn advance_without_records(&self, mark: Mark) {
        let seq = self.register(mark);
        self.complete(seq);
    }

    pub fn acked(&self) -> Mark {
        self.lock().acked.clone()
    }

    pub fn acked_offset(&self) -> u64 {
        self.lock().acked.offset
    }

    pub fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    /// Waits until every registered batch is delivered.
    pub async fn drained(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Delivery bookkeeping shared by the records of one batch: the last one delivered completes the batch.
#[derive(Debug)]
pub struct Ticket {
    progress: Arc<FileProgress>,
    seq: u64,
    remaining: AtomicUsize,
    pub records: usize,
    pub bytes: u64,
}

impl Ticket {
    pub fn new(progress: Arc<FileProgress>, seq: u64, records: usize, bytes: u64) -> Arc<Ticket> {
        Arc::new(Ticket {
            progress,
            seq,
            remaining: AtomicUsize::new(records),
            records,
            bytes,
        })
    }

    /// One record of the batch is settled (delivered, or given up by policy). Returns true when it was the
    /// last one and the batch completed.
    pub fn record_settled(&self) -> bool {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.progress.complete(self.seq);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(offset: u64) -> Mark {
        Mark {
            offset,
            tail_hash: format!("h{offset}"),
        }
    }

    #[test]
    fn out_of_order_completions_advance_only_the_contiguous_prefix() {
        let p = FileProgress::new(mark(0));
        let a = p.register(mark(10));
        let b = p.register(mark(20));
        let c = p.register(mark(30));
        p.complete(c);
        assert_eq!(p.acked_offset(), 0);
        p.complete(a);
        assert_eq!(p.acked(), mark(10));
        p.complete(b);
        assert_eq!(p.acked(), mark(30));
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn stale_or_repeated_completions_are_ignored() {
        let p = FileProgress::new(mark(5));
        let a = p.register(mark(10));
        p.complete(a);
        p.complete(a);
        p.complete(99);
        assert_eq!(p.acked_offset(), 10);
    }

    #[test]
    fn ticket_completes_its_batch_on_the_last_record() {
        let p = FileProgress::new(mark(0));
        let seq = p.register(mark(100));
        let t = Ticket::new(p.clone(), seq, 3, 100);
        assert!(!t.record_settled());
        assert!(!t.record_settled());
        assert_eq!(p.acked_offset(), 0);
        assert!(t.record_settled());
        assert_eq!(p.acked_offset(), 100);
    }

    #[test]
    fn records_without_lines_queue_behind_in_flight_batches() {
        let p = FileProgress::new(mark(0));
        let a = p.register(mark(10));
        p.advance_without_records(mark(12));
        assert_eq!(p.acked_offset(), 0);
        p.complete(a);
        assert_eq!(p.acked_offset(), 12);
    }

    #[test]
    fn the_acknowledged_offset_never_moves_back() {
        let p = FileProgress::new(mark(0));
        let a = p.register(mark(18));
        let b = p.register(mark(13));
        p.complete(a);
        p.complete(b);
        assert_eq!(p.acked(), mark(18));
    }

    #[tokio::test]
    async fn drained_wakes_when_the_last_batch_completes() {
        let p = FileProgress::new(mark(0));
        let a = p.register(mark(10));
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.drained().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        p.complete(a);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("drained() hung after the last completion")
            .unwrap();
    }
}
