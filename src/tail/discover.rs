//! One discoverer per collect entry: expands the entry's path or glob, starts a tailer for every
//! matching file no one tails yet, and finishes files that were rotated away while the agent was down.
//!
//! Discovery is identity-based: a file is started when its device + inode is not claimed, whatever its
//! name. So after `app.log` → `app.log.1` the renamed file keeps its tailer and the new `app.log` gets one.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::applied::AppliedEntries;
use super::globwalk::{GlobWalk, RealFs};
use super::multiline::Multiline;
use super::reader::LineSplitter;
use super::rotated::RotatedFiles;
use super::throttle::Throttle;
use super::watch::WatchHub;
use super::TailerState;
use super::{TailOptions, Tailer};
use crate::config::collect::{is_glob, CollectEntry, PathMatcher, StartFrom};
use crate::config::read_policy::{PolicyError, ReadPolicy};
use crate::record::{Pipeline, RecordSpec};
use crate::sink::{Batch, Route};
use crate::state::identity::{FileKey, Fingerprint};

use super::inactive::{InactiveFiles, Seen};
use crate::state::registry::Registry;
use crate::telemetry::Metrics;

/// What every discoverer shares.
pub struct Shared {
    pub registry: Arc<Registry>,
    pub hub: Arc<WatchHub>,
    pub metrics: Arc<Metrics>,
    pub tx: mpsc::Sender<Batch>,
    pub opts: TailOptions,
    pub glob_rescan: std::time::Duration,
    pub hostname: String,
    /// This host's IP, for records that carry it (`headers`, `format: "json"`).
    pub ip: String,
    /// Entries already applied on this host (where `"from": "end"` no longer applies).
    pub applied: Arc<AppliedEntries>,
    pub rotated: Arc<RotatedFiles>,
    /// The runtime that runs discoverers and tailers: their file I/O is synchronous, so it must not
    /// share worker threads with the watchdog, HTTP and etcd tasks (a hung NFS read would starve them).
    pub files: tokio::runtime::Handle,
    /// What may be read, whatever etcd says.
    pub policy: Arc<ReadPolicy>,
}

impl Shared {
    /// Reading with `opts` and nothing else of an agent around it: no state on disk (entries applied
    /// are remembered in memory), the current runtime, every path allowed, up to 4,096 open files.
    /// The agent sets these from its settings; tests and tools start from here.
    pub fn standalone(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        tx: mpsc::Sender<Batch>,
        opts: TailOptions,
    ) -> Shared {
        Shared {
            registry,
            hub: WatchHub::new(),
            metrics,
            tx,
            opts,
            glob_rescan: std::time::Duration::from_secs(1),
            hostname: "localhost".into(),
            ip: "127.0.0.1".into(),
            applied: Arc::new(AppliedEntries::in_memory()),
            rotated: RotatedFiles::new(64),
            files: tokio::runtime::Handle::current(),
            policy: Arc::new(ReadPolicy::allow_all()),
        }
    }
}

/// How a problem with a matched path is reported.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Problem {
    /// Cannot be opened or read: counted as an open error, retried.
    Unreadable,
    /// The read policy forbids it: counted as refused, never read.
    Refused,
}

struct Discoverer {
    entry: Arc<CollectEntry>,
    shared: Arc<Shared>,
    paths: PathMatcher,
    /// The entry's glob, compiled for walking (`None` for a plain path or an invalid glob).
    walk: Option<GlobWalk>,
    /// Woken by events in the entry's directories (a name created, removed or renamed).
    dir_wake: Arc<Notify>,
    /// The directories of a glob's walk with an event watch: events wake the discoverer for new
    /// files, and the tailers of the files in them, which otherwise only poll.
    watched: HashSet<PathBuf>,
    /// Matched paths whose file a tailer of this entry held at the last scan, and that file. While the
    /// walk finds the path settled (its directory unchanged) and that tailer runs, the path needs no
    /// look at all.
    tailed: HashMap<PathBuf, FileKey>,
    /// The other matched paths of the last scan (problems, ignored, closed while idle, waiting for a
    /// slot, held by another entry's tailer): each is looked at again at every scan.
    untailed: Vec<PathBuf>,
    /// How many paths the last scan matched.
    matched: usize,
    /// Files this entry's tailers hold, with how many tailers (a file let go and claimed again
    /// before its old tailer is reaped has two for a moment).
    running: HashMap<FileKey, usize>,
    /// Files whose tailer ended since the last scan (closed while idle, made room, finished): their
    /// paths are looked at again.
    stopped: Vec<FileKey>,
    /// Paths this entry reported a problem for (the problem itself is Metrics'), so they can be
    /// cleared when the entry stops matching them or stops.
    noted: HashSet<PathBuf>,
    tailers: JoinSet<FileKey>,
    cancel: CancellationToken,
    /// The entry's record stage, compiled once; `None` for raw entries.
    spec: Option<Arc<RecordSpec>>,
    /// The entry's `max_bytes_per_s`, shared by all its files.
    throttle: Option<Arc<Throttle>>,
    /// Files found older than `ignore_older_ms`, with the identity, modification time and size they
    /// had: left alone (not even opened) until that time changes.
    ignored: HashMap<PathBuf, Seen>,
    /// Ignored files that changed since, with the size they had: read from the end of their last
    /// line then, so only what was written after is shipped (as Filebeat does since 5.1).
    woke: HashMap<FileKey, u64>,
    /// Files of this entry closed by `tail.close_inactive_ms`, left closed until they change.
    inactive: Arc<InactiveFiles>,
    /// Files refused a slot at `tail.max_open_files`, with the identity they had: one rotated away
    /// before its turn is found by it and read under its new name ([`Discoverer::retry_waiting`]).
    waiting: HashMap<PathBuf, FileKey>,
    /// Matched paths the scans looked up one by one (a lookup, a stat or an open each), for tests.
    paths_looked_at: u64,
}

