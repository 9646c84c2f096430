//! The file registry: what the agent knows of every file it has read, keyed by device + inode.
//!
//! It decides where a claimed file starts (resume, truncated, replaced, new), keeps the progress of
//! each live file, and produces the checkpoint snapshot. A file can be claimed by one tailer at a time,
//! which is what makes two glob entries matching the same file, or a rotated file that a glob still
//! matches, harmless.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::now_ms;
use crate::state::checkpoint::{self, CheckpointStore, FileCheckpoint, Plan, Save};
use crate::state::identity::{start_of, tail_hash, FileKey, Fingerprint, Head, TailHash};
use crate::state::progress::{FileProgress, Mark, Moved};
use crate::telemetry::Metrics;
use prometheus_client::metrics::gauge::Gauge;

/// Why a claimed file starts where it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Known file, bytes before the stored offset unchanged: continue there.
    Resume,
    /// Known file, now shorter than the stored offset: read it again from 0.
    Truncated,
    /// Same inode, different head or different bytes before the offset: a new file reusing the inode.
    Replaced,
    /// Never seen.
    New,
}

impl Start {
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Resume => "resumed at stored offset",
            Start::Truncated => "shorter than stored offset: truncated, reading from 0",
            Start::Replaced => "inode reused by a new file, reading from 0",
            Start::New => "new file",
        }
    }
}

/// One open file as the status reports it: borrowed from the registry while it is locked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenFile<'a> {
    pub key: FileKey,
    pub path: Cow<'a, Path>,
    pub topic: Cow<'a, str>,
    /// Acknowledged offset.
    pub acked: u64,
    pub lag: u64,
}

pub struct Claim {
    pub progress: Arc<FileProgress>,
    pub offset: u64,
    pub start: Start,
    pub fingerprint: Fingerprint,
    /// The file's first bytes, from the same read: the tailer's guard.
    pub head: Head,
}

struct Record {
    /// The file as last checkpointed. While a generation is live, `progress` owns the acknowledged
    /// offset and `cp.offset`/`cp.tail_hash` trail it: only `sync` copies it over. Read [`Record::mark`].
    cp: FileCheckpoint,
    /// The current generation's progress: present while open and until its in-flight batches settle.
    progress: Option<Arc<FileProgress>>,
    open: bool,
    /// `progress`'s acknowledged version last copied into `cp` (`None`: not yet, or a new progress).
    seen: Option<u64>,
    /// The lag last published for this file: the gauge is set only when it moves.
    lag: Option<u64>,
    /// This file's lag series, fetched again at each refresh (see [`Metrics::file_lag_gauge`]).
    lag_gauge: Option<Gauge>,
    /// `cp` as the checkpoint document holds it; `None` once `cp` changed. Change `cp` only
    /// through [`Record::cp_mut`], which drops it.
    text: Option<String>,
    /// `cp` changed since the last save took the changes (a new record too): it goes to the
    /// journal. Set by [`Record::cp_mut`], which lists the key in [`Inner::changed`] as it sets it.
    changed: bool,
}

impl Record {
    fn new(cp: FileCheckpoint, progress: Option<Arc<FileProgress>>, open: bool) -> Record {
        Record {
            cp,
            progress,
            open,
            seen: None,
            lag: None,
            lag_gauge: None,
            text: None,
            changed: true,
        }
    }

    /// `cp` to change; lists the record in `changed` the first time since the last save.
    fn cp_mut<'a>(&'a mut self, changed: &mut Vec<FileKey>) -> &'a mut FileCheckpoint {
        self.text = None;
        if !self.changed {
            self.changed = true;
            changed.push(self.key());
        }
        &mut self.cp
    }

    fn key(&self) -> FileKey {
        FileKey {
            dev: self.cp.dev,
            ino: self.cp.ino,
        }
    }

    /// The acknowledged prefix: the live generation's, else the checkpointed one.
    fn mark(&self) -> Mark {
        match &self.progress {
            Some(p) => p.acked(),
            None => Mark {
                offset: self.cp.offset,
                // Checked when the checkpoint was read (16 hex digits, "" only at 0).
                tail_hash: TailHash::from_hex(&self.cp.tail_hash).unwrap_or_default(),
            },
        }
    }
}

/// Every this many checkpoint intervals the pass visits every record (not only those whose progress
/// moved): every open file's lag gauge is set again, gone records expire, and a batch delivered
/// only in part is counted.
const LAG_REFRESH_PULLS: u64 = 10;

/// Which records a checkpoint pass looks at.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pass {
    /// Those whose progress moved since the last pass (and all of them every
    /// [`LAG_REFRESH_PULLS`] passes): the periodic checkpoint.
    Moved,
    /// Every record: the final checkpoint (which also compacts the journal), and snapshots.
    All,
}

#[derive(Default)]
struct Inner {
    /// Ordered by identity, the checkpoint document's order: it is written without sorting.
    files: BTreeMap<FileKey, Record>,
    dirty: bool,
    /// Entry texts the last `sync` encoded for a snapshot (records that changed since one was
    /// last encoded).
    encoded: usize,
    /// Keys of records removed since the last save took the changes: they go to the journal as
    /// forgotten, unless a record of the same key is back.
    removed: Vec<FileKey>,
    /// Keys of records whose `changed` flag was set since the last save took the changes (a key
    /// may repeat when its record was removed and made again): an append visits these instead of
    /// every record (10,000 of them each second at idle10000, for the ~1,000 that moved).
    changed: Vec<FileKey>,
    /// Records the last pass looked at.
    visited: usize,
    /// Calls of `pull`, for [`LAG_REFRESH_PULLS`].
    pulls: u64,
    /// [`Metrics::lag_series_removed`] when the kept lag gauges were last fetched again: a refresh
    /// fetches them only when a series was removed since (making 10,000 labels every 10 s was a
    /// tenth of the checkpoint's cost at idle10000).
    lag_removals: u64,
    /// Records with `open` set, kept by claim and release (read at every claim and scrape, which
    /// counted all records each time: 10,000 at startup10k).
    open: usize,
}

impl Inner {
    /// Adds (or replaces) a record: new, so changed, and listed as such.
    fn insert(&mut self, key: FileKey, record: Record) {
        debug_assert!(record.changed, "a new record is saved");
        self.files.insert(key, record);
        self.changed.push(key);
    }
}

pub struct Registry {
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
    /// `tail.max_open_files`: checked under the lock in `claim`, so two discoverers cannot both pass.
    max_open: AtomicUsize,
    /// A claim was refused at `max_open`: open files that are caught up should make room (see
    /// [`Registry::slots_wanted`]). Cleared by the next claim that gets a slot.
    slots_wanted: std::sync::atomic::AtomicBool,
    /// Woken once per refused claim: one idle tailer (the one waiting longest) looks whether it can
    /// make room now, instead of at its next poll (idle files in watched directories poll every
    /// 32 s).
    slot_asked: tokio::sync::Notify,
    /// Files whose progress moved since the last pass.
    moved: Arc<Moved>,
}

