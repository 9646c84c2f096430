//! Filesystem events as wake-up hints.
//!
//! One inotify instance for the whole agent (instances are a scarce per-user resource), watching
//! directories, never files: a watch on a file follows its inode through a rename, and what we need to
//! hear about is the *name*. Events only wake tailers and discoverers early; every one of them also polls,
//! so a lost or coalesced event (queue overflow, NFS, a watch that failed) costs latency, never data.
//!
//! One thread ("file-events") reads the instance, in rounds: it sleeps until an event is queued,
//! then [`COALESCE`] longer, then drains everything queued and wakes each tailer and discoverer named
//! once. On a host with many trickling files events arrive one per line at their own moments; read
//! and delivered one by one they cost a thread wake-up each here, then one on the files runtime and
//! one on the sink's, per line. Gathered, the kernel merges repeated writes to one file into one
//! event, the tailers woken in one round run back to back on an already awake worker, and their
//! batches reach the sink together. The mask leaves out opens and closes (the agent's own opens, and
//! every reader's, would each be an event) and reads.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tracing::{debug, warn};

/// How long event wake-ups are gathered before delivery (0: delivered as soon as the thread reads
/// them). Well under the 100 ms the issue allows between a write and its record. (It was off for a
/// while: with it, the tailer property test lost lines after a copytruncate. The window only let
/// the tailer see the truncate and the regrowth at once, which the end-of-data guard missed for
/// lines ending alike; the guard now checks the file's head too.)
pub const COALESCE: Duration = Duration::from_millis(50);

/// What a directory watch asks the kernel for: names appearing, going and being renamed, and
/// writes and attribute changes (a chmod that makes a file readable) of the files in it.
fn mask() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
}

/// Whom an event concerns: the tailer of the file it names, the discoverers of its directory.
/// Writes concern only the file's tailer; a name that appears, goes or moves concerns both; the
/// directory itself gone or moved concerns its discoverers.
fn concerns(mask: EventMask) -> (bool, bool) {
    if mask.intersects(
        EventMask::CREATE | EventMask::DELETE | EventMask::MOVED_FROM | EventMask::MOVED_TO,
    ) {
        (true, true)
    } else if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED) {
        (false, true)
    } else {
        (
            mask.intersects(EventMask::MODIFY | EventMask::ATTRIB),
            false,
        )
    }
}

/// One tailer's share of the events: its wake-up, and a flag raised by the events on its file's
/// *name* (created, removed, renamed away or over). Only those can make the path name another file,
/// so with the flag a tailer checks its path when told instead of with a stat at every wake-up.
#[derive(Clone, Default)]
pub struct FileWaker {
    pub wake: Arc<Notify>,
    name_event: Arc<AtomicBool>,
}

impl FileWaker {
    /// Whether an event on the name came since the last call.
    pub fn take_name_event(&self) -> bool {
        self.name_event.swap(false, Ordering::Relaxed)
    }

    fn name_changed(&self, out: &mut Vec<Arc<Notify>>) {
        self.name_event.store(true, Ordering::Relaxed);
        out.push(self.wake.clone());
    }
}

/// Events on a name, rather than on the content of the file it names.
fn names_a_name(mask: EventMask) -> bool {
    mask.intersects(
        EventMask::CREATE | EventMask::DELETE | EventMask::MOVED_FROM | EventMask::MOVED_TO,
    )
}

struct DirRoute {
    /// Discoverers interested in this directory (reference count of watch_dir calls).
    count: usize,
    wakers: Vec<Arc<Notify>>,
    wd: Option<WatchDescriptor>,
}

#[derive(Default)]
struct Routes {
    /// By the file's path as bytes ([`route_key`]): `Path` hashes component by component, byte
    /// by byte, at every event of every trickling file.
    files: HashMap<OsString, Vec<FileWaker>>,
    dirs: HashMap<PathBuf, DirRoute>,
    /// The directory each watch descriptor names, as [`route_key`] writes it: joined with an
    /// event's name, it is that file's key in `files`.
    wds: HashMap<WatchDescriptor, PathBuf>,
}

