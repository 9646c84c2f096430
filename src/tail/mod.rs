//! Tailing: one task per physical file, and one discoverer per collect entry that starts them.
//!
//! A tailer reads big blocks at its offset, cuts lines, and sends them as one batch per read through
//! the bounded channel. At end of file it checks, in this order: truncation (size below the read
//! offset), rotation (the path no longer names this file, or is gone), a partial line idle past its
//! timeout. A rotated file is read to its end and released only once it has been idle for
//! `rotated_idle_timeout` and every byte is acknowledged: applications keep writing into the renamed
//! file until they reopen, and no timer may cut that tail off (fluent-bit#10414).

pub mod discover;
pub mod identity;
pub mod multiline;
pub mod reader;
pub mod watch;

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::progress::{FileProgress, Mark, Ticket};
use crate::registry::Registry;
use crate::sink::{Batch, Route};
use crate::telemetry::Metrics;
use identity::{hash_hex, tail_hash, FileKey, Fingerprint, TAIL_HASH_LEN};
use multiline::Multiline;
use reader::{LineSplitter, Split};

/// Tailing knobs shared by every tailer of an entry.
#[derive(Clone, Debug)]
pub struct TailOptions {
    pub poll_interval: Duration,
    pub read_buffer_bytes: usize,
    pub max_line_bytes: usize,
    pub partial_line_timeout: Duration,
    pub rotated_idle_timeout: Duration,
    pub batch_max_lines: usize,
    pub skip_empty_lines: bool,
}

pub struct Tailer {
    pub path: PathBuf,
    pub key: FileKey,
    pub file: File,
    pub fingerprint: Fingerprint,
    pub progress: Arc<FileProgress>,
    pub splitter: LineSplitter,
    pub route: Arc<Route>,
    pub tx: mpsc::Sender<Batch>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub wake: Arc<Notify>,
    pub opts: TailOptions,
    /// The path no longer names this file (renamed or deleted), or it was found by its identity after
    /// a rotation while the agent was down: read to the end, then let go.
    pub rotated: bool,
    /// Forget the file's record once shipped (a file finished after a rotation across a restart).
    pub forget_when_done: bool,
    /// Groups lines into multiline records when the entry has a start pattern.
    pub multiline: Option<Multiline>,
}

/// An idle file's poll interval doubles this many times at most (8 × 250 ms by default).
const IDLE_BACKOFF_DOUBLINGS: u32 = 3;

enum Flow {
    Continue,
    Stop,
}