impl Registry {
    pub fn new(stored: Vec<FileCheckpoint>, metrics: Arc<Metrics>) -> Arc<Registry> {
        // Loaded records are closed until claimed.
        let mut inner = Inner::default();
        for cp in stored {
            let key = FileKey {
                dev: cp.dev,
                ino: cp.ino,
            };
            inner.insert(key, Record::new(cp, None, false));
        }
        Arc::new(Registry {
            inner: Mutex::new(inner),
            metrics,
            max_open: AtomicUsize::new(usize::MAX),
            slots_wanted: std::sync::atomic::AtomicBool::new(false),
            slot_asked: tokio::sync::Notify::new(),
            moved: Arc::default(),
        })
    }

    /// Caps how many files may be open at once (`tail.max_open_files`).
    pub fn set_max_open(&self, n: usize) {
        self.max_open.store(n, Ordering::Relaxed);
    }

    pub fn max_open(&self) -> usize {
        self.max_open.load(Ordering::Relaxed)
    }

    /// Files claimed and not released: the one count of open files (the gauge reads it).
    pub fn open_count(&self) -> usize {
        let inner = self.lock();
        debug_assert_eq!(
            inner.open,
            inner.files.values().filter(|r| r.open).count(),
            "the open count drifted from the records"
        );
        inner.open
    }

    /// Whether a file is waiting for a slot under `max_open_files`: a tailer whose file is caught
    /// up and fully acknowledged then closes it (to be opened again when it changes), so the open
    /// slots rotate through the files with data instead of staying with idle ones.
    pub fn slots_wanted(&self) -> bool {
        self.slots_wanted.load(Ordering::Relaxed)
    }

