//! Filesystem events as wake-up hints.
//!
//! One inotify watcher for the whole agent (inotify instances are a scarce per-user resource), watching
//! directories, never files: a watch on a file follows its inode through a rename, and what we need to
//! hear about is the *name*. Events only wake tailers and discoverers early; every one of them also polls,
//! so a lost or coalesced event (queue overflow, NFS, a watch that failed) costs latency, never data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tracing::{debug, warn};

#[derive(Default)]
struct Routes {
    files: HashMap<PathBuf, Vec<Arc<Notify>>>,
    dirs: HashMap<PathBuf, (usize, Vec<Arc<Notify>>)>,
}

pub struct WatchHub {
    watcher: Mutex<Option<RecommendedWatcher>>,
    routes: Arc<Mutex<Routes>>,
}

fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(|e| e.into_inner())
}

impl WatchHub {
    /// Creates the hub. Without inotify (limits reached, unsupported filesystem) it still works, by
    /// polling alone, and says so once.
    pub fn new() -> Arc<WatchHub> {
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let r = routes.clone();
        let watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(event) => {
                    let routes = lock(&r);
                    for path in &event.paths {
                        if let Some(ns) = routes.files.get(path) {
                            ns.iter().for_each(|n| n.notify_one());
                        }
                        if let Some((_, ns)) = path.parent().and_then(|d| routes.dirs.get(d)) {
                            ns.iter().for_each(|n| n.notify_one());
                        }
                    }
                }
                Err(e) => debug!("file event error (polling covers it): {e}"),
            });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                warn!("file events unavailable, relying on polling only: {e}");
                None
            }
        };
        Arc::new(WatchHub {
            watcher: Mutex::new(watcher),
            routes,
        })
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
                if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
                    debug!(dir = %dir.display(), "cannot watch directory (polling covers it): {e}");
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
