//! Tailing: one task per physical file, and one discoverer per collect entry that starts them.
//!
//! A tailer reads big blocks at its offset, cuts lines, and sends them as one batch per read through
//! the bounded channel. At end of file it checks, in this order: truncation (size below the read
//! offset), rotation (the path no longer names this file, or is gone), a partial line idle past its
//! timeout. A rotated file is read to its end and released only once it has been idle for
//! `rotated_idle_timeout` (minutes; a deleted file: the partial-line timeout) and every byte is
//! acknowledged: applications keep writing into the renamed file until they reopen, and no timer may
//! cut that tail off (fluent-bit#10414). Past `max_rotated_files` held, the fully acknowledged one
//! idle longest goes first ([`rotated`]).

pub mod applied;
pub mod discover;
pub mod globwalk;
pub mod inactive;
pub mod memory;
pub mod multiline;
pub mod reader;
pub mod rotated;
pub mod throttle;
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

use crate::sink::{Batch, Route};
use crate::state::identity::{
    start_of, tail_hash, tail_hash_matches, FileKey, Fingerprint, Head, TailHash, TAIL_HASH_LEN,
};
use crate::state::progress::{FileProgress, Mark};
use crate::state::registry::Registry;
use crate::telemetry::Metrics;
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
    /// `tail.close_inactive_ms` (`None`: never close a live file for inactivity).
    pub close_inactive: Option<Duration>,
    pub batch_max_lines: usize,
    pub skip_empty_lines: bool,
}

impl TailOptions {
    /// The local `[tail]` settings every entry starts from.
    pub fn from_settings(t: &crate::config::settings::TailSettings) -> TailOptions {
        TailOptions {
            poll_interval: t.poll_interval,
            read_buffer_bytes: t.read_buffer_bytes,
            max_line_bytes: t.max_line_bytes,
            partial_line_timeout: t.partial_line_timeout,
            rotated_idle_timeout: t.rotated_idle_timeout,
            close_inactive: t.close_inactive,
            batch_max_lines: t.batch_max_lines,
            skip_empty_lines: t.skip_empty_lines,
        }
    }
}

pub struct Tailer {
    pub path: PathBuf,
    pub key: FileKey,
    /// Shared with the batches' tickets, which read it to mark where a batch cut short ends.
    pub file: Arc<File>,
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
    /// The bound on rotated files held open, shared by every tailer.
    pub rotated_files: Arc<rotated::RotatedFiles>,
    /// The record stage (decode, filter, envelope, metadata headers); `None` for raw entries, whose
    /// lines ship as read.
    pub records: Option<Box<crate::record::Pipeline>>,
    /// The entry's `max_bytes_per_s`, shared by its files.
    pub throttle: Option<Arc<throttle::Throttle>>,
    /// Where a file closed by `tail.close_inactive_ms` is noted, for its discoverer.
    pub inactive: Arc<inactive::InactiveFiles>,
    /// The tailer's own bookkeeping (start it at its default).
    pub state: TailerState,
}

/// What a tailer tracks across rounds.
#[derive(Default)]
pub struct TailerState {
    /// A read offset and the hash of the bytes before it, to compare once reading resumes after a
    /// pause (idle at EOF, a wait for channel room, a start from a stored offset): a copytruncate
    /// followed by writes past the offset leaves the size above it, and only these bytes tell.
    guard: Option<(u64, TailHash)>,
    /// The loop just came back from its nap at the end of the data: the next read may be the
    /// guarded one ([`Tailer::read_guarded`]). Not after a wait for channel room: a busy file
    /// resumes with its full-sized read (a 1 KiB read there made a small batch per big one).
    napped: bool,
    /// Raised by [`rotated::RotatedFiles`] when this rotated file should be let go; set once rotated.
    evict: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The end of the last batch shipped and the hash of the bytes before it: the guard at the end
    /// of the data, without reading those bytes again.
    shipped: Option<(u64, TailHash)>,
    /// When the path was last checked to still name this file. With a directory watch, when an
    /// event on the name says so ([`TailerState::name_event`]) and otherwise only every
    /// [`PATH_CHECK_WATCHED`]; without one, at most once per idle nap (2 s by default), as often as
    /// an idle file is polled (a trickling file reaches its end once per line). A later check only
    /// delays the rotated flag: the open file is read to its end anyway.
    path_checked: Option<Instant>,
    /// Its flag is raised by the file-events thread on an event naming this file's name (renamed,
    /// removed, replaced): set when its directory is watched.
    pub name_event: Option<watch::FileWaker>,
    /// The file's first bytes, for the guard, taken with the fingerprint (empty: matches any file).
    pub head: Head,
    /// The file's directory has an event watch: idle polls may back off to the long interval from
    /// the start (a growth found by polling instead shows events missing, and brings them back).
    pub dir_watched: bool,
}

