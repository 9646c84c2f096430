//! Filesystem events as wake-up hints.
//!
//! One inotify watcher for the whole agent (inotify instances are a scarce per-user resource), watching
//! directories, never files: a watch on a file follows its inode through a rename, and what we need to
//! hear about is the *name*. Events only wake tailers and discoverers early; every one of them also polls,
//! so a lost or coalesced event (queue overflow, NFS, a watch that failed) costs latency, never data.
//!
//! Wake-ups are gathered for [`COALESCE`] before they are delivered ([`Coalescer`]): on a host with
//! many trickling files, events arrive one per line at their own moments, and waking a tailer per
//! event costs a thread wake-up on the files runtime, then one on the sink's, per line. Gathered, the
//! tailers woken in one window run back to back on an already awake worker, and their batches reach
//! the sink together.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tracing::{debug, warn};

#[derive(Default)]
struct Routes {
    files: HashMap<PathBuf, Vec<Arc<Notify>>>,
    dirs: HashMap<PathBuf, (usize, Vec<Arc<Notify>>)>,
}

/// An inotify watcher (or a stand-in, for tests that run out of watches).
pub type DirWatcher = Box<dyn Watcher + Send>;
/// What a [`DirWatcher`] calls with each event.
pub type EventSink = Box<dyn FnMut(notify::Result<notify::Event>) + Send>;

pub struct WatchHub {
    watcher: Mutex<Option<DirWatcher>>,
    routes: Arc<Mutex<Routes>>,
    coalescer: Arc<Coalescer>,
    /// Set once inotify instances or watches ran out: polling alone from then on (said once).
    degraded: std::sync::atomic::AtomicBool,
    /// `logagent_file_events_degraded`, once the agent's metrics are attached.
    gauge: Mutex<Option<Gauge>>,
}

/// How long event wake-ups are gathered before delivery (0: delivered as soon as the thread takes
/// them). Well under the 100 ms the issue allows between a write and its record. (It was off for a
/// while: with it, the tailer property test lost lines after a copytruncate. The window only let
/// the tailer see the truncate and the regrowth at once, which the end-of-data guard missed for
/// lines ending alike; the guard now checks the file's head too.)
pub const COALESCE: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Pending {
    wakers: Vec<Arc<Notify>>,
    stop: bool,
}

/// Delivers gathered wake-ups once per window, from a thread of its own ("file-events"), which
/// stops when the hub is dropped.
#[derive(Default)]
pub struct Coalescer {
    pending: Mutex<Pending>,
    ready: Condvar,
    /// Windows delivered (each wakes every tailer and discoverer it gathered).
    rounds: std::sync::atomic::AtomicU64,
}

impl Coalescer {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push<'a>(&self, wakers: impl IntoIterator<Item = &'a Arc<Notify>>) {
        let mut p = self.lock();
        let was_empty = p.wakers.is_empty();
        p.wakers.extend(wakers.into_iter().cloned());
        if was_empty && !p.wakers.is_empty() {
            self.ready.notify_one();
        }
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.ready.notify_one();
    }

    /// Windows delivered so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn run(&self, window: Duration) {
        loop {
            {
                let mut p = self.lock();
                while p.wakers.is_empty() && !p.stop {
                    p = self.ready.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                if p.stop {
                    return;
                }
            }
            std::thread::sleep(window);
            let wakers = std::mem::take(&mut self.lock().wakers);
            self.rounds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for n in wakers {
                n.notify_one();
            }
        }
    }

    /// Starts the delivery thread; it returns once [`Coalescer::stop`] is called.
    fn spawn(window: Duration) -> Arc<Coalescer> {
        let c = Arc::new(Coalescer::default());
        let runner = c.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("file-events".into())
            .spawn(move || runner.run(window))
        {
            // Without the thread, events wake nobody: polling alone, as without inotify.
            warn!("cannot start the file event thread, relying on polling only: {e}");
        }
        c
    }
}

fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an event concerns the tailer of the file it names, and the discoverers of its directory.
/// Opens and reads are ignored: the agent opens and reads every file it tails, and a discoverer woken
/// by its own opens would rescan forever; writes concern only the file's tailer.
fn concerns(kind: &EventKind) -> (bool, bool) {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => (true, false),
        EventKind::Access(_) => (false, false),
        EventKind::Modify(ModifyKind::Name(_)) => (true, true),
        EventKind::Modify(_) => (true, false),
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any | EventKind::Other => {
            (true, true)
        }
    }
}

impl WatchHub {
    /// Creates the hub. Without inotify (limits reached, unsupported filesystem) it still works, by
    /// polling alone, and says so once.
    pub fn new() -> Arc<WatchHub> {
        Self::with_watcher(|sink| {
            notify::recommended_watcher(sink).map(|w| Box::new(w) as DirWatcher)
        })
    }