impl Tailer {
    /// Runs until cancelled or until a rotated file is shipped to its end.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut last_growth = Instant::now();
        let mut long_reported = false;
        // Polls in a row that found nothing: an idle file is polled less and less often (file events
        // still wake it at once).
        let mut idle_polls = 0u32;
        // Whether the last wake-up came from a file event rather than the poll timer.
        let mut by_event = false;
        // The read offset and the hash of the bytes before it, taken when we last idled at EOF.
        let mut eof_guard: Option<(u64, String)> = None;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            if let Some(guard) = eof_guard.take() {
                // Woken after idling at EOF: a copytruncate followed by writes past our offset leaves
                // the size above the offset, so compare the bytes before it too (beats#45300).
                let now = tail_hash(&self.file, guard.0).unwrap_or_default();
                if now != guard.1 {
                    let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
                    self.restart_at_zero(size);
                    continue;
                }
            }
            // One fstat per round: it sizes the read and, at the end of the data, is the size checked
            // for truncation.
            let size = self.file.metadata().map(|m| m.len());
            let available = size
                .as_ref()
                .map_or(u64::MAX, |s| s.saturating_sub(self.splitter.read_offset()));
            let n = match self.splitter.fill_from(&self.file, available) {
                Ok(n) => n,
                Err(e) => {
                    self.metrics
                        .file_unreadable(&self.path, &format!("read failed: {e}"));
                    0
                }
            };
            if n > 0 {
                last_growth = Instant::now();
                // Growth announced by an event: events work for this file, so polling stays a slow
                // fallback. Growth found by polling: events are missing here, keep polling briskly.
                idle_polls = if by_event { IDLE_BACKOFF_DOUBLINGS } else { 0 };
            }
            let split = self.splitter.take_lines(self.opts.batch_max_lines);
            if split.long_lines_split > 0 && !long_reported {
                self.metrics.long_line_split(
                    &self.path,
                    split.long_lines_split,
                    self.opts.max_line_bytes,
                );
                long_reported = true;
            } else if split.long_lines_split > 0 {
                self.metrics.long_lines_split.inc_by(split.long_lines_split);
            }
            // More is readable (the read was cut by the buffer bound) or already buffered.
            let more = split.limited || (n > 0 && (n as u64) < available);
            let split = match &mut self.multiline {
                Some(m) => m.feed(split),
                None => split,
            };
            if let Flow::Stop = self.ship(split, &cancel).await {
                break;
            }
            if more {
                tokio::task::consume_budget().await;
                continue;
            }
            let off = self.splitter.read_offset();
            eof_guard = tail_hash(&self.file, off).ok().map(|h| (off, h));
            // Growth since the fstat raises a file event, which ends the nap at once; without events
            // the nap is the plain poll interval after growth.
            match self.at_eof(size, last_growth, &cancel).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => break,
                Err(e) => self.metrics.file_unreadable(&self.path, &e.to_string()),
            }
            let nap = self.nap(idle_polls, last_growth);
            by_event = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => true,
                _ = tokio::time::sleep(nap) => {
                    idle_polls = idle_polls.saturating_add(1);
                    false
                }
            };
        }
        if self.registry.is_open(self.key) {
            // Stopped (shutdown or entry removed): what is in flight settles on its own and the record
            // keeps the acknowledged offset for the next claim.
            let offset = self.progress.acked_offset();
            self.registry.release(self.key, false, false);
            self.metrics
                .file_released(&self.path, self.key, offset, "stopped");
        }
    }

    /// How long to sleep at the end of the data: the poll interval, doubled per idle poll up to
    /// [`IDLE_BACKOFF_DOUBLINGS`] times, but never past the moment a partial line or a rotated file is due.
    fn nap(&self, idle_polls: u32, last_growth: Instant) -> Duration {
        let base = self.opts.poll_interval;
        let mut nap = base.saturating_mul(1 << idle_polls.min(IDLE_BACKOFF_DOUBLINGS));
        let due = if self.rotated {
            Some(self.opts.rotated_idle_timeout)
        } else if self.splitter.pending_len() > 0
            || self.multiline.as_ref().is_some_and(Multiline::has_pending)
        {
            Some(self.opts.partial_line_timeout)
        } else {
            None
        };
        if let Some(due) = due {
            // Past due (e.g. waiting for acknowledgements): back to the plain poll interval.
            let left = due.saturating_sub(last_growth.elapsed());
            nap = nap.min(if left.is_zero() { base } else { left });
        }
        nap
    }

    /// What to do when there is nothing more to read right now.
    async fn at_eof(
        &mut self,
        size: io::Result<u64>,
        last_growth: Instant,
        cancel: &CancellationToken,
    ) -> io::Result<Flow> {
        let size = size?;
        self.progress.set_size(size);
        if size < self.splitter.read_offset() {
            self.restart_at_zero(size);
            return Ok(Flow::Continue);
        }
        if self.fingerprint.can_grow(size) {
            self.fingerprint = Fingerprint::of_file(&self.file, size)?;
            self.registry
                .update_fingerprint(self.key, &self.fingerprint);
        }
        if !self.rotated && !self.path_still_names_file() {
            self.rotated = true;
            self.metrics.file_rotated(&self.path, self.key);
        }
        let idle = last_growth.elapsed();
        let partial_due = if self.rotated {
            idle >= self.opts.rotated_idle_timeout
        } else {
            idle >= self.opts.partial_line_timeout
        };
        if self.splitter.pending_len() > 0 && partial_due {
            let bytes = self.splitter.pending_len();
            self.metrics.partial_line_flushed(
                &self.path,
                bytes,
                if self.rotated {
                    "rotated file idle"
                } else {
                    "idle past partial_line_timeout"
                },
            );
            let split = self.splitter.flush_partial();
            return Ok(self.ship(split, cancel).await);
        }
        if partial_due && self.multiline.as_ref().is_some_and(Multiline::has_pending) {
            let split = self
                .multiline
                .as_mut()
                .map(Multiline::flush)
                .unwrap_or_default();
            return Ok(self.ship(split, cancel).await);
        }
        if self.rotated && idle >= self.opts.rotated_idle_timeout && self.progress.in_flight() == 0
        {
            // Rotated means its path no longer names it: nothing will claim it there again, so its
            // record may expire (else every rotation would add a record for good).
            return Ok(self.finish(true));
        }
        Ok(Flow::Continue)
    }

    /// The content was truncated or rewritten under us: read it again from 0, in a new generation so
    /// acknowledgements still in flight for the old content cannot move the new offset.
    fn restart_at_zero(&mut self, size: u64) {
        self.metrics
            .file_truncated(&self.path, size, self.splitter.read_offset());
        self.progress = self.registry.new_generation(self.key, Mark::default());
        self.progress.set_size(size);
        self.splitter.reset(0);
        if let Ok(fp) = Fingerprint::of_file(&self.file, size) {
            self.fingerprint = fp;
            self.registry
                .update_fingerprint(self.key, &self.fingerprint);
        }
    }

    fn path_still_names_file(&self) -> bool {
        match std::fs::metadata(&self.path) {
            Ok(m) => m.dev() == self.key.dev && m.ino() == self.key.ino,
            Err(_) => false,
        }
    }

    fn finish(&mut self, gone: bool) -> Flow {
        let offset = self.progress.acked_offset();
        self.registry.release(self.key, gone, self.forget_when_done);
        self.metrics.file_released(
            &self.path,
            self.key,
            offset,
            "rotated file shipped to its end",
        );
        Flow::Stop
    }

    /// Registers and sends a batch; waits for room in the channel (the backpressure point).
    async fn ship(&mut self, split: Split, cancel: &CancellationToken) -> Flow {
        if split.end_offset == 0 {
            return Flow::Continue;
        }
        let tail = if split.tail.len() as u64 == split.end_offset.min(TAIL_HASH_LEN) {
            hash_hex(&split.tail)
        } else {
            tail_hash(&self.file, split.end_offset).unwrap_or_default()
        };
        let mark = Mark {
            offset: split.end_offset,
            tail_hash: tail,
        };
        if split.lines.is_empty() {
            self.progress.advance_without_records(mark);
            return Flow::Continue;
        }
        // Take a slot first, so a batch is registered only once it is sure to reach the sink.
        let permit = tokio::select! {
            _ = cancel.cancelled() => return Flow::Stop,
            p = self.tx.reserve() => match p {
                Ok(p) => p,
                Err(_) => return Flow::Stop,
            },
        };
        let bytes: u64 = split.lines.iter().map(|l| l.len() as u64).sum();
        let seq = self.progress.register(mark);
        let ticket = Ticket::new(self.progress.clone(), seq, split.lines.len(), bytes);
        self.route
            .counters
            .lines_read
            .inc_by(split.lines.len() as u64);
        self.route.counters.bytes_read.inc_by(bytes);
        permit.send(Batch {
            route: self.route.clone(),
            ticket,
            lines: split.lines,
        });
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::discover::{run_entry, Shared};
    use super::*;
    use crate::collect::CollectEntry;

    fn shared(tx: mpsc::Sender<Batch>) -> Arc<Shared> {
        shared_with(tx, Duration::from_secs(5), Duration::from_secs(5))
    }

    fn shared_with(tx: mpsc::Sender<Batch>, partial: Duration, rotated: Duration) -> Arc<Shared> {
        let metrics = Metrics::new(false);
        Arc::new(Shared {
            registry: Registry::new(Vec::new(), metrics.clone()),
            hub: watch::WatchHub::new(),
            metrics,
            tx,
            opts: TailOptions {
                poll_interval: Duration::from_millis(250),
                read_buffer_bytes: 4096,
                max_line_bytes: 1024,
                partial_line_timeout: partial,
                rotated_idle_timeout: rotated,
                batch_max_lines: 100,
                skip_empty_lines: false,
            },
            glob_rescan: Duration::from_secs(1),
            hostname: "h".into(),
            max_open_files: 10,
            files: tokio::runtime::Handle::current(),
            policy: Arc::new(crate::read_policy::ReadPolicy::allow_all()),
        })
    }

    fn entry(path: &std::path::Path) -> Arc<CollectEntry> {
        Arc::new(CollectEntry::new(path.to_string_lossy(), "t"))
    }

    /// The partial-line timer, on virtual time: the unterminated line is held for exactly
    /// `partial_line_timeout` of idleness, then shipped as it is.
    #[tokio::test(start_paused = true)]
    async fn partial_line_is_held_until_the_idle_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"full\nhalf").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_entry(entry(&path), shared(tx), cancel.clone()));
        let first = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .expect("first batch never came")
            .unwrap();
        assert_eq!(first.lines, vec![bytes::Bytes::from_static(b"full")]);
        let start = Instant::now();
        let second = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("partial line never flushed")
            .unwrap();
        let waited = start.elapsed();
        assert_eq!(second.lines, vec![bytes::Bytes::from_static(b"half")]);
        assert!(
            waited >= Duration::from_secs(5),
            "flushed after {waited:?}, before the timeout"
        );
        assert!(
            waited < Duration::from_secs(6),
            "flushed after {waited:?}, long after the timeout"
        );
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("entry did not stop")
            .unwrap();
    }

    fn settle(batch: &Batch) {
        for _ in 0..batch.lines.len() {
            batch.ticket.record_settled();
        }
    }

    /// A partial last line of a file rotated away is shipped once the renamed file has been idle for
    /// `rotated_idle_timeout` — long before the (here much longer) partial-line timeout — and the file
    /// is then released, every byte acknowledged.
    #[tokio::test(start_paused = true)]
    async fn partial_line_of_a_rotated_file_is_flushed_and_the_file_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"one\ntail without newline").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let sh = shared_with(tx, Duration::from_secs(600), Duration::from_secs(2));
        let registry = sh.registry.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_entry(entry(&path), sh, cancel.clone()));
        let first = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .expect("first batch never came")
            .unwrap();
        assert_eq!(first.lines, vec![bytes::Bytes::from_static(b"one")]);
        settle(&first);
        let key = {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(&path).unwrap();
            FileKey {
                dev: m.dev(),
                ino: m.ino(),
            }
        };
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        let start = Instant::now();
        let flushed = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("partial line of the rotated file never flushed")
            .unwrap();
        assert_eq!(
            flushed.lines,
            vec![bytes::Bytes::from_static(b"tail without newline")]
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "flushed only after {:?}",
            start.elapsed()
        );
        assert!(
            registry.is_open(key),
            "released before its last record was acknowledged"
        );
        settle(&flushed);
        tokio::time::timeout(Duration::from_secs(30), async {
            while registry.is_open(key) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("rotated file never released after every byte was acknowledged");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("entry did not stop")
            .unwrap();
    }
}