/// Runs the entry until `cancel`; then stops its tailers and waits for them to let go of their files.
pub async fn run_entry(entry: Arc<CollectEntry>, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut d = Discoverer::new(entry, shared, cancel);
    let dir_wake = d.dir_wake.clone();
    // A glob's directories are watched as its walk finds them; a plain path's parent here.
    let dir = watch_dir_of(&d.entry.path).filter(|_| d.walk.is_none());
    if let Some(dir) = &dir {
        d.shared.hub.watch_dir(dir, dir_wake.clone());
    }
    let from_end = d.entry.from == StartFrom::End && d.first_application().await;
    d.scan(from_end);
    d.finish_rotated_while_down();
    let mut last_scan = tokio::time::Instant::now();
    loop {
        tokio::select! {
            // Cancellation first: a scan after it would claim files its tailers are letting go of.
            biased;
            _ = d.cancel.cancelled() => break,
            _ = dir_wake.notified() => {
                // A burst of new names (a tree unpacked) rescans at most every EVENT_RESCAN_MIN.
                tokio::time::sleep_until(last_scan + EVENT_RESCAN_MIN).await;
            }
            _ = tokio::time::sleep(d.shared.glob_rescan) => {}
            Some(ended) = d.tailers.join_next(), if !d.tailers.is_empty() => {
                d.reap(ended);
                continue;
            }
        }
        d.scan(false);
        last_scan = tokio::time::Instant::now();
        // A directory removed and made again lost its watch with the old one.
        for w in dir.iter().chain(d.watched.iter()) {
            d.shared.hub.rewatch(w);
        }
    }
    if let Some(dir) = &dir {
        d.shared.hub.unwatch_dir(dir, &dir_wake);
    }
    for dir in std::mem::take(&mut d.watched) {
        d.shared.hub.unwatch_dir(&dir, &dir_wake);
    }
    while d.tailers.join_next().await.is_some() {}
    // The entry is gone: so are its paths' problems.
    for path in &d.noted {
        d.shared.metrics.clear_file_problem(path);
    }
}

