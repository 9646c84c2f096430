//! Acknowledged progress of one file: the contiguous prefix of delivered batches.
//!
//! A tailer registers every batch it sends with the batch's end offset; the Kafka delivery callback
//! completes batches in whatever order the partitions answer. The acknowledged offset only moves over a
//! prefix of completed batches, so it never passes a line that Kafka has not confirmed (vector#13714).
//!
//! Each claim of a file gets its own `FileProgress` (a generation): after a truncation or a restart of an
//! entry, late completions of the old generation cannot move the new one.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::state::identity::{tail_hash, FileKey, TailHash};

/// Files whose progress moved (acknowledged offset or size) since the registry last looked: its
/// checkpoint pass visits these instead of every record (10,000 idle files, a few changing).
#[derive(Debug, Default)]
pub struct Moved(Mutex<Vec<FileKey>>);

impl Moved {
    pub fn take(&self) -> Vec<FileKey> {
        let mut keys = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Left with the room it had: the tailers push about as many keys every interval, and
        // growing the list again from empty was a reallocation on their path every few pushes.
        let room = keys.capacity();
        std::mem::replace(&mut *keys, Vec::with_capacity(room))
    }

    pub fn push(&self, key: FileKey) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(key);
    }
}

/// A position the checkpoint may record: an offset and the hash of the bytes just before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    pub offset: u64,
    pub tail_hash: TailHash,
}

#[derive(Debug)]
struct Pending {
    mark: Mark,
    done: bool,
    /// How many of the batch's records are settled (none for bytes consumed without records).
    records: Option<Arc<Records>>,
}

#[derive(Debug, Default)]
struct State {
    acked: Mark,
    /// Bumped whenever `acked` moves: the checkpointer asks "changed since version v?" of
    /// thousands of idle files every interval, without cloning their marks.
    version: u64,
    first_seq: u64,
    pending: VecDeque<Pending>,
}

#[derive(Debug, Default)]
pub struct FileProgress {
    state: Mutex<State>,
    changed: Notify,
    /// Last size the tailer saw, for the lag metric (size − acknowledged offset).
    size: AtomicU64,
    /// Where this file is listed when its progress moves, and its key there.
    moved: Option<(Arc<Moved>, FileKey)>,
    /// Listed in `moved` and not yet looked at: listed once however often it moves meanwhile.
    listed: AtomicBool,
}

impl FileProgress {
    pub fn new(start: Mark) -> Arc<FileProgress> {
        Arc::new(Self::starting_at(start, None))
    }

    /// A progress that lists `key` in `moved` whenever it moves (the registry's files).
    pub fn listed_in(start: Mark, moved: Arc<Moved>, key: FileKey) -> Arc<FileProgress> {
        let p = Self::starting_at(start, Some((moved, key)));
        p.note_moved();
        Arc::new(p)
    }

    fn starting_at(start: Mark, moved: Option<(Arc<Moved>, FileKey)>) -> FileProgress {
        FileProgress {
            state: Mutex::new(State {
                acked: start,
                ..State::default()
            }),
            moved,
            ..FileProgress::default()
        }
    }

    fn note_moved(&self) {
        if let Some((moved, key)) = &self.moved {
            if !self.listed.swap(true, Ordering::AcqRel) {
                moved.push(*key);
            }
        }
    }

    /// Taken off the moved list: a later move lists it again. Call before reading its state.
    pub fn unlist(&self) {
        self.listed.store(false, Ordering::Release);
    }

    pub fn set_size(&self, size: u64) {
        if self.size.swap(size, Ordering::Relaxed) != size {
            self.note_moved();
        }
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
        st.pending.push_back(Pending {
            mark,
            done: false,
            records: None,
        });
        seq
    }

    /// Registers a batch of records ending at `mark` and returns the ticket its records settle.
    /// `ends[i]` is the file offset just past record `i`; `file` is read (32 bytes) only when a batch
    /// is cut short by a stop, to mark where its delivered records end.
    pub fn issue(
        self: &Arc<Self>,
        mark: Mark,
        ends: Vec<u64>,
        file: Arc<File>,
        bytes: u64,
    ) -> Arc<Ticket> {
        self.enqueue(Some(mark), ends, Some(file), bytes)
    }