impl Routes {
    /// Adds the wakers one event concerns to `out`. `key`: scratch for the file's key, kept by the
    /// caller (a new `PathBuf` joined per event was a tenth of this thread's samples).
    fn route(
        &self,
        wd: &WatchDescriptor,
        mask: EventMask,
        name: Option<&Path>,
        key: &mut PathBuf,
        out: &mut Vec<Arc<Notify>>,
    ) {
        let Some(dir) = self.wds.get(wd) else {
            return;
        };
        let (file, dirs) = concerns(mask);
        if file {
            let ws = name.and_then(|n| {
                // `dir.join(n)` into the kept buffer.
                key.clear();
                key.push(dir);
                key.push(n);
                self.files.get(key.as_os_str())
            });
            if let Some(ws) = ws {
                for w in ws {
                    if names_a_name(mask) {
                        w.name_changed(out);
                    } else {
                        out.push(w.wake.clone());
                    }
                }
            }
        }
        if dirs {
            if let Some(r) = self.dirs.get(dir) {
                out.extend(r.wakers.iter().cloned());
            }
        }
        if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED) {
            // The directory moved or went, or its watch did: no event will tell of its names again.
            // Rare; every file in it checks its path.
            for (path, ws) in &self.files {
                if Path::new(path).parent() == Some(dir.as_path()) {
                    ws.iter().for_each(|w| w.name_changed(out));
                }
            }
        }
    }

    /// The kernel dropped watch `wd` (its directory was removed): the directory is no longer
    /// watched, so tailers started there poll briskly and check their paths by time again.
    fn forget(&mut self, wd: &WatchDescriptor) {
        if let Some(dir) = self.wds.remove(wd) {
            if let Some(r) = self.dirs.get_mut(&dir) {
                r.wd = None;
            }
        }
    }

    fn everyone(&self, out: &mut Vec<Arc<Notify>>) {
        self.files
            .values()
            .flatten()
            .for_each(|w| w.name_changed(out));
        out.extend(self.dirs.values().flat_map(|r| r.wakers.iter().cloned()));
    }
}

/// A path as the routes key it: its components joined again, so that `a//b` and `a/./b` are the
/// `a/b` an event's directory and name make (as `Path`'s own equality has it).
fn route_key(path: &Path) -> OsString {
    path.components().collect::<PathBuf>().into_os_string()
}

fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct WatchHub {
    routes: Arc<Mutex<Routes>>,
    /// Adds and removes watches of the instance the thread reads; None without an instance.
    watches: Option<Mutex<Watches>>,
    /// Watches this hub may hold: the kernel's limit in the agent, lower in tests.
    max_watches: usize,
    /// Written to stop the thread.
    stop: Option<OwnedFd>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    rounds: Arc<AtomicU64>,
    /// Set once inotify instances or watches ran out: polling alone from then on (said once).
    degraded: AtomicBool,
    /// `logagent_file_events_degraded`, once the agent's metrics are attached.
    gauge: Mutex<Option<Gauge>>,
}

impl WatchHub {
    /// Creates the hub. Without inotify (limits reached, unsupported filesystem) it still works, by
    /// polling alone, and says so once.
    pub fn new() -> Arc<WatchHub> {
        Self::with_max_watches(usize::MAX)
    }

    /// A hub that holds at most `max` watches and, past them, fails as the kernel does once
    /// `fs.inotify.max_user_watches` is used up (tests).
    pub fn with_max_watches(max: usize) -> Arc<WatchHub> {
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let rounds = Arc::new(AtomicU64::new(0));
        let started = Inotify::init().and_then(|inotify| {
            let watches = inotify.watches();
            let stop = eventfd()?;
            let thread_stop = stop.try_clone()?;
            let (r, n) = (routes.clone(), rounds.clone());
            let thread = std::thread::Builder::new()
                .name("file-events".into())
                .spawn(move || run(inotify, thread_stop, r, n, COALESCE))?;
            Ok((watches, stop, thread))
        });
        let (watches, stop, thread, failed) = match started {
            Ok((w, s, t)) => (Some(Mutex::new(w)), Some(s), Some(t), None),
            Err(e) => (None, None, None, Some(e)),
        };
        let hub = Arc::new(WatchHub {
            routes,
            watches,
            max_watches: max,
            stop,
            thread: Mutex::new(thread),
            rounds,
            degraded: AtomicBool::new(false),
            gauge: Mutex::new(None),
        });
        if let Some(e) = failed {
            hub.degrade(&format!("no inotify instance or event thread: {e}"));
        }
        hub
    }