    /// Completes when a claim was refused a slot (one waiter per refusal, oldest first).
    pub fn slot_asked(&self) -> tokio::sync::futures::Notified<'_> {
        self.slot_asked.notified()
    }

    /// Whether the open-file cap is reached (why a `claim` may have said no).
    pub fn at_capacity(&self) -> bool {
        self.open_count() >= self.max_open()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `file` (open, `size` bytes) for reading. `None` when another tailer holds it, or when
    /// `max_open` files are open already (see [`Registry::at_capacity`]).
    /// `from_end`: a file never seen before starts at the end of its last complete line.
    pub fn claim(
        &self,
        key: FileKey,
        path: &Path,
        topic: &str,
        file: &File,
        size: u64,
        from_end: bool,
    ) -> io::Result<Option<Claim>> {
        let mut inner = self.lock();
        if inner.open >= self.max_open() {
            self.slots_wanted.store(true, Ordering::Relaxed);
            self.slot_asked.notify_one();
            return Ok(None);
        }
        // A released generation with batches still in flight must settle first: a new one would start
        // at the acknowledged offset, send those batches again, and lose their acknowledgements.
        if inner
            .files
            .get(&key)
            .is_some_and(|r| r.open || r.progress.as_ref().is_some_and(|p| p.in_flight() > 0))
        {
            return Ok(None);
        }
        // No record of this device + inode: the same file may be known under another device number
        // (device numbers of LVM, overlay and NFS mounts can change across a reboot).
        let stored = if inner.files.contains_key(&key) {
            Some(key)
        } else {
            moved_device(&inner, key, path, file, size)?
        };
        let (start, offset) = match stored.and_then(|k| inner.files.get_mut(&k)) {
            Some(rec) => {
                let acked = rec.mark();
                let fp = Fingerprint {
                    hex: rec.cp.fingerprint.clone(),
                    len: rec.cp.fingerprint_len,
                };
                if size < acked.offset {
                    (Start::Truncated, 0)
                } else if !fp.matches(file, size)?
                    || tail_hash(file, acked.offset)? != acked.tail_hash
                {
                    // A different head, or different bytes before the offset: another file now.
                    (Start::Replaced, 0)
                } else {
                    (Start::Resume, acked.offset)
                }
            }
            None if from_end => (Start::New, last_line_end(file, size)?),
            None => (Start::New, 0),
        };
        if let Some(old) = stored.filter(|k| *k != key) {
            inner.files.remove(&old);
            inner.removed.push(old);
            tracing::info!(path = %path.display(), old = %old, new = %key, offset,
                           "file known under another device number (changed across a reboot?): resuming its record");
        }
        let (fingerprint, head) = start_of(file, size)?;
        let mark = Mark {
            offset,
            tail_hash: tail_hash(file, offset)?,
        };
        let progress = FileProgress::listed_in(mark, self.moved.clone(), key);
        progress.set_size(size);
        let now = now_ms();
        let cp = FileCheckpoint {
            dev: key.dev,
            ino: key.ino,
            fingerprint: fingerprint.hex.clone(),
            fingerprint_len: fingerprint.len,
            path: path.to_path_buf(),
            topic: topic.to_owned(),
            offset: mark.offset,
            tail_hash: mark.tail_hash.to_hex(),
            updated_ms: now,
            gone_since_ms: None,
        };
        inner.insert(key, Record::new(cp, Some(progress.clone()), true));
        // Not open before: an open record returned above.
        inner.open += 1;
        inner.dirty = true;
        self.slots_wanted.store(false, Ordering::Relaxed);
        Ok(Some(Claim {
            progress,
            offset,
            start,
            fingerprint,
            head,
        }))
    }

    /// Starts a new generation at `start` (after a truncation): late acknowledgements of the old
    /// generation can no longer move the recorded offset.
    pub fn new_generation(&self, key: FileKey, start: Mark) -> Arc<FileProgress> {
        let progress = FileProgress::listed_in(start, self.moved.clone(), key);
        let mut inner = self.lock();
        if let Some(rec) = inner.files.get_mut(&key) {
            // The next sync copies `start` into the record, as it does every acknowledged offset.
            rec.progress = Some(progress.clone());
            rec.seen = None;
        }
        inner.dirty = true;
        progress
    }

    pub fn update_fingerprint(&self, key: FileKey, fp: &Fingerprint) {
        let mut inner = self.lock();
        let Inner { files, changed, .. } = &mut *inner;
        if let Some(rec) = files.get_mut(&key) {
            let cp = rec.cp_mut(changed);
            cp.fingerprint.clone_from(&fp.hex);
            cp.fingerprint_len = fp.len;
            inner.dirty = true;
        }
    }

    /// The tailer let go of the file. `forget`: drop the record once its progress settles (a rotated
    /// file shipped to its end). `gone`: the file no longer exists at its path, so its record may expire.
    pub fn release(&self, key: FileKey, gone: bool, forget: bool) {
        let mut inner = self.lock();
        // A slot is free now: the file waiting for one takes it at its next claim (or asks again).
        self.slots_wanted.store(false, Ordering::Relaxed);
        // Its progress is dropped once it settles: the next pass looks.
        self.moved.push(key);
        let was_open = inner.files.get(&key).is_some_and(|r| r.open);
        if was_open {
            inner.open -= 1;
        }
        if forget {
            if let Some(rec) = inner.files.get(&key) {
                if rec.progress.as_ref().is_none_or(|p| p.in_flight() == 0) {
                    inner.files.remove(&key);
                    inner.removed.push(key);
                    inner.dirty = true;
                    return;
                }
            }
        }
        let Inner { files, changed, .. } = &mut *inner;
        if let Some(rec) = files.get_mut(&key) {
            rec.open = false;
            if gone || forget {
                rec.cp_mut(changed).gone_since_ms = Some(now_ms());
            }
        }
        inner.dirty = true;
    }

    /// Stored files in `dir` that no tailer holds: candidates for finishing a file rotated while the
    /// agent was down.
    pub fn unclaimed_in_dir(&self, dir: &Path) -> Vec<FileCheckpoint> {
        self.lock()
            .files
            .values()
            .filter(|r| !r.open && r.cp.path.parent() == Some(dir))
            .map(|r| r.cp.clone())
            .collect()
    }

    /// The progress of files whose recorded path satisfies `pred` and that have batches in flight.
    pub fn in_flight_where(&self, pred: impl Fn(&Path) -> bool) -> Vec<Arc<FileProgress>> {
        self.lock()
            .files
            .values()
            .filter(|r| pred(&r.cp.path))
            .filter_map(|r| r.progress.clone())
            .filter(|p| p.in_flight() > 0)
            .collect()
    }

    /// Records no tailer holds, with no batch in flight, not yet marked gone: what [`sweep`] checks.
    pub fn idle_records(&self) -> Vec<FileCheckpoint> {
        self.lock()
            .files
            .values()
            .filter(|r| !r.open && r.progress.is_none() && r.cp.gone_since_ms.is_none())
            .map(|r| r.cp.clone())
            .collect()
    }

    /// Starts the retention clock (`checkpoint.gone_retention`) of these records, unless they were
    /// claimed since.
    pub fn mark_gone(&self, keys: &[FileKey]) {
        let now = now_ms();
        let mut inner = self.lock();
        let mut any = false;
        let Inner { files, changed, .. } = &mut *inner;
        for key in keys {
            if let Some(rec) = files.get_mut(key) {
                if !rec.open && rec.progress.is_none() && rec.cp.gone_since_ms.is_none() {
                    rec.cp_mut(changed).gone_since_ms = Some(now);
                    any = true;
                }
            }
        }
        inner.dirty |= any;
    }

    pub fn is_open(&self, key: FileKey) -> bool {
        self.lock().files.get(&key).is_some_and(|r| r.open)
    }

    /// Whether `key` has a record: claimed now, or stored in the checkpoint.
    pub fn knows(&self, key: FileKey) -> bool {
        self.lock().files.contains_key(&key)
    }

    /// Pulls acknowledged offsets from live progress (the one place the record copies them) and
    /// expires gone records; when anything changed since the last call, returns what to save:
    /// journal lines of the records changed and removed since, or the whole document when `store`
    /// asks for a snapshot (see [`CheckpointStore::plan`]). The decision is taken on the counts,
    /// before anything is encoded: building the document for thousands of idle files is the cost
    /// the journal removes. Records that did not change are neither copied nor encoded again.
    pub fn sync(
        &self,
        retention: Duration,
        pass: Pass,
        store: &CheckpointStore,
    ) -> Option<Result<Save, checkpoint::FormatError>> {
        let mut guard = self.lock();
        if !self.pull(&mut guard, retention, pass) {
            return None;
        }
        let inner = &mut *guard;
        let mut removed = std::mem::take(&mut inner.removed);
        removed.sort_unstable();
        removed.dedup();
        removed.retain(|k| !inner.files.contains_key(k));
        if store.plan() == Plan::Append {
            // Sets before forgets: a crash can tear an append anywhere, and a record taken over
            // from another device number must not be forgotten under the old key without being
            // set under the new one. Each record's flag is taken as its line is written.
            // In key order, the order the document's entries have.
            let mut changed = std::mem::take(&mut inner.changed);
            changed.sort_unstable();
            changed.dedup();
            // Sized up front: grown by doubling, the ~250 KB of idle10000's saves were copied
            // again and again (2 % of its samples).
            let mut out = Vec::with_capacity(changed.len() * (checkpoint::SET_LINE_BYTES + 100));
            for (i, key) in changed.iter().enumerate() {
                let Some(rec) = inner.files.get_mut(key).filter(|r| r.changed) else {
                    continue;
                };
                rec.changed = false;
                if let Err(e) = checkpoint::write_set_line(&mut out, &rec.cp) {
                    inner.changed.extend_from_slice(&changed[i + 1..]);
                    return Some(Err(e));
                }
            }
            for key in &removed {
                out.extend(checkpoint::forget_line(key.dev, key.ino));
            }
            if store.fits(out.len()) {
                inner.encoded = 0;
                return Some(Ok(Save::Append(out)));
            }
        } else {
            for key in std::mem::take(&mut inner.changed) {
                if let Some(rec) = inner.files.get_mut(&key) {
                    rec.changed = false;
                }
            }
        }
        Some(Self::document(inner).map(Save::Snapshot))
    }

    /// The whole checkpoint document, from the entry texts kept per record.
    fn document(inner: &mut Inner) -> Result<Vec<u8>, checkpoint::FormatError> {
        let mut texts = Vec::with_capacity(inner.files.len());
        let mut encoded = 0;
        for (index, rec) in inner.files.values_mut().enumerate() {
            if rec.text.is_none() {
                rec.text = Some(checkpoint::entry_text(index, &rec.cp)?);
                encoded += 1;
            }
        }
        inner.encoded = encoded;
        for rec in inner.files.values() {
            texts.push(rec.text.as_deref().unwrap_or_default());
        }
        Ok(checkpoint::document(texts.into_iter()))
    }

    /// Every record as it would be checkpointed now (after pulling acknowledged offsets).
    pub fn snapshot(&self, retention: Duration) -> Vec<FileCheckpoint> {
        let mut inner = self.lock();
        self.pull(&mut inner, retention, Pass::All);
        inner.files.values().map(|r| r.cp.clone()).collect()
    }

    /// Whether anything changed: acknowledged offsets copied in, records expired, or marked dirty.
    fn pull(&self, inner: &mut Inner, retention: Duration, pass: Pass) -> bool {
        let now = now_ms();
        let mut dirty = std::mem::take(&mut inner.dirty);
        inner.pulls = inner.pulls.wrapping_add(1);
        // Every so often the gauge is set even if unchanged: a rotated file's release removes the
        // series of its path, which the file now at that path shares.
        let refresh = inner.pulls % LAG_REFRESH_PULLS == 0;
        // Read before the gauges are fetched: a removal while they are is seen at the next refresh.
        let removals = self.metrics.lag_series_removed();
        let refetch = refresh && removals != inner.lag_removals;
        if refetch {
            inner.lag_removals = removals;
        }
        let moved = self.moved.take();
        let mut visited = 0;
        if pass == Pass::All || refresh {
            for key in &moved {
                if let Some(p) = inner.files.get(key).and_then(|r| r.progress.as_ref()) {
                    p.unlist();
                }
            }
            let Inner { files, changed, .. } = &mut *inner;
            for rec in files.values_mut() {
                dirty |= self.visit(rec, changed, now, refresh, refetch);
                visited += 1;
            }
            let before = inner.files.len();
            let retention_ms = retention.as_millis() as u64;
            let Inner { files, removed, .. } = inner;
            files.retain(|key, r| {
                let keep = r.open
                    || r.progress.is_some()
                    || r.cp
                        .gone_since_ms
                        .is_none_or(|g| now.saturating_sub(g) < retention_ms);
                if !keep {
                    removed.push(*key);
                }
                keep
            });
            dirty |= inner.files.len() != before;
        } else {
            let Inner { files, changed, .. } = &mut *inner;
            for key in moved {
                if let Some(rec) = files.get_mut(&key) {
                    if let Some(p) = &rec.progress {
                        p.unlist();
                    }
                    dirty |= self.visit(rec, changed, now, false, false);
                    visited += 1;
                }
            }
        }
        inner.visited = visited;
        dirty
    }

    /// Copies a record's acknowledged offset in and sets its lag gauge (`refresh`: even if the lag
    /// did not move; `refetch`: with the gauge fetched again); whether its entry changed.
    fn visit(
        &self,
        rec: &mut Record,
        changed: &mut Vec<FileKey>,
        now: u64,
        refresh: bool,
        refetch: bool,
    ) -> bool {
        let Some(p) = rec.progress.clone() else {
            return false;
        };
        let mut dirty = false;
        if let Some((version, m)) = p.acked_since(rec.seen) {
            rec.seen = Some(version);
            if m.offset != rec.cp.offset || !m.tail_hash.is_hex(&rec.cp.tail_hash) {
                let cp = rec.cp_mut(changed);
                cp.offset = m.offset;
                cp.tail_hash = m.tail_hash.to_hex();
                cp.updated_ms = now;
                dirty = true;
            }
        }
        if rec.open {
            let lag = p.lag();
            if refresh || rec.lag != Some(lag) {
                if refetch || rec.lag_gauge.is_none() {
                    rec.lag_gauge = self.metrics.file_lag_gauge(&rec.cp.path);
                }
                rec.lag = Some(lag);
                if let Some(g) = &rec.lag_gauge {
                    g.set(lag as i64);
                }
            }
        } else if p.in_flight() == 0 {
            rec.progress = None;
            rec.seen = None;
        }
        dirty
    }

    /// Marks the registry changed so the next sync writes a checkpoint (after a failed write).
    pub fn mark_dirty(&self) {
        self.lock().dirty = true;
    }

    /// Runs `f` over every open file, under the registry's lock: borrowed, not copied (the status
    /// cloned 10,000 paths and topics every 5 s, 4 % of idle10000's samples), so `f` must be brief.
    pub fn with_open_files<R>(&self, f: impl FnOnce(&[OpenFile<'_>]) -> R) -> R {
        let inner = self.lock();
        let open: Vec<OpenFile<'_>> = inner
            .files
            .iter()
            .filter(|(_, r)| r.open)
            .map(|(key, r)| OpenFile {
                key: *key,
                path: Cow::Borrowed(r.cp.path.as_path()),
                topic: Cow::Borrowed(r.cp.topic.as_str()),
                // Not `mark()`, which decodes a closed file's stored tail hash: the offset is all the
                // status shows.
                acked: r
                    .progress
                    .as_ref()
                    .map_or(r.cp.offset, |p| p.acked_offset()),
                lag: r.progress.as_ref().map_or(0, |p| p.lag()),
            })
            .collect();
        f(&open)
    }
}

/// The record of the file at `path` kept under another device number: same path, a different device,
/// no tailer, and its fingerprint matches the file's head. The same inode is preferred.
fn moved_device(
    inner: &Inner,
    key: FileKey,
    path: &Path,
    file: &File,
    size: u64,
) -> io::Result<Option<FileKey>> {
    let mut candidates: Vec<(&FileKey, &Record)> = inner
        .files
        .iter()
        .filter(|(k, r)| k.dev != key.dev && r.cp.path == path && !r.open && r.progress.is_none())
        .collect();
    candidates.sort_by_key(|(k, _)| (k.ino != key.ino, **k));
    for (k, r) in candidates {
        let fp = Fingerprint {
            hex: r.cp.fingerprint.clone(),
            len: r.cp.fingerprint_len,
        };
        if fp.matches(file, size)? {
            return Ok(Some(*k));
        }
    }
    Ok(None)
}

/// Whether the file of a record still exists: at its path or, renamed, in the same directory, with
/// the same device + inode and the stored fingerprint.
fn still_exists(cp: &FileCheckpoint) -> bool {
    let key = FileKey {
        dev: cp.dev,
        ino: cp.ino,
    };
    let same = |m: &std::fs::Metadata| m.is_file() && FileKey::of(m) == key;
    let at_path = std::fs::metadata(&cp.path)
        .ok()
        .filter(same)
        .map(|_| cp.path.clone());
    let found = at_path.or_else(|| {
        std::fs::read_dir(cp.path.parent()?)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.metadata().is_ok_and(|m| same(&m)))
            .map(|e| e.path())
    });
    let Some(found) = found else { return false };
    // O_NONBLOCK | O_NOFOLLOW: a path swapped for a FIFO or a symlink since the stat is not followed.
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&found)
    else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let fp = Fingerprint {
        hex: cp.fingerprint.clone(),
        len: cp.fingerprint_len,
    };
    same(&meta) && fp.matches(&file, meta.len()).unwrap_or(false)
}