    /// A ticket for `records` records that stand for no file bytes (host-metric points): their
    /// delivery settles it like any batch, and [`FileProgress::in_flight`] counts it until then, but
    /// there is no offset to checkpoint.
    pub fn issue_unbacked(self: &Arc<Self>, records: usize, bytes: u64) -> Arc<Ticket> {
        self.enqueue(None, vec![0; records], None, bytes)
    }

    /// Queues a batch whose completion moves the acknowledged mark to `mark` (`None`: leaves it
    /// where it is) and returns its ticket.
    fn enqueue(
        self: &Arc<Self>,
        mark: Option<Mark>,
        ends: Vec<u64>,
        file: Option<Arc<File>>,
        bytes: u64,
    ) -> Arc<Ticket> {
        let records = Arc::new(Records {
            remaining: AtomicUsize::new(ends.len()),
            ends,
            file,
            out_of_order: AtomicBool::new(false),
        });
        let mut st = self.lock();
        let seq = st.first_seq + st.pending.len() as u64;
        let mark = mark.unwrap_or_else(|| st.acked);
        st.pending.push_back(Pending {
            mark,
            done: false,
            records: Some(records.clone()),
        });
        drop(st);
        Arc::new(Ticket {
            progress: self.clone(),
            seq,
            records: records.ends.len(),
            bytes,
            state: records,
        })
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
                st.version += 1;
            }
            advanced = true;
        }
        let drained = st.pending.is_empty();
        drop(st);
        if advanced || drained {
            self.note_moved();
            self.changed.notify_waiters();
        }
    }

    /// Advances directly when nothing is in flight (bytes consumed without records, e.g. skipped lines).
    /// With batches in flight the mark is queued behind them like any batch.
    pub fn advance_without_records(&self, mark: Mark) {
        let seq = self.register(mark);
        self.complete(seq);
    }

    /// The acknowledged position, including the delivered records of a batch only partly delivered
    /// (a stop cut it short, or the checkpoint is taken while it is in flight): records of one batch
    /// go to one partition and are reported in order, so the first `n` settled are the first `n`.
    /// Without this, a clean stop under backpressure would send that delivered part again.
    pub fn acked(&self) -> Mark {
        let mut st = self.lock();
        Self::take_delivered_part(&mut st);
        st.acked
    }

    /// The acknowledged position and its version, unless it is still at version `seen` (versions
    /// start at 0 for each progress).
    pub fn acked_since(&self, seen: Option<u64>) -> Option<(u64, Mark)> {
        let mut st = self.lock();
        Self::take_delivered_part(&mut st);
        (seen != Some(st.version)).then(|| (st.version, st.acked))
    }

    fn take_delivered_part(st: &mut State) {
        if let Some(mark) = st
            .pending
            .front()
            .and_then(|p| delivered_part(p, &st.acked))
        {
            st.acked = mark;
            st.version += 1;
        }
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

/// The mark just past the delivered records of a pending batch, when some but not all are settled
/// and that is further than `acked`.
fn delivered_part(p: &Pending, acked: &Mark) -> Option<Mark> {
    if p.done {
        return None;
    }
    let t = p.records.as_ref()?;
    if t.out_of_order.load(Ordering::Acquire) {
        return None;
    }
    let settled = t.ends.len() - t.remaining.load(Ordering::Acquire);
    let offset = *t.ends.get(settled.checked_sub(1)?)?;
    if offset <= acked.offset {
        return None;
    }
    let tail_hash = tail_hash(t.file.as_ref()?, offset).ok()?;
    Some(Mark { offset, tail_hash })
}

/// A batch's records, as both its ticket (settling them) and its pending entry (reading how many are
/// settled) see them. Shared, not owned by the ticket: the ticket is gone once every record that was
/// enqueued reported back, which is exactly when a batch cut short must still be counted.
#[derive(Debug)]
struct Records {
    remaining: AtomicUsize,
    /// File offset just past each record.
    ends: Vec<u64>,
    /// `None` for records without a file (see [`FileProgress::issue_unbacked`]).
    file: Option<Arc<File>>,
    /// A record was settled out of enqueue order (refused at enqueue, or sent again after the others):
    /// the settled count no longer says which records are delivered.
    out_of_order: AtomicBool,
}

/// Delivery bookkeeping shared by the records of one batch: the last one delivered completes the batch.
#[derive(Debug)]
pub struct Ticket {
    progress: Arc<FileProgress>,
    seq: u64,
    pub records: usize,
    pub bytes: u64,
    state: Arc<Records>,
}

impl Ticket {
    /// Marks that this batch's records may settle out of order from now on.
    pub fn mark_out_of_order(&self) {
        self.state.out_of_order.store(true, Ordering::Release);
    }

    /// One record of the batch is settled (delivered, or given up by policy). Returns true when it was the
    /// last one and the batch completed.
    pub fn record_settled(&self) -> bool {
        if self.state.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
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
            tail_hash: TailHash::of(format!("h{offset}").as_bytes()),
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

    fn file_of(content: &[u8]) -> Arc<File> {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        Arc::new(f)
    }

    #[test]
    fn ticket_completes_its_batch_on_the_last_record() {
        let p = FileProgress::new(mark(0));
        let t = p.issue(mark(100), vec![30, 60, 100], file_of(&[b'x'; 100]), 100);
        assert!(!t.record_settled());
        assert!(!t.record_settled());
        assert!(t.record_settled());
        assert_eq!(p.acked_offset(), 100);
        assert_eq!(p.acked(), mark(100));
    }

    /// Host-metric points: settled like a batch, counted in flight until then, no offset moves.
    #[test]
    fn unbacked_tickets_settle_without_a_file() {
        let p = FileProgress::new(Mark::default());
        let t = p.issue_unbacked(2, 40);
        let u = p.issue_unbacked(1, 20);
        assert_eq!(p.in_flight(), 2);
        assert!(!t.record_settled());
        assert_eq!(
            p.acked(),
            Mark::default(),
            "a part-settled unbacked batch moves nothing"
        );
        assert!(t.record_settled());
        assert!(u.record_settled());
        assert_eq!(p.in_flight(), 0);
        assert_eq!(p.acked(), Mark::default());
    }

    /// A batch cut short (a stop while the producer queue was full, or a flush deadline) whose first
    /// records were delivered: the acknowledged position covers exactly those, so the next start does
    /// not send them again.
    #[test]
    fn delivered_records_of_an_unfinished_batch_count() {
        let content = b"aaaa\nbbbb\ncccc\n";
        let file = file_of(content);
        let p = FileProgress::new(Mark {
            offset: 0,
            tail_hash: tail_hash(&file, 0).unwrap(),
        });
        let t = p.issue(mark(15), vec![5, 10, 15], file.clone(), 12);
        assert_eq!(p.acked().offset, 0, "nothing delivered yet");
        t.record_settled();
        t.record_settled();
        let m = p.acked();
        assert_eq!(m.offset, 10, "two of three records delivered");
        assert_eq!(m.tail_hash, tail_hash(&file, 10).unwrap());
        assert_eq!(p.in_flight(), 1, "the batch itself is still in flight");
        t.record_settled();
        assert_eq!(
            p.acked(),
            mark(15),
            "completion moves on to the batch's mark"
        );
    }

    /// Once every enqueued record reported back, nothing holds the ticket any more: the count must
    /// still be there for the final checkpoint.
    #[test]
    fn the_delivered_part_counts_after_the_ticket_is_gone() {
        let content = b"aaaa\nbbbb\ncccc\n";
        let file = file_of(content);
        let p = FileProgress::new(mark(0));
        let t = p.issue(mark(15), vec![5, 10, 15], file.clone(), 12);
        t.record_settled();
        drop(t);
        assert_eq!(p.acked().offset, 5);
    }

    #[test]
    fn out_of_order_batches_do_not_count_partly() {
        let p = FileProgress::new(mark(0));
        let t = p.issue(mark(15), vec![5, 10, 15], file_of(&[b'x'; 15]), 12);
        t.mark_out_of_order();
        t.record_settled();
        assert_eq!(p.acked().offset, 0);
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