/// Whether file events reach the tailer of `path`: its directory is watched, and the path is not a
/// symlink — writes to a link's target happen in the target's directory, which nobody may watch, so
/// such a file keeps brisk polls and its path checked by time.
fn events_reach(hub: &WatchHub, path: &Path) -> bool {
    hub.dir_watched(path)
        && !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// The shortest time between two scans that events asked for.
const EVENT_RESCAN_MIN: std::time::Duration = std::time::Duration::from_millis(200);

/// The directory whose events concern the entry: the parent of the path, when it has no wildcard.
fn watch_dir_of(path: &str) -> Option<PathBuf> {
    let parent = Path::new(path).parent()?;
    (!is_glob(&parent.to_string_lossy())).then(|| parent.to_path_buf())
}

impl Discoverer {
    fn new(entry: Arc<CollectEntry>, shared: Arc<Shared>, cancel: CancellationToken) -> Discoverer {
        Discoverer {
            paths: PathMatcher::new(&entry),
            walk: is_glob(&entry.path)
                .then(|| GlobWalk::new(&entry.path).map(|w| w.pruning(&entry.exclude)))
                .flatten(),
            spec: RecordSpec::for_entry(&entry),
            throttle: entry
                .records
                .max_bytes_per_s
                .map(|rate| Arc::new(Throttle::new(rate, shared.metrics.records(&entry.topic)))),
            tailed: HashMap::new(),
            untailed: Vec::new(),
            matched: 0,
            running: HashMap::new(),
            stopped: Vec::new(),
            dir_wake: Arc::new(Notify::new()),
            watched: HashSet::new(),
            ignored: HashMap::new(),
            woke: HashMap::new(),
            inactive: Arc::default(),
            waiting: HashMap::new(),
            paths_looked_at: 0,
            entry,
            shared,
            noted: HashSet::new(),
            tailers: JoinSet::new(),
            cancel,
        }
    }

    /// Whether the entry is applied for the first time on this host: only then does `"from": "end"`
    /// apply, to the files existing now; later files (even those created while the agent was down)
    /// start at 0. If the fact cannot be stored, this start still counts as the first.
    async fn first_application(&self) -> bool {
        let applied = self.shared.applied.clone();
        let path = self.entry.path.clone();
        let now = crate::clock::now_ms();
        match tokio::task::spawn_blocking(move || applied.first_application(&path, now)).await {
            Ok(Ok(first)) => first,
            Ok(Err(e)) => {
                warn!("{e}; \"from\": \"end\" will apply again at the next start");
                true
            }
            Err(_) => true,
        }
    }

    /// The matched paths; `None` when they are the last scan's, each settled.
    fn matches(&mut self) -> Option<Vec<PathBuf>> {
        let mut settled = true;
        let paths: Vec<PathBuf> = if is_glob(&self.entry.path) {
            match &mut self.walk {
                Some(walk) => {
                    if walk.unchanged(&RealFs).is_some() {
                        return None;
                    }
                    let (found, stats) = walk.scan_stats(&RealFs);
                    self.shared
                        .metrics
                        .discovery_dirs_listed
                        .inc_by(stats.listed as u64);
                    found
                        .into_iter()
                        .map(|m| {
                            if !m.settled {
                                settled = false;
                                self.tailed.remove(&m.path);
                            }
                            m.path
                        })
                        .collect()
                }
                None => Vec::new(),
            }
        } else {
            // No directory is remembered for a plain path: its file is stat'ed at every scan.
            settled = false;
            self.tailed.clear();
            let p = PathBuf::from(&self.entry.path);
            if p.exists() {
                vec![p]
            } else {
                Vec::new()
            }
        };
        let paths: Vec<PathBuf> = paths
            .into_iter()
            .filter(|p| !self.paths.is_excluded(p))
            .collect();
        // Every match settled, and as many as last time: the very paths of the last scan (a settled
        // match is a name in a directory listed the same at the last scan, so matched then too).
        if settled && paths.len() == self.matched {
            return None;
        }
        self.matched = paths.len();
        Some(paths)
    }

    /// A tailer of this entry ended (a panicked one keeps its file open in the registry, so it is
    /// left as tailed, as the registry says).
    fn reap(&mut self, ended: Result<FileKey, tokio::task::JoinError>) {
        let Ok(key) = ended else {
            return;
        };
        if let Some(n) = self.running.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&key);
            }
        }
        self.stopped.push(key);
    }

    /// [`Discoverer::note_problem`], for a path left untailed.
    fn problem(&mut self, path: &Path, problem: String, kind: Problem) -> Option<FileKey> {
        self.note_problem(path, problem, kind);
        None
    }

    fn note_problem(&mut self, path: &Path, problem: String, kind: Problem) {
        match kind {
            Problem::Unreadable => self.shared.metrics.file_unreadable(path, &problem),
            Problem::Refused => self.shared.metrics.file_refused(path, &problem),
        }
        self.noted.insert(path.to_path_buf());
    }

    /// The paths with a problem that this entry no longer matches (deleted, renamed, excluded): they
    /// are forgotten, so neither `noted` nor the status's per-file problems grow with every file ever
    /// seen.
    fn unmatched_problems(&self, matched: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
        let entry_path = Path::new(&self.entry.path);
        self.noted
            .iter()
            .filter(|p| !matched(p) && p.as_path() != entry_path)
            .cloned()
            .collect()
    }

    fn scan(&mut self, from_end: bool) {
        // The thread's CPU time, not the wall clock: on a busy host a scan waits for a core too.
        let started = thread_cpu_seconds();
        self.scan_matches(from_end);
        self.shared
            .metrics
            .discovery_seconds
            .inc_by((thread_cpu_seconds() - started).max(0.0));
    }

    /// Keeps an event watch on each directory the glob's last walk went through, and on no other.
    fn watch_walked_dirs(&mut self) {
        let Some(walk) = &self.walk else {
            return;
        };
        let now: HashSet<&Path> = walk.dirs().collect();
        let gone: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|d| !now.contains(d.as_path()))
            .cloned()
            .collect();
        for d in now {
            if !self.watched.contains(d) {
                self.shared.hub.watch_dir(d, self.dir_wake.clone());
                self.watched.insert(d.to_path_buf());
            }
        }
        for d in gone {
            self.shared.hub.unwatch_dir(&d, &self.dir_wake);
            self.watched.remove(&d);
        }
    }

    fn scan_matches(&mut self, from_end: bool) {
        let paths = self.matches();
        // Before any tailer starts: a tailer in a watched directory polls less.
        self.watch_walked_dirs();
        while let Some(ended) = self.tailers.try_join_next() {
            self.reap(ended);
        }
        // A path whose tailer ended is looked at again: its file may have changed since it was closed.
        let mut again = Vec::new();
        if !self.stopped.is_empty() {
            let stopped: HashSet<FileKey> = self.stopped.drain(..).collect();
            self.tailed.retain(|p, key| {
                let keep = !stopped.contains(key) || self.running.contains_key(key);
                if !keep {
                    again.push(p.clone());
                }
                keep
            });
        }
        // The same paths as last time: the tailed ones need no look, so an unchanged tree of N tailed
        // files costs no work per file; only the paths left untailed and those whose tailer ended do.
        let same = paths.is_none();
        let todo = match paths {
            None => {
                let mut todo = std::mem::take(&mut self.untailed);
                todo.append(&mut again);
                todo.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
                todo
            }
            Some(paths) => {
                self.untailed.clear();
                paths
            }
        };
        // The paths matched now: those looked at below, and the tailed ones. Looked up once per known
        // path, not searched: a tree may match thousands of files.
        let looked: HashSet<&Path> = todo.iter().map(PathBuf::as_path).collect();
        if !same {
            self.tailed.retain(|p, _| looked.contains(p.as_path()));
        }
        let tailed = &self.tailed;
        let matched = |p: &Path| looked.contains(p) || tailed.contains_key(p);
        self.ignored.retain(|p, _| matched(p));
        self.inactive.retain(matched);
        for p in self.unmatched_problems(matched) {
            self.noted.remove(&p);
            self.shared.metrics.clear_file_problem(&p);
        }
        drop(looked);
        if !is_glob(&self.entry.path) && todo.is_empty() {
            let p = PathBuf::from(&self.entry.path);
            self.shared.metrics.file_waiting(&p);
            self.noted.insert(p);
        }
        // Refused again, a file waits again: the scan and the retry below fill the map anew.
        let waiting = std::mem::take(&mut self.waiting);
        for path in &todo {
            self.paths_looked_at += 1;
            if self.tailed.contains_key(path) {
                continue;
            }
            match self.try_start(path, from_end, false) {
                Some(key) if self.running.contains_key(&key) => {
                    self.tailed.insert(path.clone(), key);
                }
                // Another entry's tailer may let go of it without this one hearing: looked at again.
                _ => self.untailed.push(path.clone()),
            }
        }
        self.retry_waiting(waiting, &todo);
        // A file closed for inactivity left its path (renamed, replaced): it may hold lines written
        // after it was closed; find it by identity and ship them, as after a restart.
        if self.inactive.take_moved() {
            self.finish_rotated_while_down();
        }
    }

    /// Opens `path` and starts a tailer unless its file is already tailed; the file tailed now, if any.
    fn try_start(&mut self, path: &Path, from_end: bool, rotated: bool) -> Option<FileKey> {
        // Most scans find only files already tailed: a stat tells that without an open (which costs
        // more and raises a file event).
        // One stat answers all three: tailed now, closed while idle, or too old to read.
        if let Ok(m) = std::fs::metadata(path) {
            if self.shared.registry.is_open(FileKey::of(&m)) {
                return Some(FileKey::of(&m));
            }
            if self.inactive.still_idle(path, Seen::of(&m)) || self.ignores(path, &m) {
                return None;
            }
        }
        // The policy judges where the path leads (symlinks followed); that target is what is opened.
        let target = match self.shared.policy.resolve(path) {
            Ok(t) => t,
            Err(PolicyError::Refused(r)) => {
                return self.problem(path, r.to_string(), Problem::Refused)
            }
            Err(PolicyError::Resolve(e)) => {
                return self.problem(path, format!("cannot open: {e}"), Problem::Unreadable)
            }
        };
        // Stat before open: opening a FIFO without a writer would block until one appears.
        let not_regular = || "not a regular file (directory, FIFO or device): skipped".to_owned();
        match std::fs::metadata(&target) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return self.problem(path, not_regular(), Problem::Unreadable),
            Err(e) => return self.problem(path, format!("cannot stat: {e}"), Problem::Unreadable),
        }
        let file = match open_for_tailing(&target) {
            Ok(f) => f,
            Err(e) => return self.problem(path, format!("cannot open: {e}"), Problem::Unreadable),
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return self.problem(path, format!("cannot stat: {e}"), Problem::Unreadable),
        };
        if !meta.is_file() {
            return self.problem(path, not_regular(), Problem::Unreadable);
        }
        let key = FileKey::of(&meta);
        if self.shared.registry.is_open(key) {
            return Some(key);
        }
        let registry = &self.shared.registry;
        // A file ignored while it was this long: a new file whose end is its last line within that
        // size (what "from": "end" does with the size it had).
        let (size, from_end) = match self.woke.get(&key) {
            Some(&was) => (was.min(meta.len()), true),
            None => (meta.len(), from_end),
        };
        let claim = match registry.claim(key, path, &self.entry.topic, &file, size, from_end) {
            Ok(Some(c)) => c,
            Ok(None) if registry.at_capacity() => {
                self.waiting.insert(path.to_path_buf(), key);
                let max = registry.max_open();
                return self.problem(
                    path,
                    format!("max_open_files ({max}) reached: not opened yet"),
                    Problem::Unreadable,
                );
            }
            Ok(None) => return None,
            Err(e) => return self.problem(path, format!("cannot read: {e}"), Problem::Unreadable),
        };
        self.noted.remove(path);
        self.woke.remove(&key);
        self.waiting.remove(path);
        self.shared.metrics.file_opened(
            path,
            key,
            claim.offset,
            if rotated {
                "finishing a file rotated while the agent was down"
            } else {
                claim.start.as_str()
            },
        );
        let o = &self.shared.opts;
        let max_line = self.entry.max_line_bytes.unwrap_or(o.max_line_bytes);
        let skip_empty = self.entry.skip_empty_lines.unwrap_or(o.skip_empty_lines);
        let route = Arc::new(Route::for_file(
            &self.entry,
            path,
            &self.shared.hostname,
            &self.shared.metrics,
        ));
        let wake = self.shared.hub.file_waker(path);
        let mut splitter =
            LineSplitter::new(claim.offset, o.read_buffer_bytes, max_line, skip_empty);
        let records = self.spec.as_ref().map(|spec| {
            let newline = spec.newline();
            // A start found by "from": "end" (a `\n` byte) may sit inside a UTF-16 newline: reading
            // starts after its second byte, on a code unit boundary.
            let start = claim.offset + u64::from(newline.width() == 2 && claim.offset % 2 == 1);
            splitter = LineSplitter::new(start, o.read_buffer_bytes, max_line, skip_empty)
                .with_newline(newline)
                .tracking_starts();
            Box::new(Pipeline::new(
                spec.clone(),
                &self.entry,
                &path.to_string_lossy(),
                &self.shared.hostname,
                &self.shared.ip,
                &self.shared.metrics,
            ))
        });
        let dir_watched = events_reach(&self.shared.hub, path);
        let tailer = Tailer {
            path: path.to_path_buf(),
            key,
            file: Arc::new(file),
            fingerprint: claim.fingerprint,
            progress: claim.progress,
            splitter,
            route,
            tx: self.shared.tx.clone(),
            registry: self.shared.registry.clone(),
            metrics: self.shared.metrics.clone(),
            wake: wake.wake.clone(),
            opts: o.clone(),
            rotated,
            forget_when_done: rotated,
            multiline: self
                .entry
                .multiline
                .as_deref()
                .and_then(|p| regex::bytes::Regex::new(p).ok())
                .map(|re| Multiline::new(re, max_line)),
            rotated_files: self.shared.rotated.clone(),
            records,
            throttle: self.throttle.clone(),
            inactive: self.inactive.clone(),
            state: TailerState {
                dir_watched,
                name_event: dir_watched.then(|| wake.clone()),
                head: claim.head,
                ..Default::default()
            },
        };
        let cancel = self.cancel.child_token();
        let hub = self.shared.hub.clone();
        let p = path.to_path_buf();
        *self.running.entry(key).or_default() += 1;
        self.tailers.spawn(async move {
            tailer.run(cancel).await;
            hub.drop_file_waker(&p, &wake);
            key
        });
        Some(key)
    }

    /// `ignore_older_ms`: whether to leave the file at `path` (stat `meta`) alone. A file is judged
    /// when first found: older than the limit and unknown to the checkpoint, it is ignored until its
    /// modification time changes; files the checkpoint knows are read as always.
    fn ignores(&mut self, path: &Path, meta: &std::fs::Metadata) -> bool {
        let Some(limit) = self.entry.records.ignore_older_ms else {
            return false;
        };
        let now = Seen::of(meta);
        let key = now.key;
        if let Some(was) = self.ignored.get(path).copied() {
            // Judged by identity and modification time; the size is where reading resumes.
            if was.key == key && was.mtime == now.mtime {
                return true;
            }
            self.ignored.remove(path);
            self.noted.remove(path);
            self.shared.metrics.clear_file_problem(path);
            if was.key == key {
                // Written since it was ignored: read what came after.
                self.woke.insert(key, was.size);
                return false;
            }
        }
        if self.shared.registry.knows(key) {
            return false;
        }
        let idle_ms = now
            .mtime
            .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
            .map_or(0, |d| d.as_millis() as u64);
        if idle_ms <= limit {
            return false;
        }
        self.ignored.insert(path.to_path_buf(), now);
        self.noted.insert(path.to_path_buf());
        self.shared.metrics.file_ignored(path, idle_ms, limit);
        true
    }

    /// Files that waited for a slot (`before` the scan) and are no longer where the scan finds them:
    /// still under a name outside the pattern (rotated earlier), tried there; moved since (renamed,
    /// a new file created under the old name), found by identity in their directory and tried under
    /// the new name, as a rotated file (read to its end, then let go); gone, forgotten. Each costs a
    /// stat, and a directory read only when it moved.
    fn retry_waiting(&mut self, before: HashMap<PathBuf, FileKey>, matched: &[PathBuf]) {
        if before.is_empty() {
            return;
        }
        let matched: HashSet<&Path> = matched.iter().map(PathBuf::as_path).collect();
        for (path, key) in before {
            let here = std::fs::metadata(&path).is_ok_and(|m| FileKey::of(&m) == key);
            if here && matched.contains(path.as_path()) {
                continue; // tried by the scan itself
            }
            let found = if here {
                Some(path.clone())
            } else {
                path.parent().and_then(|d| find_by_identity(d, key))
            };
            if let Some(found) = found {
                if found != path {
                    info!(was = %path.display(), now = %found.display(),
                          "a file waiting for a slot under max_open_files was rotated; it will be read under its new name");
                }
                self.try_start(&found, false, true);
            }
        }
    }

    /// A file the checkpoint knows under a path of this entry, whose identity is no longer at that path
    /// (logrotate renamed it while the agent was down): find it by identity in the same directory and
    /// ship the rest of it. No peer does this; it is the tail Filebeat and Fluent Bit lose.
    fn finish_rotated_while_down(&mut self) {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(d) = Path::new(&self.entry.path).parent() {
            if !is_glob(&d.to_string_lossy()) {
                dirs.push(d.to_path_buf());
            }
        }
        for dir in dirs {
            for cp in self.shared.registry.unclaimed_in_dir(&dir) {
                if !self.paths.owns(&cp.path) {
                    continue;
                }
                let key = FileKey {
                    dev: cp.dev,
                    ino: cp.ino,
                };
                let Some(found) = find_by_identity(&dir, key) else {
                    continue;
                };
                // Not even the fingerprint is read of a file the policy refuses (try_start reports it).
                if self.shared.policy.resolve(&found).is_err() {
                    let _ = self.try_start(&found, false, true);
                    continue;
                }
                let Ok(file) = File::open(&found) else {
                    continue;
                };
                let fp = Fingerprint {
                    hex: cp.fingerprint.clone(),
                    len: cp.fingerprint_len,
                };
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                if !fp.matches(&file, size).unwrap_or(false) {
                    continue;
                }
                if found != cp.path {
                    warn!(stored = %cp.path.display(), found = %found.display(), offset = cp.offset, size,
                          "file was rotated while the agent was down; shipping its remainder");
                }
                let _ = self.try_start(&found, false, found != cp.path);
            }
        }
    }
}