    /// The hub over the watcher `make` builds (inotify in the agent).
    pub fn with_watcher(
        make: impl FnOnce(EventSink) -> notify::Result<DirWatcher>,
    ) -> Arc<WatchHub> {
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let r = routes.clone();
        let coalescer = Coalescer::spawn(COALESCE);
        let c = coalescer.clone();
        let watcher = make(Box::new(
            move |res: notify::Result<notify::Event>| match res {
                Ok(event) => {
                    let routes = lock(&r);
                    if event.need_rescan() {
                        // The kernel queue overflowed: any file may have changed.
                        c.push(routes.files.values().flatten());
                        c.push(routes.dirs.values().flat_map(|(_, ns)| ns));
                        return;
                    }
                    let (file, dir) = concerns(&event.kind);
                    for path in &event.paths {
                        if let Some(ns) = routes.files.get(path).filter(|_| file) {
                            c.push(ns);
                        }
                        if let Some((_, ns)) = path
                            .parent()
                            .and_then(|d| routes.dirs.get(d))
                            .filter(|_| dir)
                        {
                            c.push(ns);
                        }
                    }
                }
                Err(e) => debug!("file event error (polling covers it): {e}"),
            },
        ));
        let (watcher, failed) = match watcher {
            Ok(w) => (Some(w), None),
            Err(e) => (None, Some(e)),
        };
        let hub = Arc::new(WatchHub {
            watcher: Mutex::new(watcher),
            routes,
            coalescer,
            degraded: Default::default(),
            gauge: Mutex::new(None),
        });
        if let Some(e) = failed {
            hub.degrade(&format!("no inotify instance: {e}"));
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
        self.degraded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Says once that events ran out; polling, which every tailer and discoverer does anyway, covers
    /// the rest: idle files are polled every 2 s at most, and a file found growing by polling is
    /// polled at the plain interval. Nothing else changes (host limits are never touched).
    fn degrade(&self, why: &str) {
        if self
            .degraded
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        warn!("file events ran out ({why}); files without them are picked up by polling (raise fs.inotify.max_user_watches / max_user_instances to get events back)");
        if let Some(g) = &*self.gauge.lock().unwrap_or_else(|e| e.into_inner()) {
            g.set(1);
        }
    }

    /// Event windows delivered so far (each wakes every tailer and discoverer an event named).
    pub fn wake_rounds(&self) -> u64 {
        self.coalescer.rounds()
    }

    /// Wakes `waker` on any event in `dir` (a created, renamed or removed name). Reference-counted.
    pub fn watch_dir(&self, dir: &Path, waker: Arc<Notify>) {
        let first = {
            let mut routes = lock(&self.routes);
            let e = routes.dirs.entry(dir.to_path_buf()).or_default();
            e.0 += 1;
            e.1.push(waker);
            e.0 == 1
        };
        if first {
            if let Some(w) = self
                .watcher
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                match w.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {}
                    Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                        self.degrade(&format!("cannot watch {}: {e}", dir.display()));
                    }
                    Err(e) => {
                        debug!(dir = %dir.display(), "cannot watch directory (polling covers it): {e}")
                    }
                }
            }
        }
    }

    pub fn unwatch_dir(&self, dir: &Path, waker: &Arc<Notify>) {
        let last = {
            let mut routes = lock(&self.routes);
            let Some(e) = routes.dirs.get_mut(dir) else {
                return;
            };
            e.0 -= 1;
            e.1.retain(|n| !Arc::ptr_eq(n, waker));
            if e.0 == 0 {
                routes.dirs.remove(dir);
                true
            } else {
                false
            }
        };
        if last {
            if let Some(w) = self
                .watcher
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                let _ = w.unwatch(dir);
            }
        }
    }

    /// A waker for events naming `path` (its directory must be watched by someone).
    pub fn file_waker(&self, path: &Path) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        lock(&self.routes)
            .files
            .entry(path.to_path_buf())
            .or_default()
            .push(n.clone());
        n
    }

    pub fn drop_file_waker(&self, path: &Path, waker: &Arc<Notify>) {
        let mut routes = lock(&self.routes);
        if let Some(v) = routes.files.get_mut(path) {
            v.retain(|n| !Arc::ptr_eq(n, waker));
            if v.is_empty() {
                routes.files.remove(path);
            }
        }
    }
}

impl Drop for WatchHub {
    fn drop(&mut self) {
        self.coalescer.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events arriving within a window are delivered together: one round wakes every tailer named,
    /// instead of one thread wake-up per event.
    #[tokio::test]
    async fn events_within_a_window_are_delivered_in_one_round() {
        let c = Coalescer::spawn(Duration::from_millis(200));
        let wakers: Vec<Arc<Notify>> = (0..50).map(|_| Arc::new(Notify::new())).collect();
        for w in &wakers {
            c.push([w]);
            std::thread::sleep(Duration::from_millis(1));
        }
        for (i, w) in wakers.iter().enumerate() {
            tokio::time::timeout(Duration::from_secs(5), w.notified())
                .await
                .unwrap_or_else(|_| panic!("waker {i} was never woken"));
        }
        assert!(
            c.rounds() <= 2,
            "50 events 1 ms apart took {} delivery rounds",
            c.rounds()
        );
        c.stop();
    }
}