    /// Exports whether file events are degraded as `gauge` (1: polling only, for some or all files).
    pub fn report_to(&self, gauge: Gauge) {
        gauge.set(i64::from(self.events_degraded()));
        *self.gauge.lock().unwrap_or_else(|e| e.into_inner()) = Some(gauge);
    }

    /// Whether inotify instances or watches ran out (polling alone covers what they would).
    pub fn events_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Says once that events ran out; polling, which every tailer and discoverer does anyway, covers
    /// the rest: idle files are polled every 2 s at most, and a file found growing by polling is
    /// polled at the plain interval. Nothing else changes (host limits are never touched).
    fn degrade(&self, why: &str) {
        if self.degraded.swap(true, Ordering::Relaxed) {
            return;
        }
        warn!("file events ran out ({why}); files without them are picked up by polling (raise fs.inotify.max_user_watches / max_user_instances to get events back)");
        if let Some(g) = &*self.gauge.lock().unwrap_or_else(|e| e.into_inner()) {
            g.set(1);
        }
    }

    /// Event rounds delivered so far (each wakes every tailer and discoverer its events named).
    pub fn wake_rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Wakes `waker` on any event in `dir` (a created, renamed or removed name). Reference-counted.
    pub fn watch_dir(&self, dir: &Path, waker: Arc<Notify>) {
        let mut routes = lock(&self.routes);
        let held = routes.wds.len();
        let route = routes.dirs.entry(dir.to_path_buf()).or_insert(DirRoute {
            count: 0,
            wakers: Vec::new(),
            wd: None,
        });
        route.count += 1;
        route.wakers.push(waker);
        if route.count > 1 {
            return;
        }
        self.add_watch(routes, dir, held);
    }

    /// Watches `dir` again if the kernel dropped its watch (the directory was removed, maybe made
    /// again since): discoverers call it after each scan. Not once watches ran out.
    pub fn rewatch(&self, dir: &Path) {
        if self.events_degraded() {
            return;
        }
        let routes = lock(&self.routes);
        let held = routes.wds.len();
        if routes.dirs.get(dir).is_some_and(|r| r.wd.is_none()) {
            self.add_watch(routes, dir, held);
        }
    }

    /// Adds the kernel watch of `dir`, whose route exists; `held`: watches held now.
    fn add_watch(&self, mut routes: MutexGuard<'_, Routes>, dir: &Path, held: usize) {
        let Some(watches) = &self.watches else {
            return;
        };
        let added = if held >= self.max_watches {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(dir, mask())
        };
        match added {
            Ok(wd) => {
                if let Some(route) = routes.dirs.get_mut(dir) {
                    route.wd = Some(wd.clone());
                }
                routes.wds.insert(wd, route_key(dir).into());
            }
            // inotify_add_watch(2): ENOSPC is the user's watch limit.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                drop(routes);
                self.degrade(&format!("cannot watch {}: {e}", dir.display()));
            }
            Err(e) => {
                debug!(dir = %dir.display(), "cannot watch directory (polling covers it): {e}")
            }
        }
    }

    pub fn unwatch_dir(&self, dir: &Path, waker: &Arc<Notify>) {
        let mut routes = lock(&self.routes);
        let Some(route) = routes.dirs.get_mut(dir) else {
            return;
        };
        route.count -= 1;
        route.wakers.retain(|n| !Arc::ptr_eq(n, waker));
        if route.count > 0 {
            return;
        }
        let wd = routes.dirs.remove(dir).and_then(|r| r.wd);
        if let Some(wd) = wd {
            routes.wds.remove(&wd);
            if let Some(w) = &self.watches {
                // Fails only if the kernel already dropped the watch (the directory was removed).
                let _ = w.lock().unwrap_or_else(|e| e.into_inner()).remove(wd);
            }
        }
    }

    /// Whether `path`'s directory has a live event watch.
    pub fn dir_watched(&self, path: &Path) -> bool {
        let routes = lock(&self.routes);
        path.parent()
            .and_then(|d| routes.dirs.get(d))
            .is_some_and(|r| r.wd.is_some())
    }

    /// A waker for events naming `path` (its directory must be watched by someone).
    pub fn file_waker(&self, path: &Path) -> FileWaker {
        let w = FileWaker::default();
        lock(&self.routes)
            .files
            .entry(route_key(path))
            .or_default()
            .push(w.clone());
        w
    }

    pub fn drop_file_waker(&self, path: &Path, waker: &FileWaker) {
        let mut routes = lock(&self.routes);
        let key = route_key(path);
        if let Some(v) = routes.files.get_mut(&key) {
            v.retain(|w| !Arc::ptr_eq(&w.wake, &waker.wake));
            if v.is_empty() {
                routes.files.remove(&key);
            }
        }
    }
}