/// Starts the retention clock of every idle record whose file no longer exists (deleted, compressed,
/// moved away while the agent was down), and, when `owned` is given (the collect configuration in
/// effect), of every idle record whose path no entry owns anymore. Does file I/O: run it off the
/// async workers. Returns (and counts) how many records it marked.
pub fn sweep(registry: &Registry, owned: Option<&dyn Fn(&Path) -> bool>) -> usize {
    let gone: Vec<FileKey> = registry
        .idle_records()
        .iter()
        .filter(|cp| owned.is_some_and(|owns| !owns(&cp.path)) || !still_exists(cp))
        .map(|cp| FileKey {
            dev: cp.dev,
            ino: cp.ino,
        })
        .collect();
    registry.mark_gone(&gone);
    if !gone.is_empty() {
        registry.metrics.records_expiring(gone.len());
    }
    gone.len()
}

/// Offset just past the last newline in the file's final 64 KiB (or 0), so `from = "end"` starts on a
/// line boundary rather than in the middle of a line.
fn last_line_end(file: &File, size: u64) -> io::Result<u64> {
    let window = size.min(64 * 1024);
    let mut buf = vec![0u8; window as usize];
    let n = file.read_at(&mut buf, size - window)?;
    buf.truncate(n);
    Ok(memchr::memrchr(b'\n', &buf).map_or(size - window, |i| size - window + i as u64 + 1))
}