/// An idle file's poll interval doubles this many times at most (8 × 250 ms by default).
const IDLE_BACKOFF_DOUBLINGS: u32 = 3;
/// ... and this many times once an event announced its growth (128 × 250 ms = 32 s): events work
/// for it, and polling is only the net for a lost one (a queue overflow wakes every tailer anyway).
/// With 10,000 files, polls every 2 s were 5,000 wake-ups a second, every 8 s 1,250 — more than
/// the lines of idle10000. A file waiting for a slot does not wait for these polls: each refused
/// claim wakes one idle tailer ([`Registry::slot_asked`]).
const EVENT_BACKOFF_DOUBLINGS: u32 = 7;
/// How often a file in a watched directory checks its path without an event on the name: a net
/// for a lost event (a queue overflow wakes every tailer with the name flag raised anyway). With
/// 10,000 files, a stat of every path every 2 s was 7 % of idle10000's CPU.
const PATH_CHECK_WATCHED: Duration = Duration::from_secs(30);

/// What ended a tailer's nap.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Woke {
    /// No nap yet: what the first read finds was there before.
    Start,
    /// A file event named the file.
    Event,
    /// The nap's time was up.
    Poll,
    /// A claim was refused a slot under `max_open_files`.
    SlotAsked,
}

/// What [`Tailer::read_guarded`] did.
enum Guarded {
    /// No guard to check (or throttled): the plain sized read applies.
    NotApplicable,
    /// The file was rewritten under the guard: reading restarts at 0.
    Rewritten,
    /// `n` bytes read; `at_end`: the read was short, so the file ends there.
    Read { n: usize, at_end: bool },
    /// The check itself failed (an I/O error): whether the file was rewritten is unknown, so
    /// nothing is read and the guard is kept for the next round.
    Unreadable(io::Error),
}

/// The error of a failed rewrite check, as reported for the file.
fn guard_error(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("cannot check whether the file was rewritten: {e}"),
    )
}