/// Opens a file to tail. O_NONBLOCK: should the path become a FIFO between the stat and the open,
/// the open returns at once (no effect on a regular file). O_NOFOLLOW: the target has no symlink
/// left to follow. O_NOATIME: a log read after every write would otherwise have its access time
/// updated at each read (relatime updates it whenever it is older than the modification time), an
/// inode write per line that showed in idle1000's profile; it needs the file's owner or
/// CAP_FOWNER, so without them the file is opened as before.
pub fn open_for_tailing(path: &Path) -> std::io::Result<File> {
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | flags)
            .open(path)
    };
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        other => other,
    }
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given, nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn find_by_identity(dir: &Path, key: FileKey) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find_map(|e| {
            let m = e.metadata().ok()?;
            (m.dev() == key.dev && m.ino() == key.ino && m.is_file()).then(|| e.path())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::TailOptions;
    use std::os::unix::fs::symlink;
    use std::time::Duration;

    fn shared(policy: ReadPolicy) -> (Arc<Shared>, mpsc::Receiver<Batch>) {
        shared_closing(policy, None)
    }

    /// [`shared`], closing files idle for `close_inactive`.
    fn shared_closing(
        policy: ReadPolicy,
        close_inactive: Option<Duration>,
    ) -> (Arc<Shared>, mpsc::Receiver<Batch>) {
        let metrics = Metrics::new(false);
        let (tx, rx) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            glob_rescan: Duration::from_secs(60),
            hostname: "h".into(),
            policy: Arc::new(policy),
            ..Shared::standalone(
                Registry::new(Vec::new(), metrics.clone()),
                metrics,
                tx,
                TailOptions {
                    poll_interval: Duration::from_millis(20),
                    read_buffer_bytes: 4096,
                    max_line_bytes: 1024,
                    partial_line_timeout: Duration::from_secs(5),
                    rotated_idle_timeout: Duration::from_secs(5),
                    close_inactive,
                    batch_max_lines: 100,
                    skip_empty_lines: false,
                },
            )
        });
        (shared, rx)
    }

    fn discoverer(pattern: &Path, shared: Arc<Shared>) -> Discoverer {
        let entry = Arc::new(CollectEntry::new(pattern.to_string_lossy(), "t"));
        Discoverer::new(entry, shared, CancellationToken::new())
    }

    #[tokio::test]
    async fn problems_of_paths_no_longer_matched_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        // Directories match the glob but cannot be tailed: each is a problem.
        for name in ["a.log", "b.log"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        let (shared, _rx) = shared(ReadPolicy::allow_all());
        let mut d = discoverer(&dir.path().join("*.log"), shared.clone());
        d.scan(false);
        assert_eq!(d.noted.len(), 2);
        assert_eq!(shared.metrics.file_problems().len(), 2);

        std::fs::remove_dir(dir.path().join("a.log")).unwrap();
        d.scan(false);
        assert_eq!(
            d.noted.iter().cloned().collect::<Vec<_>>(),
            vec![dir.path().join("b.log")],
            "the problem of the deleted path is dropped"
        );
        let in_status: Vec<PathBuf> = shared.metrics.file_problems().into_keys().collect();
        assert_eq!(in_status, vec![dir.path().join("b.log")]);
        assert_eq!(
            shared.metrics.file_open_errors.get(),
            2,
            "b.log reported once, not at every scan"
        );
    }

    #[tokio::test]
    async fn symlinks_to_the_config_and_the_checkpoint_are_refused_and_never_read() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let checkpoint = state.join("checkpoints.json");
        std::fs::write(&checkpoint, b"{\"version\": 1}\n").unwrap();
        let config = root.path().join("logagent.toml");
        std::fs::write(&config, b"[kafka]\nsasl_password = \"hunter2\"\n").unwrap();
        let logs = root.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        std::fs::write(logs.join("app.log"), b"hello\n").unwrap();
        symlink(&config, logs.join("config.log")).unwrap();
        symlink(&checkpoint, logs.join("checkpoint.log")).unwrap();
        let policy = ReadPolicy::new(
            &["/**".to_owned()],
            vec![
                (config.clone(), "the agent's config file".into()),
                (state.clone(), "the agent's state directory".into()),
            ],
        );
        let (shared, mut rx) = shared(policy);
        let mut d = discoverer(&logs.join("*.log"), shared.clone());
        d.scan(false);
        d.scan(false);

        let open: Vec<PathBuf> = shared
            .registry
            .with_open_files(|open| open.iter().map(|f| f.path.to_path_buf()).collect());
        assert_eq!(open, vec![logs.join("app.log")], "only app.log is claimed");
        let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("app.log's batch did not arrive within 10 s")
            .expect("channel open");
        assert_eq!(batch.route.path, logs.join("app.log").to_string_lossy());
        assert_eq!(shared.metrics.files_refused.get(), 2, "each refused once");
        let problems = shared.metrics.file_problems();
        for link in ["config.log", "checkpoint.log"] {
            let p = problems
                .get(&logs.join(link))
                .expect("refusal shown in status");
            assert!(
                p.error.contains("refused by the local read policy"),
                "{}",
                p.error
            );
        }
        // Nothing else arrives: the refused files were never read.
        d.cancel.cancel();
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_secs(10), d.tailers.join_next()).await
        {}
        drop(d);
        drop(shared);
        while let Ok(Some(b)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            assert_eq!(
                b.route.path,
                logs.join("app.log").to_string_lossy(),
                "read a refused file"
            );
        }
    }

    /// Reading a file opened to tail leaves its access time alone (the control read, through a
    /// plain open, shows that this filesystem would update it).
    #[test]
    fn tailing_a_file_does_not_update_its_access_time() {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, "line\n").unwrap();
        let age = |p: &Path| {
            let old = std::time::SystemTime::now() - Duration::from_secs(3600);
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_times(std::fs::FileTimes::new().set_accessed(old))
                .unwrap();
            std::fs::metadata(p).unwrap().atime()
        };
        let before = age(&p);
        std::fs::File::open(&p)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap();
        assert!(
            std::fs::metadata(&p).unwrap().atime() > before,
            "control: this filesystem does not update access times, the test cannot tell"
        );
        let before = age(&p);
        open_for_tailing(&p)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().atime(),
            before,
            "the read updated the access time"
        );
    }

    /// Files in directories unchanged since the last scan are not stat'ed while tailed; a rotation
    /// changes the directory, so the new file under the old name is still claimed at the next scan.
    #[tokio::test]
    async fn a_rotation_in_a_remembered_directory_is_still_picked_up() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("app.log"), b"one\n").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(10);
        for d in [
            root.path().to_path_buf(),
            root.path().join("a"),
            deep.clone(),
        ] {
            std::fs::File::open(&d).unwrap().set_modified(old).unwrap();
        }
        let (shared, _rx) = shared(ReadPolicy::allow_all());
        let mut d = discoverer(&root.path().join("**/*.log"), shared.clone());
        d.scan(false);
        d.scan(false);
        assert_eq!(d.tailed.len(), 1, "the tailed file is remembered");
        let first = FileKey::of(&std::fs::metadata(deep.join("app.log")).unwrap());
        std::fs::rename(deep.join("app.log"), deep.join("app.log.1")).unwrap();
        std::fs::write(deep.join("app.log"), b"two\n").unwrap();
        d.scan(false);
        let second = FileKey::of(&std::fs::metadata(deep.join("app.log")).unwrap());
        assert!(
            shared.registry.is_open(first),
            "the rotated file keeps its tailer"
        );
        assert!(
            shared.registry.is_open(second),
            "the new app.log was not claimed"
        );
        d.cancel.cancel();
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_secs(10), d.tailers.join_next()).await
        {}
    }

    /// Sets the modification time of `dirs` 10 s back: their listings are trusted at once (a listing
    /// made within MTIME_SLACK_NS of a change is not).
    fn age_dirs(dirs: &[&Path]) {
        let old = std::time::SystemTime::now() - Duration::from_secs(10);
        for d in dirs {
            std::fs::File::open(d).unwrap().set_modified(old).unwrap();
        }
    }

    /// A rescan of a tree whose directories did not change, every file tailed, looks at no path: the
    /// idle10000 benchmark spent 16 % of the agent's CPU looking up 10,000 such paths every second.
    #[tokio::test]
    async fn a_rescan_of_an_unchanged_tree_of_tailed_files_looks_at_no_path() {
        const N: usize = 300;
        let dir = tempfile::tempdir().unwrap();
        for i in 0..N {
            std::fs::write(dir.path().join(format!("f{i}.log")), b"x\n").unwrap();
        }
        age_dirs(&[dir.path()]);
        let (shared, _rx) = shared(ReadPolicy::allow_all());
        let mut d = discoverer(&dir.path().join("*.log"), shared.clone());
        d.scan(false);
        assert_eq!(shared.registry.open_count(), N);
        let before = d.paths_looked_at;
        d.scan(false);
        d.scan(false);
        assert_eq!(
            d.paths_looked_at - before,
            0,
            "rescans of an unchanged tree looked at paths one by one"
        );
        assert_eq!(shared.registry.open_count(), N);
        d.cancel.cancel();
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_secs(10), d.tailers.join_next()).await
        {}
    }

    /// A file closed for inactivity in a directory that does not change (an append moves the file's
    /// size and mtime, not the directory's) is opened again once appended to, and not before.
    #[tokio::test]
    async fn a_file_closed_for_inactivity_in_an_unchanged_directory_is_opened_when_appended() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        std::fs::write(&a, b"one\n").unwrap();
        std::fs::write(dir.path().join("b.log"), b"b\n").unwrap();
        age_dirs(&[dir.path()]);
        let (shared, mut rx) =
            shared_closing(ReadPolicy::allow_all(), Some(Duration::from_millis(100)));
        let mut d = discoverer(&dir.path().join("*.log"), shared.clone());
        d.scan(false);
        let key = FileKey::of(&std::fs::metadata(&a).unwrap());
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Acknowledged and idle, both files are closed; scans meanwhile leave them closed.
        while shared.registry.open_count() > 0 {
            assert!(std::time::Instant::now() < deadline, "never closed");
            if let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
                for l in &b.lines {
                    b.ticket.record_settled();
                    got.push(String::from_utf8_lossy(l).into_owned());
                }
            }
            d.scan(false);
        }
        got.sort();
        assert_eq!(got, ["b", "one"]);
        for _ in 0..3 {
            d.scan(false);
        }
        assert!(!shared.registry.is_open(key), "opened again unchanged");
        let before = d.paths_looked_at;
        d.scan(false);
        assert!(
            d.paths_looked_at - before <= 2,
            "only the closed files are looked at"
        );
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
        f.write_all(b"two\n").unwrap();
        d.scan(false);
        assert!(
            shared.registry.is_open(key),
            "not opened again once appended"
        );
        let b = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the appended line never came")
            .unwrap();
        assert_eq!(b.lines.len(), 1);
        assert_eq!(&b.lines[0][..], b"two");
        d.cancel.cancel();
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_secs(10), d.tailers.join_next()).await
        {}
    }

    /// Two entries match the same files: the one that did not claim them takes them over once the
    /// other lets go (its entry removed), the directory unchanged all the while.
    #[tokio::test]
    async fn files_another_entry_lets_go_of_are_taken_over_in_an_unchanged_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        std::fs::write(&a, b"one\n").unwrap();
        age_dirs(&[dir.path()]);
        let (shared, _rx) = shared(ReadPolicy::allow_all());
        let mut first = discoverer(&dir.path().join("*.log"), shared.clone());
        let mut second = discoverer(&dir.path().join("a.*"), shared.clone());
        first.scan(false);
        second.scan(false);
        second.scan(false);
        let key = FileKey::of(&std::fs::metadata(&a).unwrap());
        assert_eq!(first.running.get(&key), Some(&1));
        assert!(second.running.is_empty());
        first.cancel.cancel();
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_secs(10), first.tailers.join_next()).await
        {}
        assert!(!shared.registry.is_open(key));
        second.scan(false);
        assert_eq!(
            second.running.get(&key),
            Some(&1),
            "a.log was not taken over"
        );
        second.cancel.cancel();
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_secs(10), second.tailers.join_next()).await
        {
        }
    }

    async fn first_line(rx: &mut mpsc::Receiver<Batch>) -> Option<String> {
        let b = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .ok()
            .flatten()?;
        Some(String::from_utf8_lossy(&b.lines[0]).into_owned())
    }

    /// A `**` entry watches the directories its walk goes through: a file created deep down, in a
    /// directory created after the start, is picked up by events long before the next rescan.
    #[tokio::test]
    async fn a_double_star_entry_picks_up_new_files_deep_down_by_events() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/x.log"), "x-1\n").unwrap();
        let (shared, mut rx) = shared(ReadPolicy::allow_all());
        assert_eq!(shared.glob_rescan, Duration::from_secs(60));
        let entry = Arc::new(CollectEntry::new(
            dir.path().join("**/*.log").to_string_lossy(),
            "t",
        ));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_entry(entry, shared, cancel.clone()));
        assert_eq!(first_line(&mut rx).await.as_deref(), Some("x-1"));
        std::fs::write(dir.path().join("a/b/y.log"), "y-1\n").unwrap();
        assert_eq!(
            first_line(&mut rx).await.as_deref(),
            Some("y-1"),
            "a new file in a/b"
        );
        std::fs::create_dir_all(dir.path().join("a/c")).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::write(dir.path().join("a/c/z.log"), "z-1\n").unwrap();
        assert_eq!(
            first_line(&mut rx).await.as_deref(),
            Some("z-1"),
            "a new file in a directory created after the start"
        );
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("entry did not stop")
            .unwrap();
    }

    /// A file refused at `max_open_files` and rotated away (renamed out of the entry's pattern)
    /// before it ever got a slot: its identity was remembered, so once a slot frees it is found by
    /// identity and read from its start under the new name.
    #[tokio::test]
    async fn a_file_rotated_away_while_waiting_for_a_slot_is_read_once_one_frees() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, mut rx) = shared(ReadPolicy::allow_all());
        shared.registry.set_max_open(1);
        std::fs::write(dir.path().join("a.log"), "a-1\n").unwrap();
        let mut d = discoverer(&dir.path().join("*.log"), shared.clone());
        d.scan(false);
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a.log was never read")
            .unwrap();
        std::fs::write(dir.path().join("b.log"), "b-1\nb-2\n").unwrap();
        d.scan(false);
        assert_eq!(
            shared.registry.open_count(),
            1,
            "b.log got a slot beyond the cap"
        );
        // logrotate: renamed, and the application opens a new b.log.
        std::fs::rename(dir.path().join("b.log"), dir.path().join("b.log.1")).unwrap();
        std::fs::write(dir.path().join("b.log"), "new-1\n").unwrap();
        d.scan(false);
        // a.log, caught up and acknowledged, makes room once a file waits for a slot.
        for _ in 0..first.lines.len() {
            first.ticket.record_settled();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "the file rotated away while waiting for a slot was never read (got {got:?})"
            );
            d.scan(false);
            if let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                for _ in 0..b.lines.len() {
                    b.ticket.record_settled();
                }
                got.extend(
                    b.lines
                        .iter()
                        .map(|l| String::from_utf8_lossy(l).into_owned()),
                );
            }
        }
        got.sort();
        assert_eq!(got, ["b-1", "b-2", "new-1"]);
        d.cancel.cancel();
        while d.tailers.join_next().await.is_some() {}
    }

    /// Idle files in watched directories poll only every 32 s: a file refused a slot at
    /// `max_open_files` wakes an idle tailer, which makes room at once instead of at its next poll.
    #[tokio::test]
    async fn a_file_refused_a_slot_wakes_an_idle_tailer_to_make_room() {
        let dir = tempfile::tempdir().unwrap();
        let (base, mut rx) = shared(ReadPolicy::allow_all());
        let mut sh = Arc::into_inner(base).expect("not shared yet");
        sh.opts.poll_interval = Duration::from_millis(250);
        let shared = Arc::new(sh);
        shared.registry.set_max_open(1);
        let a = dir.path().join("a.log");
        std::fs::write(&a, "").unwrap();
        let mut d = discoverer(&dir.path().join("*.log"), shared.clone());
        d.scan(false);
        assert_eq!(shared.registry.open_count(), 1, "a.log was not opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Growth announced by an event: a.log's tailer naps for the long interval from now on.
        let mut appender = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
        std::io::Write::write_all(&mut appender, b"a-1\n").unwrap();
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a.log's line never came")
            .unwrap();
        for _ in 0..first.lines.len() {
            first.ticket.record_settled();
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        std::fs::write(dir.path().join("b.log"), "b-1\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let b = loop {
            assert!(
                std::time::Instant::now() < deadline,
                "b.log was not read within 10 s: a.log's idle tailer made no room"
            );
            d.scan(false);
            if let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                break b;
            }
        };
        assert_eq!(b.lines, vec![bytes::Bytes::from_static(b"b-1")]);
        d.cancel.cancel();
        while d.tailers.join_next().await.is_some() {}
    }

    /// A symlink in a watched directory gets no events for writes to its target (they happen in the
    /// target's directory): its tailer must not wait on events, as one of a plain file may.
    #[test]
    fn events_do_not_reach_a_symlinked_file() {
        let watched = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("real.log");
        std::fs::write(&target, "x\n").unwrap();
        let link = watched.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let plain = watched.path().join("plain.log");
        std::fs::write(&plain, "x\n").unwrap();
        let hub = WatchHub::new();
        hub.watch_dir(watched.path(), Arc::new(Notify::new()));
        assert!(events_reach(&hub, &plain));
        assert!(
            !events_reach(&hub, &link),
            "the link's target is not watched"
        );
        assert!(!events_reach(&hub, &target), "nor is its directory");
    }

    /// Out of inotify watches: the agent says so (gauge, one warning) and polling picks up lines,
    /// the first ones and those appended later, with no event ever arriving.
    #[tokio::test]
    async fn out_of_inotify_watches_says_so_and_polling_picks_up_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        std::fs::write(&log, "one\n").unwrap();
        let hub = WatchHub::with_max_watches(0);
        let gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
        hub.report_to(gauge.clone());
        let (base, mut rx) = shared(ReadPolicy::allow_all());
        let shared = Arc::new(Shared {
            registry: base.registry.clone(),
            hub: hub.clone(),
            metrics: base.metrics.clone(),
            tx: base.tx.clone(),
            opts: base.opts.clone(),
            glob_rescan: Duration::from_millis(100),
            hostname: "h".into(),
            ip: base.ip.clone(),
            applied: base.applied.clone(),
            rotated: base.rotated.clone(),
            files: tokio::runtime::Handle::current(),
            policy: base.policy.clone(),
        });
        drop(base);
        let entry = Arc::new(CollectEntry::new(
            dir.path().join("*.log").to_string_lossy(),
            "t",
        ));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_entry(entry, shared, cancel.clone()));
        let mut lines = Vec::new();
        while lines.len() < 2 {
            let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no batch within 10 s; got {lines:?}"))
                .expect("channel open");
            lines.extend(batch.lines);
            if lines.len() == 1 {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
                f.write_all(b"two\n").unwrap();
            }
        }
        let got: Vec<String> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).trim_end().to_owned())
            .collect();
        assert_eq!(got, ["one", "two"]);
        assert!(
            hub.events_degraded(),
            "running out of watches went unnoticed"
        );
        assert_eq!(gauge.get(), 1, "logagent_file_events_degraded not raised");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the discoverer did not stop within 10 s")
            .unwrap();
    }
}