impl Drop for WatchHub {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            signal(stop);
        }
        if let Some(t) = self
            .thread
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
    }
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory arguments; a valid descriptor is owned from here on.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is not owned by anything else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal(fd: &OwnedFd) {
    let v = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live buffer to an eventfd we own.
    let _ = unsafe { libc::write(fd.as_raw_fd(), v.as_ptr().cast(), v.len()) };
}

/// Blocks until the instance has events (true) or the hub is stopping (false).
fn wait(inotify: &Inotify, stop: &OwnedFd) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: inotify.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: fds is a live array of two pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n < 0 || fds[1].revents != 0 {
            return false;
        }
        return true;
    }
}

/// The "file-events" thread: a round per burst of events, until the hub stops.
fn run(
    mut inotify: Inotify,
    stop: OwnedFd,
    routes: Arc<Mutex<Routes>>,
    rounds: Arc<AtomicU64>,
    window: Duration,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut wake: Vec<Arc<Notify>> = Vec::new();
    let mut key = PathBuf::new();
    while wait(&inotify, &stop) {
        std::thread::sleep(window);
        loop {
            match inotify.read_events(&mut buf) {
                Ok(events) => {
                    let mut routes = lock(&routes);
                    for e in events {
                        if e.mask.contains(EventMask::Q_OVERFLOW) {
                            // The kernel queue overflowed: any file may have changed.
                            routes.everyone(&mut wake);
                        } else {
                            routes.route(&e.wd, e.mask, e.name.map(Path::new), &mut key, &mut wake);
                            if e.mask.contains(EventMask::IGNORED) {
                                routes.forget(&e.wd);
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!("file event read failed (polling covers it): {e}");
                    break;
                }
            }
        }
        wake.sort_unstable_by_key(Arc::as_ptr);
        wake.dedup_by(|a, b| Arc::ptr_eq(a, b));
        rounds.fetch_add(1, Ordering::Relaxed);
        for n in wake.drain(..) {
            n.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn writes_concern_the_file_names_concern_both_and_the_directory_itself_its_discoverers() {
        assert_eq!(concerns(EventMask::MODIFY), (true, false));
        assert_eq!(concerns(EventMask::ATTRIB), (true, false));
        assert_eq!(concerns(EventMask::CREATE), (true, true));
        assert_eq!(concerns(EventMask::MOVED_FROM), (true, true));
        assert_eq!(concerns(EventMask::DELETE), (true, true));
        assert_eq!(concerns(EventMask::DELETE_SELF), (false, true));
        assert_eq!(concerns(EventMask::IGNORED), (false, true));
        assert_eq!(concerns(EventMask::OPEN), (false, false));
        assert_eq!(concerns(EventMask::CLOSE_NOWRITE), (false, false));
    }

    /// Routes are keyed by the path's bytes: a path written with `//` or `.` still gets the events
    /// of the name its directory's watch reports, and is dropped under the same key.
    #[tokio::test]
    async fn a_path_written_unnormalized_still_gets_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let hub = WatchHub::new();
        hub.watch_dir(dir.path(), Arc::new(Notify::new()));
        let mut f = std::fs::File::create(dir.path().join("a.log")).unwrap();
        tokio::time::sleep(COALESCE * 3).await;
        let odd = PathBuf::from(format!("{}//./a.log", dir.path().display()));
        let w = hub.file_waker(&odd);
        f.write_all(b"line\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.wake.notified())
            .await
            .expect("the waker of a path written with // and . was never woken");
        hub.drop_file_waker(&odd, &w);
        assert!(lock(&hub.routes).files.is_empty(), "dropped under its key");
    }

    /// Writes to 50 files spread over a few milliseconds are delivered in one or two rounds, each
    /// tailer woken, instead of one thread wake-up per write.
    #[tokio::test]
    async fn writes_within_a_window_are_delivered_in_one_round() {
        let dir = tempfile::tempdir().unwrap();
        let hub = WatchHub::new();
        hub.watch_dir(dir.path(), Arc::new(Notify::new()));
        let paths: Vec<PathBuf> = (0..50)
            .map(|i| dir.path().join(format!("{i}.log")))
            .collect();
        let mut files: Vec<std::fs::File> = paths
            .iter()
            .map(|p| std::fs::File::create(p).unwrap())
            .collect();
        // The creations are one burst; its round passes before the tailers' wakers exist.
        tokio::time::sleep(COALESCE * 3).await;
        let wakers: Vec<Arc<Notify>> = paths.iter().map(|p| hub.file_waker(p).wake).collect();
        let before = hub.wake_rounds();
        for f in &mut files {
            f.write_all(b"line\n").unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
        for (i, w) in wakers.iter().enumerate() {
            tokio::time::timeout(Duration::from_secs(5), w.notified())
                .await
                .unwrap_or_else(|_| panic!("the tailer of file {i} was never woken"));
        }
        let rounds = hub.wake_rounds() - before;
        assert!(
            (1..=2).contains(&rounds),
            "50 writes within ~10 ms took {rounds} delivery rounds"
        );
    }

    /// A rename of the file's name raises its name flag; a write to it only wakes it. So a tailer
    /// checks its path when the name moved, not with a stat per wake-up.
    #[tokio::test]
    async fn an_event_on_the_name_raises_the_name_flag_and_a_write_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut file = std::fs::File::create(&path).unwrap();
        let hub = WatchHub::new();
        hub.watch_dir(dir.path(), Arc::new(Notify::new()));
        let w = hub.file_waker(&path);
        let woken = |what: &'static str| {
            let wake = w.wake.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(5), wake.notified())
                    .await
                    .unwrap_or_else(|_| panic!("not woken by {what}"))
            }
        };
        file.write_all(b"line\n").unwrap();
        woken("a write").await;
        assert!(!w.take_name_event(), "a write is not an event on the name");
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        woken("the rename").await;
        assert!(w.take_name_event(), "the rename raised the name flag");
        assert!(!w.take_name_event(), "taken once");
        std::fs::write(&path, b"new\n").unwrap();
        woken("the new file under the name").await;
        assert!(
            w.take_name_event(),
            "a file created under the name raised it"
        );
    }

    /// A file's directory counts as watched only while a live watch is on it.
    #[test]
    fn a_file_is_in_a_watched_directory_only_while_the_watch_holds() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.log");
        let hub = WatchHub::new();
        assert!(!hub.dir_watched(&file));
        let w = Arc::new(Notify::new());
        hub.watch_dir(dir.path(), w.clone());
        assert!(hub.dir_watched(&file));
        hub.unwatch_dir(dir.path(), &w);
        assert!(!hub.dir_watched(&file));
        let none = WatchHub::with_max_watches(0);
        none.watch_dir(dir.path(), w);
        assert!(!none.dir_watched(&file), "out of watches: not watched");
    }

    /// A removed directory's watch is gone (the kernel sends IN_IGNORED): the directory no longer
    /// counts as watched, so a tailer started there does not wait on events that cannot come.
    #[tokio::test]
    async fn a_removed_directory_no_longer_counts_as_watched() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("app");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("a.log");
        let hub = WatchHub::new();
        let waker = Arc::new(Notify::new());
        hub.watch_dir(&dir, waker.clone());
        assert!(hub.dir_watched(&file));
        std::fs::remove_dir(&dir).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waker.notified())
            .await
            .expect("the directory's discoverer was not woken by its removal");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while hub.dir_watched(&file) {
            assert!(
                std::time::Instant::now() < deadline,
                "the removed directory still counts as watched"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::create_dir(&dir).unwrap();
        assert!(!hub.dir_watched(&file), "nor once recreated");
        hub.rewatch(&dir);
        assert!(hub.dir_watched(&file), "watched again after rewatch");
        let w = hub.file_waker(&file);
        std::fs::write(&file, b"line\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), w.wake.notified())
            .await
            .expect("no event from the directory watched again");
    }

    /// Past the watch limit the hub says so once and keeps working (the watch is just missing).
    #[test]
    fn running_out_of_watches_degrades_once() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let hub = WatchHub::with_max_watches(1);
        let gauge = Gauge::<i64>::default();
        hub.report_to(gauge.clone());
        hub.watch_dir(a.path(), Arc::new(Notify::new()));
        assert!(!hub.events_degraded());
        hub.watch_dir(b.path(), Arc::new(Notify::new()));
        assert!(hub.events_degraded());
        assert_eq!(gauge.get(), 1);
    }
}