/// Writes the checkpoint at every `interval` when something changed; returns at `stop` (the final
/// write is the shutdown's, in `app`, after the deliveries were flushed). Write failures (full disk, read-only state dir) are counted and retried at the next tick:
/// offsets stay in memory meanwhile and nothing else stops.
pub async fn run_checkpointer(
    registry: Arc<Registry>,
    store: Arc<CheckpointStore>,
    interval: Duration,
    retention: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => write_checkpoint(&registry, &store, retention, Pass::Moved).await,
        }
    }
}

pub async fn write_checkpoint(
    registry: &Arc<Registry>,
    store: &Arc<CheckpointStore>,
    retention: Duration,
    pass: Pass,
) {
    if pass == Pass::All && store.journal_has_changes() {
        // The final checkpoint (a clean stop) leaves the whole state in checkpoints.json and the
        // journal empty: what an agent that reads no journal resumes from after a downgrade.
        store.compact_next();
        registry.mark_dirty();
    }
    let Some(save) = registry.sync(retention, pass, store) else {
        return;
    };
    // After any failure the changes taken are in no journal: the next save is a snapshot (the
    // store makes it one itself after a failed write).
    let save = match save {
        Ok(s) => s,
        Err(source) => {
            let e = checkpoint::CheckpointError::Invalid {
                path: store.path().to_path_buf(),
                source,
            };
            registry.metrics.checkpoint_failed(store.path(), &e);
            store.compact_next();
            registry.mark_dirty();
            return;
        }
    };
    let snapshot = matches!(save, Save::Snapshot(_));
    let s = store.clone();
    let result = tokio::task::spawn_blocking(move || s.write(&save)).await;
    match result {
        Ok(Ok(())) => registry.metrics.checkpoint_written(snapshot),
        Ok(Err(e)) => {
            registry.metrics.checkpoint_failed(store.path(), &e);
            registry.mark_dirty();
        }
        Err(e) => {
            registry.metrics.checkpoint_failed(store.path(), &e);
            store.compact_next();
            registry.mark_dirty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    /// `sync`'s document read back (a full pass, as the final checkpoint): what a restart would load.
    fn synced(r: &Registry, retention: Duration) -> Option<Vec<FileCheckpoint>> {
        sync_doc(r, retention, Pass::All)
            .map(|doc| checkpoint::decode(&doc.expect("encodable")).expect("decodable"))
    }

    /// `sync` for a store that never wrote a journal: always the whole document.
    fn sync_doc(
        r: &Registry,
        retention: Duration,
        pass: Pass,
    ) -> Option<Result<Vec<u8>, checkpoint::FormatError>> {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(dir.path()).unwrap();
        r.sync(retention, pass, &store).map(|save| {
            save.map(|save| match save {
                Save::Snapshot(doc) => doc,
                Save::Append(_) => unreachable!("no journal was written"),
            })
        })
    }

    fn setup(content: &[u8]) -> (tempfile::TempDir, PathBuf, File, FileKey) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, content).unwrap();
        let f = File::open(&path).unwrap();
        let m = f.metadata().unwrap();
        let key = FileKey {
            dev: m.dev(),
            ino: m.ino(),
        };
        (dir, path, f, key)
    }

    fn registry() -> Arc<Registry> {
        Registry::new(Vec::new(), Metrics::new(false))
    }

    /// Claims `n` new files of 8 bytes in `dir`.
    fn claim_files(r: &Registry, dir: &Path, n: usize) -> Vec<(Claim, File, FileKey)> {
        (0..n)
            .map(|i| {
                let path = dir.join(format!("f{i}.log"));
                std::fs::write(&path, b"one\ntwo\n").unwrap();
                let f = File::open(&path).unwrap();
                let key = FileKey::of(&f.metadata().unwrap());
                let c = r.claim(key, &path, "t", &f, 8, false).unwrap().unwrap();
                (c, f, key)
            })
            .collect()
    }

    fn ack_all(claim: &Claim, offset: u64, file: &File) {
        let seq = claim.progress.register(Mark {
            offset,
            tail_hash: tail_hash(file, offset).unwrap(),
        });
        claim.progress.complete(seq);
    }

    /// The cap is checked under the registry's lock: a second claim past it is refused whoever
    /// asks (it used to be checked against a gauge before claiming, so two discoverers could both
    /// pass), and a release makes room again.
    #[test]
    fn claims_past_max_open_are_refused_until_one_is_released() {
        let (_d, path, f, key) = setup(b"one\n");
        let dir2 = tempfile::tempdir().unwrap();
        let path2 = dir2.path().join("b.log");
        std::fs::write(&path2, b"two\n").unwrap();
        let f2 = File::open(&path2).unwrap();
        let m2 = f2.metadata().unwrap();
        let key2 = FileKey {
            dev: m2.dev(),
            ino: m2.ino(),
        };
        let r = registry();
        r.set_max_open(1);
        assert!(r.claim(key, &path, "t", &f, 4, false).unwrap().is_some());
        assert!(r.claim(key2, &path2, "t", &f2, 4, false).unwrap().is_none());
        assert!(r.at_capacity());
        assert_eq!(r.open_count(), 1);
        r.release(key, false, false);
        assert!(!r.at_capacity());
        assert!(r.claim(key2, &path2, "t", &f2, 4, false).unwrap().is_some());
    }

    /// An append visits only the records listed as changed (not all of them), and writes them in
    /// key order whatever order they changed in: the order of the document's entries.
    #[test]
    fn an_append_writes_the_changed_records_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(state.path()).unwrap();
        let r = registry();
        let mut claims = claim_files(&r, dir.path(), 4);
        claims.sort_by_key(|c| c.2);
        let first = r
            .sync(Duration::from_secs(60), Pass::Moved, &store)
            .unwrap()
            .unwrap();
        assert!(matches!(first, Save::Snapshot(_)), "no journal yet");
        store.write(&first).unwrap();
        assert!(
            r.lock().changed.is_empty(),
            "the snapshot took every change"
        );

        // The last key changes first, then the first; the two between do not change.
        for i in [3, 0] {
            r.update_fingerprint(claims[i].2, &start_of(&claims[i].1, 4).unwrap().0);
        }
        let Save::Append(lines) = r
            .sync(Duration::from_secs(60), Pass::Moved, &store)
            .unwrap()
            .unwrap()
        else {
            panic!("the journal fits: an append")
        };
        let inos: Vec<u64> = lines
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_slice(l).unwrap();
                v["set"]["ino"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(inos, vec![claims[0].2.ino, claims[3].2.ino]);
        assert!(r.lock().changed.is_empty());
        assert!(
            r.sync(Duration::from_secs(60), Pass::Moved, &store)
                .is_none(),
            "nothing changed since"
        );
    }

    /// With thousands of idle files, encoding every record at every interval was most of the
    /// checkpoint's cost: only a record that changed is encoded again, and the document is still
    /// exactly what encoding every record gives.
    #[test]
    fn a_sync_encodes_again_only_the_records_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry();
        let claims = claim_files(&r, dir.path(), 3);
        assert!(sync_doc(&r, Duration::from_secs(60), Pass::Moved).is_some());
        assert_eq!(r.lock().encoded, 3);
        assert!(
            sync_doc(&r, Duration::from_secs(60), Pass::Moved).is_none(),
            "nothing changed: nothing to write"
        );

        let (c, f, _) = &claims[1];
        ack_all(c, 4, f);
        r.update_fingerprint(claims[2].2, &start_of(&claims[2].1, 8).unwrap().0);
        let doc = sync_doc(&r, Duration::from_secs(60), Pass::Moved)
            .unwrap()
            .unwrap();
        assert_eq!(
            r.lock().encoded,
            2,
            "the acknowledged record and the new fingerprint, not the unchanged one"
        );
        let snapshot = r.snapshot(Duration::from_secs(60));
        assert_eq!(
            String::from_utf8(doc).unwrap(),
            String::from_utf8(checkpoint::encode(&snapshot).unwrap()).unwrap()
        );
        assert_eq!(snapshot.iter().filter(|x| x.offset == 4).count(), 1);
    }

    /// With 10,000 mostly idle files, rewriting and fsyncing the whole document at every interval
    /// was ~170 GB/day of writes per host: a periodic save with one record changed (or one
    /// forgotten) appends it to the journal, `checkpoints.json` is left as it was, and a restart
    /// sees the change.
    #[tokio::test]
    async fn a_periodic_save_of_one_change_appends_to_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(state.path()).unwrap();
        let store = Arc::new(store);
        let r = registry();
        let claims = claim_files(&r, dir.path(), 4);
        let retention = Duration::from_secs(60);
        write_checkpoint(&r, &store, retention, Pass::Moved).await;
        let snapshot = std::fs::read(store.path()).unwrap();
        let before = std::fs::metadata(store.path()).unwrap();
        let identity = |m: &std::fs::Metadata| (m.ino(), m.len(), m.mtime(), m.mtime_nsec());
        let journal = std::fs::read(store.journal_path()).unwrap();

        ack_all(&claims[1].0, 4, &claims[1].1);
        write_checkpoint(&r, &store, retention, Pass::Moved).await;
        let after = std::fs::metadata(store.path()).unwrap();
        assert_eq!(
            identity(&after),
            identity(&before),
            "checkpoints.json rewritten"
        );
        assert_eq!(std::fs::read(store.path()).unwrap(), snapshot);
        let grown = std::fs::read(store.journal_path()).unwrap();
        assert!(grown.starts_with(&journal) && grown.len() > journal.len());

        let (_, loaded) = CheckpointStore::open(state.path()).unwrap();
        let offset = |files: &[FileCheckpoint], key: FileKey| {
            files
                .iter()
                .find(|f| (f.dev, f.ino) == (key.dev, key.ino))
                .map(|f| f.offset)
        };
        assert_eq!(offset(&loaded.files, claims[1].2), Some(4));
        assert_eq!(loaded.files.len(), 4);
        assert_eq!(
            loaded.journal,
            Some(checkpoint::JournalFound::Replayed { changes: 1 })
        );

        // A rotated file shipped to its end is forgotten: a journal line too.
        r.release(claims[3].2, false, true);
        write_checkpoint(&r, &store, retention, Pass::Moved).await;
        assert_eq!(
            identity(&std::fs::metadata(store.path()).unwrap()),
            identity(&before)
        );
        let (_, loaded) = CheckpointStore::open(state.path()).unwrap();
        assert_eq!(offset(&loaded.files, claims[3].2), None, "forgotten");
        assert_eq!(offset(&loaded.files, claims[1].2), Some(4));
        assert_eq!(loaded.files.len(), 3);
        assert_eq!(
            loaded.files,
            r.snapshot(retention),
            "what a restart loads is the registry's state"
        );

        // The final checkpoint (a clean stop) leaves everything in checkpoints.json and the journal
        // empty: an agent that reads no journal (after a downgrade) resumes from there.
        write_checkpoint(&r, &store, retention, Pass::All).await;
        let journal = std::fs::read_to_string(store.journal_path()).unwrap();
        assert_eq!(journal.lines().count(), 1, "changes left: {journal}");
        // Saves counted, and which of them were snapshots: the first, and the final one.
        assert_eq!(
            (
                r.metrics.checkpoint_writes.get(),
                r.metrics.checkpoint_snapshots.get()
            ),
            (4, 2)
        );
        let alone = checkpoint::decode(&std::fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(alone, r.snapshot(retention));
    }

    /// A record taken over from another device number is a set of the new key and a forget of the
    /// old one in one append; a crash that keeps only the first line of it must not leave the file
    /// without any record.
    #[tokio::test]
    async fn an_append_cut_after_its_first_line_keeps_a_record_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let (mut stored, key) = stored_after_reading(&path, b"one\ntwo\n");
        stored[0].dev = key.dev + 1;
        for i in 0..4 {
            let other = dir.path().join(format!("other{i}.log"));
            stored.extend(stored_after_reading(&other, b"x\n").0);
        }
        let (store, _) = CheckpointStore::open(state.path()).unwrap();
        let store = Arc::new(store);
        let r = Registry::new(stored, Metrics::new(false));
        let retention = Duration::from_secs(3600);
        r.mark_dirty();
        write_checkpoint(&r, &store, retention, Pass::Moved).await;
        let journal = std::fs::read(store.journal_path()).unwrap();

        let f = File::open(&path).unwrap();
        let c = r.claim(key, &path, "t", &f, 8, false).unwrap().unwrap();
        assert_eq!((c.start, c.offset), (Start::Resume, 8));
        write_checkpoint(&r, &store, retention, Pass::Moved).await;
        let grown = std::fs::read(store.journal_path()).unwrap();
        assert!(grown.starts_with(&journal), "appended, not compacted");
        let appended = &grown[journal.len()..];
        assert_eq!(appended.iter().filter(|&&b| b == b'\n').count(), 2);
        let first = memchr::memchr(b'\n', appended).unwrap() + 1;
        std::fs::write(store.journal_path(), &grown[..journal.len() + first]).unwrap();

        let (_, loaded) = CheckpointStore::open(state.path()).unwrap();
        let at_path: Vec<_> = loaded.files.iter().filter(|f| f.path == path).collect();
        assert!(
            at_path
                .iter()
                .any(|f| (f.dev, f.ino, f.offset) == (key.dev, key.ino, 8)),
            "{at_path:?}"
        );
    }

    /// With 10,000 idle files the checkpoint went through every record at every interval (pull was
    /// 10 % of idle10000's samples): a periodic pass visits only the files whose progress moved
    /// (acknowledged or grown), and every [`LAG_REFRESH_PULLS`]-th pass all of them.
    #[test]
    fn a_periodic_pass_visits_only_the_files_whose_progress_moved() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry();
        let claims = claim_files(&r, dir.path(), 4);
        let retention = Duration::from_secs(60);
        assert!(sync_doc(&r, retention, Pass::Moved).is_some());
        assert_eq!(r.lock().visited, 4, "new files");
        assert!(sync_doc(&r, retention, Pass::Moved).is_none());
        assert_eq!(r.lock().visited, 0, "nothing moved");

        ack_all(&claims[1].0, 4, &claims[1].1);
        claims[2].0.progress.set_size(100);
        claims[3].0.progress.set_size(8);
        let doc = sync_doc(&r, retention, Pass::Moved).unwrap().unwrap();
        assert_eq!(
            r.lock().visited,
            2,
            "the acknowledged file and the grown one, not the unchanged two"
        );
        let decoded = checkpoint::decode(&doc).unwrap();
        assert_eq!(decoded.iter().filter(|x| x.offset == 4).count(), 1);

        while r.lock().pulls % LAG_REFRESH_PULLS != LAG_REFRESH_PULLS - 1 {
            sync_doc(&r, retention, Pass::Moved);
        }
        sync_doc(&r, retention, Pass::Moved);
        assert_eq!(r.lock().visited, 4, "every so often, all");
    }

    /// A file's lag series is made once and its gauge kept; the release of a rotated file at the same
    /// path removes the series both share, and the kept gauge, now detached, is fetched again at the
    /// next full pass.
    #[test]
    fn a_lag_series_removed_by_a_release_at_the_path_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new(true);
        let r = Registry::new(Vec::new(), metrics.clone());
        let claims = claim_files(&r, dir.path(), 1);
        let path = dir.path().join("f0.log");
        let series = |lag: u64| {
            format!(
                "logagent_file_lag_bytes{{path=\"{}\"}} {lag}",
                path.display()
            )
        };
        let retention = Duration::from_secs(60);
        claims[0].0.progress.set_size(100);
        sync_doc(&r, retention, Pass::Moved);
        assert!(
            metrics.encode().contains(&series(100)),
            "{}",
            metrics.encode()
        );

        metrics.clear_file_lag(&path);
        claims[0].0.progress.set_size(200);
        while r.lock().pulls % LAG_REFRESH_PULLS != LAG_REFRESH_PULLS - 1 {
            sync_doc(&r, retention, Pass::Moved);
        }
        sync_doc(&r, retention, Pass::Moved);
        assert!(
            metrics.encode().contains(&series(200)),
            "series back after a full pass: {}",
            metrics.encode()
        );
    }

    #[test]
    fn resume_after_release_and_reclaim() {
        let (_d, path, f, key) = setup(b"one\ntwo\n");
        let r = registry();
        let c = r.claim(key, &path, "t", &f, 8, false).unwrap().unwrap();
        assert_eq!((c.start, c.offset), (Start::New, 0));
        assert!(
            r.claim(key, &path, "t", &f, 8, false).unwrap().is_none(),
            "claimed twice"
        );
        ack_all(&c, 4, &f);
        r.release(key, false, false);
        let again = r.claim(key, &path, "t", &f, 8, false).unwrap().unwrap();
        assert_eq!((again.start, again.offset), (Start::Resume, 4));
    }

    #[test]
    fn no_reclaim_while_the_released_generation_has_batches_in_flight() {
        let (_d, path, f, key) = setup(b"one\ntwo\n");
        let r = registry();
        let c = r.claim(key, &path, "t", &f, 8, false).unwrap().unwrap();
        ack_all(&c, 4, &f);
        let seq = c.progress.register(Mark {
            offset: 8,
            tail_hash: tail_hash(&f, 8).unwrap(),
        });
        r.release(key, false, false);
        assert!(
            r.claim(key, &path, "t", &f, 8, false).unwrap().is_none(),
            "claimed with a batch in flight"
        );
        c.progress.complete(seq);
        let again = r.claim(key, &path, "t", &f, 8, false).unwrap().unwrap();
        assert_eq!(
            (again.start, again.offset),
            (Start::Resume, 8),
            "the late acknowledgement counts"
        );
    }

    #[test]
    fn truncation_and_replacement_are_detected_from_a_checkpoint() {
        let (_d, path, f, key) = setup(b"hello world\nsecond line\n");
        let r = registry();
        let c = r.claim(key, &path, "t", &f, 24, false).unwrap().unwrap();
        ack_all(&c, 24, &f);
        r.release(key, false, false);
        let snapshot = synced(&r, Duration::from_secs(60)).unwrap();

        // Truncated: same head, shorter than the offset.
        std::fs::write(&path, b"hello world\n").unwrap();
        let r2 = Registry::new(snapshot.clone(), Metrics::new(false));
        let c2 = r2.claim(key, &path, "t", &f, 12, false).unwrap().unwrap();
        assert_eq!((c2.start, c2.offset), (Start::Truncated, 0));

        // Same head, same length or more, but the bytes before the offset differ: rewritten.
        std::fs::write(&path, b"hello world\nSECOND LINE\nmore\n").unwrap();
        let r3 = Registry::new(snapshot.clone(), Metrics::new(false));
        let c3 = r3.claim(key, &path, "t", &f, 29, false).unwrap().unwrap();
        assert_eq!(c3.start, Start::Replaced);

        // A different head: the inode now belongs to another file.
        std::fs::write(&path, b"other file entirely\n and more bytes\n").unwrap();
        let r4 = Registry::new(snapshot, Metrics::new(false));
        let c4 = r4.claim(key, &path, "t", &f, 36, false).unwrap().unwrap();
        assert_eq!((c4.start, c4.offset), (Start::Replaced, 0));
    }

    #[test]
    fn from_end_starts_after_the_last_complete_line() {
        let (_d, path, f, key) = setup(b"a\nb\npartial");
        let c = registry()
            .claim(key, &path, "t", &f, 11, true)
            .unwrap()
            .unwrap();
        assert_eq!(c.offset, 4);
    }

    /// A checkpoint holding `content` fully acknowledged at `path`, as a fresh agent would load it.
    fn stored_after_reading(path: &Path, content: &[u8]) -> (Vec<FileCheckpoint>, FileKey) {
        std::fs::write(path, content).unwrap();
        let f = File::open(path).unwrap();
        let m = f.metadata().unwrap();
        let key = FileKey::of(&m);
        let r = registry();
        let c = r
            .claim(key, path, "t", &f, m.len(), false)
            .unwrap()
            .unwrap();
        ack_all(&c, m.len(), &f);
        r.release(key, false, false);
        (r.snapshot(Duration::from_secs(3600)), key)
    }

    fn gone_since(r: &Registry) -> Vec<Option<u64>> {
        r.snapshot(Duration::from_secs(3600))
            .iter()
            .map(|cp| cp.gone_since_ms)
            .collect()
    }

    #[test]
    fn records_of_deleted_files_expire_after_a_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let (stored, _) = stored_after_reading(&path, b"one\ntwo\n");
        let r = Registry::new(stored.clone(), Metrics::new(false));
        // The file is still there: the record stays, without a retention clock.
        assert_eq!(sweep(&r, None), 0);
        assert_eq!(gone_since(&r), vec![None]);
        // Deleted while the agent was down: no tailer will ever release it.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(sweep(&r, None), 1);
        assert!(gone_since(&r)[0].is_some(), "retention clock started");
        assert_eq!(
            synced(&r, Duration::ZERO).map(|s| s.len()),
            Some(0),
            "expired after gone_retention"
        );
    }

    #[test]
    fn a_renamed_file_in_the_same_directory_still_exists_but_a_reused_inode_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let (stored, _) = stored_after_reading(&path, b"one\ntwo\n");
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        let r = Registry::new(stored.clone(), Metrics::new(false));
        assert_eq!(
            sweep(&r, None),
            0,
            "rotated while down: still to be finished"
        );
        // Same inode, other content (the inode was reused): the stored file is gone.
        std::fs::write(dir.path().join("app.log.1"), b"something else\n").unwrap();
        assert_eq!(sweep(&r, None), 1);
    }

    #[test]
    fn records_no_entry_owns_expire_after_a_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept.log");
        let dropped = dir.path().join("dropped.log");
        let (mut stored, _) = stored_after_reading(&kept, b"kept\n");
        stored.extend(stored_after_reading(&dropped, b"dropped\n").0);
        let r = Registry::new(stored, Metrics::new(false));
        let owns = |p: &Path| p == kept;
        assert_eq!(
            sweep(&r, Some(&owns)),
            1,
            "the entry of dropped.log was removed"
        );
        let snap = synced(&r, Duration::ZERO).unwrap();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].path, kept);
    }

    #[test]
    fn a_gone_record_claimed_again_loses_its_retention_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let (stored, key) = stored_after_reading(&path, b"one\n");
        let r = Registry::new(stored, Metrics::new(false));
        assert_eq!(sweep(&r, Some(&|_: &Path| false)), 1);
        let f = File::open(&path).unwrap();
        let c = r.claim(key, &path, "t", &f, 4, false).unwrap().unwrap();
        assert_eq!((c.start, c.offset), (Start::Resume, 4));
        assert_eq!(gone_since(&r), vec![None]);
        assert_eq!(
            sweep(&r, Some(&|_: &Path| false)),
            0,
            "open records are never swept"
        );
    }

    #[test]
    fn a_device_number_changed_across_a_reboot_resumes_by_path_and_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let (mut stored, key) = stored_after_reading(&path, b"one\ntwo\n");
        // As stored before the reboot: the same file on a device numbered differently.
        stored[0].dev = key.dev + 1;
        let f = File::open(&path).unwrap();
        let r = Registry::new(stored.clone(), Metrics::new(false));
        let c = r.claim(key, &path, "t", &f, 8, false).unwrap().unwrap();
        assert_eq!(
            (c.start, c.offset),
            (Start::Resume, 8),
            "not read again from 0"
        );
        let snap = r.snapshot(Duration::from_secs(3600));
        assert_eq!(
            snap.len(),
            1,
            "the old-device record was taken over: {snap:?}"
        );
        assert_eq!((snap[0].dev, snap[0].ino), (key.dev, key.ino));

        // The tail hash still applies: same head, but bytes before the offset differ: read from 0.
        let long = dir.path().join("long.log");
        let mut content = vec![b'a'; 1100];
        content[1099] = b'\n';
        let (mut long_stored, long_key) = stored_after_reading(&long, &content);
        long_stored[0].dev = long_key.dev + 1;
        content[1090] = b'B';
        content.extend_from_slice(b"more\n");
        std::fs::write(&long, &content).unwrap();
        let lf = File::open(&long).unwrap();
        let r = Registry::new(long_stored, Metrics::new(false));
        let c = r
            .claim(long_key, &long, "t", &lf, 1105, false)
            .unwrap()
            .unwrap();
        assert_eq!((c.start, c.offset), (Start::Replaced, 0));

        // Another head at that path is another file: new, and the old record stays for its own expiry.
        std::fs::write(&path, b"different head\n").unwrap();
        let r = Registry::new(stored.clone(), Metrics::new(false));
        let c = r.claim(key, &path, "t", &f, 15, false).unwrap().unwrap();
        assert_eq!((c.start, c.offset), (Start::New, 0));
        assert_eq!(r.snapshot(Duration::from_secs(3600)).len(), 2);

        // Another path with the same head is not taken over either.
        std::fs::write(&path, b"one\ntwo\n").unwrap();
        stored[0].path = dir.path().join("other.log");
        let r = Registry::new(stored, Metrics::new(false));
        let c = r.claim(key, &path, "t", &f, 8, false).unwrap().unwrap();
        assert_eq!(c.start, Start::New);
    }

    #[test]
    fn forgotten_and_expired_records_leave_the_checkpoint() {
        let (_d, path, f, key) = setup(b"x\n");
        let r = registry();
        let c = r.claim(key, &path, "t", &f, 2, false).unwrap().unwrap();
        ack_all(&c, 2, &f);
        r.release(key, true, false);
        assert_eq!(synced(&r, Duration::from_secs(3600)).unwrap().len(), 1);
        assert_eq!(
            synced(&r, Duration::ZERO).unwrap().len(),
            0,
            "gone record expired"
        );
        let c = r.claim(key, &path, "t", &f, 2, false).unwrap().unwrap();
        ack_all(&c, 2, &f);
        r.release(key, false, true);
        assert!(
            synced(&r, Duration::from_secs(3600)).unwrap().is_empty(),
            "forgotten"
        );
    }
}