/// How much the guarded read asks for: a trickle's wake-up finds a line or a few; more is read
/// by the next round's sized read. The buffer keeps this much per idle file (4 KiB cost idle10000
/// ~25 MiB of RSS; 1 KiB ~3 MiB).
pub const GUARDED_READ_BYTES: usize = 1024;

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
        // How far idle polls back off: further once events are known to work for this file.
        let mut backoff_cap = if self.state.dir_watched {
            EVENT_BACKOFF_DOUBLINGS
        } else {
            IDLE_BACKOFF_DOUBLINGS
        };
        // What ended the last nap: a file event, the poll timer, or a slot asked for.
        let mut woke = Woke::Start;
        // One registration with the token for the whole run: a `cancelled()` made afresh in every
        // nap's select joined and left the token's waiter list (shared by every tailer) at each
        // wake-up of each file.
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let start = self.progress.acked();
        if start.offset > 0 {
            // The file may have been rewritten between the claim and now.
            self.state.guard = Some((start.offset, start.tail_hash));
            let newline = self.splitter.newline();
            let mid =
                reader::resumes_mid_line_at(&self.file, start.offset, newline).unwrap_or(false);
            self.splitter.resume_mid_line(mid);
        }
        'rounds: loop {
            if cancel.is_cancelled() {
                break;
            }
            let (size, available, n) = match self.read_guarded() {
                Guarded::Rewritten => continue,
                Guarded::Unreadable(e) => (Err(e), 0, 0),
                // A short read ended at the end of the file: its size is known without an fstat.
                Guarded::Read { n, at_end: true } => (Ok(self.splitter.read_offset()), n as u64, n),
                Guarded::Read { n, at_end: false } => {
                    (self.file.metadata().map(|m| m.len()), u64::MAX, n)
                }
                Guarded::NotApplicable => 'plain: {
                    match self.rewritten_since_guard() {
                        Ok(true) => continue 'rounds,
                        Ok(false) => {}
                        Err(e) => break 'plain (Err(e), 0, 0),
                    }
                    // One fstat per round: it sizes the read and, at the end of the data, is the
                    // size checked for truncation.
                    let size = self.file.metadata().map(|m| m.len());
                    let available = size
                        .as_ref()
                        .map_or(u64::MAX, |s| s.saturating_sub(self.splitter.read_offset()));
                    // Throttled: read no more than granted; the rest stays "more to read", so the
                    // loop comes straight back to wait for tokens instead of napping as if at the
                    // end.
                    let (granted, cap) = match &self.throttle {
                        Some(t) => {
                            let want = available.min(self.opts.read_buffer_bytes as u64);
                            let granted = t.take(want, &cancel).await;
                            (Some((t.clone(), granted)), granted)
                        }
                        None => (None, available),
                    };
                    let n = match self.splitter.fill_from(&self.file, cap) {
                        Ok(n) => n,
                        Err(e) => {
                            self.metrics
                                .file_unreadable(&self.path, &format!("read failed: {e}"));
                            0
                        }
                    };
                    if let Some((t, granted)) = granted {
                        t.refund(granted.saturating_sub(n as u64));
                    }
                    (size, available, n)
                }
            };
            if n > 0 {
                last_growth = Instant::now();
                // Growth announced by an event: events work for this file, so polling stays a slow
                // fallback. Growth found by a poll: events are missing here, keep polling briskly.
                // (What the first read finds was there before: evidence of neither.)
                match woke {
                    Woke::Event => backoff_cap = EVENT_BACKOFF_DOUBLINGS,
                    Woke::Poll => backoff_cap = IDLE_BACKOFF_DOUBLINGS,
                    Woke::Start | Woke::SlotAsked => {}
                }
                idle_polls = if woke == Woke::Event { backoff_cap } else { 0 };
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
            let split = match &self.records {
                Some(p) => p.decode(split),
                None => split,
            };
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
            // A wait for channel room just ended: check before idling over a possibly rewritten file.
            // (An error here is met again, and reported, by the next round's check.)
            if let Ok(true) = self.rewritten_since_guard() {
                continue;
            }
            // Only once a nap ended with nothing new (idle, not merely caught up): a busy file catches
            // up after every read, and would free and allocate its buffer each time.
            if n == 0 && woke != Woke::Event && self.splitter.release_if_caught_up() {
                memory::released();
            }
            let off = self.splitter.read_offset();
            // After a failed check the guard taken before it stays: the bytes now are unknown.
            if size.is_ok() {
                self.state.guard = match self.state.shipped.take() {
                    Some((at, hash)) if at == off => Some((at, hash)),
                    _ => tail_hash(&self.file, off).ok().map(|h| (off, h)),
                };
            }
            // Growth since the fstat raises a file event, which ends the nap at once; without events
            // the nap is the plain poll interval after growth.
            match self.at_eof(size, last_growth, &cancel).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => break,
                Err(e) => self.metrics.file_unreadable(&self.path, &e.to_string()),
            }
            let nap = self.nap(idle_polls, last_growth);
            woke = tokio::select! {
                _ = &mut cancelled => break,
                _ = self.wake.notified() => Woke::Event,
                // at_eof makes room if this file is caught up.
                _ = self.registry.slot_asked() => Woke::SlotAsked,
                _ = tokio::time::sleep(nap) => {
                    idle_polls = idle_polls.saturating_add(1).min(backoff_cap);
                    Woke::Poll
                }
            };
            self.state.napped = true;
        }
        if self.state.evict.is_some() {
            self.rotated_files.let_go(self.key);
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

    /// The read that resumes after a pause, with the copytruncate guard in the same call: one
    /// `preadv` from [`TAIL_HASH_LEN`] bytes before the offset (those are the guard's) instead of a
    /// pread for the guard, an fstat and a pread for the data — a trickling file's every wake-up.
    /// Sized by [`GUARDED_READ_BYTES`], not by the file, so a short read is the end of the data.
    /// Throttled files keep the sized read.
    fn read_guarded(&mut self) -> Guarded {
        let Some((offset, hash)) = self.state.guard.take() else {
            return Guarded::NotApplicable;
        };
        let napped = std::mem::take(&mut self.state.napped);
        if !napped || self.throttle.is_some() || offset != self.splitter.read_offset() {
            self.state.guard = Some((offset, hash));
            return Guarded::NotApplicable;
        }
        let mut before = [0u8; TAIL_HASH_LEN as usize];
        let want = offset.min(TAIL_HASH_LEN) as usize;
        let read =
            self.splitter
                .fill_after_guard(&self.file, &mut before[..want], GUARDED_READ_BYTES);
        // As in `rewritten_since_guard`: the bytes before the offset, and the head.
        let same = read.and_then(|(got, n, at_end)| {
            let same = got == want
                && TailHash::of(&before[..want]) == hash
                && self.state.head.still_starts(&self.file)?;
            Ok(same.then_some((n, at_end)))
        });
        match same {
            Ok(Some((n, at_end))) => Guarded::Read { n, at_end },
            Ok(None) => {
                self.restart_rewritten();
                Guarded::Rewritten
            }
            Err(e) => {
                self.state.guard = Some((offset, hash));
                Guarded::Unreadable(guard_error(e))
            }
        }
    }

    /// Whether the bytes before the guarded offset, or the file's head, changed (the file was truncated
    /// and rewritten while we were away); if so, reading restarts at 0 of the new content (beats#45300).
    /// An I/O error is not a rewrite (EIO on a network mount would re-ship the whole file): the
    /// guard is kept and the error returned.
    fn rewritten_since_guard(&mut self) -> io::Result<bool> {
        let Some((offset, hash)) = self.state.guard.take() else {
            return Ok(false);
        };
        // The bytes before the offset alone miss a rewrite whose lines end alike (same length, same
        // user agent): the head, which a new content almost always changes (a timestamp, a first
        // request), is compared too. A file now shorter than either is rewritten.
        let same = tail_hash_matches(&self.file, offset, hash)
            .and_then(|same_tail| Ok(same_tail && self.state.head.still_starts(&self.file)?));
        match same {
            Ok(true) => Ok(false),
            Ok(false) => {
                self.restart_rewritten();
                Ok(true)
            }
            Err(e) => {
                self.state.guard = Some((offset, hash));
                Err(guard_error(e))
            }
        }
    }

    /// The guard found the file rewritten: read it again from 0 at its size now.
    fn restart_rewritten(&mut self) {
        let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        self.restart_at_zero(size);
    }

    /// The longest nap: the poll interval of a file idle for a while.
    fn idle_nap(&self) -> Duration {
        self.opts
            .poll_interval
            .saturating_mul(1 << IDLE_BACKOFF_DOUBLINGS)
    }

    /// How long to sleep at the end of the data: the poll interval, doubled per idle poll up to
    /// [`IDLE_BACKOFF_DOUBLINGS`] times ([`EVENT_BACKOFF_DOUBLINGS`] when events work), but never past the moment a partial line or a rotated file is due.
    fn nap(&self, idle_polls: u32, last_growth: Instant) -> Duration {
        let base = self.opts.poll_interval;
        let mut nap = base.saturating_mul(1 << idle_polls.min(EVENT_BACKOFF_DOUBLINGS));
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
            (self.fingerprint, self.state.head) = start_of(&self.file, size)?;
            self.registry
                .update_fingerprint(self.key, &self.fingerprint);
        }
        let (told, every) = match &self.state.name_event {
            Some(w) => (w.take_name_event(), PATH_CHECK_WATCHED),
            None => (false, self.idle_nap()),
        };
        let check_path = told
            || self
                .state
                .path_checked
                .is_none_or(|at| at.elapsed() >= every);
        if check_path {
            self.state.path_checked = Some(Instant::now());
        }
        if !self.rotated && check_path && !self.path_still_names_file() {
            self.rotated = true;
            self.metrics.file_rotated(&self.path, self.key);
        }
        if self.rotated && self.state.evict.is_none() {
            self.state.evict = Some(self.rotated_files.hold(self.key, self.wake.clone()));
        }
        let idle = last_growth.elapsed();
        let rotated_due = if self.rotated && self.file.metadata()?.nlink() == 0 {
            // Deleted: no one can reopen it, and only writers already holding it can still append.
            self.opts
                .rotated_idle_timeout
                .min(self.opts.partial_line_timeout)
        } else {
            self.opts.rotated_idle_timeout
        };
        let partial_due = if self.rotated {
            idle >= rotated_due
        } else {
            idle >= self.opts.partial_line_timeout
        };
        let group_held = self.multiline.as_ref().is_some_and(Multiline::has_pending);
        if partial_due && (self.splitter.pending_len() > 0 || group_held) {
            let bytes = self.splitter.pending_len();
            if bytes > 0 {
                self.metrics.partial_line_flushed(
                    &self.path,
                    bytes,
                    if self.rotated {
                        "rotated file idle"
                    } else {
                        "idle past partial_line_timeout"
                    },
                );
            }
            // Through the grouper: the partial line belongs after (or to) the held group, so records
            // stay in file order and the registered offsets only grow.
            let split = self.splitter.flush_partial();
            let split = match &self.records {
                Some(p) => p.decode(split),
                None => split,
            };
            let split = match &mut self.multiline {
                Some(m) => {
                    let mut out = m.feed(split);
                    out.append(m.flush());
                    out
                }
                None => split,
            };
            return Ok(self.ship(split, cancel).await);
        }
        let settled =
            self.progress.in_flight() == 0 && self.splitter.pending_len() == 0 && !group_held;
        if self.rotated {
            self.rotated_files.update(self.key, last_growth, settled);
        }
        let evicted = self
            .state
            .evict
            .as_ref()
            .is_some_and(|e| e.load(std::sync::atomic::Ordering::Relaxed));
        if self.rotated && settled && (idle >= rotated_due || evicted) {
            // Rotated means its path no longer names it: nothing will claim it there again, so its
            // record may expire (else every rotation would add a record for good).
            return Ok(self.finish(true));
        }
        if !self.rotated && settled && self.opts.close_inactive.is_some_and(|d| idle >= d) {
            return Ok(self.close_inactive("tail.close_inactive_ms"));
        }
        // Another file waits for a slot under max_open_files: a caught-up file makes room (it is
        // opened again when it changes), so the slots go round the files that have data.
        if !self.rotated
            && settled
            && idle >= self.opts.poll_interval
            && self.registry.slots_wanted()
        {
            return Ok(self.close_inactive("max_open_files reached: making room"));
        }
        Ok(Flow::Continue)
    }

    /// `tail.close_inactive_ms`: nothing new for that long and every byte acknowledged. The record
    /// keeps the offset; the discoverer claims the file again once its path shows a change.
    fn close_inactive(&mut self, why: &str) -> Flow {
        let mtime = self.file.metadata().ok().and_then(|m| m.modified().ok());
        let seen = inactive::Seen {
            key: self.key,
            // What was read, not the size now: bytes written since show as a change.
            size: self.splitter.read_offset(),
            mtime,
        };
        self.inactive.closed(&self.path, seen);
        let offset = self.progress.acked_offset();
        self.registry.release(self.key, false, false);
        self.metrics
            .file_closed_inactive(&self.path, self.key, offset, why);
        Flow::Stop
    }

    /// The content was truncated or rewritten under us: read it again from 0, in a new generation so
    /// acknowledgements still in flight for the old content cannot move the new offset.
    fn restart_at_zero(&mut self, size: u64) {
        self.metrics
            .file_truncated(&self.path, size, self.splitter.read_offset());
        self.state.shipped = None;
        self.progress = self.registry.new_generation(self.key, Mark::default());
        self.progress.set_size(size);
        self.splitter.reset(0);
        // A held group came from the old content: its lines are not before the new content's.
        if let Some(m) = &mut self.multiline {
            m.clear();
        }
        if let Ok((fp, head)) = start_of(&self.file, size) {
            (self.fingerprint, self.state.head) = (fp, head);
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
        self.rotated_files.let_go(self.key);
        self.state.evict = None;
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
            TailHash::of(&split.tail)
        } else {
            tail_hash(&self.file, split.end_offset).unwrap_or_default()
        };
        self.state.shipped = Some((split.end_offset, tail));
        let mark = Mark {
            offset: split.end_offset,
            tail_hash: tail,
        };
        let (split, headers) = match &self.records {
            Some(p) => {
                let r = p.finish(split, &self.file, &self.fingerprint);
                (r.split, r.headers)
            }
            None => (split, Vec::new()),
        };
        // Every record filtered out: the bytes are consumed all the same, so the offset (and a
        // rotated file's release) is not held back by lines that will never ship.
        if split.lines.is_empty() {
            self.progress.advance_without_records(mark);
            return Flow::Continue;
        }
        // Take a slot first, so a batch is registered only once it is sure to reach the sink.
        let permit = match self.tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Closed(())) => return Flow::Stop,
            Err(mpsc::error::TrySendError::Full(())) => {
                // Blocked (Kafka down or slow), maybe for long: the file can be copytruncated and
                // rewritten meanwhile, so the bytes before the read offset are checked when reading
                // resumes. Only here, off the hot path: a send that finds room costs nothing more.
                if self.state.guard.is_none() {
                    let off = self.splitter.read_offset();
                    self.state.guard = tail_hash(&self.file, off).ok().map(|h| (off, h));
                }
                tokio::select! {
                    _ = cancel.cancelled() => return Flow::Stop,
                    p = self.tx.reserve() => match p {
                        Ok(p) => p,
                        Err(_) => return Flow::Stop,
                    },
                }
            }
        };
        let bytes: u64 = split.lines.iter().map(|l| l.len() as u64).sum();
        let ticket = self
            .progress
            .issue(mark, split.ends, self.file.clone(), bytes);
        self.route
            .counters
            .lines_read
            .inc_by(split.lines.len() as u64);
        self.route.counters.bytes_read.inc_by(bytes);
        permit.send(Batch {
            route: self.route.clone(),
            ticket,
            lines: split.lines,
            headers,
        });
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::discover::{run_entry, Shared};
    use super::*;
    use crate::config::collect::CollectEntry;
    use std::io::Write;

    fn shared(tx: mpsc::Sender<Batch>) -> Arc<Shared> {
        shared_with(tx, Duration::from_secs(5), Duration::from_secs(5))
    }

    fn shared_with(tx: mpsc::Sender<Batch>, partial: Duration, rotated: Duration) -> Arc<Shared> {
        let metrics = Metrics::new(false);
        Arc::new(Shared {
            glob_rescan: Duration::from_secs(1),
            hostname: "h".into(),
            ..Shared::standalone(
                Registry::new(Vec::new(), metrics.clone()),
                metrics,
                tx,
                TailOptions {
                    poll_interval: Duration::from_millis(250),
                    read_buffer_bytes: 4096,
                    max_line_bytes: 1024,
                    partial_line_timeout: partial,
                    rotated_idle_timeout: rotated,
                    close_inactive: None,
                    batch_max_lines: 100,
                    skip_empty_lines: false,
                },
            )
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
        stop(cancel, task).await;
    }

    /// Cancels an entry and waits for it to let go of its files.
    async fn stop(cancel: CancellationToken, task: tokio::task::JoinHandle<()>) {
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
    ///
    /// Paused time runs ahead of the real event thread, so this is the polling path: no watches.
    #[tokio::test(start_paused = true)]
    async fn partial_line_of_a_rotated_file_is_flushed_and_the_file_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"one\ntail without newline").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let sh = polling_only(shared_with(
            tx,
            Duration::from_secs(600),
            Duration::from_secs(2),
        ));
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
        stop(cancel, task).await;
    }

    fn polling_only(sh: Arc<Shared>) -> Arc<Shared> {
        let sh = Arc::into_inner(sh).expect("not shared yet");
        Arc::new(Shared {
            hub: watch::WatchHub::with_max_watches(0),
            ..sh
        })
    }

    /// With a directory watch a tailer checks its path when an event on the name says so, not by a
    /// stat at every wake-up (those are [`PATH_CHECK_WATCHED`] apart): a file renamed away is known
    /// rotated at once, and its partial last line goes after `rotated_idle_timeout`.
    #[tokio::test]
    async fn a_file_renamed_away_is_known_rotated_by_the_event_on_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"one\ntail without newline").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let sh = shared_with(tx, Duration::from_secs(600), Duration::from_millis(300));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_entry(entry(&path), sh, cancel.clone()));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("first batch never came")
            .unwrap();
        settle(&first);
        // Past the first path check, so the next one is the event's or PATH_CHECK_WATCHED away.
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        let flushed = tokio::time::timeout(PATH_CHECK_WATCHED / 3, rx.recv())
            .await
            .expect("the rename was not noticed: partial line of the rotated file never flushed")
            .unwrap();
        assert_eq!(
            flushed.lines,
            vec![bytes::Bytes::from_static(b"tail without newline")]
        );
        settle(&flushed);
        stop(cancel, task).await;
    }

    /// Receives batches until `n` records came, settling each batch; fails naming `what` if they don't.
    async fn records(rx: &mut mpsc::Receiver<Batch>, n: usize, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            let batch = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{what}: got only {out:?}"))
                .expect("channel closed");
            settle(&batch);
            out.extend(
                batch
                    .lines
                    .iter()
                    .map(|l| String::from_utf8_lossy(l).into_owned()),
            );
        }
        out
    }

    fn multiline_entry(path: &std::path::Path) -> Arc<CollectEntry> {
        let mut e = CollectEntry::new(path.to_string_lossy(), "t");
        e.multiline = Some("^S".into());
        Arc::new(e)
    }

    fn key_of(path: &std::path::Path) -> FileKey {
        FileKey::of(&std::fs::metadata(path).unwrap())
    }

    /// An unterminated last line while a multiline group is held: both go out through the grouper,
    /// in file order, and the recorded offset ends past both (it never moves back).
    #[tokio::test(start_paused = true)]
    async fn partial_line_flush_goes_through_the_held_multiline_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"S1\n  a\nS2\n  b\npart").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let sh = shared(tx);
        let registry = sh.registry.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_entry(multiline_entry(&path), sh, cancel.clone()));
        let got = records(&mut rx, 2, "multiline group and partial line").await;
        assert_eq!(got, vec!["S1\n  a", "S2\n  b\npart"]);
        let key = key_of(&path);
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let snap = registry.snapshot(Duration::from_secs(60));
                if snap.iter().any(|c| c.ino == key.ino && c.offset == 18) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("recorded offset never reached the end of the partial line (18)");
        stop(cancel, task).await;
    }

    /// A truncation drops the group held from the old content: it is not glued to the new lines.
    #[tokio::test(start_paused = true)]
    async fn truncation_clears_the_held_multiline_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"S1\n  a\nS2\n  b\n").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_entry(
            multiline_entry(&path),
            shared(tx),
            cancel.clone(),
        ));
        assert_eq!(records(&mut rx, 1, "first group").await, vec!["S1\n  a"]);
        std::fs::write(&path, b"  c\nS3\n").unwrap();
        let got = records(&mut rx, 1, "first record after the truncation").await;
        assert_eq!(
            got,
            vec!["  c"],
            "the old held group leaked into the new content"
        );
        stop(cancel, task).await;
    }

    /// copytruncate while the tailer waits for channel room (broker down): once it gets room, it
    /// notices that the bytes before its offset changed and reads the new content from 0, instead of
    /// resuming at the old offset inside it.
    #[tokio::test(start_paused = true)]
    async fn copytruncate_while_blocked_on_the_channel_restarts_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"old-1\nold-2\n").unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let sh = {
            let mut s = shared_with(tx, Duration::from_secs(5), Duration::from_secs(5));
            Arc::get_mut(&mut s).unwrap().opts.batch_max_lines = 1;
            s
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_entry(entry(&path), sh, cancel.clone()));
        // Virtual time only moves once every task waits: the tailer is then blocked on the full channel.
        tokio::time::sleep(Duration::from_secs(1)).await;
        std::fs::write(&path, b"NEW-first-line\nNEW-second\n").unwrap();
        let got = records(&mut rx, 4, "old lines then the new content").await;
        assert_eq!(got, vec!["old-1", "old-2", "NEW-first-line", "NEW-second"]);
        stop(cancel, task).await;
    }

    /// A busy file blocked on the full channel resumes with full reads: the guarded 1 KiB read is
    /// for wake-ups from the nap, where it made a small batch beside every big one.
    #[tokio::test(start_paused = true)]
    async fn a_busy_file_resumes_after_a_full_channel_with_full_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let line = format!("{}\n", "x".repeat(99));
        std::fs::write(&path, line.repeat(400)).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let sh = shared_with(tx, Duration::from_secs(5), Duration::from_secs(5));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_entry(entry(&path), sh, cancel.clone()));
        let mut sizes = Vec::new();
        while sizes.iter().sum::<usize>() < 400 {
            let b = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("the busy file's batches stopped coming")
                .unwrap();
            settle(&b);
            sizes.push(b.lines.len());
        }
        // read_buffer_bytes 4,096: 40 lines of 100 bytes per full read.
        assert!(
            sizes[..sizes.len() - 1].iter().all(|&n| n >= 40),
            "small batches beside full ones: {sizes:?}"
        );
        stop(cancel, task).await;
    }

    /// copytruncate, then more written than before, while the tailer naps at the end: lines of one
    /// length ending alike (an nginx log's user agent) leave the bytes just before the old offset
    /// unchanged, so only the file's head tells that the content is new.
    #[tokio::test(start_paused = true)]
    async fn a_rewrite_ending_alike_at_the_old_offset_is_read_from_zero() {
        let ua = "\"Mozilla/5.0 (X11; Linux x86_64) Safari/537.36\"";
        let lines = |tag: &str, n: usize| -> String {
            (1..=n).map(|i| format!("{tag}-{i} {ua}\n")).collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, lines("old", 2)).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_entry(entry(&path), shared(tx), cancel.clone()));
        assert_eq!(records(&mut rx, 2, "the old lines").await.len(), 2);
        tokio::time::sleep(Duration::from_secs(1)).await;
        std::fs::write(&path, lines("new", 3)).unwrap();
        let got = records(&mut rx, 3, "the new content").await;
        assert_eq!(
            got,
            lines("new", 3).lines().collect::<Vec<_>>(),
            "resumed inside the new content instead of at its start"
        );
        stop(cancel, task).await;
    }

    /// `"from": "end"` concerns the files there when the entry is first applied; a file created while
    /// the agent was down (the new `app.log` of a rotation) is read from its start at the next start.
    #[tokio::test(start_paused = true)]
    async fn from_end_applies_only_at_the_first_application_of_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, b"before\n").unwrap();
        let applied = Arc::new(applied::AppliedEntries::load(dir.path()));
        let from_end = {
            let mut e = CollectEntry::new(path.to_string_lossy(), "t");
            e.from = crate::config::collect::StartFrom::End;
            Arc::new(e)
        };
        let start = |registry: Arc<Registry>| {
            let (tx, rx) = mpsc::channel(8);
            let mut sh = shared(tx);
            let s = Arc::get_mut(&mut sh).unwrap();
            s.registry = registry;
            s.applied = applied.clone();
            let cancel = CancellationToken::new();
            let task = tokio::spawn(run_entry(from_end.clone(), sh, cancel.clone()));
            (rx, cancel, task)
        };
        let registry = Registry::new(Vec::new(), Metrics::new(false));
        let (mut rx, cancel, task) = start(registry.clone());
        tokio::time::sleep(Duration::from_secs(1)).await;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"after\n")
            .unwrap();
        assert_eq!(records(&mut rx, 1, "first run").await, vec!["after"]);
        stop(cancel, task).await;
        // Down: the file is rotated and the application writes its new file.
        let stored = registry.snapshot(Duration::from_secs(3600));
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        std::fs::write(&path, b"fresh\n").unwrap();
        let (mut rx, cancel, task) = start(Registry::new(stored, Metrics::new(false)));
        assert_eq!(
            records(&mut rx, 1, "the new file after the restart").await,
            vec!["fresh"]
        );
        stop(cancel, task).await;
    }

    /// Past `max_rotated_files`, a fully acknowledged rotated file is released long before its idle
    /// timeout, the one idle longest first; the newer one is kept.
    #[tokio::test(start_paused = true)]
    async fn rotated_files_past_the_bound_are_released_oldest_idle_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"one\n").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let mut sh = shared_with(tx, Duration::from_secs(5), Duration::from_secs(300));
        Arc::get_mut(&mut sh).unwrap().rotated = rotated::RotatedFiles::new(1);
        let registry = sh.registry.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_entry(entry(&path), sh, cancel.clone()));
        assert_eq!(records(&mut rx, 1, "first file").await, vec!["one"]);
        let first = key_of(&path);
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        std::fs::write(&path, b"two\n").unwrap();
        assert_eq!(records(&mut rx, 1, "second file").await, vec!["two"]);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            registry.is_open(first),
            "released before the bound was passed"
        );
        let second = key_of(&path);
        std::fs::rename(&path, dir.path().join("a.log.2")).unwrap();
        std::fs::write(&path, b"three\n").unwrap();
        assert_eq!(records(&mut rx, 1, "third file").await, vec!["three"]);
        tokio::time::timeout(Duration::from_secs(30), async {
            while registry.is_open(first) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the oldest rotated file was kept past max_rotated_files");
        assert!(
            registry.is_open(second),
            "the newer rotated file was released too"
        );
        stop(cancel, task).await;
    }

    /// Stopped right after the chunks of an over-long line were acknowledged, before its newline was
    /// written: at the restart, that newline only ends the line already shipped and is no empty record.
    #[tokio::test(start_paused = true)]
    async fn a_restart_at_a_long_line_chunk_boundary_gives_no_empty_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"abcdefgh").unwrap();
        let chunked = {
            let mut e = CollectEntry::new(path.to_string_lossy(), "t");
            e.max_line_bytes = Some(4);
            Arc::new(e)
        };
        let start = |registry: Arc<Registry>| {
            let (tx, rx) = mpsc::channel(8);
            let mut sh = shared(tx);
            Arc::get_mut(&mut sh).unwrap().registry = registry;
            let cancel = CancellationToken::new();
            let task = tokio::spawn(run_entry(chunked.clone(), sh, cancel.clone()));
            (rx, cancel, task)
        };
        let registry = Registry::new(Vec::new(), Metrics::new(false));
        let (mut rx, cancel, task) = start(registry.clone());
        assert_eq!(
            records(&mut rx, 2, "the chunks").await,
            vec!["abcd", "efgh"]
        );
        stop(cancel, task).await;
        let stored = registry.snapshot(Duration::from_secs(3600));
        assert_eq!(stored[0].offset, 8, "the chunks were acknowledged");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"\nz\n")
            .unwrap();
        let (mut rx, cancel, task) = start(Registry::new(stored, Metrics::new(false)));
        assert_eq!(records(&mut rx, 1, "after the restart").await, vec!["z"]);
        stop(cancel, task).await;
    }

    /// `a.log` of 18 bytes, acknowledged to its end, released and claimed again (resumed at 18).
    fn acknowledged_and_claimed_again(
        dir: &tempfile::TempDir,
    ) -> (
        PathBuf,
        FileKey,
        File,
        crate::state::registry::Claim,
        Arc<Registry>,
        Arc<Metrics>,
    ) {
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"line-one\nline-two\n").unwrap();
        let metrics = Metrics::new(false);
        let registry = Registry::new(Vec::new(), metrics.clone());
        let file = File::open(&path).unwrap();
        let key = key_of(&path);
        let first = registry
            .claim(key, &path, "t", &file, 18, false)
            .unwrap()
            .unwrap();
        let seq = first.progress.register(Mark {
            offset: 18,
            tail_hash: tail_hash(&file, 18).unwrap(),
        });
        first.progress.complete(seq);
        registry.release(key, false, false);
        let claim = registry
            .claim(key, &path, "t", &file, 18, false)
            .unwrap()
            .unwrap();
        (path, key, file, claim, registry, metrics)
    }

    /// A tailer of `file` resumed from `claim`, without watches, multiline or records.
    fn resumed_tailer(
        path: &std::path::Path,
        key: FileKey,
        file: File,
        claim: crate::state::registry::Claim,
        tx: mpsc::Sender<Batch>,
        registry: Arc<Registry>,
        metrics: &Arc<Metrics>,
    ) -> Tailer {
        Tailer {
            path: path.to_path_buf(),
            key,
            file: Arc::new(file),
            fingerprint: claim.fingerprint,
            progress: claim.progress,
            splitter: LineSplitter::new(claim.offset, 4096, 1024, false),
            route: Arc::new(Route {
                topic: "t".into(),
                key: None,
                headers: Vec::new(),
                partition_seed: 0,
                path: path.to_string_lossy().into_owned(),
                counters: metrics.topic("t"),
            }),
            tx,
            registry,
            metrics: metrics.clone(),
            wake: Arc::new(Notify::new()),
            opts: shared_with(
                mpsc::channel(1).0,
                Duration::from_secs(5),
                Duration::from_secs(5),
            )
            .opts
            .clone(),
            rotated: false,
            forget_when_done: false,
            multiline: None,
            rotated_files: rotated::RotatedFiles::new(64),
            records: None,
            throttle: None,
            inactive: Arc::default(),
            state: TailerState::default(),
        }
    }

    /// An I/O error while checking whether a resumed file was rewritten (EIO on a network mount) is
    /// not a rewrite: the file is not read again from 0 (which re-ships all of it), the acknowledged
    /// offset stays, the error is reported, and the check is retried.
    #[tokio::test(start_paused = true)]
    async fn an_error_checking_the_guard_is_reported_not_taken_for_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key, _file, claim, registry, metrics) = acknowledged_and_claimed_again(&dir);
        // Every read of this handle fails (EISDIR), as every read of a file on a failing mount would.
        let failing = File::open(dir.path()).unwrap();
        let (tx, _rx) = mpsc::channel(8);
        let tailer = resumed_tailer(&path, key, failing, claim, tx, registry.clone(), &metrics);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(tailer.run(cancel.clone()));
        tokio::time::timeout(Duration::from_secs(30), async {
            while !metrics.file_problems().contains_key(&path) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the failing check was not reported within 30 s");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(metrics.truncations.get(), 0, "taken for a rewrite");
        let stored = registry.snapshot(Duration::from_secs(3600));
        assert_eq!(stored[0].offset, 18, "the acknowledged offset went back");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("tailer did not stop")
            .unwrap();
    }

    /// A file rewritten (copytruncate, then more written than before) between its claim at a stored
    /// offset and the tailer's first read: the first read checks the bytes before the offset too.
    #[tokio::test(start_paused = true)]
    async fn a_file_rewritten_after_its_claim_is_read_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key, file, claim, registry, metrics) = acknowledged_and_claimed_again(&dir);
        assert_eq!(claim.offset, 18, "resumed at the stored offset");
        std::fs::write(&path, b"REWRITTEN-CONTENT-1\nX\n").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let tailer = resumed_tailer(&path, key, file, claim, tx, registry, &metrics);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(tailer.run(cancel.clone()));
        assert_eq!(
            records(&mut rx, 2, "the rewritten content").await,
            vec!["REWRITTEN-CONTENT-1", "X"]
        );
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("tailer did not stop")
            .unwrap();
    }
}
